//! The soak: 50 real PPTP clients (pptp-linux, LCP echoes every 200 ms) through xgw to
//! pptpd, plus background UDP from five of them, for `XGW_SOAK_SECONDS` (default 600).
//! Samples xgwd's memory, the table and the loss counters every 30 s and prints them; after
//! a minute's warm-up, memory must stay flat and no counter of lost or refused packets may
//! move. Not part of the default run (`tools/soak` runs it; see README).
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use xgw_tests::pptp::{client, PptpLab, SERVER};

const CLIENTS: usize = 50;
const UDP_CLIENTS: usize = 5;
const WARM_UP: Duration = Duration::from_secs(60);

/// Sends a datagram every 20 ms for SECONDS, each waiting up to 1 s for its answer; prints
/// `sent N lost L`.
const UDP_STEADY: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
dst = (sys.argv[1], int(sys.argv[2])); end = time.time() + float(sys.argv[3]); n = lost = 0
while time.time() < end:
    s.sendto(str(n).encode(), dst); n += 1
    try: s.recv(100)
    except socket.timeout: lost += 1
    time.sleep(0.02)
print("sent", n, "lost", lost, flush=True)
"#;

fn rules() -> String {
    include_str!("../../rules/examples/lab.rules").replace(
        "access-list lan_out permit icmp any any echo",
        "access-list lan_out permit icmp any any echo\naccess-list lan_out permit udp any any",
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("xgwd status")
        .lines()
        .find_map(|x| x.strip_prefix("VmRSS:"))
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .expect("VmRSS")
}

/// Every counter of packets xgw lost or refused: drop reasons, and per port the transmit
/// losses and the AF_XDP socket's own drops.
fn losses(v: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (k, x) in v["drops"].as_object().into_iter().flatten() {
        m.insert(format!("drops.{k}"), x.as_u64().unwrap_or(0));
    }
    for p in v["ports"].as_array().into_iter().flatten() {
        for (k, x) in p["counters"].as_object().into_iter().flatten() {
            let lossy = k.starts_with("tx_no") || k == "tx_neigh_queue_full" || k.starts_with("xsk_rx_");
            if lossy {
                *m.entry(format!("ports.{k}")).or_default() += x.as_u64().unwrap_or(0);
            }
        }
    }
    m
}

#[test]
#[ignore = "ten minutes; run by tools/soak"]
fn fifty_pptp_clients_and_background_udp_for_ten_minutes() {
    let secs: u64 = std::env::var("XGW_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let mut l = PptpLab::start(CLIENTS, &rules());
    l.lab.spawn("srv", &["python3", "-c", xgw_tests::UDP_ECHO, SERVER, "7"], "echo.log");
    l.lab.wait_listening("srv", 7);
    let run_for = secs + WARM_UP.as_secs() + 30;
    l.start_clients(0x0100, run_for);
    for i in 1..=UDP_CLIENTS {
        let t = (secs + WARM_UP.as_secs()).to_string();
        l.lab.spawn(&client(i), &["python3", "-c", UDP_STEADY, SERVER, "7", &t], &format!("udp-{i}.log"));
    }
    let all: Vec<usize> = (1..=CLIENTS).collect();
    assert!(l.wait_replies(&all, 5, Duration::from_secs(60)), "not every call came up");
    let stats = |l: &PptpLab| -> Value {
        let o = l.xgwctl(&["-o", "json", "stats"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("json")
    };
    let t0 = Instant::now();
    std::thread::sleep(WARM_UP.saturating_sub(t0.elapsed()));
    let (rss0, loss0) = (rss_kib(l.xgwd), losses(&stats(&l)));
    let seqs0: Vec<u64> = (1..=CLIENTS).map(|i| l.replied_seqs(i).last().copied().unwrap_or(0)).collect();
    let start = Instant::now();
    let mut max_rss = rss0;
    println!(
        "soak: {CLIENTS} PPTP clients, {UDP_CLIENTS} UDP flows at 50/s, {secs} s after a {} s warm-up",
        WARM_UP.as_secs()
    );
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(30).min(Duration::from_secs(secs).saturating_sub(start.elapsed())));
        let v = stats(&l);
        let rss = rss_kib(l.xgwd);
        max_rss = max_rss.max(rss);
        let moved: u64 = losses(&v).iter().map(|(k, n)| n - loss0.get(k).copied().unwrap_or(0)).sum();
        println!(
            "  t={:>4} s  RSS {rss} KiB  flows {}  calls {}  packets rx {}  loss counters moved {moved}",
            start.elapsed().as_secs(),
            v["conntrack"]["entries"],
            v["pptp"]["calls_in_progress"],
            v["engine"]["rx"],
        );
    }
    let v = stats(&l);
    let rss1 = rss_kib(l.xgwd);
    let moved: Vec<String> = losses(&v)
        .iter()
        .filter(|(k, n)| **n > loss0.get(*k).copied().unwrap_or(0))
        .map(|(k, n)| format!("{k} +{}", n - loss0.get(k).copied().unwrap_or(0)))
        .collect();
    // LCP echoes answered over the soak, per call: no sequence number missing
    let (mut echoes, mut lost) = (0u64, 0u64);
    for i in 1..=CLIENTS {
        let seqs = l.replied_seqs(i);
        let b = seqs.last().copied().unwrap_or(0);
        let a = seqs0[i - 1];
        let got: std::collections::BTreeSet<u64> = seqs.into_iter().filter(|s| *s > a).collect();
        echoes += b - a;
        lost += (b - a) - got.len() as u64;
    }
    // the UDP senders end at the soak's end and print their totals
    let t = Instant::now();
    while (1..=UDP_CLIENTS).any(|i| !l.lab.log(&format!("udp-{i}.log")).contains("sent")) {
        assert!(t.elapsed() < Duration::from_secs(30), "the UDP senders did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let udp: Vec<String> = (1..=UDP_CLIENTS).map(|i| l.lab.log(&format!("udp-{i}.log")).trim().to_string()).collect();
    println!(
        "soak done: xgwd RSS {rss0} KiB after warm-up, at most {max_rss} KiB, {rss1} KiB at the end; \
         {echoes} LCP echoes over {CLIENTS} calls, {lost} lost; UDP {udp:?}; loss counters moved: {moved:?}"
    );
    assert_eq!(lost, 0, "LCP echoes lost");
    assert!(moved.is_empty(), "loss counters moved: {moved:?}");
    assert!(udp.iter().all(|u| u.ends_with("lost 0")), "UDP datagrams lost: {udp:?}");
    assert!(max_rss <= rss0 + 4096, "xgwd's memory grew from {rss0} KiB to {max_rss} KiB");
    assert_eq!(v["pptp"]["calls_in_progress"], CLIENTS as u64, "every call lasted");
}
