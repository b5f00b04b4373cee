//! The text renderings xgwctl prints: conntrack-tools' line grammar and ASA's `show xlate`.

use crate::view::{FlowView, XlateView};

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
        "identity" => ("sI", ep(&x.inside), ep(&x.outside)),
        _ => ("ri", ep(&x.inside), ep(&x.outside)),
    };
    let what = if x.kind == "identity" { "NAT" } else { "PAT" };
    format!(
        "{} {what} from inside:{from} to outside:{to} flags {flags} idle {} timeout {}",
        x.proto.to_uppercase(),
        hms(x.idle),
        hms(x.timeout)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{Filter, XlateView};

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
    fn xlate_lines_as_asa_prints_them() {
        let x = XlateView {
            kind: "PAT".into(),
            proto: "udp".into(),
            inside: ("10.0.0.5".into(), 5000),
            outside: ("203.0.113.1".into(), 5000),
            foreign: ("198.51.100.20".into(), 53),
            idle: 3,
            timeout: 30,
            flow_id: 1,
        };
        assert_eq!(
            xlate_line(&x),
            "UDP PAT from inside:10.0.0.5/5000 to outside:203.0.113.1/5000 flags ri idle 0:00:03 timeout 0:00:30"
        );
        let id = XlateView { kind: "identity".into(), outside: ("10.0.0.5".into(), 5000), ..x };
        assert_eq!(
            xlate_line(&id),
            "UDP NAT from inside:10.0.0.5/5000 to outside:10.0.0.5/5000 flags sI idle 0:00:03 timeout 0:00:30"
        );
    }

    #[test]
    fn durations_as_asa_prints_them() {
        assert_eq!(hms(0), "0:00:00");
        assert_eq!(hms(3 * 3600 + 7 * 60 + 9), "3:07:09");
    }
}
