//! The table's free slots: a lock-free stack whose links live in the free slots themselves
//! (`SlotLock::next_free`), so it costs no memory per flow (a queue of slot numbers cost 16
//! bytes per flow). The head holds a slot number and a tag that every change increments, so
//! a pop that raced with a pop and a push of the same slot (ABA) fails its exchange and
//! retries.

use core::sync::atomic::{AtomicU64, Ordering};

use super::lock::SlotLock;

const NIL: u32 = u32::MAX;

/// The free slots of a table.
#[derive(Debug)]
pub struct FreeList {
    /// Tag in the high 32 bits, slot number (or NIL) in the low.
    head: AtomicU64,
}

fn parts(h: u64) -> (u64, u32) {
    (h >> 32, h as u32)
}

impl FreeList {
    /// Every slot of `slots` free, the lowest first.
    pub fn new<T>(slots: &[SlotLock<T>]) -> FreeList {
        for (i, s) in slots.iter().enumerate() {
            let next = if i + 1 < slots.len() { (i + 1) as u32 } else { NIL };
            s.next_free().store(next, Ordering::Relaxed);
        }
        FreeList { head: AtomicU64::new(if slots.is_empty() { u64::from(NIL) } else { 0 }) }
    }

    /// Takes a free slot.
    pub fn pop<T>(&self, slots: &[SlotLock<T>]) -> Option<u32> {
        let mut h = self.head.load(Ordering::Acquire);
        loop {
            let (tag, slot) = parts(h);
            if slot == NIL {
                return None;
            }
            // a stale link (the slot was taken meanwhile) fails the exchange below: the tag moved
            let next = slots.get(slot as usize)?.next_free().load(Ordering::Relaxed);
            let new = (tag.wrapping_add(1) << 32) | u64::from(next);
            match self.head.compare_exchange_weak(h, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(slot),
                Err(now) => h = now,
            }
        }
    }

    /// Gives slot `slot` back.
    pub fn push<T>(&self, slots: &[SlotLock<T>], slot: u32) {
        let Some(s) = slots.get(slot as usize) else { return };
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            let (tag, top) = parts(h);
            s.next_free().store(top, Ordering::Relaxed);
            let new = (tag.wrapping_add(1) << 32) | u64::from(slot);
            match self.head.compare_exchange_weak(h, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => h = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn hands_out_every_slot_once_then_none() {
        let slots: Vec<SlotLock<u8>> = (0..5).map(|_| SlotLock::new(0)).collect();
        let f = FreeList::new(&slots);
        let got: Vec<u32> = (0..5).filter_map(|_| f.pop(&slots)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(f.pop(&slots), None);
        f.push(&slots, 3);
        f.push(&slots, 1);
        assert_eq!((f.pop(&slots), f.pop(&slots), f.pop(&slots)), (Some(1), Some(3), None));
    }

    #[test]
    fn threads_never_hold_one_slot_twice() {
        const N: usize = 64;
        let slots: Arc<Vec<SlotLock<u8>>> = Arc::new((0..N).map(|_| SlotLock::new(0)).collect());
        let f = Arc::new(FreeList::new(&slots));
        let held: Arc<Vec<AtomicBool>> = Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (slots, f, held) = (Arc::clone(&slots), Arc::clone(&f), Arc::clone(&held));
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..200_000 {
                        if i % 3 != 2 {
                            if let Some(s) = f.pop(&slots) {
                                assert!(!held[s as usize].swap(true, Ordering::AcqRel), "slot {s} handed out twice");
                                mine.push(s);
                            }
                        } else if let Some(s) = mine.pop() {
                            held[s as usize].store(false, Ordering::Release);
                            f.push(&slots, s);
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<u32> = workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect();
        while let Some(s) = f.pop(&slots) {
            all.push(s);
        }
        all.sort_unstable();
        assert_eq!(all, (0..N as u32).collect::<Vec<_>>(), "every slot is held or free exactly once");
    }
}
