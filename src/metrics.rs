//! Counters and histograms for `/metrics`, written in the Prometheus text
//! exposition format (version 0.0.4) by hand: a handful of series does not
//! need a metrics library.
//!
//! Architecture invariant: this module knows neither HTTP nor LDAP nor the
//! store. The edge and the writer record into [`Metrics`]; values that live
//! elsewhere (journal depth, parked entries, directory state) are read at
//! scrape time through a [`Probe`] the daemon provides.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, in seconds, of the request latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What the daemon knows at scrape time that the edge does not.
pub trait Probe: Send + Sync {
    /// `Ok` when the daemon can take writes: the store flushes, the writer
    /// runs, and the directory answers or writes are queued while it does
    /// not. The `Err` text says why not (the body of `/readyz`'s 503).
    fn readiness(&self) -> Result<(), String>;
    /// Gauges: (name, help, value).
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

/// The daemon's metrics. One per running daemon (tests run several).
#[derive(Default)]
pub struct Metrics {
    /// (route, method, status) → count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route → latency histogram.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// (operation, result) → count, for writes sent to the directory.
    ldap: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Unix time in milliseconds of the last entry applied; 0 = never.
    last_apply_ms: AtomicU64,
    /// Existing directory entries adopted: users, groups.
    adoptions: [AtomicU64; 2],
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts one HTTP request. `route` is a template such as
    /// `/Users/{id}`, never a raw path, so the number of series stays small.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        *lock(&self.requests)
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut lat = lock(&self.latency);
        let h = lat.entry(route.to_string()).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Counts one attempt to apply a journal entry. `result` is `success`,
    /// an LDAP result code name (`objectClassViolation`), or `unreachable`.
    pub fn ldap(&self, operation: &'static str, result: &str) {
        *lock(&self.ldap)
            .entry((operation, result.to_string()))
            .or_default() += 1;
        if result == "success" {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            self.last_apply_ms.store(now, Ordering::Relaxed);
        }
    }

    /// Counts one existing directory entry adopted (`kind`: "User" or
    /// "Group").
    pub fn adopted(&self, kind: &str) {
        let i = usize::from(kind == "Group");
        self.adoptions[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Adoptions counted for `kind` ("User" or "Group").
    pub fn adoptions(&self, kind: &str) -> u64 {
        self.adoptions[usize::from(kind == "Group")].load(Ordering::Relaxed)
    }

    /// The number of requests counted for (route, method, status).
    pub fn request_count(&self, route: &str, method: &str, status: u16) -> u64 {
        lock(&self.requests)
            .get(&(route.to_string(), method.to_string(), status))
            .copied()
            .unwrap_or(0)
    }

    /// The text exposition of every series, gauges from `probe` included.
    pub fn render(&self, probe: Option<&dyn Probe>) -> String {
        let mut out = String::new();
        out.push_str("# HELP scim2ldap_http_requests_total HTTP requests served, by route template, method and status.\n");
        out.push_str("# TYPE scim2ldap_http_requests_total counter\n");
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "scim2ldap_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        out.push_str("# HELP scim2ldap_http_request_duration_seconds Time from request to response, by route template.\n");
        out.push_str("# TYPE scim2ldap_http_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            let r = escape(route);
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "scim2ldap_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "scim2ldap_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "scim2ldap_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "scim2ldap_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP scim2ldap_ldap_operations_total Journal entries the writer tried to apply, by operation and LDAP result.\n");
        out.push_str("# TYPE scim2ldap_ldap_operations_total counter\n");
        for ((op, result), n) in lock(&self.ldap).iter() {
            let _ = writeln!(
                out,
                "scim2ldap_ldap_operations_total{{operation=\"{op}\",result=\"{}\"}} {n}",
                escape(result)
            );
        }
        out.push_str("# HELP scim2ldap_last_apply_timestamp_seconds Unix time of the last journal entry applied to the directory (0: none yet).\n");
        out.push_str("# TYPE scim2ldap_last_apply_timestamp_seconds gauge\n");
        let ms = self.last_apply_ms.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "scim2ldap_last_apply_timestamp_seconds {}",
            ms as f64 / 1000.0
        );
        out.push_str("# HELP scim2ldap_adoptions_total Existing directory entries adopted (linked to a SCIM resource), by resource type.\n");
        out.push_str("# TYPE scim2ldap_adoptions_total counter\n");
        for (i, kind) in ["User", "Group"].iter().enumerate() {
            let _ = writeln!(
                out,
                "scim2ldap_adoptions_total{{kind=\"{kind}\"}} {}",
                self.adoptions[i].load(Ordering::Relaxed)
            );
        }
        if let Some(p) = probe {
            for (name, help, value) in p.gauges() {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                let _ = writeln!(out, "{name} {value}");
            }
            for (name, help, label, values) in p.labelled_gauges() {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                for (l, v) in values {
                    let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(&l));
                }
            }
        }
        out
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
            vec![("scim2ldap_journal_pending", "Pending entries.", 3.0)]
        }
    }

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new();
        m.request("/Users", "POST", 201, Duration::from_millis(3));
        m.request("/Users", "POST", 201, Duration::from_millis(300));
        m.ldap("upsert", "success");
        m.ldap("upsert", "objectClassViolation");
        let text = m.render(Some(&Fixed));
        assert!(text.contains(
            "scim2ldap_http_requests_total{route=\"/Users\",method=\"POST\",status=\"201\"} 2\n"
        ));
        assert!(text.contains(
            "scim2ldap_http_request_duration_seconds_bucket{route=\"/Users\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "scim2ldap_http_request_duration_seconds_bucket{route=\"/Users\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains(
            "scim2ldap_ldap_operations_total{operation=\"upsert\",result=\"objectClassViolation\"} 1\n"
        ));
        assert!(text.contains("scim2ldap_journal_pending 3\n"));
        assert!(!text.contains("scim2ldap_last_apply_timestamp_seconds 0\n"));
        assert_eq!(m.request_count("/Users", "POST", 201), 2);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
