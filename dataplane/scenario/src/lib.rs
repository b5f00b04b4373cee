//! Scenarios for the engine, built from arbitrary bytes but always meaningful: inside hosts
//! opening TCP, UDP and ICMP echo flows to far hosts, far hosts answering the translations
//! they saw (or sending unsolicited packets, or reaching a forward), routers beyond sending
//! ICMP errors that quote packets really forwarded, PPTP control conversations (requests
//! coalesced with another message and split anywhere) and their calls' GRE, forged GRE keys,
//! ESP both ways, fragments, VLAN-tagged frames, time passing with sweeps, and now and then a
//! frame with one byte flipped.
//! Checksums are valid unless a step breaks them on purpose.
//!
//! After every frame the [`oracle`] checks what a gateway must never do: let an inside
//! address leave on the outside (outer or quoted), forward a frame whose checksums do not
//! verify when the input's did, give two inside flows one outside tuple (or two live calls one
//! translated Call ID), deliver a reply, a PAC's answer or a call's GRE to anyone but its own
//! inside host (with its own Call ID), forward GRE of no call or ESP nobody inside sent; at
//! the end, that the counters add up. The fuzz target
//! `scenario` and the test suite (a few thousand seeded scenarios) run the same code.

use std::net::Ipv4Addr;
use std::sync::Arc;

use arbitrary::Arbitrary;
use xgw_dataplane::config::PortForward;
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Shared, Time, Verdict};

pub mod frames;
pub mod oracle;
pub mod pptp;

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
    /// An inside host (a PNS) opens a PPTP control connection to a far host (a PAC) and
    /// will ask for one call with this Call ID; the Outgoing-Call-Request (after an
    /// Echo-Request in the same segment when `coalesce`) is split after `split` bytes
    /// (modulo its length; 0: one segment).
    PptpOpen {
        /// Which inside host.
        host: u8,
        /// Which far host.
        far: u8,
        /// The PNS's Call ID.
        call_id: u16,
        /// Where the request is split.
        split: u8,
        /// An Echo-Request rides in front of the request.
        coalesce: bool,
    },
    /// The next message of a PPTP conversation, from whichever side the script says.
    PptpNext {
        /// Which conversation.
        conv: u8,
    },
    /// GRE on a PPTP call: from its client, from its server, or from its server with the
    /// key changed (`forge` XORed in).
    Gre {
        /// Which conversation.
        conv: u8,
        /// From the server (else from the client).
        from_server: bool,
        /// Bits flipped in the server's key.
        forge: u16,
    },
    /// ESP between an inside host and a far host, outbound or inbound.
    Esp {
        /// Which inside host.
        host: u8,
        /// Which far host.
        far: u8,
        /// The SPI.
        spi: u32,
        /// From the far host to the outside address (else from the inside host).
        inbound: bool,
    },
    /// A UDP datagram from inside in two IPv4 fragments, in order or reversed.
    Fragments {
        /// Which inside host.
        host: u8,
        /// Which far host.
        far: u8,
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Where it is cut, in 8-byte units.
        at: u8,
        /// The second fragment first.
        reverse: bool,
    },
    /// An inside host's frame with an 802.1Q tag.
    Tagged {
        /// Which inside host.
        host: u8,
        /// Which far host.
        far: u8,
        /// Source port.
        sport: u16,
        /// The VLAN.
        vid: u16,
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
        let frames = o.frames_for(step, &mut now);
        if let Step::Wait { .. } = step {
            e.shared().sweep(Time::from_secs(now), usize::MAX);
        }
        for (frame, ingress, expect) in frames {
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
