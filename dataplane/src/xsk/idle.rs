//! What a worker does after a round that received nothing: look again at once, yield the
//! core, or sleep in `poll()` until a socket has frames.
//!
//! Frames left in a TX ring — the kernel refused them because the egress device was full
//! (a veth whose peer has not drained its ring, a NIC whose ring waits for completions) —
//! are sent only when the worker kicks again, and `poll()` waking on received frames does
//! not kick. A worker that slept with such frames held them until the next received frame
//! woke it: under a steady load that was the next burst (measured: a UDP round trip's p99
//! 1.5–1.8 ms instead of ~0.5 ms, bench/README session 21); on a quiet link up to the whole
//! sleep. So while a TX ring holds unsent frames the worker yields (the device's receiving
//! side may run on this very core) and kicks again, and sleeps only briefly.

use std::time::Duration;

/// Rounds a worker looks again at once before it sleeps.
pub(super) const SPIN_ROUNDS: u32 = 64;

/// Rounds a worker yields and kicks while a TX ring holds frames the kernel has not taken,
/// before it sleeps (briefly) between kicks.
pub(super) const UNSENT_YIELDS: u32 = 1024;

/// The sleep when nothing waits in the worker.
pub(super) const NAP: Duration = Duration::from_millis(10);

/// The sleep while frames wait: unsent in a TX ring, or for a next hop.
pub(super) const SHORT_NAP: Duration = Duration::from_millis(1);

/// The worker's next step after a round without received frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Idle {
    /// Look again at once.
    Spin,
    /// Give the core to whatever else is runnable, then kick and look again.
    Yield,
    /// Sleep in `poll()` for at most this long.
    Sleep(Duration),
}

/// The next step after `rounds` rounds in a row without received frames; `unsent`: some
/// TX ring holds frames the kernel has not taken; `waiting`: frames wait for a next hop.
pub(super) fn next_step(rounds: u32, unsent: bool, waiting: bool) -> Idle {
    if unsent && rounds <= UNSENT_YIELDS {
        Idle::Yield
    } else if rounds <= SPIN_ROUNDS {
        Idle::Spin
    } else if unsent || waiting {
        Idle::Sleep(SHORT_NAP)
    } else {
        Idle::Sleep(NAP)
    }
}

#[cfg(test)]
mod tests {
    use super::{next_step, Idle, NAP, SHORT_NAP, SPIN_ROUNDS, UNSENT_YIELDS};

    #[test]
    fn a_worker_sleeps_long_only_when_no_frame_waits_in_it() {
        // (rounds without received frames, TX frames unsent, frames waiting for a next hop, step)
        let table = [
            (1, false, false, Idle::Spin),
            (SPIN_ROUNDS, false, false, Idle::Spin),
            (SPIN_ROUNDS + 1, false, false, Idle::Sleep(NAP)),
            (SPIN_ROUNDS + 1, false, true, Idle::Sleep(SHORT_NAP)),
            (1, false, true, Idle::Spin),
            // refused frames in a TX ring: yield and kick, never the long sleep
            (1, true, false, Idle::Yield),
            (SPIN_ROUNDS + 1, true, false, Idle::Yield),
            (UNSENT_YIELDS, true, true, Idle::Yield),
            (UNSENT_YIELDS + 1, true, false, Idle::Sleep(SHORT_NAP)),
            (u32::MAX, true, false, Idle::Sleep(SHORT_NAP)),
            (u32::MAX, false, false, Idle::Sleep(NAP)),
        ];
        for (rounds, unsent, waiting, want) in table {
            assert_eq!(next_step(rounds, unsent, waiting), want, "rounds {rounds}, unsent {unsent}, waiting {waiting}");
        }
    }
}
