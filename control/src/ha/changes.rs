//! What the active gateway has to tell its standby, as a diff against what it told already:
//! a flow when it is new, when its keys, protocol state or travelling status bits changed,
//! or when its idle timer moved on by more than an eighth of its timeout (idle timers are
//! refreshed lazily, not per packet); its end; each PPTP control session after its inspector
//! state changed (a control message went through) and each call that changed or ended.
//!
//! New and ended flows come from the engine's flow events at once; everything else from a
//! walk of the table in steps, a slice of slots per tick, whose full pass also finds flows
//! whose end the event ring missed. A bulk resync restarts the walk with nothing marked as
//! told, and ends with a `BulkEnd` record once the pass completed.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use xgw_dataplane::conntrack::{EventKind, Flow, FlowEvent, FlowKey, L4State};
use xgw_dataplane::{Shared, Time};
use xgw_sync::record::{Record, SyncFlow, TRAVELLING};

/// What was told of a flow.
#[derive(Debug, Clone, Copy)]
struct Told {
    keys: [FlowKey; 2],
    l4: L4State,
    status: u8,
    last_seen: Time,
    /// The walk's pass that last saw it.
    pass: u32,
}

/// What was told of a PPTP session: its bytes (time-dependent ones blanked) and each call's.
#[derive(Debug, Default)]
struct ToldSession {
    ctl: Option<FlowKey>,
    state: Vec<u8>,
    calls: HashMap<u32, Vec<u8>>,
}

/// The bytes of an exported session that count down with time (teardown milliseconds left).
const SESSION_CLOCK: core::ops::Range<usize> = 3..7;

/// The diff.
#[derive(Debug, Default)]
pub(super) struct Changes {
    told: HashMap<u64, Told>,
    sessions: HashMap<u64, ToldSession>,
    cursor: u32,
    pass: u32,
    bulk: bool,
    /// The walk's copies of a slice of the table (kept between steps: no allocation per tick).
    scratch: Vec<Flow>,
    /// Records waiting to be sent, in order.
    pub(super) pending: VecDeque<Record>,
}

/// A refresh is due when a flow's idle timer moved on by this much since it was told.
fn refresh_after(f: &Flow, shared: &Shared) -> Duration {
    (f.timeout(&shared.config().timeouts) / 8).max(Duration::from_secs(1))
}

impl Changes {
    /// Forgets what was told (after a demotion: a later promotion tells everything again).
    pub(super) fn reset(&mut self) {
        *self = Changes::default();
    }

    /// Starts a bulk resync: everything is told again, then `BulkEnd`.
    pub(super) fn start_bulk(&mut self) {
        self.told.clear();
        self.sessions.clear();
        self.pending.clear();
        self.cursor = 0;
        self.bulk = true;
    }

    /// A bulk resync is under way.
    pub(super) fn bulk(&self) -> bool {
        self.bulk
    }

    /// Flows told and not ended (for the status view).
    pub(super) fn told(&self) -> usize {
        self.told.len()
    }

    fn tell(&mut self, f: &Flow, shared: &Shared, now: Time) {
        let remaining = f.remaining(now, &shared.config().timeouts);
        self.pending.push_back(Record::Flow(SyncFlow::of(f, remaining)));
        let t = Told { keys: f.keys, l4: f.l4, status: f.status & TRAVELLING, last_seen: f.last_seen, pass: self.pass };
        self.told.insert(f.id, t);
    }

    /// A flow event from the engine.
    pub(super) fn on_event(&mut self, ev: &FlowEvent, shared: &Shared, now: Time) {
        match ev.kind {
            EventKind::New => {
                if !self.told.contains_key(&ev.flow.id) {
                    self.tell(&ev.flow, shared, now);
                }
            }
            EventKind::Destroy => {
                if self.told.remove(&ev.flow.id).is_some() {
                    self.pending.push_back(Record::Gone { key: ev.flow.keys[0], id: ev.flow.id });
                }
                self.sessions.remove(&ev.flow.id);
            }
        }
    }

    /// Walks the next `slots` slots of the table; at the end of a pass, tells the end of
    /// flows no longer there and, in a bulk resync, every PPTP session then `BulkEnd`.
    pub(super) fn walk(&mut self, shared: &Shared, slots: u32, now: Time) {
        let cap = u32::try_from(shared.flows.capacity()).unwrap_or(u32::MAX);
        let end = self.cursor.saturating_add(slots).min(cap);
        let mut seen = std::mem::take(&mut self.scratch);
        seen.clear();
        shared.flows.for_each_in(self.cursor..end, |_, f| seen.push(*f));
        for f in &seen {
            let due = match self.told.get_mut(&f.id) {
                None => true,
                Some(t) => {
                    t.pass = self.pass;
                    t.keys != f.keys
                        || t.l4 != f.l4
                        || t.status != f.status & TRAVELLING
                        || f.last_seen.since(t.last_seen) >= refresh_after(f, shared)
                }
            };
            if due {
                self.tell(f, shared, now);
            }
        }
        self.scratch = seen;
        self.cursor = end;
        if end < cap {
            return;
        }
        // a pass ended: what it did not see has ended
        let pass = self.pass;
        let gone: Vec<(u64, FlowKey)> =
            self.told.iter().filter(|(_, t)| t.pass != pass).map(|(id, t)| (*id, t.keys[0])).collect();
        for (id, key) in gone {
            self.told.remove(&id);
            self.sessions.remove(&id);
            self.pending.push_back(Record::Gone { key, id });
        }
        self.pass = self.pass.wrapping_add(1);
        self.cursor = 0;
        if self.bulk {
            self.pptp(shared, now);
            self.pending.push_back(Record::BulkEnd);
            self.bulk = false;
        }
    }

    /// Tells every PPTP session whose inspector state changed, and its calls that changed
    /// or ended. A session is told only once its control flow was.
    pub(super) fn pptp(&mut self, shared: &Shared, now: Time) {
        let ids = shared.pptp.session_ids();
        // a session that ended (its control connection closed and the grace ran out) takes
        // its calls with it: the standby is told each call's end, as its control flow may
        // live on (TIME_WAIT) and would keep them
        let ended: Vec<u64> = self.sessions.keys().copied().filter(|id| !ids.contains(id)).collect();
        for id in ended {
            if let Some(told) = self.sessions.remove(&id) {
                if let Some(ctl) = told.ctl {
                    let mut serials: Vec<u32> = told.calls.into_keys().collect();
                    serials.sort_unstable();
                    self.pending.extend(serials.into_iter().map(|serial| Record::PptpCallGone { ctl, serial }));
                }
            }
        }
        for id in ids {
            let Some(ctl) = self.told.get(&id).map(|t| t.keys[0]) else { continue };
            let Some((mut state, calls)) = shared.pptp.export_session(id, now) else { continue };
            let told = self.sessions.entry(id).or_default();
            let mut blanked = state.clone();
            if let Some(b) = blanked.get_mut(SESSION_CLOCK) {
                b.fill(0);
            }
            if told.ctl != Some(ctl) || told.state != blanked {
                told.ctl = Some(ctl);
                told.state = blanked;
                self.pending.push_back(Record::PptpSession { ctl, state: std::mem::take(&mut state) });
            }
            let serials: Vec<u32> = calls.iter().map(|(s, _)| *s).collect();
            for (serial, bytes) in calls {
                if told.calls.get(&serial) != Some(&bytes) {
                    told.calls.insert(serial, bytes.clone());
                    self.pending.push_back(Record::PptpCall { ctl, state: bytes });
                }
            }
            let ended: Vec<u32> = told.calls.keys().copied().filter(|s| !serials.contains(s)).collect();
            for serial in ended {
                told.calls.remove(&serial);
                self.pending.push_back(Record::PptpCallGone { ctl, serial });
            }
        }
    }
}

#[cfg(test)]
#[path = "changes_tests.rs"]
mod tests;
