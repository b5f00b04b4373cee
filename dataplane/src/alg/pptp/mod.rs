//! The PPTP inspector ("fixup protocol pptp 1723", RFC 2637).
//!
//! Every TCP connection to port 1723 that the policy admits gets a [`Session`]: one
//! [`stream::Stream`] per direction (message boundaries, in-place Call-ID rewrites) and the
//! calls negotiated on it. When the PNS (client) sits behind PAT, each call's PNS Call ID
//! is replaced by a translated ID from a [`pool::Pool`] per (outside address, PAC), so that
//! many clients — even with the same Call ID — can reach one server at once. A call that
//! the PAC accepts gets its GRE flow in the connection table: outbound GRE (keyed by the
//! PAC's Call ID) leaves from the outside address; inbound GRE (keyed by the translated
//! ID) goes to the right inside host with the original ID restored. The GRE packets
//! themselves never touch this module: they are ordinary flows on the engine's fast path.
//!
//! ```text
//!   session:  Opening --SCCRP ok--> Established --Stop-CCRQ/RP--> Stopping
//!                 \____________________|______________FIN/RST____--> Closing (grace) --> gone
//!   call (out): OCRQ --> Requested --OCRP ok--> Established --CCRQ--> Clearing --CDN--> gone
//!                                   \--OCRP error--> gone (ID released, no pinhole)
//!   call (in):  ICRQ --> Offered --ICRP ok--> Accepted --ICCN--> Established --CDN--> gone
//! ```
//!
//! All control traffic of all sessions is handled under one mutex: control messages are
//! rare, and the per-packet GRE path never takes it.

pub mod msg;
pub mod pool;
pub mod stream;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::{InvalidPolicy, PptpConfig};
use crate::conntrack::{Flow, FlowKey, FlowKind, FlowTable, L4State, Rewrite};
use crate::counters::SharedCounter;
use crate::time::Time;
use crate::wire::proto;
use msg::{Field, MsgType, Side};
use pool::Pool;
use stream::{Change, SegOutcome, Stream, Sync, Translator};

/// PPTP inspector counters (names as operators know them from A10/ASA).
#[derive(Debug, Default)]
pub struct PptpStats {
    /// Control sessions created.
    pub sessions: SharedCounter,
    /// Calls that got GRE flows.
    pub calls_created: SharedCounter,
    /// Calls ended (CDN, clear, stop, control close, GRE idle).
    pub calls_torn_down: SharedCounter,
    /// New calls refused (caps, pool exhaustion, table full).
    pub call_creation_failure: SharedCounter,
    /// Invalid messages from the PNS.
    pub truncated_pns_message: SharedCounter,
    /// Invalid messages from the PAC.
    pub truncated_pac_message: SharedCounter,
    /// PNS messages naming a call that does not exist.
    pub mismatched_pns_call_id: SharedCounter,
    /// PAC messages naming a call that does not exist.
    pub mismatched_pac_call_id: SharedCounter,
    /// PAC replies repeated for a call already set up.
    pub retransmitted_pac_message: SharedCounter,
    /// Segments refused because they arrived out of order.
    pub out_of_order_segments: SharedCounter,
    /// Fields split between segments whose first byte fitted several calls.
    pub split_field_ambiguous: SharedCounter,
    /// Sessions whose start was not seen (no inspection possible).
    pub unsynced_sessions: SharedCounter,
}

/// A call's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CallState {
    /// OCRQ seen, waiting for the OCRP.
    Requested,
    /// ICRQ seen, waiting for the PNS's ICRP.
    Offered,
    /// ICRP accepted, waiting for ICCN.
    Accepted,
    /// Up: GRE flows exist.
    Established,
    /// CCRQ seen, waiting for CDN.
    Clearing,
}

/// One call on a control connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    /// Stable number of the call within its session.
    pub serial: u32,
    /// The PNS's own Call ID (as the inside host chose it).
    pub pns_id: u16,
    /// The Call ID the PAC knows the PNS by (translated, or equal to `pns_id`).
    pub xlat_id: u16,
    /// The PAC's Call ID, once known.
    pub pac_id: Option<u16>,
    /// State.
    pub state: CallState,
    /// Outgoing (OCRQ) or incoming (ICRQ).
    pub outgoing: bool,
    /// Key of the call's GRE flow (PNS → PAC direction), once created.
    pub gre: Option<FlowKey>,
    /// When the call was requested.
    pub created: Time,
}

/// A session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SessionState {
    /// Control connection open, SCCRP not yet seen.
    Opening,
    /// SCCRP accepted.
    Established,
    /// Stop-Control-Connection exchanged.
    Stopping,
    /// FIN or RST seen: calls end after the grace period.
    Closing,
}

/// One PPTP control connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    /// Id of the control connection's flow.
    pub flow_id: u64,
    /// Whether PNS Call IDs are translated (the PNS is behind PAT).
    pub translate: bool,
    /// The control flow's keys and rewrites, from which GRE flows are derived.
    pub ctl_keys: [FlowKey; 2],
    /// See `ctl_keys`.
    pub ctl_rewrite: [Rewrite; 2],
    /// State.
    pub state: SessionState,
    /// Calls.
    pub calls: Vec<Call>,
    /// When the session was created.
    pub created: Time,
    /// When its calls end (after FIN/RST).
    pub teardown_at: Option<Time>,
    #[serde(skip)]
    streams: [Stream; 2],
    /// Per direction: the call the message being parsed concerns (a message can span
    /// segments), by serial.
    #[serde(skip)]
    current: [Option<u32>; 2],
    #[serde(skip)]
    next_serial: u32,
}

impl Session {
    /// The inside party's address (the PNS behind PAT, or the PAC behind a forward).
    pub fn inside_host(&self) -> u32 {
        if self.translate {
            self.ctl_keys[0].src
        } else {
            self.ctl_rewrite[0].dst
        }
    }

    /// The pool key: (the PNS's address as the PAC sees it, the PAC's address).
    fn pool_key(&self) -> (u32, u32) {
        (self.ctl_rewrite[0].src, self.ctl_rewrite[0].dst)
    }

    /// Synchronisation of the PNS→PAC and PAC→PNS streams.
    pub fn sync(&self) -> [Sync; 2] {
        [self.streams[0].sync(), self.streams[1].sync()]
    }

    /// Sequence number of the next byte each stream (PNS→PAC, PAC→PNS) will parse.
    pub fn next_seq(&self) -> [u32; 2] {
        [self.streams[0].next_seq(), self.streams[1].next_seq()]
    }

    /// GRE flow of a call: keys and rewrites for both directions.
    fn gre_flow(&self, c: &Call, pac_id: u16) -> ([FlowKey; 2], [Rewrite; 2]) {
        let (k, r) = (&self.ctl_keys, &self.ctl_rewrite);
        let key = |src, dst, id| FlowKey { src, dst, sport: crate::wire::gre::GRE_V1, dport: id, proto: proto::GRE };
        (
            [key(k[0].src, k[0].dst, pac_id), key(k[1].src, k[1].dst, c.xlat_id)],
            [
                Rewrite {
                    src: r[0].src,
                    dst: r[0].dst,
                    sport: crate::wire::gre::GRE_V1,
                    dport: pac_id,
                    egress: r[0].egress,
                },
                Rewrite {
                    src: r[1].src,
                    dst: r[1].dst,
                    sport: crate::wire::gre::GRE_V1,
                    dport: c.pns_id,
                    egress: r[1].egress,
                },
            ],
        )
    }
}

/// What a segment of a control connection means for the packet carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentVerdict {
    /// Forward (possibly rewritten).
    Pass,
    /// Drop: out of order (resent in order later).
    OutOfOrder,
    /// Drop: invalid message (policy `Drop`).
    Invalid,
    /// Replace with a reset and stop (policy `Reset`).
    Reset,
    /// Drop: a new call was refused (caps, pool); resent later, maybe accepted then.
    Refused,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// Create the call's GRE flows.
    OpenGre(usize),
    /// End the call: remove its GRE flows, release its translated ID.
    CloseCall(usize),
    /// Drop a bookkeeping entry merged into another call (no ID of its own to release).
    Forget(usize),
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<u64, Session>,
    pools: HashMap<(u32, u32), Pool>,
    per_host: HashMap<u32, usize>,
    total_calls: usize,
    gre_index: HashMap<FlowKey, u64>,
    rng: u32,
    last_invalid_log: Option<u64>,
}

/// The PPTP inspector's shared state.
#[derive(Debug)]
pub struct Pptp {
    cfg: PptpConfig,
    state: Mutex<State>,
    /// Counters.
    pub stats: PptpStats,
}

/// The PPTP control port.
pub const PORT: u16 = 1723;

impl Pptp {
    /// An inspector with `cfg`.
    pub fn new(cfg: PptpConfig) -> Pptp {
        Pptp { cfg, state: Mutex::new(State { rng: 0x2545_f491, ..State::default() }), stats: PptpStats::default() }
    }

    /// Seeds the translated-ID generator (the daemon seeds from the OS so IDs are not
    /// predictable; tests keep the fixed default for determinism).
    pub fn seed(&self, seed: u32) {
        self.lock().rng = seed | 1;
    }

    /// The configuration.
    pub fn config(&self) -> &PptpConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts inspecting a new control connection (its flow was just created by a SYN with
    /// sequence number `syn_seq`, or picked up mid-stream when `syn_seq` is `None`).
    pub fn open_session(&self, flow: &Flow, syn_seq: Option<u32>, now: Time) {
        let translate = matches!(flow.kind, FlowKind::Snat | FlowKind::Hairpin);
        let mut streams = [Stream::new(Side::FromPns), Stream::new(Side::FromPac)];
        match syn_seq {
            Some(s) => streams[0].start(s.wrapping_add(1)),
            None => self.stats.unsynced_sessions.inc(),
        }
        let s = Session {
            flow_id: flow.id,
            translate,
            ctl_keys: flow.keys,
            ctl_rewrite: flow.rewrite,
            state: SessionState::Opening,
            calls: Vec::new(),
            created: now,
            teardown_at: None,
            streams,
            current: [None; 2],
            next_serial: 0,
        };
        let mut st = self.lock();
        if st.sessions.len() < self.cfg.max_sessions {
            st.sessions.insert(flow.id, s);
            self.stats.sessions.inc();
        }
    }

    /// True when the flow with this id is an inspected control connection.
    pub fn has_session(&self, flow_id: u64) -> bool {
        self.lock().sessions.contains_key(&flow_id)
    }

    /// Inspects one segment of a control connection. `from_pns` is the direction, `seq`,
    /// `ack` and `flags` come from the TCP header; `payload` is rewritten in place and every
    /// changed byte is appended to `changes`. GRE flows are created and removed in `flows`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one segment: its flow, direction, TCP fields, payload, and where changes go"
    )]
    pub fn on_segment(
        &self,
        flow_id: u64,
        from_pns: bool,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &mut [u8],
        changes: &mut Vec<Change>,
        flows: &FlowTable,
        now: Time,
    ) -> SegmentVerdict {
        use crate::wire::tcp::flags as f;
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(sess) = st.sessions.get_mut(&flow_id) else { return SegmentVerdict::Pass };
        let d = usize::from(!from_pns);
        // Where each stream starts: the sender's SYN says, and until a stream has carried
        // data the receiver's acknowledgements correct it. (A SYN-ACK can be seen here and
        // then lost; the server may answer the client's retransmitted SYN with a new initial
        // sequence number — SYN cookies do — and only the client's ACK tells which one
        // the connection uses. Parsing from the wrong one would refuse every segment.)
        if flags & f::SYN != 0 && (sess.streams[d].sync() == Sync::Unsynced || sess.streams[d].untouched()) {
            sess.streams[d].start(seq.wrapping_add(1));
        }
        let other = 1 - d;
        if flags & f::ACK != 0 && sess.streams[other].untouched() && sess.streams[other].next_seq() != ack {
            sess.streams[other].start(ack);
        }
        let mut actions: Vec<Action> = Vec::new();
        let outcome = {
            let Session { streams, calls, translate, state, current, next_serial, .. } = sess;
            let pool_key = (sess.ctl_rewrite[0].src, sess.ctl_rewrite[0].dst);
            let host = if *translate { sess.ctl_keys[0].src } else { sess.ctl_rewrite[0].dst };
            let resumed = current[d].and_then(|n| calls.iter().position(|c| c.serial == n));
            let mut ctx = Ctx {
                cfg: &self.cfg,
                stats: &self.stats,
                translate: *translate,
                state,
                calls,
                pool: st.pools.entry(pool_key).or_default(),
                per_host: st.per_host.entry(host).or_insert(0),
                total_calls: &mut st.total_calls,
                rng: &mut st.rng,
                current: resumed,
                next_serial,
                actions: &mut actions,
                refused: false,
                now,
            };
            let o = streams[d].process(seq, payload, &mut ctx, changes);
            current[d] = ctx.current.map(|i| ctx.calls[i].serial);
            o
        };
        let verdict = match outcome {
            SegOutcome::Pass => SegmentVerdict::Pass,
            SegOutcome::OutOfOrder => {
                self.stats.out_of_order_segments.inc();
                tracing::debug!(
                    flow = flow_id,
                    from_pns,
                    seq,
                    len = payload.len(),
                    expected = sess.streams[d].next_seq(),
                    "PPTP control segment out of order"
                );
                SegmentVerdict::OutOfOrder
            }
            SegOutcome::Invalid(why) => {
                if from_pns { &self.stats.truncated_pns_message } else { &self.stats.truncated_pac_message }.inc();
                // malformed traffic is logged at most once a second
                let sec = now.as_nanos() / 1_000_000_000;
                if st.last_invalid_log != Some(sec) {
                    st.last_invalid_log = Some(sec);
                    tracing::warn!(flow = flow_id, from_pns, ?why, "invalid PPTP control message");
                }
                match self.cfg.on_invalid {
                    InvalidPolicy::Log => {
                        sess.streams[d].desync();
                        SegmentVerdict::Pass
                    }
                    InvalidPolicy::Drop => SegmentVerdict::Invalid,
                    InvalidPolicy::Reset => SegmentVerdict::Reset,
                }
            }
            SegOutcome::Refused => SegmentVerdict::Refused,
        };
        if let Some(sess) = st.sessions.get_mut(&flow_id) {
            apply(
                sess,
                &actions,
                st_parts(&mut st.pools, &mut st.per_host, &mut st.total_calls, &mut st.gre_index),
                flows,
                &self.cfg,
                &self.stats,
                now,
            );
            if flags & (f::FIN | f::RST) != 0 {
                // a FIN leaves time for a late Call-Disconnect-Notify; after an RST nothing
                // more can come on this connection, so its calls end at the next sweep
                let grace = if flags & f::RST != 0 { core::time::Duration::ZERO } else { self.cfg.teardown_grace };
                let at = now.plus(grace);
                sess.state = SessionState::Closing;
                sess.teardown_at = Some(sess.teardown_at.map_or(at, |t| t.min(at)));
            }
        }
        if verdict == SegmentVerdict::Reset {
            let ids = vec![flow_id];
            self.end_sessions(st, &ids, flows, now);
        }
        verdict
    }

    /// The control connection's flow is gone (expired or deleted): end its calls now.
    pub fn control_gone(&self, flow_id: u64, flows: &FlowTable, now: Time) {
        let mut st = self.lock();
        self.end_sessions(&mut st, &[flow_id], flows, now);
    }

    /// A call's GRE flow expired: the call ends.
    pub fn gre_gone(&self, gre_key: &FlowKey, now: Time) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(sid) = st.gre_index.remove(gre_key) else { return };
        let Some(sess) = st.sessions.get_mut(&sid) else { return };
        if let Some(i) = sess.calls.iter().position(|c| c.gre.as_ref() == Some(gre_key)) {
            let c = sess.calls.remove(i);
            tracing::info!(flow = sid, pns_id = c.pns_id, xlat_id = c.xlat_id, pac_id = ?c.pac_id, "PPTP call ended: GRE idle");
            let parts = st_parts(&mut st.pools, &mut st.per_host, &mut st.total_calls, &mut st.gre_index);
            release(&c, sess, parts, &self.cfg, now);
            self.stats.calls_torn_down.inc();
        }
    }

    /// Ends sessions whose grace period is over and returns quarantined IDs to their pools.
    pub fn sweep(&self, flows: &FlowTable, now: Time) {
        let mut st = self.lock();
        let due: Vec<u64> =
            st.sessions.values().filter(|s| s.teardown_at.is_some_and(|t| t <= now)).map(|s| s.flow_id).collect();
        self.end_sessions(&mut st, &due, flows, now);
        st.pools.retain(|_, p| {
            p.sweep(now);
            p.in_use() > 0
        });
        st.per_host.retain(|_, n| *n > 0);
    }

    fn end_sessions(&self, st: &mut State, ids: &[u64], flows: &FlowTable, now: Time) {
        for id in ids {
            let Some(sess) = st.sessions.remove(id) else { continue };
            for c in &sess.calls {
                if let Some(k) = c.gre {
                    flows.remove_key_queued(&k, now);
                }
                let parts = st_parts(&mut st.pools, &mut st.per_host, &mut st.total_calls, &mut st.gre_index);
                release(c, &sess, parts, &self.cfg, now);
                self.stats.calls_torn_down.inc();
                tracing::info!(flow = id, pns_id = c.pns_id, xlat_id = c.xlat_id, pac_id = ?c.pac_id, "PPTP call ended: control connection closed");
            }
        }
    }

    /// The key of the call GRE flow (its first key, the client's direction) of a GRE packet
    /// quoted in an ICMP error: `(src, dst, Call ID)` as the packet left the gateway. A packet
    /// the gateway sent towards the server (`to_server`: from `src`, the address the PAC
    /// sees, with the PAC's Call ID) or towards the client (from the server as the inside
    /// sees it, with the client's own Call ID). How such an error finds its call.
    pub fn quoted_gre_flow(&self, src: u32, dst: u32, key: u16, to_server: bool) -> Option<FlowKey> {
        let d = usize::from(!to_server);
        let st = self.lock();
        st.sessions
            .values()
            .filter(|s| s.ctl_rewrite[d].src == src && s.ctl_rewrite[d].dst == dst)
            .flat_map(|s| &s.calls)
            .find(|c| if to_server { c.pac_id == Some(key) } else { c.pns_id == key })
            .and_then(|c| c.gre)
    }

    /// A copy of every session (control plane listings).
    pub fn sessions(&self) -> Vec<Session> {
        self.lock().sessions.values().cloned().collect()
    }

    /// Calls in progress: those whose GRE flows exist (established, or clearing until the
    /// CDN arrives).
    pub fn calls_in_progress(&self) -> usize {
        self.lock().sessions.values().flat_map(|s| &s.calls).filter(|c| c.gre.is_some()).count()
    }

    /// IDs in use (live or quarantined) in the pool of (outside address, PAC).
    pub fn pool_in_use(&self, outside: u32, pac: u32) -> usize {
        self.lock().pools.get(&(outside, pac)).map_or(0, Pool::in_use)
    }
}

struct Parts<'a> {
    pools: &'a mut HashMap<(u32, u32), Pool>,
    per_host: &'a mut HashMap<u32, usize>,
    total_calls: &'a mut usize,
    gre_index: &'a mut HashMap<FlowKey, u64>,
}

fn st_parts<'a>(
    pools: &'a mut HashMap<(u32, u32), Pool>,
    per_host: &'a mut HashMap<u32, usize>,
    total_calls: &'a mut usize,
    gre_index: &'a mut HashMap<FlowKey, u64>,
) -> Parts<'a> {
    Parts { pools, per_host, total_calls, gre_index }
}

/// Gives back what call `c` of `sess` held: its translated ID (to quarantine), its GRE key,
/// its place in the per-host and total counts.
fn release(c: &Call, sess: &Session, p: Parts<'_>, cfg: &PptpConfig, now: Time) {
    if sess.translate {
        if let Some(pool) = p.pools.get_mut(&sess.pool_key()) {
            pool.release(c.xlat_id, now.plus(cfg.id_quarantine));
        }
    }
    if let Some(k) = c.gre {
        p.gre_index.remove(&k);
    }
    if let Some(n) = p.per_host.get_mut(&sess.inside_host()) {
        *n = n.saturating_sub(1);
    }
    *p.total_calls = p.total_calls.saturating_sub(1);
}

fn apply(
    sess: &mut Session,
    actions: &[Action],
    p: Parts<'_>,
    flows: &FlowTable,
    cfg: &PptpConfig,
    stats: &PptpStats,
    now: Time,
) {
    let mut closed: Vec<(usize, bool)> = Vec::new();
    let Parts { pools, per_host, total_calls, gre_index } = p;
    for a in actions {
        match *a {
            Action::OpenGre(i) => {
                let Some(c) = sess.calls.get(i) else { continue };
                let Some(pac_id) = c.pac_id else { continue };
                let (keys, rw) = sess.gre_flow(c, pac_id);
                let res = flows.insert(
                    keys[0],
                    [keys[1]],
                    |r| Flow::new([keys[0], r], rw, L4State::Other, FlowKind::Related, now),
                    now,
                );
                match res {
                    Ok(_) => {
                        gre_index.insert(keys[0], sess.flow_id);
                        sess.calls[i].gre = Some(keys[0]);
                        stats.calls_created.inc();
                        let c = &sess.calls[i];
                        tracing::info!(
                            flow = sess.flow_id,
                            pns_id = c.pns_id,
                            xlat_id = c.xlat_id,
                            pac_id,
                            "PPTP call built"
                        );
                    }
                    Err(e) => {
                        stats.call_creation_failure.inc();
                        tracing::warn!(flow = sess.flow_id, ?e, "PPTP call refused: no GRE flow");
                    }
                }
            }
            Action::CloseCall(i) => closed.push((i, true)),
            Action::Forget(i) => closed.push((i, false)),
        }
    }
    closed.sort_unstable();
    closed.dedup_by_key(|(i, _)| *i);
    let host = sess.inside_host();
    for (i, end) in closed.into_iter().rev() {
        if i >= sess.calls.len() {
            continue;
        }
        let c = sess.calls.remove(i);
        if !end {
            if let Some(n) = per_host.get_mut(&host) {
                *n = n.saturating_sub(1);
            }
            *total_calls = total_calls.saturating_sub(1);
            continue;
        }
        if let Some(k) = c.gre {
            flows.remove_key_queued(&k, now);
        }
        release(&c, sess, st_parts(pools, per_host, total_calls, gre_index), cfg, now);
        stats.calls_torn_down.inc();
        tracing::info!(flow = sess.flow_id, pns_id = c.pns_id, xlat_id = c.xlat_id, pac_id = ?c.pac_id, "PPTP call ended");
    }
}

/// The call logic as the stream sees it, for one segment.
struct Ctx<'a> {
    cfg: &'a PptpConfig,
    stats: &'a PptpStats,
    translate: bool,
    state: &'a mut SessionState,
    calls: &'a mut Vec<Call>,
    pool: &'a mut Pool,
    per_host: &'a mut usize,
    total_calls: &'a mut usize,
    rng: &'a mut u32,
    /// The call the message being parsed concerns.
    current: Option<usize>,
    next_serial: &'a mut u32,
    actions: &'a mut Vec<Action>,
    refused: bool,
    now: Time,
}

impl Ctx<'_> {
    fn rand(&mut self) -> u32 {
        let mut x = *self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *self.rng = x;
        x
    }

    /// The one call whose `id(call)` is `v` (both bytes known) or whose high byte is `hi`.
    fn find(&self, hi: u8, lo: Option<u8>, id: impl Fn(&Call) -> Option<u16>) -> Find {
        let mut found = Find::None;
        for (i, c) in self.calls.iter().enumerate() {
            let Some(v) = id(c) else { continue };
            let hit = match lo {
                Some(lo) => v == u16::from_be_bytes([hi, lo]),
                None => (v >> 8) as u8 == hi,
            };
            if hit {
                if !matches!(found, Find::None) {
                    return Find::Ambiguous;
                }
                found = Find::One(i);
            }
        }
        found
    }

    fn allocate(&mut self, msg: MsgType, hi: u8, lo: Option<u8>) -> Option<u16> {
        let orig = u16::from_be_bytes([hi, lo.unwrap_or(0)]);
        if msg == MsgType::Icrp {
            // the PNS answers an offered incoming call; with one offered call, it is that one
            let offered: Vec<usize> =
                self.calls.iter().enumerate().filter(|(_, c)| c.state == CallState::Offered).map(|(i, _)| i).collect();
            if let [i] = offered[..] {
                return self.assign_id(i, orig);
            }
        }
        if self.calls.len() >= self.cfg.max_calls_per_session
            || *self.per_host >= self.cfg.max_calls_per_host
            || *self.total_calls >= self.cfg.max_calls_total
        {
            self.refuse("call limit reached");
            return None;
        }
        *self.next_serial += 1;
        self.calls.push(Call {
            serial: *self.next_serial,
            pns_id: orig,
            xlat_id: orig,
            pac_id: None,
            state: if msg == MsgType::Ocrq { CallState::Requested } else { CallState::Accepted },
            outgoing: msg == MsgType::Ocrq,
            gre: None,
            created: self.now,
        });
        *self.per_host += 1;
        *self.total_calls += 1;
        let i = self.calls.len() - 1;
        self.assign_id(i, orig)
    }

    fn assign_id(&mut self, i: usize, orig: u16) -> Option<u16> {
        self.current = Some(i);
        self.calls[i].pns_id = orig;
        if !self.translate {
            self.calls[i].xlat_id = orig;
            return None;
        }
        let taken: Vec<u8> =
            self.calls.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| (c.xlat_id >> 8) as u8).collect();
        let start = self.rand();
        let got = self.pool.allocate(start, self.cfg.id_limit, |t| !taken.contains(&((t >> 8) as u8)));
        match got {
            Some(t) => {
                self.calls[i].xlat_id = t;
                Some(t)
            }
            None => {
                self.calls.remove(i);
                *self.per_host = self.per_host.saturating_sub(1);
                *self.total_calls = self.total_calls.saturating_sub(1);
                self.current = None;
                self.refuse("Call-ID pool exhausted");
                None
            }
        }
    }

    fn refuse(&mut self, why: &'static str) {
        self.stats.call_creation_failure.inc();
        tracing::warn!(why, "PPTP call refused");
        self.refused = true;
    }
}

enum Find {
    None,
    One(usize),
    Ambiguous,
}

impl Translator for Ctx<'_> {
    fn refused(&self) -> bool {
        self.refused
    }

    fn decide(&mut self, msg: MsgType, field: Field, hi: u8, lo: Option<u8>) -> Option<u16> {
        self.current = None;
        match field {
            Field::AllocPns => self.allocate(msg, hi, lo),
            Field::PnsToXlat => match self.find(hi, lo, |c| Some(c.pns_id)) {
                Find::One(i) => {
                    self.current = Some(i);
                    self.translate.then_some(self.calls[i].xlat_id)
                }
                Find::None => {
                    self.stats.mismatched_pns_call_id.inc();
                    None
                }
                Find::Ambiguous => {
                    self.stats.split_field_ambiguous.inc();
                    None
                }
            },
            Field::XlatToPns => match self.find(hi, lo, |c| Some(c.xlat_id)) {
                Find::One(i) => {
                    self.current = Some(i);
                    self.translate.then_some(self.calls[i].pns_id)
                }
                _ => {
                    self.stats.mismatched_pac_call_id.inc();
                    None
                }
            },
            Field::Cdn => {
                // the PAC's own ID first; else the translated PNS ID (restored); else the
                // only call of the session
                if let Find::One(i) = self.find(hi, lo, |c| c.pac_id) {
                    self.current = Some(i);
                    return None;
                }
                if let Find::One(i) = self.find(hi, lo, |c| Some(c.xlat_id)) {
                    self.current = Some(i);
                    return self.translate.then_some(self.calls[i].pns_id);
                }
                if self.calls.len() == 1 {
                    self.current = Some(0);
                } else {
                    self.stats.mismatched_pac_call_id.inc();
                }
                None
            }
        }
    }

    fn field_done(&mut self, _msg: MsgType, field: Field, orig: u16, _written: Option<u16>) {
        let Some(i) = self.current else { return };
        match field {
            Field::AllocPns => {
                self.calls[i].pns_id = orig;
                if !self.translate {
                    self.calls[i].xlat_id = orig;
                }
            }
            // decided on the high byte alone: check the whole value agrees
            Field::PnsToXlat if self.calls[i].pns_id != orig => {
                self.stats.mismatched_pns_call_id.inc();
                self.current = None;
            }
            Field::XlatToPns if self.calls[i].xlat_id != orig => {
                self.stats.mismatched_pac_call_id.inc();
                self.current = None;
            }
            _ => {}
        }
    }

    fn message(&mut self, msg: MsgType, head: &[u8]) {
        let be = |o: usize| u16::from_be_bytes([head[o], head[o + 1]]);
        let cur = self.current.take();
        match msg {
            MsgType::Sccrp if head[14] == 1 => *self.state = SessionState::Established,
            MsgType::StopCcrq | MsgType::StopCcrp => {
                *self.state = SessionState::Stopping;
                for i in 0..self.calls.len() {
                    self.actions.push(Action::CloseCall(i));
                }
            }
            MsgType::Ocrp => {
                let Some(i) = cur else { return };
                let c = &mut self.calls[i];
                let (pac_id, result) = (be(12), head[16]);
                match c.state {
                    CallState::Requested if result == 1 => {
                        c.pac_id = Some(pac_id);
                        c.state = CallState::Established;
                        self.actions.push(Action::OpenGre(i));
                    }
                    CallState::Requested => self.actions.push(Action::CloseCall(i)),
                    _ if c.pac_id == Some(pac_id) => self.stats.retransmitted_pac_message.inc(),
                    _ => self.stats.mismatched_pac_call_id.inc(),
                }
            }
            MsgType::Icrq => {
                let pac_id = be(12);
                if self.calls.iter().any(|c| c.pac_id == Some(pac_id)) {
                    self.stats.retransmitted_pac_message.inc();
                    return;
                }
                if self.calls.len() >= self.cfg.max_calls_per_session
                    || *self.per_host >= self.cfg.max_calls_per_host
                    || *self.total_calls >= self.cfg.max_calls_total
                {
                    self.stats.call_creation_failure.inc();
                    return;
                }
                *self.next_serial += 1;
                self.calls.push(Call {
                    serial: *self.next_serial,
                    pns_id: 0,
                    xlat_id: 0,
                    pac_id: Some(pac_id),
                    state: CallState::Offered,
                    outgoing: false,
                    gre: None,
                    created: self.now,
                });
                *self.per_host += 1;
                *self.total_calls += 1;
            }
            MsgType::Icrp => {
                let Some(i) = cur else { return };
                let (peer, result) = (be(14), head[16]);
                if result != 1 {
                    self.actions.push(Action::CloseCall(i));
                    return;
                }
                // several calls were offered: this ICRP's entry joins the one it names
                if self.calls[i].pac_id.is_none() {
                    match self.calls.iter().position(|c| c.state == CallState::Offered && c.pac_id == Some(peer)) {
                        Some(j) => {
                            let (pns_id, xlat_id) = (self.calls[i].pns_id, self.calls[i].xlat_id);
                            let c = &mut self.calls[j];
                            (c.pns_id, c.xlat_id, c.state) = (pns_id, xlat_id, CallState::Accepted);
                            self.actions.push(Action::Forget(i));
                            return;
                        }
                        None => {
                            self.stats.mismatched_pns_call_id.inc();
                            self.calls[i].pac_id = Some(peer);
                        }
                    }
                }
                self.calls[i].state = CallState::Accepted;
            }
            MsgType::Iccn => {
                let Some(i) = cur else { return };
                if self.calls[i].state == CallState::Accepted {
                    self.calls[i].state = CallState::Established;
                    self.actions.push(Action::OpenGre(i));
                } else {
                    self.stats.retransmitted_pac_message.inc();
                }
            }
            MsgType::Ccrq => {
                if let Some(i) = cur {
                    self.calls[i].state = CallState::Clearing;
                }
            }
            MsgType::Cdn => {
                if let Some(i) = cur {
                    self.actions.push(Action::CloseCall(i));
                }
            }
            _ => {}
        }
    }
}
