//! Watching the webhook directory: any change (notify) becomes one "reload" signal after a
//! short quiet period. The watcher never parses anything and never decides what changed:
//! the reload rescans the whole directory.
//!
//! Traps it handles: reads raise `open` events (ignored, so a reload never triggers
//! another); Kubernetes ConfigMaps and editors change files through renames and symlink
//! swaps that name no `*.toml` file (every other event counts); the directory itself can be
//! replaced or appear late (its identity is checked every second and the watch re-armed);
//! inotify can be unavailable (a polling watcher takes over, and says so); a symbolic
//! link may lead out of the directory, where a watch of it sees nothing change (where the
//! links lead is watched too, as each reload finds them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{Event, RecursiveMode, Watcher};

/// How long the directory must be quiet before a reload starts.
pub const QUIET: Duration = Duration::from_millis(100);

/// The longest a reload waits for quiet while events keep coming.
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// How often the directory's identity is checked (replaced, created, removed).
const IDENTITY_CHECK: Duration = Duration::from_secs(1);

/// How the directory is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// inotify (or the platform's equivalent), falling back to polling if it fails.
    Native,
    /// Polling at this interval (network filesystems, exhausted inotify limits).
    Poll(Duration),
}

/// A running watcher; dropping it stops the thread.
#[derive(Debug)]
pub struct Handle {
    stop: Arc<AtomicBool>,
    polling: Arc<AtomicBool>,
}

impl Handle {
    /// Whether the watcher is polling (asked for, or native watching failed).
    pub fn polling(&self) -> bool {
        self.polling.load(Ordering::Relaxed)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The mode asked for by `HOOKSIDE_WATCH` (`poll` or `poll:500ms`); native otherwise.
pub fn mode_from_env() -> Mode {
    match std::env::var("HOOKSIDE_WATCH") {
        Ok(value) if value.starts_with("poll") => {
            let interval = value
                .strip_prefix("poll:")
                .and_then(|d| humantime::parse_duration(d).ok())
                .unwrap_or(Duration::from_secs(1));
            Mode::Poll(interval)
        }
        _ => Mode::Native,
    }
}

/// Watches `dir` and calls `signal` once per burst of changes, from its own thread.
/// Returns once the watch is armed, so no change made after it returns is missed.
/// `polling` is kept up to date with whether the directory is polled. `links` says where
/// the directory's symbolic links lead outside it (directories, files), as the last
/// reload found them: those are watched too, from the next second on.
pub fn spawn(
    dir: PathBuf,
    mode: Mode,
    polling: Arc<AtomicBool>,
    signal: impl Fn() + Send + 'static,
    links: impl Fn() -> Vec<PathBuf> + Send + 'static,
) -> Handle {
    let stop = Arc::new(AtomicBool::new(false));
    polling.store(matches!(mode, Mode::Poll(_)), Ordering::Relaxed);
    let handle = Handle {
        stop: Arc::clone(&stop),
        polling: Arc::clone(&polling),
    };
    let (armed_tx, armed_rx) = channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("hookside-watch".into())
        .spawn(move || run(&dir, mode, &signal, &links, &stop, &polling, &armed_tx));
    match spawned {
        Ok(_) => {
            let _ = armed_rx.recv_timeout(Duration::from_secs(10));
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot start the watcher thread; relying on the periodic rescan");
        }
    }
    handle
}

fn run(
    dir: &Path,
    mut mode: Mode,
    signal: &dyn Fn(),
    links: &dyn Fn() -> Vec<PathBuf>,
    stop: &AtomicBool,
    polling: &AtomicBool,
    armed: &Sender<()>,
) {
    let (tx, rx) = channel::<notify::Result<Event>>();
    let mut identity = identify(dir);
    let mut watcher = arm(dir, &mut mode, &tx, polling);
    let mut outside = Outside::default();
    if let Some(watcher) = watcher.as_mut() {
        outside.follow(watcher.as_mut(), &links());
    }
    let _ = armed.send(());
    let mut last_check = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if wait_for_burst(&rx, stop, &outside) {
            signal();
        }
        if last_check.elapsed() >= IDENTITY_CHECK {
            last_check = Instant::now();
            let now = identify(dir);
            if now != identity {
                if now.is_none() {
                    tracing::info!(dir = %dir.display(), "the directory is gone; watching for it to come back");
                } else {
                    tracing::info!(dir = %dir.display(), "the directory was replaced or appeared; re-arming the watch");
                }
                identity = now;
                drop(watcher);
                watcher = arm(dir, &mut mode, &tx, polling);
                outside = Outside::default();
                signal();
            }
            if let Some(watcher) = watcher.as_mut() {
                outside.follow(watcher.as_mut(), &links());
            }
        }
    }
}

/// What is watched outside the directory, where its links lead.
#[derive(Default)]
struct Outside {
    /// Directories, watched with all they hold.
    dirs: BTreeSet<PathBuf>,
    /// Files; their folders are watched (a save by rename replaces a file).
    files: BTreeSet<PathBuf>,
    /// The folders of `files`, watched without what they hold below.
    folders: BTreeSet<PathBuf>,
}

impl Outside {
    /// Watches where `links` lead, and no longer where they no longer do.
    fn follow(&mut self, watcher: &mut dyn Watcher, links: &[PathBuf]) {
        let dirs: BTreeSet<PathBuf> = links.iter().filter(|p| p.is_dir()).cloned().collect();
        let files: BTreeSet<PathBuf> = links.iter().filter(|p| !p.is_dir()).cloned().collect();
        if dirs == self.dirs && files == self.files {
            return;
        }
        let folders: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|file| file.parent().map(Path::to_path_buf))
            .filter(|folder| !dirs.iter().any(|dir| folder.starts_with(dir)))
            .collect();
        for gone in self
            .dirs
            .difference(&dirs)
            .chain(self.folders.difference(&folders))
        {
            let _ = watcher.unwatch(gone);
        }
        for (paths, mode) in [
            (dirs.difference(&self.dirs), RecursiveMode::Recursive),
            (
                folders.difference(&self.folders),
                RecursiveMode::NonRecursive,
            ),
        ] {
            for path in paths {
                if let Err(err) = watcher.watch(path, mode) {
                    tracing::warn!(path = %path.display(), error = %err, "cannot watch where a link leads; relying on the periodic rescan");
                }
            }
        }
        (self.dirs, self.files, self.folders) = (dirs, files, folders);
    }

    /// Whether an event is only of other files in the folder of a linked file.
    fn unrelated(&self, event: &Event) -> bool {
        !event.paths.is_empty()
            && event.paths.iter().all(|path| {
                path.parent()
                    .is_some_and(|folder| self.folders.contains(folder))
                    && !self.files.contains(path)
            })
    }
}

/// Waits up to a second for a relevant event, then for quiet; true when a reload is due.
fn wait_for_burst(
    rx: &Receiver<notify::Result<Event>>,
    stop: &AtomicBool,
    outside: &Outside,
) -> bool {
    let first = match rx.recv_timeout(IDENTITY_CHECK) {
        Ok(event) => event,
        Err(RecvTimeoutError::Timeout) => return false,
        Err(RecvTimeoutError::Disconnected) => {
            std::thread::sleep(IDENTITY_CHECK);
            return false;
        }
    };
    if !relevant(&first) || first.as_ref().is_ok_and(|event| outside.unrelated(event)) {
        return false;
    }
    let started = Instant::now();
    while started.elapsed() < MAX_DELAY && !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(QUIET) {
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    true
}

/// Everything but reads: opening or closing a file without writing changes nothing.
fn relevant(event: &notify::Result<Event>) -> bool {
    match event {
        Ok(event) => match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        },
        // An error (overflowed queue, say) may hide changes: rescan.
        Err(_) => true,
    }
}

/// A directory's identity: where it resolves to, its inode and its creation time (an
/// inode number is often reused at once by `rm -rf` and `mkdir`), or nothing when missing.
fn identify(dir: &Path) -> Option<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let canonical = dir.canonicalize().ok()?;
    let metadata = std::fs::metadata(&canonical).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((canonical, inode, metadata.created().ok()))
}

/// Starts a recursive watcher on `dir` (a replaced directory is caught by the identity
/// check, not by watching the parent, which may be busy with unrelated files). Falls back
/// to polling when native watching fails.
fn arm(
    dir: &Path,
    mode: &mut Mode,
    tx: &Sender<notify::Result<Event>>,
    polling: &AtomicBool,
) -> Option<Box<dyn Watcher + Send>> {
    let handler = {
        let tx = tx.clone();
        move |event| {
            let _ = tx.send(event);
        }
    };
    let mut watcher: Box<dyn Watcher + Send> = match *mode {
        Mode::Native => match notify::recommended_watcher(handler.clone()) {
            Ok(watcher) => Box::new(watcher),
            Err(err) => {
                tracing::warn!(error = %err, "native file watching failed; polling every second");
                *mode = Mode::Poll(Duration::from_secs(1));
                polling.store(true, Ordering::Relaxed);
                return arm(dir, mode, tx, polling);
            }
        },
        Mode::Poll(interval) => {
            let config = notify::Config::default()
                .with_poll_interval(interval)
                .with_compare_contents(true);
            match notify::PollWatcher::new(handler, config) {
                Ok(watcher) => Box::new(watcher),
                Err(err) => {
                    tracing::error!(error = %err, "cannot poll the directory; relying on the periodic rescan");
                    return None;
                }
            }
        }
    };
    if dir.exists()
        && let Err(err) = watcher.watch(dir, RecursiveMode::Recursive)
    {
        if *mode == Mode::Native {
            tracing::warn!(error = %err, "native file watching failed; polling every second");
            *mode = Mode::Poll(Duration::from_secs(1));
            polling.store(true, Ordering::Relaxed);
            return arm(dir, mode, tx, polling);
        }
        tracing::error!(error = %err, "cannot watch the directory; relying on the periodic rescan");
    }
    Some(watcher)
}
