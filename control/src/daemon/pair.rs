//! The HA pair at start-up: the XDP programs' role maps handed to the shared HA state (the
//! gateway starts as a standby), the kernel fence (`ha::fence`), keepalived's tracked file
//! marked not ready, and the watchdog that marks it so again the moment xgwd dies.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use aya::maps::Array;
use xgw_dataplane::EngineConfig;

use super::xdp::Attached;
use super::Settings;
use crate::ha::{spawn_watchdog, write_ready, Ha};

/// With `[ha]` configured: the shared HA state and the watchdog process (if a ready file is
/// configured). Without: nothing.
pub(super) fn prepare(
    args: &Settings,
    engine: &EngineConfig,
    attached: &mut [Attached],
) -> Result<(Option<Arc<Ha>>, Option<std::process::Child>)> {
    let Some(cfg) = args.ha.clone() else { return Ok((None, None)) };
    crate::ha::fence::install(engine)?;
    let mut maps = Vec::new();
    for a in attached.iter_mut() {
        let m = a.bpf.take_map("ROLE").ok_or_else(|| anyhow!("no ROLE map"))?;
        maps.push(Array::try_from(m)?);
    }
    let watchdog = match &cfg.ready_file {
        Some(f) => {
            write_ready(f, false).map_err(|e| anyhow!("[ha] ready_file {}: {e}", f.display()))?;
            Some(spawn_watchdog(f)?)
        }
        None => None,
    };
    tracing::info!(listen = %cfg.listen, peer = %cfg.peer, "HA: starting as backup until keepalived names this gateway master");
    Ok((Some(Arc::new(Ha::new(cfg, maps))), watchdog))
}
