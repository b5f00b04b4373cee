//! One frame in, one verdict out.
//!
//! ```text
//!  frame ─► Ethernet ─► not IPv4 ─────────────────────────────────────────► ToHost
//!              │
//!              ▼
//!           IPv4 checks (length, checksum, martians, options) ──bad──► Drop(reason)
//!              │
//!              ├─ later fragment ─► fragment table ─► L3 rewrite ──────────► Forward
//!              ▼
//!           L4 key ─► flow table hit? ──yes──► TCP state, counters, rewrite ─► Forward
//!              │ no
//!              ├─ ICMP error ─► flow of the quoted packet ─► inside-out rewrite ► Forward
//!              ├─ to the gateway itself, no forward ──────────────────────────► ToHost
//!              ▼
//!           slow path: policy check, PAT port reservation / forward / hairpin,
//!           flow insertion ─► rewrite ───────────────────────────────────────► Forward
//! ```
//!
//! The fast path (a flow hit) does a hash lookup, locks one flow, copies its precomputed
//! [`Rewrite`] and applies it with incremental checksum updates. Nothing on it allocates.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::alg::pptp::{self, Pptp, SegmentVerdict};
use crate::checksum;
use crate::config::{EngineConfig, IfaceConfig, IfaceId, Role};
use crate::conntrack::index::Probe;
use crate::conntrack::tcp::{self as tcpsm, TcpEvent, TcpState, Transition};
use crate::conntrack::{
    status, CsumDelta, Dir, Flow, FlowKey, FlowKind, FlowRef, FlowTable, InsertError, L4State, Rewrite,
};
use crate::counters::{Counters, DropReason};
use crate::frag::{FragEntry, FragKey, FragTable};
use crate::nat::{Forwards, PortCandidates};
use crate::time::Time;
use crate::wire::{be16, be32, ethernet, gre, icmp, ipv4, proto, put16, tcp, udp, WireError};

/// A frame in a buffer that may be larger than the frame (an AF_XDP chunk, a pcap record
/// copied into a scratch buffer). The engine may shorten or lengthen `len` (when it turns
/// the frame into an ICMP error) but never beyond `buf.len()`.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The buffer.
    pub buf: &'a mut [u8],
    /// Bytes of `buf` that hold the frame.
    pub len: usize,
}

impl<'a> Frame<'a> {
    /// A frame filling the whole buffer.
    pub fn new(buf: &'a mut [u8]) -> Frame<'a> {
        let len = buf.len();
        Frame { buf, len }
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len.min(self.buf.len())]
    }
}

/// Where a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// Ingress interface.
    pub iface: IfaceId,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Verdict {
    /// Transmit on this interface (the frame was rewritten).
    Forward(IfaceId),
    /// Hand to the host's own stack, unchanged.
    ToHost,
    /// Drop, for this reason.
    Drop(DropReason),
}

/// What policy sees of a packet that would create a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFlow {
    /// Ingress interface.
    pub ingress: IfaceId,
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: u32,
    /// Destination address (before any forward is applied).
    pub dst: u32,
    /// Source port (0 when none).
    pub sport: u16,
    /// Destination port (0 when none).
    pub dport: u16,
    /// ICMP type and code, for ICMP.
    pub icmp: Option<(u8, u8)>,
    /// Interface the flow would leave on.
    pub egress: Option<IfaceId>,
}

/// A policy decision, naming the rule that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Create the flow.
    Permit {
        /// Rule id (0 = default).
        rule: u32,
    },
    /// Drop the packet.
    Deny {
        /// Rule id (0 = implicit deny).
        rule: u32,
    },
}

/// Access policy evaluated on the first packet of a flow. The rules crate implements it.
pub trait Policy: Send + Sync + core::fmt::Debug {
    /// Decides whether `f` may create a flow (counting rule hits).
    fn check(&self, f: &NewFlow) -> Decision;

    /// The same decision without side effects (what-if evaluation on reload).
    fn would_permit(&self, f: &NewFlow) -> bool {
        matches!(self.check(f), Decision::Permit { .. })
    }

    /// The name of the access list rule `rule` belongs to (for log lines).
    fn list_of(&self, _rule: u32) -> Option<String> {
        None
    }

    /// The policy as `Any`, so the control plane can show its rules (None: nothing to show).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Permits everything (the policy when no access list is bound).
#[derive(Debug, Clone, Copy, Default)]
pub struct PermitAll;

/// Logs an access-list deny: an ASA 106023 line or structured fields.
fn log_deny(shared: &Shared, cfg: &EngineConfig, ingress: &IfaceConfig, egress: Option<IfaceId>, pkt: &Pkt, rule: u32) {
    let (src, dst) = (std::net::Ipv4Addr::from(pkt.src), std::net::Ipv4Addr::from(pkt.dst));
    if shared.asa_log.load(std::sync::atomic::Ordering::Relaxed) {
        let egress_name = egress.and_then(|e| cfg.iface(e)).map_or("?", |i| i.name.as_str());
        let list = shared.policy.load().list_of(rule).unwrap_or_else(|| "implicit".into());
        tracing::warn!(
            "%ASA-4-106023: Deny {} src {}:{src}/{} dst {egress_name}:{dst}/{} by access-group \"{list}\" [0x{rule:08x}, 0x0]",
            proto::name(pkt.proto),
            ingress.name,
            pkt.sport,
            pkt.dport,
        );
    } else {
        tracing::info!(
            rule,
            proto = pkt.proto,
            src = %src,
            sport = pkt.sport,
            dst = %dst,
            dport = pkt.dport,
            ingress = %ingress.name,
            "denied by access-list"
        );
    }
}

impl Policy for PermitAll {
    fn check(&self, _: &NewFlow) -> Decision {
        Decision::Permit { rule: 0 }
    }
}

/// State shared by every worker: configuration, the flow and fragment tables, the policy.
#[derive(Debug)]
pub struct Shared {
    config: EngineConfig,
    forwards: Forwards,
    outside: IfaceId,
    /// The outside address and its prefix length (`addr << 8 | len`): fixed by the rules,
    /// or following the kernel's (`address auto`; 0 while it has none).
    outside_net: core::sync::atomic::AtomicU64,
    /// Times the outside address changed, and the flows flushed with an old one.
    pub address_changes: crate::counters::SharedCounter,
    /// Flows translated onto an outside address that went away, removed.
    pub address_flushed: crate::counters::SharedCounter,
    /// The connection table.
    pub flows: FlowTable,
    /// The fragment table.
    pub frags: FragTable,
    /// The PPTP inspector.
    pub pptp: Pptp,
    /// The pool inside hosts are translated onto (empty: the outside address).
    nat_addrs: Vec<u32>,
    /// Per inside host counts (only when a per-host or embryonic limit is set).
    pub hosts: Option<HostCounts>,
    policy: ArcSwap<Box<dyn Policy>>,
    /// Log denies as ASA syslog lines (%ASA-4-106023) instead of structured fields.
    pub asa_log: std::sync::atomic::AtomicBool,
}

/// Connections and half-open TCP connections per inside host.
#[derive(Debug, Default)]
pub struct HostCounts {
    map: dashmap::DashMap<u32, (u32, u32), foldhash::fast::RandomState>,
}

impl HostCounts {
    /// True when `host` may open another connection (`embryonic`: a TCP SYN).
    fn admit(&self, host: u32, embryonic: bool, l: &crate::config::Limits) -> bool {
        let (flows, emb) = self.map.get(&host).map_or((0, 0), |v| *v);
        l.per_host.is_none_or(|m| flows < m) && (!embryonic || l.embryonic.is_none_or(|m| emb < m))
    }

    fn add(&self, host: u32, embryonic: bool) {
        let mut e = self.map.entry(host).or_insert((0, 0));
        e.0 += 1;
        e.1 += u32::from(embryonic);
    }

    fn leave_embryonic(&self, host: u32) {
        if let Some(mut e) = self.map.get_mut(&host) {
            e.1 = e.1.saturating_sub(1);
        }
    }

    fn remove(&self, host: u32, embryonic: bool) {
        self.map.remove_if_mut(&host, |_, e| {
            e.0 = e.0.saturating_sub(1);
            if embryonic {
                e.1 = e.1.saturating_sub(1);
            }
            e.0 == 0
        });
    }

    /// (connections, half-open TCP connections) of `host`.
    pub fn get(&self, host: u32) -> (u32, u32) {
        self.map.get(&host).map_or((0, 0), |v| *v)
    }
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Flows live at the time (inspector-created flows not counted).
    pub live: usize,
    /// How many of them the new policy would not admit.
    pub would_deny: usize,
    /// How many were torn down.
    pub killed: usize,
}

/// A live flow as the policy would have seen its first packet.
pub fn flow_as_new(f: &Flow) -> NewFlow {
    let k = &f.keys[0];
    let (dst, dport) = match f.kind {
        FlowKind::Dnat | FlowKind::Hairpin => (f.rewrite[0].dst, f.rewrite[0].dport),
        _ => (k.dst, k.dport),
    };
    NewFlow {
        ingress: f.rewrite[1].egress,
        proto: k.proto,
        src: k.src,
        dst,
        sport: k.sport,
        dport,
        icmp: (k.proto == proto::ICMP).then_some((icmp::kind::ECHO_REQUEST, 0)),
        egress: Some(f.rewrite[0].egress),
    }
}

impl Shared {
    /// Builds the shared state; refuses an inconsistent configuration.
    pub fn new(config: EngineConfig) -> Result<Shared, String> {
        config.validate()?;
        let (oid, oif) = config.outside().ok_or("no outside interface")?;
        let outside_net = (u64::from(u32::from(oif.addr)) << 8) | u64::from(oif.prefix_len);
        Ok(Shared {
            forwards: Forwards::new(&config.forwards),
            flows: FlowTable::new(config.limits.max_flows, config.limits.event_ring),
            frags: FragTable::new(config.limits.max_fragments),
            pptp: Pptp::new(config.pptp.clone()),
            nat_addrs: config.nat.pool.iter().map(|a| u32::from(*a)).collect(),
            hosts: (config.limits.per_host.is_some() || config.limits.embryonic.is_some()).then(HostCounts::default),
            policy: ArcSwap::from_pointee(Box::new(PermitAll) as Box<dyn Policy>),
            asa_log: std::sync::atomic::AtomicBool::new(false),
            outside: oid,
            outside_net: core::sync::atomic::AtomicU64::new(outside_net),
            address_changes: crate::counters::SharedCounter::default(),
            address_flushed: crate::counters::SharedCounter::default(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The outside interface.
    pub fn outside_iface(&self) -> IfaceId {
        self.outside
    }

    /// The outside address now (0 while `address auto` finds none on the device).
    #[inline]
    pub fn outside_addr(&self) -> u32 {
        (self.outside_net.load(core::sync::atomic::Ordering::Relaxed) >> 8) as u32
    }

    /// The outside address and its prefix length now.
    pub fn outside_net(&self) -> (u32, u8) {
        let v = self.outside_net.load(core::sync::atomic::Ordering::Relaxed);
        ((v >> 8) as u32, v as u8)
    }

    /// Makes `addr/len` the outside address (`address auto` following the kernel; 0: none).
    /// Flows translated onto the old address are removed (the remote end would never answer
    /// the new one), their PPTP calls with them; returns how many. New translations use the
    /// new address from now on.
    pub fn set_outside_addr(&self, addr: u32, len: u8, now: Time) -> usize {
        let old = self.outside_addr();
        let v = (u64::from(addr) << 8) | u64::from(len);
        if self.outside_net.swap(v, core::sync::atomic::Ordering::Relaxed) == v || old == addr {
            return 0;
        }
        self.address_changes.inc();
        if old == 0 {
            return 0;
        }
        let n = self.delete_flows(now, |f| {
            f.keys.iter().any(|k| k.src == old || k.dst == old)
                || f.rewrite.iter().any(|r| r.src == old || r.dst == old)
        });
        self.address_flushed.add(n as u64);
        n
    }

    /// True when `a` is one of the gateway's own addresses.
    #[inline]
    pub fn is_local(&self, a: u32) -> bool {
        (a != 0 && a == self.outside_addr())
            || self.config.ifaces.iter().any(|i| i.role == Role::Inside && u32::from(i.addr) == a)
    }

    /// True when `a` is the broadcast address of an attached subnet.
    pub fn is_subnet_broadcast(&self, a: u32) -> bool {
        let (o, len) = self.outside_net();
        (o != 0 && len < 31 && (o | !crate::config::prefix_mask(len)) == a)
            || self.config.ifaces.iter().any(|i| i.role == Role::Inside && i.prefix_len < 31 && i.broadcast() == a)
    }

    /// The address inside host `host` is translated onto (the same one every time): one of
    /// the pool, or the outside address (0 while there is none).
    pub fn nat_addr_for(&self, host: u32) -> u32 {
        let n = self.nat_addrs.len() as u32;
        if n == 0 {
            return self.outside_addr();
        }
        self.nat_addrs[(host.wrapping_mul(0x9e37_79b1) >> 16) as usize % n as usize]
    }

    /// True when `a` is an address inside hosts are translated onto.
    pub fn is_nat_addr(&self, a: u32) -> bool {
        if self.nat_addrs.is_empty() {
            a != 0 && a == self.outside_addr()
        } else {
            self.nat_addrs.contains(&a)
        }
    }

    /// Replaces the access policy atomically; flows already admitted keep their verdict.
    pub fn set_policy(&self, p: Box<dyn Policy>) {
        self.policy.store(Arc::new(p));
    }

    /// Swaps in a new access policy and reports how many live flows it would not admit;
    /// with `kill`, those flows are torn down (their inspector state with them). Flows
    /// created by an inspector (a PPTP call's GRE) are judged with their control connection.
    pub fn reload_policy(&self, p: Box<dyn Policy>, kill: bool, now: Time) -> ReloadReport {
        let mut denied = Vec::new();
        let mut live = 0;
        self.flows.for_each(|slot, f| {
            if f.kind == FlowKind::Related {
                return;
            }
            live += 1;
            if !p.would_permit(&flow_as_new(f)) {
                denied.push((slot, f.id));
            }
        });
        self.set_policy(p);
        let would_deny = denied.len();
        let mut killed = 0;
        if kill {
            for (slot, id) in denied {
                if let Some(f) = self.flows.remove_if(slot, now, |f| f.id == id) {
                    self.flow_gone(&f, now);
                    killed += 1;
                }
            }
        }
        ReloadReport { live, would_deny, killed }
    }

    /// The access policy in force.
    pub fn policy(&self) -> Arc<Box<dyn Policy>> {
        self.policy.load_full()
    }

    /// Deletes every live flow `pred` picks (`xgwctl conntrack delete|flush`), with what
    /// hangs off it (a PPTP control connection's calls and their GRE flows). Slots are
    /// visited one at a time, so workers are never held up; returns how many flows went.
    pub fn delete_flows(&self, now: Time, mut pred: impl FnMut(&Flow) -> bool) -> usize {
        let mut n = 0;
        for slot in 0..self.flows.capacity() as u32 {
            if let Some(f) = self.flows.remove_if(slot, now, &mut pred) {
                self.flow_gone(&f, now);
                n += 1;
            }
        }
        n
    }

    /// Expires idle flows and fragments: examines up to `budget` flow slots. Call it
    /// regularly from a control thread (or the replay loop).
    pub fn sweep(&self, now: Time, budget: usize) -> usize {
        self.frags.sweep(now);
        let n = self.flows.sweep(now, budget, &self.config.timeouts, |f| self.flow_gone(f, now));
        self.pptp.sweep(&self.flows, now);
        n
    }

    /// Tells the inspectors that a flow is gone (expired or deleted), so that what hangs
    /// off it (a PPTP session's calls) goes too.
    pub fn flow_gone(&self, f: &Flow, now: Time) {
        if let (true, Some(hosts)) = (f.status & status::HOST_COUNTED != 0, &self.hosts) {
            hosts.remove(f.inside_host(), f.status & status::EMBRYONIC != 0);
        }
        if f.status & status::ALG_PPTP != 0 {
            self.pptp.control_gone(f.id, &self.flows, now);
        } else if f.kind == FlowKind::Related {
            self.pptp.gre_gone(&f.keys[0], now);
        }
    }
}

/// What was parsed out of a frame, once.
#[derive(Debug, Clone, Copy, Default)]
struct Pkt {
    iface: IfaceId,
    now: Time,
    l3: u8,
    ip_len: u16,
    hl: u8,
    src: u32,
    dst: u32,
    proto: u8,
    ttl: u8,
    ident: u16,
    first_frag: bool,
    later_frag: bool,
    l4: L4,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    tcp_seq: u32,
    tcp_ack: u32,
    tcp_hl: u8,
    icmp_type: u8,
    icmp_code: u8,
}

impl Pkt {
    /// Offset of the IP header in the frame.
    fn l3(&self) -> usize {
        usize::from(self.l3)
    }

    /// IP header length.
    fn hl(&self) -> usize {
        usize::from(self.hl)
    }

    /// Where the IP packet lies in the frame.
    fn ip_range(&self) -> core::ops::Range<usize> {
        self.l3()..self.l3() + usize::from(self.ip_len)
    }
}

/// How the L4 header is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum L4 {
    Tcp,
    Udp,
    IcmpQuery,
    IcmpError,
    IcmpOther,
    /// PPTP enhanced GRE: the key (Call ID) is part of the flow key and rewritable.
    GrePptp,
    /// ESP: the SPI (in `sport`:`dport`) is part of the flow key; nothing in it changes.
    Esp,
    #[default]
    Other,
}

/// What an established flow's packet needs once its flow is unlocked.
enum Step {
    /// Rewritten already (under the flow's lock): transmit.
    Done(IfaceId),
    /// Apply this rewrite through [`Worker::forward`] (a first fragment, remembered there).
    Forward(Rewrite, CsumDelta),
    /// A PPTP control segment: inspect it (flow id, sent by the PNS), then apply this rewrite.
    Inspect(Rewrite, CsumDelta, u64, bool),
}

/// One worker's engine. Cheap to create; share [`Shared`] between workers.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    w: Worker,
}

/// The per-worker part of an engine: counters, the port-choice generator, the ICMP
/// token bucket. Kept apart from [`Shared`] so that the per-packet path borrows the shared
/// state without touching its reference count.
#[derive(Debug)]
struct Worker {
    counters: Arc<Counters>,
    /// Scratch for the bytes an inspector changed in a segment (reused; grows once).
    changes: Vec<crate::alg::pptp::stream::Change>,
    rng: u32,
    icmp_tokens: u64,
    icmp_refill: Time,
    log_second: u64,
    log_budget: u32,
}

impl Engine {
    /// A worker engine over shared state, with its own counters.
    pub fn new(shared: Arc<Shared>) -> Engine {
        let burst = u64::from(shared.config.limits.icmp_burst);
        let w = Worker {
            counters: Arc::new(Counters::default()),
            changes: Vec::with_capacity(64),
            rng: 0x9e37_79b9,
            icmp_tokens: burst,
            icmp_refill: Time::ZERO,
            log_second: u64::MAX,
            log_budget: 0,
        };
        Engine { shared, w }
    }

    /// This worker's counters (the control plane keeps a clone of the `Arc`).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.w.counters
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Seeds the port-choice generator (workers seed from the OS; tests keep the default).
    pub fn seed(&mut self, seed: u32) {
        self.w.rng = seed | 1;
    }

    /// Processes a batch: `verdicts[i]` is the verdict for `frames[i]`.
    /// Processes a batch: `verdicts[i]` is the verdict for `frames[i]`.
    ///
    /// In stages, so that a batch's memory accesses overlap instead of waiting one after
    /// another: every frame is parsed and its index buckets requested, then every frame is
    /// looked up and its flow slot requested, then every frame is processed — by which time
    /// its lines are (mostly) in cache.
    pub fn process_batch(&mut self, frames: &mut [Frame<'_>], metas: &[RxMeta], now: Time, verdicts: &mut [Verdict]) {
        const STAGE: usize = 64;
        let n = frames.len().min(metas.len()).min(verdicts.len());
        let mut start = 0;
        while start < n {
            let end = (start + STAGE).min(n);
            let sh: &Shared = &self.shared;
            let w = &mut self.w;
            let mut parsed: [Option<(Pkt, FlowKey, Probe)>; STAGE] = [None; STAGE];
            for i in start..end {
                w.counters.rx.inc();
                match w.stage_parse(sh, &mut frames[i], metas[i], now) {
                    Ok((pkt, key)) => {
                        let p = sh.flows.probe(&key);
                        sh.flows.touch(&p);
                        parsed[i - start] = Some((pkt, key, p));
                    }
                    Err(v) => {
                        w.count(v);
                        verdicts[i] = v;
                    }
                }
            }
            let mut hits: [Option<FlowRef>; STAGE] = [None; STAGE];
            for (j, slot) in parsed[..end - start].iter().enumerate() {
                if let Some((_, _, p)) = slot {
                    hits[j] = sh.flows.lookup_probe(p);
                    if let Some(r) = hits[j] {
                        sh.flows.touch_slot(r);
                    }
                }
            }
            for i in start..end {
                if let Some((pkt, key, _)) = &parsed[i - start] {
                    let v = w.stage_decide(sh, &mut frames[i], pkt, key, hits[i - start], false);
                    w.count(v);
                    verdicts[i] = v;
                }
            }
            start = end;
        }
    }

    /// Processes one frame: rewrites it in place and returns the verdict.
    pub fn process(&mut self, frame: &mut Frame<'_>, meta: RxMeta, now: Time) -> Verdict {
        let sh: &Shared = &self.shared;
        let w = &mut self.w;
        w.counters.rx.inc();
        let v = w.process_inner(sh, frame, meta, now);
        w.count(v);
        v
    }
}

impl Worker {
    #[inline]
    fn count(&self, v: Verdict) {
        match v {
            Verdict::Forward(_) => self.counters.forwarded.inc(),
            Verdict::ToHost => self.counters.to_host.inc(),
            Verdict::Drop(r) => self.counters.count_drop(r),
        }
    }

    fn next_rand(&mut self) -> u32 {
        // xorshift32: port choice only needs to be unpredictable-ish and cheap
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    fn process_inner(&mut self, sh: &Shared, frame: &mut Frame<'_>, meta: RxMeta, now: Time) -> Verdict {
        match self.stage_parse(sh, frame, meta, now) {
            Ok((pkt, key)) => {
                // both buckets, then all the slot's lines, requested before the first is
                // read: their misses overlap instead of following one another
                let p = sh.flows.probe(&key);
                sh.flows.touch(&p);
                let hit = sh.flows.lookup_probe(&p);
                if let Some(r) = hit {
                    sh.flows.touch_slot(r);
                }
                self.stage_decide(sh, frame, &pkt, &key, hit, true)
            }
            Err(v) => v,
        }
    }

    /// First stage: parse and validate; the flow key, or the verdict of a frame that needs
    /// no lookup (host traffic, malformed, later fragments). Inlined into the batch loop, so
    /// the packet's fields stay in registers instead of a returned struct in memory.
    #[inline(always)]
    fn stage_parse(
        &mut self,
        sh: &Shared,
        frame: &mut Frame<'_>,
        meta: RxMeta,
        now: Time,
    ) -> Result<(Pkt, FlowKey), Verdict> {
        let len = frame.len.min(frame.buf.len());
        let pkt = match self.parse(sh, &frame.buf[..len], meta) {
            Ok(Some(p)) => Pkt { now, ..p },
            Ok(None) => return Err(Verdict::ToHost),
            Err(r) => return Err(Verdict::Drop(r)),
        };
        // Later fragments: no L4 header, use what the first fragment decided.
        if pkt.later_frag {
            return Err(self.later_fragment(sh, frame, &pkt, now));
        }
        if matches!(pkt.l4, L4::Tcp | L4::Udp) && !pkt.first_frag && finish_partial_csum(frame, &pkt) {
            self.counters.l4_csum_completed.inc();
        }
        Ok((pkt, flow_key(&pkt)))
    }

    /// Last stage: the flow's packet (`hit`), or the slow path. `fresh` says `hit` was
    /// looked up just now; a batch's earlier look may predate a flow created (or removed)
    /// by an earlier packet of the same batch, so then a miss is looked up again.
    fn stage_decide(
        &mut self,
        sh: &Shared,
        frame: &mut Frame<'_>,
        pkt: &Pkt,
        key: &FlowKey,
        hit: Option<FlowRef>,
        fresh: bool,
    ) -> Verdict {
        let (pkt, key, now) = (*pkt, *key, pkt.now);
        let meta = RxMeta { iface: pkt.iface };
        let cfg = &sh.config;
        if let Some(r) = hit {
            if let Some(v) = self.established(sh, frame, &pkt, r, &key) {
                return v;
            }
        }
        // the index's candidate was another key with the same tag (or the flow went away),
        // or a batch's look predates this packet: settle it with a confirmed lookup
        if !fresh || hit.is_some() {
            if let Some(r) = sh.flows.lookup(&key).filter(|r| Some(*r) != hit) {
                if let Some(v) = self.established(sh, frame, &pkt, r, &key) {
                    return v;
                }
            }
        }
        if pkt.l4 == L4::Esp {
            if let Some(v) = self.esp_miss(sh, frame, &pkt) {
                return v;
            }
        }
        if pkt.l4 == L4::IcmpError {
            return self.icmp_error(sh, frame, &pkt, now);
        }
        if pkt.l4 == L4::GrePptp {
            // PPTP GRE flows exist only for calls the inspector saw being set up
            return Verdict::Drop(DropReason::NoMatchingGreSession);
        }

        let ingress = match cfg.iface(meta.iface) {
            Some(i) => i,
            None => return Verdict::Drop(DropReason::UnknownInterface),
        };
        let to_outside_addr = pkt.dst == sh.outside_addr();
        let forward = if to_outside_addr && matches!(pkt.l4, L4::Tcp | L4::Udp) {
            sh.forwards.get(pkt.proto, pkt.dport).copied()
        } else {
            None
        };
        if sh.is_local(pkt.dst) && forward.is_none() {
            // the gateway's own traffic (SSH to the box, ping, its own connections' replies)
            return Verdict::ToHost;
        }
        if ingress.role == Role::Outside && pkt.l4 == L4::Udp && pkt.sport == 67 && pkt.dport == 68 {
            // a DHCP server answering the box's own client, perhaps to an address the box
            // does not have yet (`address dhcp`): the XDP program passes these to the kernel
            return Verdict::ToHost;
        }
        if forward.is_none() && pkt.dst != sh.outside_addr() && sh.is_nat_addr(pkt.dst) && ingress.role == Role::Outside
        {
            // a pool address: everything to it belongs to a translation, and this has none
            return Verdict::Drop(DropReason::UnsolicitedInbound);
        }
        if ingress.role == Role::Outside && forward.is_none() {
            return Verdict::Drop(DropReason::UnsolicitedInbound);
        }
        if pkt.ttl <= 1 {
            return self.time_exceeded(sh, frame, &pkt, meta, now);
        }
        self.new_flow(sh, frame, &pkt, &key, forward)
    }

    #[inline(always)]
    fn parse(&self, sh: &Shared, frame: &[u8], meta: RxMeta) -> Result<Option<Pkt>, DropReason> {
        let eth = ethernet::Frame::new_checked(frame).map_err(|_| DropReason::EthTruncated)?;
        if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
            return Ok(None);
        }
        let l3 = eth.payload_offset();
        let ip = ipv4::Packet::new_checked(&frame[l3..]).map_err(|e| match e {
            WireError::Truncated => DropReason::IpTruncated,
            WireError::BadVersion => DropReason::IpBadVersion,
            WireError::BadLength => DropReason::IpBadLength,
        })?;
        if !ip.verify_checksum() {
            return Err(DropReason::IpBadChecksum);
        }
        let cfg = &sh.config;
        if cfg.iface(meta.iface).is_none() {
            return Err(DropReason::UnknownInterface);
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if is_martian_source(src) || sh.is_local(src) {
            return Err(DropReason::MartianSource);
        }
        if is_multicast_or_broadcast(dst) || sh.is_subnet_broadcast(dst) {
            return Ok(None);
        }
        if src == dst {
            return Err(DropReason::LandAttack);
        }
        let hl = ip.header_len();
        if hl > ipv4::MIN_HEADER_LEN {
            if sh.is_local(dst) {
                return Ok(None);
            }
            return Err(DropReason::IpOptions);
        }
        let mut p = Pkt {
            iface: meta.iface,
            now: Time::ZERO,
            l3: l3 as u8,
            ip_len: ip.total_len(),
            hl: hl as u8,
            src,
            dst,
            proto: ip.protocol(),
            ttl: ip.ttl(),
            ident: ip.ident(),
            first_frag: ip.more_frags() && ip.frag_offset() == 0,
            later_frag: ip.frag_offset() != 0,
            l4: L4::Other,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_hl: 0,
            icmp_type: 0,
            icmp_code: 0,
        };
        if p.later_frag {
            return Ok(Some(p)); // no L4 header
        }
        let l4 = ip.payload();
        match p.proto {
            proto::TCP => {
                let t = tcp::Packet::new_checked(l4).map_err(|_| DropReason::TcpMalformed)?;
                p.l4 = L4::Tcp;
                (p.sport, p.dport, p.tcp_flags) = (t.src_port(), t.dst_port(), t.flags());
                (p.tcp_seq, p.tcp_ack, p.tcp_hl) = (t.seq(), t.ack(), t.header_len() as u8);
            }
            proto::UDP => {
                let u = if p.first_frag { udp::Packet::new_header_only(l4) } else { udp::Packet::new_checked(l4) }
                    .map_err(|_| DropReason::UdpMalformed)?;
                p.l4 = L4::Udp;
                (p.sport, p.dport) = (u.src_port(), u.dst_port());
            }
            proto::ICMP => {
                let i = icmp::Packet::new_checked(l4).map_err(|_| DropReason::IcmpMalformed)?;
                (p.icmp_type, p.icmp_code) = (i.msg_type(), i.code());
                if icmp::is_query(p.icmp_type) {
                    p.l4 = L4::IcmpQuery;
                    p.sport = i.ident();
                } else if icmp::is_error(p.icmp_type) {
                    if p.first_frag {
                        return Err(DropReason::IcmpMalformed);
                    }
                    p.l4 = L4::IcmpError;
                } else {
                    p.l4 = L4::IcmpOther;
                }
            }
            proto::ESP if cfg.esp_by_spi => {
                if l4.len() < 8 {
                    return Err(DropReason::EspMalformed);
                }
                let spi = be32(l4, 0);
                if spi == 0 {
                    return Err(DropReason::EspMalformed);
                }
                p.l4 = L4::Esp;
                (p.sport, p.dport) = ((spi >> 16) as u16, spi as u16);
            }
            proto::GRE => {
                let g = gre::Packet::new_checked(l4).map_err(|_| DropReason::GreTruncated)?;
                match g.kind() {
                    gre::Kind::Malformed => return Err(DropReason::GreMalformed),
                    // with inspection, PPTP GRE is tracked by Call ID (the flows the
                    // inspector creates); without it, and for GRE v0 always, by address pair
                    gre::Kind::Pptp if cfg.pptp.enabled => {
                        p.l4 = L4::GrePptp;
                        p.dport = g.call_id();
                    }
                    gre::Kind::Pptp | gre::Kind::V0 => p.l4 = L4::Other,
                }
            }
            _ => {}
        }
        Ok(Some(p))
    }

    /// The fast path. Returns `None` when the flow vanished between lookup and lock.
    fn established(
        &mut self,
        sh: &Shared,
        frame: &mut Frame<'_>,
        pkt: &Pkt,
        r: FlowRef,
        key: &FlowKey,
    ) -> Option<Verdict> {
        let (meta, now) = (RxMeta { iface: pkt.iface }, pkt.now);
        if pkt.ttl <= 1 {
            // still a transit packet of a known flow: answer like a router
            sh.flows.with_flow(r, key, |_, _| ())?;
            return Some(self.time_exceeded(sh, frame, pkt, meta, now));
        }
        let outcome = sh.flows.with_flow_offload(r, key, |f, dir| {
            if f.rewrite[dir.opposite().index()].egress != meta.iface {
                // a flow's packets arrive where its other direction leaves: anything else
                // is spoofed
                return Err(DropReason::WrongInterface);
            }
            if let L4State::Tcp(state) = f.l4 {
                let reply = dir == Dir::Reply;
                match tcpsm::transition(state, reply, TcpEvent::from_flags(pkt.tcp_flags)) {
                    Transition::Invalid => return Err(DropReason::TcpInvalid),
                    Transition::Ignore => {}
                    Transition::To(next) => {
                        if next == TcpState::SynSent && matches!(state, TcpState::TimeWait | TcpState::Close) {
                            // the port pair is reused: a new connection on the old mapping
                            // (OFFLOAD stays until the fast path has given the flow back)
                            f.status &= status::ALG_PPTP | status::HOST_COUNTED | status::EMBRYONIC | status::OFFLOAD;
                            f.created = now;
                        }
                        f.l4 = L4State::Tcp(next);
                        if f.status & status::EMBRYONIC != 0
                            && !matches!(next, TcpState::SynSent | TcpState::SynRecv | TcpState::SynSent2)
                        {
                            f.status &= !status::EMBRYONIC;
                            if let Some(hosts) = &sh.hosts {
                                hosts.leave_embryonic(f.inside_host());
                            }
                        }
                        if next == TcpState::Established && f.seen_reply() {
                            f.status |= status::ASSURED;
                        }
                    }
                }
            } else if f.seen_reply() && f.l4 == L4State::Udp {
                f.status |= status::ASSURED;
            }
            if dir == Dir::Reply {
                f.status |= status::SEEN_REPLY;
            }
            let d = dir.index();
            f.packets[d] += 1;
            f.bytes[d] += u64::from(pkt.ip_len);
            f.last_seen = now;
            if f.status & status::ALG_PPTP != 0 {
                return Ok(Step::Inspect(f.rewrite[d], f.csum[d], f.id, dir == Dir::Orig));
            }
            if pkt.first_frag {
                return Ok(Step::Forward(f.rewrite[d], f.csum[d]));
            }
            // the common case: rewrite here, so only the egress leaves the closure
            let ip = &mut frame.buf[pkt.ip_range()];
            apply_rewrite(ip, pkt.hl(), pkt.l4, &f.rewrite[d], f.csum[d]);
            Ok(Step::Done(f.rewrite[d].egress))
        })?;
        self.counters.flow_hits.inc();
        Some(match outcome {
            Ok(Step::Done(egress)) => Verdict::Forward(egress),
            Ok(Step::Forward(rw, csum)) => self.forward(sh, frame, pkt, &rw, csum, now),
            Ok(Step::Inspect(rw, csum, flow_id, from_pns)) => {
                match self.inspect_pptp(sh, frame, pkt, flow_id, from_pns) {
                    Ok(()) => self.forward(sh, frame, pkt, &rw, csum, now),
                    Err(v) => v,
                }
            }
            Err(reason) => Verdict::Drop(reason),
        })
    }

    /// Runs a PPTP control segment through the inspector: Call IDs in its payload are
    /// rewritten in place (TCP checksum adjusted byte by byte), calls' GRE flows are created
    /// and removed. `Err` carries the verdict for a segment that must not be forwarded as is.
    fn inspect_pptp(
        &mut self,
        sh: &Shared,
        frame: &mut Frame<'_>,
        pkt: &Pkt,
        flow_id: u64,
        from_pns: bool,
    ) -> Result<(), Verdict> {
        let tcp_off = pkt.l3() + pkt.hl();
        let seg = &mut frame.buf[tcp_off..pkt.ip_range().end];
        let hl = usize::from(pkt.tcp_hl).min(seg.len());
        let (hdr, payload) = seg.split_at_mut(hl);
        self.changes.clear();
        let v = sh.pptp.on_segment(
            flow_id,
            from_pns,
            pkt.tcp_seq,
            pkt.tcp_ack,
            pkt.tcp_flags,
            payload,
            &mut self.changes,
            &sh.flows,
            pkt.now,
        );
        // the payload starts at an even offset of the segment (the TCP header is a multiple
        // of 4 bytes), so a byte's parity in the payload is its parity in the checksum
        let mut c = be16(hdr, 16);
        for &(i, old, new) in &self.changes {
            let (o, n) =
                if i % 2 == 0 { (u16::from(old) << 8, u16::from(new) << 8) } else { (u16::from(old), u16::from(new)) };
            c = checksum::adjust16(c, o, n);
        }
        put16(hdr, 16, c);
        match v {
            SegmentVerdict::Pass => Ok(()),
            SegmentVerdict::OutOfOrder => Err(Verdict::Drop(DropReason::PptpOutOfOrder)),
            SegmentVerdict::Invalid => Err(Verdict::Drop(DropReason::PptpInvalidMessage)),
            SegmentVerdict::Refused => Err(Verdict::Drop(DropReason::PptpCallRefused)),
            SegmentVerdict::Reset => {
                to_reset(&mut frame.buf[pkt.ip_range()], pkt.hl(), usize::from(pkt.tcp_hl));
                frame.len = pkt.l3() + pkt.hl() + usize::from(pkt.tcp_hl);
                Ok(())
            }
        }
    }

    /// ESP whose SPI is not (yet) a flow key. Flows not translated by SPI (between inside
    /// interfaces, or NAT off) are keyed by address pair; an inbound SPI towards the outside
    /// address is learnt by the one inside host waiting for its peer's first packet (its
    /// flow's reply key is the placeholder `(peer, outside, SPI 0)` — SPI 0 never appears
    /// on the wire — so at most one host per peer waits at a time and no packet is ever
    /// delivered to a guess).
    fn esp_miss(&mut self, sh: &Shared, frame: &mut Frame<'_>, pkt: &Pkt) -> Option<Verdict> {
        let pair = FlowKey { src: pkt.src, dst: pkt.dst, sport: 0, dport: 0, proto: proto::ESP };
        let r = sh.flows.lookup(&pair)?;
        let spi_key = flow_key(pkt);
        let pending = r.dir() == Dir::Reply
            && sh.is_nat_addr(pkt.dst)
            && sh.flows.with_flow(r, &pair, |f, _| f.kind == FlowKind::Snat).unwrap_or(false);
        if pending {
            if !sh.flows.rekey(r, &pair, spi_key) {
                return Some(Verdict::Drop(DropReason::EspNoSa));
            }
            return self.established(sh, frame, pkt, r, &spi_key);
        }
        // tracked by address pair (not translated by SPI)
        self.established(sh, frame, pkt, r, &pair)
    }

    /// Applies a rewrite, decrements the TTL, remembers a first fragment, and forwards.
    fn forward(
        &mut self,
        sh: &Shared,
        frame: &mut Frame<'_>,
        pkt: &Pkt,
        rw: &Rewrite,
        csum: CsumDelta,
        now: Time,
    ) -> Verdict {
        let ip = &mut frame.buf[pkt.ip_range()];
        apply_rewrite(ip, pkt.hl(), pkt.l4, rw, csum);
        if pkt.first_frag {
            let k = FragKey { src: pkt.src, dst: pkt.dst, ident: pkt.ident, proto: pkt.proto };
            let e = FragEntry {
                src: rw.src,
                dst: rw.dst,
                ingress: pkt.iface,
                egress: rw.egress,
                expires: now.plus(sh.config.timeouts.fragment),
            };
            if !sh.frags.insert(k, e) {
                self.counters.count_drop(DropReason::FragmentTableFull);
            }
        }
        Verdict::Forward(rw.egress)
    }

    fn later_fragment(&mut self, sh: &Shared, frame: &mut Frame<'_>, pkt: &Pkt, now: Time) -> Verdict {
        let k = FragKey { src: pkt.src, dst: pkt.dst, ident: pkt.ident, proto: pkt.proto };
        let Some(e) = sh.frags.lookup(&k, now) else {
            return if sh.is_local(pkt.dst) { Verdict::ToHost } else { Verdict::Drop(DropReason::FragmentNoFlow) };
        };
        if e.ingress != pkt.iface {
            return Verdict::Drop(DropReason::WrongInterface);
        }
        if pkt.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let mut ip = ipv4::Packet::new_unchecked(&mut frame.buf[pkt.ip_range()]);
        if e.src != pkt.src {
            ip.set_src_addr_fixup(e.src);
        }
        if e.dst != pkt.dst {
            ip.set_dst_addr_fixup(e.dst);
        }
        ip.decrement_ttl();
        Verdict::Forward(e.egress)
    }

    /// The slow path: policy, translation choice, insertion.
    fn new_flow(
        &mut self,
        sh: &Shared,
        frame: &mut Frame<'_>,
        pkt: &Pkt,
        key: &FlowKey,
        forward: Option<crate::config::PortForward>,
    ) -> Verdict {
        let (meta, now) = (RxMeta { iface: pkt.iface }, pkt.now);
        let shared = sh;
        let cfg = &shared.config;
        let Some(ingress) = cfg.iface(meta.iface) else {
            return Verdict::Drop(DropReason::UnknownInterface);
        };
        if pkt.l4 == L4::IcmpOther {
            // router solicitations, timestamps without ids, ...: not forwarded
            return Verdict::Drop(DropReason::UnsolicitedInbound);
        }
        let l4state = match pkt.l4 {
            L4::Tcp => {
                let ev = TcpEvent::from_flags(pkt.tcp_flags);
                match ev {
                    TcpEvent::Syn => L4State::Tcp(TcpState::SynSent),
                    TcpEvent::Ack if cfg.tcp_pickup && ingress.role == Role::Inside => {
                        L4State::Tcp(TcpState::Established)
                    }
                    _ => return Verdict::Drop(DropReason::TcpNewNotSyn),
                }
            }
            L4::Udp => L4State::Udp,
            L4::IcmpQuery => {
                if pkt.icmp_type == icmp::kind::ECHO_REPLY || pkt.icmp_type == icmp::kind::TIMESTAMP_REPLY {
                    // a reply creates nothing
                    return Verdict::Drop(if ingress.role == Role::Outside {
                        DropReason::UnsolicitedInbound
                    } else {
                        DropReason::IcmpErrorNoFlow
                    });
                }
                L4State::Icmp
            }
            _ => L4State::Other,
        };
        // access lists name real addresses (the forward's inside host, like ASA 8.3+)
        let (real_dst, real_dport, egress) = match forward {
            Some(fw) => (u32::from(fw.inside_addr), fw.inside_port, cfg.inside_for(u32::from(fw.inside_addr))),
            None => (pkt.dst, pkt.dport, Some(cfg.inside_for(pkt.dst).unwrap_or(shared.outside))),
        };
        let nf = NewFlow {
            ingress: meta.iface,
            proto: pkt.proto,
            src: pkt.src,
            dst: real_dst,
            sport: pkt.sport,
            dport: real_dport,
            icmp: (pkt.proto == proto::ICMP).then_some((pkt.icmp_type, pkt.icmp_code)),
            egress,
        };
        let rule = match shared.policy.load().check(&nf) {
            Decision::Permit { rule } => rule,
            Decision::Deny { rule } => {
                if self.take_log_token(now) {
                    log_deny(shared, cfg, ingress, egress, pkt, rule);
                }
                return Verdict::Drop(DropReason::AclDenied);
            }
        };
        // per inside host limits
        let host = match forward {
            Some(fw) if ingress.role == Role::Outside => Some(u32::from(fw.inside_addr)),
            _ if ingress.role == Role::Inside => Some(pkt.src),
            _ => None,
        };
        let embryonic = l4state == L4State::Tcp(TcpState::SynSent);
        let counted = host.filter(|_| shared.hosts.is_some());
        if let (Some(h), Some(hosts)) = (counted, &shared.hosts) {
            if !hosts.admit(h, embryonic, &cfg.limits) {
                return Verdict::Drop(DropReason::ConnLimit);
            }
        }
        let outside = (shared.outside, shared.outside_addr());
        let seed = self.next_rand();
        // a PPTP control connection: the inspector follows it
        let alg = if pkt.l4 == L4::Tcp
            && cfg.pptp.inspects(meta.iface)
            && (key.dport == pptp::PORT || forward.is_some_and(|fw| fw.inside_port == pptp::PORT))
        {
            status::ALG_PPTP
        } else {
            0
        };
        // ESP that is not translated by SPI (between inside interfaces, NAT off, towards a
        // forward) is tracked by address pair: its SAs' SPIs need no learning
        let by_pair = pkt.l4 == L4::Esp && (forward.is_some() || cfg.inside_for(pkt.dst).is_some() || !cfg.nat.enabled);
        let k = if by_pair { FlowKey { sport: 0, dport: 0, ..*key } } else { *key };
        let key = &k;

        let result = if let Some(fw) = forward {
            let host = u32::from(fw.inside_addr);
            let Some(host_if) = cfg.inside_for(host) else {
                return Verdict::Drop(DropReason::UnsolicitedInbound);
            };
            if ingress.role == Role::Outside {
                // DNAT: remote -> P:fport becomes remote -> host:hport
                let reply = FlowKey { src: host, dst: k.src, sport: fw.inside_port, dport: k.sport, proto: k.proto };
                shared.flows.insert(
                    k,
                    [reply],
                    |r| {
                        let mut f = Flow::new(
                            [k, r],
                            [
                                Rewrite {
                                    src: k.src,
                                    dst: host,
                                    sport: k.sport,
                                    dport: fw.inside_port,
                                    egress: host_if,
                                },
                                Rewrite {
                                    src: outside.1,
                                    dst: k.src,
                                    sport: k.dport,
                                    dport: k.sport,
                                    egress: meta.iface,
                                },
                            ],
                            l4state,
                            FlowKind::Dnat,
                            now,
                        );
                        f.rule = rule;
                        f.status |= alg;
                        f
                    },
                    now,
                )
            } else {
                // hairpin: inside -> P:fport becomes P:p -> host:hport, replies go back inside
                let cands = PortCandidates::new(k.sport, &cfg.nat, seed).map(|p| FlowKey {
                    src: host,
                    dst: outside.1,
                    sport: fw.inside_port,
                    dport: p,
                    proto: k.proto,
                });
                shared.flows.insert(
                    k,
                    cands,
                    |r| {
                        let mut f = Flow::new(
                            [k, r],
                            [
                                Rewrite {
                                    src: outside.1,
                                    dst: host,
                                    sport: r.dport,
                                    dport: fw.inside_port,
                                    egress: host_if,
                                },
                                Rewrite {
                                    src: outside.1,
                                    dst: k.src,
                                    sport: k.dport,
                                    dport: k.sport,
                                    egress: meta.iface,
                                },
                            ],
                            l4state,
                            FlowKind::Hairpin,
                            now,
                        );
                        f.rule = rule;
                        f.status |= alg;
                        f
                    },
                    now,
                )
            }
        } else if let Some(dst_if) = cfg.inside_for(pkt.dst) {
            // between inside interfaces: tracked, not translated
            let reply = mirror(&k);
            shared.flows.insert(
                k,
                [reply],
                |r| {
                    let mut f = Flow::new(
                        [k, r],
                        [
                            Rewrite { src: k.src, dst: k.dst, sport: k.sport, dport: k.dport, egress: dst_if },
                            Rewrite { src: r.src, dst: r.dst, sport: r.sport, dport: r.dport, egress: meta.iface },
                        ],
                        l4state,
                        FlowKind::Routed,
                        now,
                    );
                    f.rule = rule;
                    f.status |= alg;
                    f
                },
                now,
            )
        } else {
            // PAT onto the outside address
            if !cfg.nat.enabled {
                let reply = mirror(&k);
                shared.flows.insert(
                    k,
                    [reply],
                    |r| {
                        let mut f = Flow::new(
                            [k, r],
                            [
                                Rewrite { src: k.src, dst: k.dst, sport: k.sport, dport: k.dport, egress: outside.0 },
                                Rewrite { src: r.src, dst: r.dst, sport: r.sport, dport: r.dport, egress: meta.iface },
                            ],
                            l4state,
                            FlowKind::Routed,
                            now,
                        );
                        f.rule = rule;
                        f.status |= alg;
                        f
                    },
                    now,
                )
            } else {
                if pkt.proto == proto::AH {
                    return Verdict::Drop(DropReason::AhNotTranslatable);
                }
                // paired pooling (RFC 4787 REQ-2): an inside host always gets the same address
                let nat_addr = shared.nat_addr_for(pkt.src);
                if nat_addr == 0 {
                    return Verdict::Drop(DropReason::NoOutsideAddress);
                }
                let ports = match pkt.l4 {
                    L4::Tcp | L4::Udp | L4::IcmpQuery => PortCandidates::new(k.sport, &cfg.nat, seed),
                    _ => PortCandidates::only(0),
                };
                let icmp_q = pkt.l4 == L4::IcmpQuery;
                let esp = pkt.l4 == L4::Esp;
                let cands = ports.map(|p| {
                    if esp {
                        // the placeholder until the peer's inbound SPI is learnt
                        FlowKey { src: k.dst, dst: nat_addr, sport: 0, dport: 0, proto: k.proto }
                    } else if icmp_q {
                        FlowKey { src: k.dst, dst: nat_addr, sport: p, dport: 0, proto: k.proto }
                    } else {
                        FlowKey { src: k.dst, dst: nat_addr, sport: k.dport, dport: p, proto: k.proto }
                    }
                });
                shared.flows.insert(
                    k,
                    cands,
                    |r| {
                        let (nsport, orig_back) = if esp {
                            (k.sport, (0, 0))
                        } else if icmp_q {
                            (r.sport, (k.sport, 0))
                        } else {
                            (r.dport, (k.dport, k.sport))
                        };
                        let mut f = Flow::new(
                            [k, r],
                            [
                                Rewrite { src: nat_addr, dst: k.dst, sport: nsport, dport: k.dport, egress: outside.0 },
                                Rewrite {
                                    src: k.dst,
                                    dst: k.src,
                                    sport: orig_back.0,
                                    dport: orig_back.1,
                                    egress: meta.iface,
                                },
                            ],
                            l4state,
                            FlowKind::Snat,
                            now,
                        );
                        f.rule = rule;
                        f.status |= alg;
                        f
                    },
                    now,
                )
            }
        };
        match result {
            Ok((r, flow)) => {
                self.counters.flows_created.inc();
                if let (Some(h), Some(hosts)) = (counted, &sh.hosts) {
                    hosts.add(h, embryonic);
                    let bits = status::HOST_COUNTED | if embryonic { status::EMBRYONIC } else { 0 };
                    sh.flows.with_flow(r, key, |f, _| f.status |= bits);
                }
                if flow.status & status::ALG_PPTP != 0 {
                    let syn = (pkt.tcp_flags & tcp::flags::SYN != 0).then_some(pkt.tcp_seq);
                    sh.pptp.open_session(&flow, syn, now);
                }
                // count the first packet and apply its rewrite through the normal path
                match self.established(sh, frame, pkt, r, key) {
                    Some(v) => v,
                    None => Verdict::Drop(DropReason::TableFull),
                }
            }
            Err(InsertError::Exists(r)) => match self.established(sh, frame, pkt, r, key) {
                Some(v) => v,
                None => Verdict::Drop(DropReason::TableFull),
            },
            Err(InsertError::Full) => Verdict::Drop(DropReason::TableFull),
            Err(InsertError::NoReplyKey) => Verdict::Drop(match pkt.l4 {
                L4::Tcp | L4::Udp | L4::IcmpQuery => DropReason::NatPortsExhausted,
                _ => DropReason::NatPeerTaken,
            }),
        }
    }

    /// An ICMP error matching no flow directly: find the flow of the packet it quotes and
    /// translate the error (outer header and quote) the way that flow's replies go.
    fn icmp_error(&mut self, sh: &Shared, frame: &mut Frame<'_>, pkt: &Pkt, _now: Time) -> Verdict {
        let icmp_off = pkt.l3() + pkt.hl();
        let icmp_end = pkt.ip_range().end;
        let body = &frame.buf[icmp_off + icmp::HEADER_LEN..icmp_end];
        let Ok(inner) = ipv4::Packet::new_quoted(body) else {
            return Verdict::Drop(DropReason::IcmpMalformed);
        };
        let ihl = inner.header_len();
        if body.len() < ihl + 8 {
            return Verdict::Drop(DropReason::IcmpMalformed);
        }
        let (isrc, idst, iproto) = (inner.src_addr(), inner.dst_addr(), inner.protocol());
        let il4 = &body[ihl..];
        let quoted = match iproto {
            proto::TCP | proto::UDP => (be16(il4, 0), be16(il4, 2), L4::Tcp),
            proto::ICMP if icmp::is_query(il4[0]) => (be16(il4, 4), 0, L4::IcmpQuery),
            proto::GRE if il4[1] & 7 == 1 => (0, be16(il4, 6), L4::GrePptp),
            _ => (0, 0, L4::Other),
        };
        let inner_key = FlowKey { src: isrc, dst: idst, sport: quoted.0, dport: quoted.1, proto: iproto };
        let found = if quoted.2 == L4::GrePptp {
            // quoted PPTP GRE: its key is the receiver's Call ID, so no arrival key mirrors it;
            // the inspector knows which call's GRE left with that key towards that server
            // (an error from beyond the gateway) or towards that client (an error from a
            // router on the inside)
            let outward = sh.pptp.quoted_gre_flow(isrc, idst, quoted.1, true).and_then(|k| {
                let r = sh.flows.lookup(&k)?;
                // found in the quoted packet's own direction: the error travels the other way
                sh.flows.with_flow(r, &k, |f, dir| {
                    (f.keys[dir.index()], f.keys[dir.opposite().index()], f.rewrite[dir.opposite().index()])
                })
            });
            outward.or_else(|| {
                let k = sh.pptp.quoted_gre_flow(isrc, idst, quoted.1, false)?;
                let r = sh.flows.lookup(&k)?;
                // the client's own direction: the quoted packet travelled the other one
                sh.flows.with_flow(r, &k, |f, dir| {
                    (f.keys[dir.opposite().index()], f.keys[dir.index()], f.rewrite[dir.index()])
                })
            })
        } else {
            let lk = mirror(&inner_key);
            sh.flows.lookup(&lk).and_then(|r| {
                sh.flows.with_flow(r, &lk, |f, dir| {
                    (f.keys[dir.opposite().index()], f.keys[dir.index()], f.rewrite[dir.index()])
                })
            })
        };
        let Some((orig_inner, kd, rw)) = found else {
            return if sh.is_local(pkt.dst) { Verdict::ToHost } else { Verdict::Drop(DropReason::IcmpErrorNoFlow) };
        };
        if pkt.dst != kd.dst {
            // the error must go to whoever sent the quoted packet
            return Verdict::Drop(DropReason::IcmpErrorNoFlow);
        }
        if pkt.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        // rewrite the quote, keeping every checksum right (the ICMP one covers the quote)
        let icmp_buf = &mut frame.buf[icmp_off..icmp_end];
        let mut csum = be16(icmp_buf, 2);
        {
            let q = &mut icmp_buf[icmp::HEADER_LEN..];
            let l4_csum_off = match iproto {
                proto::TCP if q.len() >= ihl + 18 => Some(ihl + 16),
                proto::UDP if be16(q, ihl + 6) != 0 => Some(ihl + 6),
                proto::ICMP => Some(ihl + 2),
                _ => None,
            };
            let pseudo = matches!(iproto, proto::TCP | proto::UDP);
            let set_addr = |q: &mut [u8], off: usize, new: u32, csum: &mut u16| {
                let old = be32(q, off);
                if old == new {
                    return;
                }
                set16(q, off, (new >> 16) as u16, csum);
                set16(q, off + 2, new as u16, csum);
                let ic = checksum::adjust32(be16(q, 10), old, new);
                set16(q, 10, ic, csum);
                if let (Some(o), true) = (l4_csum_off, pseudo) {
                    let c = checksum::adjust32(be16(q, o), old, new);
                    set16(q, o, c, csum);
                }
            };
            set_addr(q, 12, orig_inner.src, &mut csum);
            set_addr(q, 16, orig_inner.dst, &mut csum);
            let set_port = |q: &mut [u8], off: usize, new: u16, csum: &mut u16| {
                let old = be16(q, off);
                if old == new {
                    return;
                }
                set16(q, off, new, csum);
                if let Some(o) = l4_csum_off {
                    let c = checksum::adjust16(be16(q, o), old, new);
                    set16(q, o, c, csum);
                }
            };
            match quoted.2 {
                L4::Tcp => {
                    set_port(q, ihl, orig_inner.sport, &mut csum);
                    set_port(q, ihl + 2, orig_inner.dport, &mut csum);
                }
                L4::IcmpQuery => set_port(q, ihl + 4, orig_inner.sport, &mut csum),
                // the Call ID the packet carried when it reached the gateway (no GRE checksum)
                L4::GrePptp => set_port(q, ihl + 6, orig_inner.dport, &mut csum),
                _ => {}
            }
        }
        put16(icmp_buf, 2, csum);
        let mut ip = ipv4::Packet::new_unchecked(&mut frame.buf[pkt.l3()..icmp_end]);
        // a direction that translates its source (inside → outside) gives the error the
        // flow's outside address, whoever sent it — the end host or a router on the inside
        // (RFC 5508 §4.2, as Linux does): an inside address must never leave, and the remote
        // end would ignore an error from an address it never talked to. Errors travelling a
        // direction that keeps its source (from routers beyond the gateway) keep theirs.
        if rw.src != kd.src && pkt.src != rw.src {
            ip.set_src_addr_fixup(rw.src);
        }
        if rw.dst != pkt.dst {
            ip.set_dst_addr_fixup(rw.dst);
        }
        ip.decrement_ttl();
        Verdict::Forward(rw.egress)
    }

    /// Rate limit for per-packet log lines (deny logs): 10 per second per worker.
    fn take_log_token(&mut self, now: Time) -> bool {
        let sec = now.as_nanos() / 1_000_000_000;
        if sec != self.log_second {
            self.log_second = sec;
            self.log_budget = 10;
        }
        if self.log_budget == 0 {
            return false;
        }
        self.log_budget -= 1;
        true
    }

    fn take_icmp_token(&mut self, sh: &Shared, now: Time) -> bool {
        let l = &sh.config.limits;
        let per_token = 1_000_000_000 / u64::from(l.icmp_rate.max(1));
        let elapsed = now.as_nanos().saturating_sub(self.icmp_refill.as_nanos());
        let add = elapsed / per_token;
        if add > 0 {
            self.icmp_tokens = (self.icmp_tokens + add).min(u64::from(l.icmp_burst));
            self.icmp_refill = Time(self.icmp_refill.as_nanos() + add * per_token);
        }
        if now < self.icmp_refill {
            self.icmp_refill = now;
        }
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// Turns the frame into an ICMP time-exceeded for its sender (RFC 792, RFC 1812 §4.3),
    /// sent back out of the ingress interface from the gateway's address there.
    fn time_exceeded(&mut self, sh: &Shared, frame: &mut Frame<'_>, pkt: &Pkt, meta: RxMeta, now: Time) -> Verdict {
        if pkt.l4 == L4::IcmpError || !self.take_icmp_token(sh, now) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let Some(ingress) = sh.config.iface(meta.iface) else {
            return Verdict::Drop(DropReason::UnknownInterface);
        };
        let from = if ingress.role == Role::Outside { sh.outside_addr() } else { u32::from(ingress.addr) };
        const NEW_HDR: usize = ipv4::MIN_HEADER_LEN + icmp::HEADER_LEN;
        let room = frame.buf.len().saturating_sub(pkt.l3() + NEW_HDR);
        let quote = usize::from(pkt.ip_len).min(576 - NEW_HDR).min(room);
        if quote < pkt.hl() + 8 && quote < usize::from(pkt.ip_len) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        frame.buf.copy_within(pkt.l3()..pkt.l3() + quote, pkt.l3() + NEW_HDR);
        let total = NEW_HDR + quote;
        let ident = self.next_rand() as u16;
        let b = &mut frame.buf[pkt.l3()..pkt.l3() + total];
        ipv4::Packet::new_unchecked(&mut *b).emit_header(total as u16, ident, 64, proto::ICMP, from, pkt.src);
        icmp::Packet::new_unchecked(&mut b[ipv4::MIN_HEADER_LEN..]).emit(icmp::kind::TIME_EXCEEDED, 0, 0);
        ethernet::swap_addrs(&mut frame.buf[..pkt.l3()]);
        frame.len = pkt.l3() + total;
        self.counters.icmp_generated.inc();
        Verdict::Forward(meta.iface)
    }
}

/// Turns a TCP segment (IP packet `ip`, IP header `hl`, TCP header `thl` bytes) into a reset
/// without payload: RST|ACK, lengths and both checksums recomputed.
fn to_reset(ip: &mut [u8], hl: usize, thl: usize) {
    let total = hl + thl;
    put16(ip, 2, total as u16);
    let (src, dst) = ([ip[12], ip[13], ip[14], ip[15]], [ip[16], ip[17], ip[18], ip[19]]);
    ipv4::Packet::new_unchecked(&mut ip[..total]).fill_checksum();
    let seg = &mut ip[hl..total];
    seg[13] = tcp::flags::RST | tcp::flags::ACK;
    put16(seg, 16, 0);
    let c = !checksum::fold(checksum::accumulate(seg, checksum::pseudo_header(src, dst, proto::TCP, thl as u16)));
    put16(seg, 16, c);
}

fn set16(q: &mut [u8], off: usize, new: u16, csum: &mut u16) {
    let old = be16(q, off);
    put16(q, off, new);
    *csum = checksum::adjust16(*csum, old, new);
}

/// `FlowKey::sport` of PPTP (version 1) GRE flows.
pub const GRE_V1: u16 = 1;

/// The key a packet carries on arrival.
fn flow_key(p: &Pkt) -> FlowKey {
    match p.l4 {
        L4::Tcp | L4::Udp => FlowKey { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, proto: p.proto },
        L4::IcmpQuery => FlowKey { src: p.src, dst: p.dst, sport: p.sport, dport: 0, proto: p.proto },
        // `sport` 1 keeps PPTP GRE apart from GRE v0's address-pair flows (0, 0): Call ID 0
        // is common and must never match a v0 tunnel
        L4::GrePptp => FlowKey { src: p.src, dst: p.dst, sport: GRE_V1, dport: p.dport, proto: p.proto },
        L4::Esp => FlowKey { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, proto: p.proto },
        _ => FlowKey { src: p.src, dst: p.dst, sport: 0, dport: 0, proto: p.proto },
    }
}

/// The key of the opposite direction when nothing is translated.
fn mirror(k: &FlowKey) -> FlowKey {
    match k.proto {
        proto::TCP | proto::UDP => FlowKey { src: k.dst, dst: k.src, sport: k.dport, dport: k.sport, proto: k.proto },
        proto::ICMP => FlowKey { src: k.dst, dst: k.src, sport: k.sport, dport: 0, proto: k.proto },
        _ => FlowKey { src: k.dst, dst: k.src, sport: 0, dport: 0, proto: k.proto },
    }
}

/// Forwards an IP packet (header length `hl`) that arrived with a direction's key: writes
/// the direction's rewrite, decrements the TTL and adjusts every checksum by the direction's
/// precomputed differences — one addition per checksum, exactly what the XDP fast path does
/// to the same packet from the same data.
fn apply_rewrite(ip: &mut [u8], hl: usize, l4: L4, rw: &Rewrite, d: CsumDelta) {
    let l4d = checksum::Delta::from_raw(d.l4);
    let seg = &mut ip[hl..];
    match l4 {
        L4::Tcp => tcp::Packet::new_unchecked(seg).rewrite_ports(rw.sport, rw.dport, l4d),
        L4::Udp => udp_view(seg).rewrite_ports(rw.sport, rw.dport, l4d),
        L4::IcmpQuery => icmp::Packet::new_unchecked(seg).rewrite_ident(rw.sport, l4d),
        L4::GrePptp => gre::Packet::new_unchecked(seg).set_call_id(rw.dport),
        L4::Esp | L4::IcmpError | L4::IcmpOther | L4::Other => {}
    }
    ipv4::Packet::new_unchecked(ip).rewrite_forward(rw.src, rw.dst, checksum::Delta::from_raw(d.ip));
}

/// Finishes the TCP or UDP checksum of a whole (unfragmented) packet when it holds only
/// the pseudo-header sum (a sender's transmit checksum offload), so that the incremental
/// updates that follow — the rewrite, the PPTP inspector's byte changes — start from a
/// real checksum. True when it did. A UDP checksum of 0 (none) is left alone.
#[inline(always)]
fn finish_partial_csum(frame: &mut Frame<'_>, pkt: &Pkt) -> bool {
    let ip = &mut frame.buf[pkt.ip_range()];
    let seg = &mut ip[pkt.hl()..];
    let (field, udp) = if pkt.l4 == L4::Tcp { (16, false) } else { (6, true) };
    let Some(c) = seg.get(field..field + 2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return false;
    };
    let pseudo = checksum::pseudo_header(pkt.src.to_be_bytes(), pkt.dst.to_be_bytes(), pkt.proto, seg.len() as u16);
    if (udp && c == 0) || !checksum::is_partial(c, pseudo) {
        return false;
    }
    checksum::finish_l4(seg, field, pseudo, udp);
    true
}

fn udp_view(seg: &mut [u8]) -> udp::Packet<&mut [u8]> {
    // parse() validated at least the 8-byte header
    udp::Packet::new_unchecked(seg)
}

fn is_martian_source(a: u32) -> bool {
    let first = a >> 24;
    first == 0 || first == 127 || (224..=255).contains(&first)
}

fn is_multicast_or_broadcast(a: u32) -> bool {
    a >> 28 == 0xe || a == u32::MAX
}
