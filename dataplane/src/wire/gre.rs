//! GRE headers: RFC 2784/2890 (version 0) and PPTP's enhanced GRE (RFC 2637 §4.1, version 1).
//!
//! Enhanced GRE layout: flags (C R K S s Recur | A flags Ver), protocol 0x880B, payload
//! length, Call ID (the receiver's), then an optional sequence number (S) and an optional
//! acknowledgement number (A). There is no GRE checksum in version 1.

use super::{be16, be32, put16, WireError};

mod field {
    pub const FLAGS: usize = 0;
    pub const PROTO: usize = 2;
    pub const PAYLOAD_LEN: usize = 4;
    pub const CALL_ID: usize = 6;
}

/// PPP's protocol type in enhanced GRE.
pub const PROTO_PPP: u16 = 0x880b;

const C: u16 = 0x8000;
const R: u16 = 0x4000;
const K: u16 = 0x2000;
const S: u16 = 0x1000;
const SSR: u16 = 0x0800;
const RECUR: u16 = 0x0700;
const A: u16 = 0x0080;
const VER: u16 = 0x0007;

/// What a GRE header turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Version 0 (RFC 2784): not PPTP, never subject to Call-ID logic.
    V0,
    /// A well-formed PPTP enhanced GRE header.
    Pptp,
    /// Version 1 violating RFC 2637 (K=0, wrong protocol, C/R/s/Recur set) or version ≥ 2.
    Malformed,
}

/// A view of a GRE packet (the IP payload).
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates that the header implied by the flag bits fits the buffer.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < 4 {
            return Err(WireError::Truncated);
        }
        let p = Packet { buf };
        if p.header_len() > p.buf.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// Wraps a buffer whose header the caller validated or built.
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }

    fn flags(&self) -> u16 {
        be16(self.buf.as_ref(), field::FLAGS)
    }

    /// Version field (0 or 1 are defined).
    #[inline]
    pub fn version(&self) -> u8 {
        (self.flags() & VER) as u8
    }

    /// Protocol type field.
    #[inline]
    pub fn protocol(&self) -> u16 {
        be16(self.buf.as_ref(), field::PROTO)
    }

    /// Key-present bit.
    #[inline]
    pub fn has_key(&self) -> bool {
        self.flags() & K != 0
    }

    /// Sequence-present bit.
    #[inline]
    pub fn has_seq(&self) -> bool {
        self.flags() & S != 0
    }

    /// Acknowledgement-present bit (version 1 only).
    #[inline]
    pub fn has_ack(&self) -> bool {
        self.version() == 1 && self.flags() & A != 0
    }

    /// Header length implied by the flags.
    #[inline]
    pub fn header_len(&self) -> usize {
        let f = self.flags();
        let mut n = 4;
        if f & VER == 1 {
            if f & K != 0 {
                n += 4;
            }
            if f & S != 0 {
                n += 4;
            }
            if f & A != 0 {
                n += 4;
            }
        } else {
            if f & (C | R) != 0 {
                n += 4;
            }
            if f & K != 0 {
                n += 4;
            }
            if f & S != 0 {
                n += 4;
            }
        }
        n
    }

    /// Classifies the header: version 0, valid PPTP enhanced GRE, or malformed.
    #[inline]
    pub fn kind(&self) -> Kind {
        let f = self.flags();
        match f & VER {
            0 => Kind::V0,
            1 if f & (C | R | SSR | RECUR) == 0 && f & K != 0 && self.protocol() == PROTO_PPP => Kind::Pptp,
            _ => Kind::Malformed,
        }
    }

    /// The Call ID (PPTP) — the receiver's ID. Only meaningful when `kind() == Pptp`.
    #[inline]
    pub fn call_id(&self) -> u16 {
        be16(self.buf.as_ref(), field::CALL_ID)
    }

    /// Payload length field (PPTP).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::PAYLOAD_LEN)
    }

    /// Sequence number (PPTP), if present.
    #[inline]
    pub fn seq(&self) -> Option<u32> {
        (self.version() == 1 && self.has_seq()).then(|| be32(self.buf.as_ref(), 8))
    }

    /// Acknowledgement number (PPTP), if present.
    #[inline]
    pub fn ack(&self) -> Option<u32> {
        self.has_ack().then(|| be32(self.buf.as_ref(), if self.has_seq() { 12 } else { 8 }))
    }

    /// The payload after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the Call ID (PPTP). GRE v1 has no checksum to adjust.
    #[inline]
    pub fn set_call_id(&mut self, id: u16) {
        put16(self.buf.as_mut(), field::CALL_ID, id);
    }
}

/// Builds an enhanced GRE header into `out` (tests, the lab's PPP stand-in). Returns its length.
pub fn emit_pptp(out: &mut [u8], call_id: u16, seq: Option<u32>, ack: Option<u32>, payload_len: u16) -> usize {
    let mut f = K | 1;
    if seq.is_some() {
        f |= S;
    }
    if ack.is_some() {
        f |= A;
    }
    put16(out, field::FLAGS, f);
    put16(out, field::PROTO, PROTO_PPP);
    put16(out, field::PAYLOAD_LEN, payload_len);
    put16(out, field::CALL_ID, call_id);
    let mut n = 8;
    for v in [seq, ack].into_iter().flatten() {
        out[n..n + 4].copy_from_slice(&v.to_be_bytes());
        n += 4;
    }
    n
}

pub use xgw_ebpf_common::proto::GRE_V1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_versions() {
        let mut b = [0u8; 16];
        let n = emit_pptp(&mut b, 0x1234, Some(1), Some(0xffff_ffff), 0);
        assert_eq!(n, 16);
        let p = Packet::new_checked(&b[..n]).expect("valid");
        assert_eq!(p.kind(), Kind::Pptp);
        assert_eq!(p.call_id(), 0x1234);
        assert_eq!(p.seq(), Some(1));
        assert_eq!(p.ack(), Some(0xffff_ffff));
        // ack-only, 12-byte header
        let n = emit_pptp(&mut b, 7, None, Some(3), 0);
        let p = Packet::new_checked(&b[..n]).expect("valid");
        assert_eq!((p.header_len(), p.seq(), p.ack()), (12, None, Some(3)));
        // version 0 with key
        let v0 = [0x20, 0x00, 0x08, 0x00, 0, 0, 0, 9];
        assert_eq!(Packet::new_checked(&v0[..]).expect("valid").kind(), Kind::V0);
    }

    #[test]
    fn malformed_variants() {
        let mut b = [0u8; 16];
        let n = emit_pptp(&mut b, 1, Some(1), None, 0);
        for (byte, val) in [(0usize, 0x10u8), (0, 0xb0), (0, 0x70), (1, 0x02), (2, 0x08)] {
            let mut c = b;
            c[byte] = val;
            let p = Packet::new_checked(&c[..n]);
            assert!(matches!(p.map(|p| p.kind()), Ok(Kind::Malformed) | Err(_)), "byte {byte}={val:#x}");
        }
        // header claims seq+ack but the buffer ends after the call id
        let n = emit_pptp(&mut b, 1, Some(1), Some(2), 0);
        assert!(n == 16 && Packet::new_checked(&b[..12]).is_err());
    }
}
