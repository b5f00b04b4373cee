//! IPv4 fragment tracking: later fragments carry no ports, so the translation decided for a
//! datagram's first fragment is remembered under (source, destination, protocol, IP id)
//! and applied to the rest. A later fragment that arrives before its first is dropped and
//! counted (no reassembly).

use core::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::config::IfaceId;
use crate::time::Time;

/// Identifies one datagram's fragments, as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address on arrival.
    pub src: u32,
    /// Destination address on arrival.
    pub dst: u32,
    /// IP identification.
    pub ident: u16,
    /// IP protocol.
    pub proto: u8,
}

/// How the datagram's fragments leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragEntry {
    /// New source address.
    pub src: u32,
    /// New destination address.
    pub dst: u32,
    /// Interface the datagram's fragments must arrive on.
    pub ingress: IfaceId,
    /// Egress interface.
    pub egress: IfaceId,
    /// When the entry is forgotten.
    pub expires: Time,
}

/// The fragment table (fixed capacity).
#[derive(Debug)]
pub struct FragTable {
    map: DashMap<FragKey, FragEntry, foldhash::fast::RandomState>,
    cap: usize,
    len: AtomicUsize,
}

impl FragTable {
    /// A table for `cap` datagrams.
    pub fn new(cap: usize) -> FragTable {
        FragTable {
            map: DashMap::with_capacity_and_hasher(cap, foldhash::fast::RandomState::default()),
            cap,
            len: AtomicUsize::new(0),
        }
    }

    /// Remembers a datagram's translation; false when the table is full.
    pub fn insert(&self, k: FragKey, e: FragEntry) -> bool {
        if self.len.load(Ordering::Relaxed) >= self.cap && !self.map.contains_key(&k) {
            return false;
        }
        if self.map.insert(k, e).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The translation for a later fragment, if known and not expired.
    pub fn lookup(&self, k: &FragKey, now: Time) -> Option<FragEntry> {
        self.map.get(k).map(|e| *e).filter(|e| e.expires >= now)
    }

    /// Forgets expired datagrams.
    pub fn sweep(&self, now: Time) -> usize {
        let mut n = 0;
        self.map.retain(|_, e| {
            let keep = e.expires >= now;
            n += usize::from(!keep);
            keep
        });
        self.len.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Datagrams tracked.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_expiry() {
        let t = FragTable::new(1);
        let k = FragKey { src: 1, dst: 2, ident: 3, proto: 17 };
        let e = FragEntry { src: 5, dst: 2, ingress: IfaceId(0), egress: IfaceId(1), expires: Time::from_secs(30) };
        assert!(t.insert(k, e));
        assert!(!t.insert(FragKey { ident: 4, ..k }, e), "full");
        assert_eq!(t.lookup(&k, Time::from_secs(10)), Some(e));
        assert_eq!(t.lookup(&k, Time::from_secs(31)), None);
        assert_eq!(t.sweep(Time::from_secs(31)), 1);
        assert!(t.is_empty());
    }
}
