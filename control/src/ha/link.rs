//! The sync thread: one UDP socket on the sync link, the FT-FW channel's two halves, the
//! diff of what to tell ([`super::changes`]), and the standby's side (records applied to the
//! engine's tables). Every few milliseconds it reads what arrived, tells what changed (as
//! master, or in a bulk resync the peer asked for), runs the channel's timers, decides
//! whether this gateway is ready to take over and publishes its status.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xgw_control_proto::answer::{Counters, HaStatus};
use xgw_dataplane::conntrack::FlowEvent;
use xgw_dataplane::{Shared, Time};
use xgw_sync::apply::{apply, Applied};
use xgw_sync::channel::{PeerState, Receiver, Sender, SenderAction};
use xgw_sync::record::{Batch, Record};
use xgw_sync::wire::{Kind, Message, Refused};

use super::changes::Changes;
use super::{Ha, Role};

/// How often the thread wakes (socket read timeout).
const TICK: Duration = Duration::from_millis(5);
/// Ticks per pass of the table walk (about half a second at 200 ticks a second): a flow's
/// state change reaches the standby within a pass; the walk's cost is the table's size per
/// pass, whatever the traffic.
const TICKS_PER_PASS: u32 = 100;
/// At most this many messages in flight unacknowledged; beyond, telling waits.
const IN_FLIGHT: usize = 1024;
/// Records waiting beyond this pause the walk (the peer is slow or gone).
const PENDING_MAX: usize = 16_384;
/// A backup not in sync asks the peer for a bulk resync this often.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// A gateway that has heard no peer this long after start is alone, and ready.
const ALONE_AFTER: Duration = Duration::from_secs(2);

/// Every counter of the link, in the order `xgwctl ha status` and `/metrics` list them.
pub const COUNTERS: [&str; 14] = [
    "messages_sent",
    "records_sent",
    "bulk_sent",
    "bulk_received",
    "resync_requested",
    "resync_asked",
    "messages_received",
    "records_applied",
    "records_invalid",
    "data_ignored_as_master",
    "refused_source",
    "send_errors",
    "events_skipped",
    "role_changes",
];

fn ix(name: &str) -> usize {
    COUNTERS.iter().position(|n| *n == name).unwrap_or(0)
}

struct Link {
    ha: Arc<Ha>,
    shared: Arc<Shared>,
    sock: UdpSocket,
    sender: Sender,
    receiver: Receiver,
    changes: Changes,
    counts: [u64; COUNTERS.len()],
    refused: [u64; Refused::ALL.len()],
    applied: [u64; Applied::ALL.len()],
    synced: bool,
    synced_session: Option<u32>,
    last_bulk: Option<Time>,
    last_resync_ask: Option<Time>,
    started: Time,
    ready: Option<bool>,
    role: Role,
}

/// Starts the sync thread; it runs until `stop`. `events` are the engine's flow events (a
/// subscription of the control socket's event hub; a full queue loses events the table
/// walk makes up for).
pub fn start(
    ha: Arc<Ha>,
    shared: Arc<Shared>,
    events: crossbeam::channel::Receiver<FlowEvent>,
    stop: Arc<AtomicBool>,
    base: Instant,
    seed: u32,
) -> Result<std::thread::JoinHandle<()>> {
    let sock = UdpSocket::bind(ha.cfg.listen)
        .with_context(|| format!("[ha] listen {}: binding the sync socket", ha.cfg.listen))?;
    sock.set_read_timeout(Some(TICK))?;
    let now = time(base);
    let params = xgw_sync::channel::Params::default();
    let mut link = Link {
        sender: Sender::new(params, seed, seed.rotate_left(16) | 1, now),
        receiver: Receiver::new(params),
        ha,
        shared,
        sock,
        changes: Changes::default(),
        counts: [0; COUNTERS.len()],
        refused: [0; Refused::ALL.len()],
        applied: [0; Applied::ALL.len()],
        synced: false,
        synced_session: None,
        last_bulk: None,
        last_resync_ask: None,
        started: now,
        ready: None,
        role: Role::Backup,
    };
    tracing::info!(listen = %link.ha.cfg.listen, peer = %link.ha.cfg.peer, authenticated = link.ha.cfg.key.is_some(), "HA sync link up");
    Ok(std::thread::Builder::new().name("xgw-sync".into()).spawn(move || {
        let hello = link.sender.hello(now);
        link.send(&hello);
        let mut buf = vec![0u8; 2048];
        let mut published = Time::ZERO;
        while !stop.load(Ordering::Relaxed) {
            link.receive(&mut buf, base);
            let now = time(base);
            link.follow_role();
            link.produce(&events, now);
            link.flush(now);
            link.timers(now);
            if now.since(published) >= Duration::from_millis(100) {
                link.publish(now);
                published = now;
            }
        }
        if let Some(f) = &link.ha.cfg.ready_file {
            let _ = super::write_ready(f, false);
        }
    })?)
}

fn time(base: Instant) -> Time {
    Time(u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

impl Link {
    fn count(&mut self, name: &str, n: u64) {
        self.counts[ix(name)] += n;
    }

    fn send(&mut self, m: &Message) {
        let d = m.encode(self.ha.cfg.key.as_deref());
        match self.sock.send_to(&d, self.ha.cfg.peer) {
            Ok(_) => self.count("messages_sent", 1),
            Err(_) => self.count("send_errors", 1),
        }
    }

    /// Reads every datagram waiting: the first read waits up to a tick, the others do not
    /// wait (the socket is back to waiting reads on the way out, whatever ended the loop).
    fn receive(&mut self, buf: &mut [u8], base: Instant) {
        let mut waiting = true;
        for _ in 0..4096 {
            let Ok((n, from)) = self.sock.recv_from(buf) else { break };
            let now = time(base);
            self.on_datagram(&buf[..n], from, now);
            if waiting {
                waiting = self.sock.set_nonblocking(true).is_err();
                if waiting {
                    break;
                }
            }
        }
        if !waiting {
            let _ = self.sock.set_nonblocking(false);
        }
    }

    fn on_datagram(&mut self, d: &[u8], from: SocketAddr, now: Time) {
        if from.ip() != self.ha.cfg.peer.ip() {
            self.count("refused_source", 1);
            return;
        }
        let m = match Message::decode(d, self.ha.cfg.key.as_deref()) {
            Ok(m) => m,
            Err(r) => {
                if let Some(i) = Refused::ALL.iter().position(|x| *x == r) {
                    self.refused[i] += 1;
                }
                return;
            }
        };
        self.count("messages_received", 1);
        match m.kind {
            Kind::Ack => self.sender.on_ack(m.a),
            Kind::Nack => match self.sender.on_nack(m.a, m.b, now) {
                SenderAction::Resend(ms) => ms.iter().for_each(|m| self.send(m)),
                SenderAction::Resync => self.changes.start_bulk(),
                SenderAction::None => {}
            },
            Kind::Resync => {
                self.count("resync_asked", 1);
                self.changes.start_bulk();
            }
            Kind::Hello | Kind::Data | Kind::Alive => {
                let r = self.receiver.on_message(&m, now);
                if self.receiver.session() != self.synced_session {
                    // the peer (re)started: what we had from it is not a sync with it
                    self.synced = false;
                    self.synced_session = self.receiver.session();
                }
                for reply in &r.reply {
                    if reply.kind == Kind::Resync {
                        self.count("resync_requested", 1);
                        self.last_resync_ask = Some(now);
                    }
                    self.send(reply);
                }
                if r.apply {
                    self.apply(&m.payload, now);
                }
            }
        }
    }

    fn apply(&mut self, payload: &[u8], now: Time) {
        if self.ha.role() == Role::Master {
            self.count("data_ignored_as_master", 1);
            return;
        }
        let records = match Record::decode_all(payload, self.shared.config().ifaces.len()) {
            Ok(r) => r,
            Err(_) => {
                self.count("records_invalid", 1);
                return;
            }
        };
        for rec in &records {
            let a = apply(&self.shared, rec, now);
            if let Some(i) = Applied::ALL.iter().position(|x| *x == a) {
                self.applied[i] += 1;
            }
            if a == Applied::BulkEnd && self.receiver.missing() == 0 {
                self.synced = true;
                self.last_bulk = Some(now);
                self.count("bulk_received", 1);
            }
        }
        self.count("records_applied", records.len() as u64);
    }

    fn follow_role(&mut self) {
        let r = self.ha.role();
        if r != self.role {
            self.count("role_changes", 1);
            if self.role == Role::Master {
                // demoted: a later promotion tells the peer everything again
                self.changes.reset();
            }
            self.role = r;
        }
    }

    /// Tells what changed: as master, the engine's events, a step of the walk and the
    /// PPTP sessions; in any role, a bulk resync the peer asked for.
    fn produce(&mut self, events: &crossbeam::channel::Receiver<FlowEvent>, now: Time) {
        let master = self.role == Role::Master;
        let room = self.changes.pending.len() < PENDING_MAX;
        for ev in events.try_iter() {
            if master && room {
                self.changes.on_event(&ev, &self.shared, now);
            } else if master {
                self.count("events_skipped", 1);
            }
        }
        if (master || self.changes.bulk()) && room {
            let bulk = self.changes.bulk();
            // a bulk walks as fast as the link takes it
            let per_tick = (u32::try_from(self.shared.flows.capacity()).unwrap_or(u32::MAX) / TICKS_PER_PASS).max(256);
            let slots = if bulk { per_tick.saturating_mul(8) } else { per_tick };
            self.changes.walk(&self.shared, slots, now);
            if bulk && !self.changes.bulk() {
                self.count("bulk_sent", 1);
            }
            if master {
                self.changes.pptp(&self.shared, now);
            }
        }
    }

    /// Sends what is pending, as many messages as the window allows.
    fn flush(&mut self, now: Time) {
        let mut batch = Batch::default();
        while self.sender.unacked() < IN_FLIGHT {
            let Some(r) = self.changes.pending.front() else { break };
            if batch.push(r) {
                self.changes.pending.pop_front();
                continue;
            }
            let n = batch.count as u64;
            let m = self.sender.data(batch.take(), now);
            self.count("records_sent", n);
            self.send(&m);
        }
        if !batch.is_empty() {
            let n = batch.count as u64;
            let m = self.sender.data(batch.take(), now);
            self.count("records_sent", n);
            self.send(&m);
        }
    }

    fn timers(&mut self, now: Time) {
        if let Some(m) = self.sender.tick(now) {
            self.send(&m);
        }
        if let Some(m) = self.receiver.tick(now) {
            self.send(&m);
        }
        let peer = self.receiver.peer(now);
        let ask_due = self.last_resync_ask.is_none_or(|t| now.since(t) >= RESYNC_EVERY);
        if self.role != Role::Master && !self.synced && peer == PeerState::Alive && ask_due {
            self.last_resync_ask = Some(now);
            self.count("resync_requested", 1);
            self.send(&Message::control(Kind::Resync, 0, 0, 0));
        }
        let alone = match peer {
            PeerState::Gone => true,
            PeerState::Unknown => now.since(self.started) >= ALONE_AFTER,
            PeerState::Alive => false,
        };
        let ready = self.role == Role::Master || self.synced || alone;
        if self.ready != Some(ready) {
            self.ready = Some(ready);
            tracing::info!(ready, synced = self.synced, peer = ?peer, "HA readiness");
            if let Some(f) = &self.ha.cfg.ready_file {
                if let Err(e) = super::write_ready(f, ready) {
                    tracing::error!(file = %f.display(), error = %e, "writing the HA ready file");
                }
            }
        }
    }

    fn publish(&mut self, now: Time) {
        let mut counters = Counters::new();
        for (n, v) in COUNTERS.iter().zip(self.counts) {
            counters.insert((*n).to_string(), v);
        }
        for (r, v) in Refused::ALL.iter().zip(self.refused) {
            counters.insert(format!("refused_{}", r.name().trim_start_matches("sync_")), v);
        }
        for (a, v) in Applied::ALL.iter().zip(self.applied) {
            counters.insert(format!("applied_{}", a.name()), v);
        }
        counters.insert("messages_acked".into(), self.sender.acked);
        counters.insert("resent".into(), self.sender.resent);
        counters.insert("nacks_sent".into(), self.receiver.nacks);
        counters.insert("duplicates".into(), self.receiver.duplicates);
        counters.insert("flows_told".into(), self.changes.told() as u64);
        counters.insert("pending".into(), self.changes.pending.len() as u64);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.ha.publish(HaStatus {
            enabled: true,
            role: self.role.name().into(),
            peer: self.ha.cfg.peer.to_string(),
            listen: self.ha.cfg.listen.to_string(),
            peer_state: match self.receiver.peer(now) {
                PeerState::Unknown => "unknown",
                PeerState::Alive => "alive",
                PeerState::Gone => "gone",
            }
            .into(),
            synced: self.synced,
            ready: self.ready.unwrap_or(false),
            last_bulk_ms_ago: self.last_bulk.map(|t| ms(now.since(t))),
            lag_ms: self.sender.oldest_unacked().map_or(0, |t| ms(now.since(t))),
            unacked: self.sender.unacked() as u64,
            counters,
        });
    }
}
