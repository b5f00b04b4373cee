//! The FT-FW channel: one test per transition of the receiver, the sender's answers to ACK
//! and NACK, and a lossy, reordering, duplicating link on which every message is applied
//! exactly once in the end.
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::time::Duration;

use proptest::prelude::*;
use xgw_dataplane::Time;
use xgw_sync::channel::{after, Params, PeerState, Receiver, Sender, SenderAction};
use xgw_sync::wire::{Kind, Message};

/// The session of the scripted sender.
const S: u32 = 0x5e55;

fn data(seq: u32) -> Message {
    Message { kind: Kind::Data, seq, a: 0, b: S, payload: vec![seq as u8] }
}

fn kinds(v: &[Message]) -> Vec<(Kind, u32, u32)> {
    v.iter().map(|m| (m.kind, m.a, m.b)).collect()
}

#[test]
fn serial_number_order_wraps() {
    assert!(after(1, 0) && after(0, u32::MAX) && !after(0, 1) && !after(5, 5));
    assert!(after(0x7fff_ffff, 0) && !after(0x8000_0000, 0));
}

#[test]
fn receiver_transitions() {
    let p = Params { ack_every: 3, window: 8, ..Params::default() };
    let t = Time::from_millis(0);
    // (what arrives, applied?, replies (kind, a, b)) after a HELLO at 10 and data 10
    type Case = (&'static str, Vec<Message>, Message, bool, Vec<(Kind, u32, u32)>);
    let cases: Vec<Case> = vec![
        ("in order", vec![], data(11), true, vec![]),
        ("in order, the ack_every-th", vec![data(11)], data(12), true, vec![(Kind::Ack, 12, 0)]),
        ("a gap: NACK, applied", vec![], data(14), true, vec![(Kind::Nack, 11, 13)]),
        ("the gap filled: applied, ACK", vec![data(12)], data(11), true, vec![(Kind::Ack, 12, 0)]),
        ("one of two filled: applied, ACK below the other", vec![data(13)], data(11), true, vec![(Kind::Ack, 11, 0)]),
        ("a duplicate: not applied, ACK", vec![data(11)], data(11), false, vec![(Kind::Ack, 11, 0)]),
        ("a gap larger than the window: RESYNC", vec![], data(40), true, vec![(Kind::Resync, 0, 0)]),
        (
            "ALIVE telling of lost ones at the end",
            vec![],
            Message::control(Kind::Alive, 13, 10, S),
            false,
            vec![(Kind::Nack, 11, 12)],
        ),
        (
            "ALIVE with nothing missing",
            vec![],
            Message::control(Kind::Alive, 11, 10, S),
            false,
            vec![(Kind::Ack, 10, 0)],
        ),
        (
            "a late HELLO of this session changes nothing",
            vec![],
            Message::control(Kind::Hello, 10, 0, S),
            false,
            vec![],
        ),
        ("another session (a restart) counts anew", vec![], Message::control(Kind::Hello, 500, 0, 9), false, vec![]),
    ];
    for (what, before, m, apply, reply) in cases {
        let mut r = Receiver::new(p);
        r.on_message(&Message::control(Kind::Hello, 10, 0, S), t);
        assert!(r.on_message(&data(10), t).apply);
        for b in &before {
            r.on_message(b, t);
        }
        let got = r.on_message(&m, t);
        assert_eq!((got.apply, kinds(&got.reply)), (apply, reply), "{what}");
    }
    // a receiver that missed the HELLO applies the first Data it gets and asks for a resync
    // (it cannot know what came before); then counts from there
    let mut r = Receiver::new(p);
    let got = r.on_message(&data(77), t);
    assert!(got.apply);
    assert_eq!(kinds(&got.reply), vec![(Kind::Resync, 0, 0)]);
    assert_eq!(kinds(&r.on_message(&data(79), t).reply), vec![(Kind::Nack, 78, 78)]);
    // an open gap is asked for again after resend_after
    assert_eq!(r.tick(Time::from_millis(100)), None);
    assert_eq!(r.tick(Time::from_millis(200)).map(|m| (m.kind, m.a, m.b)), Some((Kind::Nack, 78, 78)));
    // without a HELLO, an ALIVE whose sender sent nothing yet (a == seq) starts the count
    let mut r = Receiver::new(p);
    assert!(r.on_message(&Message::control(Kind::Alive, 5, 5, S), t).reply.is_empty());
    assert!(r.on_message(&data(5), t).reply.is_empty());
}

#[test]
fn the_peer_is_alive_until_silent_for_dead_after() {
    let p = Params::default();
    let mut r = Receiver::new(p);
    assert_eq!(r.peer(Time::from_millis(5)), PeerState::Unknown);
    r.on_message(&Message::control(Kind::Alive, 1, 1, S), Time::from_millis(100));
    assert_eq!(r.peer(Time::from_millis(1100)), PeerState::Alive);
    assert_eq!(r.peer(Time::from_millis(1101)), PeerState::Gone);
}

#[test]
fn sender_resends_on_nack_forgets_on_ack_and_asks_for_resync_when_too_old() {
    let p = Params { window: 4, ..Params::default() };
    let t = Time::from_millis(0);
    let mut s = Sender::new(p, S, 100, t);
    for _ in 0..4 {
        s.data(vec![1], t);
    }
    assert_eq!(s.unacked(), 4);
    match s.on_nack(101, 102, t) {
        SenderAction::Resend(v) => assert_eq!(v.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![101, 102]),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.unacked(), 4, "a NACK acknowledges nothing: an earlier gap may be open");
    s.on_ack(102);
    assert_eq!((s.unacked(), s.acked, s.resent), (1, 3, 2));
    s.on_ack(102);
    assert_eq!(s.acked, 3, "an ACK repeated acknowledges nothing more");
    // a NACK from the future or backwards is ignored
    assert_eq!(s.on_nack(200, 201, t), SenderAction::None);
    assert_eq!(s.on_nack(103, 101, t), SenderAction::None);
    // the window drops the oldest: asking for it needs a resync
    for _ in 0..4 {
        s.data(vec![2], t);
    }
    assert_eq!(s.on_nack(103, 104, t), SenderAction::Resync);
    assert_eq!(s.too_old, 1);
}

#[test]
fn sender_resends_the_oldest_after_a_silence_and_says_alive_when_idle() {
    let p = Params::default();
    let mut s = Sender::new(p, S, 0, Time::from_millis(0));
    assert_eq!(s.tick(Time::from_millis(50)), None);
    assert_eq!(s.tick(Time::from_millis(100)).map(|m| m.kind), Some(Kind::Alive));
    s.data(vec![9], Time::from_millis(100));
    assert_eq!(s.tick(Time::from_millis(299)).map(|m| (m.kind, m.seq, m.a)), Some((Kind::Alive, 1, 0)));
    assert_eq!(s.tick(Time::from_millis(300)).map(|m| (m.kind, m.seq)), Some((Kind::Data, 0)));
    assert_eq!(s.resent, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// A link that loses (both ways), duplicates and reorders: once it heals and time passes,
    /// every Data message has been applied exactly once, without a resync (the window holds
    /// them all), and nothing is left unacknowledged.
    #[test]
    fn a_bad_link_loses_nothing_in_the_end(
        n in 1usize..200,
        fate in proptest::collection::vec(0u8..10, 400),
        start in any::<u32>(),
    ) {
        let p = Params { window: 1024, ack_every: 4, ..Params::default() };
        let mut now = Time::from_millis(0);
        let mut s = Sender::new(p, S, start, now);
        let mut r = Receiver::new(p);
        let mut applied = std::collections::HashMap::<u32, u32>::new();
        // the HELLO arrives (its loss is the receiver_transitions test's case)
        let hello = s.hello(now);
        r.on_message(&hello, now);
        let mut to_r: Vec<Message> = Vec::new();
        let mut to_s: Vec<Message> = Vec::new();
        let mut f = fate.iter().cycle();
        let mut resync = false;
        for step in 0..2000 {
            now = now.plus(Duration::from_millis(10));
            let healed = step > 600;
            if step < n { to_r.push(s.data(vec![], now)); }
            if let Some(m) = s.tick(now) { to_r.push(m); }
            if let Some(m) = r.tick(now) { to_s.push(m); }
            // deliver to the receiver: lose (0), duplicate (1), hold back one round (2)
            let mut later = Vec::new();
            for m in to_r.drain(..) {
                match if healed { 9 } else { *f.next().unwrap_or(&9) } {
                    0 => {}
                    1 => { for _ in 0..2 { let got = r.on_message(&m, now); if got.apply { *applied.entry(m.seq).or_default() += 1; } to_s.extend(got.reply); } }
                    2 => later.push(m),
                    _ => { let got = r.on_message(&m, now); if got.apply { *applied.entry(m.seq).or_default() += 1; } to_s.extend(got.reply); }
                }
            }
            to_r = later;
            for m in to_s.drain(..) {
                if !healed && *f.next().unwrap_or(&9) == 0 { continue; }
                match m.kind {
                    Kind::Ack => s.on_ack(m.a),
                    Kind::Nack => match s.on_nack(m.a, m.b, now) {
                        SenderAction::Resend(v) => to_r.extend(v),
                        SenderAction::Resync => resync = true,
                        SenderAction::None => {}
                    },
                    Kind::Resync => resync = true,
                    _ => {}
                }
            }
        }
        // the window holds every message and the HELLO arrived: no resync is ever needed
        prop_assert!(!resync && r.resyncs == 0 && s.too_old == 0);
        for i in 0..n as u32 {
            let seq = start.wrapping_add(i);
            prop_assert_eq!(applied.get(&seq).copied().unwrap_or(0), 1, "message {} applied {:?} times", i, applied.get(&seq));
        }
        prop_assert_eq!(s.unacked(), 0);
    }
}
