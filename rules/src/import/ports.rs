//! PIX/ASA's names for ports, protocols and ICMP types, as numbers (xgw's own names differ
//! in places, e.g. radius, so the importer always writes numbers for ports).

/// ASA's port names (TCP and UDP), from the ASA command reference.
const PORTS: &[(&str, u16)] = &[
    ("aol", 5190),
    ("bgp", 179),
    ("biff", 512),
    ("bootpc", 68),
    ("bootps", 67),
    ("chargen", 19),
    ("citrix-ica", 1494),
    ("cmd", 514),
    ("ctiqbe", 2748),
    ("daytime", 13),
    ("discard", 9),
    ("domain", 53),
    ("echo", 7),
    ("exec", 512),
    ("finger", 79),
    ("ftp", 21),
    ("ftp-data", 20),
    ("gopher", 70),
    ("h323", 1720),
    ("hostname", 101),
    ("http", 80),
    ("https", 443),
    ("ident", 113),
    ("imap4", 143),
    ("irc", 194),
    ("isakmp", 500),
    ("kerberos", 88),
    ("klogin", 543),
    ("kshell", 544),
    ("ldap", 389),
    ("ldaps", 636),
    ("login", 513),
    ("lotusnotes", 1352),
    ("lpd", 515),
    ("netbios-dgm", 138),
    ("netbios-ns", 137),
    ("netbios-ssn", 139),
    ("nfs", 2049),
    ("nntp", 119),
    ("ntp", 123),
    ("pcanywhere-data", 5631),
    ("pcanywhere-status", 5632),
    ("pim-auto-rp", 496),
    ("pop2", 109),
    ("pop3", 110),
    ("pptp", 1723),
    ("radius", 1645),
    ("radius-acct", 1646),
    ("rip", 520),
    ("rsh", 514),
    ("rtsp", 554),
    ("secureid-udp", 5510),
    ("sip", 5060),
    ("smtp", 25),
    ("snmp", 161),
    ("snmptrap", 162),
    ("sqlnet", 1521),
    ("ssh", 22),
    ("sunrpc", 111),
    ("syslog", 514),
    ("tacacs", 49),
    ("talk", 517),
    ("telnet", 23),
    ("tftp", 69),
    ("time", 37),
    ("uucp", 540),
    ("who", 513),
    ("whois", 43),
    ("www", 80),
    ("xdmcp", 177),
];

/// ASA's IP protocol names that xgw does not spell the same way.
const PROTOS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipinip", 4),
    ("tcp", 6),
    ("igrp", 9),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmp6", 58),
    ("eigrp", 88),
    ("ospf", 89),
    ("nos", 94),
    ("pim", 103),
    ("pcp", 108),
    ("snp", 109),
    ("sctp", 132),
];

/// ICMP type names ASA accepts beyond the ones xgw knows by the same name
/// (`names::ICMP_NAMES`, looked up first).
const ICMP_ASA_ONLY: &[(&str, u8)] = &[
    ("alternate-address", 6),
    ("information-request", 15),
    ("information-reply", 16),
    ("mask-request", 17),
    ("mask-reply", 18),
    ("traceroute", 30),
    ("conversion-error", 31),
    ("mobile-redirect", 32),
];

/// A port by ASA name or number.
pub(super) fn port(w: &str) -> Option<u16> {
    w.parse().ok().or_else(|| PORTS.iter().find(|(n, _)| *n == w).map(|(_, p)| *p))
}

/// An IP protocol by ASA name or number, as xgw writes it: its name where xgw has one.
pub(super) fn proto(w: &str) -> Option<String> {
    let n: u8 = w.parse().ok().or_else(|| PROTOS.iter().find(|(n, _)| *n == w).map(|(_, p)| *p))?;
    let name = xgw_dataplane::wire::proto::name(n);
    Some(name)
}

/// An ICMP type by ASA name or number, as xgw writes it: xgw's name where it has one.
pub(super) fn icmp_type(w: &str) -> Option<String> {
    let xgw = crate::names::ICMP_NAMES;
    if xgw.iter().any(|(n, _)| *n == w) {
        return Some(w.to_string());
    }
    let n: u8 = w.parse().ok().or_else(|| ICMP_ASA_ONLY.iter().find(|(n, _)| *n == w).map(|(_, p)| *p))?;
    Some(xgw.iter().find(|(_, v)| *v == n).map_or_else(|| n.to_string(), |(name, _)| (*name).to_string()))
}
