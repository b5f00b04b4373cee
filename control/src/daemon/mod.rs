//! `xgwd run`: the gateway. Loads the rules, loads and attaches the XDP program on every
//! interface (one instance each, with its own XSKMAP), opens one AF_XDP socket per receive
//! queue per interface with libxdp's program loading inhibited, puts their fds into xgw's
//! XSKMAPs, and runs one worker per queue index (pinned to a core). The control thread
//! sweeps expired flows, keeps next hops current, reloads on SIGHUP and stops on
//! SIGTERM/SIGINT, detaching XDP cleanly (bpf_link attachments also go away by themselves
//! if the process dies).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, PerCpuArray, XskMap};
use xgw_dataplane::xsk::{Port, PortConfig, Worker};
use xgw_dataplane::{Engine, IfaceId, Shared, Time};
use xgw_ebpf_common::{class, declined, steer, HostService};

use crate::egress::EgressGuard;
use crate::offload::XdpOffload;
use xgw_rules::file::{compile_file, CheckError};

mod preflight;
mod settings;
mod xdp;

use preflight::*;
pub use settings::{Mode, RunArgs, Settings, SettingsFile, Switch};
#[cfg(feature = "bench-xdp")]
pub use xdp::xdp_bench_object;
use xdp::*;
pub use xdp::{xdp_config, xdp_object};

/// Runs the gateway until SIGTERM or SIGINT.
pub fn run(args: &RunArgs, asa_log: bool) -> Result<()> {
    let args = &Settings::resolve(args)?;
    let compiled = match compile_file(&args.rules) {
        Ok(c) => c,
        Err(CheckError::Read(e)) => bail!("cannot read rules file: {e}"),
        Err(CheckError::Invalid(d)) => bail!("rules file refused:\n{}", xgw_rules::diag::render_all(&d)),
    };
    for w in &compiled.warnings {
        tracing::warn!("{}", w.render());
    }
    let mut cfg = compiled.engine.clone();
    for s in &args.host_services {
        cfg.host_services.push(parse_service(s)?);
    }
    preflight(&cfg)?;
    let shared = Arc::new(Shared::new(cfg.clone()).map_err(anyhow::Error::msg)?);
    shared.asa_log.store(asa_log, Ordering::Relaxed);
    shared.set_policy(Box::new(compiled.acl));
    shared.pptp.seed(os_random());

    let services: Vec<HostService> = cfg
        .host_services
        .iter()
        .map(|&(proto, port)| HostService { proto: u32::from(proto), port: u32::from(port) })
        .collect();
    let mut attached = attach(&cfg, args, &services)?;
    let mut offload_thread = None;
    let mut egress_thread = None;
    let mut class_maps: Vec<(String, ClassMap, ClassMap, ClassMap)> = Vec::new();
    for a in &mut attached {
        let c = a.bpf.take_map("CLASS_STATS").ok_or_else(|| anyhow!("no CLASS_STATS map"))?;
        let s = a.bpf.take_map("STEER_STATS").ok_or_else(|| anyhow!("no STEER_STATS map"))?;
        let x = a.bpf.take_map("FAST_DECLINED").ok_or_else(|| anyhow!("no FAST_DECLINED map"))?;
        class_maps.push((
            a.device.clone(),
            PerCpuArray::try_from(c)?,
            PerCpuArray::try_from(s)?,
            PerCpuArray::try_from(x)?,
        ));
    }
    let class_maps = Arc::new(std::sync::Mutex::new(class_maps));

    // one worker per queue index, owning that queue's socket on every interface
    let queues = cfg.ifaces.iter().map(|i| rx_queues(&i.device)).collect::<Result<Vec<_>>>()?;
    let max_q = queues.iter().copied().max().unwrap_or(1);
    let stop = Arc::new(AtomicBool::new(false));
    let base = Instant::now();
    let mono_base = crate::offload::monotonic_ns();
    // routes and neighbours from the kernel, followed through rtnetlink notifications, and
    // with `address auto` the outside address too
    let follow = outside_follower(&cfg, &mut attached, Arc::clone(&shared), base)?;
    let (neigh, netlink_thread) =
        crate::netlink::start(cfg.ifaces.iter().map(|i| i.device.clone()).collect(), Arc::clone(&stop), follow)?;
    // which interfaces take the fast path's redirects: asked of the kernel before the first
    // flow is offloaded, then every 200 ms in the control loop
    let egress = if args.offload {
        let mut native_ok = Vec::new();
        for a in &mut attached {
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
        let (g2, st) = (Arc::clone(&g), Arc::clone(&stop));
        egress_thread = Some(std::thread::Builder::new().name("xgw-egress".into()).spawn(move || g2.watch(st))?);
        Some(g)
    } else {
        None
    };
    let offload = if args.offload {
        let mut maps = Vec::new();
        for a in &mut attached {
            let m = a.bpf.take_map("FLOWS").ok_or_else(|| anyhow!("no FLOWS map"))?;
            maps.push(BpfHashMap::try_from(m)?);
        }
        let o = Arc::new(XdpOffload::new(maps, neigh.clone(), mono_base));
        shared.flows.offload.connect(o.clone());
        let (o2, sh, st) = (Arc::clone(&o), Arc::clone(&shared), Arc::clone(&stop));
        offload_thread = Some(
            std::thread::Builder::new()
                .name("xgw-offload".into())
                .spawn(move || o2.run(sh, st, Duration::from_secs(1)))?,
        );
        tracing::info!(entries = args.offload_entries, "XDP fast path on");
        Some(o)
    } else {
        tracing::info!("XDP fast path off: every packet goes through the engine");
        None
    };
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
        let mut engine = Engine::new(Arc::clone(&shared));
        engine.seed(os_random() ^ q);
        worker_counters.push(Arc::clone(engine.counters()));
        let worker = Worker::new(engine, ports, neigh.clone(), Arc::clone(&stop), base);
        worker_stats.push(Arc::clone(&worker.stats));
        let core = cores.get(q as usize % cores.len().max(1)).copied();
        workers.push(std::thread::Builder::new().name(format!("xgw-worker-{q}")).spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(c);
            }
            worker.run()
        })?);
    }
    let daemon = {
        let (sh, rules, maps) = (Arc::clone(&shared), args.rules.clone(), Arc::clone(&class_maps));
        Arc::new(crate::ctl::Daemon {
            shared: Arc::clone(&shared),
            counters: worker_counters,
            workers: worker_stats,
            base,
            reload: Box::new(move |kill| match compile_file(&rules) {
                Ok(c) => {
                    let now = Time(u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    let r = sh.reload_policy(Box::new(c.acl), kill, now);
                    tracing::info!(live = r.live, would_deny = r.would_deny, killed = r.killed, "rules reloaded");
                    Ok(xgw_control_proto::answer::ReloadReport {
                        live: r.live,
                        would_deny: r.would_deny,
                        killed: r.killed,
                        warnings: c.warnings.iter().map(|w| w.render()).collect(),
                    })
                }
                Err(CheckError::Invalid(d)) => {
                    Err(format!("refused, the running policy stays:\n{}", xgw_rules::diag::render_all(&d)))
                }
                Err(CheckError::Read(e)) => Err(format!("refused: {e}")),
            }),
            offload: offload.clone(),
            egress: egress.clone(),
            ports: port_stats.clone(),
            xdp_steering: {
                let maps = Arc::clone(&class_maps);
                Box::new(move || {
                    let m = maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    m.iter().map(|(d, _, s, _)| (d.clone(), sum_counters(s, &steer::NAMES))).collect()
                })
            },
            xdp_declined: {
                let maps = Arc::clone(&class_maps);
                Box::new(move || {
                    let m = maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    m.iter().map(|(d, _, _, x)| (d.clone(), sum_counters(x, &declined::NAMES))).collect()
                })
            },
            xdp_classes: Box::new(move || {
                let m = maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                m.iter().map(|(d, c, _, _)| (d.clone(), sum_counters(c, &class::NAMES))).collect()
            }),
        })
    };
    if let Some(addr) = args.metrics {
        let bound =
            crate::ctl::serve_metrics(addr, Arc::clone(&daemon)).with_context(|| format!("metrics endpoint {addr}"))?;
        tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
    }
    crate::ctl::serve(&args.socket, daemon).with_context(|| format!("control socket {}", args.socket.display()))?;
    tracing::info!(workers = workers.len(), socket = %args.socket.display(), "forwarding");
    if let Some(f) = &args.ready_file {
        std::fs::write(f, format!("{}\n", std::process::id())).with_context(|| format!("writing {}", f.display()))?;
    }
    // systemd (Type=notify): ready once forwarding; a no-op outside systemd
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("sd_notify READY: {e}");
    }

    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&term))?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
    let budget = (cfg.limits.max_flows / 20).max(1024);
    let mut last_neigh = Instant::now();
    let mut last_stats = Instant::now();
    // the kernel's drops in front of each AF_XDP socket, as last reported in the log
    let mut xsk_dropped_told: Vec<u64> = vec![0; port_stats.len()];
    let mut last_xsk_warning = Instant::now() - Duration::from_secs(60);
    while !term.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
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
            match compile_file(&args.rules) {
                Ok(c) => {
                    let r = shared.reload_policy(Box::new(c.acl), false, now);
                    tracing::info!(
                        live = r.live,
                        would_deny = r.would_deny,
                        "rules reloaded (access lists; other sections need a restart)"
                    );
                }
                Err(CheckError::Invalid(d)) => {
                    tracing::error!("reload refused, the running policy stays:\n{}", xgw_rules::diag::render_all(&d))
                }
                Err(CheckError::Read(e)) => tracing::error!("reload refused: {e}"),
            }
        }
        if args.stats_every > 0 && last_stats.elapsed() >= Duration::from_secs(args.stats_every) {
            last_stats = Instant::now();
            for (dev, q, s) in &port_stats {
                tracing::info!(device = %dev, queue = q, rx = s.rx.get(), tx = s.tx.get(), waited = s.tx_neigh_waited.get(), no_neighbour = s.tx_no_neighbour.get(), "port");
            }
            tracing::info!(flows = shared.flows.len(), "conntrack");
        }
    }
    tracing::info!("stopping");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = offload_thread {
        let _ = t.join();
    }
    let _ = netlink_thread.join();
    if let Some(t) = egress_thread {
        let _ = t.join();
    }
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
    for (dev, c, s, _) in class_maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        let classes = sum_counters(c, &class::NAMES);
        let steering = sum_counters(s, &steer::NAMES);
        let line: Vec<String> = classes.iter().filter(|c| c.1 > 0).map(|(n, p, _)| format!("{n}={p}")).collect();
        let st: Vec<String> = steering.iter().map(|(n, p, _)| format!("{n}={p}")).collect();
        tracing::info!(device = %dev, classes = %line.join(" "), steering = %st.join(" "), "XDP counters");
    }
    let _ = std::fs::remove_file(&args.socket);
    attached.clear(); // dropping the programs detaches them
    tracing::info!("XDP detached, stopped");
    Ok(())
}
