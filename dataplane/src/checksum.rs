//! Internet checksum arithmetic (RFC 1071) and its incremental update (RFC 1624).
//!
//! Rewrites never recompute a checksum over the whole packet: they adjust the stored
//! value by the difference between the old and the new 16-bit words (RFC 1624, eqn. 3:
//! `HC' = ~(~HC + ~m + m')`). Full computation is here for building packets and for tests.

pub use xgw_ebpf_common::csum::fold;

/// Adds `data` (big-endian 16-bit words, odd tail padded with zero) to `acc`.
///
/// Sums 32-bit words into 64 bits (no carry is lost before the end, and 2^32 ≡ 2^16 ≡ 1
/// in one's-complement arithmetic, so folding the wide sum gives the 16-bit word sum).
#[inline]
pub fn accumulate(data: &[u8], acc: u32) -> u32 {
    let mut sum = u64::from(acc);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    // 0 to 3 bytes left, starting at an even offset
    match *words.remainder() {
        [a, b, c] => sum += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => sum += u64::from(u16::from_be_bytes([a, b])),
        [a] => sum += u64::from(a) << 8,
        _ => {}
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum as u32
}

/// The checksum of `data`: the one's complement of its one's-complement sum.
pub fn compute(data: &[u8]) -> u16 {
    !fold(accumulate(data, 0))
}

/// Sum of the IPv4 pseudo-header used by TCP and UDP.
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    let mut acc = accumulate(&src, 0);
    acc = accumulate(&dst, acc);
    acc += u32::from(proto);
    acc += u32::from(l4_len);
    acc
}

/// True when a TCP or UDP checksum field holds only the folded pseudo-header sum
/// `pseudo`: what a sender with transmit checksum offload hands over (Linux's
/// `CHECKSUM_PARTIAL`: the NIC, or whoever forwards the frame, is to finish it). XDP and
/// AF_XDP see such bytes without the kernel's mark. A finished checksum equals this value
/// only by a 1-in-65536 chance, and then finishing it again gives the same value: finishing
/// is always correct, merely not always needed.
/// A UDP checksum of 0 means "none" and is never partial (`udp`).
#[inline]
pub fn is_partial(field: u16, pseudo: u32, udp: bool) -> bool {
    xgw_ebpf_common::csum::is_partial(field, pseudo, udp)
}

/// Finishes a partial TCP or UDP checksum: the full checksum of `seg` (the L4 header and
/// payload, its checksum field at `field`) over the pseudo-header sum `pseudo`. A UDP result
/// of 0 is sent as all ones (RFC 768).
pub fn finish_l4(seg: &mut [u8], field: usize, pseudo: u32, udp: bool) {
    if seg.len() < field + 2 {
        return;
    }
    seg[field..field + 2].copy_from_slice(&[0, 0]);
    let mut c = !fold(accumulate(seg, pseudo));
    if udp {
        c = xgw_ebpf_common::csum::udp_on_wire(c);
    }
    seg[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

/// True when `data` (which includes its checksum field) sums to all ones.
pub fn verify(data: &[u8], initial: u32) -> bool {
    fold(accumulate(data, initial)) == 0xffff
}

/// Adjusts checksum `csum` for one 16-bit word changing from `old` to `new` (RFC 1624 eqn. 3).
#[inline]
pub fn adjust16(csum: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    !fold(sum)
}

/// Adjusts checksum `csum` for a 32-bit value (an IPv4 address) changing from `old` to `new`.
#[inline]
pub fn adjust32(csum: u16, old: u32, new: u32) -> u16 {
    let sum =
        u32::from(!csum) + u32::from(!(old >> 16) as u16) + u32::from(!(old as u16)) + (new >> 16) + (new & 0xffff);
    !fold(sum)
}

/// A precomputed checksum difference: the sum of `~old + new` over every changed word.
///
/// Applying a `Delta` costs one addition and a fold, which is what the XDP fast path
/// stores per flow instead of recomputing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delta(u32);

impl Delta {
    /// The empty difference.
    pub const NONE: Delta = Delta(0);

    /// Adds a 16-bit word change.
    pub fn word(self, old: u16, new: u16) -> Delta {
        if old == new {
            // an unchanged word adds nothing (not `~m + m` = the other zero): a rewrite that
            // changes nothing leaves the checksum's bits alone
            return self;
        }
        Delta(u32::from(fold(self.0 + u32::from(!old) + u32::from(new))))
    }

    /// Adds a 32-bit change (two words).
    pub fn addr(self, old: u32, new: u32) -> Delta {
        self.word((old >> 16) as u16, (new >> 16) as u16).word(old as u16, new as u16)
    }

    /// Applies the difference to a stored checksum.
    #[inline]
    pub fn apply(self, csum: u16) -> u16 {
        xgw_ebpf_common::csum::apply(csum, fold(self.0))
    }

    /// The folded 16-bit difference (what a BPF map stores).
    pub fn raw(self) -> u16 {
        fold(self.0)
    }

    /// A difference stored as [`Delta::raw`].
    pub fn from_raw(d: u16) -> Delta {
        Delta(u32::from(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: 0001 f203 f4f5 f6f7 sums to ddf2
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(&data, 0)), 0xddf2);
        assert_eq!(compute(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(accumulate(&[0x12], 0), 0x1200);
    }

    proptest! {
        #[test]
        fn wide_sum_equals_the_word_by_word_sum(data in proptest::collection::vec(any::<u8>(), 0..1600),
                                                acc in any::<u32>()) {
            // RFC 1071 as written: 16-bit words, end-around carry at every step
            let mut reference = fold(acc);
            for pair in data.chunks(2) {
                let w = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
                let (s, carry) = reference.overflowing_add(w);
                reference = s + u16::from(carry);
            }
            let ours = fold(accumulate(&data, acc));
            // equal modulo the two representations of zero
            prop_assert!(ours == reference || (ours | reference == 0xffff && ours & reference == 0),
                "ours {ours:#06x} reference {reference:#06x}");
        }

        #[test]
        fn adjust16_matches_recompute(mut data in proptest::collection::vec(any::<u8>(), 4..64),
                                      idx in 0usize..30, new in any::<u16>()) {
            let words = data.len() / 2;
            let i = (idx % (words - 1)) + 1; // word 0 holds the checksum
            data[0] = 0; data[1] = 0;
            let c = compute(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            let old = u16::from_be_bytes([data[2 * i], data[2 * i + 1]]);
            data[2 * i..2 * i + 2].copy_from_slice(&new.to_be_bytes());
            let adj = adjust16(c, old, new);
            data[0..2].copy_from_slice(&adj.to_be_bytes());
            prop_assert!(verify(&data, 0));
        }

        #[test]
        fn adjust32_and_delta_agree(c in any::<u16>(), old in any::<u32>(), new in any::<u32>()) {
            let d = Delta::NONE.addr(old, new);
            let a = adjust32(c, old, new);
            let b = d.apply(c);
            // both are valid one's-complement results: equal modulo the two zeros
            prop_assert!(a == b || (a | b == 0xffff && a & b == 0) );
        }
    }
}
