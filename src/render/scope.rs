//! What templates read: the conversation, the webhook's fixed data (`context`, `webhook`)
//! and, for Custom Variables, the upstream's answer. Plain lookups read the JSON directly;
//! the minijinja view of the same data is built only when a Jinja template needs it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::OnceLock;

use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde_json::{Value as Json, json};

use super::lookup::{Lookup, Step, index_text};
use super::select::Data;

/// A webhook's data that never changes: Context Values and `{ name, company }`, as JSON
/// for lookups (a plain `{{ context.x }}` in a URL prints as written: the file's own) and
/// as template values for minijinja (where, in URLs, every printed value is encoded).
///
/// The template values are built on first use: most webhooks use only plain lookups and
/// never need them (each costs about a kilobyte).
#[derive(Debug)]
pub struct Fixed {
    context: Json,
    identity: Json,
    values: OnceLock<(Value, Value)>,
}

/// The data of one render.
#[derive(Debug)]
pub struct Scope<'a> {
    fixed: &'a Fixed,
    conversation: Data<'a>,
    answer: Option<Answer<'a>>,
    jinja: OnceLock<Value>,
}

/// The upstream's answer as variables see it.
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    /// The parsed body.
    pub response: Data<'a>,
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: &'a http::HeaderMap,
}

/// The minijinja view: the conversation's keys at the top level, plus `context` and
/// `webhook`, and while mapping `response`, `status` and `headers`.
#[derive(Debug)]
struct TemplateData {
    conversation: Value,
    context: Value,
    webhook: Value,
    answer: Option<[Value; 3]>,
}

impl Fixed {
    /// Builds the fixed data of a webhook.
    pub fn new(context: &BTreeMap<String, String>, name: &str, company: &str) -> Fixed {
        Fixed {
            context: serde_json::to_value(context).unwrap_or(Json::Null),
            identity: json!({"name": name, "company": company}),
            values: OnceLock::new(),
        }
    }

    /// The same without what no template reads at request time (`context` may be read only
    /// by the URL's origin, rendered at load time): each is a JSON object of over 600 bytes.
    pub fn keeping(self, context: bool, identity: bool) -> Fixed {
        Fixed {
            context: if context { self.context } else { Json::Null },
            identity: if identity { self.identity } else { Json::Null },
            values: OnceLock::new(),
        }
    }

    /// `context` and `webhook` as template values.
    fn values(&self) -> &(Value, Value) {
        self.values.get_or_init(|| {
            let context = self.context.as_object().map_or_else(BTreeMap::new, |map| {
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str().unwrap_or_default())))
                    .collect()
            });
            (Value::from(context), super::value_of(&self.identity))
        })
    }
}

impl<'a> Scope<'a> {
    /// The data of a request render, with the whole conversation.
    pub fn new(fixed: &'a Fixed, conversation: &'a Json) -> Scope<'a> {
        Scope::of(fixed, Data::Whole(conversation))
    }

    /// The data of a request render.
    pub fn of(fixed: &'a Fixed, conversation: Data<'a>) -> Scope<'a> {
        Scope {
            fixed,
            conversation,
            answer: None,
            jinja: OnceLock::new(),
        }
    }

    /// The same data plus the upstream's answer, for Custom Variables.
    pub fn with_answer(&self, answer: Answer<'a>) -> Scope<'a> {
        Scope {
            fixed: self.fixed,
            conversation: self.conversation,
            answer: Some(answer),
            jinja: OnceLock::new(),
        }
    }

    /// What a plain lookup finds (`None`: undefined, its default applied), and whether it
    /// is the file's own (trusted in URLs).
    pub fn lookup<'b>(&'b self, lookup: &'b Lookup) -> (Option<Cow<'b, Json>>, bool)
    where
        'a: 'b,
    {
        let name = lookup.root.as_str();
        let found = |data: Data<'a>, key: Option<&str>| {
            match data.find(key, &lookup.steps) {
                Some(value) => Some(Cow::Borrowed(value)),
                None => indexed_text(data, key, &lookup.steps).map(Cow::Owned),
            }
            .or_else(|| lookup.default.as_ref().map(Cow::Borrowed))
        };
        if let Some(answer) = self.answer {
            match name {
                "response" => return (found(answer.response, None), false),
                "status" => return (lookup.follow(Some(Cow::Owned(answer.status.into()))), false),
                "headers" => {
                    let headers = headers_json(answer.headers);
                    return (lookup.follow(Some(Cow::Owned(headers))), false);
                }
                _ => {}
            }
        }
        match name {
            "context" => (
                lookup.follow(Some(Cow::Borrowed(&self.fixed.context))),
                true,
            ),
            "webhook" => (
                lookup.follow(Some(Cow::Borrowed(&self.fixed.identity))),
                true,
            ),
            _ => (found(self.conversation, Some(name)), false),
        }
    }

    /// The minijinja view, built on first use.
    pub fn jinja(&self) -> &Value {
        self.jinja.get_or_init(|| {
            Value::from_object(TemplateData {
                conversation: whole(self.conversation),
                context: self.fixed.values().0.clone(),
                webhook: self.fixed.values().1.clone(),
                answer: self.answer.map(|answer| {
                    [
                        whole(answer.response),
                        Value::from(answer.status),
                        super::value_of(headers_json(answer.headers)),
                    ]
                }),
            })
        })
    }
}

/// A document as a template value. Jinja templates make their webhook parse documents
/// whole; a pruned one (which no Jinja template should see) is left undefined.
fn whole(data: Data<'_>) -> Value {
    data.whole().map_or(Value::UNDEFINED, super::value_of)
}

/// A lookup that found nothing in `data` may end in indexes on a string, which Jinja
/// reads by character (`firstName[0]`): the string found under the longest such prefix,
/// indexed.
fn indexed_text(data: Data<'_>, key: Option<&str>, steps: &[Step]) -> Option<Json> {
    let indexes = steps
        .iter()
        .rev()
        .take_while(|step| matches!(step, Step::Index(_)))
        .count();
    (steps.len() - indexes..steps.len())
        .rev()
        .find_map(|at| index_text(data.find(key, &steps[..at])?, &steps[at..]))
}

/// Response headers as a JSON object by lower-case name (the last value of a repeated one);
/// a value beyond ASCII is read as UTF-8 (a byte that is not, as U+FFFD).
fn headers_json(headers: &http::HeaderMap) -> Json {
    Json::Object(
        headers
            .iter()
            .map(|(name, value)| {
                let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), Json::from(text))
            })
            .collect(),
    )
}

impl Object for TemplateData {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        if let Some([response, status, headers]) = &self.answer {
            match key {
                "response" => return Some(response.clone()),
                "status" => return Some(status.clone()),
                "headers" => return Some(headers.clone()),
                _ => {}
            }
        }
        match key {
            "context" => Some(self.context.clone()),
            "webhook" => Some(self.webhook.clone()),
            _ => self
                .conversation
                .get_attr(key)
                .ok()
                .filter(|value| !value.is_undefined()),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = vec![Value::from("context"), Value::from("webhook")];
        if self.answer.is_some() {
            keys.extend(["response", "status", "headers"].map(Value::from));
        }
        if let Ok(iter) = self.conversation.try_iter() {
            keys.extend(iter);
        }
        Enumerator::Values(keys)
    }
}
