//! Handing established flows to a fast path (xgw's XDP program) and taking them back.
//!
//! The engine stays the only decision maker. When a packet leaves a flow in a state the fast
//! path can carry on its own ([`eligible`]), the engine marks the flow
//! [`status::OFFLOAD`] and queues a request; the control plane turns
//! the flow's keys, [`Rewrite`](super::Rewrite)s and [`CsumDelta`](super::CsumDelta)s into
//! the fast path's entries. Whenever an offloaded flow stops being live (expiry, deletion)
//! on the control plane, the table calls [`FastPath::withdraw`] *with the flow's slot
//! locked, before the flow is gone*, so no fast-path entry outlives its flow and its last
//! counts are folded in; [`FastPath::refresh`] folds the fast path's counters and last-seen
//! time into the flow (before expiry is decided, and periodically for listings).
//!
//! The packet path never calls the fast path (its calls are syscalls, and the packet path
//! holds a slot lock, for PPTP the inspector's mutex too): when a packet takes a flow out
//! of the state it was offloaded in (a FIN) or a PPTP call ends (CDN, control connection
//! gone), the flow is unmarked and a withdrawal queued ([`Offload::withdraw_queued`]); the
//! control plane deletes the entries from its own thread ([`Offload::pop_withdrawal`]).
//! The fast path never forwards SYN, FIN or RST, so the few milliseconds until then cannot
//! hide a state change from the engine.

use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam::queue::ArrayQueue;

use super::tcp::TcpState;
use super::{status, Flow, L4State};
use crate::counters::SharedCounter;
use crate::wire::proto;

/// What the engine needs from a fast path. Implementations must be quick and must not call
/// back into the flow table (they run with a slot locked).
pub trait FastPath: Send + Sync {
    /// Folds what the fast path counted for `flow` since the last call (packets, bytes, last
    /// seen) into it.
    fn refresh(&self, flow: &mut Flow);
    /// Removes the fast path's entries for `flow`, folding in their final counts. After it
    /// returns, the fast path forwards nothing more for the flow.
    fn withdraw(&self, flow: &mut Flow);
}

/// An offload request: the flow's slot and id (the slot may be reused by then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Slot of the flow.
    pub slot: u32,
    /// Its id.
    pub id: u64,
}

crate::counter_family! {
    /// Offload counters.
    pub struct OffloadQueueStats: SharedCounter {
        /// Requests queued.
        requested,
        /// Requests lost because the queue was full (the flow asks again with a later packet).
        queue_full,
        /// Flows taken back (teardown, state change).
        withdrawn,
        /// Withdrawals the packet path queued for the control plane.
        withdraw_queued,
        /// Withdrawals that found their queue full (the control plane's periodic sync finds the
        /// unmarked flow's entries within a second).
        withdraw_queue_full,
    }
}

/// The table's side of offloading: the switch, the request queue and the fast path.
pub struct Offload {
    enabled: AtomicBool,
    requests: ArrayQueue<Request>,
    withdrawals: ArrayQueue<Request>,
    fast: OnceLock<Arc<dyn FastPath>>,
    /// Counters.
    pub stats: OffloadQueueStats,
}

impl core::fmt::Debug for Offload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Offload").field("enabled", &self.enabled()).field("pending", &self.requests.len()).finish()
    }
}

impl Offload {
    pub(super) fn new(queue: usize) -> Offload {
        Offload {
            enabled: AtomicBool::new(false),
            requests: ArrayQueue::new(queue.max(1)),
            withdrawals: ArrayQueue::new(queue.max(1)),
            fast: OnceLock::new(),
            stats: OffloadQueueStats::default(),
        }
    }

    /// Connects the fast path and starts offloading. Only the first call connects.
    pub fn connect(&self, fast: Arc<dyn FastPath>) {
        let _ = self.fast.set(fast);
        self.enabled.store(true, Ordering::Release);
    }

    /// True when flows are being offloaded.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Takes the oldest request (control plane).
    pub fn pop(&self) -> Option<Request> {
        self.requests.pop()
    }

    /// Takes the oldest withdrawal the packet path queued (control plane): the fast path's
    /// entries of flow `id` are to go; the flow in `slot`, if still that one, is no longer
    /// marked.
    pub fn pop_withdrawal(&self) -> Option<Request> {
        self.withdrawals.pop()
    }

    /// Takes an offloaded flow back without calling the fast path (the packet path):
    /// unmarks it and queues the withdrawal. Called with the slot locked.
    #[inline]
    pub fn withdraw_queued(&self, slot: u32, flow: &mut Flow) {
        if flow.status & status::OFFLOAD == 0 {
            return;
        }
        flow.status &= !status::OFFLOAD;
        self.stats.withdrawn.inc();
        if self.withdrawals.push(Request { slot, id: flow.id }).is_ok() {
            self.stats.withdraw_queued.inc();
        } else {
            self.stats.withdraw_queue_full.inc();
        }
    }

    /// Marks `flow` (in `slot`) and queues it, if offloading is on and the flow qualifies
    /// and is not marked yet. Called with the slot locked, for every packet of a flow that is
    /// not offloaded: inlined, so that the common answer (no) costs a few instructions.
    #[inline(always)]
    pub fn consider(&self, slot: u32, flow: &mut Flow) {
        if flow.status & status::OFFLOAD != 0 || !self.enabled() || !eligible(flow) {
            return;
        }
        self.request(slot, flow);
    }

    /// Queues the offer of an eligible flow (out of line: once in a flow's life).
    fn request(&self, slot: u32, flow: &mut Flow) {
        if self.requests.push(Request { slot, id: flow.id }).is_ok() {
            flow.status |= status::OFFLOAD;
            self.stats.requested.inc();
        } else {
            self.stats.queue_full.inc();
        }
    }

    /// Folds the fast path's counts into an offloaded flow. Called with the slot locked.
    pub fn refresh(&self, flow: &mut Flow) {
        if flow.status & status::OFFLOAD != 0 {
            if let Some(f) = self.fast.get() {
                f.refresh(flow);
            }
        }
    }

    /// Takes an offloaded flow back from the fast path. Called with the slot locked.
    pub fn withdraw(&self, flow: &mut Flow) {
        if flow.status & status::OFFLOAD != 0 {
            if let Some(f) = self.fast.get() {
                f.withdraw(flow);
            }
            flow.status &= !status::OFFLOAD;
            self.stats.withdrawn.inc();
        }
    }
}

/// True when the fast path can carry `flow` without the engine: its next packets change no
/// state but counters and last-seen time. TCP once established and assured (SYN, FIN and
/// RST are never offloaded, so the state machine sees every transition), UDP once assured
/// (IKE, NAT-T and L2TP included), and a PPTP call's GRE once both ends have sent. Never
/// a PPTP control connection (the inspector reads every byte), ICMP, ESP or address-pair
/// GRE.
#[inline]
pub fn eligible(f: &Flow) -> bool {
    if f.status & status::ALG_PPTP != 0 {
        return false;
    }
    match (f.proto(), f.l4) {
        (proto::TCP, L4State::Tcp(TcpState::Established)) => f.assured(),
        (proto::UDP, L4State::Udp) => f.assured(),
        (proto::GRE, L4State::Other) => f.keys[0].sport == crate::wire::gre::GRE_V1 && f.seen_reply(),
        _ => false,
    }
}
