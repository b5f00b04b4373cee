//! The flow index: key → (slot, direction), built for a per-packet path that takes no lock.
//!
//! Buckets are one cache line each: a sequence word and three entries (a key packed in two
//! u64 with the value in the top bits). Every key lives in one of two buckets chosen by its
//! hash (two-choice hashing), so a lookup reads at most two cache lines — which a batch can
//! request for all its packets before using any (see [`FlowIndex::touch`]). Readers never
//! write: they read a bucket between two loads of its sequence word and retry if a writer
//! was there (a seqlock). Writers — flow creation and removal, the slow path — are
//! serialised by one mutex; when both buckets of a new key are full, one resident entry is
//! moved to its other bucket (one cuckoo step), bracketed by an epoch that makes a reader
//! that missed during the move look again.
//!
//! Capacity is fixed: the number of buckets keeps the load at most 60 %.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::FlowKey;

const WAYS: usize = 3;
const KEY_BITS: u64 = (1 << 40) - 1;
/// Longest chain of entry moves an insert tries before it reports the index full.
const MAX_PATH: usize = 3;
/// Largest value the index can hold.
pub const MAX_VALUE: u32 = (1 << 24) - 2;

#[repr(C, align(64))]
#[derive(Default)]
struct Bucket {
    seq: AtomicU32,
    k0: [AtomicU64; WAYS],
    k1: [AtomicU64; WAYS],
}

/// Asks the CPU to start loading the cache line at `r` and returns at once. A prefetch is
/// a hint: it never faults and never changes what a later read sees, so a batch can have
/// every packet's lines in flight while it parses the next packet. (A plain load would do
/// the same but occupies the CPU's reorder window until the line arrives.)
#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    prefetch_addr((r as *const T).cast::<u8>());
}

/// [`prefetch`] of any address: it is never dereferenced, so it need not point at anything
/// valid (a hint to a wrong address only wastes the load).
#[inline(always)]
pub(crate) fn prefetch_addr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: the call is unsafe only because it needs SSE, which is part of the x86_64
        // baseline every x86_64 CPU has. PREFETCHT0 itself only hints the cache: it has no
        // architectural effect and never faults, whatever address it is given.
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>())
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::hint::black_box(p);
    }
}

/// Where a key's two buckets are (computed once per packet, reused by later stages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probe {
    b1: usize,
    b2: usize,
    k0: u64,
    k1: u64,
}

/// Why an insertion failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexError {
    /// The key is held by a live entry with this value.
    Taken(u32),
    /// Both buckets are full and no resident entry could move.
    Full,
}

/// The index (fixed capacity).
pub struct FlowIndex {
    buckets: Box<[Bucket]>,
    n: u64,
    seed: u64,
    writer: Mutex<()>,
    epoch: AtomicU64,
    len: AtomicUsize,
}

impl core::fmt::Debug for FlowIndex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlowIndex").field("buckets", &self.n).field("len", &self.len()).finish()
    }
}

fn pack(k: &FlowKey) -> (u64, u64) {
    let k0 = (u64::from(k.src) << 32) | u64::from(k.dst);
    let k1 = (u64::from(k.proto) << 32) | (u64::from(k.sport) << 16) | u64::from(k.dport);
    (k0, k1)
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl FlowIndex {
    /// An index for `keys` keys; `seed` randomises placement (keys come from the network).
    pub fn new(keys: usize, seed: u64) -> FlowIndex {
        let n = ((keys as u64 * 10).div_ceil(WAYS as u64 * 6)).max(2);
        let buckets = crate::mem::table(usize::try_from(n).unwrap_or(usize::MAX), |_| Bucket::default());
        FlowIndex {
            buckets,
            n,
            seed: mix(seed | 1),
            writer: Mutex::new(()),
            epoch: AtomicU64::new(0),
            len: AtomicUsize::new(0),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn reduce(&self, h: u64) -> usize {
        ((u128::from(h) * u128::from(self.n)) >> 64) as usize
    }

    /// The buckets of a key.
    #[inline]
    pub fn probe(&self, key: &FlowKey) -> Probe {
        let (k0, k1) = pack(key);
        let h = mix(k0 ^ self.seed) ^ mix(k1.wrapping_add(self.seed.rotate_left(17)));
        let b1 = self.reduce(h);
        let mut b2 = self.reduce(mix(h ^ 0x9e37_79b9_7f4a_7c15));
        if b2 == b1 {
            b2 = (b1 + 1) % self.n as usize;
        }
        Probe { b1, b2, k0, k1 }
    }

    /// Starts loading a key's buckets into the cache: a plain load whose value is unused,
    /// so a batch can have every packet's lines in flight at once.
    #[inline]
    pub fn touch(&self, p: &Probe) {
        if let (Some(a), Some(b)) = (self.buckets.get(p.b1), self.buckets.get(p.b2)) {
            prefetch(a);
            prefetch(b);
        }
    }

    #[inline]
    fn read_bucket(&self, b: usize, k0: u64, k1: u64) -> Option<u32> {
        let bk = &self.buckets[b];
        loop {
            let s1 = bk.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut found = None;
            for w in 0..WAYS {
                let a = bk.k0[w].load(Ordering::Relaxed);
                let c = bk.k1[w].load(Ordering::Relaxed);
                if c != 0 && a == k0 && c & KEY_BITS == k1 {
                    found = Some(((c >> 40) - 1) as u32);
                }
            }
            fence(Ordering::Acquire);
            if bk.seq.load(Ordering::Relaxed) == s1 {
                return found;
            }
        }
    }

    /// The value held for a key (no lock, no write).
    #[inline]
    pub fn get(&self, p: &Probe) -> Option<u32> {
        loop {
            let e0 = self.epoch.load(Ordering::Acquire);
            if e0 & 1 == 0 {
                if let Some(v) = self.read_bucket(p.b1, p.k0, p.k1).or_else(|| self.read_bucket(p.b2, p.k0, p.k1)) {
                    return Some(v);
                }
                // a miss is only trusted when no entry moved meanwhile
                if self.epoch.load(Ordering::Acquire) == e0 {
                    return None;
                }
            }
            std::hint::spin_loop();
        }
    }

    fn write(&self, b: usize, w: usize, k0: u64, k1: u64) {
        let bk = &self.buckets[b];
        let s = bk.seq.load(Ordering::Relaxed);
        bk.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        bk.k0[w].store(k0, Ordering::Relaxed);
        bk.k1[w].store(k1, Ordering::Relaxed);
        bk.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    fn find(&self, p: &Probe) -> Option<(usize, usize, u32)> {
        for b in [p.b1, p.b2] {
            let bk = &self.buckets[b];
            for w in 0..WAYS {
                let c = bk.k1[w].load(Ordering::Relaxed);
                if c != 0 && bk.k0[w].load(Ordering::Relaxed) == p.k0 && c & KEY_BITS == p.k1 {
                    return Some((b, w, ((c >> 40) - 1) as u32));
                }
            }
        }
        None
    }

    fn free_way(&self, b: usize) -> Option<usize> {
        (0..WAYS).find(|&w| self.buckets[b].k1[w].load(Ordering::Relaxed) == 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Inserts `value` for a key. A key already held is replaced when `stale(old)` says its
    /// holder is gone; otherwise [`IndexError::Taken`].
    pub fn insert(&self, p: &Probe, value: u32, stale: impl FnOnce(u32) -> bool) -> Result<(), IndexError> {
        debug_assert!(value <= MAX_VALUE);
        let _g = self.lock();
        let k1v = p.k1 | ((u64::from(value) + 1) << 40);
        if let Some((b, w, old)) = self.find(p) {
            if stale(old) {
                self.write(b, w, p.k0, k1v);
                return Ok(());
            }
            return Err(IndexError::Taken(old));
        }
        // the emptier of the two buckets
        let free1 = (0..WAYS).filter(|&w| self.buckets[p.b1].k1[w].load(Ordering::Relaxed) == 0).count();
        let free2 = (0..WAYS).filter(|&w| self.buckets[p.b2].k1[w].load(Ordering::Relaxed) == 0).count();
        let order = if free2 > free1 { [p.b2, p.b1] } else { [p.b1, p.b2] };
        for b in order {
            if let Some(w) = self.free_way(b) {
                self.write(b, w, p.k0, k1v);
                self.len.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        // both buckets full: find a short chain of residents that can each move to their
        // other bucket, ending at a free way (breadth first, so the chain is the shortest)
        let Some((path, depth)) = self.find_path(p.b1, p.b2) else {
            return Err(IndexError::Full);
        };
        // move from the free end backwards, copying each entry before its old place is
        // overwritten: every entry is in at least one place at every instant, and the odd
        // epoch makes a reader that missed during the moves look again
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for i in (0..depth).rev() {
            let (from_b, from_w) = path[i];
            let (to_b, to_w) = path[i + 1];
            let bk = &self.buckets[from_b];
            let (a, c) = (bk.k0[from_w].load(Ordering::Relaxed), bk.k1[from_w].load(Ordering::Relaxed));
            self.write(to_b, to_w, a, c);
        }
        let (b0, w0) = path[0];
        self.write(b0, w0, p.k0, k1v);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The other bucket of the entry at (`b`, `w`).
    fn alt_bucket(&self, b: usize, w: usize) -> usize {
        let bk = &self.buckets[b];
        let (a, c) = (bk.k0[w].load(Ordering::Relaxed), bk.k1[w].load(Ordering::Relaxed));
        let resident = FlowKey {
            src: (a >> 32) as u32,
            dst: a as u32,
            proto: ((c >> 32) & 0xff) as u8,
            sport: ((c >> 16) & 0xffff) as u16,
            dport: (c & 0xffff) as u16,
        };
        let rp = self.probe(&resident);
        if rp.b1 == b {
            rp.b2
        } else {
            rp.b1
        }
    }

    /// A chain of at most `MAX_PATH` moves freeing a way in `b1` or `b2`: `path[0]` is the
    /// way the new key takes, `path[i]`'s entry moves to `path[i + 1]`, and
    /// `path[depth]` is a free way. Searched breadth first over a fixed-size queue.
    fn find_path(&self, b1: usize, b2: usize) -> Option<([(usize, usize); MAX_PATH + 1], usize)> {
        // queue of (bucket, parent index, way in parent bucket that leads here)
        const QUEUE: usize = 2 * (1 + WAYS + WAYS * WAYS + WAYS * WAYS * WAYS);
        let mut q = [(0usize, usize::MAX, 0usize, 0usize); QUEUE]; // bucket, parent, way, depth
        let (mut head, mut tail) = (0, 0);
        for b in [b1, b2] {
            q[tail] = (b, usize::MAX, 0, 0);
            tail += 1;
        }
        while head < tail {
            let (b, _, _, d) = q[head];
            let node = head;
            head += 1;
            for w in 0..WAYS {
                let alt = self.alt_bucket(b, w);
                if let Some(fw) = self.free_way(alt) {
                    // walk back to the root to build the chain
                    let mut chain = [(0usize, 0usize); MAX_PATH + 1];
                    let depth = d + 1;
                    chain[depth] = (alt, fw);
                    chain[d] = (b, w);
                    let mut cur = node;
                    for i in (0..d).rev() {
                        let (_, parent, pw, _) = q[cur];
                        chain[i] = (q[parent].0, pw);
                        cur = parent;
                    }
                    return Some((chain, depth));
                }
                // a bucket already queued is not queued again: a chain never visits a
                // bucket twice
                if d + 1 < MAX_PATH && tail < QUEUE && !q[..tail].iter().any(|e| e.0 == alt) {
                    q[tail] = (alt, node, w, d + 1);
                    tail += 1;
                }
            }
        }
        None
    }

    /// Removes a key if it holds `value`; true when removed.
    pub fn remove(&self, p: &Probe, value: u32) -> bool {
        let _g = self.lock();
        match self.find(p) {
            Some((b, w, v)) if v == value => {
                self.write(b, w, 0, 0);
                self.len.fetch_sub(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(i: u32) -> FlowKey {
        FlowKey { src: i, dst: i.rotate_left(7) ^ 0xc633_6400, sport: (i % 60_000) as u16, dport: 443, proto: 6 }
    }

    #[test]
    fn insert_get_remove_and_fill_to_capacity() {
        let cap = 100_000;
        let ix = FlowIndex::new(cap, 42);
        for i in 0..cap as u32 {
            let p = ix.probe(&key(i));
            assert_eq!(ix.insert(&p, i, |_| false), Ok(()), "key {i} at load {:.2}", i as f64 / (ix.n as f64 * 3.0));
        }
        assert_eq!(ix.len(), cap);
        for i in 0..cap as u32 {
            assert_eq!(ix.get(&ix.probe(&key(i))), Some(i));
        }
        assert_eq!(ix.get(&ix.probe(&key(cap as u32 + 7))), None);
        let p = ix.probe(&key(5));
        assert_eq!(ix.insert(&p, 9, |_| false), Err(IndexError::Taken(5)));
        assert_eq!(ix.insert(&p, 9, |old| old == 5), Ok(()), "a stale holder is replaced");
        assert_eq!(ix.get(&p), Some(9));
        assert!(!ix.remove(&p, 5), "only the current value is removed");
        assert!(ix.remove(&p, 9));
        assert_eq!(ix.get(&p), None);
        assert_eq!(ix.len(), cap - 1);
    }

    #[test]
    fn two_million_keys_fill_to_capacity() {
        // sized as the flow table sizes it for a million flows (two keys each); a single
        // cuckoo step was not enough here: about one insert in 50 000 found both buckets
        // and all their residents' other buckets full
        let cap = 2_000_000;
        for seed in [1, 2] {
            let ix = FlowIndex::new(cap, seed);
            for i in 0..cap as u32 {
                let p = ix.probe(&key(i));
                assert_eq!(ix.insert(&p, i % (MAX_VALUE + 1), |_| false), Ok(()), "seed {seed} key {i}");
            }
            assert_eq!(ix.len(), cap);
            for i in (0..cap as u32).step_by(97) {
                assert_eq!(ix.get(&ix.probe(&key(i))), Some(i % (MAX_VALUE + 1)), "seed {seed} key {i}");
            }
        }
    }

    #[test]
    fn readers_never_see_a_wrong_value_while_writers_churn() {
        let ix = Arc::new(FlowIndex::new(20_000, 7));
        // stable keys that must always be found
        for i in 0..5_000u32 {
            ix.insert(&ix.probe(&key(i)), i, |_| false).expect("insert");
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (ix, stop) = (Arc::clone(&ix), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let k = key(100_000 + n % 10_000);
                    let p = ix.probe(&k);
                    let _ = ix.insert(&p, n % 10_000, |_| true);
                    let _ = ix.remove(&p, n % 10_000);
                    n += 1;
                }
            })
        };
        for round in 0..20 {
            for i in 0..5_000u32 {
                assert_eq!(ix.get(&ix.probe(&key(i))), Some(i), "round {round} key {i}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
    }
}
