//! hookside: a webhook sidecar for chatbot containers.
//!
//! A bot posts its conversation to `POST /v1/webhooks/{name}` on localhost; hookside renders
//! the request declared in that webhook's TOML file, calls the upstream, maps the response
//! into Custom Variables and answers. The contract lives in `SPEC.md`; the README matches
//! this module map.
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | webhook files and the config file: raw TOML types, `extends`, secrets, compiling to [`config::Webhook`], every error with its location |
//! | [`registry`] | one immutable [`registry::Snapshot`] of compiled webhooks, swapped whole |
//! | [`render`] | templates: text, typed JSON bodies, the URL rule; plain lookups on the JSON, minijinja for the rest; parsing only what lookups read |
//! | [`upstream`] | connectors (rustls), connection pools per origin, HTTP/1.1 on the request's task (HTTP/2 by hyper), the destination policy, timeouts and limits |
//! | [`mapping`] | Custom Variables: Jinja expressions and JSONPath over the response |
//! | [`pipeline`] | one invocation as named phases: route, data, render, call, map, answer |
//! | [`testrun`] | Run Webhook: the rendered request, the answer and each variable's trace (`/test`, `hookside run`) |
//! | [`check`] | `hookside check`: every file loaded as `serve` does, every example run offline |
//! | [`server`] | the bot API and the admin API over hyper |
//! | [`pace`] | invocations in progress; under load their writes go out together |
//! | [`metrics`] | one `Metrics` struct on its own Prometheus registry; bounded labels |
//! | [`error`] | the one place where an error becomes an HTTP status and a JSON body |
//! | [`watch`] | notify -> debounce -> "reload" signal; re-arms when the directory is replaced |
//! | [`app`] | wiring for `hookside serve`: settings, first load, listeners, signals |

pub mod app;
pub mod check;
pub mod config;
mod deadline;
pub mod error;
pub mod mapping;
pub mod metrics;
pub mod pace;
pub mod pipeline;
pub mod registry;
pub mod render;
pub mod server;
pub mod testrun;
pub mod upstream;
pub mod watch;

/// Locks a mutex, also after a panic in another holder: every mutex here guards a cache or
/// a registry whose entries stay valid whatever a panicking thread was doing.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
