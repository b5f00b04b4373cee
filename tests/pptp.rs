//! N PPTP clients (pptp-linux) behind the gateway, one PPTP server (pptpd) outside, the
//! PPP stand-in (`xgw-ppp`) on both ends, a capture of the outside link.
//!
//! ```text
//!  c1..cN 10.10.0.11.. ── br0 (ns lan) ── xgw-in 10.10.0.1 [gw: xgwd] xgw-out 198.51.100.1 ── 198.51.100.20 srv (pptpd)
//! ```
use super::*;

/// The server's address.
pub const SERVER: &str = "198.51.100.20";
/// The outside address.
pub const OUTSIDE: &str = "198.51.100.1";

/// A running PPTP lab.
#[derive(Debug)]
pub struct PptpLab {
    /// The namespaces and processes.
    pub lab: Lab,
    /// Number of clients.
    pub clients: usize,
    clients_pids: Vec<u32>,
    /// xgwd's pid.
    pub xgwd: u32,
    tcpdump: u32,
    lan_tcpdump: u32,
}

/// A TCP SYN or SYN-ACK seen in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Source address and port.
    pub src: (String, u16),
    /// Destination address and port.
    pub dst: (String, u16),
    /// A SYN-ACK (else a SYN).
    pub synack: bool,
}

fn handshakes(path: &std::path::Path) -> Vec<Handshake> {
    let f = std::fs::File::open(path).expect("capture");
    let recs = xgw_dataplane::replay::read_capture(f, "capture").expect("readable capture");
    let mut out = Vec::new();
    for r in &recs {
        let f = &r.frame;
        if f.len() < 54 || f[12..14] != [8, 0] || f[23] != 6 {
            continue;
        }
        let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
        if f.len() < l4 + 14 {
            continue;
        }
        let addr = |o: usize| std::net::Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]).to_string();
        let port = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
        let flags = f[l4 + 13];
        if flags & 0x02 != 0 {
            out.push(Handshake { src: (addr(26), port(l4)), dst: (addr(30), port(l4 + 2)), synack: flags & 0x10 != 0 });
        }
    }
    out
}

/// Clients 1..=`n` (namespaces [`client`], addresses [`client_addr`]) on the switch
/// `lan` (which must exist), their default route via 10.10.0.1.
pub fn add_clients(lab: &mut Lab, n: usize) {
    for i in 1..=n {
        let c = client(i);
        lab.add_ns(&c);
        let port = format!("p{i}");
        lab.link(&c, "eth0", &format!("{}/24", client_addr(i)), "lan", &port, "");
        lab.plug("lan", &port);
        lab.exec_ok(&c, &["ip", "route", "add", "default", "via", "10.10.0.1"]);
    }
}

/// Client `i`'s namespace role (1-based).
pub fn client(i: usize) -> String {
    format!("c{i}")
}

/// Client `i`'s address.
pub fn client_addr(i: usize) -> String {
    format!("10.10.0.{}", 10 + i)
}

/// Starts pptpd in namespace `ns` with the PPP stand-in; each call's stand-in logs into
/// `<lab dir>/server/`.
pub fn start_server(lab: &mut Lab, ns: &str) {
    let server_logs = lab.dir.join("server");
    std::fs::create_dir_all(&server_logs).expect("server log dir");
    let conf = lab.dir.join("pptpd.conf");
    std::fs::write(&conf, "localip 192.168.99.1\nremoteip 192.168.99.100-250\n").expect("pptpd.conf");
    let (conf, pid) = (conf.to_string_lossy().to_string(), lab.dir.join("pptpd.pid").to_string_lossy().to_string());
    let ppp = bin("xgw-ppp").to_string_lossy().to_string();
    let env = format!("XGW_PPP_LOG_DIR={}", server_logs.display());
    lab.spawn(ns, &["env", &env, "pptpd", "--fg", "-c", &conf, "-p", &pid, "-e", &ppp], "pptpd.log");
    std::thread::sleep(Duration::from_millis(500));
}

/// Starts pptp-linux with the PPP stand-in in client `i`'s namespace towards [`SERVER`]
/// for `seconds`, its Call ID read from `idfile` (a private mount namespace whose
/// /dev/random is that 2-byte file); logs into `<lab dir>/client-<i>.log`.
pub fn start_client(lab: &mut Lab, i: usize, idfile: &std::path::Path, seconds: u64) -> u32 {
    start_client_echoing(lab, i, idfile, seconds, None)
}

/// [`start_client`] whose pptp sends a control-connection Echo-Request after
/// `idle_wait` seconds without a control message (pptp's default: 60).
pub fn start_client_echoing(
    lab: &mut Lab,
    i: usize,
    idfile: &std::path::Path,
    seconds: u64,
    idle_wait: Option<u32>,
) -> u32 {
    let idle = idle_wait.map(|s| format!(" --idle-wait {s}")).unwrap_or_default();
    let log = lab.dir.join(format!("client-{i}.log")).to_string_lossy().to_string();
    // a private /run: pptp-linux's call manager shares one control connection between
    // every pptp to the same server through a unix socket under /run/pptp
    let script = format!(
        "mount -t tmpfs tmpfs /run && mount --bind {} /dev/random && exec {} client --server {SERVER} --token {} --seconds {seconds}{idle} --log {log}",
        idfile.display(),
        bin("xgw-ppp").display(),
        client(i)
    );
    lab.spawn(&client(i), &["unshare", "-m", "sh", "-c", &script], &format!("client-{i}.out"))
}

/// The LCP echo sequence numbers client `i` got its own replies for, in order.
pub fn replied_seqs(lab: &Lab, i: usize) -> Vec<u64> {
    let me = format!("echo-reply {}#", client(i));
    lab.log(&format!("client-{i}.log")).lines().filter_map(|l| l.strip_prefix(&me)?.trim().parse().ok()).collect()
}

impl PptpLab {
    /// Builds the topology and starts xgwd (with `rules`), pptpd and a capture.
    pub fn start(clients: usize, rules: &str) -> PptpLab {
        PptpLab::start_with(clients, rules, &[])
    }

    /// [`PptpLab::start`] with extra arguments for `xgwd run`.
    pub fn start_with(clients: usize, rules: &str, xgwd_args: &[&str]) -> PptpLab {
        let mut lab = Lab::new();
        lab.add_switch("lan");
        add_clients(&mut lab, clients);
        for ns in ["gw", "srv"] {
            lab.add_ns(ns);
        }
        lab.link("gw", "xgw-in", "10.10.0.1/24", "lan", "pg", "");
        lab.plug("lan", "pg");
        lab.link("gw", "xgw-out", "198.51.100.1/24", "srv", "eth0", &format!("{SERVER}/24"));
        lab.exec_ok("gw", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        let pcap = lab.dir.join("outside.pcap").to_string_lossy().to_string();
        let tcpdump = lab.spawn("srv", &["tcpdump", "-i", "eth0", "-U", "-w", &pcap, "ip"], "tcpdump.log");
        // what the clients send and get on the control connection's handshake
        let lan_pcap = lab.dir.join("lan-syn.pcap").to_string_lossy().to_string();
        let lan_tcpdump = lab.spawn(
            "lan",
            &["tcpdump", "-i", "br0", "-U", "-w", &lan_pcap, "tcp port 1723 and tcp[tcpflags] & tcp-syn != 0"],
            "tcpdump-lan.log",
        );
        let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
        let mut args = vec!["--socket", sock.as_str()];
        args.extend_from_slice(xgwd_args);
        let xgwd = lab.start_xgwd("gw", rules, &args);
        start_server(&mut lab, "srv");
        PptpLab { lab, clients, clients_pids: Vec::new(), xgwd, tcpdump, lan_tcpdump }
    }

    /// Starts every client for `seconds`, each with Call ID `call_id` forced (pptp reads
    /// its Call ID from /dev/random: each client gets a private mount namespace whose
    /// /dev/random is a 2-byte file).
    pub fn start_clients(&mut self, call_id: u16, seconds: u64) {
        let idfile = self.lab.dir.join("call-id");
        std::fs::write(&idfile, call_id.to_ne_bytes()).expect("call id file");
        for i in 1..=self.clients {
            self.start_client(i, &idfile, seconds);
        }
    }

    /// Starts the clients in `which` only (each with Call ID `call_id`, for `seconds`).
    pub fn start_some_clients(&mut self, call_id: u16, seconds: u64, which: &[usize]) {
        let idfile = self.lab.dir.join("call-id");
        std::fs::write(&idfile, call_id.to_ne_bytes()).expect("call id file");
        for &i in which {
            self.start_client(i, &idfile, seconds);
        }
    }

    /// The LCP echo sequence numbers client `i` got its own replies for, in order.
    pub fn replied_seqs(&self, i: usize) -> Vec<u64> {
        replied_seqs(&self.lab, i)
    }

    fn start_client(&mut self, i: usize, idfile: &std::path::Path, seconds: u64) {
        let pid = start_client(&mut self.lab, i, idfile, seconds);
        self.clients_pids.push(pid);
    }

    /// Client `i`'s log.
    pub fn client_log(&self, i: usize) -> String {
        self.lab.log(&format!("client-{i}.log"))
    }

    /// Echo replies client `i` got back carrying its own token.
    pub fn own_replies(&self, i: usize) -> usize {
        let me = format!("echo-reply {}#", client(i));
        self.client_log(i).lines().filter(|l| l.starts_with(&me)).count()
    }

    /// Lines of every server-side stand-in log: (the call it served, tokens it received).
    pub fn server_calls(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.lab.dir.join("server")).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let call = text.lines().find(|l| l.starts_with("call ")).unwrap_or("").to_string();
            let mut toks: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("echo-request from "))
                .map(|t| t.split('#').next().unwrap_or("").to_string())
                .collect();
            toks.sort();
            toks.dedup();
            out.push((call, toks));
        }
        out
    }

    /// Every server-side stand-in log, concatenated.
    pub fn server_calls_text(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.lab.dir.join("server")).into_iter().flatten().flatten() {
            out += &std::fs::read_to_string(e.path()).unwrap_or_default();
        }
        out
    }

    /// Waits until every client in `which` has `n` echo replies of its own (or `limit`).
    pub fn wait_replies(&self, which: &[usize], n: usize, limit: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if which.iter().all(|&i| self.own_replies(i) >= n) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Stops client `i` (its pptp goes with it).
    pub fn stop_client(&mut self, i: usize) {
        let pid = self.clients_pids[i - 1];
        let _ = self.lab.stop(pid, "");
    }

    /// Runs xgwctl against this lab's daemon.
    pub fn xgwctl(&self, args: &[&str]) -> Output {
        let sock = self.lab.dir.join("xgw.sock");
        Command::new(bin("xgwctl")).arg("--socket").arg(&sock).args(args).output().expect("run xgwctl")
    }

    /// Stops the inside capture and returns the control connections' SYNs and SYN-ACKs
    /// the clients sent and got.
    pub fn client_handshakes(&mut self) -> Vec<Handshake> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.lab.stop(self.lan_tcpdump, "");
        handshakes(&self.lab.dir.join("lan-syn.pcap"))
    }

    /// The SYNs and SYN-ACKs on the outside link (after [`PptpLab::outside_sources`]
    /// stopped its capture).
    pub fn outside_handshakes(&self) -> Vec<Handshake> {
        handshakes(&self.lab.dir.join("outside.pcap"))
    }

    /// Stops the capture and returns every IPv4 source address seen on the outside link.
    pub fn outside_sources(&mut self) -> std::collections::BTreeSet<String> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.lab.stop(self.tcpdump, "");
        let path = self.lab.dir.join("outside.pcap");
        let f = std::fs::File::open(&path).expect("capture");
        let recs = xgw_dataplane::replay::read_capture(f, "outside.pcap").expect("readable capture");
        recs.iter()
            .filter(|r| r.frame.len() >= 34 && r.frame[12..14] == [8, 0])
            .map(|r| std::net::Ipv4Addr::new(r.frame[26], r.frame[27], r.frame[28], r.frame[29]).to_string())
            .collect()
    }
}
