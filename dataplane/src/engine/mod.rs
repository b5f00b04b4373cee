//! The engine: one frame in, one verdict out.
//!
//! This module holds the API ([`Engine`], [`FrameBuf`], [`RxMeta`], [`Verdict`]) and the
//! per-packet driver (parse stage, batched lookups, decide stage). Its parts: `parse` (the
//! checked view of a frame, once), `fast` (a flow hit: rewrite, PPTP inspection, fragments),
//! `slow` (a miss: policy, NAT planning, flow creation), `icmp_error` (errors quoting a flow's
//! packet, and the errors the gateway generates), `shared` ([`Shared`]: the state every
//! worker shares, reload, sweep, deletion).
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
//!              ├─ the box's own (host::for_host, the XDP program's rule) ─────► ToHost
//!              ▼
//!           slow path: policy check, PAT port reservation / forward / hairpin,
//!           flow insertion ─► rewrite ───────────────────────────────────────► Forward
//! ```
//!
//! The fast path (a flow hit) does a hash lookup, locks one flow, copies its precomputed
//! [`Rewrite`] and applies it with incremental checksum updates. Nothing on it allocates.

use std::sync::Arc;

use crate::config::{IfaceId, Role};
use crate::conntrack::index::Probe;
use crate::conntrack::{FlowKey, FlowRef};
use crate::counters::{Counters, DropReason};
use crate::time::Time;

mod fast;
mod host;
mod icmp_error;
mod parse;
mod shared;
mod slow;

pub use crate::policy::{Decision, NewFlow, PermitAll, Policy};
use icmp_error::*;
use parse::*;
pub use shared::{block_port, flow_as_new, GuardNotice, GuardNotices, HostCounts, ReloadReport, Shared};

/// A frame in a buffer that may be larger than the frame (an AF_XDP chunk, a pcap record
/// copied into a scratch buffer). The engine may shorten or lengthen `len` (when it turns
/// the frame into an ICMP error) but never beyond `buf.len()`.
#[derive(Debug)]
pub struct FrameBuf<'a> {
    /// The buffer.
    pub buf: &'a mut [u8],
    /// Bytes of `buf` that hold the frame.
    pub len: usize,
}

impl<'a> FrameBuf<'a> {
    /// A frame filling the whole buffer.
    pub fn new(buf: &'a mut [u8]) -> FrameBuf<'a> {
        let len = buf.len();
        FrameBuf { buf, len }
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

/// One worker's engine. Cheap to create; share [`Shared`] between workers.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    w: WorkerState,
}

/// The per-worker part of an engine: counters, the port-choice generator, the ICMP
/// token bucket. Kept apart from [`Shared`] so that the per-packet path borrows the shared
/// state without touching its reference count.
#[derive(Debug)]
struct WorkerState {
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
        let w = WorkerState {
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
    ///
    /// In stages, so that a batch's memory accesses overlap instead of waiting one after
    /// another: every frame is parsed and its index bucket requested, then every frame is
    /// looked up and its flow slot requested, then every frame is processed — by which time
    /// its lines are (mostly) in cache. (Measured and not kept: a rolling pipeline, each
    /// frame looked up a few frames ahead of its decision, was slower at 4 k and 1 M flows;
    /// requesting the slots during the last stage, a few frames ahead, was no faster.)
    pub fn process_batch(
        &mut self,
        frames: &mut [FrameBuf<'_>],
        metas: &[RxMeta],
        now: Time,
        verdicts: &mut [Verdict],
    ) {
        const STAGE: usize = 64;
        let n = frames.len().min(metas.len()).min(verdicts.len());
        let mut start = 0;
        while start < n {
            let end = (start + STAGE).min(n);
            let sh: &Shared = &self.shared;
            let w = &mut self.w;
            // the parse stage writes each packet where the later stages read it, long after
            // (a copy right behind its field-by-field writes would wait on every one of them)
            let mut pkts = [Pkt::default(); STAGE];
            let mut keys = [FlowKey::default(); STAGE];
            let mut probes = [Probe::default(); STAGE];
            let mut parsed = [false; STAGE];
            for i in start..end {
                let j = i - start;
                w.counters.traffic.rx.inc();
                match w.stage_parse(sh, &mut frames[i], metas[i], now, &mut pkts[j]) {
                    Ok(key) => {
                        probes[j] = sh.flows.probe(&key);
                        sh.flows.touch(&probes[j]);
                        keys[j] = key;
                        parsed[j] = true;
                    }
                    Err(v) => {
                        w.count(v);
                        verdicts[i] = v;
                    }
                }
            }
            let mut hits: [Option<FlowRef>; STAGE] = [None; STAGE];
            for j in 0..end - start {
                if parsed[j] {
                    hits[j] = sh.flows.lookup_probe(&probes[j]);
                    if let Some(r) = hits[j] {
                        sh.flows.touch_slot(r);
                    }
                }
            }
            for i in start..end {
                let j = i - start;
                if parsed[j] {
                    // a hit is decided where the batch holds the packet; `fresh` false: the look
                    // predates the decisions of the frames before this one, which may have
                    // created or removed its flow
                    let hit = hits[j].and_then(|r| w.established(sh, &mut frames[i], &pkts[j], r, &keys[j]));
                    let v = match hit {
                        Some(v) => v,
                        None => w.stage_decide(sh, &mut frames[i], &pkts[j], &keys[j], hits[j], false),
                    };
                    w.count(v);
                    verdicts[i] = v;
                }
            }
            start = end;
        }
    }

    /// Processes one frame: rewrites it in place and returns the verdict.
    pub fn process(&mut self, frame: &mut FrameBuf<'_>, meta: RxMeta, now: Time) -> Verdict {
        let sh: &Shared = &self.shared;
        let w = &mut self.w;
        w.counters.traffic.rx.inc();
        let v = w.process_inner(sh, frame, meta, now);
        w.count(v);
        v
    }
}

impl WorkerState {
    #[inline]
    pub(super) fn count(&self, v: Verdict) {
        match v {
            Verdict::Forward(_) => self.counters.traffic.forwarded.inc(),
            Verdict::ToHost => self.counters.traffic.to_host.inc(),
            Verdict::Drop(r) => self.counters.count_drop(r),
        }
    }

    pub(super) fn next_rand(&mut self) -> u32 {
        // xorshift32: port choice only needs to be unpredictable-ish and cheap
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    pub(super) fn process_inner(&mut self, sh: &Shared, frame: &mut FrameBuf<'_>, meta: RxMeta, now: Time) -> Verdict {
        let mut pkt = Pkt::default();
        match self.stage_parse(sh, frame, meta, now, &mut pkt) {
            Ok(key) => {
                // both buckets, then all the slot's lines, requested before the first is
                // read: their misses overlap instead of following one another
                let p = sh.flows.probe(&key);
                sh.flows.touch(&p);
                let hit = sh.flows.lookup_probe(&p);
                if let Some(r) = hit {
                    sh.flows.touch_slot(r);
                    if let Some(v) = self.established(sh, frame, &pkt, r, &key) {
                        return v;
                    }
                }
                self.stage_decide(sh, frame, &pkt, &key, hit, true)
            }
            Err(v) => v,
        }
    }

    /// First stage: parse and validate into `pkt`; the flow key, or the verdict of a frame
    /// that needs no lookup (host traffic, malformed, later fragments). Inlined into the
    /// batch loop, so the key stays in registers instead of a returned struct in memory.
    #[inline(always)]
    pub(super) fn stage_parse(
        &mut self,
        sh: &Shared,
        frame: &mut FrameBuf<'_>,
        meta: RxMeta,
        now: Time,
        pkt: &mut Pkt,
    ) -> Result<FlowKey, Verdict> {
        let len = frame.len.min(frame.buf.len());
        let key = match self.parse(sh, &frame.buf[..len], meta, now, pkt) {
            Ok(Some(key)) => key,
            Ok(None) => return Err(Verdict::ToHost),
            Err(r) => return Err(Verdict::Drop(r)),
        };
        // Later fragments: no L4 header, use what the first fragment decided.
        if pkt.later_frag {
            return Err(self.later_fragment(sh, frame, pkt, now));
        }
        if matches!(pkt.l4, L4::Tcp | L4::Udp) && !pkt.first_frag && finish_partial_csum(frame, pkt) {
            self.counters.traffic.l4_csum_completed.inc();
        }
        Ok(key)
    }

    /// Last stage, for a packet whose look found no flow (`hit` none) or one that was not
    /// its own or is gone (`hit` some: the caller ran [`WorkerState::established`] on it
    /// first): a confirmed lookup, then the slow path. `fresh` says `hit` was looked up just
    /// now; a batch's earlier look may predate a flow created (or removed) by an earlier
    /// packet of the same batch, so then a miss is looked up again. Out of line, so that a
    /// hit neither copies the packet's summary nor sets up the slow path's frame.
    #[inline(never)]
    pub(super) fn stage_decide(
        &mut self,
        sh: &Shared,
        frame: &mut FrameBuf<'_>,
        pkt: &Pkt,
        key: &FlowKey,
        hit: Option<FlowRef>,
        fresh: bool,
    ) -> Verdict {
        let (pkt, key, now) = (*pkt, *key, pkt.now);
        let meta = RxMeta { iface: pkt.iface };
        let cfg = &sh.config;
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
        if forward.is_none() && host::for_host(sh, &pkt, frame.bytes()) {
            // the gateway's own traffic (SSH to the box, ping, its own connections' replies,
            // DHCP answers) by the rule the XDP program applies too: in an XDP deployment
            // the kernel already has these, so a worker never sees one
            return Verdict::ToHost;
        }
        if forward.is_none() && to_outside_addr {
            // the outside address and no translation, forward or host service wants it
            // (the box's own IPsec uses NAT-T on a host service port: ESP to the outside
            // address belongs to the inside hosts)
            let r = if pkt.l4 == L4::Esp { DropReason::EspNoSa } else { DropReason::UnsolicitedInbound };
            slow::hold_unsolicited(sh, &pkt);
            return Verdict::Drop(r);
        }
        if forward.is_none() && pkt.dst != sh.outside_addr() && sh.is_nat_addr(pkt.dst) && ingress.role == Role::Outside
        {
            // a pool address: everything to it belongs to a translation, and this has none
            slow::hold_unsolicited(sh, &pkt);
            return Verdict::Drop(DropReason::UnsolicitedInbound);
        }
        if ingress.role == Role::Outside
            && forward.is_none()
            && !(cfg.nat.is_exempt(pkt.dst, pkt.src) && cfg.inside_for(pkt.dst).is_some())
        {
            // from outside only to a forward, or to an inside host exempt from NAT towards
            // the sender (a partner network, a VPN pool), which the policy then checks
            return Verdict::Drop(DropReason::UnsolicitedInbound);
        }
        if pkt.ttl <= 1 {
            return self.time_exceeded(sh, frame, &pkt, meta, now);
        }
        self.new_flow(sh, frame, &pkt, &key, forward)
    }

    /// Rate limit for per-packet log lines (deny logs): 10 per second per worker.
    pub(super) fn take_log_token(&mut self, now: Time) -> bool {
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
}
