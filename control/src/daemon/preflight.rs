//! What would fail half-way through start-up, checked first and said plainly: privileges,
//! interfaces, AF_XDP support.

use anyhow::{bail, Result};
use xgw_dataplane::EngineConfig;

/// 32 random bits from the kernel.
pub(super) fn os_random() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u32::from_ne_bytes(b) ^ std::process::id()
}

/// Capabilities xgwd needs: (bit, name). CAP_SYS_ADMIN and CAP_IPC_LOCK cover AF_XDP UMEM
/// registration on kernels that still ask for them.
pub(super) const NEEDED_CAPS: [(u32, &str); 3] = [(12, "CAP_NET_ADMIN"), (13, "CAP_NET_RAW"), (39, "CAP_BPF")];

/// The effective capability set of this process (from /proc/self/status).
pub(super) fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Checks what would otherwise fail half-way through start-up, and says what to do about
/// it: missing privileges, missing interfaces (all of them at once), a kernel without
/// AF_XDP sockets.
pub(super) fn preflight(cfg: &EngineConfig) -> Result<()> {
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
