//! The parse stage: a frame checked once into [`Pkt`] (Ethernet, IPv4, the L4 key), and the
//! keys a packet carries.

use crate::checksum;
use crate::config::IfaceId;
use crate::conntrack::FlowKey;
use crate::counters::DropReason;
use crate::time::Time;
use crate::wire::gre::GRE_V1;
use crate::wire::{be32, ethernet, gre, icmp, ipv4, proto, tcp, udp, WireError};

use super::*;

/// What was parsed out of a frame, once.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pkt {
    pub(super) iface: IfaceId,
    pub(super) now: Time,
    pub(super) l3: u8,
    pub(super) ip_len: u16,
    pub(super) hl: u8,
    pub(super) src: u32,
    pub(super) dst: u32,
    pub(super) proto: u8,
    pub(super) ttl: u8,
    pub(super) ident: u16,
    pub(super) first_frag: bool,
    pub(super) later_frag: bool,
    pub(super) l4: L4,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) tcp_flags: u8,
    pub(super) tcp_seq: u32,
    pub(super) tcp_ack: u32,
    pub(super) tcp_hl: u8,
    pub(super) icmp_type: u8,
    pub(super) icmp_code: u8,
}

impl Pkt {
    /// Offset of the IP header in the frame.
    pub(super) fn l3(&self) -> usize {
        usize::from(self.l3)
    }

    /// IP header length.
    pub(super) fn hl(&self) -> usize {
        usize::from(self.hl)
    }

    /// Where the IP packet lies in the frame.
    pub(super) fn ip_range(&self) -> core::ops::Range<usize> {
        self.l3()..self.l3() + usize::from(self.ip_len)
    }
}

/// How the L4 header is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum L4 {
    Tcp,
    Udp,
    IcmpQuery,
    IcmpError,
    IcmpOther,
    /// PPTP enhanced GRE: the key (Call ID) is part of the flow key and rewritable.
    GrePptp,
    /// ESP: the SPI (in `sport`:`dport`) is part of the flow key; nothing in it changes.
    Esp,
    #[default]
    Other,
}

impl WorkerState {
    #[inline(always)]
    pub(super) fn parse(&self, sh: &Shared, frame: &[u8], meta: RxMeta) -> Result<Option<Pkt>, DropReason> {
        let eth = ethernet::Frame::new_checked(frame).map_err(|_| DropReason::EthTruncated)?;
        if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
            return Ok(None);
        }
        let l3 = eth.payload_offset();
        let ip = ipv4::Packet::new_checked(&frame[l3..]).map_err(|e| match e {
            WireError::Truncated => DropReason::IpTruncated,
            WireError::BadVersion => DropReason::IpBadVersion,
            WireError::BadLength => DropReason::IpBadLength,
        })?;
        if !ip.verify_checksum() {
            return Err(DropReason::IpBadChecksum);
        }
        let cfg = &sh.config;
        if cfg.iface(meta.iface).is_none() {
            return Err(DropReason::UnknownInterface);
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if is_martian_source(src) || sh.is_local(src) {
            return Err(DropReason::MartianSource);
        }
        if super::host::host_address(sh, dst) {
            // broadcast, multicast, an inside address or subnet broadcast: the box's by the
            // host-or-transit rule, whatever it carries
            return Ok(None);
        }
        if src == dst {
            return Err(DropReason::LandAttack);
        }
        let hl = ip.header_len();
        let options = hl > ipv4::MIN_HEADER_LEN;
        if options && dst != sh.outside_addr() {
            return Err(DropReason::IpOptions);
        }
        let mut p = Pkt {
            iface: meta.iface,
            now: Time::ZERO,
            l3: l3 as u8,
            ip_len: ip.total_len(),
            hl: hl as u8,
            src,
            dst,
            proto: ip.protocol(),
            ttl: ip.ttl(),
            ident: ip.ident(),
            first_frag: ip.more_frags() && ip.frag_offset() == 0,
            later_frag: ip.frag_offset() != 0,
            l4: L4::Other,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_hl: 0,
            icmp_type: 0,
            icmp_code: 0,
        };
        if p.later_frag {
            // no L4 header; with options only the box's, decided above by address
            return if options { Err(DropReason::IpOptions) } else { Ok(Some(p)) };
        }
        let l4 = ip.payload();
        match p.proto {
            proto::TCP => {
                let t = tcp::Packet::new_checked(l4).map_err(|_| DropReason::TcpMalformed)?;
                p.l4 = L4::Tcp;
                (p.sport, p.dport, p.tcp_flags) = (t.src_port(), t.dst_port(), t.flags());
                (p.tcp_seq, p.tcp_ack, p.tcp_hl) = (t.seq(), t.ack(), t.header_len() as u8);
            }
            proto::UDP => {
                let u = if p.first_frag { udp::Packet::new_header_only(l4) } else { udp::Packet::new_checked(l4) }
                    .map_err(|_| DropReason::UdpMalformed)?;
                p.l4 = L4::Udp;
                (p.sport, p.dport) = (u.src_port(), u.dst_port());
            }
            proto::ICMP => {
                let i = icmp::Packet::new_checked(l4).map_err(|_| DropReason::IcmpMalformed)?;
                (p.icmp_type, p.icmp_code) = (i.msg_type(), i.code());
                if icmp::is_query(p.icmp_type) {
                    // a whole query shorter than its type's fixed size is malformed (a first
                    // fragment's length says nothing yet)
                    if !p.first_frag && l4.len() < icmp::query_min_len(p.icmp_type) {
                        return Err(DropReason::IcmpMalformed);
                    }
                    p.l4 = L4::IcmpQuery;
                    p.sport = i.ident();
                } else if icmp::is_error(p.icmp_type) {
                    if p.first_frag {
                        return Err(DropReason::IcmpMalformed);
                    }
                    p.l4 = L4::IcmpError;
                } else {
                    p.l4 = L4::IcmpOther;
                }
            }
            proto::ESP if cfg.esp_by_spi => {
                if l4.len() < 8 {
                    return Err(DropReason::EspMalformed);
                }
                let spi = be32(l4, 0);
                if spi == 0 {
                    return Err(DropReason::EspMalformed);
                }
                p.l4 = L4::Esp;
                (p.sport, p.dport) = ((spi >> 16) as u16, spi as u16);
            }
            proto::GRE => {
                let g = gre::Packet::new_checked(l4).map_err(|_| DropReason::GreTruncated)?;
                match g.kind() {
                    gre::Kind::Malformed => return Err(DropReason::GreMalformed),
                    // with inspection, PPTP GRE is tracked by Call ID (the flows the
                    // inspector creates); without it, and for GRE v0 always, by address pair
                    gre::Kind::Pptp if cfg.pptp.enabled => {
                        p.l4 = L4::GrePptp;
                        p.dport = g.call_id();
                    }
                    gre::Kind::Pptp | gre::Kind::V0 => p.l4 = L4::Other,
                }
            }
            _ => {}
        }
        if options {
            // to the outside address: the box's own (the kernel handles options), or a
            // translation's, which xgw does not forward with options
            return if super::host::for_host(sh, &p, frame) { Ok(None) } else { Err(DropReason::IpOptions) };
        }
        Ok(Some(p))
    }
}

/// The key a packet carries on arrival.
pub(super) fn flow_key(p: &Pkt) -> FlowKey {
    match p.l4 {
        L4::Tcp | L4::Udp => FlowKey { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, proto: p.proto },
        L4::IcmpQuery => FlowKey { src: p.src, dst: p.dst, sport: p.sport, dport: 0, proto: p.proto },
        // `sport` 1 keeps PPTP GRE apart from GRE v0's address-pair flows (0, 0): Call ID 0
        // is common and must never match a v0 tunnel
        L4::GrePptp => FlowKey { src: p.src, dst: p.dst, sport: GRE_V1, dport: p.dport, proto: p.proto },
        L4::Esp => FlowKey { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, proto: p.proto },
        _ => FlowKey { src: p.src, dst: p.dst, sport: 0, dport: 0, proto: p.proto },
    }
}

/// Finishes the TCP or UDP checksum of a whole (unfragmented) packet when it holds only
/// the pseudo-header sum (a sender's transmit checksum offload), so that the incremental
/// updates that follow — the rewrite, the PPTP inspector's byte changes — start from a
/// real checksum. True when it did. A UDP checksum of 0 (none) is left alone.
#[inline(always)]
pub(super) fn finish_partial_csum(frame: &mut FrameBuf<'_>, pkt: &Pkt) -> bool {
    let ip = &mut frame.buf[pkt.ip_range()];
    let seg = &mut ip[pkt.hl()..];
    let (field, udp) = if pkt.l4 == L4::Tcp { (16, false) } else { (6, true) };
    let Some(c) = seg.get(field..field + 2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return false;
    };
    let pseudo = checksum::pseudo_header(pkt.src.to_be_bytes(), pkt.dst.to_be_bytes(), pkt.proto, seg.len() as u16);
    if !checksum::is_partial(c, pseudo, udp) {
        return false;
    }
    checksum::finish_l4(seg, field, pseudo, udp);
    true
}

pub(super) fn udp_view(seg: &mut [u8]) -> udp::Packet<&mut [u8]> {
    // parse() validated at least the 8-byte header
    udp::Packet::new_unchecked(seg)
}

pub(super) fn is_martian_source(a: u32) -> bool {
    let first = a >> 24;
    first == 0 || first == 127 || (224..=255).contains(&first)
}
