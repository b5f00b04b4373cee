//! Builds xgw's XDP program (ebpf/prog) with the nightly toolchain for the bpfel target and
//! hands its object to the binaries (`XGW_XDP_OBJECT`); with the `bench-xdp` feature also
//! the benchmark's object, which adds the generator and sink programs
//! (`XGW_XDP_BENCH_OBJECT`). Needs what `tools/setup` installs: nightly with rust-src and
//! bpf-linker.
#![allow(clippy::expect_used, reason = "a build script fails by panicking, with the message saying what is missing")]

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let prog = manifest.join("../ebpf/prog");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out.join("ebpf-target");
    for p in ["src/main.rs", "src/bench.rs", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", prog.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", manifest.join("../ebpf/common/src/lib.rs").display());
    let dest = build(&prog, &target_dir, &[], &out.join("xgw-xdp.o"));
    println!("cargo:rustc-env=XGW_XDP_OBJECT={}", dest.display());
    if std::env::var_os("CARGO_FEATURE_BENCH_XDP").is_some() {
        let dest = build(&prog, &out.join("ebpf-target-bench"), &["--features", "bench"], &out.join("xgw-xdp-bench.o"));
        println!("cargo:rustc-env=XGW_XDP_BENCH_OBJECT={}", dest.display());
    }
}

/// Builds the program in `prog` into `target_dir` with `extra` arguments and copies the
/// object to `dest`.
fn build(prog: &PathBuf, target_dir: &PathBuf, extra: &[&str], dest: &PathBuf) -> PathBuf {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(prog)
        .args(["+nightly", "build", "--release", "--locked"])
        .args(extra)
        .arg("--target-dir")
        .arg(target_dir);
    // the outer build's settings are for the host target, not for bpfel
    for v in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
    ] {
        cmd.env_remove(v);
    }
    let status = cmd.status().expect("running cargo +nightly for the XDP program (run tools/setup)");
    assert!(status.success(), "building the XDP program failed (is tools/setup done? nightly, rust-src, bpf-linker)");
    let obj = target_dir.join("bpfel-unknown-none/release/xgw-xdp");
    std::fs::copy(&obj, dest).expect("copy the XDP object");
    dest.clone()
}
