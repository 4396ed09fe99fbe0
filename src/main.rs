//! The `hookside` command: parses flags, sets up logging, calls the library and maps the
//! outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hookside::app::{self, ServeOptions};
use hookside::config;
use hookside::config::Problem;
use hookside::upstream::Upstream;

/// mimalloc: an invocation makes about a hundred short-lived allocations, on which glibc's
/// malloc spent a quarter of hookside's instructions (bench/run.py, callgrind).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A webhook sidecar for chatbot containers.
#[derive(Debug, Parser)]
#[command(name = "hookside", version, about)]
struct Cli {
    /// Log format on stderr (level from RUST_LOG, default info,notify=warn).
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
    /// Load and validate every webhook file and run every example offline; print one line
    /// per problem as PATH:LINE:COL: message. Exit 1 on any problem.
    Check {
        /// The webhook directory.
        #[arg(long, env = "HOOKSIDE_DIR", default_value = "webhooks.d")]
        dir: PathBuf,
        /// The config file.
        #[arg(long, env = "HOOKSIDE_CONFIG")]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Run Webhook: run one webhook once and print the rendered request (secrets as ***),
    /// the status, the time, the response and the Custom Variables. Exit 0 when the call
    /// succeeded (2xx) and every variable mapped, 1 otherwise, 2 when it could not run.
    Run {
        /// The webhook's name.
        name: String,
        /// The webhook directory.
        #[arg(long, env = "HOOKSIDE_DIR", default_value = "webhooks.d")]
        dir: PathBuf,
        /// The conversation JSON: a file, or - for standard input (default: {}).
        #[arg(long)]
        context: Option<String>,
        /// Render the request without sending it.
        #[arg(long)]
        dry_run: bool,
        /// Print the run as JSON (the shape of POST /v1/webhooks/{name}/test).
        #[arg(long)]
        json: bool,
        /// The config file (limits, destination policy).
        #[arg(long, env = "HOOKSIDE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of a webhook file (for editors and CI).
    Schema,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
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
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(err) => {
                    fatal(cli.log_format, &format!("cannot start the runtime: {err}"));
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
                    // The error's text holds its cause (`cannot listen on ADDRESS: CAUSE`).
                    fatal(cli.log_format, &err.to_string());
                    ExitCode::from(2)
                }
            }
        }
        Command::Check {
            dir,
            config,
            format,
        } => check(&dir, config.as_deref(), format),
        Command::Run {
            name,
            dir,
            context,
            dry_run,
            json,
            config,
        } => run(
            &name,
            &dir,
            context.as_deref(),
            dry_run,
            json,
            config.as_deref(),
        ),
        Command::Schema => {
            let schema = hookside::config::raw::schema();
            emit_json(&schema);
            ExitCode::SUCCESS
        }
    }
}

/// Writes `value` to stdout as pretty JSON, with a final line break ([`emit`]).
fn emit_json(value: &impl serde::Serialize) {
    emit(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ));
}

/// Writes a command's output to stdout. A reader that went away (`| head`, `| true`) is
/// not an error: the exit code still tells the result. Any other failure to write is.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("hookside: cannot write the output: {err}");
            std::process::exit(2);
        }
        _ => {}
    }
}

fn check(dir: &std::path::Path, config_path: Option<&std::path::Path>, format: Format) -> ExitCode {
    // A config file or a directory that cannot be read is a report too, in either format.
    let failed = |problems: Vec<Problem>| hookside::check::Report {
        ok: false,
        problems,
        warnings: Vec::new(),
        files: 0,
        webhooks: 0,
        examples: 0,
    };
    let settings = match config_path {
        Some(path) => config::Settings::load_for_check(path),
        None => Ok((config::Settings::default(), Vec::new())),
    };
    // A config file that fails is reported, and the webhooks are still checked, with the
    // default settings (and said so): CI shows every problem at once.
    let (settings, config_problems, config_warnings) = match (settings, config_path) {
        (Ok((settings, warnings)), _) => (settings, Vec::new(), warnings),
        (Err(problems), path) => {
            let note = Problem {
                path: path.map(std::path::Path::to_path_buf).unwrap_or_default(),
                line: None,
                column: None,
                message: "the webhooks were checked with the default settings, as this \
                          config file fails"
                    .to_owned(),
            };
            (config::Settings::default(), problems, vec![note])
        }
    };
    let mut report = match hookside::check::check(dir, &settings) {
        Ok(mut report) => {
            report.warnings.splice(0..0, config_warnings);
            report
        }
        Err(err) => failed(vec![Problem {
            path: dir.to_path_buf(),
            line: None,
            column: None,
            message: err.to_string(),
        }]),
    };
    report.ok &= config_problems.is_empty();
    report.problems.splice(0..0, config_problems);
    match format {
        Format::Text => emit(&report.to_text()),
        Format::Json => emit_json(&report),
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(
    name: &str,
    dir: &std::path::Path,
    context: Option<&str>,
    dry_run: bool,
    json: bool,
    config_path: Option<&std::path::Path>,
) -> ExitCode {
    let fail = |message: String| {
        eprintln!("hookside run: {message}");
        ExitCode::from(2)
    };
    // `run` calls no caller check: a caller token that is not set here does not stop it.
    let settings = match config_path {
        Some(path) => config::Settings::load_for_check(path).map(|(settings, _)| settings),
        None => Ok(config::Settings::default()),
    };
    let settings = match settings {
        // A dry run sends nothing: a secret that is not set here is a warning, and a
        // placeholder stands in (shown as `***` like any secret), as for `check`.
        Ok(settings) => config::Settings {
            secrets_optional: dry_run,
            ..settings
        },
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return fail(format!("the config file is invalid:\n{}", lines.join("\n")));
        }
    };
    let conversation: serde_json::Value = match context {
        None => serde_json::json!({}),
        Some(source) => {
            let text = if source == "-" {
                let mut text = String::new();
                match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                    Ok(_) => text,
                    Err(err) => return fail(format!("cannot read standard input: {err}")),
                }
            } else {
                match std::fs::read_to_string(source) {
                    Ok(text) => text,
                    Err(err) => return fail(format!("cannot read {source}: {err}")),
                }
            };
            match serde_json::from_str(&text) {
                Ok(value @ serde_json::Value::Object(_)) => value,
                Ok(_) => return fail("the conversation must be a JSON object".into()),
                Err(err) => return fail(format!("the conversation is not valid JSON: {err}")),
            }
        }
    };
    let upstream = Upstream::new(settings.deny_networks.clone());
    let loaded = match config::load(dir, &settings, &upstream, None) {
        Ok(loaded) => loaded,
        Err(err) => return fail(err.to_string()),
    };
    let Some(served) = loaded.webhooks.get(name) else {
        let own: Vec<String> = loaded
            .files
            .iter()
            // A file that did not parse far enough to name itself is the webhook of its stem.
            .filter(|f| match &f.name {
                Some(own) => own == name,
                None => f.path.file_stem().is_some_and(|stem| stem == name),
            })
            .flat_map(|f| f.errors.iter().map(ToString::to_string))
            .collect();
        let template = loaded
            .files
            .iter()
            .find(|f| f.kind == Some("template") && f.name.as_deref() == Some(name));
        if let (true, Some(template)) = (own.is_empty(), template) {
            return fail(format!(
                "{name:?} is a template ({}): run a webhook that extends it",
                template.path.display()
            ));
        }
        if own.is_empty() {
            return fail(format!("no webhook named {name:?} in {}", dir.display()));
        }
        return fail(format!(
            "webhook {name:?} does not load:\n{}",
            own.join("\n")
        ));
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(format!("cannot start the runtime: {err}")),
    };
    let result = runtime.block_on(hookside::testrun::run(
        &upstream,
        &served.webhook,
        &conversation,
        dry_run,
        settings.max_response_body,
    ));
    if json {
        emit_json(&result.to_json());
    } else {
        emit(&result.to_text());
    }
    if result.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One thread per core the process may use (CPU affinity and cgroup quotas count): on one
/// core a current-thread runtime, with no cross-thread wake-ups or work stealing; on more,
/// a work-stealing runtime with that many workers.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
    }
}

/// Why `serve` exits: on stderr in the log's format, and not through the log's filter
/// (`RUST_LOG=off` must not hide it).
fn fatal(format: LogFormat, error: &str) {
    match format {
        LogFormat::Text => eprintln!("hookside: {error}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "level": "ERROR",
                "fields": {"message": "cannot serve", "error": error},
                "target": "hookside",
            })
        ),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // notify logs a watch it could not remove (its folder is gone) at `info`.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,notify=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
