//! `xvrrp`: the daemon and its command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vrrp_user::{config, control, daemon, dataplane::KernelLogLevel};

#[derive(Parser)]
#[command(name = "xvrrp", version, about = "VRRP with an XDP data plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Log filter, e.g. `info` or `xvrrp=debug` (RUST_LOG is used when this is absent).
        #[arg(long)]
        log_level: Option<String>,
        /// Log lines as text, or as one JSON object per line (for log shippers).
        #[arg(long, value_enum, default_value = "text", env = "XVRRP_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Show the state of a running daemon: one line per instance, or --json.
    Status {
        /// The daemon's control socket (default: /run/xvrrp/<interface>.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The interface whose daemon to ask (names the default socket).
        #[arg(long, short)]
        interface: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration file; print every problem and exit 1 if there is any.
    CheckConfig {
        /// The configuration file (TOML).
        file: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Status {
            socket,
            interface,
            json,
        } => {
            let path = match (socket, interface) {
                (Some(p), _) => p,
                (None, Some(i)) => control::default_socket(&i),
                (None, None) => {
                    eprintln!(
                        "xvrrp status: name the daemon with --interface IFACE or --socket PATH"
                    );
                    return ExitCode::FAILURE;
                }
            };
            match control::query(&path) {
                Ok(status) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&status).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(status) => {
                    print!("{}", control::table(&status));
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("xvrrp status: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match config::load(&file) {
            Ok(config) => {
                println!(
                    "{}: OK ({} instance{} on {})",
                    file.display(),
                    config.instances.len(),
                    if config.instances.len() == 1 { "" } else { "s" },
                    config.interface
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            log_level,
            log_format,
        } => {
            let filter = match log_level {
                Some(level) => EnvFilter::new(level),
                None => {
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
                }
            };
            let kernel_log = if filter
                .max_level_hint()
                .is_some_and(|l| l >= tracing::level_filters::LevelFilter::DEBUG)
            {
                KernelLogLevel::Debug
            } else {
                KernelLogLevel::Info
            };
            let logs = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr);
            match log_format {
                LogFormat::Text => logs
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .init(),
                LogFormat::Json => logs.json().with_current_span(false).init(),
            }
            let path = config;
            let config = match config::load(&path) {
                Ok(config) => config,
                Err(err) => {
                    for line in err.to_string().lines() {
                        tracing::error!("{line}");
                    }
                    tracing::error!("refusing to start: the configuration is not valid");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(err) => {
                    tracing::error!(error = %err, "cannot start the runtime");
                    return ExitCode::FAILURE;
                }
            };
            // Every line of the daemon names its interface.
            let span = tracing::info_span!("xvrrp", interface = %config.interface);
            let run = tracing::Instrument::instrument(daemon::run(config, &path, kernel_log), span);
            match runtime.block_on(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
