//! How calls end (CDN, FIN, RST, Stop-Control-Connection, idle GRE, deletion), invalid and exhausting input, stray GRE.

use super::*;

#[test]
fn fin_without_cdn_ends_calls_after_the_grace() {
    let mut e = engine();
    let (mut ctl, x) = established_call(&mut e);
    let (v, _) = ctl.pns_raw(&mut e, ctl.seq_c, b"", FIN | ACK);
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    // within the grace (4 s by default) the call still works (a late CDN can still arrive)
    e.shared().sweep(Time::from_millis(ctl.t + 3_900), usize::MAX);
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Forward(INSIDE));
    e.shared().sweep(Time::from_millis(ctl.t + 4_001), usize::MAX);
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    assert!(e.shared().pptp.sessions().is_empty());
}

#[test]
fn rst_without_cdn_ends_calls_at_the_next_sweep() {
    for (first, then) in [(RST | ACK, None), (FIN | ACK, Some(RST | ACK))] {
        let mut e = engine();
        let (mut ctl, x) = established_call(&mut e);
        let (v, _) = ctl.pns_raw(&mut e, ctl.seq_c, b"", first);
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        if let Some(flags) = then {
            // an RST after a FIN cuts the FIN's grace short
            let (v, _) = ctl.pac_raw(&mut e, ctl.seq_s, b"", flags);
            assert_eq!(v, Verdict::Forward(INSIDE));
        }
        e.shared().sweep(Time::from_millis(ctl.t + 1), usize::MAX);
        assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession), "{first:#x}");
        assert!(e.shared().pptp.sessions().is_empty());
    }
}

#[test]
fn an_offloaded_calls_end_queues_its_withdrawal_and_calls_no_fast_path() {
    // the call ends by CDN (packet path, inspector's mutex held) or by the control
    // connection's RST (at the sweep, the mutex held): neither may call the fast path
    for by_rst in [false, true] {
        let mut e = engine();
        let fast = std::sync::Arc::new(CountingFastPath::default());
        e.shared().flows.offload.connect(fast.clone());
        let (mut ctl, x) = established_call(&mut e);
        assert_eq!(gre(&mut e, C1, S, 40, true).0, Verdict::Forward(OUTSIDE));
        assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Forward(INSIDE));
        // both ends have sent: the call's GRE is offered to the fast path
        let offered = std::iter::from_fn(|| e.shared().flows.offload.pop()).collect::<Vec<_>>();
        assert_eq!(offered.len(), 1, "the GRE flow, never the control connection");
        if by_rst {
            let (v, _) = ctl.pns_raw(&mut e, ctl.seq_c, b"", RST | ACK);
            assert_eq!(v, Verdict::Forward(OUTSIDE));
            e.shared().pptp.sweep(&e.shared().flows, Time::from_millis(ctl.t + 1));
        } else {
            ctl.pac(&mut e, &build(MsgType::Cdn, &[(12, 40)]));
        }
        assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
        assert_eq!(fast.0.load(std::sync::atomic::Ordering::Relaxed), 0, "rst {by_rst}: a fast-path call");
        let w = e.shared().flows.offload.pop_withdrawal().expect("withdrawal queued");
        assert_eq!(w, offered[0], "rst {by_rst}");
    }
}

#[test]
fn deleting_the_control_connection_ends_its_calls_and_their_gre() {
    // `xgwctl conntrack delete` on a PPTP control connection (Shared::delete_flows)
    let mut e = engine();
    let (ctl, x) = established_call(&mut e);
    let (_, x2) = established_call2(&mut e);
    assert_eq!(e.shared().pptp.calls_in_progress(), 2);
    let now = Time::from_millis(ctl.t);
    let n = e.shared().delete_flows(now, |f| f.keys[0].sport == ctl.sport && f.keys[0].dport == 1723);
    assert_eq!(n, 1, "only the control connection itself is picked");
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    assert_eq!(e.shared().pptp.calls_in_progress(), 1, "the other client's call stays");
    assert_eq!(gre(&mut e, S, P, x2, false).0, Verdict::Forward(INSIDE));
}

#[test]
fn stop_control_connection_ends_every_call() {
    let mut e = engine();
    let (mut ctl, x1) = established_call(&mut e);
    let x2 = ctl.ocrq(&mut e, 5);
    ctl.ocrp(&mut e, 50, x2, 1);
    assert_eq!(e.shared().pptp.calls_in_progress(), 2);
    ctl.pns(&mut e, &build(MsgType::StopCcrq, &[]));
    for x in [x1, x2] {
        assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    }
    assert_eq!(e.shared().pptp.stats.calls_torn_down.get(), 2);
}

#[test]
fn control_idle_with_echoes_for_hours_is_not_reaped() {
    let mut e = engine();
    let (mut ctl, x) = established_call(&mut e);
    for minute in 1..=180u64 {
        ctl.t = minute * 60_000;
        ctl.pns(&mut e, &build(MsgType::EchoRq, &[]));
        let mut er = build(MsgType::EchoRp, &[]);
        er[16] = 1;
        ctl.pac(&mut e, &er);
        // GRE (LCP echo) keeps the call's flow alive too
        let mut g = gre_frame(S, P, x, b"lcp");
        assert_eq!(run(&mut e, &mut g, OUTSIDE, ctl.t), Verdict::Forward(INSIDE));
        e.shared().sweep(Time::from_millis(ctl.t), usize::MAX);
    }
    assert_eq!(e.shared().pptp.calls_in_progress(), 1);
}

#[test]
fn gre_idle_timeout_ends_the_call() {
    let mut cfg = EngineConfig::example();
    cfg.timeouts.pptp_gre = std::time::Duration::from_secs(30);
    let mut e = engine_with(cfg);
    let (_ctl, x) = established_call(&mut e);
    e.shared().sweep(Time::from_secs(29), usize::MAX);
    assert_eq!(e.shared().pptp.calls_in_progress(), 1);
    e.shared().sweep(Time::from_secs(31), usize::MAX);
    assert_eq!(e.shared().pptp.calls_in_progress(), 0);
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
}

#[test]
fn invalid_lengths_types_and_magic_are_counted_and_allocate_nothing() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let mut bad = Vec::new();
    for len in [0u16, 167, 200, 65535] {
        let mut m = build(MsgType::Ocrq, &[(12, 1)]);
        m[0..2].copy_from_slice(&len.to_be_bytes());
        bad.push(m);
    }
    let mut m = build(MsgType::Ocrq, &[(12, 1)]);
    m[4] = 0xde;
    bad.push(m);
    for t in [0u16, 16, 0xffff] {
        let mut m = build(MsgType::Ocrq, &[(12, 1)]);
        m[8..10].copy_from_slice(&t.to_be_bytes());
        bad.push(m);
    }
    for m in &bad {
        let (v, _) = ctl.pns_raw(&mut e, ctl.seq_c, m, ACK | PSH);
        assert_eq!(v, Verdict::Drop(DropReason::PptpInvalidMessage));
    }
    let st = &e.shared().pptp.stats;
    assert_eq!(st.truncated_pns_message.get(), bad.len() as u64);
    assert_eq!(e.shared().pptp.pool_in_use(u32::from_be_bytes(P), u32::from_be_bytes(S)), 0);
    // the stream is intact: a good message still works
    let x = ctl.ocrq(&mut e, 1);
    assert_ne!(x, 0);
}

#[test]
fn truncated_message_then_close_leaks_nothing() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let m = build(MsgType::Ocrq, &[(12, 1)]);
    ctl.pns(&mut e, &m[..13]);
    let (v, _) = ctl.pns_raw(&mut e, ctl.seq_c, b"", RST | ACK);
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    e.shared().sweep(Time::from_secs(60), usize::MAX);
    assert!(e.shared().pptp.sessions().is_empty());
    assert_eq!(e.shared().pptp.calls_in_progress(), 0);
    e.shared().sweep(Time::from_secs(200), usize::MAX);
    assert_eq!(e.shared().pptp.pool_in_use(u32::from_be_bytes(P), u32::from_be_bytes(S)), 0);
}

#[test]
fn mismatched_and_duplicate_replies_open_nothing() {
    let mut e = engine();
    let (mut ctl, x) = established_call(&mut e);
    // an OCRP for no call
    let before = e.shared().pptp.stats.mismatched_pac_call_id.get();
    let other = x ^ 0x8080;
    ctl.ocrp(&mut e, 99, other, 1);
    assert_eq!(e.shared().pptp.stats.mismatched_pac_call_id.get(), before + 1);
    assert_eq!(gre(&mut e, S, P, other, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    // the same OCRP again at a new offset: a retransmitted PAC message, nothing new
    ctl.ocrp(&mut e, 40, x, 1);
    assert_eq!(e.shared().pptp.stats.retransmitted_pac_message.get(), 1);
    assert_eq!(e.shared().pptp.stats.calls_created.get(), 1);
}

#[test]
fn call_id_exhaustion_refuses_new_calls_and_keeps_old_ones() {
    let mut cfg = EngineConfig::example();
    cfg.pptp.id_limit = 2;
    let mut e = engine_with(cfg);
    let mut a = Ctl::open(&mut e, C1, 40001, S);
    let mut b = Ctl::open(&mut e, C2, 40001, S);
    let xa = a.ocrq(&mut e, 1);
    a.ocrp(&mut e, 10, xa, 1);
    let xb = b.ocrq(&mut e, 1);
    b.ocrp(&mut e, 20, xb, 1);
    let (v, _) = a.pns_raw(&mut e, a.seq_c, &build(MsgType::Ocrq, &[(12, 2)]), ACK | PSH);
    assert_eq!(v, Verdict::Drop(DropReason::PptpCallRefused));
    assert_eq!(e.shared().pptp.stats.call_creation_failure.get(), 1);
    assert_eq!(gre(&mut e, S, P, xa, false).2, Ipv4Addr::from(C1));
    assert_eq!(gre(&mut e, S, P, xb, false).2, Ipv4Addr::from(C2));
}

#[test]
fn unsolicited_and_malformed_gre_is_dropped_and_counted() {
    let mut e = engine();
    assert_eq!(gre(&mut e, S, P, 1234, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    assert_eq!(gre(&mut e, C1, S, 1234, true).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    // K=0 version 1
    let mut f = raw_ip(S, P, 47, &[0x10, 0x01, 0x88, 0x0b, 0, 0, 0, 0]);
    assert_eq!(run(&mut e, &mut f, OUTSIDE, 0), Verdict::Drop(DropReason::GreMalformed));
    assert_eq!(e.counters().drops(DropReason::NoMatchingGreSession), 2);
    assert!(e.shared().flows.is_empty());
}

#[test]
fn gre_v0_is_never_pptp_first_host_wins() {
    let mut e = engine();
    let v0 = [0x20u8, 0x00, 0x08, 0x00, 0, 0, 0, 0x28, 0x45];
    let mut a = raw_ip(C1, S, 47, &v0);
    let mut b = raw_ip(C2, S, 47, &v0);
    assert_eq!(run(&mut e, &mut a, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_eq!(run(&mut e, &mut b, INSIDE, 0), Verdict::Drop(DropReason::NatPeerTaken));
    let mut back = raw_ip(S, P, 47, &v0);
    assert_eq!(run(&mut e, &mut back, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_eq!(tuple(&back).dst, Ipv4Addr::from(C1));
    assert_eq!(&back[14 + 20..], &v0[..], "the key of GRE v0 is never touched");
}
