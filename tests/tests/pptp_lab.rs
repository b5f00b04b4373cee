//! Real PPTP clients (pptp-linux) sharing the outside address through xgw towards a real
//! PPTP server (pptpd), every client with the same Call ID; the PPP on both ends is the
//! xgw-ppp stand-in, whose LCP echoes carry the sender's name.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use xgw_tests::pptp::{client, client_addr, PptpLab, OUTSIDE, SERVER};
use xgw_tests::Lab;

const LAB_RULES: &str = include_str!("../../rules/examples/lab.rules");
const CALL_ID: u16 = 0x0100;

fn diag(l: &PptpLab) -> String {
    let mut s = String::new();
    for i in 1..=l.clients {
        s += &format!("--- client {i}\n{}\n", l.client_log(i).lines().take(6).collect::<Vec<_>>().join("\n"));
    }
    s += &format!("--- servers {:?}\n--- xgwd\n{}", l.server_calls(), l.lab.log("xgwd.log"));
    // what the inspector and the engine counted, while the daemon still runs
    for args in [&["pptp"][..], &["-o", "json", "pptp"][..], &["stats"][..]] {
        let o = l.xgwctl(args);
        s += &format!("--- xgwctl {args:?}\n{}", String::from_utf8_lossy(&o.stdout));
    }
    s
}

fn all_clients_share_one_address(n: usize, offload: &str) {
    let mut l = PptpLab::start_with(n, LAB_RULES, &["--offload", offload]);
    l.start_clients(CALL_ID, 40);
    let all: Vec<usize> = (1..=n).collect();
    assert!(l.wait_replies(&all, 5, Duration::from_secs(40)), "not every tunnel came up:\n{}", diag(&l));

    // every call on the server carries exactly one client's frames, and every client has its call
    let calls = l.server_calls();
    let mut seen = BTreeSet::new();
    for (call, toks) in calls.iter().filter(|(_, t)| !t.is_empty()) {
        assert_eq!(toks.len(), 1, "call {call} got frames of several clients: {toks:?}");
        assert!(call.contains(OUTSIDE), "the server sees calls from the outside address: {call}");
        assert!(seen.insert(toks[0].clone()), "two calls carried {}", toks[0]);
    }
    assert_eq!(seen, (1..=n).map(client).collect::<BTreeSet<_>>(), "{calls:?}");
    // replies reach only their client: a client hears one server call only
    for i in 1..=n {
        let servers: BTreeSet<String> = l
            .client_log(i)
            .lines()
            .filter_map(|x| x.strip_prefix("echo-request from "))
            .map(|t| t.split('#').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(servers.len(), 1, "client {i} heard {servers:?}");
    }

    // the gateway's listing matches what the peers saw
    let o = l.xgwctl(&["-o", "json", "pptp"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let sessions = v["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), n, "{v}");
    let mut xlat = BTreeSet::new();
    for s in sessions {
        let calls = s["calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 1, "{s}");
        assert_eq!(calls[0]["pns_call_id"], u64::from(CALL_ID), "the forced Call ID: {s}");
        assert!(
            calls[0]["gre_packets"][0].as_u64().unwrap_or(0) > 0
                && calls[0]["gre_packets"][1].as_u64().unwrap_or(0) > 0,
            "{s}"
        );
        xlat.insert(calls[0]["translated_call_id"].as_u64().expect("translated"));
    }
    assert_eq!(xlat.len(), n, "distinct translated Call IDs");
    assert_eq!(v["counters"]["calls_in_progress"], n as u64);
    let o = l.xgwctl(&["conntrack", "list", "-p", "gre"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().filter(|x| x.contains("helper=pptp")).count(), n, "{text}");
    // every call's GRE is carried by the XDP fast path, or by none
    let offloaded = text.lines().filter(|x| x.contains("helper=pptp") && x.contains("[OFFLOAD]")).count();
    assert_eq!(offloaded, if offload == "on" { n } else { 0 }, "{text}");
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("{n} flow entries have been shown.")));

    // no frame was lost waiting for a neighbour: frames to next hops being resolved waited
    let o = l.xgwctl(&["-o", "json", "stats"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("stats json");
    let ports = v["ports"].as_array().expect("ports");
    let sum = |k: &str| ports.iter().map(|p| p["counters"][k].as_u64().expect(k)).sum::<u64>();
    println!(
        "{n} clients, fast path {offload}: {} frames waited for a neighbour, {} lost",
        sum("tx_neigh_waited"),
        sum("tx_no_neighbour")
    );
    for k in ["tx_no_neighbour", "tx_neigh_queue_full", "tx_no_frame", "tx_no_route"] {
        assert_eq!(sum(k), 0, "{k}: {v}");
    }
    // the gateway lost no handshake: every SYN the clients sent left on the outside, every
    // SYN-ACK the server sent reached its client. A SYN the clients had to send again was
    // one the server's own listen queue dropped (pptpd listens with a short backlog; a
    // burst of 50 overflows it whatever is in between), never one the gateway lost.
    let server_drops: u64 = l
        .lab
        .exec_ok("srv", &["nstat", "-az", "TcpExtListenDrops"])
        .lines()
        .find_map(|x| x.strip_prefix("TcpExtListenDrops"))
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .expect("TcpExtListenDrops");
    let inside = l.client_handshakes();
    let sources = l.outside_sources();
    let outside = l.outside_handshakes();
    let count = |h: &[xgw_tests::pptp::Handshake], synack: bool| {
        h.iter().filter(|x| x.synack == synack && (x.src.1 == 1723 || x.dst.1 == 1723)).count()
    };
    let retransmitted = count(&inside, false) - {
        let mut first: Vec<_> = inside.iter().filter(|x| !x.synack).map(|x| x.src.clone()).collect();
        first.sort();
        first.dedup();
        first.len()
    };
    println!(
        "handshakes: {} SYNs in, {} out; {} SYN-ACKs out, {} in; {retransmitted} SYNs sent again, server listen drops {server_drops}",
        count(&inside, false),
        count(&outside, false),
        count(&outside, true),
        count(&inside, true)
    );
    assert_eq!(count(&inside, false), count(&outside, false), "SYNs lost in the gateway");
    assert_eq!(count(&outside, true), count(&inside, true), "SYN-ACKs lost in the gateway");
    for i in 1..=n {
        assert!(inside.iter().any(|h| h.synack && h.dst.0 == client_addr(i)), "client {i} got no SYN-ACK");
    }
    assert!(retransmitted as u64 <= server_drops, "SYNs sent again beyond the server's own drops");

    // the outside link never saw an inside address
    let expected: BTreeSet<String> = [OUTSIDE.to_string(), SERVER.to_string()].into();
    assert!(sources.is_subset(&expected), "outside link saw {sources:?}");
}

#[test]
fn fifty_clients_in_one_burst() {
    all_clients_share_one_address(50, "on");
}

#[test]
fn fifty_clients_in_one_burst_without_offload() {
    all_clients_share_one_address(50, "off");
}

#[test]
fn one_client() {
    all_clients_share_one_address(1, "on");
}

#[test]
fn three_clients_same_call_id() {
    all_clients_share_one_address(3, "on");
}

#[test]
fn three_clients_same_call_id_without_offload() {
    all_clients_share_one_address(3, "off");
}

#[test]
fn ten_clients_same_call_id() {
    all_clients_share_one_address(10, "on");
}

#[test]
fn a_client_leaves_and_the_others_keep_working() {
    let mut l = PptpLab::start(3, LAB_RULES);
    l.start_clients(CALL_ID, 40);
    assert!(l.wait_replies(&[1, 2, 3], 5, Duration::from_secs(40)), "{}", diag(&l));
    l.stop_client(1);
    let before = (l.own_replies(2), l.own_replies(3));
    std::thread::sleep(Duration::from_secs(3));
    assert!(l.own_replies(2) > before.0 + 5 && l.own_replies(3) > before.1 + 5, "{}", diag(&l));
    // the gateway ends the departed client's call within the grace period
    let t0 = std::time::Instant::now();
    loop {
        let v: Value = serde_json::from_slice(&l.xgwctl(&["-o", "json", "pptp"]).stdout).expect("json");
        if v["counters"]["calls_in_progress"] == 2 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "call not torn down: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn negative_control_without_inspection_the_clients_collide() {
    // the same lab with PPTP inspection off: GRE is tracked per address pair, so with three
    // clients of one Call ID at most one tunnel can work — the test must notice
    let rules =
        LAB_RULES.replace("inspect pptp max-calls-per-session 8 on-invalid drop grace 5s", "inspect pptp off").replace(
            "access-list lan_out permit icmp any any echo",
            "access-list lan_out permit icmp any any echo\naccess-list lan_out permit gre any any",
        );
    let mut l = PptpLab::start(3, &rules);
    l.start_clients(CALL_ID, 25);
    std::thread::sleep(Duration::from_secs(15));
    let working = (1..=3).filter(|&i| l.own_replies(i) >= 5).count();
    assert!(working <= 1, "{working} tunnels worked without inspection:\n{}", diag(&l));
}

#[test]
fn pptp_server_inside_behind_a_static_forward() {
    let rules = "interface lan device xgw-in role inside address 10.10.0.1/24
interface wan device xgw-out role outside address 198.51.100.1/24
forward tcp 1723 to 10.10.0.50
";
    let mut lab = Lab::new();
    lab.line("isrv", "10.10.0.50/24", "out", "198.51.100.30/24");
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    lab.start_xgwd("gw", rules, &["--socket", &sock]);
    let logs = lab.dir.join("server");
    std::fs::create_dir_all(&logs).expect("dir");
    let conf = lab.dir.join("pptpd.conf");
    std::fs::write(&conf, "localip 192.168.99.1\nremoteip 192.168.99.100-150\n").expect("conf");
    let (conf, pid) = (conf.to_string_lossy().to_string(), lab.dir.join("pptpd.pid").to_string_lossy().to_string());
    let ppp = xgw_tests::bin("xgw-ppp").to_string_lossy().to_string();
    let env = format!("XGW_PPP_LOG_DIR={}", logs.display());
    lab.spawn("isrv", &["env", &env, "pptpd", "--fg", "-c", &conf, "-p", &pid, "-e", &ppp], "pptpd.log");
    std::thread::sleep(Duration::from_millis(500));
    let log = lab.dir.join("client.log").to_string_lossy().to_string();
    let script = format!(
        "mount -t tmpfs tmpfs /run && exec {} client --server {OUTSIDE} --token remote --seconds 30 --log {log}",
        xgw_tests::bin("xgw-ppp").display()
    );
    lab.spawn("out", &["unshare", "-m", "sh", "-c", &script], "client.out");
    let t0 = std::time::Instant::now();
    while lab.log("client.log").lines().filter(|x| x.starts_with("echo-reply remote#")).count() < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "client:\n{}\nxgwd:\n{}",
            lab.log("client.log"),
            lab.log("xgwd.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // the inside server saw the remote client's real address (a static forward is 1:1)
    let server = std::fs::read_dir(&logs)
        .expect("logs")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(server.contains("198.51.100.30") && server.contains("echo-request from remote#"), "{server}");
}
