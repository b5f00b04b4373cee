//! xgw's XDP program: classify every frame, count it per class, and steer it.
//!
//! Transit IPv4 goes to the AF_XDP socket of the receive queue (with its class in 4 bytes of
//! XDP metadata); the gateway's own traffic — non-IP (ARP, IPv6), broadcast and multicast,
//! anything to an inside-interface address, and on the outside address TCP/UDP to the host's
//! own port range or its services and ICMP echo requests — goes to the kernel untouched.
//! Frames with a broken IPv4 header are dropped and counted. The parse is deliberately
//! shallow: the engine in userspace validates everything again.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_xdp_adjust_meta,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use xgw_ebpf_common::{class, steer, Counter, HostService, XdpConfig, MAX_INSIDE_ADDRS};

#[map]
static CONFIG: Array<XdpConfig> = Array::with_max_entries(1, 0);

#[map]
static HOST_SERVICES: HashMap<HostService, u8> = HashMap::with_max_entries(64, 0);

#[map]
static XSKS: XskMap = XskMap::with_max_entries(64, 0);

#[map]
static CLASS_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(class::COUNT, 0);

#[map]
static STEER_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(steer::COUNT, 0);

enum Steer {
    Kernel,
    Xsk,
    Drop,
}

/// `N` bytes at `off` from the start of the frame, if the frame is that long. This is the
/// only place packet memory is read. Reading whole arrays behind one `ptr + N > end` check
/// (rather than byte by byte) matters: for a single byte LLVM rewrites the check as
/// `ptr >= end`, from which the verifier learns nothing about the byte at `ptr`.
/// Never compare the returned `Option` as a whole (`== Some(..)`): LLVM may fill the
/// undefined payload of `None` from any register, packet pointers included, and the
/// verifier refuses arithmetic on those even when the result is never used; compare after
/// `?` or `if let`, or use `bytes_are`.
#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let p = ctx.data() + off;
    if p + N > ctx.data_end() {
        return None;
    }
    // SAFETY: [p, p + N) lies inside [data, data_end), checked just above; `[u8; N]` has
    // alignment 1 and every bit pattern is valid.
    Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
}

/// True when the `N` bytes at `off` exist and are all `v`.
#[inline(always)]
fn bytes_are<const N: usize>(ctx: &XdpContext, off: usize, v: u8) -> bool {
    let p = ctx.data() + off;
    if p + N > ctx.data_end() {
        return false;
    }
    // SAFETY: as in `read`.
    let b: [u8; N] = unsafe { core::ptr::read_unaligned(p as *const [u8; N]) };
    let mut i = 0;
    while i < N {
        if b[i] != v {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn count(map: &PerCpuArray<Counter>, index: u32, len: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup; it points at this
        // CPU's slot, which nothing else writes while this program runs on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

#[xdp]
pub fn xgw_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (cls, steer) = classify(&ctx).unwrap_or((class::MALFORMED, Steer::Drop));
    count(&CLASS_STATS, cls, len);
    match steer {
        Steer::Kernel => {
            count(&STEER_STATS, steer::KERNEL, len);
            xdp_action::XDP_PASS
        }
        Steer::Drop => {
            count(&STEER_STATS, steer::DROPPED, len);
            xdp_action::XDP_DROP
        }
        Steer::Xsk => {
            count(&STEER_STATS, steer::XSK, len);
            // SAFETY: `ctx.ctx` is the live xdp_md of this invocation; growing the metadata
            // area by 4 bytes is a helper call the verifier allows for XDP programs.
            if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -4) } == 0 {
                let meta = ctx.metadata();
                if meta + 4 <= ctx.data() {
                    // SAFETY: [meta, meta + 4) lies inside the metadata area, which ends at
                    // `data` (checked just above).
                    unsafe { *(meta as *mut u32) = cls };
                }
            }
            // SAFETY: reading rx_queue_index from the live xdp_md.
            let queue = unsafe { (*ctx.ctx).rx_queue_index };
            // no socket on this queue: leave the frame to the kernel
            XSKS.redirect(queue, u64::from(xdp_action::XDP_PASS)).unwrap_or(xdp_action::XDP_PASS)
        }
    }
}

fn classify(ctx: &XdpContext) -> Option<(u32, Steer)> {
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
    let later_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
    let proto = ip[9];
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let frame_len = ctx.data_end() - ctx.data();
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || l3 + total > frame_len {
        return Some((class::MALFORMED, Steer::Drop));
    }

    let cfg = CONFIG.get(0)?;
    // broadcast and multicast, and anything for the gateway's inside addresses: the host's
    if dst == u32::MAX || dst >> 28 == 0xe {
        return Some((class::OTHER_IP, Steer::Kernel));
    }
    let mut i = 0;
    while i < MAX_INSIDE_ADDRS {
        if (i as u32) < cfg.n_inside && cfg.inside_addrs[i] == dst {
            return Some((class::OTHER_IP, Steer::Kernel));
        }
        i += 1;
    }
    if later_fragment {
        return Some((class::FRAGMENT, Steer::Xsk));
    }

    let l4 = l3 + ihl;
    let to_outside = cfg.ready != 0 && dst == cfg.outside_addr;
    let (cls, dport) = match proto {
        6 => {
            let h: [u8; 4] = read(ctx, l4)?;
            let (sp, dp) = (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]]));
            (if sp == 1723 || dp == 1723 { class::PPTP_CONTROL } else { class::TCP }, Some(dp))
        }
        17 => {
            let h: [u8; 8] = read(ctx, l4)?;
            let (sp, dp) = (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]]));
            let udp_len = u16::from_be_bytes([h[4], h[5]]);
            let cls = if sp == 500 || dp == 500 {
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
            };
            (cls, Some(dp))
        }
        47 => {
            let h: [u8; 2] = read(ctx, l4)?;
            (if h[1] & 7 == 1 { class::GRE_PPTP } else { class::GRE_OTHER }, None)
        }
        50 => (class::ESP, None),
        51 => (class::AH, None),
        1 => {
            let h: [u8; 2] = read(ctx, l4)?;
            // an echo request to the outside address is a ping of the box
            if to_outside && h[0] == 8 {
                return Some((class::ICMP, Steer::Kernel));
            }
            (class::ICMP, None)
        }
        _ => (class::OTHER_IP, None),
    };
    if to_outside {
        if let Some(dp) = dport {
            if (cfg.host_port_lo..=cfg.host_port_hi).contains(&dp) {
                return Some((cls, Steer::Kernel));
            }
            let key = HostService { proto: u32::from(proto), port: u32::from(dp) };
            if HOST_SERVICES.get_ptr(key).is_some() {
                return Some((cls, Steer::Kernel));
            }
        }
    }
    Some((cls, Steer::Xsk))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
