//! Compiled access lists: an immutable first-match matcher with per-rule hit counters.
//!
//! Each rule expands into atoms (the cartesian product of its groups' members), kept in
//! rule order. A list is partitioned by protocol; in each partition two interval indexes —
//! on destination address and on destination port — map a value to the atoms whose range
//! covers it, with atoms that are wildcards on that field kept apart. A lookup takes
//! whichever index yields fewer candidates and walks them in rule order; the first atom
//! that matches every field decides. Because any matching atom is among the candidates of
//! every field, the first match among the candidates is the first match of the list.
//! Cost: a binary search per field and the candidates of the more selective field —
//! rather than every rule — which keeps late matches in large lists cheap (`rules/match_10k`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use xgw_dataplane::policy::{Decision, NewFlow, Policy};

/// One expanded piece of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Atom {
    /// Index of the rule in [`Acl::rules`].
    pub rule: u32,
    /// Protocol (None: any).
    pub proto: Option<u8>,
    /// Source address range.
    pub src: (u32, u32),
    /// Destination address range.
    pub dst: (u32, u32),
    /// Source port range.
    pub sport: (u16, u16),
    /// Destination port range.
    pub dport: (u16, u16),
    /// ICMP type and code filter.
    pub icmp: Option<(u8, Option<u8>)>,
}

impl Atom {
    /// True when the flow's first packet lies in every range of the atom.
    pub fn matches(&self, p: &NewFlow) -> bool {
        let within = |v: u32, (lo, hi): (u32, u32)| lo <= v && v <= hi;
        let within16 = |v: u16, (lo, hi): (u16, u16)| lo <= v && v <= hi;
        self.proto.is_none_or(|x| x == p.proto)
            && within(p.src, self.src)
            && within(p.dst, self.dst)
            && within16(p.sport, self.sport)
            && within16(p.dport, self.dport)
            && match (self.icmp, p.icmp) {
                (None, _) => true,
                (Some((t, c)), Some((pt, pc))) => t == pt && c.is_none_or(|c| c == pc),
                (Some(_), None) => false,
            }
    }

    /// True when every packet this atom matches, `other` matches too.
    pub fn covered_by(&self, other: &Atom) -> bool {
        let inside = |(a, b): (u32, u32), (c, d): (u32, u32)| c <= a && b <= d;
        let inside16 = |(a, b): (u16, u16), (c, d): (u16, u16)| c <= a && b <= d;
        (other.proto.is_none() || other.proto == self.proto)
            && inside(self.src, other.src)
            && inside(self.dst, other.dst)
            && inside16(self.sport, other.sport)
            && inside16(self.dport, other.dport)
            && match (other.icmp, self.icmp) {
                (None, _) => true,
                (Some((t, c)), Some((st, sc))) => t == st && (c.is_none() || c == sc),
                (Some(_), None) => false,
            }
    }
}

/// One interval index over a 32-bit field.
#[derive(Debug, Default, Clone)]
struct FieldIndex {
    /// Sorted starts of the elementary intervals (the first is 0).
    starts: Vec<u32>,
    /// Per interval: the non-wildcard atoms covering it, ascending.
    lists: Vec<Vec<u32>>,
    /// Atoms that are wildcards on this field, ascending.
    any: Vec<u32>,
}

impl FieldIndex {
    fn build(atoms: &[(u32, Atom)], range: impl Fn(&Atom) -> (u32, u32), full: (u32, u32)) -> FieldIndex {
        let mut starts = vec![0u32];
        for (_, a) in atoms {
            let (lo, hi) = range(a);
            if (lo, hi) == full {
                continue;
            }
            starts.push(lo);
            if hi < full.1 {
                starts.push(hi + 1);
            }
        }
        starts.sort_unstable();
        starts.dedup();
        let mut lists = vec![Vec::new(); starts.len()];
        let mut any = Vec::new();
        for (i, a) in atoms {
            let (lo, hi) = range(a);
            if (lo, hi) == full {
                any.push(*i);
                continue;
            }
            let first = starts.partition_point(|&s| s < lo);
            for (j, s) in starts.iter().enumerate().skip(first) {
                if *s > hi {
                    break;
                }
                lists[j].push(*i);
            }
        }
        FieldIndex { starts, lists, any }
    }

    fn candidates(&self, v: u32) -> (&[u32], &[u32]) {
        let i = self.starts.partition_point(|&s| s <= v).saturating_sub(1);
        (self.lists.get(i).map_or(&[][..], Vec::as_slice), &self.any)
    }
}

#[derive(Debug, Default, Clone)]
struct Part {
    dst: FieldIndex,
    dport: FieldIndex,
}

impl Part {
    fn build(atoms: &[Atom], keep: impl Fn(&Atom) -> bool) -> Part {
        let sel: Vec<(u32, Atom)> =
            atoms.iter().enumerate().filter(|(_, a)| keep(a)).map(|(i, a)| (i as u32, *a)).collect();
        Part {
            dst: FieldIndex::build(&sel, |a| a.dst, (0, u32::MAX)),
            dport: FieldIndex::build(&sel, |a| (u32::from(a.dport.0), u32::from(a.dport.1)), (0, 65535)),
        }
    }
}

/// One compiled list.
#[derive(Debug, Clone)]
pub struct List {
    /// Name.
    pub name: String,
    /// Atoms in rule order.
    pub atoms: Vec<Atom>,
    parts: HashMap<u8, Part>,
    rest: Part,
}

impl List {
    /// Compiles a list from its atoms (in rule order).
    pub fn new(name: String, atoms: Vec<Atom>) -> List {
        let mut protos: Vec<u8> = atoms.iter().filter_map(|a| a.proto).collect();
        protos.sort_unstable();
        protos.dedup();
        let parts = protos.iter().map(|&p| (p, Part::build(&atoms, |a| a.proto.is_none_or(|x| x == p)))).collect();
        let rest = Part::build(&atoms, |a| a.proto.is_none());
        List { name, atoms, parts, rest }
    }

    /// The first atom matching `p`.
    pub fn first_match(&self, p: &NewFlow) -> Option<&Atom> {
        let part = self.parts.get(&p.proto).unwrap_or(&self.rest);
        let a = part.dst.candidates(p.dst);
        let b = part.dport.candidates(u32::from(p.dport));
        let (x, y) = if a.0.len() + a.1.len() <= b.0.len() + b.1.len() { a } else { b };
        // walk both ascending lists merged: rule order
        let (mut i, mut j) = (0, 0);
        loop {
            let next = match (x.get(i), y.get(j)) {
                (Some(&u), Some(&v)) if u <= v => {
                    i += 1;
                    u
                }
                (_, Some(&v)) => {
                    j += 1;
                    v
                }
                (Some(&u), None) => {
                    i += 1;
                    u
                }
                (None, None) => return None,
            };
            let atom = &self.atoms[next as usize];
            if atom.matches(p) {
                return Some(atom);
            }
        }
    }

    /// The first match by walking every atom (reference for tests).
    pub fn first_match_linear(&self, p: &NewFlow) -> Option<&Atom> {
        self.atoms.iter().find(|a| a.matches(p))
    }
}

/// A rule as listed (`xgwctl rules show`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleInfo {
    /// Stable id: a hash of the list name, the rule's text and its occurrence, so it does not
    /// change when other rules are added or removed.
    pub id: u32,
    /// List name.
    pub list: String,
    /// Permit?
    pub permit: bool,
    /// Log matches?
    pub log: bool,
    /// The rule as written (normalised).
    pub text: String,
    /// Where it is written.
    pub file: String,
    /// Line.
    pub line: usize,
}

/// The access policy: lists, their bindings to interfaces, hit counters.
#[derive(Debug)]
pub struct Acl {
    /// Every rule, in file order.
    pub rules: Vec<RuleInfo>,
    /// Compiled lists.
    pub lists: Vec<List>,
    /// Per interface: the list bound `in` (index into `lists`).
    pub bind_in: Vec<Option<usize>>,
    /// Per interface: the list bound `out`.
    pub bind_out: Vec<Option<usize>>,
    hits: Vec<AtomicU64>,
    implicit_denies: AtomicU64,
}

/// The rule id reported for a packet that matched no rule of a bound list.
pub const IMPLICIT_DENY: u32 = 0;

impl Acl {
    /// An access policy.
    pub fn new(
        rules: Vec<RuleInfo>,
        lists: Vec<List>,
        bind_in: Vec<Option<usize>>,
        bind_out: Vec<Option<usize>>,
    ) -> Acl {
        let hits = rules.iter().map(|_| AtomicU64::new(0)).collect();
        Acl { rules, lists, bind_in, bind_out, hits, implicit_denies: AtomicU64::new(0) }
    }

    /// Hits of rule `i` (index into `rules`).
    pub fn hits(&self, i: usize) -> u64 {
        self.hits.get(i).map_or(0, |h| h.load(Ordering::Relaxed))
    }

    /// Packets refused by the implicit deny at the end of a bound list.
    pub fn implicit_denies(&self) -> u64 {
        self.implicit_denies.load(Ordering::Relaxed)
    }

    /// Evaluates one list: `Ok(rule index)` when a permit matched, `Err(Some(i))` for a
    /// deny rule, `Err(None)` for the implicit deny.
    fn eval(&self, list: usize, p: &NewFlow) -> Result<usize, Option<usize>> {
        match self.lists[list].first_match(p) {
            Some(a) => {
                let i = a.rule as usize;
                if let Some(h) = self.hits.get(i) {
                    h.fetch_add(1, Ordering::Relaxed);
                }
                let r = &self.rules[i];
                if r.log {
                    // `log`: every flow the rule decides (rules are checked once per flow)
                    tracing::info!(
                        rule = r.id,
                        list = %r.list,
                        action = if r.permit { "permit" } else { "deny" },
                        proto = p.proto,
                        src = %std::net::Ipv4Addr::from(p.src),
                        sport = p.sport,
                        dst = %std::net::Ipv4Addr::from(p.dst),
                        dport = p.dport,
                        "access-list match"
                    );
                }
                if self.rules[i].permit {
                    Ok(i)
                } else {
                    Err(Some(i))
                }
            }
            None => {
                self.implicit_denies.fetch_add(1, Ordering::Relaxed);
                Err(None)
            }
        }
    }
}

impl Policy for Acl {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn list_of(&self, rule: u32) -> Option<String> {
        self.rules.iter().find(|r| r.id == rule).map(|r| r.list.clone())
    }

    /// Decides without counting hits (what-if evaluation for reloads).
    fn would_permit(&self, f: &NewFlow) -> bool {
        let ok = |b: Option<&Option<usize>>| match b.copied().flatten() {
            Some(l) => self.lists[l].first_match(f).is_some_and(|a| self.rules[a.rule as usize].permit),
            None => true,
        };
        ok(self.bind_in.get(usize::from(f.ingress.0)))
            && f.egress.is_none_or(|e| ok(self.bind_out.get(usize::from(e.0))))
    }

    fn check(&self, f: &NewFlow) -> Decision {
        let mut rule = 0;
        for (binds, iface) in [(&self.bind_in, Some(f.ingress)), (&self.bind_out, f.egress)] {
            let Some(list) = iface.and_then(|i| binds.get(usize::from(i.0)).copied().flatten()) else { continue };
            match self.eval(list, f) {
                Ok(i) => rule = self.rules[i].id,
                Err(Some(i)) => return Decision::Deny { rule: self.rules[i].id },
                Err(None) => return Decision::Deny { rule: IMPLICIT_DENY },
            }
        }
        Decision::Permit { rule }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xgw_dataplane::IfaceId;

    fn atom(rule: u32, proto: Option<u8>, dst: (u32, u32), dport: (u16, u16)) -> Atom {
        Atom { rule, proto, src: (0, u32::MAX), dst, sport: (0, 65535), dport, icmp: None }
    }

    proptest! {
        #[test]
        fn indexed_first_match_equals_linear(
            rules in proptest::collection::vec((proptest::option::of(prop_oneof![Just(6u8), Just(17), Just(1)]), 0u32..64, 0u32..64, 0u16..50, 0u16..50, any::<bool>()), 1..80),
            probes in proptest::collection::vec((prop_oneof![Just(6u8), Just(17), Just(1), Just(47)], 0u32..70, 0u16..60), 1..40),
        ) {
            let atoms: Vec<Atom> = rules.iter().enumerate().map(|(i, &(proto, a, b, c, d, wild))| {
                let dst = if wild { (0, u32::MAX) } else { (a.min(b), a.max(b)) };
                atom(i as u32, proto, dst, (c.min(d), c.max(d)))
            }).collect();
            let l = List::new("t".into(), atoms);
            for (proto, dst, dport) in probes {
                let p = NewFlow { ingress: IfaceId(0), proto, src: 1, dst, sport: 9, dport, icmp: None, egress: None };
                prop_assert_eq!(l.first_match(&p), l.first_match_linear(&p));
            }
        }
    }

    #[test]
    fn coverage() {
        let wide = atom(0, None, (0, 100), (0, 65535));
        let narrow = atom(1, Some(6), (10, 20), (80, 80));
        assert!(narrow.covered_by(&wide));
        assert!(!wide.covered_by(&narrow));
    }
}
