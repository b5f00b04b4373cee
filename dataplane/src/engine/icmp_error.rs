//! ICMP: errors quoting a flow's packet (translated inside and out, RFC 5508), and the
//! errors and resets the gateway itself generates.

use crate::config::Role;
use crate::conntrack::FlowKey;
use crate::counters::DropReason;
use crate::time::Time;
use crate::wire::quote::{Field, Quote};
use crate::wire::{ethernet, gre, icmp, ipv4, proto, tcp, udp};

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
        // 8 quoted bytes are there (checked above): TCP's ports sit where UDP's do, an ICMP
        // query's identifier and a GRE v1 key (Call ID) within them
        let quoted = match iproto {
            proto::TCP | proto::UDP => {
                let u = udp::Packet::new_unchecked(il4);
                (u.src_port(), u.dst_port(), L4::Tcp)
            }
            proto::ICMP => match icmp::Packet::new_checked(il4) {
                Ok(i) if icmp::is_query(i.msg_type()) => (i.ident(), 0, L4::IcmpQuery),
                _ => (0, 0, L4::Other),
            },
            proto::GRE => match gre::Packet::new_unchecked(il4) {
                g if g.version() == 1 => (0, g.call_id(), L4::GrePptp),
                _ => (0, 0, L4::Other),
            },
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
        let csum = icmp::Packet::new_unchecked(&*icmp_buf).checksum();
        let Ok(mut q) = Quote::new(&mut icmp_buf[icmp::HEADER_LEN..], csum) else {
            return Verdict::Drop(DropReason::IcmpMalformed);
        };
        q.set_src_addr(orig_inner.src);
        q.set_dst_addr(orig_inner.dst);
        match quoted.2 {
            L4::Tcp => {
                q.set(Field::SrcPort, orig_inner.sport);
                q.set(Field::DstPort, orig_inner.dport);
            }
            L4::IcmpQuery => q.set(Field::IcmpIdent, orig_inner.sport),
            // the Call ID the packet carried when it reached the gateway (no GRE checksum)
            L4::GrePptp => q.set(Field::GreCallId, orig_inner.dport),
            _ => {}
        }
        let csum = q.icmp_checksum();
        icmp::Packet::new_unchecked(&mut *icmp_buf).set_checksum(csum);
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
    let mut v = ipv4::Packet::new_unchecked(&mut ip[..total]);
    v.set_total_len(total as u16);
    v.fill_checksum();
    let (src, dst) = (v.src_addr(), v.dst_addr());
    let mut t = tcp::Packet::new_unchecked(v.payload_mut());
    t.set_flags(tcp::flags::RST | tcp::flags::ACK);
    t.fill_checksum(src, dst);
}
