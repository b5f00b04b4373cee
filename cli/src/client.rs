//! Talking to xgwd: one request over the control socket, items streamed back, and the
//! small text helpers the commands share.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde_json::json;
use xgw_control_proto::answer::Deleted;
use xgw_control_proto::{Body, Command, Filter, Line, Request};

use super::*;

pub(crate) const UNREACHABLE: u8 = 3;

/// What a command streams before its result.
pub(crate) enum Streamed<I> {
    /// One item.
    Item(I),
    /// Events the daemon could not queue for us (`conntrack watch` only).
    Gap(u64),
}

/// Sends one request; calls `on_item` for each streamed item; returns the command's result.
pub(crate) fn call<I: DeserializeOwned, E: DeserializeOwned>(
    socket: &PathBuf,
    cmd: Command,
    mut on_item: impl FnMut(Streamed<I>),
) -> Result<E, ExitCode> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        eprintln!("xgwctl: cannot reach xgwd at {}: {e}", socket.display());
        ExitCode::from(UNREACHABLE)
    })?;
    let line = serde_json::to_string(&Request::new(cmd)).map_err(|_| ExitCode::FAILURE)?;
    writeln!(s, "{line}").map_err(|_| ExitCode::from(UNREACHABLE))?;
    for l in BufReader::new(s).lines() {
        let l = l.map_err(|_| ExitCode::from(UNREACHABLE))?;
        let line: Line<I, E> = serde_json::from_str(&l).map_err(|e| {
            eprintln!("xgwctl: bad answer from xgwd: {e}");
            ExitCode::FAILURE
        })?;
        match line.body {
            Body::Item(i) => on_item(Streamed::Item(i)),
            Body::Gap(g) => on_item(Streamed::Gap(g)),
            Body::Heartbeat {} => {}
            Body::Done(e) => return Ok(e),
            Body::Error(e) => {
                eprintln!("xgwctl: {e}");
                return Err(ExitCode::FAILURE);
            }
        }
    }
    eprintln!("xgwctl: xgwd closed the connection");
    Err(ExitCode::from(UNREACHABLE))
}

/// Calls a command that streams nothing.
pub(crate) fn ask<E: DeserializeOwned>(socket: &PathBuf, cmd: Command) -> Result<E, ExitCode> {
    call::<serde::de::IgnoredAny, E>(socket, cmd, |_| {})
}

/// Calls a command and collects its items.
pub(crate) fn collect<I: DeserializeOwned, E: DeserializeOwned>(
    socket: &PathBuf,
    cmd: Command,
) -> Result<(Vec<I>, E), ExitCode> {
    let mut items = Vec::new();
    let end = call(socket, cmd, |i| {
        if let Streamed::Item(i) = i {
            items.push(i);
        }
    })?;
    Ok((items, end))
}

pub(crate) fn filter(f: &FilterArgs) -> Filter {
    Filter {
        src: f.src.clone(),
        dst: f.dst.clone(),
        proto: f.proto.clone(),
        sport: f.sport,
        dport: f.dport,
        state: f.state.clone(),
        srckey: f.srckey,
        dstkey: f.dstkey,
        id: f.id,
    }
}

/// Prints an item as one JSON line.
pub(crate) fn json_line(w: &mut impl Write, v: &impl serde::Serialize) -> std::io::Result<()> {
    writeln!(w, "{}", serde_json::to_string(v).map_err(std::io::Error::other)?)
}

pub(crate) fn report_deleted(out: Format, end: &Deleted) {
    match out {
        Format::Json => println!("{}", json!({"deleted": end.deleted})),
        _ => eprintln!("{} flow entries have been deleted.", end.deleted),
    }
}
