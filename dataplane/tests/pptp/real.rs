//! Calls from real captures, static forwards, segments out of order, the invalid-message policies.

use super::*;

#[test]
fn pptp_server_inside_behind_a_static_forward() {
    let mut cfg = EngineConfig::example();
    cfg.forwards.push(PortForward { proto: 6, outside_port: 1723, inside_addr: C2.into(), inside_port: 1723 });
    let mut e = engine_with(cfg);
    let r = [198, 51, 100, 99]; // the PNS, outside
    let mut syn = seg(r, P, 50000, 1723, 1, 0, SYN, b"");
    assert_eq!(run(&mut e, &mut syn, OUTSIDE, 0), Verdict::Forward(INSIDE));
    let mut sa = seg(C2, r, 1723, 50000, 900, 2, SYN | ACK, b"");
    assert_eq!(run(&mut e, &mut sa, INSIDE, 1), Verdict::Forward(OUTSIDE));
    let mut ocrq = seg(r, P, 50000, 1723, 2, 901, ACK | PSH, &build(MsgType::Ocrq, &[(12, 6)]));
    assert_eq!(run(&mut e, &mut ocrq, OUTSIDE, 2), Verdict::Forward(INSIDE));
    assert_eq!(be(&tcp_payload(&ocrq), 12), 6, "the inside PAC is addressed 1:1: no translation");
    let mut m = build(MsgType::Ocrp, &[(12, 64), (14, 6)]);
    m[16] = 1;
    let mut ocrp = seg(C2, r, 1723, 50000, 901, 2 + 168, ACK | PSH, &m);
    assert_eq!(run(&mut e, &mut ocrp, INSIDE, 3), Verdict::Forward(OUTSIDE));
    // GRE from the outside PNS to P with the PAC's ID reaches the inside server
    assert_eq!(gre(&mut e, r, P, 64, false), (Verdict::Forward(INSIDE), r.into(), C2.into(), 64));
    // and the server's GRE leaves from P
    assert_eq!(gre(&mut e, C2, r, 6, true), (Verdict::Forward(OUTSIDE), P.into(), r.into(), 6));
}

#[test]
fn out_of_order_control_segment_is_dropped_then_accepted() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let m = build(MsgType::Ocrq, &[(12, 1)]);
    let (v, _) = ctl.pns_raw(&mut e, ctl.seq_c + 100, &m[100..], ACK | PSH);
    assert_eq!(v, Verdict::Drop(DropReason::PptpOutOfOrder));
    ctl.pns(&mut e, &m[..100]);
    let out = ctl.pns(&mut e, &m[100..]);
    assert_eq!(out, m[100..].to_vec());
    assert_eq!(e.shared().pptp.stats.out_of_order_segments.get(), 1);
}

#[test]
fn a_lost_syn_ack_answered_with_a_new_initial_sequence_number_is_followed() {
    // The server's first SYN-ACK passes here and is lost before the client; the client's
    // retransmitted SYN gets a SYN-ACK with another initial sequence number (a server
    // under SYN-cookie load does this), and then the first one turns up late. Parsing the
    // server's messages from the wrong start refused every one of them as out of order,
    // for good (seen with ten clients starting at once in the namespace lab).
    let mut e = engine();
    let (c, s, sport) = (C1, S, 40100);
    let mut syn = seg(c, s, sport, 1723, 1000, 0, SYN, b"");
    assert_eq!(run(&mut e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
    let pport = tuple(&syn).sport;
    let syn_ack = |isn: u32| seg(s, P, 1723, pport, isn, 1001, SYN | ACK, b"");
    assert_eq!(run(&mut e, &mut syn_ack(7_000), OUTSIDE, 1), Verdict::Forward(INSIDE));
    let mut again = seg(c, s, sport, 1723, 1000, 0, SYN, b"");
    assert_eq!(run(&mut e, &mut again, INSIDE, 2), Verdict::Forward(OUTSIDE));
    assert_eq!(run(&mut e, &mut syn_ack(900_000), OUTSIDE, 3), Verdict::Forward(INSIDE));
    let _ = run(&mut e, &mut syn_ack(7_000), OUTSIDE, 4); // the late first one
    let mut ack = seg(c, s, sport, 1723, 1001, 900_001, ACK, b"");
    assert_eq!(run(&mut e, &mut ack, INSIDE, 5), Verdict::Forward(OUTSIDE));
    let mut ctl = Ctl { c, s, sport, pport, seq_c: 1001, seq_s: 900_001, t: 6 };
    ctl.pns(&mut e, &build(MsgType::Sccrq, &[(12, 0x0100)]));
    let mut sccrp = build(MsgType::Sccrp, &[(12, 0x0100)]);
    sccrp[14] = 1;
    ctl.pac(&mut e, &sccrp);
    let xlat = ctl.ocrq(&mut e, 0x0100);
    assert_eq!(ctl.ocrp(&mut e, 0x4000, xlat, 1), 0x0100, "the OCRP was parsed: the client sees its own ID");
    assert_eq!(e.shared().pptp.stats.out_of_order_segments.get(), 0);
    assert_eq!(e.shared().pptp.calls_in_progress(), 1);
}

#[test]
fn real_cisco_pac_and_ixia_pns_call_is_translated() {
    let (ctl_msgs, gres) = capture_parts("pptp-cisco-pac-ixia-pns.cap", [20, 0, 0, 2]);
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 1999, S);
    let mut x = None;
    for (from_pns, mut p) in ctl_msgs {
        let t = be(&p, 8);
        if from_pns {
            if t == 1 {
                continue; // Ctl::open already sent an SCCRQ
            }
            let out = ctl.pns(&mut e, &p);
            if t == 7 {
                assert_eq!(be(&p, 12), 1, "the Ixia PNS asks with Call ID 1");
                x = Some(be(&out, 12));
            }
        } else {
            if t == 2 {
                continue;
            }
            if t == 8 {
                // behind the gateway the PAC answers the translated ID
                let xl = x.expect("OCRQ first");
                p[14..16].copy_from_slice(&xl.to_be_bytes());
                let got = ctl.pac(&mut e, &p);
                assert_eq!((be(&got, 12), be(&got, 14)), (24, 1), "PAC ID 24 untouched, peer restored to 1");
            } else {
                ctl.pac(&mut e, &p);
            }
        }
    }
    let x = x.expect("translated");
    let (mut outs, mut ins) = (0, 0);
    for g in gres {
        let key = be(&g, 6);
        let from_pns = key == 24;
        let (src, dst) = if from_pns { (C1, S) } else { (S, P) };
        let mut gg = g.clone();
        if !from_pns {
            gg[6..8].copy_from_slice(&x.to_be_bytes());
        }
        let mut f = raw_ip(src, dst, 47, &gg);
        let v = run(&mut e, &mut f, if from_pns { INSIDE } else { OUTSIDE }, 100);
        let out = &f[14 + 20..];
        if from_pns {
            outs += 1;
            assert_eq!(v, Verdict::Forward(OUTSIDE));
            assert_eq!(out, &g[..], "outbound GRE unchanged (key 24, seq, ack)");
        } else {
            ins += 1;
            assert_eq!(v, Verdict::Forward(INSIDE));
            assert_eq!(be(out, 6), 1, "inbound key restored");
            assert_eq!(&out[8..], &g[8..], "sequence/ack untouched (incl. 0xFFFFFFFF)");
        }
    }
    assert_eq!((outs, ins), (10, 7));
}

#[test]
fn real_winnt_and_poptop_call_id_zero_is_ordinary() {
    let (ctl_msgs, _) = capture_parts("pptp-winnt-pns-poptop-pac.pcap", [10, 1, 1, 11]);
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 3025, S);
    let mut x = None;
    for (from_pns, mut p) in ctl_msgs {
        let t = be(&p, 8);
        match (from_pns, t) {
            (true, 1) | (false, 2) => {}
            (true, 7) => {
                assert_eq!(be(&p, 12), 0);
                let out = ctl.pns(&mut e, &p);
                x = Some(be(&out, 12));
                assert_ne!(x, Some(0), "0 is translated like any ID");
            }
            (false, 8) => {
                p[14..16].copy_from_slice(&x.expect("OCRQ").to_be_bytes());
                let got = ctl.pac(&mut e, &p);
                assert_eq!(be(&got, 14), 0, "peer restored to 0");
            }
            (true, _) => {
                ctl.pns(&mut e, &p);
            }
            (false, _) => {
                ctl.pac(&mut e, &p);
            }
        }
    }
    assert_eq!(e.shared().pptp.calls_in_progress(), 1);
    assert_eq!(gre(&mut e, S, P, x.expect("x"), false), (Verdict::Forward(INSIDE), S.into(), C1.into(), 0));
}

#[test]
fn real_linux_pns_rras_pac_teardown() {
    let (ctl_msgs, _) = capture_parts("pptp-linux-pns-rras-pac-teardown.pcap", [192, 168, 43, 22]);
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 41366, S);
    let mut x = None;
    let mut types = Vec::new();
    for (from_pns, mut p) in ctl_msgs {
        let t = be(&p, 8);
        types.push((from_pns, t));
        match (from_pns, t) {
            (true, 1) | (false, 2) => {}
            (true, 7) => x = Some(be(&ctl.pns(&mut e, &p), 12)),
            (false, 8) | (false, 15) => {
                // OCRP peer, and RRAS's SLI as PAC, carry the translated ID behind the gateway
                let off = if t == 8 { 14 } else { 12 };
                p[off..off + 2].copy_from_slice(&x.expect("OCRQ").to_be_bytes());
                assert_eq!(be(&ctl.pac(&mut e, &p), off), 0, "type {t}");
            }
            (true, 12) => {
                let out = ctl.pns(&mut e, &p[..16]);
                assert_eq!(be(&out, 12), x.expect("x"), "CCRQ translated");
            }
            (false, 13) => {
                assert_eq!(be(&p, 12), 0, "RRAS's CDN carries 0");
                assert_eq!(be(&ctl.pac(&mut e, &p), 12), 0);
            }
            (true, _) => {
                ctl.pns(&mut e, &p);
            }
            (false, _) => {
                ctl.pac(&mut e, &p);
            }
        }
    }
    assert!(types.contains(&(false, 13)), "{types:?}");
    assert_eq!(e.shared().pptp.calls_in_progress(), 0, "the CDN ended the call");
    assert_eq!(e.shared().pptp.stats.calls_torn_down.get(), 1);
}

#[test]
fn invalid_policy_log_passes_and_stops_inspecting() {
    let mut cfg = EngineConfig::example();
    cfg.pptp.on_invalid = xgw_dataplane::config::InvalidPolicy::Log;
    let mut e = engine_with(cfg);
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let mut bad = build(MsgType::Ocrq, &[(12, 1)]);
    bad[4] = 0;
    let out = ctl.pns(&mut e, &bad);
    assert_eq!(out, bad, "passed untouched");
    assert_eq!(e.shared().pptp.stats.truncated_pns_message.get(), 1);
    // that direction is no longer inspected
    let out = ctl.pns(&mut e, &build(MsgType::Ocrq, &[(12, 2)]));
    assert_eq!(be(&out, 12), 2);
}

#[test]
fn invalid_policy_reset_turns_the_segment_into_a_reset() {
    let mut cfg = EngineConfig::example();
    cfg.pptp.on_invalid = xgw_dataplane::config::InvalidPolicy::Reset;
    let mut e = engine_with(cfg);
    let (mut ctl, x) = established_call(&mut e);
    let mut bad = build(MsgType::Wen, &[(12, 1)]);
    bad[1] = 0;
    let mut f = seg(S, P, 1723, ctl.pport, ctl.seq_s, ctl.seq_c, ACK | PSH, &bad);
    assert_eq!(run(&mut e, &mut f, OUTSIDE, 50), Verdict::Forward(INSIDE));
    assert_checksums(&f);
    assert_eq!(f[14 + 20 + 13] & RST, RST, "a reset");
    assert!(tcp_payload(&f).is_empty());
    assert_eq!(e.shared().pptp.calls_in_progress(), 0, "the session and its calls are gone");
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    let _ = &mut ctl;
}

#[test]
fn pptp_gre_with_call_id_zero_never_matches_a_gre_v0_tunnel() {
    // found by the gre fuzz target: C2's GRE v0 tunnel to S must not catch PPTP GRE keyed 0
    let mut e = engine();
    let v0 = [0u8; 12];
    let mut t = raw_ip(C2, S, 47, &v0);
    assert_eq!(run(&mut e, &mut t, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_eq!(gre(&mut e, S, P, 0, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
}
