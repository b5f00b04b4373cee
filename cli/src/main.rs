//! xgwctl: xgw's command-line interface. It talks to xgwd over the control socket; `rules
//! check` works without a daemon. Exit codes: 0 ok, 1 error, 2 bad command line, 3 the
//! daemon cannot be reached.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use serde_json::{json, Value};
use xgw_control_proto::{conntrack_line, xlate_line, FlowView, XlateView};
use xgw_rules::file::{compile_file, CheckError};

mod args;
mod client;

use args::*;
use client::*;

fn run(cli: Cli) -> Result<(), ExitCode> {
    let out = cli.output;
    match cli.cmd {
        Cmd::Version => {
            println!("xgwctl {}", env!("CARGO_PKG_VERSION"));
            let end = call(&cli.socket, "version", Value::Null, |_| {})?;
            println!("xgwd {} (protocol {})", end["version"].as_str().unwrap_or("?"), end["protocol"]);
        }
        Cmd::Conntrack { cmd: ConntrackCmd::List(f) } => {
            let mut rows =
                vec![["PROTO", "STATE", "ORIGINAL", "REPLY", "PKTS", "BYTES", "TIMEOUT"].map(String::from).to_vec()];
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let end = call(&cli.socket, "conntrack.list", filter(&f), |i| match out {
                Format::Json => {
                    let _ = writeln!(w, "{i}");
                }
                Format::Text => {
                    if let Ok(v) = serde_json::from_value::<FlowView>(i) {
                        let _ = writeln!(w, "{}", conntrack_line(&v));
                    }
                }
                Format::Table => {
                    if let Ok(v) = serde_json::from_value::<FlowView>(i) {
                        rows.push(vec![
                            v.proto.clone(),
                            v.state.clone().unwrap_or_default(),
                            format!("{}:{} -> {}:{}", v.orig.0, v.orig.2, v.orig.1, v.orig.3),
                            format!("{}:{} -> {}:{}", v.reply.0, v.reply.2, v.reply.1, v.reply.3),
                            format!("{}/{}", v.packets.0, v.packets.1),
                            format!("{}/{}", v.bytes.0, v.bytes.1),
                            v.timeout.to_string(),
                        ]);
                    }
                }
            })?;
            if out == Format::Table {
                let _ = write!(w, "{}", table(&rows));
            }
            drop(w);
            eprintln!("{} flow entries have been shown.", end["count"]);
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Count(f) } => {
            let end = call(&cli.socket, "conntrack.count", filter(&f), |_| {})?;
            match out {
                Format::Json => println!("{}", json!({"count": end["count"]})),
                _ => println!("{}", end["count"]),
            }
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Watch(f) } => {
            let stdout = std::io::stdout();
            let mut w = stdout.lock();
            call(&cli.socket, "conntrack.watch", filter(&f), |i| {
                let r = if let Some(g) = i.get("gap") {
                    match out {
                        Format::Json => writeln!(w, "{}", json!({"gap": g})),
                        _ => {
                            eprintln!("xgwctl: {g} events lost (reader too slow or the event ring was full)");
                            Ok(())
                        }
                    }
                } else {
                    match out {
                        Format::Json => writeln!(w, "{i}"),
                        _ => match serde_json::from_value::<FlowView>(i["flow"].clone()) {
                            Ok(v) => writeln!(
                                w,
                                "{:>9} {}",
                                format!("[{}]", i["event"].as_str().unwrap_or("?")),
                                conntrack_line(&v)
                            ),
                            Err(_) => Ok(()),
                        },
                    }
                };
                // a closed pipe (`| head`) ends the watch
                if r.and_then(|()| w.flush()).is_err() {
                    std::process::exit(0);
                }
            })?;
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Stats } => {
            let end = call(&cli.socket, "stats", Value::Null, |_| {})?;
            let c = &end["conntrack"];
            match out {
                Format::Json => println!("{c}"),
                _ => {
                    // the table's size first, then every counter of the family
                    let mut parts = vec![format!("entries={}", c["entries"]), format!("limit={}", c["limit"])];
                    for (k, v) in c.as_object().into_iter().flatten() {
                        if k != "entries" && k != "limit" {
                            parts.push(format!("{k}={v}"));
                        }
                    }
                    println!("{}", parts.join(" "));
                }
            }
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Delete(f) } => {
            let end = call(&cli.socket, "conntrack.delete", filter(&f), |_| {})?;
            report_deleted(out, &end);
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Flush } => {
            let end = call(&cli.socket, "conntrack.flush", json!({}), |_| {})?;
            report_deleted(out, &end);
        }
        Cmd::Xlate(f) => {
            let mut rows = vec![["TYPE", "PROTO", "INSIDE", "OUTSIDE", "FOREIGN", "IDLE", "TIMEOUT", "FLOW"]
                .map(String::from)
                .to_vec()];
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let end = call(&cli.socket, "xlate", filter(&f), |i| match out {
                Format::Json => {
                    let _ = writeln!(w, "{i}");
                }
                Format::Text => {
                    if let Ok(x) = serde_json::from_value::<XlateView>(i) {
                        let _ = writeln!(w, "{}", xlate_line(&x));
                    }
                }
                Format::Table => {
                    if let Ok(x) = serde_json::from_value::<XlateView>(i) {
                        rows.push(vec![
                            x.kind.clone(),
                            x.proto.clone(),
                            format!("{}:{}", x.inside.0, x.inside.1),
                            format!("{}:{}", x.outside.0, x.outside.1),
                            format!("{}:{}", x.foreign.0, x.foreign.1),
                            x.idle.to_string(),
                            x.timeout.to_string(),
                            x.flow_id.to_string(),
                        ]);
                    }
                }
            })?;
            if out == Format::Table {
                let _ = write!(w, "{}", table(&rows));
            }
            drop(w);
            eprintln!("{} in use", end["count"]);
        }
        Cmd::Host { addr } => {
            let mut flows = Vec::new();
            let end = call(&cli.socket, "host", json!({"addr": addr.to_string()}), |i| flows.push(i))?;
            let limit = |v: &Value| if v.is_null() { "none".to_string() } else { v.to_string() };
            match out {
                Format::Json => println!(
                    "{}",
                    json!({"host": end["host"], "flows": flows, "counts": {"flows": end["flows"], "embryonic": end["embryonic"],
                        "translations": end["translations"], "limit_flows": end["limit_flows"], "limit_embryonic": end["limit_embryonic"]}})
                ),
                _ => {
                    println!("host {}", addr);
                    println!(
                        "  flows {} (limit {}), embryonic {} (limit {}), translations {}",
                        end["flows"],
                        limit(&end["limit_flows"]),
                        end["embryonic"],
                        limit(&end["limit_embryonic"]),
                        end["translations"]
                    );
                    for f in flows {
                        if let Ok(v) = serde_json::from_value::<FlowView>(f) {
                            println!("  {}", conntrack_line(&v));
                        }
                    }
                }
            }
        }
        Cmd::Rules { cmd: RulesCmd::Show } => {
            let mut rules = Vec::new();
            let end = call(&cli.socket, "rules.show", Value::Null, |i| rules.push(i))?;
            match out {
                Format::Json => println!(
                    "{}",
                    json!({"rules": rules, "implicit_denies": end["implicit_denies"], "bound_in": end["bound_in"], "bound_out": end["bound_out"]})
                ),
                _ => {
                    if let Some(n) = end["note"].as_str() {
                        println!("{n}");
                    }
                    for dir in ["in", "out"] {
                        for b in end[format!("bound_{dir}")].as_array().cloned().unwrap_or_default() {
                            println!(
                                "access-group {} {dir} interface {}",
                                b["list"].as_str().unwrap_or("?"),
                                b["interface"].as_str().unwrap_or("?")
                            );
                        }
                    }
                    let mut rows = vec![["ID", "LIST", "RULE", "HITS", "WHERE"].map(String::from).to_vec()];
                    for r in &rules {
                        rows.push(vec![
                            format!("{:08x}", r["id"].as_u64().unwrap_or(0)),
                            r["list"].as_str().unwrap_or("").to_string(),
                            r["text"].as_str().unwrap_or("").to_string(),
                            r["hits"].to_string(),
                            format!("{}:{}", r["file"].as_str().unwrap_or(""), r["line"]),
                        ]);
                    }
                    print!("{}", table(&rows));
                    println!("implicit deny: {} hits", end["implicit_denies"]);
                }
            }
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "xgwctl", &mut std::io::stdout());
        }
        Cmd::Man { dir } => {
            std::fs::create_dir_all(&dir).map_err(|e| {
                eprintln!("xgwctl: cannot create {}: {e}", dir.display());
                ExitCode::FAILURE
            })?;
            clap_mangen::generate_to(Cli::command(), &dir).map_err(|e| {
                eprintln!("xgwctl: cannot write man pages into {}: {e}", dir.display());
                ExitCode::FAILURE
            })?;
        }
        Cmd::Pptp => {
            let mut sessions = Vec::new();
            let end = call(&cli.socket, "pptp", Value::Null, |i| sessions.push(i))?;
            let counters = &end["counters"];
            match out {
                Format::Json => println!("{}", json!({"sessions": sessions, "counters": counters})),
                _ => {
                    let mut rows = vec![[
                        "INSIDE",
                        "CONTROL",
                        "SERVER",
                        "STATE",
                        "CALL(PNS)",
                        "TRANSLATED",
                        "PAC",
                        "CALL STATE",
                        "GRE PKTS out/in",
                        "GRE BYTES out/in",
                        "AGE",
                    ]
                    .map(String::from)
                    .to_vec()];
                    for s in &sessions {
                        let calls = s["calls"].as_array().cloned().unwrap_or_default();
                        let base = [
                            s["inside_host"].as_str(),
                            s["client"].as_str(),
                            s["server"].as_str(),
                            s["state"].as_str(),
                        ]
                        .map(|x| x.unwrap_or("").to_string());
                        if calls.is_empty() {
                            let mut r = base.to_vec();
                            r.extend([
                                "-".into(),
                                "".into(),
                                "".into(),
                                "".into(),
                                "".into(),
                                "".into(),
                                format!("{}s", s["age"]),
                            ]);
                            rows.push(r);
                        }
                        for c in calls {
                            let hex = |v: &Value| v.as_u64().map_or("-".to_string(), |n| format!("0x{n:04x}"));
                            let pair =
                                |v: &Value| v.as_array().map_or("-".to_string(), |a| format!("{}/{}", a[0], a[1]));
                            let mut r = base.to_vec();
                            r.extend([
                                hex(&c["pns_call_id"]),
                                hex(&c["translated_call_id"]),
                                hex(&c["pac_call_id"]),
                                c["state"].as_str().unwrap_or("").to_string(),
                                pair(&c["gre_packets"]),
                                pair(&c["gre_bytes"]),
                                format!("{}s", c["age"]),
                            ]);
                            rows.push(r);
                        }
                    }
                    print!("{}", table(&rows));
                    if let Some(m) = counters.as_object() {
                        let line: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        println!("counters: {}", line.join(" "));
                    }
                    eprintln!("{} control connections have been shown.", sessions.len());
                }
            }
        }
        Cmd::Stats => {
            let end = call(&cli.socket, "stats", Value::Null, |_| {})?;
            match out {
                Format::Json => println!("{end}"),
                _ => {
                    for k in
                        ["rx", "forwarded", "to_host", "icmp_generated", "flow_hits", "l4_csum_completed", "workers"]
                    {
                        println!("{k:<16} {}", end[k]);
                    }
                    if let Some(c) = end["conntrack"].as_object() {
                        for (k, v) in c {
                            println!("conntrack.{k:<12} {v}");
                        }
                    }
                    if let Some(c) = end["pptp"].as_object() {
                        for (k, v) in c {
                            println!("pptp.{k:<25} {v}");
                        }
                    }
                    if let Some(d) = end["drops"].as_object() {
                        for (k, v) in d {
                            println!("drop.{k:<24} {v}");
                        }
                    }
                    if let Some(c) = end["worker_classes"].as_object() {
                        for (k, v) in c {
                            println!("worker.class.{k:<16} {v}");
                        }
                    }
                    for x in end["xdp"].as_array().cloned().unwrap_or_default() {
                        if let Some(cls) = x["classes"].as_object() {
                            for (k, v) in cls {
                                println!(
                                    "xdp.{}.{k:<16} {} packets {} bytes",
                                    x["device"].as_str().unwrap_or("?"),
                                    v["packets"],
                                    v["bytes"]
                                );
                            }
                        }
                    }
                    for x in end["xdp_steering"].as_array().cloned().unwrap_or_default() {
                        if let Some(st) = x["steering"].as_object() {
                            for (k, v) in st {
                                println!("xdp.{}.to.{k:<13} {v}", x["device"].as_str().unwrap_or("?"));
                            }
                        }
                    }
                    for x in end["xdp_declined"].as_array().cloned().unwrap_or_default() {
                        if let Some(st) = x["declined"].as_object() {
                            for (k, v) in st {
                                println!("xdp.{}.declined.{k:<15} {v}", x["device"].as_str().unwrap_or("?"));
                            }
                        }
                    }
                    for x in end["egress"].as_array().cloned().unwrap_or_default() {
                        let dev = x["device"].as_str().unwrap_or("?");
                        println!("egress.{dev}.state       {}", x["state"].as_str().unwrap_or("?"));
                        println!("egress.{dev}.refusals    {}", x["refusals"]);
                    }
                    for x in end["ports"].as_array().cloned().unwrap_or_default() {
                        if let Some(c) = x["counters"].as_object() {
                            for (k, v) in c {
                                let dev = x["device"].as_str().unwrap_or("?");
                                println!("port.{dev}.q{}.{k:<15} {v}", x["queue"]);
                            }
                        }
                    }
                    match end["offload"].as_object() {
                        Some(o) => {
                            for (k, v) in o {
                                println!("offload.{k:<14} {v}");
                            }
                        }
                        None => println!("offload          off"),
                    }
                }
            }
        }
        Cmd::Rules { cmd: RulesCmd::Reload { kill } } => {
            let end = call(&cli.socket, "rules.reload", json!({"kill": kill}), |_| {})?;
            let r = &end["report"];
            match out {
                Format::Json => println!("{r}"),
                _ => {
                    for w in r["warnings"].as_array().cloned().unwrap_or_default() {
                        eprintln!("{}", w.as_str().unwrap_or(""));
                    }
                    println!(
                        "reloaded: {} live flows, {} the new policy would refuse, {} torn down",
                        r["live"], r["would_deny"], r["killed"]
                    );
                }
            }
        }
        Cmd::Rules { cmd: RulesCmd::Check { file, error_format } } => {
            let (ok, diags) = match compile_file(&file) {
                Ok(c) => (true, c.warnings),
                Err(CheckError::Invalid(d)) => (false, d),
                Err(CheckError::Read(e)) => {
                    eprintln!("xgwctl: cannot read rules file: {e}");
                    return Err(ExitCode::FAILURE);
                }
            };
            match error_format {
                ErrorFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&diags).map_err(|_| ExitCode::FAILURE)?)
                }
                ErrorFormat::Human => {
                    if !diags.is_empty() {
                        eprintln!("{}", xgw_rules::diag::render_all(&diags));
                    }
                    let errors = diags.iter().filter(|d| d.severity == xgw_rules::Severity::Error).count();
                    let warnings = diags.len() - errors;
                    let s = |n: usize| if n == 1 { "" } else { "s" };
                    if ok {
                        eprintln!("{}: valid ({warnings} warning{})", file.display(), s(warnings));
                    } else {
                        eprintln!(
                            "{}: {errors} error{}, {warnings} warning{}; refused",
                            file.display(),
                            s(errors),
                            s(warnings)
                        );
                    }
                }
            }
            if !ok {
                return Err(ExitCode::FAILURE);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
