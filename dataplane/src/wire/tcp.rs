//! TCP segments (RFC 9293): ports, flags and the checksum, which is all NAT touches.

use super::{be16, be32, put16, WireError};
use crate::checksum;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: usize = 16;
}

/// Minimum TCP header length.
pub const MIN_HEADER_LEN: usize = 20;

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// A view of a TCP segment (the IP payload).
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates that the header, with options, fits the buffer.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let off = usize::from(b[field::DATA_OFF] >> 4) * 4;
        if off < MIN_HEADER_LEN || off > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Packet { buf })
    }

    /// Wraps a buffer the caller built.
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::DST_PORT)
    }

    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), field::SEQ)
    }

    /// Acknowledgement number.
    #[inline]
    pub fn ack(&self) -> u32 {
        be32(self.buf.as_ref(), field::ACK)
    }

    /// Flag bits (FIN..CWR).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }

    /// Header length including options.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    /// The segment's payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }

    /// True when the checksum is correct for the given pseudo-header addresses.
    #[inline]
    pub fn verify_checksum(&self, src: u32, dst: u32) -> bool {
        let b = self.buf.as_ref();
        let Ok(len) = u16::try_from(b.len()) else { return false };
        let ph = checksum::pseudo_header(src.to_be_bytes(), dst.to_be_bytes(), super::proto::TCP, len);
        checksum::verify(b, ph)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port, adjusting the checksum.
    #[inline]
    pub fn set_src_port_fixup(&mut self, port: u16) {
        let old = self.src_port();
        put16(self.buf.as_mut(), field::SRC_PORT, port);
        self.set_checksum(checksum::adjust16(self.checksum(), old, port));
    }

    /// Sets the destination port, adjusting the checksum.
    #[inline]
    pub fn set_dst_port_fixup(&mut self, port: u16) {
        let old = self.dst_port();
        put16(self.buf.as_mut(), field::DST_PORT, port);
        self.set_checksum(checksum::adjust16(self.checksum(), old, port));
    }

    /// Sets both ports and adjusts the checksum by `delta`, which must be the difference of
    /// the whole rewrite (ports and pseudo-header addresses).
    #[inline]
    pub fn rewrite_ports(&mut self, sport: u16, dport: u16, delta: checksum::Delta) {
        put16(self.buf.as_mut(), field::SRC_PORT, sport);
        put16(self.buf.as_mut(), field::DST_PORT, dport);
        self.set_checksum(delta.apply(self.checksum()));
    }

    /// Adjusts the checksum for a pseudo-header address change.
    #[inline]
    pub fn fixup_addr(&mut self, old: u32, new: u32) {
        self.set_checksum(checksum::adjust32(self.checksum(), old, new));
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buf.as_mut(), field::CHECKSUM, c);
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buf.as_mut()[field::FLAGS] = f;
    }

    /// Recomputes the checksum from scratch over the whole buffer (header and payload) and
    /// the pseudo-header of `src` → `dst` (for segments the engine builds).
    #[inline]
    pub fn fill_checksum(&mut self, src: u32, dst: u32) {
        self.set_checksum(0);
        let b = self.buf.as_ref();
        let pseudo = checksum::pseudo_header(src.to_be_bytes(), dst.to_be_bytes(), super::proto::TCP, b.len() as u16);
        let c = !checksum::fold(checksum::accumulate(b, pseudo));
        self.set_checksum(c);
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buf.as_mut()[hl..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_offsets() {
        let mut b = [0u8; 20];
        assert_eq!(Packet::new_checked(&b[..19]).err(), Some(WireError::Truncated));
        b[12] = 0x40; // 16 bytes < 20
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadLength));
        b[12] = 0x60; // 24 bytes > buffer
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadLength));
        b[12] = 0x50;
        b[13] = flags::SYN | flags::ACK;
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.flags(), 0x12);
        assert_eq!(p.header_len(), 20);
    }
}
