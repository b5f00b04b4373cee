//! A flow miss: the policy's decision, limits, the translation's shape (PAT, forward,
//! hairpin, routed) and the flow's insertion.

use crate::alg::pptp::{self};
use crate::config::{EngineConfig, IfaceConfig, IfaceId, Role};
use crate::conntrack::tcp::{TcpEvent, TcpState};
use crate::conntrack::{status, Flow, FlowKey, FlowKind, InsertError, L4State, Rewrite};
use crate::counters::DropReason;
use crate::nat::PortCandidates;
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

impl Worker {
    /// The slow path: policy, translation choice, insertion.
    pub(super) fn new_flow(
        &mut self,
        sh: &Shared,
        frame: &mut Frame<'_>,
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
        let by_pair = pkt.l4 == L4::Esp && (forward.is_some() || cfg.inside_for(pkt.dst).is_some() || !cfg.nat.enabled);
        let k = if by_pair { FlowKey { sport: 0, dport: 0, ..*key } } else { *key };
        let key = &k;

        let result = if let Some(fw) = forward {
            let host = u32::from(fw.inside_addr);
            let Some(host_if) = cfg.inside_for(host) else {
                return Verdict::Drop(DropReason::UnsolicitedInbound);
            };
            if ingress.role == Role::Outside {
                // DNAT: remote -> P:fport becomes remote -> host:hport
                let reply = FlowKey { src: host, dst: k.src, sport: fw.inside_port, dport: k.sport, proto: k.proto };
                shared.flows.insert(
                    k,
                    [reply],
                    |r| {
                        let mut f = Flow::new(
                            [k, r],
                            [
                                Rewrite {
                                    src: k.src,
                                    dst: host,
                                    sport: k.sport,
                                    dport: fw.inside_port,
                                    egress: host_if,
                                },
                                Rewrite {
                                    src: outside.1,
                                    dst: k.src,
                                    sport: k.dport,
                                    dport: k.sport,
                                    egress: meta.iface,
                                },
                            ],
                            l4state,
                            FlowKind::Dnat,
                            now,
                        );
                        f.rule = rule;
                        f.status |= alg;
                        f
                    },
                    now,
                )
            } else {
                // hairpin: inside -> P:fport becomes P:p -> host:hport, replies go back inside
                let cands = PortCandidates::new(k.sport, &cfg.nat, seed).map(|p| FlowKey {
                    src: host,
                    dst: outside.1,
                    sport: fw.inside_port,
                    dport: p,
                    proto: k.proto,
                });
                shared.flows.insert(
                    k,
                    cands,
                    |r| {
                        let mut f = Flow::new(
                            [k, r],
                            [
                                Rewrite {
                                    src: outside.1,
                                    dst: host,
                                    sport: r.dport,
                                    dport: fw.inside_port,
                                    egress: host_if,
                                },
                                Rewrite {
                                    src: outside.1,
                                    dst: k.src,
                                    sport: k.dport,
                                    dport: k.sport,
                                    egress: meta.iface,
                                },
                            ],
                            l4state,
                            FlowKind::Hairpin,
                            now,
                        );
                        f.rule = rule;
                        f.status |= alg;
                        f
                    },
                    now,
                )
            }
        } else if let Some(dst_if) = cfg.inside_for(pkt.dst) {
            // between inside interfaces: tracked, not translated
            let reply = mirror(&k);
            shared.flows.insert(
                k,
                [reply],
                |r| {
                    let mut f = Flow::new(
                        [k, r],
                        [
                            Rewrite { src: k.src, dst: k.dst, sport: k.sport, dport: k.dport, egress: dst_if },
                            Rewrite { src: r.src, dst: r.dst, sport: r.sport, dport: r.dport, egress: meta.iface },
                        ],
                        l4state,
                        FlowKind::Routed,
                        now,
                    );
                    f.rule = rule;
                    f.status |= alg;
                    f
                },
                now,
            )
        } else {
            // PAT onto the outside address
            if !cfg.nat.enabled {
                let reply = mirror(&k);
                shared.flows.insert(
                    k,
                    [reply],
                    |r| {
                        let mut f = Flow::new(
                            [k, r],
                            [
                                Rewrite { src: k.src, dst: k.dst, sport: k.sport, dport: k.dport, egress: outside.0 },
                                Rewrite { src: r.src, dst: r.dst, sport: r.sport, dport: r.dport, egress: meta.iface },
                            ],
                            l4state,
                            FlowKind::Routed,
                            now,
                        );
                        f.rule = rule;
                        f.status |= alg;
                        f
                    },
                    now,
                )
            } else {
                if pkt.proto == proto::AH {
                    return Verdict::Drop(DropReason::AhNotTranslatable);
                }
                // paired pooling (RFC 4787 REQ-2): an inside host always gets the same address
                let nat_addr = shared.nat_addr_for(pkt.src);
                if nat_addr == 0 {
                    return Verdict::Drop(DropReason::NoOutsideAddress);
                }
                let ports = match pkt.l4 {
                    L4::Tcp | L4::Udp | L4::IcmpQuery => PortCandidates::new(k.sport, &cfg.nat, seed),
                    _ => PortCandidates::only(0),
                };
                let icmp_q = pkt.l4 == L4::IcmpQuery;
                let esp = pkt.l4 == L4::Esp;
                let cands = ports.map(|p| {
                    if esp {
                        // the placeholder until the peer's inbound SPI is learnt
                        FlowKey { src: k.dst, dst: nat_addr, sport: 0, dport: 0, proto: k.proto }
                    } else if icmp_q {
                        FlowKey { src: k.dst, dst: nat_addr, sport: p, dport: 0, proto: k.proto }
                    } else {
                        FlowKey { src: k.dst, dst: nat_addr, sport: k.dport, dport: p, proto: k.proto }
                    }
                });
                shared.flows.insert(
                    k,
                    cands,
                    |r| {
                        let (nsport, orig_back) = if esp {
                            (k.sport, (0, 0))
                        } else if icmp_q {
                            (r.sport, (k.sport, 0))
                        } else {
                            (r.dport, (k.dport, k.sport))
                        };
                        let mut f = Flow::new(
                            [k, r],
                            [
                                Rewrite { src: nat_addr, dst: k.dst, sport: nsport, dport: k.dport, egress: outside.0 },
                                Rewrite {
                                    src: k.dst,
                                    dst: k.src,
                                    sport: orig_back.0,
                                    dport: orig_back.1,
                                    egress: meta.iface,
                                },
                            ],
                            l4state,
                            FlowKind::Snat,
                            now,
                        );
                        f.rule = rule;
                        f.status |= alg;
                        f
                    },
                    now,
                )
            }
        };
        match result {
            Ok((r, flow)) => {
                self.counters.flows_created.inc();
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
