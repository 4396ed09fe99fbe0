//! One `Metrics` struct on its own Prometheus registry: per-webhook invocation metrics,
//! reload metrics, and the standard `process_*` metrics.
//!
//! Labels are bounded: `webhook` and `company` come from the loaded files only (a request
//! for an unknown name never creates a series), `outcome` and `result` from fixed lists. A
//! webhook's series are removed on the reload that removes it. Each compiled webhook keeps
//! its handle ([`WebhookMetrics`]), so an invocation never looks labels up.
//!
//! A webhook's nine series are plain atomics in one small block (about 200 bytes), turned
//! into Prometheus samples only when scraped: the `prometheus` crate's labelled children
//! cost about 5 KB per webhook, which with 1,000 webhooks was a quarter of the process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::lock;

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
    series: Arc<Series>,
    reloads: IntCounterVec,
    last_reload_successful: IntGauge,
    last_reload_success_timestamp: prometheus::Gauge,
    webhooks: IntGauge,
    file_errors: IntGauge,
    watch_polling: IntGauge,
}

/// One webhook's series, fetched once and kept with the compiled webhook; shared with the
/// next load of the same webhook, so counts carry across reloads.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    /// Invocations by outcome, in [`Outcome::ALL`] order.
    requests: [AtomicU64; 6],
    /// Durations per bucket of [`BUCKETS`] (not cumulative), then those above the last.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of durations, in nanoseconds.
    sum_nanos: AtomicU64,
    timeouts: AtomicU64,
    in_flight: AtomicI64,
}

/// Decrements the in-flight gauge when an invocation ends, however it ends (a caller that
/// disconnects drops the invocation's future, and this with it).
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The series of every loaded webhook, by (webhook, company), exported when scraped.
#[derive(Debug)]
struct Series {
    /// requests, duration, timeouts, in-flight.
    descs: [Desc; 4],
    live: Mutex<BTreeMap<(String, String), Arc<WebhookMetrics>>>,
    /// Series forgotten while calls were in flight on them: exported until those end
    /// (and once more, with their last counts), then removed. Locked after `live`.
    retiring: Mutex<std::collections::BTreeSet<(String, String)>>,
}

/// The registry's handle on [`Series`].
struct SeriesCollector(Arc<Series>);

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let labels = || vec!["webhook".to_owned(), "company".to_owned()];
        let desc = |name: &str, help: &str, labels: Vec<String>| {
            Desc::new(name.to_owned(), help.to_owned(), labels, Default::default())
        };
        let descs = [
            desc(
                "hookside_webhook_requests_total",
                "Webhook invocations by outcome.",
                vec!["webhook".into(), "company".into(), "outcome".into()],
            ),
            desc(
                "hookside_webhook_request_duration_seconds",
                "Time from rendering the request to the mapped answer.",
                labels(),
            ),
            desc(
                "hookside_webhook_timeouts_total",
                "Invocations that hit the webhook's timeout.",
                labels(),
            ),
            desc(
                "hookside_webhook_in_flight",
                "Invocations in progress.",
                labels(),
            ),
        ];
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
            let [requests, duration, timeouts, in_flight] = descs;
            let series = Arc::new(Series {
                descs: [
                    requests.expect("valid metric"),
                    duration.expect("valid metric"),
                    timeouts.expect("valid metric"),
                    in_flight.expect("valid metric"),
                ],
                live: Mutex::new(BTreeMap::new()),
                retiring: Mutex::default(),
            });
            let reloads = reloads.expect("valid metric");
            let last_reload_successful = last_reload_successful.expect("valid metric");
            let last_reload_success_timestamp =
                last_reload_success_timestamp.expect("valid metric");
            let webhooks = webhooks.expect("valid metric");
            let file_errors = file_errors.expect("valid metric");
            let watch_polling = watch_polling.expect("valid metric");
            for collector in [
                Box::new(SeriesCollector(Arc::clone(&series))) as Box<dyn Collector>,
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
                series,
                reloads,
                last_reload_successful,
                last_reload_success_timestamp,
                webhooks,
                file_errors,
                watch_polling,
            }
        };
        #[cfg(target_os = "linux")]
        if let Err(err) = metrics.registry.register(Box::new(ProcessMetrics(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))) {
            tracing::warn!(error = %err, "process metrics unavailable");
        }
        metrics
    }

    /// The series of one webhook (created with every outcome at 0, so rates start at once),
    /// the same ones a previous load of it used.
    pub fn webhook(&self, webhook: &str, company: &str) -> Arc<WebhookMetrics> {
        let mut live = lock(&self.series.live);
        let key = (webhook.to_owned(), company.to_owned());
        lock(&self.series.retiring).remove(&key);
        Arc::clone(live.entry(key).or_default())
    }

    /// Removes a webhook's series (its file was deleted, or it was renamed, or moved to
    /// another company). Calls still in flight on it are counted where they started: the
    /// series stays until they end and a scrape has seen their outcomes.
    pub fn forget(&self, webhook: &str, company: &str) {
        let mut live = lock(&self.series.live);
        let key = (webhook.to_owned(), company.to_owned());
        match live.get(&key) {
            Some(series) if series.in_flight.load(Ordering::Relaxed) > 0 => {
                lock(&self.series.retiring).insert(key);
            }
            _ => {
                live.remove(&key);
            }
        }
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
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Records a finished invocation.
    pub fn finish(&self, outcome: Outcome, elapsed: Duration) {
        let index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests[index].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if outcome == Outcome::Timeout {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The histogram as Prometheus has it: cumulative buckets, and a count equal to the
    /// `+Inf` bucket (both read from the same per-bucket counts, so always consistent).
    fn histogram(&self) -> proto::Histogram {
        let mut histogram = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len());
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(cumulative);
            buckets.push(bucket);
        }
        histogram.set_bucket(buckets);
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        histogram.set_sample_count(cumulative);
        histogram.set_sample_sum(self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        histogram
    }
}

impl Collector for SeriesCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut live = lock(&self.0.live);
        let [requests, duration, timeouts, in_flight] = &self.0.descs;
        let mut families = [
            family(requests, MetricType::COUNTER),
            family(duration, MetricType::HISTOGRAM),
            family(timeouts, MetricType::COUNTER),
            family(in_flight, MetricType::GAUGE),
        ];
        for ((webhook, company), series) in live.iter() {
            for (outcome, count) in Outcome::ALL.iter().zip(&series.requests) {
                let mut metric = sample(webhook, company, Some(outcome.as_str()));
                let mut counter = proto::Counter::default();
                counter.set_value(count.load(Ordering::Relaxed) as f64);
                metric.set_counter(counter);
                families[0].mut_metric().push(metric);
            }
            let mut metric = sample(webhook, company, None);
            metric.set_histogram(series.histogram());
            families[1].mut_metric().push(metric);
            let mut metric = sample(webhook, company, None);
            let mut counter = proto::Counter::default();
            counter.set_value(series.timeouts.load(Ordering::Relaxed) as f64);
            metric.set_counter(counter);
            families[2].mut_metric().push(metric);
            let mut metric = sample(webhook, company, None);
            let mut gauge = proto::Gauge::default();
            gauge.set_value(series.in_flight.load(Ordering::Relaxed) as f64);
            metric.set_gauge(gauge);
            families[3].mut_metric().push(metric);
        }
        // Retiring series whose calls have all ended were exported with their last counts
        // just now: they go.
        lock(&self.0.retiring).retain(|key| {
            let busy = live
                .get(key)
                .is_some_and(|series| series.in_flight.load(Ordering::Relaxed) > 0);
            if !busy {
                live.remove(key);
            }
            busy
        });
        // A family with no sample is not exported (as the crate's own vectors do).
        families
            .into_iter()
            .filter(|family| !family.get_metric().is_empty())
            .collect()
    }
}

/// The crate's `process_*` metrics, with `process_cpu_seconds_total` to the clock tick
/// (10 ms), as the Go and Python clients give it. The crate's counter holds whole seconds,
/// so a sidecar's CPU rate moved in steps of a whole second per rate window.
#[cfg(target_os = "linux")]
struct ProcessMetrics(prometheus::process_collector::ProcessCollector);

#[cfg(target_os = "linux")]
impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.0.collect();
        let stat = procfs::process::Process::myself().and_then(|process| process.stat());
        if let Ok(stat) = stat {
            let seconds = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
            let cpu = families
                .iter_mut()
                .filter(|family| family.name() == "process_cpu_seconds_total");
            for family in cpu {
                family.set_field_type(MetricType::COUNTER);
                for metric in family.mut_metric() {
                    let mut counter = proto::Counter::default();
                    counter.set_value(seconds);
                    metric.set_counter(counter);
                }
            }
        }
        families
    }
}

/// An empty family described by `desc`.
fn family(desc: &Desc, kind: MetricType) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family
}

/// A sample's labels, sorted by name as Prometheus clients write them.
fn sample(webhook: &str, company: &str, outcome: Option<&str>) -> proto::Metric {
    let pairs = [
        Some(("company", company)),
        outcome.map(|outcome| ("outcome", outcome)),
        Some(("webhook", webhook)),
    ];
    proto::Metric::from_label(
        pairs
            .into_iter()
            .flatten()
            .map(|(name, value)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name(name.to_owned());
                pair.set_value(value.to_owned());
                pair
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_survive_reloads_until_forgotten_and_export_cumulative_buckets() {
        let metrics = Metrics::new();
        let first = metrics.webhook("w", "acme");
        first.finish(Outcome::Ok, Duration::from_millis(5));
        first.finish(Outcome::Timeout, Duration::from_secs(11));
        let in_flight = first.start();
        assert!(
            Arc::ptr_eq(&first, &metrics.webhook("w", "acme")),
            "a reload gets the same series"
        );
        let text = metrics.render();
        for line in [
            r#"hookside_webhook_requests_total{company="acme",outcome="ok",webhook="w"} 1"#,
            r#"hookside_webhook_requests_total{company="acme",outcome="timeout",webhook="w"} 1"#,
            r#"hookside_webhook_requests_total{company="acme",outcome="render_error",webhook="w"} 0"#,
            r#"hookside_webhook_request_duration_seconds_bucket{company="acme",webhook="w",le="0.005"} 1"#,
            r#"hookside_webhook_request_duration_seconds_bucket{company="acme",webhook="w",le="10"} 1"#,
            r#"hookside_webhook_request_duration_seconds_bucket{company="acme",webhook="w",le="+Inf"} 2"#,
            r#"hookside_webhook_request_duration_seconds_sum{company="acme",webhook="w"} 11.005"#,
            r#"hookside_webhook_request_duration_seconds_count{company="acme",webhook="w"} 2"#,
            r#"hookside_webhook_timeouts_total{company="acme",webhook="w"} 1"#,
            r#"hookside_webhook_in_flight{company="acme",webhook="w"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        drop(in_flight);
        metrics.forget("w", "acme");
        assert!(!metrics.render().contains("webhook=\"w\""));
        let fresh = metrics.webhook("w", "acme");
        assert!(!Arc::ptr_eq(&first, &fresh));
        assert!(metrics.render().contains(
            r#"hookside_webhook_requests_total{company="acme",outcome="ok",webhook="w"} 0"#
        ));
    }

    #[test]
    fn a_series_forgotten_while_calls_run_counts_them_then_goes() {
        let metrics = Metrics::new();
        let old = metrics.webhook("w", "acme");
        let in_flight = old.start();
        // The webhook moves to another company while the call runs.
        metrics.forget("w", "acme");
        let _new = metrics.webhook("w", "globex");
        let text = metrics.render();
        assert!(
            text.contains(r#"hookside_webhook_in_flight{company="acme",webhook="w"} 1"#),
            "{text}"
        );
        old.finish(Outcome::Ok, Duration::from_millis(5));
        drop(in_flight);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"hookside_webhook_requests_total{company="acme",outcome="ok",webhook="w"} 1"#
            ),
            "its outcome is seen once: {text}"
        );
        let text = metrics.render();
        assert!(!text.contains(r#"company="acme""#), "then it goes: {text}");
        assert!(text.contains(r#"company="globex""#), "{text}");
        // Brought back before its calls end, a retiring series stays.
        let back = metrics.webhook("w", "globex");
        let running = back.start();
        metrics.forget("w", "globex");
        let again = metrics.webhook("w", "globex");
        assert!(Arc::ptr_eq(&back, &again));
        drop(running);
        metrics.render();
        assert!(metrics.render().contains(r#"company="globex""#));
    }
}
