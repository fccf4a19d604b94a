//! The store (sled): the journal of accepted operations, the current SCIM
//! snapshot of every resource, its indexes, and the link from each SCIM id
//! to its directory entry.
//!
//! Everything lives in one sled tree under one-byte key prefixes, so that
//! one accepted write — snapshot, index changes, journal entry and pending
//! marker — is one atomic `apply_batch`:
//!
//! | prefix | key                         | value                              |
//! |--------|-----------------------------|------------------------------------|
//! | `m`    | `m` name                    | metadata (format version, last seq)|
//! | `j`    | `j` seq (u64 big-endian)    | [`JournalEntry`] JSON              |
//! | `q`    | `q` seq                     | pending: not yet applied           |
//! | `f`    | `f` seq                     | parked: [`Failure`] JSON           |
//! | `r`    | `r` kind id                 | the resource's SCIM JSON           |
//! | `i`    | `i` kind attr-no value 0 id | index entry (empty value)          |
//! | `l`    | `l` kind id                 | [`Link`] JSON                      |
//! | `M`    | `M` group-id 0 member-id    | member kind (`u` / `g`)            |
//! | `B`    | `B` member-id 0 group-id    | empty (reverse of `M`)             |
//!
//! A group's snapshot never holds its members: they are the `M` keys, so
//! adding one member to a group of 50,000 writes two keys, not the whole
//! list. Responses assemble `members` (and a user's `groups`) from them.
//! | `a`    | `a` kind stable-id          | SCIM id linked to that entry       |
//! | `n`    | `n` kind attribute          | next number to allocate (u64 BE)   |
//! | `s`    | `s` seq                     | skipped by an administrator: time  |
//!
//! Integer keys are big-endian so that sled's byte order is numeric order.
//! A write is acknowledged only after [`Store::commit`] has seen it flushed
//! to disk; concurrent writers share one flush (group commit).
//!
//! Architecture invariant: the store knows SCIM JSON and journal entries,
//! never LDAP, HTTP or the mapping.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

/// The store's page cache unless the config says otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Bumped whenever the on-disk layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: corrupt record {0}: {1}")]
    Corrupt(String, String),
    #[error(
        "store at {path} has format version {found}, this scim2ldap reads version {FORMAT_VERSION}"
    )]
    Version { path: String, found: String },
    #[error("store: the flusher thread has stopped")]
    FlusherGone,
}

/// The two SCIM resource types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::User => b'u',
            Kind::Group => b'g',
        }
    }
    fn from_byte(b: u8) -> Kind {
        if b == b'g' {
            Kind::Group
        } else {
            Kind::User
        }
    }
    /// The indexed attributes of this kind: (name, case-insensitive, unique).
    pub fn indexes(self) -> &'static [IndexDef] {
        match self {
            Kind::User => &[
                IndexDef {
                    attr: "userName",
                    case_insensitive: true,
                    unique: true,
                },
                IndexDef {
                    attr: "externalId",
                    case_insensitive: false,
                    unique: false,
                },
                IndexDef {
                    attr: "emails.value",
                    case_insensitive: true,
                    unique: false,
                },
            ],
            // displayName is unique: a group's DN is usually built from it,
            // and two groups cannot share a DN.
            Kind::Group => &[
                IndexDef {
                    attr: "displayName",
                    case_insensitive: true,
                    unique: true,
                },
                IndexDef {
                    attr: "externalId",
                    case_insensitive: false,
                    unique: false,
                },
            ],
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
}

#[derive(Debug)]
pub struct IndexDef {
    pub attr: &'static str,
    pub case_insensitive: bool,
    pub unique: bool,
}

/// What an accepted write asks of the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Make the entry match `snapshot` (create or update).
    Upsert,
    /// Remove the resource; `snapshot` is its last state, so the writer can
    /// find the entry even if it was never linked.
    Delete,
}

/// One accepted operation. Immutable once written; its state lives in the
/// `q` / `f` keys so that changing state never rewrites the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: u64,
    /// RFC 3339 time of acceptance.
    pub at: String,
    pub kind: Kind,
    pub id: String,
    pub op: Op,
    /// The full SCIM resource after the operation (before it, for Delete):
    /// the writer converges the directory to this, which makes applying an
    /// entry twice harmless. A group's snapshot has no members.
    pub snapshot: Value,
    /// For groups: the membership change this operation made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MemberChange>,
}

/// A journal entry without its snapshot: what compaction needs, read
/// without building the snapshot.
#[derive(Deserialize)]
struct EntryHead {
    seq: u64,
    at: String,
    kind: Kind,
    id: String,
    op: Op,
}

/// The effective change to a group's members (ids), with whether the group
/// was empty before and is empty after: enough for the writer to send only
/// the delta, and to add or drop an empty-group placeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    pub empty_before: bool,
    pub empty_after: bool,
    /// Nothing but the members changed (the group's attributes are as the
    /// directory last got them): the writer can send the delta without
    /// reading the entry.
    #[serde(default)]
    pub only_members: bool,
}

/// What a request asks of a group's members (before the store works out
/// which of it is an actual change).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberOps {
    /// Replace the whole membership (create, PUT, replace of `members`).
    pub replace: Option<Vec<(String, Kind)>>,
    pub add: Vec<(String, Kind)>,
    pub remove: Vec<String>,
    /// The `display` a client gave for members it adds (kept, returned as
    /// sent).
    pub displays: std::collections::HashMap<String, String>,
    /// The request changes nothing else of the group.
    pub only_members: bool,
}

impl MemberOps {
    pub fn is_empty(&self) -> bool {
        self.replace.is_none() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Why the writer parked an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// LDAP result code, when the directory answered.
    pub code: Option<u32>,
    pub message: String,
    pub at: String,
}

/// The directory entry a resource is linked to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub dn: String,
    /// The directory's stable identifier (entryUUID / objectGUID), when read.
    pub uuid: Option<String>,
}

/// State of a journal entry.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryState {
    Pending,
    Applied,
    Failed(Failure),
}

/// A write refused by the store's own rules.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{attr} {value:?} is already used by another {kind}")]
    Conflict {
        kind: &'static str,
        attr: &'static str,
        value: String,
    },
    #[error("no such resource")]
    NotFound,
    #[error("version mismatch: the resource is at {current}")]
    VersionMismatch { current: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    /// Serialises seq allocation and the read-check-write of uniqueness.
    write_lock: Mutex<u64>,
    commit: Arc<GroupCommit>,
    /// Joined on drop, so that the database is closed (and its lock
    /// released) when the last handle goes.
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Counts and page cursors for listing without a filter, so that paging
    /// through 100,000 users reads each page once, not everything before it.
    listing: Mutex<Listing>,
}

/// Per kind: the number of resources, and where pages start (position →
/// key). Forgotten whenever a resource of the kind is created or removed.
#[derive(Default)]
struct Listing {
    count: HashMap<u8, usize>,
    cursors: HashMap<(u8, usize), Vec<u8>>,
    /// Bumped by every invalidation: a count or cursor worked out across
    /// one is not kept.
    generation: u64,
}

/// Group commit: writers record the seq they need durable and wait; one
/// thread flushes for all of them.
struct GroupCommit {
    state: Mutex<CommitState>,
    wake: Condvar,
    flushed_tx: watch::Sender<u64>,
}

struct CommitState {
    wanted: u64,
    stop: bool,
    error: Option<String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut s = self.commit.state.lock().unwrap_or_else(|p| p.into_inner());
        s.stop = true;
        self.commit.wake.notify_all();
        drop(s);
        if let Some(h) = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
    }
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn seq_key(prefix: u8, seq: u64) -> Vec<u8> {
    key(prefix, &seq.to_be_bytes())
}

fn res_key(prefix: u8, kind: Kind, id: &str) -> Vec<u8> {
    let mut k = vec![prefix, kind.byte()];
    k.extend_from_slice(id.as_bytes());
    k
}

fn index_prefix(kind: Kind, n: usize, value: &str) -> Vec<u8> {
    let mut k = vec![b'i', kind.byte(), n as u8];
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

fn member_key(prefix: u8, a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + a.len() + b.len());
    k.push(prefix);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn member_prefix(prefix: u8, a: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + a.len());
    k.push(prefix);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k
}

fn seq_of(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[1..9]);
    u64::from_be_bytes(b)
}

/// The values of an indexed attribute in a resource, normalised.
fn index_values(resource: &Value, def: &IndexDef) -> Vec<String> {
    let mut out = Vec::new();
    let mut parts = def.attr.split('.');
    let top = parts.next().unwrap_or_default();
    let sub = parts.next();
    let Some(v) = get_ci(resource, top) else {
        return out;
    };
    let mut push = |s: &str| {
        // NUL separates value from id in the key; such values are refused
        // before they get here, and are not indexed if they do.
        if !s.contains('\0') {
            out.push(if def.case_insensitive {
                s.to_lowercase()
            } else {
                s.to_string()
            });
        }
    };
    match (v, sub) {
        (Value::String(s), None) => push(s),
        (Value::Array(items), Some(sub)) => {
            for item in items {
                if let Some(Value::String(s)) = get_ci(item, sub) {
                    push(s);
                }
            }
        }
        _ => {}
    }
    out.sort();
    out.dedup();
    out
}

/// Case-insensitive member lookup, as SCIM attribute names are.
pub fn get_ci<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Store {
    /// Opens (or creates) the store in `path` and starts its flusher thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store with a page cache of `cache_bytes` (sled's default,
    /// 1 GiB, would let the daemon's memory grow with the data).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()?;
        let tree = db.open_tree("scim2ldap")?;
        match tree.get(b"mformat")? {
            None => {
                tree.insert(b"mformat", FORMAT_VERSION.to_string().as_bytes())?;
                tree.flush()?;
            }
            Some(v) if v.as_ref() == FORMAT_VERSION.to_string().as_bytes() => {}
            Some(v) => {
                return Err(StoreError::Version {
                    path: path.display().to_string(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                })
            }
        }
        let last = match tree.get(b"mseq")? {
            Some(v) => String::from_utf8_lossy(&v).parse().map_err(|_| {
                StoreError::Corrupt("mseq".into(), String::from_utf8_lossy(&v).into())
            })?,
            None => 0,
        };
        build_link_index(&tree)?;
        let (flushed_tx, _) = watch::channel(last);
        let commit = Arc::new(GroupCommit {
            state: Mutex::new(CommitState {
                wanted: 0,
                stop: false,
                error: None,
            }),
            wake: Condvar::new(),
            flushed_tx,
        });
        let handle = {
            let (db, commit) = (db.clone(), commit.clone());
            std::thread::Builder::new()
                .name("store-flush".into())
                .spawn(move || flusher(db, commit))
                .map_err(|e| StoreError::Corrupt("flusher".into(), e.to_string()))?
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                tree,
                write_lock: Mutex::new(last),
                commit,
                flusher: Mutex::new(Some(handle)),
                listing: Mutex::new(Listing::default()),
            }),
        })
    }

    /// The highest seq assigned so far.
    pub fn last_seq(&self) -> u64 {
        *self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every write up to `seq` is on disk.
    pub async fn commit(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.inner.commit.flushed_tx.subscribe();
        if *rx.borrow() >= seq {
            return Ok(());
        }
        {
            let mut s = self
                .inner
                .commit
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(e) = &s.error {
                return Err(StoreError::Corrupt("flush".into(), e.clone()));
            }
            s.wanted = s.wanted.max(seq);
            self.inner.commit.wake.notify_one();
        }
        rx.wait_for(|f| *f >= seq)
            .await
            .map_err(|_| StoreError::FlusherGone)?;
        Ok(())
    }

    /// Flushes synchronously (for commands run outside the daemon).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }

    pub fn get(&self, kind: Kind, id: &str) -> Result<Option<Value>, StoreError> {
        match self.inner.tree.get(res_key(b'r', kind, id))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("{} {id}", kind.name()), e.to_string())),
        }
    }

    /// Hands out the next number of `attribute`'s range for `kind`, once.
    /// `None` when the range is used up. The counter lives in the same tree
    /// as the resources, so the flush that makes a resource durable makes
    /// its number durable too; a number given to a write that then fails
    /// is skipped, never given twice.
    pub fn allocate(
        &self,
        kind: Kind,
        attribute: &str,
        lo: u64,
        hi: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut key = vec![b'n', kind.byte()];
        key.extend_from_slice(attribute.to_ascii_lowercase().as_bytes());
        let mut got = None;
        self.inner.tree.fetch_and_update(&key, |old| {
            let next = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(lo)
                .max(lo);
            got = (next <= hi).then_some(next);
            Some(next.saturating_add(1).to_be_bytes().to_vec())
        })?;
        Ok(got)
    }

    pub fn exists(&self, kind: Kind, id: &str) -> Result<bool, StoreError> {
        Ok(self.inner.tree.contains_key(res_key(b'r', kind, id))?)
    }

    /// Ids whose indexed attribute `attr` equals `value` (after the index's
    /// normalisation). `None` when `attr` is not indexed for `kind`.
    pub fn lookup(
        &self,
        kind: Kind,
        attr: &str,
        value: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let Some((n, def)) = kind
            .indexes()
            .iter()
            .enumerate()
            .find(|(_, d)| d.attr.eq_ignore_ascii_case(attr))
        else {
            return Ok(None);
        };
        let norm = if def.case_insensitive {
            value.to_lowercase()
        } else {
            value.to_string()
        };
        let prefix = index_prefix(kind, n, &norm);
        let mut ids = Vec::new();
        for item in self.inner.tree.scan_prefix(&prefix) {
            let (k, _) = item?;
            ids.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(Some(ids))
    }

    /// Every resource of `kind`, in id order (stable across calls, so
    /// paging with startIndex is consistent).
    pub fn scan(&self, kind: Kind) -> impl Iterator<Item = Result<Value, StoreError>> + '_ {
        self.inner
            .tree
            .scan_prefix([b'r', kind.byte()])
            .map(move |item| {
                let (k, v) = item?;
                serde_json::from_slice(&v).map_err(|e| {
                    StoreError::Corrupt(String::from_utf8_lossy(&k).into_owned(), e.to_string())
                })
            })
    }

    pub fn count(&self, kind: Kind) -> usize {
        let generation = {
            let l = self.listing();
            if let Some(n) = l.count.get(&kind.byte()) {
                return *n;
            }
            l.generation
        };
        let n = self
            .inner
            .tree
            .scan_prefix([b'r', kind.byte()])
            .keys()
            .count();
        let mut l = self.listing();
        if l.generation == generation {
            l.count.insert(kind.byte(), n);
        }
        n
    }

    fn listing(&self) -> std::sync::MutexGuard<'_, Listing> {
        self.inner.listing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resources of `kind` were created or removed: positions moved. Called
    /// after the write is applied.
    fn forget_positions(&self, kind: Kind) {
        let mut l = self.listing();
        l.generation += 1;
        l.count.remove(&kind.byte());
        l.cursors.retain(|(k, _), _| *k != kind.byte());
    }

    /// `take` resources of `kind` from position `skip` (0-based) in id
    /// order. Sequential paging costs one page each time: where a page ends
    /// is remembered as where the next one starts.
    pub fn scan_page(
        &self,
        kind: Kind,
        skip: usize,
        take: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let prefix = [b'r', kind.byte()];
        let (cursor, generation) = {
            let l = self.listing();
            (l.cursors.get(&(kind.byte(), skip)).cloned(), l.generation)
        };
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match cursor {
            Some(from) => Box::new(
                self.inner
                    .tree
                    .range(from..)
                    .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix))),
            ),
            None => Box::new(self.inner.tree.scan_prefix(prefix).skip(skip)),
        };
        let mut out = Vec::with_capacity(take.min(1000));
        for item in iter {
            let (k, v) = item?;
            if out.len() == take {
                let mut l = self.listing();
                if l.cursors.len() > 4096 {
                    l.cursors.clear();
                }
                if l.generation == generation {
                    l.cursors.insert((kind.byte(), skip + take), k.to_vec());
                }
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(|e| {
                StoreError::Corrupt(String::from_utf8_lossy(&k).into_owned(), e.to_string())
            })?);
        }
        Ok(out)
    }

    /// Records a new state of a resource (create or update) and journals
    /// it. `expect_version`: the update is refused unless the stored
    /// resource is at that version (`None`: no check). `create`: refuse if
    /// the id exists / update: refuse if it does not.
    ///
    /// Sets `meta.version` of `resource` to the new seq. Returns the seq;
    /// call [`Store::commit`] before acknowledging.
    pub fn put(
        &self,
        kind: Kind,
        id: &str,
        resource: &mut Value,
        create: bool,
        expect_version: Option<&str>,
    ) -> Result<u64, WriteError> {
        self.put_with_members(kind, id, resource, create, expect_version, None)
    }

    /// [`Store::put`] for a group, with the change to its members (the
    /// group's `resource` must not hold `members`).
    pub fn put_with_members(
        &self,
        kind: Kind,
        id: &str,
        resource: &mut Value,
        create: bool,
        expect_version: Option<&str>,
        members: Option<&MemberOps>,
    ) -> Result<u64, WriteError> {
        let mut last = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let old = self.get(kind, id)?;
        match (&old, create) {
            (Some(_), true) => {
                return Err(StoreError::Corrupt(id.into(), "id exists".into()).into())
            }
            (None, false) => return Err(WriteError::NotFound),
            _ => {}
        }
        if let (Some(want), Some(old)) = (expect_version, &old) {
            let current = version_of(old);
            if current != want {
                return Err(WriteError::VersionMismatch { current });
            }
        }
        // Uniqueness, checked under the write lock so two creates cannot race.
        for (n, def) in kind.indexes().iter().enumerate() {
            if !def.unique {
                continue;
            }
            for v in index_values(resource, def) {
                let prefix = index_prefix(kind, n, &v);
                for item in self.inner.tree.scan_prefix(&prefix).keys() {
                    let k = item.map_err(StoreError::from)?;
                    if &k[prefix.len()..] != id.as_bytes() {
                        return Err(WriteError::Conflict {
                            kind: kind.name(),
                            attr: def.attr,
                            value: v,
                        });
                    }
                }
            }
        }
        let seq = *last + 1;
        set_version(resource, seq);
        let mut batch = sled::Batch::default();
        self.index_changes(&mut batch, kind, id, old.as_ref(), Some(resource));
        batch.insert(res_key(b'r', kind, id), to_json(resource, id)?);
        let change = match members {
            Some(ops) => Some(self.member_changes(&mut batch, id, ops)?),
            None => None,
        };
        self.journal_into(&mut batch, seq, kind, id, Op::Upsert, resource, change)?;
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(StoreError::from)?;
        *last = seq;
        if old.is_none() {
            self.forget_positions(kind);
        }
        Ok(seq)
    }

    /// Works out the effective change `ops` makes to group `gid`'s members
    /// and adds the key changes to `batch`. Costs O(changed members), except
    /// a whole replacement, which compares with the current list.
    fn member_changes(
        &self,
        batch: &mut sled::Batch,
        gid: &str,
        ops: &MemberOps,
    ) -> Result<MemberChange, StoreError> {
        let prefix = member_prefix(b'M', gid);
        let empty_before = self
            .inner
            .tree
            .scan_prefix(&prefix)
            .next()
            .transpose()?
            .is_none();
        let mut add: Vec<(String, Kind)> = Vec::new();
        let mut remove: Vec<String> = Vec::new();
        if let Some(list) = &ops.replace {
            let current: std::collections::HashSet<String> =
                self.members(gid)?.into_iter().map(|(m, _)| m).collect();
            let mut wanted: Vec<(String, Kind)> = Vec::new();
            for (m, k) in list.iter().chain(ops.add.iter()) {
                if !ops.remove.contains(m) && !wanted.iter().any(|(w, _)| w == m) {
                    wanted.push((m.clone(), *k));
                }
            }
            remove = current
                .iter()
                .filter(|c| !wanted.iter().any(|(w, _)| w == *c))
                .cloned()
                .collect();
            remove.sort();
            add = wanted
                .into_iter()
                .filter(|(w, _)| !current.contains(w))
                .collect();
        } else {
            for (m, k) in &ops.add {
                if !ops.remove.contains(m)
                    && !add.iter().any(|(a, _)| a == m)
                    && !self.inner.tree.contains_key(member_key(b'M', gid, m))?
                {
                    add.push((m.clone(), *k));
                }
            }
            for m in &ops.remove {
                if !remove.contains(m) && self.inner.tree.contains_key(member_key(b'M', gid, m))? {
                    remove.push(m.clone());
                }
            }
        }
        for (m, k) in &add {
            let mut v = vec![k.byte()];
            if let Some(d) = ops.displays.get(m) {
                v.extend_from_slice(d.as_bytes());
            }
            batch.insert(member_key(b'M', gid, m), v);
            batch.insert(member_key(b'B', m, gid), Vec::new());
        }
        for m in &remove {
            batch.remove(member_key(b'M', gid, m));
            batch.remove(member_key(b'B', m, gid));
        }
        let empty_after = if !add.is_empty() {
            false
        } else if empty_before {
            true
        } else {
            // Non-empty unless every current member is being removed; looks
            // at no more than remove.len() + 1 keys.
            let mut left = false;
            for k in self
                .inner
                .tree
                .scan_prefix(&prefix)
                .keys()
                .take(remove.len() + 1)
            {
                let k = k?;
                let m = String::from_utf8_lossy(&k[prefix.len()..]);
                if !remove.iter().any(|r| r.as_str() == m) {
                    left = true;
                    break;
                }
            }
            !left
        };
        Ok(MemberChange {
            add: add.into_iter().map(|(m, _)| m).collect(),
            remove,
            empty_before,
            empty_after,
            only_members: ops.only_members,
        })
    }

    /// The members of a group, in id order.
    pub fn members(&self, gid: &str) -> Result<Vec<(String, Kind)>, StoreError> {
        let prefix = member_prefix(b'M', gid);
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                Kind::from_byte(v.first().copied().unwrap_or(b'u')),
            ));
        }
        Ok(out)
    }

    /// The members of a group with the `display` given for each, in id
    /// order.
    pub fn members_with_display(
        &self,
        gid: &str,
    ) -> Result<Vec<(String, Kind, Option<String>)>, StoreError> {
        let prefix = member_prefix(b'M', gid);
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let display = (v.len() > 1).then(|| String::from_utf8_lossy(&v[1..]).into_owned());
            out.push((
                String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                Kind::from_byte(v.first().copied().unwrap_or(b'u')),
                display,
            ));
        }
        Ok(out)
    }

    /// The groups that list `member` directly, in id order.
    pub fn groups_of(&self, member: &str) -> Result<Vec<String>, StoreError> {
        let prefix = member_prefix(b'B', member);
        let mut out = Vec::new();
        for k in self.inner.tree.scan_prefix(&prefix).keys() {
            let k = k?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    /// Deletes a resource and journals the deletion. A deleted resource is
    /// first removed from every group that lists it (one journal entry per
    /// group, before the deletion's), so each group stays valid. Returns
    /// the last seq.
    pub fn delete(
        &self,
        kind: Kind,
        id: &str,
        expect_version: Option<&str>,
    ) -> Result<u64, WriteError> {
        let mut last = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(old) = self.get(kind, id)? else {
            return Err(WriteError::NotFound);
        };
        if let Some(want) = expect_version {
            let current = version_of(&old);
            if current != want {
                return Err(WriteError::VersionMismatch { current });
            }
        }
        let mut seq = *last;
        let mut batch = sled::Batch::default();
        for gid in self.groups_of(id)? {
            let Some(mut group) = self.get(Kind::Group, &gid)? else {
                continue;
            };
            seq += 1;
            set_version(&mut group, seq);
            batch.insert(res_key(b'r', Kind::Group, &gid), to_json(&group, &gid)?);
            let ops = MemberOps {
                remove: vec![id.to_string()],
                only_members: true,
                ..Default::default()
            };
            let change = self.member_changes(&mut batch, &gid, &ops)?;
            self.journal_into(
                &mut batch,
                seq,
                Kind::Group,
                &gid,
                Op::Upsert,
                &group,
                Some(change),
            )?;
        }
        if kind == Kind::Group {
            for (m, _) in self.members(id)? {
                batch.remove(member_key(b'M', id, &m));
                batch.remove(member_key(b'B', &m, id));
            }
        }
        seq += 1;
        self.index_changes(&mut batch, kind, id, Some(&old), None);
        batch.remove(res_key(b'r', kind, id));
        self.journal_into(&mut batch, seq, kind, id, Op::Delete, &old, None)?;
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(StoreError::from)?;
        *last = seq;
        self.forget_positions(kind);
        Ok(seq)
    }

    #[allow(clippy::too_many_arguments)] // one call site per operation; a struct would only rename them
    fn journal_into(
        &self,
        batch: &mut sled::Batch,
        seq: u64,
        kind: Kind,
        id: &str,
        op: Op,
        snapshot: &Value,
        members: Option<MemberChange>,
    ) -> Result<(), StoreError> {
        let entry = JournalEntry {
            seq,
            at: now_rfc3339(),
            kind,
            id: id.to_string(),
            op,
            snapshot: snapshot.clone(),
            members,
        };
        let bytes = serde_json::to_vec(&entry)
            .map_err(|e| StoreError::Corrupt(format!("journal {seq}"), e.to_string()))?;
        batch.insert(seq_key(b'j', seq), bytes);
        batch.insert(seq_key(b'q', seq), res_key(b'r', kind, id));
        batch.insert(b"mseq".to_vec(), seq.to_string().into_bytes());
        Ok(())
    }

    fn index_changes(
        &self,
        batch: &mut sled::Batch,
        kind: Kind,
        id: &str,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        for (n, def) in kind.indexes().iter().enumerate() {
            let before = old.map(|o| index_values(o, def)).unwrap_or_default();
            let after = new.map(|o| index_values(o, def)).unwrap_or_default();
            for v in before.iter().filter(|v| !after.contains(v)) {
                let mut k = index_prefix(kind, n, v);
                k.extend_from_slice(id.as_bytes());
                batch.remove(k);
            }
            for v in after.iter().filter(|v| !before.contains(v)) {
                let mut k = index_prefix(kind, n, v);
                k.extend_from_slice(id.as_bytes());
                batch.insert(k, Vec::new());
            }
        }
    }

    // ---- the writer's side -------------------------------------------------

    pub fn entry(&self, seq: u64) -> Result<Option<JournalEntry>, StoreError> {
        match self.inner.tree.get(seq_key(b'j', seq))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("journal {seq}"), e.to_string())),
        }
    }

    /// Seqs of entries not yet applied, oldest first, starting after `after`.
    pub fn pending_after(&self, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .inner
            .tree
            .range(seq_key(b'q', after.saturating_add(1))..seq_key(b'q', u64::MAX))
            .keys()
        {
            let k = item?;
            if k.first() != Some(&b'q') {
                break;
            }
            out.push(seq_of(&k));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn pending_count(&self) -> usize {
        self.inner.tree.scan_prefix(b"q").keys().count()
    }

    /// [`Store::pending_count`], counting no further than `cap`: cheap
    /// enough to poll while a large backlog drains.
    pub fn pending_count_capped(&self, cap: usize) -> usize {
        self.inner.tree.scan_prefix(b"q").keys().take(cap).count()
    }

    pub fn state(&self, seq: u64) -> Result<EntryState, StoreError> {
        if let Some(f) = self.inner.tree.get(seq_key(b'f', seq))? {
            let f: Failure = serde_json::from_slice(&f)
                .map_err(|e| StoreError::Corrupt(format!("failure {seq}"), e.to_string()))?;
            return Ok(EntryState::Failed(f));
        }
        if self.inner.tree.contains_key(seq_key(b'q', seq))? {
            return Ok(EntryState::Pending);
        }
        Ok(EntryState::Applied)
    }

    /// Marks an entry applied and records (or, with `None` on a delete,
    /// removes) the resource's link, atomically.
    pub fn mark_applied(
        &self,
        entry: &JournalEntry,
        link: Option<&Link>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(seq_key(b'q', entry.seq));
        if self.inner.tree.contains_key(seq_key(b'f', entry.seq))? {
            batch.remove(seq_key(b'f', entry.seq));
        }
        // Most applies leave the link as it was: rewriting it would only
        // add to what sled logs.
        let old = self.link(entry.kind, &entry.id)?;
        if old.as_ref() == link {
            self.inner.tree.apply_batch(batch)?;
            return Ok(());
        }
        self.link_index_changes(&mut batch, entry.kind, &entry.id, link)?;
        match link {
            Some(l) => batch.insert(
                res_key(b'l', entry.kind, &entry.id),
                serde_json::to_vec(l)
                    .map_err(|e| StoreError::Corrupt("link".into(), e.to_string()))?,
            ),
            None => batch.remove(res_key(b'l', entry.kind, &entry.id)),
        }
        self.inner.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Parks an entry: it stays pending (so later entries of the same
    /// resource wait behind it) and carries the failure.
    pub fn mark_failed(&self, seq: u64, failure: &Failure) -> Result<(), StoreError> {
        self.inner.tree.insert(
            seq_key(b'f', seq),
            serde_json::to_vec(failure)
                .map_err(|e| StoreError::Corrupt("failure".into(), e.to_string()))?,
        )?;
        Ok(())
    }

    pub fn link(&self, kind: Kind, id: &str) -> Result<Option<Link>, StoreError> {
        match self.inner.tree.get(res_key(b'l', kind, id))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt("link".into(), e.to_string())),
        }
    }
}

fn to_json(v: &Value, id: &str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(id.into(), e.to_string()))
}

// ---- ordering, administration, adoption and compaction ---------------------

/// An entry's administrative view: the entry plus its state and whether an
/// administrator skipped it.
#[derive(Debug, Clone)]
pub struct EntryView {
    pub entry: JournalEntry,
    pub state: EntryState,
    /// When `journal skip` dropped it (its state is then `Applied`).
    pub skipped: Option<String>,
}

/// What [`Store::skip`] and [`Store::retry`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Done,
    /// No journal entry with that seq (never written, or compacted).
    NoSuchEntry,
    /// The entry is not in a state the operation applies to.
    NotApplicable,
}

/// Counts for `journal stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub last_seq: u64,
    /// Journal entries kept (the rest were compacted).
    pub entries: usize,
    pub oldest_seq: Option<u64>,
    pub oldest_at: Option<String>,
    pub pending: usize,
    pub parked: usize,
    pub skipped: usize,
    pub users: usize,
    pub groups: usize,
    pub links: usize,
    pub size_on_disk: u64,
    /// RFC 3339 time and outcome of the last compaction, if any.
    pub last_compaction: Option<String>,
}

/// What one compaction removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactReport {
    pub removed: usize,
    pub kept: usize,
}

fn uuid_key(kind: Kind, uuid: &str) -> Vec<u8> {
    res_key(b'a', kind, uuid)
}

/// Builds the stable-id → SCIM id index from the links once, for stores
/// written before the index existed.
fn build_link_index(tree: &sled::Tree) -> Result<(), StoreError> {
    if tree.contains_key(b"mlinkidx")? {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix(b"l") {
        let (k, v) = item?;
        let Some(&kb) = k.get(1) else { continue };
        let link: Link = serde_json::from_slice(&v)
            .map_err(|e| StoreError::Corrupt("link".into(), e.to_string()))?;
        if let Some(uuid) = link.uuid {
            let mut a = vec![b'a', kb];
            a.extend_from_slice(uuid.as_bytes());
            batch.insert(a, k[2..].to_vec());
        }
    }
    batch.insert(b"mlinkidx".to_vec(), b"1".to_vec());
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(())
}

impl Store {
    /// Keeps the stable-id index in step with a link change of `id`.
    fn link_index_changes(
        &self,
        batch: &mut sled::Batch,
        kind: Kind,
        id: &str,
        new: Option<&Link>,
    ) -> Result<(), StoreError> {
        let old = self.link(kind, id)?;
        let old_uuid = old.as_ref().and_then(|l| l.uuid.as_deref());
        let new_uuid = new.and_then(|l| l.uuid.as_deref());
        if old_uuid == new_uuid {
            return Ok(());
        }
        if let Some(u) = old_uuid {
            batch.remove(uuid_key(kind, u));
        }
        if let Some(u) = new_uuid {
            batch.insert(uuid_key(kind, u), id.as_bytes().to_vec());
        }
        Ok(())
    }

    /// The SCIM id linked to the directory entry with this stable id.
    pub fn linked_id(&self, kind: Kind, uuid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .tree
            .get(uuid_key(kind, uuid))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The oldest entry of resource `kind`/`id` before `before` that is not
    /// applied yet (pending or parked). `None`: every earlier write of that
    /// resource has reached the directory (or was skipped).
    pub fn unapplied_before(
        &self,
        kind: Kind,
        id: &str,
        before: u64,
    ) -> Result<Option<u64>, StoreError> {
        let want = res_key(b'r', kind, id);
        for item in self
            .inner
            .tree
            .range(seq_key(b'q', 0)..seq_key(b'q', before))
        {
            let (k, v) = item?;
            if v.as_ref() == want.as_slice() {
                return Ok(Some(seq_of(&k)));
            }
        }
        Ok(None)
    }

    /// Whether resource `kind`/`id` exists in the directory as the store
    /// last asked: it is linked and none of its writes is waiting. The
    /// question a write naming another resource (a group member, a
    /// manager) asks before it is applied.
    pub fn is_settled(&self, kind: Kind, id: &str) -> Result<bool, StoreError> {
        Ok(self.link(kind, id)?.is_some() && self.unapplied_before(kind, id, u64::MAX)?.is_none())
    }

    /// Journal entries from `from` on, oldest first.
    pub fn entries_from(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<JournalEntry, StoreError>> + '_ {
        self.inner
            .tree
            .range(seq_key(b'j', from)..seq_key(b'j', u64::MAX))
            .map(|item| {
                let (k, v) = item?;
                serde_json::from_slice(&v).map_err(|e| {
                    StoreError::Corrupt(format!("journal {}", seq_of(&k)), e.to_string())
                })
            })
    }

    /// Every journal entry's head, oldest first (the snapshots are skipped
    /// over, not built).
    fn heads(&self) -> impl Iterator<Item = Result<EntryHead, StoreError>> + '_ {
        self.inner.tree.scan_prefix(b"j").map(|item| {
            let (k, v) = item?;
            serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("journal {}", seq_of(&k)), e.to_string()))
        })
    }

    /// One entry with its state, for the journal commands.
    pub fn view(&self, entry: JournalEntry) -> Result<EntryView, StoreError> {
        let state = self.state(entry.seq)?;
        let skipped = self
            .inner
            .tree
            .get(seq_key(b's', entry.seq))?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        Ok(EntryView {
            entry,
            state,
            skipped,
        })
    }

    /// Seqs of parked entries, oldest first.
    pub fn parked(&self) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for k in self.inner.tree.scan_prefix(b"f").keys() {
            out.push(seq_of(&k?));
        }
        Ok(out)
    }

    /// Un-parks an entry: the writer tries it again on its next pass.
    pub fn retry(&self, seq: u64) -> Result<Change, StoreError> {
        if !self.inner.tree.contains_key(seq_key(b'j', seq))? {
            return Ok(Change::NoSuchEntry);
        }
        match self.inner.tree.remove(seq_key(b'f', seq))? {
            Some(_) => Ok(Change::Done),
            None => Ok(Change::NotApplicable),
        }
    }

    /// Drops a pending or parked entry without applying it, so that later
    /// entries of the same resource go ahead. Recorded with the time.
    pub fn skip(&self, seq: u64) -> Result<Change, StoreError> {
        if !self.inner.tree.contains_key(seq_key(b'j', seq))? {
            return Ok(Change::NoSuchEntry);
        }
        if !self.inner.tree.contains_key(seq_key(b'q', seq))? {
            return Ok(Change::NotApplicable);
        }
        let mut batch = sled::Batch::default();
        batch.remove(seq_key(b'q', seq));
        batch.remove(seq_key(b'f', seq));
        batch.insert(seq_key(b's', seq), now_rfc3339().into_bytes());
        self.inner.tree.apply_batch(batch)?;
        self.inner.db.flush()?;
        Ok(Change::Done)
    }

    /// Queues every kept entry in `from..=to` to be applied again, in
    /// order (entries already pending stay as they are, skipped ones stay
    /// skipped). Returns how many were queued.
    pub fn requeue(&self, from: u64, to: u64) -> Result<usize, StoreError> {
        let _guard = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self
            .inner
            .tree
            .range(seq_key(b'j', from)..=seq_key(b'j', to))
            .keys()
        {
            let k = item?;
            let seq = seq_of(&k);
            if self.inner.tree.contains_key(seq_key(b'q', seq))?
                || self.inner.tree.contains_key(seq_key(b's', seq))?
            {
                continue;
            }
            let Some(entry) = self.entry(seq)? else {
                continue;
            };
            batch.insert(seq_key(b'q', seq), res_key(b'r', entry.kind, &entry.id));
            n += 1;
        }
        self.inner.tree.apply_batch(batch)?;
        self.inner.db.flush()?;
        Ok(n)
    }

    /// Records an entry that already exists in the directory as a new
    /// resource, without asking the writer to change it: snapshot, indexes,
    /// link, and a journal entry that is applied from the start (so that a
    /// replay into an empty directory recreates it). Refused when the
    /// unique attributes are taken or the entry is linked already.
    pub fn adopt(
        &self,
        kind: Kind,
        id: &str,
        resource: &mut Value,
        link: &Link,
    ) -> Result<u64, WriteError> {
        let mut last = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.get(kind, id)?.is_some() {
            return Err(StoreError::Corrupt(id.into(), "id exists".into()).into());
        }
        if let Some(uuid) = &link.uuid {
            if let Some(other) = self.linked_id(kind, uuid)? {
                return Err(WriteError::Conflict {
                    kind: kind.name(),
                    attr: "entry",
                    value: format!("{} (already linked to {other})", link.dn),
                });
            }
        }
        for (n, def) in kind.indexes().iter().enumerate() {
            if !def.unique {
                continue;
            }
            for v in index_values(resource, def) {
                if let Some(item) = self
                    .inner
                    .tree
                    .scan_prefix(index_prefix(kind, n, &v))
                    .keys()
                    .next()
                {
                    item.map_err(StoreError::from)?;
                    return Err(WriteError::Conflict {
                        kind: kind.name(),
                        attr: def.attr,
                        value: v,
                    });
                }
            }
        }
        let seq = *last + 1;
        set_version(resource, seq);
        let mut batch = sled::Batch::default();
        self.index_changes(&mut batch, kind, id, None, Some(resource));
        batch.insert(
            res_key(b'r', kind, id),
            serde_json::to_vec(resource)
                .map_err(|e| StoreError::Corrupt(id.into(), e.to_string()))?,
        );
        self.journal_into(&mut batch, seq, kind, id, Op::Upsert, resource, None)?;
        // Applied from the start: the entry is in the directory already.
        batch.remove(seq_key(b'q', seq));
        self.link_index_changes(&mut batch, kind, id, Some(link))?;
        batch.insert(
            res_key(b'l', kind, id),
            serde_json::to_vec(link)
                .map_err(|e| StoreError::Corrupt("link".into(), e.to_string()))?,
        );
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(StoreError::from)?;
        *last = seq;
        self.forget_positions(kind);
        Ok(seq)
    }

    /// Removes applied journal entries accepted before `cutoff`, except
    /// the latest entry of each resource that still exists (its snapshot,
    /// so that a replay into an empty directory rebuilds every entry).
    /// Pending and parked entries are never removed.
    pub fn compact(&self, cutoff: std::time::SystemTime) -> Result<CompactReport, StoreError> {
        // Latest entry of each resource, and the oldest unapplied seq.
        let mut latest: std::collections::HashMap<(Kind, String), (u64, Op)> =
            std::collections::HashMap::new();
        for e in self.heads() {
            let e = e?;
            latest.insert((e.kind, e.id.clone()), (e.seq, e.op));
        }
        let mut report = CompactReport::default();
        let mut candidates = Vec::new();
        for e in self.heads() {
            let e = e?;
            let old = humantime::parse_rfc3339_weak(&e.at)
                .map(|t| t < cutoff)
                .unwrap_or(false);
            let keep_snapshot = latest.get(&(e.kind, e.id.clone())) == Some(&(e.seq, Op::Upsert));
            if old && !keep_snapshot {
                candidates.push(e.seq);
            } else {
                report.kept += 1;
            }
        }
        // Under the write lock, which `requeue` takes too, so an entry
        // queued again meanwhile is not removed under the writer's feet.
        let _guard = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        for seq in candidates {
            if self.inner.tree.contains_key(seq_key(b'q', seq))? {
                report.kept += 1;
                continue;
            }
            batch.remove(seq_key(b'j', seq));
            batch.remove(seq_key(b's', seq));
            report.removed += 1;
        }
        batch.insert(
            b"mcompact".to_vec(),
            format!(
                "{}: removed {} entries, kept {}",
                now_rfc3339(),
                report.removed,
                report.kept
            )
            .into_bytes(),
        );
        self.inner.tree.apply_batch(batch)?;
        self.inner.db.flush()?;
        Ok(report)
    }

    pub fn stats(&self) -> Result<Stats, StoreError> {
        let t = &self.inner.tree;
        let count = |p: &[u8]| t.scan_prefix(p).keys().count();
        let oldest = match t.scan_prefix(b"j").next() {
            Some(item) => {
                let (k, v) = item?;
                let at = serde_json::from_slice::<JournalEntry>(&v)
                    .ok()
                    .map(|e| e.at);
                Some((seq_of(&k), at))
            }
            None => None,
        };
        Ok(Stats {
            last_seq: self.last_seq(),
            entries: count(b"j"),
            oldest_seq: oldest.as_ref().map(|o| o.0),
            oldest_at: oldest.and_then(|o| o.1),
            pending: count(b"q").saturating_sub(count(b"f")),
            parked: count(b"f"),
            skipped: count(b"s"),
            users: count(&[b'r', Kind::User.byte()]),
            groups: count(&[b'r', Kind::Group.byte()]),
            links: count(b"l"),
            size_on_disk: self.inner.db.size_on_disk().unwrap_or(0),
            last_compaction: t
                .get(b"mcompact")?
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
        })
    }
}

/// The weak ETag of a stored resource: `W/"<seq of its last write>"`.
pub fn version_of(resource: &Value) -> String {
    resource
        .pointer("/meta/version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn set_version(resource: &mut Value, seq: u64) {
    if let Some(obj) = resource.as_object_mut() {
        let meta = obj
            .entry("meta")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(m) = meta.as_object_mut() {
            m.insert("version".into(), Value::String(format!("W/\"{seq}\"")));
        }
    }
}

fn flusher(db: sled::Db, commit: Arc<GroupCommit>) {
    let mut flushed = *commit.flushed_tx.borrow();
    loop {
        let wanted = {
            let mut s = commit.state.lock().unwrap_or_else(|p| p.into_inner());
            while s.wanted <= flushed && !s.stop {
                s = commit.wake.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.stop {
                return;
            }
            s.wanted
        };
        // Everything up to `wanted` was inserted before it was asked for, so
        // one flush now makes all of it durable, and whatever else arrived.
        match db.flush() {
            Ok(_) => {
                flushed = wanted;
                commit.flushed_tx.send_replace(flushed);
            }
            Err(e) => {
                let mut s = commit.state.lock().unwrap_or_else(|p| p.into_inner());
                s.error = Some(e.to_string());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmp() -> (std::path::PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("scim2ldap-store-{}", uuid::Uuid::new_v4()));
        let s = Store::open(&dir).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn put_get_lookup_and_journal() {
        let (dir, s) = tmp();
        let mut u = json!({"id": "1", "userName": "Alice", "emails": [{"value": "A@x.org"}]});
        let seq = s.put(Kind::User, "1", &mut u, true, None).unwrap();
        s.commit(seq).await.unwrap();
        assert_eq!(seq, 1);
        assert_eq!(u["meta"]["version"], "W/\"1\"");
        assert_eq!(
            s.get(Kind::User, "1").unwrap().unwrap()["userName"],
            "Alice"
        );
        assert_eq!(
            s.lookup(Kind::User, "username", "ALICE").unwrap().unwrap(),
            vec!["1"]
        );
        assert_eq!(
            s.lookup(Kind::User, "emails.value", "a@X.org")
                .unwrap()
                .unwrap(),
            vec!["1"]
        );
        assert_eq!(s.pending_after(0, 10).unwrap(), vec![1]);
        let e = s.entry(1).unwrap().unwrap();
        assert_eq!(e.op, Op::Upsert);
        assert_eq!(s.state(1).unwrap(), EntryState::Pending);
        s.mark_applied(
            &e,
            Some(&Link {
                dn: "uid=alice".into(),
                uuid: None,
            }),
        )
        .unwrap();
        assert_eq!(s.state(1).unwrap(), EntryState::Applied);
        assert!(s.pending_after(0, 10).unwrap().is_empty());
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn applying_keeps_links_and_their_index_right() {
        let (dir, s) = tmp();
        let link = |dn: &str, uuid: &str| Link {
            dn: dn.into(),
            uuid: Some(uuid.into()),
        };
        let put = |title: &str| {
            s.put(
                Kind::User,
                "1",
                &mut json!({"userName": "alice", "title": title}),
                title == "a",
                None,
            )
            .unwrap()
        };
        let e1 = s.entry(put("a")).unwrap().unwrap();
        s.mark_applied(&e1, Some(&link("uid=alice", "u-1")))
            .unwrap();
        // The same link again (a plain modify): nothing about it changes.
        let e2 = s.entry(put("b")).unwrap().unwrap();
        s.mark_applied(&e2, Some(&link("uid=alice", "u-1")))
            .unwrap();
        assert_eq!(s.state(e2.seq).unwrap(), EntryState::Applied);
        assert_eq!(
            s.link(Kind::User, "1").unwrap(),
            Some(link("uid=alice", "u-1"))
        );
        assert_eq!(
            s.linked_id(Kind::User, "u-1").unwrap().as_deref(),
            Some("1")
        );
        // A parked entry applied later loses its failure.
        let e3 = s.entry(put("c")).unwrap().unwrap();
        let f = Failure {
            code: Some(50),
            message: "insufficientAccessRights".into(),
            at: now_rfc3339(),
        };
        s.mark_failed(e3.seq, &f).unwrap();
        // A new entry behind the same DN (recreated by hand): both the
        // link and the reverse index move.
        s.mark_applied(&e3, Some(&link("uid=alice", "u-2")))
            .unwrap();
        assert_eq!(s.state(e3.seq).unwrap(), EntryState::Applied);
        assert!(s.parked().unwrap().is_empty());
        assert_eq!(
            s.link(Kind::User, "1").unwrap(),
            Some(link("uid=alice", "u-2"))
        );
        assert_eq!(s.linked_id(Kind::User, "u-1").unwrap(), None);
        assert_eq!(
            s.linked_id(Kind::User, "u-2").unwrap().as_deref(),
            Some("1")
        );
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn unique_username_is_enforced_case_insensitively() {
        let (dir, s) = tmp();
        s.put(
            Kind::User,
            "1",
            &mut json!({"userName": "alice"}),
            true,
            None,
        )
        .unwrap();
        let err = s
            .put(
                Kind::User,
                "2",
                &mut json!({"userName": "ALICE"}),
                true,
                None,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                WriteError::Conflict {
                    attr: "userName",
                    ..
                }
            ),
            "{err}"
        );
        // Renaming frees the old name.
        s.put(
            Kind::User,
            "1",
            &mut json!({"userName": "bob"}),
            false,
            None,
        )
        .unwrap();
        s.put(
            Kind::User,
            "2",
            &mut json!({"userName": "alice"}),
            true,
            None,
        )
        .unwrap();
        assert_eq!(
            s.lookup(Kind::User, "userName", "bob").unwrap().unwrap(),
            vec!["1"]
        );
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn version_check_and_delete() {
        let (dir, s) = tmp();
        let mut u = json!({"userName": "a"});
        s.put(Kind::User, "1", &mut u, true, None).unwrap();
        let err = s
            .put(
                Kind::User,
                "1",
                &mut json!({"userName": "a"}),
                false,
                Some("W/\"7\""),
            )
            .unwrap_err();
        assert!(matches!(err, WriteError::VersionMismatch { .. }));
        let seq = s.delete(Kind::User, "1", Some("W/\"1\"")).unwrap();
        assert_eq!(seq, 2);
        assert!(s.get(Kind::User, "1").unwrap().is_none());
        assert!(s
            .lookup(Kind::User, "userName", "a")
            .unwrap()
            .unwrap()
            .is_empty());
        let e = s.entry(2).unwrap().unwrap();
        assert_eq!(
            (e.op, e.snapshot["userName"].as_str()),
            (Op::Delete, Some("a"))
        );
        assert!(matches!(
            s.delete(Kind::User, "1", None),
            Err(WriteError::NotFound)
        ));
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn membership_changes_are_effective_deltas_with_emptiness() {
        let (dir, s) = tmp();
        for u in ["u1", "u2", "u3"] {
            s.put(Kind::User, u, &mut json!({"userName": u}), true, None)
                .unwrap();
        }
        let user = |id: &str| (id.to_string(), Kind::User);
        let ops = MemberOps {
            replace: Some(vec![]),
            ..Default::default()
        };
        let seq = s
            .put_with_members(
                Kind::Group,
                "g",
                &mut json!({"displayName": "G"}),
                true,
                None,
                Some(&ops),
            )
            .unwrap();
        let m = s.entry(seq).unwrap().unwrap().members.unwrap();
        assert_eq!(
            (m.empty_before, m.empty_after, m.add.len()),
            (true, true, 0)
        );

        let ops = MemberOps {
            add: vec![user("u1"), user("u2"), user("u1")],
            ..Default::default()
        };
        let seq = s
            .put_with_members(
                Kind::Group,
                "g",
                &mut json!({"displayName": "G"}),
                false,
                None,
                Some(&ops),
            )
            .unwrap();
        let m = s.entry(seq).unwrap().unwrap().members.unwrap();
        assert_eq!(m.add, vec!["u1", "u2"]);
        assert_eq!((m.empty_before, m.empty_after), (true, false));

        // Adding an existing member and removing a non-member change nothing.
        let ops = MemberOps {
            add: vec![user("u1")],
            remove: vec!["u3".into()],
            ..Default::default()
        };
        let seq = s
            .put_with_members(
                Kind::Group,
                "g",
                &mut json!({"displayName": "G"}),
                false,
                None,
                Some(&ops),
            )
            .unwrap();
        let m = s.entry(seq).unwrap().unwrap().members.unwrap();
        assert!(m.add.is_empty() && m.remove.is_empty() && !m.empty_after);

        let ops = MemberOps {
            remove: vec!["u1".into()],
            ..Default::default()
        };
        let seq = s
            .put_with_members(
                Kind::Group,
                "g",
                &mut json!({"displayName": "G"}),
                false,
                None,
                Some(&ops),
            )
            .unwrap();
        assert!(!s.entry(seq).unwrap().unwrap().members.unwrap().empty_after);
        assert_eq!(s.members("g").unwrap(), vec![user("u2")]);
        assert_eq!(s.groups_of("u2").unwrap(), vec!["g"]);

        // Deleting the last member's user empties the group, journaled
        // before the user's deletion.
        let last = s.delete(Kind::User, "u2", None).unwrap();
        let group_entry = s.entry(last - 1).unwrap().unwrap();
        assert_eq!(
            (group_entry.kind, group_entry.id.as_str()),
            (Kind::Group, "g")
        );
        let m = group_entry.members.unwrap();
        assert_eq!((m.remove, m.empty_after), (vec!["u2".to_string()], true));
        assert_eq!(s.entry(last).unwrap().unwrap().op, Op::Delete);
        assert!(s.members("g").unwrap().is_empty());
        assert!(s.groups_of("u2").unwrap().is_empty());

        // Replacing the whole list computes the difference.
        let ops = MemberOps {
            add: vec![user("u1"), user("u3")],
            ..Default::default()
        };
        s.put_with_members(
            Kind::Group,
            "g",
            &mut json!({"displayName": "G"}),
            false,
            None,
            Some(&ops),
        )
        .unwrap();
        let ops = MemberOps {
            replace: Some(vec![user("u3")]),
            ..Default::default()
        };
        let seq = s
            .put_with_members(
                Kind::Group,
                "g",
                &mut json!({"displayName": "G"}),
                false,
                None,
                Some(&ops),
            )
            .unwrap();
        let m = s.entry(seq).unwrap().unwrap().members.unwrap();
        assert_eq!((m.add.len(), m.remove.clone()), (0, vec!["u1".to_string()]));
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn allocation_counts_up_within_the_range() {
        let (dir, s) = tmp();
        assert_eq!(
            s.allocate(Kind::User, "uidNumber", 10, 12).unwrap(),
            Some(10)
        );
        assert_eq!(
            s.allocate(Kind::User, "uidnumber", 10, 12).unwrap(),
            Some(11)
        );
        assert_eq!(
            s.allocate(Kind::Group, "uidNumber", 10, 12).unwrap(),
            Some(10),
            "per kind"
        );
        assert_eq!(
            s.allocate(Kind::User, "uidNumber", 10, 12).unwrap(),
            Some(12)
        );
        assert_eq!(
            s.allocate(Kind::User, "uidNumber", 10, 12).unwrap(),
            None,
            "used up"
        );
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_store_of_another_format_version_is_refused() {
        let (dir, s) = tmp();
        drop(s);
        {
            let db = sled::open(&dir).unwrap();
            let t = db.open_tree("scim2ldap").unwrap();
            t.insert(b"mformat", b"99".to_vec()).unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(&dir).err().expect("refused");
        let msg = err.to_string();
        assert!(
            matches!(err, StoreError::Version { .. }) && msg.contains("format version 99"),
            "{msg}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn sequential_pages_match_a_full_scan_and_see_new_resources() {
        let (dir, s) = tmp();
        for i in 0..25 {
            s.put(
                Kind::User,
                &format!("id{i:02}"),
                &mut json!({"userName": format!("u{i}")}),
                true,
                None,
            )
            .unwrap();
        }
        let ids = |v: Vec<Value>| {
            v.iter()
                .map(|r| r["userName"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let all = ids(s.scan(Kind::User).map(Result::unwrap).collect());
        let mut paged = Vec::new();
        for start in (0..25).step_by(10) {
            paged.extend(ids(s.scan_page(Kind::User, start, 10).unwrap()));
        }
        assert_eq!(paged, all);
        assert_eq!(s.count(Kind::User), 25);
        // Second walk uses the cursors; a create in between moves positions.
        assert_eq!(
            ids(s.scan_page(Kind::User, 10, 10).unwrap()),
            all[10..20].to_vec()
        );
        s.put(
            Kind::User,
            "id00a",
            &mut json!({"userName": "new"}),
            true,
            None,
        )
        .unwrap();
        assert_eq!(s.count(Kind::User), 26);
        let page = ids(s.scan_page(Kind::User, 0, 3).unwrap());
        assert_eq!(
            page,
            vec!["u0".to_string(), "new".to_string(), "u1".to_string()]
        );
        assert_eq!(
            ids(s.scan_page(Kind::User, 10, 10).unwrap())[0],
            all[9],
            "cursors were forgotten"
        );
        s.delete(Kind::User, "id00a", None).unwrap();
        assert_eq!(s.count(Kind::User), 25);
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn reopen_keeps_seq_and_data() {
        let (dir, s) = tmp();
        let seq = s
            .put(Kind::User, "1", &mut json!({"userName": "a"}), true, None)
            .unwrap();
        s.commit(seq).await.unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.last_seq(), 1);
        assert_eq!(
            s.put(Kind::User, "2", &mut json!({"userName": "b"}), true, None)
                .unwrap(),
            2
        );
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }
    #[test]
    fn skip_retry_requeue_and_ordering_questions() {
        let (dir, s) = tmp();
        let a1 = s
            .put(Kind::User, "a", &mut json!({"userName": "a"}), true, None)
            .unwrap();
        let a2 = s
            .put(
                Kind::User,
                "a",
                &mut json!({"userName": "a", "title": "x"}),
                false,
                None,
            )
            .unwrap();
        let b1 = s
            .put(Kind::User, "b", &mut json!({"userName": "b"}), true, None)
            .unwrap();
        assert_eq!(s.unapplied_before(Kind::User, "a", a2).unwrap(), Some(a1));
        assert_eq!(s.unapplied_before(Kind::User, "b", a2).unwrap(), None);
        assert!(!s.is_settled(Kind::User, "a").unwrap());
        // Park a1: retry un-parks it; retry of an entry that is not parked
        // says so.
        let f = Failure {
            code: Some(65),
            message: "objectClassViolation".into(),
            at: now_rfc3339(),
        };
        s.mark_failed(a1, &f).unwrap();
        assert_eq!(s.parked().unwrap(), vec![a1]);
        assert_eq!(s.retry(a1).unwrap(), Change::Done);
        assert_eq!(s.retry(a1).unwrap(), Change::NotApplicable);
        assert_eq!(s.retry(99).unwrap(), Change::NoSuchEntry);
        // Skip it: no longer pending, recorded as skipped.
        s.mark_failed(a1, &f).unwrap();
        assert_eq!(s.skip(a1).unwrap(), Change::Done);
        assert_eq!(s.state(a1).unwrap(), EntryState::Applied);
        assert!(s
            .view(s.entry(a1).unwrap().unwrap())
            .unwrap()
            .skipped
            .is_some());
        assert_eq!(s.skip(a1).unwrap(), Change::NotApplicable);
        assert_eq!(s.pending_after(0, 10).unwrap(), vec![a2, b1]);
        // Apply the rest; then requeue everything: the skipped one stays out.
        for seq in [a2, b1] {
            let e = s.entry(seq).unwrap().unwrap();
            let link = Link {
                dn: format!("uid={}", e.id),
                uuid: Some(format!("uuid-{}", e.id)),
            };
            s.mark_applied(&e, Some(&link)).unwrap();
        }
        assert!(s.is_settled(Kind::User, "a").unwrap());
        assert_eq!(
            s.linked_id(Kind::User, "uuid-b").unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(s.requeue(1, u64::MAX).unwrap(), 2);
        assert_eq!(s.pending_after(0, 10).unwrap(), vec![a2, b1]);
        let st = s.stats().unwrap();
        assert_eq!(
            (st.entries, st.pending, st.parked, st.skipped),
            (3, 2, 0, 1)
        );
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn adopt_records_an_applied_entry_and_refuses_duplicates() {
        let (dir, s) = tmp();
        let link = Link {
            dn: "uid=alice,ou=people".into(),
            uuid: Some("u-1".into()),
        };
        let seq = s
            .adopt(Kind::User, "1", &mut json!({"userName": "alice"}), &link)
            .unwrap();
        assert_eq!(s.state(seq).unwrap(), EntryState::Applied);
        assert!(s.pending_after(0, 10).unwrap().is_empty());
        assert_eq!(s.link(Kind::User, "1").unwrap(), Some(link.clone()));
        assert_eq!(
            s.linked_id(Kind::User, "u-1").unwrap().as_deref(),
            Some("1")
        );
        assert_eq!(
            s.lookup(Kind::User, "userName", "ALICE").unwrap().unwrap(),
            vec!["1"]
        );
        // The same entry again, under another name: already linked.
        let err = s
            .adopt(Kind::User, "2", &mut json!({"userName": "al"}), &link)
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict { attr: "entry", .. }),
            "{err}"
        );
        // Another entry with a taken userName.
        let other = Link {
            dn: "uid=alice,ou=other".into(),
            uuid: Some("u-2".into()),
        };
        let err = s
            .adopt(Kind::User, "3", &mut json!({"userName": "Alice"}), &other)
            .unwrap_err();
        assert!(
            matches!(
                err,
                WriteError::Conflict {
                    attr: "userName",
                    ..
                }
            ),
            "{err}"
        );
        // The link index survives a reopen and a delete clears it.
        drop(s);
        let s = Store::open(&dir).unwrap();
        let d = s.delete(Kind::User, "1", None).unwrap();
        s.mark_applied(&s.entry(d).unwrap().unwrap(), None).unwrap();
        assert_eq!(s.linked_id(Kind::User, "u-1").unwrap(), None);
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn compaction_keeps_latest_snapshots_and_unapplied_entries() {
        let (dir, s) = tmp();
        let mut seqs = Vec::new();
        for (id, title) in [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1")] {
            let create = s.get(Kind::User, id).unwrap().is_none();
            seqs.push(
                s.put(
                    Kind::User,
                    id,
                    &mut json!({"userName": id, "title": title}),
                    create,
                    None,
                )
                .unwrap(),
            );
        }
        let del_b = s.delete(Kind::User, "b", None).unwrap();
        // Everything applied except c's create.
        for seq in [seqs[0], seqs[1], seqs[2], del_b] {
            s.mark_applied(&s.entry(seq).unwrap().unwrap(), None)
                .unwrap();
        }
        // A cutoff in the past removes nothing.
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(s.compact(past).unwrap().removed, 0);
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let r = s.compact(future).unwrap();
        // Removed: a's first write, b's create and b's delete. Kept: a's
        // latest snapshot, c's pending create.
        assert_eq!((r.removed, r.kept), (3, 2));
        let left: Vec<u64> = s.entries_from(0).map(|e| e.unwrap().seq).collect();
        assert_eq!(left, vec![seqs[1], seqs[3]]);
        assert_eq!(s.pending_after(0, 10).unwrap(), vec![seqs[3]]);
        assert!(s.stats().unwrap().last_compaction.is_some());
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }
}
