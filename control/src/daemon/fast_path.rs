//! The XDP fast path's userspace half at start-up: which interfaces take its redirects
//! (asked of the kernel, then followed by `xgw-egress`), and the thread that installs
//! offered flows into the XDP maps (`xgw-offload`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap};
use xgw_dataplane::{EngineConfig, Shared};

use super::settings::{Mode, Settings};
use super::xdp::{ifindex, Attached};
use crate::egress::EgressGuard;
use crate::offload::XdpOffload;

/// The fast path's parts, when it is on.
pub(super) struct FastPath {
    pub(super) egress: Option<Arc<EgressGuard>>,
    pub(super) egress_thread: Option<JoinHandle<()>>,
    pub(super) offload: Option<Arc<XdpOffload>>,
    pub(super) offload_thread: Option<JoinHandle<()>>,
}

/// Starts the fast path's threads (nothing when `--offload off`).
pub(super) fn start_fast_path(
    cfg: &EngineConfig,
    args: &Settings,
    shared: &Arc<Shared>,
    attached: &mut [Attached],
    neigh: &Arc<crate::neigh::KernelNeighbours>,
    stop: &Arc<AtomicBool>,
    mono_base: u64,
) -> Result<FastPath> {
    let mut offload_thread = None;
    let mut egress_thread = None;
    // which interfaces take the fast path's redirects: asked of the kernel before the first
    // flow is offloaded, then every 200 ms in the control loop
    let egress = if args.offload {
        let mut native_ok = Vec::new();
        for a in attached.iter_mut() {
            let m = a.bpf.take_map("EGRESS_OK").ok_or_else(|| anyhow!("no EGRESS_OK map"))?;
            let mut ok: Array<_, u32> = Array::try_from(m)?;
            if a.mode == Mode::Skb {
                // generic XDP redirects through the normal transmit path: every device takes it
                for i in 0..cfg.ifaces.len() {
                    ok.set(i as u32, 1, 0)?;
                }
            } else {
                native_ok.push(ok);
            }
        }
        let devices =
            cfg.ifaces.iter().map(|i| Ok((i.device.clone(), ifindex(&i.device)?))).collect::<Result<Vec<_>>>()?;
        let g = Arc::new(EgressGuard::new(devices, native_ok).context("asking the kernel for XDP features")?);
        g.check();
        let (g2, st) = (Arc::clone(&g), Arc::clone(stop));
        egress_thread = Some(std::thread::Builder::new().name("xgw-egress".into()).spawn(move || g2.watch(st))?);
        Some(g)
    } else {
        None
    };
    let offload = if args.offload {
        let mut maps = Vec::new();
        for a in attached.iter_mut() {
            let m = a.bpf.take_map("FLOWS").ok_or_else(|| anyhow!("no FLOWS map"))?;
            maps.push(BpfHashMap::try_from(m)?);
        }
        let o = Arc::new(XdpOffload::new(maps, neigh.clone(), mono_base));
        shared.flows.offload.connect(o.clone());
        let (o2, sh, st) = (Arc::clone(&o), Arc::clone(shared), Arc::clone(stop));
        offload_thread = Some(std::thread::Builder::new().name("xgw-offload".into()).spawn(move || o2.run(sh, st))?);
        tracing::info!(entries = args.offload_entries, "XDP fast path on");
        Some(o)
    } else {
        tracing::info!("XDP fast path off: every packet goes through the engine");
        None
    };
    Ok(FastPath { egress, egress_thread, offload, offload_thread })
}
