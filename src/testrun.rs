//! Run Webhook: one invocation with everything a person building the webhook wants to
//! see: the rendered request (secrets as `***`), the status, the time, the response, each
//! Custom Variable with its expression and value or why it found nothing, and warnings.
//! `POST /v1/webhooks/{name}/test` answers it as JSON; `hookside run` prints it.

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use crate::config::Webhook;
use crate::error::ApiError;
use crate::mapping::Outcome;
use crate::pipeline::{self, ShownRequest};
use crate::upstream::Upstream;

/// How much of a response `hookside run` prints before cutting it.
pub const PRINT_LIMIT: usize = 16 * 1024;

/// One Run Webhook.
#[derive(Debug, Serialize)]
pub struct TestRun {
    /// The webhook's name.
    pub webhook: String,
    /// Whether nothing was sent.
    pub dry_run: bool,
    /// The rendered request, when it rendered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<ShownRequest>,
    /// The upstream's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Whether the status is 2xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Render to mapped answer, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Variable name -> value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// Variables that found nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
    /// The response body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
    /// Each variable with its expression, value, and why it found nothing.
    pub trace: Vec<Outcome>,
    /// What looks wrong.
    pub warnings: Vec<String>,
    /// The error, when the run failed.
    #[serde(skip)]
    pub error: Option<ApiError>,
    /// The body was not JSON, shown as text: a bot call would fail.
    #[serde(skip)]
    pub not_json: bool,
}

/// Renders, and unless `dry_run`, calls the upstream and maps the variables.
pub async fn run(
    upstream: &Upstream,
    webhook: &Webhook,
    conversation: &serde_json::Value,
    dry_run: bool,
    max_response_body: usize,
) -> TestRun {
    let started = Instant::now();
    let mut run = TestRun {
        webhook: webhook.name.clone(),
        dry_run,
        request: None,
        status: None,
        ok: None,
        duration_ms: None,
        variables: None,
        missing: None,
        response: None,
        trace: Vec::new(),
        warnings: webhook.warnings.iter().map(|w| w.message.clone()).collect(),
        error: None,
        not_json: false,
    };
    let scope = pipeline::scope(webhook, conversation);
    let rendered = match pipeline::render_request(webhook, &scope, true) {
        Ok(rendered) => rendered,
        Err(err) => {
            run.error = Some(err.for_webhook(&webhook.name));
            return run;
        }
    };
    run.request = rendered.shown;
    if dry_run {
        return run;
    }
    match pipeline::call_and_map(
        upstream,
        webhook,
        &scope,
        rendered.request,
        started,
        max_response_body,
        true,
    )
    .await
    {
        Err(err) => run.error = Some(err.for_webhook(&webhook.name)),
        Ok(invocation) => {
            run.warnings.extend(invocation.warnings);
            run.warnings.extend(invocation.trace.iter().filter_map(|o| {
                o.missing
                    .as_ref()
                    .map(|why| format!("variable {} found nothing: {why}", o.name))
            }));
            run.status = Some(invocation.status);
            run.ok = Some(invocation.ok);
            run.duration_ms = Some(invocation.duration_ms);
            run.variables = Some(invocation.variables);
            run.missing = Some(invocation.missing);
            run.response = Some(invocation.response);
            run.trace = invocation.trace;
            run.not_json = invocation.not_json;
        }
    }
    run
}

impl TestRun {
    /// As JSON: what `POST /v1/webhooks/{name}/test` answers and `hookside run --json`
    /// prints, with `error` (`{ kind, message, webhook }`) beside the rest when the run
    /// failed, so that the rendered request and the warnings still show.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let (Some(err), Some(object)) = (&self.error, value.as_object_mut()) {
            object.insert("error".into(), err.body()["error"].clone());
        }
        value
    }

    /// Whether the call succeeded (2xx, a JSON body where one is expected) and every
    /// variable mapped: what a bot call would answer 200 to, with nothing missing.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
            && (self.dry_run
                || (self.ok == Some(true)
                    && !self.not_json
                    && self.missing.as_ref().is_some_and(Vec::is_empty)))
    }

    /// The run as a person reads it in a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(request) = &self.request {
            let _ = writeln!(out, "{} {}", request.method, request.url);
            for (name, value) in &request.headers {
                let _ = writeln!(out, "{name}: {value}");
            }
            if !request.body.is_null() {
                let body = match &request.body {
                    serde_json::Value::String(text) => text.clone(),
                    json => serde_json::to_string_pretty(json).unwrap_or_default(),
                };
                let _ = writeln!(out, "\n{body}");
            }
        }
        if self.dry_run {
            out.push_str("\n(dry run: nothing was sent)\n");
        }
        if let Some(err) = &self.error {
            let _ = writeln!(out, "\nerror: {}: {}", err.kind.as_str(), err.message);
        }
        if let (Some(status), Some(duration)) = (self.status, self.duration_ms) {
            let verdict = if self.ok == Some(true) {
                "ok"
            } else {
                "not ok"
            };
            let _ = writeln!(out, "\n=> {status} ({verdict}) in {duration} ms");
        }
        if let Some(response) = &self.response {
            let mut text = serde_json::to_string_pretty(response).unwrap_or_default();
            if text.len() > PRINT_LIMIT {
                let cut = (0..=PRINT_LIMIT)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                let total = text.len();
                text.truncate(cut);
                let _ = write!(text, "\n... ({total} bytes in all, cut at {PRINT_LIMIT})");
            }
            let _ = writeln!(out, "{text}");
        }
        if !self.trace.is_empty() {
            let width = self
                .trace
                .iter()
                .map(|o| o.name.len())
                .max()
                .unwrap_or(0)
                .max(8);
            let expr_width = self
                .trace
                .iter()
                .map(|o| o.expression.len())
                .max()
                .unwrap_or(0)
                .max(10);
            let _ = writeln!(
                out,
                "\n{:width$}  {:expr_width$}  value",
                "variable", "expression"
            );
            for outcome in &self.trace {
                let value = match &outcome.missing {
                    Some(why) => format!("(missing: {why})"),
                    None => outcome.value.to_string(),
                };
                let _ = writeln!(
                    out,
                    "{:width$}  {:expr_width$}  {value}",
                    outcome.name, outcome.expression
                );
            }
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }
}
