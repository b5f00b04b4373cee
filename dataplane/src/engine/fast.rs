//! A flow hit: TCP state, counters, the flow's precomputed rewrite (the same bytes the XDP
//! fast path writes), PPTP control segments through the inspector, fragments, ESP.

use crate::alg::pptp::SegmentVerdict;
use crate::checksum;
use crate::config::IfaceId;
use crate::conntrack::{status, CsumDelta, Dir, Flow, FlowKey, FlowKind, FlowRef, Rewrite};
use crate::counters::DropReason;
use crate::frag::{FragEntry, FragKey};
use crate::time::Time;
use crate::wire::{gre, icmp, ipv4, proto, tcp};

use super::*;

/// What an established flow's packet needs once its flow is unlocked, when it was not
/// rewritten under the lock.
pub(super) enum Step {
    /// Apply this rewrite through [`WorkerState::forward`] (a first fragment, remembered there).
    Forward(Rewrite, CsumDelta),
    /// A PPTP control segment: inspect it, then apply the rewrite.
    Inspect {
        /// The direction's rewrite.
        rewrite: Rewrite,
        /// Its checksum differences.
        csum: CsumDelta,
        /// The control connection's flow.
        flow_id: u64,
        /// Sent by the PNS (the client side).
        from_pns: bool,
    },
}

impl WorkerState {
    /// The fast path. Returns `None` when the flow vanished between lookup and lock.
    pub(super) fn established(
        &mut self,
        sh: &Shared,
        frame: &mut FrameBuf<'_>,
        pkt: &Pkt,
        r: FlowRef,
        key: &FlowKey,
    ) -> Option<Verdict> {
        let (meta, now) = (RxMeta { iface: pkt.iface }, pkt.now);
        if pkt.ttl <= 1 {
            // still a transit packet of a known flow: answer like a router
            sh.flows.with_flow(r, key, |_, _| ())?;
            return Some(self.time_exceeded(sh, frame, pkt, meta, now));
        }
        // the egress comes back in a register; a packet that still needs its rewrite leaves
        // its step in `later` (a larger value read back right after the call would wait on
        // the stores that wrote it)
        let mut later = None;
        let outcome = sh.flows.with_flow_offload(
            r,
            key,
            #[inline(always)]
            |f, dir| on_hit(sh, frame, pkt, f, dir, &mut later),
        )?;
        self.counters.traffic.flow_hits.inc();
        let egress = match outcome {
            Ok(egress) => egress,
            Err(reason) => return Some(Verdict::Drop(reason)),
        };
        Some(match later {
            None => Verdict::Forward(egress),
            Some(Step::Forward(rw, csum)) => self.forward(sh, frame, pkt, &rw, csum, now),
            Some(Step::Inspect { rewrite: rw, csum, flow_id, from_pns }) => {
                match self.inspect_pptp(sh, frame, pkt, flow_id, from_pns) {
                    Ok(()) => self.forward(sh, frame, pkt, &rw, csum, now),
                    Err(v) => v,
                }
            }
        })
    }

    /// Runs a PPTP control segment through the inspector: Call IDs in its payload are
    /// rewritten in place (TCP checksum adjusted byte by byte), calls' GRE flows are created
    /// and removed. `Err` carries the verdict for a segment that must not be forwarded as is.
    pub(super) fn inspect_pptp(
        &mut self,
        sh: &Shared,
        frame: &mut FrameBuf<'_>,
        pkt: &Pkt,
        flow_id: u64,
        from_pns: bool,
    ) -> Result<(), Verdict> {
        let tcp_off = pkt.l3() + pkt.hl();
        let seg = &mut frame.buf[tcp_off..pkt.ip_range().end];
        let hl = usize::from(pkt.tcp_hl).min(seg.len());
        let (hdr, payload) = seg.split_at_mut(hl);
        self.changes.clear();
        let v = sh.pptp.on_segment(
            flow_id,
            from_pns,
            pkt.tcp_seq,
            pkt.tcp_ack,
            pkt.tcp_flags,
            payload,
            &mut self.changes,
            &sh.flows,
            pkt.now,
        );
        // the payload starts at an even offset of the segment (the TCP header is a multiple
        // of 4 bytes), so a byte's parity in the payload is its parity in the checksum
        let mut t = tcp::Packet::new_unchecked(hdr);
        let mut c = t.checksum();
        for &(i, old, new) in &self.changes {
            let (o, n) =
                if i % 2 == 0 { (u16::from(old) << 8, u16::from(new) << 8) } else { (u16::from(old), u16::from(new)) };
            c = checksum::adjust16(c, o, n);
        }
        t.set_checksum(c);
        match v {
            SegmentVerdict::Pass => Ok(()),
            SegmentVerdict::OutOfOrder => Err(Verdict::Drop(DropReason::PptpOutOfOrder)),
            SegmentVerdict::Invalid => Err(Verdict::Drop(DropReason::PptpInvalidMessage)),
            SegmentVerdict::Refused => Err(Verdict::Drop(DropReason::PptpCallRefused)),
            SegmentVerdict::Reset => {
                to_reset(&mut frame.buf[pkt.ip_range()], pkt.hl(), usize::from(pkt.tcp_hl));
                frame.len = pkt.l3() + pkt.hl() + usize::from(pkt.tcp_hl);
                Ok(())
            }
        }
    }

    /// ESP whose SPI is not (yet) a flow key. Flows not translated by SPI (between inside
    /// interfaces, or NAT off) are keyed by address pair; an inbound SPI towards the outside
    /// address is learnt by the one inside host waiting for its peer's first packet (its
    /// flow's reply key is the placeholder `(peer, outside, SPI 0)` — SPI 0 never appears
    /// on the wire — so at most one host per peer waits at a time and no packet is ever
    /// delivered to a guess).
    pub(super) fn esp_miss(&mut self, sh: &Shared, frame: &mut FrameBuf<'_>, pkt: &Pkt) -> Option<Verdict> {
        let pair = FlowKey { src: pkt.src, dst: pkt.dst, sport: 0, dport: 0, proto: proto::ESP };
        let r = sh.flows.lookup(&pair)?;
        let spi_key = flow_key(pkt);
        let pending = r.dir() == Dir::Reply
            && sh.is_nat_addr(pkt.dst)
            && sh.flows.with_flow(r, &pair, |f, _| f.kind == FlowKind::Snat).unwrap_or(false);
        if pending {
            if !sh.flows.rekey(r, &pair, spi_key) {
                return Some(Verdict::Drop(DropReason::EspNoSa));
            }
            return self.established(sh, frame, pkt, r, &spi_key);
        }
        // tracked by address pair (not translated by SPI)
        self.established(sh, frame, pkt, r, &pair)
    }

    /// Applies a rewrite, decrements the TTL, remembers a first fragment, and forwards.
    pub(super) fn forward(
        &mut self,
        sh: &Shared,
        frame: &mut FrameBuf<'_>,
        pkt: &Pkt,
        rw: &Rewrite,
        csum: CsumDelta,
        now: Time,
    ) -> Verdict {
        let ip = &mut frame.buf[pkt.ip_range()];
        apply_rewrite(ip, pkt.hl(), pkt.l4, rw, csum);
        if pkt.first_frag {
            let k = FragKey { src: pkt.src, dst: pkt.dst, ident: pkt.ident, proto: pkt.proto };
            let e = FragEntry {
                src: rw.src,
                dst: rw.dst,
                ingress: pkt.iface,
                egress: rw.egress,
                expires: now.plus(sh.config.timeouts.fragment),
            };
            if !sh.frags.insert(k, e) {
                self.counters.count_drop(DropReason::FragmentTableFull);
            }
        }
        Verdict::Forward(rw.egress)
    }

    pub(super) fn later_fragment(&mut self, sh: &Shared, frame: &mut FrameBuf<'_>, pkt: &Pkt, now: Time) -> Verdict {
        let k = FragKey { src: pkt.src, dst: pkt.dst, ident: pkt.ident, proto: pkt.proto };
        let Some(e) = sh.frags.lookup(&k, now) else {
            // by address alone: a later fragment carries no ports (the XDP program also
            // passes those whose first fragment it passed; the engine never sees them)
            return if super::host::host_address(sh, pkt.dst) {
                Verdict::ToHost
            } else {
                Verdict::Drop(DropReason::FragmentNoFlow)
            };
        };
        if e.ingress != pkt.iface {
            return Verdict::Drop(DropReason::WrongInterface);
        }
        if pkt.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let mut ip = ipv4::Packet::new_unchecked(&mut frame.buf[pkt.ip_range()]);
        if e.src != pkt.src {
            ip.set_src_addr_fixup(e.src);
        }
        if e.dst != pkt.dst {
            ip.set_dst_addr_fixup(e.dst);
        }
        ip.decrement_ttl();
        Verdict::Forward(e.egress)
    }
}

/// A flow hit under the flow's lock: the packet's direction must arrive where the other
/// leaves, it counts (TCP state included), and the common packet is rewritten here. Returns
/// the egress; a packet that still needs its rewrite (a PPTP control segment, a first
/// fragment) leaves its [`Step`] in `later`.
#[inline(always)]
fn on_hit(
    sh: &Shared,
    frame: &mut FrameBuf<'_>,
    pkt: &Pkt,
    f: &mut Flow,
    dir: Dir,
    later: &mut Option<Step>,
) -> Result<IfaceId, DropReason> {
    if f.rewrite[dir.opposite().index()].egress != pkt.iface {
        // a flow's packets arrive where its other direction leaves: anything else is spoofed
        return Err(DropReason::WrongInterface);
    }
    match f.count_packet(dir, pkt.tcp_flags, pkt.ip_len, pkt.now) {
        Err(_) => return Err(DropReason::TcpInvalid),
        Ok(true) => {
            if let Some(hosts) = &sh.hosts {
                hosts.leave_embryonic(f.inside_host());
            }
        }
        Ok(false) => {}
    }
    let d = dir.index();
    if f.status & status::ALG_PPTP != 0 {
        *later =
            Some(Step::Inspect { rewrite: f.rewrite[d], csum: f.csum(d), flow_id: f.id, from_pns: dir == Dir::Orig });
        return Ok(f.rewrite[d].egress);
    }
    if pkt.first_frag {
        *later = Some(Step::Forward(f.rewrite[d], f.csum(d)));
        return Ok(f.rewrite[d].egress);
    }
    let ip = &mut frame.buf[pkt.ip_range()];
    apply_rewrite(ip, pkt.hl(), pkt.l4, &f.rewrite[d], f.csum(d));
    Ok(f.rewrite[d].egress)
}

/// Forwards an IP packet (header length `hl`) that arrived with a direction's key: writes
/// the direction's rewrite, decrements the TTL and adjusts every checksum by the direction's
/// precomputed differences — one addition per checksum, exactly what the XDP fast path does
/// to the same packet from the same data.
pub(super) fn apply_rewrite(ip: &mut [u8], hl: usize, l4: L4, rw: &Rewrite, d: CsumDelta) {
    let l4d = checksum::Delta::from_raw(d.l4);
    let seg = &mut ip[hl..];
    match l4 {
        L4::Tcp => tcp::Packet::new_unchecked(seg).rewrite_ports(rw.sport, rw.dport, l4d),
        L4::Udp => udp_view(seg).rewrite_ports(rw.sport, rw.dport, l4d),
        L4::IcmpQuery => icmp::Packet::new_unchecked(seg).rewrite_ident(rw.sport, l4d),
        L4::GrePptp => gre::Packet::new_unchecked(seg).set_call_id(rw.dport),
        L4::Esp | L4::IcmpError | L4::IcmpOther | L4::Other => {}
    }
    ipv4::Packet::new_unchecked(ip).rewrite_forward(rw.src, rw.dst, checksum::Delta::from_raw(d.ip));
}
