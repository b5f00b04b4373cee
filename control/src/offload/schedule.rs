//! When the fast path's thread works: the counter sync rounds' period, chunks and pauses,
//! the next-hop checks between rounds, and the idle thread's poll interval.

use std::time::Duration;

use xgw_dataplane::config::Timeouts;

/// Installed flows a sync round folds in between two pauses (each with its slot locked):
/// a round cost about 2.5 µs a flow (its batch reads included) in a scheduler trace with
/// 16 k flows, so a chunk's share is tens of microseconds (not measured step by step).
pub(super) const SYNC_CHUNK: usize = 32;

/// The pause between two steps of a sync round (a batch read of a map, or a chunk of flows).
pub(super) const SYNC_PAUSE: Duration = Duration::from_micros(250);

/// The longest time between two counter sync rounds. A round costs about 2.6 µs of the
/// gateway core per installed flow (43 ms a second with 16 k flows and a round a second,
/// measured from the thread's CPU time in the latency lab), and nothing waits for it: the
/// sweep refreshes a flow before it expires it, a listing syncs first
/// ([`super::XdpOffload::sync`]), the HA sync tells a flow's idle timer only when it moved by an
/// eighth of its timeout. [`sync_period`] picks a shorter one for short timeouts.
pub(super) const SYNC_EVERY_MAX: Duration = Duration::from_secs(5);

/// The idle thread's first poll interval after it had work (offers, withdrawals), and the
/// longest it backs off to while nothing comes: each wake-up costs the gateway core tens of
/// microseconds on a VM, 500 a second were a quarter of this thread's time with 16 k flows,
/// and a new flow waits for its first install at most the longer interval.
pub(super) const IDLE_POLL: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(16));

/// How often, at most, the installed flows' next hops are checked again after the
/// neighbour tables changed (between counter rounds, which check them too).
pub(super) const MAC_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The time between two counter sync rounds: an eighth of the shortest timeout an
/// offloaded flow can have (established TCP, UDP stream, PPTP GRE), between 1 s and
/// [`SYNC_EVERY_MAX`]. A flow's last-seen time in the table is then never older than an
/// eighth of its timeout (plus a round's length), as the HA sync assumes.
pub fn sync_period(t: &Timeouts) -> Duration {
    let shortest = t.tcp_established.min(t.udp_stream).min(t.pptp_gre);
    (shortest / 8).clamp(Duration::from_secs(1), SYNC_EVERY_MAX)
}

/// A sync round's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Round {
    /// Waiting for the next round.
    Idle,
    /// Reading the maps, one batch per step: this interface's next.
    Reading(usize),
    /// Folding the snapshot into the flows, a chunk per step: from this installed flow on.
    Folding(usize),
    /// Checking the installed flows' next hops only (the neighbour tables changed), a chunk
    /// per step: from this installed flow on.
    Checking(usize),
}

/// What an idle sync thread starts now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Nothing yet.
    Nothing,
    /// A counter round (which checks the next hops too).
    Counters,
    /// A pass that checks the next hops only.
    Macs,
}

/// The idle thread's next poll interval: back to the shortest after work, twice the last
/// (up to the longest) after none.
pub(super) fn next_poll(last: Duration, worked: bool) -> Duration {
    if worked {
        IDLE_POLL.0
    } else {
        (last * 2).min(IDLE_POLL.1)
    }
}

/// The idle thread's choice: a counter round once `since_round` reaches `period`; else a
/// next-hop check when the neighbour tables changed since the last check and the last one
/// (or round) is at least [`MAC_CHECK_EVERY`] old.
pub(super) fn start(since_round: Duration, since_check: Duration, neighbours_moved: bool, period: Duration) -> Start {
    if since_round >= period {
        Start::Counters
    } else if neighbours_moved && since_check >= MAC_CHECK_EVERY {
        Start::Macs
    } else {
        Start::Nothing
    }
}
