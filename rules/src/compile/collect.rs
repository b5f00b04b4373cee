//! The first pass: every statement, in reading order, into the configuration it sets and
//! the lists, groups and bindings the later passes resolve. Duplicates are reported here.

use std::collections::HashMap;
use std::time::Duration;

use xgw_dataplane::config::{IfaceConfig, PortForward, Role};
use xgw_dataplane::EngineConfig;

use super::{Ctx, Group};
use crate::ast::{InspectOption, Located, RoleAst, Spanned, Stmt};

/// What the statements said, before references are resolved.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) engine: EngineConfig,
    /// (name, file, span) of every interface
    pub(super) ifaces: Vec<(String, usize, std::ops::Range<usize>)>,
    pub(super) groups: HashMap<String, Group>,
    /// (list, file, rule, span)
    pub(super) rules: Vec<(String, usize, crate::ast::RuleAst, std::ops::Range<usize>)>,
    /// (file, list, inbound, interface)
    pub(super) binds: Vec<(usize, Spanned<String>, bool, Spanned<String>)>,
    pub(super) forwards: Vec<(usize, std::ops::Range<usize>, PortForward)>,
    pub(super) pptp_ifaces: Vec<(usize, Spanned<String>)>,
    seen_timeouts: HashMap<String, (usize, usize)>,
    pub(super) nat_span: Option<(usize, std::ops::Range<usize>)>,
    /// Where port blocks were asked for.
    pub(super) blocks_span: Option<(usize, std::ops::Range<usize>)>,
    /// (file, statement) of every `nat exempt`, in order
    pub(super) exempts: Vec<(usize, Stmt)>,
    /// names declared by statements that had errors: defined, but nothing else is said of them
    pub(super) broken: Vec<(&'static str, String)>,
}

impl Collected {
    /// Takes in one statement of file `fi`.
    pub(super) fn statement(&mut self, cx: &mut Ctx<'_>, fi: usize, Located { stmt, span }: Located) {
        match stmt {
            Stmt::Include(_) | Stmt::CiscoPolicy(_) => {}
            st @ (Stmt::NatExempt { .. } | Stmt::NatExemptList(_)) => self.exempts.push((fi, st)),
            Stmt::Broken(kind, name) => self.broken.push((kind, name.v)),
            Stmt::Interface { name, device, role, addr, addr_span } => {
                if let Some((_, f0, s0)) = self.ifaces.iter().find(|(n, _, _)| *n == name.v) {
                    let first = cx.location(*f0, s0.start);
                    cx.err(fi, name.span.clone(), format!("interface `{}` is defined twice", name.v)).hint =
                        Some(format!("first defined at {first}"));
                    return;
                }
                if let Some(prev) = self.engine.ifaces.iter().find(|i| i.device == device.v) {
                    let msg = format!("device `{}` is already interface `{}`", device.v, prev.name);
                    cx.err(fi, device.span.clone(), msg);
                    return;
                }
                let role = match role {
                    RoleAst::Inside => Role::Inside,
                    RoleAst::Outside => Role::Outside,
                };
                if role == Role::Outside && self.engine.ifaces.iter().any(|i| i.role == Role::Outside) {
                    cx.err(fi, name.span.clone(), "a second outside interface").hint =
                        Some("xgw translates onto one outside interface; give this one `role inside`".into());
                    return;
                }
                if addr.is_none() && role == Role::Inside {
                    cx.err(fi, addr_span, "`address auto` on an inside interface").hint = Some(
                        "only the outside address may follow the kernel (DHCP, PPP); give the inside one A/LEN".into(),
                    );
                }
                let (a, len) = addr.unwrap_or((std::net::Ipv4Addr::UNSPECIFIED, 0));
                self.engine.ifaces.push(IfaceConfig {
                    name: name.v.clone(),
                    device: device.v,
                    role,
                    addr: a,
                    prefix_len: len,
                    auto_addr: addr.is_none(),
                });
                self.ifaces.push((name.v, fi, name.span));
            }
            Stmt::Nat { on, ports, preserve, host_ports, pool, blocks } => {
                self.engine.nat.enabled = on;
                if blocks.is_some() {
                    self.engine.nat.blocks = blocks;
                    self.blocks_span = Some((fi, span.clone()));
                }
                if !pool.is_empty() {
                    self.engine.nat.pool = pool;
                    self.nat_span = Some((fi, span.clone()));
                }
                if let Some(p) = ports {
                    self.engine.nat.port_range = p;
                }
                if let Some(p) = preserve {
                    self.engine.nat.preserve_port = p;
                }
                if let Some(h) = host_ports {
                    self.engine.nat.host_ports = h;
                }
            }
            Stmt::Forward { proto, outside_port, host, inside_port } => {
                if let Some((f0, s0, _)) =
                    self.forwards.iter().find(|(_, _, f)| f.proto == proto && f.outside_port == outside_port)
                {
                    let first = cx.location(*f0, s0.start);
                    let p = if proto == 6 { "tcp" } else { "udp" };
                    cx.err(fi, span.clone(), format!("{p} port {outside_port} is forwarded twice")).hint =
                        Some(format!("first forwarded at {first}"));
                    return;
                }
                self.forwards.push((fi, span, PortForward { proto, outside_port, inside_addr: host, inside_port }));
            }
            Stmt::Inspect { what, on, interfaces, options } => {
                if what.v == "ipsec" {
                    self.engine.esp_by_spi = on;
                    return;
                }
                self.engine.pptp.enabled = on;
                self.pptp_ifaces.extend(interfaces.into_iter().map(|i| (fi, i)));
                let p = &mut self.engine.pptp;
                for o in options {
                    match o.v {
                        InspectOption::MaxCallsPerSession(n) => p.max_calls_per_session = n as usize,
                        InspectOption::MaxCallsPerHost(n) => p.max_calls_per_host = n as usize,
                        InspectOption::MaxCalls(n) => p.max_calls_total = n as usize,
                        InspectOption::OnInvalid(policy) => p.on_invalid = policy,
                        InspectOption::Grace(d) => p.teardown_grace = d,
                        InspectOption::Quarantine(d) => p.id_quarantine = d,
                    }
                }
            }
            Stmt::Timeout(name, d) => {
                if let Some(&(f0, at)) = self.seen_timeouts.get(&name.v) {
                    let first = cx.location(f0, at);
                    cx.warn(fi, name.span.clone(), format!("timeout `{}` is set again; this value wins", name.v))
                        .hint = Some(format!("also set at {first}"));
                }
                self.seen_timeouts.insert(name.v.clone(), (fi, name.span.start));
                if d.v.is_zero() {
                    cx.err(fi, d.span.clone(), "a timeout of zero").expected = Some("a duration above zero".into());
                    return;
                }
                let t = &mut self.engine.timeouts;
                let min = match name.v.as_str() {
                    "tcp-established" => Some((Duration::from_secs(7440), "RFC 5382 asks for at least 2h4m")),
                    "udp" | "udp-stream" => Some((Duration::from_secs(120), "RFC 4787 asks for at least 2m")),
                    "icmp" => Some((Duration::from_secs(60), "RFC 5508 asks for at least 60s")),
                    _ => None,
                };
                if let Some((m, why)) = min {
                    if d.v < m {
                        cx.warn(
                            fi,
                            d.span.clone(),
                            format!("timeout `{}` is shorter than the standard's minimum", name.v),
                        )
                        .hint = Some(why.into());
                    }
                }
                let slot = match name.v.as_str() {
                    "tcp-syn-sent" => &mut t.tcp_syn_sent,
                    "tcp-syn-recv" => &mut t.tcp_syn_recv,
                    "tcp-established" => &mut t.tcp_established,
                    "tcp-fin-wait" => &mut t.tcp_fin_wait,
                    "tcp-close-wait" => &mut t.tcp_close_wait,
                    "tcp-last-ack" => &mut t.tcp_last_ack,
                    "tcp-time-wait" => &mut t.tcp_time_wait,
                    "tcp-close" => &mut t.tcp_close,
                    "udp" => &mut t.udp_unreplied,
                    "udp-stream" => &mut t.udp_stream,
                    "icmp" => &mut t.icmp,
                    "generic" => &mut t.generic,
                    "pptp-gre" => &mut t.pptp_gre,
                    _ => &mut t.fragment,
                };
                *slot = d.v;
            }
            Stmt::Limit(name, n) => {
                if n.v == 0 {
                    cx.err(fi, n.span.clone(), "a limit of zero").expected = Some("a number above zero".into());
                    return;
                }
                match name.v.as_str() {
                    "connections" => self.engine.limits.max_flows = n.v as usize,
                    "per-host" => self.engine.limits.per_host = Some(n.v as u32),
                    "embryonic" => self.engine.limits.embryonic = Some(n.v as u32),
                    _ => self.engine.limits.max_fragments = n.v as usize,
                }
            }
            Stmt::Group { kind, name, nets, services } => {
                if let Some(g) = self.groups.get(&name.v) {
                    let first = cx.location(g.file, g.span.start);
                    cx.err(fi, name.span.clone(), format!("object-group `{}` is defined twice", name.v)).hint =
                        Some(format!("first defined at {first}"));
                    return;
                }
                self.groups.insert(name.v.clone(), Group { kind, file: fi, span: name.span.clone(), nets, services });
            }
            Stmt::Rule { list, rule } => self.rules.push((list.v, fi, rule, span)),
            Stmt::Bind { list, inbound, iface } => self.binds.push((fi, list, inbound, iface)),
        }
    }
}
