//! End-to-end test support for xgw: locating the built binaries for tests that run them
//! inside network namespaces. The tests live in `tests/*.rs` beside this file.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Path of a binary built from this workspace by `cargo build --bins` (the test command
/// builds them before running the suite).
pub fn bin(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test executable path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join(name)
}
