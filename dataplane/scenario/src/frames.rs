//! Frames with valid checksums, built with etherparse (an implementation independent of the
//! engine's).

use arbitrary::Arbitrary;
use etherparse::{Icmpv4Type, PacketBuilder};

const MAC_IN: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_GW: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// A protocol and the fields a step chooses for it.
#[derive(Debug, Clone, Copy, Arbitrary, PartialEq, Eq)]
pub enum Proto {
    /// TCP with these flags (SYN, ACK, FIN, RST, PSH bits of the byte).
    Tcp(u8),
    /// UDP.
    Udp,
    /// ICMP echo request (the identifier is the step's source port).
    Echo,
}

/// An Ethernet frame carrying one IPv4 packet.
pub fn packet(src: [u8; 4], dst: [u8; 4], proto: Proto, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_IN, MAC_GW).ipv4(src, dst, 64);
    let mut v = Vec::new();
    let r = match proto {
        Proto::Tcp(f) => {
            let mut t = b.tcp(sport, dport, 1000, 64240);
            if f & 0x02 != 0 {
                t = t.syn();
            }
            if f & 0x10 != 0 {
                t = t.ack(1);
            }
            if f & 0x01 != 0 {
                t = t.fin();
            }
            if f & 0x04 != 0 {
                t = t.rst();
            }
            if f & 0x08 != 0 {
                t = t.psh();
            }
            t.write(&mut v, payload)
        }
        Proto::Udp => b.udp(sport, dport).write(&mut v, payload),
        Proto::Echo => b.icmpv4_echo_request(sport, 1).write(&mut v, payload),
    };
    r.map_or_else(|_| Vec::new(), |()| v)
}

/// An ICMP echo reply.
pub fn echo_reply(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    let r = PacketBuilder::ethernet2(MAC_IN, MAC_GW).ipv4(src, dst, 64).icmpv4_echo_reply(id, 1).write(&mut v, b"pong");
    r.map_or_else(|_| Vec::new(), |()| v)
}

/// An ICMP error from `src` to `dst` quoting `quoted` (an IPv4 packet; its header and the
/// first 8 bytes after it are what RFC 792 asks for, more is allowed).
pub fn icmp_error(src: [u8; 4], dst: [u8; 4], kind: u8, quoted: &[u8]) -> Vec<u8> {
    let t = if kind.is_multiple_of(2) {
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
    } else {
        Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
    };
    let mut v = Vec::new();
    let r = PacketBuilder::ethernet2(MAC_IN, MAC_GW).ipv4(src, dst, 64).icmpv4(t).write(&mut v, quoted);
    r.map_or_else(|_| Vec::new(), |()| v)
}
