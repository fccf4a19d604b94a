//! Puts the parts together: opens the store, loads the mapping, starts the
//! writer and the HTTP edge, and stops them in order. `main` only parses
//! the command line and waits for signals; tests call [`start`] with a
//! listener bound to port 0.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::adopt::Adopter;
use crate::api::Api;
use crate::config::Config;
use crate::http::Edge;
use crate::journal_cmd::AdminCtx;
use crate::metrics::{Metrics, Probe};
use crate::model::{MappingPlanner, Model, SharedModel};
use crate::store::Store;
use crate::writer::{Writer, WriterHandle};

/// A running daemon.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    pub writer: WriterHandle,
    pub model: SharedModel,
    pub edge: Arc<Edge>,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    writer_task: JoinHandle<()>,
    /// The admin socket and the compactor.
    background: Vec<JoinHandle<()>>,
}

/// Starts serving on `listener` with `config`.
pub async fn start(config: &Config, listener: TcpListener) -> anyhow::Result<Running> {
    let model = Model::load(&config.mapping_file).map_err(anyhow::Error::msg)?;
    let model = SharedModel::new(model);
    let store = Store::open_with_cache(&config.store.path, config.store.cache_bytes).with_context(
        || {
            format!(
                "opening the store in {} (store.path)",
                config.store.path.display()
            )
        },
    )?;
    let (stop, stop_rx) = watch::channel(false);

    let planner = Arc::new(MappingPlanner {
        model: model.clone(),
        store: store.clone(),
    });
    let tls = match &config.server.tls {
        Some(files) => Some(Arc::new(
            crate::tls::Acceptor::load(files)
                .map_err(|e| anyhow::anyhow!("server.tls_cert / tls_key: {e}"))?,
        )),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let (mut writer, writer_handle) = Writer::new(store.clone(), planner, config.ldap.clone());
    writer.set_metrics(metrics.clone());
    let writer_stop = stop_rx.clone();
    let writer_task = tokio::spawn(async move {
        if let Err(e) = writer.run(writer_stop).await {
            error!(error = %e, "the writer stopped: the store failed; restart the daemon");
        }
    });

    let adopter = Arc::new(Adopter::new(
        store.clone(),
        model.clone(),
        &config.ldap,
        Some(writer_handle.clone()),
        config
            .server
            .public_url
            .as_ref()
            .map(|u| format!("{u}{}", config.server.base_path)),
    ));
    let admin_ctx = AdminCtx {
        store: store.clone(),
        writer: Some(writer_handle.clone()),
        adopter: Some(adopter.clone()),
        retention: config.store.retention,
    };
    let admin = tokio::spawn(crate::journal_cmd::serve_admin(
        crate::journal_cmd::socket_path(&config.store.path),
        admin_ctx,
        stop_rx.clone(),
    ));
    let compactor = tokio::spawn(compact_periodically(
        store.clone(),
        config.store.retention,
        stop_rx.clone(),
    ));

    let api = Api {
        store: store.clone(),
        model: model.clone(),
        writer: writer_handle.clone(),
        reject_when_down: config.ldap.when_down == crate::config::WhenDirectoryDown::Reject,
        adopter: Some(adopter),
    };
    let probe = Arc::new(DaemonProbe {
        store: store.clone(),
        writer: writer_handle.clone(),
        queue: config.ldap.when_down == crate::config::WhenDirectoryDown::Queue,
    });
    let edge = Arc::new(
        Edge::new(api, config.server.clone(), config.tokens.clone())
            .with_service(metrics, probe, tls),
    );
    let addr = listener.local_addr()?;
    let mut http_stop = stop_rx;
    let http = tokio::spawn(crate::http::serve(listener, edge.clone(), async move {
        let _ = http_stop.wait_for(|s| *s).await;
    }));
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!(%addr, scheme, dry_run = config.ldap.dry_run, base = %config.server.base_path, store = %config.store.path.display(), directory = %config.ldap.url, "scim2ldap is serving");
    Ok(Running {
        addr,
        store,
        writer: writer_handle,
        model,
        edge,
        stop,
        http,
        writer_task,
        background: vec![admin, compactor],
    })
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
    /// Re-reads the mapping and the tokens; on any error keeps the old ones.
    pub fn reload(&self, config_path: &std::path::Path) -> anyhow::Result<()> {
        let config = Config::load(config_path)?;
        let model = Model::load(&config.mapping_file).map_err(anyhow::Error::msg)?;
        // Check the certificate before swapping anything, so that a bad
        // reload changes nothing.
        let tls = match (&self.edge.tls, &config.server.tls) {
            (Some(_), Some(files)) => Some(
                crate::tls::server_config(files)
                    .map_err(|e| anyhow::anyhow!("server.tls_cert / tls_key: {e}"))?,
            ),
            (None, None) => None,
            _ => anyhow::bail!(
                "turning HTTPS on or off (server.tls_cert) needs a restart, not a reload"
            ),
        };
        if let (Some(acceptor), Some(tls)) = (&self.edge.tls, tls) {
            acceptor.install(tls);
        }
        self.model.replace(model);
        *self.edge.tokens.write().unwrap_or_else(|p| p.into_inner()) = config.tokens;
        self.writer.wake();
        Ok(())
    }

    /// Stops accepting requests, lets in-flight ones finish, then stops the
    /// writer after the entry it is applying.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.http.await;
        let _ = self.writer_task.await;
        for t in self.background {
            let _ = t.await;
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
}

/// Parked entries are counted by scanning the pending ones; beyond this
/// many the gauge stops counting.
const PARKED_SCAN_LIMIT: usize = 100_000;

impl Probe for DaemonProbe {
    fn readiness(&self) -> Result<(), String> {
        if self.writer.directory_up() || self.queue {
            Ok(())
        } else {
            Err("the directory cannot be reached and ldap.when_down = \"reject\"".into())
        }
    }

    fn gauges(&self) -> Vec<(&'static str, &'static str, f64)> {
        let parked = self
            .store
            .pending_after(0, PARKED_SCAN_LIMIT)
            .map(|seqs| {
                seqs.into_iter()
                    .filter(|s| {
                        matches!(
                            self.store.state(*s),
                            Ok(crate::store::EntryState::Failed(_))
                        )
                    })
                    .count()
            })
            .unwrap_or(0);
        vec![
            (
                "scim2ldap_journal_pending",
                "Journal entries not yet applied to the directory (parked ones included).",
                self.store.pending_count() as f64,
            ),
            (
                "scim2ldap_journal_parked",
                "Journal entries the directory refused; see `scim2ldap journal`.",
                parked as f64,
            ),
            (
                "scim2ldap_directory_up",
                "1 while the writer can reach the directory.",
                if self.writer.directory_up() { 1.0 } else { 0.0 },
            ),
        ]
    }
}
