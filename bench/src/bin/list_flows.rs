//! Prints how long listing a million flows through the control socket takes, and that it
//! streams: resident memory while listing grows by far less than the listing's size.
//! The client decodes every line and renders it as `xgwctl conntrack list` would.
//! Usage: list_flows [N] (default 1000000).
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use xgw_control::ctl::{serve, Daemon};
use xgw_control_proto::answer::Count;
use xgw_control_proto::{conntrack_line, Body, Command, Filter, FlowView, Line, Request};

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let (engine, frames) = xgw_bench::engine_with_flows(n, (n as usize).max(1024).next_power_of_two());
    drop(frames);
    let shared = Arc::clone(engine.shared());
    let socket = std::env::temp_dir().join(format!("xgw-list-flows-{}.sock", std::process::id()));
    let d = Daemon {
        shared,
        counters: vec![Arc::clone(engine.counters())],
        base: Instant::now(),
        reload: Box::new(|_| Err("not here".into())),
        xdp_classes: Box::new(Vec::new),
        xdp_steering: Box::new(Vec::new),
        xdp_declined: Box::new(Vec::new),
        egress: None,
        offload: None,
        workers: Vec::new(),
        ha: None,
        natlog: None,
        ports: Vec::new(),
    };
    serve(&socket, Arc::new(d)).expect("serve");
    let before = vm_rss_kib();
    // sample the resident size every 5 ms while the listing runs
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut max = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(vm_rss_kib());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            max
        })
    };
    let t0 = Instant::now();
    let mut s = UnixStream::connect(&socket).expect("connect");
    let req = Request::new(Command::ConntrackList(Filter::default()));
    writeln!(s, "{}", serde_json::to_string(&req).expect("json")).expect("send");
    let (mut items, mut text_bytes, mut wire_bytes) = (0u64, 0usize, 0usize);
    let mut out = std::io::sink();
    for line in BufReader::new(s).lines() {
        let line = line.expect("read");
        wire_bytes += line.len() + 1;
        let l: Line<FlowView, Count> = serde_json::from_str(&line).expect("line");
        let Body::Item(f) = l.body else { break };
        let l = conntrack_line(&f);
        text_bytes += l.len() + 1;
        let _ = writeln!(out, "{l}");
        items += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    let _ = std::fs::remove_file(&socket);
    println!("flows listed:           {items}");
    println!("time:                   {secs:.2} s ({:.0} flows/s)", items as f64 / secs);
    println!("bytes on the socket:    {} MiB (text output {} MiB)", wire_bytes >> 20, text_bytes >> 20);
    println!(
        "resident memory:        {before} KiB before, at most {peak} KiB while listing (+{} KiB)",
        peak.saturating_sub(before)
    );
    assert_eq!(items, u64::from(n), "every flow listed once");
}
