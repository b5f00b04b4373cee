//! The per-packet path allocates nothing: after warm-up, established-flow packets — one at
//! a time, as batches through `process_batch`, and PPTP control segments through the
//! inspector — run under a counting global allocator and the count stays at zero. The
//! tests take turns (the allocator's count is process-wide).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use xgw_dataplane::{FrameBuf, RxMeta, Time, Verdict};

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

/// One counting test at a time.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with the allocator counting; returns how many allocations it made.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

#[test]
fn established_batch_does_not_allocate() {
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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

    let one_by_one = allocations(|| {
        for round in 0..100u64 {
            for (b, t) in bufs.iter_mut().zip(&templates) {
                b.copy_from_slice(&t.0);
            }
            let mut batch = bufs.iter_mut().zip(&lens).map(|(b, &len)| FrameBuf { buf: &mut b[..], len });
            for ((meta, v), mut f) in metas.iter().zip(verdicts.iter_mut()).zip(&mut batch) {
                *v = e.process(&mut f, *meta, Time::from_millis(2 + round));
            }
        }
    });
    assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward(_))), "{verdicts:?}");
    assert_eq!(one_by_one, 0, "allocations on the established path");

    // the same packets as the workers hand them over: batches of up to 64
    verdicts.iter_mut().for_each(|v| *v = Verdict::ToHost);
    let batched = allocations(|| {
        for round in 0..100u64 {
            for (b, t) in bufs.iter_mut().zip(&templates) {
                b.copy_from_slice(&t.0);
            }
            for ((bc, lc), (mc, vc)) in
                bufs.chunks_mut(64).zip(lens.chunks(64)).zip(metas.chunks(64).zip(verdicts.chunks_mut(64)))
            {
                let n = bc.len();
                let mut frames: [FrameBuf<'_>; 64] = std::array::from_fn(|_| FrameBuf { buf: &mut [], len: 0 });
                for ((f, b), &len) in frames.iter_mut().zip(bc.iter_mut()).zip(lc) {
                    *f = FrameBuf { buf: &mut b[..], len };
                }
                e.process_batch(&mut frames[..n], mc, Time::from_millis(200 + round), vc);
            }
        }
    });
    assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward(_))), "{verdicts:?}");
    assert_eq!(batched, 0, "allocations in process_batch");
}

#[test]
fn pptp_control_segments_do_not_allocate() {
    use xgw_dataplane::alg::pptp::msg::{build, MsgType};
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut e = engine();
    // a control connection, started and its first messages seen (the inspector's scratch
    // grows to its size here, once)
    let (sport, mut seq, ack) = (40001u16, 1000u32, 5001u32);
    let mut syn = tcp_seq(C1, S, sport, 1723, seq, 0, "S", b"");
    assert_eq!(run(&mut e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
    let p = tuple(&syn).sport;
    let mut sa = tcp_seq(S, P, 1723, p, 5000, seq + 1, "SA", b"");
    assert_eq!(run(&mut e, &mut sa, OUTSIDE, 1), Verdict::Forward(INSIDE));
    seq += 1;
    let echo = build(MsgType::EchoRq, &[(12, 7)]);
    let mut frames = Vec::new();
    for _ in 0..101 {
        frames.push(tcp_seq(C1, S, sport, 1723, seq, ack, "AP", &echo));
        seq = seq.wrapping_add(echo.len() as u32);
    }
    let mut first = frames.remove(0);
    assert_eq!(run(&mut e, &mut first, INSIDE, 2), Verdict::Forward(OUTSIDE));
    let mut verdicts = Vec::with_capacity(frames.len());
    let n = allocations(|| {
        for (i, f) in frames.iter_mut().enumerate() {
            let len = f.len();
            verdicts.push(e.process(
                &mut FrameBuf { buf: &mut f[..], len },
                RxMeta { iface: INSIDE },
                Time::from_millis(3 + i as u64),
            ));
        }
    });
    assert!(verdicts.iter().all(|v| *v == Verdict::Forward(OUTSIDE)), "{verdicts:?}");
    assert_eq!(e.shared().pptp.sessions().len(), 1, "the inspector follows the connection");
    assert_eq!(n, 0, "allocations while inspecting PPTP control segments");
}
