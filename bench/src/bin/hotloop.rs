//! Runs the established-flow path in a loop for profiling: `hotloop FLOWS SECONDS batch|single`.
use std::hint::black_box;
use xgw_bench::{engine_with_flows, load, INSIDE};
use xgw_dataplane::{FrameBuf, RxMeta, Time, Verdict};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: u32 = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let secs: f64 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let batch = a.get(3).map(|s| s == "batch").unwrap_or(true);
    let (mut e, frames) = engine_with_flows(n, (n as usize).next_power_of_two().max(1 << 13));
    let stride = if n > 100_000 { 15_619 } else { 61 };
    let mut bufs: Vec<(Vec<u8>, usize)> = (0..64).map(|_| (vec![0u8; 256], 0)).collect();
    let metas = [RxMeta { iface: INSIDE }; 64];
    let mut verdicts = [Verdict::ToHost; 64];
    let mut start = 0usize;
    let mut timed = std::time::Duration::ZERO;
    let mut pkts = 0u64;
    let t_end = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    while std::time::Instant::now() < t_end {
        for _ in 0..100 {
            start = (start + 64 * stride) % frames.len();
            load(&mut bufs, &frames, start, stride);
            let mut batchv: [FrameBuf<'_>; 64] = std::array::from_fn(|_| FrameBuf { buf: &mut [], len: 0 });
            for ((buf, len), f) in bufs.iter_mut().zip(batchv.iter_mut()) {
                *f = FrameBuf { buf: &mut buf[..], len: *len };
            }
            let t0 = std::time::Instant::now();
            if batch {
                e.process_batch(&mut batchv, &metas, Time::from_secs(1), &mut verdicts);
            } else {
                for (f, v) in batchv.iter_mut().zip(verdicts.iter_mut()) {
                    *v = e.process(f, RxMeta { iface: INSIDE }, Time::from_secs(1));
                }
            }
            timed += t0.elapsed();
            pkts += 64;
            black_box(&verdicts);
        }
    }
    println!(
        "{n} flows {}: {:.1} ns/packet",
        if batch { "batch" } else { "single" },
        timed.as_nanos() as f64 / pkts as f64
    );
}
