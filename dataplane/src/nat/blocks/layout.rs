//! Where blocks are: the layout every outside address is cut into, its check against the
//! configuration, and the candidate ports a host's blocks offer a new flow.

use super::MAX;
use crate::config::{BlockConfig, EngineConfig, NatConfig};

/// The blocks every outside address is cut into: the NAT port range in `size` steps from
/// its start, whole blocks only, none overlapping the gateway's own ephemeral ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// First port of each block, ascending.
    pub starts: Vec<u16>,
    /// Ports per block.
    pub size: u16,
}

impl Layout {
    /// The layout for a NAT configuration's range and reserved ports.
    pub fn new(nat: &NatConfig, size: u16) -> Layout {
        let (lo, hi) = (u32::from(nat.port_range.0), u32::from(nat.port_range.1));
        let size32 = u32::from(size.max(1));
        let reserved = nat.host_ports.map(|(a, b)| (u32::from(a), u32::from(b)));
        let mut starts = Vec::new();
        let mut s = lo;
        while s + size32 - 1 <= hi {
            let end = s + size32 - 1;
            if !reserved.is_some_and(|(a, b)| s <= b && a <= end) {
                starts.push(s as u16);
            }
            s += size32;
        }
        Layout { starts, size: size.max(1) }
    }

    /// The block holding `port`.
    pub fn block_of(&self, port: u16) -> Option<u16> {
        let i = self.starts.partition_point(|&s| s <= port).checked_sub(1)?;
        (u32::from(port) < u32::from(self.starts[i]) + u32::from(self.size)).then_some(i as u16)
    }

    /// The ports of block `b`, inclusive.
    pub fn ports(&self, b: u16) -> (u16, u16) {
        let s = self.starts[usize::from(b)];
        (s, (u32::from(s) + u32::from(self.size) - 1) as u16)
    }
}

/// Checks port blocks against the range, the reserved ports and (deterministic mode)
/// the inside subnets.
pub fn validate(cfg: &EngineConfig, b: &BlockConfig) -> Result<(), String> {
    if b.size == 0 || b.per_host == 0 || b.per_host > BlockConfig::MAX_PER_HOST {
        return Err(format!(
            "port blocks need a size of at least 1 and 1 to {} blocks per host",
            BlockConfig::MAX_PER_HOST
        ));
    }
    let layout = Layout::new(&cfg.nat, b.size);
    if layout.starts.len() < usize::from(b.per_host) {
        return Err(format!(
            "the NAT port range holds {} whole blocks of {} ports (outside the gateway's own ports), fewer than the {} a host may hold",
            layout.starts.len(),
            b.size,
            b.per_host
        ));
    }
    if b.deterministic {
        let hosts: u64 = cfg.inside_subnets().iter().map(|&(_, n)| u64::from(n)).sum();
        let per_addr = (layout.starts.len() / usize::from(b.per_host)) as u64;
        let addrs = cfg.nat.pool.len().max(1) as u64;
        if hosts > per_addr * addrs {
            return Err(format!(
                "deterministic port blocks: the inside subnets hold {hosts} addresses, but {addrs} outside address(es) × {per_addr} hosts of {} blocks of {} ports map only {}",
                b.per_host,
                b.size,
                per_addr * addrs
            ));
        }
    }
    Ok(())
}

/// The blocks a host holds now: where its translations may go.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// How many.
    pub n: usize,
    /// Their first ports.
    pub starts: [u16; MAX],
    /// Bit `i` set: block `i` has fewer flows than ports, so one of its ports is free
    /// towards any destination. Unset: full, or nearly (its ports may still serve another
    /// destination). Deterministic blocks are not counted: all set.
    pub room: u32,
}

impl Held {
    /// The same blocks, those with room first (each group in its held order).
    pub fn room_first(&self) -> Held {
        let mut h = Held { n: self.n, starts: [0; MAX], room: 0 };
        let roomy = |i: &usize| self.room & (1 << i) != 0;
        let order = (0..self.n).filter(roomy).chain((0..self.n).filter(|i| !roomy(i)));
        for (k, i) in order.enumerate() {
            h.starts[k] = self.starts[i];
            if roomy(&i) {
                h.room |= 1 << k;
            }
        }
        h
    }

    /// True when `port` lies in one of the blocks (of `size` ports).
    pub fn contains(&self, port: u16, size: u16) -> bool {
        self.starts[..self.n].iter().any(|&s| port >= s && u32::from(port) < u32::from(s) + u32::from(size))
    }
}

/// Candidate ports in a host's blocks: its inside port first when preserving and it lies
/// in one of them, then every port of the blocks, block after block (so earlier blocks fill
/// first and later ones empty, to be given back), each from a pseudo-random offset, at most
/// `max_probes` in all. Blocks with room come first: when a host's blocks hold more ports
/// than `max_probes`, a walk starting in full ones would spend the budget there and refuse
/// the flow (and ask for yet another block) while a later block had free ports.
#[derive(Debug, Clone)]
pub struct BlockPorts {
    held: Held,
    size: u32,
    first: Option<u16>,
    start: u32,
    i: u32,
    n: u32,
}

impl BlockPorts {
    /// Candidates for a flow whose inside port (or ICMP id) is `orig`.
    pub fn new(held: Held, size: u16, orig: u16, nat: &NatConfig, seed: u32) -> BlockPorts {
        let held = held.room_first();
        let size32 = u32::from(size.max(1));
        let total = held.n as u32 * size32;
        BlockPorts {
            first: (nat.preserve_port && held.contains(orig, size)).then_some(orig),
            held,
            size: size32,
            start: seed % size32,
            i: 0,
            n: nat.max_probes.min(total),
        }
    }
}

impl BlockPorts {
    /// Every port of the blocks, block after block from a pseudo-random offset in each.
    pub fn every(held: Held, size: u16, seed: u32) -> BlockPorts {
        let size32 = u32::from(size.max(1));
        BlockPorts { first: None, held, size: size32, start: seed % size32, i: 0, n: held.n as u32 * size32 }
    }
}

impl Iterator for BlockPorts {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if let Some(p) = self.first.take() {
            return Some(p);
        }
        if self.i >= self.n {
            return None;
        }
        // block after block, each from the same offset and round to it: every port of a
        // block is offered before the next block's
        let (b, k) = (self.i / self.size, (self.start + self.i % self.size) % self.size);
        self.i += 1;
        Some((u32::from(self.held.starts[b as usize]) + k) as u16)
    }
}
