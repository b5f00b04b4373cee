//! Reloading the access policy from the rules file: one path for SIGHUP and for
//! `xgwctl rules reload`. Only the access lists change; a refused file leaves the running
//! policy in force.

use std::path::Path;
use std::time::Instant;

use xgw_control_proto::answer::ReloadReport;
use xgw_dataplane::{Shared, Time};
use xgw_rules::file::{compile_file, CheckError};

/// Compiles `rules` and swaps its access lists in (tearing down the live flows the new
/// policy refuses when `kill`). The error says why the file was refused.
pub(super) fn reload(shared: &Shared, rules: &Path, kill: bool, base: Instant) -> Result<ReloadReport, String> {
    match compile_file(rules) {
        Ok(c) => {
            let now = Time(u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX));
            let r = shared.reload_policy(Box::new(c.acl), kill, now);
            tracing::info!(
                live = r.live,
                would_deny = r.would_deny,
                killed = r.killed,
                "rules reloaded (access lists; other sections need a restart)"
            );
            Ok(ReloadReport {
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
    }
}
