//! The provisioning benchmark: starts a throwaway slapd and the real
//! `scim2ldap` binary, drives SCIM requests at it over HTTP with C
//! concurrent clients, and reports ops/s, p50, p99 and the daemon's peak
//! RSS. A write phase ends when the daemon's journal is drained (every
//! write is in the directory), not when the last response arrives.
//!
//! ```sh
//! cargo bench --bench provision -- --users 2000 --clients 4 [--connections 4] [--nosync]
//! cargo bench --bench provision -- --member-sizes 10,1000,50000 [--nosync]
//! cargo bench --bench provision -- --big-group 50000 [--users 100000]
//! ```
//!
//! `--big-group N` (bounded work per request): creates max(N, --users)
//! users, then POSTs one N-member group, then four at once while
//! `/healthz` is polled every 10 ms, then lists and sorts every user
//! (`sortBy` with `count`, a filter no index answers, `POST /.search`);
//! it prints each step's peak RSS (the daemon's high-water mark is reset
//! before each step) and the `/healthz` latencies. This mode's slapd has
//! no overlays (memberof would update every member of each group).
//!
//! Phases: N user creates, N PATCHes (replace two attributes), G = N/100
//! group creates, N member adds, N `userName eq` lookups, a paged listing
//! of all users. The same adds, modifies and member adds go straight to
//! the same slapd with ldap3 at the same concurrency over the same number
//! of directory connections as the daemon's writer (`--connections`,
//! default 4; no HTTP, no journal), each next to its daemon phase in
//! alternating order; every phase's result is checked in the directory
//! after its drain, and each write phase's ratio daemon / raw is printed.
//! Latencies are labelled: `ack` (HTTP response, before the directory),
//! `apply` (LDAP operation), `read`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use ldap3::{Ldap, LdapConnAsync, Mod, Scope, SearchEntry};
use serde_json::{json, Value};

use scim2ldap_slapd::{DaemonConfig, Slapd, SlapdOptions};

struct Args {
    users: usize,
    clients: usize,
    /// Directory connections on each side: the daemon's `ldap.connections`
    /// and the raw baseline's connection count.
    connections: usize,
    nosync: bool,
    member_sizes: Vec<usize>,
    big_group: usize,
}

fn args() -> Args {
    let mut a = Args {
        users: 2000,
        clients: 4,
        connections: 4,
        nosync: false,
        member_sizes: Vec::new(),
        big_group: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--users" => a.users = it.next().and_then(|v| v.parse().ok()).expect("--users N"),
            "--clients" => a.clients = it.next().and_then(|v| v.parse().ok()).expect("--clients N"),
            "--connections" => {
                a.connections = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .expect("--connections N")
            }
            "--nosync" => a.nosync = true,
            "--member-sizes" => {
                a.member_sizes = it
                    .next()
                    .expect("--member-sizes 10,1000,50000")
                    .split(',')
                    .map(|s| s.trim().parse().expect("a number"))
                    .collect()
            }
            "--big-group" => {
                a.big_group = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--big-group N")
            }
            // cargo bench adds --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}; see the top of benches/provision.rs"),
        }
    }
    a
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon under test: the real binary in a child process.
struct Daemon {
    child: std::process::Child,
    base: String,
    token: String,
    store: std::path::PathBuf,
    _dir: TempDir,
}

impl Daemon {
    async fn start(slapd: &Slapd, connections: usize) -> Daemon {
        let dir = std::env::temp_dir().join(format!("scim2ldap-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("mapping.toml"),
            scim2ldap::mapping::EXAMPLE_OPENLDAP,
        )
        .unwrap();
        let token = scim2ldap::token::generate().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let sha = scim2ldap::token::TokenHash::of(&token).to_hex();
        let config = slapd.daemon_config(&DaemonConfig {
            listen: &listen,
            token_name: "bench",
            token_sha256: &sha,
            server: "max_body_bytes = 67108864\nmax_members_per_request = 200000",
            ldap: &format!("connections = {connections}"),
            ..Default::default()
        });
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
            .args(["serve", "--config"])
            .arg(dir.join("config.toml"))
            .env("SCIM2LDAP_LOG", "warn")
            .spawn()
            .expect("start the daemon");
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Daemon {
            child,
            base: format!("http://127.0.0.1:{port}/scim/v2"),
            token,
            store: dir.join("state"),
            _dir: TempDir(dir),
        }
    }

    /// Waits until the daemon's journal has nothing left to apply, asking
    /// its admin socket.
    async fn drained(&self, timeout: Duration) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let sock = scim2ldap::admin::socket_path(&self.store);
        let end = Instant::now() + timeout;
        loop {
            let mut stream = tokio::net::UnixStream::connect(&sock)
                .await
                .expect("admin socket");
            stream.write_all(b"{\"cmd\":\"pending\"}\n").await.unwrap();
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).await.unwrap();
            let resp: Value = serde_json::from_str(&line).expect("admin answer");
            if resp["text"].as_str().map(str::trim) == Some("0") {
                return;
            }
            assert!(
                Instant::now() < end,
                "the writer did not drain within {timeout:?}: {line}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Resets the daemon's peak RSS to its current RSS (Linux:
    /// `clear_refs` 5), so that the next [`Daemon::peak_rss_mib`] is the
    /// peak of what follows.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }

    /// Current resident set size of the daemon (VmRSS), in MiB.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Peak resident set size of the daemon so far (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: String,
}

impl Http {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/scim+json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = self.client.request(req).await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// Runs `n` operations with `clients` concurrent workers; returns each
/// operation's latency.
async fn run<F, Fut>(n: usize, clients: usize, op: F) -> Vec<Duration>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                op(worker, i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn pct(lat: &mut [Duration], p: f64) -> f64 {
    lat.sort();
    if lat.is_empty() {
        return 0.0;
    }
    let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
    lat[i].as_secs_f64() * 1000.0
}

/// What a phase's latencies measure: they are not comparable across kinds.
#[derive(Clone, Copy, PartialEq)]
enum Lat {
    /// HTTP request to its response: the write is journaled, not yet in
    /// the directory (the phase's seconds run until it is).
    Ack,
    /// One LDAP operation, answered once the directory applied it.
    Apply,
    /// An HTTP read.
    Read,
}

impl Lat {
    fn label(self) -> &'static str {
        match self {
            Lat::Ack => "ack",
            Lat::Apply => "apply",
            Lat::Read => "read",
        }
    }
}

/// One line of the report.
struct Phase {
    name: &'static str,
    kind: Lat,
    ops: usize,
    secs: f64,
    /// Seconds until the last response of a write phase (the rest of
    /// `secs` is the writer catching up); `None` for other phases.
    acked: Option<f64>,
    lat: Vec<Duration>,
    rss: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn print(&mut self) {
        let (p50, p99) = (pct(&mut self.lat, 0.5), pct(&mut self.lat, 0.99));
        println!(
            "{:<22} {:>8} {:>10.1} {:>10.0} {:>6} {:>9.2} {:>9.2} {:>10.1}",
            self.name,
            self.ops,
            self.secs,
            self.rate(),
            self.kind.label(),
            p50,
            p99,
            self.rss
        );
        if let Some(acked) = self.acked {
            println!("{:<22} last response after {acked:.1} s", "");
        }
    }
}

async fn ldap(slapd: &Slapd) -> Ldap {
    let (conn, mut ldap) = LdapConnAsync::new(&slapd.uri()).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(&slapd.bind_dn(), slapd.password())
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap
}

/// Waits until an LDAP search under the suffix finds something.
async fn wait_for(slapd: &Slapd, filter: &str, timeout: Duration) {
    let mut ldap = ldap(slapd).await;
    let end = Instant::now() + timeout;
    loop {
        let (found, _) = ldap
            .search(slapd.suffix(), Scope::Subtree, filter, vec!["1.1"])
            .await
            .unwrap()
            .success()
            .unwrap();
        if !found.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "the directory did not show {filter} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn user_body(i: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": format!("user{i:06}"),
        "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}")},
        "emails": [{"type": "work", "value": format!("user{i:06}@example.com"), "primary": true}],
        "active": true
    })
}

/// The attributes the example mapping writes for `user_body(i)`, for the
/// raw baseline.
fn raw_user(i: usize) -> Vec<(String, HashSet<String>)> {
    let one = |v: String| HashSet::from([v]);
    vec![
        (
            "objectClass".into(),
            ["top", "person", "organizationalPerson", "inetOrgPerson"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        ("uid".into(), one(format!("raw{i:06}"))),
        ("cn".into(), one(format!("Given{i} Family{i}"))),
        ("sn".into(), one(format!("Family{i}"))),
        ("givenName".into(), one(format!("Given{i}"))),
        ("mail".into(), one(format!("raw{i:06}@example.com"))),
    ]
}

async fn create_users(
    http: &Http,
    daemon: &Daemon,
    from: usize,
    n: usize,
    clients: usize,
) -> (Vec<String>, Phase) {
    let ids = Arc::new(Mutex::new(vec![String::new(); n]));
    let started = Instant::now();
    let (h, ids2) = (http.clone(), ids.clone());
    let lat = run(n, clients, move |_, i| {
        let (h, ids) = (h.clone(), ids2.clone());
        async move {
            let (status, body) = h.send("POST", "/Users", Some(user_body(from + i))).await;
            assert_eq!(status, 201, "{body}");
            ids.lock().unwrap()[i] = body["id"].as_str().unwrap().to_string();
        }
    })
    .await;
    let acked = Some(started.elapsed().as_secs_f64());
    daemon.drained(Duration::from_secs(3600)).await;
    let secs = started.elapsed().as_secs_f64();
    let ids = ids.lock().unwrap().clone();
    (
        ids,
        Phase {
            name: "user creates",
            kind: Lat::Ack,
            ops: n,
            secs,
            acked,
            lat,
            rss: daemon.peak_rss_mib(),
        },
    )
}

/// A write phase: `n` requests, finished when the journal is drained.
async fn write_phase<F>(
    name: &'static str,
    n: usize,
    clients: usize,
    daemon: &Daemon,
    http: &Http,
    req: F,
) -> Phase
where
    F: Fn(usize) -> (&'static str, String, Value) + Send + Sync + 'static,
{
    let started = Instant::now();
    let (h, req) = (http.clone(), Arc::new(req));
    let lat = run(n, clients, move |_, i| {
        let (h, req) = (h.clone(), req.clone());
        async move {
            let (method, path, body) = req(i);
            let (status, resp) = h.send(method, &path, Some(body)).await;
            assert!(status < 300, "{method} {path}: {status} {resp}");
        }
    })
    .await;
    let acked = Some(started.elapsed().as_secs_f64());
    daemon.drained(Duration::from_secs(3600)).await;
    Phase {
        name,
        kind: Lat::Ack,
        ops: n,
        secs: started.elapsed().as_secs_f64(),
        acked,
        lat,
        rss: daemon.peak_rss_mib(),
    }
}

/// Entries below `base` matching `filter`, with `attrs` (as the rootdn:
/// no size limit).
async fn entries(slapd: &Slapd, base: &str, filter: &str, attrs: &[&str]) -> Vec<SearchEntry> {
    let mut l = ldap(slapd).await;
    let (found, _) = l
        .search(base, Scope::OneLevel, filter, attrs.to_vec())
        .await
        .unwrap()
        .success()
        .unwrap();
    let _ = l.unbind().await;
    found.into_iter().map(SearchEntry::construct).collect()
}

fn one<'a>(e: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

/// After a drain: `n` users `<prefix>NNNNNN` below `base`, with the title
/// and displayName of the PATCH phase when `patched`.
async fn verify_users(slapd: &Slapd, base: &str, prefix: &str, n: usize, patched: bool) {
    let found = entries(
        slapd,
        base,
        &format!("(&(objectClass=inetOrgPerson)(uid={prefix}*))"),
        &["uid", "title", "displayName"],
    )
    .await;
    assert_eq!(
        found.len(),
        n,
        "{base}: {} users, expected {n}",
        found.len()
    );
    if patched {
        for e in &found {
            let i: usize = one(e, "uid").unwrap()[prefix.len()..].parse().unwrap();
            assert_eq!(
                one(e, "title"),
                Some(format!("Title {i}").as_str()),
                "{}",
                e.dn
            );
            assert_eq!(
                one(e, "displayName"),
                Some(format!("Display {i}").as_str()),
                "{}",
                e.dn
            );
        }
    }
}

/// After a drain: the groups `<prefix>NNNN` below `base` hold the `n`
/// member adds between them (user i in group i % g), no placeholder left.
async fn verify_members(slapd: &Slapd, base: &str, prefix: &str, users: &str, n: usize, g: usize) {
    let found = entries(slapd, base, &format!("(cn={prefix}*)"), &["cn", "member"]).await;
    assert_eq!(found.len(), g, "{base}: {} groups", found.len());
    let mut total = 0;
    for e in &found {
        let k: usize = one(e, "cn").unwrap()[prefix.len()..].parse().unwrap();
        let members: HashSet<String> = e
            .attrs
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case("member"))
            .map(|(_, v)| v.iter().map(|m| m.to_lowercase()).collect())
            .unwrap_or_default();
        let want: HashSet<String> = (0..n)
            .filter(|i| i % g == k)
            .map(|i| {
                format!(
                    "uid={users}{i:06},{base_users}",
                    base_users = users_base(slapd, users)
                )
                .to_lowercase()
            })
            .collect();
        assert_eq!(members, want, "{}", e.dn);
        total += members.len();
    }
    assert_eq!(total, n);
}

/// Where the `users` prefix lives: the daemon's users in ou=people, the
/// raw baseline's in ou=raw.
fn users_base(slapd: &Slapd, users: &str) -> String {
    if users == "raw" {
        format!("ou=raw,{}", slapd.suffix())
    } else {
        slapd.people_dn()
    }
}

type Conns = Arc<Vec<Arc<tokio::sync::Mutex<Ldap>>>>;

/// The raw baseline: the same writes straight into slapd with ldap3, from
/// `c` workers over the same number of connections as the daemon's writer
/// (worker w uses connection w mod connections), below ou=raw.
struct Raw {
    conns: Conns,
    suffix: String,
}

impl Raw {
    async fn new(slapd: &Slapd, connections: usize) -> Raw {
        let mut l = ldap(slapd).await;
        l.add(
            &format!("ou=raw,{}", slapd.suffix()),
            vec![
                ("objectClass", HashSet::from(["organizationalUnit"])),
                ("ou", HashSet::from(["raw"])),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
        let mut conns = Vec::new();
        for _ in 0..connections {
            conns.push(Arc::new(tokio::sync::Mutex::new(ldap(slapd).await)));
        }
        Raw {
            conns: Arc::new(conns),
            suffix: slapd.suffix().to_string(),
        }
    }

    fn phase(name: &'static str, ops: usize, lat: Vec<Duration>, t: Instant) -> Phase {
        Phase {
            name,
            kind: Lat::Apply,
            ops,
            secs: t.elapsed().as_secs_f64(),
            acked: None,
            lat,
            rss: 0.0,
        }
    }

    async fn adds(&self, n: usize, c: usize) -> Phase {
        let (cs, sf) = (self.conns.clone(), self.suffix.clone());
        let t = Instant::now();
        let lat = run(n, c, move |w, i| {
            let (cs, sf) = (cs.clone(), sf.clone());
            async move {
                let mut l = cs[w % cs.len()].lock().await;
                l.add(&format!("uid=raw{i:06},ou=raw,{sf}"), raw_user(i))
                    .await
                    .unwrap()
                    .success()
                    .unwrap();
            }
        })
        .await;
        Raw::phase("raw adds", n, lat, t)
    }

    async fn modifies(&self, n: usize, c: usize) -> Phase {
        let (cs, sf) = (self.conns.clone(), self.suffix.clone());
        let t = Instant::now();
        let lat = run(n, c, move |w, i| {
            let (cs, sf) = (cs.clone(), sf.clone());
            async move {
                let mut l = cs[w % cs.len()].lock().await;
                let mods = vec![
                    Mod::Replace("title".to_string(), HashSet::from([format!("Title {i}")])),
                    Mod::Replace(
                        "displayName".to_string(),
                        HashSet::from([format!("Display {i}")]),
                    ),
                ];
                l.modify(&format!("uid=raw{i:06},ou=raw,{sf}"), mods)
                    .await
                    .unwrap()
                    .success()
                    .unwrap();
            }
        })
        .await;
        Raw::phase("raw modifies", n, lat, t)
    }

    /// `g` groups holding the placeholder, as the daemon's empty groups.
    async fn groups(&self, g: usize) {
        let mut l = self.conns[0].lock().await;
        for i in 0..g {
            let cn = format!("rawgroup{i:04}");
            let attrs = vec![
                ("objectClass", HashSet::from(["groupOfNames"])),
                ("cn", HashSet::from([cn.as_str()])),
                (
                    "member",
                    HashSet::from(["cn=empty-group-placeholder,dc=example,dc=com"]),
                ),
            ];
            l.add(&format!("cn={cn},ou=raw,{}", self.suffix), attrs)
                .await
                .unwrap()
                .success()
                .unwrap();
        }
    }

    /// Member adds; the first add to a group also removes the placeholder,
    /// as the daemon does.
    async fn member_adds(&self, n: usize, c: usize, g: usize) -> Phase {
        let (cs, sf) = (self.conns.clone(), self.suffix.clone());
        let t = Instant::now();
        let lat = run(n, c, move |w, i| {
            let (cs, sf) = (cs.clone(), sf.clone());
            async move {
                let mut l = cs[w % cs.len()].lock().await;
                let mut mods = vec![Mod::Add(
                    "member".to_string(),
                    HashSet::from([format!("uid=raw{i:06},ou=raw,{sf}")]),
                )];
                if i < g {
                    mods.push(Mod::Delete(
                        "member".to_string(),
                        HashSet::from(["cn=empty-group-placeholder,dc=example,dc=com".to_string()]),
                    ));
                }
                l.modify(&format!("cn=rawgroup{:04},ou=raw,{sf}", i % g), mods)
                    .await
                    .unwrap()
                    .success()
                    .unwrap();
            }
        })
        .await;
        Raw::phase("raw member adds", n, lat, t)
    }
}

/// The write phases run in pairs, daemon and raw, in alternating order
/// (raw first for creates, daemon first for modifies, raw first for member
/// adds), so that neither side always meets the warmer database; after
/// each drain the directory's contents are checked, on both sides.
async fn phases(args: &Args, slapd: &Slapd, daemon: &Daemon, http: &Http) {
    let (n, c) = (args.users, args.clients);
    let g = (n / 100).max(1);
    let mut report = Vec::new();
    let mut raw = Vec::new();
    let base = Raw::new(slapd, args.connections).await;
    let people = slapd.people_dn();
    let raw_dn = format!("ou=raw,{}", slapd.suffix());

    // Creates: raw first.
    raw.push(base.adds(n, c).await);
    verify_users(slapd, &raw_dn, "raw", n, false).await;
    let (ids, phase) = create_users(http, daemon, 0, n, c).await;
    report.push(phase);
    verify_users(slapd, &people, "user", n, false).await;
    let ids = Arc::new(ids);

    // Modifies: daemon first.
    let ids2 = ids.clone();
    report.push(
        write_phase("user PATCHes", n, c, daemon, http, move |i| {
            let body = json!({"Operations": [
                {"op": "replace", "path": "title", "value": format!("Title {i}")},
                {"op": "replace", "path": "displayName", "value": format!("Display {i}")}
            ]});
            ("PATCH", format!("/Users/{}", ids2[i]), body)
        })
        .await,
    );
    verify_users(slapd, &people, "user", n, true).await;
    raw.push(base.modifies(n, c).await);
    verify_users(slapd, &raw_dn, "raw", n, true).await;

    let groups = Arc::new(Mutex::new(vec![String::new(); g]));
    let started = Instant::now();
    let (h, gr) = (http.clone(), groups.clone());
    let lat = run(g, c, move |_, i| {
        let (h, gr) = (h.clone(), gr.clone());
        async move {
            let (status, body) = h
                .send(
                    "POST",
                    "/Groups",
                    Some(json!({"displayName": format!("group{i:04}"), "members": []})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            gr.lock().unwrap()[i] = body["id"].as_str().unwrap().to_string();
        }
    })
    .await;
    daemon.drained(Duration::from_secs(3600)).await;
    report.push(Phase {
        name: "group creates",
        kind: Lat::Ack,
        ops: g,
        secs: started.elapsed().as_secs_f64(),
        acked: None,
        lat,
        rss: daemon.peak_rss_mib(),
    });
    let groups = Arc::new(groups.lock().unwrap().clone());
    base.groups(g).await;

    // Member adds: raw first.
    raw.push(base.member_adds(n, c, g).await);
    verify_members(slapd, &raw_dn, "rawgroup", "raw", n, g).await;
    let (ids2, groups2) = (ids.clone(), groups.clone());
    report.push(
        write_phase("member adds", n, c, daemon, http, move |i| {
            let body = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": ids2[i]}]}]});
            ("PATCH", format!("/Groups/{}", groups2[i % groups2.len()]), body)
        })
        .await,
    );
    verify_members(slapd, &slapd.groups_dn(), "group", "user", n, g).await;

    let started = Instant::now();
    let h = http.clone();
    let lat = run(n, c, move |_, i| {
        let h = h.clone();
        async move {
            let (status, body) = h
                .send(
                    "GET",
                    &format!("/Users?filter=userName%20eq%20%22user{i:06}%22"),
                    None,
                )
                .await;
            assert_eq!(
                (status, body["totalResults"].as_u64()),
                (200, Some(1)),
                "{body}"
            );
        }
    })
    .await;
    report.push(Phase {
        name: "userName eq lookups",
        kind: Lat::Read,
        ops: n,
        secs: started.elapsed().as_secs_f64(),
        acked: None,
        lat,
        rss: daemon.peak_rss_mib(),
    });

    let started = Instant::now();
    let mut lat = Vec::new();
    let mut seen = 0;
    let mut start = 1;
    loop {
        let t = Instant::now();
        let (status, body) = http
            .send("GET", &format!("/Users?startIndex={start}&count=100"), None)
            .await;
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
    report.push(Phase {
        name: "paged listing (users)",
        kind: Lat::Read,
        ops: seen,
        secs: started.elapsed().as_secs_f64(),
        acked: None,
        lat,
        rss: daemon.peak_rss_mib(),
    });

    println!(
        "\n{:<22} {:>8} {:>10} {:>10} {:>6} {:>9} {:>9} {:>10}",
        "phase", "ops", "seconds", "ops/s", "lat", "p50 ms", "p99 ms", "peak MiB"
    );
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
         Every drained phase was checked entry by entry in the directory."
    );
    println!("\nratio daemon / raw (ops/s, both until applied):");
    for (d, r) in [(0, 0), (1, 1), (3, 2)] {
        println!(
            "  {:<16} {:>6.0} / {:>6.0} = {:.2}",
            report[d].name,
            report[d].rate(),
            raw[r].rate(),
            report[d].rate() / raw[r].rate()
        );
    }
}

/// Issue 4's question: does adding one member cost more in a big group?
/// Each size gets a group, then ADDS single-member PATCHes, sent one after
/// another; the time until the journal is drained is divided by ADDS. The
/// same adds go straight to slapd for comparison.
async fn member_sizes(args: &Args, slapd: &Slapd, daemon: &Daemon, http: &Http) {
    const ADDS: usize = 100;
    let biggest = args.member_sizes.iter().copied().max().unwrap_or(0);
    let total = biggest + ADDS * args.member_sizes.len();
    let (ids, phase) = create_users(http, daemon, 0, total, args.clients).await;
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
async fn big_group(args: &Args, daemon: &Daemon, http: &Http) {
    let size = args.big_group;
    let n = size.max(args.users);
    let (ids, phase) = create_users(http, daemon, 0, n, args.clients).await;
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
    drop(body);
    daemon.drained(Duration::from_secs(3600)).await;
    println!(
        "one {size}-member group POST: answered in {:.0} ms, in the directory after {:.1} s; RSS before {:.1} MiB, peak {:.1} MiB",
        acked.as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64(),
        before,
        daemon.peak_rss_mib()
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
    done.store(true, Ordering::Relaxed);
    let mut lat = poller.await.unwrap();
    daemon.drained(Duration::from_secs(3600)).await;
    println!(
        "four {size}-member group POSTs at once: answered in {:.0} ms (slowest), in the directory after {:.1} s; RSS before {:.1} MiB, peak {:.1} MiB",
        acks.iter().max().unwrap().as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64(),
        before,
        daemon.peak_rss_mib()
    );
    println!(
        "  /healthz meanwhile: {} polls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
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

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // The overlays as in `scim2ldap dev` (and in earlier runs of this
        // benchmark, so that figures stay comparable); both sides pay them.
        // --big-group measures the daemon, not slapd's memberof overlay
        // updating 50,000 users per group: no overlays there.
        let slapd = Slapd::start(if args.big_group > 0 {
            SlapdOptions {
                nosync: args.nosync,
                ..SlapdOptions::default()
            }
        } else {
            SlapdOptions {
                nosync: args.nosync,
                ..SlapdOptions::with_overlays()
            }
        })
        .expect("start slapd");
        let daemon = Daemon::start(&slapd, args.connections).await;
        let http = Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: daemon.base.clone(),
            token: daemon.token.clone(),
        };
        println!(
            "scim2ldap provisioning benchmark: {} users, {} clients, {} directory connections on each side, slapd fsync {}",
            args.users,
            args.clients,
            args.connections,
            if args.nosync { "off (dbnosync)" } else { "on" }
        );
        if args.big_group > 0 {
            big_group(&args, &daemon, &http).await;
        } else if args.member_sizes.is_empty() {
            phases(&args, &slapd, &daemon, &http).await;
        } else {
            member_sizes(&args, &slapd, &daemon, &http).await;
        }
    });
}
