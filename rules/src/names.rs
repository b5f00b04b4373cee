//! The names the rules language knows: statements, ports, protocols, ICMP types,
//! timeouts and limits.

pub const STATEMENTS: &[&str] = &[
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

/// Protocol names: the engine's one table (conntrack listings print the same names).
pub const PROTO_NAMES: &[(&str, u8)] = xgw_dataplane::wire::proto::NAMES;

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
