//! The table's own tests: insertion, lookups, collisions, removal, the sweep.

use super::*;
use crate::config::IfaceId;
use crate::conntrack::tcp::TcpState;

fn key(src: u32, sport: u16) -> FlowKey {
    FlowKey { src, dst: 0xc633_6414, sport, dport: 80, proto: 6 }
}

fn build(reply: FlowKey) -> Flow {
    let rw = Rewrite { src: reply.dst, dst: reply.src, sport: reply.dport, dport: reply.sport, egress: IfaceId(1) };
    Flow::new(
        [FlowKey::default(), reply],
        [rw, Rewrite::default()],
        L4State::Tcp(TcpState::SynSent),
        FlowKind::Snat,
        Time::ZERO,
    )
}

#[test]
fn insert_lookup_both_directions() {
    let t = FlowTable::new(4, 8);
    let o = key(1, 1000);
    let r = FlowKey { src: o.dst, dst: 9, sport: 80, dport: 1000, proto: 6 };
    let (fr, _) = t.insert(o, [r], build, Time::ZERO).expect("insert");
    assert_eq!(fr.dir(), Dir::Orig);
    assert_eq!(t.lookup(&o).map(FlowRef::dir), Some(Dir::Orig));
    assert_eq!(t.lookup(&r).map(FlowRef::dir), Some(Dir::Reply));
    assert_eq!(t.len(), 1);
    assert!(matches!(t.pop_event(), Some(FlowEvent { kind: EventKind::New, .. })));
    let got = t.with_flow(t.lookup(&r).expect("hit"), &r, |f, d| (f.keys[1], d));
    assert_eq!(got, Some((r, Dir::Reply)));
}

#[test]
fn full_table_refuses_and_keeps_existing() {
    let t = FlowTable::new(2, 0);
    let mk = |i: u32| {
        let o = key(i, 1);
        let r = FlowKey { src: o.dst, dst: 9, sport: 80, dport: i as u16, proto: 6 };
        t.insert(o, [r], build, Time::ZERO)
    };
    assert!(mk(1).is_ok());
    assert!(mk(2).is_ok());
    assert_eq!(mk(3).err(), Some(InsertError::Full));
    assert_eq!(t.stats.insert_failed_full.get(), 1);
    assert!(t.lookup(&key(1, 1)).is_some() && t.lookup(&key(2, 1)).is_some());
}

#[test]
fn taken_reply_key_tries_next_candidate() {
    let t = FlowTable::new(4, 0);
    let r1 = FlowKey { src: 7, dst: 9, sport: 80, dport: 1000, proto: 6 };
    let r2 = FlowKey { dport: 1001, ..r1 };
    t.insert(key(1, 1000), [r1], build, Time::ZERO).expect("first");
    let (_, f) = t.insert(key(2, 1000), [r1, r2], build, Time::ZERO).expect("second");
    assert_eq!(f.keys[1], r2);
    assert_eq!(t.insert(key(3, 1000), [r1, r2], build, Time::ZERO).err(), Some(InsertError::NoReplyKey));
    assert_eq!(t.len(), 2);
}

#[test]
fn duplicate_orig_reports_existing() {
    let t = FlowTable::new(4, 0);
    let r1 = FlowKey { src: 7, dst: 9, sport: 80, dport: 1000, proto: 6 };
    let r2 = FlowKey { dport: 1001, ..r1 };
    t.insert(key(1, 1000), [r1], build, Time::ZERO).expect("first");
    assert!(matches!(t.insert(key(1, 1000), [r2], build, Time::ZERO), Err(InsertError::Exists(_))));
    assert_eq!(t.len(), 1);
    assert!(t.lookup(&r2).is_none(), "the loser's reply key is released");
}

#[test]
fn sweep_expires_and_frees_slots() {
    let t = FlowTable::new(2, 0);
    let to = Timeouts::default();
    let r1 = FlowKey { src: 7, dst: 9, sport: 80, dport: 1000, proto: 6 };
    t.insert(key(1, 1000), [r1], build, Time::ZERO).expect("insert");
    assert_eq!(t.sweep(Time::from_secs(119), 2, &to, |_| {}), 0);
    let mut seen = 0;
    assert_eq!(t.sweep(Time::from_secs(121), 2, &to, |_| seen += 1), 1);
    assert_eq!((seen, t.len()), (1, 0));
    assert!(t.lookup(&r1).is_none());
    // the slot can be used again
    t.insert(key(2, 1000), [r1], build, Time::ZERO).expect("reuse");
}

#[test]
fn flows_whose_keys_share_an_index_tag_are_told_apart() {
    let t = FlowTable::new(4, 0);
    // two reply keys with the same bucket and tag (the index cannot tell them apart)
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..=u16::MAX)
        .map(|p| FlowKey { src: 7, dst: 9, sport: 80, dport: p, proto: 6 })
        .find_map(|k| seen.insert(t.index.probe(&k), k).map(|j| (j, k)))
        .expect("a collision among 65 536 keys");
    let (fa, _) = t.insert(key(1, 1000), [a], build, Time::ZERO).expect("first");
    let (fb, _) = t.insert(key(2, 1000), [b], build, Time::ZERO).expect("second: a's entry is not b's key");
    let (ra, rb) = (FlowRef::new(fa.slot(), Dir::Reply), FlowRef::new(fb.slot(), Dir::Reply));
    assert_eq!((t.lookup(&a), t.lookup(&b)), (Some(ra), Some(rb)));
    // the packet path's unconfirmed candidate is one of them for both keys; the lock
    // check refuses it for the other key
    let cand = t.lookup_probe(&t.probe(&b)).expect("candidate");
    assert!(cand == ra || cand == rb);
    let other = if cand == ra { b } else { a };
    assert_eq!(t.with_flow(cand, &other, |_, _| ()), None);
    // a third flow wanting key a as its reply finds it taken, not stale
    assert_eq!(t.insert(key(3, 1000), [a], build, Time::ZERO).err(), Some(InsertError::NoReplyKey));
    assert!(t.remove_key(&a, Time::ZERO).is_some());
    assert_eq!((t.lookup(&a), t.lookup(&b)), (None, Some(rb)));
}

#[test]
fn stale_index_entry_is_reclaimed() {
    let t = FlowTable::new(2, 0);
    let r1 = FlowKey { src: 7, dst: 9, sport: 80, dport: 1000, proto: 6 };
    let (fr, _) = t.insert(key(1, 1000), [r1], build, Time::ZERO).expect("insert");
    // simulate the window between marking dead and unlinking
    t.slots[fr.slot() as usize].lock().set_live(false);
    let (_, f) = t.insert(key(2, 1000), [r1], build, Time::ZERO).expect("reclaims");
    assert_eq!(f.keys[1], r1);
}

/// `Flow::count_packet`, one row per case: the flow's state and status before, the packet
/// (direction, TCP flags), and what the flow holds after.
#[test]
fn counting_a_packet_moves_state_status_and_counters() {
    use crate::wire::tcp::flags::{ACK, FIN, RST, SYN};
    let t = Time::from_millis(5);
    let embryonic = status::EMBRYONIC | status::HOST_COUNTED;
    /// (state, status) before, direction, TCP flags, result, (state, status) after
    type Row = (L4State, u8, Dir, u8, Result<bool, InvalidSegment>, L4State, u8);
    #[rustfmt::skip]
    let rows: [Row; 8] = [
        // a SYN-ACK: the handshake half done, still half-open; the reply is seen
        (L4State::Tcp(TcpState::SynSent), embryonic, Dir::Reply, SYN | ACK, Ok(false),
            L4State::Tcp(TcpState::SynRecv), embryonic | status::SEEN_REPLY),
        // the final ACK: established, assured (a reply was seen), no longer half-open
        (L4State::Tcp(TcpState::SynRecv), embryonic | status::SEEN_REPLY, Dir::Orig, ACK, Ok(true),
            L4State::Tcp(TcpState::Established), status::HOST_COUNTED | status::SEEN_REPLY | status::ASSURED),
        // an RST in a half-open connection leaves the embryonic count too
        (L4State::Tcp(TcpState::SynSent), embryonic, Dir::Reply, RST | ACK, Ok(true),
            L4State::Tcp(TcpState::Close), status::HOST_COUNTED | status::SEEN_REPLY),
        // a FIN from the inside
        (L4State::Tcp(TcpState::Established), status::SEEN_REPLY | status::ASSURED, Dir::Orig, FIN | ACK, Ok(false),
            L4State::Tcp(TcpState::FinWait), status::SEEN_REPLY | status::ASSURED),
        // a SYN on a closed port pair: a new connection on the old mapping, status reset
        (L4State::Tcp(TcpState::TimeWait), status::SEEN_REPLY | status::ASSURED | status::HOST_COUNTED, Dir::Orig, SYN,
            Ok(false), L4State::Tcp(TcpState::SynSent), status::HOST_COUNTED),
        // a SYN-ACK from the inside's side to an established connection: refused, nothing moves
        (L4State::Tcp(TcpState::Established), status::SEEN_REPLY, Dir::Orig, SYN | ACK, Err(InvalidSegment),
            L4State::Tcp(TcpState::Established), status::SEEN_REPLY),
        // UDP: the first reply marks it seen, the next packet after it makes it assured
        (L4State::Udp, 0, Dir::Reply, 0, Ok(false), L4State::Udp, status::SEEN_REPLY),
        (L4State::Udp, status::SEEN_REPLY, Dir::Orig, 0, Ok(false), L4State::Udp, status::SEEN_REPLY | status::ASSURED),
    ];
    for (i, (l4, st, dir, flags, want, l4_after, st_after)) in rows.into_iter().enumerate() {
        let mut f = build(key(1, 1));
        f.l4 = l4;
        f.status = st;
        let got = f.count_packet(dir, flags, 100, t);
        assert_eq!(got, want, "row {i}");
        assert_eq!((f.l4, f.status), (l4_after, st_after), "row {i}");
        let counted = u64::from(want.is_ok());
        assert_eq!((f.packets[dir.index()], f.bytes[dir.index()]), (counted, 100 * counted), "row {i}");
        assert_eq!(f.last_seen == t, want.is_ok(), "row {i}");
    }
}
