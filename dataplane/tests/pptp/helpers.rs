//! What the scenarios share: TCP segments of a control connection through the engine, GRE frames, established calls, capture fixtures.

use super::*;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;

/// A TCP segment; `ack` is the acknowledgement number, sent when `flags` has ACK.
#[expect(clippy::too_many_arguments, reason = "every TCP header field a test sets")]
pub fn seg(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let letters: String = [(SYN, 'S'), (ACK, 'A'), (FIN, 'F'), (RST, 'R'), (PSH, 'P')]
        .into_iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| c)
        .collect();
    tcp_seq(src, dst, sport, dport, seq, ack, &letters, payload)
}

pub fn tcp_payload(frame: &[u8]) -> Vec<u8> {
    let thl = usize::from(frame[14 + 20 + 12] >> 4) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    frame[14 + 20 + thl..14 + total].to_vec()
}

pub fn be(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

/// One PPTP control connection from inside host `c` to server `s`, through the engine.
pub struct Ctl {
    pub c: [u8; 4],
    pub s: [u8; 4],
    pub sport: u16,
    pub pport: u16,
    pub seq_c: u32,
    pub seq_s: u32,
    pub t: u64,
}

impl Ctl {
    pub fn open(e: &mut Engine, c: [u8; 4], sport: u16, s: [u8; 4]) -> Ctl {
        let mut syn = seg(c, s, sport, 1723, 1000, 0, SYN, b"");
        assert_eq!(run(e, &mut syn, INSIDE, 0), Verdict::Forward(OUTSIDE));
        let pport = tuple(&syn).sport;
        let mut sa = seg(s, P, 1723, pport, 5000, 1001, SYN | ACK, b"");
        assert_eq!(run(e, &mut sa, OUTSIDE, 1), Verdict::Forward(INSIDE));
        let mut ack = seg(c, s, sport, 1723, 1001, 5001, ACK, b"");
        assert_eq!(run(e, &mut ack, INSIDE, 2), Verdict::Forward(OUTSIDE));
        let mut ctl = Ctl { c, s, sport, pport, seq_c: 1001, seq_s: 5001, t: 3 };
        let out = ctl.pns(e, &build(MsgType::Sccrq, &[(12, 0x0100)]));
        assert_eq!(out.len(), 156);
        let mut sccrp = build(MsgType::Sccrp, &[(12, 0x0100)]);
        sccrp[14] = 1;
        ctl.pac(e, &sccrp);
        ctl
    }

    /// Sends PNS → PAC bytes at the current sequence number; returns what leaves outside.
    pub fn pns(&mut self, e: &mut Engine, data: &[u8]) -> Vec<u8> {
        let (v, out) = self.pns_raw(e, self.seq_c, data, ACK | PSH);
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        self.seq_c = self.seq_c.wrapping_add(data.len() as u32);
        out
    }

    pub fn pns_raw(&mut self, e: &mut Engine, seq: u32, data: &[u8], flags: u8) -> (Verdict, Vec<u8>) {
        let mut f = seg(self.c, self.s, self.sport, 1723, seq, self.seq_s, flags, data);
        self.t += 1;
        let v = run(e, &mut f, INSIDE, self.t);
        if v == Verdict::Forward(OUTSIDE) {
            assert_checksums(&f);
            let tu = tuple(&f);
            assert_eq!((tu.src, tu.sport), (Ipv4Addr::from(P), self.pport));
        }
        (v, tcp_payload(&f))
    }

    /// Sends PAC → PNS bytes; returns what reaches the inside host.
    pub fn pac(&mut self, e: &mut Engine, data: &[u8]) -> Vec<u8> {
        let (v, out) = self.pac_raw(e, self.seq_s, data, ACK | PSH);
        assert_eq!(v, Verdict::Forward(INSIDE));
        self.seq_s = self.seq_s.wrapping_add(data.len() as u32);
        out
    }

    pub fn pac_raw(&mut self, e: &mut Engine, seq: u32, data: &[u8], flags: u8) -> (Verdict, Vec<u8>) {
        let mut f = seg(self.s, P, 1723, self.pport, seq, self.seq_c, flags, data);
        self.t += 1;
        let v = run(e, &mut f, OUTSIDE, self.t);
        if v == Verdict::Forward(INSIDE) {
            assert_checksums(&f);
            assert_eq!(tuple(&f).dst, Ipv4Addr::from(self.c));
        }
        (v, tcp_payload(&f))
    }

    /// OCRQ with `id`; returns the translated ID the PAC sees.
    pub fn ocrq(&mut self, e: &mut Engine, id: u16) -> u16 {
        let out = self.pns(e, &build(MsgType::Ocrq, &[(12, id)]));
        be(&out, 12)
    }

    /// OCRP from the PAC for translated ID `xlat` with PAC ID `pac`; returns the peer ID
    /// the inside host sees.
    pub fn ocrp(&mut self, e: &mut Engine, pac: u16, xlat: u16, result: u8) -> u16 {
        let mut m = build(MsgType::Ocrp, &[(12, pac), (14, xlat)]);
        m[16] = result;
        let got = self.pac(e, &m);
        assert_eq!(be(&got, 12), pac, "the PAC's own Call ID is never touched");
        be(&got, 14)
    }
}

pub fn gre_frame(src: [u8; 4], dst: [u8; 4], key: u16, token: &[u8]) -> Vec<u8> {
    let mut g = [0u8; 16];
    let n = gre::emit_pptp(&mut g, key, Some(1), None, token.len() as u16);
    let mut payload = g[..n].to_vec();
    payload.extend_from_slice(token);
    raw_ip(src, dst, 47, &payload)
}

/// Sends GRE; returns (verdict, destination, key) of what leaves.
pub fn gre(
    e: &mut Engine,
    src: [u8; 4],
    dst: [u8; 4],
    key: u16,
    from_inside: bool,
) -> (Verdict, Ipv4Addr, Ipv4Addr, u16) {
    let mut f = gre_frame(src, dst, key, b"token");
    let v = run(e, &mut f, if from_inside { INSIDE } else { OUTSIDE }, 10);
    assert!(sums_to_ones(&f[14..34], 0), "IP checksum");
    let t = tuple(&f);
    (v, t.src, t.dst, be(&f, 14 + 20 + 6))
}

pub fn established_call(e: &mut Engine) -> (Ctl, u16) {
    let mut ctl = Ctl::open(e, C1, 40001, S);
    let x = ctl.ocrq(e, 4);
    ctl.ocrp(e, 40, x, 1);
    (ctl, x)
}

pub fn established_call2(e: &mut Engine) -> (Ctl, u16) {
    let mut ctl = Ctl::open(e, C2, 40002, S);
    let x = ctl.ocrq(e, 4);
    ctl.ocrp(e, 41, x, 1);
    (ctl, x)
}

/// A fast path that only counts the calls made to it (each would be a bpf() syscall).
#[derive(Default)]
pub struct CountingFastPath(pub std::sync::atomic::AtomicUsize);

impl xgw_dataplane::conntrack::offload::FastPath for CountingFastPath {
    fn refresh(&self, _: &mut xgw_dataplane::conntrack::Flow) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn withdraw(&self, _: &mut xgw_dataplane::conntrack::Flow) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A capture's control payloads (from the PNS?, bytes) and its GRE payloads, in order.
pub type CaptureParts = (Vec<(bool, Vec<u8>)>, Vec<Vec<u8>>);

pub fn capture_parts(name: &str, pns: [u8; 4]) -> CaptureParts {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/captures").join(name);
    let recs = xgw_dataplane::replay::read_capture(std::fs::File::open(path).expect("fixture"), name).expect("read");
    let (mut ctl, mut gres) = (Vec::new(), Vec::new());
    let mut seen: std::collections::HashSet<(bool, u32)> = std::collections::HashSet::new();
    for r in recs {
        let f = &r.frame;
        if f.len() < 34 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let from_pns = f[26..30] == pns;
        match f[23] {
            6 => {
                let p = tcp_payload(f);
                let seq = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
                // the captures hold exact duplicates (pptpd answered twice): keep one
                if !p.is_empty() && seen.insert((from_pns, seq)) {
                    ctl.push((from_pns, p));
                }
            }
            47 => gres.push(f[14 + 20..].to_vec()),
            _ => {}
        }
    }
    (ctl, gres)
}
