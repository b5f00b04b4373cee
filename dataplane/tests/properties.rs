//! Property tests: PAT is a bijection, every rewrite leaves valid checksums, the table
//! never exceeds its capacity.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use proptest::prelude::*;
use xgw_dataplane::conntrack::{Flow, FlowKey, FlowKind, FlowTable, L4State, Rewrite};
use xgw_dataplane::{EngineConfig, IfaceId, Time, Verdict};

/// (udp?, remote address, remote port, outside port)
type OutsideTuple = (bool, [u8; 4], u16, u16);

#[derive(Debug, Clone)]
struct Out {
    host: u8,
    sport: u16,
    dst: u8,
    dport: u16,
    udp: bool,
}

fn outs() -> impl Strategy<Value = Vec<Out>> {
    proptest::collection::vec(
        (
            2u8..12,
            prop_oneof![Just(5000u16), Just(5001), 1024u16..1100, any::<u16>()],
            1u8..4,
            prop_oneof![Just(53u16), Just(80), Just(443)],
            any::<bool>(),
        )
            .prop_map(|(host, sport, dst, dport, udp)| Out { host, sport, dst, dport, udp }),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// No two inside flows share an outside tuple, and every reply maps back to the inside
    /// flow it answers — even with a port range small enough to force reallocation.
    #[test]
    fn pat_is_a_bijection(flows in outs(), range_lo in 2000u16..2010) {
        let mut cfg = EngineConfig::example();
        cfg.nat.port_range = (range_lo, range_lo + 40);
        let mut e = engine_with(cfg);
        // outside tuple (proto, dst, dport, outside port) -> inside (host, sport)
        let mut seen: HashMap<OutsideTuple, (u8, u16)> = HashMap::new();
        let mut inside_flows: HashSet<(bool, u8, u16, u8, u16)> = HashSet::new();
        for (t, o) in flows.iter().enumerate() {
            let src = [10, 0, 0, o.host];
            let dst = [198, 51, 100, o.dst];
            let mut f = if o.udp { udp(src, dst, o.sport, o.dport, b"x") } else { tcp(src, dst, o.sport, o.dport, "S", b"") };
            let v = run(&mut e, &mut f, INSIDE, t as u64);
            if v != Verdict::Forward(OUTSIDE) {
                // only exhaustion may refuse a flow here
                prop_assert!(matches!(v, Verdict::Drop(xgw_dataplane::DropReason::NatPortsExhausted)), "{v:?}");
                continue;
            }
            assert_checksums(&f);
            let tu = tuple(&f);
            prop_assert_eq!(tu.src, std::net::Ipv4Addr::from(P));
            let k = (o.udp, dst, o.dport, tu.sport);
            let inside = (o.host, o.sport);
            if let Some(prev) = seen.insert(k, inside) {
                // the same inside flow again is fine; another one is a collision
                prop_assert_eq!(prev, inside, "two inside flows share an outside tuple");
            }
            inside_flows.insert((o.udp, o.host, o.sport, o.dst, o.dport));
        }
        prop_assert_eq!(seen.len(), inside_flows.len());
        for ((is_udp, dst, dport, pport), (host, sport)) in seen {
            let mut r = if is_udp { udp(dst, P, dport, pport, b"r") } else { tcp(dst, P, dport, pport, "SA", b"") };
            prop_assert_eq!(run(&mut e, &mut r, OUTSIDE, 10_000), Verdict::Forward(INSIDE));
            assert_checksums(&r);
            let tu = tuple(&r);
            prop_assert_eq!((tu.dst, tu.dport), (std::net::Ipv4Addr::from([10, 0, 0, host]), sport));
        }
    }

    /// Rewriting any field of TCP, UDP or ICMP frames keeps every checksum equal to a full
    /// recomputation (checked by etherparse).
    #[test]
    fn rewrites_keep_checksums_valid(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        sport in any::<u16>(), dport in 1u16..u16::MAX, id in any::<u16>(),
        host in 2u8..250, remote in any::<[u8; 4]>(),
    ) {
        prop_assume!(remote[0] != 0 && remote[0] != 127 && remote[0] < 224 && remote[0] != 10 && remote != P);
        let mut e = engine();
        let src = [10, 0, 0, host];
        for mut f in [tcp(src, remote, sport, dport, "S", &payload), udp(src, remote, sport, dport, &payload), echo(src, remote, id, 1, false)] {
            let v = run(&mut e, &mut f, INSIDE, 0);
            prop_assert_eq!(v, Verdict::Forward(OUTSIDE));
            assert_checksums(&f);
        }
    }

    /// Random inserts and expiries never exceed capacity, and expiring everything frees every
    /// slot.
    #[test]
    fn table_never_exceeds_capacity(ops in proptest::collection::vec((any::<u16>(), any::<bool>()), 1..300), cap in 1usize..32) {
        let t = FlowTable::new(cap, 0);
        let timeouts = xgw_dataplane::config::Timeouts::default();
        let mut now = 0u64;
        for (port, advance) in ops {
            if advance {
                now += 200;
                t.sweep(Time::from_secs(now), cap, &timeouts, |_| {});
            }
            let o = FlowKey { src: 1, dst: 2, sport: port, dport: 53, proto: 17 };
            let r = FlowKey { src: 2, dst: 3, sport: 53, dport: port, proto: 17 };
            let _ = t.insert(o, [r], |r| Flow::new([o, r], [Rewrite { egress: IfaceId(1), ..Rewrite::default() }; 2], L4State::Udp, FlowKind::Snat, Time::from_secs(now)), Time::from_secs(now));
            prop_assert!(t.len() <= t.capacity());
        }
        t.sweep(Time::from_secs(now + 10_000), cap, &timeouts, |_| {});
        prop_assert_eq!(t.len(), 0);
        for i in 0..cap as u16 {
            let o = FlowKey { src: 9, dst: 2, sport: i, dport: 53, proto: 17 };
            let r = FlowKey { src: 2, dst: 9, sport: 53, dport: i, proto: 17 };
            prop_assert!(t.insert(o, [r], |r| Flow::new([o, r], [Rewrite::default(); 2], L4State::Udp, FlowKind::Snat, Time::ZERO), Time::ZERO).is_ok());
        }
    }
}

#[derive(Debug, Clone)]
enum Pk {
    Out { host: u8, sport: u16, tcp: bool, flags: u8 },
    Back { slot: usize, tcp: bool },
    Junk(Vec<u8>),
}

fn pk() -> impl Strategy<Value = Pk> {
    prop_oneof![
        4 => (2u8..6, 1000u16..1006, any::<bool>(), 0u8..3).prop_map(|(host, sport, tcp, flags)| Pk::Out { host, sport, tcp, flags }),
        4 => (0usize..40, any::<bool>()).prop_map(|(slot, tcp)| Pk::Back { slot, tcp }),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Pk::Junk),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The staged batch path gives exactly the verdicts and bytes of one-at-a-time processing,
    /// even when a flow is created, hit and reused within one batch.
    #[test]
    fn batches_equal_single_packets(seq in proptest::collection::vec(pk(), 1..150), cut in 1usize..70) {
        use xgw_dataplane::{FrameBuf, RxMeta};
        let mut one = engine();
        let mut batch = engine();
        // replies address whatever outside ports the single engine handed out so far
        let mut outs: Vec<(bool, u16)> = Vec::new();
        let mut frames: Vec<(Vec<u8>, xgw_dataplane::IfaceId)> = Vec::new();
        for p in &seq {
            let (f, iface) = match p {
                Pk::Out { host, sport, tcp: true, flags } => {
                    let fl = ["S", "A", "FA"][*flags as usize];
                    (tcp([10, 0, 0, *host], S, *sport, 80, fl, b"x"), INSIDE)
                }
                Pk::Out { host, sport, tcp: false, .. } => (udp([10, 0, 0, *host], S, *sport, 53, b"x"), INSIDE),
                Pk::Back { slot, tcp: t } => {
                    let port = outs.iter().filter(|o| o.0 == *t).map(|o| o.1).nth(*slot).unwrap_or(1000 + *slot as u16);
                    if *t { (tcp(S, P, 80, port, "SA", b""), OUTSIDE) } else { (udp(S, P, 53, port, b"r"), OUTSIDE) }
                }
                Pk::Junk(b) => (b.clone(), INSIDE),
            };
            let mut g = f.clone();
            let v = run(&mut one, &mut g, iface, 5);
            if let (xgw_dataplane::Verdict::Forward(_), Pk::Out { tcp: t, .. }) = (v, p) {
                outs.push((*t, tuple(&g).sport));
            }
            frames.push((f, iface));
        }
        // the same frames again, through a fresh engine one at a time and another in batches
        let mut single = engine();
        let mut want = Vec::new();
        for (f, iface) in &frames {
            let mut g = f.clone();
            let v = run(&mut single, &mut g, *iface, 5);
            want.push((v, g));
        }
        let mut got = Vec::new();
        for chunk in frames.chunks(cut) {
            let mut bufs: Vec<Vec<u8>> = chunk.iter().map(|(f, _)| { let mut b = f.clone(); b.resize(2048, 0); b }).collect();
            let metas: Vec<RxMeta> = chunk.iter().map(|(_, i)| RxMeta { iface: *i }).collect();
            let mut fr: Vec<FrameBuf<'_>> = bufs.iter_mut().zip(chunk).map(|(b, (f, _))| FrameBuf { buf: &mut b[..], len: f.len() }).collect();
            let mut vs = vec![xgw_dataplane::Verdict::ToHost; chunk.len()];
            batch.process_batch(&mut fr, &metas, xgw_dataplane::Time::from_millis(5), &mut vs);
            let lens: Vec<usize> = fr.iter().map(|f| f.len).collect();
            drop(fr);
            for ((b, v), l) in bufs.into_iter().zip(vs).zip(lens) {
                got.push((v, b[..l].to_vec()));
            }
        }
        prop_assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(g, w, "frame {}", i);
        }
        prop_assert_eq!(batch.counters().traffic.forwarded.get(), single.counters().traffic.forwarded.get());
        prop_assert_eq!(batch.counters().total_drops(), single.counters().total_drops());
        let _ = &mut one;
    }
}
