//! Shared helpers for xgw's benchmarks: building engines pre-filled with many flows and the
//! frames that hit them.
#![forbid(unsafe_code)]

use std::sync::Arc;

use etherparse::PacketBuilder;
use xgw_dataplane::{Engine, EngineConfig, Frame, IfaceId, RxMeta, Shared, Time, Verdict};

/// Inside interface of [`EngineConfig::example`].
pub const INSIDE: IfaceId = IfaceId(0);
/// Outside interface of [`EngineConfig::example`].
pub const OUTSIDE: IfaceId = IfaceId(1);

/// A UDP frame (64-byte payload) from inside host `10.0.x.y` port `sport` to `dst:53`.
pub fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, &[0u8; 18])
        .expect("build");
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
        let mut fr = Frame { buf: &mut buf[..], len: f.len() };
        let v = e.process(&mut fr, RxMeta { iface: INSIDE }, Time::ZERO);
        assert_eq!(v, Verdict::Forward(OUTSIDE), "flow {i}");
        frames.push(f);
    }
    (e, frames)
}
