//! Memory for the big fixed tables (flow slots, the flow index): allocated once at start-up
//! and, on Linux, asked to be backed by transparent huge pages. A lookup touches random
//! cache lines all over hundreds of megabytes; with 4 KiB pages nearly every one also misses
//! the TLB and walks the page tables, with 2 MiB pages the TLB covers the whole table.

/// A boxed slice of `n` elements made by `f`, its memory advised for huge pages before it is
/// first touched.
pub fn table<T>(n: usize, mut f: impl FnMut(usize) -> T) -> Box<[T]> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_mut_ptr().cast::<u8>(), n.saturating_mul(core::mem::size_of::<T>()));
    for i in 0..n {
        v.push(f(i));
    }
    v.into_boxed_slice()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code, reason = "madvise(2) on memory this module mapped")]
fn advise_huge(p: *mut u8, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = (p as usize).div_ceil(HUGE) * HUGE;
    let end = (p as usize).saturating_add(len) / HUGE * HUGE;
    if end <= start {
        return; // smaller than one aligned huge page
    }
    // SAFETY: [start, end) lies inside the `len` bytes allocated at `p` (the caller's fresh,
    // not yet initialised Vec capacity; `start` is rounded up and `end` down). MADV_HUGEPAGE
    // only changes how the kernel backs those pages — contents, protection and validity stay
    // as they are — and when it fails (no THP in this kernel) nothing has changed.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_: *mut u8, _: usize) {}

#[cfg(test)]
mod tests {
    #[test]
    fn builds_every_element_in_order() {
        let t = super::table(3 << 20, |i| i as u32);
        assert_eq!(t.len(), 3 << 20);
        assert!(t.iter().enumerate().all(|(i, v)| *v == i as u32));
        assert_eq!(super::table(0, |_| 0u8).len(), 0);
    }

    #[test]
    fn big_tables_get_huge_pages_where_the_kernel_gives_them() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if !(thp.contains("[madvise]") || thp.contains("[always]")) {
            return; // this kernel gives no transparent huge pages: nothing to check
        }
        let huge = || {
            std::fs::read_to_string("/proc/self/smaps_rollup")
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("AnonHugePages:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = huge();
        let t = super::table(16 << 20, |i| i as u32); // 64 MiB
        let after = huge();
        assert!(t[12345] == 12345);
        assert!(after >= before + 32 * 1024, "huge pages: {before} kB before, {after} kB after");
    }
}
