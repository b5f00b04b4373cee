//! Statements of the rules language, parsed from tokens with every error collected.
//!
//! One statement per line; `object-group` bodies are braced and may span lines. After an
//! error the parser skips to the next line, so one run reports every mistake.

use std::ops::Range;

use crate::diag::{did_you_mean, Diagnostic, Severity, SourceFile};
use crate::lexer::{lex, Tok, Token};

mod cisco;
mod inspect;
mod statement;
mod values;

use crate::ast::*;
use crate::names::*;

pub(super) struct Parser<'a> {
    file: &'a SourceFile,
    toks: Vec<Token>,
    pos: usize,
    diags: &'a mut Vec<Diagnostic>,
}

pub(super) type PResult<T> = Result<T, ()>;
impl<'a> Parser<'a> {
    pub(super) fn text(&self, t: &Token) -> &'a str {
        self.file.text.get(t.span.clone()).unwrap_or("")
    }

    pub(super) fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    pub(super) fn peek_word(&self) -> Option<&'a str> {
        match self.peek() {
            Some(t @ Token { tok: Some(Tok::Word), .. }) => Some(self.text(t)),
            _ => None,
        }
    }

    pub(super) fn at_eol(&self) -> bool {
        matches!(self.peek(), None | Some(Token { tok: Some(Tok::Newline), .. }))
    }

    /// Where a missing token would have stood: the next token, or the end of the line.
    pub(super) fn here(&self) -> Range<usize> {
        match self.peek() {
            Some(t) if t.tok != Some(Tok::Newline) => t.span.clone(),
            Some(t) => t.span.start..t.span.start,
            None => self.file.text.len()..self.file.text.len(),
        }
    }

    pub(super) fn error(&mut self, span: Range<usize>, msg: impl Into<String>, expected: &str, hint: Option<String>) {
        let mut d = Diagnostic::at(self.file, span, Severity::Error, msg).expected(expected);
        if let Some(h) = hint {
            d = d.hint(h);
        }
        self.diags.push(d);
    }

    /// Reports what stands at the cursor (or that the line ended) where `expected` should be.
    pub(super) fn unexpected(&mut self, expected: &str, choices: &[&str]) -> PResult<()> {
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

    pub(super) fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    pub(super) fn word(&mut self, expected: &str) -> PResult<Spanned<String>> {
        match self.peek_word() {
            Some(w) => {
                let span = self.toks[self.pos].span.clone();
                self.pos += 1;
                Ok(Spanned { v: w.to_string(), span })
            }
            None => self.unexpected(expected, &[]).map(|_| unreachable_spanned()),
        }
    }

    pub(super) fn keyword(&mut self, choices: &[&str]) -> PResult<Spanned<String>> {
        let expected = one_of(choices);
        match self.peek_word() {
            Some(w) if choices.contains(&w) => self.word(&expected),
            _ => self.unexpected(&expected, choices).map(|_| unreachable_spanned()),
        }
    }

    pub(super) fn eat(&mut self, kw: &str) -> bool {
        if self.peek_word() == Some(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn end_of_statement(&mut self) -> PResult<()> {
        if self.at_eol() {
            Ok(())
        } else {
            self.unexpected("the end of the line", &[])
        }
    }

    pub(super) fn skip_line(&mut self) {
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
}

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
