//! Arbitrary bytes as a PPTP control connection's two streams, cut into arbitrary segments,
//! with retransmissions and reordering, through the engine. Nothing may panic, no call may
//! outlive the session's end, and the Call-ID pool must be empty after everything expires.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Shared, Time};

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let tl = 20 + payload.len();
    let mut f = vec![0u8; 14 + 20 + tl];
    f[12] = 0x08;
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + tl) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum(&ip[..20], 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut ip[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14] = 0xff;
    t[20..].copy_from_slice(payload);
    let mut ph = 0u32;
    for w in [&src[..], &dst[..]] {
        ph += u32::from(u16::from_be_bytes([w[0], w[1]])) + u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    ph += 6 + tl as u32;
    let c = csum(t, ph);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    f
}

fn csum(d: &[u8], mut s: u32) -> u16 {
    for c in d.chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = EngineConfig::example();
    cfg.pptp.id_limit = 300;
    cfg.limits.max_flows = 256;
    cfg.limits.max_fragments = 16;
    cfg.limits.event_ring = 0;
    let sh = Arc::new(Shared::new(cfg).unwrap());
    let mut e = Engine::new(Arc::clone(&sh));
    let (c, s, p) = ([10, 0, 0, 5], [198, 51, 100, 20], [203, 0, 113, 1]);
    let mut buf = vec![0u8; 4096];
    let mut go = |e: &mut Engine, f: Vec<u8>, iface: u8, t: u64| {
        let n = f.len();
        buf[..n].copy_from_slice(&f);
        let mut fr = FrameBuf { buf: &mut buf[..], len: n };
        e.process(&mut fr, RxMeta { iface: IfaceId(iface) }, Time::from_millis(t))
    };
    let syn = tcp(c, s, 40000, 1723, 100, 0x02, &[]);
    let _ = go(&mut e, syn, 0, 0);
    let pport = sh
        .flows
        .lookup(&xgw_dataplane::conntrack::FlowKey {
            src: u32::from_be_bytes(c),
            dst: u32::from_be_bytes(s),
            sport: 40000,
            dport: 1723,
            proto: 6,
        })
        .and_then(|r| {
            sh.flows.with_flow(
                r,
                &xgw_dataplane::conntrack::FlowKey {
                    src: u32::from_be_bytes(c),
                    dst: u32::from_be_bytes(s),
                    sport: 40000,
                    dport: 1723,
                    proto: 6,
                },
                |f, _| f.rewrite[0].sport,
            )
        });
    let Some(pport) = pport else { return };
    let _ = go(&mut e, tcp(s, p, 1723, pport, 500, 0x12, &[]), 1, 1);
    let (mut seq_c, mut seq_s) = (101u32, 501u32);
    // records: [dir|flags, back, len, bytes...]
    let mut rest = data;
    let mut t = 2;
    while rest.len() >= 3 {
        let from_pns = rest[0] & 1 == 0;
        let back = u32::from(rest[1] % 64);
        let len = usize::from(rest[2]).min(rest.len() - 3);
        let payload = &rest[3..3 + len];
        rest = &rest[3 + len..];
        t += 1;
        let (seq, f) = if from_pns {
            let sq = seq_c.wrapping_sub(back);
            (sq, tcp(c, s, 40000, 1723, sq, 0x18, payload))
        } else {
            let sq = seq_s.wrapping_sub(back);
            (sq, tcp(s, p, 1723, pport, sq, 0x18, payload))
        };
        let _ = go(&mut e, f, if from_pns { 0 } else { 1 }, t);
        let end = seq.wrapping_add(len as u32);
        if from_pns {
            if (end.wrapping_sub(seq_c) as i32) > 0 {
                seq_c = end;
            }
        } else if (end.wrapping_sub(seq_s) as i32) > 0 {
            seq_s = end;
        }
    }
    // close, let everything expire: nothing may remain
    let _ = go(&mut e, tcp(c, s, 40000, 1723, seq_c, 0x14, &[]), 0, t + 1);
    sh.sweep(Time::from_secs(100_000), usize::MAX);
    sh.sweep(Time::from_secs(200_000), usize::MAX);
    assert!(sh.pptp.sessions().is_empty());
    assert_eq!(sh.pptp.calls_in_progress(), 0);
    assert_eq!(sh.pptp.pool_in_use(u32::from_be_bytes(p), u32::from_be_bytes(s)), 0);
    assert!(sh.flows.is_empty());
});
