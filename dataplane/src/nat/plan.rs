//! The shape of a new flow's translation, decided once on its first packet: which reply keys
//! it may take (the reply key's insertion is the port reservation) and the two rewrites that
//! follow from the one it gets. One description for every case — PAT onto the outside
//! address (or a pool address), a static forward from outside (DNAT), a forward reached from
//! inside (hairpin), and routed flows that are tracked but not translated.

use crate::config::{IfaceId, NatConfig};
use crate::conntrack::{FlowKey, FlowKind, Rewrite};
use crate::nat::PortCandidates;

/// What a new flow becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Source translated onto `addr` (PAT, RFC 4787/5382): TCP and UDP ports and ICMP
    /// identifiers are chosen from the NAT range; ESP waits for the peer's SPI (reply key
    /// `(peer, addr, 0, 0)`); other protocols keep no port and take the peer.
    Snat {
        /// The outside or pool address.
        addr: u32,
        /// Leaves through.
        egress: IfaceId,
        /// The packet is an ICMP query (its identifier is translated).
        icmp_query: bool,
        /// The packet is ESP.
        esp: bool,
    },
    /// A forward from outside: remote → outside:port becomes remote → host:port.
    Dnat {
        /// The inside host, its port and interface.
        host: u32,
        /// Its port.
        port: u16,
        /// Its interface.
        host_if: IfaceId,
        /// The outside address replies leave with.
        outside: u32,
    },
    /// A forward reached from inside: inside → outside:port becomes outside:p → host:port,
    /// and replies go back inside.
    Hairpin {
        /// The inside host.
        host: u32,
        /// Its port.
        port: u16,
        /// Its interface.
        host_if: IfaceId,
        /// The outside address both directions carry.
        outside: u32,
    },
    /// Tracked, not translated (between inside interfaces, or NAT off).
    Routed {
        /// Leaves through.
        egress: IfaceId,
    },
}

impl Shape {
    /// The flow's kind.
    pub fn kind(&self) -> FlowKind {
        match self {
            Shape::Snat { .. } => FlowKind::Snat,
            Shape::Dnat { .. } => FlowKind::Dnat,
            Shape::Hairpin { .. } => FlowKind::Hairpin,
            Shape::Routed { .. } => FlowKind::Routed,
        }
    }

    /// The ports the reply key may take, in the order to try them (one for shapes that
    /// choose none).
    pub fn ports(&self, k: &FlowKey, cfg: &NatConfig, seed: u32) -> PortCandidates {
        match self {
            Shape::Snat { esp: false, .. } if matches!(k.proto, 6 | 17) => PortCandidates::new(k.sport, cfg, seed),
            Shape::Snat { icmp_query: true, .. } => PortCandidates::new(k.sport, cfg, seed),
            Shape::Hairpin { .. } => PortCandidates::new(k.sport, cfg, seed),
            _ => PortCandidates::only(0),
        }
    }

    /// The reply key for original key `k` with port `p` (from [`Shape::ports`]).
    pub fn reply_key(&self, k: &FlowKey, p: u16) -> FlowKey {
        match *self {
            // the placeholder until the peer's inbound SPI is learnt
            Shape::Snat { addr, esp: true, .. } => {
                FlowKey { src: k.dst, dst: addr, sport: 0, dport: 0, proto: k.proto }
            }
            Shape::Snat { addr, icmp_query: true, .. } => {
                FlowKey { src: k.dst, dst: addr, sport: p, dport: 0, proto: k.proto }
            }
            Shape::Snat { addr, .. } => FlowKey { src: k.dst, dst: addr, sport: k.dport, dport: p, proto: k.proto },
            Shape::Dnat { host, port, .. } => {
                FlowKey { src: host, dst: k.src, sport: port, dport: k.sport, proto: k.proto }
            }
            Shape::Hairpin { host, port, outside, .. } => {
                FlowKey { src: host, dst: outside, sport: port, dport: p, proto: k.proto }
            }
            Shape::Routed { .. } => k.mirror(),
        }
    }

    /// The two directions' rewrites once the flow holds reply key `r`; replies leave
    /// through `ingress` (where the first packet came from).
    pub fn rewrites(&self, k: &FlowKey, r: &FlowKey, ingress: IfaceId) -> [Rewrite; 2] {
        match *self {
            Shape::Snat { addr, egress, icmp_query, esp } => {
                let (nsport, back) = if esp {
                    (k.sport, (0, 0))
                } else if icmp_query {
                    (r.sport, (k.sport, 0))
                } else {
                    (r.dport, (k.dport, k.sport))
                };
                [
                    Rewrite { src: addr, dst: k.dst, sport: nsport, dport: k.dport, egress },
                    Rewrite { src: k.dst, dst: k.src, sport: back.0, dport: back.1, egress: ingress },
                ]
            }
            Shape::Dnat { host, port, host_if, outside } => [
                Rewrite { src: k.src, dst: host, sport: k.sport, dport: port, egress: host_if },
                Rewrite { src: outside, dst: k.src, sport: k.dport, dport: k.sport, egress: ingress },
            ],
            Shape::Hairpin { host, port, host_if, outside } => [
                Rewrite { src: outside, dst: host, sport: r.dport, dport: port, egress: host_if },
                Rewrite { src: outside, dst: k.src, sport: k.dport, dport: k.sport, egress: ingress },
            ],
            Shape::Routed { egress } => [
                Rewrite { src: k.src, dst: k.dst, sport: k.sport, dport: k.dport, egress },
                Rewrite { src: r.src, dst: r.dst, sport: r.sport, dport: r.dport, egress: ingress },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: IfaceId = IfaceId(0);
    const OUT: IfaceId = IfaceId(1);
    const P: u32 = 0xcb00_7101; // 203.0.113.1
    const C: u32 = 0x0a00_0005; // 10.0.0.5
    const S: u32 = 0xc633_6414; // 198.51.100.20
    const H: u32 = 0x0a00_000a; // 10.0.0.10

    fn key(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> FlowKey {
        FlowKey { src, dst, sport, dport, proto }
    }

    /// One row per shape: the first packet's key, the port the table gave, the reply key the
    /// other direction's packets carry, and both rewrites.
    #[test]
    fn every_shape_gives_its_reply_key_and_rewrites() {
        let tcp_out = key(C, S, 5000, 443, 6);
        let rows: [(Shape, FlowKey, u16, FlowKey, [Rewrite; 2]); 6] = [
            (
                Shape::Snat { addr: P, egress: OUT, icmp_query: false, esp: false },
                tcp_out,
                61000,
                key(S, P, 443, 61000, 6),
                [
                    Rewrite { src: P, dst: S, sport: 61000, dport: 443, egress: OUT },
                    Rewrite { src: S, dst: C, sport: 443, dport: 5000, egress: IN },
                ],
            ),
            (
                Shape::Snat { addr: P, egress: OUT, icmp_query: true, esp: false },
                key(C, S, 77, 0, 1),
                1200,
                key(S, P, 1200, 0, 1),
                [
                    Rewrite { src: P, dst: S, sport: 1200, dport: 0, egress: OUT },
                    Rewrite { src: S, dst: C, sport: 77, dport: 0, egress: IN },
                ],
            ),
            (
                Shape::Snat { addr: P, egress: OUT, icmp_query: false, esp: true },
                key(C, S, 0x1234, 0x5678, 50),
                0,
                key(S, P, 0, 0, 50),
                [
                    Rewrite { src: P, dst: S, sport: 0x1234, dport: 0x5678, egress: OUT },
                    Rewrite { src: S, dst: C, sport: 0, dport: 0, egress: IN },
                ],
            ),
            (
                Shape::Dnat { host: H, port: 22, host_if: IN, outside: P },
                key(S, P, 40000, 2222, 6),
                0,
                key(H, S, 22, 40000, 6),
                [
                    Rewrite { src: S, dst: H, sport: 40000, dport: 22, egress: IN },
                    Rewrite { src: P, dst: S, sport: 2222, dport: 40000, egress: OUT },
                ],
            ),
            (
                Shape::Hairpin { host: H, port: 22, host_if: IN, outside: P },
                key(C, P, 5000, 2222, 6),
                3000,
                key(H, P, 22, 3000, 6),
                [
                    Rewrite { src: P, dst: H, sport: 3000, dport: 22, egress: IN },
                    Rewrite { src: P, dst: C, sport: 2222, dport: 5000, egress: IN },
                ],
            ),
            (
                Shape::Routed { egress: OUT },
                tcp_out,
                0,
                key(S, C, 443, 5000, 6),
                [
                    Rewrite { src: C, dst: S, sport: 5000, dport: 443, egress: OUT },
                    Rewrite { src: S, dst: C, sport: 443, dport: 5000, egress: IN },
                ],
            ),
        ];
        for (shape, k, port, reply, rw) in rows {
            let ingress = if matches!(shape, Shape::Dnat { .. }) { OUT } else { IN };
            let r = shape.reply_key(&k, port);
            assert_eq!(r, reply, "{shape:?}");
            assert_eq!(shape.rewrites(&k, &r, ingress), rw, "{shape:?}");
        }
    }

    #[test]
    fn only_translated_ports_are_chosen_from_the_range() {
        let cfg = NatConfig { preserve_port: false, ..NatConfig::default() };
        let snat = Shape::Snat { addr: P, egress: OUT, icmp_query: false, esp: false };
        let tcp = key(C, S, 5000, 443, 6);
        assert!(snat.ports(&tcp, &cfg, 1).count() > 1, "TCP ports are searched");
        let gre = key(C, S, 0, 0, 47);
        assert_eq!(snat.ports(&gre, &cfg, 1).collect::<Vec<_>>(), vec![0], "GRE v0 keeps no port");
        let dnat = Shape::Dnat { host: H, port: 22, host_if: IN, outside: P };
        assert_eq!(dnat.ports(&tcp, &cfg, 1).count(), 1, "a forward's reply key is fixed");
    }
}
