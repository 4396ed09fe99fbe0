//! From a merged [`Def`] to a ready [`Webhook`]: methods parsed, templates and JSONPath
//! compiled, secrets resolved, the auth header built, the URL's origin fixed. Every problem
//! is collected with its location; nothing here runs on the request path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderName, HeaderValue, Method};
use serde_json::json;

use super::raw::{AuthFields, Def, Fields, RawExample};
use super::secret::{self, Piece};
use super::settings::{self, Settings, parse_timeout};
use super::source::{Located, Location, Problem};
use crate::mapping::Variable;
use crate::render::select::Reads;
use crate::render::{Fixed, JsonTemplate, Mode, TextTemplate, UrlTemplate};
use crate::upstream::{Pool, Upstream};

/// A webhook, compiled and ready to serve.
#[derive(Debug)]
pub struct Webhook {
    /// The unique name the bot calls.
    pub name: String,
    /// The Company it is assigned to.
    pub company: String,
    /// Free text for people.
    pub description: Option<String>,
    /// The file it was loaded from.
    pub source: PathBuf,
    /// A hash of the file and the templates it extends, as shown in listings.
    pub revision: String,
    /// The same hash as a number.
    pub revision_hash: u64,
    /// A hash of the templates it extends alone (set by the load): a template that fails
    /// and changed since this version leaves this version serving.
    pub templates_hash: u64,
    /// The values that name secrets, and the CA file, to notice a rotation on reload.
    watched: (Vec<secret::Watched>, Option<PathBuf>),
    /// The hash of the watched secrets' values when this was compiled.
    secrets_hash: u64,
    /// The HTTP method.
    pub method: Method,
    /// The URL (fixed origin, templated path and query).
    pub url: UrlTemplate,
    /// How long the whole upstream exchange may take.
    pub timeout: Duration,
    /// Context Values and `{ name, company }`, as templates read them.
    pub fixed: Fixed,
    /// The `Authorization` header built from `[auth]`, added after rendering.
    pub auth: Option<AuthHeader>,
    /// Header templates.
    pub headers: Vec<(HeaderName, TextTemplate)>,
    /// Query parameter templates, in order; a key repeats once per value.
    pub query: Vec<(String, TextTemplate)>,
    /// The body template.
    pub body: Body,
    /// Custom Variables.
    pub variables: Vec<Variable>,
    /// What the templates read of the conversation and the response: a bot call parses
    /// only that (see [`crate::render::select`]).
    pub reads: Reads,
    /// Offline examples.
    pub examples: Vec<Example>,
    /// The connections to this webhook's origin (through its own trust roots when `[tls]`
    /// is set), shared with every webhook of the same origin and roots.
    pub pool: Arc<Pool>,
    /// Every secret value this webhook holds, to scrub from anything it answers.
    pub secrets: Vec<String>,
    /// The same, as prebuilt substring searchers (a request only searches).
    pub secret_finders: Vec<memchr::memmem::Finder<'static>>,
    /// Whether a secret is a number of six digits or more (a PIN, an account number), which
    /// an upstream may echo as a number spelled another way (`4.455667788e9`): its answers
    /// are always scrubbed.
    pub digit_secret: bool,
    /// Context Values no template reads.
    pub unused_context: Vec<String>,
    /// What `hookside check` warns about: unused Context Values, secrets not set here.
    pub warnings: Vec<Problem>,
    /// The URL as written.
    pub url_source: String,
    /// This webhook's metric series, fetched once (by the reload that brings it in).
    pub metrics: std::sync::OnceLock<Arc<crate::metrics::WebhookMetrics>>,
    /// The whole definition as compact JSON text, secrets as `***` (text: a parsed JSON
    /// tree costs several kilobytes per webhook, and only `GET /v1/webhooks/{name}` reads it).
    pub definition: String,
}

/// What the request templates and the Custom Variables read.
fn reads_of(
    url: &UrlTemplate,
    headers: &[(HeaderName, TextTemplate)],
    query: &[(String, TextTemplate)],
    body: &Body,
    variables: &[Variable],
) -> Reads {
    let mut reads = Reads::default();
    url.note_reads(&mut reads);
    for template in headers
        .iter()
        .map(|(_, t)| t)
        .chain(query.iter().map(|(_, t)| t))
    {
        template.note_reads(&mut reads);
    }
    match body {
        Body::None => {}
        Body::Json(template) => template.note_reads(&mut reads),
        Body::Text(template) => template.note_reads(&mut reads),
    }
    for variable in variables {
        variable.note_reads(&mut reads);
    }
    reads.conversation.shrink();
    reads.response.shrink();
    reads
}

/// The `Authorization` header of `[auth]`.
#[derive(Debug)]
pub struct AuthHeader {
    /// The value sent (marked sensitive).
    pub value: HeaderValue,
    /// The value shown: `Basic ***` or `Bearer ***`.
    pub shown: &'static str,
}

/// The request body.
#[derive(Debug)]
pub enum Body {
    /// No body.
    None,
    /// A JSON document built from a `[body]` table.
    Json(JsonTemplate),
    /// A text template sent as is.
    Text(TextTemplate),
}

/// One `[[examples]]` entry, validated.
#[derive(Clone, Debug)]
pub struct Example {
    /// The conversation object.
    pub conversation: serde_json::Value,
    /// The upstream status to pretend.
    pub status: u16,
    /// The upstream body to pretend.
    pub response: serde_json::Value,
    /// Expected variables.
    pub expect: serde_json::Map<String, serde_json::Value>,
    /// Expectations on the rendered request.
    pub request: Option<ExpectedRequest>,
    /// Where the example was written.
    pub at: super::source::Location,
}

/// What an example expects of the rendered request.
#[derive(Clone, Debug, Default)]
pub struct ExpectedRequest {
    /// The method.
    pub method: Option<String>,
    /// The URL as shown (secrets as `***`).
    pub url: Option<String>,
    /// Headers by lower-case name.
    pub headers: BTreeMap<String, String>,
    /// The body as shown: JSON, or a string for a text body.
    pub body: Option<serde_json::Value>,
}

/// `encoded` with the hex digits of its `%XX` escapes in lower case.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut escape = 0;
    for c in encoded.chars() {
        if c == '%' {
            escape = 2;
            out.push(c);
        } else if escape > 0 {
            escape -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Secrets shorter than this are not scrubbed from answers (documented in SECURITY.md).
const MIN_SCRUBBED_SECRET: usize = 3;

/// The problem of a `context` value that a template reads and `[context]` does not define.
fn undefined_context(key: &str) -> String {
    format!("context.{key} is used but [context] does not define it")
}

/// Whether `message` says the URL's host is not in `security.allowed_hosts`.
pub fn is_host_not_allowed(message: &str) -> bool {
    message.starts_with("url: host ") && message.ends_with(NOT_ALLOWED_HOST)
}

/// The end of the problem of a host not in `security.allowed_hosts`.
const NOT_ALLOWED_HOST: &str = "is not in security.allowed_hosts";

/// Whether an expression reading `names` reads what a variable may read: the response, its
/// status or headers, `context`, `webhook`, or a key of the conversation the Webhook
/// Builder's help lists. `order.status` reads none of them.
fn reads_known_data(names: &BTreeSet<String>) -> bool {
    const KNOWN: [&str; 20] = [
        "response",
        "status",
        "headers",
        "context",
        "webhook",
        "lastName",
        "replyData",
        "sessionId",
        "attachedMedia",
        "direction",
        "reply",
        "extractedData",
        "botId",
        "botDeploymentId",
        "firstName",
        "customVariables",
        "moduleId",
        "to",
        "from",
        "botTrainedModelId",
    ];
    names.is_empty()
        || names.iter().any(|name| {
            name.split(['.', '['])
                .next()
                .is_some_and(|root| KNOWN.contains(&root))
        })
}

/// How an `[auth]` value that its type needs and no file set is reported.
const MISSING_FOR_AUTH: &str = "missing for auth type";

/// Whether `message` reports what a webhook extending a template may still set: a
/// `context` value a template reads ([`undefined_context`]), or an `[auth]` value.
pub fn is_left_to_webhooks(message: &str) -> bool {
    (message.starts_with("context.")
        && message.ends_with(" is used but [context] does not define it"))
        || (message.starts_with("auth.") && message.contains(MISSING_FOR_AUTH))
}

/// Whether a string of `value`, at any depth, mentions a secret reference.
fn mentions_secret(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(text) => secret::has_reference(text),
        toml::Value::Array(items) => items.iter().any(mentions_secret),
        toml::Value::Table(table) => table.values().any(mentions_secret),
        _ => false,
    }
}

/// Where `${env:...}` and `${file:...}` are not resolved.
const NOT_RESOLVED: &str = "secrets (${env:...}, ${file:...}) are resolved only in [auth], \
                            [headers] and [query] values; move it to one of those";

/// Headers a file may not set: hyper and hookside own them.
const RESERVED_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// Compiles one webhook from its merged fields. `revision` identifies the content.
pub fn compile(
    def: &Def,
    fields: &Fields,
    revision: u64,
    settings: &Settings,
    upstream: &Upstream,
) -> Result<Webhook, Vec<Problem>> {
    compile_fields(def, fields, revision, settings, upstream).map_err(|mut problems| {
        super::source::pinpoint(&mut problems);
        problems
    })
}

fn compile_fields(
    def: &Def,
    fields: &Fields,
    revision: u64,
    settings: &Settings,
    upstream: &Upstream,
) -> Result<Webhook, Vec<Problem>> {
    let mut sink = Sink {
        problems: Vec::new(),
        warnings: Vec::new(),
        secrets: Vec::new(),
        secrets_optional: settings.secrets_optional,
    };
    let name = def.name.value.clone();
    let file = &def.file;

    let company = match &fields.company {
        // A company names metric series and log lines: no control character (a line break
        // would forge a log line).
        Some(company) if company.value.chars().any(char::is_control) => {
            sink.problems.push(company.problem(
                "company: must not hold a control character (a line break, a tab, an escape)",
            ));
            String::new()
        }
        Some(company) if !company.value.trim().is_empty() => company.value.clone(),
        Some(company) => {
            sink.problems
                .push(company.problem("company: must not be empty"));
            String::new()
        }
        None => {
            sink.problems
                .push(file.problem("company: missing; a webhook must be assigned to a Company"));
            String::new()
        }
    };

    if let (Some(located), Some(variant)) = (
        &fields.company,
        settings::case_variant(&settings.companies, &company),
    ) {
        sink.warnings.push(located.problem(format!(
            "company: \"{company}\" has no caller tokens, so any caller may call this webhook, \
             but the config file has [companies.{variant}] (company names are case-sensitive)"
        )));
    }

    let method = match &fields.method {
        None => Method::GET,
        Some(method) => match method.value.to_ascii_uppercase().as_str() {
            m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => {
                Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)
            }
            other => {
                sink.problems.push(method.problem(format!(
                    "method: {other:?} is not one of GET POST PUT PATCH DELETE HEAD OPTIONS"
                )));
                Method::GET
            }
        },
    };

    for (field, value, supported, long, later) in [
        (
            "response_type",
            &fields.response_type,
            "json",
            "json",
            "\"xml\" and \"text\" come later",
        ),
        (
            "execution",
            &fields.execution,
            "sync",
            "synchronous",
            "\"async\" comes later",
        ),
    ] {
        if let Some(value) = value
            && value.value != supported
        {
            // The Webhook Builder's words ("JSON", "Synchronous") are this value.
            let message = if value.value.eq_ignore_ascii_case(supported)
                || value.value.eq_ignore_ascii_case(long)
            {
                format!("{field}: {:?} is written \"{supported}\"", value.value)
            } else {
                format!(
                    "{field}: {:?} is not supported; use \"{supported}\" ({later})",
                    value.value
                )
            };
            sink.problems.push(value.problem(message));
        }
    }

    let timeout = match &fields.timeout {
        None => settings.default_timeout,
        Some(timeout) => parse_timeout(&timeout.value).unwrap_or_else(|message| {
            sink.problems
                .push(timeout.problem(format!("timeout: {message}")));
            settings.default_timeout
        }),
    };

    let mut context_map = BTreeMap::new();
    for (key, value) in &fields.context {
        let text = match &value.value {
            toml::Value::String(s) if super::secret::has_reference(s) => {
                sink.problems
                    .push(value.problem(format!("context.{key}: {NOT_RESOLVED}")));
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                value.value.to_string()
            }
            _ => {
                sink.problems.push(value.problem(format!(
                    "context.{key}: must be a string, number or boolean"
                )));
                continue;
            }
        };
        context_map.insert(key.clone(), text);
    }
    let fixed = Fixed::new(&context_map, &name, &company);

    // Every name the templates read, and where each was first read (for a `context` value
    // that is not defined).
    let mut names = BTreeSet::new();
    let mut reported_undefined = BTreeSet::new();
    let mut first_use: BTreeMap<String, Location> = BTreeMap::new();
    let mut note = |read: BTreeSet<String>, at: &Location| {
        for name in read {
            first_use.entry(name.clone()).or_insert_with(|| at.clone());
            names.insert(name);
        }
    };
    let url = match &fields.url {
        None => {
            sink.problems.push(file.problem("url: missing"));
            None
        }
        Some(url) if super::secret::has_reference(&url.value) => {
            sink.problems
                .push(url.problem(format!("url: {NOT_RESOLVED}")));
            None
        }
        Some(url) => match UrlTemplate::compile(&url.value, &fixed) {
            Ok(compiled) => {
                if !settings.host_allowed(&compiled.host) {
                    sink.problems.push(
                        url.problem(format!("url: host {:?} {NOT_ALLOWED_HOST}", compiled.host)),
                    );
                }
                note(compiled.names(), &url.at);
                Some(compiled)
            }
            Err(message) => {
                // An undefined `context` value renders empty, which may break the origin
                // ("http://" is not a valid origin): the cause is the missing value. The URL
                // is compiled again with a stand-in for each, to find what else is wrong.
                let undefined: BTreeSet<String> = TextTemplate::from_str(&url.value, Mode::Text)
                    .map(|template| template.names())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|name| name.strip_prefix("context."))
                    .map(|rest| rest.split('.').next().unwrap_or(rest).to_owned())
                    .filter(|key| !fields.context.contains_key(key))
                    .collect();
                let message = if undefined.is_empty() {
                    Some(message)
                } else {
                    let mut standing_in = context_map.clone();
                    for key in &undefined {
                        standing_in.insert(key.clone(), "1".to_owned());
                    }
                    UrlTemplate::compile(&url.value, &Fixed::new(&standing_in, &name, &company))
                        .err()
                };
                if let Some(message) = message {
                    let message = if message.starts_with("url: ") {
                        message
                    } else {
                        format!("url: {message}")
                    };
                    sink.problems.push(url.problem(message));
                }
                for key in &undefined {
                    sink.problems.push(url.problem(undefined_context(key)));
                }
                reported_undefined.extend(undefined);
                None
            }
        },
    };

    let auth = compile_auth(fields, file, &mut sink);

    let mut headers = Vec::new();
    for (key, value) in &fields.headers {
        let header = match HeaderName::from_bytes(key.as_bytes()) {
            Ok(header) => header,
            Err(_) => {
                sink.problems
                    .push(value.problem(format!("headers: {key:?} is not a valid header name")));
                continue;
            }
        };
        if RESERVED_HEADERS.contains(&header.as_str()) {
            sink.problems.push(value.problem(format!(
                "headers: {key} is set by hookside and may not be templated"
            )));
            continue;
        }
        if header == http::header::AUTHORIZATION && auth.is_some() {
            sink.problems.push(
                value.problem("headers: Authorization conflicts with [auth]; set one of them"),
            );
            continue;
        }
        if let Some(template) =
            text_with_secrets(value, Mode::Text, &format!("headers.{key}"), &mut sink)
        {
            if let Some(what) = template.invalid_in_header() {
                sink.problems.push(value.problem(format!(
                    "headers.{key}: {what} holds a line break or another control character, which a header cannot carry"
                )));
                continue;
            }
            note(template.names(), &value.at);
            headers.push((header, template));
        }
    }

    let mut query = Vec::new();
    for (key, values) in &fields.query {
        for value in &values.value {
            let located = Located {
                value: value.clone(),
                at: values.at.clone(),
            };
            if let Some(template) =
                text_with_secrets(&located, Mode::Text, &format!("query.{key}"), &mut sink)
            {
                note(template.names(), &located.at);
                query.push((key.clone(), template));
            }
        }
    }

    let body = match &fields.body {
        None => Body::None,
        Some(body) => {
            let compiled = match &body.value {
                value if mentions_secret(value) => Err(format!("body: {NOT_RESOLVED}")),
                toml::Value::String(text) => TextTemplate::from_str(text, Mode::Text)
                    .map(Body::Text)
                    .map_err(|err| format!("body: {err}")),
                toml::Value::Table(_) => JsonTemplate::compile(&body.value).map(Body::Json),
                _ => Err("body: must be a table (a JSON body) or a string (a text body)".into()),
            };
            match compiled {
                Ok(compiled) => {
                    match &compiled {
                        Body::Text(template) => note(template.names(), &body.at),
                        Body::Json(template) => note(template.names(), &body.at),
                        Body::None => {}
                    }
                    compiled
                }
                Err(message) => {
                    sink.problems.push(body.problem(message));
                    Body::None
                }
            }
        }
    };

    let mut variables = Vec::new();
    for (key, source) in &fields.variables {
        if let Err(message) = super::raw::check_name(key) {
            sink.problems
                .push(source.problem(format!("variables: {message}")));
        }
        match Variable::compile(key, &source.value) {
            Ok(variable) => {
                let read = variable.names();
                if !variable.is_json_path() && !reads_known_data(&read) {
                    // `order.status` for `response.order.status`: always missing.
                    sink.warnings.push(source.problem(format!(
                        "variables.{key} reads nothing of the response (response, status, \
                         headers) nor a conversation key the platform sends; the response's \
                         body is `response`, as in response.order.id"
                    )));
                }
                note(read, &source.at);
                variables.push(variable);
            }
            Err(message) => sink
                .problems
                .push(source.problem(format!("variables.{key}: {message}"))),
        }
    }

    let used_context: BTreeSet<&str> = names
        .iter()
        .filter_map(|name| name.strip_prefix("context."))
        .map(|rest| rest.split('.').next().unwrap_or(rest))
        .collect();
    for key in &used_context {
        if !fields.context.contains_key(*key) && !reported_undefined.contains(*key) {
            // Where it is first read (`context.region.code` is read as itself).
            let at = first_use
                .iter()
                .find(|(name, _)| {
                    name.strip_prefix("context.")
                        .is_some_and(|rest| rest.split('.').next() == Some(*key))
                })
                .map_or(file, |(_, at)| at);
            sink.problems.push(at.problem(undefined_context(key)));
        }
    }
    let reads_whole_context = names.contains("context");
    let unused_context: Vec<String> = fields
        .context
        .keys()
        .filter(|key| !reads_whole_context && !used_context.contains(key.as_str()))
        .cloned()
        .collect();

    for key in &unused_context {
        if let Some(value) = fields.context.get(key) {
            sink.warnings
                .push(value.problem(format!(
                "context.{key} is defined but the webhook's url, headers, query and body do not read it"
            )));
        }
    }
    let examples = fields
        .examples
        .iter()
        .filter_map(|example| compile_example(example, &fields.variables, &mut sink.problems))
        .collect();

    let roots = match &fields.ca_file {
        None => upstream.webpki_roots(),
        Some(ca) => {
            let path = ca.at.base_dir().join(&ca.value);
            match upstream.roots_from(&path) {
                Ok(roots) => roots,
                Err(message) => {
                    sink.problems
                        .push(ca.problem(format!("tls.ca_file: {message}")));
                    upstream.webpki_roots()
                }
            }
        }
    };

    let Some(url) = url else {
        return Err(sink.problems);
    };
    if !sink.problems.is_empty() {
        return Err(sink.problems);
    }
    let pool = upstream.pool(&roots, &url.scheme, &url.authority);
    let mut secrets = sink.secrets;
    // Query secrets travel percent-encoded: an upstream quoting its request URL echoes that,
    // or the form it decoded written again (spaces as `+`, hex in lower case).
    for secret in query.iter().flat_map(|(_, template)| template.secrets()) {
        let mut encoded = String::new();
        crate::render::encode_component(&mut encoded, &secret.value);
        secrets.push(encoded.replace("%20", "+"));
        secrets.push(lower_hex(&encoded));
        secrets.push(lower_hex(&encoded).replace("%20", "+"));
        secrets.push(encoded);
    }
    // A secret with a quote, a backslash or a control character, echoed inside JSON text
    // that is not JSON as a whole (a text answer Run Webhook shows), is spelt escaped.
    let escaped: Vec<String> = secrets
        .iter()
        .filter_map(|secret| {
            let quoted = serde_json::to_string(secret).ok()?;
            let inner = &quoted[1..quoted.len() - 1];
            (inner != secret).then(|| inner.to_owned())
        })
        .collect();
    secrets.extend(escaped);
    // Too short to scrub without mangling every answer (an empty basic-auth password).
    secrets.retain(|secret| secret.len() >= MIN_SCRUBBED_SECRET);
    secrets.sort_by_key(|s: &String| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let definition = definition_json(def, fields, &name, &company, &method, timeout).to_string();
    let reads = reads_of(&url, &headers, &query, &body, &variables);
    let fixed = fixed.keeping(reads.context, reads.identity);
    let watched = watched_secrets(fields);
    Ok(Webhook {
        name,
        company,
        description: fields.description.as_ref().map(|d| d.value.clone()),
        source: def.file.path.to_path_buf(),
        revision: format!("{revision:016x}"),
        revision_hash: revision,
        templates_hash: 0,
        secrets_hash: secret::current_hash(&watched.0, watched.1.as_deref()),
        watched,
        method,
        url,
        timeout,
        fixed,
        auth,
        headers,
        query,
        body,
        variables,
        reads,
        examples,
        pool,
        secret_finders: secrets
            .iter()
            .map(|secret| memchr::memmem::Finder::new(secret.as_bytes()).into_owned())
            .collect(),
        digit_secret: secrets.iter().any(|secret| {
            let digits = secret.bytes().filter(u8::is_ascii_digit).count();
            digits >= 6 && secret.parse::<f64>().is_ok_and(f64::is_finite)
        }),
        secrets,
        unused_context,
        warnings: sink.warnings,
        url_source: fields
            .url
            .as_ref()
            .map(|u| u.value.clone())
            .unwrap_or_default(),
        metrics: std::sync::OnceLock::new(),
        definition,
    })
}

impl Webhook {
    /// Every name the request templates read, dotted (`extractedData.orderId`).
    pub fn template_names(&self) -> BTreeSet<String> {
        let mut names = self.url.names();
        for (_, template) in &self.headers {
            names.extend(template.names());
        }
        for (_, template) in &self.query {
            names.extend(template.names());
        }
        match &self.body {
            Body::None => {}
            Body::Json(template) => names.extend(template.names()),
            Body::Text(template) => names.extend(template.names()),
        }
        names
    }

    /// Whether `other` was compiled with the same secret values (and CA file) as this, for
    /// two compilations of one file.
    pub fn same_secrets_as(&self, other: &Webhook) -> bool {
        self.secrets_hash == other.secrets_hash
    }

    /// Whether every secret (and the CA file) still has the value it was compiled with.
    pub fn secrets_unchanged(&self) -> bool {
        secret::current_hash(&self.watched.0, self.watched.1.as_deref()) == self.secrets_hash
    }
}

/// The values of `fields` that name secrets, and the CA file.
fn watched_secrets(fields: &Fields) -> (Vec<secret::Watched>, Option<PathBuf>) {
    let auth = &fields.auth;
    let single = [&auth.username, &auth.password, &auth.token]
        .into_iter()
        .flatten()
        .chain(fields.headers.values())
        .map(|located| (located.value.as_str(), located.at.base_dir()));
    let queries = fields.query.values().flat_map(|located| {
        located
            .value
            .iter()
            .map(move |value| (value.as_str(), located.at.base_dir()))
    });
    let watched = single
        .chain(queries)
        .filter(|(value, _)| secret::has_reference(value))
        .map(|(value, base)| secret::Watched::new(value, base))
        .collect();
    let ca = fields
        .ca_file
        .as_ref()
        .map(|ca| ca.at.base_dir().join(&ca.value));
    (watched, ca)
}

/// Whether a warning is about the webhook that extends the template where it is placed,
/// rather than about the template itself: a context value its URL does not read, a
/// credential its own (or missing) `type` does not send.
pub fn is_about_the_webhook(message: &str) -> bool {
    message.starts_with("context.") || message.contains(NOT_SENT)
}

/// What every warning of [`unused_credentials`] says.
const NOT_SENT: &str = "is not sent";

/// Warns of an `[auth]` credential that its type does not send: a token without a type
/// sends nothing, silently. A warning, not an error: `type = "none"` beside its token is how
/// auth is switched off for a while, and a file that loaded before must not stop serving. A
/// credential inherited from a template, where the webhook's own `type` overrides the
/// template's, is left alone (`file`: the file being compiled).
fn unused_credentials(auth: &AuthFields, kind: &str, file: &Location, sink: &mut Sink) {
    let credentials = [
        (&auth.token, "token", "bearer"),
        (&auth.username, "username", "basic"),
        (&auth.password, "password", "basic"),
    ];
    for (field, key, needs) in credentials {
        let Some(located) = field else { continue };
        let message = match &auth.kind {
            _ if kind == needs => continue,
            None => format!(
                "auth.{key} {NOT_SENT}: no auth.type is set; set type = {needs:?} to send it"
            ),
            Some(_) if located.at.path != file.path => continue,
            Some(_) if kind == "none" => format!(
                "auth.{key} {NOT_SENT}: auth type \"none\" sends nothing; remove it or set type = {needs:?}"
            ),
            Some(_) if matches!(kind, "basic" | "bearer") => {
                format!("auth.{key} {NOT_SENT}: auth type {kind:?} does not use it; remove it")
            }
            Some(_) => continue,
        };
        sink.warnings.push(located.at.problem(message));
    }
}

fn compile_auth(
    fields: &Fields,
    file: &super::source::Location,
    sink: &mut Sink,
) -> Option<AuthHeader> {
    let auth = &fields.auth;
    let kind = auth.kind.as_ref().map_or("none", |k| k.value.as_str());
    let value_of =
        |sink: &mut Sink, field: &Option<Located<String>>, key: &str| -> Option<String> {
            let Some(located) = field else {
                let at = auth.kind.as_ref().map_or(file, |k| &k.at);
                sink.problems
                    .push(at.problem(format!("auth.{key}: {MISSING_FOR_AUTH} {kind:?}")));
                return None;
            };
            let pieces = sink.resolve(located, &format!("auth.{key}"))?;
            sink.secrets.extend(pieces.iter().filter_map(|p| match p {
                Piece::Secret(s) => Some(s.value.clone()),
                Piece::Text(_) => None,
            }));
            Some(secret::reveal(&pieces))
        };
    unused_credentials(auth, kind, file, sink);
    let (header, shown) = match kind {
        "none" => return None,
        "basic" => {
            let username = value_of(sink, &auth.username, "username");
            let password = value_of(sink, &auth.password, "password");
            let (username, password) = (username?, password?);
            // RFC 7617: the pair splits at the first `:`, so a username cannot hold one.
            if username.contains(':')
                && let Some(at) = &auth.username
            {
                sink.problems.push(at.problem(
                    "auth.username: a basic-auth username cannot hold `:` (the upstream would \
                     read the password from there)",
                ));
                return None;
            }
            let credentials = format!("{username}:{password}");
            use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
            let encoded = STANDARD.encode(&credentials);
            // The password and the encoded pair are secrets (also unpadded, or in the URL's
            // alphabet, as an upstream may echo it); so is the pair in clear.
            sink.secrets.push(STANDARD_NO_PAD.encode(&credentials));
            sink.secrets.push(URL_SAFE_NO_PAD.encode(&credentials));
            sink.secrets.push(password);
            sink.secrets.push(credentials);
            sink.secrets.push(encoded.clone());
            (format!("Basic {encoded}"), "Basic ***")
        }
        "bearer" => {
            let token = value_of(sink, &auth.token, "token")?;
            sink.secrets.push(token.clone());
            (format!("Bearer {token}"), "Bearer ***")
        }
        other => {
            if let Some(k) = &auth.kind {
                // The Webhook Builder's words: "Basic authentication", "No authentication".
                let word = other.trim();
                let word = word
                    .get(..word.len().saturating_sub(" authentication".len()))
                    .filter(|_| word.to_ascii_lowercase().ends_with(" authentication"))
                    .unwrap_or(word);
                let word = if word.eq_ignore_ascii_case("no") {
                    "none"
                } else {
                    word
                };
                let known = ["none", "basic", "bearer"]
                    .into_iter()
                    .find(|known| word.eq_ignore_ascii_case(known));
                sink.problems.push(k.problem(match known {
                    Some(known) => format!("auth.type: {other:?} is written {known:?}"),
                    None => format!(
                        "auth.type: {other:?} is not one of \"none\", \"basic\", \"bearer\""
                    ),
                }));
            }
            return None;
        }
    };
    match HeaderValue::from_str(&header) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Some(AuthHeader { value, shown })
        }
        Err(_) => {
            if let Some(k) = &auth.kind {
                sink.problems.push(
                    k.problem("auth: a credential holds a character not allowed in a header"),
                );
            }
            None
        }
    }
}

/// Where compiling reports: errors, warnings, and the secrets met on the way.
struct Sink {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    secrets: Vec<String>,
    /// `hookside check`: a secret that is not set here is a warning, not an error.
    secrets_optional: bool,
}

impl Sink {
    /// Resolves the secrets of a value.
    fn resolve(&mut self, value: &Located<String>, field: &str) -> Option<Vec<Piece>> {
        let base = value.at.base_dir();
        // Headers and query values are templates; `[auth]` values are not.
        let templated = !field.starts_with("auth.");
        let resolved = if self.secrets_optional {
            secret::resolve_or_placeholder(&value.value, base, templated).map(
                |(pieces, missing)| {
                    for message in missing {
                        self.warnings.push(value.problem(format!(
                            "{field}: {message} (a placeholder stands in; serve needs it set)"
                        )));
                    }
                    pieces
                },
            )
        } else {
            secret::resolve(&value.value, base, templated)
        };
        resolved
            .map_err(|message| {
                self.problems
                    .push(value.problem(format!("{field}: {message}")))
            })
            .ok()
    }
}

fn text_with_secrets(
    value: &Located<String>,
    mode: Mode,
    field: &str,
    sink: &mut Sink,
) -> Option<TextTemplate> {
    let pieces = sink.resolve(value, field)?;
    let secrets = &mut sink.secrets;
    let problems = &mut sink.problems;
    match TextTemplate::compile(pieces, mode) {
        Ok(template) => {
            secrets.extend(template.secrets().map(|s| s.value.clone()));
            Some(template)
        }
        Err(message) => {
            problems.push(value.problem(format!("{field}: {message}")));
            None
        }
    }
}

fn compile_example(
    example: &Located<RawExample>,
    variables: &BTreeMap<String, Located<String>>,
    problems: &mut Vec<Problem>,
) -> Option<Example> {
    let raw = &example.value;
    let conversation = match &raw.conversation {
        None => json!({}),
        Some(toml::Value::Table(table)) => toml_to_json(&toml::Value::Table(table.clone())),
        Some(_) => {
            problems.push(example.problem("examples: conversation must be a table"));
            return None;
        }
    };
    let response = match &raw.response {
        None => serde_json::Value::Null,
        Some(toml::Value::String(text)) => match serde_json::from_str(text) {
            Ok(json) => json,
            Err(err) => {
                problems
                    .push(example.problem(format!("examples: response is not valid JSON: {err}")));
                return None;
            }
        },
        Some(other) => toml_to_json(other),
    };
    let status = raw.status.unwrap_or(200);
    if !(100..=599).contains(&status) {
        problems.push(example.problem(format!("examples: status {status} is not an HTTP status")));
        return None;
    }
    let mut expect = serde_json::Map::new();
    for (key, value) in raw.expect.clone().unwrap_or_default() {
        if !variables.contains_key(&key) {
            problems.push(example.problem(format!(
                "examples: expect.{key} names no variable in [variables]"
            )));
            continue;
        }
        expect.insert(key, toml_to_json(&value));
    }
    let request = raw.request.as_ref().map(|request| ExpectedRequest {
        method: request.method.as_ref().map(|m| m.to_ascii_uppercase()),
        url: request.url.clone(),
        headers: request
            .headers
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        body: request.body.as_ref().map(toml_to_json),
    });
    Some(Example {
        conversation,
        status,
        response,
        expect,
        request,
        at: example.at.clone(),
    })
}

/// Converts TOML to JSON (datetimes become strings).
pub fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => s.clone().into(),
        toml::Value::Integer(n) => (*n).into(),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(items) => items.iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// The definition shown by `GET /v1/webhooks/{name}`: merged fields, secrets as `***`.
fn definition_json(
    def: &Def,
    fields: &Fields,
    name: &str,
    company: &str,
    method: &Method,
    timeout: Duration,
) -> serde_json::Value {
    let shown = |text: &str| -> String {
        if secret::has_reference(text) {
            secret::mask_references(text)
        } else {
            text.to_owned()
        }
    };
    let auth = &fields.auth;
    let mut auth_json = serde_json::Map::new();
    auth_json.insert(
        "type".into(),
        auth.kind
            .as_ref()
            .map_or("none", |k| k.value.as_str())
            .into(),
    );
    if let Some(username) = &auth.username {
        auth_json.insert("username".into(), shown(&username.value).into());
    }
    if auth.password.is_some() {
        auth_json.insert("password".into(), "***".into());
    }
    if auth.token.is_some() {
        auth_json.insert("token".into(), "***".into());
    }
    json!({
        "name": name,
        "company": company,
        "description": fields.description.as_ref().map(|d| &d.value),
        "extends": def.extends.as_ref().map(|e| &e.value),
        "method": method.as_str(),
        "url": fields.url.as_ref().map(|u| &u.value),
        "response_type": "json",
        "execution": "sync",
        "timeout_ms": timeout.as_millis() as u64,
        "context": fields.context.iter().map(|(k, v)| (k.clone(), toml_to_json(&v.value))).collect::<serde_json::Map<_, _>>(),
        "auth": auth_json,
        "headers": fields.headers.iter().map(|(k, v)| (k.clone(), shown(&v.value).into())).collect::<serde_json::Map<_, _>>(),
        "query": fields.query.iter().map(|(k, v)| (k.clone(), v.value.iter().map(|s| shown(s)).collect::<Vec<_>>().into())).collect::<serde_json::Map<_, _>>(),
        "body": fields.body.as_ref().map(|b| toml_to_json(&b.value)),
        "tls": fields.ca_file.as_ref().map(|ca| json!({"ca_file": ca.value})),
        "variables": fields.variables.iter().map(|(k, v)| (k.clone(), v.value.clone().into())).collect::<serde_json::Map<_, _>>(),
        "examples": fields.examples.len(),
    })
}
