//! xgwctl's command line: every subcommand and option, as clap parses them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "xgwctl", version, about = "Inspect and manage the xgw gateway")]
pub(crate) struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, default_value = "/run/xgw/xgw.sock")]
    pub(crate) socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Text)]
    pub(crate) output: Format,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// The line formats operators know (conntrack -L, ...).
    Text,
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// The connection table.
    Conntrack {
        #[command(subcommand)]
        cmd: ConntrackCmd,
    },
    /// PPTP control connections with their calls, and the inspector's counters.
    Pptp,
    /// Drops by reason, connection table, XDP classes, workers.
    Stats,
    /// Rules files.
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Address translations (ASA `show xlate`), filtered like conntrack.
    Xlate(FilterArgs),
    /// One inside host: its flows, translations and counts against the per-host limits.
    Host {
        /// The inside host's address.
        addr: std::net::Ipv4Addr,
    },
    /// The HA pair: this gateway's role and its state sync with the peer.
    Ha {
        #[command(subcommand)]
        cmd: HaCmd,
    },
    /// The versions of xgwctl and of the running daemon.
    Version,
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (xgwctl.1 and one per subcommand) into a directory.
    Man {
        /// The directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Args, Default)]
pub(crate) struct FilterArgs {
    /// Original source address or prefix.
    #[arg(short = 's', long = "src")]
    pub(crate) src: Option<String>,
    /// Original destination address or prefix.
    #[arg(short = 'd', long = "dst")]
    pub(crate) dst: Option<String>,
    /// Protocol (tcp, udp, icmp, gre, esp or a number).
    #[arg(short = 'p', long = "proto")]
    pub(crate) proto: Option<String>,
    /// Original source port.
    #[arg(long)]
    pub(crate) sport: Option<u16>,
    /// Original destination port.
    #[arg(long)]
    pub(crate) dport: Option<u16>,
    /// TCP state (ESTABLISHED, SYN_SENT, ...).
    #[arg(long)]
    pub(crate) state: Option<String>,
    /// GRE source key (PPTP Call ID), original direction.
    #[arg(long, value_parser = parse_num)]
    pub(crate) srckey: Option<u16>,
    /// GRE destination key, original direction.
    #[arg(long, value_parser = parse_num)]
    pub(crate) dstkey: Option<u16>,
    /// One flow, by its id.
    #[arg(short = 'i', long)]
    pub(crate) id: Option<u64>,
}

pub(crate) fn parse_num(s: &str) -> Result<u16, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("`{s}`: {e}"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConntrackCmd {
    /// List flows (conntrack -L format; the summary goes to stderr).
    List(FilterArgs),
    /// Count flows.
    Count(FilterArgs),
    /// Connection table counters (conntrack -S): entries, limit, inserts, failures, expiries.
    Stats,
    /// Print flow events as they happen (conntrack -E lines; NDJSON with -o json) until
    /// interrupted. Events the daemon could not queue are reported as a counted gap.
    Watch(FilterArgs),
    /// Delete the flows the filters pick (root only; at least one filter).
    Delete(FilterArgs),
    /// Delete every flow (root only).
    Flush,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCmd {
    /// Check a rules file without side effects: exit 0 when valid, 1 when not.
    Check {
        /// The rules file.
        file: PathBuf,
        /// How to print problems.
        #[arg(long, value_enum, default_value_t = ErrorFormat::Human)]
        error_format: ErrorFormat,
    },
    /// The access rules in force, with their ids and hit counts.
    Show,
    /// Write an xgw rules file from a Cisco PIX 6.x/7.x or ASA running configuration; what
    /// does not translate is reported (line, text, why) on stderr, routes as `ip route`
    /// commands.
    ImportAsa {
        /// The configuration (`show running-config`).
        file: PathBuf,
        /// The Linux device of an interface, by its nameif (repeatable).
        #[arg(long = "device", value_name = "NAMEIF=DEV")]
        devices: Vec<String>,
        /// Write the rules here instead of to stdout (`-o` is xgwctl's output format).
        #[arg(short = 'w', long = "write", value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Make the daemon reload its rules file (access lists are swapped atomically).
    Reload {
        /// Tear down live flows the new policy would not admit.
        #[arg(long)]
        kill: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ErrorFormat {
    /// file:line:col, the source line, a caret, hints.
    Human,
    /// A JSON array of diagnostics.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum HaCmd {
    /// Role, readiness, peer, sync link and its counters.
    Status,
    /// Set this gateway's role (root; keepalived's notify scripts call it): master forwards,
    /// backup and fault forward nothing.
    Role {
        /// master, backup or fault (keepalived's state names, any case).
        role: String,
    },
    /// Exit 0 when this gateway may take over (master, in sync, or alone), 1 when not: a
    /// check for keepalived's `vrrp_script` or a monitor.
    Ready,
}
