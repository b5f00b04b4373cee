//! `xgwd run`: the gateway. Loads the rules, loads and attaches the XDP program on every
//! interface (one instance each, with its own XSKMAP), opens one AF_XDP socket per receive
//! queue per interface with libxdp's program loading inhibited, puts their fds into xgw's
//! XSKMAPs, and runs one worker per queue index (pinned to a core). The control thread
//! sweeps expired flows, keeps next hops current, reloads on SIGHUP and stops on
//! SIGTERM/SIGINT, detaching XDP cleanly (bpf_link attachments also go away by themselves
//! if the process dies).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, DevMap, HashMap as BpfHashMap, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use clap::{Args, ValueEnum};
use xgw_dataplane::xsk::{Port, PortConfig, Worker};
use xgw_dataplane::{Engine, EngineConfig, IfaceId, Role, Shared, Time};
use xgw_ebpf_common::{class, declined, steer, Counter, HostService, XdpConfig, MAX_INSIDE_ADDRS};

use crate::egress::EgressGuard;
use crate::offload::XdpOffload;
use xgw_rules::file::{compile_file, CheckError};

/// How to attach XDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Native (driver) mode where the driver supports it, generic (SKB) mode otherwise.
    Auto,
    /// Native mode only.
    Native,
    /// Generic (SKB) mode.
    Skb,
}

/// Options of `xgwd run`. Each may also come from the `--config` TOML file; a flag given on
/// the command line wins over the file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Daemon settings file (TOML; keys as these flags, with `_` for `-`; see
    /// dist/xgwd.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The rules file.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// XDP attach mode [default: auto].
    #[arg(long, value_enum)]
    pub xdp_mode: Option<Mode>,
    /// UMEM frames per socket [default: 4096].
    #[arg(long)]
    pub frames: Option<u32>,
    /// Ports on the outside address that belong to the host (PROTO:PORT, repeatable; added
    /// to the file's); tcp:22 is always one.
    #[arg(long = "host-service", value_name = "PROTO:PORT")]
    pub host_services: Vec<String>,
    /// Print counters every this many seconds (0: never) [default: 0].
    #[arg(long)]
    pub stats_every: Option<u64>,
    /// Write a line to this file once the gateway forwards (for scripts and tests).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// The control socket xgwctl talks to [default: /run/xgw/xgw.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given), e.g. 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// The XDP fast path: established flows translated inside XDP (off: every packet goes
    /// through the engine, for debugging and comparison) [default: on].
    #[arg(long, value_enum)]
    pub offload: Option<Switch>,
    /// Offloaded flow directions each interface's XDP map holds [default: 65536]; when full,
    /// further flows stay in userspace.
    #[arg(long, value_name = "N")]
    pub offload_entries: Option<u32>,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// The daemon settings file: the same settings as the flags of `xgwd run`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// The rules file.
    pub rules: Option<PathBuf>,
    /// XDP attach mode: "auto", "native" or "skb".
    pub xdp_mode: Option<String>,
    /// UMEM frames per socket.
    pub frames: Option<u32>,
    /// Host services, e.g. ["tcp:22", "udp:161"].
    #[serde(default)]
    pub host_services: Vec<String>,
    /// Counter log period in seconds.
    pub stats_every: Option<u64>,
    /// Control socket path.
    pub socket: Option<PathBuf>,
    /// Metrics address.
    pub metrics: Option<std::net::SocketAddr>,
    /// The XDP fast path: "on" or "off".
    pub offload: Option<Switch>,
    /// Entries of each interface's offload map.
    pub offload_entries: Option<u32>,
}

/// The settings xgwd runs with: flags over the file over the defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The rules file.
    pub rules: PathBuf,
    /// XDP attach mode.
    pub xdp_mode: Mode,
    /// UMEM frames per socket.
    pub frames: u32,
    /// Host services.
    pub host_services: Vec<String>,
    /// Counter log period in seconds (0: never).
    pub stats_every: u64,
    /// Readiness file.
    pub ready_file: Option<PathBuf>,
    /// Control socket path.
    pub socket: PathBuf,
    /// Metrics address.
    pub metrics: Option<std::net::SocketAddr>,
    /// Offload established flows to XDP.
    pub offload: bool,
    /// Entries of each interface's offload map.
    pub offload_entries: u32,
}

impl Settings {
    /// Merges the flags with the settings file (if any); a bad file is refused with its
    /// position.
    pub fn resolve(a: &RunArgs) -> Result<Settings> {
        let file: SettingsFile = match &a.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", p.display()))?
            }
            None => SettingsFile::default(),
        };
        let xdp_mode = match (a.xdp_mode, file.xdp_mode.as_deref()) {
            (Some(m), _) => m,
            (None, Some(s)) => Mode::from_str(s, true).map_err(|_| {
                anyhow!("xdp_mode = \"{s}\" in the settings file: expected \"auto\", \"native\" or \"skb\"")
            })?,
            (None, None) => Mode::Auto,
        };
        let mut host_services = file.host_services;
        host_services.extend(a.host_services.iter().cloned());
        Ok(Settings {
            rules: a
                .rules
                .clone()
                .or(file.rules)
                .ok_or_else(|| anyhow!("no rules file: give --rules FILE, or rules = \"FILE\" in the --config file"))?,
            xdp_mode,
            frames: a.frames.or(file.frames).unwrap_or(4096),
            host_services,
            stats_every: a.stats_every.or(file.stats_every).unwrap_or(0),
            ready_file: a.ready_file.clone(),
            socket: a.socket.clone().or(file.socket).unwrap_or_else(|| PathBuf::from("/run/xgw/xgw.sock")),
            metrics: a.metrics.or(file.metrics),
            offload: a.offload.or(file.offload).unwrap_or(Switch::On) == Switch::On,
            offload_entries: a.offload_entries.or(file.offload_entries).unwrap_or(65536).max(16),
        })
    }
}

struct Attached {
    device: String,
    mode: Mode,
    bpf: Ebpf,
}

type ClassMap = PerCpuArray<aya::maps::MapData, Counter>;

/// Sums a per-CPU counter map: (name, packets, bytes) per index.
fn sum_counters(arr: &ClassMap, names: &[&'static str]) -> Vec<(&'static str, u64, u64)> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (p, b) = arr
                .get(&(i as u32), 0)
                .map(|v| v.iter().fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes)))
                .unwrap_or((0, 0));
            (*n, p, b)
        })
        .collect()
}

fn ifindex(device: &str) -> Result<u32> {
    let p = format!("/sys/class/net/{device}/ifindex");
    let s = std::fs::read_to_string(&p).with_context(|| format!("interface `{device}` not found ({p})"))?;
    s.trim().parse().with_context(|| format!("{p}: not a number"))
}

fn rx_queues(device: &str) -> Result<u32> {
    let dir = format!("/sys/class/net/{device}/queues");
    let n = std::fs::read_dir(&dir)
        .with_context(|| format!("interface `{device}` not found ({dir})"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(u32::try_from(n.max(1)).unwrap_or(1))
}

/// What follows the kernel's address on the outside device (`address auto`): the engine's
/// outside address (flows on a vanished one flushed) and every XDP instance's notion of the
/// box's own address. A no-op for a fixed address.
fn outside_follower(
    cfg: &EngineConfig,
    attached: &mut [Attached],
    shared: Arc<Shared>,
    base: Instant,
) -> Result<crate::netlink::OnChange> {
    let Some((_, o)) = cfg.outside().filter(|(_, o)| o.auto_addr) else { return Ok(Box::new(|_| {})) };
    let device = o.device.clone();
    let mut maps = Vec::new();
    for a in attached.iter_mut() {
        let m = a.bpf.take_map("CONFIG").ok_or_else(|| anyhow!("no CONFIG map"))?;
        maps.push(Array::<aya::maps::MapData, XdpConfig>::try_from(m)?);
    }
    let mut xcfg = xdp_config(cfg);
    Ok(Box::new(move |state: &crate::neigh::KernelState| {
        // the device's first (primary) IPv4 address, as the kernel orders them
        let (addr, len) = state.addresses(&device).first().map_or((0, 0), |(a, l)| (u32::from(*a), *l));
        if (addr, len) == shared.outside_net() {
            return;
        }
        let old = std::net::Ipv4Addr::from(shared.outside_addr());
        let now = Time(u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let flushed = shared.set_outside_addr(addr, len, now);
        xcfg.outside_addr = addr;
        for m in &mut maps {
            if let Err(e) = m.set(0, xcfg, 0) {
                tracing::error!(error = %e, "updating the XDP program's outside address");
            }
        }
        if addr == 0 {
            tracing::warn!(%device, %old, flushed, "the outside interface has no IPv4 address: new translations are refused until it gets one");
        } else {
            tracing::info!(%device, old = %old, new = %std::net::Ipv4Addr::from(addr), prefix_len = len, flushed, "outside address changed");
        }
    }))
}

/// The classifier's configuration for an engine configuration.
pub fn xdp_config(cfg: &EngineConfig) -> XdpConfig {
    let mut x = XdpConfig::default();
    if let Some((_, o)) = cfg.outside() {
        x.outside_addr = u32::from(o.addr);
    }
    for i in cfg.ifaces.iter().filter(|i| i.role == Role::Inside).take(MAX_INSIDE_ADDRS) {
        x.inside_addrs[x.n_inside as usize] = u32::from(i.addr);
        x.n_inside += 1;
    }
    let (lo, hi) = cfg.nat.host_ports.unwrap_or((1, 0));
    x.host_port_lo = lo;
    x.host_port_hi = hi;
    x.ready = 1;
    x
}

fn parse_service(s: &str) -> Result<HostService> {
    let (p, port) = s.split_once(':').ok_or_else(|| anyhow!("`{s}`: expected PROTO:PORT, e.g. tcp:22"))?;
    let proto = match p {
        "tcp" => 6,
        "udp" => 17,
        other => bail!("`{other}`: host services are tcp or udp"),
    };
    Ok(HostService { proto, port: port.parse().with_context(|| format!("`{port}` is not a port"))? })
}

/// xgw's XDP object (ebpf/prog, built by build.rs): `xgw_xdp` and the benchmark's helpers.
pub fn xdp_object() -> &'static [u8] {
    aya::include_bytes_aligned!(env!("XGW_XDP_OBJECT"))
}

fn attach(cfg: &EngineConfig, args: &Settings, services: &[HostService]) -> Result<Vec<Attached>> {
    let obj = xdp_object();
    let xcfg = xdp_config(cfg);
    let mut out = Vec::new();
    for ifc in &cfg.ifaces {
        let mut bpf = aya::EbpfLoader::new()
            .map_max_entries("FLOWS", args.offload_entries)
            .load(obj)
            .context("loading the XDP program (needs root: CAP_BPF, CAP_NET_ADMIN)")?;
        // the fast path's egress interfaces, by the engine's interface number
        let mut tx = DevMap::try_from(bpf.map_mut("TX").ok_or_else(|| anyhow!("no TX map"))?)?;
        for (i, out) in cfg.ifaces.iter().enumerate() {
            tx.set(i as u32, ifindex(&out.device)?, None, 0)
                .with_context(|| format!("devmap entry for `{}`", out.device))?;
        }
        Array::<_, XdpConfig>::try_from(bpf.map_mut("CONFIG").ok_or_else(|| anyhow!("no CONFIG map"))?)?
            .set(0, xcfg, 0)?;
        let mut hs: BpfHashMap<_, HostService, u8> =
            BpfHashMap::try_from(bpf.map_mut("HOST_SERVICES").ok_or_else(|| anyhow!("no HOST_SERVICES map"))?)?;
        for s in services {
            hs.insert(s, 1, 0)?;
        }
        let prog: &mut Xdp = bpf.program_mut("xgw_xdp").ok_or_else(|| anyhow!("no xgw_xdp program"))?.try_into()?;
        prog.load().context("the kernel's verifier refused the XDP program")?;
        let mode = match args.xdp_mode {
            Mode::Native => {
                prog.attach(&ifc.device, XdpMode::Driver).with_context(|| format!("native XDP on `{}`", ifc.device))?;
                Mode::Native
            }
            Mode::Skb => {
                prog.attach(&ifc.device, XdpMode::Skb).with_context(|| format!("generic XDP on `{}`", ifc.device))?;
                Mode::Skb
            }
            Mode::Auto => match prog.attach(&ifc.device, XdpMode::Driver) {
                Ok(_) => Mode::Native,
                Err(e) => {
                    tracing::warn!(device = %ifc.device, error = %e, "native XDP refused; using generic (SKB) mode");
                    prog.attach(&ifc.device, XdpMode::Skb)
                        .with_context(|| format!("generic XDP on `{}`", ifc.device))?;
                    Mode::Skb
                }
            },
        };
        tracing::info!(device = %ifc.device, ?mode, "XDP attached");
        out.push(Attached { device: ifc.device.clone(), mode, bpf });
    }
    Ok(out)
}

/// 32 random bits from the kernel.
fn os_random() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u32::from_ne_bytes(b) ^ std::process::id()
}

/// Capabilities xgwd needs: (bit, name). CAP_SYS_ADMIN and CAP_IPC_LOCK cover AF_XDP UMEM
/// registration on kernels that still ask for them.
const NEEDED_CAPS: [(u32, &str); 3] = [(12, "CAP_NET_ADMIN"), (13, "CAP_NET_RAW"), (39, "CAP_BPF")];

/// The effective capability set of this process (from /proc/self/status).
fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Checks what would otherwise fail half-way through start-up, and says what to do about
/// it: missing privileges, missing interfaces (all of them at once), a kernel without
/// AF_XDP sockets.
fn preflight(cfg: &EngineConfig) -> Result<()> {
    if let Some(caps) = effective_caps() {
        let missing: Vec<&str> = NEEDED_CAPS.iter().filter(|(b, _)| caps & (1u64 << b) == 0).map(|(_, n)| *n).collect();
        if !missing.is_empty() {
            bail!(
                "missing privilege: {} (run xgwd as root, or through dist/xgwd.service, which grants exactly these)",
                missing.join(", ")
            );
        }
    }
    let absent: Vec<String> = cfg
        .ifaces
        .iter()
        .filter(|i| !std::path::Path::new("/sys/class/net").join(&i.device).exists())
        .map(|i| format!("`{}` (interface {})", i.device, i.name))
        .collect();
    if !absent.is_empty() {
        bail!(
            "no such network device: {} — the rules file names devices that do not exist here (see `ip link`)",
            absent.join(", ")
        );
    }
    if let Err(e) = socket2::Socket::new(socket2::Domain::from(libc::AF_XDP), socket2::Type::RAW, None) {
        if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            bail!(
                "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS); xgwd needs Linux 5.4 or later built with it"
            );
        }
        bail!("cannot open an AF_XDP socket: {e}");
    }
    Ok(())
}

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
    let cfg = compiled.engine.clone();
    preflight(&cfg)?;
    let shared = Arc::new(Shared::new(cfg.clone()).map_err(anyhow::Error::msg)?);
    shared.asa_log.store(asa_log, Ordering::Relaxed);
    shared.set_policy(Box::new(compiled.acl));
    shared.pptp.seed(os_random());

    let mut services = vec![HostService { proto: 6, port: 22 }];
    for s in &args.host_services {
        services.push(parse_service(s)?);
    }
    let mut attached = attach(&cfg, args, &services)?;
    let mut offload_thread = None;
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
                    Ok(serde_json::json!({"live": r.live, "would_deny": r.would_deny, "killed": r.killed,
                        "warnings": c.warnings.iter().map(|w| w.render()).collect::<Vec<_>>()}))
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    fn with_file(text: &str, flags: &[&str]) -> Result<Settings> {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("xgwd.toml");
        std::fs::write(&p, text).expect("write");
        let mut argv = vec!["t", "--config", p.to_str().expect("path")];
        argv.extend_from_slice(flags);
        Settings::resolve(&T::parse_from(argv).run)
    }

    #[test]
    fn the_example_settings_file_loads() {
        let s = with_file(include_str!("../../dist/xgwd.toml"), &[]).expect("dist/xgwd.toml");
        assert_eq!(s.rules, PathBuf::from("/etc/xgw/gateway.rules"));
        assert_eq!((s.xdp_mode, s.frames, s.stats_every), (Mode::Auto, 4096, 0));
        assert_eq!(s.host_services, ["tcp:22"]);
        assert_eq!(s.metrics, None);
    }

    #[test]
    fn flags_win_over_the_file_and_host_services_add_up() {
        let s = with_file(
            "rules = \"/a.rules\"\nxdp_mode = \"skb\"\nframes = 1024\nhost_services = [\"udp:161\"]\nmetrics = \"127.0.0.1:9\"\n",
            &["--rules", "/b.rules", "--frames", "2048", "--host-service", "tcp:2022"],
        )
        .expect("settings");
        assert_eq!(s.rules, PathBuf::from("/b.rules"));
        assert_eq!(s.frames, 2048);
        assert_eq!(s.xdp_mode, Mode::Skb, "from the file");
        assert_eq!(s.host_services, ["udp:161", "tcp:2022"]);
        assert_eq!(s.metrics, Some("127.0.0.1:9".parse().expect("addr")));
        assert_eq!(s.socket, PathBuf::from("/run/xgw/xgw.sock"), "the default");
    }

    #[test]
    fn the_fast_path_switch_comes_from_the_file_or_the_flag() {
        let s = with_file("rules = \"/a\"\n", &[]).expect("defaults");
        assert!(s.offload, "on unless switched off");
        assert_eq!(s.offload_entries, 65536);
        let s = with_file("rules = \"/a\"\noffload = \"off\"\noffload_entries = 1000\n", &[]).expect("file");
        assert!(!s.offload);
        assert_eq!(s.offload_entries, 1000);
        let s = with_file("rules = \"/a\"\noffload = \"off\"\n", &["--offload", "on"]).expect("flag");
        assert!(s.offload, "the flag wins");
        let e = with_file("rules = \"/a\"\noffload = \"maybe\"\n", &[]).expect_err("bad value").to_string();
        assert!(e.contains("offload") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_settings_are_refused_with_their_position() {
        let e = with_file("rules = \"/a\"\nframs = 10\n", &[]).expect_err("typo").to_string();
        assert!(e.contains("line 2") && e.contains("frams"), "{e}");
        let e = with_file("rules = \"/a\"\nxdp_mode = \"fast\"\n", &[]).expect_err("mode").to_string();
        assert!(e.contains("expected \"auto\", \"native\" or \"skb\""), "{e}");
        let e = with_file("frames = 10\n", &[]).expect_err("no rules").to_string();
        assert!(e.contains("no rules file"), "{e}");
    }
}
