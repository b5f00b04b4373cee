//! NAT event logging: translations (NAT44 session create/delete), port-block allocations
//! and releases, quota and address exhaustion — exported as IPFIX to a collector
//! ([`ipfix`], RFC 7011/8158) and written as log lines. With port blocks a block is one
//! record, and per-connection records are off unless asked for.
//!
//! The thread `xgw-natlog` reads the engine's flow events (a bounded subscription of the
//! control socket's event hub: a full queue is a counted gap) and the port blocks' event
//! queue (bounded in the engine: a full queue is counted there). It never blocks the packet
//! path: the engine only pushes onto lock-free queues.

pub mod ipfix;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use xgw_dataplane::conntrack::{EventKind, Flow, FlowEvent, FlowKind};
use xgw_dataplane::counters::SharedCounter;
use xgw_dataplane::nat::blocks::{BlockEvent, BlockEventKind};
use xgw_dataplane::{Shared, Time};

use ipfix::{Encoder, Record};

/// The `[nat_log]` table of the settings file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatLogFile {
    /// The IPFIX collector, "ADDR:PORT" (UDP); absent: no IPFIX.
    pub ipfix: Option<SocketAddr>,
    /// A record per translation created and deleted (default: on without port blocks,
    /// off with them — a block's record names its subscriber).
    pub sessions: Option<bool>,
    /// The same events as log lines (default on).
    pub syslog: Option<bool>,
    /// Seconds between template resends (default 60).
    pub template_every: Option<u64>,
    /// IPFIX observation domain (default 1).
    pub domain: Option<u32>,
}

/// NAT event logging, settled against the rules (whether port blocks are on).
#[derive(Debug, Clone)]
pub struct NatLogConfig {
    /// The collector.
    pub ipfix: Option<SocketAddr>,
    /// Per-translation records.
    pub sessions: bool,
    /// Log lines.
    pub syslog: bool,
    /// Template resend period.
    pub template_every: Duration,
    /// Observation domain.
    pub domain: u32,
}

impl NatLogConfig {
    /// The table's settings; `blocks`: port blocks are on.
    pub fn new(f: &NatLogFile, blocks: bool) -> NatLogConfig {
        NatLogConfig {
            ipfix: f.ipfix,
            sessions: f.sessions.unwrap_or(!blocks),
            syslog: f.syslog.unwrap_or(true),
            template_every: Duration::from_secs(f.template_every.unwrap_or(60).max(1)),
            domain: f.domain.unwrap_or(1),
        }
    }
}

xgw_dataplane::counter_family! {
    /// NAT event logging.
    pub struct NatLogStats: SharedCounter {
        /// Event records sent to the collector.
        records_sent,
        /// IPFIX messages sent (data and templates).
        messages_sent,
        /// Template messages sent.
        templates_sent,
        /// Messages the collector could not be sent (counted, never retried).
        send_errors,
        /// Flow events lost before the exporter saw them (its queue was full).
        events_lost,
        /// Log lines written.
        lines,
    }
}

/// The running exporter's view for `xgwctl stats` and `/metrics`.
#[derive(Debug)]
pub struct NatLog {
    /// Its settings.
    pub cfg: NatLogConfig,
    /// Its counters.
    pub stats: NatLogStats,
}

/// Starts the exporter thread; it runs until `stop`. `events` are the engine's flow events
/// (a subscription of the control socket's hub), `lost` counts those its queue had no room
/// for.
pub fn start(
    cfg: NatLogConfig,
    shared: Arc<Shared>,
    events: crossbeam::channel::Receiver<FlowEvent>,
    lost: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    base: Instant,
) -> std::io::Result<(Arc<NatLog>, std::thread::JoinHandle<()>)> {
    // not connected: a connected UDP socket fails its next send after an ICMP error (a
    // collector restarting, its port closed a moment), losing a message that would arrive
    let sock = match cfg.ipfix {
        Some(c) => {
            let s = UdpSocket::bind(if c.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
            s.set_nonblocking(true)?;
            Some((s, c))
        }
        None => None,
    };
    let log = Arc::new(NatLog { cfg, stats: NatLogStats::default() });
    let l2 = Arc::clone(&log);
    let t = std::thread::Builder::new().name("xgw-natlog".into()).spawn(move || {
        let mut x = Exporter { log: l2, shared, sock, enc: Encoder::new(0), wall_base_ms: 0, last_templates: None };
        x.enc = Encoder::new(x.log.cfg.domain);
        // engine time is nanoseconds since `base`: records carry wall-clock milliseconds
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        x.wall_base_ms = u64::try_from(wall.saturating_sub(base.elapsed()).as_millis()).unwrap_or(0);
        x.run(&events, &lost, &stop);
    })?;
    Ok((log, t))
}

struct Exporter {
    log: Arc<NatLog>,
    shared: Arc<Shared>,
    sock: Option<(UdpSocket, SocketAddr)>,
    enc: Encoder,
    wall_base_ms: u64,
    last_templates: Option<Instant>,
}

/// Records taken per pass at most (the rest waits for the next pass, 50 ms later).
const PER_PASS: usize = 65_536;

impl Exporter {
    fn run(&mut self, events: &crossbeam::channel::Receiver<FlowEvent>, lost: &AtomicU64, stop: &AtomicBool) {
        let mut records = Vec::with_capacity(1024);
        while !stop.load(Ordering::Relaxed) {
            self.log.stats.events_lost.add(lost.swap(0, Ordering::Relaxed));
            records.clear();
            while records.len() < PER_PASS {
                let Ok(ev) = events.try_recv() else { break };
                if self.log.cfg.sessions {
                    records.extend(self.session(&ev.flow, ev.kind == EventKind::New, ev.at));
                }
            }
            if let Some(b) = &self.shared.blocks {
                while records.len() < PER_PASS {
                    let Some(ev) = b.pop_event() else { break };
                    records.extend(self.block(&ev));
                }
            }
            self.emit(&records);
            if records.len() < PER_PASS {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn ms(&self, t: Time) -> u64 {
        self.wall_base_ms + t.as_nanos() / 1_000_000
    }

    /// A translated flow's record: before translation the original key, after it the
    /// reply key mirrored (an ICMP query's identifier is the reply key's source "port").
    fn session(&self, f: &Flow, create: bool, at: Time) -> Option<Record> {
        if matches!(f.kind, FlowKind::Routed | FlowKind::Related) {
            return None;
        }
        let (k, r) = (&f.keys[0], &f.keys[1]);
        let post_sport = if k.proto == 1 { r.sport } else { r.dport };
        let post_dport = if k.proto == 1 { 0 } else { r.sport };
        Some(Record::Session {
            create,
            at_ms: self.ms(at),
            proto: k.proto,
            pre: (k.src, k.sport, k.dst, k.dport),
            post: (r.dst, post_sport, r.src, post_dport),
        })
    }

    fn block(&self, ev: &BlockEvent) -> Option<Record> {
        let at_ms = self.ms(ev.at);
        let pool = &self.shared.config().nat.pool;
        Some(match ev.kind {
            BlockEventKind::Allocated | BlockEventKind::Released => Record::Block {
                allocate: ev.kind == BlockEventKind::Allocated,
                at_ms,
                host: ev.host,
                addr: if ev.addr == 0 { self.shared.outside_addr() } else { ev.addr },
                ports: ev.ports,
            },
            BlockEventKind::Exhausted => Record::Exhausted {
                at_ms,
                pool: pool.iter().position(|a| u32::from(*a) == ev.addr).map_or(0, |i| i as u32 + 1),
            },
            BlockEventKind::QuotaExceeded => Record::Quota {
                at_ms,
                host: ev.host,
                max: self.shared.blocks.as_ref().map_or(0, |b| u32::from(b.config().per_host)),
            },
        })
    }

    fn emit(&mut self, records: &[Record]) {
        if self.log.cfg.syslog {
            for r in records {
                tracing::info!(target: "xgw::nat", "{}", line(r));
                self.log.stats.lines.inc();
            }
        }
        let Some((sock, to)) = &self.sock else { return };
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = u32::try_from(wall.as_secs()).unwrap_or(u32::MAX);
        if self.last_templates.is_none_or(|t| t.elapsed() >= self.log.cfg.template_every) {
            self.last_templates = Some(Instant::now());
            if send(sock, *to, &self.enc.templates(secs), &self.log.stats) {
                self.log.stats.templates_sent.inc();
            }
        }
        for m in self.enc.data(secs, records) {
            send(sock, *to, &m, &self.log.stats);
        }
        self.log.stats.records_sent.add(records.len() as u64);
    }
}

fn send(sock: &UdpSocket, to: SocketAddr, m: &[u8], stats: &NatLogStats) -> bool {
    match sock.send_to(m, to) {
        Ok(_) => {
            stats.messages_sent.inc();
            true
        }
        Err(_) => {
            stats.send_errors.inc();
            false
        }
    }
}

/// A record as a log line.
pub fn line(r: &Record) -> String {
    use std::net::Ipv4Addr as A;
    match *r {
        Record::Session { create, proto, pre, post, .. } => format!(
            "NAT44 session {} {} {}:{} -> {}:{} translated {}:{} -> {}:{}",
            if create { "create" } else { "delete" },
            xgw_dataplane::wire::proto::name(proto),
            A::from(pre.0),
            pre.1,
            A::from(pre.2),
            pre.3,
            A::from(post.0),
            post.1,
            A::from(post.2),
            post.3
        ),
        Record::Block { allocate, host, addr, ports, .. } => format!(
            "NAT port block {} {} -> {} ports {}-{}",
            if allocate { "allocate" } else { "release" },
            A::from(host),
            A::from(addr),
            ports.0,
            ports.1
        ),
        Record::Exhausted { pool, .. } => format!("NAT addresses exhausted (pool address {pool})"),
        Record::Quota { host, max, .. } => format!("NAT quota exceeded {}: all {max} port blocks full", A::from(host)),
    }
}
