//! Talking to xgwd: one request over the control socket, items streamed back, and the
//! small text helpers the commands share.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use xgw_control_proto::{Filter, Request, VERSION};

use super::*;

pub(crate) const UNREACHABLE: u8 = 3;

/// Sends one request; calls `on_item` for each streamed item; returns the end line.
pub(crate) fn call(
    socket: &PathBuf,
    cmd: &str,
    args: Value,
    mut on_item: impl FnMut(Value),
) -> Result<Value, ExitCode> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        eprintln!("xgwctl: cannot reach xgwd at {}: {e}", socket.display());
        ExitCode::from(UNREACHABLE)
    })?;
    let req = Request { v: VERSION, cmd: cmd.to_string(), args };
    let line = serde_json::to_string(&req).map_err(|_| ExitCode::FAILURE)?;
    writeln!(s, "{line}").map_err(|_| ExitCode::from(UNREACHABLE))?;
    for l in BufReader::new(s).lines() {
        let l = l.map_err(|_| ExitCode::from(UNREACHABLE))?;
        let v: Value = serde_json::from_str(&l).map_err(|e| {
            eprintln!("xgwctl: bad answer from xgwd: {e}");
            ExitCode::FAILURE
        })?;
        if v.get("end").and_then(Value::as_bool) == Some(true) {
            if v.get("ok").and_then(Value::as_bool) != Some(true) {
                eprintln!("xgwctl: {}", v.get("error").and_then(Value::as_str).unwrap_or("failed"));
                return Err(ExitCode::FAILURE);
            }
            return Ok(v);
        }
        if let Some(i) = v.get("item") {
            on_item(i.clone());
        } else if let Some(g) = v.get("gap") {
            // only `conntrack watch` has gaps: events the daemon could not queue for us
            on_item(json!({"gap": g}));
        }
    }
    eprintln!("xgwctl: xgwd closed the connection");
    Err(ExitCode::from(UNREACHABLE))
}

pub(crate) fn filter(f: &FilterArgs) -> Value {
    serde_json::to_value(Filter {
        src: f.src.clone(),
        dst: f.dst.clone(),
        proto: f.proto.clone(),
        sport: f.sport,
        dport: f.dport,
        state: f.state.clone(),
        srckey: f.srckey,
        dstkey: f.dstkey,
        id: f.id,
    })
    .unwrap_or(Value::Null)
}

pub(crate) fn report_deleted(out: Format, end: &Value) {
    match out {
        Format::Json => println!("{}", json!({"deleted": end["deleted"]})),
        _ => eprintln!("{} flow entries have been deleted.", end["deleted"]),
    }
}

pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..n).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}
