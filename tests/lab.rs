//! xgw-lab: xgw's main job, shown. N real PPTP clients (pptp-linux) behind xgw share one
//! outside address towards one real PPTP server (pptpd), every client with the same Call ID;
//! LCP echoes run through every tunnel; then the gateway's tables are printed with xgwctl.
//! Everything is torn down at the end, or on Ctrl-C.
//!
//! Usage: xgw-lab [--clients N] [--call-id ID] [--seconds S]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xgw_tests::pptp::{client, client_addr, PptpLab, OUTSIDE, SERVER};

const RULES: &str = include_str!("../rules/examples/lab.rules");

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.strip_prefix("0x").map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok()))
        .unwrap_or(default)
}

fn show(title: &str, out: std::process::Output) {
    println!("\n$ {title}");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

fn main() -> std::process::ExitCode {
    let n = arg("--clients", 4).clamp(1, 50) as usize;
    let call_id = arg("--call-id", 0x0100) as u16;
    let seconds = arg("--seconds", 15).clamp(5, 3600);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }

    println!("xgw lab: {n} PPTP clients (pptp-linux) -> xgw -> PPTP server (pptpd) at {SERVER}");
    println!("  inside  10.10.0.0/24 ({} .. {}), gateway 10.10.0.1", client_addr(1), client_addr(n));
    println!("  outside {OUTSIDE} (shared by every client), policy rules/examples/lab.rules");
    println!("  every client's Call ID forced to 0x{call_id:04x}; PPP on both ends is xgw-ppp (no PPP in this kernel)");
    let mut lab = PptpLab::start(n, RULES);
    lab.start_clients(call_id, seconds + 10);
    let all: Vec<usize> = (1..=n).collect();
    let t0 = Instant::now();
    let mut up = false;
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(30) {
        if lab.wait_replies(&all, 3, Duration::from_millis(500)) {
            up = true;
            break;
        }
    }
    if !up {
        println!("\nnot every tunnel came up within 30 s:");
    } else {
        println!(
            "\nall {n} tunnels up after {:.1} s; passing LCP echoes through every tunnel for {seconds} s ...",
            t0.elapsed().as_secs_f64()
        );
        let t1 = Instant::now();
        while !stop.load(Ordering::Relaxed) && t1.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!();
    let mut ok = up;
    for i in 1..=n {
        let replies = lab.own_replies(i);
        let open = lab.client_log(i).contains("lcp open");
        println!(
            "  {} ({}): LCP {}, {replies} of its echoes answered through its own call",
            client(i),
            client_addr(i),
            if open { "open" } else { "NOT open" }
        );
        ok &= open && replies > 0;
    }
    let calls = lab.server_calls();
    for (call, toks) in &calls {
        println!("  server {} carried frames of {:?}", call.trim_start_matches("call "), toks);
        ok &= toks.len() == 1;
    }
    show("xgwctl pptp", lab.xgwctl(&["pptp"]));
    show("xgwctl conntrack list", lab.xgwctl(&["conntrack", "list"]));
    show("xgwctl xlate", lab.xgwctl(&["xlate"]));
    let sources = lab.outside_sources();
    println!("\nsource addresses seen on the outside link: {sources:?}");
    println!("\ntearing the lab down");
    drop(lab);
    if ok {
        println!("lab done: {n} clients with one Call ID shared {OUTSIDE}, each on its own call");
        std::process::ExitCode::SUCCESS
    } else {
        println!("lab FAILED: see above");
        std::process::ExitCode::FAILURE
    }
}
