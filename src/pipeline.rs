//! One invocation, as named phases: build the template data, render the request, call the
//! upstream, parse its body, map the Custom Variables, build the answer. Each phase is a
//! small function; `invoke` strings them together and times the whole.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::config::{Body, Webhook};
use crate::error::{ApiError, ErrorKind};
use crate::mapping::{Outcome, Variable};
use crate::render::select::{Data, Document, Selection};
use crate::render::{self, Answer, Scope};
use crate::upstream::{Outgoing, Upstream};

/// `Content-Type` of a `[body]` table.
const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// `Content-Type` of a text body.
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
/// `User-Agent` unless a webhook sets one.
const AGENT: HeaderValue =
    HeaderValue::from_static(concat!("hookside/", env!("CARGO_PKG_VERSION")));

/// The request as rendered, ready to send, with a copy safe to show.
#[derive(Debug)]
pub struct RenderedRequest {
    /// What is sent.
    pub request: Outgoing,
    /// What may be shown (secrets as `***`), when asked for.
    pub shown: Option<ShownRequest>,
}

/// A rendered request as shown to people (`/test`, `hookside run`).
#[derive(Clone, Debug, Serialize)]
pub struct ShownRequest {
    /// The method.
    pub method: String,
    /// The URL (secrets in query values as `***`).
    pub url: String,
    /// Headers in order, secrets as `***`.
    pub headers: Vec<(String, String)>,
    /// The body: JSON for a `[body]` table, a string for a text body, or null.
    pub body: serde_json::Value,
}

/// The outcome of one invocation that reached the upstream.
#[derive(Debug, Serialize)]
pub struct Invocation {
    /// The webhook's name.
    pub webhook: String,
    /// The upstream's HTTP status.
    pub status: u16,
    /// Whether the status is 2xx.
    pub ok: bool,
    /// Render to mapped answer, in milliseconds.
    pub duration_ms: f64,
    /// The same, unrounded (for metrics).
    #[serde(skip)]
    pub elapsed: Duration,
    /// Variable name -> value (`null` when missing).
    pub variables: serde_json::Map<String, serde_json::Value>,
    /// Variables whose expression found nothing.
    pub missing: Vec<String>,
    /// The upstream's body as JSON (`null` when empty). When `raw_response` is set and
    /// the variables read only parts of the body, this is `null` too (the answer embeds
    /// `raw_response`).
    pub response: serde_json::Value,
    /// The upstream's body as it came, when it is JSON and holds no secret: the bot's
    /// answer embeds it as is instead of serializing `response` again.
    #[serde(skip)]
    pub raw_response: Option<Bytes>,
    /// Per-variable trace, for Run Webhook (empty for a bot call).
    #[serde(skip)]
    pub trace: Vec<Outcome>,
    /// What Run Webhook warns about.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Run Webhook showed a body that is not JSON as text, where a bot call fails with
    /// `upstream_invalid_response`.
    #[serde(skip)]
    pub not_json: bool,
}

/// Phase 1: the data templates see.
pub fn scope<'a>(webhook: &'a Webhook, conversation: &'a serde_json::Value) -> Scope<'a> {
    Scope::new(&webhook.fixed, conversation)
}

/// Phase 2: render method, URL, headers and body; auth is added after rendering. With
/// `show`, also the copy safe to show (Run Webhook, `check`); a bot call skips it.
pub fn render_request(
    webhook: &Webhook,
    data: &Scope<'_>,
    show: bool,
) -> Result<RenderedRequest, ApiError> {
    let fail =
        |message: String| ApiError::new(ErrorKind::RenderError, message).for_webhook(&webhook.name);

    let mut query = String::new();
    let mut shown_query = String::new();
    let mut query_has_secret = false;
    for (key, template) in &webhook.query {
        let value = template
            .render(data)
            .map_err(|e| fail(format!("query.{key}: {e}")))?;
        append_pair(&mut query, key, &value.value);
        if show {
            query_has_secret |= value.redacted.is_some();
            append_shown_pair(&mut shown_query, key, value.shown());
        }
    }
    let target = webhook
        .url
        .render_target(data, &query)
        .map_err(|e| fail(format!("url: {e}")))?;
    let invalid =
        |e: &dyn std::fmt::Display| fail(format!("url: the rendered URL is not valid: {e}"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(webhook.url.scheme.clone());
    parts.authority = Some(webhook.url.authority.clone());
    parts.path_and_query = Some(
        http::uri::PathAndQuery::from_maybe_shared(Bytes::from(target)).map_err(|e| invalid(&e))?,
    );
    let uri = http::Uri::from_parts(parts).map_err(|e| invalid(&e))?;

    let mut headers = Vec::with_capacity(webhook.headers.len() + 3);
    let mut shown_headers = Vec::new();
    for (name, template) in &webhook.headers {
        let rendered = template
            .render(data)
            .map_err(|e| fail(format!("headers.{name}: {e}")))?;
        let mut value = HeaderValue::from_maybe_shared(Bytes::from(rendered.value)).map_err(|_| {
            fail(format!(
                "headers.{name}: the rendered value holds CR, LF, NUL or another character not allowed in a header"
            ))
        })?;
        if let Some(redacted) = rendered.redacted {
            value.set_sensitive(true);
            if show {
                shown_headers.push((name.to_string(), redacted));
            }
        } else if show {
            shown_headers.push((
                name.to_string(),
                // As sent: text beyond ASCII goes as its UTF-8 bytes.
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
        headers.push((name.clone(), value));
    }
    if let Some(auth) = &webhook.auth {
        // The file compiler refuses an `Authorization` header next to `[auth]`.
        headers.push((http::header::AUTHORIZATION, auth.value.clone()));
        if show {
            shown_headers.push(("authorization".into(), auth.shown.into()));
        }
    }

    let (body, shown_body, content_type) = match &webhook.body {
        Body::None => (Bytes::new(), serde_json::Value::Null, None),
        Body::Json(template) => {
            let mut bytes = Vec::with_capacity(256);
            template
                .write(data, &mut bytes)
                .map_err(|e| fail(format!("body: {e}")))?;
            let shown = if show {
                template
                    .render(data)
                    .map_err(|e| fail(format!("body: {e}")))?
            } else {
                serde_json::Value::Null
            };
            (Bytes::from(bytes), shown, Some(JSON))
        }
        Body::Text(template) => {
            let text = template
                .render(data)
                .map_err(|e| fail(format!("body: {e}")))?
                .value;
            let shown = if show {
                serde_json::Value::String(text.clone())
            } else {
                serde_json::Value::Null
            };
            (Bytes::from(text), shown, Some(TEXT))
        }
    };
    // The map holds the webhook's headers and `Authorization`: look in the short list.
    let declared = |wanted: &HeaderName| webhook.headers.iter().any(|(name, _)| name == wanted);
    if let Some(content_type) = content_type
        && !declared(&CONTENT_TYPE)
    {
        if show {
            shown_headers.push((
                "content-type".into(),
                content_type.to_str().unwrap_or_default().into(),
            ));
        }
        headers.push((CONTENT_TYPE, content_type));
    }
    if !declared(&USER_AGENT) {
        if show {
            shown_headers.push((
                "user-agent".into(),
                AGENT.to_str().unwrap_or_default().into(),
            ));
        }
        headers.push((USER_AGENT, AGENT));
    }
    let shown = if show {
        let shown_url = if query_has_secret {
            webhook
                .url
                .render(data, &shown_query)
                .map_err(|e| fail(format!("url: {e}")))?
        } else {
            webhook
                .url
                .absolute(uri.path_and_query().map_or("/", |p| p.as_str()))
        };
        Some(ShownRequest {
            method: webhook.method.to_string(),
            url: shown_url,
            headers: shown_headers,
            body: shown_body,
        })
    } else {
        None
    };

    let request = Outgoing {
        method: webhook.method.clone(),
        uri,
        headers,
        body,
    };
    Ok(RenderedRequest { request, shown })
}

/// Appends `key=value` (both percent-encoded) to a query string.
fn append_pair(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    render::encode_component(out, key);
    out.push('=');
    render::encode_component(out, value);
}

/// Whether the significant digits of a printed float (six or more) are part of a secret.
fn float_digits_in_secret(text: &str, secrets: &[String]) -> bool {
    let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_start_matches('0').trim_end_matches('0');
    digits.len() >= 6 && secrets.iter().any(|secret| secret.contains(digits))
}

/// `append_pair` for what is shown: a secret's `***` stays as written, not `%2A%2A%2A`.
fn append_shown_pair(out: &mut String, key: &str, shown: &str) {
    append_pair(out, key, "");
    for (index, piece) in shown.split("***").enumerate() {
        if index > 0 {
            out.push_str("***");
        }
        render::encode_component(out, piece);
    }
}

/// Phase 4: the upstream body as JSON (all of it validated, the `selection` kept); an
/// empty body is `null`.
pub fn parse_response(body: &[u8], selection: &Selection) -> Result<Document, String> {
    let invalid = |err: &dyn std::fmt::Display| format!("the response is not valid JSON: {err}");
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        "null"
    } else {
        std::str::from_utf8(body).map_err(|err| invalid(&err))?
    };
    selection.parse(text).map_err(|err| invalid(&err))
}

/// Phase 5: every Custom Variable over the response.
pub fn map_variables(
    webhook: &Webhook,
    scope: &Scope<'_>,
    status: u16,
    headers: &HeaderMap,
    response: Data<'_>,
    max_response_body: usize,
) -> Vec<Outcome> {
    if webhook.variables.is_empty() {
        return Vec::new();
    }
    let scope = scope.with_answer(Answer {
        response,
        status,
        headers,
    });
    let mut budget = crate::mapping::variables_budget(max_response_body);
    webhook
        .variables
        .iter()
        .map(|variable| variable.evaluate(response, &scope, &mut budget))
        .collect()
}

/// Runs one invocation against the upstream; it counts as begun at `started`.
pub async fn invoke(
    upstream: &Upstream,
    webhook: &Webhook,
    conversation: Data<'_>,
    max_response_body: usize,
    started: Instant,
) -> Result<Invocation, ApiError> {
    let scope = Scope::of(&webhook.fixed, conversation);
    let rendered = render_request(webhook, &scope, false)?;
    call_and_map(
        upstream,
        webhook,
        &scope,
        rendered.request,
        started,
        max_response_body,
        false,
    )
    .await
}

/// Phases 3 to 6 for a rendered request. With `lenient_json` (Run Webhook), a body that is
/// not JSON is kept as a string with a warning instead of failing the invocation.
pub async fn call_and_map(
    upstream: &Upstream,
    webhook: &Webhook,
    scope: &Scope<'_>,
    request: Outgoing,
    started: Instant,
    max_response_body: usize,
    lenient_json: bool,
) -> Result<Invocation, ApiError> {
    if let Some(message) = upstream.literal_denied(webhook.url.host_ip) {
        return Err(ApiError::new(ErrorKind::DestinationDenied, message).for_webhook(&webhook.name));
    }
    let answer = upstream
        .call(
            &webhook.pool,
            request,
            started,
            webhook.timeout,
            max_response_body,
            webhook.reads.headers,
        )
        .await
        .map_err(|err| ApiError::from(err).for_webhook(&webhook.name))?;
    let status = answer.status.as_u16();
    let mut warnings = Vec::new();
    let mut not_json = false;
    let secret = may_hold_secret(&answer.body, &answer.headers, webhook);
    // The bot's answer embeds the body as it came, so only what the variables read is
    // built; Run Webhook shows the whole body, and scrubbing needs all of it.
    let whole = Selection::all();
    let selection = if secret || lenient_json {
        &whole
    } else {
        &webhook.reads.response
    };
    let document = match parse_response(&answer.body, selection) {
        Ok(document) => document,
        Err(message) if lenient_json => {
            not_json = true;
            warnings.push(format!(
                "{message}; shown as text (a bot call would fail with upstream_invalid_response)"
            ));
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            Document::whole(serde_json::Value::String(text))
        }
        Err(message) => {
            return Err(ApiError::new(
                ErrorKind::UpstreamInvalidResponse,
                format!("upstream answered {status}: {message}"),
            )
            .for_webhook(&webhook.name));
        }
    };
    let response = Data::Picked(selection, &document);
    // Only Run Webhook shows the trace; a bot call keeps just the values.
    let mut trace = Vec::new();
    let mut variables = serde_json::Map::new();
    let mut missing = Vec::new();
    if lenient_json {
        trace = map_variables(
            webhook,
            scope,
            status,
            &answer.headers,
            response,
            max_response_body,
        );
        for outcome in &trace {
            if outcome.missing.is_some() {
                missing.push(outcome.name.clone());
            }
            variables.insert(outcome.name.clone(), outcome.value.clone());
        }
    } else if !webhook.variables.is_empty() {
        let scope = scope.with_answer(Answer {
            response,
            status,
            headers: &answer.headers,
        });
        let mut budget = crate::mapping::variables_budget(max_response_body);
        for variable in &webhook.variables {
            let (value, why) = variable.find(response, &scope, &mut budget);
            if why.is_some() {
                missing.push(variable.name.clone());
            }
            variables.insert(variable.name.clone(), value);
        }
    }
    let mut invocation = Invocation {
        webhook: webhook.name.clone(),
        status,
        ok: answer.status.is_success(),
        duration_ms: 0.0,
        elapsed: Duration::ZERO,
        variables,
        missing,
        response: document.into_whole(selection).unwrap_or_default(),
        raw_response: None,
        trace,
        warnings,
        not_json,
    };
    if secret {
        scrub_invocation(&mut invocation, &webhook.secrets);
    } else if !lenient_json && !answer.body.iter().all(u8::is_ascii_whitespace) {
        invocation.raw_response = Some(answer.body);
    }
    invocation.elapsed = started.elapsed();
    invocation.duration_ms = (invocation.elapsed.as_secs_f64() * 10_000.0).round() / 10.0;
    Ok(invocation)
}

/// Whether the answer could hold a secret: one of them appears in the body or a header, the
/// body has escapes (which could spell one), or a secret has digits a number could spell
/// another way. When not, scrubbing is skipped.
fn may_hold_secret(body: &[u8], headers: &HeaderMap, webhook: &Webhook) -> bool {
    let secrets = &webhook.secret_finders;
    if secrets.is_empty() {
        return false;
    }
    // Any escape (`\u0061`, `\/`, `\"`) could spell a secret the plain search misses.
    if webhook.digit_secret || memchr::memchr(b'\\', body).is_some() {
        return true;
    }
    secrets.iter().any(|finder| {
        finder.find(body).is_some()
            || headers
                .values()
                .any(|v| finder.find(v.as_bytes()).is_some())
    })
}

impl Invocation {
    /// The bot's answer as JSON bytes: `{ webhook, status, ok, duration_ms, variables,
    /// missing, response }`, with the upstream's body embedded as it came when possible.
    /// `variables` are the webhook's (their keys are written once, when the file loads).
    pub fn to_answer(&self, variables: &[Variable]) -> Vec<u8> {
        let Some(raw) = &self.raw_response else {
            return serde_json::to_vec(self).unwrap_or_default();
        };
        // Writing to a Vec cannot fail; the values are JSON already.
        fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
            let _ = serde_json::to_writer(out, value);
        }
        let mut out = Vec::with_capacity(raw.len() + 256);
        out.extend_from_slice(b"{\"webhook\":");
        json(&mut out, self.webhook.as_str());
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(if self.ok {
            b",\"ok\":true,\"duration_ms\":"
        } else {
            b",\"ok\":false,\"duration_ms\":"
        });
        json(&mut out, &self.duration_ms);
        out.extend_from_slice(b",\"variables\":{");
        // Both are in name order: the map's keys are the variables' names.
        for (index, (name, value)) in self.variables.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            match variables
                .get(index)
                .filter(|variable| variable.name == *name)
            {
                Some(variable) => out.extend_from_slice(variable.key.as_bytes()),
                None => {
                    json(&mut out, name.as_str());
                    out.push(b':');
                }
            }
            json(&mut out, value);
        }
        out.extend_from_slice(b"},\"missing\":");
        json(&mut out, &self.missing);
        out.extend_from_slice(b",\"response\":");
        out.extend_from_slice(raw.trim_ascii());
        out.push(b'}');
        out
    }
}

/// Phase 6 guard: an upstream that echoes a secret back has it replaced by `***`.
fn scrub_invocation(invocation: &mut Invocation, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    scrub(&mut invocation.response, secrets);
    for value in invocation.variables.values_mut() {
        scrub(value, secrets);
    }
    for outcome in &mut invocation.trace {
        scrub(&mut outcome.value, secrets);
    }
}

/// Replaces every occurrence of a secret in `text` by `***`.
pub fn scrub_text(text: &mut String, secrets: &[String]) {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), "***");
        }
    }
}

/// Replaces every occurrence of a secret in `value`'s strings and keys by `***`; a number
/// whose digits hold one (a PIN echoed as `4455667788`) becomes the string with `***`.
pub fn scrub(value: &mut serde_json::Value, secrets: &[String]) {
    fn clean(text: &str, secrets: &[String]) -> Option<String> {
        let mut out: Option<String> = None;
        for secret in secrets {
            let current = out.as_deref().unwrap_or(text);
            if current.contains(secret.as_str()) {
                out = Some(current.replace(secret.as_str(), "***"));
            }
        }
        out
    }
    match value {
        serde_json::Value::String(text) => {
            if let Some(cleaned) = clean(text, secrets) {
                *text = cleaned;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|item| scrub(item, secrets)),
        serde_json::Value::Object(map) => {
            let dirty: Vec<String> = map
                .keys()
                .filter(|key| clean(key, secrets).is_some())
                .cloned()
                .collect();
            for key in dirty {
                if let Some(item) = map.remove(&key) {
                    map.insert(clean(&key, secrets).unwrap_or(key), item);
                }
            }
            map.values_mut().for_each(|item| scrub(item, secrets));
        }
        serde_json::Value::Number(number) => {
            let text = number.to_string();
            if let Some(cleaned) = clean(&text, secrets) {
                *value = serde_json::Value::String(cleaned);
            } else if number.is_f64() && float_digits_in_secret(&text, secrets) {
                // A long digit secret echoed as a number parses as a float, which prints
                // rounded (`9.876543210987654e19`): its leading digits are the secret's.
                *value = serde_json::Value::String("***".into());
            }
        }
        serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_answer_is_the_invocation_as_json_with_the_body_as_it_came() {
        let raw = r#"{"a":{"b":"x"},"n":[1,2.5,null],"q":"é\""}"#;
        let names = ["a\"quoted", "plain", "ünï"];
        let variables: Vec<Variable> = names
            .iter()
            .map(|name| Variable::compile(name, "response.a.b").expect("compiles"))
            .collect();
        for (ok, missing, duration_ms) in [(true, vec![], 0.1), (false, vec!["plain"], 12.0)] {
            let invocation = Invocation {
                webhook: "orders-\"v2\"".into(),
                status: if ok { 200 } else { 404 },
                ok,
                duration_ms,
                elapsed: Duration::ZERO,
                variables: names
                    .iter()
                    .map(|name| (name.to_string(), json!({"v": name, "k": [1, "\n"]})))
                    .collect(),
                missing: missing.into_iter().map(String::from).collect(),
                response: serde_json::from_str(raw).expect("json"),
                raw_response: Some(Bytes::from(format!("  {raw}\n"))),
                trace: Vec::new(),
                warnings: Vec::new(),
                not_json: false,
            };
            let expected = serde_json::to_vec(&invocation).expect("serializes");
            let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8");
            assert_eq!(
                text(invocation.to_answer(&variables)),
                text(expected.clone())
            );
            // Keys not written beforehand (another webhook's variables) come out the same.
            assert_eq!(text(invocation.to_answer(&[])), text(expected));
        }
    }
}
