//! Shared helpers for xgw's benchmarks: building engines pre-filled with many flows and the
//! frames that hit them.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::sync::Arc;

use etherparse::PacketBuilder;
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Shared, Time, Verdict};

/// Inside interface of [`EngineConfig::example`].
pub const INSIDE: IfaceId = IfaceId(0);
/// Outside interface of [`EngineConfig::example`].
pub const OUTSIDE: IfaceId = IfaceId(1);

/// A MAC address written like `02:00:00:00:00:01` (the generators' arguments).
pub fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(p, 16).expect("MAC like 02:00:00:00:00:01");
    }
    m
}

/// The interface index of `dev` in this network namespace.
pub fn ifindex(dev: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("a device in this namespace")
}

/// A UDP frame (64-byte payload) from inside host `10.0.x.y` port `sport` to `dst:53`.
pub fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    udp_frame_between([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst, sport, dport)
}

/// [`udp_frame`] between the given MAC addresses (the generators' UDP).
pub fn udp_frame_between(smac: [u8; 6], dmac: [u8; 6], src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    PacketBuilder::ethernet2(smac, dmac).ipv4(src, dst, 64).udp(sport, dport).write(&mut v, &[0u8; 18]).expect("build");
    v
}

/// A TCP ACK frame.
pub fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 65535)
        .ack(1)
        .write(&mut v, &[0u8; 6])
        .expect("build");
    v
}

/// The inside source of flow number `i`: spread over 10.0.0.0/16 hosts and ports.
pub fn inside_src(i: u32) -> ([u8; 4], u16) {
    let host = (i % 65_000) + 2;
    let port = 1024 + (i / 65_000) as u16;
    ([10, 0, (host >> 8) as u8, host as u8], port)
}

/// An engine holding `n` established UDP flows, plus one outbound frame for each.
pub fn engine_with_flows(n: u32, capacity: usize) -> (Engine, Vec<Vec<u8>>) {
    let mut cfg = EngineConfig::example();
    cfg.ifaces[0].prefix_len = 16;
    cfg.limits.max_flows = capacity;
    cfg.limits.event_ring = 0;
    let mut e = Engine::new(Arc::new(Shared::new(cfg).expect("config")));
    let mut frames = Vec::with_capacity(n as usize);
    let mut buf = vec![0u8; 2048];
    for i in 0..n {
        let (src, sport) = inside_src(i);
        let f = udp_frame(src, [198, 51, 100, (i % 200) as u8 + 1], sport, 53);
        buf[..f.len()].copy_from_slice(&f);
        let mut fr = FrameBuf { buf: &mut buf[..], len: f.len() };
        let v = e.process(&mut fr, RxMeta { iface: INSIDE }, Time::ZERO);
        assert_eq!(v, Verdict::Forward(OUTSIDE), "flow {i}");
        frames.push(f);
    }
    (e, frames)
}

/// Copies frames `start`, `start + stride`, ... (wrapping) into a batch's buffers.
pub fn load(bufs: &mut [(Vec<u8>, usize)], frames: &[Vec<u8>], start: usize, stride: usize) {
    for (j, (buf, len)) in bufs.iter_mut().enumerate() {
        let t = &frames[(start + j * stride) % frames.len()];
        buf[..t.len()].copy_from_slice(t);
        *len = t.len();
    }
}

/// A TCP segment: a SYN when `ack` is `None`, else data acknowledging `ack`.
fn tcp_seg(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32, ack: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 65535);
    b = match ack {
        None => b.syn(),
        Some(a) => b.ack(a).psh(),
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build");
    v
}

fn step(e: &mut Engine, f: &[u8], iface: IfaceId) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    buf[..f.len()].copy_from_slice(f);
    let mut fr = FrameBuf { buf: &mut buf[..], len: f.len() };
    let v = e.process(&mut fr, RxMeta { iface }, Time::ZERO);
    let n = fr.len;
    (v, buf[..n].to_vec())
}

/// A PPTP GRE frame (v1, S bit, key `key`) carrying `payload_len` bytes of PPP.
pub fn gre_frame(src: [u8; 4], dst: [u8; 4], key: u16, payload_len: usize) -> Vec<u8> {
    gre_frame_between([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst, key, payload_len)
}

/// [`gre_frame`] between the given MAC addresses (the generators' GRE: 14 bytes of payload
/// make a 64-byte frame).
pub fn gre_frame_between(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    key: u16,
    payload_len: usize,
) -> Vec<u8> {
    let mut g = vec![0u8; 12 + payload_len];
    let n = xgw_dataplane::wire::gre::emit_pptp(&mut g, key, Some(1), None, payload_len as u16);
    g.truncate(n + payload_len);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(smac, dmac).ipv4(src, dst, 64).write(&mut v, etherparse::IpNumber(47), &g).expect("build");
    v
}

/// Outside server of the PPTP benches.
pub const PAC: [u8; 4] = [198, 51, 100, 20];
/// Outside address of [`EngineConfig::example`].
pub const OUTSIDE_ADDR: [u8; 4] = [203, 0, 113, 1];

/// One call's GRE frames: (inbound from the PAC, outbound from the PNS).
pub type GrePair = (Vec<u8>, Vec<u8>);

/// An engine with `n` PPTP calls up (one control connection per inside host, all to one
/// server, every client using Call ID 0), plus for each call an inbound and an outbound
/// GRE frame.
pub fn engine_with_calls(n: u32) -> (Engine, Vec<GrePair>) {
    use xgw_dataplane::alg::pptp::msg::{build, MsgType};
    let mut cfg = EngineConfig::example();
    cfg.ifaces[0].prefix_len = 16;
    cfg.limits.max_flows = (n as usize) * 3;
    cfg.limits.event_ring = 0;
    cfg.pptp.max_calls_total = n as usize + 1;
    cfg.pptp.max_sessions = n as usize + 1;
    let mut e = Engine::new(Arc::new(Shared::new(cfg).expect("config")));
    let mut frames = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (c, _) = inside_src(i);
        let (v, syn) = step(&mut e, &tcp_seg(c, PAC, 40000, 1723, 100, None, b""), INSIDE);
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        let pport = u16::from_be_bytes([syn[34], syn[35]]);
        let sa = {
            let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(PAC, OUTSIDE_ADDR, 64)
                .tcp(1723, pport, 700, 65535)
                .syn();
            b = b.ack(101);
            let mut v = Vec::new();
            b.write(&mut v, b"").expect("build");
            v
        };
        assert_eq!(step(&mut e, &sa, OUTSIDE).0, Verdict::Forward(INSIDE));
        let ocrq = build(MsgType::Ocrq, &[(12, 0)]);
        let (v, out) = step(&mut e, &tcp_seg(c, PAC, 40000, 1723, 101, Some(701), &ocrq), INSIDE);
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        let x = u16::from_be_bytes([out[54 + 12], out[54 + 13]]);
        let mut ocrp = build(MsgType::Ocrp, &[(12, i as u16), (14, x)]);
        ocrp[16] = 1;
        let (v, _) =
            step(&mut e, &tcp_seg(PAC, OUTSIDE_ADDR, 1723, pport, 701, Some(101 + ocrq.len() as u32), &ocrp), OUTSIDE);
        assert_eq!(v, Verdict::Forward(INSIDE));
        frames.push((gre_frame(PAC, OUTSIDE_ADDR, x, 100), gre_frame(c, PAC, i as u16, 100)));
    }
    assert_eq!(e.shared().pptp.calls_in_progress(), n as usize);
    (e, frames)
}
