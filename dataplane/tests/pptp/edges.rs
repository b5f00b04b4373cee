//! ICMP errors about a call's GRE, reloads that take a call's permission away, fragmented GRE.

use super::*;

#[test]
fn icmp_frag_needed_quoting_gre_reaches_the_pptp_client() {
    // scenario 33: a router beyond the gateway refuses an outbound GRE packet (DF, too big)
    let mut e = engine();
    let (_ctl, _x) = established_call(&mut e);
    let mut g = gre_frame(C1, S, 40, b"a large PPP frame");
    assert_eq!(run(&mut e, &mut g, INSIDE, 20), Verdict::Forward(OUTSIDE));
    // the quote: the packet as it left (source P, key = the PAC's ID 40)
    let router = [192, 0, 2, 254];
    let mut err = icmp_error(router, P, 3, 4, 1400, &g);
    assert_eq!(run(&mut e, &mut err, OUTSIDE, 21), Verdict::Forward(INSIDE));
    assert_checksums(&err);
    assert_eq!(tuple(&err).dst, Ipv4Addr::from(C1), "the error reaches the PPTP client");
    let quote = &err[14 + 28..];
    assert_eq!(&quote[12..16], &C1, "the quote shows the client's own address");
    assert_eq!(be(quote, 20 + 6), 40, "the quoted key (the PAC's ID) is untouched");
    assert!(sums_to_ones(&quote[..20], 0));
}

#[test]
fn icmp_errors_from_an_inside_router_about_gre_leave_with_the_outside_address() {
    // a router between the gateway and the PPTP client cannot deliver the server's GRE
    // (frag-needed, host-unreachable, time-exceeded): the error goes to the server from P,
    // its quote shows the packet as the server sent it (to P, with the translated Call ID)
    for (typ, code) in [(3u8, 4u8), (3, 1), (11, 0)] {
        let mut e = engine();
        let (_ctl, x) = established_call(&mut e);
        let mut g = gre_frame(S, P, x, b"a large PPP frame");
        assert_eq!(run(&mut e, &mut g, OUTSIDE, 20), Verdict::Forward(INSIDE));
        assert_eq!(be(&g, 14 + 20 + 6), 4, "delivered with the client's own Call ID");
        let router = [10, 0, 0, 254];
        let mut err = icmp_error(router, S, typ, code, 1400, &g);
        assert_eq!(run(&mut e, &mut err, INSIDE, 21), Verdict::Forward(OUTSIDE), "{typ}/{code}");
        assert_checksums(&err);
        let t = tuple(&err);
        assert_eq!((t.src, t.dst), (Ipv4Addr::from(P), Ipv4Addr::from(S)), "no inside address leaves");
        let quote = &err[14 + 28..];
        assert_eq!((&quote[12..16], &quote[16..20]), (&S[..], &P[..]), "the quote as the server sent it");
        assert_eq!(be(quote, 20 + 6), x, "the quoted key is the translated Call ID again");
        assert!(sums_to_ones(&quote[..20], 0));
    }
}

#[test]
fn reload_that_denies_the_server_tears_the_call_down() {
    // scenario 37 at the engine: flows keep their verdict across a reload, and a reload that
    // tears down what the new policy refuses takes the call's GRE with its control connection
    use xgw_dataplane::policy::{Decision, NewFlow, Policy};
    #[derive(Debug)]
    struct DenyServer;
    impl Policy for DenyServer {
        fn check(&self, f: &NewFlow) -> Decision {
            if f.dst == u32::from_be_bytes(S) {
                Decision::Deny { rule: 9 }
            } else {
                Decision::Permit { rule: 0 }
            }
        }
    }
    let mut e = engine();
    let (_ctl, x) = established_call(&mut e);
    let r = e.shared().reload_policy(Box::new(DenyServer), false, Time::from_millis(30));
    assert_eq!((r.would_deny, r.killed), (1, 0), "the control connection would be refused; GRE is judged with it");
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Forward(INSIDE), "without --kill the call goes on");
    let r = e.shared().reload_policy(Box::new(DenyServer), true, Time::from_millis(31));
    assert_eq!(r.killed, 1);
    assert_eq!(gre(&mut e, S, P, x, false).0, Verdict::Drop(DropReason::NoMatchingGreSession));
    assert_eq!(e.shared().pptp.calls_in_progress(), 0);
}

#[test]
fn fragmented_inbound_gre_follows_its_call() {
    // scenario 26: a large GRE packet from the server arrives in two fragments
    let mut e = engine();
    let (_ctl, x) = established_call(&mut e);
    let whole = gre_frame(S, P, x, &[0x55; 64]);
    let ip_len = whole.len() - 14;
    let mut first = whole[..14 + 20 + 32].to_vec();
    first[18..20].copy_from_slice(&[0xab, 0xcd]);
    first[20] = 0x20; // MF
    first[16..18].copy_from_slice(&52u16.to_be_bytes());
    let mut second = whole[..14 + 20].to_vec();
    second.extend_from_slice(&whole[14 + 20 + 32..14 + ip_len]);
    second[18..20].copy_from_slice(&[0xab, 0xcd]);
    second[20] = 0;
    second[21] = 4; // 32 bytes
    let tl = (second.len() - 14) as u16;
    second[16..18].copy_from_slice(&tl.to_be_bytes());
    fix_ip_csum(&mut first);
    fix_ip_csum(&mut second);
    assert_eq!(run(&mut e, &mut first, OUTSIDE, 40), Verdict::Forward(INSIDE));
    assert_eq!(&first[30..34], &C1);
    assert_eq!(be(&first, 14 + 20 + 6), 4, "key restored in the first fragment");
    assert_eq!(run(&mut e, &mut second, OUTSIDE, 41), Verdict::Forward(INSIDE));
    assert_eq!(&second[30..34], &C1, "the later fragment follows");
    assert!(sums_to_ones(&second[14..34], 0));
}
