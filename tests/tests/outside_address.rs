//! `address auto`: the outside address follows the kernel's, as DHCP or PPP would change it,
//! under traffic. An inside client keeps a UDP conversation (echoed by the server, so the
//! flow is assured and, with the fast path on, carried by XDP) going while the gateway's
//! outside address changes; nothing leaves with the old address once it is gone. And a NAT
//! pool address on the outside subnet: the server reaches it by ARP, which the gateway's
//! kernel answers while xgwd holds the address, and which xgwd announces (gratuitous ARP).
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xgw_tests::Lab;

const RULES: &str = "interface lan device xgw-in  role inside  address 10.10.0.1/24
interface wan device xgw-out role outside address auto
nat overload
access-list lan_out permit udp any any
access-list lan_out permit icmp any any echo
access-group lan_out in interface lan
";

const SENDER: &str = "import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 40000))
s.setblocking(False)
while True:
    s.sendto(b'x' * 32, ('198.51.100.20', 9999))
    try:
        while True:
            s.recv(64)
    except BlockingIOError:
        pass
    time.sleep(0.005)
";

const ECHO: &str = "import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 9999))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
";

fn stats(lab: &Lab, sock: &str) -> serde_json::Value {
    let o = std::process::Command::new(xgw_tests::bin("xgwctl"))
        .args(["--socket", sock, "-o", "json", "stats"])
        .output()
        .expect("xgwctl");
    let _ = lab;
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64()
}

fn address_changes_under_traffic(offload: &str) {
    let mut lab = Lab::new();
    lab.line("c1", "10.10.0.11/24", "srv", "198.51.100.20/24");
    let pcap = lab.dir.join("outside.pcap").to_string_lossy().to_string();
    let tcpdump = lab.spawn("srv", &["tcpdump", "-i", "eth0", "-U", "-w", &pcap, "udp port 9999"], "tcpdump.log");
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    lab.start_xgwd("gw", RULES, &["--socket", &sock, "--offload", offload]);
    assert!(
        wait_for(Duration::from_secs(3), || stats(&lab, &sock)["outside"]["address"] == "198.51.100.1"),
        "xgwd took the device's address: {}",
        stats(&lab, &sock)
    );
    lab.spawn("srv", &["python3", "-c", ECHO], "echo.log");
    std::thread::sleep(Duration::from_millis(300));
    lab.spawn("c1", &["python3", "-c", SENDER], "sender.log");
    std::thread::sleep(Duration::from_millis(1500));
    if offload == "on" {
        let list = String::from_utf8_lossy(
            &std::process::Command::new(xgw_tests::bin("xgwctl"))
                .args(["--socket", &sock, "conntrack", "list", "-p", "udp"])
                .output()
                .expect("xgwctl")
                .stdout,
        )
        .to_string();
        assert!(list.contains("[OFFLOAD]"), "the conversation is carried by the fast path first: {list}");
    }

    // the address changes as a DHCP client changes it: the old one goes, the new one comes
    lab.exec_ok("gw", &["ip", "addr", "del", "198.51.100.1/24", "dev", "xgw-out"]);
    let gone = now();
    lab.exec_ok("gw", &["ip", "addr", "add", "198.51.100.2/24", "dev", "xgw-out"]);
    assert!(
        wait_for(Duration::from_secs(2), || stats(&lab, &sock)["outside"]["address"] == "198.51.100.2"),
        "xgwd followed the change: {}",
        stats(&lab, &sock)
    );
    std::thread::sleep(Duration::from_millis(1500));
    // the XDP program's notion of the box's own address followed too: a ping of the new
    // address is answered by the box's kernel
    let ping = lab.exec("srv", &["ping", "-c", "2", "-i", "0.2", "-W", "1", "198.51.100.2"]);
    assert!(ping.status.success(), "the box answers on its new address: {}", String::from_utf8_lossy(&ping.stdout));
    let st = stats(&lab, &sock);
    std::thread::sleep(Duration::from_millis(200));
    let _ = lab.stop(tcpdump, "");

    let f = std::fs::File::open(&pcap).expect("capture");
    let recs = xgw_dataplane::replay::read_capture(f, "outside.pcap").expect("capture");
    let from = |a: [u8; 4]| -> Vec<f64> {
        recs.iter()
            .filter(|r| r.frame.len() >= 34 && r.frame[12..14] == [8, 0] && r.frame[26..30] == a)
            .map(|r| r.ts.as_secs_f64())
            .collect()
    };
    let (old, new) = (from([198, 51, 100, 1]), from([198, 51, 100, 2]));
    let last_old = old.iter().copied().fold(0.0, f64::max);
    println!(
        "fast path {offload}: {} datagrams from the old address, the last {:+.1} ms after it was removed; {} from the new one; stats {}",
        old.len(),
        (last_old - gone) * 1000.0,
        new.len(),
        st["outside"]
    );
    assert!(old.len() > 50, "the conversation ran before the change: {}", old.len());
    assert!(new.len() > 50, "and after it, on the new address: {}", new.len());
    // the kernel tells xgwd within milliseconds; a datagram already on its way may leave
    assert!(
        last_old - gone < 0.05,
        "datagrams left with the old address {:.0} ms after it was gone",
        (last_old - gone) * 1000.0
    );
    assert!(st["outside"]["flushed"].as_u64().unwrap_or(0) >= 1, "the old translation was flushed: {st}");
    // address, none, new address
    assert_eq!(st["outside"]["changes"], 3, "{st}");
}

#[test]
fn the_outside_address_changes_under_traffic() {
    address_changes_under_traffic("on");
}

#[test]
fn the_outside_address_changes_under_traffic_without_offload() {
    address_changes_under_traffic("off");
}

/// A pool address on the outside subnet: the server answers the translated ping by asking
/// ARP for the pool address (nothing routes it), and the gateway's kernel answers for it,
/// since xgwd holds the address on the outside device while it runs (and only then). Every
/// peer at kernel defaults.
#[test]
fn an_on_link_pool_address_is_answered_to_arp_and_reached() {
    const POOL_RULES: &str = "interface lan device xgw-in  role inside  address 10.10.0.1/24
interface wan device xgw-out role outside address 198.51.100.1/24
nat overload pool 198.51.100.50
access-list lan_out permit icmp any any echo
access-group lan_out in interface lan
";
    let mut lab = Lab::new();
    lab.line("c1", "10.10.0.11/24", "srv", "198.51.100.20/24");
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    let xgwd = lab.start_xgwd("gw", POOL_RULES, &["--socket", &sock]);
    let ping = lab.exec("c1", &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.20"]);
    let neigh = lab.exec_ok("srv", &["ip", "neigh", "show", "198.51.100.50"]);
    let mac = lab.exec_ok("gw", &["cat", "/sys/class/net/xgw-out/address"]);
    let st = stats(&lab, &sock);
    assert!(
        ping.status.success(),
        "the ping through the pool address is answered: {}\nserver's neighbours: {neigh}\nstats: {st}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert!(neigh.contains(mac.trim()), "the server learnt the pool address at the gateway's MAC {mac}: {neigh}");
    let held =
        |lab: &Lab| lab.exec_ok("gw", &["ip", "-4", "addr", "show", "dev", "xgw-out"]).contains("198.51.100.50/32");
    assert!(held(&lab), "held while xgwd runs");
    // a crash leaves it; the next start knows it as its own and gives it back on stopping
    lab.crash(xgwd);
    assert!(held(&lab), "left by the crash");
    let xgwd = lab.start_xgwd("gw", POOL_RULES, &["--socket", &sock]);
    let _ = lab.stop(xgwd, "xgwd.log");
    assert!(!held(&lab), "given back when xgwd stops");
    // an address the administrator put there is the administrator's: left as it is
    lab.exec_ok("gw", &["ip", "addr", "add", "198.51.100.50/32", "dev", "xgw-out"]);
    let xgwd = lab.start_xgwd("gw", POOL_RULES, &["--socket", &sock]);
    let _ = lab.stop(xgwd, "xgwd.log");
    assert!(held(&lab), "the administrator's address stays");
}

/// A pool address taken over from another box: the server's neighbour cache still holds it at
/// that box's MAC (planted on the server: the one peer setting this test makes, since it is
/// about that cache). xgwd announces the addresses it holds (gratuitous ARP), so the server's
/// entry moves to the gateway's MAC with no traffic at all; without the announcement it stays
/// at the old MAC, and the server's answers would go there until the entry is probed again.
#[test]
fn a_held_pool_address_is_announced_to_the_subnet() {
    const POOL_RULES: &str = "interface lan device xgw-in  role inside  address 10.10.0.1/24
interface wan device xgw-out role outside address 198.51.100.1/24
nat overload pool 198.51.100.50
";
    const OLD_MAC: &str = "02:00:00:00:00:99";
    let mut lab = Lab::new();
    lab.line("c1", "10.10.0.11/24", "srv", "198.51.100.20/24");
    lab.exec_ok("srv", &["ip", "neigh", "replace", "198.51.100.50", "lladdr", OLD_MAC, "dev", "eth0", "nud", "stale"]);
    let mac = lab.exec_ok("gw", &["cat", "/sys/class/net/xgw-out/address"]);
    let xgwd = lab.start_xgwd("gw", POOL_RULES, &[]);
    let t0 = Instant::now();
    let mut neigh = String::new();
    while t0.elapsed() < Duration::from_secs(5) {
        neigh = lab.exec_ok("srv", &["ip", "neigh", "show", "198.51.100.50"]);
        if neigh.contains(mac.trim()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "the server's entry for the pool address {:.1} s after xgwd started: {}",
        t0.elapsed().as_secs_f64(),
        neigh.trim()
    );
    assert!(neigh.contains(mac.trim()), "the server's entry moved to the gateway's MAC {}: {neigh}", mac.trim());
    let log = lab.stop(xgwd, "xgwd.log");
    assert!(log.contains("NAT pool addresses announced (gratuitous ARP)"), "{log}");
}
