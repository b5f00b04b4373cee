//! Whose a packet is: the engine's side of the one host-or-transit rule
//! ([`xgw_ebpf_common::host::is_for_host`]), which the XDP classifier applies too. The engine
//! answers the rule's questions about the box from [`Shared`] and reads the rule's inputs
//! from the parsed packet.

use xgw_ebpf_common::host::{icmp_query, is_for_host, Own, Upper};

use super::parse::{Pkt, L4};
use super::Shared;
use crate::config::broadcast_of;
use crate::wire::{icmp, ipv4, proto};

impl Own for Shared {
    #[inline]
    fn is_inside_own(&self, a: u32) -> bool {
        self.inside_own.contains(&a)
    }

    #[inline]
    fn outside(&self) -> u32 {
        self.outside_addr()
    }

    #[inline]
    fn outside_broadcast(&self) -> u32 {
        let (a, len) = self.outside_net();
        broadcast_of(a, len)
    }

    #[inline]
    fn host_ports(&self) -> (u16, u16) {
        self.config.nat.host_ports.unwrap_or((1, 0))
    }

    #[inline]
    fn is_service(&self, proto: u8, port: u16) -> bool {
        self.config.host_services.contains(&(proto, port))
    }
}

/// The rule's view of a parsed packet above IPv4. `frame` is the whole frame (for the
/// packet an ICMP error quotes).
pub(super) fn upper(pkt: &Pkt, frame: &[u8]) -> Upper {
    match pkt.l4 {
        L4::Tcp | L4::Udp => {
            let syn = pkt.l4 == L4::Tcp && xgw_ebpf_common::host::connection_attempt(pkt.tcp_flags);
            Upper::Ports { sport: pkt.sport, dport: pkt.dport, syn }
        }
        L4::IcmpQuery => Upper::IcmpQuery { request: icmp_query(pkt.icmp_type) == Some(true), ident: pkt.sport },
        L4::IcmpError => quoted(frame, usize::from(pkt.l3) + usize::from(pkt.hl) + icmp::HEADER_LEN),
        _ => Upper::Opaque,
    }
}

/// What an ICMP error quotes, from the quoted header at `off`.
fn quoted(frame: &[u8], off: usize) -> Upper {
    let Some(q) = frame.get(off..) else { return Upper::Opaque };
    let Ok(ip) = ipv4::Packet::new_quoted(q) else { return Upper::Opaque };
    let l4 = &q[ip.header_len().min(q.len())..];
    let at = |o: usize| l4.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let sport = match ip.protocol() {
        proto::ICMP => at(4),
        _ => at(0),
    };
    sport.map_or(Upper::Opaque, |sport| Upper::IcmpError { proto: ip.protocol(), sport })
}

/// True when the parsed packet is the box's own (see the rule).
#[inline]
pub(super) fn for_host(sh: &Shared, pkt: &Pkt, frame: &[u8]) -> bool {
    is_for_host(sh, pkt.dst, pkt.proto, upper(pkt, frame))
}

/// True when `dst` is the box's by address alone (whatever the packet carries).
#[inline]
pub(super) fn host_address(sh: &Shared, dst: u32) -> bool {
    is_for_host(sh, dst, 0, Upper::Opaque)
}
