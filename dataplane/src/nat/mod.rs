//! Port address translation: choosing outside ports (and ICMP ids), static forwards, and
//! the shape of a new flow's translation ([`plan`]).
//!
//! Uniqueness is that of the reply key (remote address, remote port, outside address,
//! outside port), as in netfilter: the same outside port can serve two inside hosts that
//! talk to different remote endpoints. Reservation is atomic because it *is* the insertion
//! of the reply key into the connection table's index.

pub mod blocks;
pub mod plan;

use std::collections::HashMap;

use crate::config::{NatConfig, PortForward};

/// Candidate outside ports for a translation: the original port first (when preserving and
/// it is not reserved for the host), then the configured range minus the host's reserved
/// ports in a pseudo-random order that `seed` picks, at most `max_probes` candidates in all.
/// The order is a permutation of the allowed ports (each is tried at most once), and it
/// jumps: a run of taken ports (inside hosts' preserved ports sit together) costs as many
/// probes as its share of the range predicts. Walking consecutive ports from a random
/// start instead failed a third of the new flows whose port could not be kept once 16 k
/// ports in a row were taken (the budget ran out inside the run).
#[derive(Debug, Clone)]
pub struct PortCandidates {
    first: Option<u16>,
    /// The allowed ports as up to two inclusive segments (the range with the reserved block
    /// cut out); `order` knows how many there are.
    segs: [(u32, u32); 2],
    order: Shuffle,
    i: u32,
    n: u32,
}

impl PortCandidates {
    /// Candidates for a flow whose inside port (or ICMP id) is `orig`; `seed` picks the order.
    pub fn new(orig: u16, cfg: &NatConfig, seed: u32) -> PortCandidates {
        let (lo, hi) = (u32::from(cfg.port_range.0), u32::from(cfg.port_range.1));
        let (r0, r1) = cfg.host_ports.map_or((1, 0), |(a, b)| (u32::from(a), u32::from(b)));
        let reserved = |p: u32| r0 <= p && p <= r1;
        let segs =
            if r0 > r1 || r1 < lo || r0 > hi { [(lo, hi), (1, 0)] } else { [(lo, r0.saturating_sub(1)), (r1 + 1, hi)] };
        let len = |(a, b): (u32, u32)| if b >= a { b - a + 1 } else { 0 };
        let size = len(segs[0]) + len(segs[1]);
        let keep = cfg.preserve_port && !reserved(u32::from(orig));
        PortCandidates {
            first: keep.then_some(orig),
            segs,
            order: Shuffle::new(size, seed),
            i: 0,
            n: cfg.max_probes.min(size),
        }
    }

    /// Only the original value (no translation of the port is possible or wanted).
    pub fn only(orig: u16) -> PortCandidates {
        PortCandidates { first: Some(orig), segs: [(1, 0), (1, 0)], order: Shuffle::new(0, 0), i: 0, n: 0 }
    }

    fn nth_allowed(&self, k: u32) -> u32 {
        let (a, b) = self.segs[0];
        let first_len = if b >= a { b - a + 1 } else { 0 };
        if k < first_len {
            a + k
        } else {
            self.segs[1].0 + (k - first_len)
        }
    }
}

/// A keyed pseudo-random permutation of `0..size` (`size` at most 2^16): a four-round
/// Feistel network over the smallest even number of bits that holds `size`, walked again
/// from any value that falls outside (cycle walking keeps it a permutation of `0..size`;
/// the domain is under four times `size`, so that takes under four steps on average).
#[derive(Debug, Clone, Copy)]
struct Shuffle {
    size: u32,
    half_bits: u32,
    key: u32,
}

impl Shuffle {
    fn new(size: u32, key: u32) -> Shuffle {
        let bits = (32 - size.saturating_sub(1).leading_zeros()).max(2);
        Shuffle { size, half_bits: bits.div_ceil(2), key }
    }

    fn round(&self, x: u32) -> u32 {
        let mask = (1 << self.half_bits) - 1;
        let (mut l, mut r) = (x >> self.half_bits, x & mask);
        for i in 0..4 {
            let f = (r ^ self.key.rotate_left(8 * i)).wrapping_mul(0x9e37_79b1) >> 16;
            (l, r) = (r, l ^ (f & mask));
        }
        (l << self.half_bits) | r
    }

    /// The `i`-th value of the permutation (`i` below `size`).
    fn nth(&self, i: u32) -> u32 {
        let mut x = self.round(i);
        while x >= self.size {
            x = self.round(x);
        }
        x
    }
}

impl Iterator for PortCandidates {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if let Some(p) = self.first.take() {
            return Some(p);
        }
        if self.i >= self.n {
            return None;
        }
        let p = self.nth_allowed(self.order.nth(self.i));
        self.i += 1;
        Some(p as u16)
    }
}

/// Static forwards, indexed by (protocol, outside port).
#[derive(Debug, Clone, Default)]
pub struct Forwards {
    map: HashMap<(u8, u16), PortForward>,
}

impl Forwards {
    /// Indexes a list of forwards (a later duplicate replaces an earlier one; the rules
    /// compiler refuses duplicates before this point).
    pub fn new(list: &[PortForward]) -> Forwards {
        Forwards { map: list.iter().map(|f| ((f.proto, f.outside_port), *f)).collect() }
    }

    /// The forward for a protocol and outside port.
    pub fn get(&self, proto: u8, port: u16) -> Option<&PortForward> {
        self.map.get(&(proto, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_port_first_then_range() {
        let cfg = NatConfig {
            port_range: (5000, 5003),
            preserve_port: true,
            max_probes: 100,
            enabled: true,
            host_ports: None,
            pool: Vec::new(),
            exempt: Vec::new(),
            blocks: None,
        };
        let mut v: Vec<u16> = PortCandidates::new(40000, &cfg, 2).collect();
        assert_eq!(v[0], 40000);
        v[1..].sort_unstable();
        assert_eq!(v, vec![40000, 5000, 5001, 5002, 5003]);
        let cfg = NatConfig { preserve_port: false, max_probes: 2, ..cfg };
        let v: Vec<u16> = PortCandidates::new(40000, &cfg, 0).collect();
        assert!(v.len() == 2 && v[0] != v[1] && v.iter().all(|p| (5000..=5003).contains(p)), "{v:?}");
        assert_eq!(PortCandidates::only(7).collect::<Vec<_>>(), vec![7]);
        // the host's own ephemeral ports are neither preserved nor allocated
        let cfg = NatConfig { host_ports: Some((5001, 5002)), max_probes: 100, preserve_port: true, ..cfg };
        let v: Vec<u16> = PortCandidates::new(5001, &cfg, 0).collect();
        assert_eq!(v, vec![5000, 5003]);
        // a probe budget smaller than the reserved block still finds allowed ports
        let cfg = NatConfig { port_range: (1024, 65535), host_ports: Some((32768, 60999)), max_probes: 8, ..cfg };
        for seed in [0, 20000, 31743, 31744, 40000, u32::MAX] {
            let v: Vec<u16> = PortCandidates::new(40000, &cfg, seed).collect();
            assert_eq!(v.len(), 8, "seed {seed}");
            assert!(v.iter().all(|&p| !(32768..=60999).contains(&p) && p >= 1024), "seed {seed}: {v:?}");
        }
    }

    #[test]
    fn the_order_tries_every_allowed_port_once() {
        let base = NatConfig { preserve_port: false, max_probes: u32::MAX, ..NatConfig::default() };
        let ranges = [(5000, 5000), (5000, 5001), (5000, 5002), (5000, 5004), (1024, 1124), (1024, 65535), (1, 65535)];
        for (lo, hi) in ranges {
            for host_ports in [None, Some((32768, 60999)), Some((lo, lo))] {
                let cfg = NatConfig { port_range: (lo, hi), host_ports, ..base.clone() };
                let allowed: Vec<u16> =
                    (lo..=hi).filter(|p| host_ports.is_none_or(|(a, b)| !(a..=b).contains(p))).collect();
                for seed in [0, 1, 7, 0xdead_beef, u32::MAX] {
                    let mut v: Vec<u16> = PortCandidates::new(0, &cfg, seed).collect();
                    v.sort_unstable();
                    assert_eq!(v, allowed, "{lo}..={hi} less {host_ports:?}, seed {seed}");
                }
            }
        }
        // two seeds give two orders
        let cfg = NatConfig { port_range: (1024, 65535), ..base };
        let a: Vec<u16> = PortCandidates::new(0, &cfg, 1).take(8).collect();
        let b: Vec<u16> = PortCandidates::new(0, &cfg, 2).take(8).collect();
        assert_ne!(a, b);
    }

    /// Inside hosts that keep their ports take them in runs (1024 up, here 16 k of the
    /// 36 k allowed ports): a new flow whose own port is reserved must still find a free
    /// one within a few probes, whatever its seed.
    #[test]
    fn a_run_of_taken_ports_costs_a_few_probes() {
        let cfg = NatConfig::default();
        let taken = |p: u16| (1024..1024 + 16_384).contains(&p);
        let mut seed: u32 = 0x1234_5678;
        let mut worst = 0;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let probes = PortCandidates::new(40000, &cfg, seed).position(|p| !taken(p));
            let probes = probes.unwrap_or_else(|| panic!("seed {seed}: no free port offered"));
            worst = worst.max(probes);
        }
        // a free port is 55 % of the range: 32 taken in a row is a 1-in-10^11 event
        assert!(worst < 32, "worst {worst} probes");
    }
}
