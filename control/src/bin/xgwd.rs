//! xgwd: the xgw gateway daemon. `xgwd replay` runs captures through the engine offline.

use clap::{CommandFactory, Parser, Subcommand};
use xgw_control::daemon::{self, RunArgs};
use xgw_control::replay_cmd::{self, ReplayArgs};

#[derive(Debug, Parser)]
#[command(name = "xgwd", version, about = "xgw gateway daemon")]
struct Cli {
    /// Log line format on stderr (the level comes from XGW_LOG, e.g. `info`, `xgw=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable (colours only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
    /// Cisco ASA syslog lines for flows, translations and denies (302013/302014/302015/
    /// 302016/305011/305012/106023), without timestamps: syslog adds its own.
    Asa,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the gateway: attach XDP, forward with AF_XDP workers until SIGTERM.
    Run(RunArgs),
    /// Run capture files through the engine and write what leaves each interface.
    Replay(ReplayArgs),
    /// The HA watchdog xgwd starts itself: waits until xgwd's end of its standard input
    /// closes, then writes `1` (not ready) into keepalived's tracked file.
    #[command(hide = true)]
    HaWatch {
        /// keepalived's tracked file.
        file: std::path::PathBuf,
    },
    /// Write man pages (xgwd.8 and one per subcommand) into a directory.
    Man {
        /// The directory.
        dir: std::path::PathBuf,
    },
}

/// The man pages, in section 8 (a system daemon).
fn man(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut pages = vec![("xgwd".to_string(), cmd.clone())];
    for c in cmd.get_subcommands() {
        let name = format!("xgwd-{}", c.get_name());
        pages.push((name.clone(), c.clone().display_name(name)));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).section("8").render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.8")), out)?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("XGW_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Asa => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => {
            tracing_subscriber::fmt().json().with_env_filter(filter()).with_writer(std::io::stderr).init()
        }
    }
    let r = match cli.cmd {
        Cmd::Run(a) => daemon::run(&a, cli.log_format == LogFormat::Asa),
        Cmd::Replay(a) => replay_cmd::run(&a),
        Cmd::HaWatch { file } => xgw_control::ha::watch(&file),
        Cmd::Man { dir } => man(&dir),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xgwd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
