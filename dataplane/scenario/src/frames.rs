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

/// A TCP segment with explicit sequence and acknowledgement numbers (`flags`: SYN 0x02,
/// ACK 0x10, PSH 0x08, FIN 0x01, RST 0x04).
pub fn tcp_segment(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = PacketBuilder::ethernet2(MAC_IN, MAC_GW).ipv4(src.0, dst.0, 64).tcp(src.1, dst.1, seq, 64240);
    if flags & 0x02 != 0 {
        t = t.syn();
    }
    if flags & 0x10 != 0 {
        t = t.ack(ack);
    }
    if flags & 0x08 != 0 {
        t = t.psh();
    }
    if flags & 0x01 != 0 {
        t = t.fin();
    }
    if flags & 0x04 != 0 {
        t = t.rst();
    }
    let mut v = Vec::new();
    t.write(&mut v, payload).map_or_else(|_| Vec::new(), |()| v)
}

/// An IPv4 packet of protocol `proto` carrying `payload` as it is.
pub fn raw_ip(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(MAC_IN, MAC_GW).ipv4(src, dst, 64);
    b.write(&mut v, etherparse::IpNumber(proto), payload).map_or_else(|_| Vec::new(), |()| v)
}

/// Enhanced GRE (RFC 2637) with key `call_id`, a sequence number and a PPP payload.
pub fn gre(src: [u8; 4], dst: [u8; 4], call_id: u16, seq: u32) -> Vec<u8> {
    let ppp = [0xff, 0x03, 0xc0, 0x21, 0x09, 0x01, 0x00, 0x08, 0, 0, 0, 0];
    let mut g = vec![0x30, 0x01, 0x88, 0x0b];
    g.extend_from_slice(&(ppp.len() as u16).to_be_bytes());
    g.extend_from_slice(&call_id.to_be_bytes());
    g.extend_from_slice(&seq.to_be_bytes());
    g.extend_from_slice(&ppp);
    raw_ip(src, dst, 47, &g)
}

/// ESP with this SPI (sequence number 1, sixteen bytes of "ciphertext").
pub fn esp(src: [u8; 4], dst: [u8; 4], spi: u32) -> Vec<u8> {
    let mut p = spi.to_be_bytes().to_vec();
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&[0xa5; 16]);
    raw_ip(src, dst, 50, &p)
}

/// `frame` (Ethernet + IPv4) split into two IPv4 fragments after `8 * units` bytes of its
/// payload (at least 8, at most all but 8); empty when it is too short to split.
pub fn fragments(frame: &[u8], units: u8) -> Vec<Vec<u8>> {
    let Ok(h) = etherparse::Ipv4HeaderSlice::from_slice(frame.get(14..).unwrap_or(&[])) else { return Vec::new() };
    let hl = h.slice().len();
    let payload = &frame[14 + hl..14 + usize::from(h.total_len())];
    let max = payload.len().saturating_sub(1) / 8;
    if max == 0 {
        return Vec::new();
    }
    let cut = 8 * (1 + usize::from(units) % max);
    let mut out = Vec::new();
    for (part, offset, more) in [(&payload[..cut], 0, true), (&payload[cut..], cut, false)] {
        let mut ip = h.to_header();
        ip.options = Default::default();
        if ip.set_payload_len(part.len()).is_err() {
            return Vec::new();
        }
        ip.identification = 0x5151;
        ip.more_fragments = more;
        ip.dont_fragment = false;
        ip.fragment_offset = etherparse::IpFragOffset::try_new((offset / 8) as u16).unwrap_or_default();
        ip.header_checksum = ip.calc_header_checksum();
        let mut f = frame[..14].to_vec();
        if ip.write(&mut f).is_err() {
            return Vec::new();
        }
        f.extend_from_slice(part);
        out.push(f);
    }
    out
}

/// `frame` with an 802.1Q tag (VLAN `vid`) after its MAC addresses.
pub fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}
