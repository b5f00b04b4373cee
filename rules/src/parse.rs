//! Statements of the rules language, parsed from tokens with every error collected.
//!
//! One statement per line; `object-group` bodies are braced and may span lines. After an
//! error the parser skips to the next line, so one run reports every mistake.

use std::net::Ipv4Addr;
use std::ops::Range;

use crate::diag::{did_you_mean, Diagnostic, Severity, SourceFile};
use crate::lexer::{lex, Tok, Token};

/// A value with the byte span it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub v: T,
    /// Where it stands.
    pub span: Range<usize>,
}

/// An address in a rule or group: a range of IPv4 addresses, or a group reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSpec {
    /// `any`
    Any,
    /// `host A`, `A/len`, `A MASK`: the inclusive range.
    Range(u32, u32),
    /// `object-group NAME`
    Group(Spanned<String>),
}

/// Ports in a rule or service: inclusive ranges (`neq` gives two).
pub type Ports = Vec<(u16, u16)>;

/// A protocol in a rule or service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoSpec {
    /// `ip`: any protocol.
    Any,
    /// A protocol number (`tcp` is 6, ...).
    Num(u8),
    /// `object-group NAME` (a service group; the rule then has no port operators).
    Group(Spanned<String>),
}

/// An ICMP type (and code) filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpSpec {
    /// Type.
    pub typ: u8,
    /// Code, if given.
    pub code: Option<u8>,
}

/// One service of a service group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceItem {
    /// A protocol with destination ports (TCP/UDP) or an ICMP type.
    Proto {
        /// Protocol number (None: `ip`).
        proto: Option<u8>,
        /// Destination ports (empty: any).
        ports: Ports,
        /// ICMP type.
        icmp: Option<IcmpSpec>,
    },
    /// `group NAME`
    Group(Spanned<String>),
}

/// A group's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Addresses.
    Network,
    /// Protocols and ports.
    Service,
}

/// An access-list rule as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleAst {
    /// `permit`?
    pub permit: bool,
    /// Protocol or service group.
    pub proto: Spanned<ProtoSpec>,
    /// Source addresses.
    pub src: Spanned<AddrSpec>,
    /// Source ports (empty: any).
    pub sport: Ports,
    /// Destination addresses.
    pub dst: Spanned<AddrSpec>,
    /// Destination ports (empty: any).
    pub dport: Ports,
    /// ICMP type filter.
    pub icmp: Option<IcmpSpec>,
    /// `log`
    pub log: bool,
    /// The rule's text, normalised (tokens joined by one space).
    pub text: String,
}

/// An interface's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleAst {
    /// `role inside`
    Inside,
    /// `role outside`
    Outside,
}

/// One statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `include "FILE"`
    Include(Spanned<String>),
    /// `interface NAME device DEV role ROLE address A/LEN|auto|dhcp`
    Interface {
        /// Name used by the rest of the file.
        name: Spanned<String>,
        /// Kernel device.
        device: Spanned<String>,
        /// Role.
        role: RoleAst,
        /// Address and prefix length, or `None` for `auto` (`dhcp`): whatever the kernel
        /// has on the device, followed as it changes.
        addr: Option<(Ipv4Addr, u8)>,
        /// Where `address auto` stood (for errors about it).
        addr_span: Range<usize>,
    },
    /// `nat overload [ports LO-HI] [preserve-port on|off] [host-ports LO-HI|none]` / `nat off`
    Nat {
        /// Translation on?
        on: bool,
        /// Port range.
        ports: Option<(u16, u16)>,
        /// Keep source ports when free.
        preserve: Option<bool>,
        /// Host's own ephemeral range (never allocated); `Some(None)` = `none`.
        host_ports: Option<Option<(u16, u16)>>,
        /// Addresses to translate onto instead of the outside interface's.
        pool: Vec<Ipv4Addr>,
    },
    /// `forward tcp|udp PORT to HOST [PORT]`
    Forward {
        /// 6 or 17.
        proto: u8,
        /// Outside port.
        outside_port: u16,
        /// Inside host.
        host: Ipv4Addr,
        /// Inside port.
        inside_port: u16,
    },
    /// `inspect pptp|ipsec [on|off] [interface NAME...] [OPTION VALUE...]`
    Inspect {
        /// `pptp` or `ipsec`.
        what: Spanned<String>,
        /// Enabled?
        on: bool,
        /// Interfaces (empty: all).
        interfaces: Vec<Spanned<String>>,
        /// Options: name and value.
        options: Vec<(Spanned<String>, Spanned<String>)>,
    },
    /// `timeout NAME DURATION`
    Timeout(Spanned<String>, Spanned<std::time::Duration>),
    /// `limit NAME NUMBER`
    Limit(Spanned<String>, Spanned<u64>),
    /// `object-group network|service NAME { ... }`
    Group {
        /// Kind.
        kind: GroupKind,
        /// Name.
        name: Spanned<String>,
        /// Network members.
        nets: Vec<Spanned<AddrSpec>>,
        /// Service members.
        services: Vec<Spanned<ServiceItem>>,
    },
    /// `access-list NAME [extended] permit|deny ...`
    Rule {
        /// List name.
        list: Spanned<String>,
        /// The rule.
        rule: RuleAst,
    },
    /// A statement that failed after naming what it defines (an access list, a group, an
    /// interface): the name still counts as defined, so one mistake is reported once.
    Broken(&'static str, Spanned<String>),
    /// `access-group LIST in|out interface NAME`
    Bind {
        /// List name.
        list: Spanned<String>,
        /// `in`?
        inbound: bool,
        /// Interface name.
        iface: Spanned<String>,
    },
}

/// A statement with the span of its first token and its line's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The statement.
    pub stmt: Stmt,
    /// Span of the whole statement.
    pub span: Range<usize>,
}

const STATEMENTS: &[&str] = &[
    "include",
    "interface",
    "nat",
    "forward",
    "inspect",
    "timeout",
    "limit",
    "object-group",
    "access-list",
    "access-group",
];

/// Well-known port names.
pub const PORT_NAMES: &[(&str, u16)] = &[
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("domain", 53),
    ("dns", 53),
    ("http", 80),
    ("www", 80),
    ("pop3", 110),
    ("ntp", 123),
    ("imap", 143),
    ("snmp", 161),
    ("ldap", 389),
    ("https", 443),
    ("isakmp", 500),
    ("ike", 500),
    ("syslog", 514),
    ("l2tp", 1701),
    ("pptp", 1723),
    ("radius", 1812),
    ("sip", 5060),
    ("ipsec-nat-t", 4500),
    ("nat-t", 4500),
];

/// Protocol names.
pub const PROTO_NAMES: &[(&str, u8)] =
    &[("icmp", 1), ("tcp", 6), ("udp", 17), ("gre", 47), ("esp", 50), ("ah", 51), ("ospf", 89), ("sctp", 132)];

/// ICMP type names.
pub const ICMP_NAMES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
];

struct Parser<'a> {
    file: &'a SourceFile,
    toks: Vec<Token>,
    pos: usize,
    diags: &'a mut Vec<Diagnostic>,
}

type PResult<T> = Result<T, ()>;

impl<'a> Parser<'a> {
    fn text(&self, t: &Token) -> &'a str {
        self.file.text.get(t.span.clone()).unwrap_or("")
    }

    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn peek_word(&self) -> Option<&'a str> {
        match self.peek() {
            Some(t @ Token { tok: Some(Tok::Word), .. }) => Some(self.text(t)),
            _ => None,
        }
    }

    fn at_eol(&self) -> bool {
        matches!(self.peek(), None | Some(Token { tok: Some(Tok::Newline), .. }))
    }

    /// Where a missing token would have stood: the next token, or the end of the line.
    fn here(&self) -> Range<usize> {
        match self.peek() {
            Some(t) if t.tok != Some(Tok::Newline) => t.span.clone(),
            Some(t) => t.span.start..t.span.start,
            None => self.file.text.len()..self.file.text.len(),
        }
    }

    fn error(&mut self, span: Range<usize>, msg: impl Into<String>, expected: &str, hint: Option<String>) {
        let mut d = Diagnostic::at(self.file, span, Severity::Error, msg).expected(expected);
        if let Some(h) = hint {
            d = d.hint(h);
        }
        self.diags.push(d);
    }

    /// Reports what stands at the cursor (or that the line ended) where `expected` should be.
    fn unexpected(&mut self, expected: &str, choices: &[&str]) -> PResult<()> {
        let span = self.here();
        if self.at_eol() {
            self.error(span, "unexpected end of line", expected, None);
        } else {
            let found = self.text(&self.toks[self.pos]).to_string();
            let hint = did_you_mean(&found, choices.iter().copied()).map(|s| format!("did you mean `{s}`?"));
            self.error(span, format!("unexpected `{found}`"), expected, hint);
        }
        Err(())
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn word(&mut self, expected: &str) -> PResult<Spanned<String>> {
        match self.peek_word() {
            Some(w) => {
                let span = self.toks[self.pos].span.clone();
                self.pos += 1;
                Ok(Spanned { v: w.to_string(), span })
            }
            None => self.unexpected(expected, &[]).map(|_| unreachable_spanned()),
        }
    }

    fn keyword(&mut self, choices: &[&str]) -> PResult<Spanned<String>> {
        let expected = one_of(choices);
        match self.peek_word() {
            Some(w) if choices.contains(&w) => self.word(&expected),
            _ => self.unexpected(&expected, choices).map(|_| unreachable_spanned()),
        }
    }

    fn eat(&mut self, kw: &str) -> bool {
        if self.peek_word() == Some(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn number(&mut self, what: &str, max: u64) -> PResult<Spanned<u64>> {
        match self.peek() {
            Some(t @ Token { tok: Some(Tok::Number), .. }) => {
                let span = t.span.clone();
                let s = self.text(t);
                self.pos += 1;
                match s.parse::<u64>() {
                    Ok(v) if v <= max => Ok(Spanned { v, span }),
                    _ => {
                        self.error(span, format!("`{s}` is out of range"), &format!("{what} from 0 to {max}"), None);
                        Err(())
                    }
                }
            }
            _ => self.unexpected(what, &[]).map(|_| Spanned { v: 0, span: 0..0 }),
        }
    }

    fn port(&mut self) -> PResult<u16> {
        if let Some(w) = self.peek_word() {
            let span = self.toks[self.pos].span.clone();
            self.pos += 1;
            return match PORT_NAMES.iter().find(|(n, _)| *n == w) {
                Some((_, p)) => Ok(*p),
                None => {
                    let hint =
                        did_you_mean(w, PORT_NAMES.iter().map(|(n, _)| *n)).map(|s| format!("did you mean `{s}`?"));
                    self.error(
                        span,
                        format!("unknown port name `{w}`"),
                        "a port number or name (ssh, https, pptp, ...)",
                        hint,
                    );
                    Err(())
                }
            };
        }
        Ok(self.number("a port number or name", 65535)?.v as u16)
    }

    fn range(&mut self, what: &str, max: u64) -> PResult<Spanned<(u64, u64)>> {
        match self.peek() {
            Some(t @ Token { tok: Some(Tok::Range), .. }) => {
                let span = t.span.clone();
                let s = self.text(t);
                self.pos += 1;
                let (a, b) = s.split_once('-').unwrap_or((s, s));
                match (a.parse::<u64>(), b.parse::<u64>()) {
                    (Ok(a), Ok(b)) if a <= b && b <= max => Ok(Spanned { v: (a, b), span }),
                    _ => {
                        self.error(
                            span,
                            format!("`{s}` is not a valid range"),
                            &format!("LOW-HIGH with LOW <= HIGH <= {max}"),
                            None,
                        );
                        Err(())
                    }
                }
            }
            _ => self.unexpected(what, &[]).map(|_| Spanned { v: (0, 0), span: 0..0 }),
        }
    }

    fn addr_token(&mut self, what: &str) -> PResult<Spanned<Ipv4Addr>> {
        match self.peek() {
            Some(t @ Token { tok: Some(Tok::Addr), .. }) => {
                let span = t.span.clone();
                let s = self.text(t);
                self.pos += 1;
                match s.parse::<Ipv4Addr>() {
                    Ok(a) => Ok(Spanned { v: a, span }),
                    Err(_) => {
                        self.error(span, format!("`{s}` is not an IPv4 address"), "four numbers from 0 to 255", None);
                        Err(())
                    }
                }
            }
            _ => self.unexpected(what, &[]).map(|_| Spanned { v: Ipv4Addr::UNSPECIFIED, span: 0..0 }),
        }
    }

    /// `A/LEN` or `A MASK`.
    fn prefix(&mut self) -> PResult<(Ipv4Addr, u8)> {
        match self.peek() {
            Some(t @ Token { tok: Some(Tok::Cidr), .. }) => {
                let span = t.span.clone();
                let s = self.text(t);
                self.pos += 1;
                let (a, l) = s.split_once('/').unwrap_or((s, ""));
                match (a.parse::<Ipv4Addr>(), l.parse::<u8>()) {
                    (Ok(a), Ok(l)) if l <= 32 => Ok((a, l)),
                    (Err(_), _) => {
                        self.error(span, format!("`{a}` is not an IPv4 address"), "four numbers from 0 to 255", None);
                        Err(())
                    }
                    _ => {
                        self.error(
                            span,
                            format!("prefix length `{l}` is larger than 32"),
                            "a prefix length from 0 to 32",
                            None,
                        );
                        Err(())
                    }
                }
            }
            Some(Token { tok: Some(Tok::Addr), .. }) => {
                let a = self.addr_token("an address")?;
                let m = self.addr_token("a netmask (255.255.255.0) after the address")?;
                let mask = u32::from(m.v);
                if mask.leading_ones() + mask.trailing_zeros() != 32 {
                    self.error(
                        m.span,
                        format!("`{}` is not a contiguous netmask", m.v),
                        "a netmask such as 255.255.255.0",
                        Some("wildcard masks are not supported; use a prefix length".into()),
                    );
                    return Err(());
                }
                Ok((a.v, mask.leading_ones() as u8))
            }
            _ => self.unexpected("an address with a prefix (A/LEN or A MASK)", &[]).map(|_| (Ipv4Addr::UNSPECIFIED, 0)),
        }
    }

    fn addr_spec(&mut self) -> PResult<Spanned<AddrSpec>> {
        let start = self.here().start;
        let v = match self.peek_word() {
            Some("any") => {
                self.pos += 1;
                AddrSpec::Any
            }
            Some("host") => {
                self.pos += 1;
                let a = u32::from(self.addr_token("an address after `host`")?.v);
                AddrSpec::Range(a, a)
            }
            Some("object-group") => {
                self.pos += 1;
                AddrSpec::Group(self.word("a network group name")?)
            }
            Some(_) => {
                return self
                    .unexpected(
                        "an address: any, host A, A/LEN, A MASK or object-group NAME",
                        &["any", "host", "object-group"],
                    )
                    .map(|_| Spanned { v: AddrSpec::Any, span: 0..0 })
            }
            None => {
                let (a, len) = self.prefix()?;
                let mask = xgw_dataplane::config::prefix_mask(len);
                let lo = u32::from(a) & mask;
                AddrSpec::Range(lo, lo | !mask)
            }
        };
        let end = self.toks.get(self.pos.saturating_sub(1)).map_or(start, |t| t.span.end);
        Ok(Spanned { v, span: start..end })
    }

    fn ports(&mut self) -> PResult<Ports> {
        Ok(match self.peek_word() {
            Some("eq") => {
                self.pos += 1;
                let p = self.port()?;
                vec![(p, p)]
            }
            Some("neq") => {
                self.pos += 1;
                let p = self.port()?;
                let mut v = Vec::new();
                if p > 0 {
                    v.push((0, p - 1));
                }
                if p < u16::MAX {
                    v.push((p + 1, u16::MAX));
                }
                v
            }
            Some("lt") => {
                self.pos += 1;
                let span = self.here();
                let p = self.port()?;
                if p == 0 {
                    self.error(span, "`lt 0` matches no port", "a port above 0", None);
                    return Err(());
                }
                vec![(0, p - 1)]
            }
            Some("gt") => {
                self.pos += 1;
                let span = self.here();
                let p = self.port()?;
                if p == u16::MAX {
                    self.error(span, "`gt 65535` matches no port", "a port below 65535", None);
                    return Err(());
                }
                vec![(p + 1, u16::MAX)]
            }
            Some("range") => {
                self.pos += 1;
                if matches!(self.peek(), Some(Token { tok: Some(Tok::Range), .. })) {
                    let r = self.range("a port range", 65535)?;
                    vec![(r.v.0 as u16, r.v.1 as u16)]
                } else {
                    let span = self.here();
                    let a = self.port()?;
                    let b = self.port()?;
                    if a > b {
                        self.error(span, format!("range {a} {b} is empty"), "LOW HIGH with LOW <= HIGH", None);
                        return Err(());
                    }
                    vec![(a, b)]
                }
            }
            _ => Vec::new(),
        })
    }

    fn proto_spec(&mut self) -> PResult<Spanned<ProtoSpec>> {
        let span = self.here();
        if matches!(self.peek(), Some(Token { tok: Some(Tok::Number), .. })) {
            let n = self.number("a protocol number", 255)?;
            return Ok(Spanned { v: ProtoSpec::Num(n.v as u8), span: n.span });
        }
        let Some(w) = self.peek_word() else {
            return self.unexpected("a protocol", &[]).map(|_| Spanned { v: ProtoSpec::Any, span: 0..0 });
        };
        if w == "object-group" {
            self.pos += 1;
            let g = self.word("a service group name")?;
            return Ok(Spanned { span: span.start..g.span.end, v: ProtoSpec::Group(g) });
        }
        if w == "ip" {
            self.pos += 1;
            return Ok(Spanned { v: ProtoSpec::Any, span });
        }
        match PROTO_NAMES.iter().find(|(n, _)| *n == w) {
            Some((_, p)) => {
                self.pos += 1;
                Ok(Spanned { v: ProtoSpec::Num(*p), span })
            }
            None => {
                self.pos += 1;
                let names: Vec<&str> = PROTO_NAMES.iter().map(|(n, _)| *n).chain(["ip"]).collect();
                let hint = did_you_mean(w, names.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                self.error(
                    span,
                    format!("unknown protocol `{w}`"),
                    "ip, tcp, udp, icmp, gre, esp, ah, a protocol number or object-group NAME",
                    hint,
                );
                Err(())
            }
        }
    }

    fn icmp_spec(&mut self) -> PResult<Option<IcmpSpec>> {
        let typ = if let Some(w) = self.peek_word() {
            match ICMP_NAMES.iter().find(|(n, _)| *n == w) {
                Some((_, t)) => {
                    self.pos += 1;
                    *t
                }
                None if w == "log" => return Ok(None),
                None => {
                    return self
                        .unexpected(
                            "an ICMP type (echo, echo-reply, unreachable, time-exceeded, ...) or a number",
                            &ICMP_NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                        )
                        .map(|_| None)
                }
            }
        } else if matches!(self.peek(), Some(Token { tok: Some(Tok::Number), .. })) {
            self.number("an ICMP type", 255)?.v as u8
        } else {
            return Ok(None);
        };
        let code = if matches!(self.peek(), Some(Token { tok: Some(Tok::Number), .. })) {
            Some(self.number("an ICMP code", 255)?.v as u8)
        } else {
            None
        };
        Ok(Some(IcmpSpec { typ, code }))
    }

    fn duration(&mut self) -> PResult<Spanned<std::time::Duration>> {
        match self.peek() {
            Some(t @ Token { tok: Some(Tok::Duration), .. }) => {
                let span = t.span.clone();
                let s = self.text(t);
                self.pos += 1;
                Ok(Spanned { v: parse_duration(s), span })
            }
            Some(Token { tok: Some(Tok::Number), .. }) => {
                let span = self.here();
                let s = self.text(&self.toks[self.pos]).to_string();
                self.pos += 1;
                self.error(
                    span,
                    format!("`{s}` has no unit"),
                    "a duration such as 30s, 2m, 2h4m, 5d",
                    Some(format!("write `{s}s` for seconds")),
                );
                Err(())
            }
            _ => self
                .unexpected("a duration such as 30s, 2m, 2h4m, 5d", &[])
                .map(|_| Spanned { v: std::time::Duration::ZERO, span: 0..0 }),
        }
    }

    fn end_of_statement(&mut self) -> PResult<()> {
        if self.at_eol() {
            Ok(())
        } else {
            self.unexpected("the end of the line", &[])
        }
    }

    fn skip_line(&mut self) {
        let mut depth = 0i32;
        while let Some(t) = self.peek() {
            match t.tok {
                Some(Tok::LBrace) => depth += 1,
                Some(Tok::RBrace) => depth -= 1,
                Some(Tok::Newline) if depth <= 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
    }

    fn statement(&mut self) -> PResult<Stmt> {
        let Some(w) = self.peek_word() else {
            return self.unexpected("a statement (interface, nat, forward, inspect, timeout, limit, object-group, access-list, access-group, include)", &[]).map(|_| Stmt::Include(unreachable_spanned()));
        };
        match w {
            "include" => {
                self.pos += 1;
                match self.next() {
                    Some(t @ Token { tok: Some(Tok::Str), .. }) => {
                        let s = self.text(&t);
                        let v = s.trim_matches('"').to_string();
                        self.end_of_statement()?;
                        Ok(Stmt::Include(Spanned { v, span: t.span }))
                    }
                    _ => {
                        self.pos -= 1;
                        self.unexpected("a quoted file name", &[]).map(|_| Stmt::Include(unreachable_spanned()))
                    }
                }
            }
            "interface" => {
                self.pos += 1;
                let name = self.word("an interface name")?;
                let (mut device, mut role, mut addr) = (None, None, None);
                let mut addr_span = 0..0;
                while !self.at_eol() {
                    let k = self.keyword(&["device", "role", "address"])?;
                    match k.v.as_str() {
                        "device" => device = Some(self.word("a kernel device name (eth0)")?),
                        "role" => {
                            let r = self.keyword(&["inside", "outside"])?;
                            role = Some(if r.v == "inside" { RoleAst::Inside } else { RoleAst::Outside });
                        }
                        _ => {
                            addr_span = self.here();
                            addr = Some(if matches!(self.peek_word(), Some("auto" | "dhcp")) {
                                self.pos += 1;
                                None
                            } else {
                                Some(self.prefix()?)
                            });
                        }
                    }
                }
                let span = self.here();
                let missing_flags = [device.is_none(), role.is_none(), addr.is_none()];
                let (Some(device), Some(role), Some(addr)) = (device, role, addr) else {
                    let missing: Vec<&str> = [
                        ("device DEV", missing_flags[0]),
                        ("role inside|outside", missing_flags[1]),
                        ("address A/LEN|auto", missing_flags[2]),
                    ]
                    .into_iter()
                    .filter(|(_, m)| *m)
                    .map(|(s, _)| s)
                    .collect();
                    self.error(span, format!("interface `{}` is incomplete", name.v), &missing.join(", "), None);
                    return Err(());
                };
                Ok(Stmt::Interface { name, device, role, addr, addr_span })
            }
            "nat" => {
                self.pos += 1;
                let k = self.keyword(&["overload", "off"])?;
                if k.v == "off" {
                    self.end_of_statement()?;
                    return Ok(Stmt::Nat {
                        on: false,
                        ports: None,
                        preserve: None,
                        host_ports: None,
                        pool: Vec::new(),
                    });
                }
                let (mut ports, mut preserve, mut host_ports, mut pool) = (None, None, None, Vec::new());
                while !self.at_eol() {
                    let o = self.keyword(&["ports", "preserve-port", "host-ports", "pool"])?;
                    match o.v.as_str() {
                        "pool" => {
                            let start = self.here();
                            while matches!(self.peek(), Some(Token { tok: Some(Tok::Addr | Tok::Cidr), .. })) {
                                if matches!(self.peek(), Some(Token { tok: Some(Tok::Cidr), .. })) {
                                    let span = self.here();
                                    let (a, len) = self.prefix()?;
                                    if len < 24 {
                                        self.error(
                                            span,
                                            format!("a pool of 2^{} addresses", 32 - len),
                                            "at most 256 addresses (/24)",
                                            None,
                                        );
                                        return Err(());
                                    }
                                    let mask = xgw_dataplane::config::prefix_mask(len);
                                    let lo = u32::from(a) & mask;
                                    pool.extend((lo..=(lo | !mask)).map(Ipv4Addr::from));
                                } else {
                                    pool.push(self.addr_token("a pool address")?.v);
                                }
                            }
                            if pool.is_empty() {
                                self.error(start, "an empty pool", "addresses or a prefix after `pool`", None);
                                return Err(());
                            }
                        }
                        "ports" => {
                            let r = self.range("a port range LOW-HIGH", 65535)?;
                            if r.v.0 == 0 {
                                self.error(
                                    r.span,
                                    "port 0 cannot be used for translations",
                                    "a range starting at 1 or above",
                                    None,
                                );
                                return Err(());
                            }
                            ports = Some((r.v.0 as u16, r.v.1 as u16));
                        }
                        "preserve-port" => preserve = Some(self.keyword(&["on", "off"])?.v == "on"),
                        _ => {
                            if self.eat("none") {
                                host_ports = Some(None);
                            } else {
                                let r = self.range("a port range LOW-HIGH or none", 65535)?;
                                host_ports = Some(Some((r.v.0 as u16, r.v.1 as u16)));
                            }
                        }
                    }
                }
                Ok(Stmt::Nat { on: true, ports, preserve, host_ports, pool })
            }
            "forward" => {
                self.pos += 1;
                let p = self.keyword(&["tcp", "udp"])?;
                let proto = if p.v == "tcp" { 6 } else { 17 };
                let outside_port = self.port()?;
                self.keyword(&["to"])?;
                let host = self.addr_token("the inside host's address")?.v;
                let inside_port = if self.at_eol() { outside_port } else { self.port()? };
                self.end_of_statement()?;
                Ok(Stmt::Forward { proto, outside_port, host, inside_port })
            }
            "inspect" => {
                self.pos += 1;
                let what = self.keyword(&["pptp", "ipsec"])?;
                let mut on = true;
                let mut interfaces = Vec::new();
                let mut options = Vec::new();
                while !self.at_eol() {
                    if self.eat("off") {
                        on = false;
                    } else if self.eat("on") {
                        on = true;
                    } else if self.eat("interface") {
                        interfaces.push(self.word("an interface name")?);
                    } else {
                        let opts: &[&str] = if what.v == "pptp" {
                            &[
                                "max-calls-per-session",
                                "max-calls-per-host",
                                "max-calls",
                                "on-invalid",
                                "grace",
                                "quarantine",
                            ]
                        } else {
                            &[]
                        };
                        let name = self.keyword(&[opts, &["on", "off", "interface"]].concat())?;
                        let t = self.next();
                        let Some(t) = t.filter(|t| t.tok != Some(Tok::Newline)) else {
                            self.pos = self.pos.saturating_sub(1);
                            return self.unexpected("a value", &[]).map(|_| Stmt::Include(unreachable_spanned()));
                        };
                        options.push((name, Spanned { v: self.text(&t).to_string(), span: t.span }));
                    }
                }
                Ok(Stmt::Inspect { what, on, interfaces, options })
            }
            "timeout" => {
                self.pos += 1;
                let name = self.keyword(TIMEOUT_NAMES)?;
                let d = self.duration()?;
                self.end_of_statement()?;
                Ok(Stmt::Timeout(name, d))
            }
            "limit" => {
                self.pos += 1;
                let name = self.keyword(LIMIT_NAMES)?;
                let n = self.number("a number", u64::from(u32::MAX))?;
                self.end_of_statement()?;
                Ok(Stmt::Limit(name, n))
            }
            "object-group" => {
                self.pos += 1;
                let kind = self.keyword(&["network", "service"])?;
                let kind = if kind.v == "network" { GroupKind::Network } else { GroupKind::Service };
                let name = self.word("a group name")?;
                match self.next() {
                    Some(Token { tok: Some(Tok::LBrace), .. }) => {}
                    _ => {
                        self.pos -= 1;
                        return self
                            .unexpected("`{` and the group's members", &[])
                            .map(|_| Stmt::Include(unreachable_spanned()));
                    }
                }
                let (mut nets, mut services) = (Vec::new(), Vec::new());
                loop {
                    match self.peek() {
                        Some(Token { tok: Some(Tok::Newline), .. }) => {
                            self.pos += 1;
                        }
                        Some(Token { tok: Some(Tok::RBrace), .. }) => {
                            self.pos += 1;
                            break;
                        }
                        None => {
                            self.error(name.span.clone(), format!("group `{}` is not closed", name.v), "`}`", None);
                            return Err(());
                        }
                        Some(_) => {
                            let start = self.here().start;
                            if kind == GroupKind::Network {
                                if self.eat("group") {
                                    let g = self.word("a network group name")?;
                                    nets.push(Spanned { span: start..g.span.end, v: AddrSpec::Group(g) });
                                } else {
                                    let a = self.addr_spec()?;
                                    if let AddrSpec::Group(g) = &a.v {
                                        nets.push(Spanned { v: AddrSpec::Group(g.clone()), span: a.span });
                                    } else {
                                        nets.push(a);
                                    }
                                }
                            } else if self.eat("group") {
                                let g = self.word("a service group name")?;
                                services.push(Spanned { span: start..g.span.end, v: ServiceItem::Group(g) });
                            } else {
                                let p = self.proto_spec()?;
                                let proto = match p.v {
                                    ProtoSpec::Any => None,
                                    ProtoSpec::Num(n) => Some(n),
                                    ProtoSpec::Group(g) => {
                                        services.push(Spanned { span: p.span, v: ServiceItem::Group(g) });
                                        continue;
                                    }
                                };
                                let ports =
                                    if matches!(proto, Some(6) | Some(17)) { self.ports()? } else { Vec::new() };
                                let icmp = if proto == Some(1) { self.icmp_spec()? } else { None };
                                let end = self.toks.get(self.pos.saturating_sub(1)).map_or(start, |t| t.span.end);
                                services
                                    .push(Spanned { span: start..end, v: ServiceItem::Proto { proto, ports, icmp } });
                            }
                        }
                    }
                }
                self.end_of_statement()?;
                Ok(Stmt::Group { kind, name, nets, services })
            }
            "access-list" => {
                self.pos += 1;
                let list = self.word("an access-list name")?;
                let start = self.here().start;
                self.eat("extended");
                let action = self.keyword(&["permit", "deny"])?;
                let proto = self.proto_spec()?;
                let ported = matches!(proto.v, ProtoSpec::Num(6) | ProtoSpec::Num(17));
                let src = self.addr_spec()?;
                let sport = if ported { self.ports()? } else { Vec::new() };
                let dst = self.addr_spec()?;
                let dport = if ported { self.ports()? } else { Vec::new() };
                let icmp = if proto.v == ProtoSpec::Num(1) { self.icmp_spec()? } else { None };
                let log = self.eat("log");
                if !self.at_eol() {
                    let choices: &[&str] = if ported { &["eq", "neq", "lt", "gt", "range", "log"] } else { &["log"] };
                    let exp = if ported {
                        "a port operator (eq, neq, lt, gt, range), `log` or the end of the line"
                    } else {
                        "`log` or the end of the line"
                    };
                    return self.unexpected(exp, choices).map(|_| Stmt::Include(unreachable_spanned()));
                }
                let end = self.toks.get(self.pos.saturating_sub(1)).map_or(start, |t| t.span.end);
                let text = self.toks[..self.pos]
                    .iter()
                    .filter(|t| t.span.start >= start && t.span.end <= end)
                    .map(|t| self.text(t))
                    .collect::<Vec<_>>()
                    .join(" ");
                Ok(Stmt::Rule {
                    list,
                    rule: RuleAst { permit: action.v == "permit", proto, src, sport, dst, dport, icmp, log, text },
                })
            }
            "access-group" => {
                self.pos += 1;
                let list = self.word("an access-list name")?;
                let dir = self.keyword(&["in", "out"])?;
                self.keyword(&["interface"])?;
                let iface = self.word("an interface name")?;
                self.end_of_statement()?;
                Ok(Stmt::Bind { list, inbound: dir.v == "in", iface })
            }
            other => {
                let span = self.here();
                let hint = did_you_mean(other, STATEMENTS.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                self.error(span, format!("unknown statement `{other}`"), &one_of(STATEMENTS), hint);
                Err(())
            }
        }
    }
}

/// Timeout names.
pub const TIMEOUT_NAMES: &[&str] = &[
    "tcp-syn-sent",
    "tcp-syn-recv",
    "tcp-established",
    "tcp-fin-wait",
    "tcp-close-wait",
    "tcp-last-ack",
    "tcp-time-wait",
    "tcp-close",
    "udp",
    "udp-stream",
    "icmp",
    "generic",
    "pptp-gre",
    "fragment",
];

/// Limit names.
pub const LIMIT_NAMES: &[&str] = &["connections", "per-host", "embryonic", "fragments"];

fn unreachable_spanned() -> Spanned<String> {
    Spanned { v: String::new(), span: 0..0 }
}

fn one_of(choices: &[&str]) -> String {
    match choices {
        [] => "nothing".into(),
        [one] => format!("`{one}`"),
        _ => {
            let (last, rest) = choices.split_last().unwrap_or((&"", &[]));
            format!("{} or `{last}`", rest.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "))
        }
    }
}

/// `2h4m` → 7440 s.
pub fn parse_duration(s: &str) -> std::time::Duration {
    let mut total = std::time::Duration::ZERO;
    let mut num = 0u64;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(d) = c.to_digit(10) {
            num = num.saturating_mul(10).saturating_add(u64::from(d));
            continue;
        }
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                std::time::Duration::from_millis(num)
            }
            's' => std::time::Duration::from_secs(num),
            'm' => std::time::Duration::from_secs(num.saturating_mul(60)),
            'h' => std::time::Duration::from_secs(num.saturating_mul(3600)),
            'd' => std::time::Duration::from_secs(num.saturating_mul(86_400)),
            _ => std::time::Duration::ZERO,
        };
        total = total.saturating_add(unit);
        num = 0;
    }
    total
}

/// Parses one file into statements, appending every error to `diags`.
pub fn parse_file(file: &SourceFile, diags: &mut Vec<Diagnostic>) -> Vec<Located> {
    let toks = lex(&file.text);
    let mut p = Parser { file, toks, pos: 0, diags };
    let mut out = Vec::new();
    while let Some(t) = p.peek() {
        if t.tok == Some(Tok::Newline) {
            p.pos += 1;
            continue;
        }
        if t.tok.is_none() {
            let span = t.span.clone();
            let s = p.text(&p.toks[p.pos]).to_string();
            p.error(span, format!("unexpected character `{s}`"), "a statement", None);
            p.skip_line();
            continue;
        }
        let start = t.span.start;
        let declared = declared_name(&p);
        match p.statement() {
            Ok(stmt) => {
                let end = p.toks.get(p.pos.saturating_sub(1)).map_or(start, |t| t.span.end);
                out.push(Located { stmt, span: start..end });
                p.skip_line();
            }
            Err(()) => {
                if let Some((kind, name)) = declared {
                    out.push(Located { stmt: Stmt::Broken(kind, name), span: start..start });
                }
                p.skip_line()
            }
        }
    }
    out
}

/// What the statement at the cursor defines, by kind and name, read ahead without moving.
fn declared_name(p: &Parser<'_>) -> Option<(&'static str, Spanned<String>)> {
    let word = |i: usize| match p.toks.get(p.pos + i) {
        Some(t @ Token { tok: Some(Tok::Word), .. }) => {
            Some(Spanned { v: p.text(t).to_string(), span: t.span.clone() })
        }
        _ => None,
    };
    match p.peek_word()? {
        "access-list" => word(1).map(|n| ("access-list", n)),
        "interface" => word(1).map(|n| ("interface", n)),
        "object-group" => word(2).map(|n| ("object-group", n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> (Vec<Located>, Vec<Diagnostic>) {
        let f = SourceFile::new("t.xgw", s);
        let mut d = Vec::new();
        let st = parse_file(&f, &mut d);
        (st, d)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2h4m"), std::time::Duration::from_secs(7440));
        assert_eq!(parse_duration("5d"), std::time::Duration::from_secs(432_000));
        assert_eq!(parse_duration("250ms"), std::time::Duration::from_millis(250));
    }

    #[test]
    fn a_rule_parses_completely() {
        let (st, d) = parse("access-list out extended permit tcp 10.0.0.0 255.255.255.0 any eq https log\n");
        assert!(d.is_empty(), "{d:?}");
        let Stmt::Rule { list, rule } = &st[0].stmt else { panic!("{st:?}") };
        assert_eq!(list.v, "out");
        assert!(rule.permit && rule.log);
        assert_eq!(rule.src.v, AddrSpec::Range(0x0a00_0000, 0x0a00_00ff));
        assert_eq!(rule.dport, vec![(443, 443)]);
        assert_eq!(rule.text, "extended permit tcp 10.0.0.0 255.255.255.0 any eq https log");
    }

    #[test]
    fn every_error_in_one_run() {
        let (_, d) = parse("intreface lan\naccess-list x permit tpc any any\ntimeout udp 30\n");
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!((d[0].line, d[1].line, d[2].line), (1, 2, 3));
        assert_eq!(d[0].hint.as_deref(), Some("did you mean `interface`?"));
    }
}
