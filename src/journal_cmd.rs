//! `scim2ldap journal ...`, `import` and `status` on the command line:
//! the subcommands as typed, sent through the daemon's admin socket when it
//! answers, else run against the store opened here (sled lets one process
//! open the store; changes such as retry, skip and replay then take effect
//! when the daemon next starts).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use crate::admin::{
    handle_with_progress, socket_path, AdminCtx, AdminError, Progress, ProgressLine, Request,
    Response, StateFilter,
};
use crate::adopt::Adopter;
use crate::config::Config;
use crate::store::Store;

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

/// Runs a request for the command line: through the daemon's admin socket
/// when it answers, else against the store opened here. Prints the
/// answer; an error carries the text of a failed request.
pub fn run(config_path: &Path, req: Request) -> Result<(), AdminError> {
    let text = ask(config_path, req)?;
    println!("{text}");
    Ok(())
}

/// Sends `req` (through the socket, else to the store opened here) and
/// returns the answer's text; a failed request is an error. `import`,
/// `journal compact` and `journal replay` show their progress on stderr:
/// a bar on a terminal, a line every 5 s otherwise.
fn ask(config_path: &Path, req: Request) -> Result<String, AdminError> {
    let cfg = Config::load(config_path)?;
    let sock = socket_path(&cfg.store.path);
    let req = match req {
        Request::Import | Request::Compact | Request::Replay { .. } => Request::Progress {
            request: Box::new(req),
        },
        req => req,
    };
    let view = ProgressView::new();
    let resp = match std::os::unix::net::UnixStream::connect(&sock) {
        Ok(stream) => via_socket(stream, &req, &sock, &view)?,
        Err(_) => direct(&cfg, req, &sock, &view)?,
    };
    view.finish();
    if resp.ok {
        Ok(resp.text)
    } else {
        Err(AdminError::Refused(resp.text))
    }
}

/// `scim2ldap status [--json]`: what the daemon is doing (through its
/// socket), or what the store says when it is stopped. `--json` prints
/// the [`crate::status::Snapshot`] as one JSON document.
pub fn status(config_path: &Path, json: bool) -> Result<(), AdminError> {
    let text = ask(config_path, Request::Status)?;
    let snapshot: crate::status::Snapshot =
        serde_json::from_str(&text).map_err(|e| {
            AdminError::Refused(format!(
                "the daemon answered `status` with something else ({e}): is it an older scim2ldap? `journal stats` works with every version"
            ))
        })?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&snapshot).unwrap_or_default()
        );
    } else {
        println!("{}", snapshot.text());
    }
    Ok(())
}

fn via_socket(
    mut stream: std::os::unix::net::UnixStream,
    req: &Request,
    sock: &Path,
    view: &ProgressView,
) -> Result<Response, AdminError> {
    let io = |source| AdminError::Socket {
        path: sock.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_vec(req).expect("a request serializes");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    loop {
        answer.clear();
        reader.read_line(&mut answer).map_err(io)?;
        match serde_json::from_str::<ProgressLine>(answer.trim()) {
            Ok(p) => view.show(&p.progress),
            Err(_) => break,
        }
    }
    if answer.trim().is_empty() {
        return Err(AdminError::NoAnswer(sock.to_path_buf()));
    }
    serde_json::from_str(answer.trim()).map_err(|source| AdminError::BadAnswer {
        path: sock.to_path_buf(),
        source,
    })
}

fn direct(
    cfg: &Config,
    req: Request,
    sock: &Path,
    view: &ProgressView,
) -> Result<Response, AdminError> {
    let inner = match &req {
        Request::Progress { request } => request.as_ref(),
        req => req,
    };
    let import = matches!(inner, Request::Import);
    // `import` may start a store; the other commands need an existing one
    // (a typo in store.path must not look like an empty journal).
    if !import && !cfg.store.path.join("db").exists() {
        return Err(AdminError::NoStore {
            store: cfg.store.path.clone(),
            config: cfg.file.clone(),
        });
    }
    let store =
        Store::open_with_cache(&cfg.store.path, cfg.store.cache_bytes).map_err(|source| {
            AdminError::OpenStore {
                store: cfg.store.path.clone(),
                socket: sock.to_path_buf(),
                source,
            }
        })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AdminError::Runtime)?;
    let adopter = match import {
        true => {
            let model =
                crate::model::Model::load(&cfg.mapping_file).map_err(AdminError::Mapping)?;
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
        false => None,
    };
    let ctx = AdminCtx {
        store: store.clone(),
        writer: None,
        adopter,
        retention: cfg.store.retention,
        monitor: None,
    };
    let resp = rt.block_on(handle_with_progress(&ctx, req, &|p| view.show(&p)));
    drop(ctx);
    store.flush()?;
    Ok(resp)
}

/// Shows progress on stderr: an `indicatif` bar (or a spinner when the end
/// is not known) on a terminal, else a plain line every 5 s, so that logs
/// of a scripted run show it moving without a line per entry.
struct ProgressView {
    terminal: bool,
    state: std::sync::Mutex<ViewState>,
}

#[derive(Default)]
struct ViewState {
    what: String,
    bar: Option<indicatif::ProgressBar>,
    last_line: Option<std::time::Instant>,
    last: Option<Progress>,
    /// The last progress has been printed (plain lines).
    printed: bool,
}

impl ProgressView {
    fn new() -> ProgressView {
        use std::io::IsTerminal;
        ProgressView {
            terminal: std::io::stderr().is_terminal(),
            state: Default::default(),
        }
    }

    fn show(&self, p: &Progress) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.what != p.what {
            match s.bar.take() {
                Some(b) => b.finish(),
                None if !s.printed => Self::line(&s),
                None => {}
            }
            s.what = p.what.clone();
            s.last_line = None;
        }
        s.last = Some(p.clone());
        s.printed = false;
        if self.terminal {
            let bar = s.bar.get_or_insert_with(|| {
                let b = match p.total {
                    Some(t) => indicatif::ProgressBar::new(t).with_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    ),
                    None => indicatif::ProgressBar::new_spinner().with_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} {msg}: {pos} entries ({per_sec})",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    ),
                };
                b.set_message(p.what.clone());
                b.enable_steady_tick(std::time::Duration::from_millis(200));
                b
            });
            bar.set_position(p.done);
        } else if s
            .last_line
            .is_none_or(|l| l.elapsed() >= std::time::Duration::from_secs(5))
        {
            s.last_line = Some(std::time::Instant::now());
            Self::line(&s);
            s.printed = true;
        }
    }

    /// The plain line for the last progress seen (not on a terminal).
    fn line(s: &ViewState) {
        if let Some(p) = &s.last {
            match p.total {
                Some(t) if t > 0 => eprintln!("{}: {}/{t} ({}%)", p.what, p.done, p.done * 100 / t),
                _ => eprintln!("{}: {} entries", p.what, p.done),
            }
        }
    }

    /// Ends the bar, or prints the last line.
    fn finish(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.bar.take() {
            Some(b) => b.finish(),
            None if !s.printed => Self::line(&s),
            None => {}
        }
    }
}
