//! The AF_XDP workers: one per receive-queue index, owning that queue's socket on every
//! interface, pinned to a core; and their accounting when they stop.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use aya::maps::XskMap;
use xgw_dataplane::xsk::{Port, PortConfig, PortStats, Worker, WorkerStats};
use xgw_dataplane::{Counters, Engine, EngineConfig, IfaceId, Shared};

use super::preflight::os_random;
use super::settings::{Mode, Settings};
use super::xdp::Attached;

/// The running workers and what the control plane reads of them.
pub(super) struct Workers {
    /// The threads; each returns its ports when it stops.
    pub(super) threads: Vec<JoinHandle<Vec<Port>>>,
    /// Every socket's counters: device, queue, counters.
    pub(super) ports: Vec<(String, u32, Arc<PortStats>)>,
    /// Every worker's engine counters.
    pub(super) counters: Vec<Arc<Counters>>,
    /// Every worker's own counters.
    pub(super) stats: Vec<Arc<WorkerStats>>,
}

/// Opens the sockets (their fds into each interface's XSKMAP) and starts the workers.
#[expect(clippy::too_many_arguments, reason = "the pieces of the gateway a worker is made of, each named")]
pub(super) fn start_workers(
    cfg: &EngineConfig,
    args: &Settings,
    shared: &Arc<Shared>,
    attached: &mut [Attached],
    queues: &[u32],
    neigh: &Arc<crate::neigh::KernelNeighbours>,
    stop: &Arc<AtomicBool>,
    base: Instant,
) -> Result<Workers> {
    let max_q = queues.iter().copied().max().unwrap_or(1);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut workers = Vec::new();
    let mut port_stats = Vec::new();
    let mut worker_counters = Vec::new();
    let mut worker_stats = Vec::new();
    for q in 0..max_q {
        let mut ports = Vec::new();
        for (i, ifc) in cfg.ifaces.iter().enumerate() {
            if q >= queues[i] {
                continue;
            }
            let port = Port::open(&PortConfig {
                iface: IfaceId(i as u8),
                device: ifc.device.clone(),
                queue: q,
                frames: args.frames,
                zero_copy: attached[i].mode == Mode::Native,
            })?;
            let mut xsks = XskMap::try_from(attached[i].bpf.map_mut("XSKS").ok_or_else(|| anyhow!("no XSKS map"))?)?;
            xsks.set(q, port.raw_fd(), 0).with_context(|| format!("XSKMAP of `{}` queue {q}", ifc.device))?;
            port_stats.push((ifc.device.clone(), q, Arc::clone(&port.stats)));
            ports.push(port);
        }
        let mut engine = Engine::new(Arc::clone(shared));
        engine.seed(os_random() ^ q);
        worker_counters.push(Arc::clone(engine.counters()));
        let worker = Worker::new(engine, ports, neigh.clone(), Arc::clone(stop), base);
        worker_stats.push(Arc::clone(&worker.stats));
        let core = cores.get(q as usize % cores.len().max(1)).copied();
        workers.push(std::thread::Builder::new().name(format!("xgw-worker-{q}")).spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(c);
            }
            worker.run()
        })?);
    }
    Ok(Workers { threads: workers, ports: port_stats, counters: worker_counters, stats: worker_stats })
}

/// Waits for the workers and logs whether every UMEM frame came back.
pub(super) fn join_workers(workers: Vec<JoinHandle<Vec<Port>>>) -> Result<()> {
    for w in workers {
        let ports = w.join().map_err(|_| anyhow!("a worker panicked"))?;
        for p in &ports {
            let ((fill, rx_total), (tx, tx_total)) = p.frames_accounted();
            if fill != rx_total || tx != tx_total {
                tracing::warn!(device = %p.device, queue = p.queue, fill, rx_total, tx, tx_total, "UMEM frames unaccounted for");
            } else {
                tracing::info!(device = %p.device, queue = p.queue, frames = rx_total + tx_total, "all UMEM frames accounted for");
            }
        }
    }
    Ok(())
}
