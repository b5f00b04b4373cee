//! Translated Call IDs: one pool per (outside address, PAC address).
//!
//! IDs 1..=65535 are handed out from a random start; a released ID rests in quarantine
//! before it can be handed out again, so late GRE of an ended call never reaches a new one.
//! The caller may refuse candidates (the inspector requires the high byte to be unique among
//! one control connection's calls, so that a field split between segments can be
//! translated from its first byte alone).

use std::collections::VecDeque;

use crate::time::Time;

/// One (outside address, PAC) pool.
#[derive(Debug)]
pub struct Pool {
    used: Box<[u64; 1024]>,
    quarantine: VecDeque<(u16, Time)>,
    live: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool { used: Box::new([0; 1024]), quarantine: VecDeque::new(), live: 0 }
    }
}

impl Pool {
    fn is_used(&self, id: u16) -> bool {
        self.used[usize::from(id >> 6)] & (1 << (id & 63)) != 0
    }

    fn set(&mut self, id: u16, on: bool) {
        let w = &mut self.used[usize::from(id >> 6)];
        if on {
            *w |= 1 << (id & 63);
        } else {
            *w &= !(1 << (id & 63));
        }
    }

    /// IDs handed out or in quarantine.
    pub fn in_use(&self) -> usize {
        self.live + self.quarantine.len()
    }

    /// IDs handed out (live calls).
    pub fn live(&self) -> usize {
        self.live
    }

    /// Hands out a free ID from `1..=limit` accepted by `ok`, scanning from `start`.
    pub fn allocate(&mut self, start: u32, limit: u16, mut ok: impl FnMut(u16) -> bool) -> Option<u16> {
        let n = u32::from(limit.max(1));
        for i in 0..n {
            let id = ((start.wrapping_add(i)) % n + 1) as u16;
            if !self.is_used(id) && ok(id) {
                self.set(id, true);
                self.live += 1;
                return Some(id);
            }
        }
        None
    }

    /// Hands out the first free ID of `ids` accepted by `ok`.
    pub fn allocate_in(&mut self, ids: impl Iterator<Item = u16>, mut ok: impl FnMut(u16) -> bool) -> Option<u16> {
        for id in ids {
            if id != 0 && !self.is_used(id) && ok(id) {
                self.set(id, true);
                self.live += 1;
                return Some(id);
            }
        }
        None
    }

    /// Takes `id` itself (a call synced from the active gateway); false when it is in use
    /// or resting.
    pub fn claim(&mut self, id: u16) -> bool {
        if id == 0 || self.is_used(id) {
            return false;
        }
        self.set(id, true);
        self.live += 1;
        true
    }

    /// Ends an ID's use; it stays unavailable until `until`.
    pub fn release(&mut self, id: u16, until: Time) {
        if self.is_used(id) && self.live > 0 {
            self.live -= 1;
            self.quarantine.push_back((id, until));
        }
    }

    /// Returns quarantined IDs whose time has come to the pool.
    pub fn sweep(&mut self, now: Time) {
        while let Some(&(id, until)) = self.quarantine.front() {
            if until > now {
                break;
            }
            self.quarantine.pop_front();
            self.set(id, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_ids_and_quarantines() {
        let mut p = Pool::default();
        let a = p.allocate(0, 3, |_| true).expect("a");
        let b = p.allocate(0, 3, |_| true).expect("b");
        let c = p.allocate(0, 3, |_| true).expect("c");
        assert_eq!(
            {
                let mut v = vec![a, b, c];
                v.sort();
                v
            },
            vec![1, 2, 3]
        );
        assert_eq!(p.allocate(0, 3, |_| true), None, "exhausted");
        p.release(b, Time::from_secs(10));
        p.sweep(Time::from_secs(5));
        assert_eq!(p.allocate(0, 3, |_| true), None, "quarantined");
        p.sweep(Time::from_secs(10));
        assert_eq!(p.allocate(0, 3, |_| true), Some(b));
        assert_eq!(p.live(), 3);
    }

    #[test]
    fn never_hands_out_zero_and_honours_the_filter() {
        let mut p = Pool::default();
        for _ in 0..100 {
            let id = p.allocate(12345, u16::MAX, |id| id >> 8 != 0x30).expect("id");
            assert!(id != 0 && id >> 8 != 0x30);
        }
    }
}
