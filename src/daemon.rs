//! Puts the parts together: opens the store, loads the mapping, starts the
//! writer and the HTTP edge, and stops them in order. `main` only parses
//! the command line and waits for signals; tests call [`start`] with a
//! listener bound to port 0.
//!
//! A daemon whose writer has stopped is not a daemon: when the writer task
//! ends (an error, a panic in a lane or in the dispatcher) while the daemon
//! is not stopping, or when the store cannot flush to disk, the daemon
//! records why ([`Running::failed`]), answers `/readyz` with 503, reports
//! `scim2ldap_writer_running 0`, and `main` stops feeding the watchdog and
//! exits non-zero so that the service manager restarts it. The journal
//! makes that safe: what was acknowledged is on disk and is applied after
//! the restart.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::admin::AdminCtx;
use crate::adopt::Adopter;
use crate::api::{Api, DirectorySyntaxes};
use crate::config::Config;
use crate::http::Edge;
use crate::metrics::{Metrics, Probe};
use crate::model::{MappingPlanner, Model, SharedModel};
use crate::store::Store;
use crate::writer::{Writer, WriterHandle};

/// How long each part of the daemon may take to stop.
const SHUTDOWN_PART: std::time::Duration = std::time::Duration::from_secs(10);

/// A running daemon.
pub struct Running {
    pub addr: SocketAddr,
    /// The operational listener's address (`/metrics`, `/readyz`); `None`
    /// when it is off or its default address was taken.
    pub ops_addr: Option<SocketAddr>,
    /// What the operational listener serves.
    pub ops: Arc<crate::ops::Ops>,
    pub store: Store,
    pub writer: WriterHandle,
    pub model: SharedModel,
    pub edge: Arc<Edge>,
    /// The directory's attribute syntaxes, once read.
    pub syntaxes: Arc<DirectorySyntaxes>,
    /// What the status command and page show over time.
    pub monitor: Arc<crate::status::Monitor>,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    writer_task: JoinHandle<()>,
    /// The admin socket, the compactor, the schema reader and the flush
    /// watch.
    background: Vec<JoinHandle<()>>,
    /// Why the daemon must exit, once it must.
    fatal: watch::Receiver<Option<String>>,
}

/// Hooks for the tests, never set in normal operation: in-process tests
/// set them from Rust code ([`start_with`]); the binary reads them once,
/// at start, from the environment ([`TestHooks::from_env`]).
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// The first entry a writer lane applies panics there, as a panic in
    /// the LDAP client would.
    pub panic_in_lane: bool,
}

impl TestHooks {
    /// `SCIM2LDAP_TEST_PANIC_LANE=1` sets [`TestHooks::panic_in_lane`];
    /// any other value does nothing.
    pub const PANIC_LANE_ENV: &'static str = "SCIM2LDAP_TEST_PANIC_LANE";

    /// The hooks the environment asks for (read by `serve`).
    pub fn from_env() -> TestHooks {
        TestHooks {
            panic_in_lane: std::env::var(Self::PANIC_LANE_ENV).is_ok_and(|v| v == "1"),
        }
    }
}

/// Records the first reason the daemon must exit.
#[derive(Clone)]
struct Fatal(Arc<watch::Sender<Option<String>>>);

impl Fatal {
    fn set(&self, why: String) {
        error!(error = %why, "the daemon is not ready and exits, so that its service manager restarts it (every acknowledged write is in the journal)");
        self.0.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            *f = Some(why);
            true
        });
    }
}

/// Why the daemon could not start or reload; each message names the key
/// or file to fix.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The mapping file did not validate (every problem, located).
    #[error("{0}")]
    Mapping(#[from] crate::model::LoadError),
    #[error("opening the store in {path} (store.path): {source}")]
    Store {
        path: std::path::PathBuf,
        source: crate::store::StoreError,
    },
    #[error("server.tls_cert / tls_key: {0}")]
    Tls(String),
    #[error("the listening socket: {0}")]
    Listener(std::io::Error),
    #[error("cannot listen on {addr} (operations.listen): {source}")]
    OpsListener {
        addr: String,
        source: std::io::Error,
    },
    #[error("turning HTTPS on or off (server.tls_cert) needs a restart, not a reload")]
    TlsToggle,
    /// The mapping's password cannot be written over this connection.
    #[error("{0}")]
    Password(String),
}

/// Starts serving on `listener` with `config`.
pub async fn start(config: &Config, listener: TcpListener) -> Result<Running, DaemonError> {
    start_with(config, listener, TestHooks::default()).await
}

/// [`start`], with test hooks.
#[doc(hidden)]
pub async fn start_with(
    config: &Config,
    listener: TcpListener,
    hooks: TestHooks,
) -> Result<Running, DaemonError> {
    let addr = listener.local_addr().map_err(DaemonError::Listener)?;
    // Location and meta.location: the configured public URL, or (loopback
    // only, refused otherwise by the config) the address bound.
    let base_url = config.server.public_url_for(addr);
    if config.server.public_url.is_none() {
        warn!(url = %base_url, "server.public_url is not set: Location and meta.location use the loopback address bound; set public_url to the URL the identity provider reaches this daemon at");
    }
    let model = Model::load(&config.mapping_file).map_err(DaemonError::Mapping)?;
    crate::writer::check_password_transport(&model.mapping, &config.ldap)
        .map_err(DaemonError::Password)?;
    let model = SharedModel::new(model);
    let store =
        Store::open_with_cache(&config.store.path, config.store.cache_bytes).map_err(|source| {
            DaemonError::Store {
                path: config.store.path.clone(),
                source,
            }
        })?;
    let (stop, stop_rx) = watch::channel(false);

    let planner = Arc::new(MappingPlanner {
        model: model.clone(),
        store: store.clone(),
        departed: Default::default(),
    });
    let tls = match &config.server.tls {
        Some(files) => Some(Arc::new(
            crate::tls::Acceptor::load(files).map_err(DaemonError::Tls)?,
        )),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let (mut writer, writer_handle) = Writer::new(store.clone(), planner, config.ldap.clone());
    writer.set_metrics(metrics.clone());
    if hooks.panic_in_lane {
        warn!(
            "test hook {}: the first directory write panics in its writer lane",
            TestHooks::PANIC_LANE_ENV
        );
        writer.inject_lane_panic();
    }
    let (fatal_tx, fatal_rx) = watch::channel(None);
    let fatal = Fatal(Arc::new(fatal_tx));
    let writer_running = Arc::new(AtomicBool::new(true));
    let writer_task = tokio::spawn(watch_writer(
        writer,
        stop_rx.clone(),
        fatal.clone(),
        writer_running.clone(),
    ));
    let flush_watch = tokio::spawn(watch_flush(store.clone(), stop_rx.clone(), fatal.clone()));

    let adopter = Arc::new(
        Adopter::new(
            store.clone(),
            model.clone(),
            &config.ldap,
            Some(writer_handle.clone()),
            Some(base_url.clone()),
        )
        .with_metrics(metrics.clone()),
    );
    let activity = Arc::new(crate::status::Activity::new(
        config.tokens.iter().map(|t| t.name.clone()),
    ));
    let monitor = Arc::new(crate::status::Monitor::new(activity.clone()));
    let admin_ctx = AdminCtx {
        store: store.clone(),
        writer: Some(writer_handle.clone()),
        adopter: Some(adopter.clone()),
        retention: config.store.retention,
        monitor: Some(monitor.clone()),
    };
    let admin = tokio::spawn(crate::admin::serve_admin(
        crate::admin::socket_path(&config.store.path),
        admin_ctx,
        stop_rx.clone(),
    ));
    let compactor = tokio::spawn(compact_periodically(
        store.clone(),
        config.store.retention,
        stop_rx.clone(),
    ));

    let syntaxes = Arc::new(DirectorySyntaxes::default());
    let schema_reader = tokio::spawn(read_syntaxes(
        config.ldap.clone(),
        syntaxes.clone(),
        stop_rx.clone(),
    ));

    let api = Api {
        store: store.clone(),
        model: model.clone(),
        writer: Arc::new(writer_handle.clone()),
        reject_when_down: config.ldap.when_down == crate::config::WhenDirectoryDown::Reject,
        syntaxes: syntaxes.clone(),
        adopter: Some(adopter),
        max_members: config.server.max_members_per_request,
    };
    let probe = Arc::new(DaemonProbe {
        store: store.clone(),
        writer: writer_handle.clone(),
        queue: config.ldap.when_down == crate::config::WhenDirectoryDown::Queue,
        fatal: fatal_rx.clone(),
        writer_running,
        activity: activity.clone(),
    });
    // The edge and the operational listener keep the probe alive.
    metrics.set_probe(&(probe.clone() as Arc<dyn Probe>));
    // The operational listener. Pages beyond /metrics, /readyz and
    // /healthz (the status page) go into `ops_routes`: each implements
    // `ops::Route` and lists the paths it answers.
    let ops_listener = crate::ops::bind(&config.operations)
        .await
        .map_err(|source| DaemonError::OpsListener {
            addr: crate::ops::describe(config.operations.listen),
            source,
        })?;
    let ops_addr = ops_listener.as_ref().and_then(|l| l.local_addr().ok());
    let ops_routes: Vec<Arc<dyn crate::ops::Route>> =
        vec![Arc::new(crate::status::route::StatusRoute {
            store: store.clone(),
            writer: writer_handle.clone(),
            monitor: monitor.clone(),
        })];
    let ops = Arc::new(ops_routes.into_iter().fold(
        crate::ops::Ops::new(
            metrics.clone(),
            Some(probe.clone() as Arc<dyn Probe>),
            config.operations.token.clone(),
        ),
        crate::ops::Ops::route,
    ));
    let adoption_totals = {
        let m = metrics.clone();
        move || crate::status::Adoptions {
            users: m.adoptions("User"),
            groups: m.adoptions("Group"),
        }
    };
    let mut edge = Edge::new(api, config.server.clone(), config.tokens.clone())
        .with_service(metrics, probe, tls)
        .with_base_url(base_url);
    edge.activity = activity;
    let edge = Arc::new(edge);
    let mut ops_stop = stop_rx.clone();
    let ops_task = match ops_listener {
        Some(l) => tokio::spawn(crate::ops::serve(l, ops.clone(), async move {
            let _ = ops_stop.wait_for(|s| *s).await;
        })),
        None => tokio::spawn(async {}),
    };
    let sampler = tokio::spawn(crate::status::monitor::run(
        monitor.clone(),
        store.clone(),
        writer_handle.clone(),
        crate::status::monitor::SamplerParts {
            adoptions: Box::new(adoption_totals),
            notify: {
                let notifier = crate::notify::Notifier::from_env();
                Box::new(move |line| notifier.status(line))
            },
            serving: format!("serving on {addr}"),
        },
        stop_rx.clone(),
    ));
    let mut http_stop = stop_rx;
    let http = tokio::spawn(crate::http::serve(listener, edge.clone(), async move {
        let _ = http_stop.wait_for(|s| *s).await;
    }));
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!(%addr, scheme, operations = %crate::ops::describe(ops_addr), dry_run = config.ldap.dry_run, base = %config.server.base_path, store = %config.store.path.display(), directory = %config.ldap.url, "scim2ldap is serving");
    Ok(Running {
        addr,
        ops_addr,
        ops,
        store,
        writer: writer_handle,
        model,
        edge,
        stop,
        http,
        writer_task,
        syntaxes,
        monitor,
        background: vec![
            admin,
            compactor,
            schema_reader,
            flush_watch,
            ops_task,
            sampler,
        ],
        fatal: fatal_rx,
    })
}

/// Runs the writer and watches it: if it ends while the daemon is not
/// stopping, or with an error, or panics, the daemon must exit.
async fn watch_writer(
    writer: Writer,
    stop: watch::Receiver<bool>,
    fatal: Fatal,
    running: Arc<AtomicBool>,
) {
    let outcome = tokio::spawn(writer.run(stop.clone())).await;
    let why = match outcome {
        Ok(Ok(())) if *stop.borrow() => return,
        Ok(Ok(())) => "the writer ended".to_string(),
        Ok(Err(e)) => format!("the writer stopped: {e}"),
        Err(e) if e.is_panic() => {
            format!("the writer panicked: {}", panic_message(e.into_panic()))
        }
        Err(e) => format!("the writer stopped: {e}"),
    };
    running.store(false, Ordering::SeqCst);
    fatal.set(why);
}

/// Waits for the store's flusher to fail (or for `stop`): nothing more
/// can be acknowledged, so the daemon must exit.
async fn watch_flush(store: Store, mut stop: watch::Receiver<bool>, fatal: Fatal) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        e = store.flush_failure() => fatal.set(format!("the store cannot write to disk: {e}")),
    }
}

/// The text of a panic's payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_string(), |s| s.to_string()),
    }
}

/// Reads the directory's attribute syntaxes once, retrying every 30 s
/// while the directory cannot be reached, so that the API can refuse
/// values the directory would refuse. Until then values are not checked
/// (the writer parks what the directory refuses). `dry_run` never talks to
/// a directory.
async fn read_syntaxes(
    ldap: crate::config::LdapConfig,
    syntaxes: Arc<DirectorySyntaxes>,
    mut stop: watch::Receiver<bool>,
) {
    if ldap.dry_run {
        return;
    }
    let mut dir = crate::writer::Directory::new(ldap);
    loop {
        let outcome = match dir.conn().await {
            Ok(conn) => crate::check::read_schema(conn).await,
            Err(e) => Err(format!("{e:?}")),
        };
        match outcome {
            Ok(schema) => {
                syntaxes.set(schema.syntaxes().clone());
                info!("read the directory's schema: values it would refuse are answered with 400");
                return;
            }
            Err(e) => {
                dir.reset();
                tracing::debug!(error = %e, "could not read the directory's schema yet; retrying in 30 s");
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
        }
    }
}

/// Compacts the journal every tenth of the retention (between 10 s and
/// 10 min), until `stop`.
async fn compact_periodically(
    store: Store,
    retention: Option<std::time::Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(retention) = retention else {
        return;
    };
    let every = (retention / 10).clamp(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(600),
    );
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => {}
        }
        let s = store.clone();
        let cutoff = std::time::SystemTime::now() - retention;
        match tokio::task::spawn_blocking(move || s.compact(cutoff)).await {
            Ok(Ok(r)) if r.removed > 0 => {
                info!(removed = r.removed, kept = r.kept, "compacted the journal")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => error!(error = %e, "journal compaction failed"),
            Err(e) => error!(error = %e, "journal compaction stopped"),
        }
    }
}

impl Running {
    /// Why the daemon must exit (the writer stopped, the store cannot
    /// flush), once it must: `main` waits on it beside the signals.
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.fatal.clone()
    }

    /// [`Running::failed`]'s current value.
    pub fn failure(&self) -> Option<String> {
        self.fatal.borrow().clone()
    }

    /// Re-reads the mapping and the tokens; on any error keeps the old ones.
    pub fn reload(&self, config_path: &std::path::Path) -> Result<(), DaemonError> {
        let config = Config::load(config_path)?;
        let model = Model::load(&config.mapping_file).map_err(DaemonError::Mapping)?;
        crate::writer::check_password_transport(&model.mapping, &config.ldap)
            .map_err(DaemonError::Password)?;
        // Check the certificate before swapping anything, so that a bad
        // reload changes nothing.
        let tls = match (&self.edge.tls, &config.server.tls) {
            (Some(_), Some(files)) => {
                Some(crate::tls::server_config(files).map_err(DaemonError::Tls)?)
            }
            (None, None) => None,
            _ => return Err(DaemonError::TlsToggle),
        };
        if let (Some(acceptor), Some(tls)) = (&self.edge.tls, tls) {
            acceptor.install(tls);
        }
        self.model.replace(model);
        self.edge
            .activity
            .know_tokens(config.tokens.iter().map(|t| t.name.clone()));
        *self.edge.tokens.write().unwrap_or_else(|p| p.into_inner()) = config.tokens;
        self.writer.wake();
        Ok(())
    }

    /// Stops accepting requests, lets in-flight ones finish, then stops the
    /// writer after the entry it is applying.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        // Each part gets a bounded time, and one that does not stop is
        // named in the log: a shutdown never hangs for good.
        async fn part(name: &str, task: JoinHandle<()>, limit: std::time::Duration) {
            let abort = task.abort_handle();
            if tokio::time::timeout(limit, task).await.is_err() {
                error!(
                    part = name,
                    "did not stop within {} s; stopping without it",
                    limit.as_secs()
                );
                abort.abort();
            }
        }
        // In-flight requests get their 30 s, the LDAP operation in hand its
        // time-out.
        part("http", self.http, SHUTDOWN_PART * 4).await;
        part("writer", self.writer_task, SHUTDOWN_PART * 4).await;
        for (i, t) in self.background.into_iter().enumerate() {
            let name = [
                "admin socket",
                "compactor",
                "schema reader",
                "flush watch",
                "operations listener",
                "status sampler",
            ]
            .get(i)
            .copied()
            .unwrap_or("background task");
            part(name, t, SHUTDOWN_PART).await;
        }
        let _ = self.store.flush();
        info!("scim2ldap stopped");
    }
}

/// What `/readyz` and `/metrics` read from the store and the writer.
struct DaemonProbe {
    store: Store,
    writer: WriterHandle,
    /// Writes are queued while the directory is down (`when_down = "queue"`).
    queue: bool,
    /// Why the daemon must exit, once it must.
    fatal: watch::Receiver<Option<String>>,
    /// False once the writer task has ended while the daemon was not
    /// stopping.
    writer_running: Arc<AtomicBool>,
    /// The last request per token (`scim2ldap_token_last_request_timestamp_seconds`).
    activity: Arc<crate::status::Activity>,
}

impl Probe for DaemonProbe {
    fn readiness(&self) -> Result<(), String> {
        let why = self.fatal.borrow().clone().or_else(|| {
            self.store
                .flush_error()
                .map(|e| format!("the store cannot write to disk: {e}"))
        });
        if let Some(why) = why {
            return Err(format!(
                "{why}; the daemon is exiting so that its service manager restarts it"
            ));
        }
        if self.writer.directory_up() || self.queue {
            Ok(())
        } else {
            Err("the directory cannot be reached and ldap.when_down = \"reject\"".into())
        }
    }

    fn labelled_gauges(&self) -> Vec<crate::metrics::LabelledGauge> {
        let started = self.activity.started();
        let unix = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        };
        vec![(
            "scim2ldap_token_last_request_timestamp_seconds",
            "Unix time of the last authenticated request per bearer token (the token's name: which identity provider); the daemon's start time until its first request.",
            "token",
            self.activity
                .tokens()
                .into_iter()
                .map(|(name, at)| (name, unix(at.unwrap_or(started))))
                .collect(),
        )]
    }

    fn gauges(&self) -> Vec<(&'static str, &'static str, f64)> {
        // O(1): counters the store keeps where it writes the queue, and one
        // seek for the oldest pending entry; never a walk over the queue.
        let q = self
            .store
            .queue_gauges()
            .unwrap_or(crate::store::QueueGauges {
                pending: 0,
                parked: 0,
                oldest_pending: None,
            });
        let (oldest_seq, oldest_at) = q.oldest_pending.unwrap_or((0, 0.0));
        vec![
            (
                "scim2ldap_journal_pending",
                "Journal entries not yet applied to the directory (parked ones included)",
                q.pending as f64,
            ),
            (
                "scim2ldap_journal_parked",
                "Journal entries the directory refused; see `scim2ldap journal`",
                q.parked as f64,
            ),
            (
                "scim2ldap_journal_oldest_pending_seq",
                "Seq of the oldest journal entry not yet applied (0: none)",
                oldest_seq as f64,
            ),
            (
                "scim2ldap_journal_oldest_pending_timestamp_seconds",
                "Unix time the oldest journal entry not yet applied was accepted (0: none)",
                oldest_at,
            ),
            (
                "scim2ldap_directory_up",
                "1 while the writer can reach the directory",
                if self.writer.directory_up() { 1.0 } else { 0.0 },
            ),
            (
                "scim2ldap_writer_running",
                "1 while the writer runs; 0 once it stopped (the daemon then exits)",
                if self.writer_running.load(Ordering::SeqCst) {
                    1.0
                } else {
                    0.0
                },
            ),
            (
                "scim2ldap_store_writable",
                "1 while the store flushes to disk; 0 once a flush failed (the daemon then exits)",
                if self.store.flush_error().is_none() {
                    1.0
                } else {
                    0.0
                },
            ),
        ]
    }
}

// The endpoints reach the writer and the adopter only through these two
// traits (`api` knows no LDAP); this is where they are wired.
impl crate::api::WriterSignal for WriterHandle {
    fn wake(&self) {
        WriterHandle::accepted(self)
    }
    fn directory_up(&self) -> bool {
        WriterHandle::directory_up(self)
    }
}

impl crate::api::Adoption for Adopter {
    fn before_list<'a>(
        &'a self,
        kind: crate::store::Kind,
        filter: Option<&'a str>,
        base_url: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(Adopter::before_list(self, kind, filter, base_url))
    }
}
