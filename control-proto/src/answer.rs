//! What each command answers: the streamed items and the result that ends the answer.
//! Counter families are maps from the counter's name to its value, filled from the family's
//! one list in the daemon, so a new counter needs no change here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::view::FlowView;

/// A counter family: name → value.
pub type Counters = BTreeMap<String, u64>;

/// `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// xgwd's package version.
    pub version: String,
    /// The protocol version it speaks.
    pub protocol: u32,
}

/// Ends `conntrack list`, `conntrack count`, `xlate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Count {
    /// Items that matched.
    pub count: u64,
}

/// Ends `conntrack delete`, `conntrack flush`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    /// Flows deleted.
    pub deleted: u64,
}

/// Nothing to report (ends `conntrack watch` when the daemon stops).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// What happened to a flow (`conntrack watch`), conntrack's event names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The flow was created.
    #[serde(rename = "NEW")]
    New,
    /// The flow ended (expired, closed, deleted).
    #[serde(rename = "DESTROY")]
    Destroy,
}

impl EventKind {
    /// The name conntrack -E prints.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::New => "NEW",
            EventKind::Destroy => "DESTROY",
        }
    }
}

/// One item of `conntrack watch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What happened.
    pub event: EventKind,
    /// The flow as it was then.
    pub flow: FlowView,
}

/// Ends `host`: the host's counts and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    /// The inside host.
    pub host: std::net::Ipv4Addr,
    /// Its flows.
    pub flows: u64,
    /// Of them, TCP flows not yet established.
    pub embryonic: u64,
    /// Of them, flows holding a translation.
    pub translations: u64,
    /// The per-host flow limit, if any.
    pub limit_flows: Option<u32>,
    /// The per-host embryonic limit, if any.
    pub limit_embryonic: Option<u32>,
}

/// One access rule as `rules show` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    /// Stable id (a hash of list, text and occurrence).
    pub id: u32,
    /// List name.
    pub list: String,
    /// Permit?
    pub permit: bool,
    /// Log matches?
    pub log: bool,
    /// The rule as written (normalised).
    pub text: String,
    /// File it is written in.
    pub file: String,
    /// Line.
    pub line: usize,
    /// Flows it decided.
    pub hits: u64,
}

/// An access list bound to an interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    /// Interface name.
    pub interface: String,
    /// List name.
    pub list: String,
}

/// Ends `rules show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesShown {
    /// Flows refused by the implicit deny of a bound list.
    pub implicit_denies: u64,
    /// Lists bound inbound.
    pub bound_in: Vec<Binding>,
    /// Lists bound outbound.
    pub bound_out: Vec<Binding>,
    /// Said when there is nothing to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Ends `rules reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Flows live at the time.
    pub live: usize,
    /// Of them, flows the new policy would refuse.
    pub would_deny: usize,
    /// Of them, flows torn down (`--kill`).
    pub killed: usize,
    /// The rules file's warnings, rendered.
    pub warnings: Vec<String>,
}

/// One PPTP call of a control connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PptpCall {
    /// The client's (PNS's) Call ID.
    pub pns_call_id: u16,
    /// The Call ID the server sees for it.
    pub translated_call_id: u16,
    /// The server's (PAC's) Call ID, once it answered.
    pub pac_call_id: Option<u16>,
    /// Call state.
    pub state: String,
    /// Outgoing call (the client asked for it)?
    pub outgoing: bool,
    /// GRE packets (out, in), once the call's GRE flow exists.
    pub gre_packets: Option<[u64; 2]>,
    /// GRE bytes (out, in).
    pub gre_bytes: Option<[u64; 2]>,
    /// Seconds since the call was asked for.
    pub age: u64,
}

/// One direction of a control connection as the inspector follows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PptpStream {
    /// In step with the byte stream, or why not.
    pub sync: String,
    /// The next sequence number expected.
    pub next_seq: u32,
}

/// One item of `pptp`: a control connection and its calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PptpSession {
    /// The control connection's flow.
    pub flow_id: u64,
    /// The inside host.
    pub inside_host: String,
    /// Client address:port.
    pub client: String,
    /// Server address:port.
    pub server: String,
    /// Call IDs translated (the connection is NATed)?
    pub translated: bool,
    /// Control connection state.
    pub state: String,
    /// Seconds since it was opened.
    pub age: u64,
    /// Its calls.
    pub calls: Vec<PptpCall>,
    /// Client-to-server and server-to-client streams.
    pub streams: Vec<PptpStream>,
}

/// Ends `pptp`: the inspector's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PptpCounters {
    /// The PPTP family, calls in progress and the GRE drops ASA lists with them.
    pub counters: Counters,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketsBytes {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One interface's XDP class counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XdpClasses {
    /// Interface.
    pub device: String,
    /// Class name → what it counted (non-zero classes only).
    pub classes: BTreeMap<String, PacketsBytes>,
}

/// One interface's named packet counters (steering, declined).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCounters {
    /// Interface.
    pub device: String,
    /// Name → packets.
    pub counters: Counters,
}

/// One AF_XDP socket's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortCounters {
    /// Interface.
    pub device: String,
    /// Queue.
    pub queue: u32,
    /// The port family.
    pub counters: Counters,
}

/// An interface's standing as an egress of the fast path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Egress {
    /// Interface.
    pub device: String,
    /// `ok`, `no_redirect_target`, …
    pub state: String,
    /// Redirects the kernel refused.
    pub refusals: u64,
}

/// The outside address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outside {
    /// Current address (0.0.0.0 while there is none).
    pub address: String,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Times it changed.
    pub changes: u64,
    /// Flows removed because their address vanished.
    pub flushed: u64,
}

/// Ends `stats`: every counter family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The engine's traffic family, summed over workers (rx, forwarded, …).
    #[serde(flatten)]
    pub engine: Counters,
    /// Workers.
    pub workers: usize,
    /// Drops by reason (non-zero only).
    pub drops: Counters,
    /// The connection table's family, its entries and its limit.
    pub conntrack: Counters,
    /// The PPTP inspector's family and calls in progress.
    pub pptp: Counters,
    /// The outside address.
    pub outside: Outside,
    /// XDP classes per interface.
    pub xdp: Vec<XdpClasses>,
    /// Where the XDP program sent packets, per interface.
    pub xdp_steering: Vec<DeviceCounters>,
    /// Packets of offloaded flows the fast path left to the engine, per interface and reason.
    pub xdp_declined: Vec<DeviceCounters>,
    /// The fast path's families and its flow count; absent when it is off.
    pub offload: Option<Counters>,
    /// Each interface's standing as an egress of the fast path.
    pub egress: Vec<Egress>,
    /// Frames per class as the workers received them (non-zero only).
    pub worker_classes: Counters,
    /// Frames the workers received without a class mark.
    pub worker_unclassified: u64,
    /// Every AF_XDP socket's counters.
    pub ports: Vec<PortCounters>,
    /// Port blocks' family, blocks held and free; absent without port blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Counters>,
    /// NAT event logging's family; absent when it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_log: Option<Counters>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_keep_the_engine_family_at_the_top_level() {
        let s = Stats {
            engine: [("rx".to_string(), 7), ("forwarded".to_string(), 6)].into_iter().collect(),
            workers: 1,
            drops: Counters::new(),
            conntrack: Counters::new(),
            pptp: Counters::new(),
            outside: Outside { address: "0.0.0.0".into(), prefix_len: 0, changes: 0, flushed: 0 },
            xdp: vec![],
            xdp_steering: vec![],
            xdp_declined: vec![],
            offload: None,
            egress: vec![],
            worker_classes: Counters::new(),
            worker_unclassified: 0,
            ports: vec![],
            blocks: None,
            nat_log: None,
        };
        let v = serde_json::to_value(&s).expect("serialise");
        assert_eq!(v["rx"], 7);
        assert_eq!(v["offload"], serde_json::Value::Null);
        let back: Stats = serde_json::from_value(v).expect("parse");
        assert_eq!(back, s);
    }
}

/// `ha status`: this gateway's part in an HA pair and its sync link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaStatus {
    /// False when no `[ha]` section is configured (the gateway forwards alone).
    pub enabled: bool,
    /// "master", "backup" or "fault" (as keepalived last said; "backup" until it speaks).
    pub role: String,
    /// The peer's sync address.
    pub peer: String,
    /// This gateway's sync address.
    pub listen: String,
    /// "unknown" (nothing heard), "alive" or "gone".
    pub peer_state: String,
    /// A bulk resync from the current peer session completed with nothing missing.
    pub synced: bool,
    /// Ready to take over (what keepalived's tracked file says): master, synced, or alone.
    pub ready: bool,
    /// Milliseconds since the last bulk resync completed (none yet: absent).
    pub last_bulk_ms_ago: Option<u64>,
    /// The oldest unacknowledged message's age in milliseconds (0: all acknowledged).
    pub lag_ms: u64,
    /// Messages sent and not acknowledged yet.
    pub unacked: u64,
    /// Counters: records sent/applied by outcome, messages, resent, refused by reason, ...
    pub counters: Counters,
}

impl HaStatus {
    /// The status of a gateway without an HA pair: it forwards alone, and is always ready.
    pub fn alone() -> HaStatus {
        HaStatus {
            enabled: false,
            role: "alone".into(),
            peer: String::new(),
            listen: String::new(),
            peer_state: "unknown".into(),
            synced: false,
            ready: true,
            last_bulk_ms_ago: None,
            lag_ms: 0,
            unacked: 0,
            counters: Counters::new(),
        }
    }
}
