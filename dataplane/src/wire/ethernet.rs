//! Ethernet II frames with at most one 802.1Q tag.

use super::{be16, WireError};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const VLAN_TCI: usize = 14;
    pub const VLAN_INNER_TYPE: usize = 16;
    pub const HEADER_LEN: usize = 14;
    pub const VLAN_HEADER_LEN: usize = 18;
}

/// A view of an Ethernet frame.
#[derive(Debug)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
    payload_off: usize,
    ethertype: u16,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Validates the header (and one VLAN tag if present).
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < field::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let outer = be16(b, field::ETHERTYPE);
        let (payload_off, ethertype) = if outer == ETHERTYPE_VLAN {
            if b.len() < field::VLAN_HEADER_LEN {
                return Err(WireError::Truncated);
            }
            (field::VLAN_HEADER_LEN, be16(b, field::VLAN_INNER_TYPE))
        } else {
            (field::HEADER_LEN, outer)
        };
        Ok(Frame { buf, payload_off, ethertype })
    }

    /// The EtherType of the payload (the inner one behind a VLAN tag).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// Offset of the payload (the network header) from the start of the frame.
    #[inline]
    pub fn payload_offset(&self) -> usize {
        self.payload_off
    }

    /// The VLAN id, if the frame is tagged.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        (self.payload_off == field::VLAN_HEADER_LEN).then(|| be16(self.buf.as_ref(), field::VLAN_TCI) & 0x0fff)
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[field::DST]);
        m
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[field::SRC]);
        m
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, mac: [u8; 6]) {
        self.buf.as_mut()[field::DST].copy_from_slice(&mac);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, mac: [u8; 6]) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    /// Swaps source and destination MAC addresses (for a packet sent back to its sender).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (d, s) = (self.dst_addr(), self.src_addr());
        self.set_dst_addr(s);
        self.set_src_addr(d);
    }
}

/// Swaps source and destination MAC addresses of a frame header in `buf` (at least 12
/// bytes; shorter buffers are left alone).
pub fn swap_addrs(buf: &mut [u8]) {
    if buf.len() >= 12 {
        let (d, s) = buf.split_at_mut(6);
        d.swap_with_slice(&mut s[..6]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_untagged_and_tagged() {
        let mut f = [0u8; 60];
        f[12] = 0x08;
        let v = Frame::new_checked(&f[..]).expect("valid");
        assert_eq!(v.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(v.payload_offset(), 14);
        assert_eq!(v.vlan_id(), None);
        f[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        f[14..16].copy_from_slice(&0x2064u16.to_be_bytes());
        f[16..18].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        let v = Frame::new_checked(&f[..]).expect("valid");
        assert_eq!(v.ethertype(), ETHERTYPE_ARP);
        assert_eq!(v.payload_offset(), 18);
        assert_eq!(v.vlan_id(), Some(0x064));
    }

    #[test]
    fn refuses_truncated() {
        assert_eq!(Frame::new_checked(&[0u8; 13][..]).err(), Some(WireError::Truncated));
        let mut f = [0u8; 16];
        f[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        assert_eq!(Frame::new_checked(&f[..]).err(), Some(WireError::Truncated));
    }
}
