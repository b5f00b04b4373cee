//! The offload thread's own tests: folding readings, the sync period, the idle thread's
//! choice and its poll interval.
use super::schedule::*;
use super::*;
use std::time::Duration;
use xgw_dataplane::config::Timeouts;
use xgw_dataplane::conntrack::{FlowKind, L4State};

fn reading(packets: u64, bytes: u64, last_seen: u64) -> FastFlow {
    FastFlow { packets, bytes, last_seen, ..FastFlow::default() }
}

/// Each reading of one direction's counters, in order, against what the flow then holds.
#[test]
fn folding_adds_what_is_new_and_ignores_older_readings() {
    let base = 1_000;
    let mut flow = Flow::new(Default::default(), Default::default(), L4State::Udp, FlowKind::Snat, Time(0));
    let mut dir =
        Direction { iface: 0, key: FastKey::default(), packets: 0, bytes: 0, seen: 0, macs: ([0; 6], [0; 6]) };
    // (reading: packets, bytes, last seen) → (flow's packets, bytes, last seen)
    type Counts = (u64, u64, u64);
    let steps: [(Counts, Counts); 5] = [
        ((10, 640, base + 50), (10, 640, 50)),
        // the same reading again: nothing twice
        ((10, 640, base + 50), (10, 640, 50)),
        ((25, 1_600, base + 90), (25, 1_600, 90)),
        // a snapshot read before the last fold: older, ignored
        ((20, 1_280, base + 70), (25, 1_600, 90)),
        ((26, 1_664, base + 95), (26, 1_664, 95)),
    ];
    for (i, ((p, b, s), want)) in steps.into_iter().enumerate() {
        dir.fold(&mut flow, 1, &reading(p, b, s), base);
        assert_eq!((flow.packets[1], flow.bytes[1], flow.last_seen.0), want, "step {i}");
    }
    assert_eq!(flow.packets[0], 0, "the other direction untouched");
    assert!(flow.status & status::SEEN_REPLY != 0, "a reply direction's packet is a reply seen");
}

/// The period follows the shortest timeout an offloaded flow can have.
#[test]
fn the_sync_period_is_an_eighth_of_the_shortest_offloaded_timeout() {
    let s = Duration::from_secs;
    let d = Timeouts::default();
    // (UDP stream, PPTP GRE, established TCP) → period
    let rows = [
        ((d.udp_stream, d.pptp_gre, d.tcp_established), SYNC_EVERY_MAX),
        ((s(24), d.pptp_gre, d.tcp_established), s(3)),
        ((d.udp_stream, s(16), d.tcp_established), s(2)),
        ((d.udp_stream, d.pptp_gre, s(20)), Duration::from_millis(2_500)),
        ((s(4), d.pptp_gre, d.tcp_established), s(1)),
    ];
    for (i, ((udp_stream, pptp_gre, tcp_established), want)) in rows.into_iter().enumerate() {
        let t = Timeouts { udp_stream, pptp_gre, tcp_established, ..d };
        assert_eq!(sync_period(&t), want, "row {i}");
    }
}

/// The idle thread's choice, one row per case.
#[test]
fn an_idle_thread_starts_a_round_when_due_and_a_check_when_the_neighbours_moved() {
    let ms = Duration::from_millis;
    let period = ms(5_000);
    // (since the last round, since the last check, neighbours moved) → start
    let rows = [
        ((ms(100), ms(100), false), Start::Nothing),
        ((ms(5_000), ms(100), false), Start::Counters),
        ((ms(5_000), ms(2_000), true), Start::Counters),
        ((ms(3_000), ms(1_000), true), Start::Macs),
        ((ms(3_000), ms(999), true), Start::Nothing),
        ((ms(3_000), ms(3_000), false), Start::Nothing),
    ];
    for (i, ((round, check, moved), want)) in rows.into_iter().enumerate() {
        assert_eq!(start(round, check, moved, period), want, "row {i}");
    }
}

/// The idle poll backs off while nothing comes and is short again after work.
#[test]
fn the_idle_poll_backs_off_and_comes_back_after_work() {
    let ms = Duration::from_millis;
    // (last interval, worked) → next
    let rows = [
        ((ms(2), false), ms(4)),
        ((ms(4), false), ms(8)),
        ((ms(8), false), ms(16)),
        ((ms(16), false), ms(16)),
        ((ms(16), true), ms(2)),
        ((ms(2), true), ms(2)),
    ];
    for (i, ((last, worked), want)) in rows.into_iter().enumerate() {
        assert_eq!(next_poll(last, worked), want, "row {i}");
    }
}
