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
