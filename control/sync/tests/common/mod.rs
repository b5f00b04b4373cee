//! What the standby tests share: running a frame through an engine.

use xgw_dataplane::{Engine, FrameBuf, IfaceId, RxMeta, Time, Verdict};

/// Runs a frame; returns the verdict and the frame as it would leave.
pub fn run(e: &mut Engine, f: &[u8], iface: IfaceId, t: Time) -> (Verdict, Vec<u8>) {
    let mut buf = f.to_vec();
    buf.resize(512, 0);
    let mut fb = FrameBuf { buf: &mut buf[..], len: f.len() };
    let v = e.process(&mut fb, RxMeta { iface }, t);
    let len = fb.len;
    (v, buf[..len].to_vec())
}
