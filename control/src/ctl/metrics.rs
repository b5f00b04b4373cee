//! The Prometheus endpoint (`xgwd run --metrics ADDR`): every counter family rendered in
//! text format, served over plain HTTP.

use std::sync::Arc;

use xgw_dataplane::DropReason;

use super::*;

/// One sample per event name of a counter family labelled `event`.
pub(super) fn events(o: &mut String, metric: &str, rows: &[(&str, u64)]) {
    use std::fmt::Write as _;
    for (k, v) in rows {
        let _ = writeln!(o, "{metric}{{event=\"{k}\"}} {v}");
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
    family(&mut o, "xgw_conntrack_inserted_total", "counter", "Flows created.");
    let _ = writeln!(o, "xgw_conntrack_inserted_total {}", fl.stats.inserted.get());
    family(&mut o, "xgw_conntrack_insert_failed_total", "counter", "Flows refused: table full or key taken.");
    let _ = writeln!(o, "xgw_conntrack_insert_failed_total{{reason=\"full\"}} {}", fl.stats.insert_failed_full.get());
    let _ =
        writeln!(o, "xgw_conntrack_insert_failed_total{{reason=\"key_taken\"}} {}", fl.stats.insert_failed_key.get());
    family(&mut o, "xgw_conntrack_expired_total", "counter", "Flows expired.");
    let _ = writeln!(o, "xgw_conntrack_expired_total {}", fl.stats.expired.get());
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
    family(&mut o, "xgw_worker_packets_total", "counter", "Packets each worker received and forwarded.");
    for (i, c) in d.counters.iter().enumerate() {
        let _ = writeln!(o, "xgw_worker_packets_total{{worker=\"{i}\",what=\"rx\"}} {}", c.rx.get());
        let _ = writeln!(o, "xgw_worker_packets_total{{worker=\"{i}\",what=\"forwarded\"}} {}", c.forwarded.get());
        let _ = writeln!(o, "xgw_worker_packets_total{{worker=\"{i}\",what=\"to_host\"}} {}", c.to_host.get());
        let _ = writeln!(o, "xgw_worker_packets_total{{worker=\"{i}\",what=\"flow_hits\"}} {}", c.flow_hits.get());
        let _ = writeln!(
            o,
            "xgw_worker_packets_total{{worker=\"{i}\",what=\"l4_csum_completed\"}} {}",
            c.l4_csum_completed.get()
        );
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
    family(&mut o, "xgw_pptp_events_total", "counter", "PPTP inspector counters.");
    events(
        &mut o,
        "xgw_pptp_events_total",
        &[
            ("calls_created", p.stats.calls_created.get()),
            ("calls_torn_down", p.stats.calls_torn_down.get()),
            ("call_creation_failure", p.stats.call_creation_failure.get()),
            ("truncated_pns_message", p.stats.truncated_pns_message.get()),
            ("truncated_pac_message", p.stats.truncated_pac_message.get()),
            ("mismatched_pns_call_id", p.stats.mismatched_pns_call_id.get()),
            ("mismatched_pac_call_id", p.stats.mismatched_pac_call_id.get()),
            ("retransmitted_pac_message", p.stats.retransmitted_pac_message.get()),
            ("out_of_order_segments", p.stats.out_of_order_segments.get()),
        ],
    );
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
    if let Some(off) = &d.offload {
        family(&mut o, "xgw_offload_flows", "gauge", "Flows the XDP fast path carries now.");
        let _ = writeln!(o, "xgw_offload_flows {}", off.len());
        family(&mut o, "xgw_offload_events_total", "counter", "Fast path installs, removals and refusals.");
        events(&mut o, "xgw_offload_events_total", &off.counters());
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
    family(
        &mut o,
        "xgw_port_frames_total",
        "counter",
        "AF_XDP socket frames per interface and queue: received, transmitted, and not transmitted (no free frame, next hop unknown, handed to the host too late).",
    );
    for (dev, q, st) in &d.ports {
        for (n, v) in port_counters(st) {
            let _ = writeln!(o, "xgw_port_frames_total{{device=\"{dev}\",queue=\"{q}\",what=\"{n}\"}} {v}");
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
