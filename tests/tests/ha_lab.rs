//! An HA pair in namespaces: two gateways A and B, each with an inside leg on the LAN bridge
//! and an outside leg on the WAN bridge, a sync link between them, keepalived (VRRPv3,
//! 100 ms adverts, the configuration of dist/keepalived-xgw.conf) in each gateway's
//! namespace. Clients, server and bridges stay at kernel defaults.
//!
//! ```text
//!  c1..c10 10.10.0.11.. ── br0 (lan) ─┬─ xgw-in 10.10.0.2 [A] xgw-out 198.51.100.2 ─┬─ br0 (wan) ── srv 198.51.100.20
//!                                     └─ xgw-in 10.10.0.3 [B] xgw-out 198.51.100.3 ─┘
//!               virtual: 10.10.0.1 inside, 198.51.100.1 outside (the PAT address); A ═ sync ═ B
//! ```
//!
//! Ten real pptp-linux clients of one Call ID set their calls up through A (LCP echoes
//! every 200 ms; pptp's control-connection Echo-Request after 3 s idle), with a TCP transfer
//! and a UDP flow beside; then A fails — xgwd killed (-9), or A's outside cable pulled.
//! Every call must carry on through B with the same outside Call IDs, no RST on any control
//! connection, every control connection's next Echo-Request must pass B and be answered (B's
//! inspector carries on where A's left each stream), a client hanging up must be followed
//! (a Call-Clear-Request leaves under the Call ID the server knows), the TCP transfer must
//! complete. The gap (failure → first GRE B forwards) and the echoes lost per call are
//! printed. After the kill, A's xgwd restarts: it may become master again only after its
//! bulk sync from B, and the calls carry on through it. The control run, with the sync
//! link's key wrong on B (every message refused), loses the calls: the test can tell.
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xgw_tests::pptp::{add_clients, client, client_addr, replied_seqs, start_client_echoing, start_server, SERVER};
use xgw_tests::{bin, Lab};

const RULES: &str = include_str!("../../rules/examples/lab.rules");
const KEEPALIVED: &str = include_str!("../../dist/keepalived-xgw.conf");
const CLIENTS: usize = 10;
const CALL_ID: u16 = 0x1234;

/// A TCP source that paces N bytes over S seconds, then checks the sink's digest.
const PACED_SOURCE: &str = r#"
import socket, hashlib, sys, os, time
n, secs = int(sys.argv[3]), float(sys.argv[4])
data = os.urandom(n); chunk = 16384; step = secs / (n / chunk)
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
for i in range(0, n, chunk):
    c.sendall(data[i:i + chunk]); time.sleep(step)
c.shutdown(socket.SHUT_WR)
r = c.makefile().readline().split()
ok = r[0] == str(n) and r[1] == hashlib.sha256(data).hexdigest()
print("OK" if ok else "BAD", r[0], r[2], flush=True)
"#;

/// A UDP flow: one datagram every 20 ms for S seconds to an echo server; prints
/// "sent N lost M".
const UDP_PING: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.02)
end = time.time() + float(sys.argv[3]); sent = 0; got = set()
while time.time() < end:
    s.sendto(str(sent).encode(), (sys.argv[1], int(sys.argv[2]))); sent += 1
    t = time.time() + 0.02
    while time.time() < t:
        try:
            d, _ = s.recvfrom(64); got.add(int(d.split(b" ")[0]))
        except socket.timeout:
            pass
time.sleep(1)
try:
    while True:
        d, _ = s.recvfrom(64); got.add(int(d.split(b" ")[0]))
except socket.timeout:
    pass
print("sent", sent, "lost", sent - len(got), flush=True)
"#;

/// Echoes each datagram back with its payload first.
const UDP_ECHO_BACK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    d, a = s.recvfrom(2048); s.sendto(d + b" " + a[0].encode(), a)
"#;

struct Pair {
    lab: Lab,
    xgwd: [u32; 2],
    capture: u32,
    rules: String,
    /// This binary's tests take turns (held until the lab is gone): the flood test saturates
    /// both cores, and a slow server misses the clients' echo deadlines in the other tests.
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// Whose turn it is (see [`Pair::_turn`]).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How the active gateway fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// `kill -9` of xgwd on A.
    Kill,
    /// A's outside cable pulled (its port on the WAN bridge down).
    CutOutside,
}

fn gw(i: usize) -> &'static str {
    ["gwa", "gwb"][i]
}

fn sock(lab: &Lab, i: usize) -> PathBuf {
    lab.dir.join(format!("{}.sock", gw(i)))
}

fn xgwctl(lab: &Lab, i: usize, args: &[&str]) -> String {
    let o = Command::new(bin("xgwctl")).arg("--socket").arg(sock(lab, i)).args(args).output().expect("xgwctl");
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// B's PPTP calls in progress; a query that fails (B busy, the answer cut short) is asked
/// again, each failure printed, rather than read as "no calls".
fn b_calls_in_progress(lab: &Lab) -> u64 {
    for _ in 0..20 {
        let o = Command::new(bin("xgwctl"))
            .arg("--socket")
            .arg(sock(lab, 1))
            .args(["-o", "json", "stats"])
            .output()
            .expect("xgwctl");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(n) = v["pptp"]["calls_in_progress"].as_u64() {
            return n;
        }
        println!("xgwctl stats on B failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim());
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("B answered no stats query");
}

fn ha_status(lab: &Lab, i: usize) -> serde_json::Value {
    serde_json::from_str(&xgwctl(lab, i, &["-o", "json", "ha", "status"])).unwrap_or(serde_json::Value::Null)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool, log: impl Fn() -> String) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not after {limit:?}\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts xgwd of gateway `i` with its settings file (written by [`Pair::start`]).
fn start_gateway(lab: &mut Lab, i: usize, rules: &str) -> u32 {
    let settings = lab.dir.join(format!("{}.toml", gw(i)));
    let (s, c) = (sock(lab, i).to_string_lossy().to_string(), settings.to_string_lossy().to_string());
    lab.start_xgwd_as(gw(i), &format!("{}.rules", gw(i)), gw(i), rules, &["--socket", &s, "--config", &c])
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64()
}

impl Pair {
    /// The topology, both xgwd (B's sync key `key_b`), keepalived on both; waits until A is
    /// master and B backup.
    fn start(key_b: &str) -> Pair {
        // a test that failed while holding the turn poisons it; the next one still runs
        let turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut lab = Lab::new();
        for sw in ["lan", "wan"] {
            lab.add_switch(sw);
        }
        add_clients(&mut lab, CLIENTS);
        for ns in ["gwa", "gwb", "srv"] {
            lab.add_ns(ns);
        }
        for (i, g) in ["gwa", "gwb"].iter().enumerate() {
            lab.link(g, "xgw-in", &format!("10.10.0.{}/24", 2 + i), "lan", &format!("g{i}"), "");
            lab.plug("lan", &format!("g{i}"));
            lab.link(g, "xgw-out", &format!("198.51.100.{}/24", 2 + i), "wan", &format!("g{i}"), "");
            lab.plug("wan", &format!("g{i}"));
            lab.exec_ok(g, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        }
        lab.link("gwa", "sync", "192.168.255.1/30", "gwb", "sync", "192.168.255.2/30");
        lab.link("srv", "eth0", &format!("{SERVER}/24"), "wan", "ps", "");
        lab.plug("wan", "ps");
        // the outside link as the server sees it, with link-level addresses (which gateway)
        let pcap = lab.dir.join("outside.pcap").to_string_lossy().to_string();
        let capture = lab.spawn("srv", &["tcpdump", "-i", "eth0", "-U", "-w", &pcap, "ip"], "tcpdump.log");

        let rules = format!(
            "{RULES}\naccess-list lan_out permit tcp any any eq 5001\naccess-list lan_out permit udp any any eq 5002\n\
             access-list lan_out permit tcp host 10.10.0.11 any\n"
        );
        let mut xgwd = [0; 2];
        for (i, pid) in xgwd.iter_mut().enumerate() {
            let key = lab.dir.join(format!("{}.key", gw(i)));
            std::fs::write(&key, if i == 0 { "xgw-ha-test-key-0123456789" } else { key_b }).expect("key");
            let settings = lab.dir.join(format!("{}.toml", gw(i)));
            let ready = lab.dir.join(format!("{}-ha-ready", gw(i)));
            std::fs::write(
                &settings,
                format!(
                    "[ha]\nlisten = \"192.168.255.{}:7474\"\npeer = \"192.168.255.{}:7474\"\nkey_file = \"{}\"\nready_file = \"{}\"\n",
                    1 + i,
                    2 - i,
                    key.display(),
                    ready.display()
                ),
            )
            .expect("settings");
            *pid = start_gateway(&mut lab, i, &rules);
        }
        let mut p = Pair { lab, xgwd, capture, rules, _turn: turn };
        for i in 0..2 {
            p.start_keepalived(i);
        }
        let lab = &p.lab;
        let logs =
            || format!("{}\n{}\n{}", lab.log("gwa.log"), lab.log("keepalived-gwa.log"), lab.log("keepalived-gwb.log"));
        wait_for(
            "A master, B backup",
            Duration::from_secs(20),
            || ha_status(lab, 0)["role"] == "master" && ha_status(lab, 1)["role"] == "backup",
            logs,
        );
        p
    }

    /// keepalived in gateway `i`'s namespace with dist/keepalived-xgw.conf (paths and
    /// priorities of this lab; scripts from the build tree, so no script security).
    fn start_keepalived(&mut self, i: usize) {
        let lab = &mut self.lab;
        let ready = lab.dir.join(format!("{}-ha-ready", gw(i)));
        let conf = KEEPALIVED
            .replace("/usr/bin/xgwctl", &bin("xgwctl").to_string_lossy())
            .replace("/run/xgw/xgw.sock", &sock(lab, i).to_string_lossy())
            .replace("/run/xgw/ha-ready", &ready.to_string_lossy())
            .replace("router_id xgw-a", &format!("router_id xgw-{}", gw(i)))
            .replace("priority 150", if i == 0 { "priority 150" } else { "priority 100" })
            .replace("    enable_script_security\n", "");
        let path = lab.dir.join(format!("keepalived-{}.conf", gw(i)));
        std::fs::write(&path, conf).expect("keepalived.conf");
        let (pid, vpid) = (lab.dir.join(format!("ka-{}.pid", gw(i))), lab.dir.join(format!("vrrp-{}.pid", gw(i))));
        lab.spawn(
            gw(i),
            &[
                "keepalived",
                "-n",
                "-l",
                "-P",
                "-f",
                &path.to_string_lossy(),
                "-p",
                &pid.to_string_lossy(),
                "-r",
                &vpid.to_string_lossy(),
            ],
            &format!("keepalived-{}.log", gw(i)),
        );
    }

    /// Each gateway's outside MAC.
    fn outside_macs(&self) -> [String; 2] {
        [0, 1].map(|i| self.lab.exec_ok(gw(i), &["cat", "/sys/class/net/xgw-out/address"]).trim().to_string())
    }
}

/// What the outside capture shows.
#[derive(Debug, Default)]
struct Seen {
    /// GRE from the gateways: (time, source MAC, IP source, GRE key).
    gre: Vec<(f64, String, String, u16)>,
    /// TCP RSTs on control connections.
    rst: usize,
    /// Call IDs of Outgoing-Call-Requests, by the control connection's outside port.
    ocrq: BTreeMap<u16, u16>,
    /// Call-Clear-Requests: (time, outside port, Call ID).
    ccrq: Vec<(f64, u16, u16)>,
    /// Control-connection Echo-Requests the gateways sent: (time, source MAC, outside port).
    echo_rq: Vec<(f64, String, u16)>,
    /// Echo-Replies the server sent: (time, outside port).
    echo_rp: Vec<(f64, u16)>,
}

/// GRE frames, RSTs and the control messages naming calls, on the outside link.
fn outside_capture(path: &std::path::Path) -> Seen {
    let f = std::fs::File::open(path).expect("capture");
    let recs = xgw_dataplane::replay::read_capture(f, "outside.pcap").expect("readable capture");
    let mut seen = Seen::default();
    let (gre, rst) = (&mut seen.gre, &mut seen.rst);
    for r in &recs {
        let fr = &r.frame;
        if fr.len() < 42 || fr[12..14] != [8, 0] {
            continue;
        }
        let l4 = 14 + usize::from(fr[14] & 15) * 4;
        let src = std::net::Ipv4Addr::new(fr[26], fr[27], fr[28], fr[29]).to_string();
        if fr[23] == 47 && fr.len() >= l4 + 8 && src != SERVER {
            let mac = fr[6..12].iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            gre.push((r.ts.as_secs_f64(), mac, src, u16::from_be_bytes([fr[l4 + 6], fr[l4 + 7]])));
        } else if fr[23] == 6 && fr.len() >= l4 + 14 {
            let ports = [u16::from_be_bytes([fr[l4], fr[l4 + 1]]), u16::from_be_bytes([fr[l4 + 2], fr[l4 + 3]])];
            if ports.contains(&1723) && fr[l4 + 13] & 0x04 != 0 {
                *rst += 1;
            }
            // a control message from the gateway: length, type 1, magic, control type, 0, Call ID
            let p = &fr[(l4 + usize::from(fr[l4 + 12] >> 4) * 4).min(fr.len())..];
            if p.len() >= 14 && p[4..8] == [0x1a, 0x2b, 0x3c, 0x4d] {
                let (kind, id) = (u16::from_be_bytes([p[8], p[9]]), u16::from_be_bytes([p[12], p[13]]));
                let t = r.ts.as_secs_f64();
                let mac = fr[6..12].iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
                match (kind, ports[1] == 1723) {
                    (7, true) => {
                        seen.ocrq.insert(ports[0], id);
                    }
                    (12, true) => seen.ccrq.push((t, ports[0], id)),
                    (5, true) => seen.echo_rq.push((t, mac, ports[0])),
                    (6, false) => seen.echo_rp.push((t, ports[1])),
                    _ => {}
                }
            }
        }
    }
    seen
}

/// What a failover run saw.
#[derive(Debug)]
struct Outcome {
    gap: Option<f64>,
    lost: BTreeMap<usize, u64>,
    survived: usize,
    rst: usize,
    tcp: String,
    udp: String,
    b_calls: u64,
    b_calls_after_hangup: u64,
    keys_before: std::collections::BTreeSet<u16>,
    keys_after: std::collections::BTreeSet<u16>,
    sources_after: std::collections::BTreeSet<String>,
    /// Call-Clear-Requests B sent after the kill: (outside port, Call ID, the Call ID the
    /// connection's Outgoing-Call-Request carried through A).
    hangups: Vec<(u16, u16, Option<u16>)>,
    /// Control connections (outside ports) that sent an Echo-Request through B after the
    /// failure, and those of them the server answered.
    echoed: (usize, usize),
    /// B's log lines of calls it ended.
    b_calls_ended: Vec<String>,
}

/// Calls up through A, traffic beside, A fails `how`; what happened.
fn failover(p: &mut Pair, synced: bool, how: Failure) -> Outcome {
    let seconds = 120;
    start_server(&mut p.lab, "srv");
    let idfile = p.lab.dir.join("call-id");
    std::fs::write(&idfile, CALL_ID.to_ne_bytes()).expect("call id file");
    let mut pids = Vec::new();
    for i in 1..=CLIENTS {
        pids.push(start_client_echoing(&mut p.lab, i, &idfile, seconds, Some(3)));
    }
    let lab = &p.lab;
    wait_for(
        "every call up with echoes answered",
        Duration::from_secs(20),
        || (1..=CLIENTS).all(|i| replied_seqs(lab, i).len() >= 5),
        || {
            format!(
                "{}\n{}",
                lab.log("gwa.log"),
                (1..=CLIENTS).map(|i| lab.log(&format!("client-{i}.log"))).collect::<String>()
            )
        },
    );
    // TCP and UDP beside the calls
    p.lab.spawn("srv", &["python3", "-c", xgw_tests::TCP_SINK, SERVER, "5001"], "sink.log");
    p.lab.spawn("srv", &["python3", "-c", UDP_ECHO_BACK, SERVER, "5002"], "echo.log");
    p.lab.wait_listening("srv", 5001);
    p.lab.wait_listening("srv", 5002);
    p.lab.spawn(&client(1), &["python3", "-c", PACED_SOURCE, SERVER, "5001", "8000000", "8"], "tcp.log");
    p.lab.spawn(&client(2), &["python3", "-c", UDP_PING, SERVER, "5002", "8"], "udp.log");
    // B holds every call before the kill (unless the sync is refused: the control run)
    let lab = &p.lab;
    let want = if synced { CLIENTS as u64 } else { 0 };
    wait_for(
        "B holds every call",
        Duration::from_secs(10),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&xgwctl(lab, 1, &["-o", "json", "stats"])).unwrap_or_default();
            v["pptp"]["calls_in_progress"].as_u64() == Some(want)
        },
        || format!("{}\n{}", xgwctl(lab, 1, &["ha", "status"]), lab.log("gwb.log")),
    );
    std::thread::sleep(Duration::from_secs(2));
    let seqs_before: Vec<u64> = (1..=CLIENTS).map(|i| replied_seqs(&p.lab, i).last().copied().unwrap_or(0)).collect();
    let killed_at = now_unix();
    match how {
        Failure::Kill => p.lab.crash(p.xgwd[0]),
        Failure::CutOutside => {
            p.lab.exec_ok("wan", &["ip", "link", "set", "g0", "down"]);
        }
    }
    // the calls carry on for a while through B; then one client hangs up
    std::thread::sleep(Duration::from_secs(8));
    let b_calls = b_calls_in_progress(&p.lab);
    let last = pids.pop().expect("a client");
    p.lab.stop(last, "");
    // the call ends on B when the server answers, or the inspector's grace after the control
    // connection closed (5 s in the lab's rules); a failed query (printed) is not an answer
    let t0 = Instant::now();
    while b_calls > 0 && t0.elapsed() < Duration::from_secs(10) {
        if b_calls_in_progress(&p.lab) < b_calls {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let b_calls_after_hangup = b_calls_in_progress(&p.lab);
    let b_calls_ended: Vec<String> =
        p.lab.log("gwb.log").lines().filter(|l| l.contains("PPTP call ended")).map(str::to_string).collect();
    let mut lost = BTreeMap::new();
    let mut survived = 0;
    for i in 1..=CLIENTS - 1 {
        let seqs = replied_seqs(&p.lab, i);
        let before = seqs_before[i - 1];
        let after: Vec<u64> = seqs.into_iter().filter(|s| *s > before).collect();
        if after.len() > 10 {
            survived += 1;
        }
        let top = after.last().copied().unwrap_or(before);
        lost.insert(i, (top - before) - after.len() as u64);
    }
    let lab = &p.lab;
    wait_for("the TCP transfer's end", Duration::from_secs(30), || !lab.log("tcp.log").is_empty(), String::new);
    wait_for("the UDP flow's end", Duration::from_secs(30), || !lab.log("udp.log").is_empty(), String::new);
    let macs = p.outside_macs();
    std::thread::sleep(Duration::from_millis(300));
    let _ = p.lab.stop(p.capture, "");
    let seen = outside_capture(&p.lab.dir.join("outside.pcap"));
    let (gre, rst) = (&seen.gre, seen.rst);
    let hangups: Vec<(u16, u16, Option<u16>)> = seen
        .ccrq
        .iter()
        .filter(|(t, _, _)| *t > killed_at)
        .map(|(_, port, id)| (*port, *id, seen.ocrq.get(port).copied()))
        .collect();
    let via_b: std::collections::BTreeSet<u16> =
        seen.echo_rq.iter().filter(|(t, m, _)| *t > killed_at && *m == macs[1]).map(|e| e.2).collect();
    let answered = via_b.iter().filter(|port| seen.echo_rp.iter().any(|(t, p)| *t > killed_at && p == *port)).count();
    let gap = gre.iter().find(|(t, mac, _, _)| *t > killed_at && *mac == macs[1]).map(|(t, _, _, _)| t - killed_at);
    let keys_before = gre.iter().filter(|(t, m, _, _)| *t < killed_at && *m == macs[0]).map(|g| g.3).collect();
    let keys_after = gre.iter().filter(|(t, m, _, _)| *t > killed_at && *m == macs[1]).map(|g| g.3).collect();
    let sources_after = gre.iter().filter(|(t, _, _, _)| *t > killed_at).map(|g| g.2.clone()).collect();
    Outcome {
        gap,
        lost,
        survived,
        rst,
        tcp: p.lab.log("tcp.log").trim().to_string(),
        udp: p.lab.log("udp.log").trim().to_string(),
        b_calls,
        b_calls_after_hangup,
        keys_before,
        keys_after,
        sources_after,
        hangups,
        echoed: (via_b.len(), answered),
        b_calls_ended,
    }
}

/// Prints what a failover did and checks that everything carried on through B.
fn assert_carried_on(p: &Pair, o: &Outcome, what: &str) {
    println!(
        "HA failover ({what}): gap → first GRE forwarded by B {:?} s; calls alive after: {} of {}; \
         echoes lost per call {:?}; RSTs on control connections {}; TCP: {}; UDP: {}; B's calls {} then {} after a hang-up \
         (Call-Clear-Requests from B: {:?}); control connections with an Echo-Request through B, answered: {:?}",
        o.gap.map(|g| (g * 1000.0).round() / 1000.0),
        o.survived,
        CLIENTS - 1,
        o.lost,
        o.rst,
        o.tcp,
        o.udp,
        o.b_calls,
        o.b_calls_after_hangup,
        o.hangups,
        o.echoed,
    );
    let st = xgwctl(&p.lab, 1, &["ha", "status"]);
    println!("B: {st}");
    assert_eq!(o.survived, CLIENTS - 1, "calls lost in the failover: {o:?}\n{}", p.lab.log("gwb.log"));
    assert_eq!(o.rst, 0, "a control connection was reset");
    assert!(o.gap.is_some_and(|g| g < 3.0), "B forwarded no GRE soon after the failure: {o:?}");
    assert!(o.tcp.starts_with("OK 8000000 198.51.100.1:"), "the TCP transfer: {o:?}");
    assert_eq!(o.b_calls, CLIENTS as u64, "B holds every call after the failover");
    // every control connection's next message (pptp's Echo-Request every 3 s idle) went
    // through B and was answered: B's inspector carried on where A's left each stream
    assert_eq!(o.echoed, (CLIENTS, CLIENTS), "control connections echoed through B and answered: {o:?}");
    // a client hanging up sends a Call-Clear-Request (when pptp gets to it before its end)
    for (port, id, through_a) in &o.hangups {
        assert_eq!(Some(*id), *through_a, "port {port}: the hang-up names the call as the server knows it");
        assert_ne!(*id, CALL_ID, "port {port}: the client's own Call ID leaked");
    }
    assert_eq!(
        o.b_calls_after_hangup,
        CLIENTS as u64 - 1,
        "B followed the hang-up on the synced control stream; B's calls:\n{}\ncalls B ended:\n{}",
        xgwctl(&p.lab, 1, &["pptp"]),
        o.b_calls_ended.join("\n")
    );
    assert_eq!(o.keys_after, o.keys_before, "the same outside Call IDs after the failover");
    assert!(o.sources_after.iter().all(|s| s == "198.51.100.1"), "{:?}", o.sources_after);
    assert!(st.contains("role master"), "{st}");
}

#[test]
fn every_pptp_call_survives_a_crash_of_the_active_gateway_and_the_failback() {
    let mut p = Pair::start("xgw-ha-test-key-0123456789");
    let o = failover(&mut p, true, Failure::Kill);
    assert_carried_on(&p, &o, "kill -9 of xgwd on A");

    // failback: A's xgwd restarts, takes B's state in a bulk resync, and only then may
    // keepalived make it master again (it has the higher priority)
    let before: Vec<u64> = (1..CLIENTS).map(|i| replied_seqs(&p.lab, i).last().copied().unwrap_or(0)).collect();
    let rules = p.rules.clone();
    p.xgwd[0] = start_gateway(&mut p.lab, 0, &rules);
    let lab = &p.lab;
    wait_for(
        "A master again, B backup",
        Duration::from_secs(20),
        || ha_status(lab, 0)["role"] == "master" && ha_status(lab, 1)["role"] == "backup",
        || format!("{}\n{}", lab.log("gwa.log"), lab.log("keepalived-gwa.log")),
    );
    std::thread::sleep(Duration::from_secs(4));
    let log = p.lab.log("gwa.log");
    let synced_at = log.find("HA readiness ready=true synced=true").expect("A became ready only once in sync");
    let master_at = log.find("to=\"master\"").expect("A became master");
    assert!(synced_at < master_at, "A was master before its bulk sync completed:\n{log}");
    let st = ha_status(&p.lab, 0);
    let a_calls = {
        let v: serde_json::Value =
            serde_json::from_str(&xgwctl(&p.lab, 0, &["-o", "json", "stats"])).unwrap_or_default();
        v["pptp"]["calls_in_progress"].as_u64().unwrap_or(0)
    };
    let mut alive = 0;
    let mut lost = BTreeMap::new();
    for i in 1..CLIENTS {
        let after: Vec<u64> = replied_seqs(&p.lab, i).into_iter().filter(|s| *s > before[i - 1]).collect();
        if after.len() >= 10 {
            alive += 1;
        }
        let top = after.last().copied().unwrap_or(before[i - 1]);
        lost.insert(i, (top - before[i - 1]) - after.len() as u64);
    }
    println!(
        "HA failback (A restarted): A master after its bulk sync (last bulk {:?} ms before the check); A holds {a_calls} calls; \
         calls alive through A: {alive} of {}; echoes lost per call {lost:?}",
        st["last_bulk_ms_ago"],
        CLIENTS - 1
    );
    assert_eq!(
        a_calls,
        CLIENTS as u64 - 1,
        "A took every call in its bulk sync: A:\n{}\nB:\n{}",
        xgwctl(&p.lab, 0, &["pptp"]),
        xgwctl(&p.lab, 1, &["pptp"])
    );
    assert_eq!(alive, CLIENTS - 1, "calls lost in the failback: {lost:?}\n{log}");
}

#[test]
fn every_pptp_call_survives_the_active_gateways_outside_link_cut() {
    let mut p = Pair::start("xgw-ha-test-key-0123456789");
    let o = failover(&mut p, true, Failure::CutOutside);
    assert_carried_on(&p, &o, "A's outside link cut");
    let a = ha_status(&p.lab, 0);
    assert_eq!(a["role"], "fault", "A, cut off, leaves the master role: {a}");
}

#[test]
fn without_the_state_sync_the_calls_are_lost() {
    // B's key differs: every sync message is refused (and counted), B has nothing to go on
    let mut p = Pair::start("another-key-entirely-0123456789");
    let o = failover(&mut p, false, Failure::Kill);
    println!(
        "HA control run (sync refused): calls alive after the failover {} of {}; gap {:?}; B's calls {}",
        o.survived,
        CLIENTS - 1,
        o.gap,
        o.b_calls
    );
    let st: serde_json::Value = ha_status(&p.lab, 1);
    assert!(st["counters"]["refused_bad_mac"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(o.survived < CLIENTS - 1, "calls survived without the sync: {o:?}");
}

/// CPU ticks (user + system) of xgwd's thread named `name`.
fn thread_ticks(pid: u32, name: &str) -> u64 {
    let dir = format!("/proc/{pid}/task");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = e.path();
        if std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == name) {
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            // after the ")" closing the command: state, ppid, pgrp, session, tty_nr, tpgid
            // (may be -1), flags, minflt, cminflt, majflt, cmajflt, utime, stime
            let rest = stat.rsplit_once(')').map_or("", |x| x.1);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            return n(11) + n(12);
        }
    }
    0
}

/// The sync link's transmitted bytes on gateway `i`.
fn sync_tx_bytes(lab: &Lab, i: usize) -> u64 {
    let out = lab.exec_ok(gw(i), &["cat", "/sys/class/net/sync/statistics/tx_bytes"]);
    out.trim().parse().unwrap_or(0)
}

fn counter(v: &serde_json::Value, name: &str) -> u64 {
    v["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn the_sync_keeps_up_with_a_flood_of_new_flows() {
    const SECONDS: f64 = 2.0;
    let mut p = Pair::start("xgw-ha-test-key-0123456789");
    // new TCP flows from one inside host at the generator's rate, each to another port of
    // the server, where nothing listens (its kernel answers RST: each flow is created, then
    // closed)
    // what the sync thread costs when nothing happens
    let idle0 = thread_ticks(p.xgwd[0], "xgw-sync");
    std::thread::sleep(Duration::from_secs(2));
    let idle = (thread_ticks(p.xgwd[0], "xgw-sync") - idle0) as f64 / 2.0;
    let (a0, b0) = (ha_status(&p.lab, 0), ha_status(&p.lab, 1));
    let (bytes0, ticks0) = (sync_tx_bytes(&p.lab, 0), thread_ticks(p.xgwd[0], "xgw-sync"));
    let flood = bin("xgw-flood").to_string_lossy().to_string();
    let t0 = Instant::now();
    p.lab.spawn(&client(1), &[&flood, &client_addr(1), SERVER, "0", &SECONDS.to_string()], "flood.log");
    let mut max_lag = 0;
    while !p.lab.log("flood.log").contains("sent=") {
        assert!(t0.elapsed() < Duration::from_secs(30), "the flood did not end");
        max_lag = max_lag.max(ha_status(&p.lab, 0)["lag_ms"].as_u64().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    // until B has applied everything A sent
    let lab = &p.lab;
    wait_for(
        "B caught up",
        Duration::from_secs(30),
        || {
            let a = ha_status(lab, 0);
            a["unacked"] == 0 && a["counters"]["pending"] == 0
        },
        || xgwctl(lab, 0, &["ha", "status"]),
    );
    let caught_up = t0.elapsed().as_secs_f64();
    // (B publishes its counters every 100 ms)
    let sent = counter(&ha_status(&p.lab, 0), "records_sent") - counter(&a0, "records_sent");
    let lab = &p.lab;
    wait_for(
        "B's counters",
        Duration::from_secs(5),
        || counter(&ha_status(lab, 1), "records_applied") - counter(&b0, "records_applied") >= sent,
        || xgwctl(lab, 1, &["ha", "status"]),
    );
    let (a1, b1) = (ha_status(&p.lab, 0), ha_status(&p.lab, 1));
    let (bytes1, ticks1) = (sync_tx_bytes(&p.lab, 0), thread_ticks(p.xgwd[0], "xgw-sync"));
    let engine: serde_json::Value =
        serde_json::from_str(&xgwctl(&p.lab, 0, &["-o", "json", "stats"])).unwrap_or_default();
    let created = engine["conntrack"]["inserted"].as_u64().unwrap_or(0);
    let d = |a: &serde_json::Value, b: &serde_json::Value, n: &str| counter(b, n) - counter(a, n);
    let records = d(&a0, &a1, "records_sent");
    let acked = d(&a0, &a1, "messages_acked");
    let applied = d(&b0, &b1, "records_applied");
    let flows_created_b = d(&b0, &b1, "applied_created");
    let cpu = (ticks1 - ticks0) as f64 / 100.0;
    println!(
        "HA sync under a flood: {} ; A created {created} flows; records sent {records} ({:.0}/s over {caught_up:.1} s until B caught up), \
         {:.2} records per flow, {:.0} bytes per flow on the sync link ({} bytes), sync thread CPU {cpu:.2} s ({:.0} % of a core), \
         max lag {max_lag} ms, idle {idle:.0} % of a core; messages acknowledged {acked}; B applied {applied} records, created {flows_created_b} flows, conflicts {}, table full {}, invalid {}",
        p.lab.log("flood.log").trim(),
        records as f64 / caught_up,
        records as f64 / created.max(1) as f64,
        (bytes1 - bytes0) as f64 / created.max(1) as f64,
        bytes1 - bytes0,
        100.0 * cpu / caught_up,
        d(&b0, &b1, "applied_conflict"),
        d(&b0, &b1, "applied_table_full"),
        d(&b0, &b1, "records_invalid"),
    );
    assert!(created > 10_000, "the flood created too few flows to measure: {created}");
    assert!(applied >= records, "B applied {applied} of the {records} records A sent");
    assert!(acked > 0, "B acknowledged none of A's messages");
    assert!(flows_created_b as f64 >= 0.99 * created as f64, "B created {flows_created_b} of {created} flows");
    assert_eq!(d(&b0, &b1, "records_invalid"), 0);
}
