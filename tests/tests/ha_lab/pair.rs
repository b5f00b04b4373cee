//! The HA pair itself: two gateways with keepalived, the clients and the server, and the
//! helpers that read either gateway's state.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xgw_tests::pptp::{add_clients, SERVER};
use xgw_tests::{bin, Lab};

pub(crate) const RULES: &str = include_str!("../../../rules/examples/lab.rules");
pub(crate) const KEEPALIVED: &str = include_str!("../../../dist/keepalived-xgw.conf");
pub(crate) const CLIENTS: usize = 10;
pub(crate) const CALL_ID: u16 = 0x1234;

/// A TCP source that paces N bytes over S seconds, then checks the sink's digest.
pub(crate) const PACED_SOURCE: &str = r#"
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
pub(crate) const UDP_PING: &str = r#"
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
pub(crate) const UDP_ECHO_BACK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    d, a = s.recvfrom(2048); s.sendto(d + b" " + a[0].encode(), a)
"#;

pub(crate) struct Pair {
    pub(crate) lab: Lab,
    pub(crate) xgwd: [u32; 2],
    pub(crate) capture: u32,
    pub(crate) rules: String,
    /// This binary's tests take turns (held until the lab is gone): the flood test saturates
    /// both cores, and a slow server misses the clients' echo deadlines in the other tests.
    pub(crate) _turn: std::sync::MutexGuard<'static, ()>,
}

/// Whose turn it is (see [`Pair::_turn`]).
pub(crate) static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How the active gateway fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// `kill -9` of xgwd on A.
    Kill,
    /// A's outside cable pulled (its port on the WAN bridge down).
    CutOutside,
}

pub(crate) fn gw(i: usize) -> &'static str {
    ["gwa", "gwb"][i]
}

pub(crate) fn sock(lab: &Lab, i: usize) -> PathBuf {
    lab.dir.join(format!("{}.sock", gw(i)))
}

pub(crate) fn xgwctl(lab: &Lab, i: usize, args: &[&str]) -> String {
    let o = Command::new(bin("xgwctl")).arg("--socket").arg(sock(lab, i)).args(args).output().expect("xgwctl");
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// B's PPTP calls in progress; a query that fails (B busy, the answer cut short) is asked
/// again, each failure printed, rather than read as "no calls".
pub(crate) fn b_calls_in_progress(lab: &Lab) -> u64 {
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

pub(crate) fn ha_status(lab: &Lab, i: usize) -> serde_json::Value {
    serde_json::from_str(&xgwctl(lab, i, &["-o", "json", "ha", "status"])).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool, log: impl Fn() -> String) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not after {limit:?}\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts xgwd of gateway `i` with its settings file (written by [`Pair::start`]).
pub(crate) fn start_gateway(lab: &mut Lab, i: usize, rules: &str) -> u32 {
    let settings = lab.dir.join(format!("{}.toml", gw(i)));
    let (s, c) = (sock(lab, i).to_string_lossy().to_string(), settings.to_string_lossy().to_string());
    lab.start_xgwd_as(gw(i), &format!("{}.rules", gw(i)), gw(i), rules, &["--socket", &s, "--config", &c])
}

pub(crate) fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64()
}

impl Pair {
    /// The topology, both xgwd (B's sync key `key_b`), keepalived on both; waits until A is
    /// master and B backup.
    pub(crate) fn start(key_b: &str) -> Pair {
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
    pub(crate) fn start_keepalived(&mut self, i: usize) {
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
    pub(crate) fn outside_macs(&self) -> [String; 2] {
        [0, 1].map(|i| self.lab.exec_ok(gw(i), &["cat", "/sys/class/net/xgw-out/address"]).trim().to_string())
    }
}
