//! The process-wide minijinja environment, owned compiled templates, and the formatter
//! that percent-encodes what URL templates print.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::LazyLock;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Expression, UndefinedBehavior, Value};
use percent_encoding::utf8_percent_encode;

use super::{COMPONENT, Mode, TRUSTED_PATH, TRUSTED_QUERY};

/// Template names that select the escaping of what `{{ }}` prints.
const TEXT: &str = "text";
const PATH: &str = "url-path";
const QUERY: &str = "url-query";

/// What a single render or evaluation may spend, in minijinja's fuel (one an instruction,
/// one per 64 bytes made, one per 4 bytes of a value written as JSON): a loop over a huge
/// array fails fast as a render error instead of holding the runtime (about 10 ms here at
/// most), while `tojson` of a whole 1 MiB conversation fits.
const FUEL: u64 = 500_000;

/// The one template environment of the process. Its settings never change, so it is
/// built once and compiled templates borrow it for `'static` (no per-snapshot copies of
/// the builtin filter tables).
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    env.set_auto_escape_callback(|name| match name {
        PATH => AutoEscape::Custom(std::borrow::Cow::Borrowed(PATH)),
        QUERY => AutoEscape::Custom(std::borrow::Cow::Borrowed(QUERY)),
        _ => AutoEscape::None,
    });
    env.set_formatter(format_value);
    // Jinja2 is Python: its users call `.get('k')`, `.items()`, `.split(' ')` on values.
    env.set_unknown_method_callback(python_method);
    minijinja_contrib::add_to_environment(&mut env);
    env.add_filter("truncate", truncate);
    env
});

/// Why `str.format` fails (also found when a file loads).
const NO_STR_FORMAT: &str =
    "str.format is not available; use ~ or the format filter ('%s-%s' | format(a, b))";

/// Python's methods of strings, objects and lists (minijinja_contrib's), but `str.format`:
/// it pads to any width it is asked (`'{:>99999999999}'.format('')`) without paying fuel,
/// and a file's template is rendered once when it loads. The `format` filter is checked.
fn python_method(
    state: &mut minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    // Undefined lookups chain, and null prints as nothing: so do their methods, and
    // `.get(key, default)` gives the default (`customVariables.get('lang', 'en')` on a
    // first turn, before any Custom Variable).
    if value.is_undefined() || value.is_none() {
        return Ok(match (method, args) {
            ("get", [_, default]) => default.clone(),
            _ => Value::UNDEFINED,
        });
    }
    if method == "format" && value.kind() == ValueKind::String {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UnknownMethod,
            NO_STR_FORMAT,
        ));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// minijinja_contrib's `truncate`, which takes keywords only, also taking Jinja2's positional
/// arguments (`truncate(20)`, `truncate(20, true)`).
fn truncate(
    state: &mut minijinja::State,
    value: &Value,
    args: minijinja::value::Rest<Value>,
    kwargs: minijinja::value::Kwargs,
) -> Result<Value, minijinja::Error> {
    const NAMES: [&str; 4] = ["length", "killwords", "end", "leeway"];
    if args.len() > NAMES.len() {
        return Err(minijinja::Error::from(
            minijinja::ErrorKind::TooManyArguments,
        ));
    }
    let mut all: Vec<(&str, Value)> = NAMES.iter().copied().zip(args.iter().cloned()).collect();
    for name in &NAMES[args.len()..] {
        if let Some(value) = kwargs.get::<Option<Value>>(name)? {
            all.push((name, value));
        }
    }
    kwargs.assert_all_used()?;
    minijinja_contrib::filters::truncate(state, value, all.into_iter().collect())
}

self_cell::self_cell!(
    /// A compiled template that owns its source.
    pub struct OwnedTemplate {
        owner: (&'static str, Box<str>),
        #[covariant]
        dependent: CompiledTemplate,
    }
);

type CompiledTemplate<'a> = minijinja::Template<'a, 'a>;

/// A compiled expression. It owns its source.
pub type CompiledExpression = Expression<'static, 'static>;

impl std::fmt::Debug for OwnedTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template({:?})", self.borrow_owner().1)
    }
}

impl OwnedTemplate {
    /// Compiles `source`; what it prints is escaped for `mode`.
    pub fn compile(source: &str, mode: Mode) -> Result<OwnedTemplate, String> {
        let name = match mode {
            Mode::Text => TEXT,
            Mode::Path => PATH,
            Mode::Query => QUERY,
        };
        let template = OwnedTemplate::try_new((name, source.into()), |owner| {
            let env: &Environment<'_> = &ENV;
            env.template_from_named_str(owner.0, &owner.1)
        })
        .map_err(|err| describe(&err))?;
        if may_call(source) {
            unknown_name(template.borrow_dependent().render(probe()))?;
        }
        Ok(template)
    }

    /// Renders with `data`.
    pub fn render(&self, data: &Value) -> Result<String, String> {
        self.borrow_dependent()
            .render(data)
            .map_err(|err| describe(&err))
    }

    /// The names it reads, dotted (`context.region`).
    pub fn names(&self) -> BTreeSet<String> {
        self.borrow_dependent()
            .undeclared_variables(true)
            .into_iter()
            .collect()
    }
}

/// Compiles a Jinja expression (no `{{ }}`).
pub fn compile_expression(source: &str) -> Result<CompiledExpression, String> {
    let expression = ENV
        .compile_expression_owned(source.to_owned())
        .map_err(|err| describe(&err))?;
    if may_call(source) {
        unknown_name(expression.eval(probe()))?;
    }
    Ok(expression)
}

/// Whether `source` may name a filter, a test or a function (`|`, `is`, a call).
fn may_call(source: &str) -> bool {
    source.contains(['|', '(']) || source.contains(" is ")
}

/// No data: what a probe renders with. Every value is undefined.
fn probe() -> Value {
    Value::from(std::collections::BTreeMap::<String, Value>::new())
}

/// A filter, test or function name that minijinja does not know (a typo such as
/// `defualt`) is an error of the file, found by rendering once with no data, rather than of
/// every call. Any other outcome is left to the calls, which have the data; a name on a
/// branch that no data takes is found only there.
fn unknown_name<T>(probed: Result<T, minijinja::Error>) -> Result<(), String> {
    use minijinja::ErrorKind::{UnknownFilter, UnknownFunction, UnknownTest};
    match probed {
        Err(err) if matches!(err.kind(), UnknownFilter | UnknownTest | UnknownFunction) => {
            Err(describe(&err))
        }
        Err(err) if err.detail().is_some_and(|d| d.starts_with(NO_STR_FORMAT)) => {
            Err(describe(&err))
        }
        _ => Ok(()),
    }
}

/// Evaluates an expression; undefined stays undefined.
pub fn eval(expression: &CompiledExpression, data: &Value) -> Result<Value, String> {
    expression.eval(data).map_err(|err| describe(&err))
}

/// The names an expression reads, dotted.
pub fn expression_names(expression: &CompiledExpression) -> BTreeSet<String> {
    expression.undeclared_variables(true).into_iter().collect()
}

/// How `{{ }}` prints: empty for undefined and none; percent-encoded in URL templates.
fn format_value(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(());
    }
    // By the template's name, not its auto-escape state, which `{% autoescape false %}`
    // would turn off: in a URL every value is encoded.
    let mode = match state.name() {
        PATH => Mode::Path,
        QUERY => Mode::Query,
        _ => Mode::Text,
    };
    // As a plain lookup prints (`lookup::write_text`), not as Python would: a boolean as
    // `true`, a list or an object as JSON (`{"k":[1,null]}`, not `{'k': [1, None]}`).
    let text;
    let text = match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default(),
        ValueKind::Bool if value.is_true() => "true",
        ValueKind::Bool => "false",
        kind => {
            let json = matches!(kind, ValueKind::Seq | ValueKind::Map | ValueKind::Iterable)
                .then(|| serde_json::to_string(value).ok())
                .flatten();
            text = json.unwrap_or_else(|| value.to_string());
            &text
        }
    };
    // In URLs nothing a Jinja template prints is trusted, not even a "safe" string: `tojson`
    // and `safe` would otherwise let conversation data through unencoded. (Plain lookups of
    // `context` are trusted; they do not come here.)
    let mut encoded = String::new();
    super::escape_into(&mut encoded, text, mode, false);
    out.write_str(&encoded)
        .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "write failed"))
}

/// A template error as one line, without source dumps or values.
fn describe(err: &minijinja::Error) -> String {
    if err.kind() == minijinja::ErrorKind::OutOfFuel {
        return format!(
            "the template ran out of its work budget ({FUEL} fuel: a loop too long, or a \
             value of megabytes through a filter or tojson){}",
            err.line()
                .map(|line| format!(" (template line {line})"))
                .unwrap_or_default()
        );
    }
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = err.line() {
        let _ = write!(message, " (template line {line})");
    }
    message
}

/// Percent-encodes `text` with `set` into `out`.
pub(super) fn encode_with(out: &mut String, text: &str, set: &'static percent_encoding::AsciiSet) {
    let _ = write!(out, "{}", utf8_percent_encode(text, set));
}

/// Which set a trusted or untrusted value is encoded with in `mode`.
pub(super) fn set_for(mode: Mode, trusted: bool) -> Option<&'static percent_encoding::AsciiSet> {
    match (mode, trusted) {
        (Mode::Text, _) => None,
        (Mode::Path, true) => Some(TRUSTED_PATH),
        (Mode::Query, true) => Some(TRUSTED_QUERY),
        (_, false) => Some(COMPONENT),
    }
}
