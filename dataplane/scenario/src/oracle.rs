//! What every forwarded frame must satisfy, and the memory of what left (so that replies
//! and ICMP errors quote real flows).

use std::collections::HashMap;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use xgw_dataplane::IfaceId;

use crate::frames::{echo_reply, esp, fragments, icmp_error, packet, tagged, Proto};
use crate::pptp::{Conv, UP};
use crate::{Step, FORWARD_HOST, INSIDE, OUTSIDE, OUTSIDE_ADDR};

/// A broken promise, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the step that made a frame expects of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing in particular.
    Nothing,
    /// If forwarded: inside, to this host and port (identifier for ICMP).
    DeliverTo([u8; 4], u16),
    /// An ICMP error about this inside host's packet: if forwarded, to it.
    ErrorTo([u8; 4]),
    /// A byte was flipped: checksums may not verify.
    Corrupted,
    /// A PAC's Outgoing-Call-Reply: if forwarded, to this host and port, with the Peer's
    /// Call ID restored to the PNS's own.
    OcrpTo {
        /// The PNS.
        host: [u8; 4],
        /// Its control connection's port.
        port: u16,
        /// Its Call ID.
        call_id: u16,
    },
    /// GRE from a PAC: if forwarded, only to this call's PNS with its own Call ID as key.
    GreTo([u8; 4], u16),
    /// GRE from a PNS: if forwarded, out with the PAC's key unchanged.
    GreOut(u16),
    /// Must not be forwarded at all (GRE of no call, ESP nobody inside sent).
    NotForwarded,
    /// ESP from this far host: if forwarded, only to an inside host that sent it ESP.
    EspFrom([u8; 4]),
}

/// (protocol, outside address, outside port, far address, far port).
type OutsideTuple = (u8, [u8; 4], u16, [u8; 4], u16);
/// An address and a port (or ICMP identifier).
type Endpoint = ([u8; 4], u16);

/// The key (Call ID) of an enhanced GRE header.
fn gre_key(g: &[u8]) -> Option<u16> {
    (g.len() >= 8 && g[0] & 0x20 != 0 && g[1] & 0x07 == 1).then(|| u16::from_be_bytes([g[6], g[7]]))
}

/// A packet seen leaving on the outside, with the inside flow it came from.
#[derive(Debug, Clone)]
struct Left {
    proto: Proto,
    /// Outside source address, port (identifier).
    src: [u8; 4],
    sport: u16,
    /// Far end.
    dst: [u8; 4],
    dport: u16,
    /// The inside host and port it came from.
    inside: ([u8; 4], u16),
    /// The IPv4 packet as it left.
    ip: Vec<u8>,
}

/// The memory of a run.
#[derive(Debug, Default)]
pub struct Oracle {
    left: Vec<Left>,
    inputs: Vec<Vec<u8>>,
    /// Live outside tuples → the inside (host, port) that holds them.
    tuples: HashMap<OutsideTuple, Endpoint>,
    /// PPTP conversations.
    convs: Vec<Conv>,
    /// Far hosts → the inside hosts that sent them ESP.
    esp_peers: HashMap<[u8; 4], Vec<[u8; 4]>>,
}

fn inside_host(n: u8) -> [u8; 4] {
    [10, 0, 0, 2 + n % 8]
}

fn far_host(n: u8) -> [u8; 4] {
    [198, 51, 100, 1 + n % 4]
}

fn is_inside(a: [u8; 4]) -> bool {
    a[..3] == [10, 0, 0]
}

fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp(_) => 6,
        Proto::Udp => 17,
        Proto::Echo => 1,
    }
}

impl Oracle {
    /// A control-connection segment of a conversation left: learn its translation, and
    /// check that no two live calls towards one server hold one translated Call ID.
    fn learn_pptp(&mut self, input: &[u8], sent: &SlicedPacket<'_>) -> Result<(), Violation> {
        let Ok(inp) = SlicedPacket::from_ethernet(input) else { return Ok(()) };
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t)), Some(TransportSlice::Tcp(out))) =
            (&inp.net, &inp.transport, &sent.transport)
        else {
            return Ok(());
        };
        let (src, dst) = (ip.header().source(), ip.header().destination());
        let Some(i) = self.convs.iter().position(|c| {
            c.host == src && c.sport == t.source_port() && c.server == dst && t.destination_port() == 1723
        }) else {
            return Ok(());
        };
        self.convs[i].learn(out.source_port(), out.sequence_number(), out.payload());
        let c = &self.convs[i];
        if let Some(x) = c.xlat_id() {
            let twin = |(j, o): &(usize, &Conv)| *j != i && !o.stale && o.server == c.server && o.xlat_id() == Some(x);
            if let Some(o) = self.convs.iter().enumerate().find(twin) {
                return Err(Violation(format!(
                    "two PPTP calls towards {:?} hold translated Call ID {x}: {:?}:{} and {:?}:{}",
                    c.server, c.host, c.sport, o.1.host, o.1.sport
                )));
            }
        }
        Ok(())
    }

    /// The frames a step sends, where they arrive and what is expected of them; none for
    /// steps that send nothing (or have nothing to pick from). `Wait` moves `now`.
    pub fn frames_for(&mut self, step: &Step, now: &mut u64) -> Vec<(Vec<u8>, IfaceId, Expect)> {
        let mut out = match self.more_frames(step) {
            Some(v) => v,
            None => self.frame_for(step, now).into_iter().collect(),
        };
        out.retain(|(f, _, _)| !f.is_empty());
        for (f, _, _) in &out {
            if self.inputs.len() < 64 {
                self.inputs.push(f.clone());
            }
        }
        out
    }

    /// The steps of PPTP, ESP, fragments and VLAN tags (`None` for the others).
    fn more_frames(&mut self, step: &Step) -> Option<Vec<(Vec<u8>, IfaceId, Expect)>> {
        let conv = |convs: &[Conv], n: u8| {
            (!convs.is_empty()).then(|| usize::from(n) % convs.len()).filter(|&i| !convs[i].stale)
        };
        let v = match *step {
            Step::PptpOpen { host, far, call_id, split, coalesce } => {
                if self.convs.len() >= 16 {
                    return Some(Vec::new());
                }
                let n = self.convs.len();
                let mut c = Conv::new(inside_host(host), far_host(far), call_id, split, coalesce, n);
                let first = c.next_frame();
                self.convs.push(c);
                first.into_iter().collect()
            }
            Step::PptpNext { conv: n } => match conv(&self.convs, n) {
                Some(i) => self.convs[i].next_frame().into_iter().collect(),
                None => Vec::new(),
            },
            Step::Gre { conv: n, from_server, forge } => {
                let Some(i) = conv(&self.convs, n) else { return Some(Vec::new()) };
                let (Some(xlat), true) = (self.convs[i].xlat_id(), self.convs[i].stage >= UP) else {
                    return Some(Vec::new());
                };
                if !from_server {
                    let key = self.convs[i].pac_id;
                    vec![(self.convs[i].gre_from_client(), INSIDE, Expect::GreOut(key))]
                } else {
                    let key = xlat ^ forge;
                    let server = self.convs[i].server;
                    // whose call the key names, if anyone's
                    // whose call the key names: a live conversation's; if only calls from before
                    // a pause hold it, anyone's of them may still be live
                    let holds = |c: &&Conv| c.server == server && c.xlat_id() == Some(key);
                    let e = match self.convs.iter().filter(holds).find(|c| !c.stale) {
                        Some(c) => Expect::GreTo(c.host, c.call_id),
                        None if self.convs.iter().any(|c| holds(&c)) => Expect::Nothing,
                        None => Expect::NotForwarded,
                    };
                    vec![(self.convs[i].gre_from_server(key), OUTSIDE, e)]
                }
            }
            Step::Esp { host, far, spi, inbound } => {
                let (h, f) = (inside_host(host), far_host(far));
                if inbound {
                    vec![(esp(f, OUTSIDE_ADDR, spi), OUTSIDE, Expect::EspFrom(f))]
                } else {
                    vec![(esp(h, f, spi), INSIDE, Expect::Nothing)]
                }
            }
            Step::Fragments { host, far, sport, dport, at, reverse } => {
                let whole = packet(inside_host(host), far_host(far), Proto::Udp, sport, dport, &[0x42; 40]);
                let mut parts = fragments(&whole, at);
                if reverse {
                    parts.reverse();
                }
                parts.into_iter().map(|f| (f, INSIDE, Expect::Nothing)).collect()
            }
            Step::Tagged { host, far, sport, vid } => {
                let f = packet(inside_host(host), far_host(far), Proto::Udp, sport, 53, b"tagged");
                vec![(tagged(&f, vid), INSIDE, Expect::Nothing)]
            }
            _ => return None,
        };
        Some(v)
    }

    fn frame_for(&mut self, step: &Step, now: &mut u64) -> Option<(Vec<u8>, IfaceId, Expect)> {
        let (frame, ingress, expect) = match *step {
            Step::Out { host, far, proto, sport, dport } => {
                (packet(inside_host(host), far_host(far), proto, sport, dport, b"hello"), INSIDE, Expect::Nothing)
            }
            Step::Reply { pick } => {
                if self.left.is_empty() {
                    return None;
                }
                let l = self.left[usize::from(pick) % self.left.len()].clone();
                let f = match l.proto {
                    Proto::Tcp(flags) => {
                        let reply = if flags & 0x02 != 0 && flags & 0x10 == 0 { 0x12 } else { 0x10 };
                        packet(l.dst, l.src, Proto::Tcp(reply), l.dport, l.sport, b"")
                    }
                    Proto::Udp => packet(l.dst, l.src, Proto::Udp, l.dport, l.sport, b"answer"),
                    Proto::Echo => echo_reply(l.dst, l.src, l.sport),
                };
                (f, OUTSIDE, Expect::DeliverTo(l.inside.0, l.inside.1))
            }
            Step::Unsolicited { far, proto, sport, dport } => {
                (packet(far_host(far), OUTSIDE_ADDR, proto, sport, dport, b"knock"), OUTSIDE, Expect::Nothing)
            }
            Step::ToForward { far, sport } => {
                let f = packet(far_host(far), OUTSIDE_ADDR, Proto::Tcp(0x02), sport, 2222, b"");
                (f, OUTSIDE, Expect::DeliverTo(FORWARD_HOST, 22))
            }
            Step::ErrorBeyond { pick, kind } => {
                if self.left.is_empty() {
                    return None;
                }
                let l = self.left[usize::from(pick) % self.left.len()].clone();
                let quote_len = (l.ip.len()).min(20 + 8 + usize::from(kind % 4) * 8);
                let f = icmp_error([198, 51, 100, 254], l.src, kind, &l.ip[..quote_len]);
                (f, OUTSIDE, Expect::ErrorTo(l.inside.0))
            }
            Step::Wait { secs } => {
                *now += u64::from(secs);
                // flows may have expired: what was live may now belong to someone else
                self.tuples.clear();
                self.left.clear();
                // calls may have ended and their IDs gone back: the conversations stop, but
                // are remembered (the engine may still hold their calls)
                for c in &mut self.convs {
                    c.stale = true;
                }
                return None;
            }
            Step::PptpOpen { .. }
            | Step::PptpNext { .. }
            | Step::Gre { .. }
            | Step::Esp { .. }
            | Step::Fragments { .. }
            | Step::Tagged { .. } => return None,
            Step::Corrupt { pick, at, xor } => {
                if self.inputs.is_empty() || xor == 0 {
                    return None;
                }
                let mut f = self.inputs[usize::from(pick) % self.inputs.len()].clone();
                let i = usize::from(at) % f.len();
                f[i] ^= xor;
                let ingress = if is_inside(f.get(26..30).and_then(|s| s.try_into().ok()).unwrap_or([0; 4])) {
                    INSIDE
                } else {
                    OUTSIDE
                };
                (f, ingress, Expect::Corrupted)
            }
        };
        Some((frame, ingress, expect))
    }

    /// Checks a forwarded frame (`sent`, leaving by `egress`) made from `input`.
    pub fn check_forwarded(
        &mut self,
        input: &[u8],
        _ingress: IfaceId,
        egress: IfaceId,
        sent: &[u8],
        expect: &Expect,
    ) -> Result<(), Violation> {
        let bad = |what: String| Err(Violation(format!("{what}\n  input: {input:02x?}\n  sent:  {sent:02x?}")));
        let p = match SlicedPacket::from_ethernet(sent) {
            Ok(p) => p,
            Err(e) => return bad(format!("a forwarded frame that does not parse: {e}")),
        };
        let Some(NetSlice::Ipv4(ip)) = &p.net else { return bad("a forwarded frame that is not IPv4".into()) };
        let h = ip.header().to_header();
        let (src, dst) = (h.source, h.destination);
        if *expect != Expect::Corrupted {
            if h.calc_header_checksum() != h.header_checksum {
                return bad("the forwarded IPv4 header checksum does not verify".into());
            }
            let l4_ok = match &p.transport {
                Some(TransportSlice::Tcp(t)) => {
                    t.calc_checksum_ipv4(h.source, h.destination).ok() == Some(t.checksum())
                }
                Some(TransportSlice::Udp(u)) => {
                    u.checksum() == 0 || u.to_header().calc_checksum_ipv4(&h, u.payload()).ok() == Some(u.checksum())
                }
                Some(TransportSlice::Icmpv4(i)) => {
                    let raw = i.slice();
                    xgw_dataplane::checksum::compute(raw) == 0
                }
                _ => true,
            };
            if !l4_ok {
                return bad("the forwarded TCP/UDP/ICMP checksum does not verify".into());
            }
        }
        let icmp_quote = match &p.transport {
            Some(TransportSlice::Icmpv4(i)) if matches!(i.type_u8(), 3 | 11) => Some(i.payload().to_vec()),
            _ => None,
        };
        if egress == OUTSIDE {
            if is_inside(src) || is_inside(dst) {
                return bad(format!("an inside address left on the outside: {src:?} -> {dst:?}"));
            }
            if let Some(q) = &icmp_quote {
                if q.len() >= 20 && (is_inside([q[12], q[13], q[14], q[15]]) || is_inside([q[16], q[17], q[18], q[19]]))
                {
                    return bad("an ICMP error left on the outside quoting an inside address".into());
                }
            }
        } else if egress == INSIDE && !is_inside(dst) {
            return bad(format!("a frame sent inside to {dst:?}"));
        }
        match *expect {
            Expect::DeliverTo(host, port) => {
                let got_port = match &p.transport {
                    Some(TransportSlice::Tcp(t)) => t.destination_port(),
                    Some(TransportSlice::Udp(u)) => u.destination_port(),
                    Some(TransportSlice::Icmpv4(i)) => match i.icmp_type() {
                        etherparse::Icmpv4Type::EchoReply(e) => e.id,
                        _ => port,
                    },
                    _ => port,
                };
                if egress != INSIDE || dst != host || got_port != port {
                    return bad(format!("a reply for {host:?}:{port} went to {dst:?}:{got_port} on {egress:?}"));
                }
            }
            Expect::ErrorTo(host) if egress != INSIDE || dst != host => {
                return bad(format!("an ICMP error about {host:?}'s packet went to {dst:?} on {egress:?}"));
            }
            Expect::OcrpTo { host, port, call_id } => {
                let Some(TransportSlice::Tcp(t)) = &p.transport else { return bad("an OCRP that is not TCP".into()) };
                if egress != INSIDE || dst != host || t.destination_port() != port {
                    return bad(format!("a PAC's reply for {host:?}:{port} went to {dst:?} on {egress:?}"));
                }
                let m = t.payload();
                if m.len() >= 16 && m[8..10] == [0, 8] && u16::from_be_bytes([m[14], m[15]]) != call_id {
                    return bad(format!("an OCRP reached the PNS without its Call ID {call_id} restored"));
                }
            }
            Expect::GreTo(host, key) => {
                let got = gre_key(ip.payload().payload);
                if egress != INSIDE || dst != host || got != Some(key) {
                    return bad(format!("GRE for {host:?}'s call {key} went to {dst:?} key {got:?} on {egress:?}"));
                }
            }
            Expect::GreOut(key) => {
                let got = gre_key(ip.payload().payload);
                if egress != OUTSIDE || got != Some(key) {
                    return bad(format!("a PNS's GRE with key {key} left as {got:?} on {egress:?}"));
                }
            }
            Expect::NotForwarded => return bad("a frame no flow or call admits was forwarded".into()),
            Expect::EspFrom(far) if egress != INSIDE || !self.esp_peers.get(&far).is_some_and(|v| v.contains(&dst)) => {
                return bad(format!("ESP from {far:?} went to {dst:?}, which never sent it ESP"));
            }
            _ => {}
        }
        if egress == OUTSIDE && *expect != Expect::Corrupted {
            self.learn_pptp(input, &p)?;
        }
        // ESP that left from inside: its far end may answer that inside host
        if egress == OUTSIDE && h.protocol.0 == 50 && input.len() >= 34 {
            let (isrc, idst) =
                ([input[26], input[27], input[28], input[29]], [input[30], input[31], input[32], input[33]]);
            if is_inside(isrc) {
                let peers = self.esp_peers.entry(idst).or_default();
                if !peers.contains(&isrc) {
                    peers.push(isrc);
                }
            }
        }
        // remember what left from inside, and check that no outside tuple has two owners
        let in_p = SlicedPacket::from_ethernet(input).ok();
        let inside_src = in_p.as_ref().and_then(|p| match &p.net {
            Some(NetSlice::Ipv4(ip)) => Some(ip.header().source()),
            _ => None,
        });
        if egress == OUTSIDE && inside_src.is_some_and(is_inside) && icmp_quote.is_none() {
            let ports = |t: &Option<TransportSlice<'_>>| match t {
                Some(TransportSlice::Tcp(t)) => Some((
                    Proto::Tcp(if t.syn() { 0x02 } else { 0 } | if t.ack() { 0x10 } else { 0 }),
                    t.source_port(),
                    t.destination_port(),
                )),
                Some(TransportSlice::Udp(u)) => Some((Proto::Udp, u.source_port(), u.destination_port())),
                Some(TransportSlice::Icmpv4(i)) => match i.icmp_type() {
                    etherparse::Icmpv4Type::EchoRequest(e) => Some((Proto::Echo, e.id, 0)),
                    _ => None,
                },
                _ => None,
            };
            let inner = in_p.as_ref().and_then(|p| ports(&p.transport));
            if let (Some((proto, sport, dport)), Some((_, isport, _)), Some(isrc)) =
                (ports(&p.transport), inner, inside_src)
            {
                let key = (proto_num(proto), src, sport, dst, dport);
                let owner = (isrc, isport);
                match self.tuples.get(&key) {
                    Some(o) if *o != owner => {
                        return bad(format!("outside tuple {key:?} holds two inside flows: {o:?} and {owner:?}"))
                    }
                    _ => {
                        self.tuples.insert(key, owner);
                    }
                }
                if self.left.len() < 256 {
                    let ipb = sent.get(14..).unwrap_or(&[]).to_vec();
                    self.left.push(Left { proto, src, sport, dst, dport, inside: owner, ip: ipb });
                }
            }
        }
        Ok(())
    }
}
