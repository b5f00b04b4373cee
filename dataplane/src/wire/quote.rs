//! The packet an ICMP error quotes (RFC 792: its IP header and at least 8 bytes more), as
//! a view for rewriting it. Every change keeps three checksums right at once, incrementally
//! (RFC 1624): the quoted IP header's, the quoted TCP/UDP/ICMP checksum where the quote
//! holds it (a TCP checksum only when 18 bytes of TCP are quoted; a UDP checksum of 0 means
//! none), and the outer ICMP checksum, which covers the whole quote.

use super::{be16, be32, ipv4, proto, put16, WireError};
use crate::checksum;

/// Which 16 bits above the quoted IP header a rewrite changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// TCP/UDP source port.
    SrcPort,
    /// TCP/UDP destination port.
    DstPort,
    /// ICMP query identifier.
    IcmpIdent,
    /// PPTP GRE key (Call ID), which no checksum covers.
    GreCallId,
}

impl Field {
    fn offset(self) -> usize {
        match self {
            Field::SrcPort => 0,
            Field::DstPort => 2,
            Field::IcmpIdent => 4,
            Field::GreCallId => 6,
        }
    }
}

/// A quoted packet being rewritten, with the outer ICMP checksum it keeps current.
#[derive(Debug)]
pub struct Quote<'a> {
    q: &'a mut [u8],
    ihl: usize,
    /// Offset of the quoted L4 checksum, when the quote holds one in use.
    l4_csum: Option<usize>,
    /// The quoted L4 checksum covers a pseudo-header (TCP, UDP): addresses change it too.
    pseudo: bool,
    icmp_csum: u16,
}

impl<'a> Quote<'a> {
    /// A view of `q` (the ICMP error's body) with the error's checksum `icmp_csum`. Checks
    /// the quoted IP header and that 8 bytes follow it.
    pub fn new(q: &'a mut [u8], icmp_csum: u16) -> Result<Quote<'a>, WireError> {
        let ip = ipv4::Packet::new_quoted(&*q)?;
        let (ihl, p) = (ip.header_len(), ip.protocol());
        if q.len() < ihl + 8 {
            return Err(WireError::Truncated);
        }
        let l4_csum = match p {
            proto::TCP if q.len() >= ihl + 18 => Some(ihl + 16),
            proto::UDP if be16(q, ihl + 6) != 0 => Some(ihl + 6),
            proto::ICMP => Some(ihl + 2),
            _ => None,
        };
        Ok(Quote { q, ihl, l4_csum, pseudo: matches!(p, proto::TCP | proto::UDP), icmp_csum })
    }

    /// The outer ICMP checksum after the changes so far.
    pub fn icmp_checksum(&self) -> u16 {
        self.icmp_csum
    }

    fn set16(&mut self, off: usize, new: u16) {
        let old = be16(self.q, off);
        put16(self.q, off, new);
        self.icmp_csum = checksum::adjust16(self.icmp_csum, old, new);
    }

    fn set_addr(&mut self, off: usize, new: u32) {
        let old = be32(self.q, off);
        if old == new {
            return;
        }
        self.set16(off, (new >> 16) as u16);
        self.set16(off + 2, new as u16);
        let ic = checksum::adjust32(be16(self.q, 10), old, new);
        self.set16(10, ic);
        if let (Some(o), true) = (self.l4_csum, self.pseudo) {
            let c = checksum::adjust32(be16(self.q, o), old, new);
            self.set16(o, c);
        }
    }

    /// Sets the quoted source address.
    pub fn set_src_addr(&mut self, a: u32) {
        self.set_addr(12, a);
    }

    /// Sets the quoted destination address.
    pub fn set_dst_addr(&mut self, a: u32) {
        self.set_addr(16, a);
    }

    /// Sets a port, identifier or Call ID of the quoted packet.
    pub fn set(&mut self, f: Field, new: u16) {
        let off = self.ihl + f.offset();
        let old = be16(self.q, off);
        if old == new {
            return;
        }
        self.set16(off, new);
        if let (Some(o), false) = (self.l4_csum, f == Field::GreCallId) {
            let c = checksum::adjust16(be16(self.q, o), old, new);
            self.set16(o, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quoted UDP packet 10.0.0.5:4000 → 198.51.100.20:53 with valid checksums, and the
    /// ICMP checksum over it (type 3 code 3, no data before the quote).
    fn quoted_udp() -> (Vec<u8>, u16) {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 5], [198, 51, 100, 20], 64)
            .udp(4000, 53)
            .write(&mut v, b"query")
            .expect("build");
        let icmp = |q: &[u8]| {
            let mut m = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(q);
            checksum::compute(&m)
        };
        let c = icmp(&v);
        (v, c)
    }

    #[test]
    fn every_checksum_stays_right() {
        let (mut v, c) = quoted_udp();
        let mut q = Quote::new(&mut v, c).expect("view");
        q.set_src_addr(u32::from_be_bytes([203, 0, 113, 1]));
        q.set(Field::SrcPort, 61000);
        let c2 = q.icmp_checksum();
        let ip = ipv4::Packet::new_checked(&v[..]).expect("ip");
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), u32::from_be_bytes([203, 0, 113, 1]));
        let seg = ip.payload();
        assert_eq!(be16(seg, 0), 61000);
        let pseudo = checksum::pseudo_header(
            v[12..16].try_into().expect("4"),
            v[16..20].try_into().expect("4"),
            17,
            seg.len() as u16,
        );
        assert_eq!(!checksum::fold(checksum::accumulate(seg, pseudo)), 0, "UDP checksum");
        let mut m = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&v);
        put16(&mut m, 2, c2);
        assert_eq!(checksum::compute(&m), 0, "the ICMP checksum covers the rewritten quote");
    }

    #[test]
    fn short_quotes_are_refused() {
        let (mut v, c) = quoted_udp();
        assert!(Quote::new(&mut v[..27], c).is_err());
        assert!(Quote::new(&mut v[..28], c).is_ok());
    }
}
