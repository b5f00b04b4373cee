//! Arbitrary GRE payloads (any flags, versions, keys, lengths) in both directions through
//! the engine, with and without PPTP inspection. Nothing may panic and no GRE creates state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Shared, Time, Verdict};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let mut cfg = EngineConfig::example();
    cfg.pptp.enabled = data[0] & 1 == 0;
    cfg.limits.max_flows = 256;
    cfg.limits.max_fragments = 16;
    cfg.limits.event_ring = 0;
    let inspect = cfg.pptp.enabled;
    let sh = Arc::new(Shared::new(cfg).unwrap());
    let mut e = Engine::new(Arc::clone(&sh));
    let mut buf = vec![0u8; 2048];
    for (i, chunk) in data[1..].chunks(64).enumerate() {
        let inbound = i % 2 == 1;
        let (src, dst) =
            if inbound { ([198, 51, 100, 20], [203, 0, 113, 1]) } else { ([10, 0, 0, 5], [198, 51, 100, 20]) };
        let tl = 20 + chunk.len();
        buf[..14].fill(0);
        buf[12] = 0x08;
        let ip = &mut buf[14..14 + tl];
        ip.fill(0);
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(tl as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 47;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let mut s = 0u32;
        for c in ip[..20].chunks(2) {
            s += u32::from(c[0]) << 8 | u32::from(c[1]);
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
        ip[20..].copy_from_slice(chunk);
        let mut f = FrameBuf { buf: &mut buf[..], len: 14 + tl };
        let v = e.process(&mut f, RxMeta { iface: IfaceId(u8::from(inbound)) }, Time::from_millis(i as u64));
        let version1 = chunk.len() >= 2 && chunk[1] & 7 == 1;
        if inspect && inbound && version1 {
            // with inspection, no inbound PPTP GRE is forwarded without a call (GRE v0
            // follows the address-pair policy and may be)
            assert!(!matches!(v, Verdict::Forward(_)), "chunk {i}: {v:?} {:02x?}", &chunk[..chunk.len().min(16)]);
        }
    }
    if inspect {
        // only a PPTP control connection creates Call-ID-keyed GRE flows
        let mut related = 0;
        sh.flows.for_each(|_, f| related += usize::from(f.kind == xgw_dataplane::conntrack::FlowKind::Related));
        assert_eq!(related, 0);
    }
});
