//! One immutable snapshot of compiled webhooks and the last reload's outcome, swapped
//! whole. A request loads the snapshot once and uses it to the end, so a reload never
//! changes a webhook under an invocation in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::Loaded;
use crate::config::settings::Company;

/// Everything a request or a listing reads, consistent with itself.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The loaded directory; `None` until the first load succeeds.
    pub loaded: Option<Loaded>,
    /// Increases with every swap.
    pub revision: u64,
    /// The last reload attempt, successful or not.
    pub last_reload: Option<ReloadOutcome>,
    /// The companies' caller tokens: read from the config file at start and again at
    /// every reload, so a rotated token takes effect with the webhooks.
    pub companies: Arc<HashMap<String, Company>>,
    /// The config file's problems at the last reload (empty when it loaded, or when there is
    /// none), to log each once and its repair.
    pub config_problems: Vec<String>,
    /// Why the directory could not be read at the last reload (`None` when it could), to
    /// log the error once and its repair, not at every retry.
    pub dir_error: Option<String>,
}

/// What the last reload did.
#[derive(Clone, Debug)]
pub struct ReloadOutcome {
    /// When it finished.
    pub at: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// Whether every file loaded (a reload with a failing file is a failure).
    pub success: bool,
    /// The directory error, when the directory could not be read at all.
    pub error: Option<String>,
}

/// The current snapshot. `ArcSwap`: readers never lock and never wait for a reload.
#[derive(Debug, Default)]
pub struct Registry {
    current: ArcSwap<Snapshot>,
}

impl Registry {
    /// The current snapshot, held by the caller until it is done.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot.
    pub fn swap(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

impl Snapshot {
    /// Whether the directory has loaded at least once.
    pub fn ready(&self) -> bool {
        self.loaded.is_some()
    }
}
