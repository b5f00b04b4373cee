//! One request's answer: the command `match` of the control protocol.

use std::io::Write;
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use xgw_control_proto::{Filter, Request, VERSION};
use xgw_dataplane::conntrack::EventKind;
use xgw_dataplane::{Counters, DropReason};

use super::*;

pub(super) fn end(w: &mut impl Write, ok: bool, extra: Value) -> std::io::Result<()> {
    let mut m = json!({"v": VERSION, "end": true, "ok": ok});
    if let (Some(o), Value::Object(e)) = (m.as_object_mut(), extra) {
        o.extend(e);
    }
    writeln!(w, "{m}")
}

pub(super) fn item(w: &mut impl Write, v: &impl serde::Serialize) -> std::io::Result<()> {
    let line = serde_json::to_string(&json!({"v": VERSION, "item": v})).unwrap_or_default();
    writeln!(w, "{line}")
}

pub(super) fn handle(
    d: &Daemon,
    hub: &EventHub,
    req: &Request,
    uid: Option<u32>,
    w: &mut impl Write,
) -> std::io::Result<()> {
    if req.v != VERSION {
        return end(
            w,
            false,
            json!({"error": format!("protocol version {} not supported (this daemon speaks {VERSION})", req.v)}),
        );
    }
    let now = d.now();
    match req.cmd.as_str() {
        "version" => end(w, true, json!({"version": env!("CARGO_PKG_VERSION"), "protocol": VERSION})),
        "conntrack.list" | "conntrack.count" => {
            let filter: Filter = serde_json::from_value(req.args.clone()).unwrap_or_default();
            let list = req.cmd == "conntrack.list";
            let mut n = 0u64;
            let mut err = None;
            d.shared.flows.for_each(|_, f| {
                if err.is_some() {
                    return;
                }
                let v = view(f, &d.shared, now);
                if filter.matches(&v) {
                    n += 1;
                    if list {
                        if let Err(e) = item(w, &v) {
                            err = Some(e);
                        }
                    }
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            end(w, true, json!({"count": n}))
        }
        "conntrack.watch" => {
            let filter: Filter = serde_json::from_value(req.args.clone()).unwrap_or_default();
            let sub = hub.subscribe(WATCH_QUEUE);
            // the watch runs until the client goes away: a write fails (a heartbeat line
            // every second when idle finds that out)
            loop {
                let gap = sub.gap.swap(0, std::sync::atomic::Ordering::Relaxed);
                if gap > 0 {
                    writeln!(w, "{}", json!({"v": VERSION, "gap": gap}))?;
                }
                match sub.rx.recv_timeout(std::time::Duration::from_secs(1)) {
                    Ok(ev) => {
                        let v = view(&ev.flow, &d.shared, ev.at);
                        if filter.matches(&v) {
                            let kind = match ev.kind {
                                EventKind::New => "NEW",
                                EventKind::Destroy => "DESTROY",
                            };
                            item(w, &json!({"event": kind, "flow": v}))?;
                        }
                        if sub.rx.is_empty() {
                            w.flush()?;
                        }
                    }
                    Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                        writeln!(w, "{}", json!({"v": VERSION, "heartbeat": true}))?;
                        w.flush()?;
                    }
                    Err(crossbeam::channel::RecvTimeoutError::Disconnected) => return end(w, true, json!({})),
                }
            }
        }
        "conntrack.delete" | "conntrack.flush" => {
            if uid != Some(0) {
                return end(w, false, json!({"error": format!("{} needs root", req.cmd.replace('.', " "))}));
            }
            let filter: Filter = match serde_json::from_value(req.args.clone()) {
                Ok(f) => f,
                Err(e) => return end(w, false, json!({"error": format!("bad filter: {e}")})),
            };
            if req.cmd == "conntrack.delete" && filter.is_empty() {
                return end(w, false, json!({"error": "conntrack delete needs a filter (flush deletes everything)"}));
            }
            let n = d.shared.delete_flows(now, |f| filter.matches(&view(f, &d.shared, now)));
            tracing::info!(deleted = n, cmd = %req.cmd, "flows deleted from the control socket");
            end(w, true, json!({"deleted": n}))
        }
        "xlate" => {
            let filter: Filter = serde_json::from_value(req.args.clone()).unwrap_or_default();
            let (mut n, mut err) = (0u64, None);
            d.shared.flows.for_each(|_, f| {
                if err.is_some() || !filter.matches(&view(f, &d.shared, now)) {
                    return;
                }
                if let Some(x) = xlate(f, &d.shared, now) {
                    n += 1;
                    if let Err(e) = item(w, &x) {
                        err = Some(e);
                    }
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            end(w, true, json!({"count": n}))
        }
        "host" => {
            let Some(addr) = req.args.get("addr").and_then(Value::as_str).and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                return end(w, false, json!({"error": "host needs an IPv4 address"}));
            };
            let a = u32::from(addr);
            let (mut flows, mut embryonic, mut xlates, mut err) = (0u64, 0u64, 0u64, None);
            d.shared.flows.for_each(|_, f| {
                if err.is_some() || f.inside_host() != a {
                    return;
                }
                let v = view(f, &d.shared, now);
                flows += 1;
                if matches!(v.state.as_deref(), Some("SYN_SENT" | "SYN_RECV")) {
                    embryonic += 1;
                }
                if xlate(f, &d.shared, now).is_some() {
                    xlates += 1;
                }
                if let Err(e) = item(w, &v) {
                    err = Some(e);
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            let l = &d.shared.config().limits;
            end(
                w,
                true,
                json!({"host": a, "flows": flows, "embryonic": embryonic, "translations": xlates,
                       "limit_flows": l.per_host, "limit_embryonic": l.embryonic}),
            )
        }
        "rules.show" => {
            let policy = d.shared.policy();
            let Some(acl) = policy.as_any().and_then(|a| a.downcast_ref::<xgw_rules::acl::Acl>()) else {
                return end(
                    w,
                    true,
                    json!({"implicit_denies": 0, "note": "no access list is bound: everything is permitted"}),
                );
            };
            for (i, r) in acl.rules.iter().enumerate() {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut v {
                    o.insert("hits".into(), json!(acl.hits(i)));
                }
                item(w, &v)?;
            }
            let names = |b: &[Option<usize>]| -> Vec<Value> {
                b.iter()
                    .enumerate()
                    .filter_map(|(i, l)| {
                        let l = (*l)?;
                        let ifname = d.shared.config().ifaces.get(i).map_or(String::new(), |c| c.name.clone());
                        Some(json!({"interface": ifname, "list": acl.lists.get(l).map(|x| x.name.clone())}))
                    })
                    .collect()
            };
            end(
                w,
                true,
                json!({"implicit_denies": acl.implicit_denies(), "bound_in": names(&acl.bind_in), "bound_out": names(&acl.bind_out)}),
            )
        }
        "pptp" => {
            let st = &d.shared.pptp.stats;
            for s in d.shared.pptp.sessions() {
                let calls: Vec<Value> = s
                    .calls
                    .iter()
                    .map(|c| {
                        let gre = c.gre.and_then(|k| {
                            let r = d.shared.flows.lookup(&k)?;
                            d.shared.flows.with_flow(r, &k, |f, _| (f.packets, f.bytes))
                        });
                        json!({
                            "pns_call_id": c.pns_id, "translated_call_id": c.xlat_id, "pac_call_id": c.pac_id,
                            "state": format!("{:?}", c.state), "outgoing": c.outgoing,
                            "gre_packets": gre.map(|g| g.0), "gre_bytes": gre.map(|g| g.1),
                            "age": now.since(c.created).as_secs(),
                        })
                    })
                    .collect();
                let k = s.ctl_keys[0];
                item(
                    w,
                    &json!({
                        "flow_id": s.flow_id, "inside_host": ip(s.inside_host()),
                        "client": format!("{}:{}", ip(k.src), k.sport), "server": format!("{}:{}", ip(k.dst), k.dport),
                        "translated": s.translate, "state": format!("{:?}", s.state),
                        "age": now.since(s.created).as_secs(), "calls": calls,
                        "streams": s.sync().iter().zip(s.next_seq()).map(|(sync, next)| json!({
                            "sync": format!("{sync:?}"), "next_seq": next,
                        })).collect::<Vec<_>>(),
                    }),
                )?;
            }
            end(
                w,
                true,
                json!({"counters": ({
                    let mut m = family_json(&st.list());
                    m.insert("calls_in_progress".into(), json!(d.shared.pptp.calls_in_progress()));
                    // the GRE drops the ASA lists with its PPTP counters
                    for r in [DropReason::NoMatchingGreSession, DropReason::GreTruncated, DropReason::GreMalformed] {
                        m.insert(r.name().into(), json!(d.counters.iter().map(|c| c.drops(r)).sum::<u64>()));
                    }
                    m
                })}),
            )
        }
        "stats" => {
            let drops: serde_json::Map<String, Value> = DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), json!(d.counters.iter().map(|c| c.drops(*r)).sum::<u64>())))
                .filter(|(_, v)| v.as_u64() != Some(0))
                .collect();
            let sum = |f: fn(&Counters) -> u64| d.counters.iter().map(|c| f(c)).sum::<u64>();
            let xdp: Vec<Value> = (d.xdp_classes)()
                .into_iter()
                .map(|(dev, cls)| {
                    let m: serde_json::Map<String, Value> = cls
                        .into_iter()
                        .filter(|c| c.1 > 0)
                        .map(|(n, p, b)| (n.to_string(), json!({"packets": p, "bytes": b})))
                        .collect();
                    json!({"device": dev, "classes": m})
                })
                .collect();
            let t = &d.shared.flows.stats;
            let mut conntrack = family_json(&t.list());
            conntrack.insert("entries".into(), json!(d.shared.flows.len()));
            conntrack.insert("limit".into(), json!(d.shared.flows.capacity()));
            let mut pptp = family_json(&d.shared.pptp.stats.list());
            pptp.insert("calls_in_progress".into(), json!(d.shared.pptp.calls_in_progress()));
            end(
                w,
                true,
                json!({
                    "rx": sum(|c| c.rx.get()), "forwarded": sum(|c| c.forwarded.get()), "to_host": sum(|c| c.to_host.get()),
                    "icmp_generated": sum(|c| c.icmp_generated.get()), "flow_hits": sum(|c| c.flow_hits.get()),
                    "l4_csum_completed": sum(|c| c.l4_csum_completed.get()), "drops": drops,
                    "conntrack": conntrack, "pptp": pptp,
                    "xdp": xdp, "workers": d.counters.len(),
                    "outside": {"address": std::net::Ipv4Addr::from(d.shared.outside_addr()).to_string(),
                        "prefix_len": d.shared.outside_net().1, "changes": d.shared.address_changes.get(),
                        "flushed": d.shared.address_flushed.get()},
                    "xdp_steering": (d.xdp_steering)().into_iter().map(|(dev, st)| json!({"device": dev,
                        "steering": st.into_iter().map(|(n, p, _)| (n.to_string(), json!(p)))
                            .collect::<serde_json::Map<String, Value>>()})).collect::<Vec<_>>(),
                    "offload": offload_json(d),
                    "xdp_declined": (d.xdp_declined)().into_iter().map(|(dev, st)| json!({"device": dev,
                        "declined": st.into_iter().map(|(n, p, _)| (n.to_string(), json!(p)))
                            .collect::<serde_json::Map<String, Value>>()})).collect::<Vec<_>>(),
                    "egress": egress_json(d),
                    "worker_classes": xgw_ebpf_common::class::NAMES.iter().enumerate()
                        .map(|(i, n)| (n.to_string(), json!(d.workers.iter().map(|w| w.classes[i].get()).sum::<u64>())))
                        .filter(|(_, v)| v.as_u64() != Some(0))
                        .collect::<serde_json::Map<String, Value>>(),
                    "worker_unclassified": d.workers.iter().map(|w| w.unclassified.get()).sum::<u64>(),
                    "ports": d.ports.iter().map(|(dev, q, st)| {
                        let c = family_json(&st.list());
                        json!({"device": dev, "queue": q, "counters": c})
                    }).collect::<Vec<_>>(),
                }),
            )
        }
        "rules.reload" => {
            if uid != Some(0) {
                return end(w, false, json!({"error": "rules reload needs root"}));
            }
            let kill = req.args.get("kill").and_then(Value::as_bool).unwrap_or(false);
            match (d.reload)(kill) {
                Ok(report) => end(w, true, json!({"report": report})),
                Err(e) => end(w, false, json!({"error": e})),
            }
        }
        other => end(w, false, json!({"error": format!("unknown command `{other}`")})),
    }
}
