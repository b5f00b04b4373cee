//! The control protocol between `xgwctl` and `xgwd`: one JSON request per line on a unix
//! socket ([`Request`]: a version and a typed [`Command`]), answered by JSON lines
//! ([`Line`]) — items first (streamed), then one line that ends the answer with the
//! command's typed result or an error. Versioned by [`VERSION`].
//!
//! This crate holds what both ends share and nothing else: the requests and answers, the
//! listing forms of a flow and a translation, the server-side filters, and the text
//! renderings xgwctl prints (conntrack-tools' line grammar, ASA's `show xlate`). It depends on
//! serde only, so the CLI builds without the daemon's eBPF toolchain.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub mod answer;
mod render;
mod view;

pub use render::{conntrack_line, hms, xlate_line};
pub use view::{Filter, FlowView, XlateView};

/// Protocol version. 2: typed commands (`cmd` + `args`) and typed answer lines.
pub const VERSION: u32 = 2;

/// One request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version.
    pub v: u32,
    /// What is asked.
    #[serde(flatten)]
    pub cmd: Command,
}

impl Request {
    /// A request of this protocol version.
    pub fn new(cmd: Command) -> Request {
        Request { v: VERSION, cmd }
    }
}

/// Reads only a request's version, so that a request of another version is answered with
/// "version not supported" rather than with whatever its command fails to parse as.
#[derive(Debug, Deserialize)]
pub struct VersionOnly {
    /// Protocol version.
    pub v: u32,
}

/// A command and its arguments. On the wire: `"cmd": "<name>", "args": {...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "args")]
pub enum Command {
    /// The daemon's version. Answer: [`answer::VersionInfo`].
    #[serde(rename = "version")]
    Version,
    /// Flows matching a filter. Items: [`FlowView`]; answer: [`answer::Count`].
    #[serde(rename = "conntrack.list")]
    ConntrackList(Filter),
    /// How many flows match. Answer: [`answer::Count`].
    #[serde(rename = "conntrack.count")]
    ConntrackCount(Filter),
    /// Flow events until the client goes away. Items: [`answer::WatchEvent`].
    #[serde(rename = "conntrack.watch")]
    ConntrackWatch(Filter),
    /// Deletes matching flows (root; an empty filter is refused). Answer: [`answer::Deleted`].
    #[serde(rename = "conntrack.delete")]
    ConntrackDelete(Filter),
    /// Deletes every flow (root). Answer: [`answer::Deleted`].
    #[serde(rename = "conntrack.flush")]
    ConntrackFlush,
    /// Translations of matching flows. Items: [`XlateView`]; answer: [`answer::Count`].
    #[serde(rename = "xlate")]
    Xlate(Filter),
    /// One inside host's flows and limits. Items: [`FlowView`]; answer: [`answer::HostSummary`].
    #[serde(rename = "host")]
    Host {
        /// The inside host.
        addr: Ipv4Addr,
    },
    /// PPTP control connections and calls. Items: [`answer::PptpSession`]; answer:
    /// [`answer::Counters`].
    #[serde(rename = "pptp")]
    Pptp,
    /// Every counter. Answer: [`answer::Stats`].
    #[serde(rename = "stats")]
    Stats,
    /// Reloads the access policy (root). Answer: [`answer::ReloadReport`].
    #[serde(rename = "rules.reload")]
    RulesReload {
        /// Tear down live flows the new policy would refuse.
        kill: bool,
    },
    /// The access rules with their hits. Items: [`answer::RuleView`]; answer:
    /// [`answer::RulesShown`].
    #[serde(rename = "rules.show")]
    RulesShow,
    /// The HA pair: role, peer, sync link. Answer: [`answer::HaStatus`].
    #[serde(rename = "ha.status")]
    HaStatus,
    /// Sets this gateway's HA role (root; keepalived's notify scripts call it). Answer:
    /// [`answer::HaStatus`].
    #[serde(rename = "ha.role")]
    HaRole {
        /// "master", "backup" or "fault".
        role: String,
    },
}

impl Command {
    /// The command as an administrator types it (`conntrack delete`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Version => "version",
            Command::ConntrackList(_) => "conntrack list",
            Command::ConntrackCount(_) => "conntrack count",
            Command::ConntrackWatch(_) => "conntrack watch",
            Command::ConntrackDelete(_) => "conntrack delete",
            Command::ConntrackFlush => "conntrack flush",
            Command::Xlate(_) => "xlate",
            Command::Host { .. } => "host",
            Command::Pptp => "pptp",
            Command::Stats => "stats",
            Command::RulesReload { .. } => "rules reload",
            Command::RulesShow => "rules show",
            Command::HaStatus => "ha status",
            Command::HaRole { .. } => "ha role",
        }
    }

    /// Does it change state (and so need root)?
    pub fn needs_root(&self) -> bool {
        matches!(
            self,
            Command::ConntrackDelete(_)
                | Command::ConntrackFlush
                | Command::RulesReload { .. }
                | Command::HaRole { .. }
        )
    }
}

/// One line of an answer: `{"v":2,"item":…}`, `{"v":2,"gap":n}`, `{"v":2,"heartbeat":{}}`,
/// then `{"v":2,"done":…}` or `{"v":2,"error":"…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line<I, E> {
    /// Protocol version.
    pub v: u32,
    /// What the line carries.
    #[serde(flatten)]
    pub body: Body<I, E>,
}

/// What a line of an answer carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body<I, E> {
    /// One streamed item.
    Item(I),
    /// Events the daemon could not queue for a slow reader (`conntrack watch`).
    Gap(u64),
    /// Nothing happened for a second (`conntrack watch`); lets the daemon notice a gone client.
    Heartbeat {},
    /// The answer ends: the command's result.
    Done(E),
    /// The answer ends: the command failed.
    Error(String),
}

impl<I, E> Line<I, E> {
    /// A line of this protocol version.
    pub fn new(body: Body<I, E>) -> Line<I, E> {
        Line { v: VERSION, body }
    }
}

#[cfg(test)]
mod tests {
    use super::answer::Count;
    use super::*;

    #[test]
    fn requests_round_trip_in_their_wire_form() {
        let cases = [
            (Command::Version, r#"{"v":2,"cmd":"version"}"#),
            (Command::ConntrackFlush, r#"{"v":2,"cmd":"conntrack.flush"}"#),
            (Command::RulesReload { kill: true }, r#"{"v":2,"cmd":"rules.reload","args":{"kill":true}}"#),
            (Command::Host { addr: Ipv4Addr::new(10, 0, 0, 5) }, r#"{"v":2,"cmd":"host","args":{"addr":"10.0.0.5"}}"#),
        ];
        for (cmd, wire) in cases {
            let r = Request::new(cmd);
            assert_eq!(serde_json::to_string(&r).expect("serialise"), wire);
            assert_eq!(serde_json::from_str::<Request>(wire).expect("parse"), r);
        }
        let f = Filter { dport: Some(443), ..Filter::default() };
        let r = Request::new(Command::ConntrackList(f));
        let wire = serde_json::to_string(&r).expect("serialise");
        assert!(wire.contains(r#""cmd":"conntrack.list","args":{"#), "{wire}");
        assert_eq!(serde_json::from_str::<Request>(&wire).expect("parse"), r);
    }

    #[test]
    fn unknown_commands_and_bad_arguments_are_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"v":2,"cmd":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"v":2,"cmd":"host","args":{"addr":"nope"}}"#).is_err());
        assert_eq!(serde_json::from_str::<VersionOnly>(r#"{"v":1,"cmd":"anything"}"#).expect("v").v, 1);
    }

    #[test]
    fn answer_lines_round_trip() {
        type L = Line<FlowView, Count>;
        let lines = [
            L::new(Body::Item(FlowView::example())),
            L::new(Body::Gap(3)),
            L::new(Body::Heartbeat {}),
            L::new(Body::Done(Count { count: 4 })),
            L::new(Body::Error("no".into())),
        ];
        for l in lines {
            let wire = serde_json::to_string(&l).expect("serialise");
            assert_eq!(serde_json::from_str::<L>(&wire).expect(&wire), l);
        }
        assert_eq!(serde_json::to_string(&L::new(Body::Gap(3))).expect("gap"), r#"{"v":2,"gap":3}"#);
    }

    #[test]
    fn only_commands_that_change_state_need_root() {
        assert!(Command::ConntrackFlush.needs_root());
        assert!(Command::RulesReload { kill: false }.needs_root());
        assert!(!Command::Stats.needs_root());
        assert!(Command::HaRole { role: "master".into() }.needs_root());
        assert!(!Command::HaStatus.needs_root());
        assert_eq!(Command::ConntrackDelete(Filter::default()).name(), "conntrack delete");
    }
}
