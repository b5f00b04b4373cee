//! udpgen: sends 64-byte UDP frames (18-byte payloads) as fast as it can for a while.
//!
//! - `udpgen flows DST PORT N SECONDS`: N sockets (N flows), round robin.
//! - `udpgen new DST FIRST_PORT COUNT`: one socket, COUNT datagrams to COUNT distinct
//!   destination ports (COUNT new flows), then prints how long it took.
//! - `udpgen gre DST CALL_ID SECONDS`: 64-byte frames of PPTP enhanced GRE (key = CALL_ID,
//!   sequence numbers, 14-byte payloads) through a raw socket — the data of one PPTP call.
//! - `udpgen ping DST PORT COUNT INTERVAL_MS`: one flow, a datagram every INTERVAL_MS to an
//!   echo server, each waited for (200 ms at most); prints the round trips' median and 99th
//!   percentile in microseconds and how many were lost: `p50_us=<n> p99_us=<n> lost=<n>`.
//!
//! Prints `sent=<n> seconds=<s>` (but `ping`).
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mode = a.get(1).map(String::as_str).unwrap_or("");
    let dst: std::net::Ipv4Addr = a.get(2).and_then(|s| s.parse().ok()).expect("DST address");
    let port: u16 = a.get(3).and_then(|s| s.parse().ok()).expect("PORT");
    let payload = [0x5au8; 18];
    match mode {
        "flows" => {
            let n: usize = a.get(4).and_then(|s| s.parse().ok()).expect("N");
            let secs: u64 = a.get(5).and_then(|s| s.parse().ok()).expect("SECONDS");
            let socks: Vec<UdpSocket> = (0..n)
                .map(|_| {
                    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    s.connect(SocketAddr::from((dst, port))).expect("connect");
                    s.set_nonblocking(true).expect("nonblocking");
                    s
                })
                .collect();
            let t0 = Instant::now();
            let mut sent = 0u64;
            'outer: loop {
                for s in &socks {
                    if s.send(&payload).is_ok() {
                        sent += 1;
                    }
                }
                if t0.elapsed() >= Duration::from_secs(secs) {
                    break 'outer;
                }
            }
            println!("sent={sent} seconds={:.3}", t0.elapsed().as_secs_f64());
        }
        "new" => {
            let count: u32 = a.get(4).and_then(|s| s.parse().ok()).expect("COUNT");
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let t0 = Instant::now();
            let mut sent = 0u64;
            for i in 0..count {
                let p = port.wrapping_add((i % 60_000) as u16);
                if s.send_to(&payload, SocketAddr::from((dst, p))).is_ok() {
                    sent += 1;
                }
            }
            println!("sent={sent} seconds={:.3}", t0.elapsed().as_secs_f64());
        }
        "gre" => {
            let secs: u64 = a.get(4).and_then(|s| s.parse().ok()).expect("SECONDS");
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::from(47)))
                .expect("raw GRE socket (needs CAP_NET_RAW)");
            s.connect(&SocketAddr::from((dst, 0)).into()).expect("connect");
            let mut pkt = [0u8; 12 + 14];
            pkt[..4].copy_from_slice(&[0x30, 0x01, 0x88, 0x0b]);
            pkt[4..6].copy_from_slice(&14u16.to_be_bytes());
            pkt[6..8].copy_from_slice(&port.to_be_bytes());
            let t0 = Instant::now();
            let mut sent = 0u64;
            while t0.elapsed() < Duration::from_secs(secs) {
                for _ in 0..64 {
                    pkt[8..12].copy_from_slice(&(sent as u32).to_be_bytes());
                    if s.send(&pkt).is_ok() {
                        sent += 1;
                    }
                }
            }
            println!("sent={sent} seconds={:.3}", t0.elapsed().as_secs_f64());
        }
        "ping" => {
            let count: u32 = a.get(4).and_then(|s| s.parse().ok()).expect("COUNT");
            let every: u64 = a.get(5).and_then(|s| s.parse().ok()).expect("INTERVAL_MS");
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.connect(SocketAddr::from((dst, port))).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            let mut rtts = Vec::with_capacity(count as usize);
            let mut lost = 0u32;
            let mut buf = [0u8; 64];
            for seq in 0..count {
                let t = Instant::now();
                // "warm": nat-compare's sink passes these to its echo server, not to its counter
                let mut msg = payload;
                msg[..4].copy_from_slice(b"warm");
                msg[4..8].copy_from_slice(&seq.to_be_bytes());
                let _ = s.send(&msg);
                let got = loop {
                    match s.recv(&mut buf) {
                        Ok(n) if n >= 8 && buf[4..8] == seq.to_be_bytes() => break true,
                        Ok(_) => continue, // a late answer to an earlier one
                        Err(_) => break false,
                    }
                };
                if got {
                    rtts.push(t.elapsed().as_micros() as u64);
                } else {
                    lost += 1;
                }
                std::thread::sleep(Duration::from_millis(every).saturating_sub(t.elapsed()));
            }
            rtts.sort_unstable();
            let pct =
                |p: usize| rtts.get((rtts.len() * p / 100).min(rtts.len().saturating_sub(1))).copied().unwrap_or(0);
            println!("p50_us={} p99_us={} lost={lost}", pct(50), pct(99));
        }
        _ => {
            eprintln!("usage: udpgen flows DST PORT N SECONDS | udpgen new DST FIRST_PORT COUNT | udpgen gre DST CALL_ID SECONDS | udpgen ping DST PORT COUNT INTERVAL_MS");
            std::process::exit(2);
        }
    }
}
