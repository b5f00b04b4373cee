//! One request's answer: a typed [`Command`] in, typed [`Line`]s out.

use std::io::Write;
use std::net::Ipv4Addr;

use serde::Serialize;
use xgw_control_proto::answer::{
    Binding, Count, Deleted, Empty, EventKind as WireEvent, HostSummary, PptpCall, PptpCounters, PptpSession,
    PptpStream, RuleView, RulesShown, VersionInfo, WatchEvent,
};
use xgw_control_proto::{Body, Command, Filter, Line, Request, VERSION};
use xgw_dataplane::conntrack::EventKind;
use xgw_dataplane::DropReason;

use super::*;

/// Writes one line of an answer.
fn line<I: Serialize, E: Serialize>(w: &mut impl Write, body: Body<I, E>) -> std::io::Result<()> {
    let l = serde_json::to_string(&Line::new(body)).map_err(std::io::Error::other)?;
    writeln!(w, "{l}")
}

/// Ends an answer with the command's result.
pub(super) fn done(w: &mut impl Write, result: &impl Serialize) -> std::io::Result<()> {
    line::<(), _>(w, Body::Done(result))
}

/// Ends an answer with an error.
pub(super) fn fail(w: &mut impl Write, error: impl Into<String>) -> std::io::Result<()> {
    line::<(), ()>(w, Body::Error(error.into()))
}

fn item(w: &mut impl Write, v: &impl Serialize) -> std::io::Result<()> {
    line::<_, ()>(w, Body::Item(v))
}

pub(super) fn handle(
    d: &Daemon,
    hub: &EventHub,
    req: &Request,
    uid: Option<u32>,
    w: &mut impl Write,
) -> std::io::Result<()> {
    if req.v != VERSION {
        return fail(w, format!("protocol version {} not supported (this daemon speaks {VERSION})", req.v));
    }
    if req.cmd.needs_root() && uid != Some(0) {
        return fail(w, format!("{} needs root", req.cmd.name()));
    }
    let now = d.now();
    match &req.cmd {
        Command::Version => done(w, &VersionInfo { version: env!("CARGO_PKG_VERSION").into(), protocol: VERSION }),
        Command::ConntrackList(filter) => list_flows(d, filter, w, true),
        Command::ConntrackCount(filter) => list_flows(d, filter, w, false),
        Command::ConntrackWatch(filter) => watch(d, hub, filter, w),
        Command::ConntrackDelete(filter) if filter.is_empty() => {
            fail(w, "conntrack delete needs a filter (flush deletes everything)")
        }
        Command::ConntrackDelete(filter) => delete(d, filter, w),
        Command::ConntrackFlush => delete(d, &Filter::default(), w),
        Command::Xlate(filter) => {
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
            err.map_or(Ok(()), Err)?;
            done(w, &Count { count: n })
        }
        Command::Host { addr } => host(d, *addr, w),
        Command::RulesShow => rules_show(d, w),
        Command::Pptp => pptp(d, w),
        Command::Stats => done(w, &stats(d)),
        Command::RulesReload { kill } => match (d.reload)(*kill) {
            Ok(report) => done(w, &report),
            Err(e) => fail(w, e),
        },
        Command::HaStatus => done(w, &ha_status(d)),
        Command::HaRole { role } => match (&d.ha, crate::ha::Role::parse(role)) {
            (None, _) => fail(w, "HA is not configured (no [ha] table in xgwd's settings file)"),
            (Some(_), None) => fail(w, format!("`{role}`: the role is master, backup or fault")),
            (Some(ha), Some(r)) => {
                ha.set_role(r);
                done(w, &ha.status())
            }
        },
    }
}

/// The HA status, or a disabled one when the gateway runs alone.
pub(super) fn ha_status(d: &Daemon) -> xgw_control_proto::answer::HaStatus {
    match &d.ha {
        Some(ha) => ha.status(),
        None => xgw_control_proto::answer::HaStatus::alone(),
    }
}

fn list_flows(d: &Daemon, filter: &Filter, w: &mut impl Write, list: bool) -> std::io::Result<()> {
    if let (true, Some(off)) = (list, &d.offload) {
        // the offloaded flows' counters as the XDP program has them now, not as of the
        // offload thread's last round (seconds apart)
        off.sync(&d.shared);
    }
    let now = d.now();
    let (mut n, mut err) = (0u64, None);
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
    err.map_or(Ok(()), Err)?;
    done(w, &Count { count: n })
}

/// Streams events until the client goes away: a write fails (a heartbeat line every second
/// when idle finds that out).
fn watch(d: &Daemon, hub: &EventHub, filter: &Filter, w: &mut impl Write) -> std::io::Result<()> {
    let sub = hub.subscribe(WATCH_QUEUE);
    loop {
        let gap = sub.gap.swap(0, std::sync::atomic::Ordering::Relaxed);
        if gap > 0 {
            line::<(), ()>(w, Body::Gap(gap))?;
        }
        match sub.rx.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(ev) => {
                let flow = view(&ev.flow, &d.shared, ev.at);
                if filter.matches(&flow) {
                    let event = match ev.kind {
                        EventKind::New => WireEvent::New,
                        EventKind::Destroy => WireEvent::Destroy,
                    };
                    item(w, &WatchEvent { event, flow })?;
                }
                if sub.rx.is_empty() {
                    w.flush()?;
                }
            }
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                line::<(), ()>(w, Body::Heartbeat {})?;
                w.flush()?;
            }
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => return done(w, &Empty {}),
        }
    }
}

fn delete(d: &Daemon, filter: &Filter, w: &mut impl Write) -> std::io::Result<()> {
    let now = d.now();
    let n = d.shared.delete_flows(now, |f| filter.matches(&view(f, &d.shared, now)));
    tracing::info!(deleted = n, "flows deleted from the control socket");
    done(w, &Deleted { deleted: n as u64 })
}

fn host(d: &Daemon, addr: Ipv4Addr, w: &mut impl Write) -> std::io::Result<()> {
    let now = d.now();
    let a = u32::from(addr);
    let (mut flows, mut embryonic, mut translations, mut err) = (0u64, 0u64, 0u64, None);
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
            translations += 1;
        }
        if let Err(e) = item(w, &v) {
            err = Some(e);
        }
    });
    err.map_or(Ok(()), Err)?;
    let l = &d.shared.config().limits;
    done(
        w,
        &HostSummary {
            host: addr,
            flows,
            embryonic,
            translations,
            limit_flows: l.per_host,
            limit_embryonic: l.embryonic,
        },
    )
}

fn rules_show(d: &Daemon, w: &mut impl Write) -> std::io::Result<()> {
    let policy = d.shared.policy();
    let Some(acl) = policy.as_any().and_then(|a| a.downcast_ref::<xgw_rules::acl::Acl>()) else {
        return done(
            w,
            &RulesShown {
                implicit_denies: 0,
                bound_in: vec![],
                bound_out: vec![],
                note: Some("no access list is bound: everything is permitted".into()),
            },
        );
    };
    for (i, r) in acl.rules.iter().enumerate() {
        let v = RuleView {
            id: r.id,
            list: r.list.clone(),
            permit: r.permit,
            log: r.log,
            text: r.text.clone(),
            file: r.file.clone(),
            line: r.line,
            hits: acl.hits(i),
        };
        item(w, &v)?;
    }
    let names = |b: &[Option<usize>]| -> Vec<Binding> {
        b.iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let list = acl.lists.get((*l)?)?.name.clone();
                let interface = d.shared.config().ifaces.get(i).map_or(String::new(), |c| c.name.clone());
                Some(Binding { interface, list })
            })
            .collect()
    };
    done(
        w,
        &RulesShown {
            implicit_denies: acl.implicit_denies(),
            bound_in: names(&acl.bind_in),
            bound_out: names(&acl.bind_out),
            note: None,
        },
    )
}

fn pptp(d: &Daemon, w: &mut impl Write) -> std::io::Result<()> {
    let now = d.now();
    for s in d.shared.pptp.sessions() {
        let calls = s
            .calls
            .iter()
            .map(|c| {
                let gre = c.gre.and_then(|k| {
                    let r = d.shared.flows.lookup(&k)?;
                    d.shared.flows.with_flow(r, &k, |f, _| (f.packets, f.bytes))
                });
                PptpCall {
                    pns_call_id: c.pns_id,
                    translated_call_id: c.xlat_id,
                    pac_call_id: c.pac_id,
                    state: format!("{:?}", c.state),
                    outgoing: c.outgoing,
                    gre_packets: gre.map(|g| g.0),
                    gre_bytes: gre.map(|g| g.1),
                    age: now.since(c.created).as_secs(),
                }
            })
            .collect();
        let k = s.ctl_keys[0];
        let session = PptpSession {
            flow_id: s.flow_id,
            inside_host: ip(s.inside_host()),
            client: format!("{}:{}", ip(k.src), k.sport),
            server: format!("{}:{}", ip(k.dst), k.dport),
            translated: s.translate,
            state: format!("{:?}", s.state),
            age: now.since(s.created).as_secs(),
            calls,
            streams: s
                .sync()
                .iter()
                .zip(s.next_seq())
                .map(|(sync, next_seq)| PptpStream { sync: format!("{sync:?}"), next_seq })
                .collect(),
        };
        item(w, &session)?;
    }
    let mut counters = family(&d.shared.pptp.stats.list());
    counters.insert("calls_in_progress".into(), d.shared.pptp.calls_in_progress() as u64);
    // the GRE drops ASA lists with its PPTP counters
    for r in [DropReason::NoMatchingGreSession, DropReason::GreTruncated, DropReason::GreMalformed] {
        counters.insert(r.name().into(), d.counters.iter().map(|c| c.drops(r)).sum());
    }
    done(w, &PptpCounters { counters })
}
