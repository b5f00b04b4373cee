//! A failover and what it must not lose: the active gateway fails (killed, or its outside
//! link cut), the outside wire is captured, and the calls, the TCP transfer and the UDP flow
//! are checked on the standby.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use xgw_tests::pptp::{client, replied_seqs, start_client_echoing, start_server, SERVER};

use super::pair::*;

#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// GRE from the gateways: (time, source MAC, IP source, GRE key).
    pub(crate) gre: Vec<(f64, String, String, u16)>,
    /// TCP RSTs on control connections.
    pub(crate) rst: usize,
    /// Call IDs of Outgoing-Call-Requests, by the control connection's outside port.
    pub(crate) ocrq: BTreeMap<u16, u16>,
    /// Call-Clear-Requests: (time, outside port, Call ID).
    pub(crate) ccrq: Vec<(f64, u16, u16)>,
    /// Control-connection Echo-Requests the gateways sent: (time, source MAC, outside port).
    pub(crate) echo_rq: Vec<(f64, String, u16)>,
    /// Echo-Replies the server sent: (time, outside port).
    pub(crate) echo_rp: Vec<(f64, u16)>,
}

/// GRE frames, RSTs and the control messages naming calls, on the outside link.
pub(crate) fn outside_capture(path: &std::path::Path) -> Seen {
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
pub(crate) struct Outcome {
    pub(crate) gap: Option<f64>,
    pub(crate) lost: BTreeMap<usize, u64>,
    pub(crate) survived: usize,
    pub(crate) rst: usize,
    pub(crate) tcp: String,
    pub(crate) udp: String,
    pub(crate) b_calls: u64,
    pub(crate) b_calls_after_hangup: u64,
    pub(crate) keys_before: std::collections::BTreeSet<u16>,
    pub(crate) keys_after: std::collections::BTreeSet<u16>,
    pub(crate) sources_after: std::collections::BTreeSet<String>,
    /// Call-Clear-Requests B sent after the kill: (outside port, Call ID, the Call ID the
    /// connection's Outgoing-Call-Request carried through A).
    pub(crate) hangups: Vec<(u16, u16, Option<u16>)>,
    /// Control connections (outside ports) that sent an Echo-Request through B after the
    /// failure, and those of them the server answered.
    pub(crate) echoed: (usize, usize),
    /// B's log lines of calls it ended.
    pub(crate) b_calls_ended: Vec<String>,
}

/// Calls up through A, traffic beside, A fails `how`; what happened.
pub(crate) fn failover(p: &mut Pair, synced: bool, how: Failure) -> Outcome {
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
pub(crate) fn assert_carried_on(p: &Pair, o: &Outcome, what: &str) {
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
