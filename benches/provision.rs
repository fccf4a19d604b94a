//! The provisioning benchmark: starts a throwaway slapd and the real
//! `scim2ldap` binary, drives SCIM requests at it over HTTP with C
//! concurrent clients, and reports ops/s, p50, p99 and the daemon's peak
//! RSS. A write phase ends when the directory holds the last write, not
//! when the last response arrives.
//!
//! ```sh
//! cargo bench --bench provision -- --member-sizes 10,1000,50000
//! cargo bench --bench provision -- --users 2000 --clients 4 [--nosync]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use ldap3::{LdapConnAsync, Scope};
use serde_json::{json, Value};

use scim2ldap::slapd::{Slapd, SlapdOptions};

struct Args {
    users: usize,
    clients: usize,
    nosync: bool,
    member_sizes: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        users: 2000,
        clients: 4,
        nosync: false,
        member_sizes: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--users" => a.users = it.next().and_then(|v| v.parse().ok()).expect("--users N"),
            "--clients" => a.clients = it.next().and_then(|v| v.parse().ok()).expect("--clients N"),
            "--nosync" => a.nosync = true,
            "--member-sizes" => {
                a.member_sizes = it
                    .next()
                    .expect("--member-sizes 10,1000,50000")
                    .split(',')
                    .map(|s| s.trim().parse().expect("a number"))
                    .collect()
            }
            // cargo bench passes --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}; see the top of benches/provision.rs"),
        }
    }
    a
}

/// The daemon under test: the real binary in a child process.
struct Daemon {
    child: std::process::Child,
    base: String,
    token: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Daemon {
    async fn start(slapd: &Slapd) -> Daemon {
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
        let config = format!(
            "mapping = \"mapping.toml\"\n[server]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 67108864\n\
             [store]\npath = \"state\"\n[ldap]\nurl = \"{}\"\nbind_dn = \"{}\"\nbind_password = \"{}\"\nbase_dn = \"{}\"\n\
             [[tokens]]\nname = \"bench\"\nsha256 = \"{}\"\n",
            slapd.uri(),
            slapd.bind_dn(),
            slapd.password(),
            slapd.suffix(),
            scim2ldap::token::TokenHash::of(&token).to_hex()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
            .args(["serve", "--config"])
            .arg(dir.join("config.toml"))
            .env("SCIM2LDAP_LOG", "warn")
            .spawn()
            .expect("start the daemon");
        let base = format!("http://127.0.0.1:{port}/scim/v2");
        let health = format!("http://127.0.0.1:{port}/healthz");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = health;
        Daemon {
            child,
            base,
            token,
            _dir: TempDir(dir),
        }
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
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                op(i).await;
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

/// Waits until an LDAP search under the suffix finds something.
async fn wait_for(slapd: &Slapd, filter: &str, timeout: Duration) {
    let (conn, mut ldap) = LdapConnAsync::new(&slapd.uri()).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(&slapd.bind_dn(), slapd.password())
        .await
        .unwrap();
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

/// Creates users `0..n` through SCIM; returns their ids, in order.
async fn create_users(
    http: &Http,
    slapd: &Slapd,
    from: usize,
    n: usize,
    clients: usize,
) -> (Vec<String>, Vec<Duration>, Duration) {
    let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); n]));
    let started = Instant::now();
    let (h, ids2) = (http.clone(), ids.clone());
    let lat = run(n, clients, move |i| {
        let (h, ids) = (h.clone(), ids2.clone());
        async move {
            let (status, body) = h.send("POST", "/Users", Some(user_body(from + i))).await;
            assert_eq!(status, 201, "{body}");
            ids.lock().unwrap()[i] = body["id"].as_str().unwrap().to_string();
        }
    })
    .await;
    wait_for(
        slapd,
        &format!("(uid=user{:06})", from + n - 1),
        Duration::from_secs(600),
    )
    .await;
    let elapsed = started.elapsed();
    let ids = ids.lock().unwrap().clone();
    (ids, lat, elapsed)
}

/// Issue 4's question: does adding one member cost more in a big group?
async fn member_sizes(args: &Args, slapd: &Slapd, daemon: &Daemon, http: &Http) {
    const ADDS: usize = 100;
    let biggest = args.member_sizes.iter().copied().max().unwrap_or(0);
    let (ids, _, t) = create_users(
        http,
        slapd,
        0,
        biggest + ADDS * args.member_sizes.len(),
        args.clients,
    )
    .await;
    println!(
        "setup: {} users created and in the directory in {:.1} s",
        ids.len(),
        t.as_secs_f64()
    );
    println!(
        "\n{:>10} {:>14} {:>14} {:>16}",
        "members", "HTTP p50 ms", "HTTP p99 ms", "applied ms/add"
    );
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
        wait_for(
            slapd,
            &format!(
                "(&(cn={name})(member=uid=user{:06},ou=people,dc=example,dc=com))",
                size - 1
            ),
            Duration::from_secs(600),
        )
        .await;
        // One member at a time, each waited for in the directory.
        let mut lat = Vec::new();
        let started = Instant::now();
        for j in 0..ADDS {
            let k = biggest + n * ADDS + j;
            let t = Instant::now();
            let (status, body) = http
                .send("PATCH", &format!("/Groups/{gid}"), Some(json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": ids[k]}]}]})))
                .await;
            assert_eq!(status, 204, "{body}");
            lat.push(t.elapsed());
            wait_for(
                slapd,
                &format!("(&(cn={name})(member=uid=user{k:06},ou=people,dc=example,dc=com))"),
                Duration::from_secs(60),
            )
            .await;
        }
        let per_add = started.elapsed().as_secs_f64() * 1000.0 / ADDS as f64;
        println!(
            "{:>10} {:>14.2} {:>14.2} {:>16.2}",
            size,
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            per_add
        );
    }
    println!("\ndaemon peak RSS: {:.1} MiB", daemon.peak_rss_mib());
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let slapd = Slapd::start(SlapdOptions {
            nosync: args.nosync,
            ..Default::default()
        })
        .expect("start slapd");
        let daemon = Daemon::start(&slapd).await;
        let http = Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: daemon.base.clone(),
            token: daemon.token.clone(),
        };
        println!(
            "scim2ldap provisioning benchmark: slapd {} (fsync {}), {} clients",
            slapd.uri(),
            if args.nosync { "off" } else { "on" },
            args.clients
        );
        if !args.member_sizes.is_empty() {
            member_sizes(&args, &slapd, &daemon, &http).await;
        }
    });
}
