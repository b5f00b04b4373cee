//! xgw's XDP program: classify every frame, count it per class, and steer it.
//!
//! A transit packet of a flow the engine has offloaded (map `FLOWS`, filled by userspace with
//! the flow direction's precomputed rewrite) is translated here and redirected to its egress
//! interface (devmap `TX`) — the fast path; it applies data, it decides nothing. Anything the
//! map does not cover (SYN/FIN/RST, fragments, IP options, VLAN tags, TTL ≤ 1, a bad header
//! checksum, unknown flows) goes on as below, to the engine.
//!
//! Other transit IPv4 goes to the AF_XDP socket of the receive queue (with its class in 4 bytes of
//! XDP metadata); the gateway's own traffic — non-IP (ARP, IPv6), and every packet the one
//! host-or-transit rule (`xgw_ebpf_common::host`, the engine's too) calls the box's — goes to
//! the kernel untouched; so do the later fragments of a packet whose first fragment did.
//! Frames with a broken IPv4 header are dropped and counted. The parse is deliberately
//! shallow: the engine in userspace validates everything again.
#![no_std]
#![no_main]
// the bpfel target has no `AtomicU64::fetch_add`; the intrinsic lowers to BPF's atomic add
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_xdp_adjust_meta},
    macros::{map, xdp},
    maps::{Array, DevMap, HashMap, LruHashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use xgw_ebpf_common::csum;
use xgw_ebpf_common::proto::GRE_V1;
use xgw_ebpf_common::{
    class, declined, guard, role, steer, Counter, FastFlow, FastKey, GuardKey, HostService, XdpConfig, MAX_IFACES,
};

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

/// Offloaded flow directions arriving on this interface (size set by userspace at load).
#[map]
static FLOWS: HashMap<FastKey, FastFlow> = HashMap::with_max_entries(65536, 0);

/// Egress interfaces by the engine's interface number.
#[map]
static TX: DevMap = DevMap::with_max_entries(MAX_IFACES, 0);

/// Non-zero for the egress interfaces (by the engine's interface number) that take XDP
/// redirects; xgwd keeps it current (`control::egress`). Packets towards any other egress
/// go to the AF_XDP workers.
#[map]
static EGRESS_OK: Array<u32> = Array::with_max_entries(MAX_IFACES, 0);

/// This gateway's part in an HA pair (entry 0): 0 active, non-zero standby (`role`). A
/// standby forwards nothing: transit is dropped and counted `standby`; the kernel still gets
/// its own traffic (VRRP adverts, ARP, the sync link).
#[map]
static ROLE: Array<u32> = Array::with_max_entries(1, 0);

/// The new-flow guard (`xgw_ebpf_common::GuardKey`): refused sides and until when.
#[map]
static GUARD: LruHashMap<GuardKey, u64> = LruHashMap::with_max_entries(4096, 0);

/// The forwarded TCP ports of the outside address, a bit each (`guard::FORWARD_WORDS`
/// words): a SYN to one of them is never held as unsolicited (`guard::UNSOLICITED`).
#[map]
static FORWARDED_TCP: Array<u64> = Array::with_max_entries(guard::FORWARD_WORDS, 0);

/// Packets of offloaded flows the fast path left to the engine, by `declined` reason.
#[map]
static FAST_DECLINED: PerCpuArray<Counter> = PerCpuArray::with_max_entries(declined::COUNT, 0);

mod classify;
use classify::classify;

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

/// Writes `v` at `off` if the frame is that long (the only place packet memory is written).
#[inline(always)]
fn write<const N: usize>(ctx: &XdpContext, off: usize, v: [u8; N]) -> Option<()> {
    let p = ctx.data() + off;
    if p + N > ctx.data_end() {
        return None;
    }
    // SAFETY: [p, p + N) lies inside the frame, checked just above; XDP frames are writable
    // and `[u8; N]` has alignment 1.
    unsafe { core::ptr::write_unaligned(p as *mut [u8; N], v) };
    Some(())
}

#[inline(always)]
fn be16(b0: u8, b1: u8) -> u16 {
    u16::from_be_bytes([b0, b1])
}

const ETH: usize = 14;
const L4: usize = ETH + 20;

/// The fast path: translates and redirects a packet of an offloaded flow direction, or
/// returns `None` (nothing written) for the engine to handle it.
#[inline(always)]
fn fast(ctx: &XdpContext) -> Option<u32> {
    let eth: [u8; 14] = read(ctx, 0)?;
    if eth[12] != 0x08 || eth[13] != 0x00 {
        return None; // VLAN-tagged (or not IPv4): the engine's
    }
    let ip: [u8; 20] = read(ctx, ETH)?;
    // IPv4 without options, not a fragment, TTL left to decrement
    if ip[0] != 0x45 || (ip[6] & 0x3f) != 0 || ip[7] != 0 || ip[8] <= 1 {
        return None;
    }
    if !csum::ipv4_header_ok(&ip) {
        return None; // the engine drops and counts it
    }
    let total = usize::from(be16(ip[2], ip[3]));
    if total < 20 || ETH + total > ctx.data_end() - ctx.data() {
        return None;
    }
    let l4_len = total - 20;
    let proto = ip[9];
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let key = match proto {
        6 => {
            let t: [u8; 14] = read(ctx, L4)?;
            let doff = usize::from(t[12] >> 4) * 4;
            // SYN, FIN, RST: the engine's state machine sees them
            if t[13] & 0x07 != 0 || doff < 20 || doff > l4_len {
                return None;
            }
            FastKey { src, dst, sport: be16(t[0], t[1]), dport: be16(t[2], t[3]), proto: 6 }
        }
        17 => {
            let u: [u8; 8] = read(ctx, L4)?;
            let ulen = usize::from(be16(u[4], u[5]));
            if ulen < 8 || ulen > l4_len {
                return None;
            }
            FastKey { src, dst, sport: be16(u[0], u[1]), dport: be16(u[2], u[3]), proto: 17 }
        }
        47 => {
            let g: [u8; 8] = read(ctx, L4)?;
            // enhanced GRE exactly as the engine accepts it: version 1, K set, no C, R, s,
            // Recur, protocol PPP, the optional fields inside the packet
            if g[0] & 0xcf != 0 || g[0] & 0x20 == 0 || g[1] & 0x07 != 1 || g[2] != 0x88 || g[3] != 0x0b {
                return None;
            }
            let hl = 8 + if g[0] & 0x10 != 0 { 4 } else { 0 } + if g[1] & 0x80 != 0 { 4 } else { 0 };
            if hl > l4_len {
                return None;
            }
            FastKey { src, dst, sport: GRE_V1, dport: be16(g[6], g[7]), proto: 47 }
        }
        _ => return None,
    };
    if proto != 47 {
        // a sender with transmit checksum offload left only the pseudo-header sum in the
        // checksum field; adjusting that would put a wrong checksum on the wire. The engine
        // finishes such checksums (a UDP checksum of 0 means none and is never partial).
        let c: [u8; 2] = read(ctx, L4 + if proto == 6 { 16 } else { 6 })?;
        let field = be16(c[0], c[1]);
        let pseudo = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + u32::from(proto) + l4_len as u32;
        if csum::is_partial(field, pseudo, proto == 17) {
            count(&FAST_DECLINED, declined::PARTIAL_CSUM, l4_len as u64);
            return None;
        }
    }
    let f = FLOWS.get_ptr_mut(key)?;
    // SAFETY: the pointer comes from a successful lookup in FLOWS; the value stays valid for
    // this program run (RCU). Fields userspace writes are only read here; the counters are
    // only changed with atomic adds and plain stores of the time.
    let fl: FastFlow = unsafe { core::ptr::read(f) };
    // an egress not proven to take redirects, or one the devmap lacks, would drop the packet
    // after it was rewritten: check first. The redirect is only noted here (the frame goes
    // when the program returns), so asking for it first is that check for the devmap.
    if EGRESS_OK.get(fl.egress).copied().unwrap_or(0) == 0 {
        count(&FAST_DECLINED, declined::EGRESS_UNPROVEN, l4_len as u64);
        return None;
    }
    let action = match TX.redirect(fl.egress, 0) {
        Ok(a) => a,
        Err(_) => {
            count(&FAST_DECLINED, declined::EGRESS_UNPROVEN, l4_len as u64);
            return None;
        }
    };

    let mut mac = [0u8; 12];
    let mut j = 0;
    while j < 6 {
        mac[j] = fl.dmac[j];
        mac[6 + j] = fl.smac[j];
        j += 1;
    }
    write(ctx, 0, mac)?;
    match proto {
        6 => {
            let c: [u8; 2] = read(ctx, L4 + 16)?;
            let n = csum::apply(be16(c[0], c[1]), fl.l4_delta);
            let p = fl.sport.to_be_bytes();
            let q = fl.dport.to_be_bytes();
            write(ctx, L4, [p[0], p[1], q[0], q[1]])?;
            write(ctx, L4 + 16, n.to_be_bytes())?;
        }
        17 => {
            let c: [u8; 2] = read(ctx, L4 + 6)?;
            let p = fl.sport.to_be_bytes();
            let q = fl.dport.to_be_bytes();
            write(ctx, L4, [p[0], p[1], q[0], q[1]])?;
            let old = be16(c[0], c[1]);
            if old != 0 {
                // 0 means "no checksum"; a computed 0 is sent as all ones (RFC 768)
                let n = csum::apply(old, fl.l4_delta);
                write(ctx, L4 + 6, csum::udp_on_wire(n).to_be_bytes())?;
            }
        }
        _ => write(ctx, L4 + 6, fl.dport.to_be_bytes())?,
    }
    let csum = csum::apply(be16(ip[10], ip[11]), fl.ip_delta);
    let c = csum.to_be_bytes();
    let s = fl.src.to_be_bytes();
    let d = fl.dst.to_be_bytes();
    write(ctx, ETH + 8, [ip[8] - 1, ip[9], c[0], c[1], s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]])?;

    // SAFETY: `f` points at the live map value (see above); `packets` and `bytes` are
    // 8-byte aligned (offsets 32 and 40 of a `repr(C)` value) as atomics need, and are only
    // ever changed atomically here; userspace only reads them. The time is the coarse
    // monotonic clock (the same clock, at most a tick behind): a flow's idle timeout is
    // seconds, and reading the precise one (`read_tsc`, scaled) was 3.7 % of the gateway
    // core's samples at saturation; with the coarse one a fast-path frame cost 10 % (UDP)
    // and 18 % (GRE) less (bench/README, session 20).
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(core::ptr::addr_of_mut!((*f).packets), 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(core::ptr::addr_of_mut!((*f).bytes), total as u64);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*f).last_seen), bpf_ktime_get_coarse_ns());
    }
    Some(action)
}

/// True when the packet is a pure TCP SYN (no options in its IPv4 header) whose inside
/// source host, or whose forwarded destination port, the engine recently refused over a
/// connection limit, or whose destination address recently got unsolicited SYNs and whose
/// port is not forwarded (map `GUARD`).
#[inline(always)]
fn guarded(ctx: &XdpContext, cls: u32) -> bool {
    if cls != class::TCP && cls != class::PPTP_CONTROL {
        return false;
    }
    let Some(ip) = read::<20>(ctx, ETH) else { return false };
    let Some(t) = read::<14>(ctx, L4) else { return false };
    if ip[0] != 0x45 || t[13] & 0x17 != 0x02 {
        return false;
    }
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let dport = be16(t[2], t[3]);
    let keys = [
        GuardKey { addr: src, port: 0, side: guard::INSIDE_SOURCE, pad: 0 },
        GuardKey { addr: dst, port: dport, side: guard::FORWARDED_PORT, pad: 0 },
        GuardKey { addr: dst, port: 0, side: guard::UNSOLICITED, pad: 0 },
    ];
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let forwarded = FORWARDED_TCP.get(u32::from(dport) / 64).is_some_and(|w| *w & (1u64 << (dport % 64)) != 0);
    let mut i = 0;
    while i < 3 {
        if i == 2 && forwarded {
            break;
        }
        // SAFETY: the reference comes from a successful lookup in GUARD and is only read
        // while this program runs (RCU keeps the value alive).
        if let Some(until) = unsafe { GUARD.get(keys[i]) } {
            if now < *until {
                return true;
            }
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn fast_class(cls: u32) -> bool {
    matches!(
        cls,
        class::TCP
            | class::UDP
            | class::GRE_PPTP
            | class::IKE
            | class::NATT_IKE
            | class::NATT_ESP
            | class::NATT_KEEPALIVE
            | class::L2TP
    )
}

#[xdp]
pub fn xgw_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (cls, steer) = classify(&ctx).unwrap_or((class::MALFORMED, Steer::Drop));
    count(&CLASS_STATS, cls, len);
    if matches!(steer, Steer::Xsk) && ROLE.get(0).is_some_and(|r| *r != role::ACTIVE) {
        count(&STEER_STATS, steer::STANDBY, len);
        return xdp_action::XDP_DROP;
    }
    if matches!(steer, Steer::Xsk) && fast_class(cls) && CONFIG.get(0).is_some_and(|c| c.fast_path != 0) {
        if let Some(action) = fast(&ctx) {
            count(&STEER_STATS, steer::FAST, len);
            return action;
        }
    }
    match steer {
        Steer::Kernel => {
            count(&STEER_STATS, steer::KERNEL, len);
            xdp_action::XDP_PASS
        }
        Steer::Drop => {
            count(&STEER_STATS, steer::DROPPED, len);
            xdp_action::XDP_DROP
        }
        Steer::Xsk if guarded(&ctx, cls) => {
            count(&STEER_STATS, steer::GUARDED, len);
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

/// The benchmark's generator and sink (bench/nat-compare): only in the object built with
/// the `bench` feature, never in the one xgwd attaches.
#[cfg(feature = "bench")]
mod bench;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
