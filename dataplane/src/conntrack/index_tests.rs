//! The index's own tests: probing, displacement chains, concurrent readers.

use super::*;
use std::sync::Arc;

fn key(i: u32) -> FlowKey {
    FlowKey { src: i, dst: i.rotate_left(7) ^ 0xc633_6400, sport: (i % 60_000) as u16, dport: 443, proto: 6 }
}

/// Who holds what in these tests: value `v` is the key `key(v)`.
fn holder(k: FlowKey) -> impl Fn(u32) -> Held {
    move |v| if key(v) == k { Held::Live } else { Held::Other }
}

fn find(ix: &FlowIndex, k: FlowKey) -> Option<u32> {
    ix.find_confirmed(&ix.probe(&k), |v| key(v) == k)
}

#[test]
fn bucket_is_one_cache_line() {
    assert_eq!(core::mem::size_of::<Bucket>(), 64);
}

#[test]
fn tag_mask_finds_exactly_the_ways_with_the_tag() {
    // tags chosen to provoke the borrow of the lane-zero test: 0x0001 above a match,
    // 0x0000 and 0xffff neighbours, the ninth way outside the words
    let cases: [[u16; WAYS]; 4] = [
        [7, 1, 7, 0, 0xffff, 7, 1, 0, 7],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 0, 1, 0, 1, 0, 1, 0, 1],
        [0xffff, 0xfffe, 0x8000, 0x7fff, 1, 2, 3, 4, 0xffff],
    ];
    let bk = Bucket::default();
    for tags in cases {
        for (w, &t) in tags.iter().enumerate() {
            bk.set_tag(w, t);
        }
        for (w, &t) in tags.iter().enumerate() {
            assert_eq!(bk.tag(w), t);
        }
        for probe in [0u16, 1, 2, 7, 0x7fff, 0x8000, 0xfffe, 0xffff] {
            let want = tags.iter().enumerate().filter(|(_, &t)| t == probe).fold(0, |m, (w, _)| m | 1 << w);
            assert_eq!(bk.tag_mask(probe), want, "tags {tags:?} probe {probe:#x}");
        }
    }
}

#[test]
fn insert_find_remove_and_fill_to_capacity() {
    let cap = 100_000;
    let ix = FlowIndex::new(cap, 42);
    for i in 0..cap as u32 {
        let p = ix.probe(&key(i));
        assert_eq!(ix.insert(&p, i, holder(key(i))), Ok(()), "key {i} at load {:.2}", i as f64 / (ix.n as f64 * 9.0));
    }
    assert_eq!(ix.len(), cap);
    for i in 0..cap as u32 {
        assert_eq!(find(&ix, key(i)), Some(i));
    }
    assert_eq!(find(&ix, key(cap as u32 + 7)), None);
    let p = ix.probe(&key(5));
    assert_eq!(ix.insert(&p, 9, holder(key(5))), Err(IndexError::Taken(5)));
    assert_eq!(
        ix.insert(&p, 9, |v| if v == 5 { Held::Stale } else { Held::Other }),
        Ok(()),
        "a stale holder is replaced"
    );
    assert_eq!(ix.find_confirmed(&p, |v| v == 9), Some(9));
    assert_eq!(ix.len(), cap, "a replacement adds no entry");
    assert!(!ix.remove(&p, 5), "only the current value is removed");
    assert!(ix.remove(&p, 9));
    assert_eq!(ix.find_confirmed(&p, |v| v == 9 || v == 5), None);
    assert_eq!(ix.len(), cap - 1);
}

#[test]
fn same_tag_same_bucket_keys_are_told_apart_by_their_holders() {
    // a tiny index, so two keys with the same bucket and tag turn up quickly
    let ix = FlowIndex::new(20, 3);
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..1_000_000u32)
        .find_map(|i| seen.insert(ix.probe(&key(i)), i).map(|j| (j, i)))
        .expect("a collision among a million keys");
    assert_eq!(ix.probe(&key(a)), ix.probe(&key(b)));
    assert_eq!(ix.insert(&ix.probe(&key(a)), a, holder(key(a))), Ok(()));
    assert_eq!(ix.insert(&ix.probe(&key(b)), b, holder(key(b))), Ok(()), "another key's entry is not 'taken'");
    assert_eq!(ix.len(), 2);
    // the unconfirmed candidate is the same for both: one of them is a false match
    let cand = ix.get(&ix.probe(&key(b)));
    assert!(cand == Some(a) || cand == Some(b));
    assert_eq!(find(&ix, key(a)), Some(a));
    assert_eq!(find(&ix, key(b)), Some(b));
    assert!(ix.remove(&ix.probe(&key(a)), a));
    assert_eq!(find(&ix, key(a)), None);
    assert_eq!(find(&ix, key(b)), Some(b));
    assert_eq!(ix.get(&ix.probe(&key(b))), Some(b));
}

#[test]
fn two_million_keys_fill_to_capacity_mostly_at_home() {
    // sized as the flow table sizes it for a million flows (two keys each)
    let cap = 2_000_000;
    for seed in [1, 2] {
        let ix = FlowIndex::new(cap, seed);
        for i in 0..cap as u32 {
            let p = ix.probe(&key(i));
            assert_eq!(ix.insert(&p, i, holder(key(i))), Ok(()), "seed {seed} key {i}");
        }
        assert_eq!(ix.len(), cap);
        let mut first_candidate_right = 0;
        for i in (0..cap as u32).step_by(97) {
            assert_eq!(find(&ix, key(i)), Some(i), "seed {seed} key {i}");
            first_candidate_right += u32::from(ix.get(&ix.probe(&key(i))) == Some(i));
        }
        let looked = (cap as u32).div_ceil(97);
        assert!(first_candidate_right * 1000 >= looked * 999, "{first_candidate_right} of {looked}");
        // spill counts are exact: each counts the entries away from that home
        let away: usize =
            ix.buckets.iter().map(|b| b.vals.iter().filter(|v| v.load(Ordering::Relaxed) & AWAY != 0).count()).sum();
        let spilled: usize = ix.buckets.iter().map(|b| usize::from(b.spill.load(Ordering::Relaxed))).sum();
        assert_eq!(away, spilled, "seed {seed}");
        eprintln!("seed {seed}: {away} of {cap} keys away from home");
        assert!(away * 5 < cap, "seed {seed}: {away} of {cap} keys away from home");
    }
}

#[test]
fn a_key_living_in_its_alternate_is_still_taken() {
    // filled until keys spill; each spilled key is offered again: its live entry (away from
    // home) must make the insert fail, and a stale one must be replaced where it lives
    let cap = 50_000;
    let ix = FlowIndex::new(cap, 9);
    for i in 0..cap as u32 {
        assert_eq!(ix.insert(&ix.probe(&key(i)), i, holder(key(i))), Ok(()));
    }
    let away: Vec<u32> = (0..cap as u32)
        .filter(|&i| {
            let p = ix.probe(&key(i));
            let b2 = ix.alt(p.home, p.tag);
            b2 != p.home && ix.buckets[b2].vals.iter().any(|v| v.load(Ordering::Relaxed) == (i + 1) | AWAY)
        })
        .take(200)
        .collect();
    assert!(away.len() >= 50, "only {} keys away from home", away.len());
    for &i in &away {
        let p = ix.probe(&key(i));
        assert_eq!(ix.insert(&p, cap as u32 + i, holder(key(i))), Err(IndexError::Taken(i)), "key {i}");
    }
    let len = ix.len();
    for &i in &away {
        let p = ix.probe(&key(i));
        let stale = move |v| if v == i { Held::Stale } else { Held::Other };
        assert_eq!(ix.insert(&p, cap as u32 + i, stale), Ok(()));
        assert_eq!(ix.find_confirmed(&p, |v| v == cap as u32 + i), Some(cap as u32 + i));
    }
    assert_eq!(ix.len(), len, "replaced where they lived, none added");
}

#[test]
fn readers_never_miss_or_see_a_wrong_value_while_writers_churn() {
    // small for what it holds (up to ~90 % of its ways), so inserts often move entries
    let ix = Arc::new(FlowIndex::new(8_000, 7));
    // stable keys that must always be found; the writer churns others, whose inserts
    // move stable entries between their buckets
    for i in 0..5_000u32 {
        ix.insert(&ix.probe(&key(i)), i, holder(key(i))).expect("insert");
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (ix, stop) = (Arc::clone(&ix), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for j in 0..5_000 {
                    let v = 100_000 + (n + j) % 20_000;
                    let _ = ix.insert(&ix.probe(&key(v)), v, holder(key(v)));
                }
                for j in 0..5_000 {
                    let v = 100_000 + (n + j) % 20_000;
                    ix.remove(&ix.probe(&key(v)), v);
                }
                n += 5_000;
            }
        })
    };
    // read until the writer has moved entries often enough (each chain of moves adds
    // two to the epoch), for at least 30 rounds
    let moves = || ix.epoch.load(Ordering::Relaxed) / 2;
    let mut round = 0;
    while round < 30 || (moves() < 500 && round < 100_000) {
        for i in 0..5_000u32 {
            assert_eq!(find(&ix, key(i)), Some(i), "round {round} key {i}");
        }
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(moves() >= 500, "only {} inserts moved entries: the test did not test moves", moves());
    let spilled: usize = ix.buckets.iter().map(|b| usize::from(b.spill.load(Ordering::Relaxed))).sum();
    let away: usize =
        ix.buckets.iter().map(|b| b.vals.iter().filter(|v| v.load(Ordering::Relaxed) & AWAY != 0).count()).sum();
    assert_eq!(away, spilled);
    assert_eq!(ix.len(), 5_000);
}
