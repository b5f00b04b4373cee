//! Real IPsec peers through xgw: four strongSwan IKEv2 clients (charon with the
//! kernel-libipsec plugin: ESP in userspace over a TUN device, since this kernel has no ESP)
//! behind the gateway share its outside address towards one responder. NAT-T moves each
//! client to UDP 4500 with ESP inside it; every client gets a virtual address from the
//! responder's pool and pings the responder's inner address through its own tunnel. Every
//! device outside the gateway stays at the kernel's defaults.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::time::{Duration, Instant};

use xgw_tests::Lab;

const CLIENTS: usize = 4;
const SERVER: &str = "198.51.100.20";
const INNER: &str = "10.98.0.1";
const RULES: &str = "interface lan device xgw-in  role inside  address 10.10.0.1/24
interface wan device xgw-out role outside address 198.51.100.1/24
nat overload ports 1024-65535 preserve-port on
access-list lan_out permit udp any any eq isakmp
access-list lan_out permit udp any any eq 4500
access-list lan_out permit icmp any any echo
access-group lan_out in interface lan
";

/// strongswan.conf for one charon: its own log, vici socket, and only the plugins it needs.
fn charon_conf(dir: &std::path::Path) -> String {
    format!(
        "charon {{
  load = random nonce aes sha1 sha2 hmac gmp curve25519 kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici updown attr
  filelog {{ log {{ path = {0}/charon.log
    flush_line = yes
    default = 1
    ike = 2 }} }}
  plugins {{ vici {{ socket = unix://{0}/vici }} }}
  install_virtual_ip = yes
}}
",
        dir.display()
    )
}

const RESPONDER: &str = "connections { rw { version = 2
  local_addrs = 198.51.100.20
  pools = vips
  local { auth = psk
    id = srv }
  remote { auth = psk }
  children { net { local_ts = 10.98.0.0/24
    esp_proposals = aes128-sha256 } }
  proposals = aes128-sha256-x25519 } }
pools { vips { addrs = 10.99.0.0/24 } }
secrets { ike-all { secret = xgwlabsecret } }
";

fn initiator(i: usize) -> String {
    format!(
        "connections {{ home {{ version = 2
  remote_addrs = {SERVER}
  vips = 0.0.0.0
  local {{ auth = psk
    id = c{i} }}
  remote {{ auth = psk
    id = srv }}
  children {{ net {{ remote_ts = 10.98.0.0/24
    esp_proposals = aes128-sha256 }} }}
  proposals = aes128-sha256-x25519 }} }}
secrets {{ ike-all {{ secret = xgwlabsecret }} }}
"
    )
}

/// Starts charon in namespace `role` (with a private /run for its pid file) and loads its
/// swanctl configuration once its vici socket answers.
fn start_charon(lab: &mut Lab, role: &str, swanctl: &str) -> std::path::PathBuf {
    let dir = lab.dir.join(role);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("strongswan.conf"), charon_conf(&dir)).expect("conf");
    std::fs::write(dir.join("swanctl.conf"), swanctl).expect("swanctl.conf");
    let script = format!(
        "mount -t tmpfs tmpfs /run && STRONGSWAN_CONF={}/strongswan.conf exec /usr/lib/ipsec/charon",
        dir.display()
    );
    lab.spawn(role, &["unshare", "-m", "sh", "-c", &script], &format!("{role}-charon.out"));
    let uri = format!("unix://{}/vici", dir.display());
    let conf = dir.join("swanctl.conf").to_string_lossy().to_string();
    let t0 = Instant::now();
    loop {
        let o = lab.exec(role, &["swanctl", "--load-all", "--uri", &uri, "--file", &conf]);
        if o.status.success() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{role}: charon did not take its configuration: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            lab.log(&format!("{role}-charon.out"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    dir
}

fn nat_t_clients(offload: &str) {
    assert!(std::path::Path::new("/usr/lib/ipsec/charon").exists(), "strongSwan's charon (tools/setup installs it)");
    let mut lab = Lab::new();
    for i in 1..=CLIENTS {
        lab.add_ns(&format!("c{i}"));
    }
    for ns in ["lan", "gw", "srv"] {
        lab.add_ns(ns);
    }
    lab.exec_ok("lan", &["ip", "link", "add", "br0", "type", "bridge"]);
    lab.exec_ok("lan", &["ip", "link", "set", "br0", "up"]);
    for i in 1..=CLIENTS {
        let (c, port) = (format!("c{i}"), format!("p{i}"));
        lab.link(&c, "eth0", &format!("10.10.0.{}/24", 10 + i), "lan", &port, "");
        lab.exec_ok("lan", &["ip", "link", "set", &port, "master", "br0"]);
        lab.exec_ok(&c, &["ip", "route", "add", "default", "via", "10.10.0.1"]);
    }
    lab.link("gw", "xgw-in", "10.10.0.1/24", "lan", "pg", "");
    lab.exec_ok("lan", &["ip", "link", "set", "pg", "master", "br0"]);
    lab.link("gw", "xgw-out", "198.51.100.1/24", "srv", "eth0", &format!("{SERVER}/24"));
    lab.exec_ok("srv", &["ip", "addr", "add", &format!("{INNER}/32"), "dev", "lo"]);
    lab.exec_ok("gw", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let pcap = lab.dir.join("outside.pcap").to_string_lossy().to_string();
    let tcpdump = lab.spawn("srv", &["tcpdump", "-i", "eth0", "-U", "-w", &pcap, "ip"], "tcpdump.log");
    let sock = lab.dir.join("xgw.sock").to_string_lossy().to_string();
    lab.start_xgwd("gw", RULES, &["--socket", &sock, "--offload", offload]);
    start_charon(&mut lab, "srv", RESPONDER);
    let dirs: Vec<_> = (1..=CLIENTS).map(|i| start_charon(&mut lab, &format!("c{i}"), &initiator(i))).collect();

    // every client initiates at once
    let mut initiating = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let uri = format!("unix://{}/vici", dir.display());
        let ns = lab.ns(&format!("c{}", i + 1));
        initiating.push(
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "swanctl", "--initiate", "--child", "net", "--uri", &uri])
                .args(["--timeout", "20"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("swanctl"),
        );
    }
    for (i, child) in initiating.into_iter().enumerate() {
        let o = child.wait_with_output().expect("swanctl --initiate");
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("CHILD_SA net{1} established"),
            "c{}: initiate failed: {}{}\n--- xgwd\n{}",
            i + 1,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            lab.log("xgwd.log")
        );
    }
    for (i, dir) in dirs.iter().enumerate() {
        let c = format!("c{}", i + 1);
        let log = std::fs::read_to_string(dir.join("charon.log")).unwrap_or_default();
        assert!(log.contains("CHILD_SA net{1} established"), "{c}: charon's log:\n{log}");
        // the virtual address the responder gave, then pings through the tunnel from it
        let addrs = lab.exec_ok(&c, &["ip", "-4", "-o", "addr", "show"]);
        let vip = addrs
            .split_whitespace()
            .filter_map(|w| w.strip_suffix("/32"))
            .find(|a| a.starts_with("10.99."))
            .unwrap_or_else(|| panic!("{c}: no virtual address in {addrs}"))
            .to_string();
        let ping = lab.exec(&c, &["ping", "-c", "5", "-i", "0.2", "-W", "2", "-I", &vip, INNER]);
        let out = String::from_utf8_lossy(&ping.stdout);
        assert!(out.contains("5 received"), "{c}: pings through the tunnel from {vip}:\n{out}");
    }
    // the responder sees every client behind the one outside address, each on its own port,
    // and every tunnel in UDP 4500 (NAT-T)
    let srv_dir = lab.dir.join("srv");
    let uri = format!("unix://{}/vici", srv_dir.display());
    let sas = lab.exec_ok("srv", &["swanctl", "--list-sas", "--uri", &uri]);
    let peers: std::collections::BTreeSet<&str> = sas
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "remote").nth(3))
        .filter(|p| p.starts_with("198.51.100.1["))
        .collect();
    assert_eq!(peers.len(), CLIENTS, "one IKE SA per client, each from its own outside port:\n{sas}");
    // the gateway tracked one NAT-T flow per client; the outside saw no inside address
    let o = std::process::Command::new(xgw_tests::bin("xgwctl"))
        .args(["--socket", &sock, "conntrack", "list", "-p", "udp"])
        .output()
        .expect("xgwctl");
    let list = String::from_utf8_lossy(&o.stdout);
    assert_eq!(list.lines().filter(|l| l.contains("dport=4500") && l.contains("[ASSURED]")).count(), CLIENTS, "{list}");
    if offload == "on" {
        assert!(list.lines().any(|l| l.contains("dport=4500") && l.contains("[OFFLOAD]")), "{list}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = lab.stop(tcpdump, "");
    let f = std::fs::File::open(&pcap).expect("capture");
    let recs = xgw_dataplane::replay::read_capture(f, "outside.pcap").expect("capture");
    let inside: Vec<_> = recs
        .iter()
        .filter(|r| r.frame.len() >= 34 && r.frame[12..14] == [8, 0] && r.frame[26..28] == [10, 10])
        .collect();
    assert!(inside.is_empty(), "{} frames left with an inside source", inside.len());
}

#[test]
fn four_ikev2_clients_behind_one_address_nat_t() {
    nat_t_clients("on");
}

#[test]
fn four_ikev2_clients_behind_one_address_nat_t_without_offload() {
    nat_t_clients("off");
}
