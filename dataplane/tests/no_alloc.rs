//! The per-packet path allocates nothing: after warm-up, a batch of established-flow packets
//! runs under a counting global allocator and the count stays at zero.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use xgw_dataplane::{Frame, RxMeta, Time, Verdict};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System`, which upholds GlobalAlloc's contract; the only
// addition is a relaxed counter increment, which cannot violate it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout obligations are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (alloc forwards to it).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr`/`layout` come from `System` via alloc; obligations passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn established_batch_does_not_allocate() {
    let mut e = engine();
    // warm-up: create 64 flows (TCP and UDP) and see a reply on each
    let mut templates = Vec::new();
    for i in 0..32u16 {
        let mut syn = tcp(C1, S, 2000 + i, 443, "S", b"");
        assert_eq!(run(&mut e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
        let p = tuple(&syn).sport;
        let mut sa = tcp(S, P, 443, p, "SA", b"");
        assert_eq!(run(&mut e, &mut sa, OUTSIDE, 1), Verdict::Forward(INSIDE));
        templates.push((tcp(C1, S, 2000 + i, 443, "A", &[0u8; 64]), INSIDE));
        templates.push((tcp(S, P, 443, p, "A", &[0u8; 64]), OUTSIDE));
        let mut u = udp(C2, S, 3000 + i, 53, b"q");
        assert_eq!(run(&mut e, &mut u, INSIDE, 1), Verdict::Forward(OUTSIDE));
        templates.push((udp(C2, S, 3000 + i, 53, &[1u8; 64]), INSIDE));
    }
    let mut bufs: Vec<Vec<u8>> = templates.iter().map(|(f, _)| f.clone()).collect();
    let metas: Vec<RxMeta> = templates.iter().map(|(_, i)| RxMeta { iface: *i }).collect();
    let mut verdicts = vec![Verdict::ToHost; bufs.len()];
    let lens: Vec<usize> = bufs.iter().map(Vec::len).collect();

    COUNTING.store(true, Ordering::SeqCst);
    for round in 0..100u64 {
        for (b, t) in bufs.iter_mut().zip(&templates) {
            b.copy_from_slice(&t.0);
        }
        let mut batch = bufs.iter_mut().zip(&lens).map(|(b, &len)| Frame { buf: &mut b[..], len });
        for ((meta, v), mut f) in metas.iter().zip(verdicts.iter_mut()).zip(&mut batch) {
            *v = e.process(&mut f, *meta, Time::from_millis(2 + round));
        }
    }
    COUNTING.store(false, Ordering::SeqCst);

    assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward(_))), "{verdicts:?}");
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "allocations on the established path");
}
