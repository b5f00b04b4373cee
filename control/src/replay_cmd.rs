//! `xgwd replay`: run capture files through the engine offline.

use std::fs::File;
use std::io::BufWriter;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use xgw_dataplane::config::{IfaceConfig, PortForward, Role};
use xgw_dataplane::replay::{self, Input};
use xgw_dataplane::{Engine, EngineConfig, IfaceId, Shared};

/// Options of `xgwd replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A rules file giving the whole configuration (interfaces, NAT, inspection, access
    /// lists); the first inside interface receives --in-inside, the outside one --in-outside.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["inside", "outside", "forwards", "port_range"])]
    pub rules: Option<PathBuf>,
    /// The gateway's inside address and prefix, e.g. 10.0.0.1/24.
    #[arg(long, value_name = "ADDR/LEN", required_unless_present = "rules")]
    pub inside: Option<String>,
    /// The gateway's outside address and prefix, e.g. 203.0.113.1/24.
    #[arg(long, value_name = "ADDR/LEN", required_unless_present = "rules")]
    pub outside: Option<String>,
    /// Static forward PROTO:PORT=HOST:PORT (repeatable), e.g. tcp:2222=10.0.0.6:22.
    #[arg(long = "forward", value_name = "SPEC")]
    pub forwards: Vec<String>,
    /// PAT port range LO-HI.
    #[arg(long, value_name = "LO-HI")]
    pub port_range: Option<String>,
    /// Capture of frames arriving on the inside interface.
    #[arg(long, value_name = "PCAP")]
    pub in_inside: Option<PathBuf>,
    /// Capture of frames arriving on the outside interface.
    #[arg(long, value_name = "PCAP")]
    pub in_outside: Option<PathBuf>,
    /// A capture taken at one point; frames whose source is in the inside subnet arrive
    /// on the inside, the rest on the outside.
    #[arg(long = "in", value_name = "PCAP")]
    pub in_mixed: Option<PathBuf>,
    /// With --in: which sources are inside hosts (repeatable CIDR; default: the inside
    /// interface's subnet).
    #[arg(long = "inside-hosts", value_name = "ADDR/LEN")]
    pub inside_hosts: Vec<String>,
    /// Where to write what leaves the inside interface.
    #[arg(long, value_name = "PCAP")]
    pub out_inside: Option<PathBuf>,
    /// Where to write what leaves the outside interface.
    #[arg(long, value_name = "PCAP")]
    pub out_outside: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/').with_context(|| format!("`{s}`: expected ADDR/LEN"))?;
    let addr: Ipv4Addr = a.parse().with_context(|| format!("`{a}` is not an IPv4 address"))?;
    let len: u8 = l.parse().with_context(|| format!("`{l}` is not a prefix length"))?;
    if len > 32 {
        bail!("prefix length {len} is larger than 32");
    }
    Ok((addr, len))
}

fn parse_forward(s: &str) -> Result<PortForward> {
    let err = || format!("`{s}`: expected PROTO:PORT=HOST:PORT, e.g. tcp:2222=10.0.0.6:22");
    let (outside, inside) = s.split_once('=').with_context(err)?;
    let (proto, oport) = outside.split_once(':').with_context(err)?;
    let (host, iport) = inside.split_once(':').with_context(err)?;
    let proto = match proto {
        "tcp" => 6,
        "udp" => 17,
        other => bail!("`{other}`: forwards are tcp or udp"),
    };
    Ok(PortForward {
        proto,
        outside_port: oport.parse().with_context(err)?,
        inside_addr: host.parse().with_context(err)?,
        inside_port: iport.parse().with_context(err)?,
    })
}

/// Builds the engine configuration the flags describe.
pub fn config(a: &ReplayArgs) -> Result<EngineConfig> {
    let (iaddr, ilen) = parse_cidr(a.inside.as_deref().unwrap_or_default())?;
    let (oaddr, olen) = parse_cidr(a.outside.as_deref().unwrap_or_default())?;
    let mut cfg = EngineConfig {
        ifaces: vec![
            IfaceConfig {
                name: "inside".into(),
                device: "inside".into(),
                role: Role::Inside,
                addr: iaddr,
                prefix_len: ilen,
                auto_addr: false,
            },
            IfaceConfig {
                name: "outside".into(),
                device: "outside".into(),
                role: Role::Outside,
                addr: oaddr,
                prefix_len: olen,
                auto_addr: false,
            },
        ],
        ..EngineConfig::default()
    };
    for f in &a.forwards {
        cfg.forwards.push(parse_forward(f)?);
    }
    if let Some(r) = &a.port_range {
        let (lo, hi) = r.split_once('-').with_context(|| format!("`{r}`: expected LO-HI"))?;
        cfg.nat.port_range = (lo.parse()?, hi.parse()?);
    }
    cfg.validate().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

fn load(path: &PathBuf) -> Result<Vec<replay::Record>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(replay::read_capture(f, &path.display().to_string())?)
}

/// Runs `xgwd replay`.
pub fn run(a: &ReplayArgs) -> Result<()> {
    let (cfg, policy) = match &a.rules {
        Some(path) => match xgw_rules::file::compile_file(path) {
            Ok(c) => (c.engine, Some(c.acl)),
            Err(xgw_rules::file::CheckError::Read(e)) => bail!("cannot read rules file: {e}"),
            Err(xgw_rules::file::CheckError::Invalid(d)) => {
                bail!("rules file refused:\n{}", xgw_rules::diag::render_all(&d))
            }
        },
        None => (config(a)?, None),
    };
    let inside_if = cfg.ifaces.iter().position(|i| i.role == xgw_dataplane::Role::Inside).unwrap_or(0);
    let outside_if = cfg.ifaces.iter().position(|i| i.role == xgw_dataplane::Role::Outside).unwrap_or(1);
    let (inside, outside) = (IfaceId(inside_if as u8), IfaceId(outside_if as u8));
    let inside_net = (cfg.ifaces[inside_if].addr, cfg.ifaces[inside_if].prefix_len);
    let mut inputs: Vec<Input> = Vec::new();
    for (path, iface) in [(&a.in_inside, inside), (&a.in_outside, outside)] {
        if let Some(p) = path {
            inputs.extend(load(p)?.into_iter().map(|r| Input { ts: r.ts, iface, frame: r.frame }));
        }
    }
    if let Some(p) = &a.in_mixed {
        let mut nets = a.inside_hosts.iter().map(|s| parse_cidr(s)).collect::<Result<Vec<_>>>()?;
        if nets.is_empty() {
            nets.push(inside_net);
        }
        inputs.extend(replay::assign_by_source(load(p)?, &nets, inside, outside));
    }
    if inputs.is_empty() && a.in_inside.is_none() && a.in_outside.is_none() && a.in_mixed.is_none() {
        bail!("nothing to replay: give --in-inside, --in-outside or --in");
    }
    let shared = Arc::new(Shared::new(cfg).map_err(anyhow::Error::msg)?);
    if let Some(p) = policy {
        shared.set_policy(Box::new(p));
    }
    let mut engine = Engine::new(shared);
    let (outcomes, summary) = replay::run(&mut engine, inputs, Duration::from_secs(1));
    for (path, iface) in [(&a.out_inside, inside), (&a.out_outside, outside)] {
        if let Some(p) = path {
            let f = File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
            replay::write_egress(&outcomes, iface, BufWriter::new(f))?;
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("frames replayed:   {}", summary.frames);
        println!("forwarded inside:  {}", summary.forwarded.get(&inside.0).copied().unwrap_or(0));
        println!("forwarded outside: {}", summary.forwarded.get(&outside.0).copied().unwrap_or(0));
        println!("to host:           {}", summary.to_host);
        println!("flows created:     {}", summary.flows_created);
        println!("flows live at end: {}", summary.flows_live);
        println!("icmp generated:    {}", summary.icmp_generated);
        let dropped: u64 = summary.drops.values().sum();
        println!("dropped:           {dropped}");
        for (reason, n) in &summary.drops {
            println!("  {reason:<24} {n}");
        }
    }
    Ok(())
}
