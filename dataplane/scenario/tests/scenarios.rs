//! Seeded scenarios through the engine, every oracle on every frame; and the oracles shown
//! to catch what they are for.

use arbitrary::{Arbitrary, Unstructured};
use xgw_scenario::frames::{packet, Proto};
use xgw_scenario::oracle::{Expect, Oracle};
use xgw_scenario::{run, Scenario, Step, INSIDE, OUTSIDE};

#[test]
fn thousands_of_seeded_scenarios_break_no_promise() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0001);
    let (mut frames, mut forwarded, mut runs) = (0u64, 0u64, 0u64);
    let mut bytes = vec![0u8; 2048];
    for _ in 0..3000 {
        rng.fill(&mut bytes);
        // a hundred steps each (arbitrary's own Vec encoding stops at random, which suits a
        // fuzzer that learns, not a seeded run)
        let mut u = Unstructured::new(&bytes);
        let steps: Vec<Step> = (0..100).map_while(|_| Step::arbitrary(&mut u).ok()).collect();
        let s = Scenario { steps };
        match run(&s) {
            Ok(o) => {
                frames += o.frames;
                forwarded += o.forwarded;
                runs += 1;
            }
            Err(v) => panic!("{v}\nscenario: {s:?}"),
        }
    }
    println!("{runs} scenarios, {frames} frames, {forwarded} forwarded");
    assert!(runs > 2000 && forwarded > frames / 10, "{runs} runs, {frames} frames, {forwarded} forwarded");
}

#[test]
fn a_scripted_scenario_translates_replies_and_errors() {
    let s = Scenario {
        steps: vec![
            Step::Out { host: 0, far: 0, proto: Proto::Udp, sport: 5000, dport: 53 },
            Step::Out { host: 1, far: 0, proto: Proto::Udp, sport: 5000, dport: 53 },
            Step::Reply { pick: 0 },
            Step::Reply { pick: 1 },
            Step::ErrorBeyond { pick: 1, kind: 0 },
            Step::Out { host: 2, far: 1, proto: Proto::Tcp(0x02), sport: 40000, dport: 443 },
            Step::Reply { pick: 2 },
            Step::ToForward { far: 3, sport: 50000 },
            Step::Unsolicited { far: 2, proto: Proto::Udp, sport: 1, dport: 9 },
        ],
    };
    let o = run(&s).expect("no violation");
    assert_eq!(o.frames, 9);
    assert_eq!(o.forwarded, 8, "all but the unsolicited datagram");
}

#[test]
fn the_oracles_catch_a_leak_a_bad_checksum_and_a_misdelivery() {
    let mut o = Oracle::default();
    let input = packet([10, 0, 0, 5], [198, 51, 100, 1], Proto::Udp, 5000, 53, b"x");
    // an inside source address leaving untranslated
    let e = o.check_forwarded(&input, INSIDE, OUTSIDE, &input, &Expect::Nothing).expect_err("leak");
    assert!(e.0.contains("inside address left"), "{e}");
    // a translated source with the checksum left as it was
    let mut bad = input.clone();
    bad[26..30].copy_from_slice(&[203, 0, 113, 1]);
    let e = o.check_forwarded(&input, INSIDE, OUTSIDE, &bad, &Expect::Nothing).expect_err("checksum");
    assert!(e.0.contains("checksum"), "{e}");
    // a reply for one host delivered to another
    let reply = packet([198, 51, 100, 1], [10, 0, 0, 6], Proto::Udp, 53, 5000, b"y");
    let e = o
        .check_forwarded(&reply, OUTSIDE, INSIDE, &reply, &Expect::DeliverTo([10, 0, 0, 5], 5000))
        .expect_err("misdelivery");
    assert!(e.0.contains("went to"), "{e}");
}

#[test]
fn scripted_pptp_calls_esp_fragments_and_tags_keep_every_promise() {
    let mut steps = Vec::new();
    // two PNSs on two inside hosts, the same Call ID, the same PAC; the second puts an
    // Echo-Request in front of its request and splits the two inside the Call ID (after 16 +
    // 13 bytes)
    steps.push(Step::PptpOpen { host: 0, far: 0, call_id: 0x0100, split: 0, coalesce: false });
    steps.push(Step::PptpOpen { host: 1, far: 0, call_id: 0x0100, split: 29, coalesce: true });
    for _ in 0..8 {
        steps.push(Step::PptpNext { conv: 0 });
        steps.push(Step::PptpNext { conv: 1 });
    }
    for conv in 0..2 {
        steps.push(Step::Gre { conv, from_server: false, forge: 0 });
        steps.push(Step::Gre { conv, from_server: true, forge: 0 });
        steps.push(Step::Gre { conv, from_server: true, forge: 0x0101 });
    }
    steps.push(Step::Esp { host: 2, far: 1, spi: 0x1000, inbound: false });
    steps.push(Step::Esp { host: 2, far: 1, spi: 0x2000, inbound: true });
    steps.push(Step::Esp { host: 3, far: 2, spi: 0x3000, inbound: true });
    steps.push(Step::Fragments { host: 4, far: 2, sport: 7000, dport: 53, at: 1, reverse: false });
    steps.push(Step::Fragments { host: 5, far: 2, sport: 7001, dport: 53, at: 2, reverse: true });
    steps.push(Step::Tagged { host: 6, far: 3, sport: 7002, vid: 10 });
    let s = Scenario { steps };
    let o = run(&s).expect("no violation");
    // 32 frames: GRE steps make frames only for calls whose translated Call ID the oracle
    // saw leave, so both calls came up; every forwarded GRE passed the delivery oracle
    assert_eq!(o.frames, 32, "{o:?}");
    assert!(o.forwarded >= 26, "{o:?}");
}

#[test]
fn the_oracles_catch_gre_delivered_to_the_wrong_client() {
    let mut o = Oracle::default();
    let g = xgw_scenario::frames::gre([198, 51, 100, 1], [10, 0, 0, 6], 0x0100, 1);
    let e = o.check_forwarded(&g, OUTSIDE, INSIDE, &g, &Expect::GreTo([10, 0, 0, 5], 0x0100)).expect_err("misdelivery");
    assert!(e.0.contains("GRE for"), "{e}");
    let e = o.check_forwarded(&g, OUTSIDE, INSIDE, &g, &Expect::NotForwarded).expect_err("no call");
    assert!(e.0.contains("no flow or call"), "{e}");
}

/// A finding of the fuzz smoke run (CI, session 8): a PNS's Outgoing-Call-Request split in
/// two segments, the second retransmitted with bytes changed (one with its ACK number
/// flipped), and a stray SYN-ACK before the PAC's first message. Any acknowledgement of the
/// PAC's still empty stream used to move where the inspector thought it started, so the
/// flipped ACK number put the start beyond the PAC's Outgoing-Call-Reply, which then passed
/// as a "retransmission" with the translated Peer Call ID. Now the first acknowledgement
/// fixes the start for good and bytes before it are refused.
#[test]
fn an_ocrp_after_conflicting_retransmissions_of_its_ocrq_is_translated_or_dropped() {
    let bytes = include_bytes!("findings/ocrp-after-conflicting-retransmission.bin");
    let s = Scenario::arbitrary_take_rest(Unstructured::new(bytes)).expect("a scenario");
    if let Err(v) = run(&s) {
        panic!("{v}");
    }
}
