//! Frame builders and independent checksum checks for engine tests. Frames are built
//! with etherparse and checked with etherparse (or a plain RFC 1071 sum written here),
//! never with the engine's own checksum code.
#![allow(dead_code, reason = "each test file uses a different part of these helpers")]
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use std::net::Ipv4Addr;
use std::sync::Arc;
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Shared, Time, Verdict};

pub const INSIDE: IfaceId = IfaceId(0);
pub const OUTSIDE: IfaceId = IfaceId(1);
pub const P: [u8; 4] = [203, 0, 113, 1];
pub const S: [u8; 4] = [198, 51, 100, 20];
pub const C1: [u8; 4] = [10, 0, 0, 5];
pub const C2: [u8; 4] = [10, 0, 0, 6];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

pub fn engine() -> Engine {
    engine_with(EngineConfig::example())
}

pub fn engine_with(cfg: EngineConfig) -> Engine {
    Engine::new(Arc::new(Shared::new(cfg).expect("valid config")))
}

pub fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    tcp_ttl(src, dst, sport, dport, flags, payload, 64)
}

pub fn tcp_ttl(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: &str, payload: &[u8], ttl: u8) -> Vec<u8> {
    build_tcp(src, dst, (sport, dport), (1000, 1), flags, payload, ttl)
}

/// A TCP frame: `ports` and `seq_ack` are (source, destination) and (sequence,
/// acknowledgement); `flags` letters S, A (with the acknowledgement), F, R, P.
fn build_tcp(
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    seq_ack: (u32, u32),
    flags: &str,
    payload: &[u8],
    ttl: u8,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, ttl).tcp(ports.0, ports.1, seq_ack.0, 65535);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(seq_ack.1),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => b,
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build");
    v
}

pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).udp(sport, dport).write(&mut v, payload).expect("build");
    v
}

pub fn echo(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16, reply: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64);
    if reply {
        b.icmpv4_echo_reply(id, seq).write(&mut v, b"ping").expect("build");
    } else {
        b.icmpv4_echo_request(id, seq).write(&mut v, b"ping").expect("build");
    }
    v
}

/// A raw IPv4 packet with an arbitrary protocol and payload.
pub fn raw_ip(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .write(&mut v, etherparse::IpNumber(proto), payload)
        .expect("build");
    v
}

/// An ICMP error (`typ`, `code`, next-hop MTU `mtu`) from `router` to `to` quoting the first
/// 28 bytes of `quoted`'s IP packet, its checksum computed with the plain sum here.
pub fn icmp_error(router: [u8; 4], to: [u8; 4], typ: u8, code: u8, mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let ip_pkt = &quoted[14..];
    let q = &ip_pkt[..ip_pkt.len().min(28)];
    let mut body = vec![typ, code, 0, 0, 0, 0];
    body.extend_from_slice(&mtu.to_be_bytes());
    body.extend_from_slice(q);
    let mut s: u32 = 0;
    for ch in body.chunks(2) {
        s += u32::from(ch[0]) << 8 | u32::from(*ch.get(1).unwrap_or(&0));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    body[2..4].copy_from_slice(&(!(s as u16)).to_be_bytes());
    raw_ip(router, to, 1, &body)
}

pub fn run(e: &mut Engine, frame: &mut Vec<u8>, iface: IfaceId, t: u64) -> Verdict {
    let len = frame.len();
    let mut buf = frame.clone();
    buf.resize(2048, 0);
    let mut f = FrameBuf { buf: &mut buf[..], len };
    let v = e.process(&mut f, RxMeta { iface }, Time::from_millis(t));
    let n = f.len;
    *frame = buf[..n].to_vec();
    v
}

/// Sets the IPv4 header checksum of an Ethernet frame (header length from its IHL), for
/// tests that edit a header by hand.
pub fn fix_ip_csum(f: &mut [u8]) {
    let end = 14 + usize::from(f[14] & 0x0f) * 4;
    f[24] = 0;
    f[25] = 0;
    let mut s: u32 = 0;
    for c in f[14..end].chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(c[1]);
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

/// Independent RFC 1071 sum check.
pub fn sums_to_ones(data: &[u8], init: u32) -> bool {
    let mut s = init;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u32::from(c[0]) << 8 | u32::from(c[1]) } else { u32::from(c[0]) << 8 };
        s += w;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// Checks every checksum in a frame with etherparse (IP, TCP, UDP) or the plain sum (ICMP).
pub fn assert_checksums(frame: &[u8]) {
    let p = SlicedPacket::from_ethernet(frame).expect("parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).expect("calc");
            assert_eq!(t.checksum(), want, "TCP checksum");
        }
        Some(TransportSlice::Udp(u)) if u.checksum() != 0 => {
            let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).expect("calc");
            assert_eq!(u.checksum(), want, "UDP checksum");
        }
        Some(TransportSlice::Icmpv4(_)) => {
            let l4 = ip.payload().payload;
            assert!(sums_to_ones(l4, 0), "ICMP checksum");
        }
        _ => {}
    }
}

pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
}

/// Addresses and ports of a TCP or UDP frame (ICMP: id as sport).
pub fn tuple(frame: &[u8]) -> Tuple {
    let p = SlicedPacket::from_ethernet(frame).expect("parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
    let h = ip.header();
    let (sport, dport) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        Some(TransportSlice::Icmpv4(i)) => {
            let b = i.slice();
            (u16::from_be_bytes([b[4], b[5]]), 0)
        }
        _ => (0, 0),
    };
    Tuple { src: h.source_addr(), dst: h.destination_addr(), sport, dport, ttl: h.ttl() }
}

/// Turns a TCP or UDP frame's checksum into what a sender with transmit checksum offload
/// hands over (Linux `CHECKSUM_PARTIAL`): the folded pseudo-header sum alone, computed here
/// with the plain sum. Returns the value written.
pub fn make_partial(frame: &mut [u8]) -> u16 {
    let ip = &frame[14..];
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let proto = ip[9];
    let mut s: u32 = 0;
    for c in ip[12..20].chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(c[1]);
    }
    s += u32::from(proto) + (total - hl) as u32;
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    let field = 14 + hl + if proto == 6 { 16 } else { 6 };
    frame[field..field + 2].copy_from_slice(&(s as u16).to_be_bytes());
    s as u16
}

/// A TCP frame with chosen sequence and acknowledgement numbers (`flags` as in [`tcp`]).
#[expect(clippy::too_many_arguments, reason = "every TCP header field a test sets")]
pub fn tcp_seq(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    build_tcp(src, dst, (sport, dport), (seq, ack), flags, payload, 64)
}
