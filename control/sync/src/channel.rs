//! FT-FW reliability (conntrackd's design, written anew): a [`Sender`] that numbers Data
//! messages and keeps them until acknowledged, a [`Receiver`] that acknowledges, asks for gaps
//! and tells the peer's liveness. Sequence numbers compare in serial-number arithmetic (RFC
//! 1982), so they may wrap. Time is passed in.

use std::collections::VecDeque;
use std::time::Duration;

use xgw_dataplane::Time;

use crate::wire::{Kind, Message};

/// True when `a` comes after `b` (RFC 1982 on 32 bits).
pub fn after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// Tuning of the channel.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Data messages kept for resending; a NACK for older ones asks for a resync.
    pub window: usize,
    /// The receiver acknowledges after this many Data messages (and when idle).
    pub ack_every: u32,
    /// An unacknowledged message is sent again after this long.
    pub resend_after: Duration,
    /// A side sends ALIVE after this long without sending anything.
    pub alive_every: Duration,
    /// The peer counts as gone after this long without a message from it.
    pub dead_after: Duration,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            window: 4096,
            ack_every: 16,
            resend_after: Duration::from_millis(200),
            alive_every: Duration::from_millis(100),
            dead_after: Duration::from_millis(1000),
        }
    }
}

/// The sending half.
#[derive(Debug)]
pub struct Sender {
    p: Params,
    session: u32,
    first: u32,
    next: u32,
    /// (sequence number, message, last sent)
    held: VecDeque<(u32, Message, Time)>,
    /// The newest message given up unacknowledged because the window was full.
    evicted: Option<u32>,
    last_sent: Time,
    /// Data messages sent again (after a NACK or a silence).
    pub resent: u64,
    /// Data messages the peer acknowledged.
    pub acked: u64,
    /// NACKs that asked for messages no longer held.
    pub too_old: u64,
}

/// What the sender must do after an acknowledgement field arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderAction {
    /// Nothing.
    None,
    /// Send these again.
    Resend(Vec<Message>),
    /// The peer lost messages no longer held: send it everything (a bulk resync).
    Resync,
}

impl Sender {
    /// A sender whose messages carry `session` (random: it tells a restarted sender from a
    /// late message of the last one) and whose first Data message is numbered `first`;
    /// send [`Sender::hello`] first.
    pub fn new(p: Params, session: u32, first: u32, now: Time) -> Sender {
        Sender {
            p,
            session,
            first,
            next: first,
            held: VecDeque::new(),
            evicted: None,
            last_sent: now,
            resent: 0,
            acked: 0,
            too_old: 0,
        }
    }

    /// The HELLO that (re)starts the peer's expectations.
    pub fn hello(&mut self, now: Time) -> Message {
        self.last_sent = now;
        Message::control(Kind::Hello, self.first, 0, self.session)
    }

    /// Numbers a payload of records and keeps it until acknowledged. When the window is
    /// full the oldest is given up (a later NACK for it asks for a resync).
    pub fn data(&mut self, payload: Vec<u8>, now: Time) -> Message {
        let m = Message { kind: Kind::Data, seq: self.next, a: 0, b: self.session, payload };
        self.next = self.next.wrapping_add(1);
        if self.held.len() >= self.p.window {
            self.evicted = self.held.pop_front().map(|(s, _, _)| s);
        }
        self.held.push_back((m.seq, m.clone(), now));
        self.last_sent = now;
        m
    }

    /// Messages sent but not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.held.len()
    }

    /// When the oldest message not acknowledged yet was (last) sent.
    pub fn oldest_unacked(&self) -> Option<Time> {
        self.held.front().map(|(_, _, t)| *t)
    }

    /// An ACK: everything up to `upto` arrived.
    pub fn on_ack(&mut self, upto: u32) {
        while self.held.front().is_some_and(|(s, _, _)| !after(*s, upto)) {
            self.held.pop_front();
            self.acked += 1;
        }
    }

    /// A NACK for `from..=to`.
    pub fn on_nack(&mut self, from: u32, to: u32, now: Time) -> SenderAction {
        if after(from, to) || !after(self.next, to) {
            return SenderAction::None; // nonsense or from the future: ignore
        }
        // (a NACK says nothing of what came before `from`: other gaps may still be open)
        if self.evicted.is_some_and(|e| !after(from, e)) {
            self.too_old += 1;
            return SenderAction::Resync;
        }
        let mut out = Vec::new();
        for (s, m, t) in self.held.iter_mut() {
            if !after(from, *s) && !after(*s, to) {
                *t = now;
                out.push(m.clone());
            }
        }
        self.resent += out.len() as u64;
        self.last_sent = now;
        SenderAction::Resend(out)
    }

    /// Periodic work: the oldest unacknowledged message again if it waited too long (the
    /// receiver may have lost the last ones, leaving it nothing to NACK), else ALIVE when
    /// idle.
    pub fn tick(&mut self, now: Time) -> Option<Message> {
        if let Some((_, m, t)) = self.held.front_mut() {
            if now.since(*t) >= self.p.resend_after {
                *t = now;
                self.resent += 1;
                self.last_sent = now;
                return Some(m.clone());
            }
        }
        if now.since(self.last_sent) >= self.p.alive_every {
            self.last_sent = now;
            return Some(Message::control(Kind::Alive, self.next, self.first, self.session));
        }
        None
    }
}

/// The receiving half's view of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Nothing heard yet (or not since it went away).
    Unknown,
    /// Heard within `dead_after`.
    Alive,
    /// Silent for longer than `dead_after`.
    Gone,
}

/// What to do with an arriving message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Apply this Data message's records.
    pub apply: bool,
    /// Send these (ACK, NACK).
    pub reply: Vec<Message>,
}

/// The receiving half.
#[derive(Debug)]
pub struct Receiver {
    p: Params,
    session: Option<u32>,
    expect: Option<u32>,
    /// Sequence numbers asked for and not yet arrived.
    missing: std::collections::BTreeSet<u32>,
    since_ack: u32,
    last_heard: Option<Time>,
    last_nack: Time,
    /// Data messages that arrived a second time (ignored).
    pub duplicates: u64,
    /// Gaps asked for with a NACK.
    pub nacks: u64,
    /// Gaps too large to ask for: a bulk resync was requested instead.
    pub resyncs: u64,
}

impl Receiver {
    /// A receiver that has heard nothing.
    pub fn new(p: Params) -> Receiver {
        Receiver {
            p,
            session: None,
            expect: None,
            missing: Default::default(),
            since_ack: 0,
            last_heard: None,
            last_nack: Time::ZERO,
            duplicates: 0,
            nacks: 0,
            resyncs: 0,
        }
    }

    /// The peer's liveness at `now`.
    pub fn peer(&self, now: Time) -> PeerState {
        match self.last_heard {
            None => PeerState::Unknown,
            Some(t) if now.since(t) > self.p.dead_after => PeerState::Gone,
            Some(_) => PeerState::Alive,
        }
    }

    /// The sender's session this receiver follows (none heard yet).
    pub fn session(&self) -> Option<u32> {
        self.session
    }

    /// Messages asked for and still missing.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    fn ack(&mut self) -> Message {
        self.since_ack = 0;
        // everything before the first still missing (or before the next expected) arrived
        let upto = self.missing.iter().next().copied().or(self.expect).unwrap_or(0).wrapping_sub(1);
        Message::control(Kind::Ack, 0, upto, 0)
    }

    /// `from..=to` did not arrive: NACK it, or ask for a resync when it is more than the
    /// sender keeps.
    fn gap(&mut self, from: u32, to: u32, now: Time) -> Message {
        let n = to.wrapping_sub(from) as usize + 1;
        if n + self.missing.len() > self.p.window {
            self.missing.clear();
            self.resyncs += 1;
            return Message::control(Kind::Resync, 0, 0, 0);
        }
        let mut s = from;
        for _ in 0..n {
            self.missing.insert(s);
            s = s.wrapping_add(1);
        }
        self.nacks += 1;
        self.last_nack = now;
        Message::control(Kind::Nack, 0, from, to)
    }

    /// Periodic work: gaps still open after `resend_after` are asked for again (the NACK
    /// or the resent messages may have been lost too).
    pub fn tick(&mut self, now: Time) -> Option<Message> {
        let (&first, &last) = (self.missing.first()?, self.missing.last()?);
        if now.since(self.last_nack) < self.p.resend_after {
            return None;
        }
        self.last_nack = now;
        self.nacks += 1;
        Some(Message::control(Kind::Nack, 0, first, last))
    }

    /// A message from the peer (already decoded and authenticated).
    pub fn on_message(&mut self, m: &Message, now: Time) -> Received {
        self.last_heard = Some(now);
        let mut reply = Vec::new();
        if matches!(m.kind, Kind::Hello | Kind::Data | Kind::Alive) && self.session != Some(m.b) {
            // another session of the sender (a restart): forget the last one's numbers
            self.session = Some(m.b);
            self.expect = None;
            self.missing.clear();
            self.since_ack = 0;
        }
        let apply = match (m.kind, self.expect) {
            (Kind::Hello, None) => {
                self.expect = Some(m.seq);
                false
            }
            // a late or repeated HELLO of this session
            (Kind::Hello, Some(_)) => false,
            // the HELLO was lost and maybe more: count from here, and ask for everything
            (Kind::Data, None) => {
                self.expect = Some(m.seq.wrapping_add(1));
                self.resyncs += 1;
                reply.push(Message::control(Kind::Resync, 0, 0, 0));
                true
            }
            // no HELLO, but the ALIVE tells where the sender started (`a`)
            (Kind::Alive, None) => {
                self.expect = Some(m.seq);
                if m.a != m.seq {
                    self.resyncs += 1;
                    reply.push(Message::control(Kind::Resync, 0, 0, 0));
                }
                false
            }
            (Kind::Data, Some(e)) if m.seq == e => {
                self.expect = Some(e.wrapping_add(1));
                self.since_ack += 1;
                if self.since_ack >= self.p.ack_every {
                    reply.push(self.ack());
                }
                true
            }
            (Kind::Data, Some(e)) if after(m.seq, e) => {
                // a gap: ask for it, and apply this one (records are idempotent)
                reply.push(self.gap(e, m.seq.wrapping_sub(1), now));
                self.expect = Some(m.seq.wrapping_add(1));
                true
            }
            (Kind::Data, Some(_)) => {
                // one asked for fills its gap; anything else is a duplicate, whose records
                // may be older than what came since: not applied
                let filled = self.missing.remove(&m.seq);
                if !filled {
                    self.duplicates += 1;
                }
                reply.push(self.ack());
                filled
            }
            (Kind::Alive, Some(e)) => {
                // the sender's next number tells of losses at the end
                if after(m.seq, e) {
                    reply.push(self.gap(e, m.seq.wrapping_sub(1), now));
                    self.expect = Some(m.seq);
                } else if self.since_ack > 0 {
                    reply.push(self.ack());
                }
                false
            }
            (Kind::Ack | Kind::Nack | Kind::Resync, _) => false,
        };
        Received { apply, reply }
    }
}
