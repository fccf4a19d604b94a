//! What the daemon is doing, at a glance: the facts behind `scim2ldap
//! status`, the status page (`GET /status`, `/status.json` on the
//! operational listener) and the systemd `STATUS=` line.
//!
//! - [`Snapshot`]: the facts, with a stable JSON shape (`format` 1, see
//!   README "Is it working?"); [`collect`] reads them from the store, the
//!   writer's handle and the [`Monitor`] (the last two only while the
//!   daemon runs); [`Snapshot::text`] is the command's human form.
//! - `activity`: the last request per bearer token (the edge's one hook).
//! - `monitor`: the sampler task: directory up/down and since when, the
//!   per-minute history, adoptions over the last day, the `STATUS=` line.
//! - `history`: the bounded ring behind the charts.
//! - `page`: the HTML page with its inline SVG charts.
//! - `route`: `/status` and `/status.json` on the operational listener,
//!   through its extension point (`ops::Route`).
//!
//! Architecture invariant: reads the store and the writer's handle, never
//! writes either; knows no LDAP and no hyper (the operational listener
//! serves the pages it renders).

pub mod activity;
pub mod history;
pub mod monitor;
pub mod page;
pub mod route;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use activity::Activity;
pub use history::{History, Sample};
pub use monitor::Monitor;

use crate::store::{EntryState, Kind, Op, Store, StoreError};
use crate::writer::WriterHandle;

/// The shape's version: bumped only if a field changes meaning or goes.
/// New fields may appear within a version.
pub const FORMAT: u32 = 1;

/// At most this many parked entries are listed (all are counted).
pub const PARKED_SHOWN: usize = 100;

/// Everything `status` reports. Times are RFC 3339 (UTC), ages and
/// durations whole seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    /// The scim2ldap version that answered.
    pub version: String,
    pub generated_at: String,
    /// `false` when the command read the store itself (daemon stopped):
    /// then `directory`, `tokens` and `adoptions_last_day` are unknown.
    pub daemon_running: bool,
    pub started_at: Option<String>,
    pub uptime_secs: Option<u64>,
    pub directory: Directory,
    /// Entries not yet applied, parked ones not included.
    pub pending: u64,
    /// Entries the directory refused; they wait for `journal retry` or
    /// `journal skip`.
    pub parked: u64,
    pub oldest_pending: Option<EntryRef>,
    pub last_applied: Option<EntryRef>,
    /// The parked entries, oldest first (at most [`PARKED_SHOWN`]).
    pub parked_entries: Vec<ParkedEntry>,
    /// Last request per bearer token; `None` with the daemon stopped.
    pub tokens: Option<Vec<TokenSeen>>,
    /// Directory entries adopted in the last 24 hours (or since the daemon
    /// started, if later); `None` with the daemon stopped.
    pub adoptions_last_day: Option<Adoptions>,
}

/// Whether the writer reaches the directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directory {
    /// `up`, `down`, or `unknown` (the daemon is stopped).
    pub state: String,
    /// Since when it is in that state (the daemon's start at the latest).
    pub since: Option<String>,
}

/// One journal entry, named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryRef {
    pub seq: u64,
    /// `User` or `Group`.
    pub kind: String,
    pub id: String,
    /// userName of a user, displayName of a group ("" if unknown).
    pub name: String,
    /// When it was accepted (`oldest_pending`) or applied (`last_applied`).
    pub at: String,
    pub age_secs: Option<u64>,
}

/// A parked entry with the directory's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedEntry {
    pub seq: u64,
    pub kind: String,
    pub id: String,
    pub name: String,
    /// `upsert` or `delete`.
    pub op: String,
    pub accepted_at: String,
    pub parked_at: String,
    /// The LDAP result code, when the directory answered.
    pub ldap_code: Option<u32>,
    /// Its name (`objectClassViolation`), when the directory answered.
    pub ldap_result: Option<String>,
    pub message: String,
}

/// The last request made with one bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenSeen {
    /// The token's name in the config (which identity provider).
    pub name: String,
    /// `None`: no request with it since the daemon started.
    pub last_request_at: Option<String>,
    pub idle_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoptions {
    pub users: u64,
    pub groups: u64,
}

/// What a snapshot is read from: the store always; the writer's handle and
/// the monitor while the daemon runs.
pub struct Sources<'a> {
    pub store: &'a Store,
    pub writer: Option<&'a WriterHandle>,
    pub monitor: Option<&'a Monitor>,
}

/// Reads the facts. Walks the parked markers (keys only) and reads at most
/// [`PARKED_SHOWN`] + 2 journal entries; the counts are the store's own.
pub fn collect(src: &Sources<'_>) -> Result<Snapshot, StoreError> {
    let now = SystemTime::now();
    let store = src.store;
    let parked_seqs = store.parked()?;
    let q = store.queue_gauges()?;
    let all_pending = q.pending;
    let parked = parked_seqs.len() as u64;
    let parked_set: std::collections::HashSet<u64> = parked_seqs.iter().copied().collect();

    let oldest_pending = match first_unparked(store, &parked_set)? {
        Some(seq) => store.entry(seq)?.map(|e| EntryRef {
            seq,
            kind: e.kind.name().into(),
            name: resource_name(store, e.kind, &e.id, &e.snapshot),
            id: e.id,
            age_secs: age(&e.at, now),
            at: e.at,
        }),
        None => None,
    };
    let last_applied = match store.last_applied()? {
        Some(l) => {
            let snap = store.entry(l.seq)?.map(|e| e.snapshot).unwrap_or_default();
            Some(EntryRef {
                seq: l.seq,
                kind: l.kind.name().into(),
                name: resource_name(store, l.kind, &l.id, &snap),
                id: l.id,
                age_secs: age(&l.at, now),
                at: l.at,
            })
        }
        None => None,
    };
    let mut parked_entries = Vec::new();
    for &seq in parked_seqs.iter().take(PARKED_SHOWN) {
        let Some(e) = store.entry(seq)? else { continue };
        let EntryState::Failed(f) = store.state(seq)? else {
            continue;
        };
        parked_entries.push(ParkedEntry {
            seq,
            kind: e.kind.name().into(),
            name: resource_name(store, e.kind, &e.id, &e.snapshot),
            id: e.id,
            op: match e.op {
                Op::Upsert => "upsert",
                Op::Delete => "delete",
            }
            .into(),
            accepted_at: e.at,
            parked_at: f.at,
            ldap_code: f.code,
            ldap_result: f.code.map(|c| crate::writer::rc_name(c).to_string()),
            message: f.message,
        });
    }

    let monitor = src.monitor;
    let directory = match (src.writer, monitor) {
        (Some(w), m) => {
            let up = w.directory_up();
            Directory {
                state: if up { "up" } else { "down" }.into(),
                since: m.and_then(|m| m.directory_since(up)).map(rfc3339),
            }
        }
        (None, _) => Directory {
            state: "unknown".into(),
            since: None,
        },
    };
    let started = monitor.map(|m| m.activity.started());
    Ok(Snapshot {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").into(),
        generated_at: rfc3339(now),
        daemon_running: src.writer.is_some(),
        started_at: started.map(rfc3339),
        uptime_secs: started.map(|s| secs_between(s, now)),
        directory,
        pending: all_pending.saturating_sub(parked),
        parked,
        oldest_pending,
        last_applied,
        parked_entries,
        tokens: monitor.map(|m| {
            m.activity
                .tokens()
                .into_iter()
                .map(|(name, at)| TokenSeen {
                    name,
                    last_request_at: at.map(rfc3339),
                    idle_secs: at.map(|a| secs_between(a, now)),
                })
                .collect()
        }),
        adoptions_last_day: monitor.map(|m| m.adoptions_last_day(now)),
    })
}

/// The oldest pending entry that is not parked, looking at no more than
/// 10,000 pending markers (behind that many parked ones: none shown).
fn first_unparked(
    store: &Store,
    parked: &std::collections::HashSet<u64>,
) -> Result<Option<u64>, StoreError> {
    let mut after = 0;
    let mut looked = 0;
    while looked < 10_000 {
        let chunk = store.pending_after(after, 512)?;
        let Some(&last) = chunk.last() else {
            return Ok(None);
        };
        if let Some(s) = chunk.iter().find(|s| !parked.contains(s)) {
            return Ok(Some(*s));
        }
        looked += chunk.len();
        after = last;
    }
    Ok(None)
}

/// The resource's name: userName or displayName from the entry's snapshot,
/// else from the stored resource, else "".
fn resource_name(store: &Store, kind: Kind, id: &str, snapshot: &Value) -> String {
    let from = |v: &Value| {
        ["userName", "displayName"]
            .iter()
            .find_map(|k| crate::store::get_ci(v, k).and_then(Value::as_str))
            .map(str::to_string)
    };
    from(snapshot)
        .or_else(|| store.get(kind, id).ok().flatten().and_then(|v| from(&v)))
        .unwrap_or_default()
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn secs_between(earlier: SystemTime, later: SystemTime) -> u64 {
    later
        .duration_since(earlier)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Seconds from an RFC 3339 time to `now` (`None` if it does not parse).
fn age(at: &str, now: SystemTime) -> Option<u64> {
    humantime::parse_rfc3339_weak(at)
        .ok()
        .map(|t| secs_between(t, now))
}

/// "3m 12s", "2h 5m", "4d 1h": two units at most.
pub fn human_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

impl Snapshot {
    /// The short form for systemd's `STATUS=`.
    pub fn short(&self) -> String {
        short_line(self.pending, self.parked, self.directory.state == "up")
    }

    /// The command's human form.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let mut line = |k: &str, v: String| t.push_str(&format!("{k:<14} {v}\n"));
        let ago = |a: Option<u64>| a.map(|s| format!("{} ago", human_secs(s)));
        line(
            "scim2ldap",
            match (&self.started_at, self.uptime_secs) {
                (Some(s), Some(u)) => {
                    format!("{} running for {} (since {s})", self.version, human_secs(u))
                }
                _ => format!(
                    "{}: the daemon is not running (read from the store)",
                    self.version
                ),
            },
        );
        line(
            "directory",
            match (self.directory.state.as_str(), &self.directory.since) {
                ("up", Some(s)) => format!("reachable since {s}"),
                ("up", None) => "reachable".into(),
                ("down", Some(s)) => format!("UNREACHABLE since {s} (writes are queued)"),
                ("down", None) => "UNREACHABLE (writes are queued)".into(),
                _ => "not checked (the daemon is not running)".into(),
            },
        );
        line(
            "pending",
            match &self.oldest_pending {
                Some(o) => format!(
                    "{} (oldest: entry {}, {} {:?}, accepted {})",
                    self.pending,
                    o.seq,
                    o.kind,
                    o.name,
                    ago(o.age_secs).unwrap_or_else(|| o.at.clone())
                ),
                None => self.pending.to_string(),
            },
        );
        line(
            "parked",
            if self.parked == 0 {
                "0".into()
            } else {
                format!("{} (listed below)", self.parked)
            },
        );
        line(
            "last applied",
            match &self.last_applied {
                Some(l) => format!(
                    "entry {}, {} {:?}, {} ({})",
                    l.seq,
                    l.kind,
                    l.name,
                    ago(l.age_secs).unwrap_or_default(),
                    l.at
                ),
                None => "none yet".into(),
            },
        );
        if let Some(a) = &self.adoptions_last_day {
            line(
                "adoptions",
                format!("{} users, {} groups in the last day", a.users, a.groups),
            );
        }
        if let Some(tokens) = &self.tokens {
            t.push_str("\nlast request per token (identity provider):\n");
            if tokens.is_empty() {
                t.push_str("  no token configured\n");
            }
            for tok in tokens {
                t.push_str(&format!(
                    "  {:<20} {}\n",
                    tok.name,
                    match (&tok.last_request_at, tok.idle_secs) {
                        (Some(at), Some(i)) => format!("{} ago ({at})", human_secs(i)),
                        (Some(at), None) => at.clone(),
                        _ => "none since the daemon started".into(),
                    }
                ));
            }
        }
        if !self.parked_entries.is_empty() {
            t.push_str("\nparked entries (fix the cause, then `scim2ldap journal retry SEQ`; `journal show SEQ` for details):\n");
            t.push_str(&format!(
                "  {:<8} {:<6} {:<24} {:<24} {}\n",
                "SEQ", "KIND", "NAME", "LDAP RESULT", "MESSAGE"
            ));
            for p in &self.parked_entries {
                t.push_str(&format!(
                    "  {:<8} {:<6} {:<24} {:<24} {}\n",
                    p.seq,
                    p.kind,
                    p.name,
                    match (&p.ldap_result, p.ldap_code) {
                        (Some(r), Some(c)) => format!("{r} ({c})"),
                        _ => "-".into(),
                    },
                    p.message.lines().next().unwrap_or_default()
                ));
            }
            if (self.parked_entries.len() as u64) < self.parked {
                t.push_str(&format!(
                    "  ... and {} more: `scim2ldap journal list --state failed`\n",
                    self.parked - self.parked_entries.len() as u64
                ));
            }
        }
        t.trim_end().to_string()
    }
}

/// `3 pending, 1 parked, directory up`.
pub fn short_line(pending: u64, parked: u64, up: bool) -> String {
    format!(
        "{pending} pending, {parked} parked, directory {}",
        if up { "up" } else { "DOWN" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_administrator_says_them() {
        assert_eq!(human_secs(5), "5s");
        assert_eq!(human_secs(192), "3m 12s");
        assert_eq!(human_secs(7500), "2h 5m");
        assert_eq!(human_secs(90_000), "1d 1h");
    }

    #[test]
    fn a_store_with_applied_parked_and_pending_entries_reads_as_such() {
        let dir = std::env::temp_dir().join(format!("scim2ldap-status-{}", uuid::Uuid::new_v4()));
        let store = Store::open(&dir).unwrap();
        let mut seqs = Vec::new();
        for name in ["alice", "<b>bob</b>", "carol"] {
            let id = uuid::Uuid::new_v4().to_string();
            let mut r = serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name});
            seqs.push(
                store
                    .write(crate::store::Write {
                        kind: Kind::User,
                        id: &id,
                        resource: &mut r,
                        intent: crate::store::Intent::Create,
                        members: None,
                    })
                    .unwrap(),
            );
        }
        let first = store.entry(seqs[0]).unwrap().unwrap();
        store.mark_applied(&first, None).unwrap();
        store
            .mark_failed(
                seqs[1],
                &crate::store::Failure {
                    code: Some(65),
                    message: "object class violation: sn required".into(),
                    at: crate::store::now_rfc3339(),
                },
            )
            .unwrap();
        let s = collect(&Sources {
            store: &store,
            writer: None,
            monitor: None,
        })
        .unwrap();
        assert_eq!((s.pending, s.parked), (1, 1));
        assert!(!s.daemon_running);
        assert_eq!(s.directory.state, "unknown");
        assert_eq!(s.oldest_pending.as_ref().unwrap().name, "carol");
        let last = s.last_applied.as_ref().unwrap();
        assert_eq!((last.seq, last.name.as_str()), (seqs[0], "alice"));
        assert_eq!(store.applied_count(), 1);
        let p = &s.parked_entries[0];
        assert_eq!(p.name, "<b>bob</b>");
        assert_eq!(p.ldap_result.as_deref(), Some("objectClassViolation"));
        assert_eq!(s.short(), "1 pending, 1 parked, directory DOWN");
        let text = s.text();
        assert!(text.contains("objectClassViolation (65)"), "{text}");
        assert!(text.contains("not running"), "{text}");
        // The JSON round-trips: scripts read what the command wrote.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), s);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
