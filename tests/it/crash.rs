//! Crash safety for real: the daemon binary under a load of mixed writes
//! from several clients is killed with SIGKILL at random moments and
//! restarted; at the end the directory must hold exactly what the
//! acknowledged responses say, nothing missing and nothing extra.
//!
//! A request whose connection broke has an unknown outcome (the daemon may
//! have made it durable just before dying); its client asks the restarted
//! daemon what it has, which is final, and carries on from there.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use scim2ldap_slapd::{Slapd, SlapdOptions};

use crate::harness::{cli, config_text, dump, MAPPING};

const CLIENTS: usize = 4;
const WRITES_PER_CLIENT: usize = 500;
const USERS_PER_CLIENT: usize = 25;
/// Kill the daemon when this many writes have been answered.
const KILL_AT: &[usize] = &[150, 450, 800, 1150, 1500, 1850];

/// xorshift64*: enough randomness for a test, reproducible from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The daemon binary and how to (re)start it.
struct Daemon {
    dir: std::path::PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Daemon {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
            .args(["serve", "--config"])
            .arg(self.dir.join("config.toml"))
            .env("SCIM2LDAP_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the daemon");
        self.child = Some(child);
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/scim/v2", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Http = Client<HttpConnector, Full<Bytes>>;

/// One request; `Err` when the outcome is unknown (no answer).
async fn call(
    client: &Http,
    token: &str,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/scim+json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, v))
    };
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The state of one user as the acknowledged responses say: its id and
/// title, or absent.
type Expected = HashMap<String, Option<(String, String)>>;

/// Asks the (restarted) daemon for the truth about `name`, retrying until
/// it answers.
async fn resolve(client: &Http, token: &str, base: &str, name: &str) -> Option<(String, String)> {
    let url = format!("{base}/Users?filter=userName%20eq%20%22{name}%22");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, v)) = call(client, token, "GET", &url, None).await {
            return v["Resources"].get(0).map(|u| {
                (
                    u["id"].as_str().unwrap_or_default().to_string(),
                    u["title"].as_str().unwrap_or_default().to_string(),
                )
            });
        }
        assert!(Instant::now() < deadline, "the daemon did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn client_load(
    c: usize,
    seed: u64,
    token: String,
    base: String,
    progress: Arc<AtomicUsize>,
) -> (Expected, usize) {
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut expected: Expected = HashMap::new();
    let mut unknown = 0;
    for step in 0..WRITES_PER_CLIENT {
        let name = format!("c{c}-u{}", rng.below(USERS_PER_CLIENT as u64));
        let current = expected.get(&name).cloned().flatten();
        let title = format!("t{step}");
        let (method, url, body, ok_status) = match &current {
            None => (
                "POST",
                format!("{base}/Users"),
                Some(json!({
                    "userName": name,
                    "name": {"givenName": "G", "familyName": format!("F {name}")},
                    "title": title,
                })),
                201,
            ),
            Some((id, _)) if rng.below(100) < 20 => {
                ("DELETE", format!("{base}/Users/{id}"), None, 204)
            }
            Some((id, _)) => (
                "PATCH",
                format!("{base}/Users/{id}"),
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "title", "value": title}]
                })),
                200,
            ),
        };
        match call(&client, &token, method, &url, body).await {
            Ok((status, v)) if status == ok_status => {
                let after = match method {
                    "POST" => Some((v["id"].as_str().unwrap().to_string(), title)),
                    "PATCH" => current.map(|(id, _)| (id, title)),
                    _ => None,
                };
                expected.insert(name, after);
            }
            Ok((status, v)) if status < 500 => {
                panic!("client {c} step {step}: {method} {url} answered {status}: {v} (an acknowledged write was lost?)")
            }
            _ => {
                // No answer (or the daemon was stopping): the restarted
                // daemon knows whether it was made durable.
                unknown += 1;
                let truth = resolve(&client, &token, &base, &name).await;
                expected.insert(name, truth);
            }
        }
        progress.fetch_add(1, Ordering::SeqCst);
    }
    (expected, unknown)
}

async fn wait_healthy(base: &str) {
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let url = base.replace("/scim/v2", "/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = Request::builder()
            .uri(&url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged() {
    let started = Instant::now();
    let seed = std::env::var("SCIM2LDAP_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set SCIM2LDAP_CRASH_SEED to repeat)");
    let slapd = tokio::task::spawn_blocking(|| {
        Slapd::start(SlapdOptions {
            nosync: true,
            ..Default::default()
        })
    })
    .await
    .unwrap()
    .expect("slapd");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("scim2ldap-crash-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mapping.toml"), MAPPING).unwrap();
    let token = scim2ldap::token::generate().unwrap();
    std::fs::write(
        dir.join("config.toml"),
        config_text(&slapd, &token, &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let daemon = Arc::new(Mutex::new(Daemon {
        dir: dir.clone(),
        port,
        child: None,
    }));
    let base = daemon.lock().await.base();
    daemon.lock().await.spawn();
    wait_healthy(&base).await;

    let progress = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let config = dir.join("config.toml").display().to_string();
    let killer = {
        let (daemon, progress, done, base, config) = (
            daemon.clone(),
            progress.clone(),
            done.clone(),
            base.clone(),
            config.clone(),
        );
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            let mut kills = 0;
            // Entries acknowledged but not yet applied when each kill hit,
            // as the restarted daemon reports them.
            let mut pending_after = Vec::new();
            for &at in KILL_AT {
                while progress.load(Ordering::SeqCst) < at {
                    if done.load(Ordering::SeqCst) {
                        return (kills, pending_after);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // A random moment a little after the threshold.
                tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
                let mut d = daemon.lock().await;
                d.kill();
                kills += 1;
                d.spawn();
                drop(d);
                wait_healthy(&base).await;
                let c = config.clone();
                let (_, out, _) =
                    tokio::task::spawn_blocking(move || cli(&["journal", "--config", &c, "stats"]))
                        .await
                        .unwrap();
                pending_after.push(stat(&out, "pending"));
            }
            (kills, pending_after)
        })
    };
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        clients.push(tokio::spawn(client_load(
            c,
            seed,
            token.clone(),
            base.clone(),
            progress.clone(),
        )));
    }
    let mut expected = Expected::new();
    let mut unknown = 0;
    for c in clients {
        let (e, u) = c.await.unwrap();
        expected.extend(e);
        unknown += u;
    }
    done.store(true, Ordering::SeqCst);
    let (kills, pending_after) = killer.await.unwrap();
    let load_time = started.elapsed();

    // Wait until the journal is drained, asking the running daemon through
    // the command line (its admin socket).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = config.clone();
        let (ok, out, err) =
            tokio::task::spawn_blocking(move || cli(&["journal", "--config", &c, "stats"]))
                .await
                .unwrap();
        assert!(ok, "{out}{err}");
        if out.contains(&format!("{:<18} 0\n", "pending"))
            && out.contains(&format!("{:<18} 0\n", "parked"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "journal not drained:\n{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let people = slapd.people_dn();
    let got = dump(&slapd, &people).await;
    let mut want: HashMap<String, String> = HashMap::new();
    for (name, state) in &expected {
        if let Some((_, title)) = state {
            want.insert(format!("uid={name},{people}").to_lowercase(), title.clone());
        }
    }
    let mut problems = Vec::new();
    for (dn, title) in &want {
        match got.get(dn) {
            None => problems.push(format!("missing {dn}")),
            Some(attrs) => {
                let have = attrs.get("title").and_then(|v| v.first());
                if have != Some(title) {
                    problems.push(format!("{dn}: title {have:?}, expected {title:?}"));
                }
            }
        }
    }
    for dn in got.keys() {
        if !want.contains_key(dn) {
            problems.push(format!("extra {dn}"));
        }
    }
    eprintln!(
        "crash test: {} writes by {CLIENTS} clients, {kills} SIGKILLs (entries pending at each restart: {pending_after:?}), {unknown} unknown outcomes resolved, {} users expected, load {:.1?}, total {:.1?}",
        CLIENTS * WRITES_PER_CLIENT,
        want.len(),
        load_time,
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "seed {seed}: the directory differs from the acknowledged writes:\n{}",
        problems.join("\n")
    );
    assert!(kills >= 5, "only {kills} kills happened");
    daemon.lock().await.kill();
}

/// A number from `journal stats` output, e.g. `stat(out, "pending")`.
fn stat(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(u64::MAX)
}
