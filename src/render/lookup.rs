//! The fast path for the most common templates: a plain lookup such as `sessionId`,
//! `extractedData.orderId`, `response.items[0].sku` or `reply | default('none')`.
//!
//! Such an expression is evaluated straight on the JSON the bot sent (or the response),
//! without converting anything into template values and without a compiled minijinja
//! program (each of those holds about 5 KiB). Anything else goes to minijinja.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value as Json;

/// `root(.key | [index] | ['key'])* [| default(literal)]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    /// The top-level name (`sessionId`, `context`, `response`, ...).
    pub root: String,
    /// The steps below it.
    pub steps: Vec<Step>,
    /// The value used when the lookup finds nothing.
    pub default: Option<Json>,
}

/// One step of a lookup.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// An object key.
    Key(String),
    /// An array index; negative counts from the end.
    Index(i64),
}

/// Names that Jinja reads as literals, never as variables.
const RESERVED: [&str; 6] = ["true", "false", "none", "True", "False", "None"];

impl Lookup {
    /// Parses `source` (the inside of `{{ }}`), or `None` when it is not a plain lookup.
    pub fn parse(source: &str) -> Option<Lookup> {
        let (path, default) = match source.split_once('|') {
            Some((path, filter)) => (path, Some(parse_default(filter.trim())?)),
            None => (source, None),
        };
        let path = path.trim();
        let root_end = path
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(path.len());
        let root = &path[..root_end];
        if !is_identifier(root) || RESERVED.contains(&root) {
            return None;
        }
        let mut steps = Vec::new();
        let mut rest = &path[root_end..];
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() {
                    return None;
                }
                steps.push(match name.parse::<i64>() {
                    Ok(index) if name.bytes().all(|b| b.is_ascii_digit()) => Step::Index(index),
                    _ if is_identifier(name) => Step::Key(name.to_owned()),
                    _ => return None,
                });
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']')?;
                let inside = after[..end].trim();
                steps.push(match parse_literal(inside)? {
                    Json::String(key) => Step::Key(key),
                    Json::Number(n) => Step::Index(n.as_i64()?),
                    _ => return None,
                });
                rest = &after[end + 1..];
            } else {
                return None;
            }
        }
        Some(Lookup {
            root: root.to_owned(),
            steps,
            default,
        })
    }

    /// The dotted name it reads, as minijinja reports names (`context.region`).
    pub fn name(&self) -> String {
        match self.steps.first() {
            Some(Step::Key(key)) => format!("{}.{key}", self.root),
            _ => self.root.clone(),
        }
    }

    /// Follows the steps from `root`; `None` is undefined. A default applies to undefined.
    pub fn follow<'a>(&'a self, root: Option<Cow<'a, Json>>) -> Option<Cow<'a, Json>> {
        let mut current = root;
        for (at, step) in self.steps.iter().enumerate() {
            let found = match current {
                None => break,
                Some(Cow::Borrowed(value)) => match step.apply(value) {
                    Some(found) => Cow::Borrowed(found),
                    None => {
                        current = index_text(value, &self.steps[at..]).map(Cow::Owned);
                        break;
                    }
                },
                Some(Cow::Owned(value)) => match step.apply(&value) {
                    Some(found) => Cow::Owned(found.clone()),
                    None => {
                        current = index_text(&value, &self.steps[at..]).map(Cow::Owned);
                        break;
                    }
                },
            };
            current = Some(found);
        }
        current.or_else(|| self.default.as_ref().map(Cow::Borrowed))
    }
}

/// What Jinja gives for `steps` on a string when they are all indexes: the character at
/// the first (counted from the end when negative), itself again at `[0]` or `[-1]`. JSON
/// has no such value, so it is made; anything else is undefined.
pub fn index_text(value: &Json, steps: &[Step]) -> Option<Json> {
    let (Json::String(text), Some((Step::Index(first), rest))) = (value, steps.split_first())
    else {
        return None;
    };
    let position = if *first < 0 {
        text.chars()
            .count()
            .checked_sub(first.unsigned_abs() as usize)?
    } else {
        usize::try_from(*first).ok()?
    };
    let character = text.chars().nth(position)?;
    rest.iter()
        .all(|step| matches!(step, Step::Index(0 | -1)))
        .then(|| Json::String(character.to_string()))
}

impl Step {
    /// The value this step reaches from `value`, if any.
    pub fn apply<'v>(&self, value: &'v Json) -> Option<&'v Json> {
        match (self, value) {
            (Step::Key(key), Json::Object(map)) => map.get(key),
            (Step::Index(index), Json::Array(items)) => {
                let position = if *index < 0 {
                    items.len().checked_sub(index.unsigned_abs() as usize)?
                } else {
                    usize::try_from(*index).ok()?
                };
                items.get(position)
            }
            _ => None,
        }
    }
}

/// Writes a value as `{{ }}` prints it: strings as they are, null and undefined as
/// nothing, other scalars as JSON, objects and arrays as JSON text.
pub fn write_text(out: &mut String, value: Option<&Json>) {
    match value {
        None | Some(Json::Null) => {}
        Some(Json::String(text)) => out.push_str(text),
        Some(Json::Bool(flag)) => out.push_str(if *flag { "true" } else { "false" }),
        // A float as Jinja prints it (`1e20` is `100000000000000000000.0`).
        Some(Json::Number(number)) => match number.as_f64().filter(|_| number.is_f64()) {
            Some(float) => {
                let _ = write!(out, "{}", minijinja::Value::from(float));
            }
            None => {
                let _ = write!(out, "{number}");
            }
        },
        Some(other) => out.push_str(&other.to_string()),
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `default(LITERAL)` or `d(LITERAL)`.
fn parse_default(filter: &str) -> Option<Json> {
    let inside = filter
        .strip_prefix("default(")
        .or_else(|| filter.strip_prefix("d("))?
        .strip_suffix(')')?;
    parse_literal(inside.trim())
}

/// A string (single or double quotes, no escapes), an integer, a float or a boolean.
fn parse_literal(text: &str) -> Option<Json> {
    for quote in ['\'', '"'] {
        if let Some(inner) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote)) {
            if inner.contains(quote) || inner.contains('\\') {
                return None;
            }
            return Some(Json::String(inner.to_owned()));
        }
    }
    match text {
        "true" | "True" => return Some(Json::Bool(true)),
        "false" | "False" => return Some(Json::Bool(false)),
        _ => {}
    }
    if let Ok(integer) = text.parse::<i64>() {
        return Some(integer.into());
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && text.contains('.'))
        .and_then(serde_json::Number::from_f64)
        .map(Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_plain_lookups_only() {
        let lookup = Lookup::parse(" extractedData.items[0]['sku'] ").expect("lookup");
        assert_eq!(lookup.root, "extractedData");
        assert_eq!(
            lookup.steps,
            [
                Step::Key("items".into()),
                Step::Index(0),
                Step::Key("sku".into())
            ]
        );
        assert_eq!(
            Lookup::parse("x | default('en')").and_then(|l| l.default),
            Some(json!("en"))
        );
        for jinja in [
            "a + 1",
            "a | lower",
            "true",
            "a.b()",
            "'x'",
            "a[b]",
            "a | default(b)",
        ] {
            assert_eq!(Lookup::parse(jinja), None, "{jinja}");
        }
    }

    #[test]
    fn follows_objects_arrays_and_defaults() {
        let data = json!({"a": {"b": [1, 2, 3]}});
        let follow = |source: &str| {
            Lookup::parse(source)
                .expect("lookup")
                .follow(
                    data.get("a")
                        .map(Cow::Borrowed)
                        .map(|_| Cow::Borrowed(&data)),
                )
                .map(Cow::into_owned)
        };
        assert_eq!(follow("r.a.b[1]"), Some(json!(2)));
        assert_eq!(follow("r.a.b[-1]"), Some(json!(3)));
        assert_eq!(follow("r.a.b.0"), Some(json!(1)));
        assert_eq!(follow("r.a.nope"), None);
        assert_eq!(follow("r.a.nope | default(7)"), Some(json!(7)));
    }
}
