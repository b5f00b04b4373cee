//! A flow miss: the policy's decision, limits, the translation's shape (PAT, forward,
//! hairpin, routed) and the flow's insertion.

use crate::alg::pptp::{self};
use crate::config::{EngineConfig, IfaceConfig, IfaceId, Role};
use crate::conntrack::tcp::{TcpEvent, TcpState};
use crate::conntrack::{status, Flow, FlowKey, FlowRef, InsertError, L4State};
use crate::counters::DropReason;
use crate::nat::blocks::{BlockPorts, PortBlocks, Refusal};
use crate::nat::plan::Shape;
use crate::wire::{icmp, proto, tcp};

use super::*;

/// Logs an access-list deny: an ASA 106023 line or structured fields.
pub(super) fn log_deny(
    shared: &Shared,
    cfg: &EngineConfig,
    ingress: &IfaceConfig,
    egress: Option<IfaceId>,
    pkt: &Pkt,
    rule: u32,
) {
    let (src, dst) = (std::net::Ipv4Addr::from(pkt.src), std::net::Ipv4Addr::from(pkt.dst));
    if shared.asa_log.load(std::sync::atomic::Ordering::Relaxed) {
        let egress_name = egress.and_then(|e| cfg.iface(e)).map_or("?", |i| i.name.as_str());
        let list = shared.policy.load().list_of(rule).unwrap_or_else(|| "implicit".into());
        tracing::warn!(
            "%ASA-4-106023: Deny {} src {}:{src}/{} dst {egress_name}:{dst}/{} by access-group \"{list}\" [0x{rule:08x}, 0x0]",
            proto::name(pkt.proto),
            ingress.name,
            pkt.sport,
            pkt.dport,
        );
    } else {
        tracing::info!(
            rule,
            proto = pkt.proto,
            src = %src,
            sport = pkt.sport,
            dst = %dst,
            dport = pkt.dport,
            ingress = %ingress.name,
            "denied by access-list"
        );
    }
}

impl WorkerState {
    /// The slow path: policy, translation choice, insertion.
    pub(super) fn new_flow(
        &mut self,
        sh: &Shared,
        frame: &mut FrameBuf<'_>,
        pkt: &Pkt,
        key: &FlowKey,
        forward: Option<crate::config::PortForward>,
    ) -> Verdict {
        let (meta, now) = (RxMeta { iface: pkt.iface }, pkt.now);
        let shared = sh;
        let cfg = &shared.config;
        let Some(ingress) = cfg.iface(meta.iface) else {
            return Verdict::Drop(DropReason::UnknownInterface);
        };
        if pkt.l4 == L4::IcmpOther {
            // router solicitations, timestamps without ids, ...: not forwarded
            return Verdict::Drop(DropReason::UnsolicitedInbound);
        }
        let l4state = match pkt.l4 {
            L4::Tcp => {
                let ev = TcpEvent::from_flags(pkt.tcp_flags);
                match ev {
                    TcpEvent::Syn => L4State::Tcp(TcpState::SynSent),
                    TcpEvent::Ack if cfg.tcp_pickup && ingress.role == Role::Inside => {
                        L4State::Tcp(TcpState::Established)
                    }
                    _ => return Verdict::Drop(DropReason::TcpNewNotSyn),
                }
            }
            L4::Udp => L4State::Udp,
            L4::IcmpQuery => {
                if pkt.icmp_type == icmp::kind::ECHO_REPLY || pkt.icmp_type == icmp::kind::TIMESTAMP_REPLY {
                    // a reply creates nothing
                    return Verdict::Drop(if ingress.role == Role::Outside {
                        DropReason::UnsolicitedInbound
                    } else {
                        DropReason::IcmpErrorNoFlow
                    });
                }
                L4State::Icmp
            }
            _ => L4State::Other,
        };
        // access lists name real addresses (the forward's inside host, like ASA 8.3+)
        let (real_dst, real_dport, egress) = match forward {
            Some(fw) => (u32::from(fw.inside_addr), fw.inside_port, cfg.inside_for(u32::from(fw.inside_addr))),
            None => (pkt.dst, pkt.dport, Some(cfg.inside_for(pkt.dst).unwrap_or(shared.outside))),
        };
        let nf = NewFlow {
            ingress: meta.iface,
            proto: pkt.proto,
            src: pkt.src,
            dst: real_dst,
            sport: pkt.sport,
            dport: real_dport,
            icmp: (pkt.proto == proto::ICMP).then_some((pkt.icmp_type, pkt.icmp_code)),
            egress,
        };
        let rule = match shared.policy.load().check(&nf) {
            Decision::Permit { rule } => rule,
            Decision::Deny { rule } => {
                if self.take_log_token(now) {
                    log_deny(shared, cfg, ingress, egress, pkt, rule);
                }
                return Verdict::Drop(DropReason::AclDenied);
            }
        };
        // per inside host limits
        let host = match forward {
            Some(fw) if ingress.role == Role::Outside => Some(u32::from(fw.inside_addr)),
            _ if ingress.role == Role::Inside => Some(pkt.src),
            _ => None,
        };
        let embryonic = l4state == L4State::Tcp(TcpState::SynSent);
        let counted = host.filter(|_| shared.hosts.is_some());
        if let (Some(h), Some(hosts)) = (counted, &shared.hosts) {
            if !hosts.admit(h, embryonic, &cfg.limits) {
                // a refused SYN: the XDP program may hold this side's SYNs for a while
                if embryonic && shared.guard.connected() && hosts.tell_guard(h, now) {
                    use xgw_ebpf_common::{guard, GuardKey};
                    let key = if forward.is_some() && ingress.role == Role::Outside {
                        GuardKey { addr: pkt.dst, port: pkt.dport, side: guard::FORWARDED_PORT, pad: 0 }
                    } else {
                        GuardKey { addr: h, port: 0, side: guard::INSIDE_SOURCE, pad: 0 }
                    };
                    shared.guard.push(super::GuardNotice { key, host: h });
                }
                return Verdict::Drop(DropReason::ConnLimit);
            }
        }
        let outside = (shared.outside, shared.outside_addr());
        let seed = self.next_rand();
        // a PPTP control connection: the inspector follows it
        let alg = if pkt.l4 == L4::Tcp
            && cfg.pptp.inspects(meta.iface)
            && (key.dport == pptp::PORT || forward.is_some_and(|fw| fw.inside_port == pptp::PORT))
        {
            status::ALG_PPTP
        } else {
            0
        };
        // ESP that is not translated by SPI (between inside interfaces, NAT off, towards a
        // forward) is tracked by address pair: its SAs' SPIs need no learning
        let by_pair = pkt.l4 == L4::Esp
            && (forward.is_some()
                || cfg.inside_for(pkt.dst).is_some()
                || !cfg.nat.enabled
                || cfg.nat.is_exempt(pkt.src, pkt.dst));
        let k = if by_pair { FlowKey { sport: 0, dport: 0, ..*key } } else { *key };
        let key = &k;

        // the translation's shape: which reply keys it may take, which rewrites follow
        let shape = if let Some(fw) = forward {
            let host = u32::from(fw.inside_addr);
            let Some(host_if) = cfg.inside_for(host) else {
                return Verdict::Drop(DropReason::UnsolicitedInbound);
            };
            if ingress.role == Role::Outside {
                Shape::Dnat { host, port: fw.inside_port, host_if, outside: outside.1 }
            } else {
                Shape::Hairpin { host, port: fw.inside_port, host_if, outside: outside.1 }
            }
        } else if let Some(dst_if) = cfg.inside_for(pkt.dst) {
            // between inside interfaces: tracked, not translated
            Shape::Routed { egress: dst_if }
        } else if !cfg.nat.enabled || cfg.nat.is_exempt(pkt.src, pkt.dst) {
            // NAT off, or exempt (ASA `nat 0`): routed untranslated
            Shape::Routed { egress: outside.0 }
        } else {
            if pkt.proto == proto::AH {
                return Verdict::Drop(DropReason::AhNotTranslatable);
            }
            // paired pooling (RFC 4787 REQ-2): an inside host always gets the same address
            let addr = shared.nat_addr_for(pkt.src);
            if addr == 0 {
                return Verdict::Drop(DropReason::NoOutsideAddress);
            }
            Shape::Snat { addr, egress: outside.0, icmp_query: pkt.l4 == L4::IcmpQuery, esp: pkt.l4 == L4::Esp }
        };
        // a host service's port on the outside address is the box's (the XDP program passes
        // it to the kernel by port alone): never a translation's
        let services = &cfg.host_services;
        let make = |r: FlowKey| {
            let mut f = Flow::new([k, r], shape.rewrites(&k, &r, meta.iface), l4state, shape.kind(), now);
            f.rule = rule;
            f.status |= alg;
            f
        };
        let result = match (&shared.blocks, shape) {
            (Some(blocks), Shape::Snat { addr, esp: false, .. })
                if matches!(pkt.l4, L4::Tcp | L4::Udp | L4::IcmpQuery) =>
            {
                match insert_in_blocks(shared, blocks, &k, &shape, addr, seed, &make, now) {
                    Ok(r) => r,
                    Err(reason) => return Verdict::Drop(reason),
                }
            }
            _ => {
                let cands = shape
                    .ports(&k, &cfg.nat, seed)
                    .filter(|&p| !(matches!(k.proto, 6 | 17) && services.contains(&(k.proto, p))))
                    .map(|p| shape.reply_key(&k, p));
                shared.flows.insert(k, cands, make, now)
            }
        };
        match result {
            Ok((r, flow)) => {
                self.counters.traffic.flows_created.inc();
                if let (Some(h), Some(hosts)) = (counted, &sh.hosts) {
                    hosts.add(h, embryonic);
                    let bits = status::HOST_COUNTED | if embryonic { status::EMBRYONIC } else { 0 };
                    sh.flows.with_flow(r, key, |f, _| f.status |= bits);
                }
                if flow.status & status::ALG_PPTP != 0 {
                    let syn = (pkt.tcp_flags & tcp::flags::SYN != 0).then_some(pkt.tcp_seq);
                    sh.pptp.open_session(&flow, syn, now);
                }
                // count the first packet and apply its rewrite through the normal path
                match self.established(sh, frame, pkt, r, key) {
                    Some(v) => v,
                    None => Verdict::Drop(DropReason::TableFull),
                }
            }
            Err(InsertError::Exists(r)) => match self.established(sh, frame, pkt, r, key) {
                Some(v) => v,
                None => Verdict::Drop(DropReason::TableFull),
            },
            Err(InsertError::Full) => Verdict::Drop(DropReason::TableFull),
            Err(InsertError::NoReplyKey) => Verdict::Drop(match pkt.l4 {
                L4::Tcp | L4::Udp | L4::IcmpQuery => DropReason::NatPortsExhausted,
                _ => DropReason::NatPeerTaken,
            }),
        }
    }
}

/// Inserts a translated flow whose outside port must lie in its host's port blocks: tries
/// the blocks the host holds, and once more with another block when they are all taken
/// towards this destination. `Err` is the drop reason when the host may not have another.
#[allow(clippy::too_many_arguments, reason = "the new-flow path's state, passed down once")]
fn insert_in_blocks(
    sh: &Shared,
    blocks: &PortBlocks,
    k: &FlowKey,
    shape: &Shape,
    addr: u32,
    seed: u32,
    make: &impl Fn(FlowKey) -> Flow,
    now: Time,
) -> Result<Result<(FlowRef, Flow), InsertError>, DropReason> {
    let cfg = sh.config();
    let refused = |r: Refusal| match r {
        Refusal::Quota => DropReason::NatBlockQuota,
        Refusal::Exhausted => DropReason::NatBlocksExhausted,
    };
    let mut held = blocks.held(k.src, addr, now).map_err(refused)?;
    loop {
        let cands = BlockPorts::new(held, blocks.layout().size, k.sport, &cfg.nat, seed)
            .filter(|&p| !(matches!(k.proto, 6 | 17) && cfg.host_services.contains(&(k.proto, p))))
            .map(|p| shape.reply_key(k, p));
        match sh.flows.insert(*k, cands, make, now) {
            Err(InsertError::NoReplyKey) => held = blocks.grow(k.src, addr, now).map_err(refused)?,
            Ok((r, f)) => {
                if let Some(port) = block_port(&f) {
                    blocks.flow_added(k.src, port);
                }
                return Ok(Ok((r, f)));
            }
            other => return Ok(other),
        }
    }
}

/// An unsolicited packet to the outside address or a pool address was dropped: when it is a
/// pure TCP SYN (a scan or a flood of the address), the XDP program's new-flow guard may
/// hold that address's SYNs to ports that are not forwarded for a while (at most one notice
/// per address and half hold).
pub(super) fn hold_unsolicited(sh: &Shared, pkt: &Pkt) {
    use xgw_ebpf_common::{guard, GuardKey};
    // SYN without ACK, RST or FIN: what the XDP program holds
    if pkt.l4 != L4::Tcp || pkt.tcp_flags & 0x17 != 0x02 || !sh.guard.connected() {
        return;
    }
    if sh.guard.tell_unsolicited(pkt.dst, pkt.now) {
        let key = GuardKey { addr: pkt.dst, port: 0, side: guard::UNSOLICITED, pad: 0 };
        sh.guard.push(super::GuardNotice { key, host: 0 });
    }
}
