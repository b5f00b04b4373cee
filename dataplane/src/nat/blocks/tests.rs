use std::time::Duration;

use super::*;

fn nat(range: (u16, u16), reserved: Option<(u16, u16)>) -> NatConfig {
    NatConfig { port_range: range, host_ports: reserved, ..NatConfig::default() }
}

const A: u32 = 0xcb00_7101; // 203.0.113.1
const B: u32 = 0xcb00_7102;
const H1: u32 = 0x0a00_0005;
const H2: u32 = 0x0a00_0006;

fn dynamic(per_host: u16, range: (u16, u16), size: u16, addrs: &[u32]) -> PortBlocks {
    let cfg = BlockConfig { size, per_host, hold: Duration::from_secs(60), deterministic: false };
    PortBlocks::new(cfg, &nat(range, None), addrs, Vec::new(), 64)
}

fn events(b: &PortBlocks) -> Vec<(BlockEventKind, u32, (u16, u16))> {
    std::iter::from_fn(|| b.pop_event()).map(|e| (e.kind, e.host, e.ports)).collect()
}

#[test]
fn the_layout_cuts_the_range_into_whole_blocks_around_the_reserved_ports() {
    // (range, reserved, size, block starts)
    type Case = ((u16, u16), Option<(u16, u16)>, u16, &'static [u16]);
    let cases: &[Case] = &[
        ((1024, 2047), None, 256, &[1024, 1280, 1536, 1792]),
        ((1024, 2046), None, 256, &[1024, 1280, 1536]),
        ((1024, 2047), Some((1300, 1400)), 256, &[1024, 1536, 1792]),
        ((1024, 2047), Some((2047, 2047)), 512, &[1024]),
        ((1000, 1009), None, 5, &[1000, 1005]),
        ((65000, 65535), None, 1024, &[]),
    ];
    for &(range, reserved, size, want) in cases {
        let l = Layout::new(&nat(range, reserved), size);
        assert_eq!(l.starts, want, "{range:?} {reserved:?} {size}");
    }
    let l = Layout::new(&nat((1024, 2047), Some((1300, 1400))), 256);
    let lookups: &[(u16, Option<u16>)] =
        &[(1023, None), (1024, Some(0)), (1279, Some(0)), (1280, None), (1535, None), (1536, Some(1)), (2047, Some(2))];
    for &(port, want) in lookups {
        assert_eq!(l.block_of(port), want, "port {port}");
    }
    assert_eq!(l.ports(2), (1792, 2047));
}

#[test]
fn a_host_gets_blocks_as_it_needs_them_up_to_its_quota() {
    let b = dynamic(2, (1024, 2047), 256, &[A]);
    let t = Time::from_secs(1);
    let h = b.held(H1, A, t).expect("a first block");
    assert_eq!((h.n, h.starts[0]), (1, 1024));
    assert_eq!(b.held(H1, A, t).expect("the same").n, 1, "held again: no new block");
    let h = b.grow(H1, A, t).expect("a second");
    assert_eq!(&h.starts[..h.n], &[1024, 1280]);
    assert!(h.contains(1500, 256) && !h.contains(1536, 256));
    assert_eq!(b.grow(H1, A, t).err(), Some(Refusal::Quota));
    // the other host takes the last two; then the address has none left
    b.held(H2, A, t).expect("H2's first");
    b.grow(H2, A, t).expect("H2's second");
    let b3 = dynamic(4, (1024, 2047), 256, &[A]);
    for _ in 0..4 {
        b3.held(H1, A, t).ok();
        b3.grow(H1, A, t).ok();
    }
    assert_eq!(b3.held(H2, A, t).err(), Some(Refusal::Exhausted));
    assert_eq!(b3.list().iter().filter(|x| x.0 == H2).count(), 0, "a refused host holds nothing");
    assert_eq!(
        events(&b),
        vec![
            (BlockEventKind::Allocated, H1, (1024, 1279)),
            (BlockEventKind::Allocated, H1, (1280, 1535)),
            (BlockEventKind::QuotaExceeded, H1, (0, 0)),
            (BlockEventKind::Allocated, H2, (1536, 1791)),
            (BlockEventKind::Allocated, H2, (1792, 2047)),
        ]
    );
    assert_eq!((b.stats.allocated.get(), b.stats.quota_exceeded.get()), (4, 1));
    assert_eq!(b3.stats.exhausted.get(), 1);
}

#[test]
fn a_block_goes_back_after_its_last_flow_and_the_hold_time() {
    let b = dynamic(4, (1024, 2047), 256, &[A]);
    let t0 = Time::from_secs(10);
    b.held(H1, A, t0).expect("block");
    b.grow(H1, A, t0).expect("block");
    b.flow_added(H1, 1030);
    b.flow_added(H1, 1031);
    // the second block never had a flow: idle since it was given
    let _ = events(&b);
    assert_eq!(b.sweep(t0.plus(Duration::from_secs(30))), 0, "within the hold");
    assert_eq!(b.sweep(t0.plus(Duration::from_secs(70))), 1, "the empty one goes");
    b.flow_removed(H1, 1030, t0.plus(Duration::from_secs(71)));
    assert_eq!(b.sweep(t0.plus(Duration::from_secs(200))), 0, "one flow left");
    b.flow_removed(H1, 1031, t0.plus(Duration::from_secs(201)));
    assert_eq!(b.sweep(t0.plus(Duration::from_secs(240))), 0, "held 39 s so far");
    // a new flow within the hold keeps the block
    b.flow_added(H1, 1040);
    b.flow_removed(H1, 1040, t0.plus(Duration::from_secs(250)));
    assert_eq!(b.sweep(t0.plus(Duration::from_secs(300))), 0);
    assert_eq!(b.sweep(t0.plus(Duration::from_secs(311))), 1);
    assert!(b.list().is_empty());
    assert_eq!(
        events(&b),
        vec![(BlockEventKind::Released, H1, (1280, 1535)), (BlockEventKind::Released, H1, (1024, 1279))]
    );
    // released blocks go to the back of the free list
    assert_eq!(b.held(H2, A, t0.plus(Duration::from_secs(400))).expect("block").starts[0], 1536);
    assert_eq!(b.free_counts(), vec![(A, 3)]);
}

#[test]
fn a_sweep_runs_at_most_once_a_second() {
    let b = dynamic(4, (1024, 2047), 256, &[A]);
    let t0 = Time::from_secs(10);
    b.held(H1, A, t0).expect("block");
    assert_eq!(b.sweep(t0.plus(Duration::from_secs(61))), 1);
    b.held(H1, A, t0).expect("block");
    assert_eq!(b.sweep(t0.plus(Duration::from_millis(61_500))), 0, "half a second later: not again");
    assert_eq!(b.sweep(t0.plus(Duration::from_secs(62))), 1);
}

#[test]
fn deterministic_blocks_follow_the_inside_address() {
    // 4 blocks of 256 per address, 2 per host: 2 hosts per address, 2 addresses
    let cfg = BlockConfig { size: 256, per_host: 2, hold: Duration::ZERO, deterministic: true };
    let inside = vec![(0x0a00_0004, 2), (0x0a01_0000, 2)];
    let b = PortBlocks::new(cfg, &nat((1024, 2047), None), &[A, B], inside, 8);
    assert_eq!(b.capacity(), 4);
    let t = Time::from_secs(1);
    // (host, address, its blocks)
    let cases: &[(u32, u32, [u16; 2])] = &[
        (0x0a00_0004, A, [1024, 1280]),
        (0x0a00_0005, A, [1536, 1792]),
        (0x0a01_0000, B, [1024, 1280]),
        (0x0a01_0001, B, [1536, 1792]),
    ];
    for &(host, addr, want) in cases {
        assert_eq!(b.deterministic_addr(host), Some(addr), "{host:#x}");
        let h = b.held(host, addr, t).expect("mapped");
        assert_eq!(&h.starts[..h.n], &want, "{host:#x}");
    }
    assert_eq!(b.held(0x0a00_0006, A, t).err(), Some(Refusal::Exhausted), "beyond the inside subnets");
    assert_eq!(b.deterministic_addr(0x0a00_0006), None);
    assert_eq!(b.grow(0x0a00_0004, A, t).err(), Some(Refusal::Quota), "no more than its own");
    assert!(b.list().is_empty(), "nothing is allocated, so nothing is logged");
    assert_eq!(
        events(&b),
        vec![(BlockEventKind::Exhausted, 0x0a00_0006, (0, 0)), (BlockEventKind::QuotaExceeded, 0x0a00_0004, (0, 0))]
    );
}

#[test]
fn a_synced_flow_takes_its_block_for_its_host() {
    let b = dynamic(4, (1024, 2047), 256, &[A]);
    let t = Time::from_secs(1);
    b.adopt(H1, A, 1300, t);
    b.adopt(H1, A, 1301, t);
    assert_eq!(b.list(), vec![(H1, A, 1280, 1535, 2, Time::ZERO)]);
    // a block another host holds stays its own
    b.adopt(H2, A, 1302, t);
    assert_eq!(b.list().len(), 1);
    // the host's next block is another one
    let h = b.grow(H1, A, t).expect("block");
    assert_eq!(&h.starts[..h.n], &[1280, 1024]);
    assert!(events(&b).iter().all(|e| e.0 == BlockEventKind::Allocated), "adoption is not an allocation here");
}

#[test]
fn candidates_walk_the_host_blocks_from_an_offset_in_each() {
    let held = Held {
        n: 2,
        starts: {
            let mut s = [0; MAX];
            s[0] = 2000;
            s[1] = 1000;
            s
        },
        room: u32::MAX,
    };
    let cfg = NatConfig { max_probes: 100, ..NatConfig::default() };
    let v: Vec<u16> = BlockPorts::new(held, 4, 1002, &cfg, 6).collect();
    assert_eq!(v, vec![1002, 2002, 2003, 2000, 2001, 1002, 1003, 1000, 1001], "preserved first, then from offset 2");
    let v: Vec<u16> = BlockPorts::new(held, 4, 5000, &cfg, 0).collect();
    assert_eq!(v, vec![2000, 2001, 2002, 2003, 1000, 1001, 1002, 1003], "a port outside the blocks is not kept");
    let cfg = NatConfig { max_probes: 3, preserve_port: false, ..cfg };
    let v: Vec<u16> = BlockPorts::new(held, 4, 1002, &cfg, 1).collect();
    assert_eq!(v, vec![2001, 2002, 2003]);
}

/// A host's eight blocks of 1,024 ports hold more than the 4,096-probe budget: with its
/// first six blocks full, a walk from the first block never reached the last two and the
/// flow was refused. Blocks with room are walked first, so a free port is a block away.
#[test]
fn candidates_reach_the_blocks_with_room_when_the_first_ones_are_full() {
    let mut held = Held { n: 8, starts: [0; MAX], room: 0 };
    for i in 0..8 {
        held.starts[i] = 1024 + 1024 * i as u16;
    }
    held.room = 0b1100_0000; // blocks 0-5 full
    let taken = |p: u16| p < 1024 + 6 * 1024;
    let cfg = NatConfig::default();
    assert_eq!(cfg.max_probes, 4096);
    for seed in [0, 1, 511, 1023, 0xdead_beef] {
        let probes = BlockPorts::new(held, 1024, 40000, &cfg, seed).position(|p| !taken(p));
        assert!(probes.is_some_and(|n| n < 1024), "seed {seed}: {probes:?}");
    }
    // with room everywhere the order is the held one (earlier blocks fill first)
    let all = Held { room: u32::MAX, ..held };
    assert_eq!(BlockPorts::new(all, 1024, 40000, &cfg, 0).next(), Some(1024));
    let reordered = held.room_first();
    assert_eq!(&reordered.starts[..8], &[7168, 8192, 1024, 2048, 3072, 4096, 5120, 6144]);
    assert_eq!(reordered.room, 0b11);
}

/// The room a host's blocks show follows their flows: a block with as many flows as ports
/// has none.
#[test]
fn a_block_with_as_many_flows_as_ports_shows_no_room() {
    let b = dynamic(2, (1024, 1031), 4, &[A]);
    let t = Time::from_secs(1);
    b.held(H1, A, t).expect("first");
    let h = b.grow(H1, A, t).expect("second");
    assert_eq!(h.room, 0b11);
    for p in 1024..1028 {
        b.flow_added(H1, p);
    }
    b.flow_added(H1, 1028);
    let h = b.held(H1, A, t).expect("held");
    assert_eq!((&h.starts[..2], h.room), (&[1024, 1028][..], 0b10));
    b.flow_removed(H1, 1025, t);
    assert_eq!(b.held(H1, A, t).expect("held").room, 0b11);
}

#[test]
fn refusals_are_all_counted_but_queued_once_a_second_per_host() {
    let b = dynamic(1, (1024, 1151), 64, &[A]);
    let t = Time::from_secs(5);
    b.held(H1, A, t).expect("block");
    b.held(H2, A, t).expect("block");
    for i in 0..10 {
        assert_eq!(b.grow(H1, A, t.plus(Duration::from_millis(i * 150))).err(), Some(Refusal::Quota));
        assert_eq!(b.held(0x0a00_0009, A, t.plus(Duration::from_millis(i * 150))).err(), Some(Refusal::Exhausted));
    }
    assert_eq!((b.stats.quota_exceeded.get(), b.stats.exhausted.get()), (10, 10));
    let refusals: Vec<_> = events(&b).into_iter().filter(|e| e.2 == (0, 0)).map(|e| e.0).collect();
    // at 0 ms and 1050 ms (1.35 s is within a second of it)
    assert_eq!(
        refusals,
        vec![
            BlockEventKind::QuotaExceeded,
            BlockEventKind::Exhausted,
            BlockEventKind::QuotaExceeded,
            BlockEventKind::Exhausted
        ]
    );
}
