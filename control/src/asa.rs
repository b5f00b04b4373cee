//! ASA-compatible syslog lines for flow and translation events (`xgwd --log-format asa`):
//! 302013/302014 (TCP connections), 302015/302016 (UDP), 305011/305012 (dynamic PAT
//! translations). Deny lines (106023) come from the engine itself. The shapes follow Cisco's
//! message catalogue so existing log parsers and SIEM rules read them; what xgw cannot know
//! (the exact teardown cause of an expired flow) is approximated from the TCP state.

use std::net::Ipv4Addr;

use xgw_dataplane::EngineConfig;

use xgw_control_proto::{hms, FlowView};

/// The name of the interface whose subnet holds `addr`; the outside interface otherwise.
pub fn iface_of(cfg: &EngineConfig, addr: &str) -> String {
    let Ok(a) = addr.parse::<Ipv4Addr>() else { return "?".into() };
    cfg.ifaces
        .iter()
        .find(|i| i.contains(u32::from(a)))
        .or_else(|| cfg.outside().map(|(_, i)| i))
        .map_or_else(|| "?".into(), |i| i.name.clone())
}

/// An address and port.
type Endpoint = (String, u16);

/// Endpoints of a flow as ASA names them: (outbound?, foreign, real inside, mapped inside).
fn endpoints(v: &FlowView) -> (bool, Endpoint, Endpoint, Endpoint) {
    match v.kind.as_str() {
        "dnat" | "hairpin" => {
            (false, (v.orig.0.clone(), v.orig.2), (v.reply.0.clone(), v.reply.2), (v.orig.1.clone(), v.orig.3))
        }
        _ => (true, (v.orig.1.clone(), v.orig.3), (v.orig.0.clone(), v.orig.2), (v.reply.1.clone(), v.reply.3)),
    }
}

/// The lines for a flow being created.
pub fn built(v: &FlowView, cfg: &EngineConfig) -> Vec<String> {
    let (outbound, f, r, m) = endpoints(v);
    let (fi, ri, mi) = (iface_of(cfg, &f.0), iface_of(cfg, &r.0), iface_of(cfg, &m.0));
    let mut out = Vec::new();
    let proto = v.proto.to_uppercase();
    if v.kind == "snat" && matches!(v.proto_num, 1 | 6 | 17) {
        out.push(format!(
            "%ASA-6-305011: Built dynamic {proto} translation from {ri}:{}/{} to {mi}:{}/{}",
            r.0, r.1, m.0, m.1
        ));
    }
    let code = match v.proto_num {
        6 => "302013",
        17 => "302015",
        _ => return out,
    };
    out.push(format!(
        "%ASA-6-{code}: Built {} {proto} connection {} for {fi}:{}/{} ({}/{}) to {ri}:{}/{} ({}/{})",
        if outbound { "outbound" } else { "inbound" },
        v.id,
        f.0,
        f.1,
        f.0,
        f.1,
        r.0,
        r.1,
        m.0,
        m.1
    ));
    out
}

/// The lines for a flow going away.
pub fn teardown(v: &FlowView, cfg: &EngineConfig) -> Vec<String> {
    let (_, f, r, m) = endpoints(v);
    let (fi, ri, mi) = (iface_of(cfg, &f.0), iface_of(cfg, &r.0), iface_of(cfg, &m.0));
    let proto = v.proto.to_uppercase();
    let bytes = v.bytes.0 + v.bytes.1;
    let mut out = Vec::new();
    let conn = match v.proto_num {
        6 => {
            let reason = match v.state.as_deref() {
                Some("FIN_WAIT" | "CLOSE_WAIT" | "LAST_ACK" | "TIME_WAIT" | "CLOSE") => " TCP FINs",
                Some("SYN_SENT" | "SYN_SENT2" | "SYN_RECV") => " SYN Timeout",
                _ => " Conn-timeout",
            };
            Some(("302014", reason))
        }
        17 => Some(("302016", "")),
        _ => None,
    };
    if let Some((code, reason)) = conn {
        out.push(format!(
            "%ASA-6-{code}: Teardown {proto} connection {} for {fi}:{}/{} to {ri}:{}/{} duration {} bytes {bytes}{reason}",
            v.id,
            f.0,
            f.1,
            r.0,
            r.1,
            hms(v.age)
        ));
    }
    if v.kind == "snat" && matches!(v.proto_num, 1 | 6 | 17) {
        out.push(format!(
            "%ASA-6-305012: Teardown dynamic {proto} translation from {ri}:{}/{} to {mi}:{}/{} duration {}",
            r.0,
            r.1,
            m.0,
            m.1,
            hms(v.age)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EngineConfig {
        let mut c = EngineConfig::example();
        c.ifaces[0].name = "inside".into();
        c.ifaces[1].name = "outside".into();
        c
    }

    fn tcp() -> FlowView {
        FlowView {
            id: 42,
            state: Some("TIME_WAIT".into()),
            reply: ("198.51.100.20".into(), "203.0.113.1".into(), 443, 1025),
            age: 65,
            ..FlowView::example()
        }
    }

    #[test]
    fn outbound_tcp_with_pat() {
        let c = cfg();
        assert_eq!(
            built(&tcp(), &c),
            [
                "%ASA-6-305011: Built dynamic TCP translation from inside:10.0.0.5/51514 to outside:203.0.113.1/1025",
                "%ASA-6-302013: Built outbound TCP connection 42 for outside:198.51.100.20/443 (198.51.100.20/443) to inside:10.0.0.5/51514 (203.0.113.1/1025)",
            ]
        );
        assert_eq!(
            teardown(&tcp(), &c),
            [
                "%ASA-6-302014: Teardown TCP connection 42 for outside:198.51.100.20/443 to inside:10.0.0.5/51514 duration 0:01:05 bytes 300 TCP FINs",
                "%ASA-6-305012: Teardown dynamic TCP translation from inside:10.0.0.5/51514 to outside:203.0.113.1/1025 duration 0:01:05",
            ]
        );
    }

    #[test]
    fn inbound_udp_through_a_forward_has_no_dynamic_translation() {
        let v = FlowView {
            proto: "udp".into(),
            proto_num: 17,
            state: None,
            kind: "dnat".into(),
            orig: ("192.0.2.9".into(), "203.0.113.1".into(), 4000, 1701),
            reply: ("10.0.0.12".into(), "192.0.2.9".into(), 1701, 4000),
            ..tcp()
        };
        let c = cfg();
        assert_eq!(
            built(&v, &c),
            ["%ASA-6-302015: Built inbound UDP connection 42 for outside:192.0.2.9/4000 (192.0.2.9/4000) to inside:10.0.0.12/1701 (203.0.113.1/1701)"]
        );
        assert_eq!(
            teardown(&v, &c),
            ["%ASA-6-302016: Teardown UDP connection 42 for outside:192.0.2.9/4000 to inside:10.0.0.12/1701 duration 0:01:05 bytes 300"]
        );
    }

    #[test]
    fn half_open_tcp_ends_as_syn_timeout() {
        let v = FlowView { state: Some("SYN_SENT".into()), ..tcp() };
        assert!(teardown(&v, &cfg())[0].ends_with("bytes 300 SYN Timeout"));
    }
}
