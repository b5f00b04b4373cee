//! Real captures from tests/fixtures/captures replayed through the engine.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use xgw_dataplane::replay::{self, Input};
use xgw_dataplane::{Engine, EngineConfig, IfaceId, Shared, Verdict};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/captures").join(name)
}

fn load(name: &str) -> Vec<replay::Record> {
    let f = std::fs::File::open(fixture(name)).expect("fixture present");
    replay::read_capture(f, name).expect("readable capture")
}

#[test]
fn malformed_captures_never_panic_and_every_drop_is_counted() {
    for name in [
        "malformed/suricata-8550-gre-nested-fragments.pcap",
        "malformed/tcpdump-esp_truncated.pcap",
        "malformed/tcpdump-gre-heapoverflow-1.pcap",
        "malformed/tcpdump-gre-heapoverflow-2.pcap",
        "malformed/tcpdump-isakmp-3948-oobr-2.pcap",
        "malformed/tcpdump-l2tp-avp-overflow.pcap",
        "malformed/tcpdump-isakmp-pointer-loop.pcap",
    ] {
        let records = load(name);
        assert!(!records.is_empty(), "{name}");
        // every frame arrives on the inside, once, and again on the outside
        let mut inputs = Vec::new();
        for iface in [IfaceId(0), IfaceId(1)] {
            inputs.extend(records.iter().map(|r| Input { ts: r.ts, iface, frame: r.frame.clone() }));
        }
        let mut e = Engine::new(Arc::new(Shared::new(EngineConfig::example()).expect("config")));
        let (outcomes, summary) = replay::run(&mut e, inputs, Duration::from_secs(1));
        let drops: u64 = summary.drops.values().sum();
        let forwarded: u64 = summary.forwarded.values().sum();
        assert_eq!(drops + forwarded + summary.to_host, summary.frames, "{name}: every frame has a verdict");
        assert_eq!(e.counters().total_drops(), drops, "{name}: drops counted");
        if name.ends_with("gre-nested-fragments.pcap") {
            // the outer datagram is valid GRE v0 in two fragments: both are translated when
            // they arrive inside; the copies arriving outside are spoofed inside tuples
            assert_eq!(summary.forwarded.get(&1).copied(), Some(2), "{name}: {summary:?}");
            assert_eq!(summary.drops.get("wrong_interface").copied(), Some(2), "{name}: {summary:?}");
        } else if name.ends_with("isakmp-pointer-loop.pcap") {
            // valid IPv4/UDP 500: translated as plain UDP, the IKE payload is not walked
            assert!(forwarded >= 1, "{name}: {summary:?}");
        } else {
            assert_eq!(forwarded, 0, "{name}: nothing malformed is translated: {summary:?}");
            assert!(drops > 0 || summary.to_host > 0, "{name}");
            for o in &outcomes {
                assert!(!matches!(o.verdict, Verdict::Forward(_)), "{name}");
            }
        }
    }
}

#[test]
fn ah_is_dropped_and_counted() {
    let records = load("ipsec-ah-esp-tunnel.pcap");
    let cfg = EngineConfig {
        ifaces: vec![
            xgw_dataplane::IfaceConfig {
                name: "in".into(),
                device: "in".into(),
                role: xgw_dataplane::Role::Inside,
                addr: "10.0.0.254".parse().expect("addr"),
                prefix_len: 32,
                auto_addr: false,
            },
            xgw_dataplane::IfaceConfig {
                name: "out".into(),
                device: "out".into(),
                role: xgw_dataplane::Role::Outside,
                addr: "203.0.113.1".parse().expect("addr"),
                prefix_len: 24,
                auto_addr: false,
            },
        ],
        ..EngineConfig::default()
    };
    let mut e = Engine::new(Arc::new(Shared::new(cfg).expect("config")));
    // 10.0.0.1 is inside, 10.0.0.2 plays a remote peer: replay the inside host's half
    let inputs: Vec<Input> =
        replay::assign_by_source(records, &[("10.0.0.1".parse().expect("a"), 32)], IfaceId(0), IfaceId(1))
            .into_iter()
            .filter(|i| i.iface == IfaceId(0))
            .collect();
    let n = inputs.len() as u64;
    let (_, summary) = replay::run(&mut e, inputs, Duration::from_secs(1));
    assert_eq!(summary.drops.get("ah_not_translatable").copied(), Some(n), "{summary:?}");
}
