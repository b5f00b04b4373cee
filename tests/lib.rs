//! End-to-end test support for xgw: network namespaces joined by veth pairs, the gateway
//! (`xgwd run`) in one of them, helpers to run commands inside. Everything a test creates is
//! removed when its [`Lab`] is dropped — also when the test fails — and only processes the
//! test started are ended, by PID.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Path of a binary built from this workspace by `cargo build --bins` (the test command
/// builds them before running the suite).
pub fn bin(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test executable path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join(name)
}

/// True when running as root (network namespaces and XDP need it).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Resident memory of process `pid`, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("process status")
        .lines()
        .find_map(|x| x.strip_prefix("VmRSS:"))
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .expect("VmRSS")
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A set of namespaces and the processes started in them.
#[derive(Debug)]
pub struct Lab {
    /// Prefix of every namespace name (unique per test).
    pub prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Scratch directory (rules, logs).
    pub dir: PathBuf,
}

impl Lab {
    /// An empty lab; namespaces are named `x<pid><n><role>`.
    pub fn new() -> Lab {
        assert!(is_root(), "the end-to-end tests need root (run them through tools/test)");
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("x{}{}", std::process::id() % 100_000, n);
        let dir = std::env::temp_dir().join(format!("xgw-{prefix}"));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Lab { prefix, namespaces: Vec::new(), children: Vec::new(), dir }
    }

    /// Full name of namespace `role`.
    pub fn ns(&self, role: &str) -> String {
        format!("{}{}", self.prefix, role)
    }

    /// Creates namespace `role` with loopback up.
    pub fn add_ns(&mut self, role: &str) -> String {
        let ns = self.ns(role);
        sh(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair between two namespaces, addresses (CIDR, or "" for none) set, both up,
    /// every other setting at the kernel's defaults (transmit checksum offload and TSO on,
    /// GRO off): what a container or namespace neighbour of a gateway really is. Tests that
    /// are about another setting change it themselves and say so.
    pub fn link(&self, a: &str, a_dev: &str, a_addr: &str, b: &str, b_dev: &str, b_addr: &str) {
        let (na, nb) = (self.ns(a), self.ns(b));
        sh(&["ip", "link", "add", a_dev, "netns", &na, "type", "veth", "peer", "name", b_dev, "netns", &nb]);
        for (ns, dev, addr) in [(&na, a_dev, a_addr), (&nb, b_dev, b_addr)] {
            if !addr.is_empty() {
                sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
    }

    /// The smallest lab: namespace `inside` (its address `inside_addr`, a /24 with the default
    /// route through 10.10.0.1), the gateway `gw` (xgw-in 10.10.0.1/24, xgw-out
    /// 198.51.100.1/24, IPv4 forwarding off: xgw forwards) and namespace `outside`
    /// (`outside_addr`, a /24).
    pub fn line(&mut self, inside: &str, inside_addr: &str, outside: &str, outside_addr: &str) {
        for ns in [inside, "gw", outside] {
            self.add_ns(ns);
        }
        self.link(inside, "eth0", inside_addr, "gw", "xgw-in", "10.10.0.1/24");
        self.link("gw", "xgw-out", "198.51.100.1/24", outside, "eth0", outside_addr);
        self.exec_ok(inside, &["ip", "route", "add", "default", "via", "10.10.0.1"]);
        self.exec_ok("gw", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    }

    /// Creates namespace `role` as a switch: a bridge `br0`, up, for [`Lab::plug`].
    pub fn add_switch(&mut self, role: &str) {
        self.add_ns(role);
        self.exec_ok(role, &["ip", "link", "add", "br0", "type", "bridge"]);
        self.exec_ok(role, &["ip", "link", "set", "br0", "up"]);
    }

    /// Puts device `port` of switch `sw` (see [`Lab::add_switch`]) into its bridge.
    pub fn plug(&self, sw: &str, port: &str) {
        self.exec_ok(sw, &["ip", "link", "set", port, "master", "br0"]);
    }

    /// Makes the neighbour's device `dev` in namespace `role` behave like the far end of a
    /// physical wire: full checksums on what it sends (transmit checksum offload off) and
    /// NAPI on what it receives (GRO on, so it takes XDP redirects). Only for tests that are
    /// explicitly about that setting (the fast path carrying flows); every other test leaves
    /// neighbours at the kernel's defaults.
    pub fn real_wire(&self, role: &str, dev: &str) {
        self.exec_ok(role, &["ethtool", "-K", dev, "tx", "off", "gro", "on"]);
    }

    /// Runs a command in namespace `role` and waits for it.
    pub fn exec(&self, role: &str, args: &[&str]) -> Output {
        let ns = self.ns(role);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(args);
        Command::new(full[0]).args(&full[1..]).output().unwrap_or_else(|e| panic!("{full:?}: {e}"))
    }

    /// Like [`Lab::exec`], panicking when the command fails.
    pub fn exec_ok(&self, role: &str, args: &[&str]) -> String {
        let o = self.exec(role, args);
        assert!(
            o.status.success(),
            "{role}: {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Starts a command in namespace `role` in the background; it is ended with the lab.
    /// Its output goes to `<dir>/<log>`.
    pub fn spawn(&mut self, role: &str, args: &[&str], log: &str) -> u32 {
        self.spawn_env(role, args, log, &[])
    }

    /// [`Lab::spawn`] with extra environment variables.
    pub fn spawn_env(&mut self, role: &str, args: &[&str], log: &str, env: &[(&str, &Path)]) -> u32 {
        let ns = self.ns(role);
        let f = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::from(f.try_clone().expect("dup")))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Waits (up to 10 s) until something in namespace `role` listens on TCP or UDP `port`:
    /// a server started with [`Lab::spawn`] is ready before a test talks to it.
    pub fn wait_listening(&self, role: &str, port: u16) {
        let t0 = Instant::now();
        let want = format!(":{port}");
        loop {
            let o = self.exec(role, &["ss", "-Hltun"]);
            let out = String::from_utf8_lossy(&o.stdout);
            // Netid State Recv-Q Send-Q Local:Port Peer:Port
            if out.lines().any(|l| l.split_whitespace().nth(4).is_some_and(|a| a.ends_with(&want))) {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{role}: nothing listens on port {port}:\n{out}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Contents of a log file in the scratch directory.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Starts `xgwd run` in namespace `role` with `rules` and waits until it forwards (its
    /// log `xgwd.log`, its rules `gateway.rules`).
    pub fn start_xgwd(&mut self, role: &str, rules: &str, extra: &[&str]) -> u32 {
        self.start_xgwd_as("xgwd", "gateway.rules", role, rules, extra)
    }

    /// [`Lab::start_xgwd`] for one of several gateways: its files are named after `name`
    /// (`<name>.log`, `<name>.ready`, ...), its rules file `rules_file`.
    pub fn start_xgwd_as(&mut self, name: &str, rules_file: &str, role: &str, rules: &str, extra: &[&str]) -> u32 {
        let path = self.dir.join(rules_file);
        std::fs::write(&path, rules).expect("rules");
        let ready = self.dir.join(format!("{name}.ready"));
        let _ = std::fs::remove_file(&ready);
        let xgwd = bin("xgwd");
        let (p, r) = (path.to_string_lossy().to_string(), ready.to_string_lossy().to_string());
        let mut args = vec![xgwd.to_str().expect("path"), "run", "--rules", &p, "--ready-file", &r];
        args.extend_from_slice(extra);
        let log = format!("{name}.log");
        // play systemd's side of sd_notify: xgwd must say READY=1 once it forwards
        let notify_path = self.dir.join(format!("{name}-notify.sock"));
        let _ = std::fs::remove_file(&notify_path);
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
        let pid = self.spawn_env(role, &args, &log, &[("NOTIFY_SOCKET", &notify_path)]);
        let t0 = Instant::now();
        while !ready.exists() {
            assert!(t0.elapsed() < Duration::from_secs(20), "xgwd did not start:\n{}", self.log(&log));
            if let Some(c) = self.children.iter_mut().find(|c| c.id() == pid) {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("xgwd exited ({st}):\n{}", self.log(&log));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        notify.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).unwrap_or_else(|e| panic!("no sd_notify message from xgwd: {e}"));
        assert!(
            String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1"),
            "sd_notify said {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        pid
    }

    /// Kills a process this lab started with SIGKILL (a crash) and waits for it.
    pub fn crash(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM to a process this lab started and waits for it; returns its log.
    pub fn stop(&mut self, pid: u32, log: &str) -> String {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            let t0 = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.log(log)
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for c in &mut self.children {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("XGW_KEEP_LAB").is_some() {
            eprintln!("lab files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A TCP sink (python3): reads everything, answers "<bytes> <sha256> <peer ip>:<port>".
pub const TCP_SINK: &str = r#"
import socket, hashlib, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
while True:
    c, a = s.accept()
    h = hashlib.sha256(); n = 0
    while True:
        d = c.recv(65536)
        if not d: break
        h.update(d); n += len(d)
    c.sendall(f"{n} {h.hexdigest()} {a[0]}:{a[1]}\n".encode()); c.close()
"#;

/// A TCP source: sends N random bytes, prints "OK|BAD <bytes> <peer-seen address>"; an
/// optional 4th argument is the connect timeout in seconds (default 15).
pub const TCP_SOURCE: &str = r#"
import socket, hashlib, sys, os
data = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]) if len(sys.argv) > 4 else 15)
c.sendall(data); c.shutdown(socket.SHUT_WR)
r = c.makefile().readline().split()
ok = r[0] == str(len(data)) and r[1] == hashlib.sha256(data).hexdigest()
print("OK" if ok else "BAD", r[0], r[2])
"#;

/// A UDP echo server: answers every datagram with "<peer ip>:<port>".
pub const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(f"{a[0]}:{a[1]}".encode(), a)
"#;

/// Sends one datagram from each of N sockets, prints how many answers came back and the
/// distinct addresses the server saw.
pub const UDP_FLOWS: &str = r#"
import socket, sys
n = int(sys.argv[3]); socks = []; seen = set(); got = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2]))); socks.append(s)
for s in socks:
    try:
        d, _ = s.recvfrom(2048); got += 1; seen.add(d.decode().split(":")[0])
    except socket.timeout:
        pass
print(got, ",".join(sorted(seen)))
"#;

/// A scripted PPTP peer for timing and counting tests: `pac ADDR` serves one control
/// connection on ADDR:1723, `pns SERVER` opens one call to it (Call ID 0x0100; the PAC's is
/// 0x4000). After the call is up the PNS sends 300 GRE packets, the PAC 400, both within 1.5 s;
/// then silence until 4.5 s (the counters can be read); then the PAC sends a Call-Disconnect-Notify
/// and keeps sending GRE for 2 s. Each prints one JSON line: what it sent, received, and when
/// (the PNS the arrival time of every GRE packet; the PAC when it sent the CDN).
pub const PPTP_PEER: &str = r#"
import json, socket, struct, sys, threading, time
MAGIC = 0x1A2B3C4D
def ctrl(t, body):
    return struct.pack("!HHIHH", 12 + len(body), 1, MAGIC, t, 0) + body
def recv_msg(c):
    h = b""
    while len(h) < 12:
        d = c.recv(12 - len(h))
        if not d: raise SystemExit("control connection closed")
        h += d
    n, _, _, t, _ = struct.unpack("!HHIHH", h)
    b = b""
    while len(b) < n - 12:
        b += c.recv(n - 12 - len(b))
    return t, b
def gre(call, seq, payload=b"\x00" * 40):
    return struct.pack("!BBHHHI", 0x30, 0x01, 0x880B, len(payload), call, seq) + payload
def sender(peer, call, count, secs):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
    for i in range(count):
        s.sendto(gre(call, i), (peer, 0)); time.sleep(secs / count)
role, addr = sys.argv[1], sys.argv[2]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47); raw.settimeout(0.2)
got = []
def receive(mine, until):
    while time.time() < until:
        try:
            d, a = raw.recvfrom(4096)
        except socket.timeout:
            continue
        g = d[(d[0] & 15) * 4:]
        if len(g) >= 8 and struct.unpack("!H", g[6:8])[0] == mine:
            got.append(time.time())
if role == "pac":
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((addr, 1723)); l.listen(1); c, peer = l.accept()
    t, b = recv_msg(c); assert t == 1, t
    c.sendall(ctrl(2, struct.pack("!HBBIIHH64s64s", 0x0100, 1, 0, 1, 1, 1, 1, b"pac", b"xgw-test")))
    t, b = recv_msg(c); assert t == 7, t
    pns_call = struct.unpack("!H", b[0:2])[0]
    c.sendall(ctrl(8, struct.pack("!HHBBHIHHI", 0x4000, pns_call, 1, 0, 0, 64000, 64, 0, 0)))
    t0 = time.time()
    rx = threading.Thread(target=receive, args=(0x4000, t0 + 8.5)); rx.start()
    sender(peer[0], pns_call, 400, 1.5)
    time.sleep(max(0, t0 + 4.5 - time.time()))
    cdn_at = time.time()
    c.sendall(ctrl(13, struct.pack("!HBBHH128s", 0x4000, 1, 0, 0, 0, b"")))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47); after = 0
    while time.time() < cdn_at + 2:
        s.sendto(gre(pns_call, 1000 + after), (peer[0], 0)); after += 1; time.sleep(0.005)
    rx.join()
    print(json.dumps({"sent": 400, "cdn_at": cdn_at, "sent_after_cdn": after, "received": len(got)}), flush=True)
else:
    c = socket.create_connection((addr, 1723))
    c.sendall(ctrl(1, struct.pack("!HHIIHH64s64s", 0x0100, 0, 1, 1, 1, 1, b"pns", b"xgw-test")))
    t, b = recv_msg(c); assert t == 2, t
    c.sendall(ctrl(7, struct.pack("!HHIIIIHHHH64s64s", 0x0100, 1, 300, 100000000, 3, 3, 64, 0, 0, 0, b"", b"")))
    t, b = recv_msg(c); assert t == 8, t
    pac_call = struct.unpack("!H", b[0:2])[0]
    t0 = time.time()
    print(json.dumps({"up": t0}), flush=True)
    rx = threading.Thread(target=receive, args=(0x0100, t0 + 7.5)); rx.start()
    sender(addr, pac_call, 300, 1.5)
    rx.join()
    print(json.dumps({"sent": 300, "received_at": got}), flush=True)
"#;

pub mod pptp;
