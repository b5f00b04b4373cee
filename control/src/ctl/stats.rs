//! The parts of `stats` that belong to the daemon's I/O: the fast path, its egresses and
//! every AF_XDP socket's counters.

use serde_json::{json, Value};

use super::*;

/// An AF_XDP socket's counters by name.
pub fn port_counters(s: &xgw_dataplane::xsk::PortStats) -> [(&'static str, u64); 10] {
    [
        ("rx", s.rx.get()),
        ("tx", s.tx.get()),
        ("tx_no_frame", s.tx_no_frame.get()),
        ("tx_no_neighbour", s.tx_no_neighbour.get()),
        ("tx_neigh_waited", s.tx_neigh_waited.get()),
        ("tx_neigh_queue_full", s.tx_neigh_queue_full.get()),
        ("tx_no_route", s.tx_no_route.get()),
        ("to_host_lost", s.to_host_lost.get()),
        ("xsk_rx_dropped", s.xsk_rx_dropped.get()),
        ("xsk_rx_ring_full", s.xsk_rx_ring_full.get()),
    ]
}

/// The fast path's state and counters (null when it is off).
pub(super) fn offload_json(d: &Daemon) -> Value {
    let t = &d.shared.flows.offload.stats;
    match &d.offload {
        None => Value::Null,
        Some(o) => {
            let mut m = serde_json::Map::new();
            m.insert("flows".into(), json!(o.len()));
            m.insert("requested".into(), json!(t.requested.get()));
            m.insert("queue_full".into(), json!(t.queue_full.get()));
            m.insert("withdrawn".into(), json!(t.withdrawn.get()));
            m.insert("withdraw_queued".into(), json!(t.withdraw_queued.get()));
            m.insert("withdraw_queue_full".into(), json!(t.withdraw_queue_full.get()));
            m.extend(o.counters().into_iter().map(|(k, v)| (k.to_string(), json!(v))));
            Value::Object(m)
        }
    }
}

/// Each interface's standing as an egress of the fast path (empty when the fast path is off).
pub(super) fn egress_json(d: &Daemon) -> Value {
    let Some(g) = &d.egress else { return json!([]) };
    json!(g
        .egress()
        .iter()
        .map(|e| json!({"device": e.device, "state": e.state().name(), "refusals": e.refusals.get()}))
        .collect::<Vec<_>>())
}
