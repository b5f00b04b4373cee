//! The engine's configuration: interfaces and their roles, PAT, static forwards,
//! timeouts and limits. The rules compiler produces it; tests build it directly.

use core::time::Duration;
use std::net::Ipv4Addr;

/// Index of an interface in [`EngineConfig::ifaces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct IfaceId(pub u8);

/// What side of the gateway an interface is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Role {
    /// The protected LAN; its hosts are translated on the way out.
    Inside,
    /// The internet side; carries the shared outside address.
    Outside,
}

/// One interface.
#[derive(Debug, Clone)]
pub struct IfaceConfig {
    /// Name the policy uses (e.g. `lan`).
    pub name: String,
    /// Kernel device (e.g. `eth1`).
    pub device: String,
    /// Inside or outside.
    pub role: Role,
    /// The gateway's own address on it.
    pub addr: Ipv4Addr,
    /// Prefix length of the attached subnet.
    pub prefix_len: u8,
    /// The address follows the kernel's (`address auto`, outside only): `addr` and
    /// `prefix_len` are 0 in the configuration, and [`crate::Shared`] holds the current one.
    pub auto_addr: bool,
}

impl IfaceConfig {
    /// True when `a` is inside this interface's subnet.
    pub fn contains(&self, a: u32) -> bool {
        if self.auto_addr {
            return false;
        }
        let mask = prefix_mask(self.prefix_len);
        a & mask == u32::from(self.addr) & mask
    }

    /// The subnet: its first address and how many it holds.
    pub fn subnet(&self) -> (u32, u32) {
        let mask = prefix_mask(self.prefix_len);
        (u32::from(self.addr) & mask, (!mask).saturating_add(1).max(1))
    }

    /// The subnet's directed broadcast address.
    pub fn broadcast(&self) -> u32 {
        u32::from(self.addr) | !prefix_mask(self.prefix_len)
    }
}

/// The broadcast address of `addr`/`len`, or 0 when the subnet has none (/31, /32, no
/// address).
pub fn broadcast_of(addr: u32, len: u8) -> u32 {
    if addr == 0 || len >= 31 {
        0
    } else {
        addr | !prefix_mask(len)
    }
}

/// Netmask of a prefix length.
pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// Port address translation settings.
#[derive(Debug, Clone)]
pub struct NatConfig {
    /// Translate inside hosts onto the outside address (PAT). Off = route only.
    pub enabled: bool,
    /// Ports (and ICMP ids) allocated when the original one is taken, inclusive.
    pub port_range: (u16, u16),
    /// Keep the inside source port when it is free.
    pub preserve_port: bool,
    /// How many candidate ports to try before refusing a new translation.
    pub max_probes: u32,
    /// Ports never used for translations: the gateway host's own ephemeral range
    /// (`net.ipv4.ip_local_port_range`), so its own connections never collide with a
    /// translation. `None` reserves nothing.
    pub host_ports: Option<(u16, u16)>,
    /// Addresses to translate onto instead of the outside interface's own (a pool on the
    /// outside subnet). Each inside host is paired with one of them.
    pub pool: Vec<Ipv4Addr>,
    /// NAT exemption (ASA `nat (inside) 0`): the first entry whose inside and far address
    /// ranges hold a flow's ends decides whether it is routed untranslated.
    pub exempt: Vec<Exemption>,
    /// Port blocks: each inside host's translations stay inside blocks of ports it holds
    /// (`None`: ports are chosen from the whole range, per flow).
    pub blocks: Option<BlockConfig>,
}

/// Port-block allocation (RFC 7422 style): `nat overload ... block-size N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConfig {
    /// Ports in a block.
    pub size: u16,
    /// Blocks a host may hold at once.
    pub per_host: u16,
    /// How long a block stays with its host after its last flow ended.
    pub hold: Duration,
    /// Each host's blocks are a function of its address (RFC 7422 deterministic mapping):
    /// it holds all `per_host` of them from the start and nothing needs logging.
    pub deterministic: bool,
}

impl BlockConfig {
    /// The most blocks a host may hold.
    pub const MAX_PER_HOST: u16 = 32;

    /// 8 blocks of 512 ports per host, held 2 minutes after their last flow.
    pub fn new(size: u16) -> BlockConfig {
        BlockConfig { size, per_host: 8, hold: Duration::from_secs(120), deterministic: false }
    }
}

/// One NAT exemption entry: inclusive address ranges of the inside and the far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exemption {
    /// Exempt (`permit`) or not (`deny`).
    pub exempt: bool,
    /// Inside end.
    pub inside: (u32, u32),
    /// Far end.
    pub far: (u32, u32),
}

impl NatConfig {
    /// Is a flow between inside host `inside` and far host `far` routed untranslated?
    #[inline]
    pub fn is_exempt(&self, inside: u32, far: u32) -> bool {
        let within = |(lo, hi): (u32, u32), a: u32| lo <= a && a <= hi;
        self.exempt.iter().find(|e| within(e.inside, inside) && within(e.far, far)).is_some_and(|e| e.exempt)
    }
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            enabled: true,
            port_range: (1024, 65535),
            preserve_port: true,
            max_probes: 4096,
            host_ports: Some((32768, 60999)),
            pool: Vec::new(),
            exempt: Vec::new(),
            blocks: None,
        }
    }
}

/// A static port forward: outside address:port → inside host:port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    /// TCP or UDP.
    pub proto: u8,
    /// Port on the outside address.
    pub outside_port: u16,
    /// Inside host.
    pub inside_addr: Ipv4Addr,
    /// Port on the inside host.
    pub inside_port: u16,
}

/// Idle timeouts (RFC 4787 / 5382 / 5508 minimums or longer by default).
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// TCP SYN_SENT.
    pub tcp_syn_sent: Duration,
    /// TCP SYN_RECV.
    pub tcp_syn_recv: Duration,
    /// TCP ESTABLISHED (RFC 5382: at least 2 h 4 min).
    pub tcp_established: Duration,
    /// TCP FIN_WAIT.
    pub tcp_fin_wait: Duration,
    /// TCP CLOSE_WAIT.
    pub tcp_close_wait: Duration,
    /// TCP LAST_ACK.
    pub tcp_last_ack: Duration,
    /// TCP TIME_WAIT.
    pub tcp_time_wait: Duration,
    /// TCP CLOSE (after RST).
    pub tcp_close: Duration,
    /// UDP seen in one direction only (RFC 4787: at least 2 min).
    pub udp_unreplied: Duration,
    /// UDP seen both ways.
    pub udp_stream: Duration,
    /// ICMP queries (RFC 5508: at least 60 s).
    pub icmp: Duration,
    /// Other protocols (GRE v0, ESP, ...).
    pub generic: Duration,
    /// A PPTP call's GRE flow (pinhole before its first packet, and idle).
    pub pptp_gre: Duration,
    /// How long the later fragments of a datagram are expected.
    pub fragment: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(432_000),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp_unreplied: s(120),
            udp_stream: s(180),
            icmp: s(60),
            generic: s(600),
            pptp_gre: s(300),
            fragment: s(30),
        }
    }
}

/// Table sizes and rate limits, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connection table capacity.
    pub max_flows: usize,
    /// Fragment table capacity.
    pub max_fragments: usize,
    /// Connection-event ring size (for `watch`); overflow is counted.
    pub event_ring: usize,
    /// ICMP errors the engine may generate per second (token bucket).
    pub icmp_rate: u32,
    /// ICMP error burst.
    pub icmp_burst: u32,
    /// Connections one inside host may have at once.
    pub per_host: Option<u32>,
    /// Half-open TCP connections one inside host may have at once.
    pub embryonic: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: 262_144,
            max_fragments: 8192,
            event_ring: 16_384,
            icmp_rate: 1000,
            icmp_burst: 100,
            per_host: None,
            embryonic: None,
        }
    }
}

/// What the PPTP inspector does with an invalid control message (`inspect pptp on-invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum InvalidPolicy {
    /// Count and log it, stop inspecting that direction, let bytes through.
    Log,
    /// Count and log it, drop the segment carrying it.
    #[default]
    Drop,
    /// Count and log it, replace the segment with a TCP reset and end the session.
    Reset,
}

/// PPTP inspection ("fixup protocol pptp 1723") settings.
#[derive(Debug, Clone)]
pub struct PptpConfig {
    /// Inspect TCP/1723 and track PPTP GRE by Call ID. Off: GRE is tracked per address pair.
    pub enabled: bool,
    /// Calls on one control connection (at most 255: the inspector keeps translated IDs'
    /// high bytes unique per connection).
    pub max_calls_per_session: usize,
    /// Calls of one inside host.
    pub max_calls_per_host: usize,
    /// Calls in all.
    pub max_calls_total: usize,
    /// Control connections inspected at once.
    pub max_sessions: usize,
    /// Translated IDs are drawn from 1..=id_limit (65535; smaller only for tests).
    pub id_limit: u16,
    /// How long a released translated ID rests before reuse.
    pub id_quarantine: Duration,
    /// How long calls outlive their control connection's FIN or RST.
    pub teardown_grace: Duration,
    /// What to do with an invalid control message.
    pub on_invalid: InvalidPolicy,
    /// Inspect control connections arriving on these interfaces only (None: all).
    pub interfaces: Option<Vec<IfaceId>>,
}

impl PptpConfig {
    /// True when control connections arriving on `iface` are inspected.
    pub fn inspects(&self, iface: IfaceId) -> bool {
        self.enabled && self.interfaces.as_ref().is_none_or(|v| v.contains(&iface))
    }
}

impl Default for PptpConfig {
    fn default() -> Self {
        PptpConfig {
            enabled: true,
            max_calls_per_session: 64,
            max_calls_per_host: 128,
            max_calls_total: 16_384,
            max_sessions: 8192,
            id_limit: u16::MAX,
            id_quarantine: Duration::from_secs(30),
            teardown_grace: Duration::from_secs(4),
            on_invalid: InvalidPolicy::Drop,
            interfaces: None,
        }
    }
}

/// Everything the engine needs to know.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Interfaces; an [`IfaceId`] indexes this list.
    pub ifaces: Vec<IfaceConfig>,
    /// PAT.
    pub nat: NatConfig,
    /// Static port forwards.
    pub forwards: Vec<PortForward>,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Table sizes.
    pub limits: Limits,
    /// Pick up TCP connections mid-stream from the inside (after a restart).
    pub tcp_pickup: bool,
    /// PPTP inspection.
    pub pptp: PptpConfig,
    /// Track ESP by SPI, learning inbound SPIs (`inspect ipsec`); off: per address pair.
    pub esp_by_spi: bool,
    /// Services the box itself offers on the outside address, (IP protocol, port): the
    /// host-or-transit rule hands them to the kernel. SSH (tcp 22) by default.
    pub host_services: Vec<(u8, u16)>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ifaces: Vec::new(),
            nat: NatConfig::default(),
            forwards: Vec::new(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            tcp_pickup: false,
            pptp: PptpConfig::default(),
            esp_by_spi: true,
            host_services: vec![(6, 22)],
        }
    }
}

impl EngineConfig {
    /// The interface with id `id`.
    pub fn iface(&self, id: IfaceId) -> Option<&IfaceConfig> {
        self.ifaces.get(usize::from(id.0))
    }

    /// The (first) outside interface.
    pub fn outside(&self) -> Option<(IfaceId, &IfaceConfig)> {
        self.ifaces.iter().enumerate().find(|(_, i)| i.role == Role::Outside).map(|(n, i)| (IfaceId(n as u8), i))
    }

    /// The inside interface whose subnet holds `a`.
    pub fn inside_for(&self, a: u32) -> Option<IfaceId> {
        self.ifaces.iter().position(|i| i.role == Role::Inside && i.contains(a)).map(|n| IfaceId(n as u8))
    }

    /// True when `a` is one of the gateway's own addresses.
    pub fn is_local(&self, a: u32) -> bool {
        self.ifaces.iter().any(|i| u32::from(i.addr) == a)
    }

    /// Checks consistency: one outside interface, sane ranges. Returns a message on error.
    pub fn validate(&self) -> Result<(), String> {
        if self.ifaces.len() > 255 {
            return Err("at most 255 interfaces".into());
        }
        let outside = self.ifaces.iter().filter(|i| i.role == Role::Outside).count();
        if outside != 1 {
            return Err(format!("exactly one outside interface is required, found {outside}"));
        }
        if self.nat.port_range.0 == 0 || self.nat.port_range.0 > self.nat.port_range.1 {
            return Err("NAT port range must be non-empty and exclude port 0".into());
        }
        if self.pptp.max_calls_per_session > 255 {
            return Err("PPTP calls per control connection are at most 255".into());
        }
        if self.limits.max_flows == 0 || self.limits.max_flows > (1 << 30) {
            return Err("max_flows must be between 1 and 2^30".into());
        }
        for f in &self.forwards {
            if self.inside_for(u32::from(f.inside_addr)).is_none() {
                return Err(format!("forward target {} is on no inside interface", f.inside_addr));
            }
        }
        Ok(())
    }

    /// The inside subnets, in order: (first address, size).
    pub fn inside_subnets(&self) -> Vec<(u32, u32)> {
        self.ifaces.iter().filter(|i| i.role == Role::Inside).map(IfaceConfig::subnet).collect()
    }

    /// A two-interface configuration used by tests, benches and examples:
    /// inside `10.0.0.1/24`, outside `203.0.113.1/24`.
    pub fn example() -> EngineConfig {
        EngineConfig {
            ifaces: vec![
                IfaceConfig {
                    name: "inside".into(),
                    device: "veth-in".into(),
                    role: Role::Inside,
                    addr: Ipv4Addr::new(10, 0, 0, 1),
                    prefix_len: 24,
                    auto_addr: false,
                },
                IfaceConfig {
                    name: "outside".into(),
                    device: "veth-out".into(),
                    role: Role::Outside,
                    addr: Ipv4Addr::new(203, 0, 113, 1),
                    prefix_len: 24,
                    auto_addr: false,
                },
            ],
            ..EngineConfig::default()
        }
    }
}
