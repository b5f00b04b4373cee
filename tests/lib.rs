//! End-to-end test support for xgw: network namespaces joined by veth pairs, the gateway
//! (`xgwd run`) in one of them, helpers to run commands inside. Everything a test creates is
//! removed when its [`Lab`] is dropped — also when the test fails — and only processes the
//! test started are ended, by PID.
#![forbid(unsafe_code)]

use std::path::PathBuf;
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
    /// transmit checksum offload off (AF_XDP copy mode sees frames as they are).
    pub fn link(&self, a: &str, a_dev: &str, a_addr: &str, b: &str, b_dev: &str, b_addr: &str) {
        let (na, nb) = (self.ns(a), self.ns(b));
        sh(&["ip", "link", "add", a_dev, "netns", &na, "type", "veth", "peer", "name", b_dev, "netns", &nb]);
        for (ns, dev, addr) in [(&na, a_dev, a_addr), (&nb, b_dev, b_addr)] {
            if !addr.is_empty() {
                sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            let _ = Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]).output();
        }
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
        let ns = self.ns(role);
        let f = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .stdout(Stdio::from(f.try_clone().expect("dup")))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Contents of a log file in the scratch directory.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Starts `xgwd run` in namespace `role` with `rules` and waits until it forwards.
    pub fn start_xgwd(&mut self, role: &str, rules: &str, extra: &[&str]) -> u32 {
        let path = self.dir.join("gateway.rules");
        std::fs::write(&path, rules).expect("rules");
        let ready = self.dir.join("xgwd.ready");
        let _ = std::fs::remove_file(&ready);
        let xgwd = bin("xgwd");
        let (p, r) = (path.to_string_lossy().to_string(), ready.to_string_lossy().to_string());
        let mut args = vec![xgwd.to_str().expect("path"), "run", "--rules", &p, "--ready-file", &r];
        args.extend_from_slice(extra);
        let pid = self.spawn(role, &args, "xgwd.log");
        let t0 = Instant::now();
        while !ready.exists() {
            assert!(t0.elapsed() < Duration::from_secs(20), "xgwd did not start:\n{}", self.log("xgwd.log"));
            if let Some(c) = self.children.iter_mut().find(|c| c.id() == pid) {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("xgwd exited ({st}):\n{}", self.log("xgwd.log"));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pid
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
        let _ = std::fs::remove_dir_all(&self.dir);
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

/// A TCP source: sends N random bytes, prints "OK|BAD <bytes> <peer-seen address>".
pub const TCP_SOURCE: &str = r#"
import socket, hashlib, sys, os
data = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
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
