//! Cisco spellings read as xgw's own statements: PIX 6's `fixup protocol pptp` and `no
//! fixup protocol pptp`, ASA's modular policy lines around `inspect pptp`, and `nat exempt`
//! (ASA's `nat (inside) 0`). Each accepted spelling leaves a note saying how it was read.

use crate::diag::did_you_mean;

use super::*;

/// Protocols PIX/ASA inspect that xgw does not: named in the refusal of their `fixup`.
const OTHER_FIXUPS: &[&str] = &[
    "dns", "ftp", "h323", "http", "ils", "mgcp", "rsh", "rtsp", "sip", "skinny", "smtp", "sqlnet", "tftp", "icmp",
    "esmtp", "ctiqbe", "netbios", "snmp", "xdmcp",
];

/// ASA modular-policy keywords accepted around `inspect` lines.
pub(super) const POLICY_WORDS: &[&str] = &["policy-map", "class-map", "class", "match", "service-policy"];

impl Parser<'_> {
    fn note(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::at(self.file, span, Severity::Note, msg));
    }

    /// `[no] fixup protocol pptp [1723]`; the cursor is on `fixup`.
    pub(super) fn fixup(&mut self, negated: bool, start: Range<usize>) -> PResult<Stmt> {
        self.pos += 1;
        self.keyword(&["protocol"])?;
        let proto = self.word("a protocol (pptp)")?;
        if proto.v != "pptp" {
            let known = OTHER_FIXUPS.contains(&proto.v.as_str());
            let hint = if known {
                "xgw inspects pptp (and ipsec, `inspect ipsec`); its other traffic passes without an \
                 application gateway: delete the line"
                    .to_string()
            } else {
                did_you_mean(&proto.v, ["pptp"])
                    .map_or_else(|| "xgw inspects pptp and ipsec".to_string(), |s| format!("did you mean `{s}`?"))
            };
            self.error(proto.span, format!("xgw has no `{}` inspection", proto.v), "`pptp`", Some(hint));
            return Err(());
        }
        if !self.at_eol() {
            let port = self.number("the port 1723", 65535)?;
            if port.v != 1723 {
                self.error(
                    port.span,
                    format!("PPTP on port {}", port.v),
                    "1723",
                    Some("xgw inspects PPTP control connections on TCP 1723".into()),
                );
                return Err(());
            }
        }
        self.end_of_statement()?;
        let end = proto.span.end;
        let read_as = if negated { "inspect pptp off" } else { "inspect pptp" };
        self.note(start.start..end, format!("PIX `fixup protocol pptp` read as `{read_as}`"));
        Ok(Stmt::Inspect {
            what: Spanned { v: "pptp".into(), span: proto.span },
            on: !negated,
            interfaces: Vec::new(),
            options: Vec::new(),
        })
    }

    /// A modular-policy line (`policy-map global_policy`, ` class inspection_default`, …):
    /// the whole line is kept for the note.
    pub(super) fn cisco_policy(&mut self) -> PResult<Stmt> {
        let start = self.here();
        let mut end = start.end;
        while !self.at_eol() {
            if let Some(t) = self.next() {
                end = t.span.end;
            }
        }
        let text = self.file.text.get(start.start..end).unwrap_or("").to_string();
        self.note(
            start.start..end,
            "ASA modular policy line accepted; the `inspect` lines in it apply to every interface \
             (or those `interface` names)",
        );
        Ok(Stmt::CiscoPolicy(Spanned { v: text, span: start.start..end }))
    }

    /// `nat exempt SRC DST` or `nat exempt access-list NAME`; the cursor is after `exempt`.
    pub(super) fn nat_exempt(&mut self) -> PResult<Stmt> {
        if self.eat("access-list") {
            let name = self.word("an access-list name")?;
            self.end_of_statement()?;
            return Ok(Stmt::NatExemptList(name));
        }
        let src = self.addr_spec()?;
        let dst = self.addr_spec()?;
        self.end_of_statement()?;
        Ok(Stmt::NatExempt { src, dst })
    }
}
