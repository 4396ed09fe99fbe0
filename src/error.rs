//! The one place where an error becomes an HTTP status and a JSON body.
//!
//! Whose fault is decided here, once: the caller's (4xx), the upstream's (502/504), or
//! ours (500). Bodies carry the kind and a safe message; details go to the log.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use serde_json::json;

use crate::upstream::CallError;

/// The error kinds of the bot API (SPEC section 4), plus routing errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not a JSON object.
    BadRequest,
    /// A caller token is required and missing.
    Unauthorized,
    /// The caller token is not one of the webhook's company.
    Forbidden,
    /// No webhook of that name is serving.
    UnknownWebhook,
    /// The request body is over the limit.
    PayloadTooLarge,
    /// The request body did not arrive in time (an addition to the contract's table).
    RequestTimeout,
    /// A template failed, or rendered an invalid header value.
    RenderError,
    /// DNS, connect or TLS failure.
    UpstreamUnreachable,
    /// The upstream's address is in `deny_networks`.
    DestinationDenied,
    /// Not JSON, or over the size limit.
    UpstreamInvalidResponse,
    /// The directory has not been loaded yet.
    NotReady,
    /// No full response within the timeout.
    UpstreamTimeout,
    /// No such route.
    NotFound,
    /// The route exists with another method.
    MethodNotAllowed,
    /// The request head is over the limits (64 KiB, 100 fields).
    HeadTooLarge,
    /// A bug or a resource failure of ours.
    Internal,
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A message safe to show: never a secret.
    pub message: String,
    /// The webhook concerned, when there is one.
    pub webhook: Option<String>,
}

impl ErrorKind {
    /// The kind's name in JSON bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::UnknownWebhook => "unknown_webhook",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::RenderError => "render_error",
            ErrorKind::UpstreamUnreachable => "upstream_unreachable",
            ErrorKind::DestinationDenied => "destination_denied",
            ErrorKind::UpstreamInvalidResponse => "upstream_invalid_response",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::HeadTooLarge => "head_too_large",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status of the kind.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::UnknownWebhook | ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::RenderError => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::UpstreamUnreachable
            | ErrorKind::DestinationDenied
            | ErrorKind::UpstreamInvalidResponse => StatusCode::BAD_GATEWAY,
            ErrorKind::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// An error of `kind` with a safe `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            webhook: None,
        }
    }

    /// The same error, naming the webhook.
    pub fn for_webhook(mut self, name: &str) -> ApiError {
        self.webhook = Some(name.to_owned());
        self
    }

    /// The JSON body: `{ "error": { "kind", "message", "webhook" } }`.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": {
            "kind": self.kind.as_str(),
            "message": self.message,
            "webhook": self.webhook,
        }})
    }

    /// The whole HTTP response.
    pub fn response(&self) -> http::Response<Full<Bytes>> {
        crate::server::json_response(self.kind.status(), &self.body())
    }
}

impl From<CallError> for ApiError {
    fn from(err: CallError) -> ApiError {
        let kind = match &err {
            CallError::Timeout(_) => ErrorKind::UpstreamTimeout,
            CallError::Unreachable(_) | CallError::Body(_) => ErrorKind::UpstreamUnreachable,
            CallError::Denied(_) => ErrorKind::DestinationDenied,
            CallError::TooLarge(_) => ErrorKind::UpstreamInvalidResponse,
        };
        ApiError::new(kind, err.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}
