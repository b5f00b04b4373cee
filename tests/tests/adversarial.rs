//! The gateway under conditions an attacker or an accident creates, each printing its
//! figures: a crash (kill -9) under traffic and a restart; PAT port exhaustion; a hundred
//! policy reloads while a flow runs. Every neighbour is at the kernel's defaults.
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::time::{Duration, Instant};

use xgw_tests::{Lab, UDP_ECHO};

const RULES: &str = "interface lan device xgw-in role inside address 10.10.0.1/24
interface wan device xgw-out role outside address 198.51.100.1/24
";

fn topology(lab: &mut Lab) {
    for ns in ["c1", "gw", "srv"] {
        lab.add_ns(ns);
    }
    lab.link("c1", "eth0", "10.10.0.5/24", "gw", "xgw-in", "10.10.0.1/24");
    lab.link("gw", "xgw-out", "198.51.100.1/24", "srv", "eth0", "198.51.100.20/24");
    lab.exec_ok("c1", &["ip", "route", "add", "default", "via", "10.10.0.1"]);
    lab.exec_ok("gw", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    lab.spawn("srv", &["python3", "-c", UDP_ECHO, "198.51.100.20", "7"], "echo.log");
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

fn xgwctl(sock: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(xgw_tests::bin("xgwctl")).arg("--socket").arg(sock).args(args).output().expect("xgwctl")
}

fn stats(sock: &str) -> serde_json::Value {
    let o = xgwctl(sock, &["-o", "json", "stats"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// Sends a datagram every INTERVAL ms for SECONDS from one socket and logs `reply UNIXTIME` for
/// every answer (flushed at once).
const UDP_PROBE: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
end = time.time() + float(sys.argv[3]); iv = float(sys.argv[4]) / 1000
while time.time() < end:
    s.sendto(b"p", (sys.argv[1], int(sys.argv[2])))
    t = time.time() + iv
    while time.time() < t:
        try:
            s.recv(100); print("reply", time.time(), flush=True)
        except BlockingIOError:
            time.sleep(0.001)
"#;

#[test]
fn kill_9_under_traffic_then_a_restart_forwards_again() {
    let mut lab = Lab::new();
    topology(&mut lab);
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    let gw = lab.start_xgwd("gw", RULES, &["--socket", &sock]);
    lab.spawn("c1", &["python3", "-c", UDP_PROBE, "198.51.100.20", "7", "12", "5"], "probe.log");
    let t0 = Instant::now();
    while !lab.log("probe.log").contains("reply") {
        assert!(t0.elapsed() < Duration::from_secs(5), "no traffic before the crash");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    lab.crash(gw);
    let crashed = unix_now();
    for dev in ["xgw-in", "xgw-out"] {
        let out = lab.exec_ok("gw", &["ip", "link", "show", dev]);
        assert!(!out.contains("xdp"), "a killed xgwd left XDP on {dev}: {out}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let restart = unix_now();
    let gw = lab.start_xgwd("gw", RULES, &["--socket", &sock]);
    let ready = unix_now();
    let t0 = Instant::now();
    let first_after = loop {
        let log = lab.log("probe.log");
        let t = log.lines().filter_map(|l| l.strip_prefix("reply ")?.parse::<f64>().ok()).find(|t| *t > restart);
        if let Some(t) = t {
            break t;
        }
        assert!(t0.elapsed() < Duration::from_secs(8), "no reply after the restart:\n{}", lab.log("xgwd.log"));
        std::thread::sleep(Duration::from_millis(20));
    };
    let v = xgwctl(&sock, &["version"]);
    assert!(v.status.success(), "the control socket is back: {}", String::from_utf8_lossy(&v.stderr));
    println!(
        "kill -9: no XDP left behind; restart to READY {:.0} ms, to the first forwarded reply {:.0} ms \
         (traffic stopped for {:.0} ms in all)",
        (ready - restart) * 1000.0,
        (first_after - restart) * 1000.0,
        (first_after - crashed) * 1000.0
    );
    assert!(first_after - restart < 5.0, "forwarding resumed {:.1} s after the restart", first_after - restart);
    lab.stop(gw, "xgwd.log");
}

/// One held flow, then N more sockets each sending one datagram, then the held flow again:
/// prints `held OK|LOST answered A of N held-again OK|LOST`.
const UDP_EXHAUST: &str = r#"
import socket, sys
dst = (sys.argv[1], int(sys.argv[2])); n = int(sys.argv[3])
def ask(s):
    s.settimeout(2); s.sendto(b"x", dst)
    try: s.recv(100); return True
    except socket.timeout: return False
held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
first = ask(held)
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
for s in socks: s.sendto(b"x", dst)
got = 0
for s in socks:
    s.settimeout(1)
    try: s.recv(100); got += 1
    except socket.timeout: pass
print("held", "OK" if first else "LOST", "answered", got, "of", n, "held-again", "OK" if ask(held) else "LOST")
"#;

#[test]
fn pat_port_exhaustion_is_refused_counted_and_recovers() {
    let mut lab = Lab::new();
    topology(&mut lab);
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    // ten outside ports, short UDP timeouts so that they come back within the test
    let rules =
        format!("{RULES}nat overload ports 20000-20009 preserve-port off\ntimeout udp 3s\ntimeout udp-stream 3s\n");
    let gw = lab.start_xgwd("gw", &rules, &["--socket", &sock]);
    lab.wait_listening("srv", 7);
    let r = lab.exec_ok("c1", &["python3", "-c", UDP_EXHAUST, "198.51.100.20", "7", "15"]);
    let w: Vec<&str> = r.split_whitespace().collect();
    println!("exhaustion: {}", r.trim());
    assert_eq!(w[1], "OK", "{r}");
    assert_eq!(w[3], "9", "nine ports left for fifteen new flows: {r}");
    assert_eq!(w[7], "OK", "the held flow is untouched by the exhaustion: {r}");
    let refused = stats(&sock)["drops"]["nat_ports_exhausted"].as_u64().unwrap_or(0);
    assert_eq!(refused, 6, "six refusals counted");
    // the ports come back once the flows expire (3 s and a sweep)
    std::thread::sleep(Duration::from_secs(5));
    let r = lab.exec_ok("c1", &["python3", "-c", UDP_EXHAUST, "198.51.100.20", "7", "5"]);
    println!("after expiry: {}", r.trim());
    assert!(r.contains("answered 5 of 5"), "{r}");
    lab.stop(gw, "xgwd.log");
}

/// Sends COUNT datagrams, one at a time, each waiting for its answer (up to 1 s); prints
/// `sent N lost L`.
const UDP_SEQUENCE: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
dst = (sys.argv[1], int(sys.argv[2])); n = int(sys.argv[3]); lost = 0
for i in range(n):
    s.sendto(str(i).encode(), dst)
    try: s.recv(100)
    except socket.timeout: lost += 1
    time.sleep(0.002)
print("sent", n, "lost", lost, flush=True)
"#;

#[test]
fn a_hundred_reloads_under_traffic_lose_no_packet_of_a_permitted_flow() {
    let mut lab = Lab::new();
    topology(&mut lab);
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    // two policies: both permit the UDP flow, only the first permits TCP
    let a = format!("{RULES}access-list out permit ip any any\naccess-group out in interface lan\n");
    let b = format!(
        "{RULES}access-list out permit udp any any\naccess-list out deny tcp any any\naccess-group out in interface lan\n"
    );
    let gw = lab.start_xgwd("gw", &a, &["--socket", &sock]);
    lab.wait_listening("srv", 7);
    lab.spawn("c1", &["python3", "-c", UDP_SEQUENCE, "198.51.100.20", "7", "3000"], "seq.log");
    let rules = lab.dir.join("gateway.rules");
    let mut took = Vec::new();
    for i in 0..100 {
        std::fs::write(&rules, if i % 2 == 0 { &b } else { &a }).expect("write");
        let t = Instant::now();
        let o = xgwctl(&sock, &["rules", "reload"]);
        took.push(t.elapsed());
        assert!(o.status.success(), "reload {i}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let t0 = Instant::now();
    while !lab.log("seq.log").contains("sent") {
        assert!(t0.elapsed() < Duration::from_secs(60), "the sequence did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let seq = lab.log("seq.log");
    println!(
        "100 reloads during the flow: reload (xgwctl round trip) min {:.1} ms, median {:.1} ms, max {:.1} ms; flow: {}",
        ms(took[0]),
        ms(took[50]),
        ms(took[99]),
        seq.trim()
    );
    assert!(seq.contains("sent 3000 lost 0"), "{seq}");
    lab.stop(gw, "xgwd.log");
}
