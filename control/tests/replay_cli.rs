//! `xgwd replay` on generated captures: the binary, its files and its summary.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::process::Command;
use std::time::Duration;

use xgw_dataplane::replay::{read_capture, write_frames};
fn bin(_: &str) -> &'static str {
    env!("CARGO_BIN_EXE_xgwd")
}

fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .expect("build frame");
    v
}

#[test]
fn replay_translates_and_writes_per_interface_captures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inside = dir.path().join("in.pcap");
    let outside = dir.path().join("out.pcap");
    let c = [10, 0, 0, 5];
    let s = [198, 51, 100, 20];
    let p = [203, 0, 113, 1];
    write_frames(
        &[
            (Duration::from_millis(0), udp_frame(c, s, 5000, 53, b"query")),
            (Duration::from_millis(2), udp_frame(c, s, 5001, 53, b"query2")),
        ],
        std::fs::File::create(&inside).expect("create"),
    )
    .expect("write");
    write_frames(
        &[
            (Duration::from_millis(1), udp_frame(s, p, 53, 5000, b"answer")),
            (Duration::from_millis(3), udp_frame(s, p, 53, 6000, b"unsolicited")),
        ],
        std::fs::File::create(&outside).expect("create"),
    )
    .expect("write");
    let oi = dir.path().join("egress-inside.pcap");
    let oo = dir.path().join("egress-outside.pcap");
    let out = Command::new(bin("xgwd"))
        .args(["replay", "--inside", "10.0.0.1/24", "--outside", "203.0.113.1/24", "--json"])
        .arg("--in-inside")
        .arg(&inside)
        .arg("--in-outside")
        .arg(&outside)
        .arg("--out-inside")
        .arg(&oi)
        .arg("--out-outside")
        .arg(&oo)
        .output()
        .expect("run xgwd");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("\"frames\": 4"), "{summary}");
    assert!(summary.contains("\"flows_created\": 2"), "{summary}");
    // the unsolicited datagram to the outside address (no host port, no service, no
    // forward) is refused and counted, as the XDP program's rule leaves it to the engine
    assert!(summary.contains("\"to_host\": 0"), "{summary}");
    assert!(summary.contains("\"unsolicited_inbound\": 1"), "{summary}");

    let egress_out = read_capture(std::fs::File::open(&oo).expect("open"), "o").expect("read");
    assert_eq!(egress_out.len(), 2);
    for r in &egress_out {
        assert_eq!(&r.frame[26..30], &p, "outside sees only the outside address");
    }
    let egress_in = read_capture(std::fs::File::open(&oi).expect("open"), "i").expect("read");
    assert_eq!(egress_in.len(), 1);
    assert_eq!(&egress_in[0].frame[30..34], &c, "the answer reaches the inside host");
    assert_eq!(u16::from_be_bytes([egress_in[0].frame[36], egress_in[0].frame[37]]), 5000);
}

#[test]
fn replay_refuses_a_malformed_capture_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture at all").expect("write");
    let out = Command::new(bin("xgwd"))
        .args(["replay", "--inside", "10.0.0.1/24", "--outside", "203.0.113.1/24", "--in-inside"])
        .arg(&junk)
        .output()
        .expect("run xgwd");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.pcap: not a readable pcap/pcapng capture"), "{err}");
}

#[test]
fn replay_refuses_bad_flags() {
    let out = Command::new(bin("xgwd"))
        .args(["replay", "--inside", "10.0.0.1/33", "--outside", "203.0.113.1/24", "--in", "x"])
        .output()
        .expect("run xgwd");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prefix length 33"));
}
