//! Random interleavings of calls from several clients against a reference model:
//! no GRE reaches the wrong inside host, no pinhole outlives its call, the pool never
//! hands out an ID that is live.
use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// client, its call ID, where to cut the OCRQ (0 = whole)
    Ocrq(usize, u16, usize),
    /// client, which of its calls (index mod count), accept?
    Ocrp(usize, usize, bool),
    Cdn(usize, usize),
    Ccrq(usize, usize),
    GreIn(usize, usize),
    GreOut(usize, usize),
    /// a GRE packet with a random key from the server
    Stray(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..4u16, prop_oneof![Just(0usize), 1..168usize]).prop_map(|(c, id, cut)| Op::Ocrq(c, id, cut)),
        (0..3usize, 0..4usize, proptest::bool::weighted(0.8)).prop_map(|(c, i, ok)| Op::Ocrp(c, i, ok)),
        (0..3usize, 0..4usize).prop_map(|(c, i)| Op::Cdn(c, i)),
        (0..3usize, 0..4usize).prop_map(|(c, i)| Op::Ccrq(c, i)),
        (0..3usize, 0..4usize).prop_map(|(c, i)| Op::GreIn(c, i)),
        (0..3usize, 0..4usize).prop_map(|(c, i)| Op::GreOut(c, i)),
        any::<u16>().prop_map(Op::Stray),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Requested,
    Up(u16),
}

/// What the model knows of one call: the client's ID, the ID the server saw, state.
#[derive(Debug, Clone)]
struct MCall {
    pns: u16,
    xlat: u16,
    st: St,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn inspector_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut e = engine();
        let hosts = [C1, C2, [10, 0, 0, 7]];
        let mut ctls: Vec<Ctl> = hosts.iter().enumerate().map(|(i, h)| Ctl::open(&mut e, *h, 41000 + i as u16, S)).collect();
        let mut model: Vec<Vec<MCall>> = vec![Vec::new(); 3];
        let mut next_pac = 1u16;
        for o in ops {
            match o {
                Op::Ocrq(c, id, cut) => {
                    if model[c].iter().any(|m| m.pns == id) {
                        continue; // a client never reuses a live Call ID
                    }
                    let m = build(MsgType::Ocrq, &[(12, id)]);
                    let out = if cut == 0 {
                        ctls[c].pns(&mut e, &m)
                    } else {
                        let a = ctls[c].pns(&mut e, &m[..cut]);
                        [a, ctls[c].pns(&mut e, &m[cut..])].concat()
                    };
                    let x = be(&out, 12);
                    // the pool never hands out an ID that is live towards this server
                    prop_assert!(model.iter().flatten().all(|m| m.xlat != x), "xlat {x} reused");
                    model[c].push(MCall { pns: id, xlat: x, st: St::Requested });
                }
                Op::Ocrp(c, i, ok) => {
                    let req: Vec<usize> = (0..model[c].len()).filter(|&j| model[c][j].st == St::Requested).collect();
                    if req.is_empty() { continue; }
                    let j = req[i % req.len()];
                    let pac = next_pac;
                    next_pac += 1;
                    let peer = ctls[c].ocrp(&mut e, pac, model[c][j].xlat, if ok { 1 } else { 3 });
                    prop_assert_eq!(peer, model[c][j].pns);
                    if ok { model[c][j].st = St::Up(pac); } else { model[c].remove(j); }
                }
                Op::Cdn(c, i) | Op::Ccrq(c, i) => {
                    let up: Vec<usize> = (0..model[c].len()).filter(|&j| matches!(model[c][j].st, St::Up(_))).collect();
                    if up.is_empty() { continue; }
                    let j = up[i % up.len()];
                    let St::Up(pac) = model[c][j].st else { continue };
                    if matches!(o, Op::Ccrq(..)) {
                        let out = ctls[c].pns(&mut e, &build(MsgType::Ccrq, &[(12, model[c][j].pns)]));
                        prop_assert_eq!(be(&out, 12), model[c][j].xlat);
                    } else {
                        ctls[c].pac(&mut e, &build(MsgType::Cdn, &[(12, pac)]));
                        model[c].remove(j);
                    }
                }
                Op::GreIn(c, i) => {
                    if model[c].is_empty() { continue; }
                    let m = model[c][i % model[c].len()].clone();
                    let (v, _, dst, key) = gre(&mut e, S, P, m.xlat, false);
                    match m.st {
                        St::Up(_) => prop_assert_eq!((v, dst, key), (Verdict::Forward(INSIDE), Ipv4Addr::from(hosts[c]), m.pns)),
                        St::Requested => prop_assert_eq!(v, Verdict::Drop(DropReason::NoMatchingGreSession)),
                    }
                }
                Op::GreOut(c, i) => {
                    if model[c].is_empty() { continue; }
                    let m = model[c][i % model[c].len()].clone();
                    if let St::Up(pac) = m.st {
                        let (v, src, _, key) = gre(&mut e, hosts[c], S, pac, true);
                        prop_assert_eq!((v, src, key), (Verdict::Forward(OUTSIDE), Ipv4Addr::from(P), pac));
                    }
                }
                Op::Stray(k) => {
                    let owner: Vec<(usize, u16)> = model.iter().enumerate()
                        .flat_map(|(c, v)| v.iter().filter(|m| matches!(m.st, St::Up(_)) && m.xlat == k).map(move |m| (c, m.pns)))
                        .collect();
                    let (v, _, dst, key) = gre(&mut e, S, P, k, false);
                    match owner.as_slice() {
                        [(c, pns)] => prop_assert_eq!((v, dst, key), (Verdict::Forward(INSIDE), Ipv4Addr::from(hosts[*c]), *pns)),
                        [] => prop_assert_eq!(v, Verdict::Drop(DropReason::NoMatchingGreSession)),
                        _ => prop_assert!(false, "two live calls share a translated ID"),
                    }
                }
            }
            let live: usize = model.iter().flatten().filter(|m| matches!(m.st, St::Up(_))).count();
            prop_assert_eq!(e.shared().pptp.calls_in_progress(), live);
        }
        // every control connection ends: no pinhole outlives its call
        let live: Vec<(u16, u16)> = model.iter().flatten().map(|m| (m.xlat, m.pns)).collect();
        for ctl in &mut ctls {
            let (v, _) = ctl.pns_raw(&mut e, ctl.seq_c, b"", RST | ACK);
            prop_assert_eq!(v, Verdict::Forward(OUTSIDE));
        }
        e.shared().sweep(Time::from_secs(3600), usize::MAX);
        for (x, _) in live {
            prop_assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
        }
        prop_assert_eq!(e.shared().pptp.calls_in_progress(), 0);
        e.shared().sweep(Time::from_secs(7200), usize::MAX);
        prop_assert_eq!(e.shared().pptp.pool_in_use(u32::from_be_bytes(P), u32::from_be_bytes(S)), 0);
    }
}
