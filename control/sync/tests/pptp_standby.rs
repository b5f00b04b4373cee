//! A PPTP call set up through the active engine carries on through the standby after a
//! sync of its flows and its inspector state: the call's GRE both ways, the next control
//! messages on the connection (an Echo-Request, then a Call-Clear-Request whose Call ID the
//! standby must translate exactly as the active did), and the call's end. The same run
//! without the inspector's records lets the client's Call ID out untranslated — the test
//! can tell.
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::sync::Arc;

use etherparse::PacketBuilder;
use xgw_dataplane::alg::pptp::msg::{build, MsgType};
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
const PNS: [u8; 4] = [10, 0, 0, 5];
const PAC: [u8; 4] = [198, 51, 100, 7];
const CALL: u16 = 0x0100;
const PAC_CALL: u16 = 0x4000;

fn seg(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, ack: Option<u32>, syn: bool, data: &[u8]) -> Vec<u8> {
    let mut t = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src.0, dst.0, 64).tcp(src.1, dst.1, seq, 64240);
    if syn {
        t = t.syn();
    }
    if let Some(a) = ack {
        t = t.ack(a);
    }
    let mut v = Vec::new();
    t.write(&mut v, data).expect("frame");
    v
}

fn gre(src: [u8; 4], dst: [u8; 4], key: u16) -> Vec<u8> {
    let mut g = vec![0x30, 0x01, 0x88, 0x0b, 0, 4];
    g.extend_from_slice(&key.to_be_bytes());
    g.extend_from_slice(&[0, 0, 0, 1, 0xff, 0x03, 0xc0, 0x21]);
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(src, dst, 64)
        .write(&mut v, etherparse::IpNumber(47), &g)
        .expect("gre");
    v
}

/// TCP payload of a forwarded frame.
fn payload(f: &[u8]) -> &[u8] {
    let l4 = 14 + usize::from(f[14] & 15) * 4;
    &f[l4 + usize::from(f[l4 + 12] >> 4) * 4..]
}

fn gre_key(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[40], f[41]])
}

struct Call {
    out_port: u16,
    xlat: u16,
    pns_seq: u32,
    pac_seq: u32,
}

/// Sets the call up through `e`: returns the outside port and the translated Call ID.
fn set_up(e: &mut Engine, t: Time) -> Call {
    let (pns, pac_isn) = (1000u32, 9000u32);
    let (v, syn) = run(e, &seg((PNS, 40000), (PAC, 1723), pns, None, true, b""), INSIDE, t);
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let port = u16::from_be_bytes([syn[34], syn[35]]);
    let to_pns = |seq: u32, ack: u32, data: &[u8]| seg((PAC, 1723), (OUT, port), seq, Some(ack), false, data);
    assert_eq!(
        run(e, &seg((PAC, 1723), (OUT, port), pac_isn, Some(pns + 1), true, b""), OUTSIDE, t).0,
        Verdict::Forward(INSIDE)
    );
    let mut c = Call { out_port: port, xlat: 0, pns_seq: pns + 1, pac_seq: pac_isn + 1 };
    let from_pns = |e: &mut Engine, c: &mut Call, m: &[u8]| {
        let (v, f) = run(e, &seg((PNS, 40000), (PAC, 1723), c.pns_seq, Some(c.pac_seq), false, m), INSIDE, t);
        c.pns_seq += m.len() as u32;
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        f
    };
    from_pns(e, &mut c, &build(MsgType::Sccrq, &[(12, 0x0100)]));
    let sccrp = build(MsgType::Sccrp, &[(12, 0x0100), (14, 1)]);
    assert_eq!(run(e, &to_pns(c.pac_seq, c.pns_seq, &sccrp), OUTSIDE, t).0, Verdict::Forward(INSIDE));
    c.pac_seq += sccrp.len() as u32;
    let ocrq = from_pns(e, &mut c, &build(MsgType::Ocrq, &[(12, CALL), (14, 1)]));
    let p = payload(&ocrq);
    c.xlat = u16::from_be_bytes([p[12], p[13]]);
    let ocrp = build(MsgType::Ocrp, &[(12, PAC_CALL), (14, c.xlat), (16, 0x0100)]);
    let (v, f) = run(e, &to_pns(c.pac_seq, c.pns_seq, &ocrp), OUTSIDE, t);
    assert_eq!(v, Verdict::Forward(INSIDE));
    assert_eq!(&payload(&f)[14..16], &CALL.to_be_bytes(), "the OCRP reaches the PNS with its own Call ID");
    c.pac_seq += ocrp.len() as u32;
    c
}

fn sync_all(a: &Shared, b: &Shared, with_pptp: bool, t: Time) -> Vec<Applied> {
    let mut recs = Vec::new();
    a.flows.for_each(|_, f| recs.push(Record::Flow(SyncFlow::of(f, f.remaining(t, &a.config().timeouts)))));
    if with_pptp {
        for id in a.pptp.session_ids() {
            let mut ctl = None;
            a.flows.for_each(|_, f| {
                if f.id == id {
                    ctl = Some(f.keys[0]);
                }
            });
            let ctl = ctl.expect("the control flow");
            let (sess, calls) = a.pptp.export_session(id, t).expect("session");
            recs.push(Record::PptpSession { ctl, state: sess });
            for (_, c) in calls {
                recs.push(Record::PptpCall { ctl, state: c });
            }
        }
    }
    let p = Params::default();
    let (mut s, mut r) = (Sender::new(p, 7, 1, t), Receiver::new(p));
    r.on_message(&s.hello(t), t);
    let mut out = Vec::new();
    let mut b_ = Batch::default();
    let mut msgs = Vec::new();
    for rec in &recs {
        if !b_.push(rec) {
            msgs.push(s.data(b_.take(), t));
            assert!(b_.push(rec));
        }
    }
    msgs.push(s.data(b_.take(), t));
    for m in msgs {
        let m = Message::decode(&m.encode(Some(b"k")), Some(b"k")).expect("authentic");
        assert!(r.on_message(&m, t).apply);
        for rec in Record::decode_all(&m.payload, 2).expect("valid") {
            out.push(apply(b, &rec, t));
        }
    }
    out
}

fn pair() -> (Arc<Shared>, Arc<Shared>, Engine, Engine) {
    let a = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let b = Arc::new(Shared::new(EngineConfig::example()).expect("config"));
    let (ea, eb) = (Engine::new(Arc::clone(&a)), Engine::new(Arc::clone(&b)));
    (a, b, ea, eb)
}

#[test]
fn a_pptp_call_carries_on_through_the_standby() {
    let (a, b, mut ea, mut eb) = pair();
    let t = Time::from_secs(1);
    let c = set_up(&mut ea, t);
    assert_eq!(a.pptp.calls_in_progress(), 1);
    let applied = sync_all(&a, &b, true, t);
    assert!(applied.iter().all(|x| matches!(x, Applied::Created | Applied::Updated)), "{applied:?}");
    assert_eq!(b.pptp.calls_in_progress(), 1, "the standby holds the call");
    assert_eq!(b.pptp.pool_in_use(u32::from_be_bytes(OUT), u32::from_be_bytes(PAC)), 1, "its ID is claimed");

    // promoted: the call's GRE both ways
    let (v, f) = run(&mut eb, &gre(PAC, OUT, c.xlat), OUTSIDE, t);
    assert_eq!((v, &f[30..34], gre_key(&f)), (Verdict::Forward(INSIDE), &PNS[..], CALL));
    let (v, f) = run(&mut eb, &gre(PNS, PAC, PAC_CALL), INSIDE, t);
    assert_eq!((v, &f[26..30], gre_key(&f)), (Verdict::Forward(OUTSIDE), &OUT[..], PAC_CALL));

    // the next control messages: an Echo-Request, then a Call-Clear-Request whose Call ID
    // leaves translated exactly as the active translated it
    let mut pns_seq = c.pns_seq;
    for m in [build(MsgType::EchoRq, &[(12, 0)]), build(MsgType::Ccrq, &[(12, CALL)])] {
        let (v, f) = run(&mut eb, &seg((PNS, 40000), (PAC, 1723), pns_seq, Some(c.pac_seq), false, &m), INSIDE, t);
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), c.out_port);
        if m[9] == 12 {
            assert_eq!(&payload(&f)[12..14], &c.xlat.to_be_bytes(), "the CCRQ names the call by its translated ID");
        }
        pns_seq += m.len() as u32;
    }
    // the PAC's Call-Disconnect-Notify ends the call on the standby
    let cdn = build(MsgType::Cdn, &[(12, PAC_CALL)]);
    let (v, _) = run(&mut eb, &seg((PAC, 1723), (OUT, c.out_port), c.pac_seq, Some(pns_seq), false, &cdn), OUTSIDE, t);
    assert_eq!(v, Verdict::Forward(INSIDE));
    assert_eq!(b.pptp.calls_in_progress(), 0, "the call ended on the standby");
}

#[test]
fn without_the_inspector_state_the_standby_lets_the_call_id_out_untranslated() {
    let (a, b, mut ea, mut eb) = pair();
    let t = Time::from_secs(1);
    let c = set_up(&mut ea, t);
    sync_all(&a, &b, false, t);
    let m = build(MsgType::Ccrq, &[(12, CALL)]);
    let (v, f) = run(&mut eb, &seg((PNS, 40000), (PAC, 1723), c.pns_seq, Some(c.pac_seq), false, &m), INSIDE, t);
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    assert_eq!(&payload(&f)[12..14], &CALL.to_be_bytes(), "no session: the inside Call ID leaks");
    assert_eq!(b.pptp.calls_in_progress(), 0);
}
