//! Engine scenarios: packet sequences in, bytes and verdicts out, counter deltas asserted.

mod common;

use common::*;
use std::net::Ipv4Addr;
use xgw_dataplane::config::PortForward;
use xgw_dataplane::conntrack::tcp::TcpState;
use xgw_dataplane::conntrack::{FlowKey, L4State};
use xgw_dataplane::{DropReason, EngineConfig, Time, Verdict};

fn ip(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

fn key(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey { src: u32::from(ip(src)), dst: u32::from(ip(dst)), sport, dport, proto }
}

#[test]
fn tcp_outbound_is_translated_and_replies_return() {
    let mut e = engine();
    let mut syn = tcp(C1, S, 40000, 443, "S", b"");
    assert_eq!(run(&mut e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&syn);
    let t = tuple(&syn);
    assert_eq!((t.src, t.dst, t.dport, t.ttl), (ip(P), ip(S), 443, 63));
    // 40000 lies in the host's ephemeral range, so it is not preserved
    assert_ne!(t.sport, 40000);
    let pport = t.sport;

    let mut synack = tcp(S, P, 443, pport, "SA", b"");
    assert_eq!(run(&mut e, &mut synack, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_checksums(&synack);
    let t = tuple(&synack);
    assert_eq!((t.src, t.dst, t.sport, t.dport), (ip(S), ip(C1), 443, 40000));

    let mut ack = tcp(C1, S, 40000, 443, "A", b"hello");
    assert_eq!(run(&mut e, &mut ack, INSIDE, 2), Verdict::Forward(OUTSIDE));
    assert_checksums(&ack);

    let flows = &e.shared().flows;
    let r = flows.lookup(&key(C1, S, 40000, 443, 6)).expect("tracked");
    let f = flows.with_flow(r, &key(C1, S, 40000, 443, 6), |f, _| *f).expect("live");
    assert_eq!(f.l4, L4State::Tcp(TcpState::Established));
    assert!(f.assured() && f.seen_reply());
    assert_eq!(f.packets, [2, 1]);
    assert_eq!(e.counters().traffic.flows_created.get(), 1);
}

#[test]
fn source_port_kept_when_free_and_changed_on_collision() {
    let mut e = engine();
    let mut a = tcp(C1, S, 5555, 80, "S", b"");
    let mut b = tcp(C2, S, 5555, 80, "S", b"");
    assert_eq!(run(&mut e, &mut a, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_eq!(run(&mut e, &mut b, INSIDE, 0), Verdict::Forward(OUTSIDE));
    let (ta, tb) = (tuple(&a), tuple(&b));
    assert_eq!(ta.sport, 5555, "free port preserved");
    assert_ne!(tb.sport, 5555, "colliding port reallocated");
    // replies reach the right host
    let mut ra = tcp(S, P, 80, ta.sport, "SA", b"");
    let mut rb = tcp(S, P, 80, tb.sport, "SA", b"");
    run(&mut e, &mut ra, OUTSIDE, 1);
    run(&mut e, &mut rb, OUTSIDE, 1);
    assert_eq!((tuple(&ra).dst, tuple(&ra).dport), (ip(C1), 5555));
    assert_eq!((tuple(&rb).dst, tuple(&rb).dport), (ip(C2), 5555));
    assert_checksums(&rb);
}

#[test]
fn udp_both_ways_and_zero_checksum_stays_zero() {
    let mut e = engine();
    let mut out = udp(C1, S, 5060, 5060, b"INVITE");
    assert_eq!(run(&mut e, &mut out, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&out);
    let p = tuple(&out).sport;
    let mut back = udp(S, P, 5060, p, b"100 Trying");
    assert_eq!(run(&mut e, &mut back, OUTSIDE, 5), Verdict::Forward(INSIDE));
    assert_checksums(&back);
    assert_eq!(tuple(&back).dst, ip(C1));

    let mut nocsum = udp(C1, S, 7000, 53, b"q");
    // zero the UDP checksum (offset 14 + 20 + 6)
    nocsum[40] = 0;
    nocsum[41] = 0;
    assert_eq!(run(&mut e, &mut nocsum, INSIDE, 6), Verdict::Forward(OUTSIDE));
    assert_eq!(&nocsum[40..42], &[0, 0]);
}

#[test]
fn static_forward_and_hairpin() {
    let mut cfg = EngineConfig::example();
    cfg.forwards.push(PortForward { proto: 6, outside_port: 2222, inside_addr: ip(C2), inside_port: 22 });
    let mut e = engine_with(cfg);
    let remote = [198, 51, 100, 77];
    let mut syn = tcp(remote, P, 50000, 2222, "S", b"");
    assert_eq!(run(&mut e, &mut syn, OUTSIDE, 0), Verdict::Forward(INSIDE));
    assert_checksums(&syn);
    let t = tuple(&syn);
    assert_eq!((t.src, t.dst, t.sport, t.dport), (ip(remote), ip(C2), 50000, 22));
    let mut synack = tcp(C2, remote, 22, 50000, "SA", b"");
    assert_eq!(run(&mut e, &mut synack, INSIDE, 1), Verdict::Forward(OUTSIDE));
    let t = tuple(&synack);
    assert_eq!((t.src, t.sport), (ip(P), 2222));

    // hairpin: C1 reaches the forward on the outside address
    let mut hp = tcp(C1, P, 41000, 2222, "S", b"");
    assert_eq!(run(&mut e, &mut hp, INSIDE, 2), Verdict::Forward(INSIDE));
    assert_checksums(&hp);
    let t = tuple(&hp);
    assert_eq!((t.src, t.dst, t.dport), (ip(P), ip(C2), 22));
    let mut hpr = tcp(C2, P, 22, t.sport, "SA", b"");
    assert_eq!(run(&mut e, &mut hpr, INSIDE, 3), Verdict::Forward(INSIDE));
    assert_checksums(&hpr);
    let t = tuple(&hpr);
    assert_eq!((t.src, t.dst, t.sport, t.dport), (ip(P), ip(C1), 2222, 41000));
}

#[test]
fn gateway_own_traffic_goes_to_host() {
    let mut e = engine();
    let mut ssh = tcp(S, P, 50000, 22, "S", b"");
    assert_eq!(run(&mut e, &mut ssh, OUTSIDE, 0), Verdict::ToHost);
    let mut ping = echo(S, P, 1, 1, false);
    assert_eq!(run(&mut e, &mut ping, OUTSIDE, 0), Verdict::ToHost);
    let mut dns = udp(C1, [10, 0, 0, 1], 3333, 53, b"q");
    assert_eq!(run(&mut e, &mut dns, INSIDE, 0), Verdict::ToHost);
    let mut arp = vec![0xffu8; 42];
    arp[12] = 0x08;
    arp[13] = 0x06;
    assert_eq!(run(&mut e, &mut arp, INSIDE, 0), Verdict::ToHost);
    let mut bcast = udp(C1, [10, 0, 0, 255], 68, 67, b"dhcp");
    assert_eq!(run(&mut e, &mut bcast, INSIDE, 0), Verdict::ToHost);
    assert_eq!(e.counters().traffic.to_host.get(), 5);
    assert!(e.shared().flows.is_empty(), "host traffic creates no flows");
}

#[test]
fn only_answers_to_the_hosts_port_range_are_the_hosts() {
    let mut e = engine();
    // 40000 is in the host's ephemeral range: the answer to the box's own connection is its
    let mut answer = tcp(S, P, 443, 40000, "SA", b"");
    assert_eq!(run(&mut e, &mut answer, OUTSIDE, 0), Verdict::ToHost);
    let mut data = tcp(S, P, 443, 40000, "A", b"x");
    assert_eq!(run(&mut e, &mut data, OUTSIDE, 0), Verdict::ToHost);
    // a connection attempt there never is: dropped and counted, not handed to the kernel
    let mut syn = tcp(S, P, 50000, 40000, "S", b"");
    assert_eq!(run(&mut e, &mut syn, OUTSIDE, 1), Verdict::Drop(DropReason::UnsolicitedInbound));
    // unless the port is a declared host service (SSH, the default)
    let mut ssh = tcp(S, P, 50000, 22, "S", b"");
    assert_eq!(run(&mut e, &mut ssh, OUTSIDE, 1), Verdict::ToHost);
    assert_eq!(e.counters().drops(DropReason::UnsolicitedInbound), 1);
    assert!(e.shared().flows.is_empty(), "none of them creates a flow");
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let mut e = engine();
    let good = udp(C1, S, 1, 2, b"x");
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..10].to_vec(), DropReason::EthTruncated),
        (good[..20].to_vec(), DropReason::IpTruncated),
        (
            {
                let mut b = good.clone();
                b[14] = 0x44; // IHL 16 bytes
                b
            },
            DropReason::IpBadLength,
        ),
        (
            {
                let mut b = good.clone();
                b[14 + 2] = 0x40; // total length beyond the frame
                b
            },
            DropReason::IpBadLength,
        ),
        (
            {
                let mut b = good.clone();
                b[14 + 10] ^= 0xff;
                b
            },
            DropReason::IpBadChecksum,
        ),
        (
            {
                let mut b = good.clone();
                b[14] = 0x65;
                b
            },
            DropReason::IpBadVersion,
        ),
        (udp([127, 0, 0, 1], S, 1, 2, b"x"), DropReason::MartianSource),
        // the box's own addresses as a source: its inside one, its outside one
        (udp([10, 0, 0, 1], S, 1, 2, b"x"), DropReason::MartianSource),
        (udp(P, S, 1, 2, b"x"), DropReason::MartianSource),
        (udp(S, S, 1, 2, b"x"), DropReason::LandAttack),
        (raw_ip(C1, S, 6, &[0u8; 10]), DropReason::TcpMalformed),
        (raw_ip(C1, S, 17, &[0, 1, 0, 2, 0, 50, 0, 0]), DropReason::UdpMalformed),
        (raw_ip(C1, S, 1, &[8, 0, 0]), DropReason::IcmpMalformed),
        (raw_ip(C1, S, 47, &[0, 1]), DropReason::GreTruncated),
        (raw_ip(C1, S, 47, &[0x30, 0x02, 0x88, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0]), DropReason::GreMalformed),
        (raw_ip(C1, S, 51, &[0u8; 24]), DropReason::AhNotTranslatable),
        (tcp(S, [10, 0, 0, 7], 1, 2, "S", b""), DropReason::UnsolicitedInbound),
        (tcp(C1, S, 1, 2, "A", b""), DropReason::TcpNewNotSyn),
    ];
    for (i, (mut frame, reason)) in cases.into_iter().enumerate() {
        let iface = if reason == DropReason::UnsolicitedInbound { OUTSIDE } else { INSIDE };
        let before = e.counters().drops(reason);
        assert_eq!(run(&mut e, &mut frame, iface, 0), Verdict::Drop(reason), "case {i}");
        assert_eq!(e.counters().drops(reason), before + 1, "case {i} counted");
    }
}

#[test]
fn ip_options_dropped_on_transit() {
    let mut e = engine();
    let mut b = udp(C1, S, 1, 2, b"x");
    // insert 4 bytes of options (NOP x3, EOL), fix lengths and checksum
    b.splice(34..34, [1u8, 1, 1, 0]);
    b[14] = 0x46;
    let tl = u16::from_be_bytes([b[16], b[17]]) + 4;
    b[16..18].copy_from_slice(&tl.to_be_bytes());
    fix_ip_csum(&mut b);
    assert_eq!(run(&mut e, &mut b, INSIDE, 0), Verdict::Drop(DropReason::IpOptions));
}

#[test]
fn spoofed_packet_on_wrong_interface_is_dropped() {
    let mut e = engine();
    let mut syn = tcp(C1, S, 5555, 80, "S", b"");
    run(&mut e, &mut syn, INSIDE, 0);
    // the same inside tuple arriving from the outside
    let mut spoof = tcp(C1, S, 5555, 80, "A", b"");
    assert_eq!(run(&mut e, &mut spoof, OUTSIDE, 1), Verdict::Drop(DropReason::WrongInterface));
}

#[test]
fn full_table_refuses_new_flows_and_keeps_existing() {
    let mut cfg = EngineConfig::example();
    cfg.limits.max_flows = 2;
    let mut e = engine_with(cfg);
    let mut a = udp(C1, S, 1001, 53, b"a");
    let mut b = udp(C1, S, 1002, 53, b"b");
    let mut c = udp(C1, S, 1003, 53, b"c");
    assert_eq!(run(&mut e, &mut a, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_eq!(run(&mut e, &mut b, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_eq!(run(&mut e, &mut c, INSIDE, 0), Verdict::Drop(DropReason::TableFull));
    assert_eq!(e.shared().flows.stats.insert_failed_full.get(), 1);
    let mut a2 = udp(C1, S, 1001, 53, b"again");
    assert_eq!(run(&mut e, &mut a2, INSIDE, 1), Verdict::Forward(OUTSIDE));
    let mut reply = udp(S, P, 53, tuple(&b).sport, b"r");
    assert_eq!(run(&mut e, &mut reply, OUTSIDE, 1), Verdict::Forward(INSIDE));
}

#[test]
fn port_exhaustion_is_counted() {
    let mut cfg = EngineConfig::example();
    cfg.nat.port_range = (2000, 2001);
    cfg.nat.preserve_port = false;
    let mut e = engine_with(cfg);
    for (i, host) in [[10, 0, 0, 5], [10, 0, 0, 6]].into_iter().enumerate() {
        let mut f = udp(host, S, 9999, 53, b"q");
        assert_eq!(run(&mut e, &mut f, INSIDE, i as u64), Verdict::Forward(OUTSIDE));
    }
    let mut f = udp([10, 0, 0, 7], S, 9999, 53, b"q");
    assert_eq!(run(&mut e, &mut f, INSIDE, 3), Verdict::Drop(DropReason::NatPortsExhausted));
    // a different destination can reuse the same outside ports
    let mut g = udp([10, 0, 0, 7], [198, 51, 100, 21], 9999, 53, b"q");
    assert_eq!(run(&mut e, &mut g, INSIDE, 4), Verdict::Forward(OUTSIDE));
}

#[test]
fn portless_protocol_first_host_wins() {
    let mut e = engine();
    let mut a = raw_ip(C1, S, 50, &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0]);
    let mut b = raw_ip(C2, S, 50, &[0, 0, 0, 2, 0, 0, 0, 1, 0, 0]);
    assert_eq!(run(&mut e, &mut a, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&a);
    assert_eq!(run(&mut e, &mut b, INSIDE, 0), Verdict::Drop(DropReason::NatPeerTaken));
    let mut back = raw_ip(S, P, 50, &[0, 0, 0, 9, 0, 0, 0, 1, 0, 0]);
    assert_eq!(run(&mut e, &mut back, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_eq!(tuple(&back).dst, ip(C1));
}

#[test]
fn fragments_follow_their_first_fragment() {
    let mut e = engine();
    // first fragment: UDP header + 16 bytes, MF set; second: 8 bytes at offset 24
    let mut first = udp(C1, S, 4500, 4500, &[7u8; 40]);
    let full_ip_len = first.len() - 14;
    let ident = [0x12, 0x34];
    let mut second = first.clone();
    first[18..20].copy_from_slice(&ident);
    first[20] = 0x20; // MF
    first.truncate(14 + 20 + 24);
    first[16..18].copy_from_slice(&(44u16).to_be_bytes());
    fix_ip_csum(&mut first);
    let rest = second[14 + 20 + 24..14 + full_ip_len].to_vec();
    second.truncate(14 + 20);
    second.extend_from_slice(&rest);
    second[18..20].copy_from_slice(&ident);
    second[20] = 0x00;
    second[21] = 3; // offset 24 bytes
    let tl = (20 + rest.len()) as u16;
    second[16..18].copy_from_slice(&tl.to_be_bytes());
    fix_ip_csum(&mut second);

    // a later fragment before its first: dropped and counted
    let mut early = second.clone();
    assert_eq!(run(&mut e, &mut early, INSIDE, 0), Verdict::Drop(DropReason::FragmentNoFlow));

    assert_eq!(run(&mut e, &mut first, INSIDE, 1), Verdict::Forward(OUTSIDE));
    assert_eq!(run(&mut e, &mut second, INSIDE, 2), Verdict::Forward(OUTSIDE));
    assert_eq!(&second[14 + 12..14 + 16], &P, "later fragment gets the outside address");
    assert!(sums_to_ones(&second[14..34], 0));
    assert!(sums_to_ones(&first[14..34], 0));
}

#[test]
fn tcp_teardown_and_expiry() {
    let mut e = engine();
    let k = key(C1, S, 5000, 80, 6);
    let mut p = tcp(C1, S, 5000, 80, "S", b"");
    run(&mut e, &mut p, INSIDE, 0);
    let pp = tuple(&p).sport;
    for (src, dst, sp, dp, fl, iface) in [
        (S, P, 80, pp, "SA", OUTSIDE),
        (C1, S, 5000, 80, "A", INSIDE),
        (C1, S, 5000, 80, "FA", INSIDE),
        (S, P, 80, pp, "FA", OUTSIDE),
        (C1, S, 5000, 80, "A", INSIDE),
    ] {
        let mut f = tcp(src, dst, sp, dp, fl, b"");
        assert!(matches!(run(&mut e, &mut f, iface, 1), Verdict::Forward(_)), "{fl}");
    }
    let flows = &e.shared().flows;
    let st = flows.with_flow(flows.lookup(&k).expect("hit"), &k, |f, _| f.l4).expect("live");
    assert_eq!(st, L4State::Tcp(TcpState::TimeWait));
    // TIME_WAIT lasts 120 s
    assert_eq!(e.shared().sweep(Time::from_secs(100), 1 << 20), 0);
    assert_eq!(e.shared().sweep(Time::from_secs(122), 1 << 20), 1);
    assert!(flows.lookup(&k).is_none());

    // RST closes at once (10 s)
    let mut s2 = tcp(C1, S, 5001, 80, "S", b"");
    run(&mut e, &mut s2, INSIDE, 200_000);
    let mut rst = tcp(S, P, 80, tuple(&s2).sport, "R", b"");
    assert_eq!(run(&mut e, &mut rst, OUTSIDE, 200_001), Verdict::Forward(INSIDE));
    assert_eq!(e.shared().sweep(Time::from_secs(211), 1 << 20), 1);
}

#[test]
fn invalid_tcp_for_state_is_dropped() {
    let mut e = engine();
    let mut syn = tcp(C1, S, 6000, 80, "S", b"");
    run(&mut e, &mut syn, INSIDE, 0);
    // a FIN before the handshake completes is invalid
    let mut fin = tcp(S, P, 80, tuple(&syn).sport, "F", b"");
    assert_eq!(run(&mut e, &mut fin, OUTSIDE, 1), Verdict::Drop(DropReason::TcpInvalid));
}

#[test]
fn udp_mapping_lives_two_minutes_unreplied() {
    let mut e = engine();
    let mut u = udp(C1, S, 4500, 4500, &[0xff]);
    run(&mut e, &mut u, INSIDE, 0);
    assert_eq!(e.shared().sweep(Time::from_secs(119), 1 << 20), 0);
    // a keepalive refreshes it
    let mut k = udp(C1, S, 4500, 4500, &[0xff]);
    run(&mut e, &mut k, INSIDE, 119_000);
    assert_eq!(e.shared().sweep(Time::from_secs(200), 1 << 20), 0);
    assert_eq!(e.shared().sweep(Time::from_secs(240), 1 << 20), 1);
}

#[test]
fn events_record_new_and_destroy() {
    let mut e = engine();
    let mut u = udp(C1, S, 1234, 53, b"q");
    run(&mut e, &mut u, INSIDE, 0);
    e.shared().sweep(Time::from_secs(1000), 1 << 20);
    let kinds: Vec<_> = std::iter::from_fn(|| e.shared().flows.pop_event()).map(|ev| ev.kind).collect();
    use xgw_dataplane::conntrack::EventKind;
    assert_eq!(kinds, vec![EventKind::New, EventKind::Destroy]);
}

#[test]
fn nat_pool_pairs_each_host_with_one_address() {
    let mut cfg = EngineConfig::example();
    cfg.ifaces[0].prefix_len = 16;
    cfg.nat.pool = vec![ip([203, 0, 113, 10]), ip([203, 0, 113, 11]), ip([203, 0, 113, 12])];
    let mut e = engine_with(cfg);
    let mut used = std::collections::HashSet::new();
    for h in 2..60u8 {
        let host = [10, 0, 1, h];
        let mut first = None;
        for sport in [1000u16, 1001, 1002] {
            let mut f = udp(host, S, sport, 53, b"q");
            assert_eq!(run(&mut e, &mut f, INSIDE, 0), Verdict::Forward(OUTSIDE));
            assert_checksums(&f);
            let src = tuple(&f).src;
            assert!(src != ip(P), "translated onto the pool, not the interface address");
            assert_eq!(*first.get_or_insert(src), src, "paired: host {h} always gets the same address");
            // the reply to that pool address comes back to the host
            let mut r = udp(S, src.octets(), 53, tuple(&f).sport, b"a");
            assert_eq!(run(&mut e, &mut r, OUTSIDE, 1), Verdict::Forward(INSIDE));
            assert_eq!(tuple(&r).dst, ip(host));
        }
        used.insert(first.expect("translated"));
    }
    assert_eq!(used.len(), 3, "hosts are spread over the whole pool");
    // unsolicited traffic to a pool address reaches nobody (not even the host stack)
    let mut stray = udp(S, [203, 0, 113, 11], 53, 9999, b"x");
    assert_eq!(run(&mut e, &mut stray, OUTSIDE, 2), Verdict::Drop(DropReason::UnsolicitedInbound));
}

#[test]
fn replies_of_flows_whose_keys_share_an_index_tag_reach_their_own_hosts() {
    // The flow index keeps a 16-bit tag per key, not the key: two reply keys with the
    // same bucket and tag give the packet path a wrong first candidate for one of them,
    // which the flow's lock check refuses and a confirmed lookup settles. A reply that
    // fell through to the slow path instead would be dropped as unsolicited.
    let mut cfg = EngineConfig::example();
    cfg.limits.max_flows = 4; // a tiny index: such pairs are easy to find
    let mut e = engine_with(cfg);
    let reply_key = |port: u16| FlowKey {
        src: u32::from_be_bytes(S),
        dst: u32::from_be_bytes(P),
        sport: 53,
        dport: port,
        proto: 17,
    };
    let mut seen = std::collections::HashMap::new();
    let (pa, pb) = (20_000..=u16::MAX)
        .find_map(|p| seen.insert(e.shared().flows.probe(&reply_key(p)), p).map(|q| (q, p)))
        .expect("two outside ports whose reply keys collide");
    for (host, port) in [(C1, pa), (C2, pb)] {
        let mut out = udp(host, S, port, 53, b"q");
        assert_eq!(run(&mut e, &mut out, INSIDE, 0), Verdict::Forward(OUTSIDE));
        assert_eq!(tuple(&out).sport, port, "the source port is kept");
    }
    for round in 0..3 {
        for (host, port) in [(C1, pa), (C2, pb)] {
            let mut back = udp(S, P, 53, port, b"r");
            assert_eq!(run(&mut e, &mut back, OUTSIDE, 1 + round), Verdict::Forward(INSIDE), "port {port}");
            assert_checksums(&back);
            assert_eq!((tuple(&back).dst, tuple(&back).dport), (ip(host), port));
        }
    }
    let mut replies = Vec::new();
    e.shared().flows.for_each(|_, f| replies.push((f.keys[1].dport, f.packets)));
    replies.sort();
    assert_eq!(replies, vec![(pa, [1, 3]), (pb, [1, 3])]);
    assert_eq!(e.shared().flows.len(), 2);
}

/// `address auto`: no outside address yet refuses new translations (counted); an address
/// that appears is used at once; when it changes, flows on the old one are flushed, their
/// replies are not delivered, and new translations use the new one.
#[test]
fn an_outside_address_that_follows_the_kernel() {
    let mut cfg = EngineConfig::example();
    let o = cfg.ifaces.iter_mut().find(|i| i.role == xgw_dataplane::Role::Outside).expect("outside");
    (o.addr, o.prefix_len, o.auto_addr) = (std::net::Ipv4Addr::UNSPECIFIED, 0, true);
    let mut e = engine_with(cfg);
    let sh = std::sync::Arc::clone(e.shared());
    let mut q = udp(C1, S, 5000, 53, b"q");
    assert_eq!(run(&mut e, &mut q, INSIDE, 0), Verdict::Drop(DropReason::NoOutsideAddress));
    // a DHCP server's offer to the address the box is about to get is the box's
    let mut offer = udp(S, [203, 0, 113, 50], 67, 68, b"offer");
    assert_eq!(run(&mut e, &mut offer, OUTSIDE, 0), Verdict::ToHost);

    let first = u32::from_be_bytes(P);
    assert_eq!(sh.set_outside_addr(first, 24, Time::from_millis(1)), 0);
    let mut q = udp(C1, S, 5000, 53, b"q");
    assert_eq!(run(&mut e, &mut q, INSIDE, 2), Verdict::Forward(OUTSIDE));
    assert_eq!(tuple(&q).src, std::net::Ipv4Addr::from(P));
    let mapped = tuple(&q).sport;
    let mut t = tcp(C2, S, 6000, 80, "S", b"");
    assert_eq!(run(&mut e, &mut t, INSIDE, 3), Verdict::Forward(OUTSIDE));
    // the box's own address is the new one: a ping of it is the host's, so is a broadcast
    let mut ping = echo(S, P, 1, 1, false);
    assert_eq!(run(&mut e, &mut ping, OUTSIDE, 4), Verdict::ToHost);
    assert_eq!(sh.flows.len(), 2);

    // the address changes: both translations go, the reply to the old address finds nothing
    let second = [203, 0, 113, 77];
    assert_eq!(sh.set_outside_addr(u32::from_be_bytes(second), 24, Time::from_millis(5)), 2);
    assert_eq!(sh.flows.len(), 0);
    assert_eq!((sh.address_changes.get(), sh.address_flushed.get()), (2, 2));
    let mut reply = udp(S, P, 53, mapped, b"a");
    assert_ne!(run(&mut e, &mut reply, OUTSIDE, 6), Verdict::Forward(INSIDE), "nothing on the old address");
    let mut q = udp(C1, S, 5000, 53, b"q2");
    assert_eq!(run(&mut e, &mut q, INSIDE, 7), Verdict::Forward(OUTSIDE));
    assert_eq!(tuple(&q).src, std::net::Ipv4Addr::from(second), "new translations use the new address");
    let mut reply = udp(S, second, 53, tuple(&q).sport, b"a");
    assert_eq!(run(&mut e, &mut reply, OUTSIDE, 8), Verdict::Forward(INSIDE));
    let mut ping = echo(S, P, 1, 2, false);
    assert_ne!(run(&mut e, &mut ping, OUTSIDE, 9), Verdict::ToHost, "the old address is not the box's any more");
    // the same address again changes nothing
    assert_eq!(sh.set_outside_addr(u32::from_be_bytes(second), 24, Time::from_millis(10)), 0);
    assert_eq!(sh.address_changes.get(), 2);
    // the subnet's broadcast is the box's; with another prefix, the new one is
    let mut b = udp(S, [203, 0, 113, 255], 1, 2, b"b");
    assert_eq!(run(&mut e, &mut b, OUTSIDE, 11), Verdict::ToHost);
    assert_eq!(sh.set_outside_addr(u32::from_be_bytes(second), 25, Time::from_millis(12)), 0);
    let mut b = udp(S, [203, 0, 113, 127], 1, 2, b"b");
    assert_eq!(run(&mut e, &mut b, OUTSIDE, 13), Verdict::ToHost);
    let mut b = udp(S, [203, 0, 113, 255], 1, 2, b"b");
    assert_ne!(run(&mut e, &mut b, OUTSIDE, 14), Verdict::ToHost, "the old broadcast is not the box's any more");
}

#[test]
fn a_host_service_port_is_never_a_translation_s() {
    // the box serves NAT-T itself; an inside IPsec client also sends from UDP 4500
    let mut cfg = EngineConfig::example();
    cfg.host_services.push((17, 4500));
    let mut e = engine_with(cfg);
    let mut a = udp(C1, S, 4500, 4500, b"ike");
    assert_eq!(run(&mut e, &mut a, INSIDE, 0), Verdict::Forward(OUTSIDE));
    let out = tuple(&a);
    assert_eq!(out.src, ip(P));
    assert_ne!(out.sport, 4500, "4500 on the outside address is the box's");
    // a port that is no service is kept
    let mut b = udp(C1, S, 4501, 4500, b"ike");
    assert_eq!(run(&mut e, &mut b, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_eq!(tuple(&b).sport, 4501);
    // and TCP 22 (the default service) is never handed out either
    let mut c = tcp(C2, S, 22, 80, "S", b"");
    assert_eq!(run(&mut e, &mut c, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_ne!(tuple(&c).sport, 22);
}

#[test]
fn nat_exemption_routes_untranslated_both_ways() {
    use xgw_dataplane::config::Exemption;
    let partner = [192, 168, 50, 7];
    let mut cfg = EngineConfig::example();
    let r = |a: [u8; 4], len: u32| {
        let lo = u32::from_be_bytes(a) & (u32::MAX << (32 - len));
        (lo, lo | !(u32::MAX << (32 - len)))
    };
    // first match: C2 is not exempt (deny), the rest of the inside /24 is, towards the partner
    cfg.nat.exempt = vec![
        Exemption { exempt: false, inside: r(C2, 32), far: r(partner, 24) },
        Exemption { exempt: true, inside: r(C1, 24), far: r(partner, 24) },
    ];
    let mut e = engine_with(cfg);
    let mut a = udp(C1, partner, 5000, 53, b"q");
    assert_eq!(run(&mut e, &mut a, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_checksums(&a);
    assert_eq!((tuple(&a).src, tuple(&a).sport), (ip(C1), 5000), "exempt: untranslated");
    let mut back = udp(partner, C1, 53, 5000, b"a");
    assert_eq!(run(&mut e, &mut back, OUTSIDE, 1), Verdict::Forward(INSIDE));
    assert_eq!(tuple(&back).dst, ip(C1));
    // the denied host is translated as usual
    let mut b = udp(C2, partner, 5000, 53, b"q");
    assert_eq!(run(&mut e, &mut b, INSIDE, 2), Verdict::Forward(OUTSIDE));
    assert_eq!(tuple(&b).src, ip(P));
    // and elsewhere C1 is translated too
    let mut c = udp(C1, S, 5001, 53, b"q");
    assert_eq!(run(&mut e, &mut c, INSIDE, 3), Verdict::Forward(OUTSIDE));
    assert_eq!(tuple(&c).src, ip(P));
    // the partner may open a flow to an exempt inside host (the policy permitting), not to C2
    let mut opened = tcp(partner, C1, 40000, 22, "S", b"");
    assert_eq!(run(&mut e, &mut opened, OUTSIDE, 4), Verdict::Forward(INSIDE));
    assert_eq!(tuple(&opened).dst, ip(C1));
    let mut refused = tcp(partner, C2, 40000, 22, "S", b"");
    assert_eq!(run(&mut e, &mut refused, OUTSIDE, 5), Verdict::Drop(DropReason::UnsolicitedInbound));
    // nor from anywhere else
    let mut stranger = tcp(S, C1, 40000, 22, "S", b"");
    assert_eq!(run(&mut e, &mut stranger, OUTSIDE, 6), Verdict::Drop(DropReason::UnsolicitedInbound));
}
