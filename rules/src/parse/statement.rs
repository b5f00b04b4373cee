//! One statement: the keyword, then its own grammar.

use std::net::Ipv4Addr;

use xgw_dataplane::config::BlockConfig;

use crate::diag::did_you_mean;
use crate::lexer::{Tok, Token};

use super::*;

impl<'a> Parser<'a> {
    pub(super) fn statement(&mut self) -> PResult<Stmt> {
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
                let k = self.keyword(&["overload", "off", "exempt"])?;
                if k.v == "exempt" {
                    return self.nat_exempt();
                }
                if k.v == "off" {
                    self.end_of_statement()?;
                    return Ok(Stmt::Nat {
                        on: false,
                        ports: None,
                        preserve: None,
                        host_ports: None,
                        pool: Vec::new(),
                        blocks: None,
                    });
                }
                let (mut ports, mut preserve, mut host_ports, mut pool) = (None, None, None, Vec::new());
                let (mut blocks, mut block_opts) = (None::<BlockConfig>, Vec::new());
                while !self.at_eol() {
                    let o = self.keyword(&[
                        "ports",
                        "preserve-port",
                        "host-ports",
                        "pool",
                        "block-size",
                        "blocks-per-host",
                        "block-hold",
                        "deterministic",
                    ])?;
                    match o.v.as_str() {
                        "block-size" => {
                            let n = self.number("ports per block", 65535)?;
                            if n.v == 0 {
                                self.error(n.span, "a block of no ports", "a block size of 1 or more", None);
                                return Err(());
                            }
                            blocks = Some(BlockConfig::new(n.v as u16));
                        }
                        "blocks-per-host" => {
                            let max = u64::from(BlockConfig::MAX_PER_HOST);
                            let n = self.number("blocks a host may hold", max)?;
                            if n.v == 0 {
                                self.error(n.span, "no blocks per host", &format!("1 to {max}"), None);
                                return Err(());
                            }
                            block_opts.push((o.span, BlockOpt::PerHost(n.v as u16)));
                        }
                        "block-hold" => {
                            let d = self.duration()?;
                            block_opts.push((o.span, BlockOpt::Hold(d.v)));
                        }
                        "deterministic" => block_opts.push((o.span, BlockOpt::Deterministic)),
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
                for (span, opt) in block_opts {
                    let Some(b) = blocks.as_mut() else {
                        self.error(span, "a port-block option without `block-size`", "`block-size N` first", None);
                        return Err(());
                    };
                    match opt {
                        BlockOpt::PerHost(n) => b.per_host = n,
                        BlockOpt::Hold(d) => b.hold = d,
                        BlockOpt::Deterministic => b.deterministic = true,
                    }
                }
                Ok(Stmt::Nat { on: true, ports, preserve, host_ports, pool, blocks })
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
                        options.push(self.inspect_option(&name)?);
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
            "fixup" => {
                let start = self.here();
                self.fixup(false, start)
            }
            "no" => {
                let start = self.here();
                self.pos += 1;
                if self.peek_word() != Some("fixup") {
                    return self
                        .unexpected("`fixup` (`no fixup protocol pptp`)", &["fixup"])
                        .map(|_| Stmt::Include(unreachable_spanned()));
                }
                self.fixup(true, start)
            }
            w if cisco::POLICY_WORDS.contains(&w) => self.cisco_policy(),
            other => {
                let span = self.here();
                let hint = did_you_mean(other, STATEMENTS.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                self.error(span, format!("unknown statement `{other}`"), &one_of(STATEMENTS), hint);
                Err(())
            }
        }
    }
}

/// A port-block option, applied once `block-size` is known (it may come later).
enum BlockOpt {
    PerHost(u16),
    Hold(std::time::Duration),
    Deterministic,
}
