//! Next hops as a worker sees them: the lookup a worker makes before it transmits a frame
//! ([`Neighbours`], implemented by the daemon from the kernel's routes and neighbours), and
//! the frames that wait while a next hop is being resolved ([`Waiting`]).
//!
//! A frame whose next hop has no MAC address yet is not dropped: it waits, like the kernel's
//! own `arp_queue`, bounded per next hop and in total, and leaves as soon as the neighbour
//! is known. Frames still waiting after [`WAIT_LIMIT`] are given up (the kernel's resolution
//! takes 3 probes, one a second). The queue holds plain descriptors and never allocates
//! after it is made.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::IfaceId;
use crate::time::Time;

/// How long a frame may wait for its next hop: the kernel's 3 probes, 1 s apart.
pub const WAIT_LIMIT: Duration = Duration::from_secs(3);

/// A source and a destination MAC address.
pub type Macs = ([u8; 6], [u8; 6]);

/// What a lookup found for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// The next hop and both MAC addresses are known.
    Resolved(Macs),
    /// The next hop `0` (host order) is known, its MAC address not yet.
    Unresolved(u32),
    /// The route says the destination is not reachable (blackhole, unreachable, prohibit).
    NoRoute,
}

/// Where a worker gets MAC addresses from: the egress interface's own, and the next hop's
/// for a destination (the kernel's routes and neighbours).
pub trait Neighbours: Send + Sync {
    /// The next hop for a frame to `dst` (host order) leaving on `egress`; `hash` picks one
    /// of a multipath route's next hops ([`flow_hash`]).
    fn lookup(&self, egress: IfaceId, dst: u32, hash: u32) -> NextHop;
    /// Asks for next hop `nh` on `egress` to be resolved (the kernel probes it; the answer
    /// moves [`Neighbours::generation`]).
    fn request(&self, egress: IfaceId, nh: u32);
    /// The MAC addresses for next hop `nh` on `egress`, if it is resolved now (no route
    /// lookup: for frames that already wait for `nh`).
    fn resolved(&self, egress: IfaceId, nh: u32) -> Option<Macs>;
    /// A number that changes whenever a neighbour becomes resolved: waiting frames are
    /// looked at again when it moves.
    fn generation(&self) -> u64;
    /// Both MAC addresses for a packet `src` → `dst` leaving on `egress`, when they are known.
    fn macs(&self, egress: IfaceId, src: u32, dst: u32) -> Option<Macs> {
        match self.lookup(egress, dst, flow_hash(src, dst)) {
            NextHop::Resolved(m) => Some(m),
            NextHop::Unresolved(_) | NextHop::NoRoute => None,
        }
    }
}

/// The hash that picks a multipath route's next hop: the same for every packet between two
/// addresses, whoever forwards it (a worker, or the fast path's precomputed rewrite).
pub fn flow_hash(src: u32, dst: u32) -> u32 {
    // murmur3's finaliser over the two addresses: every input bit moves every output bit
    let mut h = src.rotate_left(16) ^ dst;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Why a frame could not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// As many frames as allowed already wait for this next hop.
    NextHopFull,
    /// As many frames as allowed already wait in all.
    Full,
}

#[derive(Debug, Clone, Copy)]
struct Entry<D> {
    egress: IfaceId,
    nh: u32,
    since: Time,
    item: D,
}

/// Frames waiting for their next hop, in arrival order.
#[derive(Debug)]
pub struct Waiting<D> {
    entries: VecDeque<Entry<D>>,
    per_next_hop: usize,
    total: usize,
}

impl<D: Copy> Waiting<D> {
    /// A queue for at most `per_next_hop` frames per next hop and `total` in all.
    pub fn new(per_next_hop: usize, total: usize) -> Waiting<D> {
        Waiting { entries: VecDeque::with_capacity(total), per_next_hop, total }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Frames waiting to leave by `egress`.
    pub fn len_on(&self, egress: IfaceId) -> usize {
        self.entries.iter().filter(|e| e.egress == egress).count()
    }

    /// Lets `item` wait for next hop `nh` on `egress` from `now`: `Ok(true)` when it is the
    /// first to wait for `nh` (the caller asks for it to be resolved); refused (the item comes
    /// back) when a bound is reached.
    pub fn park(&mut self, egress: IfaceId, nh: u32, item: D, now: Time) -> Result<bool, (D, Refused)> {
        if self.entries.len() >= self.total {
            return Err((item, Refused::Full));
        }
        let before = self.entries.iter().filter(|e| e.egress == egress && e.nh == nh).count();
        if before >= self.per_next_hop {
            return Err((item, Refused::NextHopFull));
        }
        self.entries.push_back(Entry { egress, nh, since: now, item });
        Ok(before == 0)
    }

    /// Hands every waiting frame to `f` (when the worker stops).
    pub fn drain(&mut self, mut f: impl FnMut(IfaceId, D)) {
        for e in self.entries.drain(..) {
            f(e.egress, e.item);
        }
    }

    /// Hands `done` every frame whose next hop `resolve` now knows, with its MAC addresses
    /// (in arrival order), and every frame that waited longer than [`WAIT_LIMIT`], with
    /// `None` (given up); the rest keep waiting.
    pub fn release(
        &mut self,
        now: Time,
        mut resolve: impl FnMut(IfaceId, u32) -> Option<Macs>,
        mut done: impl FnMut(IfaceId, D, Option<Macs>),
    ) {
        // one lookup per distinct next hop and call, remembered while the queue is walked
        let mut last: Option<(IfaceId, u32, Option<Macs>)> = None;
        self.entries.retain(|e| {
            let macs = match last {
                Some((i, n, m)) if i == e.egress && n == e.nh => m,
                _ => {
                    let m = resolve(e.egress, e.nh);
                    last = Some((e.egress, e.nh, m));
                    m
                }
            };
            if macs.is_some() || now.since(e.since) >= WAIT_LIMIT {
                done(e.egress, e.item, macs);
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IfaceId = IfaceId(0);
    const B: IfaceId = IfaceId(1);
    const MACS: Macs = ([1; 6], [2; 6]);

    #[test]
    fn bounds_per_next_hop_and_in_total() {
        let mut w: Waiting<u32> = Waiting::new(2, 3);
        let t = Time::from_millis(0);
        assert_eq!(w.park(A, 10, 1, t), Ok(true));
        assert_eq!(w.park(A, 10, 2, t), Ok(false));
        assert_eq!(w.park(A, 10, 3, t), Err((3, Refused::NextHopFull)));
        // the same address behind another interface is another next hop
        assert_eq!(w.park(B, 10, 4, t), Ok(true));
        assert_eq!(w.park(A, 11, 5, t), Err((5, Refused::Full)));
        assert_eq!(w.len(), 3);
        assert_eq!((w.len_on(A), w.len_on(B), w.len_on(IfaceId(2))), (2, 1, 0));
    }

    #[test]
    fn resolved_frames_leave_in_arrival_order_and_the_rest_wait() {
        let mut w: Waiting<u32> = Waiting::new(8, 8);
        let t = Time::from_millis(0);
        for (i, nh) in [10, 11, 10, 11, 10].into_iter().enumerate() {
            w.park(A, nh, i as u32, t).expect("room");
        }
        let mut sent = Vec::new();
        let mut lookups = 0;
        w.release(
            Time::from_millis(5),
            |_, nh| {
                lookups += 1;
                (nh == 10).then_some(MACS)
            },
            |_, d, m| sent.push((d, m)),
        );
        assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 2, 4]);
        assert!(sent.iter().all(|s| s.1 == Some(MACS)), "nothing is old enough to give up");
        assert_eq!(w.len(), 2);
        assert_eq!(lookups, 5, "one lookup per entry whose neighbour differs from the previous one");
    }

    #[test]
    fn frames_are_given_up_after_the_wait_limit_not_before() {
        let mut w: Waiting<u32> = Waiting::new(8, 8);
        w.park(A, 10, 1, Time::from_millis(0)).expect("room");
        w.park(A, 10, 2, Time::from_millis(1000)).expect("room");
        let never = |_: IfaceId, _: u32| None;
        let at = |w: &mut Waiting<u32>, ms| {
            let mut dropped = Vec::new();
            w.release(Time::from_millis(ms), never, |_, d, m| {
                assert_eq!(m, None);
                dropped.push(d);
            });
            dropped
        };
        assert!(at(&mut w, 2999).is_empty());
        assert_eq!(at(&mut w, 3000), vec![1]);
        assert!(at(&mut w, 3999).is_empty());
        assert_eq!(at(&mut w, 4000), vec![2]);
        assert!(w.is_empty());
        // room again once they are gone, and the next hop is asked for again
        assert_eq!(w.park(A, 10, 3, Time::from_millis(4000)), Ok(true));
    }

    #[test]
    fn flow_hash_spreads_and_is_stable() {
        assert_eq!(flow_hash(1, 2), flow_hash(1, 2));
        assert_ne!(flow_hash(1, 2), flow_hash(2, 1));
        // two next hops: 1,000 flows from one source split roughly evenly
        let odd = (0..1000u32).filter(|d| flow_hash(0x0a00_0001, 0xc633_6400 + d) % 2 == 1).count();
        assert!((400..600).contains(&odd), "{odd} of 1000 on one path");
    }
}
