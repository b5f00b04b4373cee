//! Engine scenarios for ICMP: queries translated like ports, errors about a flow's packets
//! translated inside out, the errors the gateway sends itself.

mod common;

use common::*;
use std::net::Ipv4Addr;
use xgw_dataplane::{DropReason, Verdict};

fn ip(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// An ICMP message of `typ` with `body` after its 8-byte header (identifier 7), checksummed.
fn icmp_msg(src: [u8; 4], dst: [u8; 4], typ: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![typ, 0, 0, 0, 0, 7, 0, 1];
    m.extend_from_slice(body);
    let mut sum = 0u32;
    for w in m.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    m[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    raw_ip(src, dst, 1, &m)
}

#[test]
fn a_timestamp_message_shorter_than_its_fixed_size_is_dropped_as_malformed() {
    // found by the scenario fuzzer's oracle: a 13-byte Timestamp Reply was translated and
    // forwarded although no receiver can parse it
    let mut e = engine();
    for (typ, body, ok) in [(13u8, &[0u8; 12][..], true), (13, &[0u8; 5][..], false), (14, &[0u8; 5][..], false)] {
        let mut f = icmp_msg(C1, S, typ, body);
        let v = run(&mut e, &mut f, INSIDE, 0);
        if ok {
            assert_eq!(v, Verdict::Forward(OUTSIDE), "type {typ}, {} bytes", 8 + body.len());
        } else {
            assert_eq!(v, Verdict::Drop(DropReason::IcmpMalformed), "type {typ}, {} bytes", 8 + body.len());
        }
    }
}

#[test]
fn icmp_echo_ids_translated_like_ports() {
    let mut e = engine();
    let mut a = echo(C1, S, 77, 1, false);
    let mut b = echo(C2, S, 77, 1, false);
    run(&mut e, &mut a, INSIDE, 0);
    run(&mut e, &mut b, INSIDE, 0);
    assert_checksums(&a);
    assert_checksums(&b);
    let (ia, ib) = (tuple(&a).sport, tuple(&b).sport);
    assert_ne!(ia, ib, "two hosts, same id, distinct outside ids");
    let mut rb = echo(S, P, ib, 1, true);
    assert_eq!(run(&mut e, &mut rb, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_checksums(&rb);
    assert_eq!((tuple(&rb).dst, tuple(&rb).sport), (ip(C2), 77));
    // an unsolicited echo reply creates nothing
    let mut stray = echo(S, P, 999, 1, true);
    assert_eq!(run(&mut e, &mut stray, OUTSIDE, 2), Verdict::Drop(DropReason::UnsolicitedInbound));
    // one with an id of the box's own range answers the box's own ping
    let mut own = echo(S, P, 40_000, 1, true);
    assert_eq!(run(&mut e, &mut own, OUTSIDE, 2), Verdict::ToHost, "to the gateway itself");
}

#[test]
fn icmp_frag_needed_is_translated_inside_out() {
    let mut e = engine();
    let mut syn = tcp(C1, S, 40000, 443, "S", b"");
    run(&mut e, &mut syn, INSIDE, 0);
    let router = [192, 0, 2, 254];
    let mut err = icmp_error(router, P, 3, 4, 1500, &syn);
    assert_eq!(run(&mut e, &mut err, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_checksums(&err);
    let t = tuple(&err);
    assert_eq!((t.src, t.dst), (ip(router), ip(C1)));
    // the quote now shows the packet as the inside host sent it
    let q = &err[14 + 20 + 8..];
    assert_eq!(&q[12..16], &C1);
    assert_eq!(&q[16..20], &S);
    assert_eq!(u16::from_be_bytes([q[20], q[21]]), 40000);
    assert!(sums_to_ones(&q[..20], 0), "quoted IP header checksum");
}

#[test]
fn icmp_error_quoting_udp_and_echo() {
    let mut e = engine();
    let mut u = udp(C1, S, 1000, 53, b"query");
    run(&mut e, &mut u, INSIDE, 0);
    let mut err = icmp_error(S, P, 3, 3, 1500, &u);
    assert_eq!(run(&mut e, &mut err, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_checksums(&err);
    assert_eq!(tuple(&err).src, ip(S), "an error from the remote end host keeps its address");

    let mut ping = echo(C1, S, 5, 1, false);
    run(&mut e, &mut ping, INSIDE, 0);
    let mut te = icmp_error([192, 0, 2, 9], P, 11, 0, 1500, &ping);
    assert_eq!(run(&mut e, &mut te, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_checksums(&te);
    let q = &te[14 + 28..];
    assert_eq!(u16::from_be_bytes([q[24], q[25]]), 5, "quoted echo id restored");

    let before = e.counters().drops(DropReason::IcmpErrorNoFlow);
    let mut orphan = icmp_error([192, 0, 2, 9], [10, 0, 0, 99], 3, 1, 1500, &tcp(P, S, 1, 2, "S", b""));
    assert_eq!(run(&mut e, &mut orphan, OUTSIDE, 2), Verdict::Drop(DropReason::IcmpErrorNoFlow));
    assert_eq!(e.counters().drops(DropReason::IcmpErrorNoFlow), before + 1);
}

#[test]
fn ttl_expiry_answers_with_time_exceeded() {
    let mut e = engine();
    let mut pkt = tcp_ttl(C1, S, 40000, 443, "S", b"", 1);
    let orig = pkt.clone();
    assert_eq!(run(&mut e, &mut pkt, INSIDE, 0), Verdict::Forward(INSIDE));
    assert_checksums(&pkt);
    let t = tuple(&pkt);
    assert_eq!((t.src, t.dst), (Ipv4Addr::new(10, 0, 0, 1), ip(C1)));
    assert_eq!(&pkt[14 + 20..14 + 22], &[11, 0], "time exceeded, in transit");
    assert_eq!(&pkt[14 + 28..14 + 28 + 20], &orig[14..34], "quotes the original header");
    assert_eq!(e.counters().traffic.icmp_generated.get(), 1);
    assert!(e.shared().flows.is_empty());
}

/// The quote of an ICMP error frame: (source, destination, first two L4 words).
fn quote(err: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16) {
    let q = &err[14 + 20 + 8..];
    let w = |o: usize| u16::from_be_bytes([q[o], q[o + 1]]);
    (ip([q[12], q[13], q[14], q[15]]), ip([q[16], q[17], q[18], q[19]]), w(20), w(22))
}

#[test]
fn icmp_errors_from_an_inside_router_leave_with_the_outside_address() {
    // frag-needed, host-unreachable, time-exceeded from a router between the gateway and
    // the inside host, about an inbound packet of a TCP, a UDP and an ICMP echo flow
    let router = [10, 0, 0, 254];
    for (typ, code) in [(3u8, 4u8), (3, 1), (11, 0)] {
        let mut e = engine();
        let mut syn = tcp(C1, S, 40000, 443, "S", b"");
        assert_eq!(run(&mut e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
        let tport = tuple(&syn).sport;
        let mut sa = tcp(S, P, 443, tport, "SA", b"");
        assert_eq!(run(&mut e, &mut sa, OUTSIDE, 1), Verdict::Forward(INSIDE));
        let mut u = udp(C1, S, 5000, 53, b"q");
        run(&mut e, &mut u, INSIDE, 1);
        let uport = tuple(&u).sport;
        let mut ur = udp(S, P, 53, uport, b"answer");
        assert_eq!(run(&mut e, &mut ur, OUTSIDE, 1), Verdict::Forward(INSIDE));
        let mut ping = echo(C1, S, 77, 1, false);
        run(&mut e, &mut ping, INSIDE, 1);
        let xid = tuple(&ping).sport;
        let mut pong = echo(S, P, xid, 1, true);
        assert_eq!(run(&mut e, &mut pong, OUTSIDE, 1), Verdict::Forward(INSIDE));

        for (what, inbound, port) in [("tcp", &sa, tport), ("udp", &ur, uport), ("echo", &pong, xid)] {
            let mut err = icmp_error(router, S, typ, code, 1280, inbound);
            assert_eq!(run(&mut e, &mut err, INSIDE, 2), Verdict::Forward(OUTSIDE), "{what} {typ}/{code}");
            assert_checksums(&err);
            let t = tuple(&err);
            assert_eq!((t.src, t.dst), (ip(P), ip(S)), "{what} {typ}/{code}: no inside address leaves");
            let (qs, qd, w0, w1) = quote(&err);
            assert_eq!((qs, qd), (ip(S), ip(P)), "{what}: the quote shows the packet as S sent it");
            match what {
                "echo" => assert_eq!(u16::from_be_bytes([err[14 + 28 + 24], err[14 + 28 + 25]]), port),
                _ => assert_eq!(w1, port, "{what}: quoted destination port {w0}/{w1}"),
            }
            let qip = &err[14 + 20 + 8..14 + 20 + 8 + 20];
            assert!(sums_to_ones(qip, 0), "quoted IP header checksum");
        }
    }
}
