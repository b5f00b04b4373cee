//! The gateway forwarding real traffic between namespaces: XDP classifier + AF_XDP workers.
//!
//! ```text
//!  c1 10.10.0.5 ─┐
//!                ├─ br0 (ns lan) ── xgw-in 10.10.0.1 [gw: xgwd] xgw-out 198.51.100.1 ── 198.51.100.254 [rtr] 203.0.113.254 (mtu 1000) ── 203.0.113.20 srv
//!  c2 10.10.0.6 ─┘
//! ```
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use xgw_tests::{Lab, TCP_SINK, TCP_SOURCE, UDP_ECHO, UDP_FLOWS};

const RULES: &str = "interface lan device xgw-in role inside address 10.10.0.1/24
interface wan device xgw-out role outside address 198.51.100.1/24
";

/// How the gateway's neighbours are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peers {
    /// The kernel's defaults: partial checksums from every sender, no NAPI on the veths the
    /// gateway sends into (so they take no XDP redirects).
    Defaults,
    /// Like physical wires (this test is about the fast path carrying flows): full
    /// checksums, and the gateway's veth peers take XDP redirects.
    RealWire,
    /// Defaults except that the hosts' own TCP stacks hand over MTU-sized segments (TSO and
    /// GSO off on their veths): generic-mode XDP sees a GSO neighbour's super-frames, which
    /// no AF_XDP frame can hold (README: generic mode needs senders that segment; xgwd warns
    /// and counts `xsk_rx_dropped`). This test is about generic mode, so it says so here.
    Segmenting,
}

fn topology(lab: &mut Lab) {
    topology_with(lab, Peers::Defaults);
}

fn topology_with(lab: &mut Lab, peers: Peers) {
    for ns in ["c1", "c2", "lan", "gw", "rtr", "srv"] {
        lab.add_ns(ns);
    }
    lab.exec_ok("lan", &["ip", "link", "add", "br0", "type", "bridge"]);
    lab.exec_ok("lan", &["ip", "link", "set", "br0", "up"]);
    lab.link("c1", "eth0", "10.10.0.5/24", "lan", "p1", "");
    lab.link("c2", "eth0", "10.10.0.6/24", "lan", "p2", "");
    lab.link("gw", "xgw-in", "10.10.0.1/24", "lan", "pg", "");
    for p in ["p1", "p2", "pg"] {
        lab.exec_ok("lan", &["ip", "link", "set", p, "master", "br0"]);
    }
    lab.link("gw", "xgw-out", "198.51.100.1/24", "rtr", "o0", "198.51.100.254/24");
    lab.link("rtr", "o1", "203.0.113.254/24", "srv", "eth0", "203.0.113.20/24");
    lab.exec_ok("rtr", &["ip", "link", "set", "o1", "mtu", "1000"]);
    lab.exec_ok("srv", &["ip", "link", "set", "eth0", "mtu", "1000"]);
    lab.exec_ok("rtr", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    for c in ["c1", "c2"] {
        lab.exec_ok(c, &["ip", "route", "add", "default", "via", "10.10.0.1"]);
    }
    lab.exec_ok("srv", &["ip", "route", "add", "default", "via", "203.0.113.254"]);
    // the gateway's kernel forwards nothing itself; its routes give xgw the next hops
    lab.exec_ok("gw", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    lab.exec_ok("gw", &["ip", "route", "add", "default", "via", "198.51.100.254"]);
    if peers == Peers::Segmenting {
        for ns in ["c1", "c2", "srv"] {
            lab.exec_ok(ns, &["ethtool", "-K", "eth0", "tso", "off", "gso", "off"]);
        }
    }
    if peers == Peers::RealWire {
        for (ns, dev) in [("c1", "eth0"), ("c2", "eth0"), ("lan", "pg"), ("rtr", "o0"), ("rtr", "o1"), ("srv", "eth0")]
        {
            lab.real_wire(ns, dev);
        }
    }
}

/// Pings until one answer comes back (the first packets may wait for ARP).
fn warm(lab: &Lab, from: &str, to: &str) {
    for _ in 0..10 {
        if lab.exec(from, &["ping", "-c", "1", "-W", "1", to]).status.success() {
            return;
        }
    }
    panic!("{from} cannot reach {to}:\n{}", lab.log("xgwd.log"));
}

fn forwards_everything(mode: &str, offload: &str, peers: Peers) {
    let mut lab = Lab::new();
    topology_with(&mut lab, peers);
    let gw = lab.start_xgwd("gw", RULES, &["--xdp-mode", mode, "--offload", offload]);
    warm(&lab, "c1", "203.0.113.20");
    warm(&lab, "c2", "203.0.113.20");

    // ping
    let out = lab.exec_ok("c1", &["ping", "-c", "5", "-i", "0.2", "-W", "1", "203.0.113.20"]);
    assert!(out.contains("5 received"), "{out}");

    // TCP from both clients at once, payload checked end to end, server sees only P
    lab.spawn("srv", &["python3", "-c", TCP_SINK, "0.0.0.0", "5001"], "sink.log");
    lab.wait_listening("srv", 5001);
    let t1 = {
        let dir = lab.dir.clone();
        let ns = lab.ns("c1");
        std::thread::spawn(move || {
            let _ = dir;
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "python3", "-c", TCP_SOURCE, "203.0.113.20", "5001", "8000000"])
                .output()
                .expect("run")
        })
    };
    let r2 = lab.exec_ok("c2", &["python3", "-c", TCP_SOURCE, "203.0.113.20", "5001", "8000000"]);
    let r1 = String::from_utf8_lossy(&t1.join().expect("thread").stdout).to_string();
    for r in [&r1, &r2] {
        assert!(r.starts_with("OK 8000000 198.51.100.1:"), "{r}\n{}", lab.log("xgwd.log"));
    }

    // UDP: 150 flows from each client, every answer back, the server saw only P
    lab.spawn("srv", &["python3", "-c", UDP_ECHO, "0.0.0.0", "7000"], "echo.log");
    lab.wait_listening("srv", 7000);
    for c in ["c1", "c2"] {
        let r = lab.exec_ok(c, &["python3", "-c", UDP_FLOWS, "203.0.113.20", "7000", "150"]);
        assert_eq!(r.trim(), "150 198.51.100.1", "{c}");
    }

    let log = lab.stop(gw, "xgwd.log");
    assert!(log.contains("all UMEM frames accounted for device=xgw-in"), "{log}");
    assert!(log.contains("all UMEM frames accounted for device=xgw-out"), "{log}");
    assert!(log.contains("XDP detached"), "{log}");
    // the classifier counted what went through
    let line = log.lines().find(|l| l.contains("XDP counters") && l.contains("device=xgw-in")).expect("counters");
    assert!(line.contains("tcp=") && line.contains("udp=") && line.contains("icmp="), "{line}");
    // with the fast path, the bulk of the TCP transfer never reached userspace
    let fast: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fast="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no fast= in {line}"));
    match (offload, peers, mode) {
        ("on", Peers::RealWire, _) => assert!(fast > 1000, "{line}"),
        // no egress takes native redirects: the fast path sends nothing, says so, loses nothing
        ("on", Peers::Defaults, "native") => {
            assert_eq!(fast, 0, "{line}");
            for dev in ["xgw-in", "xgw-out"] {
                assert!(
                    log.lines().any(|l| l.contains("does not take XDP redirects") && l.contains(dev)),
                    "no warning for {dev}:\n{log}"
                );
            }
        }
        // generic XDP redirects through the stack, which takes partial checksums only
        // because the engine finished them: whatever the fast path did, all arrived (above)
        ("on", _, _) => {}
        _ => assert_eq!(fast, 0, "{line}"),
    }
    let out = lab.exec_ok("gw", &["ip", "-d", "link", "show", "xgw-in"]);
    assert!(!out.contains("prog/xdp"), "XDP left attached: {out}");
}

#[test]
fn forwards_ping_tcp_udp_native_mode() {
    forwards_everything("native", "on", Peers::Defaults);
}

#[test]
fn forwards_ping_tcp_udp_generic_mode() {
    forwards_everything("skb", "on", Peers::Segmenting);
}

#[test]
fn forwards_ping_tcp_udp_without_offload() {
    forwards_everything("native", "off", Peers::Defaults);
}

#[test]
fn forwards_ping_tcp_udp_fast_path_when_peers_take_redirects() {
    forwards_everything("native", "on", Peers::RealWire);
}

#[test]
fn icmp_errors_from_beyond_and_from_the_gateway() {
    let mut lab = Lab::new();
    topology(&mut lab);
    // (this test also runs xgwd with JSON logs and its metrics endpoint)
    let gw = lab.start_xgwd("gw", RULES, &["--log-format", "json", "--metrics", "127.0.0.1:9477"]);
    warm(&lab, "c1", "203.0.113.20");
    // TTL 1: the gateway itself answers, from its inside address
    let o = lab.exec("c1", &["ping", "-c", "1", "-W", "1", "-t", "1", "203.0.113.20"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("From 10.10.0.1") && s.contains("Time to live exceeded"), "{s}");
    // TTL 2: the router beyond answers; its error is translated back to the client
    let o = lab.exec("c1", &["ping", "-c", "1", "-W", "1", "-t", "2", "203.0.113.20"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("From 198.51.100.254") && s.contains("Time to live exceeded"), "{s}");
    // DF set over the router's 1000-byte link: fragmentation needed reaches the client
    let o = lab.exec("c1", &["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1200", "203.0.113.20"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("Frag needed") && s.contains("mtu = 1000"), "{s}");
    // the metrics endpoint inside the gateway's namespace shows the XDP classes and the flows
    let get = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())";
    let m = lab.exec_ok("gw", &["python3", "-c", get, "http://127.0.0.1:9477/metrics"]);
    assert!(m.lines().any(|l| l.starts_with("xgw_xdp_packets_total{device=\"xgw-in\",class=\"icmp\"} ")), "{m}");
    assert!(m.lines().any(|l| l.starts_with("xgw_conntrack_entries ")), "{m}");
    assert!(m.lines().any(|l| l.starts_with("xgw_offload_flows ")), "{m}");
    assert!(m.lines().any(|l| l.starts_with("xgw_offload_installed_total ")), "{m}");
    assert!(m.lines().any(|l| l.starts_with("xgw_xdp_steered_packets_total{device=\"xgw-in\",to=\"fast\"} ")), "{m}");
    let log = lab.stop(gw, "xgwd.log");
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().any(|v| v["fields"]["message"] == "XDP detached, stopped"), "{log}");
}

/// Sends one UDP datagram on a connected socket and prints "refused" when the ICMP
/// port-unreachable it provokes reaches the socket, "silence" otherwise.
const UDP_REFUSED: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
for _ in range(3):
    s.send(b"x")
    try:
        s.recv(100)
    except ConnectionRefusedError:
        print("refused"); break
    except socket.timeout:
        continue
else:
    print("silence")
"#;

#[test]
fn the_gateways_own_traffic_stays_with_the_kernel() {
    let mut lab = Lab::new();
    topology(&mut lab);
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    let gw = lab.start_xgwd("gw", RULES, &["--socket", &sock]);
    // an SSH-like service on the gateway's outside address, reached from outside
    lab.spawn("gw", &["python3", "-c", TCP_SINK, "198.51.100.1", "22"], "ssh.log");
    lab.wait_listening("gw", 22);
    let r = lab.exec_ok("rtr", &["python3", "-c", TCP_SOURCE, "198.51.100.1", "22", "100000"]);
    assert!(r.starts_with("OK 100000 198.51.100.254:"), "{r}");
    // pinging the box from both sides
    lab.exec_ok("rtr", &["ping", "-c", "2", "-W", "1", "198.51.100.1"]);
    lab.exec_ok("c1", &["ping", "-c", "2", "-W", "1", "10.10.0.1"]);
    // an unsolicited connection to a translation port reaches nothing inside
    let o = lab.exec("rtr", &["python3", "-c", TCP_SOURCE, "198.51.100.1", "2000", "10", "2"]);
    assert!(!o.status.success());
    // nor does a connection attempt to the box's own port range: those ports are its own
    // connections' source ports, where only answers arrive. The SYN is dropped and counted,
    // and the box sends no reset back: a scan or a SYN flood of the outside address is not
    // answered SYN by SYN
    // (the engine drops it, or the XDP program's new-flow guard does once the engine has
    // seen unsolicited SYNs to the address: the attempt to port 2000 above)
    let unsolicited = || {
        let s = &xgwctl_json(&sock, &["stats"])[0];
        let guarded: u64 = s["xdp_steering"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x["counters"]["guarded"].as_u64()).sum())
            .unwrap_or(0);
        s["drops"]["unsolicited_inbound"].as_u64().unwrap_or(0) + guarded
    };
    let before = unsolicited();
    let o = lab.exec("rtr", &["python3", "-c", TCP_SOURCE, "198.51.100.1", "40001", "10", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("timed out"), "no answer, not even a reset, from the box: {err}");
    assert!(unsolicited() > before, "the SYN to the host port range was dropped and counted");
    // the box's own traffic out: a TCP connection (source port from the kernel's ephemeral
    // range, which is xgw's host range), a ping with an identifier of that range, and an
    // ICMP port-unreachable about its own UDP datagram, which the kernel must get to
    // report "connection refused"
    warm(&lab, "c1", "203.0.113.20");
    lab.spawn("srv", &["python3", "-c", TCP_SINK, "203.0.113.20", "8080"], "sink.log");
    lab.wait_listening("srv", 8080);
    let r = lab.exec_ok("gw", &["python3", "-c", TCP_SOURCE, "203.0.113.20", "8080", "5000"]);
    assert!(r.starts_with("OK 5000 198.51.100.1:"), "{r}");
    lab.exec_ok("gw", &["ping", "-c", "2", "-W", "1", "-e", "40000", "203.0.113.20"]);
    let refused = lab.exec_ok("gw", &["python3", "-c", UDP_REFUSED, "203.0.113.20", "9"]);
    assert_eq!(refused.trim(), "refused", "the kernel saw the ICMP error about its own datagram");
    let stats = &xgwctl_json(&sock, &["stats"])[0];
    for p in stats["ports"].as_array().expect("ports") {
        assert_eq!(p["counters"]["to_host_lost"], 0, "XDP and the engine disagree on whose a packet is: {p}");
    }
    let log = lab.stop(gw, "xgwd.log");
    let line = log.lines().find(|l| l.contains("XDP counters") && l.contains("device=xgw-out")).expect("counters");
    assert!(line.contains("kernel=") && !line.contains("kernel=0 "), "{line}");
}

#[test]
fn rules_reload_through_the_daemon_swaps_or_refuses() {
    let mut lab = Lab::new();
    topology(&mut lab);
    let strict = format!("{RULES}access-list out permit icmp any any echo\naccess-list out deny tcp any any log\naccess-group out in interface lan\n");
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    // (this test also runs xgwd with ASA syslog lines)
    let gw = lab.start_xgwd("gw", &strict, &["--socket", &sock, "--log-format", "asa"]);
    warm(&lab, "c1", "203.0.113.20");
    lab.spawn("srv", &["python3", "-c", TCP_SINK, "0.0.0.0", "5002"], "sink.log");
    lab.wait_listening("srv", 5002);
    let o = lab.exec("c1", &["python3", "-c", TCP_SOURCE, "203.0.113.20", "5002", "1000", "2"]);
    assert!(!o.status.success(), "TCP is denied by the first policy");
    let xgwctl = |args: &[&str]| {
        std::process::Command::new(xgw_tests::bin("xgwctl"))
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .expect("xgwctl")
    };
    // a broken file is refused and the running policy stays
    let rules = lab.dir.join("gateway.rules");
    std::fs::write(&rules, format!("{strict}access-list out permit tpc any any\n")).expect("write");
    let o = xgwctl(&["rules", "reload"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused, the running policy stays") && err.contains("unknown protocol `tpc`"), "{err}");
    assert!(!lab.exec("c1", &["python3", "-c", TCP_SOURCE, "203.0.113.20", "5002", "1000", "2"]).status.success());
    // a good file is swapped in: TCP now passes
    std::fs::write(&rules, format!("{RULES}access-list out permit ip any any\naccess-group out in interface lan\n"))
        .expect("write");
    let o = xgwctl(&["rules", "reload"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("reloaded: "));
    let r = lab.exec_ok("c1", &["python3", "-c", TCP_SOURCE, "203.0.113.20", "5002", "100000"]);
    assert!(r.starts_with("OK 100000 198.51.100.1:"), "{r}");
    let log = lab.stop(gw, "xgwd.log");
    assert!(log.contains("access-list match"), "{log}");
    let has = |p: &str| assert!(log.lines().any(|l| l.starts_with(p)), "no line starting {p:?} in\n{log}");
    has("%ASA-4-106023: Deny tcp src lan:10.10.0.5/");
    assert!(log.contains(" dst wan:203.0.113.20/5002 by access-group \"out\" [0x"), "{log}");
    has("%ASA-6-305011: Built dynamic TCP translation from lan:10.10.0.5/");
    has("%ASA-6-302013: Built outbound TCP connection ");
    assert!(log.contains(" for wan:203.0.113.20/5002 (203.0.113.20/5002) to lan:10.10.0.5/"), "{log}");
}

#[test]
fn a_crash_leaves_no_program_behind_and_workers_see_the_classes() {
    let mut lab = Lab::new();
    topology(&mut lab);
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    let gw = lab.start_xgwd("gw", RULES, &["--socket", &sock]);
    warm(&lab, "c1", "203.0.113.20");
    let o = std::process::Command::new(xgw_tests::bin("xgwctl"))
        .args(["--socket", &sock, "-o", "json", "stats"])
        .output()
        .expect("xgwctl");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["worker_classes"]["icmp"].as_u64().unwrap_or(0) > 0, "workers read the XDP class: {v}");
    assert_eq!(v["worker_unclassified"], 0, "{v}");
    lab.crash(gw);
    for dev in ["xgw-in", "xgw-out"] {
        let out = lab.exec_ok("gw", &["ip", "link", "show", dev]);
        assert!(!out.contains("xdp"), "a crashed xgwd left XDP on {dev}: {out}");
    }
    // and the next start works
    let gw = lab.start_xgwd("gw", RULES, &["--socket", &sock]);
    warm(&lab, "c1", "203.0.113.20");
    let log = lab.stop(gw, "xgwd.log");
    assert!(log.contains("XDP detached"), "{log}");
}

/// Runs xgwctl against `sock`; the JSON lines it prints.
fn xgwctl_json(sock: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let o = std::process::Command::new(xgw_tests::bin("xgwctl"))
        .args(["--socket", sock, "-o", "json"])
        .args(args)
        .output()
        .expect("xgwctl");
    assert!(o.status.success(), "xgwctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Packets the XDP program of `device` translated itself.
fn fast_packets(sock: &str, device: &str) -> u64 {
    let stats = &xgwctl_json(sock, &["stats"])[0];
    stats["xdp_steering"]
        .as_array()
        .expect("steering")
        .iter()
        .find(|d| d["device"] == device)
        .map_or(0, |d| d["counters"]["fast"].as_u64().unwrap_or(0))
}

fn last_json(log: &str, key: &str) -> Option<serde_json::Value> {
    log.lines().rev().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|v| v.get(key).is_some())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// One PPTP call through the gateway with scripted peers: GRE counters of the call's flow
/// equal what the peers sent, and after the server's Call-Disconnect-Notify the call's GRE
/// stops reaching the client within 1 s — with the fast path carrying the call or not.
fn pptp_call_counts_and_teardown(offload: &str, peers: Peers) {
    let mut lab = Lab::new();
    topology_with(&mut lab, peers);
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    let gw = lab.start_xgwd("gw", RULES, &["--socket", &sock, "--offload", offload]);
    warm(&lab, "c1", "203.0.113.20");
    lab.spawn("srv", &["python3", "-c", xgw_tests::PPTP_PEER, "pac", "203.0.113.20"], "pac.log");
    std::thread::sleep(std::time::Duration::from_millis(300));
    lab.spawn("c1", &["python3", "-c", xgw_tests::PPTP_PEER, "pns", "203.0.113.20"], "pns.log");
    let t0 = std::time::Instant::now();
    let up = loop {
        if let Some(v) = last_json(&lab.log("pns.log"), "up") {
            break v["up"].as_f64().expect("time");
        }
        assert!(t0.elapsed().as_secs() < 15, "call not up:\n{}\n{}", lab.log("pns.log"), lab.log("pac.log"));
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // the silence between the bursts and the CDN (1.5 s to 4.5 s after the call came up): a
    // listing folds the fast path's counters first, so they must reach what the peers sent
    // well before the CDN
    let gre = loop {
        let gre = xgwctl_json(&sock, &["conntrack", "list", "-p", "gre"]);
        assert_eq!(gre.len(), 1, "{gre:?}");
        if gre[0]["packets"] == serde_json::json!([300, 400]) || unix_now() > up + 4.2 {
            break gre;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        gre[0]["packets"],
        serde_json::json!([300, 400]),
        "GRE counters: {}\nfast path: {} packets; stats: {}\npns: {}\npac: {}\nxgwd: {}",
        gre[0],
        fast_packets(&sock, "xgw-in") + fast_packets(&sock, "xgw-out"),
        xgwctl_json(&sock, &["stats"])[0],
        lab.log("pns.log"),
        lab.log("pac.log"),
        lab.log("xgwd.log"),
    );
    let on = offload == "on";
    assert_eq!(gre[0]["offloaded"], on, "{}", gre[0]);
    let fast = fast_packets(&sock, "xgw-in") + fast_packets(&sock, "xgw-out");
    let stats = &xgwctl_json(&sock, &["stats"])[0];
    let unproven: u64 = stats["xdp_declined"]
        .as_array()
        .expect("declined")
        .iter()
        .map(|d| d["counters"]["egress_unproven"].as_u64().unwrap_or(0))
        .sum();
    match (on, peers) {
        (true, Peers::RealWire) => assert!(fast > 500, "the fast path carried the call's GRE: {fast}"),
        (true, Peers::Defaults | Peers::Segmenting) => {
            // offloaded, but no egress takes redirects: every GRE packet went to the engine
            assert_eq!(fast, 0);
            assert!(unproven >= 600, "declined for their egress: {unproven} of 700");
            let egress = stats["egress"].as_array().expect("egress");
            assert!(egress.iter().all(|e| e["state"] == "redirect_refused"), "{egress:?}");
        }
        (false, _) => assert_eq!(fast, 0),
    }
    // the text form says the same
    let o = std::process::Command::new(xgw_tests::bin("xgwctl"))
        .args(["--socket", &sock, "stats"])
        .output()
        .expect("xgwctl");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.lines().any(|l| l.starts_with("xdp.xgw-in.to.fast")), "{text}");
    let installed = text.lines().find(|l| l.starts_with("offload.installed")).map(|l| l.split_whitespace().nth(1));
    assert_eq!(installed, if on { Some(Some("1")) } else { None }, "{text}");
    assert_eq!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["offload", "off"]), !on, "{text}");
    let t0 = std::time::Instant::now();
    let (pns, pac) = loop {
        if let (Some(a), Some(b)) = (last_json(&lab.log("pns.log"), "sent"), last_json(&lab.log("pac.log"), "sent")) {
            break (a, b);
        }
        assert!(t0.elapsed().as_secs() < 20, "peers did not finish:\n{}\n{}", lab.log("pns.log"), lab.log("pac.log"));
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(pac["received"], 300, "everything the client sent reached the server: {pac}");
    let cdn = pac["cdn_at"].as_f64().expect("cdn time");
    let times: Vec<f64> = pns["received_at"].as_array().expect("times").iter().filter_map(|t| t.as_f64()).collect();
    assert_eq!(times.iter().filter(|&&t| t < cdn).count(), 400, "before the CDN the client got every packet");
    assert!(pac["sent_after_cdn"].as_u64().unwrap_or(0) > 100, "the server kept sending: {pac}");
    let last = times.iter().copied().fold(0.0, f64::max);
    assert!(last <= cdn + 1.0, "GRE still reached the client {:.3} s after the CDN", last - cdn);
    let log = lab.stop(gw, "xgwd.log");
    assert!(log.contains("XDP detached"), "{log}");
}

#[test]
fn pptp_call_counts_and_teardown_offloaded() {
    pptp_call_counts_and_teardown("on", Peers::RealWire);
}

#[test]
fn pptp_call_counts_and_teardown_offloaded_peers_at_defaults() {
    pptp_call_counts_and_teardown("on", Peers::Defaults);
}

#[test]
fn pptp_call_counts_and_teardown_without_offload() {
    pptp_call_counts_and_teardown("off", Peers::Defaults);
}

/// The state of `device` as an egress of the fast path, as `xgwctl stats` shows it.
fn egress_state(sock: &str, device: &str) -> String {
    let stats = &xgwctl_json(sock, &["stats"])[0];
    stats["egress"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["device"] == device))
        .and_then(|e| e["state"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// A peer that turns GRO on and off while xgwd runs (this test is about that setting of the
/// peer): the kernel's netdev notification makes xgwd check the egress again at once, so the
/// fast path starts and stops using it within milliseconds, not at the next 200 ms poll.
#[test]
fn a_peers_gro_change_is_followed_at_once() {
    let mut lab = Lab::new();
    topology(&mut lab);
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    lab.start_xgwd("gw", RULES, &["--socket", &sock, "--xdp-mode", "native"]);
    assert_eq!(egress_state(&sock, "xgw-out"), "redirect_refused", "the peer is at its defaults (GRO off)");
    let mut took = Vec::new();
    for round in 0..3 {
        for (gro, want) in [("on", "redirect_ok"), ("off", "redirect_refused")] {
            lab.exec_ok("rtr", &["ethtool", "-K", "o0", "gro", gro]);
            let t0 = std::time::Instant::now();
            while egress_state(&sock, "xgw-out") != want {
                assert!(
                    t0.elapsed() < std::time::Duration::from_secs(1),
                    "round {round}: GRO {gro} not followed within 1 s:\n{}",
                    lab.log("xgwd.log")
                );
            }
            took.push(t0.elapsed().as_millis());
        }
    }
    println!("egress state followed the peer's GRO after {took:?} ms (each including one xgwctl call)");
    // the 200 ms poll alone would give a median near 100 ms
    took.sort_unstable();
    assert!(took[took.len() / 2] < 100, "not notified: {took:?} ms");
}
