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
pub use source::{Located, Location, Problem};

use raw::Def;
use source::SourceFile;

use crate::upstream::Upstream;

/// What one load found: the webhooks to serve and every file's state.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Webhooks by name, with their state.
    pub webhooks: BTreeMap<String, Served>,
    /// Every file found, in path order.
    pub files: Vec<FileReport>,
    /// What the next reload needs of each parsed file, by path.
    parsed: HashMap<PathBuf, Parsed>,
    /// Which file holds each name, for the next reload: the files that won it, and those
    /// that hold it while they fail.
    owners: HashMap<String, PathBuf>,
    /// Where symbolic links in the directory lead outside it (canonical): what a watch of
    /// the directory does not see change, for the watcher to watch too.
    pub links: Vec<PathBuf>,
    /// `*.toml` links that lead nowhere, and why (missing, a loop, no permission): no file
    /// to serve (a ConfigMap's old links while it is swapped are such), but a mistake in a
    /// reviewed tree, which `check` reports.
    pub dangling: Dangling,
}

/// What a reload keeps of a parsed file: enough to resolve names and `extends` without
/// parsing it again. The whole definition is kept for templates only (other files merge
/// them); a webhook file is parsed again only when it, a template it extends or one of its
/// secrets changed, so an unchanged directory of 10,000 files reloads without parsing.
#[derive(Clone, Debug)]
struct Parsed {
    stamp: Stamp,
    hash: u64,
    kind: Kind,
    name: Located<String>,
    extends: Option<Located<String>>,
    def: Option<Arc<Def>>,
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
    /// Loading panicked (a bug): the previous snapshot keeps serving.
    #[error("loading {} failed unexpectedly; the previous version keeps serving", path.display())]
    Panicked {
        /// The directory.
        path: PathBuf,
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
    let (paths, links, dangling) = scan_with_links(dir)?;
    let mut files: Vec<FileReport> = Vec::with_capacity(paths.len());
    // (index in `files`, what was parsed)
    let mut entries: Vec<(usize, Parsed)> = Vec::with_capacity(paths.len());
    let now = std::time::SystemTime::now();
    for (path, stamp) in paths {
        let index = files.len();
        let mut report = FileReport {
            path,
            name: None,
            kind: None,
            state: FileState::Ok,
            errors: Vec::new(),
        };
        match read_and_parse(&report.path, stamp, now, previous) {
            Ok(parsed) => {
                report.name = Some(parsed.name.value.clone());
                report.kind = Some(match parsed.kind {
                    Kind::Webhook => "webhook",
                    Kind::Template => "template",
                });
                entries.push((index, parsed));
            }
            Err(problems) => report.errors = problems,
        }
        files.push(report);
    }

    // Names: a file that held a name on the previous load keeps it while it exists (even
    // when it fails now: its last good version serves); on a cold start, path order wins.
    // Not from `previous.parsed`, which also holds the files that lost a name: in a map's
    // order, a loser could take it on a reload with nothing changed.
    let mut owners: HashMap<&str, &Path> = HashMap::new();
    if let Some(previous) = previous {
        for (name, path) in &previous.owners {
            owners.insert(name.as_str(), path.as_path());
        }
        for (name, served) in &previous.webhooks {
            owners.insert(name.as_str(), served.webhook.source.as_path());
        }
    }
    let parsed_now: HashMap<&Path, &str> = entries
        .iter()
        .map(|(index, parsed)| (files[*index].path.as_path(), parsed.name.value.as_str()))
        .collect();
    let present: HashSet<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    // A file moved (`git mv`, a folder reorganised) keeps its name: the owner that is gone
    // is followed to a file with the same name and the same content, rather than the name
    // going to another file that was refused it.
    let mut moved: HashMap<&str, PathBuf> = HashMap::new();
    if let Some(previous) = previous {
        for (name, path) in &owners {
            if present.contains(*path) {
                continue;
            }
            let Some(old) = previous.parsed.get(*path) else {
                continue;
            };
            // The file that appeared with the same content, not a copy that was there
            // already (and refused the name).
            let new = |index: usize| !previous.parsed.contains_key(&files[index].path);
            if let Some((index, _)) = entries.iter().find(|(index, parsed)| {
                parsed.name.value == *name && parsed.hash == old.hash && new(*index)
            }) {
                moved.insert(name, files[*index].path.clone());
            }
        }
    }
    // Names held by files that exist but fail to parse now: nobody else may take them.
    let held: HashMap<&str, &Path> = owners
        .iter()
        .filter(|(_, path)| present.contains(*path) && !parsed_now.contains_key(*path))
        .map(|(name, path)| (*name, *path))
        .collect();
    let mut by_name: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| {
        let (index, parsed) = &entries[i];
        let name = parsed.name.value.as_str();
        let path = files[*index].path.as_path();
        let owns = owners.get(name) == Some(&path) || moved.get(name).is_some_and(|to| to == path);
        (!owns, i)
    });
    let mut claimed = vec![true; entries.len()];
    let mut rejections = Vec::new();
    for i in order {
        let (index, parsed) = &entries[i];
        let name = parsed.name.value.as_str();
        let holder = held
            .get(name)
            .filter(|path| **path != files[*index].path.as_path())
            .map(|path| path.display().to_string());
        let winner = by_name
            .get(name)
            .map(|&winner| files[entries[winner].0].path.display().to_string());
        match holder.or(winner) {
            None => {
                by_name.insert(name.to_owned(), i);
            }
            Some(other) => {
                claimed[i] = false;
                rejections.push((
                    *index,
                    parsed
                        .name
                        .problem(format!("name {name:?} is already used by {other}")),
                ));
            }
        }
    }
    for (index, problem) in rejections {
        files[index].errors.push(problem);
    }
    // The files that do not parse now, by the name they held or, failing that, their stem:
    // what a webhook extending one of them is told.
    let unparsed: HashMap<String, PathBuf> = files
        .iter()
        .filter(|f| f.name.is_none())
        .filter_map(|f| Some((f.path.file_stem()?.to_str()?.to_owned(), f.path.clone())))
        .chain(
            held.iter()
                .map(|(name, path)| ((*name).to_owned(), path.to_path_buf())),
        )
        .collect();
    let mut loaded = Loaded {
        links,
        dangling,
        owners: held
            .iter()
            .map(|(name, path)| ((*name).to_owned(), path.to_path_buf()))
            .chain(
                by_name
                    .iter()
                    .map(|(name, &i)| (name.clone(), files[entries[i].0].path.clone())),
            )
            .collect(),
        ..Loaded::default()
    };

    for (i, (index, parsed)) in entries.iter().enumerate() {
        if !claimed[i] {
            continue;
        }
        if parsed.kind == Kind::Template {
            // A template's own problems are its file's, used or not: its `extends`, and its
            // fields, checked on their own.
            let problems = match chain(i, &entries, &by_name, &unparsed) {
                Err(problems) => problems,
                Ok((chain, _, _)) => template_problems(&entries, i, &chain, settings, upstream),
            };
            files[*index].errors.extend(problems);
        }
    }
    // The problems of each template's own, to tell apart from those of its use.
    let of_templates: HashMap<&Path, &[Problem]> = entries
        .iter()
        .filter(|(_, parsed)| parsed.kind == Kind::Template)
        .map(|(index, _)| {
            (
                files[*index].path.as_path(),
                files[*index].errors.as_slice(),
            )
        })
        .collect();
    let mut webhook_problems = Vec::new();
    for (i, (index, parsed)) in entries.iter().enumerate() {
        if !claimed[i] || parsed.kind == Kind::Template {
            continue;
        }
        let path = &files[*index].path;
        let outcome = chain(i, &entries, &by_name, &unparsed)
            .map_err(|problems| {
                // A problem deeper in the chain is the template's; this file only learns
                // that what it extends does not load.
                if problems.iter().all(|p| p.path == *path) {
                    return problems;
                }
                let Some(extends) = &parsed.extends else {
                    return problems;
                };
                vec![extends.problem(format!(
                    "extends: template {:?} does not load; see its file",
                    extends.value
                ))]
            })
            .and_then(|(chain, revision, templates_hash)| {
                let reusable = previous
                    .and_then(|p| p.webhooks.get(&parsed.name.value))
                    .filter(|old| {
                        old.state == FileState::Ok
                            && old.webhook.revision_hash == revision
                            && old.webhook.source == *path
                            && old.webhook.secrets_unchanged()
                    })
                    .map(|old| Arc::clone(&old.webhook));
                if let Some(webhook) = reusable {
                    return Ok(webhook);
                }
                let def = match &parsed.def {
                    Some(def) => Arc::clone(def),
                    None => Arc::new(parse_file(path)?),
                };
                let mut fields = def.fields.clone();
                for &parent in &chain {
                    if let Some(parent) = &entries[parent].1.def {
                        fields = fields.inherit(&parent.fields);
                    }
                }
                let templates: Vec<&[Problem]> = chain
                    .iter()
                    .filter_map(|&parent| of_templates.get(files[entries[parent].0].path.as_path()))
                    .copied()
                    .collect();
                let compiled = compile::compile(&def, &fields, revision, settings, upstream)
                    .map(|mut webhook| {
                        webhook.templates_hash = templates_hash;
                        Arc::new(webhook)
                    })
                    .map_err(|problems| inherited(problems, parsed, path, &templates));
                // A template that fails and changed since this webhook's last good version
                // changes nothing that serves, not even for a webhook that overrides what
                // fails: the template's new text must not half-serve. (With no good
                // version to keep, at a start, the webhook is compiled with it as it is.)
                let broken = chain
                    .iter()
                    .map(|&parent| files[entries[parent].0].path.as_path())
                    .find(|template| {
                        of_templates
                            .get(template)
                            .is_some_and(|own| !own.is_empty())
                    });
                let kept = previous
                    .and_then(|p| p.webhooks.get(&parsed.name.value))
                    .filter(|old| old.webhook.source == *path);
                match (broken, kept, &parsed.extends) {
                    (Some(template), Some(old), Some(extends))
                        if old.webhook.templates_hash != templates_hash =>
                    {
                        let mut problems = compiled.err().unwrap_or_default();
                        let problem = extends.problem(format!(
                            "extends: template {:?} does not load; see {}",
                            extends.value,
                            template.display()
                        ));
                        if !problems.contains(&problem) {
                            problems.push(problem);
                        }
                        Err(problems)
                    }
                    _ => compiled,
                }
            });
        match outcome {
            Ok(webhook) => {
                loaded.webhooks.insert(
                    webhook.name.clone(),
                    Served {
                        webhook,
                        state: FileState::Ok,
                    },
                );
            }
            Err(problems) => webhook_problems.push((*index, problems)),
        }
    }
    for (index, problems) in webhook_problems {
        files[index].errors.extend(problems);
    }

    // Last good versions of failing files keep serving, unless their name is taken.
    // The name each stale file's last good version serves under.
    let mut stale_paths = HashMap::new();
    if let Some(previous) = previous {
        let by_path: HashMap<&Path, &FileReport> =
            files.iter().map(|f| (f.path.as_path(), f)).collect();
        for (name, served) in &previous.webhooks {
            let Some(report) = by_path.get(served.webhook.source.as_path()) else {
                continue; // the file is gone: so is its webhook
            };
            if report.errors.is_empty() || loaded.webhooks.contains_key(name) {
                continue;
            }
            stale_paths.insert(report.path.clone(), name.clone());
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
            report.state = match stale_paths.get(&report.path) {
                Some(name) => {
                    // What serves, whatever the file says now (or cannot say).
                    report.name = Some(name.clone());
                    report.kind = Some("webhook");
                    FileState::Stale
                }
                None => FileState::Error,
            };
        }
    }
    loaded.files = files;
    loaded.parsed = entries
        .into_iter()
        .map(|(index, mut parsed)| {
            if parsed.kind == Kind::Webhook {
                parsed.def = None;
            }
            (loaded.files[index].path.clone(), parsed)
        })
        .collect();
    Ok(loaded)
}

/// Reads a file and parses it, unless the previous load parsed the same content.
///
/// A file whose size, times and inode are those of the cached parse is not even read,
/// unless it changed within the last two seconds: a filesystem with coarse timestamps
/// could hide a second write in the same tick (git's "racily clean" rule).
fn read_and_parse(
    path: &Path,
    stamp: Stamp,
    now: std::time::SystemTime,
    previous: Option<&Loaded>,
) -> Result<Parsed, Vec<Problem>> {
    let cached = previous.and_then(|p| p.parsed.get(path));
    let settled = now
        .duration_since(stamp.changed)
        .is_ok_and(|age| age > std::time::Duration::from_secs(2));
    if let Some(cached) = cached.filter(|c| settled && c.stamp == stamp) {
        return Ok(cached.clone());
    }
    let (shared, text) = read_source(path)?;
    let hash = hash_of(&text);
    if let Some(cached) = cached.filter(|cached| cached.hash == hash) {
        return Ok(Parsed {
            stamp,
            ..cached.clone()
        });
    }
    let def = raw::parse(&SourceFile::new(shared, text))?;
    Ok(Parsed {
        stamp,
        hash,
        kind: def.kind,
        name: def.name.clone(),
        extends: def.extends.clone(),
        def: Some(Arc::new(def)),
    })
}

/// Parses a file whose parsed form was not kept (an unchanged webhook whose template or
/// secret changed).
fn parse_file(path: &Path) -> Result<Def, Vec<Problem>> {
    let (shared, text) = read_source(path)?;
    raw::parse(&SourceFile::new(shared, text))
}

/// A webhook file's text (at most [`source::MAX_FILE`]), or why it cannot be read.
fn read_source(path: &Path) -> Result<(Arc<Path>, String), Vec<Problem>> {
    let shared: Arc<Path> = Arc::from(path);
    match source::read_text_at_most(path, source::MAX_FILE) {
        Ok(text) => Ok((shared, text)),
        Err(err) => Err(vec![
            Location::file(shared).problem(format!("cannot read: {err}")),
        ]),
    }
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

/// The problems of template `entries[at]`'s own fields (merged with the templates it
/// extends, `chain`), found by compiling it as a webhook would be: what no webhook
/// extending it could fix. A missing `company` or `url` stands in as a placeholder; a
/// `context` value not defined, an `[auth]` value not set, examples and the placeholders'
/// own problems are for the webhooks that extend it.
fn template_problems(
    entries: &[(usize, Parsed)],
    at: usize,
    chain: &[usize],
    settings: &Settings,
    upstream: &Upstream,
) -> Vec<Problem> {
    let Some(def) = &entries[at].1.def else {
        return Vec::new();
    };
    let mut fields = def.fields.clone();
    for &parent in chain {
        if let Some(parent) = &entries[parent].1.def {
            fields = fields.inherit(&parent.fields);
        }
    }
    let nowhere = |value: &str| source::Located {
        value: value.to_owned(),
        at: source::Location::nowhere(),
    };
    let templated_url = fields
        .url
        .as_ref()
        .is_some_and(|url| url.value.contains("{{") || url.value.contains("{%"));
    fields.company.get_or_insert_with(|| nowhere("template"));
    fields
        .url
        .get_or_insert_with(|| nowhere("http://template.invalid/"));
    fields.examples.clear();
    match compile::compile(def, &fields, 0, settings, upstream) {
        Ok(_) => Vec::new(),
        // A host the URL makes of `context` values is the webhook's to check.
        Err(problems) => problems
            .into_iter()
            .filter(|p| {
                *p.path == *def.file.path
                    && !compile::is_left_to_webhooks(&p.message)
                    && !(templated_url && compile::is_host_not_allowed(&p.message))
            })
            .collect(),
    }
}

/// A webhook's compile problems, as its file shows them. One that a template it extends
/// has on its own (`templates`: their problems) is that template's: the webhook learns only
/// that the template does not load. Any other problem located in a template comes from
/// this webhook's use of it (a `context` value it does not define, an `[auth]` beside the
/// template's `Authorization`, an example it breaks by overriding a variable): it names the
/// webhook, where the line is the template's.
fn inherited(
    problems: Vec<Problem>,
    parsed: &Parsed,
    path: &Path,
    templates: &[&[Problem]],
) -> Vec<Problem> {
    let mut shown = Vec::new();
    let mut broken_templates = Vec::new();
    for mut problem in problems {
        // A merged `[body]` is located in the extending file: its leaves are told apart
        // by their path in the message (`body.a: ...`).
        let of_template = templates.iter().flat_map(|own| own.iter()).find(|own| {
            **own == problem
                || (problem.message.starts_with("body") && own.message == problem.message)
        });
        if let Some(own) = of_template {
            if !broken_templates.contains(&own.path) {
                broken_templates.push(own.path.clone());
            }
        } else if problem.path == path {
            shown.push(problem);
        } else {
            name_the_webhook(&mut problem, &parsed.name.value, path);
            shown.push(problem);
        }
    }
    if let Some(extends) = &parsed.extends {
        for template in broken_templates {
            shown.push(extends.problem(format!(
                "extends: template {:?} does not load; see {}",
                extends.value,
                template.display()
            )));
        }
    }
    shown
}

/// Names the webhook `name` of file `path` in a problem that is located in a template it
/// extends, where only this webhook's use of it fails.
pub fn name_the_webhook(problem: &mut Problem, name: &str, path: &Path) {
    if problem.path != path {
        problem.message = format!(
            "{} (for webhook {name:?} of {})",
            problem.message,
            path.display()
        );
    }
}

/// The templates `entries[start]` extends, nearest first, a revision hashing the contents
/// of the whole chain, and one of the templates alone. `unparsed`: the files that do not
/// parse, by name.
fn chain(
    start: usize,
    entries: &[(usize, Parsed)],
    by_name: &HashMap<String, usize>,
    unparsed: &HashMap<String, PathBuf>,
) -> Result<(Vec<usize>, u64, u64), Vec<Problem>> {
    let first = &entries[start].1;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    first.hash.hash(&mut hasher);
    let mut templates = std::collections::hash_map::DefaultHasher::new();
    let mut seen = vec![first.name.value.clone()];
    let mut parents = Vec::new();
    let mut next = first.extends.as_ref();
    while let Some(extends) = next {
        let Some(&parent) = by_name.get(&extends.value) else {
            let message = match unparsed.get(&extends.value) {
                Some(path) => format!(
                    "extends: template {:?} does not load; see {}",
                    extends.value,
                    path.display()
                ),
                None => format!("extends: no template named {:?}", extends.value),
            };
            return Err(vec![extends.problem(message)]);
        };
        let parsed = &entries[parent].1;
        if parsed.kind != Kind::Template {
            return Err(vec![extends.problem(format!(
                "extends: {:?} is a webhook, not a template (kind = \"template\")",
                extends.value
            ))]);
        }
        seen.push(parsed.name.value.clone());
        if seen[..seen.len() - 1].contains(&parsed.name.value) {
            return Err(vec![
                extends.problem(format!("extends: cycle {}", seen.join(" -> "))),
            ]);
        }
        parsed.hash.hash(&mut hasher);
        parsed.hash.hash(&mut templates);
        parents.push(parent);
        next = parsed.extends.as_ref();
    }
    Ok((parents, hasher.finish(), templates.finish()))
}

/// What tells a file changed without reading it: size, modification and change times,
/// inode (of the target, for a symbolic link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// The later of the modification and change times.
    changed: std::time::SystemTime,
    inode: u64,
}

impl Stamp {
    fn of(metadata: &std::fs::Metadata) -> Stamp {
        let modified = metadata.modified().ok();
        #[cfg(unix)]
        let (inode, ctime) = {
            use std::os::unix::fs::MetadataExt;
            let ctime = u64::try_from(metadata.ctime()).ok().map(|secs| {
                std::time::UNIX_EPOCH
                    + std::time::Duration::new(
                        secs,
                        u32::try_from(metadata.ctime_nsec()).unwrap_or(0),
                    )
            });
            (metadata.ino(), ctime)
        };
        #[cfg(not(unix))]
        let (inode, ctime) = (0, None);
        let changed = modified
            .into_iter()
            .chain(ctime)
            .max()
            .unwrap_or_else(std::time::SystemTime::now);
        Stamp {
            len: metadata.len(),
            modified,
            changed,
            inode,
        }
    }
}

/// Every `*.toml` file under `dir`, at any depth, in sorted order, with its stamp. Hidden
/// entries (names starting with `.`) are skipped; symbolic links are followed, each folder
/// visited once.
pub fn scan(dir: &Path) -> Result<Vec<(PathBuf, Stamp)>, LoadError> {
    scan_with_links(dir).map(|(found, _, _)| found)
}

/// Files found by a scan, with their stamps.
type Found = Vec<(PathBuf, Stamp)>;

/// `*.toml` links a scan could not follow, with why (`which does not exist`).
pub type Dangling = Vec<(PathBuf, String)>;

/// [`scan`], where the symbolic links it followed lead outside `dir` (canonical paths:
/// directories, and `*.toml` files), and the `*.toml` links that lead nowhere.
fn scan_with_links(dir: &Path) -> Result<(Found, Vec<PathBuf>, Dangling), LoadError> {
    let root = std::fs::read_dir(dir).map_err(|source| LoadError::Directory {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut walk = Walk {
        root: dir.canonicalize().ok(),
        visited: HashSet::new(),
        found: Vec::new(),
        links: Vec::new(),
        dangling: Vec::new(),
    };
    if let Some(root) = &walk.root {
        walk.visited.insert(root.clone());
    }
    walk.entries(root);
    walk.found.sort_by(|a, b| a.0.cmp(&b.0));
    walk.links.sort();
    walk.links.dedup();
    walk.dangling.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((walk.found, walk.links, walk.dangling))
}

/// A walk of the directory, links followed.
struct Walk {
    root: Option<PathBuf>,
    visited: HashSet<PathBuf>,
    found: Found,
    links: Vec<PathBuf>,
    dangling: Dangling,
}

impl Walk {
    fn entries(&mut self, entries: std::fs::ReadDir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let metadata = match std::fs::metadata(&path) {
                Ok(metadata) => metadata,
                Err(err) => {
                    // A link that leads nowhere (a file removed since the listing is gone).
                    if path.extension().is_some_and(|ext| ext == "toml")
                        && entry.file_type().is_ok_and(|t| t.is_symlink())
                    {
                        let why = if err.kind() == std::io::ErrorKind::NotFound {
                            "which does not exist".to_owned()
                        } else {
                            format!("which cannot be followed ({err})")
                        };
                        self.dangling.push((path, why));
                    }
                    continue;
                }
            };
            let linked = entry.file_type().is_ok_and(|t| t.is_symlink());
            if metadata.is_dir() {
                let Ok(canonical) = path.canonicalize() else {
                    continue;
                };
                self.note_link(linked, &canonical);
                if self.visited.insert(canonical)
                    && let Ok(entries) = std::fs::read_dir(&path)
                {
                    self.entries(entries);
                }
            } else if metadata.is_file() && path.extension().is_some_and(|ext| ext == "toml") {
                if linked && let Ok(canonical) = path.canonicalize() {
                    self.note_link(true, &canonical);
                }
                self.found.push((path, Stamp::of(&metadata)));
            }
        }
    }

    /// Keeps where a link leads, unless that is inside the directory (watched already).
    fn note_link(&mut self, linked: bool, target: &Path) {
        let inside = self
            .root
            .as_ref()
            .is_some_and(|root| target.starts_with(root));
        if linked && !inside {
            self.links.push(target.to_path_buf());
        }
    }
}

fn hash_of(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
