//! Prints the memory the engine uses per tracked flow: a counting allocator measures the
//! bytes held after building a table for N flows and filling it, divided by N.
//! Usage: flow_memory [N] (default 1000000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to `System`, which upholds GlobalAlloc's contract; it only adds relaxed
// counter updates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout obligations are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr`/`layout` came from `System`; obligations passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let before = LIVE.load(Ordering::SeqCst);
    let (engine, frames) = xgw_bench::engine_with_flows(n, n as usize);
    let frames_bytes: isize = frames.iter().map(|f| f.capacity() as isize).sum::<isize>()
        + (frames.capacity() * std::mem::size_of::<Vec<u8>>()) as isize;
    let after = LIVE.load(Ordering::SeqCst) - frames_bytes;
    let used = after - before;
    println!("flows tracked:          {}", engine.shared().flows.len());
    println!("engine heap bytes:      {used}");
    println!("bytes per flow:         {:.1}", used as f64 / f64::from(n));
    println!("size_of::<Flow>():      {}", std::mem::size_of::<xgw_dataplane::conntrack::Flow>());
}
