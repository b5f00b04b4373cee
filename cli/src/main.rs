//! xgwctl: xgw's command-line interface. It talks to xgwd over the control socket; `rules
//! check` works without a daemon. Exit codes: 0 ok, 1 error, 2 bad command line, 3 the
//! daemon cannot be reached.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use serde_json::json;
use xgw_control_proto::answer::{
    self, Count, Deleted, HostSummary, PptpCounters, PptpSession, ReloadReport, RuleView, RulesShown, VersionInfo,
    WatchEvent,
};
use xgw_control_proto::{conntrack_line, xlate_line, Command, FlowView};
use xgw_rules::file::{compile_file, CheckError};

mod args;
mod client;
mod show;

use args::*;
use client::*;
use show::*;

fn run(cli: Cli) -> Result<(), ExitCode> {
    let out = cli.output;
    let sock = &cli.socket;
    match cli.cmd {
        Cmd::Version => {
            println!("xgwctl {}", env!("CARGO_PKG_VERSION"));
            let v: VersionInfo = ask(sock, Command::Version)?;
            println!("xgwd {} (protocol {})", v.version, v.protocol);
        }
        Cmd::Conntrack { cmd: ConntrackCmd::List(f) } => {
            let mut rows =
                vec![["PROTO", "STATE", "ORIGINAL", "REPLY", "PKTS", "BYTES", "TIMEOUT"].map(String::from).to_vec()];
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let end: Count = call(sock, Command::ConntrackList(filter(&f)), |i| {
                let Streamed::Item(v) = i else { return };
                let _ = match out {
                    Format::Json => json_line(&mut w, &v),
                    Format::Text => writeln!(w, "{}", conntrack_line(&v)),
                    Format::Table => {
                        rows.push(flow_row(&v));
                        Ok(())
                    }
                };
            })?;
            if out == Format::Table {
                let _ = write!(w, "{}", table(&rows));
            }
            drop(w);
            eprintln!("{} flow entries have been shown.", end.count);
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Count(f) } => {
            let end: Count = ask(sock, Command::ConntrackCount(filter(&f)))?;
            match out {
                Format::Json => println!("{}", json!({"count": end.count})),
                _ => println!("{}", end.count),
            }
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Watch(f) } => {
            let stdout = std::io::stdout();
            let mut w = stdout.lock();
            call::<WatchEvent, answer::Empty>(sock, Command::ConntrackWatch(filter(&f)), |i| {
                let r = match (i, out) {
                    (Streamed::Gap(g), Format::Json) => writeln!(w, "{}", json!({"gap": g})),
                    (Streamed::Gap(g), _) => {
                        eprintln!("xgwctl: {g} events lost (reader too slow or the event ring was full)");
                        Ok(())
                    }
                    (Streamed::Item(e), Format::Json) => json_line(&mut w, &e),
                    (Streamed::Item(e), _) => {
                        writeln!(w, "{:>9} {}", format!("[{}]", e.event.name()), conntrack_line(&e.flow))
                    }
                };
                // a closed pipe (`| head`) ends the watch
                if r.and_then(|()| w.flush()).is_err() {
                    std::process::exit(0);
                }
            })?;
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Stats } => {
            let s: answer::Stats = ask(sock, Command::Stats)?;
            let c = &s.conntrack;
            match out {
                Format::Json => println!("{}", json!(c)),
                _ => {
                    // the table's size first, then every counter of the family
                    let mut parts = vec![format!("entries={}", c["entries"]), format!("limit={}", c["limit"])];
                    parts.extend(
                        c.iter().filter(|(k, _)| *k != "entries" && *k != "limit").map(|(k, v)| format!("{k}={v}")),
                    );
                    println!("{}", parts.join(" "));
                }
            }
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Delete(f) } => {
            let end: Deleted = ask(sock, Command::ConntrackDelete(filter(&f)))?;
            report_deleted(out, &end);
        }
        Cmd::Conntrack { cmd: ConntrackCmd::Flush } => {
            let end: Deleted = ask(sock, Command::ConntrackFlush)?;
            report_deleted(out, &end);
        }
        Cmd::Xlate(f) => {
            let mut rows = vec![["TYPE", "PROTO", "INSIDE", "OUTSIDE", "FOREIGN", "IDLE", "TIMEOUT", "FLOW"]
                .map(String::from)
                .to_vec()];
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let end: Count = call(sock, Command::Xlate(filter(&f)), |i| {
                let Streamed::Item(x) = i else { return };
                let _ = match out {
                    Format::Json => json_line(&mut w, &x),
                    Format::Text => writeln!(w, "{}", xlate_line(&x)),
                    Format::Table => {
                        rows.push(xlate_row(&x));
                        Ok(())
                    }
                };
            })?;
            if out == Format::Table {
                let _ = write!(w, "{}", table(&rows));
            }
            drop(w);
            eprintln!("{} in use", end.count);
        }
        Cmd::Host { addr } => {
            let (flows, end): (Vec<FlowView>, HostSummary) = collect(sock, Command::Host { addr })?;
            let limit = |v: Option<u32>| v.map_or("none".to_string(), |n| n.to_string());
            match out {
                Format::Json => println!(
                    "{}",
                    json!({"host": end.host, "flows": flows, "counts": {"flows": end.flows, "embryonic": end.embryonic,
                        "translations": end.translations, "limit_flows": end.limit_flows, "limit_embryonic": end.limit_embryonic}})
                ),
                _ => {
                    println!("host {addr}");
                    println!(
                        "  flows {} (limit {}), embryonic {} (limit {}), translations {}",
                        end.flows,
                        limit(end.limit_flows),
                        end.embryonic,
                        limit(end.limit_embryonic),
                        end.translations
                    );
                    for v in flows {
                        println!("  {}", conntrack_line(&v));
                    }
                }
            }
        }
        Cmd::Rules { cmd: RulesCmd::Show } => {
            let (rules, end): (Vec<RuleView>, RulesShown) = collect(sock, Command::RulesShow)?;
            match out {
                Format::Json => println!(
                    "{}",
                    json!({"rules": rules, "implicit_denies": end.implicit_denies, "bound_in": end.bound_in, "bound_out": end.bound_out})
                ),
                _ => print!("{}", rules_text(&rules, &end)),
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
            let (sessions, end): (Vec<PptpSession>, PptpCounters) = collect(sock, Command::Pptp)?;
            match out {
                Format::Json => println!("{}", json!({"sessions": sessions, "counters": end.counters})),
                _ => {
                    print!("{}", pptp_text(&sessions, &end.counters));
                    eprintln!("{} control connections have been shown.", sessions.len());
                }
            }
        }
        Cmd::Ha { cmd } => {
            let s: answer::HaStatus = match &cmd {
                HaCmd::Role { role } => ask(sock, Command::HaRole { role: role.clone() })?,
                HaCmd::Status | HaCmd::Ready => ask(sock, Command::HaStatus)?,
            };
            match out {
                Format::Json => println!("{}", json!(s)),
                _ => print!("{}", ha_text(&s)),
            }
            if matches!(cmd, HaCmd::Ready) && !s.ready {
                return Err(ExitCode::FAILURE);
            }
        }
        Cmd::Stats => {
            let s: answer::Stats = ask(sock, Command::Stats)?;
            match out {
                Format::Json => println!("{}", json!(s)),
                _ => print!("{}", stats_text(&s)),
            }
        }
        Cmd::Rules { cmd: RulesCmd::Reload { kill } } => {
            let r: ReloadReport = ask(sock, Command::RulesReload { kill })?;
            match out {
                Format::Json => println!("{}", json!(r)),
                _ => {
                    for w in &r.warnings {
                        eprintln!("{w}");
                    }
                    println!(
                        "reloaded: {} live flows, {} the new policy would refuse, {} torn down",
                        r.live, r.would_deny, r.killed
                    );
                }
            }
        }
        Cmd::Rules { cmd: RulesCmd::ImportAsa { file, devices, out } } => import_asa(&file, &devices, out.as_deref())?,
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
                    let count = |s| diags.iter().filter(|d| d.severity == s).count();
                    let (errors, warnings) = (count(xgw_rules::Severity::Error), count(xgw_rules::Severity::Warning));
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

/// `rules import-asa`: the rules to stdout or OUT, the report to stderr; the written rules
/// are checked as `rules check` would (exit 1 if they do not compile).
fn import_asa(file: &std::path::Path, devices: &[String], out: Option<&std::path::Path>) -> Result<(), ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("xgwctl: cannot read {}: {e}", file.display());
        ExitCode::FAILURE
    })?;
    let mut map = std::collections::BTreeMap::new();
    for d in devices {
        let Some((n, dev)) = d.split_once('=') else {
            eprintln!("xgwctl: --device wants NAMEIF=DEV, not `{d}`");
            return Err(ExitCode::from(2));
        };
        map.insert(n.to_string(), dev.to_string());
    }
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().to_string());
    let imp = xgw_rules::import::import_asa(&text, &name, &map);
    match out {
        Some(p) => std::fs::write(p, &imp.rules).map_err(|e| {
            eprintln!("xgwctl: cannot write {}: {e}", p.display());
            ExitCode::FAILURE
        })?,
        None => print!("{}", imp.rules),
    }
    eprint!("{}", imp.report());
    match xgw_rules::compile("imported.rules", &imp.rules, &|p| Err(format!("no include {p}"))) {
        Ok(_) => {
            eprintln!("the written rules pass `xgwctl rules check`");
            Ok(())
        }
        Err(d) => {
            eprintln!("{}", xgw_rules::diag::render_all(&d));
            eprintln!("xgwctl: the written rules do not compile: fix the configuration or the output by hand");
            Err(ExitCode::FAILURE)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
