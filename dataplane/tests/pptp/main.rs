//! PPTP inspection scenarios (../shared/pptp-alg.md §6): control connections and GRE
//! through the engine, bytes and counters asserted.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

#[path = "../common/mod.rs"]
mod common;
mod edges;
mod helpers;
mod lifecycle;
mod model;
mod real;

use std::net::Ipv4Addr;

use common::*;
use helpers::*;
use xgw_dataplane::alg::pptp::msg::{build, MsgType};
use xgw_dataplane::config::PortForward;
use xgw_dataplane::wire::gre;
use xgw_dataplane::{DropReason, Engine, EngineConfig, Time, Verdict};

#[test]
fn one_outgoing_call_translates_ids_and_gre_both_ways() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let x = ctl.ocrq(&mut e, 0x0007);
    assert_ne!(x, 0, "translated IDs come from 1..65535");
    assert_eq!(ctl.ocrp(&mut e, 0x00aa, x, 1), 0x0007, "peer Call ID restored");
    // outbound GRE carries the PAC's ID: only the source address changes
    assert_eq!(gre(&mut e, C1, S, 0x00aa, true), (Verdict::Forward(OUTSIDE), P.into(), S.into(), 0x00aa));
    // inbound GRE carries the translated ID: inside host and original ID restored
    assert_eq!(gre(&mut e, S, P, x, false), (Verdict::Forward(INSIDE), S.into(), C1.into(), 0x0007));
    assert_eq!(e.shared().pptp.stats.calls_created.get(), 1);
    assert_eq!(e.shared().pptp.calls_in_progress(), 1);
}

#[test]
fn two_clients_same_call_id_same_server_never_cross() {
    let mut e = engine();
    let mut a = Ctl::open(&mut e, C1, 40001, S);
    let mut b = Ctl::open(&mut e, C2, 40001, S);
    let xa = a.ocrq(&mut e, 0);
    let xb = b.ocrq(&mut e, 0);
    assert_ne!(xa, xb, "distinct translated IDs");
    assert_eq!(a.ocrp(&mut e, 0, xa, 1), 0);
    assert_eq!(b.ocrp(&mut e, 128, xb, 1), 0);
    assert_eq!(gre(&mut e, S, P, xa, false).2, Ipv4Addr::from(C1));
    assert_eq!(gre(&mut e, S, P, xb, false).2, Ipv4Addr::from(C2));
    assert_eq!(gre(&mut e, C1, S, 0, true).0, Verdict::Forward(OUTSIDE));
    assert_eq!(gre(&mut e, C2, S, 128, true).0, Verdict::Forward(OUTSIDE));
}

#[test]
fn with_port_blocks_a_translated_call_id_is_a_port_of_its_hosts_block() {
    let mut cfg = EngineConfig::example();
    cfg.nat.port_range = (1024, 2047);
    cfg.nat.host_ports = None;
    cfg.nat.blocks =
        Some(xgw_dataplane::config::BlockConfig { per_host: 2, ..xgw_dataplane::config::BlockConfig::new(256) });
    let mut e = engine_with(cfg);
    let blocks = std::sync::Arc::clone(e.shared().blocks.as_ref().expect("blocks"));
    let mut ids = Vec::new();
    for (i, c) in [C1, C2].into_iter().enumerate() {
        for n in 0..3u16 {
            let mut ctl = Ctl::open(&mut e, c, 40_001 + n, S);
            let x = ctl.ocrq(&mut e, 0x0100);
            // the host's block: the one its control connections' ports are in
            let (_, _, lo, hi, _, _) =
                blocks.list().into_iter().find(|b| b.0 == u32::from_be_bytes(c)).expect("a block");
            assert!((lo..=hi).contains(&x), "client {i} call {n}: ID {x:#x} outside its block {lo}-{hi}");
            assert!((lo..=hi).contains(&ctl.pport), "its control connection's port too");
            assert_eq!(ctl.ocrp(&mut e, 0x4000 + n, x, 1), 0x0100);
            ids.push(x);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "six calls of one Call ID towards one server, six translated IDs");
}

#[test]
fn two_hundred_clients_overlapping_ids_zero_misdeliveries() {
    let mut cfg = EngineConfig::example();
    cfg.ifaces[0].prefix_len = 16;
    let mut e = engine_with(cfg);
    let mut calls = Vec::new();
    let mut rnd = 12345u32;
    for i in 0..200u32 {
        rnd = rnd.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let id = (rnd >> 16) as u16 % 8; // heavy overlap
        let c = [10, 0, (i / 200) as u8 + 1, (i % 200) as u8 + 2];
        let mut ctl = Ctl::open(&mut e, c, 40000 + i as u16, S);
        let x = ctl.ocrq(&mut e, id);
        assert_eq!(ctl.ocrp(&mut e, i as u16 * 3, x, 1), id);
        calls.push((c, id, x, i as u16 * 3));
    }
    let mut xs: Vec<u16> = calls.iter().map(|c| c.2).collect();
    xs.sort_unstable();
    xs.dedup();
    assert_eq!(xs.len(), 200, "every call has its own translated ID");
    for round in 0..1000 {
        for &(c, id, x, pac) in &calls {
            let (v, _, dst, key) = gre(&mut e, S, P, x, false);
            assert_eq!((v, dst, key), (Verdict::Forward(INSIDE), Ipv4Addr::from(c), id), "round {round}");
            if round % 100 == 0 {
                assert_eq!(gre(&mut e, c, S, pac, true).3, pac);
            }
        }
    }
}

#[test]
fn two_calls_on_one_connection_clearing_one_keeps_the_other() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let x1 = ctl.ocrq(&mut e, 1);
    let x2 = ctl.ocrq(&mut e, 2);
    assert_ne!(x1 >> 8, x2 >> 8, "high bytes unique per connection");
    ctl.ocrp(&mut e, 100, x1, 1);
    ctl.ocrp(&mut e, 200, x2, 1);
    // CCRQ translated, CDN (PAC's ID) untouched, the call's GRE gone
    let out = ctl.pns(&mut e, &build(MsgType::Ccrq, &[(12, 1)]));
    assert_eq!(be(&out, 12), x1);
    let cdn = ctl.pac(&mut e, &build(MsgType::Cdn, &[(12, 100)]));
    assert_eq!(be(&cdn, 12), 100);
    assert_eq!(gre(&mut e, S, P, x1, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    assert_eq!(gre(&mut e, S, P, x2, false), (Verdict::Forward(INSIDE), S.into(), C1.into(), 2));
    assert_eq!(e.shared().pptp.calls_in_progress(), 1);
}

#[test]
fn retransmitted_ocrq_gets_the_same_id_once() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let m = build(MsgType::Ocrq, &[(12, 9)]);
    let seq = ctl.seq_c;
    let x = be(&ctl.pns(&mut e, &m), 12);
    let (v, again) = ctl.pns_raw(&mut e, seq, &m, ACK | PSH);
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    assert_eq!(be(&again, 12), x, "a retransmission is rewritten identically");
    assert_eq!(e.shared().pptp.pool_in_use(u32::from_be_bytes(P), u32::from_be_bytes(S)), 1, "one allocation");
}

#[test]
fn ocrq_split_anywhere_even_inside_the_call_id() {
    for cut in [14usize, 13, 1, 12, 100, 167] {
        let mut e = engine();
        let mut ctl = Ctl::open(&mut e, C1, 40001, S);
        let m = build(MsgType::Ocrq, &[(12, 0x1234)]);
        let a = ctl.pns(&mut e, &m[..cut]);
        let b = ctl.pns(&mut e, &m[cut..]);
        let whole = [a, b].concat();
        let x = be(&whole, 12);
        assert_ne!(x, 0, "cut {cut}");
        assert_eq!(&whole[..12], &m[..12], "cut {cut}");
        assert_eq!(&whole[14..], &m[14..], "cut {cut}");
        // the OCRP split inside the peer ID is restored too
        let mut r = build(MsgType::Ocrp, &[(12, 77), (14, x)]);
        r[16] = 1;
        let ra = ctl.pac(&mut e, &r[..15]);
        let rb = ctl.pac(&mut e, &r[15..]);
        let back = [ra, rb].concat();
        assert_eq!(be(&back, 14), 0x1234, "cut {cut}");
        assert_eq!(gre(&mut e, S, P, x, false).3, 0x1234, "cut {cut}");
    }
}

#[test]
fn coalesced_messages_are_all_handled() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let mut seg1 = build(MsgType::EchoRq, &[]);
    seg1.extend(build(MsgType::Ocrq, &[(12, 5)]));
    let out = ctl.pns(&mut e, &seg1);
    let x = be(&out, 16 + 12);
    assert_ne!(x, 5);
    ctl.ocrp(&mut e, 50, x, 1);
    let mut seg2 = build(MsgType::Sli, &[(12, 50)]);
    seg2.extend(build(MsgType::Ccrq, &[(12, 5)]));
    let out = ctl.pns(&mut e, &seg2);
    assert_eq!(be(&out, 12), 50, "outbound SLI carries the PAC's ID: untouched");
    assert_eq!(be(&out, 24 + 12), x, "CCRQ behind it translated");
}

#[test]
fn server_gre_before_client_gre_is_delivered() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let x = ctl.ocrq(&mut e, 3);
    ctl.ocrp(&mut e, 30, x, 1);
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Forward(INSIDE));
}

#[test]
fn cdn_leaves_the_pac_id_and_gre_is_gone_at_once() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let x = ctl.ocrq(&mut e, 3);
    ctl.ocrp(&mut e, 30, x, 1);
    let out = ctl.pac(&mut e, &build(MsgType::Cdn, &[(12, 30)]));
    assert_eq!(be(&out, 12), 30);
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    assert_eq!(gre(&mut e, C1, S, 30, true).0, Verdict::Drop(DropReason::NoMatchingGreSession));
}

#[test]
fn cdn_quirks_translated_id_restored_and_rras_zero() {
    // a CDN naming the translated PNS ID gets it restored
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let x = ctl.ocrq(&mut e, 0);
    ctl.ocrp(&mut e, 11755, x, 1);
    let out = ctl.pac(&mut e, &build(MsgType::Cdn, &[(12, x)]));
    assert_eq!(be(&out, 12), 0);
    assert_eq!(e.shared().pptp.calls_in_progress(), 0);
    // RRAS: the CDN carries 0, neither the PAC's ID nor the translated one; with one call on
    // the connection it is that call
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let x = ctl.ocrq(&mut e, 0);
    assert_ne!(x, 0);
    ctl.ocrp(&mut e, 11755, x, 1);
    let out = ctl.pac(&mut e, &build(MsgType::Cdn, &[(12, 0)]));
    assert_eq!(be(&out, 12), 0);
    assert_eq!(e.shared().pptp.calls_in_progress(), 0);
}

#[test]
fn wen_and_inbound_sli_get_the_peer_id_restored() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let x = ctl.ocrq(&mut e, 0x0102);
    ctl.ocrp(&mut e, 9, x, 1);
    assert_eq!(be(&ctl.pac(&mut e, &build(MsgType::Wen, &[(12, x)])), 12), 0x0102);
    assert_eq!(be(&ctl.pac(&mut e, &build(MsgType::Sli, &[(12, x)])), 12), 0x0102, "RRAS sends SLI as PAC");
}

#[test]
fn incoming_call_works_both_ways() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let icrq = ctl.pac(&mut e, &build(MsgType::Icrq, &[(12, 77)]));
    assert_eq!(be(&icrq, 12), 77);
    let mut icrp = build(MsgType::Icrp, &[(12, 5), (14, 77)]);
    icrp[16] = 1;
    let out = ctl.pns(&mut e, &icrp);
    let x = be(&out, 12);
    assert_ne!(x, 5);
    assert_eq!(be(&out, 14), 77);
    let iccn = ctl.pac(&mut e, &build(MsgType::Iccn, &[(12, x)]));
    assert_eq!(be(&iccn, 12), 5);
    assert_eq!(gre(&mut e, S, P, x, false), (Verdict::Forward(INSIDE), S.into(), C1.into(), 5));
    assert_eq!(gre(&mut e, C1, S, 77, true).0, Verdict::Forward(OUTSIDE));
}

#[test]
fn failed_ocrp_opens_nothing_and_releases_the_id() {
    let mut e = engine();
    let mut ctl = Ctl::open(&mut e, C1, 40001, S);
    let x = ctl.ocrq(&mut e, 4);
    assert_eq!(ctl.ocrp(&mut e, 40, x, 4), 4, "busy");
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    assert_eq!(e.shared().pptp.calls_in_progress(), 0);
    let (p, s) = (u32::from_be_bytes(P), u32::from_be_bytes(S));
    assert_eq!(e.shared().pptp.pool_in_use(p, s), 1, "in quarantine");
    e.shared().sweep(Time::from_secs(100), usize::MAX);
    assert_eq!(e.shared().pptp.pool_in_use(p, s), 0, "released after quarantine");
}
