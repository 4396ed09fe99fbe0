//! One `Metrics` struct on its own Prometheus registry: per-webhook invocation metrics,
//! reload metrics, and the standard `process_*` metrics.
//!
//! Labels are bounded: `webhook` and `company` come from the loaded files only (a request
//! for an unknown name never creates a series), `outcome` and `result` from fixed lists. A
//! webhook's series are removed on the reload that removes it. Each compiled webhook keeps
//! its handles ([`WebhookMetrics`]), so an invocation never looks labels up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The histogram buckets of SPEC section 6, in seconds.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How an invocation ended, as the `outcome` label says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered 2xx.
    Ok,
    /// The upstream answered another status.
    HttpError,
    /// No full response within the timeout.
    Timeout,
    /// DNS, connect or TLS failure, or a denied destination.
    Unreachable,
    /// Not JSON, or over the size limit.
    InvalidResponse,
    /// A template failed.
    RenderError,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::HttpError,
        Outcome::Timeout,
        Outcome::Unreachable,
        Outcome::InvalidResponse,
        Outcome::RenderError,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::HttpError => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::InvalidResponse => "invalid_response",
            Outcome::RenderError => "render_error",
        }
    }
}

/// Every metric hookside exports, on one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    timeouts: IntCounterVec,
    in_flight: IntGaugeVec,
    reloads: IntCounterVec,
    last_reload_successful: IntGauge,
    last_reload_success_timestamp: prometheus::Gauge,
    webhooks: IntGauge,
    file_errors: IntGauge,
    watch_polling: IntGauge,
}

/// One webhook's series, fetched once and kept with the compiled webhook.
#[derive(Debug)]
pub struct WebhookMetrics {
    requests: [IntCounter; 6],
    duration: Histogram,
    timeouts: IntCounter,
    in_flight: IntGauge,
}

/// Decrements the in-flight gauge when an invocation ends, however it ends (a caller that
/// disconnects drops the invocation's future, and this with it).
#[derive(Debug)]
pub struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let labels = ["webhook", "company"];
        let requests = IntCounterVec::new(
            Opts::new(
                "hookside_webhook_requests_total",
                "Webhook invocations by outcome.",
            ),
            &["webhook", "company", "outcome"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hookside_webhook_request_duration_seconds",
                "Time from rendering the request to the mapped answer.",
            )
            .buckets(BUCKETS.to_vec()),
            &labels,
        );
        let timeouts = IntCounterVec::new(
            Opts::new(
                "hookside_webhook_timeouts_total",
                "Invocations that hit the webhook's timeout.",
            ),
            &labels,
        );
        let in_flight = IntGaugeVec::new(
            Opts::new("hookside_webhook_in_flight", "Invocations in progress."),
            &labels,
        );
        let reloads = IntCounterVec::new(
            Opts::new(
                "hookside_config_reloads_total",
                "Reloads of the webhook directory by result.",
            ),
            &["result"],
        );
        let last_reload_successful = IntGauge::new(
            "hookside_config_last_reload_successful",
            "1 if the last reload loaded every file, else 0.",
        );
        let last_reload_success_timestamp = prometheus::Gauge::new(
            "hookside_config_last_reload_success_timestamp_seconds",
            "Unix time of the last reload in which every file loaded.",
        );
        let webhooks = IntGauge::new("hookside_config_webhooks", "Webhooks serving.");
        let file_errors =
            IntGauge::new("hookside_config_file_errors", "Webhook files with errors.");
        let watch_polling = IntGauge::new(
            "hookside_config_watch_polling",
            "1 if the directory is polled (native file watching unavailable or not asked for).",
        );
        // Invariant: the names and labels above are valid and registered once each.
        #[expect(clippy::expect_used, reason = "static metric definitions")]
        let metrics = {
            let requests = requests.expect("valid metric");
            let duration = duration.expect("valid metric");
            let timeouts = timeouts.expect("valid metric");
            let in_flight = in_flight.expect("valid metric");
            let reloads = reloads.expect("valid metric");
            let last_reload_successful = last_reload_successful.expect("valid metric");
            let last_reload_success_timestamp =
                last_reload_success_timestamp.expect("valid metric");
            let webhooks = webhooks.expect("valid metric");
            let file_errors = file_errors.expect("valid metric");
            let watch_polling = watch_polling.expect("valid metric");
            for collector in [
                Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(duration.clone()),
                Box::new(timeouts.clone()),
                Box::new(in_flight.clone()),
                Box::new(reloads.clone()),
                Box::new(last_reload_successful.clone()),
                Box::new(last_reload_success_timestamp.clone()),
                Box::new(webhooks.clone()),
                Box::new(file_errors.clone()),
                Box::new(watch_polling.clone()),
            ] {
                registry.register(collector).expect("registered once");
            }
            for result in ["success", "failure"] {
                reloads.with_label_values(&[result]);
            }
            Metrics {
                registry,
                requests,
                duration,
                timeouts,
                in_flight,
                reloads,
                last_reload_successful,
                last_reload_success_timestamp,
                webhooks,
                file_errors,
                watch_polling,
            }
        };
        #[cfg(target_os = "linux")]
        if let Err(err) = metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::warn!(error = %err, "process metrics unavailable");
        }
        metrics
    }

    /// The series of one webhook (created with every outcome at 0, so rates start at once).
    pub fn webhook(&self, webhook: &str, company: &str) -> WebhookMetrics {
        let labels = [webhook, company];
        WebhookMetrics {
            requests: Outcome::ALL.map(|o| {
                self.requests
                    .with_label_values(&[webhook, company, o.as_str()])
            }),
            duration: self.duration.with_label_values(&labels),
            timeouts: self.timeouts.with_label_values(&labels),
            in_flight: self.in_flight.with_label_values(&labels),
        }
    }

    /// Removes a webhook's series (its file was deleted, or it was renamed).
    pub fn forget(&self, webhook: &str, company: &str) {
        let labels = [webhook, company];
        for outcome in Outcome::ALL {
            let _ = self
                .requests
                .remove_label_values(&[webhook, company, outcome.as_str()]);
        }
        let _ = self.duration.remove_label_values(&labels);
        let _ = self.timeouts.remove_label_values(&labels);
        let _ = self.in_flight.remove_label_values(&labels);
    }

    /// Records a reload.
    pub fn reloaded(&self, success: bool, webhooks: usize, file_errors: usize) {
        let result = if success { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
        self.last_reload_successful.set(i64::from(success));
        if success {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            self.last_reload_success_timestamp.set(now.as_secs_f64());
        }
        self.webhooks
            .set(i64::try_from(webhooks).unwrap_or(i64::MAX));
        self.file_errors
            .set(i64::try_from(file_errors).unwrap_or(i64::MAX));
    }

    /// Records whether the directory is polled.
    pub fn set_polling(&self, polling: bool) {
        self.watch_polling.set(i64::from(polling));
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if let Err(err) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl WebhookMetrics {
    /// Marks an invocation in flight until the guard drops.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Records a finished invocation.
    pub fn finish(&self, outcome: Outcome, elapsed: Duration) {
        let index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests[index].inc();
        self.duration.observe(elapsed.as_secs_f64());
        if outcome == Outcome::Timeout {
            self.timeouts.inc();
        }
    }
}
