//! Frames from senders with transmit checksum offload (a veth, tap or virtio neighbour at its
//! defaults): their TCP/UDP checksum holds only the pseudo-header sum. The engine finishes
//! it before translating, so what it forwards verifies — for TCP with and without payload,
//! UDP, a PPTP control conversation whose Call IDs it rewrites, and the ICMP errors it
//! builds about such packets.

mod common;

use common::*;
use xgw_dataplane::alg::pptp::msg::{build, MsgType};
use xgw_dataplane::{Engine, Verdict};

fn completed(e: &Engine) -> u64 {
    e.counters().traffic.l4_csum_completed.get()
}

#[test]
fn partial_tcp_without_and_with_payload_leaves_with_full_checksums_both_ways() {
    let mut e = engine();
    let mut syn = tcp(C1, S, 40000, 443, "S", b"");
    make_partial(&mut syn);
    assert_eq!(run(&mut e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&syn);
    assert_eq!(completed(&e), 1);
    let pport = tuple(&syn).sport;

    let mut sa = tcp(S, P, 443, pport, "SA", b"");
    make_partial(&mut sa);
    assert_eq!(run(&mut e, &mut sa, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_checksums(&sa);

    for (i, len) in [1usize, 2, 3, 100, 1399, 1400].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        let mut out = tcp(C1, S, 40000, 443, "AP", &data);
        make_partial(&mut out);
        assert_eq!(run(&mut e, &mut out, INSIDE, 2 + i as u64), Verdict::Forward(OUTSIDE));
        assert_checksums(&out);
        let mut back = tcp(S, P, 443, pport, "AP", &data);
        make_partial(&mut back);
        assert_eq!(run(&mut e, &mut back, OUTSIDE, 2 + i as u64), Verdict::Forward(INSIDE));
        assert_checksums(&back);
    }
    assert_eq!(completed(&e), 2 + 12);
}

#[test]
fn full_checksums_are_left_alone_and_not_counted() {
    let mut e = engine();
    let mut syn = tcp(C1, S, 40000, 443, "S", b"");
    assert_eq!(run(&mut e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&syn);
    let mut u = udp(C1, S, 5000, 53, b"query");
    assert_eq!(run(&mut e, &mut u, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&u);
    assert_eq!(completed(&e), 0);
}

#[test]
fn partial_udp_both_ways_and_udp_without_checksum_stays_without() {
    let mut e = engine();
    let mut q = udp(C1, S, 5000, 500, b"ike sa init");
    make_partial(&mut q);
    assert_eq!(run(&mut e, &mut q, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&q);
    let pport = tuple(&q).sport;
    let mut r = udp(S, P, 500, pport, b"ike sa init reply");
    make_partial(&mut r);
    assert_eq!(run(&mut e, &mut r, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_checksums(&r);
    assert_eq!(completed(&e), 2);

    let mut none = udp(C1, S, 5000, 500, b"no checksum");
    none[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    assert_eq!(run(&mut e, &mut none, INSIDE, 2), Verdict::Forward(OUTSIDE));
    assert_eq!(&none[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
    assert_eq!(completed(&e), 2);
}

/// One side of a PPTP control connection whose every segment is partial.
struct Side {
    seq_c: u32,
    seq_s: u32,
    pport: u16,
}

impl Side {
    fn pns(&mut self, e: &mut Engine, data: &[u8], t: u64) -> Vec<u8> {
        let mut f = tcp_seq(C1, S, 40001, 1723, self.seq_c, self.seq_s, "AP", data);
        make_partial(&mut f);
        assert_eq!(run(e, &mut f, INSIDE, t), Verdict::Forward(OUTSIDE));
        assert_checksums(&f);
        self.seq_c += data.len() as u32;
        f[14 + 20 + 20..].to_vec()
    }

    fn pac(&mut self, e: &mut Engine, data: &[u8], t: u64) -> Vec<u8> {
        let mut f = tcp_seq(S, P, 1723, self.pport, self.seq_s, self.seq_c, "AP", data);
        make_partial(&mut f);
        assert_eq!(run(e, &mut f, OUTSIDE, t), Verdict::Forward(INSIDE));
        assert_checksums(&f);
        self.seq_s += data.len() as u32;
        f[14 + 20 + 20..].to_vec()
    }
}

#[test]
fn partial_pptp_control_segments_have_their_call_ids_rewritten_with_valid_checksums() {
    let mut e = engine();
    let mut syn = tcp_seq(C1, S, 40001, 1723, 1000, 0, "S", b"");
    make_partial(&mut syn);
    assert_eq!(run(&mut e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&syn);
    let pport = tuple(&syn).sport;
    let mut sa = tcp_seq(S, P, 1723, pport, 5000, 1001, "SA", b"");
    make_partial(&mut sa);
    assert_eq!(run(&mut e, &mut sa, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_checksums(&sa);
    let mut side = Side { seq_c: 1001, seq_s: 5001, pport };
    side.pns(&mut e, &build(MsgType::Sccrq, &[(12, 0x0100)]), 2);
    let mut sccrp = build(MsgType::Sccrp, &[(12, 0x0100)]);
    sccrp[14] = 1;
    side.pac(&mut e, &sccrp, 3);
    // the Outgoing-Call-Request's Call ID (offset 12) is rewritten in a partial segment
    let ocrq = side.pns(&mut e, &build(MsgType::Ocrq, &[(12, 0x4242)]), 4);
    let translated = u16::from_be_bytes([ocrq[12], ocrq[13]]);
    // the reply names the translated ID and reaches the client with its own ID
    let mut ocrp = build(MsgType::Ocrp, &[(12, 0x0080), (14, translated)]);
    ocrp[16] = 1; // connected
    let ocrp = side.pac(&mut e, &ocrp, 5);
    assert_eq!(u16::from_be_bytes([ocrp[14], ocrp[15]]), 0x4242);
    assert_eq!(completed(&e), 6);
    assert_eq!(e.shared().pptp.calls_in_progress(), 1, "the call was built");
}

#[test]
fn time_exceeded_about_a_partial_packet_quotes_the_finished_checksum() {
    let mut e = engine();
    let mut f = tcp_ttl(C1, S, 40000, 443, "S", b"", 1);
    let good = f.clone();
    make_partial(&mut f);
    assert_eq!(run(&mut e, &mut f, INSIDE, 0), Verdict::Forward(INSIDE));
    assert_checksums(&f);
    // ICMP header (8) then the quoted IP header (20) and TCP header: checksum at 16
    let q = 14 + 20 + 8 + 20 + 16;
    assert_eq!(&f[q..q + 2], &good[14 + 20 + 16..14 + 20 + 18], "quote carries the finished checksum");
}
