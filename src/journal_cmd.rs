//! `scim2ldap journal ...` and `scim2ldap import`: look at and repair the
//! journal, replay part of it, adopt a directory subtree.
//!
//! sled lets one process open the store, so while the daemon runs the
//! commands go through its admin channel: a Unix socket `admin/sock` in
//! the store directory (folder 0700, socket 0600: only the daemon's user
//! and root can use it), one JSON request line in, one JSON response line
//! out. When no
//! daemon answers there, the command opens the store itself; changes
//! (retry, skip, replay) then take effect when the daemon next starts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::adopt::Adopter;
use crate::config::Config;
use crate::store::{Change, EntryState, EntryView, Op, Store};
use crate::writer::WriterHandle;

/// The admin socket's path inside the store directory: a private (0700)
/// folder holding the socket, so that no other user can reach it even
/// for the moment between its creation and its chmod.
pub const SOCKET: &str = "admin/sock";

/// Longest request line the admin channel reads.
const MAX_REQUEST: usize = 64 * 1024;

/// The journal subcommands, as typed on the command line.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum JournalCmd {
    /// List journal entries, oldest first (the newest LIMIT that match).
    List {
        /// Only entries in this state: pending, failed (parked), applied, skipped.
        #[arg(long)]
        state: Option<StateFilter>,
        /// Only entries of this resource (its SCIM id, or its userName /
        /// displayName).
        #[arg(long)]
        resource: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one entry: state, LDAP result of a parked entry, the snapshot.
    Show { seq: u64 },
    /// Try a parked entry again (after fixing its cause).
    Retry {
        /// The entry's sequence number.
        #[arg(required_unless_present = "all_failed")]
        seq: Option<u64>,
        /// Every parked entry.
        #[arg(long, conflicts_with = "seq")]
        all_failed: bool,
    },
    /// Drop a pending or parked entry without applying it; the later
    /// entries of the same resource go ahead.
    Skip { seq: u64 },
    /// Apply entries again, in order, from SEQ on (e.g. after restoring an
    /// old backup of the directory). Applying an entry twice is harmless.
    Replay {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Counts: entries kept, pending, parked, resources, disk use.
    Stats,
    /// Compact the journal now with the configured retention.
    Compact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StateFilter {
    Pending,
    #[value(alias = "parked")]
    Failed,
    Applied,
    Skipped,
}

/// One admin request, as sent over the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    List {
        state: Option<StateFilter>,
        resource: Option<String>,
        limit: usize,
    },
    Show {
        seq: u64,
    },
    Retry {
        seq: Option<u64>,
        all_failed: bool,
    },
    Skip {
        seq: u64,
    },
    Replay {
        from: u64,
        to: Option<u64>,
    },
    Stats,
    /// The number of entries not yet applied (parked ones included), for
    /// scripts and the benchmark: cheaper than `stats`.
    Pending,
    Compact,
    Import,
}

impl From<JournalCmd> for Request {
    fn from(c: JournalCmd) -> Request {
        match c {
            JournalCmd::List {
                state,
                resource,
                limit,
            } => Request::List {
                state,
                resource,
                limit,
            },
            JournalCmd::Show { seq } => Request::Show { seq },
            JournalCmd::Retry { seq, all_failed } => Request::Retry { seq, all_failed },
            JournalCmd::Skip { seq } => Request::Skip { seq },
            JournalCmd::Replay { from, to } => Request::Replay { from, to },
            JournalCmd::Stats => Request::Stats,
            JournalCmd::Compact => Request::Compact,
        }
    }
}

/// The answer: text for the administrator, and whether it worked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub text: String,
}

impl Response {
    fn ok(text: impl Into<String>) -> Response {
        Response {
            ok: true,
            text: text.into(),
        }
    }
    fn fail(text: impl Into<String>) -> Response {
        Response {
            ok: false,
            text: text.into(),
        }
    }
}

/// What a request is run against: the daemon's parts, or a store the
/// command opened itself (then `writer` is `None`).
#[derive(Clone)]
pub struct AdminCtx {
    pub store: Store,
    pub writer: Option<WriterHandle>,
    pub adopter: Option<Arc<Adopter>>,
    pub retention: Option<std::time::Duration>,
}

impl AdminCtx {
    fn wake(&self) -> &'static str {
        match &self.writer {
            Some(w) => {
                w.wake();
                ""
            }
            None => "\n(the daemon is not running: it applies this when it starts)",
        }
    }
}

/// Runs one request.
pub async fn handle(ctx: &AdminCtx, req: Request) -> Response {
    match run_request(ctx, req).await {
        Ok(r) => r,
        Err(e) => Response::fail(format!("{e:#}")),
    }
}

async fn run_request(ctx: &AdminCtx, req: Request) -> anyhow::Result<Response> {
    let store = &ctx.store;
    Ok(match req {
        Request::List {
            state,
            resource,
            limit,
        } => {
            let mut rows: std::collections::VecDeque<EntryView> = Default::default();
            for e in store.entries_from(0) {
                let e = e?;
                if let Some(r) = &resource {
                    let name = display_name(&e.snapshot);
                    if &e.id != r && !name.eq_ignore_ascii_case(r) {
                        continue;
                    }
                }
                let v = store.view(e)?;
                if let Some(want) = state {
                    if state_filter(&v) != want {
                        continue;
                    }
                }
                rows.push_back(v);
                if rows.len() > limit {
                    rows.pop_front();
                }
            }
            if rows.is_empty() {
                Response::ok("no matching journal entries")
            } else {
                let mut waits = Vec::new();
                for v in &rows {
                    waits.push(match v.state {
                        EntryState::Pending => {
                            store.unapplied_before(v.entry.kind, &v.entry.id, v.entry.seq)?
                        }
                        _ => None,
                    });
                }
                Response::ok(list_text(rows.iter().zip(waits)))
            }
        }
        Request::Show { seq } => match store.entry(seq)? {
            None => Response::fail(no_entry(seq)),
            Some(e) => {
                let link = store.link(e.kind, &e.id)?;
                Response::ok(show_text(&store.view(e)?, link.as_ref()))
            }
        },
        Request::Retry { seq: _, all_failed } if all_failed => {
            let parked = store.parked()?;
            for &s in &parked {
                store.retry(s)?;
            }
            store.flush()?;
            let tail = ctx.wake();
            Response::ok(format!(
                "{} parked entr{} queued again{tail}",
                parked.len(),
                if parked.len() == 1 { "y" } else { "ies" }
            ))
        }
        Request::Retry { seq, .. } => {
            let Some(seq) = seq else {
                return Ok(Response::fail("give a SEQ or --all-failed"));
            };
            match store.retry(seq)? {
                Change::Done => {
                    store.flush()?;
                    let tail = ctx.wake();
                    Response::ok(format!("entry {seq} queued again{tail}"))
                }
                Change::NoSuchEntry => Response::fail(no_entry(seq)),
                Change::NotApplicable => Response::fail(format!(
                    "entry {seq} is not parked (it is {}); only parked entries are retried",
                    state_word(&store.view(store.entry(seq)?.context("entry vanished")?)?)
                )),
            }
        }
        Request::Skip { seq } => match store.skip(seq)? {
            Change::Done => {
                let tail = ctx.wake();
                Response::ok(format!(
                    "entry {seq} skipped: it will not be applied; later entries of the same resource go ahead{tail}"
                ))
            }
            Change::NoSuchEntry => Response::fail(no_entry(seq)),
            Change::NotApplicable => Response::fail(format!(
                "entry {seq} is already applied or skipped; nothing to skip"
            )),
        },
        Request::Replay { from, to } => {
            let to = to.unwrap_or(u64::MAX);
            if to < from {
                return Ok(Response::fail(format!("--to {to} is before --from {from}")));
            }
            let n = store.requeue(from, to)?;
            let tail = ctx.wake();
            let oldest = store.stats()?.oldest_seq;
            let note = match oldest {
                Some(o) if o > from => format!(
                    "\nnote: entries before {o} were compacted; the latest state of every resource is still among the kept entries"
                ),
                _ => String::new(),
            };
            Response::ok(format!(
                "{n} entr{} queued to be applied again, in order{note}{tail}",
                if n == 1 { "y" } else { "ies" }
            ))
        }
        // Counted up to 10,000 (shown as "10000+"): pollers only need to
        // know whether it is zero, and a full count walks the whole queue.
        Request::Pending => {
            let n = store.pending_count_capped(10_001);
            Response::ok(if n > 10_000 {
                "10000+".to_string()
            } else {
                n.to_string()
            })
        }
        Request::Stats => {
            let s = store.stats()?;
            let mut t = String::new();
            let line = |t: &mut String, k: &str, v: String| {
                t.push_str(&format!("{k:<18} {v}\n"));
            };
            line(&mut t, "last seq", s.last_seq.to_string());
            line(&mut t, "entries kept", s.entries.to_string());
            if let Some(o) = s.oldest_seq {
                line(
                    &mut t,
                    "oldest kept",
                    format!("{o} ({})", s.oldest_at.clone().unwrap_or_default()),
                );
            }
            line(&mut t, "pending", s.pending.to_string());
            line(&mut t, "parked", s.parked.to_string());
            line(&mut t, "skipped", s.skipped.to_string());
            line(&mut t, "users", s.users.to_string());
            line(&mut t, "groups", s.groups.to_string());
            line(&mut t, "linked entries", s.links.to_string());
            line(
                &mut t,
                "store size",
                format!("{:.1} MiB", s.size_on_disk as f64 / (1024.0 * 1024.0)),
            );
            line(
                &mut t,
                "retention",
                match ctx.retention {
                    Some(r) => humantime::format_duration(r).to_string(),
                    None => "keep everything".into(),
                },
            );
            line(
                &mut t,
                "last compaction",
                s.last_compaction.unwrap_or_else(|| "never".into()),
            );
            line(
                &mut t,
                "directory",
                match &ctx.writer {
                    Some(w) if w.directory_up() => "reachable".into(),
                    Some(_) => "UNREACHABLE (writes are queued)".into(),
                    None => "not checked (the daemon is not running)".into(),
                },
            );
            Response::ok(t.trim_end().to_string())
        }
        Request::Compact => match ctx.retention {
            None => Response::ok("store.retention_secs is 0: the journal is kept whole"),
            Some(r) => {
                let cutoff = std::time::SystemTime::now() - r;
                let rep = store.compact(cutoff)?;
                Response::ok(format!(
                    "removed {} applied entries older than {}, kept {}",
                    rep.removed,
                    humantime::format_duration(r),
                    rep.kept
                ))
            }
        },
        Request::Import => {
            let Some(adopter) = &ctx.adopter else {
                return Ok(Response::fail("import needs the mapping and the directory"));
            };
            let counts = adopter.import().await.map_err(anyhow::Error::msg)?;
            let mut t = String::new();
            for (kind, c) in counts {
                t.push_str(&format!(
                    "{}s: {} entries read, {} adopted, {} already linked, {} conflicting names, {} unusable\n",
                    kind.name(),
                    c.scanned,
                    c.adopted,
                    c.already_linked,
                    c.conflicts,
                    c.unusable
                ));
            }
            if t.is_empty() {
                t.push_str("nothing to import");
            }
            Response::ok(t.trim_end().to_string())
        }
    })
}

fn no_entry(seq: u64) -> String {
    format!("no journal entry {seq} (never written, or compacted away)")
}

fn state_filter(v: &EntryView) -> StateFilter {
    match (&v.state, &v.skipped) {
        (EntryState::Pending, _) => StateFilter::Pending,
        (EntryState::Failed(_), _) => StateFilter::Failed,
        (EntryState::Applied, Some(_)) => StateFilter::Skipped,
        (EntryState::Applied, None) => StateFilter::Applied,
    }
}

fn state_word(v: &EntryView) -> &'static str {
    match state_filter(v) {
        StateFilter::Pending => "pending",
        StateFilter::Failed => "failed",
        StateFilter::Applied => "applied",
        StateFilter::Skipped => "skipped",
    }
}

fn display_name(snapshot: &Value) -> String {
    ["userName", "displayName"]
        .iter()
        .find_map(|k| crate::store::get_ci(snapshot, k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_string()
}

fn op_word(op: Op) -> &'static str {
    match op {
        Op::Upsert => "upsert",
        Op::Delete => "delete",
    }
}

/// The list table; `waits` is the earlier unapplied entry of the same
/// resource a pending entry waits behind.
fn list_text<'a>(rows: impl Iterator<Item = (&'a EntryView, Option<u64>)>) -> String {
    let mut t = format!(
        "{:<8} {:<25} {:<8} {:<6} {:<5} {:<36} {}\n",
        "SEQ", "ACCEPTED", "STATE", "OP", "KIND", "ID", "NAME"
    );
    for (v, waits) in rows {
        let e = &v.entry;
        t.push_str(&format!(
            "{:<8} {:<25} {:<8} {:<6} {:<5} {:<36} {}\n",
            e.seq,
            e.at,
            state_word(v),
            op_word(e.op),
            e.kind.name(),
            e.id,
            display_name(&e.snapshot)
        ));
        if let EntryState::Failed(f) = &v.state {
            t.push_str(&format!("         └ {}\n", f.message));
        }
        if let Some(w) = waits {
            t.push_str(&format!(
                "         └ waits behind entry {w} of the same resource\n"
            ));
        }
    }
    t.trim_end().to_string()
}

fn show_text(v: &EntryView, link: Option<&crate::store::Link>) -> String {
    let e = &v.entry;
    let mut t = String::new();
    t.push_str(&format!("seq:        {}\n", e.seq));
    t.push_str(&format!("accepted:   {}\n", e.at));
    t.push_str(&format!(
        "resource:   {} {} ({})\n",
        e.kind.name(),
        e.id,
        display_name(&e.snapshot)
    ));
    t.push_str(&format!("operation:  {}\n", op_word(e.op)));
    match (&v.state, &v.skipped) {
        (EntryState::Failed(f), _) => {
            t.push_str(&format!("state:      failed (parked) since {}\n", f.at));
            t.push_str(&format!("error:      {}\n", f.message));
            if let Some(c) = f.code {
                t.push_str(&format!(
                    "ldap code:  {c} ({})\n",
                    crate::writer::rc_name(c)
                ));
            }
            t.push_str(&format!(
                "next:       fix the cause (mapping, directory schema or access rights), then `scim2ldap journal retry {}`; or `scim2ldap journal skip {}` to drop it\n",
                e.seq, e.seq
            ));
        }
        (EntryState::Pending, _) => t.push_str("state:      pending\n"),
        (EntryState::Applied, Some(at)) => t.push_str(&format!("state:      skipped at {at}\n")),
        (EntryState::Applied, None) => t.push_str("state:      applied\n"),
    }
    match link {
        Some(l) => t.push_str(&format!(
            "directory:  {}{}\n",
            l.dn,
            l.uuid
                .as_deref()
                .map(|u| format!(" (stable id {u})"))
                .unwrap_or_default()
        )),
        None => t.push_str("directory:  not linked\n"),
    }
    let mut snap = e.snapshot.clone();
    if let Some(o) = snap.as_object_mut() {
        let keys: Vec<String> = o
            .keys()
            .filter(|k| k.eq_ignore_ascii_case("password"))
            .cloned()
            .collect();
        for k in keys {
            o.insert(k, Value::String("(not shown)".into()));
        }
    }
    t.push_str("snapshot:\n");
    t.push_str(&serde_json::to_string_pretty(&snap).unwrap_or_default());
    t
}

// ---- the daemon's side: the admin socket ------------------------------------

/// The socket path for a store directory.
pub fn socket_path(store_dir: &Path) -> PathBuf {
    store_dir.join(SOCKET)
}

/// Serves the admin socket until `stop` turns true; removes it then.
pub async fn serve_admin(path: PathBuf, ctx: AdminCtx, mut stop: watch::Receiver<bool>) {
    if let Some(parent) = path.parent() {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent);
        let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700));
    }
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot open the admin socket: `scim2ldap journal` will not work while the daemon runs");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            warn!(path = %path.display(), error = %e, "cannot restrict the admin socket to the daemon's user");
        }
    }
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move { admin_connection(stream, ctx).await });
            }
            Err(e) => {
                warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn admin_connection(stream: tokio::net::UnixStream, ctx: AdminCtx) {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = String::new();
    let resp = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => {
                info!(request = ?req, "admin request");
                handle(&ctx, req).await
            }
            Err(e) => Response::fail(format!("bad admin request: {e}")),
        },
        Err(e) => Response::fail(format!("reading the admin request: {e}")),
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
    let _ = write.shutdown().await;
}

// ---- the command's side -----------------------------------------------------

/// Runs a request for the command line: through the daemon's admin socket
/// when it answers, else against the store opened here. Prints the
/// answer; an error carries the text of a failed request.
pub fn run(config_path: &Path, req: Request) -> anyhow::Result<()> {
    let cfg = Config::load(config_path)?;
    let sock = socket_path(&cfg.store.path);
    let resp = match std::os::unix::net::UnixStream::connect(&sock) {
        Ok(stream) => via_socket(stream, &req)
            .with_context(|| format!("talking to the daemon over {}", sock.display()))?,
        Err(_) => direct(&cfg, req, &sock)?,
    };
    if resp.ok {
        println!("{}", resp.text);
        Ok(())
    } else {
        Err(anyhow::Error::msg(resp.text))
    }
}

fn via_socket(
    mut stream: std::os::unix::net::UnixStream,
    req: &Request,
) -> anyhow::Result<Response> {
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.trim().is_empty() {
        anyhow::bail!("the daemon closed the connection without answering; see its log");
    }
    Ok(serde_json::from_str(answer.trim())?)
}

fn direct(cfg: &Config, req: Request, sock: &Path) -> anyhow::Result<Response> {
    // `import` may start a store; the other commands need an existing one
    // (a typo in store.path must not look like an empty journal).
    if !matches!(req, Request::Import) && !cfg.store.path.join("db").exists() {
        anyhow::bail!(
            "no store in {} (store.path in {}): has the daemon run with this configuration?",
            cfg.store.path.display(),
            cfg.file.display()
        );
    }
    let store = Store::open_with_cache(&cfg.store.path, cfg.store.cache_bytes).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the store in {} ({e}).\nIf the daemon is running, its admin socket {} did not answer: check that you run this as the daemon's user (or root) and that the daemon has started; otherwise stop the daemon and try again.",
            cfg.store.path.display(),
            sock.display()
        )
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let adopter = match &req {
        Request::Import => {
            let model = crate::model::Model::load(&cfg.mapping_file).map_err(anyhow::Error::msg)?;
            Some(Arc::new(Adopter::new(
                store.clone(),
                crate::model::SharedModel::new(model),
                &cfg.ldap,
                None,
                cfg.server
                    .public_url
                    .as_ref()
                    .map(|u| format!("{u}{}", cfg.server.base_path)),
            )))
        }
        _ => None,
    };
    let ctx = AdminCtx {
        store: store.clone(),
        writer: None,
        adopter,
        retention: cfg.store.retention,
    };
    let resp = rt.block_on(handle(&ctx, req));
    drop(ctx);
    store.flush()?;
    Ok(resp)
}
