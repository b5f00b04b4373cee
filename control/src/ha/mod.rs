//! High availability: this gateway's part in an active/standby pair. keepalived (VRRP) elects
//! and moves the addresses; xgwd learns its role from keepalived's notify scripts
//! (`xgwctl ha role master|backup|fault`) and replicates its state to the peer over the sync
//! link ([`link`], the FT-FW channel of `xgw-sync`). A standby forwards nothing (the XDP
//! program's `ROLE` map) and keeps its tables hot with what the active one sends, so a
//! promotion is only the map flipped.
//!
//! keepalived is told when this gateway may take over through a tracked file
//! (`ready_file`, keepalived's `track_file` with weight 0): `0` when ready — active, or in
//! sync with the peer (a bulk resync completed), or alone (the peer silent) — `1` otherwise,
//! so a backup never wins an election before its bulk sync ended. A small watchdog process
//! (`xgwd ha-watch`) writes `1` the moment xgwd dies, however it dies, so keepalived leaves
//! the master state at once instead of advertising for a gateway that no longer forwards.
//!
//! - [`changes`]: what the active gateway has to tell (created, changed and ended flows;
//!   PPTP sessions and calls) — a diff against what it told already.
//! - [`fence`]: the nftables table that keeps the box's kernel from answering (ICMP, RST)
//!   for translated traffic in the moments between xgwd's death and the address move.
//! - [`link`]: the sync thread — socket, channel, applying records on the standby,
//!   readiness, the status `xgwctl ha status` shows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, MapData};
use xgw_control_proto::answer::HaStatus;
use xgw_ebpf_common::role;

mod changes;
pub mod fence;
pub mod link;

/// The `[ha]` table of the settings file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaFile {
    /// This gateway's sync address, "ADDR:PORT" (on the dedicated sync link).
    pub listen: Option<SocketAddr>,
    /// The peer's sync address.
    pub peer: Option<SocketAddr>,
    /// A file holding the shared key (HMAC-SHA256 over every message); none: unauthenticated.
    pub key_file: Option<PathBuf>,
    /// keepalived's tracked file: `0` when this gateway may take over, `1` when not.
    pub ready_file: Option<PathBuf>,
}

/// HA settings, checked.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// This gateway's sync address.
    pub listen: SocketAddr,
    /// The peer's sync address (messages from any other source are refused).
    pub peer: SocketAddr,
    /// The shared key, if any.
    pub key: Option<Vec<u8>>,
    /// keepalived's tracked file.
    pub ready_file: Option<PathBuf>,
}

impl HaConfig {
    /// The settings of a `[ha]` table (its key file read).
    pub fn from_file(f: &HaFile) -> Result<HaConfig> {
        let listen =
            f.listen.ok_or_else(|| anyhow!("[ha] needs listen = \"ADDR:PORT\" (this gateway's sync address)"))?;
        let peer =
            f.peer.ok_or_else(|| anyhow!("[ha] needs peer = \"ADDR:PORT\" (the other gateway's sync address)"))?;
        if listen.ip() == peer.ip() && listen.port() == peer.port() {
            bail!("[ha] listen and peer are the same address {listen}");
        }
        let key = match &f.key_file {
            Some(p) => Some(read_key(p)?),
            None => None,
        };
        Ok(HaConfig { listen, peer, key, ready_file: f.ready_file.clone() })
    }
}

fn read_key(p: &Path) -> Result<Vec<u8>> {
    let k = std::fs::read(p).with_context(|| format!("[ha] key_file {}", p.display()))?;
    let k = k.trim_ascii().to_vec();
    if k.len() < 16 {
        bail!(
            "[ha] key_file {}: the key is {} bytes; use at least 16 (e.g. `head -c 32 /dev/urandom | base64`)",
            p.display(),
            k.len()
        );
    }
    Ok(k)
}

/// What keepalived says this gateway is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Forwards; its changes go to the peer.
    Master,
    /// Forwards nothing; applies the peer's changes.
    Backup,
    /// Forwards nothing (keepalived found a fault, or stopped).
    Fault,
}

impl Role {
    /// The role of a keepalived state name ("master", "BACKUP", "fault", "stop").
    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "master" => Some(Role::Master),
            "backup" => Some(Role::Backup),
            "fault" | "stop" => Some(Role::Fault),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
            Role::Fault => "fault",
        }
    }

    fn from_u8(v: u8) -> Role {
        match v {
            0 => Role::Master,
            1 => Role::Backup,
            _ => Role::Fault,
        }
    }
}

/// The HA state the control socket, the metrics and the sync thread share.
pub struct Ha {
    /// The settings.
    pub cfg: HaConfig,
    role: AtomicU8,
    xdp_roles: Mutex<Vec<Array<MapData, u32>>>,
    status: Mutex<HaStatus>,
}

impl core::fmt::Debug for Ha {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ha").field("cfg", &self.cfg).field("role", &self.role()).finish()
    }
}

impl Ha {
    /// A gateway that starts as a backup (forwarding nothing) until keepalived names it
    /// master; `xdp_roles` are the XDP programs' `ROLE` maps.
    pub fn new(cfg: HaConfig, xdp_roles: Vec<Array<MapData, u32>>) -> Ha {
        let status = HaStatus {
            enabled: true,
            role: Role::Backup.name().into(),
            peer: cfg.peer.to_string(),
            listen: cfg.listen.to_string(),
            ready: false,
            ..HaStatus::alone()
        };
        let ha = Ha { cfg, role: AtomicU8::new(1), xdp_roles: Mutex::new(xdp_roles), status: Mutex::new(status) };
        ha.write_xdp(Role::Backup);
        ha
    }

    /// The current role.
    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Acquire))
    }

    /// Takes role `r`: a master forwards (the XDP programs let transit through), anything
    /// else forwards nothing. Logged when it changes.
    pub fn set_role(&self, r: Role) {
        let old = Role::from_u8(self.role.swap(r as u8, Ordering::AcqRel));
        self.write_xdp(r);
        if old != r {
            tracing::warn!(from = old.name(), to = r.name(), "HA role changed");
        }
    }

    fn write_xdp(&self, r: Role) {
        let v = if r == Role::Master { role::ACTIVE } else { role::STANDBY };
        for m in self.xdp_roles.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter_mut() {
            if let Err(e) = m.set(0, v, 0) {
                tracing::error!(error = %e, "setting the XDP program's HA role");
            }
        }
    }

    /// What `xgwctl ha status` shows.
    pub fn status(&self) -> HaStatus {
        let mut s = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        s.role = self.role().name().into();
        s
    }

    fn publish(&self, s: HaStatus) {
        *self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    }
}

/// `xgwd ha-watch FILE`: waits until its standard input closes (xgwd, which holds the other
/// end, died or stopped) and writes `1` (not ready) into keepalived's tracked file.
pub fn watch(file: &Path) -> Result<()> {
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    write_ready(file, false).with_context(|| format!("writing {}", file.display()))
}

/// Writes keepalived's tracked file: `0` ready, `1` not (replaced atomically, so keepalived
/// never reads half a value).
pub fn write_ready(file: &Path, ready: bool) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, if ready { "0\n" } else { "1\n" })?;
    std::fs::rename(&tmp, file)
}

/// Starts the watchdog for `file`: a child process holding a pipe from this one.
pub fn spawn_watchdog(file: &Path) -> Result<std::process::Child> {
    let exe = std::env::current_exe().context("finding xgwd's own executable")?;
    std::process::Command::new(exe)
        .arg("ha-watch")
        .arg(file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the HA watchdog (xgwd ha-watch)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_state_names_map_to_roles() {
        let cases = [
            ("master", Some(Role::Master)),
            ("MASTER", Some(Role::Master)),
            ("backup", Some(Role::Backup)),
            ("FAULT", Some(Role::Fault)),
            ("stop", Some(Role::Fault)),
            ("primary", None),
        ];
        for (s, want) in cases {
            assert_eq!(Role::parse(s), want, "{s}");
        }
        for r in [Role::Master, Role::Backup, Role::Fault] {
            assert_eq!(Role::from_u8(r as u8), r);
            assert_eq!(Role::parse(r.name()), Some(r));
        }
    }

    #[test]
    fn settings_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("k");
        std::fs::write(&key, "short\n").expect("write");
        let f = |l: &str, p: &str, k: Option<&Path>| HaFile {
            listen: Some(l.parse().expect("addr")),
            peer: Some(p.parse().expect("addr")),
            key_file: k.map(Path::to_path_buf),
            ready_file: None,
        };
        let e = HaConfig::from_file(&f("10.0.0.1:7474", "10.0.0.1:7474", None)).expect_err("same");
        assert!(e.to_string().contains("same address"), "{e}");
        let e = HaConfig::from_file(&f("10.0.0.1:7474", "10.0.0.2:7474", Some(&key))).expect_err("short key");
        assert!(e.to_string().contains("at least 16"), "{e}");
        std::fs::write(&key, "0123456789abcdef0123\n").expect("write");
        let c = HaConfig::from_file(&f("10.0.0.1:7474", "10.0.0.2:7474", Some(&key))).expect("good");
        assert_eq!(c.key.as_deref(), Some(&b"0123456789abcdef0123"[..]), "trimmed");
        let e = HaConfig::from_file(&HaFile::default()).expect_err("empty");
        assert!(e.to_string().contains("listen"), "{e}");
    }

    #[test]
    fn the_ready_file_says_0_or_1() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ready");
        write_ready(&p, true).expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "0\n");
        write_ready(&p, false).expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "1\n");
    }
}
