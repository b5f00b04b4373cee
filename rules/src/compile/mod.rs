//! From statements to the engine's configuration and the access policy, with every
//! reference resolved and every problem reported.

use std::collections::HashMap;

use xgw_dataplane::config::Role;
use xgw_dataplane::{EngineConfig, IfaceId};

use crate::acl::{Acl, Atom, List, RuleInfo};
use crate::ast::{AddrSpec, GroupKind, Located, Ports, ProtoSpec, ServiceItem, Spanned, Stmt};
use crate::diag::{did_you_mean, Diagnostic, Severity, SourceFile};
use crate::parse::parse_file;

mod collect;
mod exempt;

/// A compiled rules file.
#[derive(Debug)]
pub struct Compiled {
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// The access policy.
    pub acl: Acl,
    /// Warnings (the file was accepted).
    pub warnings: Vec<Diagnostic>,
    /// Every file read, the root first.
    pub files: Vec<String>,
}

/// Reads an included file by path; the error text is reported at the `include`.
pub type Loader<'a> = &'a dyn Fn(&str) -> Result<String, String>;

const MAX_INCLUDE_DEPTH: usize = 16;
const MAX_ATOMS_PER_RULE: usize = 65_536;

struct Ctx<'a> {
    broken_groups: Vec<String>,
    files: Vec<SourceFile>,
    diags: Vec<Diagnostic>,
    loader: Loader<'a>,
}

impl Ctx<'_> {
    fn err(&mut self, file: usize, span: std::ops::Range<usize>, msg: impl Into<String>) -> &mut Diagnostic {
        let d = Diagnostic::at(&self.files[file], span, Severity::Error, msg);
        self.diags.push(d);
        let n = self.diags.len() - 1;
        &mut self.diags[n]
    }

    fn warn(&mut self, file: usize, span: std::ops::Range<usize>, msg: impl Into<String>) -> &mut Diagnostic {
        let d = Diagnostic::at(&self.files[file], span, Severity::Warning, msg);
        self.diags.push(d);
        let n = self.diags.len() - 1;
        &mut self.diags[n]
    }

    fn location(&self, file: usize, at: usize) -> String {
        let (l, c) = self.files[file].position(at);
        format!("{}:{l}:{c}", self.files[file].name)
    }

    /// Parses `name` and, depth first, every file it includes, in order.
    fn load(&mut self, name: &str, text: String, stack: &mut Vec<String>, out: &mut Vec<(usize, Located)>) {
        let idx = self.files.len();
        self.files.push(SourceFile::new(name, text));
        let stmts = {
            let file = self.files[idx].clone();
            parse_file(&file, &mut self.diags)
        };
        stack.push(name.to_string());
        for st in stmts {
            if let Stmt::Include(path) = &st.stmt {
                let full = resolve(name, &path.v);
                if stack.contains(&full) {
                    self.err(idx, path.span.clone(), format!("`{}` includes itself", path.v)).expected =
                        Some("a file not already being read".into());
                    continue;
                }
                if stack.len() >= MAX_INCLUDE_DEPTH {
                    self.err(idx, path.span.clone(), "includes nested too deeply").expected =
                        Some(format!("at most {MAX_INCLUDE_DEPTH} levels"));
                    continue;
                }
                match (self.loader)(&full) {
                    Ok(text) => self.load(&full, text, stack, out),
                    Err(e) => {
                        self.err(idx, path.span.clone(), format!("cannot read `{full}`: {e}")).expected =
                            Some("a readable file".into());
                    }
                }
            } else {
                out.push((idx, st));
            }
        }
        stack.pop();
    }
}

/// `dir/of/including` + `included`, unless `included` is absolute.
fn resolve(including: &str, included: &str) -> String {
    if included.starts_with('/') {
        return included.to_string();
    }
    match including.rfind('/') {
        Some(i) => format!("{}/{}", &including[..i], included),
        None => included.to_string(),
    }
}

#[derive(Debug, Clone)]
struct Service {
    proto: Option<u8>,
    dport: Ports,
    icmp: Option<(u8, Option<u8>)>,
}

struct Group {
    kind: GroupKind,
    file: usize,
    span: std::ops::Range<usize>,
    nets: Vec<Spanned<AddrSpec>>,
    services: Vec<Spanned<ServiceItem>>,
}

fn full_ports(p: &Ports) -> Vec<(u16, u16)> {
    if p.is_empty() {
        vec![(0, u16::MAX)]
    } else {
        p.clone()
    }
}

/// Compiles the rules file `name` (its text is `text`); included files are read with
/// `loader`. All errors are returned together; warnings travel with the result.
pub fn compile(name: &str, text: &str, loader: Loader<'_>) -> Result<Compiled, Vec<Diagnostic>> {
    let mut cx = Ctx { broken_groups: Vec::new(), files: Vec::new(), diags: Vec::new(), loader };
    let mut stmts = Vec::new();
    cx.load(name, text.to_string(), &mut Vec::new(), &mut stmts);

    let mut c = collect::Collected::default();
    for (fi, located) in stmts {
        c.statement(&mut cx, fi, located);
    }
    let collect::Collected {
        mut engine,
        ifaces,
        groups,
        rules,
        binds,
        forwards,
        pptp_ifaces,
        nat_span,
        blocks_span,
        broken,
        exempts,
        ..
    } = c;

    // interfaces
    let broken_iface = broken.iter().any(|(k, _)| *k == "interface");
    if !broken_iface && !engine.ifaces.iter().any(|i| i.role == Role::Outside) && !cx.files.is_empty() {
        cx.err(0, 0..0, "no interface has `role outside`").hint =
            Some("add e.g. `interface wan device eth0 role outside address 203.0.113.1/24`".into());
    }
    if !broken_iface && !engine.ifaces.iter().any(|i| i.role == Role::Inside) && !cx.files.is_empty() {
        cx.err(0, 0..0, "no interface has `role inside`").hint =
            Some("add e.g. `interface lan device eth1 role inside address 10.0.0.1/24`".into());
    }
    let iface_names: Vec<String> = ifaces.iter().map(|(n, _, _)| n.clone()).collect();
    let broken_names: Vec<String> = broken.iter().map(|(_, n)| n.clone()).collect();
    let find_iface = |cx: &mut Ctx<'_>, fi: usize, n: &Spanned<String>| -> Option<usize> {
        let i = iface_names.iter().position(|x| *x == n.v);
        if i.is_none() && !broken_names.contains(&n.v) {
            let h = did_you_mean(&n.v, iface_names.iter().map(String::as_str)).map(|s| format!("did you mean `{s}`?"));
            let d = cx.err(fi, n.span.clone(), format!("unknown interface `{}`", n.v));
            d.expected = Some(format!("one of the interfaces defined: {}", iface_names.join(", ")));
            d.hint = h;
        }
        i
    };
    let mut pptp_on: Vec<IfaceId> = Vec::new();
    for (fi, n) in &pptp_ifaces {
        if let Some(i) = find_iface(&mut cx, *fi, n) {
            pptp_on.push(IfaceId(i as u8));
        }
    }
    engine.pptp.interfaces = (!pptp_on.is_empty()).then_some(pptp_on);

    // a NAT pool sits on the outside subnet (xgwd holds those addresses on the outside
    // device, so the kernel answers ARP for them), or is routed to this gateway by the
    // upstream (a static route, or BGP announcing it: README "Scaling out")
    if let (Some((fi, span)), Some((_, o))) = (&nat_span, engine.outside()) {
        if o.auto_addr {
            cx.err(*fi, span.clone(), "a NAT pool with `address auto` on the outside").hint =
                Some("a pool must sit on a known outside subnet: give the outside interface A/LEN".into());
        } else if let Some(a) = engine.nat.pool.iter().find(|a| !o.contains(u32::from(**a))) {
            let msg = format!("pool address {a} is not on the outside subnet {}/{}", o.addr, o.prefix_len);
            cx.warn(*fi, span.clone(), msg).hint =
                Some(format!("the upstream router must route it to this gateway ({}), e.g. by BGP", o.addr));
        }
    }
    // forwards
    for (fi, span, f) in &forwards {
        let host = u32::from(f.inside_addr);
        if !engine.ifaces.iter().any(|i| i.role == Role::Inside && i.contains(host)) {
            cx.err(*fi, span.clone(), format!("forward target {} is on no inside interface", f.inside_addr)).hint =
                Some("the host must be in the subnet of an inside interface".into());
        }
        engine.forwards.push(*f);
    }

    cx.broken_groups = broken.iter().filter(|(k, _)| *k == "object-group").map(|(_, n)| n.clone()).collect();
    // groups: resolve every reference, detect cycles
    let names: Vec<String> = groups.keys().cloned().collect();
    let mut nets: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
    let mut svcs: HashMap<String, Vec<Service>> = HashMap::new();
    let mut sorted_names = names.clone();
    sorted_names.sort();
    for n in &sorted_names {
        let mut stack = Vec::new();
        expand(&mut cx, &groups, n, &mut stack, &mut nets, &mut svcs);
    }

    let (exemptions, exempt_lists) = exempt::resolve(&mut cx, &exempts, &rules, &groups, &nets, &broken);
    engine.nat.exempt = exemptions;

    // access lists, in file order
    let mut list_order: Vec<String> = Vec::new();
    let mut atoms_by_list: HashMap<String, Vec<Atom>> = HashMap::new();
    let mut infos: Vec<RuleInfo> = Vec::new();
    let mut occurrences: HashMap<(String, String), u32> = HashMap::new();
    let mut rule_loc: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    for (list, fi, r, span) in &rules {
        if !list_order.contains(list) {
            list_order.push(list.clone());
        }
        let occ = occurrences.entry((list.clone(), r.text.clone())).or_insert(0);
        *occ += 1;
        let id = stable_id(list, &r.text, *occ);
        let idx = infos.len() as u32;
        let (line, _) = cx.files[*fi].position(span.start);
        infos.push(RuleInfo {
            id,
            list: list.clone(),
            permit: r.permit,
            log: r.log,
            text: r.text.clone(),
            file: cx.files[*fi].name.clone(),
            line,
        });
        rule_loc.push((*fi, span.clone()));
        let srcs = addr_ranges(&mut cx, *fi, &r.src, &groups, &nets);
        let dsts = addr_ranges(&mut cx, *fi, &r.dst, &groups, &nets);
        let services: Vec<(Service, Ports)> = match &r.proto.v {
            ProtoSpec::Any => vec![(Service { proto: None, dport: r.dport.clone(), icmp: None }, r.sport.clone())],
            ProtoSpec::Num(p) => vec![(
                Service { proto: Some(*p), dport: r.dport.clone(), icmp: r.icmp.map(|i| (i.typ, i.code)) },
                r.sport.clone(),
            )],
            ProtoSpec::Group(g) => match groups.get(&g.v) {
                Some(gr) if gr.kind == GroupKind::Service => {
                    svcs.get(&g.v).cloned().unwrap_or_default().into_iter().map(|s| (s, Vec::new())).collect()
                }
                Some(_) => {
                    cx.err(*fi, g.span.clone(), format!("`{}` is a network group, not a service group", g.v))
                        .expected = Some("an object-group service".into());
                    Vec::new()
                }
                None => {
                    unknown_group(&mut cx, *fi, g, &groups, GroupKind::Service);
                    Vec::new()
                }
            },
        };
        let count = srcs.len().saturating_mul(dsts.len()).saturating_mul(
            services.iter().map(|(s, sp)| full_ports(&s.dport).len() * full_ports(sp).len()).sum::<usize>(),
        );
        if count > MAX_ATOMS_PER_RULE {
            cx.err(*fi, span.clone(), format!("this rule expands to {count} combinations")).expected =
                Some(format!("at most {MAX_ATOMS_PER_RULE}; split the groups"));
            continue;
        }
        let out = atoms_by_list.entry(list.clone()).or_default();
        for (svc, sport) in &services {
            for &s in &srcs {
                for &d in &dsts {
                    for &sp in &full_ports(sport) {
                        for &dp in &full_ports(&svc.dport) {
                            out.push(Atom {
                                rule: idx,
                                proto: svc.proto,
                                src: s,
                                dst: d,
                                sport: sp,
                                dport: dp,
                                icmp: svc.icmp,
                            });
                        }
                    }
                }
            }
        }
    }

    // shadowed rules: every atom covered by an earlier rule's atom in the same list
    for l in &list_order {
        let atoms = &atoms_by_list[l];
        if atoms.len() > 20_000 {
            continue; // quadratic check skipped for very large lists
        }
        let mut by_rule: Vec<(u32, Vec<&Atom>)> = Vec::new();
        for a in atoms {
            match by_rule.last_mut() {
                Some((r, v)) if *r == a.rule => v.push(a),
                _ => by_rule.push((a.rule, vec![a])),
            }
        }
        for (k, (rule, mine)) in by_rule.iter().enumerate() {
            let shadow =
                by_rule[..k].iter().find(|(_, earlier)| mine.iter().all(|m| earlier.iter().any(|e| m.covered_by(e))));
            if let Some((er, _)) = shadow {
                let (fi, span) = rule_loc[*rule as usize].clone();
                let (efi, espan) = rule_loc[*er as usize].clone();
                let first = cx.location(efi, espan.start);
                cx.warn(fi, span, "this rule can never match").hint =
                    Some(format!("every packet it names is matched first by the rule at {first}"));
            }
        }
    }

    // bindings
    let mut bind_in = vec![None; engine.ifaces.len()];
    let mut bind_out = vec![None; engine.ifaces.len()];
    for (fi, list, inbound, iface) in &binds {
        let li = list_order.iter().position(|l| *l == list.v);
        if li.is_none() && !broken.iter().any(|(k, n)| *k == "access-list" && *n == list.v) {
            let h =
                did_you_mean(&list.v, list_order.iter().map(String::as_str)).map(|s| format!("did you mean `{s}`?"));
            let d = cx.err(*fi, list.span.clone(), format!("unknown access-list `{}`", list.v));
            d.expected = Some("the name of an access-list defined in the file".into());
            d.hint = h;
        }
        let ii = find_iface(&mut cx, *fi, iface);
        if let (Some(li), Some(ii)) = (li, ii) {
            let slot = if *inbound { &mut bind_in[ii] } else { &mut bind_out[ii] };
            if slot.is_some() {
                cx.err(
                    *fi,
                    iface.span.clone(),
                    format!(
                        "interface `{}` already has an access-list bound {}",
                        iface.v,
                        if *inbound { "in" } else { "out" }
                    ),
                );
            }
            *slot = Some(li);
        }
    }
    for (k, l) in list_order.iter().enumerate() {
        let named = binds.iter().any(|(_, bl, _, _)| bl.v == *l) || exempt_lists.contains(l);
        if !named && !bind_in.contains(&Some(k)) && !bind_out.contains(&Some(k)) {
            if let Some((_, fi, _, span)) = rules.iter().find(|(n, ..)| n == l) {
                cx.warn(*fi, span.clone(), format!("access-list `{l}` is not bound to any interface")).hint =
                    Some(format!("bind it with `access-group {l} in interface NAME`"));
            }
        }
    }

    // port blocks must fit the range, the quota and (deterministic) the inside subnets
    if let (Some((fi, span)), Some(b)) = (&blocks_span, engine.nat.blocks) {
        if let Err(e) = xgw_dataplane::nat::blocks::validate(&engine, &b) {
            cx.err(*fi, span.clone(), e).hint = Some(
                "a smaller block-size or blocks-per-host, a wider `ports` range, fewer reserved `host-ports`, or more pool addresses"
                    .into(),
            );
        }
    }

    if let Err(e) = engine.validate() {
        if cx.diags.iter().all(|d| d.severity != Severity::Error) {
            cx.err(0, 0..0, e);
        }
    }

    // report in reading order: files as they were read, then line and column
    let order: Vec<String> = cx.files.iter().map(|f| f.name.clone()).collect();
    cx.diags.sort_by_key(|d| (order.iter().position(|n| *n == d.file), d.line, d.col));
    if cx.diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(cx.diags);
    }
    let warnings = cx.diags;
    let lists = list_order.iter().map(|l| List::new(l.clone(), atoms_by_list.remove(l).unwrap_or_default())).collect();
    Ok(Compiled {
        engine,
        acl: Acl::new(infos, lists, bind_in, bind_out),
        warnings,
        files: cx.files.iter().map(|f| f.name.clone()).collect(),
    })
}

/// FNV-1a of the list name, the rule text and its occurrence; never 0 (the implicit deny).
fn stable_id(list: &str, text: &str, occurrence: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in list.bytes().chain([0]).chain(text.bytes()).chain([0]).chain(occurrence.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    if h == 0 {
        1
    } else {
        h
    }
}

fn unknown_group(cx: &mut Ctx<'_>, fi: usize, g: &Spanned<String>, groups: &HashMap<String, Group>, kind: GroupKind) {
    if cx.broken_groups.contains(&g.v) {
        return;
    }
    let mut same: Vec<&str> = groups.iter().filter(|(_, gr)| gr.kind == kind).map(|(n, _)| n.as_str()).collect();
    same.sort_unstable();
    let h = did_you_mean(&g.v, same.iter().copied()).map(|s| format!("did you mean `{s}`?"));
    let k = if kind == GroupKind::Network { "network" } else { "service" };
    let d = cx.err(fi, g.span.clone(), format!("unknown {k} group `{}`", g.v));
    d.expected = Some(format!("an object-group {k} defined in the file"));
    d.hint = h;
}

fn addr_ranges(
    cx: &mut Ctx<'_>,
    fi: usize,
    a: &Spanned<AddrSpec>,
    groups: &HashMap<String, Group>,
    nets: &HashMap<String, Vec<(u32, u32)>>,
) -> Vec<(u32, u32)> {
    match &a.v {
        AddrSpec::Any => vec![(0, u32::MAX)],
        AddrSpec::Range(lo, hi) => vec![(*lo, *hi)],
        AddrSpec::Group(g) => match groups.get(&g.v) {
            Some(gr) if gr.kind == GroupKind::Network => nets.get(&g.v).cloned().unwrap_or_default(),
            Some(_) => {
                cx.err(fi, g.span.clone(), format!("`{}` is a service group, not a network group", g.v)).expected =
                    Some("an object-group network".into());
                Vec::new()
            }
            None => {
                unknown_group(cx, fi, g, groups, GroupKind::Network);
                Vec::new()
            }
        },
    }
}

/// Flattens group `name` into `nets` / `svcs`, reporting unknown members and cycles.
fn expand(
    cx: &mut Ctx<'_>,
    groups: &HashMap<String, Group>,
    name: &str,
    stack: &mut Vec<String>,
    nets: &mut HashMap<String, Vec<(u32, u32)>>,
    svcs: &mut HashMap<String, Vec<Service>>,
) {
    if nets.contains_key(name) || svcs.contains_key(name) {
        return;
    }
    let Some(g) = groups.get(name) else { return };
    stack.push(name.to_string());
    if g.kind == GroupKind::Network {
        let mut out = Vec::new();
        for m in &g.nets {
            match &m.v {
                AddrSpec::Any => out.push((0, u32::MAX)),
                AddrSpec::Range(lo, hi) => out.push((*lo, *hi)),
                AddrSpec::Group(inner) => {
                    if stack.contains(&inner.v) {
                        cx.err(g.file, inner.span.clone(), format!("object-group `{}` contains itself", inner.v))
                            .expected = Some("a group that does not lead back here".into());
                        continue;
                    }
                    match groups.get(&inner.v) {
                        Some(ig) if ig.kind == GroupKind::Network => {
                            expand(cx, groups, &inner.v, stack, nets, svcs);
                            out.extend(nets.get(&inner.v).cloned().unwrap_or_default());
                        }
                        Some(_) => {
                            cx.err(
                                g.file,
                                inner.span.clone(),
                                format!("`{}` is a service group inside a network group", inner.v),
                            );
                        }
                        None => unknown_group(cx, g.file, inner, groups, GroupKind::Network),
                    }
                }
            }
        }
        nets.insert(name.to_string(), out);
    } else {
        let mut out = Vec::new();
        for m in &g.services {
            match &m.v {
                ServiceItem::Proto { proto, ports, icmp } => {
                    out.push(Service { proto: *proto, dport: ports.clone(), icmp: icmp.map(|i| (i.typ, i.code)) })
                }
                ServiceItem::Group(inner) => {
                    if stack.contains(&inner.v) {
                        cx.err(g.file, inner.span.clone(), format!("object-group `{}` contains itself", inner.v))
                            .expected = Some("a group that does not lead back here".into());
                        continue;
                    }
                    match groups.get(&inner.v) {
                        Some(ig) if ig.kind == GroupKind::Service => {
                            expand(cx, groups, &inner.v, stack, nets, svcs);
                            out.extend(svcs.get(&inner.v).cloned().unwrap_or_default());
                        }
                        Some(_) => {
                            cx.err(
                                g.file,
                                inner.span.clone(),
                                format!("`{}` is a network group inside a service group", inner.v),
                            );
                        }
                        None => unknown_group(cx, g.file, inner, groups, GroupKind::Service),
                    }
                }
            }
        }
        svcs.insert(name.to_string(), out);
    }
    stack.pop();
}
