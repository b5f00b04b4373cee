//! Reading a whole `FLOWS` map in batches: libbpf's `bpf_map_lookup_batch`
//! (`BPF_MAP_LOOKUP_BATCH`) copies up to [`BATCH`] entries out per syscall, where a lookup per
//! entry costs one syscall each. The offload thread's counter sync reads every installed
//! direction once a second; with 16 k flows that was 32 k syscalls a second on the core the
//! fast path runs on.
//!
//! A read goes through the map in bucket order and may be spread over time (a batch, a pause,
//! the next): entries added or deleted meanwhile may be missed or seen twice, which a counter
//! sync tolerates (a missed entry is read next round; a second sight replaces the first).
#![allow(unsafe_code, reason = "one FFI call into libbpf, with its buffers' sizes checked here")]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData};
use xgw_ebpf_common::{FastFlow, FastKey};

/// One interface's `FLOWS` map.
pub type FlowMap = BpfHashMap<MapData, FastKey, FastFlow>;

/// Entries one syscall copies out at most: a quarter of the 1,024 that, with 256-flow fold
/// chunks, made steps of up to ~0.6 ms in a scheduler trace of the core the receive
/// processing shares.
pub const BATCH: usize = 256;

/// A read through one map, batch by batch.
#[derive(Debug)]
pub struct BatchRead {
    keys: Vec<FastKey>,
    values: Vec<FastFlow>,
    /// The kernel's position in the map (a hash map's bucket number in its first 4 bytes;
    /// sized like a key, which is what other map types put there).
    cursor: FastKey,
    started: bool,
    done: bool,
}

impl Default for BatchRead {
    fn default() -> Self {
        BatchRead {
            keys: vec![FastKey::default(); BATCH],
            values: vec![FastFlow::default(); BATCH],
            cursor: FastKey::default(),
            started: false,
            done: false,
        }
    }
}

impl BatchRead {
    /// Starts over from the map's first entry.
    pub fn restart(&mut self) {
        self.started = false;
        self.done = false;
    }

    /// True once the map has been read through.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Reads the next batch of `map`'s entries into `out` (one syscall). Returns how many it
    /// read; [`BatchRead::done`] says when there are no more. A failed read ends the read
    /// through (done, until [`BatchRead::restart`]).
    pub fn next(&mut self, map: &FlowMap, out: &mut impl Extend<(FastKey, FastFlow)>) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let fd = map.map().fd().as_fd().as_raw_fd();
        let mut count = u32::try_from(BATCH).unwrap_or(u32::MAX);
        let mut next = FastKey::default();
        let in_batch: *mut FastKey = if self.started { &mut self.cursor } else { std::ptr::null_mut() };
        // SAFETY: `keys` and `values` hold `BATCH` elements each, typed as the map's key and
        // value (`FastKey`, `FastFlow`: plain `repr(C)` integers, any bit pattern valid, the
        // sizes aya checked when it opened the map), and `count` says `BATCH`, so the kernel
        // writes at most that many of each. `in_batch` is null on the first call or points at
        // the cursor the previous call wrote; `next` is key-sized, more than a hash map's
        // 4-byte cursor. Null options are allowed. The fd is the map's, borrowed for the call.
        let rc = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                fd,
                in_batch.cast(),
                (&raw mut next).cast(),
                self.keys.as_mut_ptr().cast(),
                self.values.as_mut_ptr().cast(),
                &mut count,
                std::ptr::null(),
            )
        };
        let n = (count as usize).min(BATCH);
        if rc < 0 && -rc != libc::ENOENT {
            self.done = true;
            return Err(io::Error::from_raw_os_error(-rc));
        }
        out.extend(self.keys[..n].iter().copied().zip(self.values[..n].iter().copied()));
        self.cursor = next;
        self.started = true;
        // ENOENT: this was the last batch (it may still have carried entries)
        self.done = rc < 0;
        Ok(n)
    }
}
