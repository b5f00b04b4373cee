//! Importing a Cisco PIX 6.x/7.x or ASA running configuration into an xgw rules file
//! (`xgwctl rules import-asa`). What translates — interfaces and their roles, PAT, NAT
//! exemption, static port forwards, access lists and object groups, their bindings,
//! timeouts, PPTP inspection — becomes rules; everything else is reported with its line
//! number and why it was left out, never dropped silently. Routes are reported as the
//! `ip route` commands to run.
//!
//! Reading (`config`) builds a model of the configuration; writing (`emit`) turns the model
//! into rules text. Both report what they cannot carry over.

mod acl;
mod config;
mod emit;
mod ports;

use std::collections::BTreeMap;

/// One line of the configuration that did not become rules, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// Line number in the configuration (1-based).
    pub line: usize,
    /// The line as written.
    pub text: String,
    /// Why it was left out, or what to do instead.
    pub why: String,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The rules file.
    pub rules: String,
    /// Lines not translated, in configuration order.
    pub left: Vec<Left>,
    /// Notes on what was translated in a way worth checking (device names, roles, rewritten
    /// addresses).
    pub notes: Vec<String>,
    /// The routes, as `ip route` commands.
    pub routes: Vec<String>,
}

impl Imported {
    /// The report as printed: notes, routes, then the lines left out.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        if !self.routes.is_empty() {
            s.push_str("routes (run these on the gateway; xgw uses the kernel's routes):\n");
            for r in &self.routes {
                s.push_str(&format!("  {r}\n"));
            }
        }
        if !self.left.is_empty() {
            s.push_str("not translated:\n");
            for l in &self.left {
                s.push_str(&format!("  line {}: {}\n      {}\n", l.line, l.text.trim(), l.why));
            }
        }
        s
    }
}

/// Imports configuration `text` (named `source` in the output's header). `devices` maps an
/// interface's `nameif` to its Linux device; unnamed ones get `eth0`, `eth1`, … in
/// configuration order (and a note).
pub fn import_asa(text: &str, source: &str, devices: &BTreeMap<String, String>) -> Imported {
    let mut left = Vec::new();
    let model = config::read(text, &mut left);
    let mut out = emit::write(&model, source, devices, &mut left);
    left.sort_by_key(|l| l.line);
    out.left = left;
    out
}
