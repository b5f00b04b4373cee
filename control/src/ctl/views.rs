//! The listing forms of the engine's flows and translations (what `conntrack list` and
//! `xlate` send).

use std::net::Ipv4Addr;

use xgw_control_proto::{FlowView, XlateView};
use xgw_dataplane::conntrack::{Flow, FlowKind, L4State};
use xgw_dataplane::{Shared, Time};

pub(super) fn ip(a: u32) -> String {
    Ipv4Addr::from(a).to_string()
}

/// The listing form of a flow at `now`.
pub fn view(f: &Flow, sh: &Shared, now: Time) -> FlowView {
    let (k0, k1) = (f.keys[0], f.keys[1]);
    let gre_keys =
        (f.kind == FlowKind::Related && f.proto() == 47).then_some((f.rewrite[1].dport, k0.dport, k0.dport, k1.dport));
    FlowView {
        id: f.id,
        proto: xgw_dataplane::wire::proto::name(f.proto()),
        proto_num: f.proto(),
        timeout: f.remaining(now, &sh.config().timeouts).as_secs(),
        state: match f.l4 {
            L4State::Tcp(s) => Some(s.name().to_string()),
            _ => None,
        },
        orig: (ip(k0.src), ip(k0.dst), k0.sport, k0.dport),
        reply: (ip(k1.src), ip(k1.dst), k1.sport, k1.dport),
        gre_keys,
        packets: (f.packets[0], f.packets[1]),
        bytes: (f.bytes[0], f.bytes[1]),
        assured: f.assured(),
        unreplied: !f.seen_reply(),
        offloaded: f.status & xgw_dataplane::conntrack::status::OFFLOAD != 0,
        kind: format!("{:?}", f.kind).to_lowercase(),
        rule: f.rule,
        age: now.since(f.created).as_secs(),
    }
}

/// The translation a flow holds, if it translates anything.
pub fn xlate(f: &Flow, sh: &Shared, now: Time) -> Option<XlateView> {
    let v = view(f, sh, now);
    let t = &sh.config().timeouts;
    let total = f.timeout(t);
    let idle = total.saturating_sub(f.remaining(now, t)).as_secs();
    let k = f.keys[0];
    let nat = &sh.config().nat;
    let (kind, inside, outside, foreign) = match (v.kind.as_str(), v.gre_keys) {
        // NAT exemption: an identity translation, as ASA lists `nat 0` / identity NAT
        ("routed", _) if nat.is_exempt(k.src, k.dst) => {
            ("identity", (v.orig.0.clone(), v.orig.2), (v.orig.0, v.orig.2), (v.orig.1, v.orig.3))
        }
        ("routed", _) if nat.is_exempt(k.dst, k.src) => {
            ("identity", (v.orig.1.clone(), v.orig.3), (v.orig.1, v.orig.3), (v.orig.0, v.orig.2))
        }
        ("snat", _) => ("PAT", (v.orig.0, v.orig.2), (v.reply.1, v.reply.3), (v.orig.1, v.orig.3)),
        ("dnat" | "hairpin", _) => ("static", (v.reply.0, v.reply.2), (v.orig.1, v.orig.3), (v.orig.0, v.orig.2)),
        ("related", Some(g)) => ("PAT", (v.orig.0, g.0), (v.reply.1, g.3), (v.orig.1, g.1)),
        ("related", None) if v.orig.0 != v.reply.1 => {
            ("PAT", (v.orig.0, v.orig.2), (v.reply.1, v.reply.3), (v.orig.1, v.orig.3))
        }
        _ => return None,
    };
    Some(XlateView {
        kind: kind.into(),
        proto: v.proto,
        inside,
        outside,
        foreign,
        idle,
        timeout: total.as_secs(),
        flow_id: v.id,
    })
}
