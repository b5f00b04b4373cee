//! The XDP fast path's userspace half: turns flows the engine offers
//! (`conntrack::offload`) into entries of each interface's `FLOWS` map, folds the counters
//! the XDP program keeps there back into the flows, and removes entries when the engine takes
//! a flow back.
//!
//! An entry is the flow direction's precomputed rewrite (addresses, ports or Call ID, checksum
//! differences, egress interface, the next hop's MAC): data, no policy. Entries live in the
//! map of the interface the direction arrives on, so a packet on another interface never
//! matches. Installation runs with the flow's slot locked, so an entry is never installed
//! for a flow that is gone. The control plane's withdrawals (expiry, deletion) run with the
//! slot locked too, before the flow is forgotten. The packet path's withdrawals (a FIN, a
//! PPTP call's end) only unmark the flow and queue the request: this thread deletes the
//! entries without any slot lock, then folds their last counts into the flow if it is still
//! there ([`XdpOffload::take_back`]). A full map means "not offloaded" (counted), never
//! "dropped".
//!
//! Lock order: flow slot → `installed` shard → one interface's map mutex. The maps' mutexes
//! are held for one syscall; the packet path never takes them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;
use rustc_hash::FxHashMap;
use xgw_dataplane::conntrack::offload::{FastPath, Request};
use xgw_dataplane::conntrack::{status, Flow};
use xgw_dataplane::counters::SharedCounter;
use xgw_dataplane::neighbour::Neighbours;
use xgw_dataplane::{IfaceId, Shared, Time};
use xgw_ebpf_common::{FastFlow, FastKey};

use crate::flowmap::BatchRead;

#[path = "offload/schedule.rs"]
mod schedule;

pub use schedule::sync_period;
use schedule::{next_poll, start, Round, Start, IDLE_POLL, SYNC_CHUNK, SYNC_PAUSE};

pub use crate::flowmap::FlowMap;

/// The fast path's description of one flow direction: the key its packets arrive with and
/// what they leave with. `smac`/`dmac` are the egress interface's and the next hop's MACs.
pub fn entry(flow: &Flow, dir: usize, smac: [u8; 6], dmac: [u8; 6]) -> (FastKey, FastFlow) {
    let k = flow.keys[dir];
    let rw = flow.rewrite[dir];
    let d = flow.csum(dir);
    (
        FastKey { src: k.src, dst: k.dst, sport: k.sport, dport: k.dport, proto: u32::from(k.proto) },
        FastFlow {
            src: rw.src,
            dst: rw.dst,
            sport: rw.sport,
            dport: rw.dport,
            ip_delta: d.ip,
            l4_delta: d.l4,
            egress: u32::from(rw.egress.0),
            smac,
            dmac,
            ..FastFlow::default()
        },
    )
}

/// The interface a flow direction's packets arrive on: where the other direction leaves.
pub fn ingress_of(flow: &Flow, dir: usize) -> IfaceId {
    flow.rewrite[1 - dir].egress
}

xgw_dataplane::counter_family! {
    /// Offload counters (`xgwctl stats`, metrics).
    pub struct FastPathStats: SharedCounter {
        /// Flows whose both directions were installed.
        installed,
        /// Flows refused because an interface's map was full.
        map_full,
        /// Requests put off because a next hop was not resolved yet (asked again later).
        no_neighbour,
        /// Flows whose entries were removed.
        removed,
        /// Flows taken back because their next hop's MAC changed (offered again afterwards).
        mac_changed,
        /// Entries found without a live flow (never expected) and removed.
        orphans,
        /// Flows the packet path gave back whose entries this thread deleted.
        taken_back,
        /// Batch reads of a map's counters that failed (its flows are read next round).
        read_failed,
    }
}

#[derive(Debug, Clone, Copy)]
struct Direction {
    iface: usize,
    key: FastKey,
    /// Counts already folded into the flow.
    packets: u64,
    bytes: u64,
    seen: u64,
    macs: ([u8; 6], [u8; 6]),
}

impl Direction {
    /// Folds what the fast path counted (`v`, read from the map) since the last fold into
    /// direction `d` of `flow`. A reading older than the last one folded (a round's snapshot
    /// taken before a refresh read the map again) changes nothing.
    fn fold(&mut self, flow: &mut Flow, d: usize, v: &FastFlow, mono_base: u64) {
        if v.packets < self.packets || v.bytes < self.bytes || v.last_seen < self.seen {
            return;
        }
        flow.packets[d] += v.packets - self.packets;
        flow.bytes[d] += v.bytes - self.bytes;
        if v.last_seen > self.seen {
            let t = Time(v.last_seen.saturating_sub(mono_base));
            if t > flow.last_seen {
                flow.last_seen = t;
            }
            if d == 1 {
                flow.status |= status::SEEN_REPLY;
            }
        }
        (self.packets, self.bytes, self.seen) = (v.packets, v.bytes, v.last_seen);
    }
}

#[derive(Debug, Clone, Copy)]
struct Installed {
    slot: u32,
    /// Which install this was (they are numbered): a sync round's snapshot, read before it,
    /// holds nothing of it.
    generation: u64,
    dirs: [Direction; 2],
}

/// What a sync round read from the maps: every entry, per interface.
#[derive(Debug, Default)]
struct Snapshot {
    /// The number of the last install made before the read began.
    generation: u64,
    maps: Vec<FxHashMap<FastKey, FastFlow>>,
}

/// The fast path of xgwd: every interface's `FLOWS` map.
pub struct XdpOffload {
    maps: Vec<Mutex<FlowMap>>,
    installed: DashMap<u64, Installed>,
    /// Installs made so far (numbers them).
    installs: AtomicU64,
    neigh: Arc<dyn Neighbours>,
    /// CLOCK_MONOTONIC (what `bpf_ktime_get_ns` reads) at engine time zero.
    mono_base: u64,
    /// Counters.
    pub stats: FastPathStats,
}

impl core::fmt::Debug for XdpOffload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XdpOffload").field("interfaces", &self.maps.len()).field("flows", &self.len()).finish()
    }
}

/// Nanoseconds of CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns` and of `Instant`.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

impl XdpOffload {
    /// The fast path over `maps` (indexed by the engine's interface number); `mono_base` is
    /// CLOCK_MONOTONIC at engine time zero.
    pub fn new(maps: Vec<FlowMap>, neigh: Arc<dyn Neighbours>, mono_base: u64) -> XdpOffload {
        XdpOffload {
            maps: maps.into_iter().map(Mutex::new).collect(),
            installed: DashMap::new(),
            installs: AtomicU64::new(0),
            neigh,
            mono_base,
            stats: FastPathStats::default(),
        }
    }

    /// Flows installed now.
    pub fn len(&self) -> usize {
        self.installed.len()
    }

    /// True when no flow is installed.
    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// True when the flow with this id is installed.
    pub fn contains(&self, id: u64) -> bool {
        self.installed.contains_key(&id)
    }

    fn map(&self, iface: usize) -> Option<std::sync::MutexGuard<'_, FlowMap>> {
        self.maps.get(iface).map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn delete(&self, d: &Direction) {
        if let Some(mut m) = self.map(d.iface) {
            let _ = m.remove(&d.key);
        }
    }

    /// Installs the flow in `slot` if it is still flow `id` and still offered. Runs with the
    /// slot locked (through the table), like `withdraw`.
    pub fn install(&self, shared: &Shared, slot: u32, id: u64) {
        shared.flows.with_slot(slot, |f| {
            if f.id != id || f.status & status::OFFLOAD == 0 || self.installed.contains_key(&id) {
                return;
            }
            let mut dirs = [None, None];
            for (d, out) in dirs.iter_mut().enumerate() {
                let rw = f.rewrite[d];
                let Some(macs) = self.neigh.macs(rw.egress, rw.src, rw.dst) else {
                    // being resolved: the flow is offered again by a later packet
                    f.status &= !status::OFFLOAD;
                    self.stats.no_neighbour.inc();
                    return;
                };
                let (key, value) = entry(f, d, macs.0, macs.1);
                let iface = usize::from(ingress_of(f, d).0);
                *out = Some((Direction { iface, key, packets: 0, bytes: 0, seen: 0, macs }, value));
            }
            let [Some((a, va)), Some((b, vb))] = dirs else { return };
            let generation = self.installs.fetch_add(1, Ordering::Relaxed) + 1;
            if self.map(a.iface).is_none_or(|mut m| m.insert(a.key, va, 0).is_err()) {
                // stays marked: not offered again (a full map stays full for a while)
                self.stats.map_full.inc();
                return;
            }
            if self.map(b.iface).is_none_or(|mut m| m.insert(b.key, vb, 0).is_err()) {
                self.delete(&a); // both directions or neither
                self.stats.map_full.inc();
                return;
            }
            self.installed.insert(id, Installed { slot, generation, dirs: [a, b] });
            self.stats.installed.inc();
        });
    }

    /// Reads what the fast path counted for one direction; folds the news into `flow`.
    fn fold(&self, flow: &mut Flow, d: usize, dir: &mut Direction) {
        let v = self.map(dir.iface).and_then(|m| m.get(&dir.key, 0).ok());
        self.fold_value(flow, d, dir, v);
    }

    fn fold_value(&self, flow: &mut Flow, d: usize, dir: &mut Direction, v: Option<FastFlow>) {
        if let Some(v) = v {
            dir.fold(flow, d, &v, self.mono_base);
        }
    }

    /// Deletes the entries of a flow the packet path gave back (`r`, from
    /// `Offload::pop_withdrawal`) with no slot locked, then folds their last counts into the
    /// flow if it is still in its slot.
    pub fn take_back(&self, shared: &Shared, r: Request) {
        let Some((_, mut i)) = self.installed.remove(&r.id) else { return };
        let mut last = [None, None];
        for (d, v) in last.iter_mut().enumerate() {
            let dir = &i.dirs[d];
            if let Some(mut m) = self.map(dir.iface) {
                *v = m.get(&dir.key, 0).ok();
                let _ = m.remove(&dir.key);
            }
        }
        shared.flows.with_slot(r.slot, |f| {
            if f.id == r.id {
                for (d, v) in last.into_iter().enumerate() {
                    self.fold_value(f, d, &mut i.dirs[d], v);
                }
            }
        });
        self.stats.taken_back.inc();
    }

    /// Folds every installed flow's counters into the table and takes back flows whose
    /// next hop's MAC changed (at once: a round of [`XdpOffload::run`] in one go). Slots are
    /// locked one at a time.
    pub fn sync(&self, shared: &Shared) {
        let mut snap = Snapshot::default();
        self.begin_snapshot(&mut snap);
        let mut reader = BatchRead::default();
        for iface in 0..self.maps.len() {
            reader.restart();
            while !reader.done() {
                self.read_batch(iface, &mut reader, &mut snap);
            }
        }
        self.sync_some(shared, &self.installed_flows(), Some(&snap));
    }

    /// Takes back the installed flows whose next hop's MAC changed, without reading the
    /// maps (a pass of [`XdpOffload::run`] after the neighbour tables changed, in one go).
    pub fn check_macs(&self, shared: &Shared) {
        self.sync_some(shared, &self.installed_flows(), None);
    }

    /// Empties `snap` for a new round and notes the last install made before it.
    fn begin_snapshot(&self, snap: &mut Snapshot) {
        snap.generation = self.installs.load(Ordering::Relaxed);
        snap.maps.resize_with(self.maps.len(), FxHashMap::default);
        snap.maps.iter_mut().for_each(FxHashMap::clear);
    }

    /// Reads one batch of interface `iface`'s map into `snap` (one syscall, the map's mutex
    /// held for it). A failed read ends that map's part of the round.
    fn read_batch(&self, iface: usize, reader: &mut BatchRead, snap: &mut Snapshot) {
        let (Some(m), Some(out)) = (self.map(iface), snap.maps.get_mut(iface)) else {
            reader.restart();
            return;
        };
        if reader.next(&m, out).is_err() {
            self.stats.read_failed.inc();
        }
    }

    /// The installed flows, (id, slot) each: what a sync round goes through.
    fn installed_flows(&self) -> Vec<(u64, u32)> {
        self.installed.iter().map(|e| (*e.key(), e.value().slot)).collect()
    }

    /// Folds `snap`'s counts (when given) into some of the installed flows, takes back those
    /// whose next hop's MAC changed and those the packet path unmarked. No syscall with a
    /// slot locked.
    fn sync_some(&self, shared: &Shared, flows: &[(u64, u32)], snap: Option<&Snapshot>) {
        for &(id, slot) in flows {
            let live = shared.flows.with_slot(slot, |f| {
                if f.id != id {
                    return false;
                }
                if f.status & status::OFFLOAD == 0 {
                    // given back by the packet path, its withdrawal not seen yet (or lost
                    // to a full queue): taken back below, without the slot lock
                    return true;
                }
                let moved = self.installed.get_mut(&id).is_some_and(|mut i| {
                    if let Some(snap) = snap.filter(|snap| i.generation <= snap.generation) {
                        for d in 0..2 {
                            let dir = &mut i.dirs[d];
                            let v = snap.maps.get(dir.iface).and_then(|m| m.get(&dir.key)).copied();
                            self.fold_value(f, d, dir, v);
                        }
                    }
                    (0..2).any(|d| {
                        self.neigh.macs(f.rewrite[d].egress, f.rewrite[d].src, f.rewrite[d].dst) != Some(i.dirs[d].macs)
                    })
                });
                if moved {
                    shared.flows.offload.withdraw(f);
                    self.stats.mac_changed.inc();
                }
                true
            });
            match live {
                Some(true) => {
                    let unmarked = shared.flows.with_slot(slot, |f| f.id == id && f.status & status::OFFLOAD == 0);
                    if unmarked == Some(true) && self.installed.contains_key(&id) {
                        self.take_back(shared, Request { slot, id });
                    }
                }
                _ => {
                    if let Some((_, i)) = self.installed.remove(&id) {
                        i.dirs.iter().for_each(|d| self.delete(d));
                        self.stats.orphans.inc();
                    }
                }
            }
        }
    }

    /// Runs the offload thread until `stop`: installs offered flows as they come, syncs
    /// counters every [`sync_period`] of the configured timeouts, and checks the installed
    /// flows' next hops again when the neighbour tables change (at most every
    /// [`schedule::MAC_CHECK_EVERY`]; a counter round checks them too).
    ///
    /// A round reads every map in batches ([`crate::flowmap`]: one syscall per
    /// [`crate::flowmap::BATCH`] entries), then folds what it read into the installed flows
    /// [`SYNC_CHUNK`] at a time, with a short pause between steps. This thread shares its
    /// core with the receive processing (and whatever else runs there): a lookup per entry
    /// (two syscalls per flow) cost 16 k flows tens of milliseconds of that core every
    /// second, and any step of over a few hundred microseconds delays the packets queued
    /// behind it (the fast path's latency tail in bench/README.md).
    pub fn run(self: Arc<Self>, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
        let mut last_round = std::time::Instant::now();
        let mut last_check = last_round;
        let mut checked = self.neigh.generation();
        let mut snap = Snapshot::default();
        let mut reader = BatchRead::default();
        let mut flows: Vec<(u64, u32)> = Vec::new();
        let mut round = Round::Idle;
        let mut poll = IDLE_POLL.0;
        while !stop.load(Ordering::Relaxed) {
            let mut n = 0;
            // withdrawals first: a flow given back and offered again is installed afresh
            while let Some(r) = shared.flows.offload.pop_withdrawal() {
                self.take_back(&shared, r);
                n += 1;
            }
            while let Some(r) = shared.flows.offload.pop() {
                self.install(&shared, r.slot, r.id);
                n += 1;
            }
            round = match round {
                Round::Idle => {
                    let period = sync_period(&shared.config().timeouts);
                    let moved = self.neigh.generation() != checked;
                    match start(last_round.elapsed(), last_check.elapsed(), moved, period) {
                        Start::Nothing => Round::Idle,
                        begun => {
                            // what a pass checks against: the tables as they are from now on
                            checked = self.neigh.generation();
                            last_check = std::time::Instant::now();
                            if begun == Start::Counters {
                                last_round = last_check;
                                self.begin_snapshot(&mut snap);
                                reader.restart();
                                Round::Reading(0)
                            } else {
                                flows = self.installed_flows();
                                Round::Checking(0)
                            }
                        }
                    }
                }
                Round::Reading(iface) if iface >= self.maps.len() => {
                    flows = self.installed_flows();
                    Round::Folding(0)
                }
                Round::Reading(iface) => {
                    self.read_batch(iface, &mut reader, &mut snap);
                    if reader.done() {
                        reader.restart();
                        Round::Reading(iface + 1)
                    } else {
                        Round::Reading(iface)
                    }
                }
                Round::Folding(at) | Round::Checking(at) => {
                    let end = (at + SYNC_CHUNK).min(flows.len());
                    let folding = matches!(round, Round::Folding(_));
                    self.sync_some(&shared, &flows[at..end], folding.then_some(&snap));
                    match (end == flows.len(), folding) {
                        (true, _) => Round::Idle,
                        (false, true) => Round::Folding(end),
                        (false, false) => Round::Checking(end),
                    }
                }
            };
            poll = next_poll(poll, n > 0);
            if n == 0 {
                std::thread::sleep(if round == Round::Idle { poll } else { SYNC_PAUSE });
            }
        }
    }
}

impl FastPath for XdpOffload {
    fn refresh(&self, flow: &mut Flow) {
        if let Some(mut i) = self.installed.get_mut(&flow.id) {
            for d in 0..2 {
                self.fold(flow, d, &mut i.dirs[d]);
            }
        }
    }

    fn withdraw(&self, flow: &mut Flow) {
        if let Some((_, mut i)) = self.installed.remove(&flow.id) {
            for d in 0..2 {
                self.fold(flow, d, &mut i.dirs[d]);
                self.delete(&i.dirs[d]);
            }
            self.stats.removed.inc();
        }
    }
}

#[cfg(test)]
#[path = "offload_tests.rs"]
mod tests;
