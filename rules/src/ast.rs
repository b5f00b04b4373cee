//! The rules language's syntax tree: statements as the parser produces them, with the
//! byte spans diagnostics point at.

use std::net::Ipv4Addr;
use std::ops::Range;

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

/// An option of `inspect pptp`, its value checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectOption {
    /// `max-calls-per-session N` (1–255).
    MaxCallsPerSession(u64),
    /// `max-calls-per-host N` (1–65535).
    MaxCallsPerHost(u64),
    /// `max-calls N` (1–1048576).
    MaxCalls(u64),
    /// `on-invalid drop|log|reset`.
    OnInvalid(xgw_dataplane::config::InvalidPolicy),
    /// `grace DURATION`.
    Grace(std::time::Duration),
    /// `quarantine DURATION`.
    Quarantine(std::time::Duration),
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
    /// `nat overload [ports LO-HI] [preserve-port on|off] [host-ports LO-HI|none]
    /// [pool ADDR...] [block-size N [blocks-per-host M] [block-hold DURATION]
    /// [deterministic]]` / `nat off`
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
        /// Port blocks.
        blocks: Option<xgw_dataplane::config::BlockConfig>,
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
    /// `nat exempt SRC DST`: flows from SRC to DST (and from DST to SRC) are routed
    /// untranslated — ASA's NAT exemption / identity NAT.
    NatExempt {
        /// Inside side.
        src: Spanned<AddrSpec>,
        /// Far side.
        dst: Spanned<AddrSpec>,
    },
    /// `nat exempt access-list NAME`: the list's rules, first match, say which flows are
    /// exempt (`permit`) or not (`deny`); only their addresses count (ASA `nat (if) 0
    /// access-list NAME`).
    NatExemptList(Spanned<String>),
    /// A line of an ASA modular policy (`policy-map`, `class`, `class-map`, `match
    /// default-inspection-traffic`, `service-policy`): accepted, with a note, so that a
    /// pasted inspection block reads as its `inspect` lines.
    CiscoPolicy(Spanned<String>),
    /// `inspect pptp|ipsec [on|off] [interface NAME...] [OPTION VALUE...]`
    Inspect {
        /// `pptp` or `ipsec`.
        what: Spanned<String>,
        /// Enabled?
        on: bool,
        /// Interfaces (empty: all).
        interfaces: Vec<Spanned<String>>,
        /// Options, checked when parsed.
        options: Vec<Spanned<InspectOption>>,
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
