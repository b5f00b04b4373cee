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
//!
//! For a standby gateway, sessions and calls export to bytes and import again (`snapshot`):
//! the standby carries on a control connection where the active one left it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::{InvalidPolicy, PptpConfig};
use crate::conntrack::{Flow, FlowKey, FlowKind, FlowTable};
use crate::counters::SharedCounter;
use crate::time::Time;
use msg::Side;
use pool::Pool;
use stream::{Change, SegOutcome, Stream};

pub mod msg;
pub mod pool;
pub mod stream;

mod session;
mod snapshot;
mod translate;

pub use session::{Call, CallState, Session, SessionState};
pub use snapshot::{SessionExport, SnapshotError, CALL_LEN, SESSION_LEN};
use translate::*;

crate::counter_family! {
    /// PPTP inspector counters (names as operators know them from A10/ASA).
    pub struct PptpStats: SharedCounter {
        /// Control sessions created.
        sessions,
        /// Calls that got GRE flows.
        calls_created,
        /// Calls ended (CDN, clear, stop, control close, GRE idle).
        calls_torn_down,
        /// New calls refused (caps, pool exhaustion, table full).
        call_creation_failure,
        /// Invalid messages from the PNS.
        truncated_pns_message,
        /// Invalid messages from the PAC.
        truncated_pac_message,
        /// PNS messages naming a call that does not exist.
        mismatched_pns_call_id,
        /// PAC messages naming a call that does not exist.
        mismatched_pac_call_id,
        /// PAC replies repeated for a call already set up.
        retransmitted_pac_message,
        /// Segments refused because they arrived out of order.
        out_of_order_segments,
        /// Fields split between segments whose first byte fitted several calls.
        split_field_ambiguous,
        /// Sessions whose start was not seen (no inspection possible).
        unsynced_sessions,
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
    /// Port blocks: translated Call IDs are drawn from the host's block ports.
    blocks: Option<std::sync::Arc<crate::nat::blocks::PortBlocks>>,
    state: Mutex<State>,
    /// Counters.
    pub stats: PptpStats,
}

/// The PPTP control port.
pub use xgw_ebpf_common::proto::PPTP_PORT as PORT;

impl Pptp {
    /// An inspector with `cfg`.
    pub fn new(cfg: PptpConfig) -> Pptp {
        Pptp {
            cfg,
            blocks: None,
            state: Mutex::new(State { rng: 0x2545_f491, ..State::default() }),
            stats: PptpStats::default(),
        }
    }

    /// With port blocks: a call's translated Call ID is one of its host's block ports, so
    /// that (outside address, Call ID) names the subscriber as (outside address, port) does.
    pub fn with_blocks(mut self, blocks: Option<std::sync::Arc<crate::nat::blocks::PortBlocks>>) -> Pptp {
        self.blocks = blocks;
        self
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
        // data the receiver's first acknowledgement corrects it. (A SYN-ACK can be seen here
        // and then lost; the server may answer the client's retransmitted SYN with a new
        // initial sequence number — SYN cookies do — and only the client's ACK tells which
        // one the connection uses. Parsing from the wrong one would refuse every segment.)
        // After that first acknowledgement nothing moves it: a stray SYN-ACK or a flipped
        // ACK number must not make the parser skip messages it has not seen.
        if flags & f::SYN != 0 {
            sess.streams[d].syn(seq);
        }
        if flags & f::ACK != 0 {
            sess.streams[1 - d].acknowledged(ack);
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
                blocks: self.blocks.as_deref(),
                host,
                addr: pool_key.0,
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
