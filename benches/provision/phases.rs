//! The default mode: daemon phases paired with raw ldap3 phases, one
//! function per phase, the directory checked after each drain; then the
//! results table and issue 15's targets, met or not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use scim2ldap_slapd::Slapd;

use crate::daemon::{run, Daemon, Http};
use crate::measure::{Lat, Phase, Procs};
use crate::raw::Raw;
use crate::{verify, Args};

/// The daemon's warning when a write cannot reach the directory.
const UNAVAILABLE: &str = "directory unavailable";

/// Longest wait for a drain.
const DRAIN: Duration = Duration::from_secs(3600);

const CREATES: &str = "user creates";
const PATCHES: &str = "user PATCHes";
const MEMBER_ADDS: &str = "member adds";
const ONE_GROUP: &str = "one-group member adds";
const LOOKUPS: &str = "userName eq lookups";
const MIXED: &str = "mixed (upd/deact/del)";

/// What a phase runs against.
pub struct Bench<'a> {
    pub daemon: &'a Daemon,
    pub http: Http,
    /// The daemon's and slapd's pids (slapd's until it is restarted).
    pub procs: Procs,
    pub clients: usize,
}

/// One request: method, path below the SCIM base, body.
type Req = (&'static str, String, Option<Value>);

pub fn user_body(i: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": format!("user{i:06}"),
        "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}")},
        "emails": [{"type": "work", "value": format!("user{i:06}@example.com"), "primary": true}],
        "active": true
    })
}

/// `n` requests from the bench's clients, each answered below 300;
/// returns the latencies and each response's `id` (empty if none).
async fn requests<F>(b: &Bench<'_>, n: usize, req: F) -> (Vec<Duration>, Vec<String>)
where
    F: Fn(usize) -> Req + Send + Sync + 'static,
{
    let ids = Arc::new(Mutex::new(vec![String::new(); n]));
    let (h, req, ids2) = (b.http.clone(), Arc::new(req), ids.clone());
    let lat = run(n, b.clients, move |_, i| {
        let (h, req, ids) = (h.clone(), req.clone(), ids2.clone());
        async move {
            let (method, path, body) = req(i);
            let (status, resp) = h.send(method, &path, body).await;
            assert!(status < 300, "{method} {path}: {status} {resp}");
            if let Some(id) = resp["id"].as_str() {
                ids.lock().unwrap()[i] = id.to_string();
            }
        }
    })
    .await;
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    (lat, ids)
}

/// A write phase: `n` requests, finished when the journal is drained;
/// returns the phase and the responses' ids.
async fn write_phase<F>(b: &Bench<'_>, name: &'static str, n: usize, req: F) -> (Phase, Vec<String>)
where
    F: Fn(usize) -> Req + Send + Sync + 'static,
{
    let mark = b.procs.mark();
    let (lat, ids) = requests(b, n, req).await;
    let acked = mark.secs();
    b.daemon.drained(DRAIN).await;
    let mut phase = b.procs.daemon_phase(&mark, name, Lat::Ack, n, lat);
    phase.acked = Some(acked);
    (phase, ids)
}

/// Creates users `user<from>` .. `user<from+n-1>`; returns their ids.
pub async fn create_users(b: &Bench<'_>, from: usize, n: usize) -> (Vec<String>, Phase) {
    let (phase, ids) = write_phase(b, CREATES, n, move |i| {
        ("POST", "/Users".into(), Some(user_body(from + i)))
    })
    .await;
    (ids, phase)
}

/// Each user's title and displayName replaced.
async fn patches(b: &Bench<'_>, ids: &Arc<Vec<String>>) -> Phase {
    let ids = ids.clone();
    write_phase(b, PATCHES, ids.len(), move |i| {
        let body = json!({"Operations": [
            {"op": "replace", "path": "title", "value": format!("Title {i}")},
            {"op": "replace", "path": "displayName", "value": format!("Display {i}")}
        ]});
        ("PATCH", format!("/Users/{}", ids[i]), Some(body))
    })
    .await
    .0
}

/// `g` empty groups `groupNNNN`; returns their ids.
async fn group_creates(b: &Bench<'_>, g: usize) -> (Vec<String>, Phase) {
    let (phase, ids) = write_phase(b, "group creates", g, |i| {
        let body = json!({"displayName": format!("group{i:04}"), "members": []});
        ("POST", "/Groups".into(), Some(body))
    })
    .await;
    (ids, phase)
}

/// One single-member PATCH per user, user i into group i % g.
async fn member_adds(b: &Bench<'_>, ids: &Arc<Vec<String>>, groups: &Arc<Vec<String>>) -> Phase {
    let (ids, groups) = (ids.clone(), groups.clone());
    write_phase(b, MEMBER_ADDS, ids.len(), move |i| {
        let body =
            json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": ids[i]}]}]});
        (
            "PATCH",
            format!("/Groups/{}", groups[i % groups.len()]),
            Some(body),
        )
    })
    .await
    .0
}

/// Creates the empty group `onegroup` (untimed), then adds users 0..m to
/// it, one single-member PATCH each, from all clients at once.
async fn one_group(b: &Bench<'_>, ids: &Arc<Vec<String>>, m: usize) -> Phase {
    let body = json!({"displayName": "onegroup", "members": []});
    let (status, resp) = b.http.send("POST", "/Groups", Some(body)).await;
    assert_eq!(status, 201, "{resp}");
    let gid = resp["id"].as_str().unwrap().to_string();
    b.daemon.drained(DRAIN).await;
    let ids = ids.clone();
    write_phase(b, ONE_GROUP, m, move |i| {
        let body =
            json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": ids[i]}]}]});
        ("PATCH", format!("/Groups/{gid}"), Some(body))
    })
    .await
    .0
}

/// One `userName eq` lookup per user.
async fn lookups(b: &Bench<'_>, n: usize) -> Phase {
    let mark = b.procs.mark();
    let h = b.http.clone();
    let lat = run(n, b.clients, move |_, i| {
        let h = h.clone();
        async move {
            let path = format!("/Users?filter=userName%20eq%20%22user{i:06}%22");
            let (status, body) = h.send("GET", &path, None).await;
            assert_eq!(
                (status, body["totalResults"].as_u64()),
                (200, Some(1)),
                "{body}"
            );
        }
    })
    .await;
    b.procs.daemon_phase(&mark, LOOKUPS, Lat::Read, n, lat)
}

/// Every user once, 100 a page, one client.
async fn listing(b: &Bench<'_>, n: usize) -> Phase {
    let mark = b.procs.mark();
    let mut lat = Vec::new();
    let (mut seen, mut start) = (0, 1);
    loop {
        let t = std::time::Instant::now();
        let path = format!("/Users?startIndex={start}&count=100");
        let (status, body) = b.http.send("GET", &path, None).await;
        lat.push(t.elapsed());
        assert_eq!(status, 200, "{body}");
        let got = body["Resources"].as_array().map_or(0, Vec::len);
        seen += got;
        if got == 0 || seen >= n {
            break;
        }
        start += got;
    }
    assert_eq!(seen, n, "the listing returns every user once");
    b.procs
        .daemon_phase(&mark, "paged listing (users)", Lat::Read, seen, lat)
}

/// What the mixed phase does to user i.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Change {
    /// PATCH replace of title and displayName.
    Update,
    /// PATCH active=false.
    Deactivate,
    /// DELETE.
    Delete,
}

/// The mixed phase's change of user i: about five updates, three
/// deactivations and two deletes in ten, interleaved. A hash of i, not
/// i % 10, which would line up with the groups (user i is in group
/// i % G) and empty whole groups.
pub fn change(i: usize) -> Change {
    match ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 10 {
        0..=4 => Change::Update,
        5..=7 => Change::Deactivate,
        _ => Change::Delete,
    }
}

/// One change per user (all of them group members), as an identity
/// provider's update cycle sends them.
async fn mixed(b: &Bench<'_>, ids: &Arc<Vec<String>>) -> Phase {
    let ids = ids.clone();
    write_phase(b, MIXED, ids.len(), move |i| {
        let path = format!("/Users/{}", ids[i]);
        let ops = match change(i) {
            Change::Update => json!([
                {"op": "replace", "path": "title", "value": format!("Updated {i}")},
                {"op": "replace", "path": "displayName", "value": format!("Updated display {i}")}
            ]),
            Change::Deactivate => json!([{"op": "replace", "path": "active", "value": false}]),
            Change::Delete => return ("DELETE", path, None),
        };
        ("PATCH", path, Some(json!({"Operations": ops})))
    })
    .await
    .0
}

/// The directory down: slapd stopped, `k` user creates (`user<from>` ..)
/// acknowledged from the journal, then slapd started again and the
/// backlog drained. Returns the acceptance phase (its rate is the
/// acknowledged rate) and the drain phase (timed from slapd's restart,
/// measured on the new slapd process).
async fn backlog(b: &Bench<'_>, slapd: &mut Slapd, from: usize, k: usize) -> (Phase, Phase) {
    slapd.stop().expect("stop slapd");
    let mark = b.procs.mark();
    let (lat, _) = requests(b, k, move |i| {
        ("POST", "/Users".into(), Some(user_body(from + i)))
    })
    .await;
    let down = b
        .procs
        .daemon_phase(&mark, "backlog, slapd down", Lat::Ack, k, lat);

    slapd.restart().expect("restart slapd");
    let procs = Procs {
        slapd: slapd.pid().expect("slapd runs"),
        ..b.procs
    };
    let mark = procs.mark();
    b.daemon.drained(DRAIN).await;
    let drain = procs.daemon_phase(&mark, "backlog drain", Lat::Drain, k, Vec::new());
    (down, drain)
}

/// The write phases run in pairs, daemon and raw, in alternating order
/// (raw first for creates, daemon first for modifies, raw first for member
/// adds, daemon first for one-group adds), so that neither side always
/// meets the warmer database; after each drain the directory's contents
/// are checked, on both sides. Then the reads, the mixed phase (after the
/// reads: it deletes users) and the backlog.
pub async fn phases(args: &Args, slapd: &mut Slapd, b: &Bench<'_>) {
    let (n, c) = (args.users, args.clients);
    let g = (n / 100).max(1);
    // Into one group: N/10, at least 1,000 (but no more than the users).
    let m = (n / 10).max(1000).min(n);
    // The backlog: N/2, at least 10,000.
    let k = (n / 2).max(10_000);
    let mut report = Vec::new();
    let mut raw = Vec::new();
    let base = Raw::new(slapd, args.connections).await;
    let people = slapd.people_dn();
    let groups_dn = slapd.groups_dn();
    let raw_dn = format!("ou=raw,{}", slapd.suffix());
    let procs = b.procs;

    // Creates: raw first.
    raw.push(base.adds(procs, n, c).await);
    verify::users(slapd, &raw_dn, "raw", n, false).await;
    let (ids, phase) = create_users(b, 0, n).await;
    report.push(phase);
    verify::users(slapd, &people, "user", n, false).await;
    let ids = Arc::new(ids);

    // Modifies: daemon first.
    report.push(patches(b, &ids).await);
    verify::users(slapd, &people, "user", n, true).await;
    raw.push(base.modifies(procs, n, c).await);
    verify::users(slapd, &raw_dn, "raw", n, true).await;

    let (groups, phase) = group_creates(b, g).await;
    report.push(phase);
    let groups = Arc::new(groups);
    base.groups(g).await;

    // Member adds: raw first.
    raw.push(base.member_adds(procs, n, c, g).await);
    verify::members(slapd, &raw_dn, "rawgroup", "raw", n, g).await;
    report.push(member_adds(b, &ids, &groups).await);
    verify::members(slapd, &groups_dn, "group", "user", n, g).await;

    // Member adds into one group: daemon first.
    report.push(one_group(b, &ids, m).await);
    verify::one_group(slapd, &groups_dn, "onegroup", "user", m).await;
    raw.push(base.one_group(procs, m, c).await);
    verify::one_group(slapd, &raw_dn, "rawone", "raw", m).await;

    report.push(lookups(b, n).await);
    report.push(listing(b, n).await);

    report.push(mixed(b, &ids).await);
    verify::mixed(slapd, n, g, m).await;

    let (_, unavailable) = b.daemon.log_lines(UNAVAILABLE);
    let (down, drain) = backlog(b, slapd, n, k).await;
    let (logged, now) = b.daemon.log_lines(UNAVAILABLE);
    verify::created(slapd, n, k).await;
    report.push(down);
    report.push(drain);

    Phase::header();
    for p in report.iter_mut() {
        p.print();
    }
    for p in raw.iter_mut() {
        p.print();
    }
    println!(
        "\nlat: ack = HTTP request to response (journaled; a daemon phase's seconds run until\n\
         the journal is drained, i.e. every write is in the directory); apply = one LDAP\n\
         operation, answered once applied; read = an HTTP read. Ack and apply latencies\n\
         measure different things: compare the ops/s, which both count until applied.\n\
         Every drained phase was checked entry by entry in the directory.\n\
         CPU: user + system time of every thread of the daemon and of slapd in the phase\n\
         (/proc/<pid>/stat, {} ticks/s), per operation; d/s = daemon / slapd. Peak MiB:\n\
         the daemon's VmHWM, reset at the start of each phase.\n\
         backlog: {k} user creates acknowledged while slapd was stopped (ops/s: the\n\
         acknowledged rate), then drained after its restart (ops/s: the drain rate,\n\
         timed from the restart); meanwhile the daemon logged {} \"{UNAVAILABLE}\" warnings.\n\
         The daemon's log (warnings and errors): {logged} lines in the whole run.",
        crate::measure::clk_tck(),
        now - unavailable
    );
    summary(&mut report, &mut raw);
}

/// `--mixed-only`: the daemon's side of what the mixed phase needs (user
/// creates, group creates, member adds, one-group member adds), then the
/// mixed phase, each checked in the directory after its drain; prints
/// those phases and mixed / creates. No raw side, reads or backlog.
pub async fn mixed_only(args: &Args, slapd: &Slapd, b: &Bench<'_>) {
    let n = args.users;
    let g = (n / 100).max(1);
    let m = (n / 10).max(1000).min(n);
    let people = slapd.people_dn();
    let groups_dn = slapd.groups_dn();
    let mut report = Vec::new();

    let (ids, phase) = create_users(b, 0, n).await;
    report.push(phase);
    verify::users(slapd, &people, "user", n, false).await;
    let ids = Arc::new(ids);
    // The mixed phase's deactivated users keep the values of this phase.
    report.push(patches(b, &ids).await);
    verify::users(slapd, &people, "user", n, true).await;
    let (groups, phase) = group_creates(b, g).await;
    report.push(phase);
    let groups = Arc::new(groups);
    report.push(member_adds(b, &ids, &groups).await);
    verify::members(slapd, &groups_dn, "group", "user", n, g).await;
    report.push(one_group(b, &ids, m).await);
    verify::one_group(slapd, &groups_dn, "onegroup", "user", m).await;

    report.push(mixed(b, &ids).await);
    verify::mixed(slapd, n, g, m).await;

    Phase::header();
    for p in report.iter_mut() {
        p.print();
    }
    let rate = |name: &str| {
        report
            .iter()
            .find(|p| p.name == name)
            .map_or(f64::NAN, Phase::rate)
    };
    let (mixed, create) = (rate(MIXED), rate(CREATES));
    println!(
        "\nCPU: user + system time of every thread of the daemon and of slapd in the phase, per operation.\n\
         {MIXED:<24} {mixed:>7.0} / {create:>7.0} = {:.2} (mixed / creates; issue 15's target: >= 0.8)",
        mixed / create
    );
}

/// The ratios daemon / raw and issue 15's targets, each with its figure
/// from this run.
fn summary(report: &mut [Phase], raw: &mut [Phase]) {
    fn find<'p>(phases: &'p mut [Phase], name: &str) -> &'p mut Phase {
        phases.iter_mut().find(|p| p.name == name).expect(name)
    }
    let pairs = [
        (CREATES, "raw adds"),
        (PATCHES, "raw modifies"),
        (MEMBER_ADDS, "raw member adds"),
        (ONE_GROUP, "raw one-group adds"),
    ];
    let mut to_raw = Vec::new();
    println!("\nratio daemon / raw (ops/s, both until applied):");
    for (d, r) in pairs {
        let (dr, rr) = (find(report, d).rate(), find(raw, r).rate());
        println!("  {d:<24} {dr:>7.0} / {rr:>7.0} = {:.2}", dr / rr);
        to_raw.push((d, dr / rr));
    }
    let (mixed, create) = (find(report, MIXED).rate(), find(report, CREATES).rate());
    println!(
        "  {:<24} {mixed:>7.0} / {create:>7.0} = {:.2} (mixed / creates)",
        MIXED,
        mixed / create
    );

    println!("\nissue 15's targets:");
    let check = |target: String, figure: String, met: bool| {
        let verdict = if met { "met" } else { "NOT MET" };
        println!("  {target:<44} {figure:>26}  {verdict}");
    };
    for d in [CREATES, PATCHES, MEMBER_ADDS] {
        let r = find(report, d).cpu_ratio().unwrap_or(f64::NAN);
        check(
            format!("CPU daemon / slapd <= 1: {d}"),
            format!("{r:.2}"),
            r <= 1.0,
        );
    }
    for (d, r) in &to_raw[..3] {
        check(
            format!("ops/s daemon / raw >= 0.8: {d}"),
            format!("{r:.2}"),
            *r >= 0.8,
        );
    }
    let (worst, rss) = report
        .iter()
        .map(|p| (p.name, p.rss.unwrap_or(0.0)))
        .fold(("", 0.0), |a, b| if b.1 > a.1 { b } else { a });
    check(
        "peak RSS < 64 MiB in every phase".into(),
        format!("{rss:.1} MiB ({worst})"),
        rss < 64.0,
    );
    let p99 = find(report, LOOKUPS).p99();
    check(
        "userName eq p99 < 1 ms".into(),
        format!("{p99:.2} ms"),
        p99 < 1.0,
    );
    let r = mixed / create;
    check(
        "mixed ops/s >= 0.8 of creates".into(),
        format!("{r:.2}"),
        r >= 0.8,
    );
    let r = to_raw[3].1;
    check(
        "one-group member adds: daemon / raw > 1".into(),
        format!("{r:.2}"),
        r > 1.0,
    );
}
