//! Wiring for `hookside serve`: the shared [`State`], reloads (one code path with the first
//! load), Run Webhook for the `/test` route, listeners and signals.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::settings::Company;
use crate::config::{self, Problem, Settings};
use crate::metrics::Metrics;
use crate::registry::{Registry, ReloadOutcome, Snapshot};
use crate::server::{self, Api};
use crate::upstream::Upstream;

/// How often the directory is re-scanned even without any signal.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);

/// How often a directory that could not be loaded yet is tried again.
pub const NOT_READY_RETRY: Duration = Duration::from_secs(1);

/// What every request handler shares.
#[derive(Debug)]
pub struct State {
    /// The watched directory.
    pub dir: PathBuf,
    /// Settings from the config file; fixed for the life of the process, but for the
    /// caller tokens, which every reload reads again (`Snapshot::companies`).
    pub settings: Arc<Settings>,
    /// The config file, if any.
    pub config: Option<PathBuf>,
    /// The upstream clients; one set for the life of the process, so pools persist.
    pub upstream: Arc<Upstream>,
    /// The current snapshot of webhooks.
    pub registry: Registry,
    /// Set when shutdown starts: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    /// Serialises reloads, so two never build snapshots from the same previous one.
    reload_lock: tokio::sync::Mutex<()>,
    /// Every metric; reloads and invocations record here.
    pub metrics: Metrics,
    /// Whether the watcher polls (kept by the watcher, read by `/metrics`).
    pub watch_polling: Arc<AtomicBool>,
    /// Set by the watcher; a `Notify` stores one permit, so a burst of signals while a
    /// reload runs makes exactly one more reload.
    pub reload_wanted: tokio::sync::Notify,
    /// Bot calls running on tasks of their own (those hyper serves), which run to their
    /// end even when their caller goes away: the drain at shutdown waits for them too.
    pub calls: tokio_util::task::TaskTracker,
}

/// Options of `hookside serve`.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The webhook directory.
    pub dir: PathBuf,
    /// The bot API's address.
    pub listen: String,
    /// The admin API's address.
    pub admin_listen: String,
    /// The config file, if any.
    pub config: Option<PathBuf>,
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config file is invalid.
    #[error("the config file is invalid:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config(Vec<Problem>),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl State {
    /// A state with nothing loaded yet.
    pub fn new(dir: PathBuf, settings: Settings) -> Arc<State> {
        State::with_config(dir, settings, None)
    }

    /// A state with nothing loaded yet, whose reloads read `config`'s caller tokens again.
    pub fn with_config(dir: PathBuf, settings: Settings, config: Option<PathBuf>) -> Arc<State> {
        let upstream = Arc::new(Upstream::new(settings.deny_networks.clone()));
        let registry = Registry::default();
        registry.swap(Snapshot {
            companies: Arc::new(settings.companies.clone()),
            ..Snapshot::default()
        });
        Arc::new(State {
            dir,
            settings: Arc::new(settings),
            config,
            upstream,
            registry,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_wanted: tokio::sync::Notify::new(),
            metrics: Metrics::new(),
            watch_polling: Arc::new(AtomicBool::new(false)),
            calls: tokio_util::task::TaskTracker::new(),
        })
    }
}

/// Loads the config file (or the defaults).
pub fn load_settings(path: Option<&std::path::Path>) -> Result<Settings, Vec<Problem>> {
    match path {
        Some(path) => Settings::load(path),
        None => Ok(Settings::default()),
    }
}

/// Rescans the directory and swaps in a new snapshot. A file that fails keeps its last
/// good version; a directory that cannot be read keeps the whole previous snapshot.
pub async fn reload(state: &State, reason: &str) {
    let _guard = state.reload_lock.lock().await;
    let started = Instant::now();
    let previous = state.registry.snapshot();
    // Loading reads files: off the runtime's threads (with one core, the only one). A bug
    // in loading must never take down what serves: a panic is a failed reload.
    let (dir, settings, upstream, before, config_file) = (
        state.dir.clone(),
        Arc::clone(&state.settings),
        Arc::clone(&state.upstream),
        Arc::clone(&previous),
        state.config.clone(),
    );
    let (result, callers) = tokio::task::spawn_blocking(move || {
        let loaded = config::load(&dir, &settings, &upstream, before.loaded.as_ref());
        let callers = config_file.map(|path| Settings::load(&path).map(|s| s.companies));
        release_freed_memory();
        (loaded, callers)
    })
    .await
    .unwrap_or_else(|_| {
        let path = state.dir.clone();
        (Err(config::LoadError::Panicked { path }), None)
    });
    // A config file that fails now keeps the tokens that serve (its other settings take
    // effect only at a restart), and fails the reload, so that alerts on
    // `hookside_config_last_reload_successful` see it.
    let mut config_error = None;
    let mut config_problems = Vec::new();
    let companies = match callers {
        Some(Ok(companies)) => Arc::new(companies),
        Some(Err(problems)) => {
            config_problems = problems.iter().map(ToString::to_string).collect();
            config_error = config_problems.first().map(|problem| {
                format!("the config file fails, its caller tokens are kept: {problem}")
            });
            Arc::clone(&previous.companies)
        }
        None => Arc::clone(&previous.companies),
    };
    // Each problem once, as for webhook files, and the repair.
    for problem in config_problems
        .iter()
        .filter(|p| !previous.config_problems.contains(p))
    {
        tracing::warn!(%problem, "the config file fails; the caller tokens that serve are kept");
    }
    if config_problems.is_empty() && !previous.config_problems.is_empty() {
        tracing::info!(
            reason,
            "the config file loads again; its caller tokens serve"
        );
    }
    let duration = started.elapsed();
    let next = match result {
        Ok(loaded) => {
            if previous.dir_error.is_some() {
                tracing::info!(reason, dir = %state.dir.display(), "the webhook directory reads again");
            }
            log_changes(previous.loaded.as_ref(), &loaded, reason, duration);
            warn_open_case_variants(&previous, &loaded, &companies);
            update_series(&state.metrics, previous.loaded.as_ref(), &loaded);
            let success = loaded.failed_files() == 0 && config_error.is_none();
            // The config file, when it fails, is one of the files with errors.
            let failed_files = loaded.failed_files() + usize::from(config_error.is_some());
            state
                .metrics
                .reloaded(success, loaded.webhooks.len(), failed_files);
            Snapshot {
                loaded: Some(loaded),
                companies,
                config_problems,
                dir_error: None,
                revision: previous.revision + 1,
                last_reload: Some(ReloadOutcome {
                    at: SystemTime::now(),
                    duration,
                    success,
                    error: config_error,
                }),
            }
        }
        Err(err) => {
            // A directory that cannot be read, once per error: a missing one is retried
            // every second until it loads. Any other failure (a panic) every time.
            let dir_error =
                matches!(err, config::LoadError::Directory { .. }).then(|| err.to_string());
            if dir_error.is_none() || previous.dir_error != dir_error {
                tracing::error!(reason, error = %err, "reload failed; keeping what serves");
            }
            let (webhooks, failed) = previous
                .loaded
                .as_ref()
                .map_or((0, 0), |l| (l.webhooks.len(), l.failed_files()));
            let failed = failed + usize::from(config_error.is_some());
            state.metrics.reloaded(false, webhooks, failed);
            Snapshot {
                loaded: previous.loaded.clone(),
                companies,
                config_problems,
                dir_error,
                revision: previous.revision + 1,
                last_reload: Some(ReloadOutcome {
                    at: SystemTime::now(),
                    duration,
                    success: false,
                    error: Some(match config_error {
                        Some(config) => format!("{err}; {config}"),
                        None => err.to_string(),
                    }),
                }),
            }
        }
    };
    state.registry.swap(next);
}

/// Removes the series of webhooks that are gone (deleted, renamed, moved to another
/// company) and creates those of new ones, at zero.
fn update_series(metrics: &Metrics, previous: Option<&config::Loaded>, loaded: &config::Loaded) {
    let current: std::collections::HashSet<(&str, &str)> = loaded
        .webhooks
        .values()
        .map(|s| (s.webhook.name.as_str(), s.webhook.company.as_str()))
        .collect();
    for served in previous.iter().flat_map(|p| p.webhooks.values()) {
        let pair = (
            served.webhook.name.as_str(),
            served.webhook.company.as_str(),
        );
        if !current.contains(&pair) {
            metrics.forget(pair.0, pair.1);
        }
    }
    for served in loaded.webhooks.values() {
        let webhook = &served.webhook;
        webhook
            .metrics
            .get_or_init(|| metrics.webhook(&webhook.name, &webhook.company));
    }
}

/// Warns of each webhook whose company has no caller tokens while a company of the config
/// file whose name differs only in case has some: it is open to any caller. Once, when it
/// becomes so (at start, or when its file or the config file changes), not at every rescan.
fn warn_open_case_variants(
    previous: &Snapshot,
    loaded: &config::Loaded,
    companies: &HashMap<String, Company>,
) {
    let was_warned = |name: &str, company: &str, variant: &str| {
        let before = previous.loaded.as_ref().and_then(|l| l.webhooks.get(name));
        before.is_some_and(|served| served.webhook.company == company)
            && config::settings::case_variant(&previous.companies, company) == Some(variant)
    };
    for served in loaded.webhooks.values() {
        let webhook = &served.webhook;
        let variant = config::settings::case_variant(companies, &webhook.company);
        if let Some(variant) = variant.filter(|v| !was_warned(&webhook.name, &webhook.company, v)) {
            tracing::warn!(
                webhook = %webhook.name,
                company = %webhook.company,
                config_company = variant,
                "this webhook's company has no caller tokens, so any caller may call it; \
                 the config file has a company whose name differs only in case"
            );
        }
    }
}

/// One line per reload that changed something, at `info`: webhooks added, changed (their
/// files) or removed, webhooks whose secrets or CA file changed (a rotation), and the
/// problems that appeared (each on a line of its own, at `error`) or went away. A reload
/// that changed none of these (the periodic rescan, mostly) is logged at `debug`, and a
/// problem that stays is not told again.
fn log_changes(
    previous: Option<&config::Loaded>,
    loaded: &config::Loaded,
    reason: &str,
    duration: Duration,
) {
    let known: HashSet<&Problem> = previous.map(|p| p.problems().collect()).unwrap_or_default();
    let current: HashSet<&Problem> = loaded.problems().collect();
    for problem in loaded.problems().filter(|p| !known.contains(p)) {
        tracing::error!(problem = %problem, "webhook file error");
    }
    let appeared = current.difference(&known).count();
    let fixed = known.difference(&current).count();
    let before = |name: &str| previous.and_then(|p| p.webhooks.get(name));
    let names = |keep: &dyn Fn(&str, &config::Webhook) -> bool| -> Vec<&str> {
        loaded
            .webhooks
            .iter()
            .filter(|(name, served)| keep(name, &served.webhook))
            .map(|(name, _)| name.as_str())
            .collect()
    };
    let added = names(&|name, _| before(name).is_none());
    let changed = names(&|name, webhook| {
        before(name).is_some_and(|old| old.webhook.revision != webhook.revision)
    });
    let secrets_changed = names(&|name, webhook| {
        before(name).is_some_and(|old| {
            old.webhook.revision == webhook.revision && !old.webhook.same_secrets_as(webhook)
        })
    });
    let removed: Vec<&str> = previous
        .map(|p| {
            p.webhooks
                .keys()
                .filter(|name| !loaded.webhooks.contains_key(*name))
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default();
    if loaded.webhooks.is_empty() && previous.is_none_or(|p| !p.webhooks.is_empty()) {
        // Ready and serving nothing: a ConfigMap mounted at another path, say.
        tracing::warn!(
            reason,
            "no webhook is serving: the directory has no webhook file, or none loads"
        );
    }
    let quiet = added.is_empty()
        && changed.is_empty()
        && secrets_changed.is_empty()
        && removed.is_empty()
        && appeared == 0
        && fixed == 0;
    if quiet && previous.is_some() {
        tracing::debug!(
            reason,
            webhooks = loaded.webhooks.len(),
            failed_files = loaded.failed_files(),
            "reloaded, nothing changed"
        );
        return;
    }
    tracing::info!(
        reason,
        webhooks = loaded.webhooks.len(),
        failed_files = loaded.failed_files(),
        added = ?added,
        changed = ?changed,
        secrets_changed = ?secrets_changed,
        removed = ?removed,
        problems_fixed = fixed,
        duration_ms = (duration.as_secs_f64() * 1e6).round() / 1e3,
        "reloaded"
    );
}

/// Runs the sidecar until SIGTERM or SIGINT: binds both listeners, loads the directory,
/// keeps it fresh (periodic rescan, SIGHUP, `POST /-/reload`), then drains.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let settings = load_settings(options.config.as_deref()).map_err(ServeError::Config)?;
    let state = State::with_config(options.dir.clone(), settings, options.config.clone());
    let bot = bind(&options.listen).await?;
    let admin = bind(&options.admin_listen).await?;
    tracing::info!(
        bot = %local(&bot), admin = %local(&admin), dir = %options.dir.display(),
        "hookside listening"
    );
    reload(&state, "start").await;
    let watcher = start_watching(&state, crate::watch::mode_from_env());

    let (stop_tx, stop_rx) = watch::channel(false);
    let refresher = tokio::spawn(keep_fresh(Arc::clone(&state), stop_rx.clone()));
    let signals = tokio::spawn(watch_signals(Arc::clone(&state), stop_tx));
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // The bot API stops accepting at the first stop signal and drains; the admin API keeps
    // answering (`/readyz` says 503, `/metrics` still counts) until the drain is over.
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let bot_then_admin = async {
        server::run(bot, Arc::clone(&state), Api::Bot, stopped(stop_rx.clone())).await;
        let _ = admin_stop_tx.send(true);
    };
    tokio::join!(
        bot_then_admin,
        server::run(
            admin,
            Arc::clone(&state),
            Api::Admin,
            stopped(admin_stop_rx)
        ),
    );
    refresher.abort();
    signals.abort();
    drop(watcher);
    tracing::info!("stopped");
    Ok(())
}

async fn bind(address: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind {
            address: address.to_owned(),
            source,
        })
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a: SocketAddr| a.to_string())
}

/// Starts the directory watcher; its signals wake [`keep_fresh`].
pub fn start_watching(state: &Arc<State>, mode: crate::watch::Mode) -> crate::watch::Handle {
    let signalled = Arc::clone(state);
    let linking = Arc::clone(state);
    crate::watch::spawn(
        state.dir.clone(),
        mode,
        Arc::clone(&state.watch_polling),
        move || {
            signalled.reload_wanted.notify_one();
        },
        move || {
            let snapshot = linking.registry.snapshot();
            snapshot
                .loaded
                .as_ref()
                .map_or_else(Vec::new, |loaded| loaded.links.clone())
        },
    )
}

/// Reloads on the watcher's signal, every 30 s as a safety net, and every second while the
/// directory has not loaded.
pub async fn keep_fresh(state: Arc<State>, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = if state.registry.snapshot().ready() {
            RESCAN_INTERVAL
        } else {
            NOT_READY_RETRY
        };
        tokio::select! {
            () = state.reload_wanted.notified() => reload(&state, "watch").await,
            () = tokio::time::sleep(wait) => reload(&state, "periodic").await,
            _ = stop.changed() => return,
        }
    }
}

/// SIGHUP reloads; the first SIGTERM or SIGINT starts the drain, a second exits at once.
async fn watch_signals(state: Arc<State>, stop: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    reload(&state, "SIGHUP").await;
                    continue;
                }
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if state.draining.swap(true, Ordering::SeqCst) {
                tracing::warn!("second stop signal: exiting now");
                std::process::exit(1);
            }
            tracing::info!("stop signal: draining in-flight invocations");
            let _ = stop.send(true);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        state.draining.store(true, Ordering::SeqCst);
        let _ = stop.send(true);
    }
}

/// Hands the memory this thread freed back to the OS. A load frees several times what it
/// keeps (file texts, parse trees), and mimalloc purges the freed pages of a thread only
/// when that thread allocates again: a reload thread that then idles would keep them
/// resident (4.5 MiB with 1,000 webhooks).
fn release_freed_memory() {
    #[cfg(feature = "mimalloc")]
    #[allow(unsafe_code)]
    // SAFETY: `mi_collect` only walks the allocator's own free lists and may be called from
    // any thread at any time; it touches no memory of ours.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}
