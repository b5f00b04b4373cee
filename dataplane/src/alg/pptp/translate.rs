//! What each control message does: the call logic the stream drives ([`Ctx`] as its
//! `Translator`), and applying its outcome to the flow table and the ID pools.

use std::collections::HashMap;

use crate::config::PptpConfig;
use crate::conntrack::{Flow, FlowKey, FlowKind, FlowTable, L4State};
use crate::time::Time;
use msg::{Field, MsgType};
use pool::Pool;
use stream::Translator;

use super::*;

pub(super) struct Parts<'a> {
    pub(super) pools: &'a mut HashMap<(u32, u32), Pool>,
    pub(super) per_host: &'a mut HashMap<u32, usize>,
    pub(super) total_calls: &'a mut usize,
    pub(super) gre_index: &'a mut HashMap<FlowKey, u64>,
}

pub(super) fn st_parts<'a>(
    pools: &'a mut HashMap<(u32, u32), Pool>,
    per_host: &'a mut HashMap<u32, usize>,
    total_calls: &'a mut usize,
    gre_index: &'a mut HashMap<FlowKey, u64>,
) -> Parts<'a> {
    Parts { pools, per_host, total_calls, gre_index }
}

/// Gives back what call `c` of `sess` held: its translated ID (to quarantine), its GRE key,
/// its place in the per-host and total counts.
pub(super) fn release(c: &Call, sess: &Session, p: Parts<'_>, cfg: &PptpConfig, now: Time) {
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

pub(super) fn apply(
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
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a PptpConfig,
    pub(super) stats: &'a PptpStats,
    pub(super) translate: bool,
    pub(super) state: &'a mut SessionState,
    pub(super) calls: &'a mut Vec<Call>,
    pub(super) pool: &'a mut Pool,
    pub(super) per_host: &'a mut usize,
    pub(super) total_calls: &'a mut usize,
    pub(super) rng: &'a mut u32,
    /// Port blocks, the PNS's inside address and the outside address it is translated
    /// onto: translated IDs come from the host's blocks.
    pub(super) blocks: Option<&'a crate::nat::blocks::PortBlocks>,
    pub(super) host: u32,
    pub(super) addr: u32,
    /// The call the message being parsed concerns.
    pub(super) current: Option<usize>,
    pub(super) next_serial: &'a mut u32,
    pub(super) actions: &'a mut Vec<Action>,
    pub(super) refused: bool,
    pub(super) now: Time,
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
        let (limit, ok) = (self.cfg.id_limit, |t: u16| !taken.contains(&((t >> 8) as u8)));
        let got = match self.blocks {
            Some(b) => match b.held(self.host, self.addr, self.now) {
                Ok(held) => {
                    let ids = crate::nat::blocks::BlockPorts::every(held, b.layout().size, start);
                    self.pool.allocate_in(ids.filter(|&t| t <= limit), ok)
                }
                Err(_) => None,
            },
            None => self.pool.allocate(start, limit, ok),
        };
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

pub(super) enum Find {
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
