//! Webhook files and the config file: scanning the directory, parsing (with locations),
//! `extends`, secrets, and compiling to [`Webhook`]s.
//!
//! [`load`] is the one code path for start-up, reloads and (later) `hookside check`: it
//! scans, parses and compiles every file, and decides each file's state. A file that
//! fails keeps its previous version serving (`stale`) when the previous snapshot had one.

pub mod compile;
pub mod raw;
pub mod secret;
pub mod settings;
pub mod source;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use compile::{Body, Example, Webhook};
pub use raw::Kind;
pub use settings::Settings;
pub use source::{Location, Problem};

use raw::{Def, Fields};
use source::SourceFile;

use crate::upstream::Upstream;

/// What one load found: the webhooks to serve and every file's state.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Webhooks by name, with their state.
    pub webhooks: BTreeMap<String, Served>,
    /// Every file found, in path order.
    pub files: Vec<FileReport>,
    /// Parsed files by path with their content hash, so an unchanged file is not parsed
    /// again on the next reload.
    parsed: HashMap<PathBuf, (u64, Arc<Def>)>,
}

/// A webhook to serve and whether it is its file's current version.
#[derive(Clone, Debug)]
pub struct Served {
    /// The compiled webhook.
    pub webhook: Arc<Webhook>,
    /// `Ok`, or `Stale` when its file now fails and this is the last good version.
    pub state: FileState,
}

/// A file's state after a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Loaded and serving this version.
    Ok,
    /// Fails now; its last good version is serving.
    Stale,
    /// Fails, and nothing of it is serving.
    Error,
}

/// One file's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// The name it declares, when it parsed.
    pub name: Option<String>,
    /// `webhook` or `template`, when it parsed.
    pub kind: Option<&'static str>,
    /// Its state.
    pub state: FileState,
    /// Its problems (empty when `ok`).
    pub errors: Vec<Problem>,
}

/// Why a directory could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory does not exist or cannot be read.
    #[error("cannot read the webhook directory {}: {source}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Scans `dir`, parses and compiles every file. `previous` gives last-good versions and
/// the current owners of names.
pub fn load(
    dir: &Path,
    settings: &Settings,
    upstream: &Upstream,
    previous: Option<&Loaded>,
) -> Result<Loaded, LoadError> {
    let paths = scan(dir)?;
    let mut files: Vec<FileReport> = Vec::with_capacity(paths.len());
    let mut defs: Vec<(usize, Arc<Def>, u64)> = Vec::new();
    let mut parsed = HashMap::with_capacity(paths.len());
    for path in paths {
        let index = files.len();
        let shared: Arc<Path> = Arc::from(path.as_path());
        let mut report = FileReport {
            path,
            name: None,
            kind: None,
            state: FileState::Ok,
            errors: Vec::new(),
        };
        match std::fs::read_to_string(&shared) {
            Err(err) => report
                .errors
                .push(Location::file(shared).problem(format!("cannot read: {err}"))),
            Ok(text) => {
                let hash = hash_of(&text);
                let cached = previous
                    .and_then(|p| p.parsed.get(&report.path))
                    .filter(|(old, _)| *old == hash)
                    .map(|(_, def)| Ok(Arc::clone(def)));
                let outcome = cached
                    .unwrap_or_else(|| raw::parse(&SourceFile::new(shared, text)).map(Arc::new));
                match outcome {
                    Ok(def) => {
                        parsed.insert(report.path.clone(), (hash, Arc::clone(&def)));
                        report.name = Some(def.name.value.clone());
                        report.kind = Some(match def.kind {
                            Kind::Webhook => "webhook",
                            Kind::Template => "template",
                        });
                        defs.push((index, def, hash));
                    }
                    Err(problems) => report.errors = problems,
                }
            }
        }
        files.push(report);
    }

    // Names: the file already serving a name keeps it; on a cold start, path order wins.
    let owners: HashMap<&str, &Path> = previous
        .map(|p| {
            p.webhooks
                .iter()
                .map(|(name, served)| (name.as_str(), served.webhook.source.as_path()))
                .collect()
        })
        .unwrap_or_default();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut order: Vec<usize> = (0..defs.len()).collect();
    order.sort_by_key(|&i| {
        let (_, def, _) = &defs[i];
        let owns = owners.get(def.name.value.as_str()) == Some(&&*def.file.path);
        (!owns, i)
    });
    let mut claimed = vec![true; defs.len()];
    for i in order {
        let (index, def, _) = &defs[i];
        match by_name.get(&def.name.value) {
            None => {
                by_name.insert(def.name.value.clone(), i);
            }
            Some(&winner) => {
                claimed[i] = false;
                let other = defs[winner].1.file.path.display().to_string();
                files[*index].errors.push(def.name.problem(format!(
                    "name {:?} is already used by {other}",
                    def.name.value
                )));
            }
        }
    }

    let mut loaded = Loaded::default();
    for (i, (index, def, _)) in defs.iter().enumerate() {
        if !claimed[i] {
            continue;
        }
        let resolved = resolve_extends(i, &defs, &by_name);
        let outcome = match resolved {
            Err(problem) => Err(vec![problem]),
            Ok((fields, revision)) if def.kind == Kind::Webhook => {
                let fingerprint = fingerprint(revision, &fields);
                let unchanged = previous
                    .and_then(|p| p.webhooks.get(&def.name.value))
                    .filter(|old| {
                        old.state == FileState::Ok
                            && old.webhook.fingerprint == fingerprint
                            && *old.webhook.source == *def.file.path
                    })
                    .map(|old| Arc::clone(&old.webhook));
                match unchanged {
                    Some(webhook) => Ok(Some(webhook)),
                    None => {
                        compile::compile(def, &fields, revision, fingerprint, settings, upstream)
                            .map(|webhook| Some(Arc::new(webhook)))
                    }
                }
            }
            Ok(_) => Ok(None),
        };
        match outcome {
            Ok(Some(webhook)) => {
                loaded.webhooks.insert(
                    webhook.name.clone(),
                    Served {
                        webhook,
                        state: FileState::Ok,
                    },
                );
            }
            Ok(None) => {}
            Err(problems) => files[*index].errors.extend(problems),
        }
    }

    // Last good versions of failing files keep serving, unless their name is taken.
    let mut stale_paths = HashSet::new();
    if let Some(previous) = previous {
        let by_path: HashMap<&Path, &FileReport> = files.iter().map(|f| (f.path.as_path(), f)).collect();
        for (name, served) in &previous.webhooks {
            let Some(report) = by_path.get(served.webhook.source.as_path()) else {
                continue; // the file is gone: so is its webhook
            };
            if report.errors.is_empty() || loaded.webhooks.contains_key(name) {
                continue;
            }
            stale_paths.insert(report.path.clone());
            loaded.webhooks.insert(
                name.clone(),
                Served {
                    webhook: Arc::clone(&served.webhook),
                    state: FileState::Stale,
                },
            );
        }
    }
    for report in &mut files {
        if !report.errors.is_empty() {
            report.state = if stale_paths.contains(&report.path) {
                FileState::Stale
            } else {
                FileState::Error
            };
        }
    }
    loaded.files = files;
    loaded.parsed = parsed;
    Ok(loaded)
}

impl Loaded {
    /// Every problem of every file, in path order.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.files.iter().flat_map(|file| file.errors.iter())
    }

    /// How many files have problems.
    pub fn failed_files(&self) -> usize {
        self.files.iter().filter(|f| !f.errors.is_empty()).count()
    }
}

/// Follows `extends` from `defs[start]`, merging fields; the revision hashes the chain.
fn resolve_extends(
    start: usize,
    defs: &[(usize, Arc<Def>, u64)],
    by_name: &HashMap<String, usize>,
) -> Result<(Fields, u64), Problem> {
    let (_, def, hash) = &defs[start];
    let mut fields = def.fields.clone();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hash.hash(&mut hasher);
    let mut seen = vec![def.name.value.clone()];
    let mut next = def.extends.clone();
    while let Some(extends) = next {
        let Some(&parent) = by_name.get(&extends.value) else {
            return Err(extends.problem(format!("extends: no template named {:?}", extends.value)));
        };
        let (_, parent_def, parent_hash) = &defs[parent];
        if parent_def.kind != Kind::Template {
            return Err(extends.problem(format!(
                "extends: {:?} is a webhook, not a template (kind = \"template\")",
                extends.value
            )));
        }
        if seen.contains(&parent_def.name.value) {
            seen.push(parent_def.name.value.clone());
            return Err(extends.problem(format!("extends: cycle {}", seen.join(" -> "))));
        }
        seen.push(parent_def.name.value.clone());
        fields = fields.inherit(&parent_def.fields);
        parent_hash.hash(&mut hasher);
        next = parent_def.extends.clone();
    }
    Ok((fields, hasher.finish()))
}

/// Every `*.toml` file under `dir`, at any depth, in sorted order. Hidden entries (names
/// starting with `.`) are skipped; symbolic links are followed, each folder visited once.
pub fn scan(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut found = Vec::new();
    let mut visited = HashSet::new();
    let root = std::fs::read_dir(dir).map_err(|source| LoadError::Directory {
        path: dir.to_path_buf(),
        source,
    })?;
    if let Ok(canonical) = dir.canonicalize() {
        visited.insert(canonical);
    }
    walk(root, &mut visited, &mut found);
    found.sort();
    Ok(found)
}

fn walk(entries: std::fs::ReadDir, visited: &mut HashSet<PathBuf>, found: &mut Vec<PathBuf>) {
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue; // a dangling link
        };
        if metadata.is_dir() {
            let fresh = path
                .canonicalize()
                .map(|canonical| visited.insert(canonical))
                .unwrap_or(false);
            if fresh && let Ok(entries) = std::fs::read_dir(&path) {
                walk(entries, visited, found);
            }
        } else if metadata.is_file() && path.extension().is_some_and(|ext| ext == "toml") {
            found.push(path);
        }
    }
}

/// What decides whether a webhook must be compiled again: its files' contents, the current
/// values of the secrets it names (a rotated secret file counts as a change) and its CA
/// file's content.
fn fingerprint(revision: u64, fields: &Fields) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    revision.hash(&mut hasher);
    let auth = &fields.auth;
    let values = [&auth.username, &auth.password, &auth.token]
        .into_iter()
        .flatten()
        .chain(fields.headers.values())
        .map(|located| (located.value.as_str(), located.at.base_dir()));
    let queries = fields.query.values().flat_map(|located| {
        located
            .value
            .iter()
            .map(move |v| (v.as_str(), located.at.base_dir()))
    });
    for (value, base) in values.chain(queries) {
        if secret::has_reference(value) {
            match secret::resolve(value, base) {
                Ok(pieces) => secret::reveal(&pieces).hash(&mut hasher),
                Err(message) => message.hash(&mut hasher),
            }
        }
    }
    if let Some(ca) = &fields.ca_file {
        std::fs::read(ca.at.base_dir().join(&ca.value))
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    hasher.finish()
}

fn hash_of(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
