//! `hookside check`: loads every file exactly as `serve` does (the same [`config::load`]),
//! then runs every `[[examples]]` entry offline: the request is rendered from the example's
//! conversation and compared with its `request` expectations, the example's response is
//! mapped with the webhook's `[variables]` and compared with `expect`. Nothing is sent.
//!
//! Secrets that are not set where the check runs (a pull request's CI) are warnings, with a
//! placeholder standing in. No message holds a secret or a line of a file.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::config::{self, Example, LoadError, Problem, Settings, Webhook};
use crate::pipeline;
use crate::render::select::Data;
use crate::upstream::Upstream;

/// Everything `check` found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Whether there is no problem (warnings allowed).
    pub ok: bool,
    /// Errors: each fails the check.
    pub problems: Vec<Problem>,
    /// Warnings: shown, do not fail the check.
    pub warnings: Vec<Problem>,
    /// Files found.
    pub files: usize,
    /// Webhooks that loaded.
    pub webhooks: usize,
    /// Examples run.
    pub examples: usize,
}

/// Names templates may read that no conversation has to provide.
const PROVIDED: [&str; 8] = [
    "context",
    "webhook",
    "range",
    "dict",
    "namespace",
    "loop",
    "true",
    "false",
];

/// Checks a directory.
pub fn check(dir: &Path, settings: &Settings) -> Result<Report, LoadError> {
    let settings = Settings {
        secrets_optional: true,
        ..settings.clone()
    };
    let upstream = Upstream::new(settings.deny_networks.clone());
    let loaded = config::load(dir, &settings, &upstream, None)?;
    let mut problems: Vec<Problem> = loaded.problems().cloned().collect();
    for (link, why) in &loaded.dangling {
        let target = std::fs::read_link(link).unwrap_or_default();
        problems.push(Problem {
            path: link.clone(),
            line: None,
            column: None,
            message: format!(
                "a symbolic link to {}, {why}: no webhook is read from it",
                target.display()
            ),
        });
    }
    let mut warnings = Vec::new();
    let mut examples = 0;
    for served in loaded.webhooks.values() {
        let webhook = &served.webhook;
        // A warning placed in a template it extends that holds for this webhook alone (a
        // context value its URL does not read, a key its examples do not give) says which;
        // one of the template's own (a placeholder secret) stays one line.
        let before = warnings.len();
        warnings.extend(webhook.warnings.iter().cloned());
        let own = warnings.len();
        warnings.extend(coverage_warnings(webhook));
        for (at, warning) in warnings[before..].iter_mut().enumerate() {
            if before + at >= own || crate::config::compile::is_about_the_webhook(&warning.message)
            {
                crate::config::name_the_webhook(warning, &webhook.name, &webhook.source);
            }
        }
        for (index, example) in webhook.examples.iter().enumerate() {
            examples += 1;
            let before = problems.len();
            run_example(
                webhook,
                example,
                index + 1,
                settings.max_response_body,
                &mut problems,
                &mut warnings,
            );
            // An example a template holds fails for this webhook only: say which.
            for problem in &mut problems[before..] {
                crate::config::name_the_webhook(problem, &webhook.name, &webhook.source);
            }
        }
    }
    // A template's problem reaches every webhook that extends it: say it once.
    for list in [&mut problems, &mut warnings] {
        list.sort_by(|a, b| {
            (&a.path, a.line, a.column, &a.message).cmp(&(&b.path, b.line, b.column, &b.message))
        });
        list.dedup();
    }
    Ok(Report {
        ok: problems.is_empty(),
        problems,
        warnings,
        files: loaded.files.len(),
        webhooks: loaded.webhooks.len(),
        examples,
    })
}

/// Renders and maps one example, reporting every difference.
fn run_example(
    webhook: &Webhook,
    example: &Example,
    number: usize,
    max_response_body: usize,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) {
    let at = &example.at;
    let scope = pipeline::scope(webhook, &example.conversation);
    let rendered = match pipeline::render_request(webhook, &scope, true) {
        Ok(rendered) => rendered,
        Err(err) => {
            problems.push(at.problem(format!(
                "example {number}: the request does not render: {}",
                err.message
            )));
            return;
        }
    };
    if let (Some(expected), Some(shown)) = (&example.request, &rendered.shown) {
        let mut differ =
            |what: &str, expected: &dyn std::fmt::Display, actual: &dyn std::fmt::Display| {
                problems.push(at.problem(format!(
                    "example {number}: request {what}: expected {expected}, got {actual}"
                )));
            };
        if let Some(method) = &expected.method
            && *method != shown.method
        {
            differ("method", method, &shown.method);
        }
        if let Some(url) = &expected.url
            && *url != shown.url
        {
            differ("url", url, &shown.url);
        }
        for (name, value) in &expected.headers {
            let actual = shown
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str());
            if actual != Some(value.as_str()) {
                differ(
                    &format!("header {name}"),
                    &format!("{value:?}"),
                    &format!("{:?}", actual.unwrap_or("(none)")),
                );
            }
        }
        if let Some(body) = &expected.body
            && let Some((path, want, got)) = first_difference(body, &shown.body, String::new())
        {
            differ(
                &format!(
                    "body at {}",
                    if path.is_empty() { "the top" } else { &path }
                ),
                &want,
                &got,
            );
        }
    }
    let headers = http::HeaderMap::new();
    let mut trace = pipeline::map_variables(
        webhook,
        &scope,
        example.status,
        &headers,
        Data::Whole(&example.response),
        max_response_body,
    );
    // As serve answers: a secret the response echoes is `***` (and never printed here).
    for outcome in &mut trace {
        pipeline::scrub(&mut outcome.value, &webhook.secrets);
        if let Some(why) = &mut outcome.missing {
            pipeline::scrub_text(why, &webhook.secrets);
        }
    }
    for (name, expected) in &example.expect {
        let Some(outcome) = trace.iter().find(|o| &o.name == name) else {
            continue;
        };
        let matches = outcome.missing.is_none() && json_eq(expected, &outcome.value);
        if !matches {
            let actual = match &outcome.missing {
                Some(why) => format!("nothing ({why})"),
                None => outcome.value.to_string(),
            };
            problems.push(at.problem(format!(
                "example {number}: variable {name} ({}): expected {expected}, got {actual}",
                outcome.expression
            )));
        }
    }
    for outcome in &trace {
        if let Some(why) = &outcome.missing
            && !example.expect.contains_key(&outcome.name)
        {
            warnings.push(at.problem(format!(
                "example {number}: variable {} found nothing: {why}",
                outcome.name
            )));
        }
    }
}

/// A conversation key a template reads that no example's conversation provides.
fn coverage_warnings(webhook: &Webhook) -> Vec<Problem> {
    if webhook.examples.is_empty() {
        return Vec::new();
    }
    let mut roots: BTreeSet<String> = BTreeSet::new();
    for name in webhook.template_names() {
        let root = name.split('.').next().unwrap_or(&name).to_owned();
        roots.insert(root);
    }
    roots
        .into_iter()
        .filter(|root| !PROVIDED.contains(&root.as_str()))
        .filter(|root| {
            !webhook
                .examples
                .iter()
                .any(|example| example.conversation.get(root).is_some())
        })
        .map(|root| {
            let at = webhook.examples[0].at.clone();
            at.problem(format!(
                "the request reads {root}, which no example's conversation provides"
            ))
        })
        .collect()
}

/// Where two JSON values first differ: the path and both sides.
fn first_difference(
    expected: &serde_json::Value,
    actual: &serde_json::Value,
    path: String,
) -> Option<(String, serde_json::Value, serde_json::Value)> {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(x), Value::Object(y)) => {
            for (key, value) in x {
                let here = format!("{path}.{key}");
                match y.get(key) {
                    Some(other) => {
                        if let Some(found) = first_difference(value, other, here) {
                            return Some(found);
                        }
                    }
                    None => return Some((here, value.clone(), Value::Null)),
                }
            }
            y.keys()
                .find(|key| !x.contains_key(*key))
                .map(|key| (format!("{path}.{key}"), Value::Null, y[key].clone()))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b, format!("{path}[{i}]"))),
        _ if json_eq(expected, actual) => None,
        _ => Some((path, expected.clone(), actual.clone())),
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

impl Report {
    /// The report as lines: `PATH:LINE:COL: message`, then a one-line summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for problem in &self.problems {
            out.push_str(&problem.to_string());
            out.push('\n');
        }
        for warning in &self.warnings {
            let mut line = warning.clone();
            line.message = format!("warning: {}", line.message);
            out.push_str(&line.to_string());
            out.push('\n');
        }
        let files_with_problems: BTreeSet<_> = self.problems.iter().map(|p| &p.path).collect();
        if self.ok {
            out.push_str(&format!(
                "ok: {}, {}, {} passed, {}\n",
                counted(self.files, "file"),
                counted(self.webhooks, "webhook"),
                counted(self.examples, "example"),
                counted(self.warnings.len(), "warning")
            ));
        } else {
            out.push_str(&format!(
                "{} in {} ({}, {} loaded, {} run)\n",
                counted(self.problems.len(), "problem"),
                counted(files_with_problems.len(), "file"),
                counted(self.files, "file"),
                counted(self.webhooks, "webhook"),
                counted(self.examples, "example")
            ));
        }
        out
    }
}

/// `1 file`, `2 files`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
