//! Port blocks (bulk port allocation, RFC 7422 style): each inside host's translations on
//! its paired outside address stay inside blocks of ports it holds. A host gets its first
//! block with its first translated flow and another when all its ports towards a
//! destination are taken, up to `per_host`; a block whose last flow ended goes back to its
//! address's free list after the hold time. So one record per block — not one per
//! connection — tells which subscriber an (outside address, port) belonged to at a time.
//!
//! In deterministic mode a host's blocks are a function of its address (its position in the
//! inside subnets): it holds all of them from the start, none is ever released, and nothing
//! needs logging.
//!
//! Locks: a host's entry (a shard of a concurrent map) is held while an address's free list
//! (one mutex per outside address) is taken — always in that order. The packet path takes
//! them only when a host needs a block or a flow starts or ends; the established path never.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam::queue::ArrayQueue;

use crate::config::{BlockConfig, NatConfig};
use crate::counters::SharedCounter;
use crate::time::Time;

const MAX: usize = BlockConfig::MAX_PER_HOST as usize;

mod layout;

pub use layout::{validate, BlockPorts, Held, Layout};

/// What happened to the blocks (for NAT event logging).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BlockEventKind {
    /// A host was given a block.
    Allocated,
    /// A block went back to its address's free list.
    Released,
    /// A host holding all the blocks it may hold needed another (RFC 8158 quota exceeded).
    QuotaExceeded,
    /// A host's outside address had no free block (RFC 8158 addresses exhausted).
    Exhausted,
}

/// One block event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEvent {
    /// What.
    pub kind: BlockEventKind,
    /// The inside host.
    pub host: u32,
    /// The outside address.
    pub addr: u32,
    /// The block's ports (0, 0 for a refusal).
    pub ports: (u16, u16),
    /// When.
    pub at: Time,
}

crate::counter_family! {
    /// Port blocks.
    pub struct BlockStats: SharedCounter {
        /// Blocks given to hosts.
        allocated,
        /// Blocks given back after their hold time.
        released,
        /// New translations refused: the host held all the blocks it may hold, all full.
        quota_exceeded,
        /// New translations refused: the host's outside address had no free block.
        exhausted,
        /// Block events the event queue had no room for (never exported).
        events_dropped,
    }
}

/// Why a host cannot have (another) block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It holds all it may.
    Quota,
    /// Its address has none free.
    Exhausted,
}

#[derive(Debug, Clone, Copy, Default)]
struct Block {
    id: u16,
    flows: u32,
    /// When its last flow ended (ZERO while it has flows).
    idle_since: Time,
}

#[derive(Debug, Clone, Copy)]
struct HostBlocks {
    addr: u32,
    n: usize,
    blocks: [Block; MAX],
}

/// The port blocks of every outside address and who holds them.
#[derive(Debug)]
pub struct PortBlocks {
    cfg: BlockConfig,
    layout: Layout,
    /// The addresses blocks are on (the pool; one entry, 0, for "the outside address").
    addrs: Vec<u32>,
    free: Vec<Mutex<VecDeque<u16>>>,
    hosts: dashmap::DashMap<u32, HostBlocks, foldhash::fast::RandomState>,
    /// Deterministic mode: the inside subnets (first address, size), in order.
    inside: Vec<(u32, u32)>,
    events: ArrayQueue<BlockEvent>,
    /// When a refusal was last queued as an event, per (kind, host or address): at most
    /// one a second each, so a refused flood makes a record a second, not one a packet.
    told: dashmap::DashMap<(u8, u32), Time, foldhash::fast::RandomState>,
    last_sweep: AtomicU64,
    /// Counters.
    pub stats: BlockStats,
}

impl PortBlocks {
    /// Blocks for `nat`'s range on `addrs` (empty: the outside address, whatever it is);
    /// `inside` lists the inside subnets for deterministic mode; `events` is the size of
    /// the event queue.
    pub fn new(cfg: BlockConfig, nat: &NatConfig, addrs: &[u32], inside: Vec<(u32, u32)>, events: usize) -> PortBlocks {
        let layout = Layout::new(nat, cfg.size);
        let addrs = if addrs.is_empty() { vec![0] } else { addrs.to_vec() };
        let free = addrs
            .iter()
            .map(|_| {
                Mutex::new(if cfg.deterministic { VecDeque::new() } else { (0..layout.starts.len() as u16).collect() })
            })
            .collect();
        PortBlocks {
            cfg,
            layout,
            addrs,
            free,
            hosts: dashmap::DashMap::default(),
            inside,
            events: ArrayQueue::new(events.max(1)),
            told: dashmap::DashMap::default(),
            last_sweep: AtomicU64::new(0),
            stats: BlockStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BlockConfig {
        &self.cfg
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn addr_ix(&self, addr: u32) -> usize {
        self.addrs.iter().position(|&a| a == addr).unwrap_or(0)
    }

    fn emit(&self, kind: BlockEventKind, host: u32, addr: u32, ports: (u16, u16), at: Time) {
        if self.events.push(BlockEvent { kind, host, addr, ports, at }).is_err() {
            self.stats.events_dropped.inc();
        }
    }

    /// Counts a refusal and queues its event unless one for the same host (quota) or
    /// address (exhausted) was queued less than a second ago.
    fn refuse(&self, r: Refusal, host: u32, addr: u32, now: Time) -> Refusal {
        let (kind, key) = match r {
            Refusal::Quota => {
                self.stats.quota_exceeded.inc();
                (BlockEventKind::QuotaExceeded, host)
            }
            Refusal::Exhausted => {
                self.stats.exhausted.inc();
                (BlockEventKind::Exhausted, addr)
            }
        };
        let mut t = self.told.entry((kind as u8, key)).or_insert(Time::ZERO);
        if *t == Time::ZERO || now.since(*t) >= std::time::Duration::from_secs(1) {
            *t = now;
            drop(t);
            self.emit(kind, host, addr, (0, 0), now);
        }
        r
    }

    /// Takes the oldest block event.
    pub fn pop_event(&self) -> Option<BlockEvent> {
        self.events.pop()
    }

    /// Deterministic mode: the address index and first block of `host`.
    fn slot(&self, host: u32) -> Option<(usize, u16)> {
        let mut i = 0u64;
        let mut found = None;
        for &(base, n) in &self.inside {
            if host >= base && u64::from(host) < u64::from(base) + u64::from(n) {
                found = Some(i + u64::from(host - base));
                break;
            }
            i += u64::from(n);
        }
        let per_addr = (self.layout.starts.len() / usize::from(self.cfg.per_host)) as u64;
        let i = found?;
        let ix = usize::try_from(i.checked_div(per_addr)?).ok()?;
        (ix < self.addrs.len()).then(|| (ix, ((i % per_addr) * u64::from(self.cfg.per_host)) as u16))
    }

    /// How many inside hosts deterministic mode can map (blocks per address ÷ per host ×
    /// addresses).
    pub fn capacity(&self) -> u64 {
        (self.layout.starts.len() / usize::from(self.cfg.per_host.max(1))) as u64 * self.addrs.len() as u64
    }

    /// Deterministic mode: the address `host` is translated onto (`None`: not mappable, or
    /// the outside address when blocks are on it).
    pub fn deterministic_addr(&self, host: u32) -> Option<u32> {
        if !self.cfg.deterministic {
            return None;
        }
        self.slot(host).map(|(ix, _)| self.addrs[ix]).filter(|&a| a != 0)
    }

    /// The blocks `host` holds on `addr`, giving it its first when it holds none.
    pub fn held(&self, host: u32, addr: u32, now: Time) -> Result<Held, Refusal> {
        if self.cfg.deterministic {
            let Some((_, first)) = self.slot(host) else {
                return Err(self.refuse(Refusal::Exhausted, host, addr, now));
            };
            let mut h = Held { n: usize::from(self.cfg.per_host), starts: [0; MAX], room: u32::MAX };
            for (i, s) in h.starts[..h.n].iter_mut().enumerate() {
                *s = self.layout.starts[usize::from(first) + i];
            }
            return Ok(h);
        }
        if let Some(mut e) = self.hosts.get_mut(&host) {
            if e.n > 0 {
                // an idle block about to take a flow is not given back meanwhile
                let n = e.n;
                for b in e.blocks[..n].iter_mut().filter(|b| b.flows == 0) {
                    b.idle_since = now;
                }
                return Ok(self.view(&e));
            }
        }
        self.grow(host, addr, now)
    }

    fn view(&self, e: &HostBlocks) -> Held {
        let mut h = Held { n: e.n, starts: [0; MAX], room: 0 };
        for (i, (s, b)) in h.starts.iter_mut().zip(&e.blocks[..e.n]).enumerate() {
            *s = self.layout.starts[usize::from(b.id)];
            if b.flows < u32::from(self.layout.size) {
                h.room |= 1 << i;
            }
        }
        h
    }

    /// Gives `host` one more block on `addr` (its others are full): the new set, or why not
    /// (counted, and an event).
    pub fn grow(&self, host: u32, addr: u32, now: Time) -> Result<Held, Refusal> {
        if self.cfg.deterministic {
            return Err(self.refuse(Refusal::Quota, host, addr, now));
        }
        let mut e = self.hosts.entry(host).or_insert(HostBlocks { addr, n: 0, blocks: [Block::default(); MAX] });
        if e.n >= usize::from(self.cfg.per_host) {
            drop(e);
            return Err(self.refuse(Refusal::Quota, host, addr, now));
        }
        let ix = self.addr_ix(addr);
        let got = self.free[ix].lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
        let Some(id) = got else {
            let empty = e.n == 0;
            drop(e);
            if empty {
                self.hosts.remove_if(&host, |_, e| e.n == 0);
            }
            return Err(self.refuse(Refusal::Exhausted, host, addr, now));
        };
        let n = e.n;
        e.addr = addr;
        e.blocks[n] = Block { id, flows: 0, idle_since: now };
        e.n += 1;
        let held = self.view(&e);
        drop(e);
        self.stats.allocated.inc();
        self.emit(BlockEventKind::Allocated, host, addr, self.layout.ports(id), now);
        Ok(held)
    }

    /// A flow of `host` took outside port `port`.
    pub fn flow_added(&self, host: u32, port: u16) {
        let Some(id) = self.layout.block_of(port) else { return };
        if let Some(mut e) = self.hosts.get_mut(&host) {
            let n = e.n;
            if let Some(b) = e.blocks[..n].iter_mut().find(|b| b.id == id) {
                b.flows += 1;
                b.idle_since = Time::ZERO;
            }
        }
    }

    /// A flow of `host` on outside port `port` ended at `now`.
    pub fn flow_removed(&self, host: u32, port: u16, now: Time) {
        let Some(id) = self.layout.block_of(port) else { return };
        if let Some(mut e) = self.hosts.get_mut(&host) {
            let n = e.n;
            if let Some(b) = e.blocks[..n].iter_mut().find(|b| b.id == id && b.flows > 0) {
                b.flows -= 1;
                if b.flows == 0 {
                    b.idle_since = now;
                }
            }
        }
    }

    /// A flow the peer gateway created (HA sync): its block becomes `host`'s here too, when
    /// free, and counts the flow.
    pub fn adopt(&self, host: u32, addr: u32, port: u16, now: Time) {
        let Some(id) = self.layout.block_of(port) else { return };
        if self.cfg.deterministic {
            return;
        }
        let mut e = self.hosts.entry(host).or_insert(HostBlocks { addr, n: 0, blocks: [Block::default(); MAX] });
        let n = e.n;
        if !e.blocks[..n].iter().any(|b| b.id == id) {
            let mut free = self.free[self.addr_ix(addr)].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(at) = free.iter().position(|&f| f == id).filter(|_| n < MAX) else { return };
            free.remove(at);
            drop(free);
            e.addr = addr;
            e.blocks[n] = Block { id, flows: 0, idle_since: now };
            e.n += 1;
        }
        drop(e);
        self.flow_added(host, port);
    }

    /// Gives back blocks idle for the hold time (at most once a second; call it with the
    /// table sweep). Returns how many.
    pub fn sweep(&self, now: Time) -> usize {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.as_nanos() < last.saturating_add(1_000_000_000)
            || self.last_sweep.compare_exchange(last, now.as_nanos(), Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return 0;
        }
        let hold = self.cfg.hold;
        let mut released = 0;
        self.hosts.retain(|&host, e| {
            let mut i = 0;
            while i < e.n {
                let b = e.blocks[i];
                if b.flows == 0 && now.since(b.idle_since) >= hold {
                    self.free[self.addr_ix(e.addr)]
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push_back(b.id);
                    e.blocks[i] = e.blocks[e.n - 1];
                    e.n -= 1;
                    released += 1;
                    self.stats.released.inc();
                    self.emit(BlockEventKind::Released, host, e.addr, self.layout.ports(b.id), now);
                } else {
                    i += 1;
                }
            }
            e.n > 0
        });
        released
    }

    /// Every held block: (host, address, first port, last port, flows, idle since).
    pub fn list(&self) -> Vec<(u32, u32, u16, u16, u32, Time)> {
        let mut v = Vec::new();
        for e in &self.hosts {
            for b in &e.blocks[..e.n] {
                let (lo, hi) = self.layout.ports(b.id);
                v.push((*e.key(), e.addr, lo, hi, b.flows, b.idle_since));
            }
        }
        v.sort_unstable();
        v
    }

    /// Bytes a host's entry takes (up to the most blocks a host may hold), and bytes a
    /// block takes in its address's free list.
    pub fn memory() -> (usize, usize) {
        (std::mem::size_of::<(u32, HostBlocks)>(), std::mem::size_of::<u16>())
    }

    /// Blocks free on each address.
    pub fn free_counts(&self) -> Vec<(u32, usize)> {
        self.addrs
            .iter()
            .zip(&self.free)
            .map(|(a, f)| (*a, f.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
