//! Engine scenarios for IPsec through PAT: ESP by SPI, IKE and NAT-T ports, keepalives.

mod common;

use common::*;
use std::net::Ipv4Addr;
use xgw_dataplane::{DropReason, Time, Verdict};

fn ip(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

fn esp(src: [u8; 4], dst: [u8; 4], spi: u32, seq: u32) -> Vec<u8> {
    let mut p = spi.to_be_bytes().to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0xee; 24]);
    raw_ip(src, dst, 50, &p)
}

#[test]
fn esp_from_two_hosts_to_one_peer_is_never_cross_delivered() {
    let mut e = engine();
    // C1 starts: outbound SPI 0x1001; the peer answers with SPI 0xa001, learnt for C1
    let mut o1 = esp(C1, S, 0x1001, 1);
    assert_eq!(run(&mut e, &mut o1, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&o1);
    assert_eq!(tuple(&o1).src, ip(P));
    // while C1 waits for its peer's first packet, C2 must wait too (no guessing)
    let mut o2 = esp(C2, S, 0x2001, 1);
    assert_eq!(run(&mut e, &mut o2, INSIDE, 1), Verdict::Drop(DropReason::NatPeerTaken));
    let mut i1 = esp(S, P, 0xa001, 1);
    assert_eq!(run(&mut e, &mut i1, OUTSIDE, 2), Verdict::Forward(INSIDE));
    assert_eq!(tuple(&i1).dst, ip(C1));
    // now C2 can start and learn its own SPI
    let mut o2 = esp(C2, S, 0x2001, 2);
    assert_eq!(run(&mut e, &mut o2, INSIDE, 3), Verdict::Forward(OUTSIDE));
    let mut i2 = esp(S, P, 0xb001, 1);
    assert_eq!(run(&mut e, &mut i2, OUTSIDE, 4), Verdict::Forward(INSIDE));
    assert_eq!(tuple(&i2).dst, ip(C2));
    // from now on each SPI goes to its own host, in any order
    for (spi, host) in [(0xa001u32, C1), (0xb001, C2), (0xa001, C1), (0xb001, C2)] {
        let mut i = esp(S, P, spi, 9);
        assert_eq!(run(&mut e, &mut i, OUTSIDE, 5), Verdict::Forward(INSIDE));
        assert_eq!(tuple(&i).dst, ip(host));
    }
    // an unknown SPI reaches nobody
    let mut stray = esp(S, P, 0xdead, 1);
    assert_eq!(run(&mut e, &mut stray, OUTSIDE, 6), Verdict::Drop(DropReason::EspNoSa));
    // SPI 0 is reserved
    let mut zero = esp(S, P, 0, 1);
    assert_eq!(run(&mut e, &mut zero, OUTSIDE, 7), Verdict::Drop(DropReason::EspMalformed));
}

#[test]
fn ike_and_natt_from_two_hosts_get_their_own_ports() {
    let mut e = engine();
    let mut ports = Vec::new();
    for host in [C1, C2] {
        for port in [500u16, 4500] {
            let mut f = udp(host, S, port, port, b"ike");
            assert_eq!(run(&mut e, &mut f, INSIDE, 0), Verdict::Forward(OUTSIDE));
            ports.push((host, port, tuple(&f).sport));
        }
    }
    assert_eq!(ports[0].2, 500, "the first host keeps 500");
    assert_ne!(ports[2].2, 500, "the second gets another port");
    for (host, port, out) in ports {
        let mut back = udp(S, P, port, out, b"r");
        assert_eq!(run(&mut e, &mut back, OUTSIDE, 1), Verdict::Forward(INSIDE));
        assert_eq!((tuple(&back).dst, tuple(&back).dport), (ip(host), port));
    }
}

#[test]
fn natt_keepalives_keep_the_mapping_for_ten_minutes() {
    let mut e = engine();
    let mut first = udp(C1, S, 4500, 4500, &[0xff]);
    run(&mut e, &mut first, INSIDE, 0);
    let out = tuple(&first).sport;
    for s in (20..=600).step_by(20) {
        let mut k = udp(C1, S, 4500, 4500, &[0xff]);
        assert_eq!(run(&mut e, &mut k, INSIDE, s * 1000), Verdict::Forward(OUTSIDE));
        assert_eq!(tuple(&k).sport, out, "same mapping at {s} s");
        e.shared().sweep(Time::from_secs(s), usize::MAX);
    }
    let mut back = udp(S, P, 4500, out, b"esp-in-udp");
    assert_eq!(run(&mut e, &mut back, OUTSIDE, 600_500), Verdict::Forward(INSIDE));
}
