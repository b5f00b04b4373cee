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
/// ports, from a pseudo-random start, at most `max_probes` candidates in all.
#[derive(Debug, Clone)]
pub struct PortCandidates {
    first: Option<u16>,
    /// The allowed ports as up to two inclusive segments (the range with the reserved block
    /// cut out); `size` counts them.
    segs: [(u32, u32); 2],
    size: u32,
    start: u32,
    i: u32,
    n: u32,
}

impl PortCandidates {
    /// Candidates for a flow whose inside port (or ICMP id) is `orig`; `seed` picks the start.
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
            size,
            start: if size == 0 { 0 } else { seed % size },
            i: 0,
            n: cfg.max_probes.min(size),
        }
    }

    /// Only the original value (no translation of the port is possible or wanted).
    pub fn only(orig: u16) -> PortCandidates {
        PortCandidates { first: Some(orig), segs: [(1, 0), (1, 0)], size: 0, start: 0, i: 0, n: 0 }
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

impl Iterator for PortCandidates {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if let Some(p) = self.first.take() {
            return Some(p);
        }
        if self.i >= self.n {
            return None;
        }
        let p = self.nth_allowed((self.start + self.i) % self.size);
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
        let v: Vec<u16> = PortCandidates::new(40000, &cfg, 2).collect();
        assert_eq!(v, vec![40000, 5002, 5003, 5000, 5001]);
        let cfg = NatConfig { preserve_port: false, max_probes: 2, ..cfg };
        let v: Vec<u16> = PortCandidates::new(40000, &cfg, 0).collect();
        assert_eq!(v, vec![5000, 5001]);
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
}
