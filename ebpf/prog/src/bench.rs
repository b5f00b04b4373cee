//! Benchmark helpers (bench/nat-compare): a traffic generator for BPF_PROG_TEST_RUN in
//! live-frames mode and a counting sink. Built only with the `bench` feature, into an object
//! of their own; xgwd's object never carries them.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_redirect,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

use super::{be16, read, write, ETH, L4, TX};

/// `xgw_gen`'s settings: [0] number of UDP flows to spread over (0: leave the frame as it is).
#[map]
static GEN: Array<u32> = Array::with_max_entries(1, 0);

/// The first 48 bytes of `xgw_gen`'s frame (Ethernet, IPv4, UDP or GRE header). Rewritten into
/// every frame: in live-frames mode a page comes back from the devices it was redirected
/// through, carrying what the gateway made of it.
#[map]
static GEN_FRAME: Array<[u8; 48]> = Array::with_max_entries(1, 0);

/// Frames `xgw_gen` sent (index 0) and `xgw_sink` counted (index 1), per CPU.
#[map]
static GEN_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

#[inline(always)]
fn bump(i: u32) -> u64 {
    match GEN_COUNT.get_ptr_mut(i) {
        // SAFETY: this CPU's slot of a per-CPU array; nothing else writes it while this
        // program runs on this CPU.
        Some(c) => unsafe {
            *c += 1;
            *c
        },
        None => 0,
    }
}

/// Traffic generator for BPF_PROG_TEST_RUN in live-frames mode: gives a UDP frame a source
/// port from a range of `GEN[0]` (one flow each; UDP checksum 0 = none) and sends it out of
/// `TX[0]`.
#[xdp]
pub fn xgw_gen(ctx: XdpContext) -> u32 {
    let n = bump(0);
    if let Some(t) = GEN_FRAME.get(0) {
        if write(&ctx, 0, *t).is_none() {
            return xdp_action::XDP_ABORTED;
        }
    }
    let flows = GEN.get(0).copied().unwrap_or(0);
    if flows > 0 {
        let sport = 1024 + (n % u64::from(flows)) as u16;
        let p = sport.to_be_bytes();
        if write(&ctx, L4, p).is_none() || write(&ctx, L4 + 6, [0u8, 0]).is_none() {
            return xdp_action::XDP_ABORTED;
        }
    }
    TX.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}

/// Traffic sink: counts and drops GRE and UDP to ports 5000 and up, except datagrams whose
/// payload starts with "warm" (a benchmark's warm-up, answered by a socket) or "ping" (a
/// latency probe, answered here: sent straight back with addresses and ports swapped, so a
/// round trip measures the gateway's path both ways and no process on the sink's side);
/// passes the rest.
#[xdp]
pub fn xgw_sink(ctx: XdpContext) -> u32 {
    let Some(h) = read::<38>(&ctx, 0) else { return xdp_action::XDP_PASS };
    if h[12] != 0x08 || h[13] != 0 {
        return xdp_action::XDP_PASS;
    }
    let l4 = ETH + usize::from(h[14] & 0x0f) * 4;
    let udp = if h[23] == 17 { read::<12>(&ctx, l4) } else { None };
    if let Some(u) = udp {
        if u[8..12] == *b"ping" {
            return echo(&ctx, &h, l4, &u);
        }
    }
    let drop = match h[23] {
        47 => true,
        17 => udp.is_some_and(|u| be16(u[2], u[3]) >= 5000 && u[8..12] != *b"warm"),
        _ => false,
    };
    if drop {
        bump(1);
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// Sends a UDP datagram back where it came from: MAC addresses, IPv4 addresses and ports
/// swapped. Both checksums stay right as they are (each sums the same words in another
/// order), so the sender's must be complete, as nat-compare's veths send them (a checksum
/// left to offload stays partial and the answer is dropped); the TTL is left as it arrived.
/// Redirected out of the device it came in on rather than `XDP_TX`: a veth wakes its peer's
/// receive processing for `XDP_TX` frames only when the peer has an XDP program (the kernel
/// gateway's has none, and its replies sat in the ring), whereas a redirect's flush always
/// does.
#[inline(always)]
fn echo(ctx: &XdpContext, h: &[u8; 38], l4: usize, u: &[u8; 12]) -> u32 {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&h[6..12]);
    macs[6..].copy_from_slice(&h[..6]);
    let mut addrs = [0u8; 8];
    addrs[..4].copy_from_slice(&h[30..34]);
    addrs[4..].copy_from_slice(&h[26..30]);
    let ports = [u[2], u[3], u[0], u[1]];
    if write(ctx, 0, macs).is_none() || write(ctx, 26, addrs).is_none() || write(ctx, l4, ports).is_none() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: `ctx.ctx` is the kernel's `xdp_md` for this program run, valid while it runs;
    // reading a field of it is what every XDP program does.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: a BPF helper call with plain integer arguments; it only records where the
    // frame goes and returns XDP_REDIRECT (or XDP_ABORTED for flags it does not know).
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}
