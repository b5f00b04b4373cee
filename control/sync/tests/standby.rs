//! Two engines, an active and a standby, joined by the sync channel over an in-memory link
//! (encoded with a key, decoded, FT-FW numbered): after the active's flows are synced, the
//! standby translates their replies exactly as the active would, keeps their outside ports
//! out of its own allocations, expires them when the active would have, and drops them when
//! the active says they are gone.
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::sync::Arc;
use std::time::Duration;

use etherparse::PacketBuilder;
mod common;

use common::run;
use xgw_dataplane::{Engine, EngineConfig, IfaceId, Shared, Time, Verdict};
use xgw_sync::apply::{apply, Applied};
use xgw_sync::channel::{Params, Receiver, Sender};
use xgw_sync::record::{Batch, Record, SyncFlow};
use xgw_sync::wire::Message;

const INSIDE: IfaceId = IfaceId(0);
const OUTSIDE: IfaceId = IfaceId(1);
const OUT: [u8; 4] = [203, 0, 113, 1];
const SRV: [u8; 4] = [198, 51, 100, 7];
const KEY: &[u8] = b"pair-secret";

fn udp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src, dst, 64).udp(sp, dp).write(&mut v, b"data").expect("frame");
    v
}

fn tcp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, syn: bool, ack: Option<u32>) -> Vec<u8> {
    let mut t = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src, dst, 64).tcp(sp, dp, 1000, 64240);
    if syn {
        t = t.syn();
    }
    if let Some(a) = ack {
        t = t.ack(a);
    }
    let mut v = Vec::new();
    t.write(&mut v, if syn { b"" } else { b"x" }).expect("frame");
    v
}

fn src_port(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[34], f[35]])
}

fn dst(f: &[u8]) -> ([u8; 4], u16) {
    ([f[30], f[31], f[32], f[33]], u16::from_be_bytes([f[36], f[37]]))
}

/// Sends every flow of `from` through the channel into `to`.
fn sync(from: &Shared, to: &Shared, s: &mut Sender, r: &mut Receiver, now: Time) -> Vec<Applied> {
    let mut recs = Vec::new();
    from.flows.for_each(|_, f| recs.push(Record::Flow(SyncFlow::of(f, f.remaining(now, &from.config().timeouts)))));
    transfer(&recs, to, s, r, now)
}

fn transfer(recs: &[Record], to: &Shared, s: &mut Sender, r: &mut Receiver, now: Time) -> Vec<Applied> {
    let mut wire = Vec::new();
    let mut b = Batch::default();
    for rec in recs {
        if !b.push(rec) {
            wire.push(s.data(b.take(), now).encode(Some(KEY)));
            assert!(b.push(rec));
        }
    }
    if !b.is_empty() {
        wire.push(s.data(b.take(), now).encode(Some(KEY)));
    }
    let mut applied = Vec::new();
    for d in wire {
        let m = Message::decode(&d, Some(KEY)).expect("authentic");
        if r.on_message(&m, now).apply {
            for rec in Record::decode_all(&m.payload, to.config().ifaces.len()).expect("valid records") {
                applied.push(apply(to, &rec, now));
            }
        }
    }
    applied
}

#[test]
fn the_standby_carries_on_every_synced_flow() {
    let a = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let b = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let (mut ea, mut eb) = (Engine::new(Arc::clone(&a)), Engine::new(Arc::clone(&b)));
    let t1 = Time::from_secs(1);
    // on the active: three hosts' UDP flows (same source port) and an established TCP flow
    let mut outside_port = Vec::new();
    for h in 5..8u8 {
        let (v, f) = run(&mut ea, &udp([10, 0, 0, h], SRV, 5000, 53), INSIDE, t1);
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        outside_port.push(src_port(&f));
    }
    let (_, syn) = run(&mut ea, &tcp([10, 0, 0, 9], SRV, 40000, 443, true, None), INSIDE, t1);
    let tport = src_port(&syn);
    let (v, _) = run(&mut ea, &tcp(SRV, OUT, 443, tport, true, Some(1001)), OUTSIDE, t1);
    assert_eq!(v, Verdict::Forward(INSIDE));
    let (v, _) = run(&mut ea, &tcp([10, 0, 0, 9], SRV, 40000, 443, false, Some(1001)), INSIDE, t1);
    assert_eq!(v, Verdict::Forward(OUTSIDE));

    // sync ten seconds later, over the authenticated, numbered channel
    let t2 = Time::from_secs(11);
    let p = Params::default();
    let (mut s, mut r) = (Sender::new(p, 0x5e55, 1, t2), Receiver::new(p));
    r.on_message(&s.hello(t2), t2);
    let applied = sync(&a, &b, &mut s, &mut r, t2);
    assert_eq!(applied, vec![Applied::Created; 4]);
    assert_eq!(b.flows.len(), 4);
    // a second sync only updates
    assert_eq!(sync(&a, &b, &mut s, &mut r, t2), vec![Applied::Updated; 4]);

    // the standby (promoted) translates the replies as the active would
    for (i, h) in (5..8u8).enumerate() {
        let (v, f) = run(&mut eb, &udp(SRV, OUT, 53, outside_port[i]), OUTSIDE, t2);
        assert_eq!(v, Verdict::Forward(INSIDE), "host {h}");
        assert_eq!(dst(&f), ([10, 0, 0, h], 5000));
    }
    let (v, f) = run(&mut eb, &tcp(SRV, OUT, 443, tport, false, Some(1001)), OUTSIDE, t2);
    assert_eq!(v, Verdict::Forward(INSIDE), "established TCP continues");
    assert_eq!(dst(&f), ([10, 0, 0, 9], 40000));
    // the inside side of a synced flow keeps its outside port
    let (_, f) = run(&mut eb, &udp([10, 0, 0, 5], SRV, 5000, 53), INSIDE, t2);
    assert_eq!(src_port(&f), outside_port[0]);
    // the standby's own new flows to the same server never take a synced UDP flow's outside
    // port (a TCP flow's number is another tuple)
    for h in 20..60u8 {
        let (_, f) = run(&mut eb, &udp([10, 0, 0, h], SRV, 5000, 53), INSIDE, t2);
        assert!(!outside_port.contains(&src_port(&f)), "host {h} took {} of {outside_port:?}", src_port(&f));
    }

    // removals travel too
    let key = xgw_dataplane::conntrack::FlowKey {
        src: u32::from_be_bytes([10, 0, 0, 6]),
        dst: u32::from_be_bytes(SRV),
        sport: 5000,
        dport: 53,
        proto: 17,
    };
    assert_eq!(transfer(&[Record::Gone { key, id: 0 }], &b, &mut s, &mut r, t2), vec![Applied::Removed]);
    let (v, _) = run(&mut eb, &udp(SRV, OUT, 53, outside_port[1]), OUTSIDE, t2);
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
}

#[test]
fn a_synced_flow_expires_when_it_would_have_on_the_active() {
    let a = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let b = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let mut ea = Engine::new(Arc::clone(&a));
    let t1 = Time::from_secs(1);
    let (v, _) = run(&mut ea, &udp([10, 0, 0, 5], SRV, 5000, 53), INSIDE, t1);
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let timeout = a.config().timeouts.udp_unreplied;
    let t2 = t1.plus(timeout / 2);
    let p = Params::default();
    let (mut s, mut r) = (Sender::new(p, 1, 1, t2), Receiver::new(p));
    r.on_message(&s.hello(t2), t2);
    assert_eq!(sync(&a, &b, &mut s, &mut r, t2), vec![Applied::Created]);
    let expiry = t1.plus(timeout);
    b.sweep(expiry, usize::MAX);
    assert_eq!(b.flows.len(), 1, "still there when the active's would be");
    b.sweep(expiry.plus(Duration::from_secs(1)), usize::MAX);
    assert_eq!(b.flows.len(), 0, "gone a second after the active's would have");
}

fn esp(src: [u8; 4], dst: [u8; 4], spi: u32) -> Vec<u8> {
    let mut p = spi.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1]);
    p.extend_from_slice(&[0x55; 32]);
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(src, dst, 64)
        .write(&mut v, etherparse::IpNumber(50), &p)
        .expect("esp");
    v
}

#[test]
fn an_esp_flows_inbound_spi_learnt_after_it_was_synced_reaches_the_standby() {
    let a = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let b = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let (mut ea, mut eb) = (Engine::new(Arc::clone(&a)), Engine::new(Arc::clone(&b)));
    let t = Time::from_secs(1);
    let p = Params::default();
    let (mut s, mut r) = (Sender::new(p, 1, 1, t), Receiver::new(p));
    r.on_message(&s.hello(t), t);
    // the inside host's SA out: the flow exists before the peer's SPI is known
    assert_eq!(run(&mut ea, &esp([10, 0, 0, 5], SRV, 0x1111), INSIDE, t).0, Verdict::Forward(OUTSIDE));
    assert_eq!(sync(&a, &b, &mut s, &mut r, t), vec![Applied::Created]);
    // the peer's first packet in teaches the active its inbound SPI
    let (v, f) = run(&mut ea, &esp(SRV, OUT, 0x2222), OUTSIDE, t);
    assert_eq!((v, &f[30..34]), (Verdict::Forward(INSIDE), &[10, 0, 0, 5][..]));
    let mut keys = Vec::new();
    a.flows.for_each(|_, f| keys.push(f.keys));
    assert_eq!(sync(&a, &b, &mut s, &mut r, t), vec![Applied::Updated], "the learnt key, not a conflict");
    let mut standby = Vec::new();
    b.flows.for_each(|_, f| standby.push(f.keys));
    assert_eq!(standby, keys, "the standby holds the active's keys");
    // promoted, the standby delivers the peer's ESP to the inside host
    let (v, f) = run(&mut eb, &esp(SRV, OUT, 0x2222), OUTSIDE, t);
    assert_eq!((v, &f[30..34]), (Verdict::Forward(INSIDE), &[10, 0, 0, 5][..]));
}

#[test]
fn synced_flows_count_against_their_hosts_limit_on_the_standby() {
    let mut cfg = EngineConfig::example();
    cfg.limits.per_host = Some(3);
    let a = Arc::new(Shared::new(cfg.clone()).expect("config"));
    let b = Arc::new(Shared::new(cfg).expect("config"));
    let (mut ea, mut eb) = (Engine::new(Arc::clone(&a)), Engine::new(Arc::clone(&b)));
    let t = Time::from_secs(1);
    let host = u32::from_be_bytes([10, 0, 0, 5]);
    // the host's three flows on the active: its limit
    for port in 5000..5003 {
        assert_eq!(run(&mut ea, &udp([10, 0, 0, 5], SRV, port, 53), INSIDE, t).0, Verdict::Forward(OUTSIDE));
    }
    let p = Params::default();
    let (mut s, mut r) = (Sender::new(p, 7, 1, t), Receiver::new(p));
    r.on_message(&s.hello(t), t);
    assert_eq!(sync(&a, &b, &mut s, &mut r, t), vec![Applied::Created; 3]);
    let hosts = b.hosts.as_ref().expect("counted");
    assert_eq!(hosts.get(host), (3, 0), "the standby counts the host's synced flows");
    // updates do not count again
    assert_eq!(sync(&a, &b, &mut s, &mut r, t), vec![Applied::Updated; 3]);
    assert_eq!(hosts.get(host), (3, 0));
    // promoted, the standby holds the host to its limit
    let (v, _) = run(&mut eb, &udp([10, 0, 0, 5], SRV, 5003, 53), INSIDE, t);
    assert!(matches!(v, Verdict::Drop(_)), "a fourth flow of the host: {v:?}");
    // a flow the active ends frees its place on the standby
    let key = xgw_dataplane::conntrack::FlowKey {
        src: host,
        dst: u32::from_be_bytes(SRV),
        sport: 5000,
        dport: 53,
        proto: 17,
    };
    assert_eq!(transfer(&[Record::Gone { key, id: 0 }], &b, &mut s, &mut r, t), vec![Applied::Removed]);
    assert_eq!(hosts.get(host), (2, 0));
    assert_eq!(run(&mut eb, &udp([10, 0, 0, 5], SRV, 5003, 53), INSIDE, t).0, Verdict::Forward(OUTSIDE));
    assert_eq!(hosts.get(host), (3, 0));
    // and flows the standby expires leave the count
    b.sweep(t.plus(Duration::from_secs(3600)), usize::MAX);
    assert_eq!(hosts.get(host), (0, 0));
}
