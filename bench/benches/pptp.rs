//! PPTP inspection benchmarks: GRE of established calls both ways with 10 000 live calls,
//! and the cost of one control message through the inspector.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use xgw_bench::{engine_with_calls, INSIDE, OUTSIDE};
use xgw_dataplane::{FrameBuf, RxMeta, Time, Verdict};

const CALLS: u32 = 10_000;

fn gre(c: &mut Criterion) {
    let (mut e, frames) = engine_with_calls(CALLS);
    let mut g = c.benchmark_group("pptp");
    g.throughput(Throughput::Elements(64));
    // 64 frame buffers reused for every batch; refilling them from the templates is untimed
    let mut bufs: Vec<(Vec<u8>, usize)> = (0..64).map(|_| (vec![0u8; 256], 0)).collect();
    // as the AF_XDP worker runs them, 64 at a time through Engine::process_batch (the whole
    // batch's index buckets and flow slots are requested before any is read), and one by
    // one through Engine::process (each packet waits for its own cache misses)
    for (name, inbound, batched) in [
        ("gre_inbound", true, true),
        ("gre_outbound", false, true),
        ("gre_inbound_one_by_one", true, false),
        ("gre_outbound_one_by_one", false, false),
    ] {
        let mut start = 0usize;
        let iface = if inbound { OUTSIDE } else { INSIDE };
        let metas = [RxMeta { iface }; 64];
        let mut verdicts = [Verdict::ToHost; 64];
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    start = (start + 64 * 157) % frames.len();
                    for (j, (buf, len)) in bufs.iter_mut().enumerate() {
                        let (i, o) = &frames[(start + j * 157) % frames.len()];
                        let t = if inbound { i } else { o };
                        buf[..t.len()].copy_from_slice(t);
                        *len = t.len();
                    }
                    if batched {
                        let mut batch: Vec<FrameBuf<'_>> =
                            bufs.iter_mut().map(|(buf, len)| FrameBuf { buf: &mut buf[..], len: *len }).collect();
                        let t0 = std::time::Instant::now();
                        e.process_batch(&mut batch, &metas, Time::from_secs(1), &mut verdicts);
                        total += t0.elapsed();
                        debug_assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward(_))));
                        black_box(&verdicts);
                        continue;
                    }
                    let t0 = std::time::Instant::now();
                    for (buf, len) in bufs.iter_mut() {
                        let mut f = FrameBuf { buf: &mut buf[..], len: *len };
                        let v = e.process(&mut f, RxMeta { iface }, Time::from_secs(1));
                        debug_assert!(matches!(v, Verdict::Forward(_)));
                        black_box(v);
                    }
                    total += t0.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn control(c: &mut Criterion) {
    // one control message (an Echo-Request, then its reply) on an established connection
    // with 10 000 calls in the inspector: stream parsing, the session lookup, the rewrite
    use xgw_dataplane::alg::pptp::msg::{build, MsgType};
    let (mut e, _) = engine_with_calls(CALLS);
    let echo = build(MsgType::EchoRq, &[]);
    let mut seq = 101 + 168u32;
    let mut g = c.benchmark_group("pptp");
    g.throughput(Throughput::Elements(1));
    let c0 = [10, 0, 0, 2];
    g.bench_function("control_message", |b| {
        b.iter_batched_ref(
            || {
                let mut v = Vec::new();
                etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                    .ipv4(c0, xgw_bench::PAC, 64)
                    .tcp(40000, 1723, seq, 65535)
                    .ack(701 + 32) // after the PAC's SYN-ACK (700) and its OCRP
                    .psh()
                    .write(&mut v, &echo)
                    .expect("build");
                seq = seq.wrapping_add(echo.len() as u32);
                let len = v.len();
                v.resize(2048, 0);
                (v, len)
            },
            |(buf, len)| {
                let mut f = FrameBuf { buf: &mut buf[..], len: *len };
                black_box(e.process(&mut f, RxMeta { iface: INSIDE }, Time::from_secs(1)))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, gre, control);
criterion_main!(benches);
