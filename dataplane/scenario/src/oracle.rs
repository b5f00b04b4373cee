//! What every forwarded frame must satisfy, and the memory of what left (so that replies
//! and ICMP errors quote real flows).

use std::collections::HashMap;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use xgw_dataplane::IfaceId;

use crate::frames::{echo_reply, icmp_error, packet, Proto};
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
}

/// (protocol, outside address, outside port, far address, far port).
type OutsideTuple = (u8, [u8; 4], u16, [u8; 4], u16);
/// An address and a port (or ICMP identifier).
type Endpoint = ([u8; 4], u16);

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
    /// The frame a step sends, where it arrives and what is expected of it; `None` for steps
    /// that send nothing (or have nothing to pick from). `Wait` moves `now`.
    pub fn frame_for(&mut self, step: &Step, now: &mut u64) -> Option<(Vec<u8>, IfaceId, Expect)> {
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
                return None;
            }
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
        if frame.is_empty() {
            return None;
        }
        if self.inputs.len() < 64 {
            self.inputs.push(frame.clone());
        }
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
            _ => {}
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
