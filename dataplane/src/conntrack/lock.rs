//! The lock each flow slot sits behind: a one-byte spin lock, with the slot's `live` flag
//! in the byte next to it.
//!
//! Every packet of a flow locks its slot once, for a few dozen nanoseconds, and two workers
//! rarely want the same flow at the same moment. `std::sync::Mutex` costs two atomic
//! read-modify-writes per packet (the unlock must swap to learn whether to wake a sleeper);
//! this lock costs one (the compare-exchange that takes it) and a plain release store to
//! give it back. A waiter spins briefly and then yields its CPU, so a holder that was
//! preempted (a control-plane thread listing flows) gets to run again.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Spins before a waiter starts yielding its CPU.
const SPINS: u32 = 64;

/// Bytes before the value: the lock byte, the `live` flag and the free-list link, padded to
/// the value's alignment.
pub const HEADER: usize = 8;

/// A value behind a spin lock, and a `live` flag only the lock's holder reads or writes.
/// The lock byte comes first, so the line that holds it also holds the start of the value
/// (a prefetch of the slot's address brings both); the flag shares the lock's padding
/// instead of costing the value an aligned word of its own.
///
/// Aligned to a cache line: a slot's head (the lock, then the start of the value) always
/// begins a line, so the first 128 bytes of a slot are exactly two lines.
#[repr(C, align(64))]
#[allow(missing_debug_implementations, reason = "printing would need the lock; the table prints flows instead")]
pub struct SlotLock<T> {
    held: AtomicBool,
    // an atomic only so it can sit outside the `UnsafeCell`; every access is made by the
    // lock's holder, so Relaxed suffices (the lock orders them)
    live: AtomicBool,
    /// While the slot is free: the next free slot (the table's free list lives in the free
    /// slots themselves, in what would otherwise be padding).
    next_free: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a `SlotGuard`, and at most one guard exists at a
// time (taking one requires swinging `held` from false to true, and only its drop stores
// false again), so sharing the lock between threads shares the value with one thread at a
// time, which is sound for any `T: Send` — exactly std's `Mutex<T>: Sync` bound.
#[allow(unsafe_code, reason = "a lock shares its value between threads: Sync is asserted by hand")]
unsafe impl<T: Send> Sync for SlotLock<T> {}

/// Exclusive access to a locked value; unlocks when dropped.
#[allow(missing_debug_implementations, reason = "a guard is a borrow of the value, printed through it")]
pub struct SlotGuard<'a, T> {
    lock: &'a SlotLock<T>,
}

impl<T> SlotLock<T> {
    /// An unlocked value.
    pub const fn new(value: T) -> SlotLock<T> {
        SlotLock {
            held: AtomicBool::new(false),
            live: AtomicBool::new(false),
            next_free: AtomicU32::new(u32::MAX),
            value: UnsafeCell::new(value),
        }
    }

    /// The free-list link (meaningful only while the slot is on the free list).
    #[inline]
    pub fn next_free(&self) -> &AtomicU32 {
        &self.next_free
    }

    /// Takes the lock, waiting for it as long as needed.
    #[inline]
    pub fn lock(&self) -> SlotGuard<'_, T> {
        if self.held.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        SlotGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            // wait reading (the line stays shared) until it looks free, then try to take it
            while self.held.load(Ordering::Relaxed) {
                if spins < SPINS {
                    spins += 1;
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self.held.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }
}

impl<T> SlotGuard<'_, T> {
    /// The slot's `live` flag.
    #[inline]
    pub fn live(&self) -> bool {
        self.lock.live.load(Ordering::Relaxed)
    }

    /// Sets the slot's `live` flag.
    #[inline]
    pub fn set_live(&mut self, live: bool) {
        self.lock.live.store(live, Ordering::Relaxed);
    }
}

impl<T> Deref for SlotGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: a guard exists only while `held` is true and was set by this guard's
        // `lock()` with Acquire ordering; no other guard can exist until this one's drop
        // releases it, so nothing else reads or writes the value meanwhile.
        #[allow(unsafe_code, reason = "the guard's exclusive access, argued above")]
        unsafe {
            &*self.lock.value.get()
        }
    }
}

impl<T> DerefMut for SlotGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`: this guard is the only access to the value while it lives,
        // and `&mut self` makes this the only reference derived from the guard.
        #[allow(unsafe_code, reason = "the guard's exclusive access, argued above")]
        unsafe {
            &mut *self.lock.value.get()
        }
    }
}

impl<T> Drop for SlotGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // Release: every write made under the lock is visible to the next holder, whose
        // compare-exchange reads this store with Acquire.
        self.lock.held.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_holder_at_a_time_under_contention() {
        // non-atomic read-modify-writes of a pair under the lock: any overlap of two
        // holders loses increments or tears the pair
        let l = Arc::new(SlotLock::new((0u64, 0u64)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    for _ in 0..200_000 {
                        let mut g = l.lock();
                        let (a, b) = *g;
                        assert_eq!(a, b, "a holder saw another's half-done write");
                        *g = (a + 1, b + 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(*l.lock(), (800_000, 800_000));
    }

    #[test]
    fn the_flag_shares_the_header_with_the_lock() {
        assert_eq!(core::mem::size_of::<SlotLock<[u64; 15]>>(), 128, "header + value, whole lines");
        assert_eq!(core::mem::align_of::<SlotLock<u64>>(), 64);
        assert_eq!(core::mem::offset_of!(SlotLock<u64>, value), HEADER);
        let l = SlotLock::new(0u64);
        let mut g = l.lock();
        assert!(!g.live());
        g.set_live(true);
        drop(g);
        assert!(l.lock().live());
    }

    #[test]
    fn unlocks_on_drop() {
        let l = SlotLock::new(5u32);
        {
            let mut g = l.lock();
            *g += 1;
        }
        assert!(!l.held.load(Ordering::Relaxed));
        *l.lock() += 1;
        assert_eq!(*l.lock(), 7);
    }
}
