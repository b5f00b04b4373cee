//! Enforcement: reloads (report, teardown, under traffic) and connection limits.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use xgw_dataplane::{DropReason, Engine, FrameBuf, IfaceId, RxMeta, Shared, Time, Verdict};

const BASE: &str = "interface lan device e1 role inside address 10.0.0.1/24
interface wan device e0 role outside address 192.0.2.1/24
";

fn compile(extra: &str) -> xgw_rules::Compiled {
    let text = format!("{BASE}{extra}");
    let none = |_: &str| -> Result<String, String> { Err("no includes".into()) };
    xgw_rules::compile("t.rules", &text, &none).map_err(|d| xgw_rules::diag::render_all(&d)).expect("compiles")
}

fn syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 1000)
        .syn()
        .write(&mut v, b"")
        .expect("build");
    v
}

/// A bare TCP ACK (`seq`, acknowledging `ack`).
fn ack(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, ack: u32) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 1000)
        .ack(ack)
        .write(&mut v, b"")
        .expect("build");
    v
}

fn run(e: &mut Engine, f: &[u8], iface: u8, t: u64) -> Verdict {
    let mut buf = f.to_vec();
    buf.resize(256, 0);
    let mut fr = FrameBuf { buf: &mut buf[..], len: f.len() };
    e.process(&mut fr, RxMeta { iface: IfaceId(iface) }, Time::from_millis(t))
}

fn engine(c: xgw_rules::Compiled) -> (Arc<Shared>, Engine) {
    let sh = Arc::new(Shared::new(c.engine).expect("config"));
    sh.set_policy(Box::new(c.acl));
    let e = Engine::new(Arc::clone(&sh));
    (sh, e)
}

const S: [u8; 4] = [198, 51, 100, 20];

#[test]
fn reload_reports_and_optionally_kills_flows_the_new_policy_denies() {
    let (sh, mut e) = engine(compile("access-list out permit tcp any any\naccess-group out in interface lan\n"));
    for p in [80u16, 443, 22] {
        assert_eq!(run(&mut e, &syn([10, 0, 0, 5], 4000 + p, S, p), 0, 0), Verdict::Forward(IfaceId(1)));
    }
    let strict = compile("access-list out permit tcp any any eq https\naccess-group out in interface lan\n");
    let r = sh.reload_policy(Box::new(strict.acl), false, Time::from_millis(1));
    assert_eq!((r.live, r.would_deny, r.killed), (3, 2, 0));
    // existing flows keep their verdict; new ones follow the new policy
    assert_eq!(run(&mut e, &syn([10, 0, 0, 5], 4080, S, 80), 0, 2), Verdict::Forward(IfaceId(1)));
    assert_eq!(run(&mut e, &syn([10, 0, 0, 5], 5080, S, 80), 0, 3), Verdict::Drop(DropReason::AclDenied));
    // again, this time tearing them down
    let strict = compile("access-list out permit tcp any any eq https\naccess-group out in interface lan\n");
    let r = sh.reload_policy(Box::new(strict.acl), true, Time::from_millis(4));
    assert_eq!((r.live, r.would_deny, r.killed), (3, 2, 2));
    assert_eq!(sh.flows.len(), 1);
    assert_eq!(
        run(&mut e, &syn([10, 0, 0, 5], 4080, S, 80), 0, 5),
        Verdict::Drop(DropReason::AclDenied),
        "its flow is gone, the new SYN is judged anew"
    );
}

#[test]
fn reload_under_traffic_loses_and_misjudges_nothing() {
    // two policies that agree on everything the traffic does except one port: flows on the
    // common ports must never be dropped however often the policy flips
    let a = "access-list out permit tcp any any range 1000 2000\naccess-list out permit tcp any any eq 9000\naccess-group out in interface lan\n";
    let b = "access-list out permit tcp any any range 1000 2000\naccess-group out in interface lan\n";
    let (sh, mut e) = engine(compile(a));
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let flipper = {
        let (sh, stop, swaps) = (Arc::clone(&sh), Arc::clone(&stop), Arc::clone(&swaps));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                let c = compile(if n.is_multiple_of(2) { b } else { a });
                sh.set_policy(Box::new(c.acl));
                n += 1;
                swaps.store(n, Ordering::Relaxed);
            }
        })
    };
    let mut t = 0;
    let mut judged_9000 = (0u32, 0u32);
    for round in 0..200u16 {
        // a new flow on a common port: always admitted
        let sp = 10_000 + round;
        t += 1;
        assert_eq!(run(&mut e, &syn([10, 0, 0, 5], sp, S, 1500), 0, t), Verdict::Forward(IfaceId(1)), "round {round}");
        // its packets keep flowing whatever the policy is now
        for _ in 0..20 {
            t += 1;
            assert_eq!(run(&mut e, &syn([10, 0, 0, 5], sp, S, 1500), 0, t), Verdict::Forward(IfaceId(1)));
        }
        // the contested port: either verdict is right, but exactly one of the two
        t += 1;
        match run(&mut e, &syn([10, 0, 0, 6], sp, S, 9000), 0, t) {
            Verdict::Forward(_) => judged_9000.0 += 1,
            Verdict::Drop(DropReason::AclDenied) => judged_9000.1 += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().expect("flipper");
    assert!(swaps.load(Ordering::Relaxed) > 10, "the policy really flipped during the run");
    assert_eq!(judged_9000.0 + judged_9000.1, 200);
}

#[test]
fn per_host_and_embryonic_limits_refuse_and_count() {
    let (sh, mut e) = engine(compile("limit per-host 3\nlimit embryonic 2\n"));
    let h = [10, 0, 0, 5];
    // two half-open connections, the third SYN is refused (embryonic)
    assert_eq!(run(&mut e, &syn(h, 1, S, 80), 0, 0), Verdict::Forward(IfaceId(1)));
    assert_eq!(run(&mut e, &syn(h, 2, S, 80), 0, 0), Verdict::Forward(IfaceId(1)));
    assert_eq!(run(&mut e, &syn(h, 3, S, 80), 0, 0), Verdict::Drop(DropReason::ConnLimit));
    // complete one handshake: it is no longer embryonic, so another SYN fits
    let p1 = {
        let k = xgw_dataplane::conntrack::FlowKey {
            src: u32::from_be_bytes(h),
            dst: u32::from_be_bytes(S),
            sport: 1,
            dport: 80,
            proto: 6,
        };
        let r = sh.flows.lookup(&k).expect("flow");
        sh.flows.with_flow(r, &k, |f, _| f.rewrite[0].sport).expect("live")
    };
    let mut sa = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(S, [192, 0, 2, 1], 64)
        .tcp(80, p1, 1, 1000)
        .syn()
        .ack(2)
        .write(&mut sa, b"")
        .expect("build");
    assert_eq!(run(&mut e, &sa, 1, 1), Verdict::Forward(IfaceId(0)));
    assert_eq!(run(&mut e, &ack(h, 1, S, 80, 2, 2), 0, 3), Verdict::Forward(IfaceId(1)));
    let hosts = sh.hosts.as_ref().expect("counting");
    assert_eq!(hosts.get(u32::from_be_bytes(h)), (2, 1));
    assert_eq!(run(&mut e, &syn(h, 4, S, 80), 0, 4), Verdict::Forward(IfaceId(1)));
    // three connections now: the per-host limit refuses a UDP flow too
    let mut u = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(h, S, 64).udp(5, 53).write(&mut u, b"q").expect("build");
    assert_eq!(run(&mut e, &u, 0, 5), Verdict::Drop(DropReason::ConnLimit));
    // another host is unaffected
    let mut u2 = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([10, 0, 0, 6], S, 64)
        .udp(5, 53)
        .write(&mut u2, b"q")
        .expect("build");
    assert_eq!(run(&mut e, &u2, 0, 6), Verdict::Forward(IfaceId(1)));
    // expiry gives the slots back
    sh.sweep(Time::from_secs(1_000_000), usize::MAX);
    assert_eq!(hosts.get(u32::from_be_bytes(h)), (0, 0));
    assert_eq!(e.counters().drops(DropReason::ConnLimit), 2);
}

#[test]
fn the_first_refusal_wakes_the_guard_thread_at_once() {
    let (sh, mut e) = engine(compile("limit embryonic 1\n"));
    let (tx, rx) = std::sync::mpsc::channel();
    let sh2 = Arc::clone(&sh);
    // a consumer that would otherwise sleep far longer than the test waits
    let t = std::thread::spawn(move || loop {
        if let Some(n) = sh2.guard.pop() {
            let _ = tx.send(n);
            return;
        }
        std::thread::park_timeout(std::time::Duration::from_secs(60));
    });
    sh.guard.connect_thread(t.thread().clone());
    let h = [10, 0, 0, 5];
    assert_eq!(run(&mut e, &syn(h, 1, S, 80), 0, 0), Verdict::Forward(IfaceId(1)));
    assert_eq!(run(&mut e, &syn(h, 2, S, 80), 0, 1), Verdict::Drop(DropReason::ConnLimit));
    let n = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the refusal woke the consumer");
    assert_eq!(n.host, u32::from_be_bytes(h));
    t.join().expect("consumer");
}

#[test]
fn unsolicited_syns_to_the_outside_address_tell_the_guard_once_per_half_hold() {
    use xgw_ebpf_common::{guard, GuardKey};
    let (sh, mut e) = engine(compile("forward tcp 8080 to 10.0.0.50\n"));
    let (o, a) = ([203, 0, 113, 9], [192, 0, 2, 1]);
    let unsolicited = GuardKey { addr: u32::from_be_bytes(a), port: 0, side: guard::UNSOLICITED, pad: 0 };
    // no consumer connected: dropped, nothing queued
    assert_eq!(run(&mut e, &syn(o, 1, a, 80), 1, 0), Verdict::Drop(DropReason::UnsolicitedInbound));
    assert_eq!(sh.guard.pop(), None);
    sh.guard.connect();
    // a scan within half a hold: one notice, naming the address (no host)
    for (i, t) in [(2u16, 1u64), (3, 2), (4, 90)] {
        assert_eq!(run(&mut e, &syn(o, i, a, 1000 + i), 1, t), Verdict::Drop(DropReason::UnsolicitedInbound));
    }
    assert_eq!(sh.guard.pop().map(|n| (n.key, n.host)), Some((unsolicited, 0)));
    assert_eq!(sh.guard.pop(), None);
    // half a hold later the next one tells it again
    let half = guard::HOLD_NS / 2 / 1_000_000;
    assert_eq!(run(&mut e, &syn(o, 5, a, 81), 1, 1 + half), Verdict::Drop(DropReason::UnsolicitedInbound));
    assert_eq!(sh.guard.pop().map(|n| n.key), Some(unsolicited));
    // an unsolicited ACK is dropped but held by nothing: the guard holds pure SYNs only
    assert_eq!(run(&mut e, &ack(o, 6, a, 82, 1, 1), 1, 10_000), Verdict::Drop(DropReason::UnsolicitedInbound));
    assert_eq!(run(&mut e, &syn(o, 7, a, 8080), 1, 10_001), Verdict::Forward(IfaceId(0)));
    assert_eq!(sh.guard.pop(), None);
}

#[test]
fn refused_syns_tell_the_new_flow_guard_once_per_half_hold() {
    use xgw_ebpf_common::{guard, GuardKey};
    let (sh, mut e) = engine(compile("limit embryonic 1\nforward tcp 8080 to 10.0.0.50\n"));
    let h = [10, 0, 0, 5];
    // no consumer connected: nothing is queued
    assert_eq!(run(&mut e, &syn(h, 1, S, 80), 0, 0), Verdict::Forward(IfaceId(1)));
    assert_eq!(run(&mut e, &syn(h, 2, S, 80), 0, 1), Verdict::Drop(DropReason::ConnLimit));
    assert_eq!(sh.guard.pop(), None);
    sh.guard.connect();
    // a burst of refused SYNs within half a hold: one notice
    for (i, t) in [(3u16, 2u64), (4, 3), (5, 50)] {
        assert_eq!(run(&mut e, &syn(h, i, S, 80), 0, t), Verdict::Drop(DropReason::ConnLimit));
    }
    let inside = GuardKey { addr: u32::from_be_bytes(h), port: 0, side: guard::INSIDE_SOURCE, pad: 0 };
    assert_eq!(sh.guard.pop().map(|n| (n.key, n.host)), Some((inside, inside.addr)));
    assert_eq!(sh.guard.pop(), None);
    // half a hold later the next refusal tells it again
    let half = guard::HOLD_NS / 2 / 1_000_000;
    assert_eq!(run(&mut e, &syn(h, 6, S, 80), 0, 2 + half), Verdict::Drop(DropReason::ConnLimit));
    assert_eq!(sh.guard.pop().map(|n| (n.key, n.host)), Some((inside, inside.addr)));
    // a refused UDP flow (no SYN) tells nothing: the guard holds SYNs only
    let mut u = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(h, S, 64).udp(5, 53).write(&mut u, b"q").expect("build");
    let _ = run(&mut e, &u, 0, 10_000);
    assert_eq!(sh.guard.pop(), None);
    // SYNs from outside to a forwarded port count against the inside server: the notice
    // names the forwarded port of the outside address
    let o = [203, 0, 113, 9];
    assert_eq!(run(&mut e, &syn(o, 1, [192, 0, 2, 1], 8080), 1, 20_000), Verdict::Forward(IfaceId(0)));
    assert_eq!(run(&mut e, &syn(o, 2, [192, 0, 2, 1], 8080), 1, 20_001), Verdict::Drop(DropReason::ConnLimit));
    let fwd = GuardKey { addr: u32::from_be_bytes([192, 0, 2, 1]), port: 8080, side: guard::FORWARDED_PORT, pad: 0 };
    assert_eq!(sh.guard.pop().map(|n| (n.key, n.host)), Some((fwd, u32::from_be_bytes([10, 0, 0, 50]))));
    // the guard renews a hold while the host is still refused: the forward's inside host is
    assert!(sh.refuses_syns_of(u32::from_be_bytes([10, 0, 0, 50])));
    assert!(sh.refuses_syns_of(u32::from_be_bytes(h)));
    assert!(!sh.refuses_syns_of(u32::from_be_bytes([10, 0, 0, 6])));
}
