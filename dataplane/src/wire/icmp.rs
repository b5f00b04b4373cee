//! ICMPv4 messages (RFC 792): echo identifiers and the errors that quote a packet.

use super::{be16, put16, WireError};
use crate::checksum;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
}

/// ICMP header length (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;

/// ICMP message types the engine acts on.
pub mod kind {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (code 4 = fragmentation needed).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated, still an error quoting a packet).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (code 0 = TTL exceeded in transit).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Timestamp request.
    pub const TIMESTAMP: u8 = 13;
    /// Timestamp reply.
    pub const TIMESTAMP_REPLY: u8 = 14;
}

/// True for the types whose body quotes the offending packet.
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        kind::DEST_UNREACHABLE | kind::SOURCE_QUENCH | kind::REDIRECT | kind::TIME_EXCEEDED | kind::PARAMETER_PROBLEM
    )
}

/// True for query types that carry an identifier (echo, timestamp).
pub fn is_query(t: u8) -> bool {
    matches!(t, kind::ECHO_REQUEST | kind::ECHO_REPLY | kind::TIMESTAMP | kind::TIMESTAMP_REPLY)
}

/// The shortest a whole message of query type `t` may be (RFC 792: a timestamp message
/// carries three 4-byte timestamps after its 8-byte header).
pub fn query_min_len(t: u8) -> usize {
    match t {
        kind::TIMESTAMP | kind::TIMESTAMP_REPLY => HEADER_LEN + 12,
        _ => HEADER_LEN,
    }
}

/// A view of an ICMP message (the IP payload).
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates that the 8-byte header is present.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buf })
    }

    /// Wraps a buffer the caller built.
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    /// Identifier of a query message.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }

    /// Sequence number of a query message.
    #[inline]
    pub fn seq(&self) -> u16 {
        be16(self.buf.as_ref(), field::SEQ)
    }

    /// The body after the 8-byte header (for errors: the quoted packet).
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }

    /// True when the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buf.as_ref(), 0)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the identifier and adjusts the checksum by `delta`, the rewrite's difference.
    #[inline]
    pub fn rewrite_ident(&mut self, id: u16, delta: checksum::Delta) {
        put16(self.buf.as_mut(), field::IDENT, id);
        self.set_checksum(delta.apply(self.checksum()));
    }

    /// Sets the identifier, adjusting the checksum.
    #[inline]
    pub fn set_ident_fixup(&mut self, id: u16) {
        let old = self.ident();
        put16(self.buf.as_mut(), field::IDENT, id);
        self.set_checksum(checksum::adjust16(self.checksum(), old, id));
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buf.as_mut(), field::CHECKSUM, c);
    }

    /// Mutable body (the quoted packet of an error).
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }

    /// Writes type, code and a zero rest-of-header, then the checksum over the whole buffer.
    #[inline]
    pub fn emit(&mut self, msg_type: u8, code: u8, rest: u32) {
        let b = self.buf.as_mut();
        b[field::TYPE] = msg_type;
        b[field::CODE] = code;
        put16(b, field::CHECKSUM, 0);
        b[4..8].copy_from_slice(&rest.to_be_bytes());
        let c = checksum::compute(b);
        put16(b, field::CHECKSUM, c);
    }

    /// Sets the sequence number field (tests and builders).
    #[inline]
    pub fn set_seq(&mut self, seq: u16) {
        put16(self.buf.as_mut(), field::SEQ, seq);
    }
}
