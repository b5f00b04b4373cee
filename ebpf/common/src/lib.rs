//! What xgw's XDP program and its userspace share, byte for byte and rule for rule: the
//! classifier's configuration, its per-class counters and the class codes that travel to
//! userspace in each frame's XDP metadata; the checksum arithmetic both the fast path and
//! the engine apply ([`csum`]); the protocol constants both test ([`proto`]).
#![no_std]

/// RFC 1624 checksum arithmetic, the one implementation the XDP fast path and the engine
/// (`dataplane::checksum`) both call, so that both write the same bytes.
pub mod csum {
    /// Folds a 32-bit one's-complement accumulator into 16 bits.
    #[inline(always)]
    pub fn fold(mut sum: u32) -> u16 {
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum as u16
    }

    /// Applies a precomputed difference `delta` (the folded sum of `~old + new` over every
    /// changed word) to a stored checksum: RFC 1624 eqn. 3, `HC' = ~(~HC + delta)`.
    #[inline(always)]
    pub fn apply(csum: u16, delta: u16) -> u16 {
        !fold(u32::from(!csum) + u32::from(delta))
    }

    /// A UDP checksum after an adjustment: 0 means "no checksum" on the wire, so a computed
    /// 0 is sent as all ones (RFC 768).
    #[inline(always)]
    pub fn udp_on_wire(c: u16) -> u16 {
        if c == 0 {
            0xffff
        } else {
            c
        }
    }

    /// True when a TCP or UDP checksum field holds only the folded pseudo-header sum
    /// `pseudo` (a sender's transmit checksum offload left it to be finished). A UDP
    /// checksum of 0 means "none" and is never partial.
    #[inline(always)]
    pub fn is_partial(field: u16, pseudo: u32, udp: bool) -> bool {
        field == fold(pseudo) && !(udp && field == 0)
    }
}

/// Protocol constants the XDP program and the engine both test.
pub mod proto {
    /// The PPTP control connection's TCP port.
    pub const PPTP_PORT: u16 = 1723;
    /// `FlowKey::sport` of PPTP (version 1) GRE flows: keeps them apart from GRE v0's
    /// address-pair flows (sport 0), since Call ID 0 is common.
    pub const GRE_V1: u16 = 1;

    /// A DHCP server answering a client (UDP 67 → 68): on the outside always the box's own,
    /// whatever its destination (`address dhcp` may not have an address yet). The XDP
    /// program and the engine both ask this.
    #[inline(always)]
    pub fn is_dhcp_reply(sport: u16, dport: u16) -> bool {
        sport == 67 && dport == 68
    }
}

/// What the classifier makes of a frame. The value travels in the 4 bytes of XDP metadata
/// in front of the frame.
pub mod class {
    /// Not IPv4 (ARP, IPv6, ...): passed to the kernel.
    pub const NON_IP: u32 = 0;
    /// IPv4 header or lengths broken: dropped.
    pub const MALFORMED: u32 = 1;
    /// A later IPv4 fragment (no L4 header).
    pub const FRAGMENT: u32 = 2;
    /// TCP to or from port 1723: PPTP control.
    pub const PPTP_CONTROL: u32 = 3;
    /// GRE version 1 (PPTP's enhanced GRE).
    pub const GRE_PPTP: u32 = 4;
    /// GRE version 0 or other.
    pub const GRE_OTHER: u32 = 5;
    /// IPsec ESP.
    pub const ESP: u32 = 6;
    /// IPsec AH.
    pub const AH: u32 = 7;
    /// IKE on UDP 500.
    pub const IKE: u32 = 8;
    /// UDP 4500 carrying IKE (non-ESP marker).
    pub const NATT_IKE: u32 = 9;
    /// UDP 4500 carrying ESP.
    pub const NATT_ESP: u32 = 10;
    /// UDP 4500 NAT-T keepalive (one byte 0xFF).
    pub const NATT_KEEPALIVE: u32 = 11;
    /// L2TP on UDP 1701.
    pub const L2TP: u32 = 12;
    /// Other TCP.
    pub const TCP: u32 = 13;
    /// Other UDP.
    pub const UDP: u32 = 14;
    /// ICMP.
    pub const ICMP: u32 = 15;
    /// Any other IP protocol.
    pub const OTHER_IP: u32 = 16;
    /// Number of classes.
    pub const COUNT: u32 = 17;

    /// Names, indexed by class code.
    pub const NAMES: [&str; COUNT as usize] = [
        "non_ip",
        "malformed",
        "fragment",
        "pptp_control",
        "gre_pptp",
        "gre_other",
        "esp",
        "ah",
        "ike",
        "natt_ike",
        "natt_esp",
        "natt_keepalive",
        "l2tp",
        "tcp",
        "udp",
        "icmp",
        "other_ip",
    ];
}

/// Where each frame went.
pub mod steer {
    /// Handed to the kernel stack (the gateway's own traffic, non-IP).
    pub const KERNEL: u32 = 0;
    /// Redirected to the AF_XDP socket of its receive queue.
    pub const XSK: u32 = 1;
    /// Dropped (malformed).
    pub const DROPPED: u32 = 2;
    /// Translated and redirected by the fast path itself (an offloaded flow).
    pub const FAST: u32 = 3;
    /// Number of steering outcomes.
    pub const COUNT: u32 = 4;
    /// Names, indexed by outcome.
    pub const NAMES: [&str; COUNT as usize] = ["kernel", "xsk", "dropped", "fast"];
}

/// Why the fast path left a packet of an offloaded flow to the engine (per-CPU array
/// `FAST_DECLINED`, indexed by reason).
pub mod declined {
    /// Its TCP/UDP checksum held only the pseudo-header sum (a sender's transmit checksum
    /// offload); the engine finishes it.
    pub const PARTIAL_CSUM: u32 = 0;
    /// Its egress interface has not been proven to take XDP redirects (or was found not to).
    pub const EGRESS_UNPROVEN: u32 = 1;
    /// Number of reasons.
    pub const COUNT: u32 = 2;
    /// Names, indexed by reason.
    pub const NAMES: [&str; COUNT as usize] = ["partial_csum", "egress_unproven"];
}

/// Maximum number of inside-interface addresses the classifier knows.
pub const MAX_INSIDE_ADDRS: usize = 8;

/// The classifier's configuration (array map `CONFIG`, index 0). Addresses as host-order
/// integers (`u32::from(Ipv4Addr)`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// The outside address.
    pub outside_addr: u32,
    /// Number of valid entries in `inside_addrs`.
    pub n_inside: u32,
    /// The gateway's inside addresses: traffic to them is the host's.
    pub inside_addrs: [u32; MAX_INSIDE_ADDRS],
    /// First port of the host's own ephemeral range (TCP/UDP to the outside address in it
    /// is the host's).
    pub host_port_lo: u16,
    /// Last port of that range.
    pub host_port_hi: u16,
    /// Non-zero once userspace has written the configuration.
    pub ready: u32,
}

/// Packets and bytes of one class (per-CPU array `CLASS_STATS`, indexed by class code),
/// and of one steering outcome (`STEER_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (frame length).
    pub bytes: u64,
}

/// Key of the `HOST_SERVICES` hash map: TCP/UDP ports on the outside address that belong to
/// the host (SSH to the box, ...). `proto` is 6 or 17, `port` in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostService {
    /// IP protocol.
    pub proto: u32,
    /// Port.
    pub port: u32,
}

/// Largest number of interfaces the fast path can transmit on (entries of the `TX` devmap,
/// indexed by the engine's interface number).
pub const MAX_IFACES: u32 = 16;

/// Key of the `FLOWS` hash map: what a packet of an offloaded flow direction carries on
/// arrival, exactly the engine's flow key (host-order addresses and ports). TCP/UDP: the
/// ports; PPTP GRE: `sport` 1 and the Call ID (GRE key) in `dport`. Each interface's program
/// instance has its own map, holding the directions that arrive on that interface, so a
/// packet on the wrong interface never matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FastKey {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port (1 for PPTP GRE).
    pub sport: u16,
    /// Destination port, or the GRE key's Call ID.
    pub dport: u16,
    /// IP protocol (6, 17 or 47).
    pub proto: u32,
}

/// Value of the `FLOWS` map: one flow direction's rewrite as data, precomputed by the
/// engine, and the counters the fast path keeps for it.
///
/// Applying it: Ethernet addresses := `smac`/`dmac`; IPv4 source/destination := `src`/`dst`,
/// TTL - 1, header checksum adjusted by `ip_delta`; TCP/UDP ports := `sport`/`dport` (GRE:
/// Call ID := `dport`), TCP/UDP checksum adjusted by `l4_delta` (a UDP checksum of 0 stays 0,
/// a result of 0 is sent as 0xffff); then redirect to `TX[egress]`. Deltas are RFC 1624
/// one's-complement differences `Σ(~old + new)` over the changed 16-bit words, folded;
/// adjusting is `c' = ~fold(~c + delta)`, exactly what the engine does for the same packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastFlow {
    /// New source address.
    pub src: u32,
    /// New destination address.
    pub dst: u32,
    /// New source port.
    pub sport: u16,
    /// New destination port / Call ID.
    pub dport: u16,
    /// IPv4 header checksum difference (addresses and the TTL decrement).
    pub ip_delta: u16,
    /// TCP/UDP checksum difference (pseudo-header addresses and ports).
    pub l4_delta: u16,
    /// Egress interface: index into `TX`.
    pub egress: u32,
    /// Source MAC on the egress interface.
    pub smac: [u8; 6],
    /// Next hop's MAC.
    pub dmac: [u8; 6],
    /// Packets translated by the fast path (it adds; userspace reads).
    pub packets: u64,
    /// Bytes (IP total length) translated by the fast path.
    pub bytes: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet; 0 = none yet.
    pub last_seen: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `FastKey` is `repr(C)`: 4 + 4 + 2 + 2 + 4 bytes, every field an integer and no
    // padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::FastKey {}
    // SAFETY: `FastFlow` is `repr(C)`: 4+4+2+2+2+2+4 = 20 bytes of integers, two 6-byte arrays
    // (to offset 32, 8-aligned), then three `u64`: 56 bytes, no padding, all integers.
    unsafe impl aya::Pod for super::FastFlow {}
    // SAFETY: `XdpConfig` is `repr(C)`, `Copy`, made of integers and an integer array with
    // no padding (4 + 4 + 32 + 2 + 2 + 4 bytes), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::XdpConfig {}
    // SAFETY: `Counter` is `repr(C)`, two `u64`, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: `HostService` is `repr(C)`, two `u32`, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::HostService {}
}
