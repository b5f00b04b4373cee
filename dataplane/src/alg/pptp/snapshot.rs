//! Sessions and calls as bytes, for a standby gateway (HA state sync): what the inspector
//! needs to carry on a control connection exactly where the active one left it — both
//! streams' positions, any message or field half seen, the bytes rewritten lately (a
//! retransmission is rewritten the same way), each call with its IDs. The session and each
//! call travel separately (a session with many calls would not fit one datagram); importing
//! validates every byte and claims the calls' translated IDs in the standby's pools, so its
//! own calls never take them.
//!
//! Session (`SESSION_LEN` bytes): translate, state, teardown pending + milliseconds left,
//! next serial, the call each direction is in (flag + serial), then both streams
//! ([`Stream::export`]). Call (`CALL_LEN`): serial, PNS ID, translated ID, PAC ID (flag +
//! value), state, outgoing, GRE key (flag + 13 bytes).

use core::time::Duration;

use super::msg::{self, MsgType, Side, KEEP};
use super::stream::{ByteRecord, StreamSync, RECORDS};
use super::*;

/// Length of an exported session.
pub const SESSION_LEN: usize = 2 + 5 + 4 + 10 + 2 * Stream::EXPORT_LEN;
/// Length of an exported call.
pub const CALL_LEN: usize = 4 + 2 + 2 + 3 + 2 + 14;

/// An exported session: its own bytes, and each call's serial and bytes.
pub type SessionExport = (Vec<u8>, Vec<(u32, Vec<u8>)>);

/// Why an import was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotError {
    /// Wrong length or a field out of range.
    Malformed,
    /// No inspected session for that control connection (import the session first).
    NoSession,
    /// The call's translated ID is taken on this gateway by another call.
    IdTaken,
}

const STATES: [SessionState; 4] =
    [SessionState::Opening, SessionState::Established, SessionState::Stopping, SessionState::Closing];
const CALL_STATES: [CallState; 5] =
    [CallState::Requested, CallState::Offered, CallState::Accepted, CallState::Established, CallState::Clearing];

fn key_bytes(k: &FlowKey, v: &mut Vec<u8>) {
    v.extend_from_slice(&k.src.to_be_bytes());
    v.extend_from_slice(&k.dst.to_be_bytes());
    v.extend_from_slice(&k.sport.to_be_bytes());
    v.extend_from_slice(&k.dport.to_be_bytes());
    v.push(k.proto);
}

fn export_call(c: &Call, v: &mut Vec<u8>) {
    v.extend_from_slice(&c.serial.to_be_bytes());
    v.extend_from_slice(&c.pns_id.to_be_bytes());
    v.extend_from_slice(&c.xlat_id.to_be_bytes());
    v.push(u8::from(c.pac_id.is_some()));
    v.extend_from_slice(&c.pac_id.unwrap_or(0).to_be_bytes());
    v.push(CALL_STATES.iter().position(|s| *s == c.state).unwrap_or(0) as u8);
    v.push(u8::from(c.outgoing));
    match c.gre {
        Some(k) => {
            v.push(1);
            key_bytes(&k, v);
        }
        None => v.extend_from_slice(&[0; 14]),
    }
}

fn import_call(b: &[u8], now: Time) -> Option<Call> {
    if b.len() != CALL_LEN || b[8] > 1 || b[12] > 1 || b[13] > 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let gre = (b[13] == 1).then(|| FlowKey {
        src: u32_at(14),
        dst: u32_at(18),
        sport: u16_at(22),
        dport: u16_at(24),
        proto: b[26],
    });
    if gre.is_some_and(|k| k.proto != crate::wire::proto::GRE) {
        return None;
    }
    Some(Call {
        serial: u32_at(0),
        pns_id: u16_at(4),
        xlat_id: u16_at(6),
        pac_id: (b[8] == 1).then(|| u16_at(9)),
        state: *CALL_STATES.get(usize::from(b[11]))?,
        outgoing: b[12] == 1,
        gre,
        created: now,
    })
    .filter(|c| c.xlat_id != 0)
}

impl Stream {
    /// Appends this parser's whole state (for a standby gateway): where it is, any message
    /// or field half seen, and the bytes it rewrote lately. 239 bytes.
    pub fn export(&self, v: &mut Vec<u8>) {
        let sync = match self.sync {
            StreamSync::Unsynced => 0,
            StreamSync::Synced => 1,
            StreamSync::Desynced => 2,
        };
        v.push(sync | u8::from(self.confirmed) << 4);
        for x in [self.first, self.next, self.msg_start] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(&self.head);
        match self.msg {
            Some((t, len)) => {
                v.push(1);
                v.extend_from_slice(&(t as u16).to_be_bytes());
                v.extend_from_slice(&(len as u16).to_be_bytes());
            }
            None => v.extend_from_slice(&[0; 5]),
        }
        match self.field {
            Some((off, _)) => {
                v.push(1);
                v.extend_from_slice(&(off as u16).to_be_bytes());
            }
            None => v.extend_from_slice(&[0; 3]),
        }
        v.push(u8::from(self.repl.is_some()));
        v.extend_from_slice(&self.repl.unwrap_or(0).to_be_bytes());
        v.push(self.field_hi);
        v.push(self.rec_pos as u8);
        for r in &self.records {
            v.extend_from_slice(&r.seq.to_be_bytes());
            v.push(r.new);
            v.push(u8::from(r.used));
        }
    }

    /// The length of [`Stream::export`]'s output.
    pub const EXPORT_LEN: usize = 1 + 12 + KEEP + 5 + 3 + 3 + 2 + RECORDS * 6;

    /// A parser for `side` from [`Stream::export`]'s bytes; `None` unless every field is
    /// consistent (a known message type with its own length, a field where that type has
    /// one, record positions in range).
    pub fn import(side: Side, b: &[u8]) -> Option<Stream> {
        if b.len() != Self::EXPORT_LEN {
            return None;
        }
        let u16_at = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        // the low nibble is the sync state, bit 4 whether the start was confirmed
        let confirmed = b[0] & 0x10 != 0;
        let sync = match b[0] & !0x10 {
            0 => StreamSync::Unsynced,
            1 => StreamSync::Synced,
            2 => StreamSync::Desynced,
            _ => return None,
        };
        let mut head = [0u8; KEEP];
        head.copy_from_slice(&b[13..13 + KEEP]);
        let mut o = 13 + KEEP;
        let msg = match b[o] {
            0 => None,
            1 => {
                let t = MsgType::from_u16(u16_at(o + 1))?;
                let len = usize::from(u16_at(o + 3));
                if len != t.length() {
                    return None;
                }
                Some((t, len))
            }
            _ => return None,
        };
        o += 5;
        let field = match (b[o], msg) {
            (0, _) => None,
            (1, Some((t, len))) => {
                let (off, kind) = msg::rewrite_field(t, side)?;
                if usize::from(u16_at(o + 1)) != off || off + 2 > len {
                    return None;
                }
                Some((off, kind))
            }
            _ => return None,
        };
        o += 3;
        let repl = match b[o] {
            0 => None,
            1 => Some(u16_at(o + 1)),
            _ => return None,
        };
        o += 3;
        let field_hi = b[o];
        let rec_pos = usize::from(b[o + 1]);
        if rec_pos >= RECORDS {
            return None;
        }
        o += 2;
        let mut records = [ByteRecord::default(); RECORDS];
        for r in &mut records {
            if b[o + 5] > 1 {
                return None;
            }
            *r = ByteRecord { seq: u32_at(o), new: b[o + 4], used: b[o + 5] == 1 };
            o += 6;
        }
        Some(Stream {
            side,
            sync,
            confirmed,
            first: u32_at(1),
            next: u32_at(5),
            msg_start: u32_at(9),
            head,
            msg,
            field,
            repl,
            field_hi,
            records,
            rec_pos,
        })
    }
}

impl Pptp {
    /// Where session `flow_id`'s two streams (PNS→PAC, PAC→PNS) will parse next.
    pub fn next_seqs(&self, flow_id: u64) -> Option<[u32; 2]> {
        self.lock().sessions.get(&flow_id).map(Session::next_seq)
    }

    /// The control connections (their flow ids) this inspector follows.
    pub fn session_ids(&self) -> Vec<u64> {
        self.lock().sessions.keys().copied().collect()
    }

    /// Session `flow_id` as bytes (without its calls) and each call's bytes with its serial.
    pub fn export_session(&self, flow_id: u64, now: Time) -> Option<SessionExport> {
        let st = self.lock();
        let s = st.sessions.get(&flow_id)?;
        let mut v = Vec::with_capacity(SESSION_LEN);
        v.push(u8::from(s.translate));
        v.push(STATES.iter().position(|x| *x == s.state).unwrap_or(0) as u8);
        v.push(u8::from(s.teardown_at.is_some()));
        let left = s.teardown_at.map_or(Duration::ZERO, |t| t.since(now));
        v.extend_from_slice(&(left.as_millis().min(u128::from(u32::MAX)) as u32).to_be_bytes());
        v.extend_from_slice(&s.next_serial.to_be_bytes());
        for c in s.current {
            v.push(u8::from(c.is_some()));
            v.extend_from_slice(&c.unwrap_or(0).to_be_bytes());
        }
        s.streams[0].export(&mut v);
        s.streams[1].export(&mut v);
        let calls = s
            .calls
            .iter()
            .map(|c| {
                let mut b = Vec::with_capacity(CALL_LEN);
                export_call(c, &mut b);
                (c.serial, b)
            })
            .collect();
        Some((v, calls))
    }

    /// Takes session bytes for the control connection `flow` (the standby's own flow for
    /// it): creates the session, or brings an existing one up to date (its calls stay).
    pub fn import_session(&self, flow: &Flow, b: &[u8], now: Time) -> Result<(), SnapshotError> {
        if b.len() != SESSION_LEN || b[0] > 1 || b[2] > 1 || b[11] > 1 || b[16] > 1 {
            return Err(SnapshotError::Malformed);
        }
        let u32_at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let state = *STATES.get(usize::from(b[1])).ok_or(SnapshotError::Malformed)?;
        let teardown_at = (b[2] == 1).then(|| now.plus(Duration::from_millis(u64::from(u32_at(3)))));
        let current = [(b[11] == 1).then(|| u32_at(12)), (b[16] == 1).then(|| u32_at(17))];
        let at = 21;
        let s0 = Stream::import(Side::FromPns, &b[at..at + Stream::EXPORT_LEN]).ok_or(SnapshotError::Malformed)?;
        let s1 = Stream::import(Side::FromPac, &b[at + Stream::EXPORT_LEN..]).ok_or(SnapshotError::Malformed)?;
        let mut st = self.lock();
        let created = st.sessions.get(&flow.id).map_or(now, |s| s.created);
        let calls = st.sessions.remove(&flow.id).map(|s| s.calls).unwrap_or_default();
        if calls.is_empty() && st.sessions.len() >= self.cfg.max_sessions {
            return Err(SnapshotError::Malformed);
        }
        st.sessions.insert(
            flow.id,
            Session {
                flow_id: flow.id,
                translate: b[0] == 1,
                ctl_keys: flow.keys,
                ctl_rewrite: flow.rewrite,
                state,
                calls,
                created,
                teardown_at,
                streams: [s0, s1],
                current,
                next_serial: u32_at(7),
            },
        );
        Ok(())
    }

    /// Takes a call's bytes for session `flow_id`: adds it (claiming its translated ID and
    /// counting it against the limits) or brings the call with that serial up to date.
    pub fn import_call(&self, flow_id: u64, b: &[u8], now: Time) -> Result<(), SnapshotError> {
        let c = import_call(b, now).ok_or(SnapshotError::Malformed)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        let sess = st.sessions.get_mut(&flow_id).ok_or(SnapshotError::NoSession)?;
        if let Some(old) = sess.calls.iter_mut().find(|o| o.serial == c.serial) {
            if old.xlat_id != c.xlat_id {
                return Err(SnapshotError::Malformed);
            }
            if let (None, Some(k)) = (old.gre, c.gre) {
                st.gre_index.insert(k, flow_id);
            }
            let created = old.created;
            *old = Call { created, ..c };
            return Ok(());
        }
        if sess.translate && !st.pools.entry(sess.pool_key()).or_default().claim(c.xlat_id) {
            return Err(SnapshotError::IdTaken);
        }
        *st.per_host.entry(sess.inside_host()).or_insert(0) += 1;
        st.total_calls += 1;
        if let Some(k) = c.gre {
            st.gre_index.insert(k, flow_id);
        }
        sess.calls.push(c);
        Ok(())
    }

    /// The active gateway ended call `serial` of session `flow_id`: release it here too
    /// (its ID rests in quarantine as it would have there).
    pub fn forget_call(&self, flow_id: u64, serial: u32, now: Time) -> bool {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(sess) = st.sessions.get_mut(&flow_id) else { return false };
        let Some(i) = sess.calls.iter().position(|c| c.serial == serial) else { return false };
        let c = sess.calls.remove(i);
        release(
            &c,
            sess,
            st_parts(&mut st.pools, &mut st.per_host, &mut st.total_calls, &mut st.gre_index),
            &self.cfg,
            now,
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IfaceId, PptpConfig};
    use crate::conntrack::{L4State, Rewrite};
    use msg::KEEP;

    fn control_flow(id: u64) -> Flow {
        let k = |s: [u8; 4], d: [u8; 4], sp, dp| FlowKey {
            src: u32::from_be_bytes(s),
            dst: u32::from_be_bytes(d),
            sport: sp,
            dport: dp,
            proto: 6,
        };
        let r = |s: [u8; 4], d: [u8; 4], sp, dp, e| Rewrite {
            src: u32::from_be_bytes(s),
            dst: u32::from_be_bytes(d),
            sport: sp,
            dport: dp,
            egress: IfaceId(e),
        };
        let keys =
            [k([10, 0, 0, 5], [198, 51, 100, 7], 40000, 1723), k([198, 51, 100, 7], [203, 0, 113, 1], 1723, 2000)];
        let rw = [
            r([203, 0, 113, 1], [198, 51, 100, 7], 2000, 1723, 1),
            r([198, 51, 100, 7], [10, 0, 0, 5], 1723, 40000, 0),
        ];
        let mut f =
            Flow::new(keys, rw, L4State::Tcp(crate::conntrack::tcp::TcpState::Established), FlowKind::Snat, Time::ZERO);
        f.id = id;
        f
    }

    fn call_bytes(serial: u32, xlat: u16, gre_proto: u8) -> Vec<u8> {
        let gre = FlowKey { src: 1, dst: 2, sport: 1, dport: 0x4000, proto: gre_proto };
        let c = Call {
            serial,
            pns_id: 0x100,
            xlat_id: xlat,
            pac_id: Some(0x4000),
            state: CallState::Established,
            outgoing: true,
            gre: Some(gre),
            created: Time::ZERO,
        };
        let mut v = Vec::new();
        export_call(&c, &mut v);
        v
    }

    #[test]
    fn a_stream_round_trips_and_inconsistent_bytes_are_refused() {
        let mut s = Stream::new(Side::FromPns);
        s.start(1000);
        s.acknowledged(1000);
        let mut good = Vec::new();
        s.export(&mut good);
        assert_eq!(good.len(), Stream::EXPORT_LEN);
        let back = Stream::import(Side::FromPns, &good).expect("imports");
        assert!(back.confirmed && !back.restartable(), "the confirmed start travels");
        let mut again = Vec::new();
        back.export(&mut again);
        assert_eq!(again, good);
        let msg_at = 13 + KEEP;
        let field_at = msg_at + 5;
        let rec_pos_at = field_at + 3 + 3 + 1;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("short", good[..100].to_vec()),
            ("an unknown sync state", {
                let mut b = good.clone();
                b[0] = 3;
                b
            }),
            ("an unknown flag beside the sync state", {
                let mut b = good.clone();
                b[0] |= 0x20;
                b
            }),
            ("an unknown message type", {
                let mut b = good.clone();
                b[msg_at] = 1;
                b[msg_at + 2] = 99;
                b
            }),
            ("a message of the wrong length", {
                let mut b = good.clone();
                b[msg_at] = 1;
                b[msg_at + 2] = 7;
                b[msg_at + 4] = 10;
                b
            }),
            ("a field without a message", {
                let mut b = good.clone();
                b[field_at] = 1;
                b
            }),
            ("a record position out of range", {
                let mut b = good.clone();
                b[rec_pos_at] = 40;
                b
            }),
            ("a record flag that is not 0 or 1", {
                let mut b = good.clone();
                b[rec_pos_at + 1 + 5] = 2;
                b
            }),
        ];
        for (what, b) in cases {
            assert!(Stream::import(Side::FromPns, &b).is_none(), "{what}");
        }
    }

    #[test]
    fn sessions_and_calls_import_with_their_rules() {
        let active = Pptp::new(PptpConfig::default());
        let f = control_flow(7);
        active.open_session(&f, Some(999), Time::ZERO);
        let (sess, calls) = active.export_session(7, Time::ZERO).expect("exported");
        assert_eq!((sess.len(), calls.len()), (SESSION_LEN, 0));
        let standby = Pptp::new(PptpConfig::default());
        let mine = control_flow(3); // the standby's own id for the same connection
                                    // a call before its session: refused
        assert_eq!(standby.import_call(3, &call_bytes(1, 0x1234, 47), Time::ZERO), Err(SnapshotError::NoSession));
        assert_eq!(standby.import_session(&mine, &sess[..10], Time::ZERO), Err(SnapshotError::Malformed));
        assert_eq!(standby.import_session(&mine, &sess, Time::ZERO), Ok(()));
        assert_eq!(standby.next_seqs(3), Some([1000, 0]));
        let cases: Vec<(&str, Vec<u8>, Result<(), SnapshotError>)> = vec![
            ("a call", call_bytes(1, 0x1234, 47), Ok(())),
            ("the same call again (an update)", call_bytes(1, 0x1234, 47), Ok(())),
            ("another call with its translated ID", call_bytes(2, 0x1234, 47), Err(SnapshotError::IdTaken)),
            ("translated ID 0", call_bytes(3, 0, 47), Err(SnapshotError::Malformed)),
            ("a GRE key that is not GRE", call_bytes(4, 0x2222, 6), Err(SnapshotError::Malformed)),
            ("an update changing the translated ID", call_bytes(1, 0x5555, 47), Err(SnapshotError::Malformed)),
            ("cut short", call_bytes(5, 0x3333, 47)[..20].to_vec(), Err(SnapshotError::Malformed)),
        ];
        for (what, b, want) in cases {
            assert_eq!(standby.import_call(3, &b, Time::ZERO), want, "{what}");
        }
        assert_eq!(standby.calls_in_progress(), 1);
        assert_eq!(standby.pool_in_use(u32::from_be_bytes([203, 0, 113, 1]), u32::from_be_bytes([198, 51, 100, 7])), 1);
        // the active ends it: the ID rests in quarantine here too
        assert!(standby.forget_call(3, 1, Time::ZERO));
        assert_eq!(standby.calls_in_progress(), 0);
        assert_eq!(standby.pool_in_use(u32::from_be_bytes([203, 0, 113, 1]), u32::from_be_bytes([198, 51, 100, 7])), 1);
        assert!(!standby.forget_call(3, 1, Time::ZERO));
    }
}
