//! xgwd's settings: command-line flags (`xgwd run`), the TOML settings file, and how the two
//! combine (a flag wins over the file, the file over the default).

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};

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
    /// UMEM frames per socket, 2 KiB each, three quarters for receiving [default: 8192].
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
    /// The HA pair (absent: the gateway forwards alone).
    pub ha: Option<crate::ha::HaFile>,
    /// NAT event logging (IPFIX collector, log lines).
    pub nat_log: Option<crate::natlog::NatLogFile>,
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
    /// The HA pair, when configured.
    pub ha: Option<crate::ha::HaConfig>,
    /// NAT event logging, when configured.
    pub nat_log: Option<crate::natlog::NatLogFile>,
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
        let ha =
            match &file.ha {
                Some(h) => Some(crate::ha::HaConfig::from_file(h).map_err(|e| {
                    anyhow!("{}: {e}", a.config.as_deref().unwrap_or(std::path::Path::new("-")).display())
                })?),
                None => None,
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
            frames: a.frames.or(file.frames).unwrap_or(8192),
            host_services,
            stats_every: a.stats_every.or(file.stats_every).unwrap_or(0),
            ready_file: a.ready_file.clone(),
            socket: a.socket.clone().or(file.socket).unwrap_or_else(|| PathBuf::from("/run/xgw/xgw.sock")),
            metrics: a.metrics.or(file.metrics),
            offload: a.offload.or(file.offload).unwrap_or(Switch::On) == Switch::On,
            offload_entries: a.offload_entries.or(file.offload_entries).unwrap_or(65536).max(16),
            ha,
            nat_log: file.nat_log.clone(),
        })
    }
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
        let s = with_file(include_str!("../../../dist/xgwd.toml"), &[]).expect("dist/xgwd.toml");
        assert_eq!(s.rules, PathBuf::from("/etc/xgw/gateway.rules"));
        assert_eq!((s.xdp_mode, s.frames, s.stats_every), (Mode::Auto, 8192, 0));
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
    fn the_ha_table_is_read_and_checked() {
        let s = with_file("rules = \"/a\"\n", &[]).expect("defaults");
        assert!(s.ha.is_none(), "no [ha]: alone");
        let s = with_file(
            "rules = \"/a\"\n[ha]\nlisten = \"10.9.0.1:7474\"\npeer = \"10.9.0.2:7474\"\nready_file = \"/run/r\"\n",
            &[],
        )
        .expect("ha");
        let ha = s.ha.expect("configured");
        assert_eq!((ha.listen.to_string(), ha.peer.to_string()), ("10.9.0.1:7474".into(), "10.9.0.2:7474".into()));
        assert_eq!(ha.ready_file, Some(PathBuf::from("/run/r")));
        let e = with_file("rules = \"/a\"\n[ha]\npeer = \"10.9.0.2:7474\"\n", &[]).expect_err("no listen").to_string();
        assert!(e.contains("listen"), "{e}");
        let e = with_file("rules = \"/a\"\n[ha]\nlisten = \"10.9.0.1:7474\"\npeers = 1\n", &[])
            .expect_err("typo")
            .to_string();
        assert!(e.contains("peers"), "{e}");
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
