//! The daemon's side of the control protocol ([`xgw_control_proto`]): the socket server
//! ([`serve`]), the listing forms of the engine's flows, the event hub behind `conntrack
//! watch`, and the Prometheus endpoint. Items are streamed, so a million flows never sit in
//! memory at once.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use xgw_control_proto::{Filter, FlowView, Request, XlateView, VERSION};
use xgw_dataplane::conntrack::{EventKind, Flow, FlowEvent, FlowKind, L4State};
use xgw_dataplane::{Counters, DropReason, Shared, Time};

/// Events a `conntrack watch` connection may have queued before further ones count as lost.
const WATCH_QUEUE: usize = 8192;

fn ip(a: u32) -> String {
    Ipv4Addr::from(a).to_string()
}

/// The listing form of a flow at `now`.
pub fn view(f: &Flow, sh: &Shared, now: Time) -> FlowView {
    let (k0, k1) = (f.keys[0], f.keys[1]);
    let gre_keys =
        (f.kind == FlowKind::Related && f.proto() == 47).then_some((f.rewrite[1].dport, k0.dport, k0.dport, k1.dport));
    FlowView {
        id: f.id,
        proto: xgw_dataplane::wire::proto::name(f.proto()),
        proto_num: f.proto(),
        timeout: f.remaining(now, &sh.config().timeouts).as_secs(),
        state: match f.l4 {
            L4State::Tcp(s) => Some(s.name().to_string()),
            _ => None,
        },
        orig: (ip(k0.src), ip(k0.dst), k0.sport, k0.dport),
        reply: (ip(k1.src), ip(k1.dst), k1.sport, k1.dport),
        gre_keys,
        packets: (f.packets[0], f.packets[1]),
        bytes: (f.bytes[0], f.bytes[1]),
        assured: f.assured(),
        unreplied: !f.seen_reply(),
        offloaded: f.status & xgw_dataplane::conntrack::status::OFFLOAD != 0,
        kind: format!("{:?}", f.kind).to_lowercase(),
        rule: f.rule,
        age: now.since(f.created).as_secs(),
    }
}

/// The translation a flow holds, if it translates anything.
pub fn xlate(f: &Flow, sh: &Shared, now: Time) -> Option<XlateView> {
    let v = view(f, sh, now);
    let t = &sh.config().timeouts;
    let total = f.timeout(t);
    let idle = total.saturating_sub(f.remaining(now, t)).as_secs();
    let (kind, inside, outside, foreign) = match (v.kind.as_str(), v.gre_keys) {
        ("snat", _) => ("PAT", (v.orig.0, v.orig.2), (v.reply.1, v.reply.3), (v.orig.1, v.orig.3)),
        ("dnat" | "hairpin", _) => ("static", (v.reply.0, v.reply.2), (v.orig.1, v.orig.3), (v.orig.0, v.orig.2)),
        ("related", Some(g)) => ("PAT", (v.orig.0, g.0), (v.reply.1, g.3), (v.orig.1, g.1)),
        ("related", None) if v.orig.0 != v.reply.1 => {
            ("PAT", (v.orig.0, v.orig.2), (v.reply.1, v.reply.3), (v.orig.1, v.orig.3))
        }
        _ => return None,
    };
    Some(XlateView {
        kind: kind.into(),
        proto: v.proto,
        inside,
        outside,
        foreign,
        idle,
        timeout: total.as_secs(),
        flow_id: v.id,
    })
}

/// Fans the engine's flow events out to `conntrack watch` connections. Each watcher has a
/// bounded queue; an event that does not fit is counted in the watcher's gap, as are events
/// the engine's own ring dropped, and the watcher is told the gap before its next event:
/// a slow reader loses events, never silently.
#[derive(Debug, Default)]
pub struct EventHub {
    subs: std::sync::Mutex<Vec<Watcher>>,
}

#[derive(Debug)]
struct Watcher {
    tx: crossbeam::channel::Sender<FlowEvent>,
    gap: Arc<std::sync::atomic::AtomicU64>,
}

/// A watcher's end: its events and its count of lost ones.
#[derive(Debug)]
pub struct Subscription {
    /// Events in order.
    pub rx: crossbeam::channel::Receiver<FlowEvent>,
    /// Events lost since last read.
    pub gap: Arc<std::sync::atomic::AtomicU64>,
}

impl EventHub {
    /// A new watcher with room for `capacity` queued events.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = crossbeam::channel::bounded(capacity);
        let gap = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.lock().push(Watcher { tx, gap: Arc::clone(&gap) });
        Subscription { rx, gap }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        self.subs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands `ev` to every watcher (a full queue counts a gap; a gone watcher is dropped).
    pub fn publish(&self, ev: &FlowEvent) {
        use crossbeam::channel::TrySendError;
        self.lock().retain(|w| match w.tx.try_send(*ev) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                w.gap.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Counts `n` events lost before the hub saw them (the engine's ring was full).
    pub fn lost(&self, n: u64) {
        for w in self.lock().iter() {
            w.gap.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Watchers connected.
    pub fn watchers(&self) -> usize {
        self.lock().len()
    }
}

/// Moves the engine's flow events to the hub every few milliseconds, until the process
/// ends. Build/teardown events are also logged (debug level).
fn pump_events(d: &Daemon, hub: &EventHub) {
    let flows = &d.shared.flows;
    let mut dropped_seen = flows.stats.events_dropped.get();
    loop {
        let dropped = flows.stats.events_dropped.get();
        if dropped > dropped_seen {
            hub.lost(dropped - dropped_seen);
            dropped_seen = dropped;
        }
        let mut n = 0;
        while let Some(ev) = flows.pop_event() {
            if d.shared.asa_log.load(std::sync::atomic::Ordering::Relaxed) {
                let v = view(&ev.flow, &d.shared, ev.at);
                let lines = match ev.kind {
                    EventKind::New => crate::asa::built(&v, d.shared.config()),
                    EventKind::Destroy => crate::asa::teardown(&v, d.shared.config()),
                };
                for l in lines {
                    tracing::info!("{l}");
                }
            } else if tracing::enabled!(tracing::Level::DEBUG) {
                let v = view(&ev.flow, &d.shared, ev.at);
                let what = match ev.kind {
                    EventKind::New => "built",
                    EventKind::Destroy => "teardown",
                };
                tracing::debug!(flow = v.id, kind = %v.kind, "{what} {} {}:{} -> {}:{} (reply {}:{} -> {}:{})",
                    v.proto, v.orig.0, v.orig.2, v.orig.1, v.orig.3, v.reply.0, v.reply.2, v.reply.1, v.reply.3);
            }
            hub.publish(&ev);
            n += 1;
            if n >= 65_536 {
                break;
            }
        }
        if n < 65_536 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// One interface's XDP counters: (device, [(class, packets, bytes)]).
pub type XdpClasses = (String, Vec<(&'static str, u64, u64)>);

/// What the daemon serves from.
pub struct Daemon {
    /// Shared engine state.
    pub shared: Arc<Shared>,
    /// Every worker's counters.
    pub counters: Vec<Arc<Counters>>,
    /// Engine time base.
    pub base: Instant,
    /// Reloads the access policy from the rules file (kill denied flows?) → JSON report.
    pub reload: Box<dyn Fn(bool) -> Result<Value, String> + Send + Sync>,
    /// XDP per-class counters of every interface.
    pub xdp_classes: Box<dyn Fn() -> Vec<XdpClasses> + Send + Sync>,
    /// XDP steering counters of every interface (kernel, xsk, dropped, fast).
    pub xdp_steering: Box<dyn Fn() -> Vec<XdpClasses> + Send + Sync>,
    /// Packets of offloaded flows the fast path left to the engine, per interface and reason.
    pub xdp_declined: Box<dyn Fn() -> Vec<XdpClasses> + Send + Sync>,
    /// The XDP fast path, when on.
    pub offload: Option<Arc<crate::offload::XdpOffload>>,
    /// Which interfaces take the fast path's redirects, when it is on.
    pub egress: Option<Arc<crate::egress::EgressGuard>>,
    /// Every worker's counters (frames per class as the XDP program marked them).
    pub workers: Vec<Arc<xgw_dataplane::xsk::WorkerStats>>,
    /// Every AF_XDP socket's counters: device, queue, counters (frames the engine forwarded
    /// but the worker could not transmit are counted here).
    pub ports: Vec<(String, u32, Arc<xgw_dataplane::xsk::PortStats>)>,
}

/// An AF_XDP socket's counters by name.
pub fn port_counters(s: &xgw_dataplane::xsk::PortStats) -> [(&'static str, u64); 10] {
    [
        ("rx", s.rx.get()),
        ("tx", s.tx.get()),
        ("tx_no_frame", s.tx_no_frame.get()),
        ("tx_no_neighbour", s.tx_no_neighbour.get()),
        ("tx_neigh_waited", s.tx_neigh_waited.get()),
        ("tx_neigh_queue_full", s.tx_neigh_queue_full.get()),
        ("tx_no_route", s.tx_no_route.get()),
        ("to_host_lost", s.to_host_lost.get()),
        ("xsk_rx_dropped", s.xsk_rx_dropped.get()),
        ("xsk_rx_ring_full", s.xsk_rx_ring_full.get()),
    ]
}

impl core::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Daemon").field("workers", &self.counters.len()).finish()
    }
}

impl Daemon {
    fn now(&self) -> Time {
        Time(u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The fast path's state and counters (null when it is off).
fn offload_json(d: &Daemon) -> Value {
    let t = &d.shared.flows.offload.stats;
    match &d.offload {
        None => Value::Null,
        Some(o) => {
            let mut m = serde_json::Map::new();
            m.insert("flows".into(), json!(o.len()));
            m.insert("requested".into(), json!(t.requested.get()));
            m.insert("queue_full".into(), json!(t.queue_full.get()));
            m.insert("withdrawn".into(), json!(t.withdrawn.get()));
            m.insert("withdraw_queued".into(), json!(t.withdraw_queued.get()));
            m.insert("withdraw_queue_full".into(), json!(t.withdraw_queue_full.get()));
            m.extend(o.counters().into_iter().map(|(k, v)| (k.to_string(), json!(v))));
            Value::Object(m)
        }
    }
}

/// Each interface's standing as an egress of the fast path (empty when the fast path is off).
fn egress_json(d: &Daemon) -> Value {
    let Some(g) = &d.egress else { return json!([]) };
    json!(g
        .egress()
        .iter()
        .map(|e| json!({"device": e.device, "state": e.state().name(), "refusals": e.refusals.get()}))
        .collect::<Vec<_>>())
}

/// One sample per event name of a counter family labelled `event`.
fn events(o: &mut String, metric: &str, rows: &[(&str, u64)]) {
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

/// The uid of the process at the other end of a unix socket (SO_PEERCRED).
#[expect(unsafe_code, reason = "getsockopt(SO_PEERCRED) has no safe wrapper in std or libc")]
pub fn peer_uid(s: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; SO_PEERCRED fills a
    // `ucred` on a connected unix socket, whose fd stays open for the call.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

fn end(w: &mut impl Write, ok: bool, extra: Value) -> std::io::Result<()> {
    let mut m = json!({"v": VERSION, "end": true, "ok": ok});
    if let (Some(o), Value::Object(e)) = (m.as_object_mut(), extra) {
        o.extend(e);
    }
    writeln!(w, "{m}")
}

fn item(w: &mut impl Write, v: &impl serde::Serialize) -> std::io::Result<()> {
    let line = serde_json::to_string(&json!({"v": VERSION, "item": v})).unwrap_or_default();
    writeln!(w, "{line}")
}

fn handle(d: &Daemon, hub: &EventHub, req: &Request, uid: Option<u32>, w: &mut impl Write) -> std::io::Result<()> {
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
                json!({"counters": {
                    "calls_in_progress": d.shared.pptp.calls_in_progress(),
                    "calls_created": st.calls_created.get(), "calls_torn_down": st.calls_torn_down.get(),
                    "call_creation_failure": st.call_creation_failure.get(),
                    "truncated_pns_message": st.truncated_pns_message.get(), "truncated_pac_message": st.truncated_pac_message.get(),
                    "mismatched_pns_call_id": st.mismatched_pns_call_id.get(), "mismatched_pac_call_id": st.mismatched_pac_call_id.get(),
                    "retransmitted_pac_message": st.retransmitted_pac_message.get(),
                    "out_of_order_segments": st.out_of_order_segments.get(),
                    "no_matching_gre_session": d.counters.iter().map(|c| c.drops(DropReason::NoMatchingGreSession)).sum::<u64>(),
                    "truncated_gre": d.counters.iter().map(|c| c.drops(DropReason::GreTruncated)).sum::<u64>(),
                    "unknown_gre": d.counters.iter().map(|c| c.drops(DropReason::GreMalformed)).sum::<u64>(),
                }}),
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
            end(
                w,
                true,
                json!({
                    "rx": sum(|c| c.rx.get()), "forwarded": sum(|c| c.forwarded.get()), "to_host": sum(|c| c.to_host.get()),
                    "icmp_generated": sum(|c| c.icmp_generated.get()), "flow_hits": sum(|c| c.flow_hits.get()),
                    "l4_csum_completed": sum(|c| c.l4_csum_completed.get()), "drops": drops,
                    "conntrack": {"entries": d.shared.flows.len(), "limit": d.shared.flows.capacity(),
                        "inserted": t.inserted.get(), "insert_failed": t.insert_failed_full.get() + t.insert_failed_key.get(),
                        "expired": t.expired.get(), "events_dropped": t.events_dropped.get()},
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
                        let c: serde_json::Map<String, Value> =
                            port_counters(st).into_iter().map(|(n, v)| (n.to_string(), json!(v))).collect();
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

/// Listens on `path` (mode 0660) and answers requests, one thread per connection, until
/// the process ends.
pub fn serve(path: &Path, d: Arc<Daemon>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))?;
    let hub = Arc::new(EventHub::default());
    {
        let (d, hub) = (Arc::clone(&d), Arc::clone(&hub));
        std::thread::Builder::new().name("xgw-events".into()).spawn(move || pump_events(&d, &hub))?;
    }
    std::thread::Builder::new().name("xgw-control".into()).spawn(move || {
        for conn in l.incoming().flatten() {
            let d = Arc::clone(&d);
            let hub = Arc::clone(&hub);
            let _ = std::thread::Builder::new().name("xgw-control-conn".into()).spawn(move || {
                let uid = peer_uid(&conn);
                let Ok(read) = conn.try_clone() else { return };
                let mut w = std::io::BufWriter::new(conn);
                for line in BufReader::new(read).lines() {
                    let Ok(line) = line else { break };
                    let r = match serde_json::from_str::<Request>(&line) {
                        Ok(req) => handle(&d, &hub, &req, uid, &mut w),
                        Err(e) => end(&mut w, false, json!({"error": format!("bad request: {e}")})),
                    };
                    if r.is_err() || w.flush().is_err() {
                        break;
                    }
                }
            });
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u32) -> FlowEvent {
        use xgw_dataplane::conntrack::{FlowKey, Rewrite};
        let k = FlowKey { src: i, dst: 1, sport: 1, dport: 2, proto: 17 };
        let flow = Flow::new([k, k], [Rewrite::default(); 2], L4State::Other, FlowKind::Snat, Time::ZERO);
        FlowEvent { kind: EventKind::New, flow, at: Time::ZERO }
    }

    #[test]
    fn a_slow_watcher_sees_a_counted_gap_and_a_gone_one_is_dropped() {
        let hub = EventHub::default();
        let slow = hub.subscribe(2);
        let fast = hub.subscribe(16);
        for i in 0..5 {
            hub.publish(&event(i));
        }
        assert_eq!(slow.rx.len(), 2);
        assert_eq!(slow.gap.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(fast.rx.len(), 5);
        assert_eq!(fast.gap.load(std::sync::atomic::Ordering::Relaxed), 0);
        // events the engine's ring dropped count for everyone
        hub.lost(4);
        assert_eq!(slow.gap.load(std::sync::atomic::Ordering::Relaxed), 7);
        assert_eq!(fast.gap.load(std::sync::atomic::Ordering::Relaxed), 4);
        assert_eq!(fast.rx.try_recv().map(|e| e.flow.keys[0].src).ok(), Some(0), "in order");
        drop(slow);
        hub.publish(&event(9));
        assert_eq!(hub.watchers(), 1);
    }
}
