//! Runs admin requests against the daemon's parts (or a store the command
//! line opened itself): list, show, retry, skip, replay, stats, compact,
//! import, status.
//!
//! Architecture invariant: no sockets here; the server and the command
//! line both call [`handle`].

use std::sync::Arc;

use serde_json::Value;

use super::protocol::{Progress, Request, Response, StateFilter};
use super::AdminError;
use crate::adopt::Adopter;
use crate::store::{Change, EntryState, EntryView, Op, Store};
use crate::writer::WriterHandle;

/// What a request is run against: the daemon's parts, or a store the
/// command opened itself (then `writer` is `None`).
#[derive(Clone)]
pub struct AdminCtx {
    pub store: Store,
    pub writer: Option<WriterHandle>,
    pub adopter: Option<Arc<Adopter>>,
    pub retention: Option<std::time::Duration>,
    /// What the status sampler has seen (the daemon only).
    pub monitor: Option<Arc<crate::status::Monitor>>,
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
    handle_with_progress(ctx, req, &|_| {}).await
}

/// Runs one request; a [`Request::Progress`] reports to `sink` as it goes
/// (at most five times a second, and at the end).
pub async fn handle_with_progress(
    ctx: &AdminCtx,
    req: Request,
    sink: &(dyn Fn(Progress) + Sync),
) -> Response {
    let (req, throttle) = match req {
        Request::Progress { request } => (*request, Some(Throttle::new(sink))),
        req => (req, None),
    };
    match run_request(ctx, req, throttle.as_ref()).await {
        Ok(r) => r,
        Err(e) => Response::fail(e.to_string()),
    }
}

/// Passes progress on at most every 200 ms (and always the last step).
struct Throttle<'a> {
    sink: &'a (dyn Fn(Progress) + Sync),
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl<'a> Throttle<'a> {
    fn new(sink: &'a (dyn Fn(Progress) + Sync)) -> Throttle<'a> {
        Throttle {
            sink,
            last: std::sync::Mutex::new(None),
        }
    }

    fn report(&self, what: &str, done: u64, total: Option<u64>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|l| l.elapsed() >= std::time::Duration::from_millis(200));
        if due || Some(done) == total {
            *last = Some(std::time::Instant::now());
            (self.sink)(Progress {
                what: what.to_string(),
                done,
                total,
            });
        }
    }
}

/// Entries from `from` to `to` still pending and not parked.
fn waiting_in(store: &Store, from: u64, to: u64) -> Result<u64, AdminError> {
    let parked: std::collections::HashSet<u64> = store.parked()?.into_iter().collect();
    let mut after = from.saturating_sub(1);
    let mut n = 0;
    loop {
        let chunk = store.pending_after(after, 4096)?;
        let Some(&last) = chunk.last() else { break };
        n += chunk
            .iter()
            .filter(|s| **s <= to && !parked.contains(s))
            .count() as u64;
        if last >= to {
            break;
        }
        after = last;
    }
    Ok(n)
}

async fn run_request(
    ctx: &AdminCtx,
    req: Request,
    progress: Option<&Throttle<'_>>,
) -> Result<Response, AdminError> {
    let store = &ctx.store;
    Ok(match req {
        // Not nested: the inner request of a progress request runs plainly.
        Request::Progress { request } => Box::pin(run_request(ctx, *request, progress)).await?,
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
                    state_word(&store.view(store.entry(seq)?.ok_or(AdminError::Vanished(seq))?)?)
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
            // Asked for progress, with the daemon running: watch the
            // entries being applied, until they are or the directory is
            // unreachable (then the daemon goes on when it is back).
            let mut watched = String::new();
            if let (Some(p), Some(w), true) = (progress, &ctx.writer, n > 0) {
                let what = "applying the replayed entries";
                loop {
                    let waiting = waiting_in(store, from, to)?;
                    p.report(what, (n as u64).saturating_sub(waiting), Some(n as u64));
                    if waiting == 0 {
                        p.report(what, n as u64, Some(n as u64));
                        break;
                    }
                    if !w.directory_up() {
                        watched = format!("\nthe directory is unreachable: {waiting} of them wait, and are applied when it is back");
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            let oldest = store.stats()?.oldest_seq;
            let note = match oldest {
                Some(o) if o > from => format!(
                    "\nnote: entries before {o} were compacted; the latest state of every resource is still among the kept entries"
                ),
                _ => String::new(),
            };
            Response::ok(format!(
                "{n} entr{} queued to be applied again, in order{note}{watched}{tail}",
                if n == 1 { "y" } else { "ies" }
            ))
        }
        // O(1), as pollers ask it often (every few milliseconds while a
        // backlog drains; counting the queue cost the daemon a sixth of
        // its CPU then): zero exactly, by one seek for the first pending
        // entry; otherwise the queue's counter (at least 1).
        Request::Pending => {
            let g = store.queue_gauges()?;
            let n = match g.oldest_pending {
                None => 0,
                Some(_) => g.pending.max(1),
            };
            Response::ok(n.to_string())
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
        Request::Status => {
            let snapshot = crate::status::collect(&crate::status::Sources {
                store,
                writer: ctx.writer.as_ref(),
                monitor: ctx.monitor.as_deref(),
            })?;
            Response::ok(serde_json::to_string(&snapshot).unwrap_or_default())
        }
        Request::Compact => match ctx.retention {
            None => Response::ok("store.retention_secs is 0: the journal is kept whole"),
            Some(r) => {
                let cutoff = std::time::SystemTime::now() - r;
                let rep = store.compact_with_progress(cutoff, &|done, total| {
                    if let Some(p) = progress {
                        p.report("compacting the journal", done, Some(total));
                    }
                })?;
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
            let counts = adopter
                .import_with_progress(&|kind, n| {
                    if let Some(p) = progress {
                        p.report(
                            &format!("importing {}s", kind.name().to_ascii_lowercase()),
                            n as u64,
                            None,
                        );
                    }
                })
                .await
                .map_err(AdminError::Import)?;
            let mut t = String::new();
            for (kind, c) in counts {
                if c.off {
                    t.push_str(&format!(
                        "{}s: adoption is off in the mapping ([{}.adopt] enabled = false); nothing imported\n",
                        kind.name(),
                        kind.name().to_ascii_lowercase()
                    ));
                    continue;
                }
                if c.refused > 0 {
                    t.push_str(&format!(
                        "{}s: {} entries on the adopt table's never list left alone\n",
                        kind.name(),
                        c.refused
                    ));
                }
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
