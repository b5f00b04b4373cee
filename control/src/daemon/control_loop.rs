//! The control loop: sweeps expired flows, re-checks which egresses take redirects, warns
//! about the kernel's drops in front of the sockets, reloads on SIGHUP, logs the counters
//! now and then, until SIGTERM or SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use xgw_dataplane::xsk::PortStats;
use xgw_dataplane::{Shared, Time};

use super::reload;
use super::settings::Settings;
use crate::egress::EgressGuard;

/// How often the loop runs: each round sweeps a small slice of the flow table.
pub(super) const TICK: Duration = Duration::from_millis(5);

/// Flow slots one round sweeps: the whole table once a second, in slices small enough that
/// a round holds the CPU for tens of microseconds. This loop shares its core with the receive
/// processing: a twentieth of the table every 50 ms (13 k slots, about a millisecond) was
/// long enough for a packet waiting for that core to wait for the round.
pub(super) fn sweep_budget(max_flows: usize) -> usize {
    let rounds_a_second = (Duration::from_secs(1).as_micros() / TICK.as_micros()) as usize;
    max_flows.div_ceil(rounds_a_second).max(256)
}

/// Runs until SIGTERM or SIGINT; `budget` flow slots are swept per round.
pub(super) fn control_loop(
    args: &Settings,
    shared: &Shared,
    egress: Option<&EgressGuard>,
    port_stats: &[(String, u32, Arc<PortStats>)],
    budget: usize,
    base: Instant,
) -> Result<()> {
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&term))?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
    let mut last_neigh = Instant::now();
    let mut last_stats = Instant::now();
    // the kernel's drops in front of each AF_XDP socket, as last reported in the log
    let mut xsk_dropped_told: Vec<u64> = vec![0; port_stats.len()];
    let mut last_xsk_warning = Instant::now() - Duration::from_secs(60);
    while !term.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Time(u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX));
        shared.sweep(now, budget);
        if last_neigh.elapsed() >= Duration::from_millis(200) {
            if let Some(g) = &egress {
                g.check();
            }
            if last_xsk_warning.elapsed() >= Duration::from_secs(10) {
                for ((dev, q, st), told) in port_stats.iter().zip(xsk_dropped_told.iter_mut()) {
                    let now_dropped = st.xsk_rx_dropped.get();
                    if now_dropped > *told {
                        tracing::warn!(
                            device = %dev, queue = q, dropped = now_dropped - *told,
                            "the kernel dropped frames in front of the AF_XDP socket: larger than a UMEM frame \
                             (a neighbour's GSO super-frames reach generic-mode XDP: use native mode, or turn \
                             GRO/LRO off on this interface) or no free receive buffer"
                        );
                        *told = now_dropped;
                        last_xsk_warning = Instant::now();
                    }
                }
            }
            last_neigh = Instant::now();
        }
        if hup.swap(false, Ordering::Relaxed) {
            if let Err(e) = reload::reload(shared, &args.rules, false, base) {
                tracing::error!("reload {e}");
            }
        }
        if args.stats_every > 0 && last_stats.elapsed() >= Duration::from_secs(args.stats_every) {
            last_stats = Instant::now();
            for (dev, q, s) in port_stats {
                tracing::info!(device = %dev, queue = q, rx = s.rx.get(), tx = s.tx.get(), waited = s.tx_neigh_waited.get(), no_neighbour = s.tx_no_neighbour.get(), "port");
            }
            tracing::info!(flows = shared.flows.len(), "conntrack");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_rounds_sweeps_the_whole_table_in_small_slices() {
        let rounds = (Duration::from_secs(1).as_nanos() / TICK.as_nanos()) as usize;
        // (table size, slots a round)
        for (max_flows, slice) in [(262_144, 1_311), (1 << 20, 5_243), (1_000, 256), (1, 256)] {
            let b = sweep_budget(max_flows);
            assert_eq!(b, slice, "{max_flows} flows");
            assert!(b * rounds >= max_flows, "{max_flows} flows: a second covers the table");
        }
    }
}
