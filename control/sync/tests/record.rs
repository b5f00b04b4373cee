//! Records: a flow from a real engine round-trips; every malformed record is refused with
//! its reason; batches never overfill a message.
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::sync::Arc;
use std::time::Duration;

use xgw_dataplane::conntrack::FlowKey;
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Shared, Time};
use xgw_sync::record::{Batch, Invalid, Record, SyncFlow};
use xgw_sync::wire::MAX_PAYLOAD;

fn udp_flow() -> SyncFlow {
    let sh = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let mut e = Engine::new(Arc::clone(&sh));
    // a UDP datagram from inside: one PAT flow
    let mut f: Vec<u8> = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
    let mut ip = vec![0x45, 0, 0, 29, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 5, 198, 51, 100, 7];
    let sum = ip.chunks(2).fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
    ip[10..12].copy_from_slice(&(!(((sum & 0xffff) + (sum >> 16)) as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 9, 0, 0, b'q']);
    let mut buf = f.clone();
    buf.resize(256, 0);
    let mut fb = FrameBuf { buf: &mut buf[..], len: f.len() };
    e.process(&mut fb, RxMeta { iface: IfaceId(0) }, Time::from_secs(1));
    let mut flows = Vec::new();
    sh.flows.for_each(|_, fl| flows.push(*fl));
    assert_eq!(flows.len(), 1, "one flow");
    SyncFlow::of(&flows[0], Duration::from_secs(30))
}

#[test]
fn a_real_flow_round_trips() {
    let f = udp_flow();
    let recs = vec![Record::Flow(f.clone()), Record::Gone { key: f.keys[0], id: f.id }, Record::BulkEnd];
    let mut p = Vec::new();
    for r in &recs {
        r.encode(&mut p);
    }
    assert_eq!(p.len(), 3 + 72 + 3 + 21 + 3);
    assert_eq!(Record::decode_all(&p, 2), Ok(recs));
    // the bulk's end marker has no body: one with a body is refused
    assert_eq!(Record::decode_all(&[6, 0, 1, 0], 2), Err(Invalid::Length));
}

#[test]
fn malformed_records_are_refused_with_their_reason() {
    let mut good = Vec::new();
    Record::Flow(udp_flow()).encode(&mut good);
    // offsets in the body (after the 3-byte record header)
    let at = |o: usize| 3 + o;
    let cases: Vec<(&str, Vec<u8>, Invalid)> = vec![
        ("cut short", good[..50].to_vec(), Invalid::Length),
        (
            "a length that does not match the type",
            {
                let mut d = good.clone();
                d[2] = 71;
                d.pop();
                d
            },
            Invalid::Length,
        ),
        (
            "an unknown type",
            {
                let mut d = good.clone();
                d[0] = 9;
                d
            },
            Invalid::Type,
        ),
        (
            "an egress the standby lacks",
            {
                let mut d = good.clone();
                d[at(26 + 12)] = 5;
                d
            },
            Invalid::Field,
        ),
        (
            "a protocol state that does not fit the protocol",
            {
                let mut d = good.clone();
                d[at(52)] = 1;
                d
            },
            Invalid::Field,
        ),
        (
            "the keys disagreeing on the protocol",
            {
                let mut d = good.clone();
                d[at(25)] = 6;
                d
            },
            Invalid::Field,
        ),
        (
            "a local status bit",
            {
                let mut d = good.clone();
                d[at(54)] |= 0x20;
                d
            },
            Invalid::Field,
        ),
        (
            "an unknown kind",
            {
                let mut d = good.clone();
                d[at(55)] = 9;
                d
            },
            Invalid::Field,
        ),
        (
            "an idle time beyond a week",
            {
                let mut d = good.clone();
                d[at(60)..at(64)].copy_from_slice(&u32::MAX.to_be_bytes());
                d
            },
            Invalid::Field,
        ),
    ];
    assert!(Record::decode_all(&good, 2).is_ok());
    for (what, d, want) in cases {
        assert_eq!(Record::decode_all(&d, 2), Err(want), "{what}");
    }
}

#[test]
fn a_batch_never_overfills_a_message() {
    let mut b = Batch::default();
    let gone = Record::Gone { key: FlowKey { src: 1, dst: 2, sport: 3, dport: 4, proto: 17 }, id: 5 };
    let mut n = 0;
    while b.push(&gone) {
        n += 1;
    }
    assert_eq!(n, MAX_PAYLOAD / 24);
    let p = b.take();
    assert!(p.len() <= MAX_PAYLOAD && b.is_empty());
    assert_eq!(Record::decode_all(&p, 2).map(|v| v.len()), Ok(n));
}
