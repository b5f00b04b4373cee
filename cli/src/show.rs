//! The text forms of the daemon's answers: tables and `name value` lines.

use std::fmt::Write as _;

use xgw_control_proto::answer::{self, PptpSession, RuleView, RulesShown};
use xgw_control_proto::{FlowView, XlateView};

/// A flow as a row of `conntrack list -o table`.
pub(crate) fn flow_row(v: &FlowView) -> Vec<String> {
    vec![
        v.proto.clone(),
        v.state.clone().unwrap_or_default(),
        format!("{}:{} -> {}:{}", v.orig.0, v.orig.2, v.orig.1, v.orig.3),
        format!("{}:{} -> {}:{}", v.reply.0, v.reply.2, v.reply.1, v.reply.3),
        format!("{}/{}", v.packets.0, v.packets.1),
        format!("{}/{}", v.bytes.0, v.bytes.1),
        v.timeout.to_string(),
    ]
}

/// A translation as a row of `xlate -o table`.
pub(crate) fn xlate_row(x: &XlateView) -> Vec<String> {
    vec![
        x.kind.clone(),
        x.proto.clone(),
        format!("{}:{}", x.inside.0, x.inside.1),
        format!("{}:{}", x.outside.0, x.outside.1),
        format!("{}:{}", x.foreign.0, x.foreign.1),
        x.idle.to_string(),
        x.timeout.to_string(),
        x.flow_id.to_string(),
    ]
}

/// `rules show`: the bindings, then a table of rules with their hits.
pub(crate) fn rules_text(rules: &[RuleView], end: &RulesShown) -> String {
    let mut o = String::new();
    if let Some(n) = &end.note {
        let _ = writeln!(o, "{n}");
    }
    for (dir, bound) in [("in", &end.bound_in), ("out", &end.bound_out)] {
        for b in bound {
            let _ = writeln!(o, "access-group {} {dir} interface {}", b.list, b.interface);
        }
    }
    let mut rows = vec![["ID", "LIST", "RULE", "HITS", "WHERE"].map(String::from).to_vec()];
    for r in rules {
        rows.push(vec![
            format!("{:08x}", r.id),
            r.list.clone(),
            r.text.clone(),
            r.hits.to_string(),
            format!("{}:{}", r.file, r.line),
        ]);
    }
    o.push_str(&table(&rows));
    let _ = writeln!(o, "implicit deny: {} hits", end.implicit_denies);
    o
}

/// `pptp`: one row per call (or per control connection without calls), then the counters.
pub(crate) fn pptp_text(sessions: &[PptpSession], counters: &answer::Counters) -> String {
    let mut rows = vec![[
        "INSIDE",
        "CONTROL",
        "SERVER",
        "STATE",
        "CALL(PNS)",
        "TRANSLATED",
        "PAC",
        "CALL STATE",
        "GRE PKTS out/in",
        "GRE BYTES out/in",
        "AGE",
    ]
    .map(String::from)
    .to_vec()];
    let hex = |v: Option<u16>| v.map_or("-".to_string(), |n| format!("0x{n:04x}"));
    let pair = |v: Option<[u64; 2]>| v.map_or("-".to_string(), |a| format!("{}/{}", a[0], a[1]));
    for s in sessions {
        let base = [&s.inside_host, &s.client, &s.server, &s.state].map(|x| x.to_string());
        if s.calls.is_empty() {
            let mut r = base.to_vec();
            r.extend(["-", "", "", "", "", ""].map(String::from));
            r.push(format!("{}s", s.age));
            rows.push(r);
        }
        for c in &s.calls {
            let mut r = base.to_vec();
            r.extend([
                hex(Some(c.pns_call_id)),
                hex(Some(c.translated_call_id)),
                hex(c.pac_call_id),
                c.state.clone(),
                pair(c.gre_packets),
                pair(c.gre_bytes),
                format!("{}s", c.age),
            ]);
            rows.push(r);
        }
    }
    let mut o = table(&rows);
    let line: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(o, "counters: {}", line.join(" "));
    o
}

/// `stats`: one `name value` line per counter, every family.
pub(crate) fn stats_text(s: &answer::Stats) -> String {
    let mut o = String::new();
    for (k, v) in &s.engine {
        let _ = writeln!(o, "{k:<16} {v}");
    }
    let _ = writeln!(o, "{:<16} {}", "workers", s.workers);
    let none = Default::default();
    for (family, m) in [
        ("conntrack", &s.conntrack),
        ("pptp", &s.pptp),
        ("drop", &s.drops),
        ("blocks", s.blocks.as_ref().unwrap_or(&none)),
        ("natlog", s.nat_log.as_ref().unwrap_or(&none)),
    ] {
        for (k, v) in m {
            let _ = writeln!(o, "{:<28} {v}", format!("{family}.{k}"));
        }
    }
    for (k, v) in &s.worker_classes {
        let _ = writeln!(o, "worker.class.{k:<16} {v}");
    }
    let _ = writeln!(o, "worker.unclassified {}", s.worker_unclassified);
    let _ = writeln!(o, "outside.address {}/{}", s.outside.address, s.outside.prefix_len);
    let _ = writeln!(o, "outside.changes {}", s.outside.changes);
    let _ = writeln!(o, "outside.flushed {}", s.outside.flushed);
    for x in &s.xdp {
        for (k, v) in &x.classes {
            let _ = writeln!(o, "xdp.{}.{k:<16} {} packets {} bytes", x.device, v.packets, v.bytes);
        }
    }
    for x in &s.xdp_steering {
        for (k, v) in &x.counters {
            let _ = writeln!(o, "xdp.{}.to.{k:<13} {v}", x.device);
        }
    }
    for x in &s.xdp_declined {
        for (k, v) in &x.counters {
            let _ = writeln!(o, "xdp.{}.declined.{k:<15} {v}", x.device);
        }
    }
    for e in &s.egress {
        let _ = writeln!(o, "egress.{}.state       {}", e.device, e.state);
        let _ = writeln!(o, "egress.{}.refusals    {}", e.device, e.refusals);
    }
    for p in &s.ports {
        for (k, v) in &p.counters {
            let _ = writeln!(o, "port.{}.q{}.{k:<15} {v}", p.device, p.queue);
        }
    }
    match &s.offload {
        Some(m) => {
            for (k, v) in m {
                let _ = writeln!(o, "offload.{k:<14} {v}");
            }
        }
        None => {
            let _ = writeln!(o, "offload          off");
        }
    }
    o
}

pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..n).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}

/// `ha status` as text.
pub(crate) fn ha_text(s: &answer::HaStatus) -> String {
    if !s.enabled {
        return "HA not configured: this gateway forwards alone\n".into();
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    let bulk = s.last_bulk_ms_ago.map_or("never".to_string(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0));
    let counters: Vec<String> = s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "role {}  ready {}  synced {}\npeer {} ({})  listen {}\nsync lag {} ms  unacked {}  last bulk sync {}\n{}\n",
        s.role,
        yes(s.ready),
        yes(s.synced),
        s.peer,
        s.peer_state,
        s.listen,
        s.lag_ms,
        s.unacked,
        bulk,
        counters.join(" ")
    )
}
