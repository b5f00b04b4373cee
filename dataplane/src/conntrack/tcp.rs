//! TCP connection states, as conntrack users know them, and their transitions.
//!
//! ```text
//!   NONE --SYN(o)--> SYN_SENT --SYN/ACK(r)--> SYN_RECV --ACK(o)--> ESTABLISHED
//!                       |  \--SYN(r)--> SYN_SENT2 --SYN/ACK--> SYN_RECV   |
//!                       |                                                FIN
//!   any --RST--> CLOSE   ESTABLISHED --FIN--> FIN_WAIT --ACK--> CLOSE_WAIT --FIN--> LAST_ACK
//!                                                  \--FIN--> LAST_ACK --ACK--> TIME_WAIT
//!   TIME_WAIT/CLOSE --SYN(o)--> SYN_SENT (the port pair is reused)
//! ```
//!
//! The table follows netfilter's `tcp_conntracks` (nf_conntrack_proto_tcp.c), which is what
//! administrators read in `conntrack -L`: one row per event, one column per state, one
//! table per direction. `Ignore` lets the packet through without a state change; `Invalid`
//! drops it. Sequence-window tracking is not done (see ARCHITECTURE.md).

use crate::wire::tcp::flags;

/// A TCP connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum TcpState {
    /// No packet seen yet.
    None,
    /// SYN seen from the originator.
    SynSent,
    /// SYN/ACK seen from the responder.
    SynRecv,
    /// Three-way handshake done.
    Established,
    /// A FIN seen.
    FinWait,
    /// The FIN was acknowledged; the other side may still send.
    CloseWait,
    /// FINs seen from both sides.
    LastAck,
    /// Both FINs acknowledged.
    TimeWait,
    /// Reset.
    Close,
    /// Simultaneous open: SYN seen from the responder.
    SynSent2,
}

impl TcpState {
    /// The name `conntrack -L` prints.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }

    /// Parses a `conntrack -L` state name.
    pub fn from_name(s: &str) -> Option<TcpState> {
        STATES.iter().copied().find(|st| st.name().eq_ignore_ascii_case(s))
    }
}

/// Every state, in a fixed order (their numbers on the HA sync link are positions here).
pub const STATES: [TcpState; 10] = [
    TcpState::None,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::Established,
    TcpState::FinWait,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::TimeWait,
    TcpState::Close,
    TcpState::SynSent2,
];

/// What a segment's flags mean to the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEvent {
    /// SYN without ACK.
    Syn,
    /// SYN with ACK.
    SynAck,
    /// FIN (with or without ACK).
    Fin,
    /// ACK only.
    Ack,
    /// RST.
    Rst,
    /// No SYN, FIN, RST or ACK: never valid.
    None,
}

impl TcpEvent {
    /// Classifies a segment by its flag bits (RST first, as netfilter does).
    pub fn from_flags(f: u8) -> TcpEvent {
        if f & flags::RST != 0 {
            TcpEvent::Rst
        } else if f & flags::SYN != 0 {
            if f & flags::ACK != 0 {
                TcpEvent::SynAck
            } else {
                TcpEvent::Syn
            }
        } else if f & flags::FIN != 0 {
            TcpEvent::Fin
        } else if f & flags::ACK != 0 {
            TcpEvent::Ack
        } else {
            TcpEvent::None
        }
    }
}

/// The outcome of one transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Move to this state (possibly the same one).
    To(TcpState),
    /// Let the packet pass, keep the state.
    Ignore,
    /// Drop the packet, keep the state.
    Invalid,
}

/// The transition for `event` seen in direction `reply` (false = originator → responder).
pub fn transition(state: TcpState, reply: bool, event: TcpEvent) -> Transition {
    use TcpEvent as E;
    use TcpState::*;
    use Transition::{Ignore as IG, Invalid as IV, To};
    match (reply, event, state) {
        // RST in either direction closes every state but NONE (nothing to reset).
        (_, E::Rst, None) => IV,
        (_, E::Rst, _) => To(Close),
        // Flagless segments are never valid.
        (_, E::None, _) => IV,

        // --- originator -> responder ---
        // SYN opens; a SYN in TIME_WAIT/CLOSE reuses the port pair; retransmitted SYNs stay.
        (false, E::Syn, None | SynSent | TimeWait | Close) => To(SynSent),
        (false, E::Syn, SynSent2) => To(SynSent2),
        (false, E::Syn, _) => IG,
        // A SYN/ACK from the originator only makes sense in a simultaneous open.
        (false, E::SynAck, SynRecv | SynSent2) => To(SynRecv),
        (false, E::SynAck, _) => IV,
        // FIN: closing starts (FIN_WAIT) or completes (LAST_ACK, TIME_WAIT).
        (false, E::Fin, SynRecv | Established) => To(FinWait),
        (false, E::Fin, FinWait | CloseWait | LastAck) => To(LastAck),
        (false, E::Fin, TimeWait) => To(TimeWait),
        (false, E::Fin, Close) => To(Close),
        (false, E::Fin, None | SynSent | SynSent2) => IV,
        // ACK: completes the handshake, acknowledges FINs; NONE+ACK is a mid-stream pickup.
        (false, E::Ack, None | SynRecv | Established) => To(Established),
        (false, E::Ack, FinWait | CloseWait) => To(CloseWait),
        (false, E::Ack, LastAck | TimeWait) => To(TimeWait),
        (false, E::Ack, Close) => To(Close),
        (false, E::Ack, SynSent | SynSent2) => IV,

        // --- responder -> originator ---
        // A SYN from the responder: simultaneous open, or a fresh SYN after TIME_WAIT.
        (true, E::Syn, SynSent | SynSent2) => To(SynSent2),
        (true, E::Syn, TimeWait) => To(SynSent),
        (true, E::Syn, _) => IV,
        // SYN/ACK answers the SYN; later ones are retransmissions.
        (true, E::SynAck, SynSent | SynSent2) => To(SynRecv),
        (true, E::SynAck, None) => IV,
        (true, E::SynAck, _) => IG,
        (true, E::Fin, SynRecv | Established) => To(FinWait),
        (true, E::Fin, FinWait | CloseWait | LastAck) => To(LastAck),
        (true, E::Fin, TimeWait) => To(TimeWait),
        (true, E::Fin, Close) => To(Close),
        (true, E::Fin, None | SynSent | SynSent2) => IV,
        // An ACK from the responder before its SYN/ACK is ignored.
        (true, E::Ack, SynSent | SynSent2) => IG,
        (true, E::Ack, SynRecv) => To(SynRecv),
        (true, E::Ack, Established) => To(Established),
        (true, E::Ack, FinWait | CloseWait) => To(CloseWait),
        (true, E::Ack, LastAck | TimeWait) => To(TimeWait),
        (true, E::Ack, Close) => To(Close),
        (true, E::Ack, None) => IV,
    }
}

#[cfg(test)]
mod tests {
    use super::TcpEvent as E;
    use super::TcpState::*;
    use super::Transition::{Ignore as IG, Invalid as IV, To};
    use super::*;

    // One row per (direction, event): the expected outcome for each state, in the order
    // NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT,
    // CLOSE, SYN_SENT2 — the layout of netfilter's table, so the two can be compared.
    #[rustfmt::skip]
    const TABLE: [(bool, E, [Transition; 10]); 12] = [
        (false, E::Syn,    [To(SynSent), To(SynSent), IG, IG, IG, IG, IG, To(SynSent), To(SynSent), To(SynSent2)]),
        (false, E::SynAck, [IV, IV, To(SynRecv), IV, IV, IV, IV, IV, IV, To(SynRecv)]),
        (false, E::Fin,    [IV, IV, To(FinWait), To(FinWait), To(LastAck), To(LastAck), To(LastAck), To(TimeWait), To(Close), IV]),
        (false, E::Ack,    [To(Established), IV, To(Established), To(Established), To(CloseWait), To(CloseWait), To(TimeWait), To(TimeWait), To(Close), IV]),
        (false, E::Rst,    [IV, To(Close), To(Close), To(Close), To(Close), To(Close), To(Close), To(Close), To(Close), To(Close)]),
        (false, E::None,   [IV; 10]),
        (true,  E::Syn,    [IV, To(SynSent2), IV, IV, IV, IV, IV, To(SynSent), IV, To(SynSent2)]),
        (true,  E::SynAck, [IV, To(SynRecv), IG, IG, IG, IG, IG, IG, IG, To(SynRecv)]),
        (true,  E::Fin,    [IV, IV, To(FinWait), To(FinWait), To(LastAck), To(LastAck), To(LastAck), To(TimeWait), To(Close), IV]),
        (true,  E::Ack,    [IV, IG, To(SynRecv), To(Established), To(CloseWait), To(CloseWait), To(TimeWait), To(TimeWait), To(Close), IG]),
        (true,  E::Rst,    [IV, To(Close), To(Close), To(Close), To(Close), To(Close), To(Close), To(Close), To(Close), To(Close)]),
        (true,  E::None,   [IV; 10]),
    ];

    #[test]
    fn every_transition_matches_the_table() {
        for (reply, ev, row) in TABLE {
            for (st, want) in STATES.iter().zip(row) {
                assert_eq!(transition(*st, reply, ev), want, "state {st:?} reply={reply} event {ev:?}");
            }
        }
    }

    #[test]
    fn events_from_flags() {
        assert_eq!(TcpEvent::from_flags(flags::SYN), E::Syn);
        assert_eq!(TcpEvent::from_flags(flags::SYN | flags::ACK), E::SynAck);
        assert_eq!(TcpEvent::from_flags(flags::FIN | flags::ACK), E::Fin);
        assert_eq!(TcpEvent::from_flags(flags::ACK | flags::PSH), E::Ack);
        assert_eq!(TcpEvent::from_flags(flags::RST | flags::SYN), E::Rst);
        assert_eq!(TcpEvent::from_flags(0), E::None);
    }

    #[test]
    fn names_round_trip() {
        for s in STATES {
            assert_eq!(TcpState::from_name(s.name()), Some(s));
        }
    }
}
