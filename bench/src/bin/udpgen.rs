//! udpgen: sends 64-byte UDP frames (18-byte payloads) as fast as it can for a while.
//!
//! - `udpgen flows DST PORT N SECONDS`: N sockets (N flows), round robin.
//! - `udpgen new DST FIRST_PORT COUNT`: one socket, COUNT datagrams to COUNT distinct
//!   destination ports (COUNT new flows), then prints how long it took.
//! - `udpgen burst DEV SRC_MAC DST_MAC SRC DST FIRST_PORT COUNT [RATE]`: the same COUNT new
//!   flows as `new` (from source port 61500), as prebuilt Ethernet frames through a packet
//!   socket on DEV that bypasses the qdisc: the sender's own UDP, IP and neighbour work is
//!   not paid per datagram, so it offers them faster than `new` can; with RATE, steadily at
//!   RATE frames a second. Prints how long it took.
//! - `udpgen paced DEV SRC_MAC DST_MAC SRC DST PORT FLOWS RATE SECONDS`: frames to PORT from
//!   source ports 1024 up, round robin over FLOWS flows, through the same packet socket at
//!   RATE a second, a millisecond's worth at a time, for SECONDS. PORT `gre:CALL_ID` sends
//!   64-byte PPTP GRE frames with key CALL_ID instead (one flow). A RATE above what the
//!   socket can send makes a steady stream at the sender's own speed.
//! - `udpgen gre DST CALL_ID SECONDS`: 64-byte frames of PPTP enhanced GRE (key = CALL_ID,
//!   sequence numbers, 14-byte payloads) through a raw socket — the data of one PPTP call.
//! - `udpgen ping DST PORT COUNT INTERVAL_MS`: one flow, a datagram starting "ping" every
//!   INTERVAL_MS to something that answers it (nat-compare's XDP sink), each waited for
//!   (200 ms at most); prints the round trips' median and 99th percentile in microseconds
//!   and how many were lost: `p50_us=<n> p99_us=<n> lost=<n>`.
//!
//! Prints `sent=<n> seconds=<s>` (but `ping`).
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mode = a.get(1).map(String::as_str).unwrap_or("");
    // every mode but `burst` starts with DST PORT
    let dst = || -> std::net::Ipv4Addr { a.get(2).and_then(|s| s.parse().ok()).expect("DST address") };
    let port = || -> u16 { a.get(3).and_then(|s| s.parse().ok()).expect("PORT") };
    let payload = [0x5au8; 18];
    match mode {
        "flows" => {
            let n: usize = a.get(4).and_then(|s| s.parse().ok()).expect("N");
            let secs: u64 = a.get(5).and_then(|s| s.parse().ok()).expect("SECONDS");
            let socks: Vec<UdpSocket> = (0..n)
                .map(|_| {
                    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    s.connect(SocketAddr::from((dst(), port()))).expect("connect");
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
                let p = port().wrapping_add((i % 60_000) as u16);
                if s.send_to(&payload, SocketAddr::from((dst(), p))).is_ok() {
                    sent += 1;
                }
            }
            println!("sent={sent} seconds={:.3}", t0.elapsed().as_secs_f64());
        }
        "burst" => {
            // burst DEV SRC_MAC DST_MAC SRC DST FIRST_PORT COUNT [RATE]
            let first: u16 = a.get(7).and_then(|s| s.parse().ok()).expect("FIRST_PORT");
            let count: u32 = a.get(8).and_then(|s| s.parse().ok()).expect("COUNT");
            let frames: Vec<Vec<u8>> =
                (0..count).map(|i| frame(&a, 61_500, first.wrapping_add((i % 60_000) as u16))).collect();
            // an optional rate: frames sent as they fall due by the clock (spinning: the
            // generator has its CPU to itself), so the offer is steady, never a ring's worth
            let rate: Option<f64> = a.get(9).and_then(|s| s.parse::<f64>().ok()).filter(|r| *r > 0.0);
            let s = packet_socket(a.get(2).expect("DEV"));
            let t0 = Instant::now();
            let mut sent = 0u64;
            for (i, f) in frames.iter().enumerate() {
                if let Some(r) = rate {
                    while t0.elapsed().as_secs_f64() * r < i as f64 {
                        std::hint::spin_loop();
                    }
                }
                if s.send(f).is_ok() {
                    sent += 1;
                }
            }
            println!("sent={sent} seconds={:.3}", t0.elapsed().as_secs_f64());
        }
        "paced" => {
            // paced DEV SRC_MAC DST_MAC SRC DST PORT FLOWS RATE SECONDS
            let target = a.get(7).expect("PORT");
            let flows: u16 = a.get(8).and_then(|s| s.parse().ok()).filter(|n| (1..=64_000).contains(n)).expect("FLOWS");
            let rate: u64 = a.get(9).and_then(|s| s.parse().ok()).filter(|r| *r > 0).expect("RATE");
            let secs: u64 = a.get(10).and_then(|s| s.parse().ok()).expect("SECONDS");
            let frames: Vec<Vec<u8>> = match target.strip_prefix("gre:") {
                Some(call) => {
                    let mac = |i: usize| xgw_bench::mac(a.get(i).expect("MAC"));
                    let ip = |i: usize| a.get(i).and_then(|s| s.parse::<std::net::Ipv4Addr>().ok()).expect("address");
                    let call = call.parse().expect("CALL_ID");
                    vec![xgw_bench::gre_frame_between(mac(3), mac(4), ip(5).octets(), ip(6).octets(), call, 14)]
                }
                None => {
                    let port: u16 = target.parse().expect("PORT");
                    (0..flows).map(|i| frame(&a, 1024 + i, port)).collect()
                }
            };
            let s = packet_socket(a.get(2).expect("DEV"));
            let t0 = Instant::now();
            let mut sent = 0u64;
            let mut next = 0usize;
            while t0.elapsed() < Duration::from_secs(secs) {
                // what is due by now, then a millisecond's sleep: at most a millisecond's
                // worth of frames at a time, far below a veth ring's 256
                let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let _ = s.send(&frames[next]);
                    next = (next + 1) % frames.len();
                    sent += 1;
                    // a rate above the sender's own keeps it sending: the clock still ends it
                    if sent.is_multiple_of(1024) && t0.elapsed() >= Duration::from_secs(secs) {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            println!("sent={sent} seconds={:.3}", t0.elapsed().as_secs_f64());
        }
        "gre" => {
            let secs: u64 = a.get(4).and_then(|s| s.parse().ok()).expect("SECONDS");
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::from(47)))
                .expect("raw GRE socket (needs CAP_NET_RAW)");
            s.connect(&SocketAddr::from((dst(), 0)).into()).expect("connect");
            let mut pkt = [0u8; 12 + 14];
            pkt[..4].copy_from_slice(&[0x30, 0x01, 0x88, 0x0b]);
            pkt[4..6].copy_from_slice(&14u16.to_be_bytes());
            pkt[6..8].copy_from_slice(&port().to_be_bytes());
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
            s.connect(SocketAddr::from((dst(), port()))).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            let mut rtts = Vec::with_capacity(count as usize);
            let mut lost = 0u32;
            let mut buf = [0u8; 64];
            for seq in 0..count {
                let t = Instant::now();
                // "ping": nat-compare's sink answers these itself, in its XDP program
                let mut msg = payload;
                msg[..4].copy_from_slice(b"ping");
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
            eprintln!("usage: udpgen burst DEV SRC_MAC DST_MAC SRC DST FIRST_PORT COUNT [RATE] | udpgen paced DEV SRC_MAC DST_MAC SRC DST PORT FLOWS RATE SECONDS | udpgen flows DST PORT N SECONDS | udpgen new DST FIRST_PORT COUNT | udpgen gre DST CALL_ID SECONDS | udpgen ping DST PORT COUNT INTERVAL_MS");
            std::process::exit(2);
        }
    }
}

/// A 64-byte UDP frame from `sport` to `dport` between the addresses in arguments 3–6
/// (SRC_MAC DST_MAC SRC DST), 18 bytes of payload.
fn frame(a: &[String], sport: u16, dport: u16) -> Vec<u8> {
    let mac = |i: usize| xgw_bench::mac(a.get(i).expect("MAC"));
    let ip = |i: usize| a.get(i).and_then(|s| s.parse::<std::net::Ipv4Addr>().ok()).expect("address").octets();
    xgw_bench::udp_frame_between(mac(3), mac(4), ip(5), ip(6), sport, dport)
}

/// A packet socket bound to `dev` that hands frames straight to the device (no qdisc).
fn packet_socket(dev: &str) -> socket2::Socket {
    let ifindex = i32::try_from(xgw_bench::ifindex(dev)).expect("an interface index");
    let proto = (libc::ETH_P_ALL as u16).to_be();
    let s = socket2::Socket::new(
        socket2::Domain::PACKET,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(i32::from(proto))),
    )
    .expect("packet socket (needs CAP_NET_RAW)");
    let mut ll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: proto,
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    let one: libc::c_int = 1;
    use std::os::fd::AsRawFd;
    // SAFETY: `ll` is a fully initialised sockaddr_ll and `len` its exact size; `one` is a
    // c_int that outlives the call and its size is passed with it. Both calls only read
    // those bytes, on a socket this function owns.
    #[allow(unsafe_code, reason = "bind(2) and setsockopt(2) with a sockaddr_ll: no safe wrapper for packet addresses")]
    let (b, o) = unsafe {
        (
            libc::bind(s.as_raw_fd(), (&raw mut ll).cast::<libc::sockaddr>(), len),
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ),
        )
    };
    assert!(b == 0 && o == 0, "bind the packet socket to {dev}: {}", std::io::Error::last_os_error());
    s
}
