//! Port blocks through the engine: every translation of a host lies in blocks it holds, a
//! second block comes when the first is full towards a destination, the quota and an
//! address's exhaustion refuse (counted), blocks go back after their last flow and the
//! hold, and ICMP identifiers live in the blocks too.
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

mod common;

use std::time::Duration;

use common::*;
use xgw_dataplane::config::BlockConfig;
use xgw_dataplane::nat::blocks::BlockEventKind;
use xgw_dataplane::{DropReason, EngineConfig, Time, Verdict};

/// Four blocks of 64 ports (1024–1279), two per host, held 10 s.
fn config(deterministic: bool) -> EngineConfig {
    let mut cfg = EngineConfig::example();
    cfg.nat.port_range = (1024, 1279);
    cfg.nat.host_ports = None;
    cfg.nat.blocks = Some(BlockConfig { size: 64, per_host: 2, hold: Duration::from_secs(10), deterministic });
    cfg
}

fn block_of(port: u16) -> u16 {
    (port - 1024) / 64
}

#[test]
fn a_hosts_translations_stay_in_its_blocks_and_it_gets_another_when_one_is_full() {
    let mut e = engine_with(config(false));
    let sh = std::sync::Arc::clone(e.shared());
    let blocks_of = |host: [u8; 4], flows: u16, first_sport: u16, e: &mut xgw_dataplane::Engine| {
        let mut seen = std::collections::BTreeSet::new();
        let mut verdicts = Vec::new();
        for i in 0..flows {
            // one destination: each flow needs its own outside port
            let mut f = udp(host, S, first_sport + i, 53, b"q");
            let v = run(e, &mut f, INSIDE, 1);
            if v == Verdict::Forward(OUTSIDE) {
                let t = tuple(&f);
                assert_eq!(t.src.octets(), P);
                seen.insert(block_of(t.sport));
            }
            verdicts.push(v);
        }
        (seen, verdicts)
    };
    // 64 flows fill C1's first block; the 65th takes a second; 128 fill both
    let (seen, v) = blocks_of(C1, 128, 40_000, &mut e);
    assert!(v.iter().all(|v| *v == Verdict::Forward(OUTSIDE)), "{v:?}");
    assert_eq!(seen.len(), 2, "two blocks: {seen:?}");
    // the 129th: the quota
    let (_, v) = blocks_of(C1, 1, 41_000, &mut e);
    assert_eq!(v, vec![Verdict::Drop(DropReason::NatBlockQuota)]);
    // C2 gets the other two blocks, never C1's
    let (seen2, v) = blocks_of(C2, 65, 40_000, &mut e);
    assert!(v.iter().all(|v| *v == Verdict::Forward(OUTSIDE)));
    assert_eq!(seen2.len(), 2);
    assert!(seen2.is_disjoint(&seen), "C2 {seen2:?} vs C1 {seen:?}");
    // a third host finds the address exhausted
    let (_, v) = blocks_of([10, 0, 0, 7], 1, 40_000, &mut e);
    assert_eq!(v, vec![Verdict::Drop(DropReason::NatBlocksExhausted)]);
    let b = sh.blocks.as_ref().expect("blocks");
    let evs: Vec<_> = std::iter::from_fn(|| b.pop_event()).map(|e| e.kind).collect();
    assert_eq!(
        evs,
        vec![
            BlockEventKind::Allocated,
            BlockEventKind::Allocated,
            BlockEventKind::QuotaExceeded,
            BlockEventKind::Allocated,
            BlockEventKind::Allocated,
            BlockEventKind::Exhausted
        ]
    );
    assert_eq!(b.list().iter().map(|x| x.4).sum::<u32>(), 193, "every flow counted in its block");
}

/// A host may hold more ports than one new flow's probe budget (here eight blocks of 64 and
/// 128 probes): it still fills all eight before the quota refuses, one block at a time.
#[test]
fn a_host_fills_every_block_of_its_quota_when_they_outnumber_the_probes() {
    let mut cfg = config(false);
    cfg.nat.port_range = (1024, 1024 + 16 * 64 - 1);
    cfg.nat.max_probes = 128;
    cfg.nat.blocks = Some(BlockConfig { size: 64, per_host: 8, hold: Duration::from_secs(10), deterministic: false });
    let mut e = engine_with(cfg);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..512u16 {
        // one destination, and inside ports outside every block: none is kept
        let mut f = udp(C1, S, 40_000 + i, 53, b"q");
        let v = run(&mut e, &mut f, INSIDE, 1);
        assert_eq!(v, Verdict::Forward(OUTSIDE), "flow {i}");
        seen.insert(block_of(tuple(&f).sport));
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    let mut f = udp(C1, S, 41_000, 53, b"q");
    assert_eq!(run(&mut e, &mut f, INSIDE, 1), Verdict::Drop(DropReason::NatBlockQuota));
}

#[test]
fn blocks_go_back_after_the_flows_expire_and_the_hold_time() {
    let mut e = engine_with(config(false));
    let sh = std::sync::Arc::clone(e.shared());
    let mut f = udp(C1, S, 5000, 53, b"q");
    assert_eq!(run(&mut e, &mut f, INSIDE, 0), Verdict::Forward(OUTSIDE));
    let mut ping = echo(C1, S, 77, 1, false);
    assert_eq!(run(&mut e, &mut ping, INSIDE, 0), Verdict::Forward(OUTSIDE));
    let id = tuple(&ping).sport;
    assert_eq!(block_of(id), block_of(tuple(&f).sport), "the ICMP identifier is in the host's block");
    let b = sh.blocks.as_ref().expect("blocks");
    assert_eq!(b.list().len(), 1);
    // the flows expire (UDP unreplied 30 s, ICMP 30 s): the block is idle, then released
    let expire = Time::from_secs(31).plus(sh.config().timeouts.udp_unreplied);
    sh.sweep(expire, usize::MAX);
    assert_eq!(sh.flows.len(), 0);
    assert_eq!(b.list().len(), 1, "held after the last flow");
    sh.sweep(expire.plus(Duration::from_secs(11)), usize::MAX);
    assert!(b.list().is_empty(), "given back after the hold");
    let evs: Vec<_> = std::iter::from_fn(|| b.pop_event()).map(|e| (e.kind, e.host)).collect();
    let host = u32::from_be_bytes(C1);
    assert_eq!(evs, vec![(BlockEventKind::Allocated, host), (BlockEventKind::Released, host)]);
}

#[test]
fn deterministic_blocks_are_a_function_of_the_inside_address() {
    // 4 blocks, 2 per host: 2 hosts per address; the example's /24 inside needs 256 — too many
    let err = xgw_dataplane::Shared::new(config(true)).expect_err("capacity");
    assert!(err.contains("deterministic port blocks") && err.contains("256 addresses"), "{err}");
    let mut cfg = config(true);
    // 10.0.0.0/30 (four addresses, the gateway's .1 among them) on two pool addresses
    cfg.ifaces[0].prefix_len = 30;
    cfg.nat.pool = vec![std::net::Ipv4Addr::new(203, 0, 113, 10), std::net::Ipv4Addr::new(203, 0, 113, 11)];
    let mut e = engine_with(cfg);
    for (host, block) in [([10, 0, 0, 2], [0, 1]), ([10, 0, 0, 3], [2, 3])] {
        let mut f = tcp(host, S, 40_000, 80, "S", b"");
        assert_eq!(run(&mut e, &mut f, INSIDE, 0), Verdict::Forward(OUTSIDE), "{host:?}");
        let t = tuple(&f);
        assert_eq!(
            t.src.octets(),
            [203, 0, 113, 11],
            "{host:?}: the third and fourth inside address map to the second"
        );
        assert!(block.contains(&block_of(t.sport)), "{host:?}: port {}", t.sport);
    }
    let b = e.shared().blocks.as_ref().expect("blocks");
    assert!(b.pop_event().is_none(), "deterministic blocks need no log");
}
