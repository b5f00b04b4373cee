//! PPTP inspection scenarios (../shared/pptp-alg.md §6): control connections and GRE
//! through the engine, bytes and counters asserted.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

mod common;

use std::net::Ipv4Addr;

use common::*;
use xgw_dataplane::alg::pptp::msg::{build, MsgType};
use xgw_dataplane::config::PortForward;
use xgw_dataplane::wire::gre;
use xgw_dataplane::{DropReason, Engine, EngineConfig, Time, Verdict};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

/// A TCP segment; `ack` is the acknowledgement number, sent when `flags` has ACK.
#[expect(clippy::too_many_arguments, reason = "every TCP header field a test sets")]
fn seg(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let letters: String = [(SYN, 'S'), (ACK, 'A'), (FIN, 'F'), (RST, 'R'), (PSH, 'P')]
        .into_iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| c)
        .collect();
    tcp_seq(src, dst, sport, dport, seq, ack, &letters, payload)
}

fn tcp_payload(frame: &[u8]) -> Vec<u8> {
    let thl = usize::from(frame[14 + 20 + 12] >> 4) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    frame[14 + 20 + thl..14 + total].to_vec()
}

fn be(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

/// One PPTP control connection from inside host `c` to server `s`, through the engine.
struct Ctl {
    c: [u8; 4],
    s: [u8; 4],
    sport: u16,
    pport: u16,
    seq_c: u32,
    seq_s: u32,
    t: u64,
}

impl Ctl {
    fn open(e: &mut Engine, c: [u8; 4], sport: u16, s: [u8; 4]) -> Ctl {
        let mut syn = seg(c, s, sport, 1723, 1000, 0, SYN, b"");
        assert_eq!(run(e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
        let pport = tuple(&syn).sport;
        let mut sa = seg(s, P, 1723, pport, 5000, 1001, SYN | ACK, b"");
        assert_eq!(run(e, &mut sa, OUTSIDE, 1), Verdict::Forward(INSIDE));
        let mut ack = seg(c, s, sport, 1723, 1001, 5001, ACK, b"");
        assert_eq!(run(e, &mut ack, INSIDE, 2), Verdict::Forward(OUTSIDE));
        let mut ctl = Ctl { c, s, sport, pport, seq_c: 1001, seq_s: 5001, t: 3 };
        let out = ctl.pns(e, &build(MsgType::Sccrq, &[(12, 0x0100)]));
        assert_eq!(out.len(), 156);
        let mut sccrp = build(MsgType::Sccrp, &[(12, 0x0100)]);
        sccrp[14] = 1;
        ctl.pac(e, &sccrp);
        ctl
    }

    /// Sends PNS → PAC bytes at the current sequence number; returns what leaves outside.
    fn pns(&mut self, e: &mut Engine, data: &[u8]) -> Vec<u8> {
        let (v, out) = self.pns_raw(e, self.seq_c, data, ACK | PSH);
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        self.seq_c = self.seq_c.wrapping_add(data.len() as u32);
        out
    }

    fn pns_raw(&mut self, e: &mut Engine, seq: u32, data: &[u8], flags: u8) -> (Verdict, Vec<u8>) {
        let mut f = seg(self.c, self.s, self.sport, 1723, seq, self.seq_s, flags, data);
        self.t += 1;
        let v = run(e, &mut f, INSIDE, self.t);
        if v == Verdict::Forward(OUTSIDE) {
            assert_checksums(&f);
            let tu = tuple(&f);
            assert_eq!((tu.src, tu.sport), (Ipv4Addr::from(P), self.pport));
        }
        (v, tcp_payload(&f))
    }

    /// Sends PAC → PNS bytes; returns what reaches the inside host.
    fn pac(&mut self, e: &mut Engine, data: &[u8]) -> Vec<u8> {
        let (v, out) = self.pac_raw(e, self.seq_s, data, ACK | PSH);
        assert_eq!(v, Verdict::Forward(INSIDE));
        self.seq_s = self.seq_s.wrapping_add(data.len() as u32);
        out
    }

    fn pac_raw(&mut self, e: &mut Engine, seq: u32, data: &[u8], flags: u8) -> (Verdict, Vec<u8>) {
        let mut f = seg(self.s, P, 1723, self.pport, seq, self.seq_c, flags, data);
        self.t += 1;
        let v = run(e, &mut f, OUTSIDE, self.t);
        if v == Verdict::Forward(INSIDE) {
            assert_checksums(&f);
            assert_eq!(tuple(&f).dst, Ipv4Addr::from(self.c));
        }
        (v, tcp_payload(&f))
    }

    /// OCRQ with `id`; returns the translated ID the PAC sees.
    fn ocrq(&mut self, e: &mut Engine, id: u16) -> u16 {
        let out = self.pns(e, &build(MsgType::Ocrq, &[(12, id)]));
        be(&out, 12)
    }

    /// OCRP from the PAC for translated ID `xlat` with PAC ID `pac`; returns the peer ID
    /// the inside host sees.
    fn ocrp(&mut self, e: &mut Engine, pac: u16, xlat: u16, result: u8) -> u16 {
        let mut m = build(MsgType::Ocrp, &[(12, pac), (14, xlat)]);
        m[16] = result;
        let got = self.pac(e, &m);
        assert_eq!(be(&got, 12), pac, "the PAC's own Call ID is never touched");
        be(&got, 14)
    }
}

fn gre_frame(src: [u8; 4], dst: [u8; 4], key: u16, token: &[u8]) -> Vec<u8> {
    let mut g = [0u8; 16];
    let n = gre::emit_pptp(&mut g, key, Some(1), None, token.len() as u16);
    let mut payload = g[..n].to_vec();
    payload.extend_from_slice(token);
    raw_ip(src, dst, 47, &payload)
}

/// Sends GRE; returns (verdict, destination, key) of what leaves.
fn gre(e: &mut Engine, src: [u8; 4], dst: [u8; 4], key: u16, from_inside: bool) -> (Verdict, Ipv4Addr, Ipv4Addr, u16) {
    let mut f = gre_frame(src, dst, key, b"token");
    let v = run(e, &mut f, if from_inside { INSIDE } else { OUTSIDE }, 10);
    assert!(sums_to_ones(&f[14..34], 0), "IP checksum");
    let t = tuple(&f);
    (v, t.src, t.dst, be(&f, 14 + 20 + 6))
}

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

fn established_call(e: &mut Engine) -> (Ctl, u16) {
    let mut ctl = Ctl::open(e, C1, 40001, S);
    let x = ctl.ocrq(e, 4);
    ctl.ocrp(e, 40, x, 1);
    (ctl, x)
}

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

/// A fast path that only counts the calls made to it (each would be a bpf() syscall).
#[derive(Default)]
struct CountingFastPath(std::sync::atomic::AtomicUsize);

impl xgw_dataplane::conntrack::offload::FastPath for CountingFastPath {
    fn refresh(&self, _: &mut xgw_dataplane::conntrack::Flow) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn withdraw(&self, _: &mut xgw_dataplane::conntrack::Flow) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

fn established_call2(e: &mut Engine) -> (Ctl, u16) {
    let mut ctl = Ctl::open(e, C2, 40002, S);
    let x = ctl.ocrq(e, 4);
    ctl.ocrp(e, 41, x, 1);
    (ctl, x)
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

/// A capture's control payloads (from the PNS?, bytes) and its GRE payloads, in order.
type CaptureParts = (Vec<(bool, Vec<u8>)>, Vec<Vec<u8>>);

fn capture_parts(name: &str, pns: [u8; 4]) -> CaptureParts {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/captures").join(name);
    let recs = xgw_dataplane::replay::read_capture(std::fs::File::open(path).expect("fixture"), name).expect("read");
    let (mut ctl, mut gres) = (Vec::new(), Vec::new());
    let mut seen: std::collections::HashSet<(bool, u32)> = std::collections::HashSet::new();
    for r in recs {
        let f = &r.frame;
        if f.len() < 34 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let from_pns = f[26..30] == pns;
        match f[23] {
            6 => {
                let p = tcp_payload(f);
                let seq = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
                // the captures hold exact duplicates (pptpd answered twice): keep one
                if !p.is_empty() && seen.insert((from_pns, seq)) {
                    ctl.push((from_pns, p));
                }
            }
            47 => gres.push(f[14 + 20..].to_vec()),
            _ => {}
        }
    }
    (ctl, gres)
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

mod model {
    //! Random interleavings of calls from several clients against a reference model:
    //! no GRE reaches the wrong inside host, no pinhole outlives its call, the pool never
    //! hands out an ID that is live.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// client, its call ID, where to cut the OCRQ (0 = whole)
        Ocrq(usize, u16, usize),
        /// client, which of its calls (index mod count), accept?
        Ocrp(usize, usize, bool),
        Cdn(usize, usize),
        Ccrq(usize, usize),
        GreIn(usize, usize),
        GreOut(usize, usize),
        /// a GRE packet with a random key from the server
        Stray(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, 0..4u16, prop_oneof![Just(0usize), 1..168usize]).prop_map(|(c, id, cut)| Op::Ocrq(c, id, cut)),
            (0..3usize, 0..4usize, proptest::bool::weighted(0.8)).prop_map(|(c, i, ok)| Op::Ocrp(c, i, ok)),
            (0..3usize, 0..4usize).prop_map(|(c, i)| Op::Cdn(c, i)),
            (0..3usize, 0..4usize).prop_map(|(c, i)| Op::Ccrq(c, i)),
            (0..3usize, 0..4usize).prop_map(|(c, i)| Op::GreIn(c, i)),
            (0..3usize, 0..4usize).prop_map(|(c, i)| Op::GreOut(c, i)),
            any::<u16>().prop_map(Op::Stray),
        ]
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum St {
        Requested,
        Up(u16),
    }

    /// What the model knows of one call: the client's ID, the ID the server saw, state.
    #[derive(Debug, Clone)]
    struct MCall {
        pns: u16,
        xlat: u16,
        st: St,
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn inspector_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut e = engine();
            let hosts = [C1, C2, [10, 0, 0, 7]];
            let mut ctls: Vec<Ctl> = hosts.iter().enumerate().map(|(i, h)| Ctl::open(&mut e, *h, 41000 + i as u16, S)).collect();
            let mut model: Vec<Vec<MCall>> = vec![Vec::new(); 3];
            let mut next_pac = 1u16;
            for o in ops {
                match o {
                    Op::Ocrq(c, id, cut) => {
                        if model[c].iter().any(|m| m.pns == id) {
                            continue; // a client never reuses a live Call ID
                        }
                        let m = build(MsgType::Ocrq, &[(12, id)]);
                        let out = if cut == 0 {
                            ctls[c].pns(&mut e, &m)
                        } else {
                            let a = ctls[c].pns(&mut e, &m[..cut]);
                            [a, ctls[c].pns(&mut e, &m[cut..])].concat()
                        };
                        let x = be(&out, 12);
                        // the pool never hands out an ID that is live towards this server
                        prop_assert!(model.iter().flatten().all(|m| m.xlat != x), "xlat {x} reused");
                        model[c].push(MCall { pns: id, xlat: x, st: St::Requested });
                    }
                    Op::Ocrp(c, i, ok) => {
                        let req: Vec<usize> = (0..model[c].len()).filter(|&j| model[c][j].st == St::Requested).collect();
                        if req.is_empty() { continue; }
                        let j = req[i % req.len()];
                        let pac = next_pac;
                        next_pac += 1;
                        let peer = ctls[c].ocrp(&mut e, pac, model[c][j].xlat, if ok { 1 } else { 3 });
                        prop_assert_eq!(peer, model[c][j].pns);
                        if ok { model[c][j].st = St::Up(pac); } else { model[c].remove(j); }
                    }
                    Op::Cdn(c, i) | Op::Ccrq(c, i) => {
                        let up: Vec<usize> = (0..model[c].len()).filter(|&j| matches!(model[c][j].st, St::Up(_))).collect();
                        if up.is_empty() { continue; }
                        let j = up[i % up.len()];
                        let St::Up(pac) = model[c][j].st else { continue };
                        if matches!(o, Op::Ccrq(..)) {
                            let out = ctls[c].pns(&mut e, &build(MsgType::Ccrq, &[(12, model[c][j].pns)]));
                            prop_assert_eq!(be(&out, 12), model[c][j].xlat);
                        } else {
                            ctls[c].pac(&mut e, &build(MsgType::Cdn, &[(12, pac)]));
                            model[c].remove(j);
                        }
                    }
                    Op::GreIn(c, i) => {
                        if model[c].is_empty() { continue; }
                        let m = model[c][i % model[c].len()].clone();
                        let (v, _, dst, key) = gre(&mut e, S, P, m.xlat, false);
                        match m.st {
                            St::Up(_) => prop_assert_eq!((v, dst, key), (Verdict::Forward(INSIDE), Ipv4Addr::from(hosts[c]), m.pns)),
                            St::Requested => prop_assert_eq!(v, Verdict::Drop(DropReason::NoMatchingGreSession)),
                        }
                    }
                    Op::GreOut(c, i) => {
                        if model[c].is_empty() { continue; }
                        let m = model[c][i % model[c].len()].clone();
                        if let St::Up(pac) = m.st {
                            let (v, src, _, key) = gre(&mut e, hosts[c], S, pac, true);
                            prop_assert_eq!((v, src, key), (Verdict::Forward(OUTSIDE), Ipv4Addr::from(P), pac));
                        }
                    }
                    Op::Stray(k) => {
                        let owner: Vec<(usize, u16)> = model.iter().enumerate()
                            .flat_map(|(c, v)| v.iter().filter(|m| matches!(m.st, St::Up(_)) && m.xlat == k).map(move |m| (c, m.pns)))
                            .collect();
                        let (v, _, dst, key) = gre(&mut e, S, P, k, false);
                        match owner.as_slice() {
                            [(c, pns)] => prop_assert_eq!((v, dst, key), (Verdict::Forward(INSIDE), Ipv4Addr::from(hosts[*c]), *pns)),
                            [] => prop_assert_eq!(v, Verdict::Drop(DropReason::NoMatchingGreSession)),
                            _ => prop_assert!(false, "two live calls share a translated ID"),
                        }
                    }
                }
                let live: usize = model.iter().flatten().filter(|m| matches!(m.st, St::Up(_))).count();
                prop_assert_eq!(e.shared().pptp.calls_in_progress(), live);
            }
            // every control connection ends: no pinhole outlives its call
            let live: Vec<(u16, u16)> = model.iter().flatten().map(|m| (m.xlat, m.pns)).collect();
            for ctl in &mut ctls {
                let (v, _) = ctl.pns_raw(&mut e, ctl.seq_c, b"", RST | ACK);
                prop_assert_eq!(v, Verdict::Forward(OUTSIDE));
            }
            e.shared().sweep(Time::from_secs(3600), usize::MAX);
            for (x, _) in live {
                prop_assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
            }
            prop_assert_eq!(e.shared().pptp.calls_in_progress(), 0);
            e.shared().sweep(Time::from_secs(7200), usize::MAX);
            prop_assert_eq!(e.shared().pptp.pool_in_use(u32::from_be_bytes(P), u32::from_be_bytes(S)), 0);
        }
    }
}

#[test]
fn icmp_frag_needed_quoting_gre_reaches_the_pptp_client() {
    // scenario 33: a router beyond the gateway refuses an outbound GRE packet (DF, too big)
    let mut e = engine();
    let (_ctl, _x) = established_call(&mut e);
    let mut g = gre_frame(C1, S, 40, b"a large PPP frame");
    assert_eq!(run(&mut e, &mut g, INSIDE, 20), Verdict::Forward(OUTSIDE));
    // the quote: the packet as it left (source P, key = the PAC's ID 40)
    let router = [192, 0, 2, 254];
    let mut err = icmp_error(router, P, 3, 4, 1400, &g);
    assert_eq!(run(&mut e, &mut err, OUTSIDE, 21), Verdict::Forward(INSIDE));
    assert_checksums(&err);
    assert_eq!(tuple(&err).dst, Ipv4Addr::from(C1), "the error reaches the PPTP client");
    let quote = &err[14 + 28..];
    assert_eq!(&quote[12..16], &C1, "the quote shows the client's own address");
    assert_eq!(be(quote, 20 + 6), 40, "the quoted key (the PAC's ID) is untouched");
    assert!(sums_to_ones(&quote[..20], 0));
}

#[test]
fn icmp_errors_from_an_inside_router_about_gre_leave_with_the_outside_address() {
    // a router between the gateway and the PPTP client cannot deliver the server's GRE
    // (frag-needed, host-unreachable, time-exceeded): the error goes to the server from P,
    // its quote shows the packet as the server sent it (to P, with the translated Call ID)
    for (typ, code) in [(3u8, 4u8), (3, 1), (11, 0)] {
        let mut e = engine();
        let (_ctl, x) = established_call(&mut e);
        let mut g = gre_frame(S, P, x, b"a large PPP frame");
        assert_eq!(run(&mut e, &mut g, OUTSIDE, 20), Verdict::Forward(INSIDE));
        assert_eq!(be(&g, 14 + 20 + 6), 4, "delivered with the client's own Call ID");
        let router = [10, 0, 0, 254];
        let mut err = icmp_error(router, S, typ, code, 1400, &g);
        assert_eq!(run(&mut e, &mut err, INSIDE, 21), Verdict::Forward(OUTSIDE), "{typ}/{code}");
        assert_checksums(&err);
        let t = tuple(&err);
        assert_eq!((t.src, t.dst), (Ipv4Addr::from(P), Ipv4Addr::from(S)), "no inside address leaves");
        let quote = &err[14 + 28..];
        assert_eq!((&quote[12..16], &quote[16..20]), (&S[..], &P[..]), "the quote as the server sent it");
        assert_eq!(be(quote, 20 + 6), x, "the quoted key is the translated Call ID again");
        assert!(sums_to_ones(&quote[..20], 0));
    }
}

#[test]
fn reload_that_denies_the_server_tears_the_call_down() {
    // scenario 37 at the engine: flows keep their verdict across a reload, and a reload that
    // tears down what the new policy refuses takes the call's GRE with its control connection
    use xgw_dataplane::policy::{Decision, NewFlow, Policy};
    #[derive(Debug)]
    struct DenyServer;
    impl Policy for DenyServer {
        fn check(&self, f: &NewFlow) -> Decision {
            if f.dst == u32::from_be_bytes(S) {
                Decision::Deny { rule: 9 }
            } else {
                Decision::Permit { rule: 0 }
            }
        }
    }
    let mut e = engine();
    let (_ctl, x) = established_call(&mut e);
    let r = e.shared().reload_policy(Box::new(DenyServer), false, Time::from_millis(30));
    assert_eq!((r.would_deny, r.killed), (1, 0), "the control connection would be refused; GRE is judged with it");
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Forward(INSIDE), "without --kill the call goes on");
    let r = e.shared().reload_policy(Box::new(DenyServer), true, Time::from_millis(31));
    assert_eq!(r.killed, 1);
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    assert_eq!(e.shared().pptp.calls_in_progress(), 0);
}

#[test]
fn fragmented_inbound_gre_follows_its_call() {
    // scenario 26: a large GRE packet from the server arrives in two fragments
    let mut e = engine();
    let (_ctl, x) = established_call(&mut e);
    let whole = gre_frame(S, P, x, &[0x55; 64]);
    let ip_len = whole.len() - 14;
    let mut first = whole[..14 + 20 + 32].to_vec();
    first[18..20].copy_from_slice(&[0xab, 0xcd]);
    first[20] = 0x20; // MF
    first[16..18].copy_from_slice(&52u16.to_be_bytes());
    let mut second = whole[..14 + 20].to_vec();
    second.extend_from_slice(&whole[14 + 20 + 32..14 + ip_len]);
    second[18..20].copy_from_slice(&[0xab, 0xcd]);
    second[20] = 0;
    second[21] = 4; // 32 bytes
    let tl = (second.len() - 14) as u16;
    second[16..18].copy_from_slice(&tl.to_be_bytes());
    for f in [&mut first, &mut second] {
        f[24] = 0;
        f[25] = 0;
        let mut s: u32 = 0;
        for c in f[14..34].chunks(2) {
            s += u32::from(c[0]) << 8 | u32::from(c[1]);
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = !(s as u16);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    assert_eq!(run(&mut e, &mut first, OUTSIDE, 40), Verdict::Forward(INSIDE));
    assert_eq!(&first[30..34], &C1);
    assert_eq!(be(&first, 14 + 20 + 6), 4, "key restored in the first fragment");
    assert_eq!(run(&mut e, &mut second, OUTSIDE, 41), Verdict::Forward(INSIDE));
    assert_eq!(&second[30..34], &C1, "the later fragment follows");
    assert!(sums_to_ones(&second[14..34], 0));
}
