//! `xgwd run`: the gateway. Loads the rules, loads and attaches the XDP program on every
//! interface (one instance each, with its own XSKMAP), opens one AF_XDP socket per receive
//! queue per interface with libxdp's program loading inhibited, puts their fds into xgw's
//! XSKMAPs, and runs one worker per queue index (pinned to a core). The control thread
//! sweeps expired flows, keeps next hops current, reloads on SIGHUP and stops on
//! SIGTERM/SIGINT, detaching XDP cleanly (bpf_link attachments also go away by themselves
//! if the process dies). NAT pool addresses on the outside subnet are held on the outside
//! device while it runs (`pool`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::PerCpuArray;
use xgw_dataplane::Shared;
use xgw_ebpf_common::{class, declined, steer, HostService};

use xgw_rules::file::{compile_file, CheckError};

mod control_loop;
mod fast_path;
mod garp;
mod guard;
mod pair;
mod pool;
mod preflight;
mod reload;
mod settings;
mod workers;
mod xdp;

use control_loop::{control_loop, sweep_budget};
use fast_path::{start_fast_path, FastPath};
use preflight::*;
pub use settings::{Mode, RunArgs, Settings, SettingsFile, Switch};
use workers::{join_workers, start_workers, Workers};
#[cfg(feature = "bench-xdp")]
pub use xdp::xdp_bench_object;
use xdp::*;
pub use xdp::{forwarded_tcp, xdp_config, xdp_object};

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
    // kept until the daemon returns: dropping it removes the pool addresses it added
    let _pool = pool::hold_for(&cfg, args.ha.is_some())?;
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
    let (ha, mut watchdog) = pair::prepare(args, &cfg, &mut attached)?;

    // one worker per queue index, owning that queue's socket on every interface
    let queues = cfg.ifaces.iter().map(|i| rx_queues(&i.device)).collect::<Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let base = Instant::now();
    let mono_base = crate::offload::monotonic_ns();
    // routes and neighbours from the kernel, followed through rtnetlink notifications, and
    // with `address auto` the outside address too
    let follow = outside_follower(&cfg, &mut attached, Arc::clone(&shared), base)?;
    let (neigh, netlink_thread) =
        crate::netlink::start(cfg.ifaces.iter().map(|i| i.device.clone()).collect(), Arc::clone(&stop), follow)?;
    let FastPath { egress, egress_thread, offload, offload_thread } =
        start_fast_path(&cfg, args, &shared, &mut attached, &neigh, &stop, mono_base)?;
    let guard_thread = guard::start_guard(&shared, &mut attached, &stop)?;
    let Workers { threads: workers, ports: port_stats, counters: worker_counters, stats: worker_stats } =
        start_workers(&cfg, args, &shared, &mut attached, &queues, &neigh, &stop, base)?;
    let hub = Arc::new(crate::ctl::EventHub::default());
    // NAT event logging: as the settings say, and with port blocks always (log lines of
    // the blocks at least)
    let (natlog, natlog_thread) = match (&args.nat_log, shared.blocks.is_some()) {
        (None, false) => (None, None),
        (f, blocks) => {
            let cfg = crate::natlog::NatLogConfig::new(&f.clone().unwrap_or_default(), blocks);
            let events = hub.subscribe(1 << 16);
            let (l, t) = crate::natlog::start(cfg, Arc::clone(&shared), events.rx, events.gap, Arc::clone(&stop), base)
                .context("NAT event logging")?;
            (Some(l), Some(t))
        }
    };
    let daemon = {
        let (sh, rules, maps) = (Arc::clone(&shared), args.rules.clone(), Arc::clone(&class_maps));
        Arc::new(crate::ctl::Daemon {
            shared: Arc::clone(&shared),
            counters: worker_counters,
            workers: worker_stats,
            base,
            reload: Box::new(move |kill| reload::reload(&sh, &rules, kill, base)),
            offload: offload.clone(),
            egress: egress.clone(),
            ports: port_stats.clone(),
            ha: ha.clone(),
            natlog,
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
    let sync_thread = match &ha {
        Some(ha) => Some(crate::ha::link::start(
            Arc::clone(ha),
            Arc::clone(&shared),
            hub.subscribe(1 << 16).rx,
            Arc::clone(&stop),
            base,
            os_random(),
        )?),
        None => None,
    };
    crate::ctl::serve_with(&args.socket, daemon, hub)
        .with_context(|| format!("control socket {}", args.socket.display()))?;
    tracing::info!(workers = workers.len(), socket = %args.socket.display(), "forwarding");
    if let Some(f) = &args.ready_file {
        std::fs::write(f, format!("{}\n", std::process::id())).with_context(|| format!("writing {}", f.display()))?;
    }
    // systemd (Type=notify): ready once forwarding; a no-op outside systemd
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("sd_notify READY: {e}");
    }

    control_loop(args, &shared, egress.as_deref(), &port_stats, sweep_budget(cfg.limits.max_flows), base)?;
    tracing::info!("stopping");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = offload_thread {
        let _ = t.join();
    }
    let _ = netlink_thread.join();
    let _ = guard_thread.join();
    if let Some(t) = sync_thread {
        let _ = t.join();
    }
    if let Some(t) = natlog_thread {
        let _ = t.join();
    }
    if let Some(mut w) = watchdog.take() {
        drop(w.stdin.take()); // the watchdog marks this gateway not ready and ends
        let _ = w.wait();
    }
    if let Some(t) = egress_thread {
        let _ = t.join();
    }
    join_workers(workers)?;
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
