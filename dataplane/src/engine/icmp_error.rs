//! ICMP: errors quoting a flow's packet (translated inside and out, RFC 5508), and the
//! errors and resets the gateway itself generates.

use crate::checksum;
use crate::config::Role;
use crate::conntrack::FlowKey;
use crate::counters::DropReason;
use crate::time::Time;
use crate::wire::{be16, be32, ethernet, icmp, ipv4, proto, put16, tcp};

use super::*;

impl WorkerState {
    /// An ICMP error matching no flow directly: find the flow of the packet it quotes and
    /// translate the error (outer header and quote) the way that flow's replies go.
    pub(super) fn icmp_error(&mut self, sh: &Shared, frame: &mut FrameBuf<'_>, pkt: &Pkt, _now: Time) -> Verdict {
        let icmp_off = pkt.l3() + pkt.hl();
        let icmp_end = pkt.ip_range().end;
        let body = &frame.buf[icmp_off + icmp::HEADER_LEN..icmp_end];
        let Ok(inner) = ipv4::Packet::new_quoted(body) else {
            return Verdict::Drop(DropReason::IcmpMalformed);
        };
        let ihl = inner.header_len();
        if body.len() < ihl + 8 {
            return Verdict::Drop(DropReason::IcmpMalformed);
        }
        let (isrc, idst, iproto) = (inner.src_addr(), inner.dst_addr(), inner.protocol());
        let il4 = &body[ihl..];
        let quoted = match iproto {
            proto::TCP | proto::UDP => (be16(il4, 0), be16(il4, 2), L4::Tcp),
            proto::ICMP if icmp::is_query(il4[0]) => (be16(il4, 4), 0, L4::IcmpQuery),
            proto::GRE if il4[1] & 7 == 1 => (0, be16(il4, 6), L4::GrePptp),
            _ => (0, 0, L4::Other),
        };
        let inner_key = FlowKey { src: isrc, dst: idst, sport: quoted.0, dport: quoted.1, proto: iproto };
        let found = if quoted.2 == L4::GrePptp {
            // quoted PPTP GRE: its key is the receiver's Call ID, so no arrival key mirrors it;
            // the inspector knows which call's GRE left with that key towards that server
            // (an error from beyond the gateway) or towards that client (an error from a
            // router on the inside)
            let outward = sh.pptp.quoted_gre_flow(isrc, idst, quoted.1, true).and_then(|k| {
                let r = sh.flows.lookup(&k)?;
                // found in the quoted packet's own direction: the error travels the other way
                sh.flows.with_flow(r, &k, |f, dir| {
                    (f.keys[dir.index()], f.keys[dir.opposite().index()], f.rewrite[dir.opposite().index()])
                })
            });
            outward.or_else(|| {
                let k = sh.pptp.quoted_gre_flow(isrc, idst, quoted.1, false)?;
                let r = sh.flows.lookup(&k)?;
                // the client's own direction: the quoted packet travelled the other one
                sh.flows.with_flow(r, &k, |f, dir| {
                    (f.keys[dir.opposite().index()], f.keys[dir.index()], f.rewrite[dir.index()])
                })
            })
        } else {
            let lk = inner_key.mirror();
            sh.flows.lookup(&lk).and_then(|r| {
                sh.flows.with_flow(r, &lk, |f, dir| {
                    (f.keys[dir.opposite().index()], f.keys[dir.index()], f.rewrite[dir.index()])
                })
            })
        };
        let Some((orig_inner, kd, rw)) = found else {
            return if super::host::for_host(sh, pkt, frame.bytes()) {
                Verdict::ToHost
            } else {
                Verdict::Drop(DropReason::IcmpErrorNoFlow)
            };
        };
        if pkt.dst != kd.dst {
            // the error must go to whoever sent the quoted packet
            return Verdict::Drop(DropReason::IcmpErrorNoFlow);
        }
        if pkt.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        // rewrite the quote, keeping every checksum right (the ICMP one covers the quote)
        let icmp_buf = &mut frame.buf[icmp_off..icmp_end];
        let mut csum = be16(icmp_buf, 2);
        {
            let q = &mut icmp_buf[icmp::HEADER_LEN..];
            let l4_csum_off = match iproto {
                proto::TCP if q.len() >= ihl + 18 => Some(ihl + 16),
                proto::UDP if be16(q, ihl + 6) != 0 => Some(ihl + 6),
                proto::ICMP => Some(ihl + 2),
                _ => None,
            };
            let pseudo = matches!(iproto, proto::TCP | proto::UDP);
            let set_addr = |q: &mut [u8], off: usize, new: u32, csum: &mut u16| {
                let old = be32(q, off);
                if old == new {
                    return;
                }
                set16(q, off, (new >> 16) as u16, csum);
                set16(q, off + 2, new as u16, csum);
                let ic = checksum::adjust32(be16(q, 10), old, new);
                set16(q, 10, ic, csum);
                if let (Some(o), true) = (l4_csum_off, pseudo) {
                    let c = checksum::adjust32(be16(q, o), old, new);
                    set16(q, o, c, csum);
                }
            };
            set_addr(q, 12, orig_inner.src, &mut csum);
            set_addr(q, 16, orig_inner.dst, &mut csum);
            let set_port = |q: &mut [u8], off: usize, new: u16, csum: &mut u16| {
                let old = be16(q, off);
                if old == new {
                    return;
                }
                set16(q, off, new, csum);
                if let Some(o) = l4_csum_off {
                    let c = checksum::adjust16(be16(q, o), old, new);
                    set16(q, o, c, csum);
                }
            };
            match quoted.2 {
                L4::Tcp => {
                    set_port(q, ihl, orig_inner.sport, &mut csum);
                    set_port(q, ihl + 2, orig_inner.dport, &mut csum);
                }
                L4::IcmpQuery => set_port(q, ihl + 4, orig_inner.sport, &mut csum),
                // the Call ID the packet carried when it reached the gateway (no GRE checksum)
                L4::GrePptp => set_port(q, ihl + 6, orig_inner.dport, &mut csum),
                _ => {}
            }
        }
        put16(icmp_buf, 2, csum);
        let mut ip = ipv4::Packet::new_unchecked(&mut frame.buf[pkt.l3()..icmp_end]);
        // a direction that translates its source (inside → outside) gives the error the
        // flow's outside address, whoever sent it — the end host or a router on the inside
        // (RFC 5508 §4.2, as Linux does): an inside address must never leave, and the remote
        // end would ignore an error from an address it never talked to. Errors travelling a
        // direction that keeps its source (from routers beyond the gateway) keep theirs.
        if rw.src != kd.src && pkt.src != rw.src {
            ip.set_src_addr_fixup(rw.src);
        }
        if rw.dst != pkt.dst {
            ip.set_dst_addr_fixup(rw.dst);
        }
        ip.decrement_ttl();
        Verdict::Forward(rw.egress)
    }

    pub(super) fn take_icmp_token(&mut self, sh: &Shared, now: Time) -> bool {
        let l = &sh.config.limits;
        let per_token = 1_000_000_000 / u64::from(l.icmp_rate.max(1));
        let elapsed = now.as_nanos().saturating_sub(self.icmp_refill.as_nanos());
        let add = elapsed / per_token;
        if add > 0 {
            self.icmp_tokens = (self.icmp_tokens + add).min(u64::from(l.icmp_burst));
            self.icmp_refill = Time(self.icmp_refill.as_nanos() + add * per_token);
        }
        if now < self.icmp_refill {
            self.icmp_refill = now;
        }
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// Turns the frame into an ICMP time-exceeded for its sender (RFC 792, RFC 1812 §4.3),
    /// sent back out of the ingress interface from the gateway's address there.
    pub(super) fn time_exceeded(
        &mut self,
        sh: &Shared,
        frame: &mut FrameBuf<'_>,
        pkt: &Pkt,
        meta: RxMeta,
        now: Time,
    ) -> Verdict {
        if pkt.l4 == L4::IcmpError || !self.take_icmp_token(sh, now) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let Some(ingress) = sh.config.iface(meta.iface) else {
            return Verdict::Drop(DropReason::UnknownInterface);
        };
        let from = if ingress.role == Role::Outside { sh.outside_addr() } else { u32::from(ingress.addr) };
        const NEW_HDR: usize = ipv4::MIN_HEADER_LEN + icmp::HEADER_LEN;
        let room = frame.buf.len().saturating_sub(pkt.l3() + NEW_HDR);
        let quote = usize::from(pkt.ip_len).min(576 - NEW_HDR).min(room);
        if quote < pkt.hl() + 8 && quote < usize::from(pkt.ip_len) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        frame.buf.copy_within(pkt.l3()..pkt.l3() + quote, pkt.l3() + NEW_HDR);
        let total = NEW_HDR + quote;
        let ident = self.next_rand() as u16;
        let b = &mut frame.buf[pkt.l3()..pkt.l3() + total];
        ipv4::Packet::new_unchecked(&mut *b).emit_header(total as u16, ident, 64, proto::ICMP, from, pkt.src);
        icmp::Packet::new_unchecked(&mut b[ipv4::MIN_HEADER_LEN..]).emit(icmp::kind::TIME_EXCEEDED, 0, 0);
        ethernet::swap_addrs(&mut frame.buf[..pkt.l3()]);
        frame.len = pkt.l3() + total;
        self.counters.traffic.icmp_generated.inc();
        Verdict::Forward(meta.iface)
    }
}

/// Turns a TCP segment (IP packet `ip`, IP header `hl`, TCP header `thl` bytes) into a reset
/// without payload: RST|ACK, lengths and both checksums recomputed.
pub(super) fn to_reset(ip: &mut [u8], hl: usize, thl: usize) {
    let total = hl + thl;
    put16(ip, 2, total as u16);
    let (src, dst) = ([ip[12], ip[13], ip[14], ip[15]], [ip[16], ip[17], ip[18], ip[19]]);
    ipv4::Packet::new_unchecked(&mut ip[..total]).fill_checksum();
    let seg = &mut ip[hl..total];
    seg[13] = tcp::flags::RST | tcp::flags::ACK;
    put16(seg, 16, 0);
    let c = !checksum::fold(checksum::accumulate(seg, checksum::pseudo_header(src, dst, proto::TCP, thl as u16)));
    put16(seg, 16, c);
}

pub(super) fn set16(q: &mut [u8], off: usize, new: u16, csum: &mut u16) {
    let old = be16(q, off);
    put16(q, off, new);
    *csum = checksum::adjust16(*csum, old, new);
}
