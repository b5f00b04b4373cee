//! The control protocol between `xgwctl` and `xgwd`: one JSON request per line on a unix
//! socket, answered by JSON lines — items first (streamed), then one line with
//! `"end": true`. Versioned by [`VERSION`].
//!
//! This crate holds what both ends share and nothing else: the request, the listing forms of
//! a flow and a translation, the server-side filters, and the text renderings xgwctl prints
//! (conntrack-tools' line grammar, ASA's `show xlate`). It depends on serde only, so the CLI
//! builds without the daemon's eBPF toolchain.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Protocol version.
pub const VERSION: u32 = 1;

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version.
    pub v: u32,
    /// Command: `version`, `conntrack.list`, `conntrack.count`, `conntrack.watch`, `conntrack.delete`,
    /// `conntrack.flush`, `xlate`, `host`, `pptp`, `stats`, `rules.reload`, `rules.show`.
    pub cmd: String,
    /// Arguments (filters, options).
    #[serde(default)]
    pub args: Value,
}

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

/// conntrack -L's line for a flow.
pub fn conntrack_line(v: &FlowView) -> String {
    let mut s = format!("{:<8} {} {} ", v.proto, v.proto_num, v.timeout);
    if let Some(st) = &v.state {
        s.push_str(st);
        s.push(' ');
    }
    let l4 = |src: &str, dst: &str, sp: u16, dp: u16, keys: Option<(u16, u16)>| match (v.proto_num, keys) {
        (_, Some((a, b))) => format!("src={src} dst={dst} srckey=0x{a:x} dstkey=0x{b:x}"),
        (6 | 17, _) => format!("src={src} dst={dst} sport={sp} dport={dp}"),
        (1, _) => format!("src={src} dst={dst} type=8 code=0 id={sp}"),
        _ => format!("src={src} dst={dst}"),
    };
    let (ok, rk) = match v.gre_keys {
        Some((a, b, c, d)) => (Some((a, b)), Some((c, d))),
        None => (None, None),
    };
    s.push_str(&l4(&v.orig.0, &v.orig.1, v.orig.2, v.orig.3, ok));
    s.push_str(&format!(" packets={} bytes={} ", v.packets.0, v.bytes.0));
    if v.unreplied {
        s.push_str("[UNREPLIED] ");
    }
    s.push_str(&l4(&v.reply.0, &v.reply.1, v.reply.2, v.reply.3, rk));
    s.push_str(&format!(" packets={} bytes={} ", v.packets.1, v.bytes.1));
    if v.assured {
        s.push_str("[ASSURED] ");
    }
    if v.offloaded {
        s.push_str("[OFFLOAD] ");
    }
    if v.kind == "related" {
        s.push_str("helper=pptp ");
    }
    s.push_str(&format!("use=1 id={}", v.id));
    s
}

/// Server-side filters of `conntrack.list` (conntrack-tools' options).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
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
    /// `PAT` (dynamic, inside-out) or `static` (a forward, outside-in).
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

/// Seconds as ASA prints durations: h:mm:ss.
pub fn hms(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// ASA `show xlate`'s line for a translation.
pub fn xlate_line(x: &XlateView) -> String {
    let ep = |(a, p): &(String, u16)| {
        if x.proto == "gre" {
            format!("{a}/call 0x{p:04x}")
        } else if x.proto == "tcp" || x.proto == "udp" || x.proto == "icmp" {
            format!("{a}/{p}")
        } else {
            a.clone()
        }
    };
    let (flags, from, to) = match x.kind.as_str() {
        "static" => ("s", ep(&x.inside), ep(&x.outside)),
        _ => ("ri", ep(&x.inside), ep(&x.outside)),
    };
    format!(
        "{} PAT from inside:{from} to outside:{to} flags {flags} idle {} timeout {}",
        x.proto.to_uppercase(),
        hms(x.idle),
        hms(x.timeout)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> FlowView {
        FlowView::example()
    }

    #[test]
    fn conntrack_line_grammar() {
        assert_eq!(
            conntrack_line(&v()),
            "tcp      6 431999 ESTABLISHED src=10.0.0.5 dst=198.51.100.20 sport=51514 dport=443 packets=3 bytes=180 src=198.51.100.20 dst=203.0.113.1 sport=443 dport=51514 packets=2 bytes=120 [ASSURED] use=1 id=7"
        );
        let g = FlowView {
            proto: "gre".into(),
            proto_num: 47,
            state: None,
            gre_keys: Some((0, 0x80, 0x80, 0x9760)),
            kind: "related".into(),
            unreplied: true,
            assured: false,
            ..v()
        };
        assert!(conntrack_line(&g).contains("srckey=0x0 dstkey=0x80 packets=3 bytes=180 [UNREPLIED] src=198.51.100.20 dst=203.0.113.1 srckey=0x80 dstkey=0x9760"));
        assert!(conntrack_line(&g).contains("helper=pptp"));
    }

    #[test]
    fn filters() {
        let f = Filter {
            src: Some("10.0.0.0/24".into()),
            proto: Some("tcp".into()),
            dport: Some(443),
            state: Some("established".into()),
            ..Filter::default()
        };
        assert!(f.matches(&v()));
        assert!(!Filter { dport: Some(80), ..Filter::default() }.matches(&v()));
        assert!(!Filter { src: Some("10.0.1.0/24".into()), ..Filter::default() }.matches(&v()));
        assert!(!Filter { srckey: Some(0), ..Filter::default() }.matches(&v()));
        assert!(Filter { src: Some("0.0.0.0/0".into()), ..Filter::default() }.matches(&v()));
        assert!(Filter { dst: Some("198.51.100.20".into()), ..Filter::default() }.matches(&v()));
    }

    #[test]
    fn durations_as_asa_prints_them() {
        assert_eq!(hms(0), "0:00:00");
        assert_eq!(hms(3 * 3600 + 7 * 60 + 9), "3:07:09");
    }
}
