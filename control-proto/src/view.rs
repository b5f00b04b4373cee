//! The listing forms of a flow and a translation, and the server-side filters over them.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A flow as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowView {
    /// Flow id.
    pub id: u64,
    /// Protocol name (`tcp`, `udp`, `icmp`, `gre`, `esp`, or the number).
    pub proto: String,
    /// Protocol number.
    pub proto_num: u8,
    /// Seconds left before expiry.
    pub timeout: u64,
    /// TCP state name, if TCP.
    pub state: Option<String>,
    /// Original direction as it arrives: (src, dst, sport, dport).
    pub orig: (String, String, u16, u16),
    /// Reply direction as it arrives.
    pub reply: (String, String, u16, u16),
    /// PPTP GRE keys, (orig srckey, orig dstkey, reply srckey, reply dstkey).
    pub gre_keys: Option<(u16, u16, u16, u16)>,
    /// Packets (orig, reply).
    pub packets: (u64, u64),
    /// Bytes (orig, reply).
    pub bytes: (u64, u64),
    /// Assured?
    pub assured: bool,
    /// No reply seen yet?
    pub unreplied: bool,
    /// Handed to the XDP fast path?
    pub offloaded: bool,
    /// `snat`, `dnat`, `hairpin`, `routed`, `related`.
    pub kind: String,
    /// Rule that admitted it.
    pub rule: u32,
    /// Seconds since creation.
    pub age: u64,
}

impl FlowView {
    /// An established outbound TCP flow as listed (a fixture for tests of renderers).
    #[doc(hidden)]
    pub fn example() -> FlowView {
        FlowView {
            id: 7,
            proto: "tcp".into(),
            proto_num: 6,
            timeout: 431_999,
            state: Some("ESTABLISHED".into()),
            orig: ("10.0.0.5".into(), "198.51.100.20".into(), 51514, 443),
            reply: ("198.51.100.20".into(), "203.0.113.1".into(), 443, 51514),
            gre_keys: None,
            packets: (3, 2),
            bytes: (180, 120),
            assured: true,
            unreplied: false,
            offloaded: false,
            kind: "snat".into(),
            rule: 0,
            age: 5,
        }
    }
}

/// Server-side filters of `conntrack.list` (conntrack-tools' options).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// `-s`: original source in this prefix.
    pub src: Option<String>,
    /// `-d`: original destination in this prefix.
    pub dst: Option<String>,
    /// `-p`: protocol name or number.
    pub proto: Option<String>,
    /// `--sport`.
    pub sport: Option<u16>,
    /// `--dport`.
    pub dport: Option<u16>,
    /// `--state`.
    pub state: Option<String>,
    /// `--srckey` (GRE, original direction).
    pub srckey: Option<u16>,
    /// `--dstkey` (GRE, original direction).
    pub dstkey: Option<u16>,
    /// `--id`: one flow by its id.
    #[serde(default)]
    pub id: Option<u64>,
}

fn in_prefix(addr: &str, prefix: &str) -> bool {
    let (net, len) = prefix.split_once('/').unwrap_or((prefix, "32"));
    let (Ok(a), Ok(n), Ok(l)) = (addr.parse::<Ipv4Addr>(), net.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
        return false;
    };
    let m = if l == 0 { 0 } else { u32::MAX << (32 - u32::from(l.min(32))) };
    u32::from(a) & m == u32::from(n) & m
}

impl Filter {
    /// True when `v` passes every given filter.
    pub fn matches(&self, v: &FlowView) -> bool {
        self.src.as_ref().is_none_or(|p| in_prefix(&v.orig.0, p))
            && self.dst.as_ref().is_none_or(|p| in_prefix(&v.orig.1, p))
            && self.proto.as_ref().is_none_or(|p| *p == v.proto || p.parse::<u8>().ok() == Some(v.proto_num))
            && self.sport.is_none_or(|p| v.orig.2 == p && v.gre_keys.is_none())
            && self.dport.is_none_or(|p| v.orig.3 == p && v.gre_keys.is_none())
            && self.state.as_ref().is_none_or(|s| v.state.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(s)))
            && self.srckey.is_none_or(|k| v.gre_keys.is_some_and(|g| g.0 == k))
            && self.dstkey.is_none_or(|k| v.gre_keys.is_some_and(|g| g.1 == k))
            && self.id.is_none_or(|i| v.id == i)
    }

    /// True when no filter is given (it matches every flow).
    pub fn is_empty(&self) -> bool {
        self.src.is_none()
            && self.dst.is_none()
            && self.proto.is_none()
            && self.sport.is_none()
            && self.dport.is_none()
            && self.state.is_none()
            && self.srckey.is_none()
            && self.dstkey.is_none()
            && self.id.is_none()
    }
}

/// A translation as `xgwctl xlate` lists it (ASA `show xlate`): the inside endpoint, the
/// outside endpoint it appears as, and the flow that holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct XlateView {
    /// `PAT` (dynamic, inside-out), `static` (a forward, outside-in) or `identity` (NAT
    /// exemption: routed untranslated).
    pub kind: String,
    /// Protocol name.
    pub proto: String,
    /// Inside address and port (for PPTP GRE: the client's Call ID).
    pub inside: (String, u16),
    /// Outside address and port (for PPTP GRE: the translated Call ID).
    pub outside: (String, u16),
    /// The far end.
    pub foreign: (String, u16),
    /// Seconds since the flow last saw a packet.
    pub idle: u64,
    /// The flow's idle timeout in seconds.
    pub timeout: u64,
    /// The flow holding the translation.
    pub flow_id: u64,
}
