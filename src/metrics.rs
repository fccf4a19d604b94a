//! Counters, histograms and gauges for `/metrics`, kept and written in the
//! Prometheus text format (version 0.0.4) by the `prometheus-client` crate,
//! with the standard `process_*` metrics (read from `/proc`, see
//! [`ProcessCollector`]) and `scim2ldap_build_info`.
//!
//! Every label value comes from a closed set (route templates, method
//! names, LDAP result names, resource types), so nothing a client sends
//! becomes a series.
//!
//! Architecture invariant: this module knows neither HTTP nor LDAP nor the
//! store. The edge and the writer record into [`Metrics`]; values that live
//! elsewhere (journal depth, parked entries, directory state) are read at
//! scrape time through a [`Probe`] the daemon provides, which must answer
//! in O(1) (counters kept up to date, never a walk over the journal).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds, in seconds, of the request latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What the daemon knows at scrape time that the edge does not.
pub trait Probe: Send + Sync {
    /// `Ok` when the daemon can take writes: the store flushes, the writer
    /// runs, and the directory answers or writes are queued while it does
    /// not. The `Err` text says why not (the body of `/readyz`'s 503).
    fn readiness(&self) -> Result<(), String>;
    /// Gauges: (name, help, value). Must cost O(1): it runs on every
    /// scrape.
    fn gauges(&self) -> Vec<(&'static str, &'static str, f64)>;
    /// Gauges with one label: (name, help, label name, [(label value,
    /// value)]). The label values come from the config, never a request.
    fn labelled_gauges(&self) -> Vec<LabelledGauge> {
        Vec::new()
    }
}

/// (name, help, label name, [(label value, value)]), for
/// [`Probe::labelled_gauges`].
pub type LabelledGauge = (&'static str, &'static str, &'static str, Vec<(String, f64)>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LdapLabels {
    operation: &'static str,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The daemon's metrics. One per running daemon (tests run several).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    ldap: Family<LdapLabels, Counter>,
    /// Unix time of the last entry applied; 0 = never.
    last_apply: Gauge<f64, AtomicU64>,
    adoptions: Family<KindLabels, Counter>,
    /// Connections refused at accept, by the limit that refused them.
    refused: Family<ReasonLabels, Counter>,
    /// Set once by the daemon; read by the probe collector on each scrape.
    /// Weak: the probe holds the store, and whatever holds the metrics
    /// (a writer lane finishing late) must not keep the store open.
    probe: Arc<OnceLock<Weak<dyn Probe>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "scim2ldap_http_requests",
            "HTTP requests served, by route template, method and status",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "scim2ldap_http_request_duration_seconds",
            "Time from request to response, by route template",
            latency.clone(),
        );
        let ldap = Family::<LdapLabels, Counter>::default();
        registry.register(
            "scim2ldap_ldap_operations",
            "Journal entries the writer tried to apply, by operation and LDAP result",
            ldap.clone(),
        );
        let last_apply = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "scim2ldap_last_apply_timestamp_seconds",
            "Unix time of the last journal entry applied to the directory (0: none yet)",
            last_apply.clone(),
        );
        let adoptions = Family::<KindLabels, Counter>::default();
        for kind in ["User", "Group"] {
            let _ = adoptions.get_or_create(&KindLabels { kind });
        }
        registry.register(
            "scim2ldap_adoptions",
            "Existing directory entries adopted (linked to a SCIM resource), by resource type",
            adoptions.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "scim2ldap_http_connections_refused",
            "Connections refused at accept, by limit (max_connections, max_unauthenticated_per_peer)",
            refused.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "scim2ldap_build_info",
            "The running version of scim2ldap (always 1)",
            build,
        );
        let probe: Arc<OnceLock<Weak<dyn Probe>>> = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ProbeCollector(probe.clone())));
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            requests,
            latency,
            ldap,
            last_apply,
            adoptions,
            refused,
            probe,
        }
    }

    /// Adds the daemon's gauges (journal depth, directory state) to every
    /// scrape from now on, while `probe` is alive (the caller keeps it).
    /// Set once; later calls are ignored.
    pub fn set_probe(&self, probe: &Arc<dyn Probe>) {
        let _ = self.probe.set(Arc::downgrade(probe));
    }

    /// Counts one HTTP request. `route` is a template such as
    /// `/Users/{id}` and `method` one of a closed set, never what the
    /// client sent, so the number of series stays small.
    pub fn request(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// Counts one attempt to apply a journal entry. `result` is `success`,
    /// an LDAP result code name (`objectClassViolation`), or `unreachable`.
    pub fn ldap(&self, operation: &'static str, result: &str) {
        self.ldap
            .get_or_create(&LdapLabels {
                operation,
                result: result.to_string(),
            })
            .inc();
        if result == "success" {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.last_apply.set(now);
        }
    }

    /// Counts one connection refused at accept; `reason` names the limit.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Connections refused for `reason` so far.
    pub fn refused_count(&self, reason: &'static str) -> u64 {
        self.refused
            .get(&ReasonLabels { reason })
            .map_or(0, |c| c.get())
    }

    /// Counts one existing directory entry adopted (`kind`: "User" or
    /// "Group").
    pub fn adopted(&self, kind: &str) {
        self.adoptions.get_or_create(&kind_labels(kind)).inc();
    }

    /// Adoptions counted for `kind` ("User" or "Group").
    pub fn adoptions(&self, kind: &str) -> u64 {
        self.adoptions.get_or_create(&kind_labels(kind)).get()
    }

    /// The number of requests counted for (route, method, status).
    pub fn request_count(&self, route: &str, method: &str, status: u16) -> u64 {
        let known = |set: &[&'static str], v: &str| set.iter().find(|s| **s == v).copied();
        let (Some(route), Some(method)) = (known(&ROUTES, route), known(&METHODS, method)) else {
            return 0;
        };
        self.requests
            .get(&RequestLabels {
                route,
                method,
                status,
            })
            .map_or(0, |c| c.get())
    }

    /// The text exposition of every series: the daemon's, the probe's
    /// gauges, the process metrics and the build info.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "could not encode the metrics");
        }
        out
    }
}

fn kind_labels(kind: &str) -> KindLabels {
    KindLabels {
        kind: if kind == "Group" { "Group" } else { "User" },
    }
}

/// Route templates, as `http::route_template` names them.
const ROUTES: [&str; 12] = [
    "/healthz",
    "/",
    "/Users",
    "/Users/{id}",
    "/Groups",
    "/Groups/{id}",
    "/ServiceProviderConfig",
    "/Schemas",
    "/Schemas/{id}",
    "/ResourceTypes",
    "/ResourceTypes/{id}",
    "other",
];

/// Method labels, as `http::method_label` names them.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];

/// The probe's gauges, read at scrape time.
struct ProbeCollector(Arc<OnceLock<Weak<dyn Probe>>>);

impl std::fmt::Debug for ProbeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeCollector")
    }
}

impl Collector for ProbeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(probe) = self.0.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        for (name, help, value) in probe.gauges() {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            // Whole numbers as integers (`1`, not `1.0`): counts and flags.
            if value.fract() == 0.0 && value.abs() < 9.0e15 {
                ConstGauge::new(value as i64).encode(m)?;
            } else {
                ConstGauge::new(value).encode(m)?;
            }
        }
        for (name, help, label, values) in probe.labelled_gauges() {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (l, v) in values {
                // Label values from the config, kept to a safe alphabet.
                let l: String = l
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                ConstGauge::new(v).encode(m.encode_family(&[(label, l.as_str())])?)?;
            }
        }
        Ok(())
    }
}

/// The standard `process_*` metrics of the Prometheus client libraries,
/// read from Linux's `/proc/self` on each scrape (a few small files): no
/// crate of the `prometheus-client` family provides them. Elsewhere they
/// are left out.
#[derive(Debug)]
pub struct ProcessCollector;

/// What [`ProcessCollector`] reads.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on every
/// Linux architecture the daemon is built for).
const CLOCK_TICKS: f64 = 100.0;

impl ProcessStats {
    /// Reads this process's figures from `/proc`; `None` where it is not
    /// mounted.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces and
        // parentheses): the last ')' ends it.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state): utime is field 14, stime 15,
        // starttime 22, vsize 23.
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let utime = field(14)?;
        let stime = field(15)?;
        let start_ticks = field(22)?;
        let vsize = field(23)?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse::<u64>().ok())
            });
        Some(ProcessStats {
            cpu_seconds: (utime + stime) as f64 / CLOCK_TICKS,
            resident_bytes: rss_kib * 1024,
            virtual_bytes: vsize,
            open_fds,
            max_fds,
            start_time_seconds: btime as f64 + start_ticks as f64 / CLOCK_TICKS,
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let m = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(p.cpu_seconds).encode(m)?;
        let gauges: [(&str, &str, f64); 4] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                p.start_time_seconds,
            ),
        ];
        for (name, help, v) in gauges {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            if v.fract() == 0.0 {
                ConstGauge::new(v as i64).encode(m)?;
            } else {
                ConstGauge::new(v).encode(m)?;
            }
        }
        if let Some(max) = p.max_fds {
            let m = encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(max as i64).encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Probe for Fixed {
        fn readiness(&self) -> Result<(), String> {
            Ok(())
        }
        fn gauges(&self) -> Vec<(&'static str, &'static str, f64)> {
            vec![
                ("scim2ldap_journal_pending", "Pending entries", 3.0),
                (
                    "scim2ldap_journal_oldest_pending_timestamp_seconds",
                    "Oldest",
                    1.5,
                ),
            ]
        }
    }

    #[test]
    fn renders_counters_histograms_gauges_process_and_build_info() {
        let m = Metrics::new();
        let probe: Arc<dyn Probe> = Arc::new(Fixed);
        m.set_probe(&probe);
        m.request("/Users", "POST", 201, Duration::from_millis(3));
        m.request("/Users", "POST", 201, Duration::from_millis(300));
        m.ldap("upsert", "success");
        m.ldap("upsert", "objectClassViolation");
        m.adopted("Group");
        let text = m.render();
        for want in [
            "# TYPE scim2ldap_http_requests_total counter\n",
            "scim2ldap_http_requests_total{route=\"/Users\",method=\"POST\",status=\"201\"} 2\n",
            "scim2ldap_http_request_duration_seconds_bucket{route=\"/Users\",le=\"0.005\"} 1\n",
            "scim2ldap_http_request_duration_seconds_bucket{route=\"/Users\",le=\"+Inf\"} 2\n",
            "scim2ldap_http_request_duration_seconds_count{route=\"/Users\"} 2\n",
            "scim2ldap_ldap_operations_total{operation=\"upsert\",result=\"objectClassViolation\"} 1\n",
            "scim2ldap_adoptions_total{kind=\"Group\"} 1\n",
            "scim2ldap_adoptions_total{kind=\"User\"} 0\n",
            "scim2ldap_journal_pending 3\n",
            "scim2ldap_journal_oldest_pending_timestamp_seconds 1.5\n",
            &format!("scim2ldap_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION")),
            "# TYPE process_cpu_seconds_total counter\n",
            "\nprocess_resident_memory_bytes ",
            "\nprocess_open_fds ",
            "\nprocess_max_fds ",
            "\nprocess_start_time_seconds ",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert!(!text.contains("scim2ldap_last_apply_timestamp_seconds 0\n"));
        assert_eq!(m.request_count("/Users", "POST", 201), 2);
        assert_eq!(m.request_count("/Users", "GET", 201), 0);
        assert_eq!(m.adoptions("Group"), 1);
    }

    #[test]
    fn process_figures_are_plausible() {
        let p = ProcessStats::read().expect("/proc is mounted");
        assert!(p.resident_bytes > 1024 * 1024, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_time_seconds > now - 3600.0 && p.start_time_seconds <= now + 2.0,
            "{p:?}"
        );
    }
}
