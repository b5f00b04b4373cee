//! Engine micro benchmarks. Groups are named subsystem/case; throughput is in packets.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use xgw_bench::{engine_with_flows, inside_src, load, tcp_frame, udp_frame, INSIDE};
use xgw_dataplane::conntrack::FlowKey;
use xgw_dataplane::wire::{ethernet, ipv4, tcp};
use xgw_dataplane::{EngineConfig, FrameBuf, RxMeta, Shared, Time};

const MILLION: u32 = 1_000_000;

fn wire(c: &mut Criterion) {
    let f = tcp_frame([10, 0, 0, 5], [198, 51, 100, 20], 40000, 443);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_tcp", |b| {
        b.iter(|| {
            let frame = black_box(&f[..]);
            let eth = ethernet::Frame::new_checked(frame).expect("eth");
            let ip = ipv4::Packet::new_checked(&frame[eth.payload_offset()..]).expect("ip");
            let ok = ip.verify_checksum();
            let t = tcp::Packet::new_checked(ip.payload()).expect("tcp");
            black_box((ok, ip.src_addr(), ip.dst_addr(), t.src_port(), t.dst_port(), t.flags()))
        })
    });
    g.finish();
}

fn conntrack(c: &mut Criterion) {
    let (e, _) = engine_with_flows(MILLION, 1 << 20);
    let flows = &e.shared().flows;
    // the keys as inside packets carry them
    let keys: Vec<FlowKey> = (0..MILLION)
        .step_by(7)
        .map(|i| {
            let (src, sport) = inside_src(i);
            FlowKey {
                src: u32::from_be_bytes(src),
                dst: u32::from_be_bytes([198, 51, 100, (i % 200) as u8 + 1]),
                sport,
                dport: 53,
                proto: 17,
            }
        })
        .collect();
    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    // as the packet path looks: the index's candidate, confirmed under the flow's lock (and
    // rarely another key with the same tag, refused there and settled by lookup())
    g.bench_function("lookup_hit_1m", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let k = &keys[i];
            let read = |r| flows.with_flow(r, k, |f, _| f.rewrite[0].sport);
            let got = flows.lookup_probe(&flows.probe(k)).and_then(read).or_else(|| flows.lookup(k).and_then(read));
            black_box(got.expect("hit"))
        })
    });
    g.finish();
}

fn nat_small(c: &mut Criterion) {
    // the same measurement with 4096 flows: everything in cache, so this is the compute cost
    let (mut e, frames) = engine_with_flows(4096, 1 << 13);
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(64));
    let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; 2048]; 64];
    let mut start = 0usize;
    g.bench_function("translate_established_4k_one_by_one", |b| {
        b.iter(|| {
            start = (start + 64 * 61) % frames.len();
            for (j, buf) in bufs.iter_mut().enumerate() {
                let t = &frames[(start + j * 61) % frames.len()];
                buf[..t.len()].copy_from_slice(t);
                let mut f = FrameBuf { buf: &mut buf[..], len: t.len() };
                black_box(e.process(&mut f, RxMeta { iface: INSIDE }, Time::from_secs(1)));
            }
        })
    });
    let metas = [RxMeta { iface: INSIDE }; 64];
    let mut verdicts = [xgw_dataplane::Verdict::ToHost; 64];
    g.bench_function("translate_established_4k", |b| {
        b.iter(|| {
            start = (start + 64 * 61) % frames.len();
            let mut batch: [FrameBuf<'_>; 64] = std::array::from_fn(|_| FrameBuf { buf: &mut [], len: 0 });
            for (j, (buf, f)) in bufs.iter_mut().zip(batch.iter_mut()).enumerate() {
                let t = &frames[(start + j * 61) % frames.len()];
                buf[..t.len()].copy_from_slice(t);
                *f = FrameBuf { buf: &mut buf[..], len: t.len() };
            }
            e.process_batch(&mut batch, &metas, Time::from_secs(1), &mut verdicts);
            black_box(&verdicts);
        })
    });
    g.finish();
}

fn nat(c: &mut Criterion) {
    let (mut e, frames) = engine_with_flows(MILLION, 1 << 20);
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(64));
    // batches of 64 frames of 64 different flows spread over the table. Loading the frames
    // into their buffers is untimed (a NIC hands the worker frames already in memory); only
    // the engine is measured. `translate_established_1m` is the figure: batches of
    // 64 through Engine::process_batch, as the AF_XDP worker runs them; `_one_by_one` feeds
    // the same frames to Engine::process, where each packet waits for its own misses.
    let mut start = 0usize;
    let stride = 15_619; // a step that makes a batch touch distant slots
    let mut bufs: Vec<(Vec<u8>, usize)> = (0..64).map(|_| (vec![0u8; 256], 0)).collect();
    g.bench_function("translate_established_1m_one_by_one", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                start = (start + 64 * stride) % frames.len();
                load(&mut bufs, &frames, start, stride);
                let t0 = std::time::Instant::now();
                for (buf, len) in bufs.iter_mut() {
                    let mut f = FrameBuf { buf: &mut buf[..], len: *len };
                    black_box(e.process(&mut f, RxMeta { iface: INSIDE }, Time::from_secs(1)));
                }
                total += t0.elapsed();
            }
            total
        })
    });
    // the same batches through Engine::process_batch: the engine hashes and prefetches the
    // whole batch's buckets, then its slots, before it reads any of them
    let metas = [RxMeta { iface: INSIDE }; 64];
    let mut verdicts = [xgw_dataplane::Verdict::ToHost; 64];
    g.bench_function("translate_established_1m", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                start = (start + 64 * stride) % frames.len();
                load(&mut bufs, &frames, start, stride);
                let mut batch: Vec<FrameBuf<'_>> =
                    bufs.iter_mut().map(|(buf, len)| FrameBuf { buf: &mut buf[..], len: *len }).collect();
                let t0 = std::time::Instant::now();
                e.process_batch(&mut batch, &metas, Time::from_secs(1), &mut verdicts);
                total += t0.elapsed();
                black_box(&verdicts);
            }
            total
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut cfg = EngineConfig::example();
    cfg.ifaces[0].prefix_len = 16;
    cfg.limits.max_flows = 1 << 20;
    cfg.limits.event_ring = 0;
    let fresh = || xgw_dataplane::Engine::new(std::sync::Arc::new(Shared::new(cfg.clone()).expect("cfg")));
    // 500k distinct first packets; the table is replaced (untimed) before it fills
    let firsts: Vec<Vec<u8>> = (0..500_000u32)
        .map(|n| {
            let (src, sport) = inside_src(n);
            udp_frame(src, [198, 51, 100, (n % 200) as u8 + 1], sport, 53)
        })
        .collect();
    let mut eng = fresh();
    let mut next = 0usize;
    let mut buf = vec![0u8; 2048];
    g.bench_function("new_flow", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if next == firsts.len() {
                    eng = fresh();
                    next = 0;
                }
                let n = left.min((firsts.len() - next) as u64);
                let t0 = std::time::Instant::now();
                for t in &firsts[next..next + n as usize] {
                    buf[..t.len()].copy_from_slice(t);
                    let mut f = FrameBuf { buf: &mut buf[..], len: t.len() };
                    black_box(eng.process(&mut f, RxMeta { iface: INSIDE }, Time::ZERO));
                }
                total += t0.elapsed();
                next += n as usize;
                left -= n;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, wire, conntrack, nat_small, nat);
criterion_main!(benches);
