//! The new-flow guard's userspace half (`xgw_ebpf_common::GuardKey`): the thread
//! `xgw-guard` takes the engine's notices of refused SYN senders and forwarded ports and
//! writes each, with its deadline, into every attached XDP program's `GUARD` map.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use xgw_dataplane::Shared;
use xgw_ebpf_common::{guard::HOLD_NS, GuardKey};

use super::xdp::Attached;

/// How often the notices are collected.
const PERIOD: Duration = Duration::from_millis(5);

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
    shared.guard.connect();
    let (sh, st) = (Arc::clone(shared), Arc::clone(stop));
    Ok(std::thread::Builder::new().name("xgw-guard".into()).spawn(move || run(&sh, &mut maps, &st))?)
}

fn run(shared: &Shared, maps: &mut [BpfHashMap<MapData, GuardKey, u64>], stop: &AtomicBool) {
    let mut failed = false;
    while !stop.load(Ordering::Relaxed) {
        while let Some(k) = shared.guard.pop() {
            let until = crate::offload::monotonic_ns() + HOLD_NS;
            for m in maps.iter_mut() {
                if let Err(e) = m.insert(k, until, 0) {
                    if !failed {
                        tracing::warn!("new-flow guard: writing the XDP map failed: {e}");
                        failed = true;
                    }
                }
            }
            tracing::debug!(addr = %std::net::Ipv4Addr::from(k.addr), port = k.port, side = k.side, "new-flow guard holds SYNs");
        }
        std::thread::sleep(PERIOD);
    }
}
