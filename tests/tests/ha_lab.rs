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
use std::time::{Duration, Instant};

use xgw_tests::pptp::{client, client_addr, replied_seqs, SERVER};
use xgw_tests::{bin, Lab};

#[path = "ha_lab/failover.rs"]
mod failover;
#[path = "ha_lab/pair.rs"]
mod pair;

use failover::*;
use pair::*;

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
