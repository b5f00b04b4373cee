//! xgwd: the xgw gateway daemon. `xgwd replay` runs captures through the engine offline.

use clap::{Parser, Subcommand};
use xgw_control::replay_cmd::{self, ReplayArgs};

#[derive(Debug, Parser)]
#[command(name = "xgwd", version, about = "xgw gateway daemon")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run capture files through the engine and write what leaves each interface.
    Replay(ReplayArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Replay(a) => replay_cmd::run(&a),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xgwd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
