//! The journal: accepted operations in order (`j` keys), each immutable
//! once written, and their state beside them: pending (`q`), parked with
//! the directory's answer (`f`), skipped by an administrator (`s`). Marking
//! applied, parking, retry, skip, requeue, compaction and stats.
//!
//! Knows journal entries and their states; what applying one means to the
//! directory is the writer's.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{
    kind_prefix, res_key, seq_key, seq_of, JOURNAL, LINK, META_COMPACTION, META_NO_PASSWORDS,
    META_SEQ, PARKED, PENDING, RESOURCE, SKIPPED,
};
pub use crate::journal::{JournalEntry, MemberChange, Op, Password};

use super::links::Link;
use super::{decode, encode, now_rfc3339, Kind, Store, StoreError};

/// An entry accepted now.
pub(super) fn new_entry(
    seq: u64,
    kind: Kind,
    id: &str,
    op: Op,
    snapshot: Value,
    members: Option<MemberChange>,
) -> JournalEntry {
    JournalEntry {
        seq,
        at: now_rfc3339(),
        kind,
        id: id.to_string(),
        op,
        snapshot,
        members,
        password_file: None,
        password: None,
        superseded: false,
    }
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

/// Why the writer parked an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// LDAP result code, when the directory answered.
    pub code: Option<u32>,
    pub message: String,
    pub at: String,
}

/// State of a journal entry.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryState {
    Pending,
    Applied,
    Failed(Failure),
}

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

impl Store {
    /// Holds the password of an entry about to be journaled, durably,
    /// before its batch is applied (and before the write lock is taken:
    /// its fsyncs do not hold up other writes). Returns the file's name.
    pub(super) fn hold_password(&self, password: &Password) -> Result<String, StoreError> {
        // Written and fsynced: off the async workers.
        crate::offload::blocking(|| self.inner.secrets.put(password))
    }

    /// Drops a held password whose entry was not journaled (the write was
    /// refused).
    pub(super) fn drop_password(&self, file: &str) {
        self.inner.secrets.forget(file);
    }

    /// The password files that pending entries name.
    pub(super) fn pending_password_files(
        tree: &sled::Tree,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        #[derive(Deserialize)]
        struct Ref {
            #[serde(default)]
            password_file: Option<String>,
        }
        let mut out = std::collections::HashSet::new();
        for k in tree.scan_prefix([PENDING]).keys() {
            let seq = seq_of(&k?);
            if let Some(v) = tree.get(seq_key(JOURNAL, seq))? {
                let r: Ref = decode(&v, || format!("journal {seq}"))?;
                out.extend(r.password_file);
            }
        }
        Ok(out)
    }
}

/// Removes the SCIM `password` from every snapshot and journal entry of a
/// store written before passwords were kept apart (they were stored like
/// any attribute then). Run once, recorded under `mnopw`. Returns how many
/// records were rewritten.
pub(super) fn strip_stored_passwords(tree: &sled::Tree) -> Result<usize, StoreError> {
    if tree.contains_key(META_NO_PASSWORDS)? {
        return Ok(0);
    }
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for prefix in [RESOURCE, JOURNAL] {
        for item in tree.scan_prefix([prefix]) {
            let (k, v) = item?;
            // Cheap test first: most records have no password at all.
            if !v.windows(10).any(|w| w == b"\"password\"") {
                continue;
            }
            let mut value: Value = decode(&v, || String::from_utf8_lossy(&k).into_owned())?;
            let target = if prefix == JOURNAL {
                value.get_mut("snapshot")
            } else {
                Some(&mut value)
            };
            let removed = target
                .and_then(Value::as_object_mut)
                .and_then(|o| o.remove("password"))
                .is_some();
            if removed {
                batch.insert(k, encode(&value, || "record without its password".into())?);
                n += 1;
            }
        }
    }
    batch.insert(META_NO_PASSWORDS.to_vec(), b"1".to_vec());
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(n)
}

/// Migrates a format-2 journal, whose Upsert entries carried the full
/// snapshot, to references: the snapshot is dropped from every Upsert whose
/// resource still exists (the entry then reads the resource's current
/// snapshot, as a new one does). An Upsert of a resource deleted since
/// keeps its snapshot and is read as it was. Returns how many entries were
/// rewritten; the caller records the new format version after it.
pub(super) fn refer_to_snapshots(tree: &sled::Tree) -> Result<usize, StoreError> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in tree.scan_prefix([JOURNAL]) {
        let (k, v) = item?;
        let mut e: JournalEntry = decode(&v, || format!("journal {}", seq_of(&k)))?;
        if e.op != Op::Upsert
            || e.snapshot.is_null()
            || !tree.contains_key(res_key(RESOURCE, e.kind, &e.id))?
        {
            continue;
        }
        e.snapshot = Value::Null;
        batch.insert(k, encode(&e, || format!("journal {}", e.seq))?);
        n += 1;
    }
    tree.apply_batch(batch)?;
    Ok(n)
}

/// Adds `entry` to `batch`, pending, as the last seq assigned. An Upsert
/// is stored without its snapshot (it refers to the resource's, written in
/// the same batch): each snapshot is stored once.
pub(super) fn journal_into(
    batch: &mut sled::Batch,
    entry: &JournalEntry,
) -> Result<(), StoreError> {
    let seq = entry.seq;
    let reference;
    let stored = if entry.op == Op::Upsert && !entry.snapshot.is_null() {
        reference = JournalEntry {
            snapshot: Value::Null,
            ..entry.clone()
        };
        &reference
    } else {
        entry
    };
    batch.insert(
        seq_key(JOURNAL, seq),
        encode(stored, || format!("journal {seq}"))?,
    );
    batch.insert(
        seq_key(PENDING, seq),
        res_key(RESOURCE, entry.kind, &entry.id),
    );
    batch.insert(META_SEQ.to_vec(), seq.to_string().into_bytes());
    Ok(())
}

impl Store {
    /// Entry `seq` with its snapshot: an Upsert stored without one gets
    /// its resource's current snapshot ([`Store::resolve`]).
    pub fn entry(&self, seq: u64) -> Result<Option<JournalEntry>, StoreError> {
        match self.stored_entry(seq)? {
            None => Ok(None),
            Some(e) => self.resolve(e).map(Some),
        }
    }

    /// Entry `seq` as stored (an Upsert's snapshot is null unless an older
    /// version wrote it).
    fn stored_entry(&self, seq: u64) -> Result<Option<JournalEntry>, StoreError> {
        match self.inner.tree.get(seq_key(JOURNAL, seq))? {
            None => Ok(None),
            Some(v) => decode(&v, || format!("journal {seq}")).map(Some),
        }
    }

    /// Fills the snapshot of an Upsert stored without one: the resource's
    /// current snapshot (entries of one resource are applied in order and
    /// converge, so the latest state early is correct). When the resource
    /// has been deleted since, the entry is `superseded`: its snapshot is
    /// the last state (from the Delete entry that follows it) and applying
    /// it converges to the resource's absence. An entry that carries its
    /// snapshot (a Delete, or an Upsert written by format 2) is as it was.
    fn resolve(&self, mut e: JournalEntry) -> Result<JournalEntry, StoreError> {
        if e.op != Op::Upsert || !e.snapshot.is_null() {
            return Ok(e);
        }
        match self.get(e.kind, &e.id)? {
            Some(current) => e.snapshot = current,
            None => {
                e.superseded = true;
                e.snapshot = self.last_state_after(e.kind, &e.id, e.seq)?;
            }
        }
        Ok(e)
    }

    /// The snapshot carried by the first Delete of `kind`/`id` after
    /// `seq`: looked for among the pending entries (where it waits behind
    /// the entry being resolved), then the whole journal after `seq` (a
    /// replayed entry). Null when there is none (compacted).
    fn last_state_after(&self, kind: Kind, id: &str, seq: u64) -> Result<Value, StoreError> {
        let want = res_key(RESOURCE, kind, id);
        for item in self
            .inner
            .tree
            .range(seq_key(PENDING, seq.saturating_add(1))..seq_key(PENDING, u64::MAX))
        {
            let (k, v) = item?;
            if v.as_ref() != want.as_slice() {
                continue;
            }
            if let Some(later) = self.stored_entry(seq_of(&k))? {
                if later.op == Op::Delete {
                    return Ok(later.snapshot);
                }
            }
        }
        for item in self
            .inner
            .tree
            .range(seq_key(JOURNAL, seq.saturating_add(1))..seq_key(JOURNAL, u64::MAX))
        {
            let (k, v) = item?;
            let head: EntryHead = decode(&v, || format!("journal {}", seq_of(&k)))?;
            if head.op == Op::Delete && head.kind == kind && head.id == id {
                let later: JournalEntry = decode(&v, || format!("journal {}", head.seq))?;
                return Ok(later.snapshot);
            }
        }
        Ok(Value::Null)
    }

    /// Seqs of entries not yet applied, oldest first, starting after `after`.
    pub fn pending_after(&self, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .inner
            .tree
            .range(seq_key(PENDING, after.saturating_add(1))..seq_key(PENDING, u64::MAX))
            .keys()
        {
            let k = item?;
            if k.first() != Some(&PENDING) {
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
        self.inner.tree.scan_prefix([PENDING]).keys().count()
    }

    pub fn state(&self, seq: u64) -> Result<EntryState, StoreError> {
        if let Some(f) = self.inner.tree.get(seq_key(PARKED, seq))? {
            let f: Failure = decode(&f, || format!("failure {seq}"))?;
            return Ok(EntryState::Failed(f));
        }
        if self.inner.tree.contains_key(seq_key(PENDING, seq))? {
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
        let was_pending = self.inner.tree.contains_key(seq_key(PENDING, entry.seq))?;
        batch.remove(seq_key(PENDING, entry.seq));
        let was_parked = self.inner.tree.contains_key(seq_key(PARKED, entry.seq))?;
        if was_parked {
            batch.remove(seq_key(PARKED, entry.seq));
        }
        self.link_into(&mut batch, entry.kind, &entry.id, link)?;
        super::applied::record_into(&mut batch, entry)?;
        self.inner.tree.apply_batch(batch)?;
        // Applied: the password has reached the directory, and the store
        // forgets it (a replay of this entry then leaves the directory's
        // password alone).
        if let Some(file) = &entry.password_file {
            self.inner.secrets.forget(file);
        }
        self.inner.queue.pending(-i64::from(was_pending));
        self.inner.queue.parked(-i64::from(was_parked));
        self.count_applied();
        Ok(())
    }

    /// The password a journal entry carried, while the store still holds
    /// it (until the entry is applied or skipped): for the writer only.
    pub fn pending_password(&self, entry: &JournalEntry) -> Result<Option<Password>, StoreError> {
        match &entry.password_file {
            Some(file) => self.inner.secrets.get(file),
            None => Ok(None),
        }
    }

    /// How many pending entries' passwords the store holds.
    pub fn pending_passwords(&self) -> usize {
        self.inner.secrets.count()
    }

    /// Parks an entry: it stays pending (so later entries of the same
    /// resource wait behind it) and carries the failure.
    pub fn mark_failed(&self, seq: u64, failure: &Failure) -> Result<(), StoreError> {
        let old = self
            .inner
            .tree
            .insert(seq_key(PARKED, seq), encode(failure, || "failure".into())?)?;
        self.inner.queue.parked(i64::from(old.is_none()));
        Ok(())
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
        let want = res_key(RESOURCE, kind, id);
        for item in self
            .inner
            .tree
            .range(seq_key(PENDING, 0)..seq_key(PENDING, before))
        {
            let (k, v) = item?;
            if v.as_ref() == want.as_slice() {
                return Ok(Some(seq_of(&k)));
            }
        }
        Ok(None)
    }

    /// Journal entries from `from` on, oldest first.
    pub fn entries_from(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<JournalEntry, StoreError>> + '_ {
        self.inner
            .tree
            .range(seq_key(JOURNAL, from)..seq_key(JOURNAL, u64::MAX))
            .map(|item| {
                let (k, v) = item?;
                self.resolve(decode(&v, || format!("journal {}", seq_of(&k)))?)
            })
    }

    /// Every journal entry's head, oldest first (the snapshots are skipped
    /// over, not built).
    fn heads(&self) -> impl Iterator<Item = Result<EntryHead, StoreError>> + '_ {
        self.inner.tree.scan_prefix([JOURNAL]).map(|item| {
            let (k, v) = item?;
            decode(&v, || format!("journal {}", seq_of(&k)))
        })
    }

    /// One entry with its state, for the journal commands.
    pub fn view(&self, entry: JournalEntry) -> Result<EntryView, StoreError> {
        let state = self.state(entry.seq)?;
        let skipped = self
            .inner
            .tree
            .get(seq_key(SKIPPED, entry.seq))?
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
        for k in self.inner.tree.scan_prefix([PARKED]).keys() {
            out.push(seq_of(&k?));
        }
        Ok(out)
    }

    /// Un-parks an entry: the writer tries it again on its next pass.
    pub fn retry(&self, seq: u64) -> Result<Change, StoreError> {
        if !self.inner.tree.contains_key(seq_key(JOURNAL, seq))? {
            return Ok(Change::NoSuchEntry);
        }
        match self.inner.tree.remove(seq_key(PARKED, seq))? {
            Some(_) => {
                self.inner.queue.parked(-1);
                Ok(Change::Done)
            }
            None => Ok(Change::NotApplicable),
        }
    }

    /// Drops a pending or parked entry without applying it, so that later
    /// entries of the same resource go ahead. Recorded with the time.
    pub fn skip(&self, seq: u64) -> Result<Change, StoreError> {
        if !self.inner.tree.contains_key(seq_key(JOURNAL, seq))? {
            return Ok(Change::NoSuchEntry);
        }
        if !self.inner.tree.contains_key(seq_key(PENDING, seq))? {
            return Ok(Change::NotApplicable);
        }
        let was_parked = self.inner.tree.contains_key(seq_key(PARKED, seq))?;
        let file = self.stored_entry(seq)?.and_then(|e| e.password_file);
        let mut batch = sled::Batch::default();
        batch.remove(seq_key(PENDING, seq));
        batch.remove(seq_key(PARKED, seq));
        batch.insert(seq_key(SKIPPED, seq), now_rfc3339().into_bytes());
        self.inner.tree.apply_batch(batch)?;
        self.inner.queue.pending(-1);
        self.inner.queue.parked(-i64::from(was_parked));
        self.inner.db.flush()?;
        // A skipped entry's password is never sent.
        if let Some(file) = file {
            self.inner.secrets.forget(&file);
        }
        Ok(Change::Done)
    }

    /// Queues every kept entry in `from..=to` to be applied again, in
    /// order (entries already pending stay as they are, skipped ones stay
    /// skipped). Returns how many were queued.
    pub fn requeue(&self, from: u64, to: u64) -> Result<usize, StoreError> {
        let _guard = self.write_lock();
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self
            .inner
            .tree
            .range(seq_key(JOURNAL, from)..=seq_key(JOURNAL, to))
            .keys()
        {
            let k = item?;
            let seq = seq_of(&k);
            if self.inner.tree.contains_key(seq_key(PENDING, seq))?
                || self.inner.tree.contains_key(seq_key(SKIPPED, seq))?
            {
                continue;
            }
            let Some(entry) = self.stored_entry(seq)? else {
                continue;
            };
            batch.insert(
                seq_key(PENDING, seq),
                res_key(RESOURCE, entry.kind, &entry.id),
            );
            // The directory may hold anything now: the writer reads it.
            self.forget_applied_into(&mut batch, entry.kind, &entry.id)?;
            n += 1;
        }
        self.inner.tree.apply_batch(batch)?;
        self.inner.queue.pending(n as i64);
        self.inner.db.flush()?;
        Ok(n)
    }

    /// Removes applied journal entries accepted before `cutoff`, except
    /// the latest entry of each resource that still exists (it refers to
    /// the resource's snapshot, so that a replay into an empty directory
    /// rebuilds every entry).
    /// Pending and parked entries are never removed.
    pub fn compact(&self, cutoff: std::time::SystemTime) -> Result<CompactReport, StoreError> {
        self.compact_with_progress(cutoff, &|_, _| {})
    }

    /// [`Store::compact`], calling `progress(read, total)` as it reads the
    /// journal (twice: `total` is twice the entries).
    pub fn compact_with_progress(
        &self,
        cutoff: std::time::SystemTime,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<CompactReport, StoreError> {
        let total = 2 * self.inner.tree.scan_prefix([JOURNAL]).keys().count() as u64;
        let mut read = 0;
        // The latest entry of each resource.
        let mut latest: HashMap<(Kind, String), (u64, Op)> = HashMap::new();
        for e in self.heads() {
            let e = e?;
            read += 1;
            progress(read, total);
            latest.insert((e.kind, e.id.clone()), (e.seq, e.op));
        }
        let mut report = CompactReport::default();
        let mut candidates = Vec::new();
        for e in self.heads() {
            let e = e?;
            read += 1;
            progress(read.min(total), total);
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
        let _guard = self.write_lock();
        let mut batch = sled::Batch::default();
        for seq in candidates {
            if self.inner.tree.contains_key(seq_key(PENDING, seq))? {
                report.kept += 1;
                continue;
            }
            batch.remove(seq_key(JOURNAL, seq));
            batch.remove(seq_key(SKIPPED, seq));
            report.removed += 1;
        }
        batch.insert(
            META_COMPACTION.to_vec(),
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
        let oldest = match t.scan_prefix([JOURNAL]).next() {
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
            entries: count(&[JOURNAL]),
            oldest_seq: oldest.as_ref().map(|o| o.0),
            oldest_at: oldest.and_then(|o| o.1),
            pending: count(&[PENDING]).saturating_sub(count(&[PARKED])),
            parked: count(&[PARKED]),
            skipped: count(&[SKIPPED]),
            users: count(&kind_prefix(RESOURCE, Kind::User)),
            groups: count(&kind_prefix(RESOURCE, Kind::Group)),
            links: count(&[LINK]),
            size_on_disk: self.inner.db.size_on_disk().unwrap_or(0),
            last_compaction: t
                .get(META_COMPACTION)?
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
        })
    }
}
