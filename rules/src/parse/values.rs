//! Values inside statements: numbers, ports and ranges, addresses and prefixes,
//! protocols, ICMP types, durations.

use std::net::Ipv4Addr;

use crate::diag::did_you_mean;
use crate::lexer::{Tok, Token};

use super::*;

impl<'a> Parser<'a> {
    pub(super) fn number(&mut self, what: &str, max: u64) -> PResult<Spanned<u64>> {
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

    pub(super) fn port(&mut self) -> PResult<u16> {
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

    pub(super) fn range(&mut self, what: &str, max: u64) -> PResult<Spanned<(u64, u64)>> {
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

    pub(super) fn addr_token(&mut self, what: &str) -> PResult<Spanned<Ipv4Addr>> {
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
    pub(super) fn prefix(&mut self) -> PResult<(Ipv4Addr, u8)> {
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

    pub(super) fn addr_spec(&mut self) -> PResult<Spanned<AddrSpec>> {
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

    pub(super) fn ports(&mut self) -> PResult<Ports> {
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

    pub(super) fn proto_spec(&mut self) -> PResult<Spanned<ProtoSpec>> {
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

    pub(super) fn icmp_spec(&mut self) -> PResult<Option<IcmpSpec>> {
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

    pub(super) fn duration(&mut self) -> PResult<Spanned<std::time::Duration>> {
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
}
