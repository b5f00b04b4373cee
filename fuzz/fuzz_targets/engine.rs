//! Arbitrary frames through the whole engine. Input: a sequence of records, each
//! `[iface, len_hi, len_lo, bytes...]`. Nothing may panic; a forwarded frame stays inside
//! its buffer; every frame gets exactly one verdict, counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use xgw_dataplane::config::PortForward;
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Shared, Time};

fuzz_target!(|data: &[u8]| {
    let mut cfg = EngineConfig::example();
    cfg.limits.max_flows = 64;
    cfg.limits.event_ring = 0;
    cfg.limits.max_fragments = 16;
    cfg.nat.port_range = (1024, 1100);
    cfg.forwards.push(PortForward {
        proto: 6,
        outside_port: 1723,
        inside_addr: "10.0.0.9".parse().unwrap(),
        inside_port: 1723,
    });
    let mut e = Engine::new(Arc::new(Shared::new(cfg).unwrap()));
    let mut buf = vec![0u8; 2048];
    let mut rest = data;
    let mut n = 0u64;
    while rest.len() >= 3 {
        let iface = IfaceId(rest[0] % 3);
        let len = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3).min(1600);
        let frame = &rest[3..3 + len];
        rest = &rest[3 + len..];
        buf[..len].copy_from_slice(frame);
        let mut f = FrameBuf { buf: &mut buf[..], len };
        let _ = e.process(&mut f, RxMeta { iface }, Time::from_millis(n * 100));
        assert!(f.len <= f.buf.len());
        n += 1;
        if n % 16 == 0 {
            e.shared().sweep(Time::from_millis(n * 100), usize::MAX);
        }
    }
    let c = e.counters();
    assert_eq!(c.traffic.rx.get(), n);
    assert_eq!(c.traffic.forwarded.get() + c.traffic.to_host.get() + c.total_drops(), n);
});
