//! Two active gateways behind ECMP, each with its own outside pool announced by FRR:
//!
//! ```text
//!  c1..c20 ── br0 (lan) ── rin ══ resilient ECMP (L3 hash) ══╦═ ta ── gwa [xgwd, FRR] ─╗
//!  10.10.0.11..            10.10.0.1                          ╚═ tb ── gwb [xgwd, FRR] ─╣
//!                                                                     100.64.0.2/.3   br0 (wan)
//!                                  srv 198.51.100.20 (pptpd) ── rout [FRR] 100.64.0.1 ─╝
//! ```
//!
//! gwa translates onto 203.0.113.10, gwb onto 203.0.113.20; each announces its pool to the
//! outside router over BGP with BFD (100 ms × 3). The inside router spreads the clients by
//! (source, destination) over a resilient next-hop group, so a client's TCP 1723 and GRE
//! share a gateway. Twenty real PPTP clients of one Call ID call the server; then gwa dies
//! (its links go dark, its processes are killed): the outside router must withdraw its pool
//! within a second (BFD), gwb's calls must not lose an echo, and gwa's clients reconnect
//! through gwb at once. Only the gateways' own boxes are configured beyond routing; every
//! host is at the kernel's defaults.
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xgw_tests::pptp::{add_clients, client_addr, replied_seqs, start_client, start_server, SERVER};
use xgw_tests::{bin, Lab};

const CLIENTS: usize = 20;
const POOL: [&str; 2] = ["203.0.113.10", "203.0.113.20"];

fn gw(i: usize) -> &'static str {
    ["gwa", "gwb"][i]
}

fn sock(lab: &Lab, i: usize) -> String {
    lab.dir.join(format!("{}.sock", gw(i))).to_string_lossy().to_string()
}

fn xgwctl_json(lab: &Lab, i: usize, args: &[&str]) -> Vec<serde_json::Value> {
    let o = std::process::Command::new(bin("xgwctl"))
        .args(["--socket", &sock(lab, i), "-o", "json"])
        .args(args)
        .output()
        .expect("xgwctl");
    String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The inside hosts with a PPTP call (a GRE flow) through gateway `i`.
fn callers(lab: &Lab, i: usize) -> Vec<String> {
    let mut v: Vec<String> = xgwctl_json(lab, i, &["conntrack", "list", "-p", "gre"])
        .iter()
        .filter_map(|f| f["orig"][0].as_str().map(str::to_string))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// FRR's run directories, removed with the test.
struct FrrDirs(Vec<PathBuf>);

impl Drop for FrrDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Starts zebra, bfdd and bgpd (FRR, in the foreground: the lab ends them) in namespace
/// `role`: AS `asn`, BFD at 100 ms × 3 with every neighbour, announcing `networks`.
fn start_frr(
    lab: &mut Lab,
    dirs: &mut FrrDirs,
    role: &str,
    asn: u32,
    id: &str,
    neighbours: &[(&str, u32)],
    networks: &[&str],
) -> Vec<u32> {
    let ns = lab.ns(role);
    let run = PathBuf::from("/var/run/frr").join(&ns);
    std::fs::create_dir_all(&run).expect("frr run dir");
    xgw_tests::sh(&["chown", "frr:frr", run.to_str().expect("path")]);
    dirs.0.push(run.clone());
    let conf = lab.dir.join(format!("frr-{role}"));
    std::fs::create_dir_all(&conf).expect("frr conf dir");
    let mut bgp = format!(
        "log stdout\nrouter bgp {asn}\n bgp router-id {id}\n no bgp ebgp-requires-policy\n no bgp network import-check\n"
    );
    for (addr, remote) in neighbours {
        bgp += &format!(
            " neighbor {addr} remote-as {remote}\n neighbor {addr} bfd profile fast\n neighbor {addr} timers 3 9\n neighbor {addr} timers connect 1\n"
        );
    }
    bgp += " address-family ipv4 unicast\n";
    for n in networks {
        bgp += &format!("  network {n}\n");
    }
    bgp += " exit-address-family\n";
    let files = [
        ("zebra", format!("log stdout\nhostname {role}\n")),
        (
            "bfdd",
            "log stdout\nbfd\n profile fast\n  detect-multiplier 3\n  receive-interval 100\n  transmit-interval 100\n"
                .to_string(),
        ),
        ("bgpd", bgp),
    ];
    let mut pids = Vec::new();
    for (daemon, text) in files {
        let f = conf.join(format!("{daemon}.conf"));
        std::fs::write(&f, text).expect("frr conf");
        let pid = run.join(format!("{daemon}.pid"));
        let (f, pid) = (f.to_string_lossy().to_string(), pid.to_string_lossy().to_string());
        let exe = format!("/usr/lib/frr/{daemon}");
        let args = [exe.as_str(), "-N", &ns, "-f", &f, "-i", &pid, "-u", "frr", "-g", "frr", "-P", "0"];
        pids.push(lab.spawn(role, &args, &format!("frr-{role}-{daemon}.log")));
        if daemon == "zebra" {
            let zserv = run.join("zserv.api");
            let t0 = Instant::now();
            while !zserv.exists() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    pids
}

fn route_to(lab: &Lab, role: &str, prefix: &str) -> String {
    lab.exec_ok(role, &["ip", "route", "show", prefix]).trim().to_string()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool, log: impl Fn() -> String) -> f64 {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not after {limit:?}\n{}", log());
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed().as_secs_f64()
}

#[test]
fn two_active_gateways_behind_ecmp_one_dies_its_pool_is_withdrawn_and_its_clients_move() {
    let mut lab = Lab::new();
    let mut dirs = FrrDirs(Vec::new());
    for sw in ["lan", "wan"] {
        lab.add_switch(sw);
    }
    add_clients(&mut lab, CLIENTS);
    for ns in ["rin", "gwa", "gwb", "rout", "srv"] {
        lab.add_ns(ns);
    }
    // the inside router: ECMP over the two gateways, hashed on (source, destination), in a
    // resilient group (a dead gateway's buckets move, the others' stay)
    lab.link("rin", "eth0", "10.10.0.1/24", "lan", "pr", "");
    lab.plug("lan", "pr");
    lab.link("rin", "ta", "10.1.1.1/30", "gwa", "xgw-in", "10.1.1.2/30");
    lab.link("rin", "tb", "10.1.2.1/30", "gwb", "xgw-in", "10.1.2.2/30");
    lab.exec_ok("rin", &["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=0"]);
    lab.exec_ok("rin", &["ip", "nexthop", "add", "id", "1", "via", "10.1.1.2", "dev", "ta"]);
    lab.exec_ok("rin", &["ip", "nexthop", "add", "id", "2", "via", "10.1.2.2", "dev", "tb"]);
    lab.exec_ok("rin", &["ip", "nexthop", "add", "id", "10", "group", "1/2", "type", "resilient", "buckets", "64"]);
    lab.exec_ok("rin", &["ip", "route", "add", "default", "nhid", "10"]);
    // the outside: both gateways and the outside router on one switch; the server behind
    for (i, g) in ["gwa", "gwb"].iter().enumerate() {
        lab.link(g, "xgw-out", &format!("100.64.0.{}/24", 2 + i), "wan", &format!("g{i}"), "");
        lab.plug("wan", &format!("g{i}"));
        lab.exec_ok(g, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        lab.exec_ok(g, &["ip", "route", "add", "10.10.0.0/24", "via", &format!("10.1.{}.1", 1 + i)]);
        lab.exec_ok(g, &["ip", "route", "add", "default", "via", "100.64.0.1"]);
    }
    lab.link("rout", "eth0", "100.64.0.1/24", "wan", "pr", "");
    lab.plug("wan", "pr");
    lab.link("rout", "eth1", "198.51.100.1/24", "srv", "eth0", &format!("{SERVER}/24"));
    lab.exec_ok("rout", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lab.exec_ok("srv", &["ip", "route", "add", "default", "via", "198.51.100.1"]);

    // the gateways: xgwd (BGP and BFD are the box's own services), then FRR
    let mut xgwd = Vec::new();
    let mut frr = Vec::new();
    for (i, pool) in POOL.iter().enumerate() {
        let rules = format!(
            "interface lan device xgw-in role inside address 10.1.{}.2/30\n\
             interface wan device xgw-out role outside address 100.64.0.{}/24\n\
             nat overload pool {}\n",
            1 + i,
            2 + i,
            pool
        );
        let s = sock(&lab, i);
        let args = ["--socket", s.as_str(), "--host-service", "tcp:179", "--host-service", "udp:3784"];
        xgwd.push(lab.start_xgwd_as(gw(i), &format!("{}.rules", gw(i)), gw(i), &rules, &args));
        let pool = format!("{pool}/32");
        let id = format!("100.64.0.{}", 2 + i);
        frr.push(start_frr(&mut lab, &mut dirs, gw(i), 65001 + i as u32, &id, &[("100.64.0.1", 65000)], &[&pool]));
    }
    start_frr(&mut lab, &mut dirs, "rout", 65000, "100.64.0.1", &[("100.64.0.2", 65001), ("100.64.0.3", 65002)], &[]);
    let lab_ref = &lab;
    let announced = wait_for(
        "both pools announced",
        Duration::from_secs(30),
        || POOL.iter().all(|p| !route_to(lab_ref, "rout", p).is_empty()),
        || lab_ref.log("frr-rout-bgpd.log"),
    );
    start_server(&mut lab, "srv");

    // twenty clients of one Call ID
    let idfile = lab.dir.join("call-id");
    std::fs::write(&idfile, 0x0100u16.to_ne_bytes()).expect("call id");
    let mut pids: Vec<u32> = (1..=CLIENTS).map(|i| start_client(&mut lab, i, &idfile, 120)).collect();
    let lab_ref = &lab;
    wait_for(
        "every call up and echoing",
        Duration::from_secs(40),
        || (1..=CLIENTS).all(|i| replied_seqs(lab_ref, i).len() >= 3),
        || (1..=CLIENTS).map(|i| format!("client {i}: {}\n", replied_seqs(lab_ref, i).len())).collect(),
    );
    let on: [Vec<String>; 2] = [callers(&lab, 0), callers(&lab, 1)];
    println!("calls before: gwa {} {:?}, gwb {} {:?}", on[0].len(), on[0], on[1].len(), on[1]);
    assert_eq!(on[0].len() + on[1].len(), CLIENTS, "every call on exactly one gateway: {on:?}");
    assert!(!on[0].is_empty() && !on[1].is_empty(), "ECMP spread the clients over both: {on:?}");
    let idx = |addr: &str| (1..=CLIENTS).find(|&i| client_addr(i) == addr).expect("a client");
    let (a_clients, b_clients): (Vec<usize>, Vec<usize>) =
        (on[0].iter().map(|a| idx(a)).collect(), on[1].iter().map(|a| idx(a)).collect());

    // gwa dies: its links go dark (the inside router sees its carrier go), its processes end
    let last_before: BTreeMap<usize, u64> =
        (1..=CLIENTS).map(|i| (i, replied_seqs(&lab, i).last().copied().unwrap_or(0))).collect();
    let t_stop = Instant::now();
    for dev in ["xgw-in", "xgw-out"] {
        lab.exec_ok("gwa", &["ip", "link", "set", dev, "down"]);
    }
    lab.crash(xgwd[0]);
    for &p in &frr[0] {
        lab.crash(p);
    }
    let lab_ref = &lab;
    wait_for(
        "gwa's pool withdrawn by the outside router",
        Duration::from_secs(10),
        || route_to(lab_ref, "rout", POOL[0]).is_empty(),
        || lab_ref.log("frr-rout-bgpd.log"),
    );
    let withdrawn_at = t_stop.elapsed().as_secs_f64();

    // gwa's clients start again (a dead gateway's control connections cannot be saved:
    // nothing else holds their translations) and come up through gwb at once
    for &i in &a_clients {
        lab.stop(pids[i - 1], "");
        // the new call's log starts empty
        let _ = std::fs::remove_file(lab.dir.join(format!("client-{i}.log")));
    }
    let t_reconnect = Instant::now();
    for &i in &a_clients {
        pids[i - 1] = start_client(&mut lab, i, &idfile, 60);
    }
    let lab_ref = &lab;
    let a_ref = &a_clients;
    let reconnected = wait_for(
        "gwa's clients up again through gwb",
        Duration::from_secs(30),
        || a_ref.iter().all(|&i| !replied_seqs(lab_ref, i).is_empty()),
        || a_ref.iter().map(|&i| format!("client {i}: {}\n", lab_ref.log(&format!("client-{i}.log")))).collect(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let on_b = callers(&lab, 1);
    let since_stop = t_stop.elapsed().as_secs_f64();

    // gwb's calls: every echo since the failure answered, none missing
    let mut lost = BTreeMap::new();
    for &i in &b_clients {
        let after: Vec<u64> = replied_seqs(&lab, i).into_iter().filter(|s| *s > last_before[&i]).collect();
        let expected = after.last().map_or(0, |l| l - last_before[&i]);
        lost.insert(i, expected.saturating_sub(after.len() as u64));
        assert!(after.len() >= 10, "client {i} on gwb stopped getting replies: {after:?}");
    }
    println!(
        "scale-out: pools announced {announced:.2} s after FRR started; gwa's pool withdrawn {withdrawn_at:.3} s after it died (BFD 100 ms x 3); \
         its {} clients reconnected through gwb {reconnected:.2} s after they restarted ({:.2} s after the failure); \
         gwb's {} calls lost {:?} echoes (of ~{:.0} each); calls on gwb now {}",
        a_clients.len(),
        t_reconnect.duration_since(t_stop).as_secs_f64() + reconnected,
        b_clients.len(),
        lost,
        since_stop / 0.2,
        on_b.len(),
    );
    assert!(withdrawn_at < 1.0, "the pool must be withdrawn within 1 s, took {withdrawn_at:.3} s");
    assert!(lost.values().all(|&l| l == 0), "gwb's calls must be untouched: lost {lost:?}");
    assert_eq!(on_b.len(), CLIENTS, "every client calls through gwb now: {on_b:?}");
    assert!(route_to(&lab, "rout", POOL[1]).contains("100.64.0.3"), "gwb's pool still announced");
    drop(dirs);
}
