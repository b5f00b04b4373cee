//! IPv4 headers (RFC 791).

use super::{be16, be32, put16, put32, WireError};
use crate::checksum;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// A view of an IPv4 packet. `new_checked` guarantees that the header (with options) and
/// the total length lie inside the buffer; bytes past the total length (Ethernet padding)
/// are not part of the packet.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates version, header length and total length against the buffer.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        let total = usize::from(be16(b, field::TOTAL_LEN));
        if ihl < MIN_HEADER_LEN || total < ihl || total > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Packet { buf })
    }

    /// Validates only what an ICMP error quotes: version and a complete header. The total
    /// length may exceed the buffer (the quote is truncated).
    #[inline]
    pub fn new_quoted(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if ihl < MIN_HEADER_LEN || ihl > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Packet { buf })
    }

    /// Wraps a buffer the caller built; accessors may panic if it is malformed.
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length field.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::TOTAL_LEN)
    }

    /// Identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x4000 != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x1fff) << 3
    }

    /// True for any fragment (first, middle or last).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x3fff != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field::PROTO]
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    /// Source address as a host-order integer.
    #[inline]
    pub fn src_addr(&self) -> u32 {
        be32(self.buf.as_ref(), field::SRC)
    }

    /// Destination address as a host-order integer.
    #[inline]
    pub fn dst_addr(&self) -> u32 {
        be32(self.buf.as_ref(), field::DST)
    }

    /// True when the header checksum is correct. A header without options is checked by
    /// the XDP program's own function (its words summed as they lie, no byte swaps).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buf.as_ref();
        let hl = self.header_len();
        match b.first_chunk::<MIN_HEADER_LEN>() {
            Some(h) if hl == MIN_HEADER_LEN => xgw_ebpf_common::csum::ipv4_header_ok(h),
            _ => checksum::verify(&b[..hl], 0),
        }
    }

    /// The payload (up to the total length, or the buffer end for a quoted header).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        let end = usize::from(self.total_len()).min(b.len());
        &b[self.header_len().min(end)..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source address, adjusting the header checksum.
    #[inline]
    pub fn set_src_addr_fixup(&mut self, addr: u32) {
        let old = self.src_addr();
        put32(self.buf.as_mut(), field::SRC, addr);
        self.set_checksum(checksum::adjust32(self.checksum(), old, addr));
    }

    /// Forwards the packet with new addresses: sets them, decrements the TTL and adjusts
    /// the header checksum by `delta`, the difference of both (see
    /// `conntrack::CsumDelta`).
    #[inline]
    pub fn rewrite_forward(&mut self, src: u32, dst: u32, delta: checksum::Delta) {
        let b = self.buf.as_mut();
        put32(b, field::SRC, src);
        put32(b, field::DST, dst);
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let c = delta.apply(be16(b, field::CHECKSUM));
        put16(b, field::CHECKSUM, c);
    }

    /// Sets the destination address, adjusting the header checksum.
    #[inline]
    pub fn set_dst_addr_fixup(&mut self, addr: u32) {
        let old = self.dst_addr();
        put32(self.buf.as_mut(), field::DST, addr);
        self.set_checksum(checksum::adjust32(self.checksum(), old, addr));
    }

    /// Decrements the TTL, adjusting the header checksum.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let b = self.buf.as_mut();
        let old = be16(b, field::TTL);
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let new = be16(b, field::TTL);
        let c = checksum::adjust16(be16(b, field::CHECKSUM), old, new);
        put16(b, field::CHECKSUM, c);
    }

    /// Sets the total length field (the header checksum is not adjusted: fill it after).
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        put16(self.buf.as_mut(), field::TOTAL_LEN, len);
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buf.as_mut(), field::CHECKSUM, c);
    }

    /// Recomputes the header checksum from scratch (for packets the engine builds).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::compute(&self.buf.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Mutable payload (up to the total length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = usize::from(self.total_len()).min(self.buf.as_ref().len());
        &mut self.buf.as_mut()[hl.min(end)..end]
    }

    /// Writes a fresh 20-byte header with no options (for packets the engine builds).
    #[inline]
    pub fn emit_header(&mut self, total_len: u16, ident: u16, ttl: u8, proto: u8, src: u32, dst: u32) {
        let b = self.buf.as_mut();
        b[0] = 0x45;
        b[1] = 0;
        put16(b, field::TOTAL_LEN, total_len);
        put16(b, field::IDENT, ident);
        put16(b, field::FLAGS_FRAG, 0);
        b[field::TTL] = ttl;
        b[field::PROTO] = proto;
        put32(b, field::SRC, src);
        put32(b, field::DST, dst);
        self.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 28];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.emit_header(28, 7, 64, 17, 0x0a00_0001, 0xc633_6414);
        b
    }

    #[test]
    fn emit_parse_round_trip() {
        let b = sample();
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 7);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src_addr(), 0x0a00_0001);
        assert_eq!(p.dst_addr(), 0xc633_6414);
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn rewrites_keep_checksum_valid() {
        let mut b = sample();
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        p.set_src_addr_fixup(0xcb00_7101);
        p.set_dst_addr_fixup(0x0a00_0005);
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
    }

    #[test]
    fn refuses_bad_headers() {
        let good = sample();
        assert_eq!(Packet::new_checked(&good[..19]).err(), Some(WireError::Truncated));
        let mut b = good.clone();
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadVersion));
        let mut b = good.clone();
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadLength));
        let mut b = good.clone();
        b[3] = 200;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadLength));
        let mut b = good;
        b[0] = 0x4f; // IHL 60 > total 28
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadLength));
    }

    #[test]
    fn fragment_fields() {
        let mut b = sample();
        b[6] = 0x20; // MF, offset 0
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert!(p.more_frags() && p.is_fragment() && p.frag_offset() == 0);
        b[6] = 0x00;
        b[7] = 0x03; // offset 24 bytes
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert!(!p.more_frags() && p.is_fragment() && p.frag_offset() == 24);
    }
}
