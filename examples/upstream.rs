//! A small fake company API (orders, tickets, a CRM) that the sample `webhooks.d/` calls,
//! so the quick start works offline.
//!
//! Run with: `cargo run --example upstream` (listens on 127.0.0.1:8900; pass another
//! address as the first argument).

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// The bearer token the orders API expects (webhooks.d reads it from examples/secrets).
const ORDERS_TOKEN: &str = "demo-orders-token";
/// The CRM's basic auth user and password (the password comes from an env variable).
const CRM_USER: &str = "hookside";
const CRM_PASSWORD: &str = "crm-demo-password";

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8900".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!(
        "example upstream listening on http://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(|request| async { Ok::<_, Infallible>(route(request).await) });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path: Vec<&str> = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let query = parts.uri.query().unwrap_or("");
    let bearer_ok = auth == format!("Bearer {ORDERS_TOKEN}");
    let basic_ok = auth == format!("Basic {}", base64_pair(CRM_USER, CRM_PASSWORD));
    match (&parts.method, path.as_slice()) {
        (_, ["v1", ..]) if !bearer_ok => {
            reply(StatusCode::UNAUTHORIZED, json!({"error": "bad token"}))
        }
        (&Method::GET, ["v1", "orders", "404"]) => {
            reply(StatusCode::NOT_FOUND, json!({"error": "no such order"}))
        }
        (&Method::GET, ["v1", "orders", id]) => reply(
            StatusCode::OK,
            json!({"order": {
                "id": id,
                "status": "shipped",
                "region": parts.headers.get("x-region").and_then(|v| v.to_str().ok()),
                "delivery": {"carrier": "DHL", "eta": "2026-12-01"},
                "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
            }}),
        ),
        (&Method::POST, ["v1", "tickets"]) => {
            let received: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            reply(
                StatusCode::CREATED,
                json!({"ticket": {"id": "T-1001", "priority": received["priority"], "subject": received["subject"]}, "received": received}),
            )
        }
        (&Method::DELETE, ["v1", "subscriptions", _]) => {
            let mut response = reply(StatusCode::NO_CONTENT, Value::Null);
            *response.body_mut() = Full::new(Bytes::new());
            response
        }
        (_, ["crm", ..]) if !basic_ok => reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "bad credentials"}),
        ),
        (&Method::GET, ["crm", "contacts"]) => {
            let fields: Vec<&str> = query
                .split('&')
                .filter_map(|pair| pair.strip_prefix("fields="))
                .collect();
            let email = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("email="))
                .unwrap_or("");
            reply(
                StatusCode::OK,
                json!({"contacts": [{"name": "Ada Lovelace", "email": email.replace("%40", "@"), "tier": "gold", "score": 92}], "fields": fields}),
            )
        }
        (&Method::PUT, ["crm", "contacts", id, "note"]) => reply(
            StatusCode::OK,
            json!({"saved": true, "contact": id, "length": body.len(), "text": String::from_utf8_lossy(&body)}),
        ),
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "no such route"})),
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn base64_pair(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
