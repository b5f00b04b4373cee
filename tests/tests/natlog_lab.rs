//! NAT event logging seen by a real collector: a gateway with port blocks exports IPFIX to
//! tshark's IPFIX dissector on the outside; two inside hosts open flows until one reaches its
//! quota and the other finds the address exhausted; the flows expire and the blocks go back.
//! The collector must decode every block allocation and release (RFC 8158 elements), the
//! quota and the exhaustion, once each — not one record per connection. Every neighbour is at
//! the kernel's defaults.
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use xgw_tests::Lab;

const RULES: &str = "interface lan device xgw-in role inside address 10.10.0.1/24
interface lan2 device xgw-in2 role inside address 10.20.0.1/24
interface wan device xgw-out role outside address 198.51.100.1/24
nat overload ports 1024-1279 host-ports none block-size 64 blocks-per-host 3 block-hold 2s
timeout udp 2s
timeout udp-stream 2s
";

/// One datagram from each of N source ports to ADDR:PORT, a millisecond apart.
const SPRAY: &str = r#"
import socket, sys, time
for i in range(int(sys.argv[3])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 20000 + i))
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    s.close()
    time.sleep(0.001)
print("sent", flush=True)
"#;

fn xgwctl(sock: &str, args: &[&str]) -> serde_json::Value {
    let o = std::process::Command::new(xgw_tests::bin("xgwctl"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("xgwctl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// The collector's records: (natEvent, source, post-NAT source, range start, range end,
/// ports), from tshark's fields, one packet a line, a message's records joined by ';'.
fn records(log: &str) -> Vec<(u32, String, String, String, String, String)> {
    let mut out = Vec::new();
    for line in log.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 6 || cols[0].is_empty() {
            continue;
        }
        let split = |i: usize| cols.get(i).map_or(Vec::new(), |c| c.split(';').map(str::to_string).collect::<Vec<_>>());
        let events = split(0);
        let (src, post, lo, hi, n) = (split(1), split(2), split(3), split(4), split(5));
        // block records carry every column; the others only their event (and a source)
        let (mut b, mut s) = (0, 0);
        for e in events {
            let Ok(ev) = e.trim().parse::<u32>() else { continue };
            let get = |v: &Vec<String>, i: usize| v.get(i).cloned().unwrap_or_default();
            if ev == 16 || ev == 17 {
                out.push((ev, get(&src, s), get(&post, b), get(&lo, b), get(&hi, b), get(&n, b)));
                b += 1;
                s += 1;
            } else {
                out.push((
                    ev,
                    if ev == 13 { get(&src, s) } else { String::new() },
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ));
                if ev == 13 {
                    s += 1;
                }
            }
        }
    }
    out
}

#[test]
fn a_real_collector_sees_each_port_block_once_with_its_subscriber() {
    let mut lab = Lab::new();
    for ns in ["c1", "c2", "gw", "srv"] {
        lab.add_ns(ns);
    }
    lab.link("c1", "eth0", "10.10.0.5/24", "gw", "xgw-in", "10.10.0.1/24");
    lab.link("c2", "eth0", "10.20.0.5/24", "gw", "xgw-in2", "10.20.0.1/24");
    lab.link("gw", "xgw-out", "198.51.100.1/24", "srv", "eth0", "198.51.100.20/24");
    for c in ["c1", "c2"] {
        let via = if c == "c1" { "10.10.0.1" } else { "10.20.0.1" };
        lab.exec_ok(c, &["ip", "route", "add", "default", "via", via]);
    }
    lab.exec_ok("gw", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let tshark = start_collector(
        &mut lab,
        &[
            "cflow.nat_event",
            "cflow.srcaddr",
            "cflow.post_natsource_ipv4_address",
            "cflow.port_range_start",
            "cflow.port_range_end",
            "cflow.port_range_num_ports",
        ],
    );
    let settings = lab.dir.join("xgwd.toml");
    std::fs::write(&settings, "[nat_log]\nipfix = \"198.51.100.20:4739\"\ntemplate_every = 1\n").expect("settings");
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    let c = settings.to_string_lossy().to_string();
    let gw = lab.start_xgwd("gw", RULES, &["--socket", &sock, "--config", &c]);

    // c1: 200 flows to one destination — 3 blocks of 64 hold 192, then its quota; c2: 100
    // flows — the address's fourth and last block, then nothing left
    for (c, n) in [("c1", "200"), ("c2", "100")] {
        let out = lab.exec_ok(c, &["python3", "-c", SPRAY, "198.51.100.20", "9", n]);
        assert!(out.contains("sent"), "{out}");
    }
    let s = xgwctl(&sock, &["-o", "json", "stats"]);
    let b = &s["blocks"];
    println!("after the flows: blocks {b} drops {}", s["drops"]);
    assert_eq!(b["allocated"], 4, "{b}");
    assert_eq!(b["quota_exceeded"], 8, "c1's 193rd to 200th flow: {b}");
    assert_eq!(b["exhausted"], 36, "c2's 65th to 100th flow: {b}");
    assert_eq!(s["drops"]["nat_block_quota"], 8);
    assert_eq!(s["drops"]["nat_blocks_exhausted"], 36);

    // the flows expire (2 s), the blocks are held 2 s more, then go back
    let t0 = Instant::now();
    while lab.log("xgwd.log").matches("NAT port block release").count() < 4 {
        assert!(t0.elapsed() < Duration::from_secs(20), "blocks not released:\n{}", lab.log("xgwd.log"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let released_after = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500)); // the exporter's last pass, the capture
    let s = xgwctl(&sock, &["-o", "json", "stats"]);
    let log = lab.stop(tshark, "collector.log");
    lab.stop(gw, "xgwd.log");

    let recs = records(&log);
    let mut by_event: BTreeMap<u32, usize> = BTreeMap::new();
    for r in &recs {
        *by_event.entry(r.0).or_default() += 1;
    }
    let (per_host, per_block) = xgw_dataplane::nat::blocks::PortBlocks::memory();
    println!(
        "NAT event logging: the collector decoded {} records {by_event:?} (16 block allocation, 17 release, 13 quota exceeded, 3 addresses exhausted); \
         blocks released {released_after:.1} s after the flows; exporter {}; memory: {per_host} B per host entry (up to 32 blocks), {per_block} B per free block",
        recs.len(),
        s["nat_log"],
    );
    for r in &recs {
        println!("  {r:?}");
    }
    assert_eq!(by_event.get(&16), Some(&4), "{recs:?}\n{log}");
    assert_eq!(by_event.get(&17), Some(&4), "{recs:?}");
    assert_eq!(by_event.get(&13), Some(&1), "one quota record for eight refusals: {recs:?}");
    assert_eq!(by_event.get(&3), Some(&1), "one exhaustion record for 36 refusals: {recs:?}");
    assert!(!by_event.contains_key(&4), "no per-connection records with port blocks");
    let mut ranges = Vec::new();
    for r in recs.iter().filter(|r| r.0 == 16) {
        assert!(r.1 == "10.10.0.5" || r.1 == "10.20.0.5", "{r:?}");
        assert_eq!((r.2.as_str(), r.5.as_str()), ("198.51.100.1", "64"), "{r:?}");
        let (lo, hi): (u32, u32) = (r.3.parse().expect("start"), r.4.parse().expect("end"));
        assert_eq!(hi - lo + 1, 64);
        ranges.push((lo, r.1.clone()));
    }
    ranges.sort();
    assert_eq!(ranges.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1024, 1088, 1152, 1216], "four distinct blocks");
    assert_eq!(ranges.iter().filter(|r| r.1 == "10.10.0.5").count(), 3);
    assert_eq!(s["nat_log"]["send_errors"], 0);
    assert!(lab.log("xgwd.log").contains("NAT port block allocate 10.20.0.5 -> 198.51.100.1 ports"));
}

/// tshark's IPFIX dissector on the server's side, printing `fields` of every message on a
/// line (tab-separated, a message's records joined by ';'); returns its pid once capturing.
fn start_collector(lab: &mut Lab, fields: &[&str]) -> u32 {
    let mut args = vec!["tshark", "-i", "eth0", "-l", "-n", "-f", "udp port 4739", "-d", "udp.port==4739,cflow"];
    args.extend(["-T", "fields", "-E", "aggregator=;", "-a", "duration:40"]);
    for f in fields {
        args.extend(["-e", f]);
    }
    let tshark = lab.spawn("srv", &args, "collector.log");
    let t0 = Instant::now();
    while !lab.log("collector.log").contains("Capturing on") {
        assert!(t0.elapsed() < Duration::from_secs(15), "tshark did not start: {}", lab.log("collector.log"));
        std::thread::sleep(Duration::from_millis(50));
    }
    tshark
}

#[test]
fn without_port_blocks_a_real_collector_sees_every_translation_created_and_deleted() {
    let mut lab = Lab::new();
    lab.line("c1", "10.10.0.5/24", "srv", "198.51.100.20/24");
    let fields = [
        "cflow.nat_event",
        "cflow.protocol",
        "cflow.srcaddr",
        "cflow.srcport",
        "cflow.post_natsource_ipv4_address",
        "cflow.post_naptsource_transport_port",
        "cflow.dstaddr",
        "cflow.dstport",
    ];
    let tshark = start_collector(&mut lab, &fields);
    let settings = lab.dir.join("xgwd.toml");
    std::fs::write(&settings, "[nat_log]\nipfix = \"198.51.100.20:4739\"\ntemplate_every = 1\n").expect("settings");
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    let c = settings.to_string_lossy().to_string();
    let rules = "interface lan device xgw-in role inside address 10.10.0.1/24
interface wan device xgw-out role outside address 198.51.100.1/24
timeout udp 2s
";
    let gw = lab.start_xgwd("gw", rules, &["--socket", &sock, "--config", &c]);
    let out = lab.exec_ok("c1", &["python3", "-c", SPRAY, "198.51.100.20", "9", "5"]);
    assert!(out.contains("sent"), "{out}");
    // the five translations expire after 2 s
    let t0 = Instant::now();
    while lab.log("xgwd.log").matches("NAT44 session delete").count() < 5 {
        assert!(t0.elapsed() < Duration::from_secs(15), "no deletes:\n{}", lab.log("xgwd.log"));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let log = lab.stop(tshark, "collector.log");
    lab.stop(gw, "xgwd.log");
    // (event, proto, source, source port, post-NAT source, post-NAPT port, destination, its port)
    let mut recs = Vec::new();
    for line in log.lines() {
        let cols: Vec<Vec<&str>> = line.split('\t').map(|c| c.split(';').collect()).collect();
        if cols.len() < fields.len() || cols[0][0].is_empty() {
            continue;
        }
        for i in 0..cols[0].len() {
            let get = |c: usize| cols[c].get(i).copied().unwrap_or("").to_string();
            recs.push((get(0), get(1), get(2), get(3), get(4), get(5), get(6), get(7)));
        }
    }
    println!("NAT44 sessions seen by the collector: {}", recs.len());
    for r in &recs {
        println!("  {r:?}");
    }
    for (event, n) in [("4", 5), ("5", 5)] {
        let these: Vec<_> = recs.iter().filter(|r| r.0 == event).collect();
        assert_eq!(these.len(), n, "natEvent {event}: {recs:?}");
        let mut sports: Vec<u32> = these.iter().map(|r| r.3.parse().expect("port")).collect();
        sports.sort_unstable();
        assert_eq!(sports, vec![20000, 20001, 20002, 20003, 20004], "{these:?}");
        for r in these {
            assert_eq!((r.1.as_str(), r.2.as_str(), r.4.as_str()), ("17", "10.10.0.5", "198.51.100.1"), "{r:?}");
            assert_eq!((r.6.as_str(), r.7.as_str()), ("198.51.100.20", "9"), "{r:?}");
            assert!(r.5.parse::<u16>().is_ok_and(|p| p >= 1024), "{r:?}");
        }
    }
}
