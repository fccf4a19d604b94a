//! The processes under test and the load generator: the daemon (the real
//! binary in a child process), its HTTP client, the worker pool that
//! drives C concurrent clients, and LDAP connections as the rootdn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use ldap3::{Ldap, LdapConnAsync, Scope};
use serde_json::Value;

use scim2ldap_slapd::{DaemonConfig, Slapd};

use crate::measure;

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon under test: the real binary in a child process.
pub struct Daemon {
    child: std::process::Child,
    pub base: String,
    pub token: String,
    store: std::path::PathBuf,
    _dir: TempDir,
}

impl Daemon {
    pub async fn start(slapd: &Slapd, connections: usize) -> Daemon {
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
        let log = std::fs::File::create(dir.join("daemon.log")).expect("daemon.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
            .args(["serve", "--config"])
            .arg(dir.join("config.toml"))
            .env("SCIM2LDAP_LOG", "warn")
            // As the shipped systemd unit runs it (systemd/scim2ldap.service):
            // glibc's per-thread arenas, and large blocks freed into them,
            // otherwise keep pages that the figures would count.
            .env("MALLOC_ARENA_MAX", "2")
            .env("MALLOC_MMAP_THRESHOLD_", "131072")
            // Kept out of the report (one warning per write while the
            // directory is down); counted by `Daemon::log_lines`.
            .stdout(log.try_clone().expect("daemon.log"))
            .stderr(log)
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
    pub async fn drained(&self, timeout: Duration) {
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

    /// Lines the daemon has logged (warnings and errors) so far, and
    /// those among them that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> (usize, usize) {
        let log = self.store.with_file_name("daemon.log");
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let matching = log.lines().filter(|l| l.contains(needle)).count();
        (log.lines().count(), matching)
    }

    /// The daemon's process id, for its CPU time and RSS in /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An HTTP client for the daemon's SCIM API.
    pub fn http(&self) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: self.base.clone(),
            token: self.token.clone(),
        }
    }

    /// Resets the daemon's peak RSS to its current RSS (Linux:
    /// `clear_refs` 5), so that the next [`Daemon::peak_rss_mib`] is the
    /// peak of what follows.
    pub fn reset_peak(&self) {
        measure::reset_peak(self.pid());
    }

    /// Current resident set size of the daemon (VmRSS), in MiB.
    pub fn rss_mib(&self) -> f64 {
        measure::status_mib(self.pid(), "VmRSS")
    }

    /// Peak resident set size of the daemon since the last
    /// [`Daemon::reset_peak`] (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        measure::status_mib(self.pid(), "VmHWM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub struct Http {
    pub client: Client<HttpConnector, Full<Bytes>>,
    pub base: String,
    pub token: String,
}

impl Http {
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
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
pub async fn run<F, Fut>(n: usize, clients: usize, op: F) -> Vec<Duration>
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

pub async fn ldap(slapd: &Slapd) -> Ldap {
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
pub async fn wait_for(slapd: &Slapd, filter: &str, timeout: Duration) {
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
