//! The state every worker shares: configuration, the flow, fragment and PPTP tables, the
//! policy, the outside address; reload, sweep and deletion.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::alg::pptp::Pptp;
use crate::config::{broadcast_of, EngineConfig, IfaceId, Role};
use crate::conntrack::{status, Flow, FlowKind, FlowTable};
use crate::frag::FragTable;
use crate::nat::blocks::PortBlocks;
use crate::nat::Forwards;
use crate::time::Time;
use crate::wire::{icmp, proto};

use super::*;

/// State shared by every worker: configuration, the flow and fragment tables, the policy.
#[derive(Debug)]
pub struct Shared {
    pub(super) config: EngineConfig,
    pub(super) forwards: Forwards,
    pub(super) outside: IfaceId,
    /// The outside address and its prefix length (`addr << 8 | len`): fixed by the rules,
    /// or following the kernel's (`address auto`; 0 while it has none).
    pub(super) outside_net: core::sync::atomic::AtomicU64,
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
    pub(super) nat_addrs: Vec<u32>,
    /// The inside interfaces' addresses (every packet's martian check reads them).
    pub(super) inside_addrs: Box<[u32]>,
    /// The inside interfaces' addresses and their subnets' broadcast addresses (0 for a
    /// subnet without one), the box's by the host-or-transit rule: worked out once here
    /// rather than per packet.
    pub(super) inside_own: Box<[u32]>,
    /// Per inside host counts (only when a per-host or embryonic limit is set).
    pub hosts: Option<HostCounts>,
    /// Port blocks (only with `block-size`); the PPTP inspector holds them too.
    pub blocks: Option<Arc<PortBlocks>>,
    /// Refused SYN senders and forwarded ports for the XDP program's new-flow guard.
    pub guard: GuardNotices,
    pub(super) policy: ArcSwap<Box<dyn Policy>>,
    /// Log denies as ASA syslog lines (%ASA-4-106023) instead of structured fields.
    pub asa_log: std::sync::atomic::AtomicBool,
}

/// True when `last` (when the guard was last told of this side; `Time::ZERO`: never) is at
/// least half a hold before `now`, and then `now` becomes the last time: a flood makes one
/// notice per hold, not one per packet.
fn once_per_half_hold(last: &mut Time, now: Time) -> bool {
    let half = Duration::from_nanos(xgw_ebpf_common::guard::HOLD_NS / 2);
    if *last != Time::ZERO && now < last.plus(half) {
        return false;
    }
    *last = now;
    true
}

/// Connections and half-open TCP connections per inside host, and when the new-flow guard
/// was last told of a refusal.
#[derive(Debug, Default)]
pub struct HostCounts {
    map: dashmap::DashMap<u32, (u32, u32), foldhash::fast::RandomState>,
    told: dashmap::DashMap<u32, Time, foldhash::fast::RandomState>,
}

impl HostCounts {
    /// True when `host` may open another connection (`embryonic`: a TCP SYN).
    pub(super) fn admit(&self, host: u32, embryonic: bool, l: &crate::config::Limits) -> bool {
        let (flows, emb) = self.map.get(&host).map_or((0, 0), |v| *v);
        l.per_host.is_none_or(|m| flows < m) && (!embryonic || l.embryonic.is_none_or(|m| emb < m))
    }

    /// A SYN of `host` was refused at `now`: true when the new-flow guard should hear of it
    /// (not within half a hold of the last time, so a flood makes a notice per hold, not
    /// one per packet).
    pub(super) fn tell_guard(&self, host: u32, now: Time) -> bool {
        once_per_half_hold(&mut self.told.entry(host).or_insert(Time::ZERO), now)
    }

    pub(super) fn add(&self, host: u32, embryonic: bool) {
        let mut e = self.map.entry(host).or_insert((0, 0));
        e.0 += 1;
        e.1 += u32::from(embryonic);
    }

    pub(super) fn leave_embryonic(&self, host: u32) {
        if let Some(mut e) = self.map.get_mut(&host) {
            e.1 = e.1.saturating_sub(1);
        }
    }

    pub(super) fn remove(&self, host: u32, embryonic: bool) {
        let gone = self.map.remove_if_mut(&host, |_, e| {
            e.0 = e.0.saturating_sub(1);
            if embryonic {
                e.1 = e.1.saturating_sub(1);
            }
            e.0 == 0
        });
        // the host's last flow: forget when the guard last heard of it
        if gone.is_some() {
            self.told.remove(&host);
        }
    }

    /// (connections, half-open TCP connections) of `host`.
    pub fn get(&self, host: u32) -> (u32, u32) {
        self.map.get(&host).map_or((0, 0), |v| *v)
    }
}

/// A refusal the XDP program's new-flow guard should hold: the side (`key`) and the inside
/// host whose limit refused it (the key's own address for an inside source, the forward's
/// inside host for a forwarded port), by which xgwd decides whether to renew the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardNotice {
    /// What the XDP program matches.
    pub key: xgw_ebpf_common::GuardKey,
    /// The inside host whose limit refused the SYN.
    pub host: u32,
}

/// Refusals the XDP program's new-flow guard should hold (`xgw_ebpf_common::GuardKey`):
/// the engine pushes one per refused side and hold, xgwd drains them into the `GUARD` maps.
/// Nothing is queued until a consumer [`GuardNotices::connect`]s.
#[derive(Debug)]
pub struct GuardNotices {
    queue: crossbeam::queue::ArrayQueue<GuardNotice>,
    connected: std::sync::atomic::AtomicBool,
    /// The consumer's thread, woken by the first notice of an empty queue.
    consumer: std::sync::OnceLock<std::thread::Thread>,
    /// When each outside or pool address was last held for unsolicited SYNs (a few
    /// addresses: only those get such notices).
    unsolicited: dashmap::DashMap<u32, Time, foldhash::fast::RandomState>,
    /// Notices dropped because the queue was full.
    pub lost: crate::counters::SharedCounter,
}

impl Default for GuardNotices {
    fn default() -> Self {
        GuardNotices {
            queue: crossbeam::queue::ArrayQueue::new(1024),
            connected: std::sync::atomic::AtomicBool::new(false),
            consumer: std::sync::OnceLock::new(),
            unsolicited: dashmap::DashMap::default(),
            lost: crate::counters::SharedCounter::default(),
        }
    }
}

impl GuardNotices {
    /// From now on, refusals are queued for [`GuardNotices::pop`].
    pub fn connect(&self) {
        self.connected.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// From now on, refusals are queued for [`GuardNotices::pop`] and the first one into an
    /// empty queue unparks `consumer` (a flood's SYNs reach the engine until the XDP map
    /// holds them: the consumer should not wait out its polling period).
    pub fn connect_thread(&self, consumer: std::thread::Thread) {
        let _ = self.consumer.set(consumer);
        self.connect();
    }

    pub(super) fn connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An unsolicited SYN to `addr` at `now`: true when the guard should hear of it (not
    /// within half a hold of the last time).
    pub(super) fn tell_unsolicited(&self, addr: u32, now: Time) -> bool {
        once_per_half_hold(&mut self.unsolicited.entry(addr).or_insert(Time::ZERO), now)
    }

    pub(super) fn push(&self, n: GuardNotice) {
        let was_empty = self.queue.is_empty();
        if self.queue.push(n).is_err() {
            self.lost.inc();
        } else if was_empty {
            // at most one wake-up per host and half hold (`HostCounts::tell_guard`)
            if let Some(t) = self.consumer.get() {
                t.unpark();
            }
        }
    }

    /// The oldest notice not taken yet.
    pub fn pop(&self) -> Option<GuardNotice> {
        self.queue.pop()
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

/// Block events the engine queues for the NAT event exporter.
const BLOCK_EVENTS: usize = 16_384;

/// The outside port (or ICMP identifier) of a translated flow that lives in a port block.
pub fn block_port(f: &Flow) -> Option<u16> {
    if f.kind != FlowKind::Snat {
        return None;
    }
    let r = &f.keys[1];
    match r.proto {
        proto::TCP | proto::UDP => Some(r.dport),
        proto::ICMP => Some(r.sport),
        _ => None,
    }
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
        if let Some(b) = &config.nat.blocks {
            crate::nat::blocks::validate(&config, b)?;
        }
        let (oid, oif) = config.outside().ok_or("no outside interface")?;
        let outside_net = (u64::from(u32::from(oif.addr)) << 8) | u64::from(oif.prefix_len);
        let blocks = config.nat.blocks.map(|b| {
            let pool: Vec<u32> = config.nat.pool.iter().map(|a| u32::from(*a)).collect();
            Arc::new(PortBlocks::new(b, &config.nat, &pool, config.inside_subnets(), BLOCK_EVENTS))
        });
        let inside = || config.ifaces.iter().filter(|i| i.role == Role::Inside);
        let inside_addrs = inside().map(|i| u32::from(i.addr)).collect();
        let inside_own =
            inside().flat_map(|i| [u32::from(i.addr), broadcast_of(u32::from(i.addr), i.prefix_len)]).collect();
        Ok(Shared {
            inside_addrs,
            inside_own,
            forwards: Forwards::new(&config.forwards),
            flows: FlowTable::new(config.limits.max_flows, config.limits.event_ring),
            frags: FragTable::new(config.limits.max_fragments),
            pptp: Pptp::new(config.pptp.clone()).with_blocks(blocks.clone()),
            nat_addrs: config.nat.pool.iter().map(|a| u32::from(*a)).collect(),
            hosts: (config.limits.per_host.is_some() || config.limits.embryonic.is_some()).then(HostCounts::default),
            blocks,
            guard: GuardNotices::default(),
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

    /// True while inside host `host` is at a limit that refuses its next TCP SYN (per-host
    /// connections or embryonic): the new-flow guard renews its hold on the host's SYNs
    /// for as long as this holds, and lets them through to the engine again once not.
    pub fn refuses_syns_of(&self, host: u32) -> bool {
        self.hosts.as_ref().is_some_and(|h| !h.admit(host, true, &self.config.limits))
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
        (a != 0 && a == self.outside_addr()) || self.inside_addrs.contains(&a)
    }

    /// The address inside host `host` is translated onto (the same one every time): one of
    /// the pool, or the outside address (0 while there is none).
    pub fn nat_addr_for(&self, host: u32) -> u32 {
        if let Some(a) = self.blocks.as_ref().and_then(|b| b.deterministic_addr(host)) {
            return a;
        }
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
        if let Some(b) = &self.blocks {
            b.sweep(now);
        }
        let n = self.flows.sweep(now, budget, &self.config.timeouts, |f| self.flow_gone(f, now));
        self.pptp.sweep(&self.flows, now);
        n
    }

    /// A flow the peer gateway created (HA sync) holds its port block here too.
    pub fn adopt_synced_block(&self, f: &Flow, now: Time) {
        if let (Some(b), Some(port)) = (&self.blocks, block_port(f)) {
            b.adopt(f.inside_host(), f.keys[1].dst, port, now);
        }
    }

    /// Counts a flow the peer gateway created (HA sync) against its inside host's limit, as
    /// if this engine had created it (never as half-open: the peer's records do not say when
    /// it stops being one). True when counted: the caller marks the flow
    /// [`status::HOST_COUNTED`], so that its end uncounts it.
    pub fn count_synced_host(&self, f: &Flow) -> bool {
        match &self.hosts {
            Some(hosts) => {
                hosts.add(f.inside_host(), false);
                true
            }
            None => false,
        }
    }

    /// Tells the inspectors that a flow is gone (expired or deleted), so that what hangs
    /// off it (a PPTP session's calls) goes too.
    pub fn flow_gone(&self, f: &Flow, now: Time) {
        if let (true, Some(hosts)) = (f.status & status::HOST_COUNTED != 0, &self.hosts) {
            hosts.remove(f.inside_host(), f.status & status::EMBRYONIC != 0);
        }
        if let (Some(b), Some(port)) = (&self.blocks, block_port(f)) {
            b.flow_removed(f.inside_host(), port, now);
        }
        if f.status & status::ALG_PPTP != 0 {
            self.pptp.control_gone(f.id, &self.flows, now);
        } else if f.kind == FlowKind::Related {
            self.pptp.gre_gone(&f.keys[0], now);
        }
    }
}
