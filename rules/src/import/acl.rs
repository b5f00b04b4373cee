//! NAT statements of every generation, and access-list lines and object groups turned into
//! xgw's spelling.

use std::net::Ipv4Addr;

use super::config::{mask_len, Model, Nat, Object};
use super::ports::{icmp_type, port, proto};
use super::Left;

fn leave(left: &mut Vec<Left>, line: usize, raw: &str, why: &str) {
    left.push(Left { line, text: raw.to_string(), why: why.to_string() });
}

/// A network object as rules text (`host A`, `A/LEN`), or `None` for a range or an unknown
/// object.
pub(super) fn object_text(m: &Model, name: &str) -> Option<String> {
    match m.objects.get(name)? {
        Object::Net(a, 32) => Some(format!("host {a}")),
        Object::Net(a, l) => Some(format!("{a}/{l}")),
        Object::Range(..) | Object::Empty => None,
    }
}

/// The addresses of a pool given as an address, a range `A-B` or an object.
fn pool(m: &Model, w: &str) -> Option<Vec<Ipv4Addr>> {
    if let Some((a, b)) = w.split_once('-') {
        let (a, b) = (u32::from(m.addr(a)?), u32::from(m.addr(b)?));
        return (a <= b && b - a < 256).then(|| (a..=b).map(Ipv4Addr::from).collect());
    }
    if let Some(a) = m.addr(w) {
        return Some(vec![a]);
    }
    match m.objects.get(w)? {
        Object::Net(a, 32) => Some(vec![*a]),
        Object::Range(a, b) => {
            let (a, b) = (u32::from(*a), u32::from(*b));
            (a <= b && b - a < 256).then(|| (a..=b).map(Ipv4Addr::from).collect())
        }
        _ => None,
    }
}

/// A static port translation: `mapped` is `interface` or an address, ports by name or number.
fn forward(
    m: &Model,
    p: &str,
    mapped: &str,
    mport: &str,
    host: Option<Ipv4Addr>,
    rport: &str,
    line: usize,
) -> Option<Nat> {
    let mapped_addr = if mapped == "interface" { None } else { Some(m.addr(mapped)?) };
    Some(Nat::Forward {
        proto: p.into(),
        mapped: mapped_addr,
        outside_port: port(mport)?,
        host: host?,
        port: port(rport)?,
        line,
    })
}

/// `global`, `nat`, `static` at the top level (pre-8.3, and 8.3+ twice NAT).
pub(super) fn nat_line(m: &mut Model, s: &[&str], line: usize, raw: &str, left: &mut Vec<Left>) {
    let ifs =
        |x: &str| x.trim_start_matches('(').trim_end_matches(')').split(',').map(str::to_string).collect::<Vec<_>>();
    match s {
        ["global", i, id, what, ..] => {
            m.pre83 = true;
            let addrs = if *what == "interface" { Some(Vec::new()) } else { pool(m, what) };
            match addrs {
                Some(a) => m.globals.push((ifs(i)[0].clone(), (*id).into(), a, line)),
                None => leave(left, line, raw, "a global pool xgw cannot read (at most 256 addresses)"),
            }
        }
        ["nat", i, "0", "access-list", list, ..] if !i.contains(',') => {
            m.pre83 = true;
            m.nats.push(Nat::ExemptList { list: (*list).into() });
        }
        ["nat", i, id, a, mask, ..] if !i.contains(',') && id.parse::<u32>().is_ok() => {
            m.pre83 = true;
            let real = match (m.addr(a), mask.parse().ok().and_then(mask_len)) {
                (Some(a), Some(0)) if u32::from(a) == 0 => None,
                (Some(a), Some(32)) => Some(format!("host {a}")),
                (Some(a), Some(l)) => Some(format!("{a}/{l}")),
                _ => return leave(left, line, raw, "an address xgw cannot read"),
            };
            if *id == "0" {
                let inside = real.unwrap_or_else(|| "any".into());
                m.nats.push(Nat::ExemptPair { inside, far: "any".into() });
            } else {
                m.nats.push(Nat::Overload { id: Some((*id).into()), pool: Vec::new(), real, line });
            }
        }
        // 8.3+ twice NAT: identity (exemption) and dynamic PAT
        ["nat", i, "source", "static", a, b, rest @ ..] if i.contains(',') => {
            let far = match rest {
                ["destination", "static", c, d, ..] if c == d => {
                    object_text(m, c).or_else(|| (*c == "any").then(|| "any".into()))
                }
                [] | ["no-proxy-arp", ..] | ["route-lookup", ..] => Some("any".into()),
                _ => None,
            };
            match (a == b, object_text(m, a).or_else(|| (*a == "any").then(|| "any".into())), far) {
                (true, Some(inside), Some(far)) => m.nats.push(Nat::ExemptPair { inside, far }),
                _ => leave(
                    left,
                    line,
                    raw,
                    "twice NAT other than identity (exemption): xgw translates by PAT and forwards only",
                ),
            }
        }
        ["nat", i, "source", "dynamic", a, "interface", ..] if i.contains(',') => {
            let real = if *a == "any" { None } else { object_text(m, a) };
            m.nats.push(Nat::Overload { id: None, pool: Vec::new(), real, line });
        }
        ["static", _, p @ ("tcp" | "udp"), mapped, mport, real, rport, ..] => {
            m.pre83 = true;
            match forward(m, p, mapped, mport, m.addr(real), rport, line) {
                Some(f) => m.nats.push(f),
                None => leave(left, line, raw, "a static xgw cannot read"),
            }
        }
        ["static", _, mapped, real, rest @ ..] => {
            m.pre83 = true;
            let len = match rest {
                ["netmask", mask, ..] => mask.parse().ok().and_then(mask_len),
                _ => Some(32),
            };
            match (m.addr(mapped), m.addr(real), len) {
                (Some(a), Some(b), Some(l)) if a == b => {
                    let inside = if l == 32 { format!("host {a}") } else { format!("{a}/{l}") };
                    m.nats.push(Nat::ExemptPair { inside, far: "any".into() });
                }
                _ => leave(left, line, raw, "one-to-one static NAT: xgw has PAT, port forwards and exemption only"),
            }
        }
        _ => leave(left, line, raw, "a NAT form the importer does not know"),
    }
}

/// A `nat` line inside `object network NAME` (8.3+ object NAT).
pub(super) fn object_nat(m: &mut Model, name: &str, s: &[&str], line: usize, raw: &str, left: &mut Vec<Left>) {
    match s {
        ["nat", _, "dynamic", "interface", ..] => {
            let real = object_text(m, name);
            m.nats.push(Nat::Overload { id: None, pool: Vec::new(), real, line });
        }
        ["nat", _, "dynamic", p, ..] => match pool(m, p) {
            Some(pool) => {
                let real = object_text(m, name);
                m.nats.push(Nat::Overload { id: None, pool, real, line });
            }
            None => leave(left, line, raw, "a dynamic NAT pool xgw cannot read"),
        },
        ["nat", _, "static", mapped, "service", p @ ("tcp" | "udp"), rport, mport, ..] => {
            let host = match m.objects.get(name) {
                Some(Object::Net(a, 32)) => Some(*a),
                _ => None,
            };
            match forward(m, p, mapped, mport, host, rport, line) {
                Some(f) => m.nats.push(f),
                None => {
                    leave(left, line, raw, "a static port translation xgw cannot read (the object must be one host)")
                }
            }
        }
        ["nat", _, "static", mapped, ..] if *mapped == name => match object_text(m, name) {
            Some(inside) => m.nats.push(Nat::ExemptPair { inside, far: "any".into() }),
            None => leave(left, line, raw, "identity NAT of a range: write it as `nat exempt` by hand"),
        },
        _ => leave(
            left,
            line,
            raw,
            "object NAT other than dynamic PAT, static port forwards and identity: xgw has no one-to-one NAT",
        ),
    }
}

/// Reads an address at `w[*k..]` into rules text, advancing `k`.
fn address(m: &Model, w: &[String], k: &mut usize) -> Result<String, String> {
    let at = |i: usize| w.get(i).map(String::as_str).unwrap_or("");
    let a = at(*k);
    *k += 1;
    match a {
        "any" | "any4" => Ok("any".into()),
        "host" => {
            *k += 1;
            m.addr(at(*k - 1)).map(|x| format!("host {x}")).ok_or_else(|| format!("unknown address `{}`", at(*k - 1)))
        }
        "object-group" => {
            *k += 1;
            Ok(format!("object-group {}", at(*k - 1)))
        }
        "object" => {
            *k += 1;
            object_text(m, at(*k - 1)).ok_or_else(|| format!("object `{}` is a range or unknown", at(*k - 1)))
        }
        "interface" => {
            *k += 1;
            let n = at(*k - 1);
            match m.ifaces.iter().find(|i| i.nameif.as_deref() == Some(n)).and_then(|i| i.addr) {
                Some(super::config::IfAddr::Static(a, _)) => Ok(format!("host {a}")),
                _ => Err(format!("interface `{n}` has no fixed address")),
            }
        }
        other => {
            let mask = at(*k);
            *k += 1;
            match (m.addr(other), mask.parse().ok().and_then(mask_len)) {
                (Some(a), Some(32)) => Ok(format!("host {a}")),
                (Some(a), Some(l)) => Ok(format!("{a}/{l}")),
                _ => Err(format!("`{other} {mask}` is not an address and mask")),
            }
        }
    }
}

/// Reads a port operator at `w[*k..]` (if there is one) into rules text.
fn ports_at(w: &[String], k: &mut usize) -> Result<Option<String>, String> {
    let at = |i: usize| w.get(i).map(String::as_str).unwrap_or("");
    let p = |x: &str| port(x).ok_or_else(|| format!("unknown port `{x}`"));
    let r = match at(*k) {
        op @ ("eq" | "neq" | "lt" | "gt") => {
            let v = p(at(*k + 1))?;
            *k += 2;
            format!("{op} {v}")
        }
        "range" => {
            let (a, b) = (p(at(*k + 1))?, p(at(*k + 2))?);
            *k += 3;
            format!("range {a} {b}")
        }
        "object-group" => return Err("a port group in an access-list entry: write the ports out".into()),
        _ => return Ok(None),
    };
    Ok(Some(r))
}

/// One access-list line in xgw's spelling: `Ok(None)` when it carries nothing (a remark
/// becomes a comment line via `Ok(Some("# ..."))`).
pub(super) fn acl_entry(m: &Model, list: &str, words: &[String]) -> Result<String, String> {
    let mut w: Vec<String> = words.to_vec();
    if w.first().map(String::as_str) == Some("line") {
        w.drain(..2.min(w.len()));
    }
    match w.first().map(String::as_str) {
        Some("remark") => return Ok(format!("# {}", w[1..].join(" "))),
        Some("extended") => {
            w.remove(0);
        }
        Some("standard") => {
            let mut k = 2;
            let action = w.get(1).cloned().unwrap_or_default();
            let src = address(m, &w, &mut k)?;
            return Ok(format!("access-list {list} {action} ip {src} any"));
        }
        Some("webtype" | "ethertype") => return Err("a webtype/ethertype list: not an xgw function".into()),
        _ => {}
    }
    if w.iter().any(|x| x == "inactive") {
        return Err("an inactive entry: left out".into());
    }
    if w.iter().any(|x| x == "time-range") {
        return Err("an entry bound to a time range: xgw has none, and always-on would widen it".into());
    }
    let action = w.first().cloned().unwrap_or_default();
    if action != "permit" && action != "deny" {
        return Err(format!("`{action}`: not permit or deny"));
    }
    let mut k = 1;
    let at = |w: &[String], i: usize| w.get(i).cloned().unwrap_or_default();
    let (proto_text, ported, icmp) = match at(&w, k).as_str() {
        "object-group" => {
            k += 2;
            (format!("object-group {}", at(&w, k - 1)), false, false)
        }
        "object" => return Err("a service object in an access list: write the protocol and ports out".into()),
        "ip" => {
            k += 1;
            ("ip".to_string(), false, false)
        }
        p => {
            k += 1;
            let name = proto(p).ok_or_else(|| format!("unknown protocol `{p}`"))?;
            let ported = name == "tcp" || name == "udp";
            let icmp = name == "icmp";
            (name, ported, icmp)
        }
    };
    let src = address(m, &w, &mut k)?;
    let sport = if ported { ports_at(&w, &mut k)? } else { None };
    let dst = address(m, &w, &mut k)?;
    let mut proto_text = proto_text;
    let dport = if ported && at(&w, k) == "object-group" && sport.is_none() {
        // a port group after the destination: xgw's service group names protocol and
        // ports together, so the rule takes the group in the protocol's place
        proto_text = format!("object-group {}", at(&w, k + 1));
        k += 2;
        None
    } else if ported {
        ports_at(&w, &mut k)?
    } else {
        None
    };
    let icmp_t = if icmp && !matches!(at(&w, k).as_str(), "" | "log") {
        if at(&w, k) == "object-group" {
            return Err("an ICMP type group: write the types as separate entries".into());
        }
        k += 1;
        Some(icmp_type(&at(&w, k - 1)).ok_or_else(|| format!("unknown ICMP type `{}`", at(&w, k - 1)))?)
    } else {
        None
    };
    let log = at(&w, k) == "log" && at(&w, k + 1) != "disable";
    let mut s = format!("access-list {list} {action} {proto_text} {src}");
    if let Some(p) = sport {
        s.push_str(&format!(" {p}"));
    }
    s.push_str(&format!(" {dst}"));
    if let Some(p) = dport {
        s.push_str(&format!(" {p}"));
    }
    if let Some(t) = icmp_t {
        s.push_str(&format!(" {t}"));
    }
    if log {
        s.push_str(" log");
    }
    Ok(s)
}

/// One object-group member in xgw's spelling.
pub(super) fn group_member(m: &Model, kind: &str, gproto: Option<&str>, w: &[String]) -> Result<Vec<String>, String> {
    let at = |i: usize| w.get(i).map(String::as_str).unwrap_or("");
    match (kind, at(0)) {
        ("network", "network-object") => match at(1) {
            "host" => {
                m.addr(at(2)).map(|a| vec![format!("host {a}")]).ok_or_else(|| format!("unknown address `{}`", at(2)))
            }
            "object" => object_text(m, at(2))
                .map(|t| vec![t])
                .ok_or_else(|| format!("object `{}` is a range or unknown", at(2))),
            a => match (m.addr(a), at(2).parse().ok().and_then(mask_len)) {
                (Some(a), Some(32)) => Ok(vec![format!("host {a}")]),
                (Some(a), Some(l)) => Ok(vec![format!("{a}/{l}")]),
                _ => Err("an address xgw cannot read".into()),
            },
        },
        (_, "group-object") => Ok(vec![format!("group {}", at(1))]),
        ("protocol", "protocol-object") => {
            let p = proto(at(1)).ok_or_else(|| format!("unknown protocol `{}`", at(1)))?;
            Ok(vec![p])
        }
        ("service", "port-object") => {
            let mut k = 1;
            let p = ports_at(w, &mut k)?.ok_or("a port operator")?;
            let protos: &[&str] = match gproto {
                Some("tcp-udp") => &["tcp", "udp"],
                Some("udp") => &["udp"],
                _ => &["tcp"],
            };
            Ok(protos.iter().map(|x| format!("{x} {p}")).collect())
        }
        ("service", "service-object") => {
            let p = proto(at(1)).ok_or_else(|| format!("unknown protocol `{}`", at(1)))?;
            let mut k = 2;
            if at(k) == "destination" {
                k += 1;
            } else if at(k) == "source" {
                return Err("a source-port service: xgw service groups name destination ports".into());
            }
            let ports = ports_at(w, &mut k)?;
            Ok(vec![match ports {
                Some(x) => format!("{p} {x}"),
                None => p,
            }])
        }
        _ => Err(format!("`{}` in an object-group {kind}", at(0))),
    }
}
