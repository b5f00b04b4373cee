//! The kernel fence of an HA gateway: an nftables table that keeps the box's own kernel from
//! answering for translated traffic on the outside address.
//!
//! While xgwd runs, the kernel sees only the box's own traffic on the outside address (host
//! services, the host port range, pings). When xgwd dies, its XDP programs go with it, and
//! until keepalived has moved the virtual outside address away (tens of milliseconds) the
//! kernel receives the translated flows' packets itself: it answers GRE with ICMP protocol
//! unreachable and TCP with RST — which ends every PPTP call and control connection the
//! peer was about to take over. The fence drops, in the kernel's input path, what only a
//! translation can own: GRE, ESP, and TCP and UDP to ports outside the host's own. It never
//! matches while xgwd forwards (those packets never reach the kernel); it stays when xgwd
//! stops, and is replaced when xgwd starts.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use xgw_dataplane::EngineConfig;

/// The table's name.
pub const TABLE: &str = "xgw_ha_fence";

/// The nftables script for `cfg`'s outside interface and address (none without a fixed
/// outside address).
pub fn script(cfg: &EngineConfig) -> Option<String> {
    let (_, o) = cfg.outside()?;
    if o.auto_addr {
        return None;
    }
    let (lo, hi) = cfg.nat.host_ports.unwrap_or((32768, 60999));
    let ports = |proto: u8| {
        let mut v = vec![format!("{lo}-{hi}")];
        v.extend(cfg.host_services.iter().filter(|(p, _)| *p == proto).map(|(_, port)| port.to_string()));
        v.join(", ")
    };
    let (dev, addr) = (&o.device, o.addr);
    Some(format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n  chain input {{\n    type filter hook input priority -300; policy accept;\n    iifname \"{dev}\" ip daddr {addr} ip protocol {{ gre, esp }} counter drop\n    iifname \"{dev}\" ip daddr {addr} tcp dport != {{ {} }} counter drop\n    iifname \"{dev}\" ip daddr {addr} udp dport != {{ {} }} counter drop\n  }}\n}}\n",
        ports(6),
        ports(17)
    ))
}

/// Installs (or replaces) the fence with `nft -f -`.
pub fn install(cfg: &EngineConfig) -> Result<()> {
    let Some(s) = script(cfg) else {
        tracing::warn!("HA: no fixed outside address (address auto): no kernel fence installed");
        return Ok(());
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("HA: running nft to install the kernel fence (install nftables)")?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(s.as_bytes()).context("HA: writing to nft")?;
    }
    let out = child.wait_with_output().context("HA: nft")?;
    if !out.status.success() {
        bail!("HA: nft refused the kernel fence: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    tracing::info!(table = TABLE, "HA: kernel fence installed (the kernel never answers for translated traffic)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_drops_what_only_translations_own_and_spares_the_hosts_ports() {
        let cfg = EngineConfig::example();
        let s = script(&cfg).expect("a fixed outside address");
        let (_, o) = cfg.outside().expect("outside");
        assert!(s.contains(&format!("iifname \"{}\" ip daddr {} ip protocol {{ gre, esp }}", o.device, o.addr)), "{s}");
        let (lo, hi) = cfg.nat.host_ports.expect("host ports");
        assert!(s.contains(&format!("tcp dport != {{ {lo}-{hi}, 22 }}")), "{s}");
        assert!(s.contains(&format!("udp dport != {{ {lo}-{hi} }}")), "{s}");
        assert!(s.starts_with(&format!("table ip {TABLE}\ndelete table ip {TABLE}\n")), "replaces an old fence: {s}");
    }
}
