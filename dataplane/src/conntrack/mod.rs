//! The connection table: every tracked flow, both of its directions, and its precomputed
//! rewrite.
//!
//! A flow is stored once, in a fixed array of slots allocated at start-up (huge-page backed,
//! see [`crate::mem`]), each behind its own one-byte spin lock ([`lock`]). An index ([`index::FlowIndex`]:
//! lock-free seqlock reads, one writer mutex) maps the key a packet carries *as it arrives* —
//! one key per direction — to the slot and the direction. Lookup copies the slot reference
//! out of the index before locking the slot; insertion's staleness check is the only place
//! that locks a slot while holding the index's writer mutex, and no lock is taken on every
//! packet by every worker.
//!
//! Each direction carries a [`Rewrite`]: the addresses, ports (ICMP id, GRE key) and egress
//! interface the packet must leave with, and its [`CsumDelta`]. Both are plain data, computed
//! when the flow is stored, so the same description is applied by the engine or by the XDP
//! fast path ([`offload`] hands flows over and takes them back).

pub mod index;
pub mod lock;
pub mod offload;
pub mod tcp;

use core::hash::{Hash, Hasher};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use crossbeam::queue::ArrayQueue;

use crate::config::{IfaceId, Timeouts};
use crate::counters::SharedCounter;
use crate::time::Time;
use index::{FlowIndex, Held, IndexError, Probe};
use lock::{SlotGuard, SlotLock};
use offload::Offload;
use tcp::TcpState;

/// What a packet looks like to the table: addresses, protocol and two 16-bit
/// discriminators. TCP/UDP: ports. ICMP queries: the identifier in `sport`, 0 in `dport`.
/// PPTP GRE: 0 in `sport`, the Call ID (key) in `dport`. Other protocols: both 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[repr(C)]
pub struct FlowKey {
    /// Source address (host order).
    pub src: u32,
    /// Destination address (host order).
    pub dst: u32,
    /// Source port / ICMP id.
    pub sport: u16,
    /// Destination port / GRE key.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((u64::from(self.src) << 32) | u64::from(self.dst));
        state.write_u64((u64::from(self.sport) << 24) | (u64::from(self.dport) << 8) | u64::from(self.proto));
    }
}

/// A flow's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Dir {
    /// Originator → responder (the packet that created the flow).
    Orig = 0,
    /// Responder → originator.
    Reply = 1,
}

impl Dir {
    /// Array index.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The other direction.
    pub fn opposite(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
}

/// How a direction's packets leave the gateway: the values every rewritable field must
/// hold, and the egress interface. Data only: applying it needs no policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Rewrite {
    /// New source address.
    pub src: u32,
    /// New destination address.
    pub dst: u32,
    /// New source port / ICMP id.
    pub sport: u16,
    /// New destination port / GRE key.
    pub dport: u16,
    /// Interface to transmit on.
    pub egress: IfaceId,
}

impl Rewrite {
    /// The key a packet leaving with this rewrite carries.
    pub fn as_key(&self, proto: u8) -> FlowKey {
        FlowKey { src: self.src, dst: self.dst, sport: self.sport, dport: self.dport, proto }
    }
}

/// The checksum differences a direction's rewrite makes, precomputed from the key its
/// packets arrive with (the old values) and its [`Rewrite`] (the new ones): RFC 1624
/// `Σ(~old + new)` over the changed 16-bit words, folded. A packet of the direction gets
/// its checksums adjusted by one addition each, in the engine and in the XDP fast path
/// alike, so both produce the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CsumDelta {
    /// IPv4 header: addresses, and the TTL decrement of forwarding.
    pub ip: u16,
    /// L4 checksum: TCP/UDP pseudo-header addresses and ports; ICMP query identifier.
    pub l4: u16,
}

impl CsumDelta {
    /// The differences for packets arriving with `key` and leaving with `rw`.
    pub fn between(key: &FlowKey, rw: &Rewrite) -> CsumDelta {
        use crate::checksum::Delta;
        let addrs = Delta::NONE.addr(key.src, rw.src).addr(key.dst, rw.dst);
        // TTL is the high byte of the word it shares with the protocol: minus 0x0100
        let ip = addrs.word(0x0100, 0);
        let l4 = match key.proto {
            crate::wire::proto::TCP | crate::wire::proto::UDP => {
                addrs.word(key.sport, rw.sport).word(key.dport, rw.dport)
            }
            crate::wire::proto::ICMP => Delta::NONE.word(key.sport, rw.sport),
            _ => Delta::NONE,
        };
        CsumDelta { ip: ip.raw(), l4: l4.raw() }
    }
}

/// Per-protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum L4State {
    /// TCP with its connection state.
    Tcp(TcpState),
    /// UDP.
    Udp,
    /// ICMP query (echo, timestamp).
    Icmp,
    /// Any other protocol, tracked by addresses only (or by GRE key for PPTP).
    Other,
}

/// Why the flow exists / which translation it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FlowKind {
    /// Inside → outside with the source translated (PAT).
    Snat,
    /// Outside → inside through a static forward.
    Dnat,
    /// Inside → a forward on the outside address, back inside.
    Hairpin,
    /// Between inside interfaces, not translated.
    Routed,
    /// Created by an application gateway (a PPTP call's GRE).
    Related,
}

/// Flow status bits.
pub mod status {
    /// A packet was seen in the reply direction.
    pub const SEEN_REPLY: u8 = 1;
    /// The flow is assured (TCP handshake done / UDP both ways): kept under pressure.
    pub const ASSURED: u8 = 2;
    /// A PPTP control connection the inspector follows.
    pub const ALG_PPTP: u8 = 4;
    /// Counted against its inside host's connection limit.
    pub const HOST_COUNTED: u8 = 8;
    /// A half-open TCP connection counted against its host's embryonic limit.
    pub const EMBRYONIC: u8 = 16;
    /// Handed to the fast path (requested or installed): its packets may bypass the engine.
    pub const OFFLOAD: u8 = 32;
}

/// One tracked flow. Laid out (`repr(C)`) with what every packet reads or writes first —
/// keys, rewrites, checksum differences, state, counters, last-seen — and what only the
/// control plane reads last, so a packet touches as few cache lines of its slot as it can.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[repr(C)]
pub struct Flow {
    /// The key each direction's packets carry on arrival, `[orig, reply]`.
    pub keys: [FlowKey; 2],
    /// What each direction's packets leave with.
    pub rewrite: [Rewrite; 2],
    /// Each direction's checksum differences (derived from `keys` and `rewrite` whenever
    /// the table stores them).
    #[serde(skip)]
    pub csum: [CsumDelta; 2],
    /// Per-protocol state.
    pub l4: L4State,
    /// [`status`] bits.
    pub status: u8,
    /// What kind of translation.
    pub kind: FlowKind,
    /// Id of the rule that admitted it (0 = implicit).
    pub rule: u32,
    /// Packets per direction.
    pub packets: [u64; 2],
    /// Bytes (IP length) per direction.
    pub bytes: [u64; 2],
    /// When its last packet was seen.
    pub last_seen: Time,
    /// When the flow was created.
    pub created: Time,
    /// Stable id for listings and events.
    pub id: u64,
}

impl Flow {
    /// A new flow with zeroed counters.
    pub fn new(keys: [FlowKey; 2], rewrite: [Rewrite; 2], l4: L4State, kind: FlowKind, now: Time) -> Flow {
        Flow {
            id: 0,
            keys,
            rewrite,
            csum: [CsumDelta::between(&keys[0], &rewrite[0]), CsumDelta::between(&keys[1], &rewrite[1])],
            l4,
            status: 0,
            kind,
            packets: [0; 2],
            bytes: [0; 2],
            created: now,
            last_seen: now,
            rule: 0,
        }
    }

    /// IP protocol.
    pub fn proto(&self) -> u8 {
        self.keys[0].proto
    }

    /// True once a reply was seen.
    pub fn seen_reply(&self) -> bool {
        self.status & status::SEEN_REPLY != 0
    }

    /// The inside host the flow is counted against (per-host limits, `xgwctl host`): the
    /// forward's server for a connection coming in through a forward, the source otherwise.
    pub fn inside_host(&self) -> u32 {
        match self.kind {
            FlowKind::Dnat => self.rewrite[0].dst,
            _ => self.keys[0].src,
        }
    }

    /// True when assured.
    pub fn assured(&self) -> bool {
        self.status & status::ASSURED != 0
    }

    /// The idle timeout that applies in the current state.
    pub fn timeout(&self, t: &Timeouts) -> Duration {
        match self.l4 {
            L4State::Tcp(s) => match s {
                TcpState::None | TcpState::SynSent | TcpState::SynSent2 => t.tcp_syn_sent,
                TcpState::SynRecv => t.tcp_syn_recv,
                TcpState::Established => t.tcp_established,
                TcpState::FinWait => t.tcp_fin_wait,
                TcpState::CloseWait => t.tcp_close_wait,
                TcpState::LastAck => t.tcp_last_ack,
                TcpState::TimeWait => t.tcp_time_wait,
                TcpState::Close => t.tcp_close,
            },
            L4State::Udp if self.seen_reply() => t.udp_stream,
            L4State::Udp => t.udp_unreplied,
            L4State::Icmp => t.icmp,
            L4State::Other if self.kind == FlowKind::Related => t.pptp_gre,
            L4State::Other => t.generic,
        }
    }

    /// Time left before expiry at `now` (zero when expired).
    pub fn remaining(&self, now: Time, t: &Timeouts) -> Duration {
        self.last_seen.plus(self.timeout(t)).since(now)
    }

    /// True when idle longer than its timeout.
    pub fn expired(&self, now: Time, t: &Timeouts) -> bool {
        now > self.last_seen.plus(self.timeout(t))
    }
}

/// Where a flow lives and which of its directions a key named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRef(pub(crate) u32);

impl FlowRef {
    fn new(slot: u32, dir: Dir) -> FlowRef {
        FlowRef((slot << 1) | dir as u32)
    }

    /// Slot index.
    pub fn slot(self) -> u32 {
        self.0 >> 1
    }

    /// Direction.
    pub fn dir(self) -> Dir {
        if self.0 & 1 == 0 {
            Dir::Orig
        } else {
            Dir::Reply
        }
    }
}

/// Why an insertion failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// No free slot.
    Full,
    /// Every candidate reply key is taken.
    NoReplyKey,
    /// Another worker created the same flow first.
    Exists(FlowRef),
}

/// A connection event, for `watch` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EventKind {
    /// A flow was created.
    New,
    /// A flow was removed (expired, torn down, deleted).
    Destroy,
}

/// One event with the flow as it was.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FlowEvent {
    /// New or destroy.
    pub kind: EventKind,
    /// The flow.
    pub flow: Flow,
    /// When.
    pub at: Time,
}

/// Table-wide counters (several writers).
#[derive(Debug, Default)]
pub struct TableStats {
    /// Flows inserted.
    pub inserted: SharedCounter,
    /// Insertions refused because the table was full.
    pub insert_failed_full: SharedCounter,
    /// Insertions refused because no reply key was free.
    pub insert_failed_key: SharedCounter,
    /// Flows removed by expiry.
    pub expired: SharedCounter,
    /// Flows removed explicitly.
    pub removed: SharedCounter,
    /// Events lost because the ring was full.
    pub events_dropped: SharedCounter,
}

/// How much of a slot a packet of the flow reads or writes: the lock, `live` and the hot
/// head of [`Flow`] (everything up to and including `last_seen`).
const HOT_BYTES: usize = lock::HEADER + core::mem::offset_of!(Flow, last_seen) + 8;
// slots start on a cache line (SlotLock is line-aligned), so the hot head is two lines
const _: () = assert!(HOT_BYTES <= 128 && core::mem::align_of::<SlotLock<Flow>>() == 64);

/// Largest connection table the index can address (slot and direction in 24 bits).
pub const MAX_FLOWS: usize = (index::MAX_VALUE as usize) / 2;

/// The fixed-capacity connection table.
pub struct FlowTable {
    slots: Box<[SlotLock<Flow>]>,
    index: FlowIndex,
    free: ArrayQueue<u32>,
    live: AtomicUsize,
    next_id: AtomicU64,
    cursor: AtomicUsize,
    events: Option<ArrayQueue<FlowEvent>>,
    /// Offloading to the fast path (off until one is connected).
    pub offload: Offload,
    /// Counters.
    pub stats: TableStats,
}

impl core::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlowTable").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}

/// A seed from the standard library's per-process random state (keys come from the
/// network: placement must not be predictable).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7867_7700);
    h.finish()
}

fn blank_flow() -> Flow {
    Flow::new([FlowKey::default(); 2], [Rewrite::default(); 2], L4State::Other, FlowKind::Snat, Time::ZERO)
}

impl FlowTable {
    /// A table for `capacity` flows with an event ring of `event_ring` entries (0 = none).
    pub fn new(capacity: usize, event_ring: usize) -> FlowTable {
        let capacity = capacity.clamp(1, MAX_FLOWS);
        let slots = crate::mem::table(capacity, |_| SlotLock::new(blank_flow()));
        let free = ArrayQueue::new(capacity);
        for i in 0..capacity {
            // capacity equals the queue's size, so this never fails
            let _ = free.push(i as u32);
        }
        FlowTable {
            slots,
            index: FlowIndex::new(capacity * 2, random_seed()),
            free,
            live: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            cursor: AtomicUsize::new(0),
            events: (event_ring > 0).then(|| ArrayQueue::new(event_ring)),
            offload: Offload::new(4096),
            stats: TableStats::default(),
        }
    }

    /// Maximum number of flows.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Live flows.
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// True when no flow is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn lock(&self, slot: u32) -> SlotGuard<'_, Flow> {
        // A panic while holding a slot lock cannot leave a flow half-written in a way that
        // matters more than losing the packet: the guard's drop unlocks it as usual.
        self.slots[slot as usize].lock()
    }

    /// Finds the flow and direction a key belongs to: each candidate the index has for the
    /// key is confirmed against its slot (locked briefly). The packet path uses
    /// [`FlowTable::lookup_probe`] instead and confirms under the lock it takes anyway.
    pub fn lookup(&self, key: &FlowKey) -> Option<FlowRef> {
        self.index.find_confirmed(&self.index.probe(key), |v| self.holds(FlowRef(v), key) == Held::Live).map(FlowRef)
    }

    /// Where a key's index entries live (first stage of a batch).
    #[inline]
    pub fn probe(&self, key: &FlowKey) -> Probe {
        self.index.probe(key)
    }

    /// Starts loading a key's index lines (so a batch has them all in flight).
    #[inline]
    pub fn touch(&self, p: &Probe) {
        self.index.touch(p);
    }

    /// The index's first candidate for a probed key (second stage of a batch). Unconfirmed:
    /// [`FlowTable::with_flow`] checks the key under the slot's lock and says `None` when
    /// it is not there, and then [`FlowTable::lookup`] settles it.
    #[inline]
    pub fn lookup_probe(&self, p: &Probe) -> Option<FlowRef> {
        self.index.get(p).map(FlowRef)
    }

    /// Starts loading the part of a flow's slot a packet uses (the lock, keys, rewrites,
    /// state, counters: its first 128 bytes, two cache lines) without locking it.
    #[inline]
    pub fn touch_slot(&self, r: FlowRef) {
        if let Some(s) = self.slots.get(r.slot() as usize) {
            let p = (s as *const SlotLock<Flow>).cast::<u8>();
            index::prefetch_addr(p);
            index::prefetch_addr(p.wrapping_add(64));
        }
    }

    /// Runs `f` on the flow `r` names, if it is still live and still carries `key` (a slot
    /// can be recycled between lookup and lock).
    #[inline]
    pub fn with_flow<R>(&self, r: FlowRef, key: &FlowKey, f: impl FnOnce(&mut Flow, Dir) -> R) -> Option<R> {
        let mut s = self.lock(r.slot());
        if !s.live() || s.keys[r.dir().index()] != *key {
            return None;
        }
        Some(f(&mut s, r.dir()))
    }

    /// Runs `f` on the flow `r` names like [`FlowTable::with_flow`], then hands the flow to
    /// the fast path or takes it back as its state now requires (the engine's packet path).
    #[inline]
    pub fn with_flow_offload<R>(&self, r: FlowRef, key: &FlowKey, f: impl FnOnce(&mut Flow, Dir) -> R) -> Option<R> {
        let mut s = self.lock(r.slot());
        if !s.live() || s.keys[r.dir().index()] != *key {
            return None;
        }
        let out = f(&mut s, r.dir());
        if s.status & status::OFFLOAD == 0 {
            self.offload.consider(r.slot(), &mut s);
        } else if !offload::eligible(&s) {
            self.offload.withdraw_queued(r.slot(), &mut s);
        }
        Some(out)
    }

    /// Runs `f` on the live flow in `slot` (control plane; no key check).
    pub fn with_slot<R>(&self, slot: u32, f: impl FnOnce(&mut Flow) -> R) -> Option<R> {
        let mut s = self.lock(slot);
        s.live().then(|| f(&mut s))
    }

    /// What the index entry `r` for (a key with the same tag as) `key` is.
    fn holds(&self, r: FlowRef, key: &FlowKey) -> Held {
        let s = self.lock(r.slot());
        if s.keys[r.dir().index()] != *key {
            Held::Other
        } else if s.live() {
            Held::Live
        } else {
            Held::Stale
        }
    }

    /// Claims `key` for `r` if it is vacant (or held by a dead flow). `Err(None)` when the
    /// index has no room for it.
    fn claim(&self, key: FlowKey, r: FlowRef) -> Result<(), Option<FlowRef>> {
        match self.index.insert(&self.index.probe(&key), r.0, |held| self.holds(FlowRef(held), &key)) {
            Ok(()) => Ok(()),
            Err(IndexError::Taken(v)) => Err(Some(FlowRef(v))),
            Err(IndexError::Full) => Err(None),
        }
    }

    fn unclaim(&self, key: &FlowKey, r: FlowRef) {
        self.index.remove(&self.index.probe(key), r.0);
    }

    /// Inserts a flow whose original key is `orig`. The reply key is the first of
    /// `candidates` that is free; `build` then makes the flow for that reply key. This is
    /// how PAT reserves an outside port atomically.
    pub fn insert(
        &self,
        orig: FlowKey,
        candidates: impl IntoIterator<Item = FlowKey>,
        build: impl FnOnce(FlowKey) -> Flow,
        now: Time,
    ) -> Result<(FlowRef, Flow), InsertError> {
        let Some(slot) = self.free.pop() else {
            self.stats.insert_failed_full.inc();
            return Err(InsertError::Full);
        };
        let reply_ref = FlowRef::new(slot, Dir::Reply);
        let mut reply = None;
        for k in candidates {
            if k == orig {
                continue;
            }
            // the index holds no keys: the slot must show the key it claims before it
            // claims it, so that others asking who holds the key get the right answer
            self.lock(slot).keys = [orig, k];
            if self.claim(k, reply_ref).is_ok() {
                reply = Some(k);
                break;
            }
        }
        let Some(reply) = reply else {
            let _ = self.free.push(slot);
            self.stats.insert_failed_key.inc();
            return Err(InsertError::NoReplyKey);
        };
        let mut flow = build(reply);
        flow.keys = [orig, reply];
        flow.csum = [CsumDelta::between(&orig, &flow.rewrite[0]), CsumDelta::between(&reply, &flow.rewrite[1])];
        {
            let mut s = self.lock(slot);
            flow.id = self.next_id.fetch_add(1, Ordering::Relaxed);
            *s = flow;
            s.set_live(true);
        }
        if let Err(existing) = self.claim(orig, FlowRef::new(slot, Dir::Orig)) {
            // another worker created this flow between our lookup and now (or the index is
            // full): undo ours
            self.lock(slot).set_live(false);
            self.unclaim(&reply, reply_ref);
            let _ = self.free.push(slot);
            return Err(match existing {
                Some(r) => InsertError::Exists(r),
                None => {
                    self.stats.insert_failed_full.inc();
                    InsertError::Full
                }
            });
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        self.stats.inserted.inc();
        self.emit(EventKind::New, flow, now);
        Ok((FlowRef::new(slot, Dir::Orig), flow))
    }

    fn emit(&self, kind: EventKind, flow: Flow, at: Time) {
        if let Some(q) = &self.events {
            if q.push(FlowEvent { kind, flow, at }).is_err() {
                self.stats.events_dropped.inc();
            }
        }
    }

    /// Takes the oldest pending event.
    pub fn pop_event(&self) -> Option<FlowEvent> {
        self.events.as_ref().and_then(ArrayQueue::pop)
    }

    fn unlink(&self, slot: u32, flow: &Flow) {
        for (dir, key) in [(Dir::Orig, flow.keys[0]), (Dir::Reply, flow.keys[1])] {
            self.unclaim(&key, FlowRef::new(slot, dir));
        }
        let _ = self.free.push(slot);
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Moves one direction of a live flow from key `old` to key `new` (an IPsec peer's
    /// inbound SPI, learnt from its first packet). False when `new` is taken or the flow
    /// no longer holds `old`.
    pub fn rekey(&self, r: FlowRef, old: &FlowKey, new: FlowKey) -> bool {
        let nr = FlowRef::new(r.slot(), r.dir());
        if self.claim(new, nr).is_err() {
            return false;
        }
        let moved = {
            let mut s = self.lock(r.slot());
            if s.live() && s.keys[r.dir().index()] == *old {
                let d = r.dir().index();
                s.keys[d] = new;
                s.csum[d] = CsumDelta::between(&new, &s.rewrite[d]);
                true
            } else {
                false
            }
        };
        if moved {
            self.unclaim(old, nr);
        } else {
            self.unclaim(&new, nr);
        }
        moved
    }

    /// Removes the flow in `slot` if `pred` holds for it; returns it. The fast path's
    /// entries go first, their last counts folded in (control plane).
    pub fn remove_if(&self, slot: u32, now: Time, pred: impl FnOnce(&Flow) -> bool) -> Option<Flow> {
        self.remove_slot(slot, now, pred, false)
    }

    fn remove_slot(&self, slot: u32, now: Time, pred: impl FnOnce(&Flow) -> bool, queued: bool) -> Option<Flow> {
        let flow = {
            let mut s = self.lock(slot);
            if !s.live() || !pred(&s) {
                return None;
            }
            if queued {
                self.offload.withdraw_queued(slot, &mut s);
            } else {
                self.offload.withdraw(&mut s);
            }
            s.set_live(false);
            *s
        };
        self.unlink(slot, &flow);
        self.stats.removed.inc();
        self.emit(EventKind::Destroy, flow, now);
        Some(flow)
    }

    /// Removes the flow a key names.
    pub fn remove_key(&self, key: &FlowKey, now: Time) -> Option<Flow> {
        let r = self.lookup(key)?;
        self.remove_if(r.slot(), now, |f| f.keys[r.dir().index()] == *key)
    }

    /// Removes the flow a key names without calling the fast path: its entries are queued
    /// for the control plane to delete (the packet path, and whoever holds a lock workers
    /// wait for). The destroy event carries the counts folded in so far.
    pub fn remove_key_queued(&self, key: &FlowKey, now: Time) -> Option<Flow> {
        let r = self.lookup(key)?;
        self.remove_slot(r.slot(), now, |f| f.keys[r.dir().index()] == *key, true)
    }

    /// Examines up to `budget` slots from where the last sweep stopped and removes expired
    /// flows, handing each to `on_expire`. Returns how many were removed. Each slot is
    /// locked only while it is examined, so workers are never held up for long.
    pub fn sweep(&self, now: Time, budget: usize, t: &Timeouts, mut on_expire: impl FnMut(&Flow)) -> usize {
        let n = self.slots.len();
        let start = self.cursor.fetch_add(budget, Ordering::Relaxed) % n;
        let mut removed = 0;
        for i in 0..budget.min(n) {
            let slot = ((start + i) % n) as u32;
            let expired = {
                let mut s = self.lock(slot);
                if s.live() && s.expired(now, t) {
                    // the fast path may have carried packets since the last refresh
                    self.offload.refresh(&mut s);
                }
                if s.live() && s.expired(now, t) {
                    self.offload.withdraw(&mut s);
                    s.set_live(false);
                    Some(*s)
                } else {
                    None
                }
            };
            if let Some(flow) = expired {
                self.unlink(slot, &flow);
                self.stats.expired.inc();
                self.emit(EventKind::Destroy, flow, now);
                on_expire(&flow);
                removed += 1;
            }
        }
        removed
    }

    /// Calls `f` with a copy of every live flow (control plane listings). Slots are locked
    /// one at a time.
    pub fn for_each(&self, mut f: impl FnMut(u32, &Flow)) {
        for slot in 0..self.slots.len() as u32 {
            let flow = {
                let s = self.lock(slot);
                s.live().then_some(*s)
            };
            if let Some(flow) = flow {
                f(slot, &flow);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: u32, sport: u16) -> FlowKey {
        FlowKey { src, dst: 0xc633_6414, sport, dport: 80, proto: 6 }
    }

    fn build(reply: FlowKey) -> Flow {
        let rw = Rewrite { src: reply.dst, dst: reply.src, sport: reply.dport, dport: reply.sport, egress: IfaceId(1) };
        Flow::new(
            [FlowKey::default(), reply],
            [rw, Rewrite::default()],
            L4State::Tcp(TcpState::SynSent),
            FlowKind::Snat,
            Time::ZERO,
        )
    }

    #[test]
    fn insert_lookup_both_directions() {
        let t = FlowTable::new(4, 8);
        let o = key(1, 1000);
        let r = FlowKey { src: o.dst, dst: 9, sport: 80, dport: 1000, proto: 6 };
        let (fr, _) = t.insert(o, [r], build, Time::ZERO).expect("insert");
        assert_eq!(fr.dir(), Dir::Orig);
        assert_eq!(t.lookup(&o).map(FlowRef::dir), Some(Dir::Orig));
        assert_eq!(t.lookup(&r).map(FlowRef::dir), Some(Dir::Reply));
        assert_eq!(t.len(), 1);
        assert!(matches!(t.pop_event(), Some(FlowEvent { kind: EventKind::New, .. })));
        let got = t.with_flow(t.lookup(&r).expect("hit"), &r, |f, d| (f.keys[1], d));
        assert_eq!(got, Some((r, Dir::Reply)));
    }

    #[test]
    fn full_table_refuses_and_keeps_existing() {
        let t = FlowTable::new(2, 0);
        let mk = |i: u32| {
            let o = key(i, 1);
            let r = FlowKey { src: o.dst, dst: 9, sport: 80, dport: i as u16, proto: 6 };
            t.insert(o, [r], build, Time::ZERO)
        };
        assert!(mk(1).is_ok());
        assert!(mk(2).is_ok());
        assert_eq!(mk(3).err(), Some(InsertError::Full));
        assert_eq!(t.stats.insert_failed_full.get(), 1);
        assert!(t.lookup(&key(1, 1)).is_some() && t.lookup(&key(2, 1)).is_some());
    }

    #[test]
    fn taken_reply_key_tries_next_candidate() {
        let t = FlowTable::new(4, 0);
        let r1 = FlowKey { src: 7, dst: 9, sport: 80, dport: 1000, proto: 6 };
        let r2 = FlowKey { dport: 1001, ..r1 };
        t.insert(key(1, 1000), [r1], build, Time::ZERO).expect("first");
        let (_, f) = t.insert(key(2, 1000), [r1, r2], build, Time::ZERO).expect("second");
        assert_eq!(f.keys[1], r2);
        assert_eq!(t.insert(key(3, 1000), [r1, r2], build, Time::ZERO).err(), Some(InsertError::NoReplyKey));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn duplicate_orig_reports_existing() {
        let t = FlowTable::new(4, 0);
        let r1 = FlowKey { src: 7, dst: 9, sport: 80, dport: 1000, proto: 6 };
        let r2 = FlowKey { dport: 1001, ..r1 };
        t.insert(key(1, 1000), [r1], build, Time::ZERO).expect("first");
        assert!(matches!(t.insert(key(1, 1000), [r2], build, Time::ZERO), Err(InsertError::Exists(_))));
        assert_eq!(t.len(), 1);
        assert!(t.lookup(&r2).is_none(), "the loser's reply key is released");
    }

    #[test]
    fn sweep_expires_and_frees_slots() {
        let t = FlowTable::new(2, 0);
        let to = Timeouts::default();
        let r1 = FlowKey { src: 7, dst: 9, sport: 80, dport: 1000, proto: 6 };
        t.insert(key(1, 1000), [r1], build, Time::ZERO).expect("insert");
        assert_eq!(t.sweep(Time::from_secs(119), 2, &to, |_| {}), 0);
        let mut seen = 0;
        assert_eq!(t.sweep(Time::from_secs(121), 2, &to, |_| seen += 1), 1);
        assert_eq!((seen, t.len()), (1, 0));
        assert!(t.lookup(&r1).is_none());
        // the slot can be used again
        t.insert(key(2, 1000), [r1], build, Time::ZERO).expect("reuse");
    }

    #[test]
    fn flows_whose_keys_share_an_index_tag_are_told_apart() {
        let t = FlowTable::new(4, 0);
        // two reply keys with the same bucket and tag (the index cannot tell them apart)
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..=u16::MAX)
            .map(|p| FlowKey { src: 7, dst: 9, sport: 80, dport: p, proto: 6 })
            .find_map(|k| seen.insert(t.index.probe(&k), k).map(|j| (j, k)))
            .expect("a collision among 65 536 keys");
        let (fa, _) = t.insert(key(1, 1000), [a], build, Time::ZERO).expect("first");
        let (fb, _) = t.insert(key(2, 1000), [b], build, Time::ZERO).expect("second: a's entry is not b's key");
        let (ra, rb) = (FlowRef::new(fa.slot(), Dir::Reply), FlowRef::new(fb.slot(), Dir::Reply));
        assert_eq!((t.lookup(&a), t.lookup(&b)), (Some(ra), Some(rb)));
        // the packet path's unconfirmed candidate is one of them for both keys; the lock
        // check refuses it for the other key
        let cand = t.lookup_probe(&t.probe(&b)).expect("candidate");
        assert!(cand == ra || cand == rb);
        let other = if cand == ra { b } else { a };
        assert_eq!(t.with_flow(cand, &other, |_, _| ()), None);
        // a third flow wanting key a as its reply finds it taken, not stale
        assert_eq!(t.insert(key(3, 1000), [a], build, Time::ZERO).err(), Some(InsertError::NoReplyKey));
        assert!(t.remove_key(&a, Time::ZERO).is_some());
        assert_eq!((t.lookup(&a), t.lookup(&b)), (None, Some(rb)));
    }

    #[test]
    fn stale_index_entry_is_reclaimed() {
        let t = FlowTable::new(2, 0);
        let r1 = FlowKey { src: 7, dst: 9, sport: 80, dport: 1000, proto: 6 };
        let (fr, _) = t.insert(key(1, 1000), [r1], build, Time::ZERO).expect("insert");
        // simulate the window between marking dead and unlinking
        t.slots[fr.slot() as usize].lock().set_live(false);
        let (_, f) = t.insert(key(2, 1000), [r1], build, Time::ZERO).expect("reclaims");
        assert_eq!(f.keys[1], r1);
    }
}
