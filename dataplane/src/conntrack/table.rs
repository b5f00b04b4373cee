//! The connection table: fixed slots behind one-byte spin locks, the lock-free index over
//! them, insertion (the reply key's insertion is the port reservation), lookups, removal,
//! the sweep, and the event ring.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crossbeam::queue::ArrayQueue;

use crate::config::Timeouts;
use crate::counters::SharedCounter;
use crate::time::Time;
use index::{FlowIndex, Held, IndexError, Probe};
use lock::{SlotGuard, SlotLock};
use offload::Offload;

use super::*;

// A slot is the lock's 8-byte header and a flow in exactly two cache lines: 128 bytes, of
// which a packet reads the first 112 (through `last_seen`). A field that grows `Flow` past
// 120 bytes makes every slot a third line longer (192 bytes, +64 MB at 1 M flows): this
// fails the build instead.
const _: () = assert!(core::mem::size_of::<SlotLock<Flow>>() == 128);

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

crate::counter_family! {
    /// Table-wide counters (several writers).
    pub struct TableStats: SharedCounter {
        /// Flows inserted.
        inserted,
        /// Insertions refused because the table was full.
        insert_failed_full,
        /// Insertions refused because no reply key was free.
        insert_failed_key,
        /// Flows removed by expiry.
        expired,
        /// Flows removed explicitly.
        removed,
        /// Events lost because the ring was full.
        events_dropped,
    }
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
    free: super::free::FreeList,
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
        let free = super::free::FreeList::new(&slots);
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
        let Some(slot) = self.free.pop(&self.slots) else {
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
            self.free.push(&self.slots, slot);
            self.stats.insert_failed_key.inc();
            return Err(InsertError::NoReplyKey);
        };
        let mut flow = build(reply);
        flow.keys = [orig, reply];
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
            self.free.push(&self.slots, slot);
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
        self.free.push(&self.slots, slot);
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
    pub fn for_each(&self, f: impl FnMut(u32, &Flow)) {
        self.for_each_in(0..self.slots.len() as u32, f);
    }

    /// [`FlowTable::for_each`] over the slots of `slots` only (a walk in steps: the HA sync
    /// visits a slice of the table per tick; slots run from 0 to [`FlowTable::capacity`]).
    pub fn for_each_in(&self, slots: core::ops::Range<u32>, mut f: impl FnMut(u32, &Flow)) {
        for slot in slots.start..slots.end.min(self.slots.len() as u32) {
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
#[path = "table_tests.rs"]
mod tests;
