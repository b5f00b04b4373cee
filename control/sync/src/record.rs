//! The records a Data message carries: type (1 byte), body length (2), body.
//!
//! - `FLOW` (72 bytes): both keys (address, address, port, port, protocol: 13 bytes each),
//!   both rewrites (address, address, port, port, egress interface: 13 each), protocol
//!   state (tag, TCP state), status bits that travel (seen reply, assured, PPTP-inspected),
//!   kind, rule id, remaining idle time in milliseconds, flow id.
//! - `GONE` (21 bytes): the original key and the flow id.
//! - `PPTP_SESSION` (13 + `SESSION_LEN`): a PPTP control connection's original key and its
//!   inspector session (both streams' positions, partial message, recent rewrites), as the
//!   inspector exports it; `PPTP_CALL` (13 + `CALL_LEN`): the key and one call (its IDs,
//!   state, GRE key); `PPTP_CALL_GONE` (17): the key and the call's serial.
//! - `BULK_END` (0): the bulk resync asked for is complete — everything the sender held
//!   came before it.
//!
//! Local bookkeeping (per-host counts, offload marks) does not travel: the standby derives
//! its own.

use std::time::Duration;

use xgw_dataplane::conntrack::tcp::STATES;
use xgw_dataplane::conntrack::{status, Flow, FlowKey, FlowKind, L4State, Rewrite};
use xgw_dataplane::IfaceId;

use crate::wire::MAX_PAYLOAD;

const FLOW: u8 = 1;
const GONE: u8 = 2;
const PPTP_SESSION: u8 = 3;
const PPTP_CALL: u8 = 4;
const PPTP_CALL_GONE: u8 = 5;
const BULK_END: u8 = 6;
const FLOW_LEN: usize = 72;
const GONE_LEN: usize = 21;
const SESSION_REC_LEN: usize = 13 + xgw_dataplane::alg::pptp::SESSION_LEN;
const CALL_REC_LEN: usize = 13 + xgw_dataplane::alg::pptp::CALL_LEN;
const CALL_GONE_LEN: usize = 17;
/// The status bits a flow record carries as the flow's state.
pub const TRAVELLING: u8 = status::SEEN_REPLY | status::ASSURED | status::ALG_PPTP;
/// The status bits a record carries: the state, and whether the active counted the flow
/// against its inside host's limits (the standby counts it too).
pub const CARRIED: u8 = TRAVELLING | status::HOST_COUNTED;
/// The longest idle time a record may claim (the longest timeout xgw accepts is far less).
const MAX_REMAINING: Duration = Duration::from_secs(7 * 24 * 3600);

/// A flow as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFlow {
    /// `[orig, reply]` keys.
    pub keys: [FlowKey; 2],
    /// Each direction's rewrite.
    pub rewrite: [Rewrite; 2],
    /// Protocol state.
    pub l4: L4State,
    /// Status bits ([`CARRIED`] only).
    pub status: u8,
    /// Kind of translation.
    pub kind: FlowKind,
    /// The admitting rule.
    pub rule: u32,
    /// How long it may stay idle from now.
    pub remaining: Duration,
    /// Its id on the active gateway.
    pub id: u64,
}

impl SyncFlow {
    /// The record of `f`, which may stay idle for `remaining`.
    pub fn of(f: &Flow, remaining: Duration) -> SyncFlow {
        SyncFlow {
            keys: f.keys,
            rewrite: f.rewrite,
            l4: f.l4,
            status: f.status & CARRIED,
            kind: f.kind,
            rule: f.rule,
            remaining: remaining.min(MAX_REMAINING),
            id: f.id,
        }
    }
}

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A flow was created or changed.
    Flow(SyncFlow),
    /// A flow ended.
    Gone {
        /// Its original key.
        key: FlowKey,
        /// Its id.
        id: u64,
    },
    /// A PPTP control connection's inspector session (the inspector's own export).
    PptpSession {
        /// The control connection's original key.
        ctl: FlowKey,
        /// The session as the inspector exported it.
        state: Vec<u8>,
    },
    /// One call of a PPTP session (the inspector's own export).
    PptpCall {
        /// The control connection's original key.
        ctl: FlowKey,
        /// The call as the inspector exported it.
        state: Vec<u8>,
    },
    /// A PPTP call ended.
    PptpCallGone {
        /// The control connection's original key.
        ctl: FlowKey,
        /// The call's serial within its session.
        serial: u32,
    },
    /// A bulk resync ends here: every flow and PPTP state the sender held came before.
    BulkEnd,
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Cut short, or a length that does not match its type.
    Length,
    /// An unknown record type.
    Type,
    /// A field out of range (protocol state, kind, status bits, interface, idle time) or the
    /// two keys disagreeing on the protocol.
    Field,
}

fn put_key(v: &mut Vec<u8>, k: &FlowKey) {
    v.extend_from_slice(&k.src.to_be_bytes());
    v.extend_from_slice(&k.dst.to_be_bytes());
    v.extend_from_slice(&k.sport.to_be_bytes());
    v.extend_from_slice(&k.dport.to_be_bytes());
    v.push(k.proto);
}

fn put_rewrite(v: &mut Vec<u8>, r: &Rewrite) {
    v.extend_from_slice(&r.src.to_be_bytes());
    v.extend_from_slice(&r.dst.to_be_bytes());
    v.extend_from_slice(&r.sport.to_be_bytes());
    v.extend_from_slice(&r.dport.to_be_bytes());
    v.push(r.egress.0);
}

const KINDS: [FlowKind; 5] = [FlowKind::Snat, FlowKind::Dnat, FlowKind::Hairpin, FlowKind::Routed, FlowKind::Related];

fn l4_bytes(l: L4State) -> [u8; 2] {
    match l {
        L4State::Tcp(t) => [1, STATES.iter().position(|x| *x == t).unwrap_or(0) as u8],
        L4State::Udp => [2, 0],
        L4State::Icmp => [3, 0],
        L4State::Other => [4, 0],
    }
}

impl Record {
    /// Appends the record to `v`.
    pub fn encode(&self, v: &mut Vec<u8>) {
        match self {
            Record::Flow(f) => {
                v.push(FLOW);
                v.extend_from_slice(&(FLOW_LEN as u16).to_be_bytes());
                put_key(v, &f.keys[0]);
                put_key(v, &f.keys[1]);
                put_rewrite(v, &f.rewrite[0]);
                put_rewrite(v, &f.rewrite[1]);
                v.extend_from_slice(&l4_bytes(f.l4));
                v.push(f.status & CARRIED);
                v.push(KINDS.iter().position(|k| *k == f.kind).unwrap_or(0) as u8);
                v.extend_from_slice(&f.rule.to_be_bytes());
                let ms = f.remaining.min(MAX_REMAINING).as_millis() as u32;
                v.extend_from_slice(&ms.to_be_bytes());
                v.extend_from_slice(&f.id.to_be_bytes());
            }
            Record::Gone { key, id } => {
                v.push(GONE);
                v.extend_from_slice(&(GONE_LEN as u16).to_be_bytes());
                put_key(v, key);
                v.extend_from_slice(&id.to_be_bytes());
            }
            Record::PptpSession { ctl, state } | Record::PptpCall { ctl, state } => {
                v.push(if matches!(self, Record::PptpSession { .. }) { PPTP_SESSION } else { PPTP_CALL });
                v.extend_from_slice(&((13 + state.len()) as u16).to_be_bytes());
                put_key(v, ctl);
                v.extend_from_slice(state);
            }
            Record::PptpCallGone { ctl, serial } => {
                v.push(PPTP_CALL_GONE);
                v.extend_from_slice(&(CALL_GONE_LEN as u16).to_be_bytes());
                put_key(v, ctl);
                v.extend_from_slice(&serial.to_be_bytes());
            }
            Record::BulkEnd => {
                v.push(BULK_END);
                v.extend_from_slice(&0u16.to_be_bytes());
            }
        }
    }

    /// Decodes every record of a payload; `ifaces` is how many interfaces the standby has
    /// (a rewrite's egress must be one of them). One bad record refuses the whole payload.
    pub fn decode_all(p: &[u8], ifaces: usize) -> Result<Vec<Record>, Invalid> {
        let mut out = Vec::new();
        let mut r = Reader { d: p, at: 0 };
        while r.at < p.len() {
            let t = r.u8()?;
            let len = usize::from(r.u16()?);
            let end = r.at + len;
            if end > p.len() {
                return Err(Invalid::Length);
            }
            let rec = match (t, len) {
                (FLOW, FLOW_LEN) => Record::Flow(r.flow(ifaces)?),
                (GONE, GONE_LEN) => {
                    let key = r.key()?;
                    Record::Gone { key, id: r.u64()? }
                }
                (PPTP_SESSION, SESSION_REC_LEN) | (PPTP_CALL, CALL_REC_LEN) => {
                    let ctl = r.key()?;
                    if ctl.proto != 6 {
                        return Err(Invalid::Field);
                    }
                    let state = p[r.at..end].to_vec();
                    r.at = end;
                    if t == PPTP_SESSION {
                        Record::PptpSession { ctl, state }
                    } else {
                        Record::PptpCall { ctl, state }
                    }
                }
                (PPTP_CALL_GONE, CALL_GONE_LEN) => {
                    let ctl = r.key()?;
                    Record::PptpCallGone { ctl, serial: r.u32()? }
                }
                (BULK_END, 0) => Record::BulkEnd,
                (FLOW | GONE | PPTP_SESSION | PPTP_CALL | PPTP_CALL_GONE | BULK_END, _) => return Err(Invalid::Length),
                _ => return Err(Invalid::Type),
            };
            debug_assert_eq!(r.at, end);
            out.push(rec);
        }
        Ok(out)
    }
}

struct Reader<'a> {
    d: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Invalid> {
        let b = self.d.get(self.at..self.at + N).ok_or(Invalid::Length)?;
        self.at += N;
        b.try_into().map_err(|_| Invalid::Length)
    }
    fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Invalid> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, Invalid> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, Invalid> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn key(&mut self) -> Result<FlowKey, Invalid> {
        Ok(FlowKey { src: self.u32()?, dst: self.u32()?, sport: self.u16()?, dport: self.u16()?, proto: self.u8()? })
    }
    fn rewrite(&mut self, ifaces: usize) -> Result<Rewrite, Invalid> {
        let (src, dst, sport, dport) = (self.u32()?, self.u32()?, self.u16()?, self.u16()?);
        let egress = self.u8()?;
        if usize::from(egress) >= ifaces {
            return Err(Invalid::Field);
        }
        Ok(Rewrite { src, dst, sport, dport, egress: IfaceId(egress) })
    }
    fn flow(&mut self, ifaces: usize) -> Result<SyncFlow, Invalid> {
        let keys = [self.key()?, self.key()?];
        let rewrite = [self.rewrite(ifaces)?, self.rewrite(ifaces)?];
        let [tag, st] = self.take::<2>()?;
        let proto = keys[0].proto;
        let l4 = match (tag, proto) {
            (1, 6) => L4State::Tcp(*STATES.get(usize::from(st)).ok_or(Invalid::Field)?),
            (2, 17) => L4State::Udp,
            (3, 1) => L4State::Icmp,
            (4, p) if !matches!(p, 6 | 17) => L4State::Other,
            _ => return Err(Invalid::Field),
        };
        if tag != 1 && st != 0 || keys[1].proto != proto {
            return Err(Invalid::Field);
        }
        let status = self.u8()?;
        if status & !CARRIED != 0 {
            return Err(Invalid::Field);
        }
        let kind = *KINDS.get(usize::from(self.u8()?)).ok_or(Invalid::Field)?;
        let rule = self.u32()?;
        let remaining = Duration::from_millis(u64::from(self.u32()?));
        if remaining > MAX_REMAINING {
            return Err(Invalid::Field);
        }
        Ok(SyncFlow { keys, rewrite, l4, status, kind, rule, remaining, id: self.u64()? })
    }
}

/// Records gathered into one message's payload, never past [`MAX_PAYLOAD`].
#[derive(Debug, Default)]
pub struct Batch {
    payload: Vec<u8>,
    /// Records in it.
    pub count: usize,
}

impl Batch {
    /// Adds `r` if it fits; false when the batch is full (send it, start another).
    pub fn push(&mut self, r: &Record) -> bool {
        let before = self.payload.len();
        r.encode(&mut self.payload);
        if self.payload.len() > MAX_PAYLOAD {
            self.payload.truncate(before);
            return false;
        }
        self.count += 1;
        true
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The payload, leaving the batch empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.count = 0;
        std::mem::take(&mut self.payload)
    }
}
