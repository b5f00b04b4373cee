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

    /// True when the option-less IPv4 header `h` carries a correct checksum (its words sum
    /// to all ones). The words are added as they lie in memory, without byte swaps: a
    /// one's-complement sum is the same in either byte order up to swapping its two bytes
    /// (RFC 1071, 2(B)), and all ones swapped are all ones.
    #[inline(always)]
    pub fn ipv4_header_ok(h: &[u8; 20]) -> bool {
        let mut sum = 0u32;
        let mut i = 0;
        while i < 20 {
            sum += u32::from(u16::from_ne_bytes([h[i], h[i + 1]]));
            i += 2;
        }
        fold(sum) == 0xffff
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

/// Whose a packet is — the box's own stack's or transit — decided by one rule that the XDP
/// classifier and the engine both call, so that what one hands to the kernel the other
/// never sees as transit (and the other way round).
pub mod host {
    use crate::proto::is_dhcp_reply;

    /// What the rule needs to know about the box.
    pub trait Own {
        /// One of the inside interfaces' addresses or subnet broadcasts.
        fn is_inside_own(&self, a: u32) -> bool;
        /// The outside address (0: none yet).
        fn outside(&self) -> u32;
        /// The outside subnet's broadcast address (0: none).
        fn outside_broadcast(&self) -> u32;
        /// The box's own port range on the outside address (the NAT never hands these out).
        fn host_ports(&self) -> (u16, u16);
        /// A service the box itself offers on the outside address (`tcp:22`, …).
        fn is_service(&self, proto: u8, port: u16) -> bool;
    }

    /// What the rule looks at above IPv4.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Upper {
        /// TCP or UDP ports.
        Ports {
            /// Source port.
            sport: u16,
            /// Destination port.
            dport: u16,
            /// A TCP connection attempt: SYN without ACK.
            syn: bool,
        },
        /// An ICMP query (echo, timestamp, …).
        IcmpQuery {
            /// A request (a ping of the box), not a reply.
            request: bool,
            /// Its identifier.
            ident: u16,
        },
        /// An ICMP error, by the packet it quotes: the quoted packet's protocol and its
        /// source port (TCP/UDP) or identifier (ICMP) — the box's socket if it sent it.
        IcmpError {
            /// Quoted packet's protocol.
            proto: u8,
            /// Quoted packet's source port or ICMP identifier.
            sport: u16,
        },
        /// Nothing to look at (other protocols, later fragments).
        Opaque,
    }

    /// An ICMP query type: `Some(true)` for a request (echo, timestamp), `Some(false)` for
    /// its reply, `None` for any other type. The engine's parser knows the same four.
    #[inline(always)]
    pub fn icmp_query(t: u8) -> Option<bool> {
        match t {
            8 | 13 => Some(true),
            0 | 14 => Some(false),
            _ => None,
        }
    }

    /// TCP flags (header byte 13) of a connection attempt: SYN without ACK.
    #[inline(always)]
    pub fn connection_attempt(flags: u8) -> bool {
        flags & 0x12 == 0x02
    }

    /// An ICMP error type (its body quotes the offending packet).
    #[inline(always)]
    pub fn icmp_error(t: u8) -> bool {
        matches!(t, 3 | 4 | 5 | 11 | 12)
    }

    /// True when the packet to `dst` is the box's own: broadcast, multicast, an inside
    /// address or subnet broadcast, a DHCP answer, or on the outside address a host port,
    /// a host service, a ping, a reply to the box's own ping, or an ICMP error about a
    /// packet the box sent from one of those. Everything else is transit: on the outside
    /// address it belongs to a translation or a forward, or it is unsolicited.
    ///
    /// The host ports are the box's own connections' source ports, so what arrives there is
    /// the other end's answer; a connection attempt (a TCP SYN without ACK) to one is never
    /// that, and is not the box's unless the port is a declared service. So a SYN flood or a
    /// port scan of the outside address is dropped and counted like any unsolicited packet
    /// instead of making the box's kernel answer each SYN with a reset.
    #[inline(always)]
    pub fn is_for_host(own: &impl Own, dst: u32, proto: u8, upper: Upper) -> bool {
        if dst == u32::MAX || dst >> 28 == 0xe || own.is_inside_own(dst) {
            return true;
        }
        if let Upper::Ports { sport, dport, .. } = upper {
            if proto == 17 && is_dhcp_reply(sport, dport) {
                return true;
            }
        }
        let outside = own.outside();
        if outside == 0 {
            return false;
        }
        if dst == own.outside_broadcast() {
            return true;
        }
        if dst != outside {
            return false;
        }
        let (lo, hi) = own.host_ports();
        let host_port = |p: u16| lo <= p && p <= hi;
        match upper {
            Upper::Ports { dport, syn, .. } => (host_port(dport) && !syn) || own.is_service(proto, dport),
            Upper::IcmpQuery { request: true, .. } => true,
            Upper::IcmpQuery { request: false, ident } => host_port(ident),
            Upper::IcmpError { proto: p, sport } => {
                (p == 6 || p == 17 || p == 1) && (host_port(sport) || own.is_service(p, sport))
            }
            Upper::Opaque => false,
        }
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
    /// A TCP SYN dropped by the new-flow guard: its host (or forwarded port) is over a
    /// connection limit the engine enforces (map `GUARD`, see [`super::GuardKey`]).
    pub const GUARDED: u32 = 4;
    /// Transit dropped because this gateway is the standby of an HA pair (map `ROLE`).
    pub const STANDBY: u32 = 5;
    /// Number of steering outcomes.
    pub const COUNT: u32 = 6;
    /// Names, indexed by outcome.
    pub const NAMES: [&str; COUNT as usize] = ["kernel", "xsk", "dropped", "fast", "guarded", "standby"];
}

/// Values of the XDP program's `ROLE` map (one entry): whether this gateway forwards.
pub mod role {
    /// Forwards (a single gateway, or the active one of an HA pair).
    pub const ACTIVE: u32 = 0;
    /// The standby of an HA pair (or a gateway in fault): transit is dropped, counted
    /// `standby`; the box's own traffic still reaches the kernel.
    pub const STANDBY: u32 = 1;
}

/// The new-flow guard: when the engine refuses a TCP SYN because a connection limit is
/// reached (per inside host, or embryonic), xgwd writes the refused side into map `GUARD`
/// with a deadline (`CLOCK_MONOTONIC` nanoseconds, as `bpf_ktime_get_ns`). Until then the
/// XDP program drops pure SYNs that match (counted `guarded`) instead of handing each to the
/// engine to be refused again — a SYN flood then costs a hash lookup per packet, not a trip
/// through AF_XDP. Only pure SYNs are guarded: every other packet, of established flows
/// included, takes its usual path. When the deadline passes, the next SYN reaches the
/// engine, which decides afresh.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GuardKey {
    /// The inside host (source of SYNs arriving inside), or the outside address a
    /// forwarded port is on or an unsolicited SYN went to (destination of SYNs arriving
    /// outside).
    pub addr: u32,
    /// 0 for an inside host; the forwarded port otherwise.
    pub port: u16,
    /// [`guard::INSIDE_SOURCE`], [`guard::FORWARDED_PORT`] or [`guard::UNSOLICITED`].
    pub side: u8,
    /// Always 0 (explicit padding: the key is hashed byte by byte).
    pub pad: u8,
}

/// Sides of a [`GuardKey`].
pub mod guard {
    /// SYNs from this inside host.
    pub const INSIDE_SOURCE: u8 = 0;
    /// SYNs towards this forwarded port of the outside address.
    pub const FORWARDED_PORT: u8 = 1;
    /// SYNs towards this outside (or pool) address, `port` 0, on any TCP port that is not
    /// forwarded (map `FORWARDED_TCP`): the engine dropped one as unsolicited
    /// (`unsolicited_inbound`), a scan or flood of the address. Held for one hold, not
    /// renewed: the next SYN after it reaches the engine and, if still unsolicited, holds
    /// the address again.
    pub const UNSOLICITED: u8 = 2;
    /// Words of the `FORWARDED_TCP` bitmap: one bit per TCP port (port / 64, bit port % 64).
    pub const FORWARD_WORDS: u32 = 1024;
    /// How long a refusal holds in XDP, nanoseconds.
    pub const HOLD_NS: u64 = 200_000_000;
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
    /// The inside subnets' broadcast addresses (0 where none), as many as `inside_addrs`.
    pub inside_bcasts: [u32; MAX_INSIDE_ADDRS],
    /// The outside subnet's broadcast address (0: none).
    pub outside_bcast: u32,
    /// First port of the host's own ephemeral range (TCP/UDP to the outside address in it
    /// is the host's).
    pub host_port_lo: u16,
    /// Last port of that range.
    pub host_port_hi: u16,
    /// Non-zero once userspace has written the configuration.
    pub ready: u32,
    /// Non-zero when the fast path is on (`offload on`, the default): the program looks
    /// every transit packet up in `FLOWS`. With it off nothing is ever installed there, and
    /// the lookup, a likely cache miss in the map's bucket array, is not made.
    pub fast_path: u32,
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
    // no padding (4 + 4 + 32 + 32 + 4 + 2 + 2 + 4 bytes), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::XdpConfig {}
    // SAFETY: `Counter` is `repr(C)`, two `u64`, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: `HostService` is `repr(C)`, two `u32`, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::HostService {}
    // SAFETY: `GuardKey` is `repr(C)`: 4 + 2 + 1 + 1 bytes of integers, no padding: every
    // bit pattern is valid.
    unsafe impl aya::Pod for super::GuardKey {}
}

// The maps' value layouts are shared with the kernel byte for byte: a field added without
// thinking of the other side fails the build here.
const _: () = assert!(core::mem::size_of::<XdpConfig>() == 88);
const _: () = assert!(core::mem::size_of::<FastKey>() == 16);
const _: () = assert!(core::mem::size_of::<FastFlow>() == 56);
const _: () = assert!(core::mem::size_of::<HostService>() == 8);
const _: () = assert!(core::mem::size_of::<GuardKey>() == 8);

#[cfg(test)]
mod tests {
    use super::host::{is_for_host, Own, Upper};

    struct Gw;

    const OUT: u32 = 0xcb00_7101; // 203.0.113.1/24
    const IN: u32 = 0x0a00_0001; // 10.0.0.1/24

    impl Own for Gw {
        fn is_inside_own(&self, a: u32) -> bool {
            a == IN || a == 0x0a00_00ff
        }
        fn outside(&self) -> u32 {
            OUT
        }
        fn outside_broadcast(&self) -> u32 {
            0xcb00_71ff
        }
        fn host_ports(&self) -> (u16, u16) {
            (32768, 60999)
        }
        fn is_service(&self, proto: u8, port: u16) -> bool {
            (proto, port) == (6, 22)
        }
    }

    #[test]
    fn host_or_transit_table() {
        let ports = |sport, dport| Upper::Ports { sport, dport, syn: false };
        let syn = |sport, dport| Upper::Ports { sport, dport, syn: true };
        let far = 0xc633_6414; // 198.51.100.20
        #[rustfmt::skip]
        let table: &[(&str, u32, u8, Upper, bool)] = &[
            ("limited broadcast", u32::MAX, 17, ports(68, 67), true),
            ("multicast (VRRP)", 0xe000_0012, 112, Upper::Opaque, true),
            ("inside address, any protocol", IN, 47, Upper::Opaque, true),
            ("inside subnet broadcast", 0x0a00_00ff, 17, ports(137, 137), true),
            ("outside subnet broadcast", 0xcb00_71ff, 17, ports(520, 520), true),
            ("DHCP answer to any address", 0xcb00_7163, 17, ports(67, 68), true),
            ("TCP to a host port", OUT, 6, ports(80, 40000), true),
            ("TCP to a host service", OUT, 6, ports(50000, 22), true),
            ("connection attempt to a host port (never an answer)", OUT, 6, syn(50000, 40000), false),
            ("connection attempt to a host service", OUT, 6, syn(50000, 22), true),
            ("connection attempt to a translated port", OUT, 6, syn(50000, 1024), false),
            ("UDP to a service port of TCP only", OUT, 17, ports(50000, 22), false),
            ("TCP to a translated port", OUT, 6, ports(443, 1024), false),
            ("ping of the box", OUT, 1, Upper::IcmpQuery { request: true, ident: 5 }, true),
            ("reply to the box's own ping", OUT, 1, Upper::IcmpQuery { request: false, ident: 40000 }, true),
            ("reply to a translated ping", OUT, 1, Upper::IcmpQuery { request: false, ident: 5 }, false),
            ("error about the box's own UDP", OUT, 1, Upper::IcmpError { proto: 17, sport: 33000 }, true),
            ("error about the box's SSH", OUT, 1, Upper::IcmpError { proto: 6, sport: 22 }, true),
            ("error about a translation", OUT, 1, Upper::IcmpError { proto: 6, sport: 2000 }, false),
            ("ESP to the outside address", OUT, 50, Upper::Opaque, false),
            ("later fragment to the outside address", OUT, 17, Upper::Opaque, false),
            ("transit to a far host", far, 6, ports(40000, 22), false),
            ("transit DHCP request", far, 17, ports(68, 67), false),
        ];
        for (what, dst, proto, upper, host) in table {
            assert_eq!(is_for_host(&Gw, *dst, *proto, *upper), *host, "{what}");
        }
    }

    #[test]
    fn nothing_is_the_outside_address_s_before_there_is_one() {
        struct NoAddr;
        impl Own for NoAddr {
            fn is_inside_own(&self, _: u32) -> bool {
                false
            }
            fn outside(&self) -> u32 {
                0
            }
            fn outside_broadcast(&self) -> u32 {
                0
            }
            fn host_ports(&self) -> (u16, u16) {
                (1, 65535)
            }
            fn is_service(&self, _: u8, _: u16) -> bool {
                true
            }
        }
        assert!(!is_for_host(&NoAddr, 0, 6, Upper::Ports { sport: 1, dport: 22, syn: false }));
        let dhcp = Upper::Ports { sport: 67, dport: 68, syn: false };
        assert!(is_for_host(&NoAddr, 0x0a00_0005, 17, dhcp), "DHCP still");
    }

    #[test]
    fn a_header_checksum_is_checked_alike_in_either_byte_order() {
        use super::csum::{fold, ipv4_header_ok};
        // the reference: big-endian words, the checksum field (bytes 10-11) set so that the
        // sum is all ones; then each byte changed in turn must be noticed
        let mut x = 0x9e37_79b9u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..2000 {
            let mut h = [0u8; 20];
            for b in h.iter_mut() {
                *b = next() as u8;
            }
            h[10] = 0;
            h[11] = 0;
            let mut sum = 0u32;
            for w in h.chunks_exact(2) {
                sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
            }
            let c = !fold(sum);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(ipv4_header_ok(&h), "{h:02x?}");
            let i = (next() % 20) as usize;
            let flip = (next() % 255 + 1) as u8;
            let mut bad = h;
            bad[i] ^= flip;
            // a one's-complement sum cannot tell 0x0000 from 0xffff in a word
            let (w0, w1) = (i & !1, (i & !1) + 1);
            let (a, b) = (u16::from_be_bytes([h[w0], h[w1]]), u16::from_be_bytes([bad[w0], bad[w1]]));
            if !((a == 0 && b == 0xffff) || (a == 0xffff && b == 0)) {
                assert!(!ipv4_header_ok(&bad), "byte {i} ^ {flip:#x} unnoticed in {h:02x?}");
            }
        }
    }
}
