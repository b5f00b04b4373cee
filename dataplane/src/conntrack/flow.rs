//! One flow: its two keys, two rewrites and their checksum differences, its L4 state, its
//! kind and status bits, and the events the table emits about it.

use core::hash::{Hash, Hasher};
use core::time::Duration;

use crate::config::{IfaceId, Timeouts};
use crate::time::Time;
use tcp::TcpState;

use super::*;

/// What a packet looks like to the table: addresses, protocol and two 16-bit
/// discriminators. TCP/UDP: ports. ICMP queries: the identifier in `sport`, 0 in `dport`.
/// PPTP GRE: 0 in `sport`, the Call ID (key) in `dport`. Other protocols: both 0.
///
/// Packed to 2-byte alignment: 14 bytes instead of 16, so a flow's two keys and two
/// rewrites leave room in its slot for everything else (see [`Flow`]). x86-64 and arm64
/// read the unaligned addresses at full speed; fields are read by value, never borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[repr(C, packed(2))]
pub struct FlowKey {
    /// Source address (host order).
    pub src: u32,
    /// Destination address (host order).
    pub dst: u32,
    /// Source port / ICMP id.
    pub sport: u16,
    /// Destination port / GRE key.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

/// A TCP segment the connection's state does not allow (counted `tcp_invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSegment;

impl FlowKey {
    /// The key of the opposite direction when nothing is translated.
    pub fn mirror(&self) -> FlowKey {
        use crate::wire::proto;
        let k = self;
        match k.proto {
            proto::TCP | proto::UDP => {
                FlowKey { src: k.dst, dst: k.src, sport: k.dport, dport: k.sport, proto: k.proto }
            }
            proto::ICMP => FlowKey { src: k.dst, dst: k.src, sport: k.sport, dport: 0, proto: k.proto },
            _ => FlowKey { src: k.dst, dst: k.src, sport: 0, dport: 0, proto: k.proto },
        }
    }
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((u64::from(self.src) << 32) | u64::from(self.dst));
        state.write_u64((u64::from(self.sport) << 24) | (u64::from(self.dport) << 8) | u64::from(self.proto));
    }
}

/// A flow's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Dir {
    /// Originator → responder (the packet that created the flow).
    Orig = 0,
    /// Responder → originator.
    Reply = 1,
}

impl Dir {
    /// Array index.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The other direction.
    pub fn opposite(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
}

/// How a direction's packets leave the gateway: the values every rewritable field must
/// hold, and the egress interface. Data only: applying it needs no policy. Packed to
/// 2-byte alignment like [`FlowKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[repr(C, packed(2))]
pub struct Rewrite {
    /// New source address.
    pub src: u32,
    /// New destination address.
    pub dst: u32,
    /// New source port / ICMP id.
    pub sport: u16,
    /// New destination port / GRE key.
    pub dport: u16,
    /// Interface to transmit on.
    pub egress: IfaceId,
}

impl Rewrite {
    /// The key a packet leaving with this rewrite carries.
    pub fn as_key(&self, proto: u8) -> FlowKey {
        FlowKey { src: self.src, dst: self.dst, sport: self.sport, dport: self.dport, proto }
    }
}

/// The checksum differences a direction's rewrite makes, precomputed from the key its
/// packets arrive with (the old values) and its [`Rewrite`] (the new ones): RFC 1624
/// `Σ(~old + new)` over the changed 16-bit words, folded. A packet of the direction gets
/// its checksums adjusted by one addition each, in the engine and in the XDP fast path
/// alike, so both produce the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CsumDelta {
    /// IPv4 header: addresses, and the TTL decrement of forwarding.
    pub ip: u16,
    /// L4 checksum: TCP/UDP pseudo-header addresses and ports; ICMP query identifier.
    pub l4: u16,
}

impl CsumDelta {
    /// The differences for packets arriving with `key` and leaving with `rw`. Computed for
    /// every packet of a flow ([`Flow::csum`]), so without a branch or a fold per word: each
    /// changed word adds `~old + new` to one 32-bit sum (an unchanged one adds nothing, as in
    /// [`crate::checksum::Delta::word`]) and the sum is folded once. One's complement
    /// addition is associative and a fold maps a non-zero sum to its residue in 1..=0xffff,
    /// so this gives exactly what folding after every word gives.
    #[inline]
    pub fn between(key: &FlowKey, rw: &Rewrite) -> CsumDelta {
        use crate::checksum::fold;
        #[inline(always)]
        fn term(old: u16, new: u16) -> u32 {
            (u32::from(!old) + u32::from(new)) & u32::from(old != new).wrapping_neg()
        }
        #[inline(always)]
        fn addr(old: u32, new: u32) -> u32 {
            term((old >> 16) as u16, (new >> 16) as u16) + term(old as u16, new as u16)
        }
        let (ks, kd, rs, rd) = (key.src, key.dst, rw.src, rw.dst);
        let addrs = addr(ks, rs) + addr(kd, rd);
        // TTL is the high byte of the word it shares with the protocol: minus 0x0100
        let ip = addrs + term(0x0100, 0);
        let l4 = match key.proto {
            crate::wire::proto::TCP | crate::wire::proto::UDP => {
                addrs + term(key.sport, rw.sport) + term(key.dport, rw.dport)
            }
            crate::wire::proto::ICMP => term(key.sport, rw.sport),
            _ => 0,
        };
        CsumDelta { ip: fold(ip), l4: fold(l4) }
    }
}

/// Per-protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum L4State {
    /// TCP with its connection state.
    Tcp(TcpState),
    /// UDP.
    Udp,
    /// ICMP query (echo, timestamp).
    Icmp,
    /// Any other protocol, tracked by addresses only (or by GRE key for PPTP).
    Other,
}

/// Why the flow exists / which translation it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FlowKind {
    /// Inside → outside with the source translated (PAT).
    Snat,
    /// Outside → inside through a static forward.
    Dnat,
    /// Inside → a forward on the outside address, back inside.
    Hairpin,
    /// Between inside interfaces, not translated.
    Routed,
    /// Created by an application gateway (a PPTP call's GRE).
    Related,
}

/// Flow status bits.
pub mod status {
    /// A packet was seen in the reply direction.
    pub const SEEN_REPLY: u8 = 1;
    /// The flow is assured (TCP handshake done / UDP both ways): kept under pressure.
    pub const ASSURED: u8 = 2;
    /// A PPTP control connection the inspector follows.
    pub const ALG_PPTP: u8 = 4;
    /// Counted against its inside host's connection limit.
    pub const HOST_COUNTED: u8 = 8;
    /// A half-open TCP connection counted against its host's embryonic limit.
    pub const EMBRYONIC: u8 = 16;
    /// Handed to the fast path (requested or installed): its packets may bypass the engine.
    pub const OFFLOAD: u8 = 32;
}

/// One tracked flow, 120 bytes, so that with its lock it fills two cache lines exactly.
/// Laid out (`repr(C)`) with what every packet reads or writes first — keys, rewrites,
/// state, counters, last-seen — and what only the control plane reads last. The checksum
/// differences of each direction's rewrite are derived when used ([`Flow::csum`]).
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[repr(C)]
pub struct Flow {
    /// The key each direction's packets carry on arrival, `[orig, reply]`.
    pub keys: [FlowKey; 2],
    /// What each direction's packets leave with.
    pub rewrite: [Rewrite; 2],
    /// Per-protocol state.
    pub l4: L4State,
    /// [`status`] bits.
    pub status: u8,
    /// What kind of translation.
    pub kind: FlowKind,
    /// Id of the rule that admitted it (0 = implicit).
    pub rule: u32,
    /// Packets per direction.
    pub packets: [u64; 2],
    /// Bytes (IP length) per direction.
    pub bytes: [u64; 2],
    /// When its last packet was seen.
    pub last_seen: Time,
    /// When the flow was created.
    pub created: Time,
    /// Stable id for listings and events.
    pub id: u64,
}

impl Flow {
    /// A new flow with zeroed counters.
    pub fn new(keys: [FlowKey; 2], rewrite: [Rewrite; 2], l4: L4State, kind: FlowKind, now: Time) -> Flow {
        Flow {
            id: 0,
            keys,
            rewrite,
            l4,
            status: 0,
            kind,
            packets: [0; 2],
            bytes: [0; 2],
            created: now,
            last_seen: now,
            rule: 0,
        }
    }

    /// The checksum differences of direction `d`'s rewrite ([`CsumDelta::between`] its key
    /// and its rewrite). Derived on use rather than stored: a few additions in registers
    /// against eight bytes in every slot (what keeps a slot within two cache lines).
    #[inline]
    pub fn csum(&self, d: usize) -> CsumDelta {
        CsumDelta::between(&self.keys[d], &self.rewrite[d])
    }

    /// IP protocol.
    pub fn proto(&self) -> u8 {
        self.keys[0].proto
    }

    /// True once a reply was seen.
    pub fn seen_reply(&self) -> bool {
        self.status & status::SEEN_REPLY != 0
    }

    /// The inside host the flow is counted against (per-host limits, `xgwctl host`): the
    /// forward's server for a connection coming in through a forward, the source otherwise.
    pub fn inside_host(&self) -> u32 {
        match self.kind {
            FlowKind::Dnat => self.rewrite[0].dst,
            _ => self.keys[0].src,
        }
    }

    /// True when assured.
    pub fn assured(&self) -> bool {
        self.status & status::ASSURED != 0
    }

    /// The idle timeout that applies in the current state.
    pub fn timeout(&self, t: &Timeouts) -> Duration {
        match self.l4 {
            L4State::Tcp(s) => match s {
                TcpState::None | TcpState::SynSent | TcpState::SynSent2 => t.tcp_syn_sent,
                TcpState::SynRecv => t.tcp_syn_recv,
                TcpState::Established => t.tcp_established,
                TcpState::FinWait => t.tcp_fin_wait,
                TcpState::CloseWait => t.tcp_close_wait,
                TcpState::LastAck => t.tcp_last_ack,
                TcpState::TimeWait => t.tcp_time_wait,
                TcpState::Close => t.tcp_close,
            },
            L4State::Udp if self.seen_reply() => t.udp_stream,
            L4State::Udp => t.udp_unreplied,
            L4State::Icmp => t.icmp,
            L4State::Other if self.kind == FlowKind::Related => t.pptp_gre,
            L4State::Other => t.generic,
        }
    }

    /// Time left before expiry at `now` (zero when expired).
    pub fn remaining(&self, now: Time, t: &Timeouts) -> Duration {
        self.last_seen.plus(self.timeout(t)).since(now)
    }

    /// True when idle longer than its timeout.
    pub fn expired(&self, now: Time, t: &Timeouts) -> bool {
        now > self.last_seen.plus(self.timeout(t))
    }

    /// Counts a packet of direction `dir` (its TCP flags, `len` bytes of IP packet) at
    /// `now`: the TCP state machine's transition (a port pair reused after TIME_WAIT starts
    /// a new connection on the old mapping), assured and seen-reply status, packets, bytes,
    /// last seen. True when the flow just left the embryonic (half-open) count, which the
    /// caller keeps per inside host. An invalid TCP transition changes nothing.
    pub fn count_packet(&mut self, dir: Dir, tcp_flags: u8, len: u16, now: Time) -> Result<bool, InvalidSegment> {
        use tcp::{transition, TcpEvent, Transition};
        let mut left_embryonic = false;
        if let L4State::Tcp(state) = self.l4 {
            match transition(state, dir == Dir::Reply, TcpEvent::from_flags(tcp_flags)) {
                Transition::Invalid => return Err(InvalidSegment),
                Transition::Ignore => {}
                Transition::To(next) => {
                    if next == TcpState::SynSent && matches!(state, TcpState::TimeWait | TcpState::Close) {
                        // (OFFLOAD stays until the fast path has given the flow back)
                        self.status &= status::ALG_PPTP | status::HOST_COUNTED | status::EMBRYONIC | status::OFFLOAD;
                        self.created = now;
                    }
                    self.l4 = L4State::Tcp(next);
                    if self.status & status::EMBRYONIC != 0
                        && !matches!(next, TcpState::SynSent | TcpState::SynRecv | TcpState::SynSent2)
                    {
                        self.status &= !status::EMBRYONIC;
                        left_embryonic = true;
                    }
                    if next == TcpState::Established && self.seen_reply() {
                        self.status |= status::ASSURED;
                    }
                }
            }
        } else if self.seen_reply() && self.l4 == L4State::Udp {
            self.status |= status::ASSURED;
        }
        if dir == Dir::Reply {
            self.status |= status::SEEN_REPLY;
        }
        let d = dir.index();
        self.packets[d] += 1;
        self.bytes[d] += u64::from(len);
        self.last_seen = now;
        Ok(left_embryonic)
    }
}

/// Where a flow lives and which of its directions a key named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRef(pub(crate) u32);

impl FlowRef {
    pub(super) fn new(slot: u32, dir: Dir) -> FlowRef {
        FlowRef((slot << 1) | dir as u32)
    }

    /// Slot index.
    pub fn slot(self) -> u32 {
        self.0 >> 1
    }

    /// Direction.
    pub fn dir(self) -> Dir {
        if self.0 & 1 == 0 {
            Dir::Orig
        } else {
            Dir::Reply
        }
    }
}

/// A connection event, for `watch` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EventKind {
    /// A flow was created.
    New,
    /// A flow was removed (expired, torn down, deleted).
    Destroy,
}

/// One event with the flow as it was.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FlowEvent {
    /// New or destroy.
    pub kind: EventKind,
    /// The flow.
    pub flow: Flow,
    /// When.
    pub at: Time,
}

#[cfg(test)]
mod tests {
    use super::{CsumDelta, FlowKey, Rewrite};
    use crate::checksum::Delta;
    use crate::wire::proto;
    use proptest::prelude::*;

    /// The differences as `Delta` builds them, a fold after every word: the reference.
    fn word_by_word(key: &FlowKey, rw: &Rewrite) -> CsumDelta {
        let addrs = Delta::NONE.addr(key.src, rw.src).addr(key.dst, rw.dst);
        let l4 = match key.proto {
            proto::TCP | proto::UDP => addrs.word(key.sport, rw.sport).word(key.dport, rw.dport),
            proto::ICMP => Delta::NONE.word(key.sport, rw.sport),
            _ => Delta::NONE,
        };
        CsumDelta { ip: addrs.word(0x0100, 0).raw(), l4: l4.raw() }
    }

    /// Words drawn from a few values, so that unchanged words (which add nothing) and
    /// changes that cancel out come up often, as well as arbitrary ones.
    fn word() -> impl Strategy<Value = u16> {
        prop_oneof![Just(0u16), Just(0xffff), Just(0x0100), 0u16..4, any::<u16>()]
    }

    fn addr() -> impl Strategy<Value = u32> {
        (word(), word()).prop_map(|(h, l)| (u32::from(h) << 16) | u32::from(l))
    }

    proptest! {
        #[test]
        fn one_fold_at_the_end_equals_a_fold_per_word(
            (src, dst, sport, dport) in (addr(), addr(), word(), word()),
            (nsrc, ndst, nsport, ndport) in (addr(), addr(), word(), word()),
            p in prop_oneof![Just(proto::TCP), Just(proto::UDP), Just(proto::ICMP), Just(proto::GRE), any::<u8>()],
        ) {
            let key = FlowKey { src, dst, sport, dport, proto: p };
            let rw = Rewrite { src: nsrc, dst: ndst, sport: nsport, dport: ndport, ..Rewrite::default() };
            prop_assert_eq!(CsumDelta::between(&key, &rw), word_by_word(&key, &rw));
            // a rewrite that changes nothing leaves the checksums alone but for the TTL
            let same = Rewrite { src, dst, sport, dport, ..Rewrite::default() };
            prop_assert_eq!(CsumDelta::between(&key, &same).l4, 0);
        }
    }
}
