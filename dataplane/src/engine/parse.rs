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
    /// Parses `frame` into `out` (where the batch keeps it, so nothing copies it again while
    /// its fields are still in the store buffer) and returns the key it carries on arrival,
    /// built from registers; `Ok(None)` for a frame that is the host's.
    #[inline(always)]
    pub(super) fn parse(
        &self,
        sh: &Shared,
        frame: &[u8],
        meta: RxMeta,
        now: Time,
        out: &mut Pkt,
    ) -> Result<Option<FlowKey>, DropReason> {
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
        let proto = ip.protocol();
        let first_frag = ip.more_frags() && ip.frag_offset() == 0;
        let later_frag = ip.frag_offset() != 0;
        if later_frag && options {
            // no L4 header; with options only the box's, decided above by address
            return Err(DropReason::IpOptions);
        }
        let (mut l4, mut sport, mut dport, mut tcp_flags, mut tcp_seq, mut tcp_ack, mut tcp_hl) =
            (L4::Other, 0, 0, 0, 0, 0, 0);
        let (mut icmp_type, mut icmp_code) = (0, 0);
        let seg = ip.payload();
        match proto {
            _ if later_frag => {}
            proto::TCP => {
                let t = tcp::Packet::new_checked(seg).map_err(|_| DropReason::TcpMalformed)?;
                l4 = L4::Tcp;
                (sport, dport, tcp_flags) = (t.src_port(), t.dst_port(), t.flags());
                (tcp_seq, tcp_ack, tcp_hl) = (t.seq(), t.ack(), t.header_len() as u8);
            }
            proto::UDP => {
                let u = if first_frag { udp::Packet::new_header_only(seg) } else { udp::Packet::new_checked(seg) }
                    .map_err(|_| DropReason::UdpMalformed)?;
                l4 = L4::Udp;
                (sport, dport) = (u.src_port(), u.dst_port());
            }
            proto::ICMP => {
                let i = icmp::Packet::new_checked(seg).map_err(|_| DropReason::IcmpMalformed)?;
                (icmp_type, icmp_code) = (i.msg_type(), i.code());
                if icmp::is_query(icmp_type) {
                    // a whole query shorter than its type's fixed size is malformed (a first
                    // fragment's length says nothing yet)
                    if !first_frag && seg.len() < icmp::query_min_len(icmp_type) {
                        return Err(DropReason::IcmpMalformed);
                    }
                    l4 = L4::IcmpQuery;
                    sport = i.ident();
                } else if icmp::is_error(icmp_type) {
                    if first_frag {
                        return Err(DropReason::IcmpMalformed);
                    }
                    l4 = L4::IcmpError;
                } else {
                    l4 = L4::IcmpOther;
                }
            }
            proto::ESP if cfg.esp_by_spi => {
                if seg.len() < 8 {
                    return Err(DropReason::EspMalformed);
                }
                let spi = be32(seg, 0);
                if spi == 0 {
                    return Err(DropReason::EspMalformed);
                }
                l4 = L4::Esp;
                (sport, dport) = ((spi >> 16) as u16, spi as u16);
            }
            proto::GRE => {
                let g = gre::Packet::new_checked(seg).map_err(|_| DropReason::GreTruncated)?;
                match g.kind() {
                    gre::Kind::Malformed => return Err(DropReason::GreMalformed),
                    // with inspection, PPTP GRE is tracked by Call ID (the flows the
                    // inspector creates); without it, and for GRE v0 always, by address pair
                    gre::Kind::Pptp if cfg.pptp.enabled => {
                        l4 = L4::GrePptp;
                        dport = g.call_id();
                    }
                    gre::Kind::Pptp | gre::Kind::V0 => l4 = L4::Other,
                }
            }
            _ => {}
        }
        *out = Pkt {
            iface: meta.iface,
            now,
            l3: l3 as u8,
            ip_len: ip.total_len(),
            hl: hl as u8,
            src,
            dst,
            proto,
            ttl: ip.ttl(),
            ident: ip.ident(),
            first_frag,
            later_frag,
            l4,
            sport,
            dport,
            tcp_flags,
            tcp_seq,
            tcp_ack,
            tcp_hl,
            icmp_type,
            icmp_code,
        };
        if options {
            // to the outside address: the box's own (the kernel handles options), or a
            // translation's, which xgw does not forward with options
            return if super::host::for_host(sh, out, frame) { Ok(None) } else { Err(DropReason::IpOptions) };
        }
        Ok(Some(key_of(l4, src, dst, sport, dport, proto)))
    }
}

/// The key a packet carries on arrival.
pub(super) fn flow_key(p: &Pkt) -> FlowKey {
    key_of(p.l4, p.src, p.dst, p.sport, p.dport, p.proto)
}

/// [`flow_key`] from the packet's fields one by one (the parse stage has them in registers).
#[inline(always)]
fn key_of(l4: L4, src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> FlowKey {
    match l4 {
        L4::Tcp | L4::Udp | L4::Esp => FlowKey { src, dst, sport, dport, proto },
        L4::IcmpQuery => FlowKey { src, dst, sport, dport: 0, proto },
        // `sport` 1 keeps PPTP GRE apart from GRE v0's address-pair flows (0, 0): Call ID 0
        // is common and must never match a v0 tunnel
        L4::GrePptp => FlowKey { src, dst, sport: GRE_V1, dport, proto },
        _ => FlowKey { src, dst, sport: 0, dport: 0, proto },
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
