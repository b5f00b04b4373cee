//! Scenarios for the engine, built from arbitrary bytes but always meaningful: inside hosts
//! opening TCP, UDP and ICMP echo flows to far hosts, far hosts answering the translations
//! they saw (or sending unsolicited packets, or reaching a forward), routers beyond sending
//! ICMP errors that quote packets really forwarded, time passing with sweeps, and now and
//! then a frame with one byte flipped. Checksums are valid unless a step breaks them on
//! purpose.
//!
//! After every frame the [`oracle`] checks what a gateway must never do: let an inside
//! address leave on the outside (outer or quoted), forward a frame whose checksums do not
//! verify when the input's did, give two inside flows one outside tuple, deliver a reply to
//! anyone but the flow's inside host; at the end, that the counters add up. The fuzz target
//! `scenario` and the test suite (a few thousand seeded scenarios) run the same code.

use std::net::Ipv4Addr;
use std::sync::Arc;

use arbitrary::Arbitrary;
use xgw_dataplane::config::PortForward;
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Shared, Time, Verdict};

pub mod frames;
pub mod oracle;

use frames::Proto;
use oracle::{Oracle, Violation};

/// The inside interface.
pub const INSIDE: IfaceId = IfaceId(0);
/// The outside interface.
pub const OUTSIDE: IfaceId = IfaceId(1);
/// The gateway's outside address.
pub const OUTSIDE_ADDR: [u8; 4] = [203, 0, 113, 1];
/// The forward: TCP 2222 on the outside address to this host's port 22.
pub const FORWARD_HOST: [u8; 4] = [10, 0, 0, 10];

/// What happens next.
#[derive(Debug, Clone, Arbitrary)]
pub enum Step {
    /// An inside host sends to a far host.
    Out {
        /// Which inside host (10.0.0.2–9).
        host: u8,
        /// Which far host (198.51.100.1–4).
        far: u8,
        /// Protocol and its fields.
        proto: Proto,
        /// Source port (ICMP: identifier).
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// A far host answers a packet it saw leaving (the `pick`th still remembered).
    Reply {
        /// Which one.
        pick: u16,
    },
    /// A far host sends to the outside address without being asked.
    Unsolicited {
        /// Which far host.
        far: u8,
        /// Protocol.
        proto: Proto,
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// A far host opens a connection to the forwarded port.
    ToForward {
        /// Which far host.
        far: u8,
        /// Its source port.
        sport: u16,
    },
    /// A router beyond the gateway sends an ICMP error about a packet seen leaving.
    ErrorBeyond {
        /// Which packet.
        pick: u16,
        /// Destination unreachable (3), time exceeded (11), ...
        kind: u8,
    },
    /// Time passes and the table is swept.
    Wait {
        /// Seconds.
        secs: u8,
    },
    /// A frame sent earlier is sent again with one byte changed.
    Corrupt {
        /// Which frame.
        pick: u16,
        /// Where.
        at: u16,
        /// With what.
        xor: u8,
    },
}

/// A scenario: its steps, in order.
#[derive(Debug, Clone, Arbitrary)]
pub struct Scenario {
    /// The steps.
    pub steps: Vec<Step>,
}

/// The gateway every scenario runs against: one inside /24, one outside /24, PAT with a
/// small port range (so that ports are reused and collide), TCP 2222 forwarded inside.
pub fn config() -> EngineConfig {
    let mut cfg = EngineConfig::example();
    cfg.limits.max_flows = 256;
    cfg.limits.event_ring = 0;
    cfg.nat.port_range = (1024, 1087);
    cfg.forwards.push(PortForward {
        proto: 6,
        outside_port: 2222,
        inside_addr: Ipv4Addr::from(FORWARD_HOST),
        inside_port: 22,
    });
    cfg
}

/// What a run saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Frames given to the engine.
    pub frames: u64,
    /// Of them, forwarded.
    pub forwarded: u64,
}

/// Runs a scenario; the first violation ends it.
pub fn run(s: &Scenario) -> Result<Outcome, Violation> {
    let mut e = Engine::new(Arc::new(Shared::new(config()).map_err(|m| Violation(format!("config: {m}")))?));
    let mut o = Oracle::default();
    let mut now = 1u64;
    let mut out = Outcome::default();
    let mut buf = vec![0u8; 2048];
    for step in s.steps.iter().take(512) {
        let Some((frame, ingress, expect)) = o.frame_for(step, &mut now) else {
            if let Step::Wait { .. } = step {
                e.shared().sweep(Time::from_secs(now), usize::MAX);
            }
            continue;
        };
        buf[..frame.len()].copy_from_slice(&frame);
        let mut f = FrameBuf { buf: &mut buf[..], len: frame.len() };
        let v = e.process(&mut f, RxMeta { iface: ingress }, Time::from_secs(now));
        out.frames += 1;
        if let Verdict::Forward(egress) = v {
            out.forwarded += 1;
            let sent = f.buf[..f.len].to_vec();
            o.check_forwarded(&frame, ingress, egress, &sent, &expect)?;
        }
    }
    let c = e.counters();
    let t = &c.traffic;
    if t.rx.get() != out.frames || t.forwarded.get() + t.to_host.get() + c.total_drops() != out.frames {
        return Err(Violation(format!(
            "counters do not add up: {} frames, rx {}, forwarded {} + to_host {} + drops {}",
            out.frames,
            t.rx.get(),
            t.forwarded.get(),
            t.to_host.get(),
            c.total_drops()
        )));
    }
    Ok(out)
}
