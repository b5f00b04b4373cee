//! `nat exempt`: address pairs and access lists resolved into the engine's first-match
//! exemption table (ASA's `nat (inside) 0 access-list NAME`).

use std::collections::HashMap;

use xgw_dataplane::config::Exemption;

use super::{addr_ranges, Ctx, Group};
use crate::ast::{ProtoSpec, RuleAst, Spanned, Stmt};
use crate::diag::did_you_mean;

/// More entries than this make a first-match scan per new flow too slow: refuse them.
const MAX_EXEMPTIONS: usize = 4096;

/// The exemption table, and the access lists it names (they need no binding).
pub(super) fn resolve(
    cx: &mut Ctx<'_>,
    exempts: &[(usize, Stmt)],
    rules: &[(String, usize, RuleAst, std::ops::Range<usize>)],
    groups: &HashMap<String, Group>,
    nets: &HashMap<String, Vec<(u32, u32)>>,
    broken: &[(&'static str, String)],
) -> (Vec<Exemption>, Vec<String>) {
    let mut out = Vec::new();
    let mut lists = Vec::new();
    let pairs = |out: &mut Vec<Exemption>, exempt: bool, s: &[(u32, u32)], d: &[(u32, u32)]| {
        for &inside in s {
            for &far in d {
                out.push(Exemption { exempt, inside, far });
            }
        }
    };
    for (fi, st) in exempts {
        match st {
            Stmt::NatExempt { src, dst } => {
                let s = addr_ranges(cx, *fi, src, groups, nets);
                let d = addr_ranges(cx, *fi, dst, groups, nets);
                pairs(&mut out, true, &s, &d);
            }
            Stmt::NatExemptList(name) => {
                let mine: Vec<_> = rules.iter().filter(|(l, ..)| *l == name.v).collect();
                if mine.is_empty() {
                    unknown_list(cx, *fi, name, rules, broken);
                    continue;
                }
                lists.push(name.v.clone());
                for (_, rfi, r, span) in mine {
                    if r.proto.v != ProtoSpec::Any || !r.sport.is_empty() || !r.dport.is_empty() {
                        cx.warn(
                            *rfi,
                            span.clone(),
                            format!("only the addresses of this rule count for `nat exempt access-list {}`", name.v),
                        )
                        .hint = Some("NAT exemption is by address pair, as on ASA: write `permit ip SRC DST`".into());
                    }
                    let s = addr_ranges(cx, *rfi, &r.src, groups, nets);
                    let d = addr_ranges(cx, *rfi, &r.dst, groups, nets);
                    pairs(&mut out, r.permit, &s, &d);
                }
            }
            _ => {}
        }
        if out.len() > MAX_EXEMPTIONS {
            let span = match st {
                Stmt::NatExempt { src, .. } => src.span.clone(),
                Stmt::NatExemptList(n) => n.span.clone(),
                _ => 0..0,
            };
            cx.err(*fi, span, format!("NAT exemption expands to more than {MAX_EXEMPTIONS} address pairs")).expected =
                Some("fewer pairs: use prefixes rather than many hosts".into());
            break;
        }
    }
    (out, lists)
}

fn unknown_list(
    cx: &mut Ctx<'_>,
    fi: usize,
    name: &Spanned<String>,
    rules: &[(String, usize, RuleAst, std::ops::Range<usize>)],
    broken: &[(&'static str, String)],
) {
    if broken.iter().any(|(k, n)| *k == "access-list" && *n == name.v) {
        return;
    }
    let names: Vec<&str> = rules.iter().map(|(l, ..)| l.as_str()).collect();
    let h = did_you_mean(&name.v, names.iter().copied()).map(|s| format!("did you mean `{s}`?"));
    let d = cx.err(fi, name.span.clone(), format!("unknown access-list `{}`", name.v));
    d.expected = Some("the name of an access-list defined in the file".into());
    d.hint = h;
}
