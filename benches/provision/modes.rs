//! The other modes: `--member-sizes` (issue 4: does one member add cost
//! more in a big group?) and `--big-group` (issue 13: what one request
//! may cost).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ldap3::Mod;
use serde_json::{json, Value};

use scim2ldap_slapd::Slapd;

use crate::daemon::{ldap, wait_for, Http};
use crate::measure::pct;
use crate::phases::{create_users, Bench};
use crate::Args;

/// Issue 4's question: does adding one member cost more in a big group?
/// Each size gets a group, then ADDS single-member PATCHes, sent one after
/// another; the time until the journal is drained is divided by ADDS. The
/// same adds go straight to slapd for comparison.
pub async fn member_sizes(args: &Args, slapd: &Slapd, b: &Bench<'_>) {
    let (daemon, http) = (b.daemon, &b.http);
    const ADDS: usize = 100;
    let biggest = args.member_sizes.iter().copied().max().unwrap_or(0);
    let total = biggest + ADDS * args.member_sizes.len();
    let (ids, phase) = create_users(b, 0, total).await;
    println!(
        "setup: {} users created and in the directory in {:.1} s",
        ids.len(),
        phase.secs
    );
    println!(
        "\n{:>10} {:>12} {:>12} {:>15} {:>15}",
        "members", "HTTP p50 ms", "HTTP p99 ms", "daemon ms/add", "raw ms/add"
    );
    let mut l = ldap(slapd).await;
    for (n, &size) in args.member_sizes.iter().enumerate() {
        let members: Vec<Value> = ids[..size].iter().map(|id| json!({"value": id})).collect();
        let name = format!("size{size}");
        let (status, body) = http
            .send(
                "POST",
                "/Groups",
                Some(json!({"displayName": name, "members": members})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let gid = body["id"].as_str().unwrap().to_string();
        daemon.drained(Duration::from_secs(3600)).await;
        wait_for(
            slapd,
            &format!(
                "(&(cn={name})(member=uid=user{:06},ou=people,dc=example,dc=com))",
                size - 1
            ),
            Duration::from_secs(60),
        )
        .await;

        let mut lat = Vec::new();
        let started = Instant::now();
        for j in 0..ADDS {
            let k = biggest + n * ADDS + j;
            let t = Instant::now();
            let body = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": ids[k]}]}]});
            let (status, resp) = http
                .send("PATCH", &format!("/Groups/{gid}"), Some(body))
                .await;
            assert_eq!(status, 204, "{resp}");
            lat.push(t.elapsed());
        }
        daemon.drained(Duration::from_secs(600)).await;
        let daemon_ms = started.elapsed().as_secs_f64() * 1000.0 / ADDS as f64;

        // The same kind of change straight into slapd, on the same group.
        let dn = format!("cn={name},ou=groups,{}", slapd.suffix());
        let started = Instant::now();
        for j in 0..ADDS {
            let mods = vec![Mod::Add(
                "member".to_string(),
                HashSet::from([format!("cn=raw{j},{}", slapd.suffix())]),
            )];
            l.modify(&dn, mods).await.unwrap().success().unwrap();
        }
        let raw_ms = started.elapsed().as_secs_f64() * 1000.0 / ADDS as f64;
        println!(
            "{:>10} {:>12.2} {:>12.2} {:>15.2} {:>15.2}",
            size,
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            daemon_ms,
            raw_ms
        );
    }
    println!("\ndaemon peak RSS: {:.1} MiB", daemon.peak_rss_mib());
}

/// Times `/healthz` every 10 ms until `done` is set; returns the
/// latencies.
async fn poll_healthz(http: &Http, done: Arc<std::sync::atomic::AtomicBool>) -> Vec<Duration> {
    let url = http.base.replace("/scim/v2", "/healthz");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut lat = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let t = Instant::now();
        let resp = client
            .request(Request::get(&url).body(Full::new(Bytes::new())).unwrap())
            .await
            .expect("healthz");
        assert_eq!(resp.status().as_u16(), 200);
        let _ = resp.into_body().collect().await;
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lat
}

/// Issue 13: what one request may cost. Large group POSTs (one, then four
/// at once with `/healthz` polled), then lists and sorts of every user,
/// each step with its own peak RSS.
pub async fn big_group(args: &Args, b: &Bench<'_>) {
    let (daemon, http) = (b.daemon, &b.http);
    let size = args.big_group;
    let n = size.max(args.users);
    let (ids, phase) = create_users(b, 0, n).await;
    println!(
        "setup: {} users created and in the directory in {:.1} s (peak RSS so far {:.1} MiB, now {:.1} MiB)",
        ids.len(),
        phase.secs,
        daemon.peak_rss_mib(),
        daemon.rss_mib()
    );
    let group = |name: String| {
        let members: Vec<Value> = ids[..size].iter().map(|id| json!({"value": id})).collect();
        json!({"displayName": name, "members": members})
    };

    daemon.reset_peak();
    let before = daemon.rss_mib();
    let t = Instant::now();
    let (status, body) = http
        .send("POST", "/Groups", Some(group("big0".into())))
        .await;
    assert_eq!(status, 201, "{body}");
    let acked = t.elapsed();
    let peak_answered = daemon.peak_rss_mib();
    drop(body);
    daemon.drained(Duration::from_secs(3600)).await;
    let one_peak = daemon.peak_rss_mib();
    println!(
        "one {size}-member group POST: answered in {:.0} ms, in the directory after {:.1} s; RSS before {:.1} MiB, peak {:.1} MiB until answered, {:.1} MiB until drained, {:.1} MiB after",
        acked.as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64(),
        before,
        peak_answered,
        one_peak,
        daemon.rss_mib()
    );

    daemon.reset_peak();
    let before = daemon.rss_mib();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = tokio::spawn({
        let (http, done) = (http.clone(), done.clone());
        async move { poll_healthz(&http, done).await }
    });
    let t = Instant::now();
    let mut posts = Vec::new();
    for w in 1..=4 {
        let (http, body) = (http.clone(), group(format!("big{w}")));
        posts.push(tokio::spawn(async move {
            let t = Instant::now();
            let (status, resp) = http.send("POST", "/Groups", Some(body)).await;
            assert_eq!(status, 201, "{resp}");
            t.elapsed()
        }));
    }
    let mut acks = Vec::new();
    for p in posts {
        acks.push(p.await.unwrap());
    }
    let peak_answered = daemon.peak_rss_mib();
    done.store(true, Ordering::Relaxed);
    let mut lat = poller.await.unwrap();
    daemon.drained(Duration::from_secs(3600)).await;
    println!(
        "four {size}-member group POSTs at once: answered in {:.0} ms (slowest), in the directory after {:.1} s; RSS before {:.1} MiB, peak {:.1} MiB until answered, {:.1} MiB until drained, {:.1} MiB after",
        acks.iter().max().unwrap().as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64(),
        before,
        peak_answered,
        daemon.peak_rss_mib(),
        daemon.rss_mib()
    );
    let healthz_worst = pct(&mut lat, 1.0);
    println!(
        "  /healthz meanwhile: {} polls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        healthz_worst
    );
    let met = |ok: bool| if ok { "met" } else { "NOT MET" };
    println!("\nissue 13 targets:");
    println!(
        "  one {size}-member group POST peaks below 100 MiB (until drained): {one_peak:.1} MiB: {}",
        met(one_peak < 100.0)
    );
    println!(
        "  /healthz answers within 100 ms while four run: worst {healthz_worst:.1} ms: {}",
        met(healthz_worst < 100.0)
    );

    // Lists and sorts of every user.
    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "name.familyName sw \"Family\"", "sortBy": "name.familyName",
        "sortOrder": "descending", "startIndex": 1, "count": 100});
    let steps: Vec<(&str, &str, String, Option<Value>)> = vec![
        (
            "GET",
            "sortBy=userName, count=100",
            "/Users?sortBy=userName&count=100".into(),
            None,
        ),
        (
            "GET",
            "sortBy, last page",
            format!(
                "/Users?sortBy=userName&sortOrder=descending&startIndex={}&count=100",
                n.saturating_sub(99).max(1)
            ),
            None,
        ),
        (
            "GET",
            "unindexed filter, count=100",
            "/Users?filter=name.givenName%20sw%20%22Given%22&count=100".into(),
            None,
        ),
        (
            "POST",
            "/.search sorted, count=100",
            "/.search".into(),
            Some(search),
        ),
        ("GET", "/Groups (large groups)", "/Groups".into(), None),
    ];
    println!(
        "\n{:<34} {:>10} {:>14} {:>10}",
        "list over all users", "ms", "totalResults", "peak MiB"
    );
    for (method, name, path, body) in steps {
        daemon.reset_peak();
        let t = Instant::now();
        let (status, resp) = http.send(method, &path, body).await;
        assert_eq!(status, 200, "{resp}");
        println!(
            "{:<34} {:>10.0} {:>14} {:>10.1}",
            name,
            t.elapsed().as_secs_f64() * 1000.0,
            resp["totalResults"],
            daemon.peak_rss_mib()
        );
    }
}
