//! Writing the model as an xgw rules file, and the notes on what was decided along the way.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::acl::{acl_entry, group_member};
use super::config::{IfAddr, Model, Nat};
use super::{Imported, Left};

fn leave(left: &mut Vec<Left>, line: usize, text: impl Into<String>, why: impl Into<String>) {
    left.push(Left { line, text: text.into(), why: why.into() });
}

/// Writes the rules file.
pub(super) fn write(m: &Model, source: &str, devices: &BTreeMap<String, String>, left: &mut Vec<Left>) -> Imported {
    let mut o = String::new();
    let mut notes = Vec::new();
    let _ = writeln!(o, "# Imported from {source} by `xgwctl rules import-asa` (xgw {}).", env!("CARGO_PKG_VERSION"));
    if let Some(h) = &m.hostname {
        let _ = writeln!(o, "# The configuration of {h}. Review before use: the report lists what was left out.");
    }

    // interfaces: the lowest security level is the outside, every other one inside
    let named: Vec<_> = m.ifaces.iter().filter(|i| i.nameif.is_some()).collect();
    let outside = named.iter().min_by_key(|i| i.level.unwrap_or(0)).and_then(|i| i.nameif.clone());
    let mut next_dev = 0;
    let mut dev_of: BTreeMap<String, String> = BTreeMap::new();
    let mut outside_addr = None;
    for i in m.ifaces.iter().filter(|i| i.nameif.is_none()) {
        leave(left, i.line, format!("interface {}", i.hw), "no nameif: not used by the configuration");
    }
    let _ = writeln!(o, "\n# interfaces (security level 0 is the outside; every other level is inside)");
    for i in &named {
        let n = i.nameif.clone().unwrap_or_default();
        if i.shutdown {
            leave(left, i.line, format!("interface {} ({n})", i.hw), "shut down: left out");
            continue;
        }
        let addr = match i.addr {
            Some(IfAddr::Static(a, l)) => {
                if Some(&n) == outside.as_ref() {
                    outside_addr = Some(a);
                }
                format!("{a}/{l}")
            }
            Some(IfAddr::Dhcp) => "dhcp".into(),
            None => {
                leave(
                    left,
                    i.line,
                    format!("interface {} ({n})", i.hw),
                    "no IPv4 address: xgw needs one per interface",
                );
                continue;
            }
        };
        let dev = devices.get(&n).cloned().unwrap_or_else(|| {
            let d = format!("eth{next_dev}");
            next_dev += 1;
            notes.push(format!(
                "interface {n} ({}) written as device {d}: give --device {n}=DEV if that is not it",
                i.hw
            ));
            d
        });
        dev_of.insert(n.clone(), dev.clone());
        let role = if Some(&n) == outside.as_ref() { "outside" } else { "inside" };
        if role == "inside" && i.level.is_some_and(|l| l < 100) {
            notes.push(format!("interface {n} (security level {}) is an inside interface in xgw: its access lists decide what it may reach", i.level.unwrap_or(0)));
        }
        let _ = writeln!(o, "interface {n} device {dev} role {role} address {addr}");
    }

    nat(m, &mut o, &mut notes, left, outside_addr);

    if let Some((on, _)) = m.pptp {
        let _ = writeln!(o, "\n# fixup protocol pptp 1723 / inspect pptp");
        let _ = writeln!(o, "inspect pptp{}", if on { "" } else { " off" });
    }
    if !m.timeouts.is_empty() {
        let _ = writeln!(o, "\n# timeouts");
        for (name, secs, _) in &m.timeouts {
            let _ = writeln!(o, "timeout {name} {secs}s");
        }
    }

    // object groups, in order
    let mut wrote_groups = Vec::new();
    for g in &m.groups {
        let kind = match g.kind.as_str() {
            "network" => "network",
            "service" | "protocol" => "service",
            _ => {
                leave(
                    left,
                    g.line,
                    format!("object-group {} {}", g.kind, g.name),
                    "an object-group kind xgw does not have",
                );
                continue;
            }
        };
        let mut members = Vec::new();
        for (w, line) in &g.members {
            match group_member(m, &g.kind, g.proto.as_deref(), w) {
                Ok(v) => members.extend(v),
                Err(e) => leave(left, *line, w.join(" "), e),
            }
        }
        if members.is_empty() {
            leave(left, g.line, format!("object-group {} {}", g.kind, g.name), "no member xgw can express");
            continue;
        }
        if wrote_groups.is_empty() {
            let _ = writeln!(o, "\n# object groups");
        }
        wrote_groups.push(g.name.clone());
        let _ = writeln!(o, "object-group {kind} {} {{", g.name);
        for mem in members {
            let _ = writeln!(o, "  {mem}");
        }
        let _ = writeln!(o, "}}");
    }

    // access lists: pre-8.3 lists name the mapped (outside) address of a forward; xgw's name
    // the real host, as 8.3+ does
    let forwards: Vec<_> = m
        .nats
        .iter()
        .filter_map(|n| match n {
            Nat::Forward { proto, outside_port, host, port, .. } => Some((proto.clone(), *outside_port, *host, *port)),
            _ => None,
        })
        .collect();
    let mut wrote_lists: Vec<String> = Vec::new();
    for a in &m.acl {
        match acl_entry(m, &a.list, &a.words) {
            Ok(mut line) => {
                if m.pre83 {
                    if let Some(oa) = outside_addr {
                        for (p, op, host, ip) in &forwards {
                            let from = format!(" host {oa} eq {op}");
                            if line.contains(&format!(" {p} ")) && line.contains(&from) {
                                line = line.replace(&from, &format!(" host {host} eq {ip}"));
                                notes.push(format!(
                                    "line {}: the forward's outside address {oa} port {op} written as its real host {host} port {ip} (xgw's access lists name real addresses)",
                                    a.line
                                ));
                            }
                        }
                    }
                }
                if wrote_lists.is_empty() {
                    let _ = writeln!(o, "\n# access lists");
                }
                if !wrote_lists.contains(&a.list) {
                    wrote_lists.push(a.list.clone());
                }
                let _ = writeln!(o, "{line}");
            }
            Err(why) => leave(left, a.line, format!("access-list {} {}", a.list, a.words.join(" ")), why),
        }
    }
    let iface_ok = |n: &str| named.iter().any(|i| i.nameif.as_deref() == Some(n) && !i.shutdown && i.addr.is_some());
    let mut bound = false;
    for (list, inbound, n, line) in &m.binds {
        if !wrote_lists.contains(list) || !iface_ok(n) {
            leave(
                left,
                *line,
                format!("access-group {list} {} interface {n}", if *inbound { "in" } else { "out" }),
                "its list or its interface was not translated",
            );
            continue;
        }
        if !bound {
            let _ = writeln!(o, "\n# bindings");
            bound = true;
        }
        let _ = writeln!(o, "access-group {list} {} interface {n}", if *inbound { "in" } else { "out" });
    }

    let routes = m
        .routes
        .iter()
        .map(|(n, d, l, g, _)| {
            let dev = dev_of.get(n).map_or_else(String::new, |d| format!(" dev {d}"));
            let dst = if *l == 0 { "default".to_string() } else { format!("{d}/{l}") };
            format!("ip route add {dst} via {g}{dev}")
        })
        .collect();
    Imported { rules: o, left: Vec::new(), notes, routes }
}

/// PAT, pools, exemption and forwards.
fn nat(
    m: &Model,
    o: &mut String,
    notes: &mut Vec<String>,
    left: &mut Vec<Left>,
    outside_addr: Option<std::net::Ipv4Addr>,
) {
    let mut overload: Option<(Vec<std::net::Ipv4Addr>, usize)> = None;
    let mut exempt = Vec::new();
    let mut forwards = Vec::new();
    for n in &m.nats {
        match n {
            Nat::Overload { id, pool, real, line } => {
                let pool = match id {
                    Some(id) => match m.globals.iter().find(|g| g.1 == *id) {
                        Some(g) => g.2.clone(),
                        None => {
                            leave(left, *line, format!("nat ... {id}"), "no `global` with this NAT id");
                            continue;
                        }
                    },
                    None => pool.clone(),
                };
                if let Some(r) = real {
                    notes.push(format!("line {line}: PAT for {r} became PAT for every inside host (xgw's `nat overload` has no source filter; access lists can narrow it)"));
                }
                match &overload {
                    Some((p, first)) if *p != pool => leave(
                        left,
                        *line,
                        "nat/global",
                        format!("a second PAT pool: xgw has one (the first, line {first}, was kept)"),
                    ),
                    Some(_) => {}
                    None => overload = Some((pool, *line)),
                }
            }
            Nat::ExemptList { list, .. } => exempt.push(format!("nat exempt access-list {list}")),
            Nat::ExemptPair { inside, far, .. } => exempt.push(format!("nat exempt {inside} {far}")),
            Nat::Forward { proto, mapped, outside_port, host, port, line } => {
                if mapped.is_some() && *mapped != outside_addr {
                    leave(left, *line, format!("static {proto} {outside_port}"), "a port forward on an address other than the outside interface's: xgw forwards the outside address's ports");
                    continue;
                }
                forwards.push(format!("forward {proto} {outside_port} to {host} {port}"));
            }
        }
    }
    let _ = writeln!(o, "\n# translation");
    match overload {
        Some((pool, _)) if pool.is_empty() => {
            let _ = writeln!(o, "nat overload");
        }
        Some((pool, _)) => {
            let list: Vec<String> = pool.iter().map(ToString::to_string).collect();
            let _ = writeln!(o, "nat overload pool {}", list.join(" "));
        }
        None => {
            notes.push("no PAT in the configuration: written as `nat off` (routed, untranslated)".into());
            let _ = writeln!(o, "nat off");
        }
    }
    for e in exempt {
        let _ = writeln!(o, "{e}");
    }
    for f in forwards {
        let _ = writeln!(o, "{f}");
    }
}
