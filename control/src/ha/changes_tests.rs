#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::sync::Arc;

use etherparse::PacketBuilder;
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Verdict};

use super::*;

fn udp(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(src, [198, 51, 100, 7], 64)
        .udp(sport, 53)
        .write(&mut v, b"query")
        .expect("frame");
    v
}

fn run(e: &mut Engine, f: &[u8], t: Time) -> Verdict {
    let mut buf = f.to_vec();
    buf.resize(512, 0);
    let mut fb = FrameBuf { buf: &mut buf[..], len: f.len() };
    e.process(&mut fb, RxMeta { iface: IfaceId(0) }, t)
}

fn setup() -> (Arc<Shared>, Engine) {
    let s = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let e = Engine::new(Arc::clone(&s));
    (s, e)
}

fn full_pass(c: &mut Changes, s: &Shared, t: Time) {
    c.walk(s, u32::MAX, t);
}

fn drain(c: &mut Changes) -> Vec<Record> {
    c.pending.drain(..).collect()
}

fn flows(r: &[Record]) -> usize {
    r.iter().filter(|r| matches!(r, Record::Flow(_))).count()
}

#[test]
fn a_new_flow_is_told_once_from_its_event_and_not_again_by_the_walk() {
    let (s, mut e) = setup();
    let t = Time::from_secs(1);
    assert_eq!(run(&mut e, &udp([10, 0, 0, 5], 5000), t), Verdict::Forward(IfaceId(1)));
    let mut c = Changes::default();
    let ev = s.flows.pop_event().expect("the engine's New event");
    c.on_event(&ev, &s, t);
    c.on_event(&ev, &s, t);
    assert_eq!(flows(&drain(&mut c)), 1, "told once");
    full_pass(&mut c, &s, t);
    assert!(drain(&mut c).is_empty(), "nothing changed");
}

#[test]
fn the_walk_finds_unannounced_flows_refreshes_idle_timers_lazily_and_tells_ends() {
    let (s, mut e) = setup();
    let t = Time::from_secs(1);
    for i in 0..3 {
        run(&mut e, &udp([10, 0, 0, 5 + i], 5000), t);
    }
    let mut c = Changes::default();
    full_pass(&mut c, &s, t);
    assert_eq!(flows(&drain(&mut c)), 3, "every flow, found by the walk");

    // a packet 100 ms later moves the idle timer by less than the refresh step: not told
    run(&mut e, &udp([10, 0, 0, 5], 5000), t.plus(Duration::from_millis(100)));
    full_pass(&mut c, &s, t.plus(Duration::from_millis(100)));
    assert!(drain(&mut c).is_empty(), "a small move of the idle timer is not told");
    // 20 s later, past an eighth of the 120-s unreplied UDP timeout, it is
    let later = t.plus(Duration::from_secs(20));
    run(&mut e, &udp([10, 0, 0, 5], 5000), later);
    full_pass(&mut c, &s, later);
    let r = drain(&mut c);
    assert_eq!(flows(&r), 1, "{r:?}");
    let Record::Flow(f) = &r[0] else { unreachable!("a flow record") };
    assert!(f.remaining > Duration::from_secs(20), "the remaining idle time as of now: {:?}", f.remaining);

    // one flow ends without its event being seen: the next pass tells its end
    let key = f.keys[0];
    s.flows.remove_key(&key, later).expect("removed");
    full_pass(&mut c, &s, later);
    let r = drain(&mut c);
    assert!(matches!(r.as_slice(), [Record::Gone { key: k, .. }] if *k == key), "{r:?}");
}

#[test]
fn an_ended_flow_is_told_from_its_event_only_if_it_was_told_at_all() {
    let (s, mut e) = setup();
    let t = Time::from_secs(1);
    run(&mut e, &udp([10, 0, 0, 5], 5000), t);
    let new = s.flows.pop_event().expect("new");
    let mut c = Changes::default();
    let mut gone = new;
    gone.kind = EventKind::Destroy;
    c.on_event(&gone, &s, t);
    assert!(drain(&mut c).is_empty(), "never told: its end is not either");
    c.on_event(&new, &s, t);
    c.on_event(&gone, &s, t);
    let r = drain(&mut c);
    assert!(matches!(r.as_slice(), [Record::Flow(_), Record::Gone { .. }]), "{r:?}");
}

#[test]
fn a_bulk_resync_tells_everything_again_and_ends_with_its_marker() {
    let (s, mut e) = setup();
    let t = Time::from_secs(1);
    for i in 0..4 {
        run(&mut e, &udp([10, 0, 0, 5 + i], 5000), t);
    }
    let mut c = Changes::default();
    full_pass(&mut c, &s, t);
    drain(&mut c);
    c.start_bulk();
    assert!(c.bulk());
    // in small steps: the marker comes only once the pass completed
    let mut r = Vec::new();
    while c.bulk() {
        c.walk(&s, 7, t);
        r.extend(drain(&mut c));
    }
    assert_eq!(flows(&r), 4, "{r:?}");
    assert_eq!(r.last(), Some(&Record::BulkEnd));
    assert_eq!(r.iter().filter(|x| **x == Record::BulkEnd).count(), 1);
}

#[test]
fn a_demotion_forgets_what_was_told() {
    let (s, mut e) = setup();
    let t = Time::from_secs(1);
    run(&mut e, &udp([10, 0, 0, 5], 5000), t);
    let mut c = Changes::default();
    full_pass(&mut c, &s, t);
    assert_eq!(c.told(), 1);
    c.reset();
    assert_eq!((c.told(), c.pending.len()), (0, 0));
    full_pass(&mut c, &s, t);
    assert_eq!(flows(&drain(&mut c)), 1, "told again after a reset");
}
