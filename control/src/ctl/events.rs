//! `conntrack watch`: the engine's flow events fanned out to every watching connection,
//! each with a bounded queue and a counted gap.

use std::sync::Arc;

use xgw_dataplane::conntrack::{EventKind, FlowEvent};

use super::*;

/// Events a `conntrack watch` connection may have queued before further ones count as lost.
pub(super) const WATCH_QUEUE: usize = 8192;

/// Fans the engine's flow events out to `conntrack watch` connections. Each watcher has a
/// bounded queue; an event that does not fit is counted in the watcher's gap, as are events
/// the engine's own ring dropped, and the watcher is told the gap before its next event:
/// a slow reader loses events, never silently.
#[derive(Debug, Default)]
pub struct EventHub {
    subs: std::sync::Mutex<Vec<Watcher>>,
}

#[derive(Debug)]
struct Watcher {
    tx: crossbeam::channel::Sender<FlowEvent>,
    gap: Arc<std::sync::atomic::AtomicU64>,
}

/// A watcher's end: its events and its count of lost ones.
#[derive(Debug)]
pub struct Subscription {
    /// Events in order.
    pub rx: crossbeam::channel::Receiver<FlowEvent>,
    /// Events lost since last read.
    pub gap: Arc<std::sync::atomic::AtomicU64>,
}

impl EventHub {
    /// A new watcher with room for `capacity` queued events.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = crossbeam::channel::bounded(capacity);
        let gap = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.lock().push(Watcher { tx, gap: Arc::clone(&gap) });
        Subscription { rx, gap }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        self.subs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands `ev` to every watcher (a full queue counts a gap; a gone watcher is dropped).
    pub fn publish(&self, ev: &FlowEvent) {
        use crossbeam::channel::TrySendError;
        self.lock().retain(|w| match w.tx.try_send(*ev) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                w.gap.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Counts `n` events lost before the hub saw them (the engine's ring was full).
    pub fn lost(&self, n: u64) {
        for w in self.lock().iter() {
            w.gap.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Watchers connected.
    pub fn watchers(&self) -> usize {
        self.lock().len()
    }
}

/// Moves the engine's flow events to the hub every few milliseconds, until the process
/// ends. Build/teardown events are also logged (debug level).
pub(super) fn pump_events(d: &Daemon, hub: &EventHub) {
    let flows = &d.shared.flows;
    let mut dropped_seen = flows.stats.events_dropped.get();
    loop {
        let dropped = flows.stats.events_dropped.get();
        if dropped > dropped_seen {
            hub.lost(dropped - dropped_seen);
            dropped_seen = dropped;
        }
        let mut n = 0;
        while let Some(ev) = flows.pop_event() {
            if d.shared.asa_log.load(std::sync::atomic::Ordering::Relaxed) {
                let v = view(&ev.flow, &d.shared, ev.at);
                let lines = match ev.kind {
                    EventKind::New => crate::asa::built(&v, d.shared.config()),
                    EventKind::Destroy => crate::asa::teardown(&v, d.shared.config()),
                };
                for l in lines {
                    tracing::info!("{l}");
                }
            } else if tracing::enabled!(tracing::Level::DEBUG) {
                let v = view(&ev.flow, &d.shared, ev.at);
                let what = match ev.kind {
                    EventKind::New => "built",
                    EventKind::Destroy => "teardown",
                };
                tracing::debug!(flow = v.id, kind = %v.kind, "{what} {} {}:{} -> {}:{} (reply {}:{} -> {}:{})",
                    v.proto, v.orig.0, v.orig.2, v.orig.1, v.orig.3, v.reply.0, v.reply.2, v.reply.1, v.reply.3);
            }
            hub.publish(&ev);
            n += 1;
            if n >= 65_536 {
                break;
            }
        }
        if n < 65_536 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xgw_dataplane::conntrack::{EventKind, Flow, FlowEvent, FlowKind, L4State};
    use xgw_dataplane::Time;

    fn event(i: u32) -> FlowEvent {
        use xgw_dataplane::conntrack::{FlowKey, Rewrite};
        let k = FlowKey { src: i, dst: 1, sport: 1, dport: 2, proto: 17 };
        let flow = Flow::new([k, k], [Rewrite::default(); 2], L4State::Other, FlowKind::Snat, Time::ZERO);
        FlowEvent { kind: EventKind::New, flow, at: Time::ZERO }
    }

    #[test]
    fn a_slow_watcher_sees_a_counted_gap_and_a_gone_one_is_dropped() {
        let hub = EventHub::default();
        let slow = hub.subscribe(2);
        let fast = hub.subscribe(16);
        for i in 0..5 {
            hub.publish(&event(i));
        }
        assert_eq!(slow.rx.len(), 2);
        assert_eq!(slow.gap.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(fast.rx.len(), 5);
        assert_eq!(fast.gap.load(std::sync::atomic::Ordering::Relaxed), 0);
        // events the engine's ring dropped count for everyone
        hub.lost(4);
        assert_eq!(slow.gap.load(std::sync::atomic::Ordering::Relaxed), 7);
        assert_eq!(fast.gap.load(std::sync::atomic::Ordering::Relaxed), 4);
        assert_eq!(fast.rx.try_recv().map(|e| e.flow.keys[0].src).ok(), Some(0), "in order");
        drop(slow);
        hub.publish(&event(9));
        assert_eq!(hub.watchers(), 1);
    }
}
