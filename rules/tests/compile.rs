//! The example policy compiles, and what it says is what the engine does.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::path::PathBuf;
use std::sync::Arc;

use xgw_dataplane::policy::{Decision, NewFlow, Policy};
use xgw_dataplane::{IfaceId, Role};
use xgw_rules::compile;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn load(p: &str) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| e.to_string())
}

fn example() -> xgw_rules::Compiled {
    let path = examples().join("gateway.rules");
    let name = path.to_string_lossy().to_string();
    let text = load(&name).expect("example present");
    match compile(&name, &text, &load) {
        Ok(c) => c,
        Err(d) => panic!("{}", xgw_rules::diag::render_all(&d)),
    }
}

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().expect("address"))
}

fn flow(ingress: u8, proto: u8, src: &str, dst: &str, sport: u16, dport: u16) -> NewFlow {
    NewFlow { ingress: IfaceId(ingress), proto, src: ip(src), dst: ip(dst), sport, dport, icmp: None, egress: None }
}

#[test]
fn example_compiles_into_the_engine_config() {
    let c = example();
    assert!(c.warnings.is_empty(), "{}", xgw_rules::diag::render_all(&c.warnings));
    assert_eq!(c.files.len(), 2, "the include was read");
    let e = &c.engine;
    assert_eq!(e.ifaces.len(), 3);
    assert_eq!(
        (e.ifaces[0].name.as_str(), e.ifaces[0].device.as_str(), e.ifaces[0].role),
        ("lan", "xgw-in", Role::Inside)
    );
    assert_eq!(e.ifaces[1].prefix_len, 24, "A MASK form");
    assert_eq!(e.ifaces[2].role, Role::Outside);
    assert_eq!(e.nat.port_range, (1024, 65535));
    assert_eq!(e.nat.host_ports, Some((32768, 60999)));
    assert_eq!(e.forwards.len(), 3);
    assert_eq!(e.forwards[0].inside_port, 22);
    assert_eq!(e.forwards[1].inside_port, 1723, "same port when none is given");
    assert!(e.pptp.enabled && e.esp_by_spi);
    assert_eq!(e.pptp.max_calls_per_session, 64);
    assert_eq!(e.timeouts.tcp_established, std::time::Duration::from_secs(432_000));
    assert_eq!(e.timeouts.pptp_gre, std::time::Duration::from_secs(300));
    assert_eq!((e.limits.per_host, e.limits.embryonic), (Some(4096), Some(512)));
    assert_eq!(c.acl.rules.len(), 11);
    let ids: std::collections::HashSet<u32> = c.acl.rules.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 11, "ids are distinct");
}

#[test]
fn example_policy_decides_as_written() {
    let c = example();
    let acl = &c.acl;
    let id = |i: usize| acl.rules[i].id;
    // lan in: the blocked host is denied by rule 0, web is permitted by the group rule
    assert_eq!(acl.check(&flow(0, 6, "10.10.0.66", "1.2.3.4", 40000, 443)), Decision::Deny { rule: id(0) });
    assert_eq!(acl.check(&flow(0, 6, "10.10.0.5", "1.2.3.4", 40000, 443)), Decision::Permit { rule: id(1) });
    // a printer (nested group) may use PPTP and GRE through the vpn service group
    assert_eq!(acl.check(&flow(0, 6, "10.10.2.9", "1.2.3.4", 40000, 1723)), Decision::Permit { rule: id(2) });
    assert_eq!(acl.check(&flow(0, 47, "10.10.1.5", "1.2.3.4", 0, 0)), Decision::Permit { rule: id(2) });
    // a host outside lan-hosts sending GRE: no rule, implicit deny
    assert_eq!(acl.check(&flow(0, 47, "10.10.3.1", "1.2.3.4", 0, 0)), Decision::Deny { rule: 0 });
    // dmz has no list bound: permitted
    assert_eq!(acl.check(&flow(1, 17, "10.20.0.10", "1.2.3.4", 5000, 9999)), Decision::Permit { rule: 0 });
    // wan in: forwarded ssh (real address), anything else denied by the explicit last rule
    assert_eq!(acl.check(&flow(2, 6, "203.0.113.9", "10.20.0.10", 50000, 22)), Decision::Permit { rule: id(6) });
    assert_eq!(acl.check(&flow(2, 6, "203.0.113.9", "10.20.0.10", 50000, 80)), Decision::Deny { rule: id(10) });
    assert!(acl.hits(0) == 1 && acl.hits(2) == 2 && acl.hits(10) == 1);
    assert_eq!(acl.implicit_denies(), 1);
}

#[test]
fn the_engine_enforces_the_compiled_policy() {
    use xgw_dataplane::{Engine, FrameBuf, RxMeta, Shared, Time, Verdict};
    let c = example();
    let shared = Arc::new(Shared::new(c.engine.clone()).expect("config"));
    shared.set_policy(Box::new(c.acl));
    let mut e = Engine::new(Arc::clone(&shared));
    let frame = |src: [u8; 4], dst: [u8; 4], dport: u16| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .tcp(40000, dport, 1, 1000)
            .syn()
            .write(&mut v, b"")
            .expect("build");
        v
    };
    let mut run = |f: Vec<u8>, iface: u8| {
        let mut buf = f.clone();
        buf.resize(2048, 0);
        let mut fr = FrameBuf { buf: &mut buf[..], len: f.len() };
        e.process(&mut fr, RxMeta { iface: IfaceId(iface) }, Time::ZERO)
    };
    assert_eq!(run(frame([10, 10, 0, 66], [1, 2, 3, 4], 443), 0), Verdict::Drop(xgw_dataplane::DropReason::AclDenied));
    assert_eq!(run(frame([10, 10, 0, 5], [1, 2, 3, 4], 443), 0), Verdict::Forward(IfaceId(2)));
    // inbound to the ssh forward: permitted by the rule naming the real address
    assert_eq!(run(frame([203, 0, 113, 9], [198, 51, 100, 1], 2222), 2), Verdict::Forward(IfaceId(1)));
    // inbound TCP 80: no forward, no host service: refused
    assert_eq!(
        run(frame([203, 0, 113, 9], [198, 51, 100, 1], 80), 2),
        Verdict::Drop(xgw_dataplane::DropReason::UnsolicitedInbound)
    );
    // inbound SSH: the box's own service
    assert_eq!(run(frame([203, 0, 113, 9], [198, 51, 100, 1], 22), 2), Verdict::ToHost);
}

#[test]
fn includes_resolve_relative_to_the_including_file() {
    let loader = |p: &str| -> Result<String, String> {
        match p {
            "conf/objs.rules" => Ok("object-group network n { 10.0.0.0/8 }\n".into()),
            other => Err(format!("no such file {other}")),
        }
    };
    let main = "include \"objs.rules\"\ninterface a device e0 role inside address 10.0.0.1/24\ninterface b device e1 role outside address 192.0.2.1/24\naccess-list x permit ip object-group n any\naccess-group x in interface a\n";
    let c = compile("conf/main.rules", main, &loader).map_err(|d| xgw_rules::diag::render_all(&d)).expect("compiles");
    assert_eq!(c.files, vec!["conf/main.rules".to_string(), "conf/objs.rules".to_string()]);
}

#[test]
fn cisco_spellings_and_nat_exemption_compile_to_the_engine_s_terms() {
    let text = "interface lan device e1 role inside address 10.0.0.1/24\n\
        interface wan device e0 role outside address 203.0.113.1/24\n\
        nat overload\n\
        fixup protocol pptp 1723\n\
        object-group network partners { 192.168.50.0/24 192.168.60.0/24 }\n\
        access-list nonat deny ip host 10.0.0.66 any\n\
        access-list nonat permit ip 10.0.0.0/24 object-group partners\n\
        nat exempt access-list nonat\n\
        nat exempt host 10.0.0.9 172.16.0.0/12\n";
    let c = compile("t.rules", text, &|p| Err(format!("no {p}"))).expect("compiles");
    assert!(c.engine.pptp.enabled);
    assert!(c.warnings.iter().any(|d| d.severity == xgw_rules::Severity::Note && d.message.contains("fixup")));
    assert!(c.warnings.iter().all(|d| !d.message.contains("not bound")), "an exemption list needs no binding");
    let n = &c.engine.nat;
    assert_eq!(n.exempt.len(), 4, "{:?}", n.exempt);
    assert!(n.is_exempt(ip("10.0.0.5"), ip("192.168.60.1")));
    assert!(!n.is_exempt(ip("10.0.0.66"), ip("192.168.50.1")), "the deny comes first");
    assert!(n.is_exempt(ip("10.0.0.9"), ip("172.20.0.1")));
    assert!(!n.is_exempt(ip("10.0.0.5"), ip("172.20.0.1")));
    assert!(!n.is_exempt(ip("10.0.0.5"), ip("8.8.8.8")));
    let off = compile("t.rules", &text.replace("fixup protocol pptp 1723", "no fixup protocol pptp"), &|p| {
        Err(format!("no {p}"))
    })
    .expect("compiles");
    assert!(!off.engine.pptp.enabled);
}

#[test]
fn port_blocks_compile_with_their_options_in_any_order() {
    let base = "interface lan device e1 role inside address 10.0.0.1/24\n\
        interface wan device e0 role outside address 203.0.113.1/24\n";
    // (the nat statement, the blocks it asks for: size, per host, hold in seconds, deterministic)
    type Blocks = Option<(u16, u16, u64, bool)>;
    let cases: &[(&str, Blocks)] = &[
        ("nat overload", None),
        ("nat overload block-size 512", Some((512, 8, 120, false))),
        ("nat overload block-hold 30s blocks-per-host 4 block-size 256", Some((256, 4, 30, false))),
        (
            "nat overload ports 1024-65535 host-ports none pool 203.0.113.10 203.0.113.11 block-size 256 blocks-per-host 1 deterministic",
            Some((256, 1, 120, true)),
        ),
    ];
    for &(stmt, want) in cases {
        let c = compile("t.rules", &format!("{base}{stmt}\n"), &|p| Err(format!("no {p}"))).expect(stmt);
        let got = c.engine.nat.blocks.map(|b| (b.size, b.per_host, b.hold.as_secs(), b.deterministic));
        assert_eq!(got, want, "{stmt}");
    }
}
