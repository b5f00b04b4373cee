//! The XDP side of start-up: loading and attaching the program on every interface, its
//! configuration map, the outside address it follows (`address auto`), and the helpers that
//! read its counters.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, DevMap, HashMap as BpfHashMap, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use xgw_dataplane::{EngineConfig, Role, Shared, Time};
use xgw_ebpf_common::{Counter, HostService, XdpConfig, MAX_INSIDE_ADDRS};

use super::*;

pub(super) struct Attached {
    pub(super) device: String,
    pub(super) mode: Mode,
    pub(super) bpf: Ebpf,
}

pub(super) type ClassMap = PerCpuArray<aya::maps::MapData, Counter>;

/// Sums a per-CPU counter map: (name, packets, bytes) per index.
pub(super) fn sum_counters(arr: &ClassMap, names: &[&'static str]) -> Vec<(&'static str, u64, u64)> {
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

pub(super) fn ifindex(device: &str) -> Result<u32> {
    let p = format!("/sys/class/net/{device}/ifindex");
    let s = std::fs::read_to_string(&p).with_context(|| format!("interface `{device}` not found ({p})"))?;
    s.trim().parse().with_context(|| format!("{p}: not a number"))
}

pub(super) fn rx_queues(device: &str) -> Result<u32> {
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
pub(super) fn outside_follower(
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
    // what `attach` wrote (the fast path's switch among it), the address fields to change
    let mut xcfg = maps.first().and_then(|m| m.get(&0, 0).ok()).unwrap_or_else(|| xdp_config(cfg));
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
        xcfg.outside_bcast = xgw_dataplane::config::broadcast_of(addr, len);
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

/// The classifier's configuration for an engine configuration, with the fast path on.
pub fn xdp_config(cfg: &EngineConfig) -> XdpConfig {
    use xgw_dataplane::config::broadcast_of;
    let mut x = XdpConfig::default();
    if let Some((_, o)) = cfg.outside() {
        x.outside_addr = u32::from(o.addr);
        x.outside_bcast = broadcast_of(u32::from(o.addr), o.prefix_len);
    }
    for i in cfg.ifaces.iter().filter(|i| i.role == Role::Inside).take(MAX_INSIDE_ADDRS) {
        x.inside_addrs[x.n_inside as usize] = u32::from(i.addr);
        x.inside_bcasts[x.n_inside as usize] = broadcast_of(u32::from(i.addr), i.prefix_len);
        x.n_inside += 1;
    }
    let (lo, hi) = cfg.nat.host_ports.unwrap_or((1, 0));
    x.host_port_lo = lo;
    x.host_port_hi = hi;
    x.ready = 1;
    x.fast_path = 1;
    x
}

/// A host service as written (`tcp:22`): (IP protocol, port).
pub(super) fn parse_service(s: &str) -> Result<(u8, u16)> {
    let (p, port) = s.split_once(':').ok_or_else(|| anyhow!("`{s}`: expected PROTO:PORT, e.g. tcp:22"))?;
    let proto = match p {
        "tcp" => 6,
        "udp" => 17,
        other => bail!("`{other}`: host services are tcp or udp"),
    };
    Ok((proto, port.parse().with_context(|| format!("`{port}` is not a port"))?))
}

/// xgw's XDP object (ebpf/prog, built by build.rs): `xgw_xdp` and the benchmark's helpers.
pub fn xdp_object() -> &'static [u8] {
    aya::include_bytes_aligned!(env!("XGW_XDP_OBJECT"))
}

/// The benchmark's XDP object: xgw's program plus the generator and sink (`xgw_gen`,
/// `xgw_sink`) bench/nat-compare drives. Never attached by xgwd.
#[cfg(feature = "bench-xdp")]
pub fn xdp_bench_object() -> &'static [u8] {
    aya::include_bytes_aligned!(env!("XGW_XDP_BENCH_OBJECT"))
}

/// The forwarded TCP ports as the XDP program's `FORWARDED_TCP` bitmap (a bit per port):
/// SYNs to them are never held as unsolicited. Forwards change only with a restart.
pub fn forwarded_tcp(cfg: &EngineConfig) -> Vec<u64> {
    let mut w = vec![0u64; xgw_ebpf_common::guard::FORWARD_WORDS as usize];
    for f in cfg.forwards.iter().filter(|f| f.proto == xgw_dataplane::wire::proto::TCP) {
        w[usize::from(f.outside_port / 64)] |= 1 << (f.outside_port % 64);
    }
    w
}

/// Loads and attaches the program on every interface; with HA configured it starts as a
/// standby (forwarding nothing until keepalived names this gateway master).
pub(super) fn attach(cfg: &EngineConfig, args: &Settings, services: &[HostService]) -> Result<Vec<Attached>> {
    let obj = xdp_object();
    let xcfg = XdpConfig { fast_path: u32::from(args.offload), ..xdp_config(cfg) };
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
        let role = if args.ha.is_some() { xgw_ebpf_common::role::STANDBY } else { xgw_ebpf_common::role::ACTIVE };
        Array::<_, u32>::try_from(bpf.map_mut("ROLE").ok_or_else(|| anyhow!("no ROLE map"))?)?.set(0, role, 0)?;
        let mut hs: BpfHashMap<_, HostService, u8> =
            BpfHashMap::try_from(bpf.map_mut("HOST_SERVICES").ok_or_else(|| anyhow!("no HOST_SERVICES map"))?)?;
        for s in services {
            hs.insert(s, 1, 0)?;
        }
        let mut fw =
            Array::<_, u64>::try_from(bpf.map_mut("FORWARDED_TCP").ok_or_else(|| anyhow!("no FORWARDED_TCP map"))?)?;
        for (i, w) in forwarded_tcp(cfg).iter().enumerate().filter(|(_, w)| **w != 0) {
            fw.set(i as u32, *w, 0)?;
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
