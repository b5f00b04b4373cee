//! xgwctl against a control socket served by the daemon's own code over an engine that has
//! seen a fixture of frames (no kernel needed): every command's text and JSON output.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use xgw_control::ctl::{serve, Daemon};
use xgw_dataplane::{Engine, FrameBuf, IfaceId, RxMeta, Shared, Time, Verdict};

const RULES: &str = "\
interface lan device xgw-in  role inside  address 10.10.0.1/24
interface wan device xgw-out role outside address 198.51.100.1/24
nat overload ports 1024-65535 preserve-port on
forward tcp 2222 to 10.10.0.10 22
limit per-host 100
limit embryonic 10
access-list lan_out permit tcp any any eq https
access-list lan_out permit udp any any eq domain
access-list lan_out deny   tcp any any eq telnet
access-group lan_out in interface lan
";

const LAN: IfaceId = IfaceId(0);
const WAN: IfaceId = IfaceId(1);

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 65535);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("frame");
    v
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, b"q")
        .expect("frame");
    v
}

struct Fixture {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    shared: Arc<Shared>,
    daemon: Arc<Daemon>,
}

/// Loads RULES, runs the fixture frames through an engine and serves the control socket.
fn daemon() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let compiled = xgw_rules::compile("test.rules", RULES, &|_| Err("no includes".into())).expect("rules compile");
    let shared = Arc::new(Shared::new(compiled.engine).expect("config"));
    shared.set_policy(Box::new(compiled.acl));
    let mut e = Engine::new(Arc::clone(&shared));
    let mut run = |f: Vec<u8>, iface: IfaceId| {
        let mut buf = f.clone();
        buf.resize(2048, 0);
        let mut fr = FrameBuf { buf: &mut buf[..], len: f.len() };
        e.process(&mut fr, RxMeta { iface }, Time::from_secs(10))
    };
    // an established HTTPS connection of 10.10.0.5, a DNS query of 10.10.0.5 and one of 10.10.0.6
    assert_eq!(run(tcp([10, 10, 0, 5], [192, 0, 2, 80], 20000, 443, true, false), LAN), Verdict::Forward(WAN));
    assert_eq!(run(tcp([192, 0, 2, 80], [198, 51, 100, 1], 443, 20000, true, true), WAN), Verdict::Forward(LAN));
    assert_eq!(run(tcp([10, 10, 0, 5], [192, 0, 2, 80], 20000, 443, false, true), LAN), Verdict::Forward(WAN));
    assert_eq!(run(udp([10, 10, 0, 5], [192, 0, 2, 53], 5353, 53), LAN), Verdict::Forward(WAN));
    assert_eq!(run(udp([10, 10, 0, 6], [192, 0, 2, 53], 5353, 53), LAN), Verdict::Forward(WAN));
    // a half-open connection to the forwarded SSH port
    assert_eq!(run(tcp([192, 0, 2, 99], [198, 51, 100, 1], 50000, 2222, true, false), WAN), Verdict::Forward(LAN));
    // telnet is denied by rule
    assert!(matches!(run(tcp([10, 10, 0, 5], [192, 0, 2, 80], 20001, 23, true, false), LAN), Verdict::Drop(_)));
    let socket = dir.path().join("xgw.sock");
    let base = Instant::now() - std::time::Duration::from_secs(12);
    let d = Daemon {
        shared: Arc::clone(&shared),
        counters: vec![Arc::clone(e.counters())],
        base,
        reload: Box::new(|_| Err("not in this test".into())),
        xdp_classes: Box::new(Vec::new),
        xdp_steering: Box::new(Vec::new),
        xdp_declined: Box::new(|| {
            vec![("xgw-out".into(), vec![("partial_csum", 7, 700), ("egress_unproven", 2, 200)])]
        }),
        offload: None,
        egress: None,
        workers: Vec::new(),
        ha: None,
        natlog: None,
        ports: vec![("xgw-out".into(), 0, {
            let p = xgw_dataplane::xsk::PortStats::default();
            p.rx.add(5);
            p.tx_no_frame.add(3);
            Arc::new(p)
        })],
    };
    let daemon = Arc::new(d);
    serve(&socket, Arc::clone(&daemon)).expect("serve");
    Fixture { _dir: dir, socket, shared, daemon }
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xgwctl")).arg("--socket").arg(socket).args(args).output().expect("run xgwctl")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "xgwctl failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).expect("utf8")
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o).lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

#[test]
fn conntrack_list_count_text_and_json() {
    let f = daemon();
    let text = stdout(&ctl(&f.socket, &["conntrack", "list", "-p", "tcp", "--dport", "443"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with("tcp      6 ")
            && lines[0].contains(
                " ESTABLISHED src=10.10.0.5 dst=192.0.2.80 sport=20000 dport=443 packets=2 bytes=80 \
                 src=192.0.2.80 dst=198.51.100.1 sport=443 dport=20000 packets=1 bytes=40 [ASSURED] use=1 id="
            ),
        "{}",
        lines[0]
    );
    let all = json_lines(&ctl(&f.socket, &["-o", "json", "conntrack", "list"]));
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|v| v["id"].as_u64().is_some() && v["proto"].is_string()));
    assert_eq!(stdout(&ctl(&f.socket, &["conntrack", "count", "-s", "10.10.0.0/24"])).trim(), "3");
    assert_eq!(json_lines(&ctl(&f.socket, &["-o", "json", "conntrack", "count", "-p", "udp"]))[0]["count"], 2);
    let table = stdout(&ctl(&f.socket, &["-o", "table", "conntrack", "list", "-p", "udp"]));
    assert!(table.starts_with("PROTO  STATE  ORIGINAL"), "{table}");
    assert_eq!(table.lines().count(), 3);
}

#[test]
fn xlate_lists_pat_and_static_translations() {
    let f = daemon();
    let text = stdout(&ctl(&f.socket, &["xlate"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let has = |p: &str| assert!(lines.iter().any(|l| l.starts_with(p)), "no line starting {p:?} in\n{text}");
    has("TCP PAT from inside:10.10.0.10/22 to outside:198.51.100.1/2222 flags s idle 0:00:02 timeout 0:");
    has("TCP PAT from inside:10.10.0.5/20000 to outside:198.51.100.1/20000 flags ri idle 0:00:02 timeout 120:00:00");
    has("UDP PAT from inside:10.10.0.6/5353 to outside:198.51.100.1/");
    let json = json_lines(&ctl(&f.socket, &["-o", "json", "xlate", "-s", "10.10.0.5"]));
    assert_eq!(json.len(), 2);
    assert!(json.iter().all(|x| x["kind"] == "PAT" && x["inside"][0] == "10.10.0.5"));
}

#[test]
fn host_shows_one_inside_hosts_flows_and_limits() {
    let f = daemon();
    let text = stdout(&ctl(&f.socket, &["host", "10.10.0.5"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "host 10.10.0.5");
    assert_eq!(lines[1], "  flows 2 (limit 100), embryonic 0 (limit 10), translations 2");
    assert_eq!(lines.len(), 4, "{text}");
    let j = json_lines(&ctl(&f.socket, &["-o", "json", "host", "10.10.0.10"]));
    assert_eq!(j[0]["counts"]["flows"], 1);
    assert_eq!(j[0]["counts"]["embryonic"], 1, "the half-open forwarded connection counts against the server");
    let bad = ctl(&f.socket, &["host", "not-an-address"]);
    assert_eq!(bad.status.code(), Some(2), "clap refuses it as a bad command line");
}

#[test]
fn rules_show_lists_rules_with_ids_and_hits() {
    let f = daemon();
    let text = stdout(&ctl(&f.socket, &["rules", "show"]));
    assert!(text.starts_with("access-group lan_out in interface lan\n"), "{text}");
    let https = text.lines().find(|l| l.contains("permit tcp any any eq https")).expect("https rule");
    assert_eq!(https.split_whitespace().rev().take(2).collect::<Vec<_>>(), ["test.rules:7", "1"], "{https}");
    let telnet = text.lines().find(|l| l.contains("deny tcp any any eq telnet")).expect("telnet rule");
    assert_eq!(telnet.split_whitespace().rev().take(2).collect::<Vec<_>>(), ["test.rules:9", "1"], "{telnet}");
    assert!(text.ends_with("implicit deny: 0 hits\n"));
    let j = json_lines(&ctl(&f.socket, &["-o", "json", "rules", "show"]));
    let rules = j[0]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[1]["hits"], 2, "two DNS flows");
    assert!(rules.iter().all(|r| r["id"].as_u64().is_some_and(|i| i != 0)));
}

#[test]
fn delete_and_flush_remove_flows_and_their_translations() {
    let f = daemon();
    let refused = ctl(&f.socket, &["conntrack", "delete"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs a filter"));
    assert_eq!(f.shared.flows.len(), 4, "nothing deleted by a refused delete");
    let o = ctl(&f.socket, &["conntrack", "delete", "-p", "udp", "-s", "10.10.0.6"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 flow entries have been deleted."));
    assert_eq!(f.shared.flows.len(), 3);
    assert!(!stdout(&ctl(&f.socket, &["xlate"])).contains("10.10.0.6"));
    let id = json_lines(&ctl(&f.socket, &["-o", "json", "conntrack", "list", "--dport", "443"]))[0]["id"].clone();
    let o = ctl(&f.socket, &["-o", "json", "conntrack", "delete", "--id", &id.to_string()]);
    assert_eq!(json_lines(&o)[0]["deleted"], 1);
    assert_eq!(stdout(&ctl(&f.socket, &["conntrack", "count", "--dport", "443"])).trim(), "0");
    let o = ctl(&f.socket, &["-o", "json", "conntrack", "flush"]);
    assert_eq!(json_lines(&o)[0]["deleted"], 2);
    assert!(f.shared.flows.is_empty());
}

#[test]
fn unreachable_daemon_has_its_own_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = ctl(&dir.path().join("none.sock"), &["conntrack", "list"]);
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn completions_and_man_pages_are_generated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bash = stdout(&ctl(dir.path(), &["completions", "bash"]));
    assert!(bash.contains("_xgwctl()") && bash.contains("conntrack") && bash.contains("xlate"));
    let o = ctl(dir.path(), &["man", dir.path().join("man").to_str().expect("path")]);
    assert!(o.status.success());
    let page = std::fs::read_to_string(dir.path().join("man/xgwctl.1")).expect("xgwctl.1");
    assert!(page.contains(".TH xgwctl") && page.contains("conntrack"), "{page}");
    assert!(dir.path().join("man/xgwctl-conntrack.1").exists());
}

#[test]
fn mutations_need_root_reads_do_not() {
    // the suite runs as root (tools/test); a reader in the socket's group is played by
    // `nobody` with the socket opened to everyone
    let f = daemon();
    std::fs::set_permissions(&f.socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).expect("chmod");
    std::fs::set_permissions(f.socket.parent().expect("dir"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod dir");
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_xgwctl"), "--socket"])
            .arg(&f.socket)
            .args(args)
            .output()
            .expect("setpriv")
    };
    assert_eq!(stdout(&as_nobody(&["conntrack", "count"])).trim(), "4");
    let o = as_nobody(&["conntrack", "flush"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("conntrack flush needs root"), "{o:?}");
    assert_eq!(f.shared.flows.len(), 4);
}

#[test]
fn watch_streams_events_as_they_happen() {
    use std::io::BufRead;
    let f = daemon();
    let mut json = Command::new(env!("CARGO_BIN_EXE_xgwctl"))
        .arg("--socket")
        .arg(&f.socket)
        .args(["-o", "json", "conntrack", "watch", "-p", "udp"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let mut text = Command::new(env!("CARGO_BIN_EXE_xgwctl"))
        .arg("--socket")
        .arg(&f.socket)
        .args(["conntrack", "watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn watch");
    // let both subscribe before anything happens
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(ctl(&f.socket, &["conntrack", "flush"]).status.success());
    let read = |child: &mut std::process::Child, n: usize| -> Vec<String> {
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        (0..n).map_while(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).ok()).collect()
    };
    let j = read(&mut json, 2);
    let t = read(&mut text, 4);
    // end only the processes this test started
    let _ = json.kill();
    let _ = text.kill();
    let _ = (json.wait(), text.wait());
    assert_eq!(j.len(), 2, "two UDP flows were flushed: {j:?}");
    for l in &j {
        let v: Value = serde_json::from_str(l).expect("ndjson");
        assert_eq!(v["event"], "DESTROY");
        assert_eq!(v["flow"]["proto"], "udp");
    }
    assert_eq!(t.len(), 4, "{t:?}");
    assert!(t.iter().all(|l| l.starts_with("[DESTROY] ")), "{t:?}");
    assert!(t.iter().any(|l| l.contains("tcp      6 ") && l.contains("sport=20000 dport=443")), "{t:?}");
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    use std::io::{Read, Write};
    let f = daemon();
    let addr = xgw_control::ctl::serve_metrics("127.0.0.1:0".parse().expect("addr"), Arc::clone(&f.daemon))
        .expect("metrics endpoint");
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("send");
        let mut r = String::new();
        s.read_to_string(&mut r).expect("read");
        r
    };
    let r = get("/metrics");
    assert!(r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"), "{r}");
    let body = r.split("\r\n\r\n").nth(1).expect("body");
    let has = |line: &str| assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    has("xgw_conntrack_entries 4");
    has("# TYPE xgw_drops_total counter");
    has("xgw_nat_ports_in_use{address=\"198.51.100.1\"} 4");
    has("xgw_pptp_calls_in_progress 0");
    has("xgw_port_tx_no_frame_total{device=\"xgw-out\",queue=\"0\"} 3");
    has("xgw_xdp_fast_declined_packets_total{device=\"xgw-out\",reason=\"partial_csum\"} 7");
    has("xgw_xdp_fast_declined_packets_total{device=\"xgw-out\",reason=\"egress_unproven\"} 2");
    has("xgw_worker_packets_total{worker=\"0\",what=\"rx\"} 7");
    assert!(
        body.lines().any(|l| l.starts_with("xgw_rule_hits_total{list=\"lan_out\",rule_id=") && l.ends_with("} 2")),
        "{body}"
    );
    // every sample line is `name{labels} value` with a numeric value
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        let v = l.rsplit(' ').next().expect("value");
        assert!(v.parse::<f64>().is_ok(), "bad sample {l:?}");
    }
    assert!(get("/other").contains(" 404 "));
}

/// Every counter of every family the fixture has is in `xgwctl stats` text, its JSON and
/// `/metrics`: the three are rendered from each family's one list, so a counter the code
/// increments cannot be left out of any of them.
#[test]
fn every_counter_is_exported_to_text_json_and_metrics() {
    use std::io::{Read, Write};
    use xgw_dataplane::alg::pptp::PptpStats;
    use xgw_dataplane::conntrack::TableStats;
    use xgw_dataplane::xsk::PortStats;
    let f = daemon();
    let text = stdout(&ctl(&f.socket, &["stats"]));
    let j = json_lines(&ctl(&f.socket, &["-o", "json", "stats"]));
    let addr = xgw_control::ctl::serve_metrics("127.0.0.1:0".parse().expect("addr"), Arc::clone(&f.daemon))
        .expect("metrics endpoint");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").expect("send");
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).expect("read");
    let families: [(&str, &[&str], &Value, &str); 4] = [
        ("", xgw_dataplane::Traffic::NAMES, &j[0], "xgw_engine_"),
        ("conntrack", TableStats::NAMES, &j[0]["conntrack"], "xgw_conntrack_"),
        ("pptp", PptpStats::NAMES, &j[0]["pptp"], "xgw_pptp_"),
        ("port.xgw-out.q0", PortStats::NAMES, &j[0]["ports"][0]["counters"], "xgw_port_"),
    ];
    for (family, names, json, metric) in families {
        assert!(!names.is_empty());
        for n in names {
            assert!(json.get(n).is_some_and(Value::is_u64), "{family}.{n} missing from the JSON: {json}");
            assert!(
                text.lines().any(|l| l.split_whitespace().next()
                    == Some(&if family.is_empty() { n.to_string() } else { format!("{family}.{n}") })),
                "{family}.{n} missing from the text:\n{text}"
            );
            assert!(
                metrics.lines().any(|l| l.starts_with(&format!("{metric}{n}_total"))),
                "{metric}{n}_total missing from the metrics"
            );
        }
    }
    // the counters the last round found counted and never shown
    for n in ["removed", "sessions", "split_field_ambiguous", "unsynced_sessions"] {
        assert!(text.contains(&format!(".{n} ")), "{n}:\n{text}");
    }
    // and the engine's own, which the text once left out
    for n in ["flows_created", "icmp_generated"] {
        assert!(text.lines().any(|l| l.starts_with(&format!("{n} "))), "{n}:\n{text}");
    }
}

#[test]
fn stats_version_and_pptp() {
    let f = daemon();
    let s = stdout(&ctl(&f.socket, &["conntrack", "stats"]));
    assert_eq!(
        s.trim(),
        "entries=4 limit=262144 events_dropped=0 expired=0 insert_failed_full=0 insert_failed_key=0 inserted=4 removed=0"
    );
    let j = json_lines(&ctl(&f.socket, &["-o", "json", "conntrack", "stats"]));
    assert_eq!(j[0]["entries"], 4);
    let text = stdout(&ctl(&f.socket, &["stats"]));
    assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["rx", "7"]), "{text}");
    assert!(text.lines().any(|l| l.starts_with("drop.acl_denied") && l.ends_with(" 1")), "{text}");
    assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["offload", "off"]), "{text}");
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert!(text.lines().any(|l| words(l) == ["port.xgw-out.q0.tx_no_frame", "3"]), "{text}");
    assert!(text.lines().any(|l| words(l) == ["xdp.xgw-out.declined.partial_csum", "7"]), "{text}");
    assert!(text.lines().any(|l| words(l) == ["port.xgw-out.q0.xsk_rx_dropped", "0"]), "{text}");
    let j = json_lines(&ctl(&f.socket, &["-o", "json", "stats"]));
    assert_eq!(j[0]["forwarded"], 6);
    assert_eq!(j[0]["drops"]["acl_denied"], 1);
    assert_eq!(j[0]["ports"][0]["counters"]["rx"], 5);
    assert_eq!(j[0]["ports"][0]["counters"]["tx_no_frame"], 3);
    assert_eq!(j[0]["xdp_declined"][0]["counters"]["egress_unproven"], 2);
    assert_eq!(j[0]["l4_csum_completed"], 0);
    let v = stdout(&ctl(&f.socket, &["version"]));
    assert_eq!(v.lines().count(), 2);
    assert!(v.starts_with("xgwctl ") && v.contains("\nxgwd ") && v.contains("(protocol 2)"), "{v}");
    // no PPTP in this fixture: the header, the counters, nothing else
    let p = stdout(&ctl(&f.socket, &["pptp"]));
    assert!(p.starts_with("INSIDE") && p.contains("counters: ") && p.contains("calls_in_progress=0"), "{p}");
    assert_eq!(p.lines().count(), 2, "{p}");
    let j = json_lines(&ctl(&f.socket, &["-o", "json", "pptp"]));
    assert_eq!(j[0]["sessions"].as_array().map(Vec::len), Some(0));
    assert_eq!(j[0]["counters"]["calls_created"], 0);
}

#[test]
fn an_exempt_flow_is_listed_as_an_identity_translation() {
    let rules = RULES.to_string() + "nat exempt 10.10.0.0/24 192.0.2.0/24\n";
    let compiled = xgw_rules::compile("test.rules", &rules, &|_| Err("no includes".into())).expect("rules compile");
    let shared = Arc::new(Shared::new(compiled.engine).expect("config"));
    let mut e = Engine::new(Arc::clone(&shared));
    let f = udp([10, 10, 0, 5], [192, 0, 2, 53], 5353, 53);
    let mut buf = f.clone();
    buf.resize(2048, 0);
    let mut fr = FrameBuf { buf: &mut buf[..], len: f.len() };
    assert_eq!(e.process(&mut fr, RxMeta { iface: LAN }, Time::from_secs(10)), Verdict::Forward(WAN));
    let mut seen = Vec::new();
    shared.flows.for_each(|_, fl| seen.push(xgw_control::ctl::xlate(fl, &shared, Time::from_secs(11))));
    let [Some(x)] = seen.as_slice() else { panic!("one translation: {seen:?}") };
    assert_eq!(x.kind, "identity");
    assert_eq!((x.inside.0.as_str(), x.outside.0.as_str()), ("10.10.0.5", "10.10.0.5"));
    let line = xgw_control_proto::xlate_line(x);
    assert!(line.starts_with("UDP NAT from inside:10.10.0.5/5353 to outside:10.10.0.5/5353 flags sI"), "{line}");
}

#[test]
fn ha_status_of_a_gateway_alone_and_a_role_refused_without_ha() {
    let f = daemon();
    assert_eq!(stdout(&ctl(&f.socket, &["ha", "status"])), "HA not configured: this gateway forwards alone\n");
    let j = json_lines(&ctl(&f.socket, &["-o", "json", "ha", "status"]));
    assert_eq!((j[0]["enabled"].as_bool(), j[0]["ready"].as_bool()), (Some(false), Some(true)), "{j:?}");
    assert!(ctl(&f.socket, &["ha", "ready"]).status.success(), "alone: ready");
    // setting a role needs an HA pair (and root, which the test runs as, or says so)
    let o = ctl(&f.socket, &["ha", "role", "master"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("HA is not configured") || err.contains("needs root"), "{err}");
}
