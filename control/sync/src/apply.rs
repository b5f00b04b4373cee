//! The standby's side of a record: a flow is created in (or updated in) the engine's table
//! with the active gateway's keys and rewrites — its outside port stays claimed, so the
//! standby's own translations never collide with it — and expires when it would have on the
//! active one; a removal removes it. This is what keeps the standby's tables hot: after a
//! promotion its engine finds every synced flow as if it had created it.

use std::time::Duration;

use xgw_dataplane::conntrack::{status, Flow, FlowKey, InsertError};
use xgw_dataplane::{Shared, Time};

use crate::record::{Record, SyncFlow, TRAVELLING};

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A flow was created.
    Created,
    /// A flow with these keys existed and was brought up to date.
    Updated,
    /// A flow was removed.
    Removed,
    /// A removal of a flow the standby does not have.
    Absent,
    /// The table is full: the flow is not held (counted; a later bulk sync retries).
    TableFull,
    /// Another flow holds one of its keys (the standby created it itself): left as it is.
    Conflict,
    /// A PPTP record for a control connection the standby has no flow for (yet), or whose
    /// state the inspector refused.
    PptpRefused,
    /// The end of a bulk resync (nothing to apply; the caller marks itself in sync).
    BulkEnd,
}

impl Applied {
    /// Every outcome, in counter order.
    pub const ALL: [Applied; 8] = [
        Applied::Created,
        Applied::Updated,
        Applied::Removed,
        Applied::Absent,
        Applied::TableFull,
        Applied::Conflict,
        Applied::PptpRefused,
        Applied::BulkEnd,
    ];

    /// The outcome's counter name.
    pub fn name(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Updated => "updated",
            Applied::Removed => "removed",
            Applied::Absent => "absent",
            Applied::TableFull => "table_full",
            Applied::Conflict => "conflict",
            Applied::PptpRefused => "pptp_refused",
            Applied::BulkEnd => "bulk_end",
        }
    }
}

/// `last_seen` for a flow that may stay idle `remaining` more (capped at its timeout here).
fn last_seen_for(f: &Flow, remaining: Duration, shared: &Shared, now: Time) -> Time {
    let timeout = f.timeout(&shared.config().timeouts);
    let idle = timeout.saturating_sub(remaining.min(timeout));
    Time(now.as_nanos().saturating_sub(u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX)))
}

fn update(f: &mut Flow, s: &SyncFlow, shared: &Shared, now: Time) {
    f.l4 = s.l4;
    f.status = (f.status & !TRAVELLING) | (s.status & TRAVELLING);
    f.rule = s.rule;
    f.last_seen = last_seen_for(f, s.remaining, shared, now);
}

const ESP: u8 = 50;

/// Moves a flow's reply direction from key `old` to `new`.
fn rekey(shared: &Shared, old: &FlowKey, new: FlowKey) -> bool {
    shared.flows.lookup(old).is_some_and(|rr| shared.flows.rekey(rr, old, new))
}

/// The standby's flow id of the control connection with original key `ctl`.
fn control_id(shared: &Shared, ctl: &FlowKey) -> Option<u64> {
    let fr = shared.flows.lookup(ctl)?;
    shared.flows.with_flow(fr, ctl, |f, _| f.id)
}

/// Applies one record to the standby's tables at `now`.
pub fn apply(shared: &Shared, r: &Record, now: Time) -> Applied {
    match r {
        Record::BulkEnd => Applied::BulkEnd,
        Record::Gone { key, .. } => match shared.flows.remove_key(key, now) {
            Some(f) => {
                // its host's count, and a control connection's calls, end with it
                shared.flow_gone(&f, now);
                Applied::Removed
            }
            None => Applied::Absent,
        },
        Record::PptpSession { ctl, state } => {
            let flow = shared.flows.lookup(ctl).and_then(|fr| shared.flows.with_flow(fr, ctl, |f, _| *f));
            match flow.map(|f| shared.pptp.import_session(&f, state, now)) {
                Some(Ok(())) => Applied::Updated,
                _ => Applied::PptpRefused,
            }
        }
        Record::PptpCall { ctl, state } => match control_id(shared, ctl) {
            Some(id) if shared.pptp.import_call(id, state, now).is_ok() => Applied::Updated,
            _ => Applied::PptpRefused,
        },
        Record::PptpCallGone { ctl, serial } => match control_id(shared, ctl) {
            Some(id) if shared.pptp.forget_call(id, *serial, now) => Applied::Removed,
            _ => Applied::Absent,
        },
        Record::Flow(s) => {
            let [orig, reply] = s.keys;
            if let Some(fr) = shared.flows.lookup(&orig) {
                // the same flow, or an ESP flow whose reply key (the peer's inbound SPI) the
                // active learnt since it was told: the standby's copy takes the new key
                let found = shared.flows.with_flow(fr, &orig, |f, _| {
                    if f.keys == s.keys {
                        update(f, s, shared, now);
                        None
                    } else {
                        Some(f.keys[1])
                    }
                });
                return match found {
                    Some(None) => Applied::Updated,
                    Some(Some(old)) if orig.proto == ESP && rekey(shared, &old, reply) => {
                        shared.flows.with_flow(fr, &orig, |f, _| update(f, s, shared, now));
                        Applied::Updated
                    }
                    _ => Applied::Conflict,
                };
            }
            let made = shared.flows.insert(
                orig,
                [reply],
                |k| {
                    let mut f = Flow::new([orig, k], s.rewrite, s.l4, s.kind, now);
                    f.status = s.status & TRAVELLING & !status::OFFLOAD;
                    f.rule = s.rule;
                    f
                },
                now,
            );
            match made {
                Ok((fr, flow)) => {
                    // counted against its host as on the active (outside the flow's lock)
                    let counted = s.status & status::HOST_COUNTED != 0 && shared.count_synced_host(&flow);
                    // and its port block becomes its host's here too
                    shared.adopt_synced_block(&flow, now);
                    shared.flows.with_flow(fr, &orig, |f, _| {
                        f.last_seen = last_seen_for(f, s.remaining, shared, now);
                        if counted {
                            f.status |= status::HOST_COUNTED;
                        }
                    });
                    Applied::Created
                }
                Err(InsertError::Full) => Applied::TableFull,
                Err(InsertError::NoReplyKey | InsertError::Exists(_)) => Applied::Conflict,
            }
        }
    }
}
