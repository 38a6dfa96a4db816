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
    /// Write the xvrrp config equivalent to a keepalived.conf's VRRP side (one for the host,
    /// named after the first instance's interface), and list on stderr what could not be
    /// carried over and why.
    ImportKeepalived {
        /// The keepalived configuration (includes are followed).
        file: PathBuf,
        /// Where to write: a file, or a directory that gets <interface>.toml. Without it, the
        /// config goes to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run a witness: the third vote of a MySQL pair's write lease, on any third host.
    Witness {
        /// The address (the witness's identity for the nodes: their `write_lease.witness`)
        /// and UDP port to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The environment variable holding the key shared with the nodes.
        #[arg(long, default_value = "XVRRP_LEASE_KEY")]
        key_env: String,
        /// The longest lease granted, ms; also how long a started witness grants nothing (it
        /// may have forgotten a grant that still runs). At least the nodes' lease_ms.
        #[arg(long, default_value_t = 10_000)]
        max_lease_ms: u32,
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
        Command::Witness {
            listen,
            key_env,
            max_lease_ms,
        } => witness(listen, &key_env, max_lease_ms),
        Command::ImportKeepalived { file, output } => import_keepalived(&file, output.as_deref()),
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
            // Every line of the daemon names its interface.
            let span = tracing::info_span!("xvrrp", interface = %config.interface);
            let run = tracing::Instrument::instrument(daemon::run(config, &path, kernel_log), span);
            block_on(run, "")
        }
    }
}

/// `xvrrp witness`.
fn witness(listen: std::net::SocketAddr, key_env: &str, max_lease_ms: u32) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let key = match std::env::var(key_env) {
        Ok(k) if k.len() >= 16 => k.into_bytes(),
        _ => {
            tracing::error!(
                "xvrrp witness: expected the shared key (at least 16 bytes) in the environment variable {key_env}"
            );
            return ExitCode::FAILURE;
        }
    };
    let run = vrrp_user::lease::task::run_witness(listen, key, max_lease_ms, daemon::now);
    block_on(run, "xvrrp witness: ")
}

/// Runs `fut` on a single-threaded runtime; an error is logged (after `prefix`) as the reason
/// for a failed exit.
fn block_on(fut: impl Future<Output = anyhow::Result<()>>, prefix: &str) -> ExitCode {
    // The pacer tells a stuck runtime thread from a waiting one by these marks.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(daemon::runtime_parked)
        .on_thread_unpark(daemon::runtime_unparked)
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{prefix}{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `xvrrp import-keepalived`.
fn import_keepalived(file: &std::path::Path, output: Option<&std::path::Path>) -> ExitCode {
    use std::os::unix::fs::OpenOptionsExt as _;
    let imported = match vrrp_user::import::import(file) {
        Ok(i) => i,
        Err(err) => {
            eprintln!("xvrrp import-keepalived: {err}");
            return ExitCode::FAILURE;
        }
    };
    if imported.files.is_empty() {
        eprint!("{}", vrrp_user::import::report(&imported));
        eprintln!(
            "xvrrp import-keepalived: {}: no vrrp_instance with an interface; nothing to write",
            file.display()
        );
        return ExitCode::FAILURE;
    }
    let several = imported.files.len() > 1;
    // Never a file that check-config refuses: every one validates here, or nothing is written.
    let invalid: Vec<String> = imported
        .files
        .iter()
        .filter_map(|f| {
            let name = format!("{}.toml", f.interface);
            config::parse(&f.toml, std::path::Path::new(&name))
                .err()
                .map(|e| {
                    e.to_string()
                        .lines()
                        .map(|p| f.locate(p))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
        })
        .collect();
    if !invalid.is_empty() {
        eprint!("{}", vrrp_user::import::report(&imported));
        eprintln!(
            "xvrrp import-keepalived: {}: the converted configuration does not validate, so nothing was written:",
            file.display()
        );
        for problem in invalid.iter().flat_map(|p| p.lines()) {
            eprintln!("  - {problem}");
        }
        return ExitCode::FAILURE;
    }
    for f in &imported.files {
        let name = format!("{}.toml", f.interface);
        // The config may hold a MySQL password: 0600.
        let write = |path: &std::path::Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut out| std::io::Write::write_all(&mut out, f.toml.as_bytes()))
                .map(|()| eprintln!("wrote {}", path.display()))
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        let written = match output {
            None => {
                if several {
                    println!("# ==> {name} <==");
                }
                print!("{}", f.toml);
                Ok(())
            }
            Some(dir)
                if several || dir.is_dir() || dir.as_os_str().to_string_lossy().ends_with('/') =>
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))
                    .and_then(|()| write(&dir.join(&name)))
            }
            Some(path) => write(path),
        };
        if let Err(err) = written {
            eprintln!("xvrrp import-keepalived: cannot write {err}");
            return ExitCode::FAILURE;
        }
    }
    eprint!("{}", vrrp_user::import::report(&imported));
    ExitCode::SUCCESS
}
