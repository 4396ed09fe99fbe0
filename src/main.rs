//! The `hookside` command: parses flags, sets up logging, calls the library and maps the
//! outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hookside::app::{self, ServeOptions};
use hookside::config;
use hookside::upstream::Upstream;

/// A webhook sidecar for chatbot containers.
#[derive(Debug, Parser)]
#[command(name = "hookside", version, about)]
struct Cli {
    /// Log format on stderr (level from RUST_LOG, default info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "HOOKSIDE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar.
    Serve {
        /// The webhook directory.
        #[arg(long, env = "HOOKSIDE_DIR", default_value = "webhooks.d")]
        dir: PathBuf,
        /// The bot API's address.
        #[arg(long, env = "HOOKSIDE_LISTEN", default_value = "127.0.0.1:8787")]
        listen: String,
        /// The admin API's address (health, readiness, reload state).
        #[arg(long, env = "HOOKSIDE_ADMIN_LISTEN", default_value = "127.0.0.1:9797")]
        admin_listen: String,
        /// The config file.
        #[arg(long, env = "HOOKSIDE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load and validate every webhook file; print one line per problem.
    Check {
        /// The webhook directory.
        #[arg(long, env = "HOOKSIDE_DIR", default_value = "webhooks.d")]
        dir: PathBuf,
        /// The config file.
        #[arg(long, env = "HOOKSIDE_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Serve {
            dir,
            listen,
            admin_listen,
            config,
        } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("hookside: cannot start the runtime: {err}");
                    return ExitCode::from(2);
                }
            };
            let options = ServeOptions {
                dir,
                listen,
                admin_listen,
                config,
            };
            match runtime.block_on(app::serve(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("hookside: {:#}", anyhow::Error::from(err));
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { dir, config } => check(&dir, config.as_deref()),
    }
}

fn check(dir: &std::path::Path, config_path: Option<&std::path::Path>) -> ExitCode {
    let settings = match app::load_settings(config_path) {
        Ok(settings) => settings,
        Err(problems) => {
            for problem in problems {
                println!("{problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    let upstream = Upstream::new(settings.deny_networks.clone());
    match config::load(dir, &settings, &upstream, None) {
        Err(err) => {
            println!("{}: {err}", dir.display());
            ExitCode::FAILURE
        }
        Ok(loaded) => {
            let mut count = 0;
            for problem in loaded.problems() {
                println!("{problem}");
                count += 1;
            }
            if count > 0 {
                println!("{count} problem(s) in {} file(s)", loaded.failed_files());
                ExitCode::FAILURE
            } else {
                println!(
                    "ok: {} file(s), {} webhook(s)",
                    loaded.files.len(),
                    loaded.webhooks.len()
                );
                ExitCode::SUCCESS
            }
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
