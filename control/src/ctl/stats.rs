//! The parts of `stats` that belong to the daemon's I/O: the fast path, its egresses and
//! every AF_XDP socket's counters.

use serde_json::{json, Value};

use super::*;

/// A family's counters as a JSON object, from the family's one list.
pub fn family_json(list: &[(&'static str, &'static str, u64)]) -> serde_json::Map<String, Value> {
    list.iter().map(|(n, _, v)| (n.to_string(), json!(v))).collect()
}

/// The fast path's state and counters (null when it is off).
pub(super) fn offload_json(d: &Daemon) -> Value {
    let t = &d.shared.flows.offload.stats;
    match &d.offload {
        None => Value::Null,
        Some(o) => {
            let mut m = serde_json::Map::new();
            m.insert("flows".into(), json!(o.len()));
            m.extend(family_json(&t.list()));
            m.extend(family_json(&o.stats.list()));
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
