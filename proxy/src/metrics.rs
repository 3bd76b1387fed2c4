//! Prometheus metrics: one registry, one struct, names in one place.
//!
//! Every metric is registered once in [`Metrics::new`] and the struct is
//! passed around as an `Arc`, so each test can have a fresh registry. Hot
//! paths never look labels up: the routing table resolves per-pool handles
//! ([`PoolMetrics`]) when it is built, off the request path.
//!
//! `docs/metrics.md` documents each name; to add a metric, add its name
//! constant here, register it in [`Metrics::new`], and document it there.

use std::collections::BTreeMap;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `switchyard_requests_total{service,colour,version,class}`
pub const REQUESTS_TOTAL: &str = "switchyard_requests_total";
/// `switchyard_request_duration_seconds{service,colour}`
pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
/// `switchyard_upstream_errors_total{service,kind}`
pub const UPSTREAM_ERRORS: &str = "switchyard_upstream_errors_total";
/// `switchyard_retries_total{service}`
pub const RETRIES: &str = "switchyard_retries_total";
/// `switchyard_retry_budget_exhausted_total{service}`
pub const RETRY_BUDGET_EXHAUSTED: &str = "switchyard_retry_budget_exhausted_total";
/// `switchyard_in_flight_requests{service,colour}`
pub const IN_FLIGHT: &str = "switchyard_in_flight_requests";
/// `switchyard_route_generation{service}`
pub const ROUTE_GENERATION: &str = "switchyard_route_generation";
/// `switchyard_cutover_delay_seconds{service}`
pub const CUTOVER_DELAY: &str = "switchyard_cutover_delay_seconds";
/// `switchyard_consul_watch_errors_total{service,watch}`
pub const CONSUL_WATCH_ERRORS: &str = "switchyard_consul_watch_errors_total";
/// `switchyard_fail_static{service}`
pub const FAIL_STATIC: &str = "switchyard_fail_static";
/// `switchyard_draining_connections{service,colour}`
pub const DRAINING: &str = "switchyard_draining_connections";
/// `switchyard_client_connections`
pub const CLIENT_CONNECTIONS: &str = "switchyard_client_connections";
/// `switchyard_ejections_total{service}`
pub const EJECTIONS: &str = "switchyard_ejections_total";
/// `switchyard_local_responses_total{status,service,colour}`
pub const LOCAL_RESPONSES: &str = "switchyard_local_responses_total";
/// `switchyard_connections_refused_total`
pub const CONNECTIONS_REFUSED: &str = "switchyard_connections_refused_total";
/// `switchyard_table_updates_total`
pub const TABLE_UPDATES: &str = "switchyard_table_updates_total";
/// `switchyard_passing_instances{service,role}`
pub const PASSING_INSTANCES: &str = "switchyard_passing_instances";
/// `switchyard_build_info{version,commit}`
pub const BUILD_INFO: &str = "switchyard_build_info";

/// The version this proxy was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit this proxy was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("SWITCHYARD_COMMIT");
/// `switchyard_abandoned_exchanges_total{reason}`
pub const ABANDONED: &str = "switchyard_abandoned_exchanges_total";

/// Why an exchange was abandoned by an idle timeout (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandon {
    /// The client paused its request body longer than `timeouts.read_idle`.
    ClientBody = 0,
    /// The upstream stopped reading the request body for `timeouts.send_idle`.
    UpstreamSend = 1,
    /// The upstream paused its response body longer than `timeouts.read_idle`.
    UpstreamBody = 2,
    /// The client stopped reading the response for `timeouts.send_idle`.
    ClientSend = 3,
}

impl Abandon {
    const ALL: [Abandon; 4] = [
        Abandon::ClientBody,
        Abandon::UpstreamSend,
        Abandon::UpstreamBody,
        Abandon::ClientSend,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Abandon::ClientBody => "client_body",
            Abandon::UpstreamSend => "upstream_send",
            Abandon::UpstreamBody => "upstream_body",
            Abandon::ClientSend => "client_send",
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const CUTOVER_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// All the proxy's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    retries: IntCounterVec,
    retry_budget_exhausted: IntCounterVec,
    in_flight: IntGaugeVec,
    route_generation: IntGaugeVec,
    cutover_delay: HistogramVec,
    consul_watch_errors: IntCounterVec,
    fail_static: IntGaugeVec,
    draining: IntGaugeVec,
    client_connections: IntGauge,
    connections_refused: IntCounter,
    ejections: IntCounterVec,
    local_responses: IntCounterVec,
    table_updates: IntCounter,
    passing: IntGaugeVec,
    abandoned: [IntCounter; 4],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| {
        unreachable!("metric {name} is statically valid: {e}");
    });
    register(r, Box::new(m.clone()), name);
    m
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| {
        unreachable!("metric {name} is statically valid: {e}");
    });
    register(r, Box::new(m.clone()), name);
    m
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let m = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("metric {name} is statically valid: {e}"));
    register(r, Box::new(m.clone()), name);
    m
}

fn register(r: &Registry, c: Box<dyn prometheus::core::Collector>, name: &str) {
    if let Err(e) = r.register(c) {
        // Only possible with a duplicate name in this file.
        unreachable!("metric {name} registered twice: {e}");
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let client_connections = IntGauge::new(CLIENT_CONNECTIONS, "Open client connections.")
            .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        register(&r, Box::new(client_connections.clone()), CLIENT_CONNECTIONS);
        let connections_refused = IntCounter::new(
            CONNECTIONS_REFUSED,
            "Client connections accepted and closed at once because limits.max_connections were open.",
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        register(
            &r,
            Box::new(connections_refused.clone()),
            CONNECTIONS_REFUSED,
        );
        let table_updates = IntCounter::new(TABLE_UPDATES, "Routing tables swapped in.")
            .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        register(&r, Box::new(table_updates.clone()), TABLE_UPDATES);
        let build_info = gauge_vec(
            &r,
            BUILD_INFO,
            "Always 1; the labels name the version and commit this proxy was built from.",
            &["version", "commit"],
        );
        build_info.with_label_values(&[VERSION, COMMIT]).set(1);
        // The standard process_* metrics (CPU, memory, file descriptors,
        // start time), read from /proc on Linux.
        #[cfg(target_os = "linux")]
        register(
            &r,
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
            "process_*",
        );
        Self {
            requests: counter_vec(
                &r,
                REQUESTS_TOTAL,
                "Proxied requests by service, colour, version and status class.",
                &["service", "colour", "version", "class"],
            ),
            duration: histogram_vec(
                &r,
                REQUEST_DURATION,
                "Time from request received to response head sent, by service and colour.",
                &["service", "colour"],
                LATENCY_BUCKETS,
            ),
            upstream_errors: counter_vec(
                &r,
                UPSTREAM_ERRORS,
                "Failed upstream attempts by service and kind (connect, connect_timeout, response_timeout, upstream).",
                &["service", "kind"],
            ),
            retries: counter_vec(
                &r,
                RETRIES,
                "Requests retried on another instance.",
                &["service"],
            ),
            retry_budget_exhausted: counter_vec(
                &r,
                RETRY_BUDGET_EXHAUSTED,
                "Retries not made because the service's retry budget was spent.",
                &["service"],
            ),
            in_flight: gauge_vec(
                &r,
                IN_FLIGHT,
                "Requests in flight to upstream instances, by service and colour.",
                &["service", "colour"],
            ),
            route_generation: gauge_vec(
                &r,
                ROUTE_GENERATION,
                "Generation of the route this proxy serves, by service.",
                &["service"],
            ),
            cutover_delay: histogram_vec(
                &r,
                CUTOVER_DELAY,
                "Delay from a route key's write time to this proxy serving the new colour.",
                &["service"],
                CUTOVER_BUCKETS,
            ),
            consul_watch_errors: counter_vec(
                &r,
                CONSUL_WATCH_ERRORS,
                "Failed or rejected Consul reads, by service and watch (health, route).",
                &["service", "watch"],
            ),
            fail_static: gauge_vec(
                &r,
                FAIL_STATIC,
                "1 while a service is served from its last good pools because Consul failed or answered suspiciously.",
                &["service"],
            ),
            draining: gauge_vec(
                &r,
                DRAINING,
                "Upgraded connections still open to a colour that is no longer active.",
                &["service", "colour"],
            ),
            client_connections,
            connections_refused,
            ejections: counter_vec(
                &r,
                EJECTIONS,
                "Instances ejected by passive health checking.",
                &["service"],
            ),
            local_responses: counter_vec(
                &r,
                LOCAL_RESPONSES,
                "Responses the proxy generated itself (errors), by status code, service and colour (empty before a route matched).",
                &["status", "service", "colour"],
            ),
            table_updates,
            passing: gauge_vec(
                &r,
                PASSING_INSTANCES,
                "Passing instances in the pool this proxy serves, by service and role (active, standby).",
                &["service", "role"],
            ),
            abandoned: {
                let v = counter_vec(
                    &r,
                    ABANDONED,
                    "Exchanges abandoned because a body stalled, by reason (client_body, upstream_send, upstream_body, client_send); both connections are closed.",
                    &["reason"],
                );
                Abandon::ALL.map(|a| v.with_label_values(&[a.as_str()]))
            },
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Cumulative traffic of one service per colour, summed over versions,
    /// for the status page (which turns two readings into rates). Read from
    /// the registry, so it sees exactly what `/metrics` exposes.
    pub fn colour_traffic(&self, service: &str) -> BTreeMap<String, ColourTraffic> {
        let mut out: BTreeMap<String, ColourTraffic> = BTreeMap::new();
        let label = |m: &prometheus::proto::Metric, name: &str| {
            m.get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value().to_owned())
        };
        for family in self.registry.gather() {
            let name = family.name();
            if name != REQUESTS_TOTAL && name != REQUEST_DURATION {
                continue;
            }
            for m in family.get_metric() {
                if label(m, "service").as_deref() != Some(service) {
                    continue;
                }
                let Some(colour) = label(m, "colour") else {
                    continue;
                };
                let t = out.entry(colour).or_default();
                if name == REQUESTS_TOTAL {
                    // Counters are whole numbers kept as f64.
                    let n = m.get_counter().get_value() as u64;
                    t.requests += n;
                    if label(m, "class").as_deref() == Some("5xx") {
                        t.errors += n;
                    }
                } else {
                    let h = m.get_histogram();
                    let buckets = h.get_bucket();
                    if t.latency_buckets.is_empty() {
                        t.latency_buckets = buckets
                            .iter()
                            .map(|b| (b.upper_bound(), b.cumulative_count()))
                            .collect();
                    } else {
                        for (sum, b) in t.latency_buckets.iter_mut().zip(buckets) {
                            sum.1 += b.cumulative_count();
                        }
                    }
                    t.latency_count += h.get_sample_count();
                }
            }
        }
        out
    }

    /// Resolves the per-pool handles used on the request path.
    pub fn pool(&self, service: &str, colour: &str, version: &str) -> PoolMetrics {
        let class = |c: &str| {
            self.requests
                .with_label_values(&[service, colour, version, c])
        };
        PoolMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: self.duration.with_label_values(&[service, colour]),
            in_flight: self.in_flight.with_label_values(&[service, colour]),
            draining: self.draining.with_label_values(&[service, colour]),
            body_stalled: self.abandoned(Abandon::UpstreamBody).clone(),
        }
    }

    /// Per-service handles used on the request path. Also creates the
    /// service's event series (cutover delay, fail-static) and its
    /// passing-instance gauges at zero, so rates and increases see their
    /// first event and a never-synced service reads as empty.
    pub fn service(&self, service: &str) -> ServiceMetrics {
        let _ = self.cutover_delay.with_label_values(&[service]);
        let _ = self.fail_static.with_label_values(&[service]);
        for role in ["active", "standby"] {
            let _ = self.passing.with_label_values(&[service, role]);
        }
        let err = |k: &str| self.upstream_errors.with_label_values(&[service, k]);
        ServiceMetrics {
            retries: self.retries.with_label_values(&[service]),
            retry_budget_exhausted: self.retry_budget_exhausted.with_label_values(&[service]),
            connect_errors: err("connect"),
            connect_timeouts: err("connect_timeout"),
            response_timeouts: err("response_timeout"),
            upstream_errors: err("upstream"),
            ejections: self.ejections.with_label_values(&[service]),
        }
    }

    /// Records a locally generated response; `service` and `colour` are
    /// empty when no route had matched yet.
    pub fn local_response(&self, status: u16, service: &str, colour: &str) {
        self.local_responses
            .with_label_values(&[itoa_status(status), service, colour])
            .inc();
    }

    /// Sets the generation gauge of a service.
    pub fn set_generation(&self, service: &str, generation: u64) {
        self.route_generation
            .with_label_values(&[service])
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Sets the passing-instance gauges of a service.
    pub fn set_passing(&self, service: &str, active: usize, standby: usize) {
        for (role, n) in [("active", active), ("standby", standby)] {
            self.passing
                .with_label_values(&[service, role])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Observes a cutover delay.
    pub fn observe_cutover(&self, service: &str, seconds: f64) {
        self.cutover_delay
            .with_label_values(&[service])
            .observe(seconds);
    }

    /// Counts a Consul watch error.
    pub fn consul_watch_error(&self, service: &str, watch: &str) {
        self.consul_watch_errors
            .with_label_values(&[service, watch])
            .inc();
    }

    /// Sets the fail-static gauge.
    pub fn set_fail_static(&self, service: &str, on: bool) {
        self.fail_static
            .with_label_values(&[service])
            .set(i64::from(on));
    }

    /// The client connection gauge.
    pub fn client_connections(&self) -> &IntGauge {
        &self.client_connections
    }

    /// The counter of exchanges abandoned for `why`.
    pub fn abandoned(&self, why: Abandon) -> &IntCounter {
        &self.abandoned[why as usize]
    }

    /// Counts a client connection closed at the connection cap.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts a routing table swap.
    pub fn table_updated(&self) {
        self.table_updates.inc();
    }
}

fn itoa_status(s: u16) -> &'static str {
    match s {
        400 => "400",
        404 => "404",
        408 => "408",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}

/// One colour's cumulative traffic (see [`Metrics::colour_traffic`]).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ColourTraffic {
    /// Proxied requests, every status class.
    pub requests: u64,
    /// Of which the upstream answered 5xx.
    pub errors: u64,
    /// Latency histogram: (upper bound in seconds, cumulative count).
    pub latency_buckets: Vec<(f64, u64)>,
    /// Observations in the latency histogram.
    pub latency_count: u64,
}

/// Handles for one pool (service × colour × version).
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    by_class: [IntCounter; 5],
    duration: Histogram,
    /// In-flight requests to this pool.
    pub in_flight: IntGauge,
    /// Upgraded connections draining from this pool.
    pub draining: IntGauge,
    /// Response bodies abandoned because the upstream stalled.
    pub body_stalled: IntCounter,
}

impl PoolMetrics {
    /// Counts a response by status class and observes its latency.
    pub fn observe(&self, status: u16, seconds: f64) {
        self.count(status);
        self.observe_head(seconds);
    }

    /// Counts a response by status class (once its body has ended).
    pub fn count(&self, status: u16) {
        let idx = usize::from((status / 100).clamp(1, 5)) - 1;
        if let Some(c) = self.by_class.get(idx) {
            c.inc();
        }
    }

    /// Observes the time from request to response head.
    pub fn observe_head(&self, seconds: f64) {
        self.duration.observe(seconds);
    }
}

/// Handles for one service.
#[derive(Clone, Debug)]
pub struct ServiceMetrics {
    /// Retries.
    pub retries: IntCounter,
    /// Retries refused by the retry budget.
    pub retry_budget_exhausted: IntCounter,
    /// Connect failures.
    pub connect_errors: IntCounter,
    /// Connect timeouts.
    pub connect_timeouts: IntCounter,
    /// Response-head timeouts.
    pub response_timeouts: IntCounter,
    /// Other upstream failures.
    pub upstream_errors: IntCounter,
    /// Ejections.
    pub ejections: IntCounter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_handles_show_up_in_the_exposition() {
        let m = Metrics::new();
        let p = m.pool("hello", "blue", "v1");
        p.observe(200, 0.001);
        p.observe(503, 0.002);
        m.set_generation("hello", 7);
        let text = m.render();
        assert!(text.contains(
            r#"switchyard_requests_total{class="2xx",colour="blue",service="hello",version="v1"} 1"#
        ));
        assert!(text.contains(
            r#"switchyard_requests_total{class="5xx",colour="blue",service="hello",version="v1"} 1"#
        ));
        assert!(text.contains(r#"switchyard_route_generation{service="hello"} 7"#));
        assert!(text.contains(&format!(
            r#"switchyard_build_info{{commit="{COMMIT}",version="{VERSION}"}} 1"#
        )));
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
    }

    #[test]
    fn colour_traffic_sums_versions_and_classes() {
        let m = Metrics::new();
        m.pool("hello", "blue", "v1").observe(200, 0.001);
        m.pool("hello", "blue", "v2").observe(503, 0.2);
        m.pool("hello", "green", "v3").observe(200, 0.001);
        m.pool("other", "blue", "v1").observe(500, 0.001);
        let t = m.colour_traffic("hello");
        assert_eq!(t.keys().collect::<Vec<_>>(), ["blue", "green"]);
        let blue = &t["blue"];
        assert_eq!((blue.requests, blue.errors, blue.latency_count), (2, 1, 2));
        let le = |b: f64| blue.latency_buckets.iter().find(|x| x.0 == b).map(|x| x.1);
        assert_eq!(le(0.001), Some(1));
        assert_eq!(le(0.25), Some(2));
        assert_eq!((t["green"].requests, t["green"].errors), (1, 0));
    }
}
