//! xdpgen: line-rate-ish traffic for bench/nat-compare from XDP itself, so that the gateway —
//! not the generator — is what runs out of CPU.
//!
//! - `xdpgen gen DEV udp|gre SRC_MAC DST_MAC SRC DST PORT_OR_CALL_ID FLOWS SECONDS [RATE]`:
//!   64-byte frames (UDP to PORT with source ports 1024.. over FLOWS flows, or PPTP GRE with
//!   key CALL_ID) sent out of DEV by xgw's `xgw_gen` program through BPF_PROG_TEST_RUN in
//!   live-frames mode, for SECONDS, as fast as it can or paced at RATE frames a second; with
//!   RATE `saturate`, in runs long enough that the receiver's ring never empties between them.
//!   Prints `sent=<n> seconds=<s>`.
//! - `xdpgen relay IN_DEV OUT_DEV udp|gre SRC_MAC DST_MAC SRC DST PORT_OR_CALL_ID FLOWS`:
//!   attaches the same `xgw_gen` program to IN_DEV, so that every frame arriving there is
//!   rewritten into the benchmark's frame (over FLOWS flows) and redirected out of OUT_DEV,
//!   until killed: a packet socket sending steadily into IN_DEV's peer makes a steady stream
//!   of XDP frames into OUT_DEV's peer — what a NIC hands its driver — without
//!   `BPF_PROG_TEST_RUN`'s runs (each sent at once, then ~15–24 ms to set up the next).
//! - `xdpgen sink DEV FILE`: attaches `xgw_sink` to DEV (it counts and drops the benchmark's
//!   UDP and GRE) and writes the count to FILE every 100 ms until killed.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use aya::maps::{Array, DevMap, PerCpuArray};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use xgw_bench::{gre_frame_between, ifindex, mac, udp_frame_between};

fn total(m: &PerCpuArray<&aya::maps::MapData, u64>, i: u32) -> u64 {
    m.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

/// Builds the benchmark's frame from `a` (`_ gen DEV KIND SRC_MAC DST_MAC SRC DST PORT FLOWS`)
/// and programs `xgw_gen`'s maps with it: the frame's first 48 bytes, the flow count (UDP),
/// and DEV as the device to send out of. Returns the whole frame.
fn program_frames(bpf: &mut aya::Ebpf, a: &[String]) -> Vec<u8> {
    let arg = |i: usize| a.get(i).map(String::as_str).unwrap_or_else(|| panic!("argument {i} missing; see the source"));
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (arg(6).parse().expect("SRC"), arg(7).parse().expect("DST"));
    let port: u16 = arg(8).parse().expect("PORT");
    let flows: u32 = arg(9).parse().expect("FLOWS");
    let frame = match arg(3) {
        "udp" => udp_frame_between(mac(arg(4)), mac(arg(5)), src.octets(), dst.octets(), 1024, port),
        _ => gre_frame_between(mac(arg(4)), mac(arg(5)), src.octets(), dst.octets(), port, 14),
    };
    Array::<_, u32>::try_from(bpf.map_mut("GEN").expect("GEN"))
        .expect("array")
        .set(0, if arg(3) == "udp" { flows } else { 0 }, 0)
        .expect("set");
    let mut head = [0u8; 48];
    head.copy_from_slice(&frame[..48]);
    Array::<_, [u8; 48]>::try_from(bpf.map_mut("GEN_FRAME").expect("GEN_FRAME"))
        .expect("array")
        .set(0, head, 0)
        .expect("set");
    DevMap::try_from(bpf.map_mut("TX").expect("TX")).expect("devmap").set(0, ifindex(arg(2)), None, 0).expect("tx");
    frame
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).map(String::as_str).unwrap_or_else(|| panic!("argument {i} missing; see the source"));
    let mut bpf = aya::Ebpf::load(xgw_control::daemon::xdp_bench_object()).expect("load xgw's benchmark XDP object");
    match arg(1) {
        "relay" => {
            // relay IN_DEV OUT_DEV KIND SRC_MAC DST_MAC SRC DST PORT FLOWS: the arguments of
            // `gen` from KIND on, one place to the right
            let shifted: Vec<String> = a.iter().skip(1).cloned().collect();
            let in_dev = arg(2);
            program_frames(&mut bpf, &shifted);
            let prog: &mut Xdp = bpf.program_mut("xgw_gen").expect("xgw_gen").try_into().expect("xdp");
            prog.load().expect("verifier");
            prog.attach(in_dev, XdpMode::Driver).expect("attach the relay");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "gen" => {
            let secs: u64 = arg(10).parse().expect("SECONDS");
            let frame = program_frames(&mut bpf, &a);
            let prog: &mut Xdp = bpf.program_mut("xgw_gen").expect("xgw_gen").try_into().expect("xdp");
            prog.load().expect("verifier");
            // an optional rate (frames per second): runs of at most a hundredth of it, paced;
            // or `saturate`: runs that grow until each lasts a quarter of a second or more, so
            // that the receiver's ring is full for the whole time (a run's frames go out far
            // faster than any receiver takes them: the rest are refused) instead of a ring's
            // worth a run and a wait while the next one is set up
            let saturate = a.get(11).is_some_and(|s| s == "saturate");
            let rate: Option<u64> = a.get(11).and_then(|s| s.parse().ok()).filter(|&r| r > 0);
            let mut per_run = rate.map_or(1 << 14, |r| (r / 100).clamp(1, 1 << 14) as u32);
            let t0 = Instant::now();
            let mut runs = 0u64;
            while t0.elapsed() < Duration::from_secs(secs) {
                let mut o = TestRunOptions::new();
                o.data_in = Some(&frame);
                o.repeat = per_run;
                o.attrs = TestRunAttrs::new().xdp_live_frames(64);
                let t = Instant::now();
                prog.test_run(o).expect("BPF_PROG_TEST_RUN (live frames)");
                runs += 1;
                if saturate && t.elapsed() < Duration::from_millis(250) {
                    per_run = per_run.saturating_mul(2).min(1 << 30);
                }
                if let Some(r) = rate {
                    let due = Duration::from_secs_f64((runs * u64::from(per_run)) as f64 / r as f64);
                    std::thread::sleep(due.saturating_sub(t0.elapsed()));
                }
            }
            let sent = total(&PerCpuArray::try_from(bpf.map("GEN_COUNT").expect("count")).expect("percpu"), 0);
            println!("sent={sent} seconds={:.3}", t0.elapsed().as_secs_f64());
        }
        "sink" => {
            let (dev, file) = (arg(2), arg(3));
            let prog: &mut Xdp = bpf.program_mut("xgw_sink").expect("xgw_sink").try_into().expect("xdp");
            prog.load().expect("verifier");
            prog.attach(dev, XdpMode::Driver).expect("attach the sink");
            let counts = PerCpuArray::try_from(bpf.map("GEN_COUNT").expect("count")).expect("percpu");
            // written whole, then renamed over the file: a reader never sees it half-written
            // (an empty read counted as 0 made differences negative)
            let tmp = format!("{file}.tmp");
            loop {
                if std::fs::write(&tmp, format!("{}\n", total(&counts, 1))).is_ok() {
                    let _ = std::fs::rename(&tmp, file);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        _ => {
            eprintln!(
                "usage: xdpgen gen DEV udp|gre SRC_MAC DST_MAC SRC DST PORT FLOWS SECONDS [RATE] | xdpgen relay IN_DEV OUT_DEV udp|gre SRC_MAC DST_MAC SRC DST PORT FLOWS | xdpgen sink DEV FILE"
            );
            std::process::exit(2);
        }
    }
}
