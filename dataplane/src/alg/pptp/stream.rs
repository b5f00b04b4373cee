//! One direction of a PPTP control connection: finds message boundaries in the TCP byte
//! stream and rewrites Call-ID fields in place.
//!
//! The parser follows the stream by sequence number. Bytes it has already parsed can come
//! again (retransmissions); it rewrites them exactly as the first time from a small record
//! of the bytes it changed, so a rewrite is a pure function of the stream offset. A
//! segment that starts beyond the next expected byte (out of order) is refused: dropping
//! it makes the sender retransmit in order, and nothing is buffered. Messages may be split
//! anywhere — even between the two bytes of a Call ID — or packed several to a segment.

use super::msg::{self, check_header, Field, Invalid, MsgType, Side, HEADER_LEN, KEEP};

/// What the stream asks of the call logic.
pub trait Translator {
    /// The first byte of a rewritable field has arrived (`lo` is the second one when it is
    /// in the same segment). Returns the value to write, or `None` to leave the field.
    fn decide(&mut self, msg: MsgType, field: Field, hi: u8, lo: Option<u8>) -> Option<u16>;
    /// Both bytes of the field are known: its original value and what was written.
    fn field_done(&mut self, msg: MsgType, field: Field, orig: u16, written: Option<u16>);
    /// A complete message was seen; `head` holds its first bytes as they arrived.
    fn message(&mut self, msg: MsgType, head: &[u8]);
    /// True when the last `decide` refused the message (a new call over a limit).
    fn refused(&self) -> bool {
        false
    }
}

/// How a segment went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegOutcome {
    /// Forward it (possibly rewritten).
    Pass,
    /// It starts beyond the next expected byte: drop it, the sender will resend in order.
    OutOfOrder,
    /// A message header in it is invalid; the stream stays before that message.
    Invalid(Invalid),
    /// The call logic refused a message (a new call over a limit); the stream stays before
    /// it, so its retransmission is decided again.
    Refused,
}

/// A byte the stream changed, for checksum adjustment: offset in the payload, old, new.
pub type Change = (usize, u8, u8);

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ByteRecord {
    pub(super) seq: u32,
    pub(super) new: u8,
    pub(super) used: bool,
}

pub(super) const RECORDS: usize = 32;

/// Whether the parser knows where messages start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum StreamSync {
    /// The stream's first sequence number is not known yet (no SYN seen).
    Unsynced,
    /// Following message boundaries.
    Synced,
    /// Gave up after an invalid message (log-only policy): bytes pass uninspected.
    Desynced,
}

/// One direction's parser state.
#[derive(Debug, Clone)]
pub struct Stream {
    pub(super) side: Side,
    pub(super) sync: StreamSync,
    /// The receiver's first acknowledgement fixed where the stream starts: from then on
    /// neither a SYN nor an acknowledgement moves it (a stray or forged SYN-ACK, or an ACK
    /// number flipped in transit, would otherwise make the parser skip real messages).
    pub(super) confirmed: bool,
    /// Sequence number of the stream's first data byte (where `start` put it).
    pub(super) first: u32,
    pub(super) next: u32,
    pub(super) msg_start: u32,
    pub(super) head: [u8; KEEP],
    pub(super) msg: Option<(MsgType, usize)>,
    pub(super) field: Option<(usize, Field)>,
    pub(super) repl: Option<u16>,
    pub(super) field_hi: u8,
    pub(super) records: [ByteRecord; RECORDS],
    pub(super) rec_pos: usize,
}

fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Stream {
    /// A parser for messages travelling `side`, not yet synchronised.
    pub fn new(side: Side) -> Stream {
        Stream {
            side,
            sync: StreamSync::Unsynced,
            confirmed: false,
            first: 0,
            next: 0,
            msg_start: 0,
            head: [0; KEEP],
            msg: None,
            field: None,
            repl: None,
            field_hi: 0,
            records: [ByteRecord::default(); RECORDS],
            rec_pos: 0,
        }
    }

    /// Starts following the stream: its first data byte has sequence number `seq`
    /// (the SYN's sequence number plus one).
    pub fn start(&mut self, seq: u32) {
        self.sync = StreamSync::Synced;
        self.confirmed = false;
        self.first = seq;
        self.next = seq;
        self.msg_start = seq;
        self.msg = None;
    }

    /// True when the stream is followed but none of its bytes has been parsed yet: its
    /// start may still be corrected (a SYN-ACK that never reached the client, answered by
    /// another with a new initial sequence number, as a server under SYN-cookie load does).
    pub fn untouched(&self) -> bool {
        self.sync == StreamSync::Synced && self.next == self.first && self.msg.is_none()
    }

    /// True while a SYN may still (re)start the stream: nothing parsed, not confirmed.
    pub fn restartable(&self) -> bool {
        self.sync == StreamSync::Unsynced || (self.untouched() && !self.confirmed)
    }

    /// The sender's SYN (or SYN-ACK) with sequence number `seq`: starts the stream after
    /// it while [`Stream::restartable`].
    pub fn syn(&mut self, seq: u32) {
        if self.restartable() {
            self.start(seq.wrapping_add(1));
        }
    }

    /// The receiver acknowledged `ack`: the first acknowledgement of a stream that carried
    /// no data yet says where it starts (correcting a SYN-ACK that was seen here and then
    /// lost, answered by another with a new initial sequence number, as a server under
    /// SYN-cookie load does); later ones change nothing.
    pub fn acknowledged(&mut self, ack: u32) {
        if self.untouched() && !self.confirmed {
            if self.next != ack {
                self.start(ack);
            }
            self.confirmed = true;
        }
    }

    /// Stops inspecting (log-only policy after an invalid message).
    pub fn desync(&mut self) {
        self.sync = StreamSync::Desynced;
    }

    /// Synchronisation state.
    pub fn sync(&self) -> StreamSync {
        self.sync
    }

    /// Sequence number of the next byte to parse.
    pub fn next_seq(&self) -> u32 {
        self.next
    }

    fn record(&mut self, seq: u32, new: u8) {
        self.records[self.rec_pos] = ByteRecord { seq, new, used: true };
        self.rec_pos = (self.rec_pos + 1) % RECORDS;
    }

    fn write(&mut self, payload: &mut [u8], p: usize, seq: u32, new: u8, changes: &mut Vec<Change>) {
        if payload[p] != new {
            changes.push((p, payload[p], new));
            payload[p] = new;
        }
        self.record(seq, new);
    }

    /// Parses and rewrites one segment with sequence number `seq`. Changed bytes are
    /// appended to `changes`.
    pub fn process(
        &mut self,
        seq: u32,
        payload: &mut [u8],
        tr: &mut impl Translator,
        changes: &mut Vec<Change>,
    ) -> SegOutcome {
        if payload.is_empty() || self.sync != StreamSync::Synced {
            return SegOutcome::Pass;
        }
        let Ok(len) = u32::try_from(payload.len()) else { return SegOutcome::Pass };
        let end = seq.wrapping_add(len);
        // offsets from the stream's first byte: a segment starting beyond the next expected
        // byte, or before the first one (bytes never parsed), cannot be inspected
        if seq.wrapping_sub(self.first) > self.next.wrapping_sub(self.first) {
            return SegOutcome::OutOfOrder;
        }
        if before(seq, self.next) {
            // bytes parsed before: rewrite them as the first time
            for r in self.records {
                if r.used && !before(r.seq, seq) && before(r.seq, end) && before(r.seq, self.next) {
                    let i = r.seq.wrapping_sub(seq) as usize;
                    if payload[i] != r.new {
                        changes.push((i, payload[i], r.new));
                        payload[i] = r.new;
                    }
                }
            }
            if !before(self.next, end) {
                return SegOutcome::Pass;
            }
        }
        let mut p = self.next.wrapping_sub(seq) as usize;
        while p < payload.len() {
            let s = seq.wrapping_add(p as u32);
            let off = s.wrapping_sub(self.msg_start) as usize;
            let Some((t, mlen)) = self.msg else {
                // collecting the common header
                let n = (HEADER_LEN - off).min(payload.len() - p);
                self.head[off..off + n].copy_from_slice(&payload[p..p + n]);
                p += n;
                if off + n == HEADER_LEN {
                    match check_header(&self.head) {
                        Ok((t, mlen)) => {
                            self.msg = Some((t, mlen));
                            self.field = msg::rewrite_field(t, self.side);
                            self.repl = None;
                        }
                        Err(why) => {
                            // stay before this message: a retransmission parses it again
                            self.next = self.msg_start;
                            return SegOutcome::Invalid(why);
                        }
                    }
                }
                continue;
            };
            match self.field {
                Some((foff, kind)) if off == foff => {
                    let hi = payload[p];
                    let lo = payload.get(p + 1).copied();
                    self.head[off] = hi;
                    self.field_hi = hi;
                    self.repl = tr.decide(t, kind, hi, lo);
                    if tr.refused() {
                        self.next = self.msg_start;
                        self.msg = None;
                        self.field = None;
                        return SegOutcome::Refused;
                    }
                    if let Some(r) = self.repl {
                        self.write(payload, p, s, (r >> 8) as u8, changes);
                    }
                    p += 1;
                    continue;
                }
                Some((foff, kind)) if off == foff + 1 => {
                    let lo = payload[p];
                    self.head[off] = lo;
                    if let Some(r) = self.repl {
                        self.write(payload, p, s, r as u8, changes);
                    }
                    tr.field_done(t, kind, u16::from_be_bytes([self.field_hi, lo]), self.repl);
                    p += 1;
                }
                _ => {
                    if off < KEEP {
                        self.head[off] = payload[p];
                        p += 1;
                    } else {
                        // nothing more to read in this message: skip to its end
                        p += (mlen - off).min(payload.len() - p);
                    }
                }
            }
            let now_off = seq.wrapping_add(p as u32).wrapping_sub(self.msg_start) as usize;
            if now_off == mlen {
                tr.message(t, &self.head[..mlen.min(KEEP)]);
                self.msg_start = seq.wrapping_add(p as u32);
                self.msg = None;
                self.field = None;
            }
        }
        self.next = end;
        SegOutcome::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Translates by adding 0x1000 and records everything it is told.
    #[derive(Default)]
    struct Log {
        decided: Vec<(MsgType, u8, Option<u8>)>,
        done: Vec<(MsgType, u16, Option<u16>)>,
        messages: Vec<MsgType>,
    }

    impl Translator for Log {
        fn decide(&mut self, m: MsgType, _: Field, hi: u8, lo: Option<u8>) -> Option<u16> {
            self.decided.push((m, hi, lo));
            Some(0xab00 | u16::from(hi))
        }
        fn field_done(&mut self, m: MsgType, _: Field, orig: u16, w: Option<u16>) {
            self.done.push((m, orig, w));
        }
        fn message(&mut self, m: MsgType, _: &[u8]) {
            self.messages.push(m);
        }
    }

    fn run(s: &mut Stream, log: &mut Log, seq: u32, data: &[u8]) -> (Vec<u8>, SegOutcome) {
        let mut buf = data.to_vec();
        let mut ch = Vec::new();
        let o = s.process(seq, &mut buf, log, &mut ch);
        for (i, old, new) in ch {
            assert_eq!(data[i], old);
            assert_eq!(buf[i], new);
        }
        (buf, o)
    }

    #[test]
    fn whole_message_rewritten() {
        let mut s = Stream::new(Side::FromPns);
        s.start(1000);
        let mut log = Log::default();
        let m = msg::build(MsgType::Ocrq, &[(12, 0x0102)]);
        let (out, o) = run(&mut s, &mut log, 1000, &m);
        assert_eq!(o, SegOutcome::Pass);
        assert_eq!(&out[12..14], &[0xab, 0x01]);
        assert_eq!(log.done, vec![(MsgType::Ocrq, 0x0102, Some(0xab01))]);
        assert_eq!(log.messages, vec![MsgType::Ocrq]);
        assert_eq!(s.next_seq(), 1168);
    }

    #[test]
    fn split_everywhere_gives_the_same_bytes() {
        let m = msg::build(MsgType::Ocrq, &[(12, 0x0102)]);
        let mut whole = Stream::new(Side::FromPns);
        whole.start(0);
        let (want, _) = run(&mut whole, &mut Log::default(), 0, &m);
        for cut in 1..m.len() {
            let mut s = Stream::new(Side::FromPns);
            s.start(0);
            let mut log = Log::default();
            let (a, oa) = run(&mut s, &mut log, 0, &m[..cut]);
            let (b, ob) = run(&mut s, &mut log, cut as u32, &m[cut..]);
            assert_eq!((oa, ob), (SegOutcome::Pass, SegOutcome::Pass));
            assert_eq!([a, b].concat(), want, "cut at {cut}");
            assert_eq!(log.messages, vec![MsgType::Ocrq], "cut at {cut}");
            assert_eq!(log.done, vec![(MsgType::Ocrq, 0x0102, Some(0xab01))], "cut at {cut}");
            // cut 13 splits the Call ID: decided on the first byte alone
            let lo_known = log.decided[0].2.is_some();
            assert_eq!(lo_known, cut != 13, "cut at {cut}");
        }
    }

    #[test]
    fn coalesced_messages_all_handled() {
        let mut s = Stream::new(Side::FromPns);
        s.start(0);
        let mut log = Log::default();
        let mut seg = msg::build(MsgType::EchoRq, &[]);
        seg.extend(msg::build(MsgType::Ocrq, &[(12, 5)]));
        seg.extend(msg::build(MsgType::Ccrq, &[(12, 6)]));
        let (out, _) = run(&mut s, &mut log, 0, &seg);
        assert_eq!(log.messages, vec![MsgType::EchoRq, MsgType::Ocrq, MsgType::Ccrq]);
        assert_eq!(&out[16 + 12..16 + 14], &[0xab, 0x00]);
        assert_eq!(&out[16 + 168 + 12..16 + 168 + 14], &[0xab, 0x00]);
    }

    #[test]
    fn retransmission_gets_identical_bytes_and_no_new_decision() {
        let mut s = Stream::new(Side::FromPns);
        s.start(0);
        let mut log = Log::default();
        let m = msg::build(MsgType::Ocrq, &[(12, 0x0102)]);
        let (first, _) = run(&mut s, &mut log, 0, &m);
        let (again, o) = run(&mut s, &mut log, 0, &m);
        assert_eq!(o, SegOutcome::Pass);
        assert_eq!(first, again);
        assert_eq!(log.decided.len(), 1, "a retransmission allocates nothing");
        // a retransmission that overlaps new data: old part replayed, new part parsed
        let next = msg::build(MsgType::Ccrq, &[(12, 0x0102)]);
        let mut seg = m[100..].to_vec();
        seg.extend(&next);
        let (out, _) = run(&mut s, &mut log, 100, &seg);
        assert_eq!(&out[..68], &first[100..]);
        assert_eq!(log.messages, vec![MsgType::Ocrq, MsgType::Ccrq]);
    }

    #[test]
    fn out_of_order_refused_then_accepted_in_order() {
        let mut s = Stream::new(Side::FromPns);
        s.start(0);
        let mut log = Log::default();
        let m = msg::build(MsgType::Ocrq, &[(12, 9)]);
        assert_eq!(run(&mut s, &mut log, 100, &m[100..]).1, SegOutcome::OutOfOrder);
        assert_eq!(run(&mut s, &mut log, 0, &m[..100]).1, SegOutcome::Pass);
        assert_eq!(run(&mut s, &mut log, 100, &m[100..]).1, SegOutcome::Pass);
        assert_eq!(log.messages, vec![MsgType::Ocrq]);
    }

    #[test]
    fn invalid_header_stops_before_the_message() {
        let mut s = Stream::new(Side::FromPns);
        s.start(0);
        let mut log = Log::default();
        let mut bad = msg::build(MsgType::Ocrq, &[(12, 9)]);
        bad[0] = 0;
        bad[1] = 0;
        assert_eq!(run(&mut s, &mut log, 0, &bad).1, SegOutcome::Invalid(Invalid::BadLength));
        assert_eq!(s.next_seq(), 0);
        assert!(log.decided.is_empty());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut s = Stream::new(Side::FromPns);
        let start = u32::MAX - 5;
        s.start(start);
        let mut log = Log::default();
        let m = msg::build(MsgType::Ocrq, &[(12, 0x0102)]);
        let (a, _) = run(&mut s, &mut log, start, &m[..13]);
        let (b, _) = run(&mut s, &mut log, start.wrapping_add(13), &m[13..]);
        assert_eq!(&[a[12], b[0]], &[0xab, 0x01]);
        assert_eq!(log.messages, vec![MsgType::Ocrq]);
    }

    #[derive(Debug, Clone, Copy)]
    enum Ev {
        Syn(u32),
        Ack(u32),
        /// An Echo-Request (16 bytes) at this sequence number.
        Data(u32),
    }

    #[test]
    fn where_a_stream_starts_each_transition() {
        use Ev::*;
        use StreamSync::*;
        // (what happens, then: sync state, next byte to parse, whether a SYN may restart it)
        let cases: &[(&str, &[Ev], StreamSync, u32, bool)] = &[
            ("nothing seen", &[], Unsynced, 0, true),
            ("an ACK of a stream never started", &[Ack(1000)], Unsynced, 0, true),
            ("a SYN starts it", &[Syn(999)], Synced, 1000, true),
            ("a second SYN before any ACK restarts it", &[Syn(999), Syn(4999)], Synced, 5000, true),
            ("the first ACK corrects the start", &[Syn(999), Ack(5000)], Synced, 5000, false),
            ("the first ACK confirms the start", &[Syn(999), Ack(1000)], Synced, 1000, false),
            ("a SYN after the confirming ACK is ignored", &[Syn(999), Ack(1000), Syn(4999)], Synced, 1000, false),
            ("a later ACK moves nothing", &[Syn(999), Ack(1000), Ack(1181)], Synced, 1000, false),
            ("after data an ACK moves nothing", &[Syn(999), Data(1000), Ack(5000)], Synced, 1016, false),
            ("after data a SYN moves nothing", &[Syn(999), Data(1000), Syn(4999)], Synced, 1016, false),
        ];
        let echo = msg::build(MsgType::EchoRq, &[]);
        for &(name, evs, sync, next, restartable) in cases {
            let mut s = Stream::new(Side::FromPns);
            for &ev in evs {
                match ev {
                    Syn(seq) => s.syn(seq),
                    Ack(ack) => s.acknowledged(ack),
                    Data(seq) => assert_eq!(run(&mut s, &mut Log::default(), seq, &echo).1, SegOutcome::Pass, "{name}"),
                }
            }
            assert_eq!((s.sync(), s.restartable()), (sync, restartable), "{name}");
            if sync == Synced {
                assert_eq!(s.next_seq(), next, "{name}");
            }
        }
    }

    #[test]
    fn bytes_before_the_first_or_beyond_the_next_are_refused() {
        let echo = msg::build(MsgType::EchoRq, &[]);
        let mut s = Stream::new(Side::FromPns);
        s.syn(999);
        s.acknowledged(1000);
        let mut log = Log::default();
        assert_eq!(run(&mut s, &mut log, 984, &echo).1, SegOutcome::OutOfOrder, "wholly before the first byte");
        assert_eq!(run(&mut s, &mut log, 990, &echo).1, SegOutcome::OutOfOrder, "reaching into the stream");
        assert_eq!(run(&mut s, &mut log, 1016, &echo).1, SegOutcome::OutOfOrder, "beyond the next byte");
        assert!(log.messages.is_empty());
        assert_eq!(run(&mut s, &mut log, 1000, &echo).1, SegOutcome::Pass);
        assert_eq!(run(&mut s, &mut log, 1000, &echo).1, SegOutcome::Pass, "a retransmission");
        assert_eq!(log.messages, vec![MsgType::EchoRq]);
    }

    #[test]
    fn unsynced_and_desynced_pass_untouched() {
        let m = msg::build(MsgType::Ocrq, &[(12, 1)]);
        let mut s = Stream::new(Side::FromPns);
        let mut log = Log::default();
        assert_eq!(run(&mut s, &mut log, 0, &m), (m.clone(), SegOutcome::Pass));
        s.start(0);
        s.desync();
        assert_eq!(run(&mut s, &mut log, 0, &m), (m.clone(), SegOutcome::Pass));
        assert!(log.decided.is_empty());
    }
}
