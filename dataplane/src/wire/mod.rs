//! Typed views over borrowed frame bytes.
//!
//! Every view is `Packet<T: AsRef<[u8]>>`: `new_checked` validates lengths once (after it
//! no accessor can panic or read out of bounds), `new_unchecked` is for buffers the caller
//! built itself. Getters are named after the field, setters `set_*`. Setters that change a
//! field covered by a checksum come in a `*_fixup` flavour that also adjusts that checksum
//! incrementally (RFC 1624).

pub mod ethernet;
pub mod gre;
pub mod icmp;
pub mod ipv4;
pub mod quote;
pub mod tcp;
pub mod udp;

/// Why a view refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the fixed header does.
    #[error("truncated header")]
    Truncated,
    /// A length field points outside the buffer or below the header.
    #[error("bad length field")]
    BadLength,
    /// A version field holds a value this view does not handle.
    #[error("unsupported version")]
    BadVersion,
}

#[inline]
pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// IP protocol numbers the engine knows by name.
pub mod proto {
    /// Every protocol known by name, as conntrack and ASA print them and as the rules
    /// language accepts them: the one table both use.
    pub const NAMES: &[(&str, u8)] = &[
        ("icmp", ICMP),
        ("tcp", TCP),
        ("udp", UDP),
        ("gre", GRE),
        ("esp", ESP),
        ("ah", AH),
        ("ospf", 89),
        ("sctp", 132),
    ];

    /// The protocol's lower-case name (from [`NAMES`]), or its number.
    #[inline]
    pub fn name(p: u8) -> String {
        NAMES.iter().find(|(_, n)| *n == p).map_or_else(|| p.to_string(), |(s, _)| (*s).to_string())
    }

    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// GRE (RFC 2784, and PPTP's enhanced GRE).
    pub const GRE: u8 = 47;
    /// IPsec ESP.
    pub const ESP: u8 = 50;
    /// IPsec AH.
    pub const AH: u8 = 51;
}
