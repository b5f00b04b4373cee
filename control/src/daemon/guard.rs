//! The new-flow guard's userspace half (`xgw_ebpf_common::GuardKey`): the thread
//! `xgw-guard` takes the engine's notices of refused SYN senders and forwarded ports (woken
//! by the first one) and writes each, with its deadline, into every attached XDP program's `GUARD` map; before a
//! hold ends it asks the engine whether the host is still at its limit and, if so, renews
//! the hold ([`Holds`]), so a flood that lasts stays in XDP instead of reaching the engine
//! again every hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use xgw_dataplane::engine::GuardNotice;
use xgw_dataplane::Shared;
use xgw_ebpf_common::{guard::HOLD_NS, GuardKey};

use super::xdp::Attached;

/// How often the holds are looked at (a notice wakes the thread at once).
const PERIOD: Duration = Duration::from_millis(5);

/// A hold this close to its end is renewed (or let go): four periods, so a late wake-up
/// of the thread still renews in time.
const RENEW_AHEAD_NS: u64 = 4 * 5_000_000;

/// Most holds followed for renewal (the `GUARD` map's size); a refusal beyond them is
/// still held, once.
const MAX_HOLDS: usize = 4096;

/// The holds in force: each side, the inside host whose limit refused it, and its deadline
/// (`CLOCK_MONOTONIC` ns).
#[derive(Debug, Default)]
pub(crate) struct Holds {
    held: HashMap<GuardKey, (u32, u64)>,
}

impl Holds {
    /// A new refusal at `now`: holds its side for [`HOLD_NS`]; returns the deadline to write.
    /// An unsolicited-SYN hold (`guard::UNSOLICITED`) is not followed: no host's limit says
    /// when it should end, so it runs out and the next unsolicited SYN renews it.
    pub(crate) fn hold(&mut self, n: GuardNotice, now: u64) -> u64 {
        let until = now + HOLD_NS;
        if n.key.side == xgw_ebpf_common::guard::UNSOLICITED {
            return until;
        }
        if self.held.len() < MAX_HOLDS || self.held.contains_key(&n.key) {
            self.held.insert(n.key, (n.host, until));
        }
        until
    }

    /// The holds ending within [`RENEW_AHEAD_NS`] of `now`: renewed for another
    /// [`HOLD_NS`] while `refused(host)` says the host is still at its limit (returned with
    /// their new deadlines, to write), forgotten otherwise (their map entries run out and
    /// the next SYN reaches the engine, which decides afresh).
    pub(crate) fn renew(&mut self, now: u64, refused: impl Fn(u32) -> bool) -> Vec<(GuardKey, u64)> {
        let mut out = Vec::new();
        self.held.retain(|k, (host, until)| {
            if *until > now + RENEW_AHEAD_NS {
                return true;
            }
            if *until > now && refused(*host) {
                *until = now + HOLD_NS;
                out.push((*k, *until));
                return true;
            }
            false
        });
        out
    }

    /// Holds followed.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

/// Starts `xgw-guard` and tells the engine to queue its refusals.
pub(super) fn start_guard(
    shared: &Arc<Shared>,
    attached: &mut [Attached],
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let mut maps: Vec<BpfHashMap<MapData, GuardKey, u64>> = Vec::new();
    for a in attached.iter_mut() {
        let m = a.bpf.take_map("GUARD").ok_or_else(|| anyhow!("no GUARD map"))?;
        maps.push(BpfHashMap::try_from(m)?);
    }
    let (sh, st) = (Arc::clone(shared), Arc::clone(stop));
    let t = std::thread::Builder::new().name("xgw-guard".into()).spawn(move || run(&sh, &mut maps, &st))?;
    shared.guard.connect_thread(t.thread().clone());
    Ok(t)
}

fn run(shared: &Shared, maps: &mut [BpfHashMap<MapData, GuardKey, u64>], stop: &AtomicBool) {
    let mut failed = false;
    let mut holds = Holds::default();
    let mut write = |k: GuardKey, until: u64| {
        for m in maps.iter_mut() {
            if let Err(e) = m.insert(k, until, 0) {
                if !failed {
                    tracing::warn!("new-flow guard: writing the XDP map failed: {e}");
                    failed = true;
                }
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let now = crate::offload::monotonic_ns();
        while let Some(n) = shared.guard.pop() {
            write(n.key, holds.hold(n, now));
            let k = n.key;
            tracing::debug!(addr = %std::net::Ipv4Addr::from(k.addr), port = k.port, side = k.side, "new-flow guard holds SYNs");
        }
        if holds.len() > 0 {
            for (k, until) in holds.renew(now, |h| shared.refuses_syns_of(h)) {
                write(k, until);
            }
        }
        // a notice into the empty queue wakes the thread at once
        std::thread::park_timeout(PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xgw_ebpf_common::guard;

    const MS: u64 = 1_000_000;

    fn notice(host: u32) -> GuardNotice {
        GuardNotice { key: GuardKey { addr: host, port: 0, side: guard::INSIDE_SOURCE, pad: 0 }, host }
    }

    /// Each row: a hold made at 0, looked at `at` ms later with the host still refused or
    /// not: is it renewed (to at + HOLD), kept as it is, or forgotten?
    #[test]
    fn a_hold_is_renewed_while_the_host_is_refused_and_forgotten_after() {
        let hold = HOLD_NS / MS;
        let ahead = RENEW_AHEAD_NS / MS;
        #[derive(Debug, PartialEq)]
        enum Then {
            Renewed,
            Kept,
            Forgotten,
        }
        let rows = [
            (0, true, Then::Kept),
            (hold - ahead - 1, true, Then::Kept),
            (hold - ahead - 1, false, Then::Kept),
            (hold - ahead, true, Then::Renewed),
            (hold - 1, true, Then::Renewed),
            (hold - ahead, false, Then::Forgotten),
            (hold - 1, false, Then::Forgotten),
            // the thread woke too late: the entry has run out, the engine decides again
            (hold, true, Then::Forgotten),
            (hold + 50, true, Then::Forgotten),
        ];
        for (at, refused, then) in rows {
            let mut h = Holds::default();
            assert_eq!(h.hold(notice(7), 0), HOLD_NS);
            let out = h.renew(at * MS, |host| {
                assert_eq!(host, 7);
                refused
            });
            let got = match (out.as_slice(), h.len()) {
                ([(_, until)], 1) => {
                    assert_eq!(*until, at * MS + HOLD_NS, "row at {at} ms");
                    Then::Renewed
                }
                ([], 1) => Then::Kept,
                ([], 0) => Then::Forgotten,
                _ => panic!("row at {at} ms: {out:?}, {} holds", h.len()),
            };
            assert_eq!(got, then, "row at {at} ms, refused {refused}");
        }
    }

    #[test]
    fn a_forwarded_port_is_renewed_by_its_inside_hosts_limit() {
        let key = GuardKey { addr: 0xc000_0201, port: 8080, side: guard::FORWARDED_PORT, pad: 0 };
        let mut h = Holds::default();
        h.hold(GuardNotice { key, host: 0x0a00_0032 }, 0);
        let out = h.renew(HOLD_NS - MS, |host| host == 0x0a00_0032);
        assert_eq!(out, vec![(key, HOLD_NS - MS + HOLD_NS)]);
        // renewed again and again while the flood lasts
        let out = h.renew(2 * HOLD_NS - 2 * MS, |host| host == 0x0a00_0032);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn an_unsolicited_hold_is_written_once_and_not_followed() {
        let mut h = Holds::default();
        let key = GuardKey { addr: 0xc000_0201, port: 0, side: guard::UNSOLICITED, pad: 0 };
        assert_eq!(h.hold(GuardNotice { key, host: 0 }, 7), 7 + HOLD_NS);
        assert_eq!(h.len(), 0);
        assert_eq!(h.renew(HOLD_NS - MS, |_| true), vec![]);
    }

    #[test]
    fn holds_beyond_the_maps_size_are_held_once_not_followed() {
        let mut h = Holds::default();
        for host in 0..MAX_HOLDS as u32 + 10 {
            assert_eq!(h.hold(notice(host), 0), HOLD_NS);
        }
        assert_eq!(h.len(), MAX_HOLDS);
        // a followed one refused again: its deadline moves, it is not added twice
        h.hold(notice(0), 5 * MS);
        assert_eq!(h.len(), MAX_HOLDS);
    }
}
