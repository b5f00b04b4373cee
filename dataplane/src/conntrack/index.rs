//! The flow index: key → (slot, direction), built for a per-packet path that takes no lock.
//!
//! Buckets are one cache line each: a sequence word, a spill count and nine entries, each a
//! 16-bit tag (from the key's hash) and a 32-bit value. The index does not store keys: the
//! flow slot a value names holds them, and a packet reads that slot anyway, so a tag match
//! is a *candidate* the caller confirms against the slot (16-bit tags make a false match
//! about one lookup in 7 000). That keeps the index at about 20 bytes per flow, and a
//! lookup at one cache line:
//!
//! Every key has a home bucket and an alternate, derived from its home and its tag alone
//! (`alt(b) = (T(tag) − b) mod n`, so an entry can move between its two buckets without its
//! key). Keys go home first; a bucket's spill count says how many of its keys live in their
//! alternates, so a lookup reads the second line only when its home bucket lacks the key
//! and has spilled. Readers never write: they read a bucket between two loads of its
//! sequence word and retry if a writer was there (a seqlock). Writers — flow creation and
//! removal, the slow path — are serialised by one mutex; when both buckets of a new key are
//! full, a short chain of residents moves to their other buckets (each copied before it is
//! cleared, and the spill count changed with the clear or the copy that makes it true),
//! bracketed by an epoch that makes a reader that missed during the moves look again.
//!
//! Capacity is fixed: the number of buckets keeps the load at most 70 %.

use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::FlowKey;

const WAYS: usize = 9;
/// Longest chain of entry moves an insert tries before it reports the index full.
const MAX_PATH: usize = 3;
/// Largest value the index can hold.
pub const MAX_VALUE: u32 = (1 << 24) - 2;
/// Set in a stored value: the entry lives in its key's alternate bucket.
const AWAY: u32 = 1 << 31;

#[repr(C, align(64))]
#[derive(Default)]
struct Bucket {
    seq: AtomicU32,
    /// Entries whose home is this bucket that live in their alternate.
    spill: AtomicU16,
    _pad: u16,
    /// Tags of ways 0–3 and 4–7, four 16-bit lanes a word (way `4i + l` in bits
    /// `16l..16l + 16` of word `i`), so a lookup compares eight tags in two loads.
    tags: [AtomicU64; 2],
    /// Tag of way 8.
    tag8: AtomicU16,
    _pad2: u16,
    /// 0: empty; otherwise the value + 1, with [`AWAY`] when away from home.
    vals: [AtomicU32; WAYS],
}

/// One in every 16-bit lane.
const LANES: u64 = 0x0001_0001_0001_0001;

impl Bucket {
    /// The ways whose tag is `tag` (bit `w` for way `w`; empty ways included, their
    /// value tells). Readers call it inside a seqlock read, writers under the writer mutex.
    #[inline]
    fn tag_mask(&self, tag: u16) -> u32 {
        let pattern = u64::from(tag) * LANES;
        let mut mask = 0;
        for (i, word) in self.tags.iter().enumerate() {
            let diff = word.load(Ordering::Relaxed) ^ pattern; // zero lanes match
                                                               // lanes that may be zero (the borrow of a real zero can flag lanes above it)
            let mut maybe = diff.wrapping_sub(LANES) & !diff & (LANES << 15);
            while maybe != 0 {
                let lane = maybe.trailing_zeros() / 16;
                maybe &= maybe - 1;
                if (diff >> (16 * lane)) as u16 == 0 {
                    mask |= 1 << (4 * i as u32 + lane);
                }
            }
        }
        if self.tag8.load(Ordering::Relaxed) == tag {
            mask |= 1 << 8;
        }
        mask
    }

    /// Way `w`'s tag.
    fn tag(&self, w: usize) -> u16 {
        if w < 8 {
            (self.tags[w / 4].load(Ordering::Relaxed) >> (16 * (w % 4))) as u16
        } else {
            self.tag8.load(Ordering::Relaxed)
        }
    }

    /// Sets way `w`'s tag (writers only: the word is read, changed and stored whole).
    fn set_tag(&self, w: usize, tag: u16) {
        if w < 8 {
            let shift = 16 * (w % 4);
            let word = &self.tags[w / 4];
            let old = word.load(Ordering::Relaxed);
            word.store((old & !(0xffff << shift)) | (u64::from(tag) << shift), Ordering::Relaxed);
        } else {
            self.tag8.store(tag, Ordering::Relaxed);
        }
    }
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
        #[allow(unsafe_code, reason = "the prefetch intrinsic is unsafe to call; it only hints the cache")]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>())
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::hint::black_box(p);
    }
}

/// Where a key's entries live (computed once per packet, reused by later stages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Probe {
    home: usize,
    tag: u16,
}

/// Why an insertion failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexError {
    /// The key is held by a live entry with this value.
    Taken(u32),
    /// Both buckets are full and no resident entry could move.
    Full,
}

/// What an entry whose tag matches a key turns out to be, once its value's holder is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The key, held by a live flow.
    Live,
    /// The key, held by a flow that is gone: the entry may be taken over.
    Stale,
    /// Another key with the same tag.
    Other,
}

/// Up to a bucket's worth of candidate values (tag matches).
#[derive(Clone, Copy)]
struct Matches {
    vals: [u32; WAYS],
    n: usize,
    spill: u16,
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
        let n = ((keys as u64 * 10).div_ceil(WAYS as u64 * 7)).max(2);
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

    /// Where a key lives.
    #[inline]
    pub fn probe(&self, key: &FlowKey) -> Probe {
        let k0 = (u64::from(key.src) << 32) | u64::from(key.dst);
        let k1 = (u64::from(key.proto) << 32) | (u64::from(key.sport) << 16) | u64::from(key.dport);
        let h = mix(k0 ^ self.seed) ^ mix(k1.wrapping_add(self.seed.rotate_left(17)));
        // the bucket from the high bits (multiply-shift), the tag from the low ones
        Probe { home: self.reduce(h), tag: h as u16 }
    }

    /// The other bucket of an entry with `tag` in bucket `b`: an involution, so it leads
    /// from home to alternate and back. (It may equal `b`: then the key has one bucket.)
    #[inline]
    fn alt(&self, b: usize, tag: u16) -> usize {
        let t = self.reduce(mix(u64::from(tag) ^ self.seed));
        let n = self.n as usize;
        let x = t + n - b;
        if x >= n {
            x - n
        } else {
            x
        }
    }

    /// Starts loading a key's home bucket into the cache without waiting for it, so a
    /// batch can have every packet's line in flight at once.
    #[inline]
    pub fn touch(&self, p: &Probe) {
        if let Some(b) = self.buckets.get(p.home) {
            prefetch(b);
        }
    }

    /// A consistent read of bucket `b`: the values of the live entries whose tag is `tag`
    /// (the first one only when `first` is set), and its spill count.
    #[inline]
    fn read(&self, b: usize, tag: u16, first: bool) -> Matches {
        let bk = &self.buckets[b];
        loop {
            let s1 = bk.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut m = Matches { vals: [0; WAYS], n: 0, spill: bk.spill.load(Ordering::Relaxed) };
            let mut ways = bk.tag_mask(tag);
            while ways != 0 {
                let w = ways.trailing_zeros() as usize;
                ways &= ways - 1;
                let v = bk.vals[w].load(Ordering::Relaxed);
                if v != 0 {
                    m.vals[m.n] = (v & !AWAY) - 1;
                    m.n += 1;
                    if first {
                        break;
                    }
                }
            }
            fence(Ordering::Acquire);
            if bk.seq.load(Ordering::Relaxed) == s1 {
                return m;
            }
        }
    }

    /// The first value whose entry matches the key's tag, home bucket first (no lock, no
    /// write). A candidate: the caller confirms it against the flow it names, and falls
    /// back to [`FlowIndex::find_confirmed`] when it is not the key.
    #[inline]
    pub fn get(&self, p: &Probe) -> Option<u32> {
        let home = self.read(p.home, p.tag, true);
        match home.n {
            0 if home.spill > 0 => self.find_confirmed(p, |_| true),
            0 => None,
            _ => Some(home.vals[0]),
        }
    }

    /// The first candidate value `confirm` accepts, home bucket first, then (when the home
    /// bucket has spilled) the alternate. No lock, no write; `confirm` runs outside the
    /// bucket reads, so it may lock what it likes.
    pub fn find_confirmed(&self, p: &Probe, mut confirm: impl FnMut(u32) -> bool) -> Option<u32> {
        loop {
            let e0 = self.epoch.load(Ordering::Acquire);
            if e0 & 1 == 0 {
                let home = self.read(p.home, p.tag, false);
                if let Some(&v) = home.vals[..home.n].iter().find(|&&v| confirm(v)) {
                    return Some(v);
                }
                if home.spill > 0 {
                    let b2 = self.alt(p.home, p.tag);
                    if b2 != p.home {
                        let away = self.read(b2, p.tag, false);
                        if let Some(&v) = away.vals[..away.n].iter().find(|&&v| confirm(v)) {
                            return Some(v);
                        }
                    }
                }
                // a miss is only trusted when no entry moved meanwhile
                if self.epoch.load(Ordering::Acquire) == e0 {
                    return None;
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Changes bucket `b` under its sequence word (writers hold the writer mutex).
    fn write(&self, b: usize, f: impl FnOnce(&Bucket)) {
        let bk = &self.buckets[b];
        let s = bk.seq.load(Ordering::Relaxed);
        bk.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        f(bk);
        bk.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    fn set(bk: &Bucket, w: usize, tag: u16, val: u32) {
        bk.set_tag(w, tag);
        bk.vals[w].store(val, Ordering::Relaxed);
    }

    fn add_spill(bk: &Bucket, delta: i32) {
        let s = i32::from(bk.spill.load(Ordering::Relaxed)) + delta;
        bk.spill.store(u16::try_from(s.max(0)).unwrap_or(u16::MAX), Ordering::Relaxed);
    }

    fn free_way(&self, b: usize) -> Option<usize> {
        (0..WAYS).find(|&w| self.buckets[b].vals[w].load(Ordering::Relaxed) == 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key's buckets, home first (one when they coincide).
    fn buckets_of(&self, p: &Probe) -> ([usize; 2], usize) {
        let b2 = self.alt(p.home, p.tag);
        ([p.home, b2], if b2 == p.home { 1 } else { 2 })
    }

    /// Inserts `value` for a key. Each entry with the key's tag is shown to `held`, which
    /// says whether it is the key (live or stale) or another key: a live holder makes the
    /// insert fail with [`IndexError::Taken`], a stale one is replaced.
    pub fn insert(&self, p: &Probe, value: u32, mut held: impl FnMut(u32) -> Held) -> Result<(), IndexError> {
        debug_assert!(value <= MAX_VALUE);
        let _g = self.lock();
        let (bs, nb) = self.buckets_of(p);
        // the key can live in its alternate only when its home has spilled: otherwise the
        // home line is the only one to read (a new flow claims two keys; each alternate not
        // read is a cache miss saved)
        let holders = if self.buckets[p.home].spill.load(Ordering::Relaxed) > 0 { nb } else { 1 };
        for &b in &bs[..holders] {
            for w in 0..WAYS {
                let bk = &self.buckets[b];
                let v = bk.vals[w].load(Ordering::Relaxed);
                if v == 0 || bk.tag(w) != p.tag {
                    continue;
                }
                let old = (v & !AWAY) - 1;
                match held(old) {
                    Held::Live => return Err(IndexError::Taken(old)),
                    Held::Stale => {
                        self.write(b, |bk| bk.vals[w].store((v & AWAY) | (value + 1), Ordering::Relaxed));
                        return Ok(());
                    }
                    Held::Other => {}
                }
            }
        }
        // home when it has room (a lookup of the key then reads one line), else the alternate
        for &b in &bs[..nb] {
            if let Some(w) = self.free_way(b) {
                self.place(p, b, w, value);
                self.len.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        // both buckets full: find a short chain of residents that can each move to their
        // other bucket, ending at a free way (breadth first, so the chain is the shortest)
        let Some((path, depth)) = self.find_path(&bs[..nb]) else {
            return Err(IndexError::Full);
        };
        // move from the free end backwards, copying each entry before its old place is
        // cleared: every entry is findable at every instant, and the odd epoch makes a
        // reader that missed during the moves look again
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for i in (0..depth).rev() {
            self.move_entry(path[i], path[i + 1]);
        }
        let (b0, w0) = path[0];
        self.place(p, b0, w0, value);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Stores a new entry for the key at (`b`, `w`), a free way of one of its buckets.
    fn place(&self, p: &Probe, b: usize, w: usize, value: u32) {
        if b == p.home {
            self.write(b, |bk| Self::set(bk, w, p.tag, value + 1));
        } else {
            // present first, counted second: until counted a reader may miss the key it
            // is still inserting, never find a spill with nothing behind it for long
            self.write(b, |bk| Self::set(bk, w, p.tag, (value + 1) | AWAY));
            self.write(p.home, |bk| Self::add_spill(bk, 1));
        }
    }

    /// Moves the entry at `from` to the free way `to` of its other bucket: copied first,
    /// cleared second, and its home's spill count changed in the same write that makes the
    /// count true (the copy when it comes home, the clear when it leaves).
    fn move_entry(&self, from: (usize, usize), to: (usize, usize)) {
        let bk = &self.buckets[from.0];
        let (tag, v) = (bk.tag(from.1), bk.vals[from.1].load(Ordering::Relaxed));
        let coming_home = v & AWAY != 0;
        let moved = v ^ AWAY;
        self.write(to.0, |bk| {
            Self::set(bk, to.1, tag, moved);
            if coming_home {
                Self::add_spill(bk, -1);
            }
        });
        self.write(from.0, |bk| {
            Self::set(bk, from.1, 0, 0);
            if !coming_home {
                Self::add_spill(bk, 1);
            }
        });
    }

    /// A chain of at most `MAX_PATH` moves freeing a way in one of `roots`: `path[0]` is
    /// the way the new key takes, `path[i]`'s entry moves to `path[i + 1]`, and
    /// `path[depth]` is a free way. Searched breadth first over a fixed-size queue.
    fn find_path(&self, roots: &[usize]) -> Option<([(usize, usize); MAX_PATH + 1], usize)> {
        // queue of (bucket, parent index, way in parent bucket that leads here, depth)
        const QUEUE: usize = 2 * (1 + WAYS + WAYS * WAYS);
        let mut q = [(0usize, usize::MAX, 0usize, 0usize); QUEUE];
        let (mut head, mut tail) = (0, 0);
        for &b in roots {
            q[tail] = (b, usize::MAX, 0, 0);
            tail += 1;
        }
        while head < tail {
            let (b, _, _, d) = q[head];
            let node = head;
            head += 1;
            for w in 0..WAYS {
                let alt = self.alt(b, self.buckets[b].tag(w));
                if alt == b {
                    continue; // an entry with one bucket cannot move
                }
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

    /// Removes the key's entry holding `value`; true when removed.
    pub fn remove(&self, p: &Probe, value: u32) -> bool {
        let _g = self.lock();
        let (bs, nb) = self.buckets_of(p);
        for &b in &bs[..nb] {
            let bk = &self.buckets[b];
            for w in 0..WAYS {
                let v = bk.vals[w].load(Ordering::Relaxed);
                if v != 0 && (v & !AWAY) - 1 == value && bk.tag(w) == p.tag {
                    self.write(b, |bk| Self::set(bk, w, 0, 0));
                    if v & AWAY != 0 {
                        self.write(p.home, |bk| Self::add_spill(bk, -1));
                    }
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
