//! The classifier: a frame's class (counted, and carried to the engine in the XDP metadata)
//! and where it goes — the kernel, the AF_XDP workers, or nowhere (a broken header). Whose a
//! packet is comes from `xgw_ebpf_common::host::is_for_host`, the rule the engine applies too.

use aya_ebpf::{macros::map, maps::LruHashMap, programs::XdpContext};
use xgw_ebpf_common::host::{connection_attempt, icmp_error, icmp_query, is_for_host, Own, Upper};
use xgw_ebpf_common::proto::PPTP_PORT;
use xgw_ebpf_common::{class, HostService, XdpConfig, MAX_INSIDE_ADDRS};

use crate::{bytes_are, read, Steer, CONFIG, HOST_SERVICES};

/// A fragmented packet: (source, destination, identification, protocol).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FragKey {
    src: u32,
    dst: u32,
    ident: u16,
    proto: u16,
}

/// Fragmented packets whose first fragment went to the kernel: their later fragments follow
/// it (they carry no ports to decide by). Entries age out by LRU.
#[map]
static HOST_FRAGS: LruHashMap<FragKey, u8> = LruHashMap::with_max_entries(1024, 0);

struct Gateway<'a>(&'a XdpConfig);

impl Own for Gateway<'_> {
    #[inline(always)]
    fn is_inside_own(&self, a: u32) -> bool {
        let cfg = self.0;
        let mut i = 0;
        while i < MAX_INSIDE_ADDRS {
            if (i as u32) < cfg.n_inside && (cfg.inside_addrs[i] == a || cfg.inside_bcasts[i] == a) {
                return true;
            }
            i += 1;
        }
        false
    }

    #[inline(always)]
    fn outside(&self) -> u32 {
        if self.0.ready != 0 {
            self.0.outside_addr
        } else {
            0
        }
    }

    #[inline(always)]
    fn outside_broadcast(&self) -> u32 {
        self.0.outside_bcast
    }

    #[inline(always)]
    fn host_ports(&self) -> (u16, u16) {
        (self.0.host_port_lo, self.0.host_port_hi)
    }

    #[inline(always)]
    fn is_service(&self, proto: u8, port: u16) -> bool {
        let key = HostService { proto: u32::from(proto), port: u32::from(port) };
        HOST_SERVICES.get_ptr(key).is_some()
    }
}

/// The class of a UDP datagram by its ports (and for 4500 its payload's first bytes).
#[inline(always)]
fn udp_class(ctx: &XdpContext, l4: usize, sp: u16, dp: u16, udp_len: u16) -> u32 {
    if sp == 500 || dp == 500 {
        class::IKE
    } else if sp == 4500 || dp == 4500 {
        if udp_len == 9 {
            // the payload's only byte (read with the checksum's last one: N >= 2)
            let mut k = [0u8; 2];
            if let Some(b) = read::<2>(ctx, l4 + 7) {
                k = b;
            }
            if k[1] == 0xff {
                class::NATT_KEEPALIVE
            } else {
                class::NATT_ESP
            }
        } else if udp_len >= 12 && bytes_are::<4>(ctx, l4 + 8, 0) {
            class::NATT_IKE
        } else {
            class::NATT_ESP
        }
    } else if sp == 1701 || dp == 1701 {
        class::L2TP
    } else {
        class::UDP
    }
}

/// What an ICMP error quotes: the quoted packet's protocol and source port (or identifier).
#[inline(always)]
fn quoted(ctx: &XdpContext, l4: usize) -> Upper {
    let Some(ip) = read::<20>(ctx, l4 + 8) else { return Upper::Opaque };
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if !(20..=60).contains(&ihl) {
        return Upper::Opaque;
    }
    let Some(h) = read::<6>(ctx, l4 + 8 + ihl) else { return Upper::Opaque };
    let sport = match ip[9] {
        1 => u16::from_be_bytes([h[4], h[5]]),
        _ => u16::from_be_bytes([h[0], h[1]]),
    };
    Upper::IcmpError { proto: ip[9], sport }
}

pub(crate) fn classify(ctx: &XdpContext) -> Option<(u32, Steer)> {
    let eth: [u8; 14] = read(ctx, 0)?;
    let mut l3 = 14;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    if ethertype == 0x8100 {
        let tag: [u8; 4] = read(ctx, 14)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        l3 = 18;
    }
    if ethertype != 0x0800 {
        return Some((class::NON_IP, Steer::Kernel));
    }
    // the whole fixed IPv4 header in one read
    let Some(ip) = read::<20>(ctx, l3) else {
        return Some((class::MALFORMED, Steer::Drop));
    };
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let (later_fragment, first_fragment) = (frag & 0x1fff != 0, frag & 0x3fff == 0x2000);
    let proto = ip[9];
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let frame_len = ctx.data_end() - ctx.data();
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || l3 + total > frame_len {
        return Some((class::MALFORMED, Steer::Drop));
    }
    let cfg = CONFIG.get(0)?;
    let own = Gateway(cfg);
    let fkey = FragKey { src, dst, ident: u16::from_be_bytes([ip[4], ip[5]]), proto: u16::from(proto) };
    if later_fragment {
        let host = is_for_host(&own, dst, proto, Upper::Opaque) || HOST_FRAGS.get_ptr(fkey).is_some();
        return Some((class::FRAGMENT, if host { Steer::Kernel } else { Steer::Xsk }));
    }

    let l4 = l3 + ihl;
    let (cls, upper) = match proto {
        6 => {
            // ports and flags (byte 13)
            let h: [u8; 14] = read(ctx, l4)?;
            let (sport, dport) = (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]]));
            let cls = if sport == PPTP_PORT || dport == PPTP_PORT { class::PPTP_CONTROL } else { class::TCP };
            (cls, Upper::Ports { sport, dport, syn: connection_attempt(h[13]) })
        }
        17 => {
            let h: [u8; 8] = read(ctx, l4)?;
            let (sport, dport) = (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]]));
            let cls = udp_class(ctx, l4, sport, dport, u16::from_be_bytes([h[4], h[5]]));
            (cls, Upper::Ports { sport, dport, syn: false })
        }
        47 => {
            let h: [u8; 2] = read(ctx, l4)?;
            (if h[1] & 7 == 1 { class::GRE_PPTP } else { class::GRE_OTHER }, Upper::Opaque)
        }
        50 => (class::ESP, Upper::Opaque),
        51 => (class::AH, Upper::Opaque),
        1 => {
            let h: [u8; 6] = read(ctx, l4)?;
            let upper = match icmp_query(h[0]) {
                Some(request) => Upper::IcmpQuery { request, ident: u16::from_be_bytes([h[4], h[5]]) },
                None if icmp_error(h[0]) => quoted(ctx, l4),
                None => Upper::Opaque,
            };
            (class::ICMP, upper)
        }
        _ => (class::OTHER_IP, Upper::Opaque),
    };
    if is_for_host(&own, dst, proto, upper) {
        if first_fragment {
            let _ = HOST_FRAGS.insert(fkey, 1, 0);
        }
        return Some((cls, Steer::Kernel));
    }
    Some((cls, Steer::Xsk))
}
