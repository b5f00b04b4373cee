//! The engine's side of the fast path: which flows are offered, when they are taken back,
//! and that the fast path's counts reach the flow before it could expire — with a recording
//! fake in place of the XDP maps.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use xgw_dataplane::conntrack::offload::{FastPath, Request};
use xgw_dataplane::conntrack::{status, Flow, FlowKey};
use xgw_dataplane::{Engine, Time, Verdict};

#[derive(Default)]
struct Fake {
    /// (call, flow id) in order.
    calls: Mutex<Vec<(&'static str, u64)>>,
    /// What the fast path "counted" since the last refresh: (packets, last seen ms).
    pending: Mutex<Option<(u64, u64)>>,
}

impl FastPath for Fake {
    fn refresh(&self, flow: &mut Flow) {
        self.calls.lock().expect("lock").push(("refresh", flow.id));
        if let Some((p, t)) = self.pending.lock().expect("lock").take() {
            flow.packets[0] += p;
            flow.last_seen = flow.last_seen.max(Time::from_millis(t));
        }
    }
    fn withdraw(&self, flow: &mut Flow) {
        self.refresh(flow);
        self.calls.lock().expect("lock").push(("withdraw", flow.id));
    }
}

fn offloading() -> (Engine, Arc<Fake>) {
    let e = engine();
    let fake = Arc::new(Fake::default());
    e.shared().flows.offload.connect(fake.clone());
    (e, fake)
}

fn key(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey { src: u32::from_be_bytes(src), dst: u32::from_be_bytes(dst), sport, dport, proto }
}

fn flow_of(e: &Engine, k: &FlowKey) -> Option<Flow> {
    let t = &e.shared().flows;
    t.with_flow(t.lookup(k)?, k, |f, _| *f)
}

#[test]
fn udp_is_offered_once_assured_and_only_once() {
    let (mut e, _fake) = offloading();
    let k = key(C1, S, 5000, 53, 17);
    let mut q = udp(C1, S, 5000, 53, b"q");
    assert_eq!(run(&mut e, &mut q, INSIDE, 0), Verdict::Forward(OUTSIDE));
    assert_eq!(e.shared().flows.offload.pop(), None, "unreplied: not yet");
    let p = tuple(&q).sport;
    let mut a = udp(S, P, 53, p, b"a");
    assert_eq!(run(&mut e, &mut a, OUTSIDE, 1), Verdict::Forward(INSIDE));
    // the reply makes it seen-reply; the next packet makes it assured and offered
    let mut q2 = udp(C1, S, 5000, 53, b"q2");
    run(&mut e, &mut q2, INSIDE, 2);
    let f = flow_of(&e, &k).expect("flow");
    assert!(f.status & status::OFFLOAD != 0);
    assert_eq!(
        e.shared().flows.offload.pop(),
        Some(Request { slot: e.shared().flows.lookup(&k).expect("r").slot(), id: f.id })
    );
    for t in 3..10 {
        let mut more = udp(C1, S, 5000, 53, b"more");
        run(&mut e, &mut more, INSIDE, t);
    }
    assert_eq!(e.shared().flows.offload.pop(), None, "one request per flow");
    assert_eq!(e.shared().flows.offload.stats.requested.get(), 1);
}

#[test]
fn nothing_is_offered_while_offload_is_off() {
    let mut e = engine();
    let mut q = udp(C1, S, 5000, 53, b"q");
    run(&mut e, &mut q, INSIDE, 0);
    let mut a = udp(S, P, 53, tuple(&q).sport, b"a");
    run(&mut e, &mut a, OUTSIDE, 1);
    let mut q = udp(C1, S, 5000, 53, b"q");
    run(&mut e, &mut q, INSIDE, 2);
    assert_eq!(e.shared().flows.offload.pop(), None);
    let f = flow_of(&e, &key(C1, S, 5000, 53, 17)).expect("flow");
    assert!(f.assured() && f.status & status::OFFLOAD == 0);
}

/// Sets up an established, assured TCP connection and returns its outside port.
fn established_tcp(e: &mut Engine) -> u16 {
    let mut syn = tcp(C1, S, 5555, 443, "S", b"");
    assert_eq!(run(e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
    let p = tuple(&syn).sport;
    let mut synack = tcp(S, P, 443, p, "SA", b"");
    assert_eq!(run(e, &mut synack, OUTSIDE, 1), Verdict::Forward(INSIDE));
    let mut ack = tcp(C1, S, 5555, 443, "A", b"");
    assert_eq!(run(e, &mut ack, INSIDE, 2), Verdict::Forward(OUTSIDE));
    p
}

#[test]
fn tcp_is_offered_when_established_and_taken_back_at_fin() {
    let (mut e, fake) = offloading();
    let k = key(C1, S, 5555, 443, 6);
    established_tcp(&mut e);
    let id = flow_of(&e, &k).expect("flow").id;
    assert!(e.shared().flows.offload.pop().is_some(), "offered after the handshake");
    let calls_before = fake.calls.lock().expect("lock").len();
    let mut fin = tcp(C1, S, 5555, 443, "FA", b"");
    assert_eq!(run(&mut e, &mut fin, INSIDE, 3), Verdict::Forward(OUTSIDE));
    let f = flow_of(&e, &k).expect("still tracked");
    assert_eq!(f.status & status::OFFLOAD, 0, "given back");
    // the packet path called nothing of the fast path (each call is a syscall under the
    // slot lock): the withdrawal waits in the queue for the control plane
    assert_eq!(fake.calls.lock().expect("lock").len(), calls_before, "no fast-path call from the packet path");
    let w = e.shared().flows.offload.pop_withdrawal().expect("withdrawal queued");
    assert_eq!(w.id, id);
    assert_eq!(e.shared().flows.offload.pop_withdrawal(), None, "once");
    assert_eq!(e.shared().flows.offload.stats.withdrawn.get(), 1);
    assert_eq!(e.shared().flows.offload.stats.withdraw_queued.get(), 1);
    let mut ack = tcp(C1, S, 5555, 443, "A", b"");
    run(&mut e, &mut ack, INSIDE, 4);
    assert_eq!(e.shared().flows.offload.pop(), None, "a closing connection is not offered again");
}

#[test]
fn removal_takes_the_flow_back_first_and_keeps_its_counts() {
    let (mut e, fake) = offloading();
    let k = key(C1, S, 5555, 443, 6);
    established_tcp(&mut e);
    let id = flow_of(&e, &k).expect("flow").id;
    *fake.pending.lock().expect("lock") = Some((1000, 5));
    let n = e.shared().delete_flows(Time::from_millis(6), |f| f.id == id);
    assert_eq!(n, 1);
    assert_eq!(fake.calls.lock().expect("lock").last(), Some(&("withdraw", id)));
    assert!(flow_of(&e, &k).is_none());
    // the destroy event carries what the fast path counted
    let mut gone = None;
    while let Some(ev) = e.shared().flows.pop_event() {
        if ev.flow.id == id && ev.kind == xgw_dataplane::conntrack::EventKind::Destroy {
            gone = Some(ev.flow);
        }
    }
    assert_eq!(gone.expect("destroy event").packets[0], 2 + 1000);
}

#[test]
fn expiry_asks_the_fast_path_before_deciding() {
    let (mut e, fake) = offloading();
    let k = key(C1, S, 5000, 53, 17);
    let mut q = udp(C1, S, 5000, 53, b"q");
    run(&mut e, &mut q, INSIDE, 0);
    let p = tuple(&q).sport;
    let mut a = udp(S, P, 53, p, b"a");
    run(&mut e, &mut a, OUTSIDE, 1);
    let mut q2 = udp(C1, S, 5000, 53, b"q2");
    run(&mut e, &mut q2, INSIDE, 2);
    let timeout = e.shared().config().timeouts.udp_stream;
    let late = Time::from_millis(2).plus(timeout).plus(core::time::Duration::from_secs(1));
    // the fast path saw a packet 10 s before `late`: the flow is not idle
    *fake.pending.lock().expect("lock") = Some((7, late.as_nanos() / 1_000_000 - 10_000));
    let cap = e.shared().flows.capacity();
    assert_eq!(e.shared().flows.sweep(late, cap, &e.shared().config().timeouts, |_| {}), 0);
    let f = flow_of(&e, &k).expect("kept alive by the fast path");
    assert_eq!(f.packets[0], 2 + 7);
    // once really idle it goes, given back first
    let later = late.plus(timeout).plus(core::time::Duration::from_secs(1));
    assert_eq!(e.shared().flows.sweep(later, cap, &e.shared().config().timeouts, |_| {}), 1);
    assert_eq!(fake.calls.lock().expect("lock").last(), Some(&("withdraw", f.id)));
}
