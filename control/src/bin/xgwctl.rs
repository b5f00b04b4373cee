//! xgwctl: xgw's command-line interface. `rules check` works without a running daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use xgw_control::rules_cmd::{compile_file, CheckError};

#[derive(Debug, Parser)]
#[command(name = "xgwctl", version, about = "Inspect and manage the xgw gateway")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Rules files.
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum RulesCmd {
    /// Check a rules file without side effects: exit 0 when valid, 1 when not.
    Check {
        /// The rules file.
        file: PathBuf,
        /// How to print problems.
        #[arg(long, value_enum, default_value_t = ErrorFormat::Human)]
        error_format: ErrorFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ErrorFormat {
    /// file:line:col, the source line, a caret, hints.
    Human,
    /// A JSON array of diagnostics.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Version => {
            println!("xgwctl {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Cmd::Rules { cmd: RulesCmd::Check { file, error_format } } => {
            let (ok, diags) = match compile_file(&file) {
                Ok(c) => (true, c.warnings),
                Err(CheckError::Invalid(d)) => (false, d),
                Err(CheckError::Read(e)) => {
                    eprintln!("xgwctl: cannot read rules file: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match error_format {
                ErrorFormat::Json => match serde_json::to_string_pretty(&diags) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("xgwctl: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                ErrorFormat::Human => {
                    if !diags.is_empty() {
                        eprintln!("{}", xgw_rules::diag::render_all(&diags));
                    }
                    let errors = diags.iter().filter(|d| d.severity == xgw_rules::Severity::Error).count();
                    let warnings = diags.len() - errors;
                    if ok {
                        eprintln!(
                            "{}: valid ({warnings} warning{})",
                            file.display(),
                            if warnings == 1 { "" } else { "s" }
                        );
                    } else {
                        eprintln!(
                            "{}: {errors} error{}, {warnings} warning{}; refused",
                            file.display(),
                            if errors == 1 { "" } else { "s" },
                            if warnings == 1 { "" } else { "s" }
                        );
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
