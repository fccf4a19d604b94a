//! The store (sled): the journal of accepted operations, the current SCIM
//! snapshot of every resource, its indexes, and the link from each SCIM id
//! to its directory entry.
//!
//! Everything lives in one sled tree under one-byte key prefixes (the table
//! is in `keys.rs`), so that one accepted write — snapshot, index changes,
//! journal entry and pending marker — is one atomic `apply_batch`. A write
//! is acknowledged only after [`Store::commit`] has seen it flushed to
//! disk; concurrent writers share one flush (group commit).
//!
//! The parts:
//! - `keys.rs`: the key encodings, with the whole key table;
//! - `commit.rs`: group commit, the flusher thread;
//! - `resources.rs`: snapshots, indexes and uniqueness, allocation, listing
//!   and paging, and [`Store::write`] / [`Store::delete`];
//! - `members.rs`: a group's members (`M` / `B` keys) and member changes;
//! - `journal.rs`: journal entries and their state (pending, parked,
//!   skipped), retry, requeue, compaction, stats;
//! - `links.rs`: links to directory entries, the stable-id index, adoption;
//! - `secrets.rs`: the passwords of pending entries, held in files beside
//!   sled until the entry is applied.
//! - `applied.rs`: the last entry applied, and a count since opening.
//!
//! This file holds the `Store` handle, opening, and the errors.
//!
//! Architecture invariant: the store knows SCIM JSON and journal entries,
//! never LDAP, HTTP or the mapping.

mod applied;
mod commit;
mod journal;
mod keys;
mod links;
mod members;
mod queue;
mod resources;
mod secrets;
mod spill;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{de::DeserializeOwned, Serialize};

/// The two SCIM resource types, from the core; how keys spell them is
/// `keys::KindByte`.
pub use crate::scim::Kind;
pub use applied::LastApplied;
pub use journal::{
    Change, CompactReport, EntryState, EntryView, Failure, JournalEntry, MemberChange, Op,
    Password, Stats,
};
pub use links::{Applied, Fnv, Link};
pub use members::MemberOps;
pub use queue::QueueGauges;
pub use resources::{get_ci, version_of, IndexDef, Intent, Matching, Write, RDN_KEY};

/// The store's page cache unless the config says otherwise. 8 MiB: with
/// 100,000 users a store alone holds about 47-59 MiB resident with it,
/// against about 83 MiB with 32 MiB (sled's own accounting undercounts
/// what its cached pages take in memory).
pub const DEFAULT_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Bumped whenever the on-disk layout changes incompatibly. Version 1
/// (index keys lowercased) is opened and migrated: its indexes are rebuilt.
/// Version 2 (every journal entry carried its full snapshot) is opened and
/// migrated: an Upsert entry of a resource that exists refers to the
/// resource's snapshot instead. A store of a later version is refused, so
/// an older daemon never reads a layout it does not understand.
pub const FORMAT_VERSION: u32 = 3;

/// How the `i` index keys are computed; with the RFC 4518 tables' version
/// it is recorded under `mindex`, and any change rebuilds the indexes.
pub const INDEX_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record that does not decode.
    #[error("store: corrupt record {record}: {detail}")]
    Corrupt { record: String, detail: String },
    /// A value that does not encode.
    #[error("store: cannot encode {what}: {detail}")]
    Encode { what: String, detail: String },
    #[error(
        "store at {path} has format version {found}, this scim2ldap reads version {FORMAT_VERSION}"
    )]
    Version { path: String, found: String },
    #[error("store: cannot start the flusher thread: {0}")]
    FlusherStart(std::io::Error),
    #[error("store: flushing to disk failed: {0}")]
    FlushFailed(String),
    #[error("store: the flusher thread has stopped")]
    FlusherGone,
    /// A pending password's file could not be written, read or removed.
    #[error("store: password file {path}: {source}")]
    Secret {
        path: String,
        source: std::io::Error,
    },
    /// The writer's lanes have all stopped, so no report will come (raised
    /// by the writer, which reports through the store's error type).
    #[error("writer: every lane stopped")]
    WriterStopped,
    /// A writer lane panicked (reported by the lane's guard, so that the
    /// dispatcher stops instead of waiting for the lane's report).
    #[error("writer: lane {lane} panicked: {message}")]
    LanePanicked { lane: usize, message: String },
}

/// A write refused by the store's own rules.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A unique attribute's value is held by another resource.
    #[error("{attr} {value:?} is already used by another {kind}")]
    Taken {
        kind: &'static str,
        attr: &'static str,
        value: String,
    },
    /// Adoption of a directory entry that is linked to another id already.
    #[error("entry {dn:?} is already linked to {kind} {linked_to}")]
    AlreadyLinked {
        kind: &'static str,
        dn: String,
        linked_to: String,
    },
    /// A create (or adoption) with an id the store holds already.
    #[error("{kind} {id} exists already")]
    IdExists { kind: &'static str, id: String },
    /// An update or delete of an id the store does not hold.
    #[error("no such resource")]
    NotFound,
    /// An update or delete conditioned on a version the resource is no
    /// longer at.
    #[error("version mismatch: the resource is at {current}")]
    VersionMismatch { current: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A handle on the store; clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// First, so that it is dropped (the flusher stopped and joined) before
    /// the rest.
    flusher: commit::Flusher,
    db: sled::Db,
    tree: sled::Tree,
    /// The last seq assigned. Serialises seq allocation, the
    /// read-check-write of uniqueness, and requeue against compaction.
    write_lock: Mutex<u64>,
    /// Counts and page cursors for listing without a filter.
    listing: Mutex<resources::Listing>,
    /// Passwords of pending entries, outside sled.
    secrets: secrets::Secrets,
    /// Pending and parked counts for `/metrics`, kept where `q` and `f`
    /// keys are written.
    queue: queue::QueueCounts,
    /// Entries marked applied since opening (`applied.rs`).
    applied: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (or creates) the store in `path` and starts its flusher thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store with a page cache of `cache_bytes` (sled's default,
    /// 1 GiB, would let the daemon's memory grow with the data).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None);
        // sled's file lock is released when its last background write of
        // the closed store has ended, a moment after the store is dropped:
        // a reopen in the same process (a restart, a test) waits for it,
        // up to a second. Another process holding it is still an error.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock") =>
                {
                    tries += 1;
                    if tries > 50 {
                        return Err(sled::Error::Io(e).into());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r?,
            }
        };
        let tree = db.open_tree("scim2ldap")?;
        match tree.get(keys::META_FORMAT)? {
            None => {
                tree.insert(keys::META_FORMAT, FORMAT_VERSION.to_string().as_bytes())?;
                tree.flush()?;
            }
            Some(v) if v.as_ref() == FORMAT_VERSION.to_string().as_bytes() => {}
            // Version 1 differs from 2 only in how index keys are computed;
            // version 2 from 3 only in the journal's Upsert entries carrying
            // their snapshot (still readable: the rewrite only saves space).
            // Each step is idempotent, so a crash midway migrates again.
            Some(v) if v.as_ref() == b"1" || v.as_ref() == b"2" => {
                if v.as_ref() == b"1" {
                    resources::rebuild_indexes(&tree)?;
                }
                let rewritten = journal::refer_to_snapshots(&tree)?;
                tracing::info!(
                    entries = rewritten,
                    "store migrated to format {FORMAT_VERSION}: journal entries refer to snapshots"
                );
                tree.insert(keys::META_FORMAT, FORMAT_VERSION.to_string().as_bytes())?;
                tree.flush()?;
            }
            Some(v) => {
                return Err(StoreError::Version {
                    path: path.display().to_string(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                })
            }
        }
        let last = match tree.get(keys::META_SEQ)? {
            Some(v) => String::from_utf8_lossy(&v)
                .parse()
                .map_err(|_| StoreError::Corrupt {
                    record: "mseq".into(),
                    detail: String::from_utf8_lossy(&v).into(),
                })?,
            None => 0,
        };
        resources::rebuild_indexes_if_stale(&tree)?;
        links::build_link_index(&tree)?;
        let finished = spill::finish_interrupted(&tree)?;
        if finished > 0 {
            tracing::info!(
                finished,
                "finished writing large member changes that a stop interrupted"
            );
        }
        let stripped = journal::strip_stored_passwords(&tree)?;
        if stripped > 0 {
            tracing::info!(
                records = stripped,
                "removed passwords that an older version stored in snapshots and journal entries"
            );
        }
        let secrets = secrets::Secrets::open(path)?;
        let swept = secrets.sweep(|| Store::pending_password_files(&tree))?;
        if swept > 0 {
            tracing::info!(
                swept,
                "removed the password files of entries no longer pending"
            );
        }
        let queue = queue::QueueCounts::count(&tree);
        let flusher = commit::Flusher::start(db.clone(), last)?;
        Ok(Store {
            inner: Arc::new(Inner {
                flusher,
                db,
                tree,
                write_lock: Mutex::new(last),
                listing: Mutex::new(resources::Listing::default()),
                secrets,
                queue,
                applied: Default::default(),
            }),
        })
    }

    /// The highest seq assigned so far.
    pub fn last_seq(&self) -> u64 {
        *self.write_lock()
    }

    /// The write lock, holding the last seq assigned.
    /// Taken at once when free (most writes hold it for well under a
    /// millisecond); when another write holds it (a large group's holds it
    /// for seconds), waited for off the async workers.
    fn write_lock(&self) -> MutexGuard<'_, u64> {
        let lock = &self.inner.write_lock;
        match lock.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                crate::offload::blocking(|| lock.lock().unwrap_or_else(|p| p.into_inner()))
            }
        }
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Decodes a stored JSON value; `what` names the record in the error.
fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        record: what(),
        detail: e.to_string(),
    })
}

/// Encodes a value to store; `what` names it in the error.
fn encode<T: Serialize + ?Sized>(
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode {
        what: what(),
        detail: e.to_string(),
    })
}
