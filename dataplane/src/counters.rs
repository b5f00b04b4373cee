//! Named drop reasons and per-worker counters.
//!
//! Every dropped packet has exactly one [`DropReason`]; the list below is the single source
//! of the enum, its metric names and its help texts. Counters are per worker (one writer),
//! published as relaxed atomics that the control plane reads and sums.

use core::sync::atomic::{AtomicU64, Ordering};

/// A counter with one writer (its worker) and any number of readers.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Only the owning worker calls this, so a load and a store suffice (no
    /// locked read-modify-write on the per-packet path).
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the value (a total read from elsewhere, e.g. the kernel's socket statistics).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// A counter with several writers (shared tables); uses an atomic add.
#[derive(Debug, Default)]
pub struct SharedCounter(AtomicU64);

impl SharedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter that reads as a number (both counter kinds do).
pub trait Read {
    /// Current value.
    fn read(&self) -> u64;
}

impl Read for Counter {
    fn read(&self) -> u64 {
        self.get()
    }
}

impl Read for SharedCounter {
    fn read(&self) -> u64 {
        self.get()
    }
}

/// Defines a family of counters: the struct (one public field per counter, its doc line the
/// help text) and [`list`](#method.list), the one list every exporter — `xgwctl stats`, its
/// JSON and `/metrics` — renders from, so a counter cannot be counted and never shown.
#[macro_export]
macro_rules! counter_family {
    ($(#[doc = $sdoc:literal])* $vis:vis struct $name:ident: $ty:ty {
        $( $(#[doc = $doc:literal])+ $field:ident, )*
    }) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl $name {
            /// The counters' names, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Every counter: (name, help text, value), in declaration order.
            pub fn list(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$( (stringify!($field), concat!($($doc),+).trim_ascii(), $crate::counters::Read::read(&self.$field)) ),*]
            }
        }
    };
}

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident => $name:literal, )*) => {
        /// Why the engine dropped a packet. Each variant's doc line is its metric help text.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// The metric / CLI name (snake case).
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One-line description (the variant's doc comment).
            pub fn help(self) -> &'static str {
                match self { $(DropReason::$variant => concat!($($doc),*).trim_ascii(),)* }
            }

            /// Looks a reason up by its name.
            pub fn from_name(s: &str) -> Option<DropReason> {
                match s { $($name => Some(DropReason::$variant),)* _ => None }
            }
        }
    };
}

drop_reasons! {
    /// Frame shorter than an Ethernet header.
    EthTruncated => "eth_truncated",
    /// Frame arrived on an interface the engine has no configuration for.
    UnknownInterface => "unknown_interface",
    /// IPv4 header truncated.
    IpTruncated => "ip_truncated",
    /// IP version field is not 4 behind an IPv4 EtherType.
    IpBadVersion => "ip_bad_version",
    /// IPv4 header length or total length inconsistent with the frame.
    IpBadLength => "ip_bad_length",
    /// IPv4 header checksum wrong.
    IpBadChecksum => "ip_bad_checksum",
    /// Transit packet with IPv4 options (not forwarded by policy).
    IpOptions => "ip_options",
    /// Source address that can never be valid (0/8, 127/8, multicast, broadcast, own address).
    MartianSource => "martian_source",
    /// TCP header truncated or data offset inconsistent.
    TcpMalformed => "tcp_malformed",
    /// UDP header truncated or length field inconsistent.
    UdpMalformed => "udp_malformed",
    /// ICMP header truncated, or an ICMP error whose quoted packet cannot be parsed.
    IcmpMalformed => "icmp_malformed",
    /// GRE header truncated.
    GreTruncated => "truncated_gre",
    /// GRE version 1 violating RFC 2637 (K=0, wrong protocol, C/R/s/Recur bits) or version >= 2.
    GreMalformed => "unknown_gre",
    /// IPsec AH cannot survive address translation.
    AhNotTranslatable => "ah_not_translatable",
    /// Non-first IPv4 fragment whose first fragment was not seen.
    FragmentNoFlow => "fragment_no_flow",
    /// Fragment table full: the datagram's later fragments could not be tracked.
    FragmentTableFull => "fragment_table_full",
    /// TTL expired in transit (an ICMP time-exceeded was not sent for it).
    TtlExpired => "ttl_expired",
    /// TCP segment invalid for the connection's state.
    TcpInvalid => "tcp_invalid",
    /// First packet of a TCP connection is not a SYN.
    TcpNewNotSyn => "tcp_new_not_syn",
    /// Packet from the outside matching no connection, translation or forward.
    UnsolicitedInbound => "unsolicited_inbound",
    /// Packet of a known flow arrived on an interface its direction never uses (spoofed).
    WrongInterface => "wrong_interface",
    /// No free outside port (or ICMP id) for a new translation.
    NatPortsExhausted => "nat_ports_exhausted",
    /// Port blocks: the host's blocks are full and it holds all it may.
    NatBlockQuota => "nat_block_quota",
    /// Port blocks: the host's blocks are full and its outside address has no free block.
    NatBlocksExhausted => "nat_blocks_exhausted",
    /// New translation refused: the outside interface has no address yet (`address auto`).
    NoOutsideAddress => "no_outside_address",
    /// Port-less protocol: another inside host holds the translation towards that peer.
    NatPeerTaken => "nat_peer_taken",
    /// Connection table full: new connection refused, existing ones unaffected.
    TableFull => "conntrack_table_full",
    /// ICMP error quoting a packet of no known connection.
    IcmpErrorNoFlow => "icmp_error_no_flow",
    /// Denied by an access list.
    AclDenied => "acl_denied",
    /// Connection limit (global, per host or embryonic) reached.
    ConnLimit => "conn_limit",
    /// Source and destination address are equal (LAND attack).
    LandAttack => "land_attack",
    /// ESP shorter than its SPI and sequence number, or with the reserved SPI 0.
    EspMalformed => "esp_malformed",
    /// Inbound ESP whose SPI no inside host can be matched to.
    EspNoSa => "esp_no_sa",
    /// PPTP GRE (version 1) matching no call.
    NoMatchingGreSession => "no_matching_gre_session",
    /// PPTP control segment out of order (dropped so it is resent in order).
    PptpOutOfOrder => "pptp_out_of_order",
    /// Invalid PPTP control message (policy drop).
    PptpInvalidMessage => "pptp_invalid_message",
    /// PPTP call refused (limits, Call-ID pool); its segment is dropped.
    PptpCallRefused => "pptp_call_refused",
}

crate::counter_family! {
    /// What one worker's engine did with the frames it was given.
    pub struct Traffic: Counter {
        /// Frames handed to the engine.
        rx,
        /// Frames forwarded.
        forwarded,
        /// Frames handed to the host stack.
        to_host,
        /// ICMP errors the engine generated (time exceeded, fragmentation needed).
        icmp_generated,
        /// Connections this worker created.
        flows_created,
        /// Packets that matched an existing connection.
        flow_hits,
        /// TCP/UDP checksums that arrived partial (a sender's transmit checksum offload: only the pseudo-header sum) and were finished before translation.
        l4_csum_completed,
    }
}

/// One worker's counters: its traffic family and a counter per drop reason.
#[derive(Debug)]
pub struct Counters {
    /// What the engine did with the frames.
    pub traffic: Traffic,
    drops: [Counter; DropReason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters { traffic: Traffic::default(), drops: core::array::from_fn(|_| Counter::default()) }
    }
}

impl Counters {
    /// Counts a drop.
    #[inline]
    pub fn count_drop(&self, r: DropReason) {
        self.drops[r as usize].inc();
    }

    /// Drops counted for one reason.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize].get()
    }

    /// All drops, summed.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// Snapshot of the non-zero drop counters.
    pub fn drop_snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.drops(r))).filter(|&(_, n)| n > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &r in DropReason::ALL {
            assert!(seen.insert(r.name()), "duplicate name {}", r.name());
            assert_eq!(DropReason::from_name(r.name()), Some(r));
            assert!(!r.help().is_empty());
        }
        assert_eq!(DropReason::from_name("nope"), None);
    }

    #[test]
    fn counts_per_reason() {
        let c = Counters::default();
        c.count_drop(DropReason::TableFull);
        c.count_drop(DropReason::TableFull);
        c.count_drop(DropReason::AclDenied);
        assert_eq!(c.drops(DropReason::TableFull), 2);
        assert_eq!(c.total_drops(), 3);
        assert_eq!(c.drop_snapshot().len(), 2);
    }
}
