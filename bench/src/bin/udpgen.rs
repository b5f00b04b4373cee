//! udpgen: sends 64-byte UDP frames (18-byte payloads) as fast as it can for a while.
//!
//! - `udpgen flows DST PORT N SECONDS`: N sockets (N flows), round robin.
//! - `udpgen new DST FIRST_PORT COUNT`: one socket, COUNT datagrams to COUNT distinct
//!   destination ports (COUNT new flows), then prints how long it took.
//! - `udpgen gre DST CALL_ID SECONDS`: 64-byte frames of PPTP enhanced GRE (key = CALL_ID,
//!   sequence numbers, 14-byte payloads) through a raw socket — the data of one PPTP call.
//!
//! Prints `sent=<n> seconds=<s>`.
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
        _ => {
            eprintln!("usage: udpgen flows DST PORT N SECONDS | udpgen new DST FIRST_PORT COUNT | udpgen gre DST CALL_ID SECONDS");
            std::process::exit(2);
        }
    }
}
