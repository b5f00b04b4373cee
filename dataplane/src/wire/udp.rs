//! UDP datagrams (RFC 768).

use super::{be16, put16, WireError};
use crate::checksum;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// UDP header length.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram (the IP payload).
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates the header and the length field against the buffer.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(be16(b, field::LENGTH));
        if len < HEADER_LEN || len > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Packet { buf })
    }

    /// Validates only the 8-byte header (a fragment's first piece or an ICMP quote, where
    /// the length field describes more than the buffer holds).
    #[inline]
    pub fn new_header_only(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buf })
    }

    /// Wraps a buffer of at least 8 bytes that the caller validated or built.
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

    /// Length field.
    #[inline]
    pub fn len_field(&self) -> u16 {
        be16(self.buf.as_ref(), field::LENGTH)
    }

    /// Checksum field (0 = none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    /// The datagram's payload, as far as the buffer holds it.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        let end = usize::from(self.len_field()).clamp(HEADER_LEN, b.len());
        &b[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn adjust(&mut self, f: impl FnOnce(u16) -> u16) {
        let c = self.checksum();
        if c != 0 {
            // RFC 768: a computed 0 is sent as all ones; 0 means "no checksum".
            let n = f(c);
            put16(self.buf.as_mut(), field::CHECKSUM, xgw_ebpf_common::csum::udp_on_wire(n));
        }
    }

    /// Sets the source port, adjusting a present checksum.
    #[inline]
    pub fn set_src_port_fixup(&mut self, port: u16) {
        let old = self.src_port();
        put16(self.buf.as_mut(), field::SRC_PORT, port);
        self.adjust(|c| checksum::adjust16(c, old, port));
    }

    /// Sets the destination port, adjusting a present checksum.
    #[inline]
    pub fn set_dst_port_fixup(&mut self, port: u16) {
        let old = self.dst_port();
        put16(self.buf.as_mut(), field::DST_PORT, port);
        self.adjust(|c| checksum::adjust16(c, old, port));
    }

    /// Sets both ports and adjusts a present checksum by `delta`, the difference of the
    /// whole rewrite (ports and pseudo-header addresses).
    #[inline]
    pub fn rewrite_ports(&mut self, sport: u16, dport: u16, delta: checksum::Delta) {
        put16(self.buf.as_mut(), field::SRC_PORT, sport);
        put16(self.buf.as_mut(), field::DST_PORT, dport);
        self.adjust(|c| delta.apply(c));
    }

    /// Adjusts a present checksum for a pseudo-header address change.
    #[inline]
    pub fn fixup_addr(&mut self, old: u32, new: u32) {
        self.adjust(|c| checksum::adjust32(c, old, new));
    }
}
