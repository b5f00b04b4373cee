//! Access-list matching with 10 000 rules, the packet matching only the last one (the worst
//! case for first-match semantics), against a linear scan of the same atoms.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use xgw_dataplane::policy::NewFlow;
use xgw_dataplane::IfaceId;

fn policy(body: &str) -> xgw_rules::Compiled {
    let text = format!(
        "interface lan device e1 role inside address 10.0.0.1/8\ninterface wan device e0 role outside address 192.0.2.1/24\n{body}access-group big in interface lan\n"
    );
    let none = |_: &str| -> Result<String, String> { Err("no includes".into()) };
    xgw_rules::compile("bench.rules", &text, &none).map_err(|d| xgw_rules::diag::render_all(&d)).expect("compiles")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(1));
    // 9 999 rules naming distinct destination hosts and ports, then the one that matches
    let mut hosts = String::new();
    for i in 0..9_999u32 {
        hosts +=
            &format!("access-list big deny tcp any host 172.16.{}.{} eq {}\n", i / 250, i % 250 + 1, 1000 + i % 5000);
    }
    hosts += "access-list big permit tcp 10.0.0.0/8 any eq 443\n";
    // 9 999 rules on "any" destination, distinct ports, then the one that matches
    let mut ports = String::new();
    for i in 0..9_999u32 {
        ports += &format!("access-list big deny udp 10.{}.0.0/16 any eq {}\n", i % 200, 1 + i % 60_000);
    }
    ports += "access-list big permit udp any any eq 61000\n";
    for (name, body, probe) in [
        (
            "match_10k",
            hosts,
            NewFlow {
                ingress: IfaceId(0),
                egress: None,
                proto: 6,
                src: 0x0a01_0203,
                dst: 0xc633_6414,
                sport: 40000,
                dport: 443,
                icmp: None,
            },
        ),
        (
            "match_10k_any_dst",
            ports,
            NewFlow {
                ingress: IfaceId(0),
                egress: None,
                proto: 17,
                src: 0x0a01_0203,
                dst: 0xc633_6414,
                sport: 40000,
                dport: 61000,
                icmp: None,
            },
        ),
    ] {
        let c = policy(&body);
        let list = &c.acl.lists[0];
        assert_eq!(list.first_match(&probe).map(|a| a.rule), Some(9_999), "{name}: the last rule decides");
        assert_eq!(list.first_match(&probe), list.first_match_linear(&probe));
        g.bench_function(name, |b| b.iter(|| black_box(list.first_match(black_box(&probe)))));
        g.bench_function(format!("{name}_linear_scan"), |b| {
            b.iter(|| black_box(list.first_match_linear(black_box(&probe))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
