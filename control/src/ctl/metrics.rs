//! The Prometheus endpoint (`xgwd run --metrics ADDR`): every counter family rendered in
//! text format, served over plain HTTP.

use std::sync::Arc;

use xgw_dataplane::DropReason;

use super::*;

/// One sample per event name of a counter family labelled `event`.
/// One metric per counter of a family: `PREFIX_NAME_total`, its help the counter's doc.
pub(super) fn counters(o: &mut String, prefix: &str, list: &[(&'static str, &'static str, u64)]) {
    use std::fmt::Write as _;
    for (name, help, v) in list {
        let _ = writeln!(
            o,
            "# HELP {prefix}_{name}_total {help}\n# TYPE {prefix}_{name}_total counter\n{prefix}_{name}_total {v}"
        );
    }
}

/// The Prometheus text exposition of the daemon's counters: connection table, drops by
/// reason, NAT port use per outside address, the PPTP inspector, per-rule hits, XDP classes,
/// per-worker packets. Counters only grow; rates are Prometheus' job. Port use is counted by
/// walking the table (one slot lock at a time), which a scrape every few seconds affords.
pub fn render_metrics(d: &Daemon) -> String {
    use std::fmt::Write as _;
    let mut o = String::with_capacity(8192);
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    let fl = &d.shared.flows;
    family(&mut o, "xgw_conntrack_entries", "gauge", "Flows in the connection table.");
    let _ = writeln!(o, "xgw_conntrack_entries {}", fl.len());
    family(&mut o, "xgw_conntrack_limit", "gauge", "Capacity of the connection table.");
    let _ = writeln!(o, "xgw_conntrack_limit {}", fl.capacity());
    counters(&mut o, "xgw_conntrack", &fl.stats.list());
    family(&mut o, "xgw_outside_address_changes_total", "counter", "Times the outside address changed (address auto).");
    let _ = writeln!(o, "xgw_outside_address_changes_total {}", d.shared.address_changes.get());
    family(&mut o, "xgw_outside_address_flushed_total", "counter", "Flows on a vanished outside address, removed.");
    let _ = writeln!(o, "xgw_outside_address_flushed_total {}", d.shared.address_flushed.get());
    family(&mut o, "xgw_drops_total", "counter", "Packets dropped, by reason.");
    for r in DropReason::ALL {
        let _ = writeln!(
            o,
            "xgw_drops_total{{reason=\"{}\"}} {}",
            r.name(),
            d.counters.iter().map(|c| c.drops(*r)).sum::<u64>()
        );
    }
    counters(&mut o, "xgw_engine", &traffic(d));
    family(&mut o, "xgw_worker_packets_total", "counter", "Each worker's engine counters, by worker.");
    for (i, c) in d.counters.iter().enumerate() {
        for (what, _, v) in c.traffic.list() {
            let _ = writeln!(o, "xgw_worker_packets_total{{worker=\"{i}\",what=\"{what}\"}} {v}");
        }
    }
    // NAT: translated flows per outside address (each holds one outside port)
    let mut per_addr: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let now = d.now();
    fl.for_each(|_, f| {
        if let Some(x) = xlate(f, &d.shared, now) {
            *per_addr.entry(x.outside.0).or_default() += 1;
        }
    });
    family(
        &mut o,
        "xgw_nat_ports_in_use",
        "gauge",
        "Outside ports (PPTP: Call IDs) held by translations, per outside address.",
    );
    for (a, n) in &per_addr {
        let _ = writeln!(o, "xgw_nat_ports_in_use{{address=\"{a}\"}} {n}");
    }
    let p = &d.shared.pptp;
    family(&mut o, "xgw_pptp_calls_in_progress", "gauge", "PPTP calls set up through the inspector.");
    let _ = writeln!(o, "xgw_pptp_calls_in_progress {}", p.calls_in_progress());
    counters(&mut o, "xgw_pptp", &p.stats.list());
    let policy = d.shared.policy();
    if let Some(acl) = policy.as_any().and_then(|a| a.downcast_ref::<xgw_rules::acl::Acl>()) {
        family(&mut o, "xgw_rule_hits_total", "counter", "Flows each access rule decided.");
        for (i, r) in acl.rules.iter().enumerate() {
            let _ = writeln!(o, "xgw_rule_hits_total{{list=\"{}\",rule_id=\"{:08x}\"}} {}", r.list, r.id, acl.hits(i));
        }
        family(
            &mut o,
            "xgw_rule_implicit_denies_total",
            "counter",
            "Flows refused by the implicit deny of a bound list.",
        );
        let _ = writeln!(o, "xgw_rule_implicit_denies_total {}", acl.implicit_denies());
    }
    if let Some(ha) = &d.ha {
        let s = ha.status();
        family(&mut o, "xgw_ha_master", "gauge", "1 when keepalived named this gateway master (it forwards).");
        let _ = writeln!(o, "xgw_ha_master {}", u8::from(s.role == "master"));
        family(&mut o, "xgw_ha_ready", "gauge", "1 when this gateway may take over (master, in sync, or alone).");
        let _ = writeln!(o, "xgw_ha_ready {}", u8::from(s.ready));
        family(&mut o, "xgw_ha_peer_alive", "gauge", "1 while the peer is heard on the sync link.");
        let _ = writeln!(o, "xgw_ha_peer_alive {}", u8::from(s.peer_state == "alive"));
        family(&mut o, "xgw_ha_sync_lag_milliseconds", "gauge", "Age of the oldest unacknowledged sync message.");
        let _ = writeln!(o, "xgw_ha_sync_lag_milliseconds {}", s.lag_ms);
        family(&mut o, "xgw_ha_sync_total", "counter", "The sync link's counters, by name.");
        for (n, v) in &s.counters {
            let _ = writeln!(o, "xgw_ha_sync_total{{what=\"{n}\"}} {v}");
        }
    }
    if let Some(b) = &d.shared.blocks {
        counters(&mut o, "xgw_nat_blocks", &b.stats.list());
        family(&mut o, "xgw_nat_blocks_held", "gauge", "Port blocks held by inside hosts.");
        let _ = writeln!(o, "xgw_nat_blocks_held {}", b.list().len());
        family(&mut o, "xgw_nat_blocks_free", "gauge", "Port blocks free, per outside address.");
        for (a, n) in b.free_counts() {
            let a = std::net::Ipv4Addr::from(if a == 0 { d.shared.outside_addr() } else { a });
            let _ = writeln!(o, "xgw_nat_blocks_free{{address=\"{a}\"}} {n}");
        }
    }
    if let Some(l) = &d.natlog {
        counters(&mut o, "xgw_natlog", &l.stats.list());
    }
    if let Some(off) = &d.offload {
        family(&mut o, "xgw_offload_flows", "gauge", "Flows the XDP fast path carries now.");
        let _ = writeln!(o, "xgw_offload_flows {}", off.len());
        counters(&mut o, "xgw_offload", &d.shared.flows.offload.stats.list());
        counters(&mut o, "xgw_offload", &off.stats.list());
    }
    family(
        &mut o,
        "xgw_xdp_fast_declined_packets_total",
        "counter",
        "Packets of offloaded flows the XDP fast path left to the engine, per interface and reason: partial_csum (a sender's checksum offload), egress_unproven (the egress does not take XDP redirects).",
    );
    for (dev, st) in (d.xdp_declined)() {
        for (n, pk, _) in st {
            let _ = writeln!(o, "xgw_xdp_fast_declined_packets_total{{device=\"{dev}\",reason=\"{n}\"}} {pk}");
        }
    }
    if let Some(g) = &d.egress {
        family(
            &mut o,
            "xgw_fast_path_egress_ok",
            "gauge",
            "1 while the kernel says the interface takes XDP redirects (the fast path sends flows out of it), else 0.",
        );
        for e in g.egress() {
            let ok = u8::from(e.state() == crate::egress::EgressState::Proven);
            let _ = writeln!(o, "xgw_fast_path_egress_ok{{device=\"{}\"}} {ok}", e.device);
        }
        family(
            &mut o,
            "xgw_fast_path_egress_refusals_total",
            "counter",
            "Times an interface was found not to take XDP redirects.",
        );
        for e in g.egress() {
            let _ = writeln!(o, "xgw_fast_path_egress_refusals_total{{device=\"{}\"}} {}", e.device, e.refusals.get());
        }
    }
    let xdp = (d.xdp_classes)();
    if !xdp.is_empty() {
        family(
            &mut o,
            "xgw_xdp_packets_total",
            "counter",
            "Packets the XDP program classified, per interface and class.",
        );
        for (dev, cls) in &xdp {
            for (n, pk, _) in cls {
                let _ = writeln!(o, "xgw_xdp_packets_total{{device=\"{dev}\",class=\"{n}\"}} {pk}");
            }
        }
        family(
            &mut o,
            "xgw_xdp_steered_packets_total",
            "counter",
            "Where the XDP program sent packets, per interface: kernel, xsk (the engine), dropped, fast (translated in XDP).",
        );
        for (dev, st) in (d.xdp_steering)() {
            for (n, pk, _) in st {
                let _ = writeln!(o, "xgw_xdp_steered_packets_total{{device=\"{dev}\",to=\"{n}\"}} {pk}");
            }
        }
        family(&mut o, "xgw_xdp_bytes_total", "counter", "Bytes the XDP program classified, per interface and class.");
        for (dev, cls) in &xdp {
            for (n, _, b) in cls {
                let _ = writeln!(o, "xgw_xdp_bytes_total{{device=\"{dev}\",class=\"{n}\"}} {b}");
            }
        }
    }
    for (i, (name, help, _)) in xgw_dataplane::xsk::PortStats::default().list().into_iter().enumerate() {
        let metric = format!("xgw_port_{name}_total");
        family(&mut o, &metric, "counter", help);
        for (dev, q, st) in &d.ports {
            let _ = writeln!(o, "{metric}{{device=\"{dev}\",queue=\"{q}\"}} {}", st.list()[i].2);
        }
    }
    o
}

/// Serves `GET /metrics` (Prometheus text format) on `addr` from a thread of its own.
pub fn serve_metrics(addr: std::net::SocketAddr, d: Arc<Daemon>) -> std::io::Result<std::net::SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    std::thread::Builder::new().name("xgw-metrics".into()).spawn(move || {
        for req in server.incoming_requests() {
            let r = if req.method() == &tiny_http::Method::Get && req.url() == "/metrics" {
                let body = render_metrics(&d);
                let ct = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4"[..]);
                let mut resp = tiny_http::Response::from_string(body);
                if let Ok(h) = ct {
                    resp = resp.with_header(h);
                }
                req.respond(resp)
            } else {
                req.respond(tiny_http::Response::from_string("only GET /metrics here\n").with_status_code(404))
            };
            if let Err(e) = r {
                tracing::debug!("metrics client: {e}");
            }
        }
    })?;
    Ok(bound)
}
