//! Reading a PIX/ASA configuration into a model: one pass over the lines, sub-commands
//! (indented lines) attached to the line that opened their block.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::Left;

/// An interface's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IfAddr {
    /// Address and prefix length.
    Static(Ipv4Addr, u8),
    /// `ip address dhcp`.
    Dhcp,
}

/// An interface with a `nameif`.
#[derive(Debug, Clone)]
pub(super) struct Iface {
    pub(super) hw: String,
    pub(super) nameif: Option<String>,
    pub(super) level: Option<u8>,
    pub(super) addr: Option<IfAddr>,
    pub(super) shutdown: bool,
    pub(super) line: usize,
}

/// A network object (8.3+): what it names.
#[derive(Debug, Clone)]
pub(super) enum Object {
    /// `host A` / `subnet A M`: address and prefix length.
    Net(Ipv4Addr, u8),
    /// `range A B`.
    Range(Ipv4Addr, Ipv4Addr),
    /// No address given (yet).
    Empty,
}

/// A NAT statement of any generation, reduced to what xgw can express.
#[derive(Debug, Clone)]
pub(super) enum Nat {
    /// PAT onto the outside interface's address or a pool (pre-8.3: the `global` of NAT id
    /// `id`), for the inside hosts in `real` (rules text; `None`: all).
    Overload { id: Option<String>, pool: Vec<Ipv4Addr>, real: Option<String>, line: usize },
    /// Exemption by access list.
    ExemptList { list: String },
    /// Exemption by address pair (inside side, far side), as rules text.
    ExemptPair { inside: String, far: String },
    /// A static port forward: protocol, the mapped address (`None`: the outside
    /// interface's), outside port, inside host, inside port.
    Forward { proto: String, mapped: Option<Ipv4Addr>, outside_port: u16, host: Ipv4Addr, port: u16, line: usize },
}

/// One line of an access list, tokens after the list name.
#[derive(Debug, Clone)]
pub(super) struct AclLine {
    pub(super) list: String,
    pub(super) words: Vec<String>,
    pub(super) line: usize,
}

/// An object group: its kind (`network`, `service`, `protocol`, `icmp-type`), the service
/// group's protocol (`tcp`, `udp`, `tcp-udp`), and its member lines.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) proto: Option<String>,
    pub(super) members: Vec<(Vec<String>, usize)>,
    pub(super) line: usize,
}

/// What the configuration says, as far as xgw cares.
#[derive(Debug, Default)]
pub(super) struct Model {
    pub(super) hostname: Option<String>,
    pub(super) names: BTreeMap<String, Ipv4Addr>,
    pub(super) ifaces: Vec<Iface>,
    pub(super) objects: BTreeMap<String, Object>,
    /// `global (IF) ID ...`: (interface, id, pool addresses or empty for `interface`, line)
    pub(super) globals: Vec<(String, String, Vec<Ipv4Addr>, usize)>,
    pub(super) nats: Vec<Nat>,
    pub(super) groups: Vec<Group>,
    pub(super) acl: Vec<AclLine>,
    /// (list, inbound, nameif, line)
    pub(super) binds: Vec<(String, bool, String, usize)>,
    /// (xgw timeout name, duration in seconds, line)
    pub(super) timeouts: Vec<(&'static str, u64, usize)>,
    /// `inspect pptp` / `fixup protocol pptp`: on?, line
    pub(super) pptp: Option<(bool, usize)>,
    /// (nameif, destination, prefix length, gateway, line)
    pub(super) routes: Vec<(String, Ipv4Addr, u8, Ipv4Addr, usize)>,
    /// Pre-8.3 NAT seen (ACLs name mapped addresses).
    pub(super) pre83: bool,
}

/// A mask's prefix length, if contiguous.
pub(super) fn mask_len(m: Ipv4Addr) -> Option<u8> {
    let m = u32::from(m);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

impl Model {
    /// An address token: dotted quad or a `name`.
    pub(super) fn addr(&self, w: &str) -> Option<Ipv4Addr> {
        w.parse().ok().or_else(|| self.names.get(w).copied())
    }

    fn iface_by_hw(&mut self, hw: &str, line: usize) -> usize {
        match self.ifaces.iter().position(|i| i.hw == hw) {
            Some(i) => i,
            None => {
                let iface = Iface { hw: hw.into(), nameif: None, level: None, addr: None, shutdown: false, line };
                self.ifaces.push(iface);
                self.ifaces.len() - 1
            }
        }
    }

    fn iface_by_name(&mut self, n: &str) -> Option<&mut Iface> {
        self.ifaces.iter_mut().find(|i| i.nameif.as_deref() == Some(n))
    }
}

/// Why lines of a kind are not translated.
fn left_out_why(first: &str, second: &str) -> Option<&'static str> {
    Some(match first {
        "crypto" | "isakmp" => "IPsec termination on the firewall itself: xgw passes and tracks IPsec; terminate VPNs with strongSwan on the box",
        "tunnel-group" | "group-policy" | "webvpn" | "vpdn" | "vpnclient" => "remote-access VPN termination is not an xgw function (strongSwan or a VPN server behind a forward)",
        "ip" if second == "local" => "an address pool for VPN clients: not an xgw function",
        "aaa" | "aaa-server" | "username" | "enable" | "passwd" | "password" => "management authentication: the Linux box's own accounts and sshd",
        "ssh" | "telnet" | "http" | "asdm" | "console" => "management access to the box: allow it with xgwd --host-service and the box's own services",
        "snmp-server" | "logging" | "ntp" | "clock" | "dns" | "domain-name" | "dns-guard" | "banner" | "pager" | "mtu" | "arp" | "ftp" | "boot" | "terminal" | "prompt" | "license" | "names" | "no" | "sysopt" | "failover" | "monitor-interface" | "icmp" | "dhcpd" | "dhcprelay" | "threat-detection" | "call-home" | "service" | "same-security-traffic" | "mac-address" | "user-identity" | "privilege" | "tftp-server" | "floodguard" | "pdm" | "url-server" | "filter" | "established" | "conduit" | "outbound" | "apply" => "a device setting without an xgw equivalent (configure the Linux box itself)",
        _ => return None,
    })
}

/// Reads the configuration. Lines it does not understand go to `left`.
pub(super) fn read(text: &str, left: &mut Vec<Left>) -> Model {
    let mut m = Model::default();
    // the block an indented line belongs to
    enum Block {
        None,
        Iface(usize),
        Object(String),
        Group(usize),
        Policy,
        Ignored,
    }
    let mut block = Block::None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let leave = |left: &mut Vec<Left>, why: &str| {
            left.push(Left { line, text: raw.to_string(), why: why.to_string() });
        };
        let t = raw.trim_end();
        if t.trim().is_empty() || t.starts_with([':', '!']) || t.trim_start().starts_with('!') {
            continue;
        }
        let w: Vec<String> = t.split_whitespace().map(str::to_string).collect();
        let s: Vec<&str> = w.iter().map(String::as_str).collect();
        let indented = t.starts_with(' ');
        if indented {
            match &block {
                Block::Iface(k) => {
                    let k = *k;
                    match s.as_slice() {
                        ["nameif", n] => m.ifaces[k].nameif = Some((*n).into()),
                        ["security-level", n] => m.ifaces[k].level = n.parse().ok(),
                        ["ip", "address", "dhcp", ..] => m.ifaces[k].addr = Some(IfAddr::Dhcp),
                        ["ip", "address", a, mask, ..] => match (m.addr(a), mask.parse().ok().and_then(mask_len)) {
                            (Some(a), Some(l)) => m.ifaces[k].addr = Some(IfAddr::Static(a, l)),
                            _ => leave(left, "an address xgw cannot read"),
                        },
                        ["shutdown"] => m.ifaces[k].shutdown = true,
                        ["no", ..] | ["description", ..] => {}
                        ["management-only"] => leave(left, "management-only: xgw forwards on every interface it is given; leave this one out of the rules if it should carry no transit"),
                        _ => leave(left, "an interface setting without an xgw equivalent (speed, duplex, VLAN: configure the Linux device)"),
                    }
                }
                Block::Object(name) => match s.as_slice() {
                    ["host", a] => {
                        if let Some(a) = m.addr(a) {
                            m.objects.insert(name.clone(), Object::Net(a, 32));
                        }
                    }
                    ["subnet", a, mask] => match (m.addr(a), mask.parse().ok().and_then(mask_len)) {
                        (Some(a), Some(l)) => {
                            m.objects.insert(name.clone(), Object::Net(a, l));
                        }
                        _ => leave(left, "an address xgw cannot read"),
                    },
                    ["range", a, b] => {
                        if let (Some(a), Some(b)) = (m.addr(a), m.addr(b)) {
                            m.objects.insert(name.clone(), Object::Range(a, b));
                        }
                    }
                    ["nat", ..] => super::acl::object_nat(&mut m, name, &s, line, raw, left),
                    ["description", ..] => {}
                    _ => leave(left, "an object setting xgw does not use"),
                },
                Block::Group(g) => {
                    let g = *g;
                    if s.first() != Some(&"description") {
                        m.groups[g].members.push((w.clone(), line));
                    }
                }
                Block::Policy => match s.as_slice() {
                    ["inspect", "pptp", ..] => m.pptp = Some((true, line)),
                    ["inspect", ..] => leave(left, "xgw inspects pptp (and tracks ipsec) only: its other traffic passes without an application gateway"),
                    _ => {}
                },
                Block::Ignored | Block::None => {}
            }
            continue;
        }
        block = Block::None;
        match s.as_slice() {
            ["PIX" | "ASA", "Version", ..] | ["end"] | ["names"] => {}
            [c, ..] if c.starts_with("Cryptochecksum") => {}
            ["hostname", h] => m.hostname = Some((*h).into()),
            ["name", a, n, ..] => match a.parse() {
                Ok(a) => {
                    m.names.insert((*n).into(), a);
                }
                Err(_) => leave(left, "not an IPv4 address"),
            },
            // PIX 6
            ["nameif", hw, n, sec] => {
                let k = m.iface_by_hw(hw, line);
                m.ifaces[k].nameif = Some((*n).into());
                m.ifaces[k].level = sec.strip_prefix("security").and_then(|x| x.parse().ok());
            }
            ["interface", hw, rest @ ..] if !rest.is_empty() && !hw.contains('/') && rest[0] != "nameif" => {
                let k = m.iface_by_hw(hw, line);
                if rest.contains(&"shutdown") {
                    m.ifaces[k].shutdown = true;
                }
                if rest.iter().any(|w| *w != "shutdown") {
                    leave(left, "speed and duplex: settings of the Linux device (ethtool), not of xgw");
                }
            }
            ["ip", "address", n, "dhcp", ..] => match m.iface_by_name(n) {
                Some(i) => i.addr = Some(IfAddr::Dhcp),
                None => leave(left, "an address for an interface with no nameif"),
            },
            ["ip", "address", n, a, mask] => {
                let v = (m.addr(a), mask.parse().ok().and_then(mask_len));
                match (m.iface_by_name(n), v) {
                    (Some(i), (Some(a), Some(l))) => i.addr = Some(IfAddr::Static(a, l)),
                    _ => leave(left, "an address xgw cannot read, or for an interface with no nameif"),
                }
            }
            // PIX 7 / ASA
            ["interface", hw] => block = Block::Iface(m.iface_by_hw(hw, line)),
            ["object", "network", n] => {
                m.objects.entry((*n).into()).or_insert(Object::Empty);
                block = Block::Object((*n).into());
            }
            ["object", "service", ..] => {
                leave(left, "service objects are not translated: write the ports into the access list");
                block = Block::Ignored;
            }
            ["object-group", kind, n, rest @ ..] => {
                m.groups.push(Group {
                    name: (*n).into(),
                    kind: (*kind).into(),
                    proto: rest.first().map(|p| (*p).to_string()),
                    members: Vec::new(),
                    line,
                });
                block = Block::Group(m.groups.len() - 1);
            }
            ["access-list", name, rest @ ..] => {
                m.acl.push(AclLine { list: (*name).into(), words: rest.iter().map(|x| x.to_string()).collect(), line })
            }
            ["access-group", list, dir @ ("in" | "out"), "interface", n, ..] => {
                m.binds.push(((*list).into(), *dir == "in", (*n).into(), line))
            }
            ["global", ..] | ["nat", ..] | ["static", ..] => super::acl::nat_line(&mut m, &s, line, raw, left),
            ["timeout", rest @ ..] => timeouts(&mut m, rest, line, raw, left),
            ["fixup", "protocol", "pptp", ..] => m.pptp = Some((true, line)),
            ["no", "fixup", "protocol", "pptp", ..] => m.pptp = Some((false, line)),
            ["fixup", "protocol", ..] | ["no", "fixup", ..] => leave(
                left,
                "xgw inspects pptp (and tracks ipsec) only: its other traffic passes without an application gateway",
            ),
            ["policy-map", ..] => block = Block::Policy,
            ["class-map", ..] | ["service-policy", ..] => block = Block::Ignored,
            ["route", n, dst, mask, gw, ..] => match (m.addr(dst), mask.parse().ok().and_then(mask_len), m.addr(gw)) {
                (Some(d), Some(l), Some(g)) => m.routes.push(((*n).into(), d, l, g, line)),
                _ => leave(left, "a route xgw cannot read"),
            },
            [first, rest @ ..] => {
                let why = left_out_why(first, rest.first().copied().unwrap_or(""))
                    .unwrap_or("not understood by the importer: translate it by hand if it matters");
                leave(left, why);
                block = Block::Ignored;
            }
            [] => {}
        }
    }
    m
}

/// `timeout conn 1:00:00 half-closed 0:10:00 udp 0:02:00 icmp 0:00:02 xlate 3:00:00 ...`
fn timeouts(m: &mut Model, rest: &[&str], line: usize, raw: &str, left: &mut Vec<Left>) {
    let mut skipped = Vec::new();
    let mut k = 0;
    while k + 1 < rest.len() {
        let (name, v) = (rest[k], rest[k + 1]);
        k += 2;
        let secs = hms(v);
        let xgw = match name {
            "conn" => Some("tcp-established"),
            "half-closed" => Some("tcp-fin-wait"),
            "udp" => Some("udp"),
            "icmp" => Some("icmp"),
            "pptp-gre" => Some("pptp-gre"),
            _ => None,
        };
        match (xgw, secs) {
            (Some(x), Some(s)) if s > 0 => m.timeouts.push((x, s, line)),
            _ => skipped.push(format!("{name} {v}")),
        }
    }
    if !skipped.is_empty() {
        left.push(Left {
            line,
            text: raw.to_string(),
            why: format!("no xgw equivalent for timeout {} (xgw's are per protocol and state)", skipped.join(", ")),
        });
    }
}

/// `h:mm:ss` (or a bare number of seconds) in seconds; `0:00:00` means "never" on ASA.
fn hms(v: &str) -> Option<u64> {
    let p: Vec<&str> = v.split(':').collect();
    let n: Option<Vec<u64>> = p.iter().map(|x| x.parse().ok()).collect();
    match n?.as_slice() {
        [h, m, s] => Some(h * 3600 + m * 60 + s),
        [m, s] => Some(m * 60 + s),
        [s] => Some(*s),
        _ => None,
    }
}
