//! Structure-aware: arbitrary bytes become a meaningful scenario (inside and outside hosts,
//! real flows, replies, ICMP errors quoting real packets, time, flipped bytes), and every
//! forwarded frame must pass the oracles of `xgw_scenario::oracle` (no inside address on
//! the outside, checksums that verify, one inside flow per outside tuple, replies to their
//! own host, counters that add up).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xgw_scenario::{run, Scenario};

fuzz_target!(|s: Scenario| {
    if let Err(v) = run(&s) {
        panic!("{v}\nscenario: {s:?}");
    }
});
