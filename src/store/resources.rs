//! Resources: the current snapshot of every User and Group (`r` keys), the
//! indexes that answer filters and enforce uniqueness (`i` keys), the
//! allocation counters (`n` keys), listing and paging, and the one typed
//! write ([`Store::write`]) and delete that journal each change.
//!
//! Knows SCIM JSON as JSON (ids, indexed attributes, `meta.version`), not
//! schemas, the mapping or the directory.

use std::collections::HashMap;

use serde_json::Value;

use super::journal::{journal_into, new_entry, Op};
use super::keys::{self, index_prefix, kind_prefix, res_key, KindByte, INDEX, RESOURCE};
use super::members::MemberOps;
use super::spill::KeyWrites;
use super::{decode, encode, Kind, Store, StoreError, WriteError};

/// An indexed attribute of a kind.
#[derive(Debug)]
pub struct IndexDef {
    pub attr: &'static str,
    pub matching: Matching,
    pub unique: bool,
}

/// How an index compares values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// As LDAP's caseIgnoreMatch does (RFC 4518: NFKC, case folding,
    /// insignificant spaces): names the directory treats as equal share
    /// one key, so uniqueness here is uniqueness there. A lookup through
    /// such an index returns candidates; the filter is then evaluated on
    /// each with SCIM's own rules.
    Ldap,
    /// Byte for byte.
    Exact,
}

impl Matching {
    pub(super) fn key(self, value: &str) -> String {
        match self {
            Matching::Ldap => scim2ldap_core::ldapprep::equality_key(value),
            Matching::Exact => value.to_string(),
        }
    }
}

/// Where a resource keeps the equality key of its entry's RDN (written by
/// the API from the mapping's placement; `attr=value` prepared as LDAP
/// compares it), so that two resources whose entries would share a DN are
/// refused like two users with one userName. With `unique = true`
/// attributes in the mapping it is a list: the RDN's key, then theirs.
/// Never shown to clients.
pub const RDN_KEY: &str = "scim2ldap:rdn";

/// The indexed attributes of `kind`. Changing this list (or how one
/// compares) needs the indexes rebuilt: bump [`super::INDEX_VERSION`].
pub fn indexes(kind: Kind) -> &'static [IndexDef] {
    match kind {
        Kind::User => &[
            IndexDef {
                attr: "userName",
                matching: Matching::Ldap,
                unique: true,
            },
            IndexDef {
                attr: "externalId",
                matching: Matching::Exact,
                unique: false,
            },
            IndexDef {
                attr: "emails.value",
                matching: Matching::Ldap,
                unique: false,
            },
            IndexDef {
                attr: RDN_KEY,
                matching: Matching::Exact,
                unique: true,
            },
        ],
        // displayName is unique: a group's DN is usually built from it,
        // and two groups cannot share a DN.
        Kind::Group => &[
            IndexDef {
                attr: "displayName",
                matching: Matching::Ldap,
                unique: true,
            },
            IndexDef {
                attr: "externalId",
                matching: Matching::Exact,
                unique: false,
            },
            IndexDef {
                attr: RDN_KEY,
                matching: Matching::Exact,
                unique: true,
            },
        ],
    }
}

/// A new state of one resource, for [`Store::write`].
#[derive(Debug)]
pub struct Write<'a> {
    pub kind: Kind,
    pub id: &'a str,
    /// The resource's SCIM JSON (a group's without `members`). Its
    /// `meta.version` is set to the seq of the write.
    pub resource: &'a mut Value,
    pub intent: Intent<'a>,
    /// For a group: what the request asks of its members. `None` leaves
    /// them alone, and the journal entry carries no member change.
    pub members: Option<&'a MemberOps>,
}

/// Whether a [`Write`] makes a new resource or changes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent<'a> {
    /// Refused with [`WriteError::IdExists`] if the id is taken.
    Create,
    /// Refused with [`WriteError::NotFound`] if the id is not there, and
    /// with [`WriteError::VersionMismatch`] unless the stored resource is
    /// at `if_version` (when given).
    Update { if_version: Option<&'a str> },
}

/// Per kind: the number of resources, and where pages start (position →
/// key), so that paging through 100,000 users reads each page once, not
/// everything before it. Forgotten whenever a resource of the kind is
/// created or removed.
#[derive(Default)]
pub(super) struct Listing {
    count: HashMap<u8, usize>,
    cursors: HashMap<(u8, usize), Vec<u8>>,
    /// Bumped by every invalidation: a count or cursor worked out across
    /// one is not kept.
    generation: u64,
}

impl Store {
    pub fn get(&self, kind: Kind, id: &str) -> Result<Option<Value>, StoreError> {
        match self.inner.tree.get(res_key(RESOURCE, kind, id))? {
            None => Ok(None),
            Some(v) => decode(&v, || format!("{} {id}", kind.name())).map(Some),
        }
    }

    pub fn exists(&self, kind: Kind, id: &str) -> Result<bool, StoreError> {
        Ok(self.inner.tree.contains_key(res_key(RESOURCE, kind, id))?)
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
        let mut got = None;
        self.inner
            .tree
            .fetch_and_update(keys::counter_key(kind, attribute), |old| {
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

    /// Ids whose indexed attribute `attr` equals `value` (after the index's
    /// normalisation). `None` when `attr` is not indexed for `kind`.
    pub fn lookup(
        &self,
        kind: Kind,
        attr: &str,
        value: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let Some((n, def)) = indexes(kind)
            .iter()
            .enumerate()
            .find(|(_, d)| d.attr.eq_ignore_ascii_case(attr))
        else {
            return Ok(None);
        };
        let norm = def.matching.key(value);
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
            .scan_prefix(kind_prefix(RESOURCE, kind))
            .map(move |item| {
                let (k, v) = item?;
                decode(&v, || String::from_utf8_lossy(&k).into_owned())
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
            .scan_prefix(kind_prefix(RESOURCE, kind))
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
    pub(super) fn forget_positions(&self, kind: Kind) {
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
        let prefix = kind_prefix(RESOURCE, kind);
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
            out.push(decode(&v, || String::from_utf8_lossy(&k).into_owned())?);
        }
        Ok(out)
    }

    /// Records a new state of a resource (create or update, with the change
    /// to a group's members) and journals it, in one batch.
    ///
    /// Sets `meta.version` of the resource to the new seq. Returns the seq;
    /// call [`Store::commit`] before acknowledging.
    pub fn write(&self, w: Write<'_>) -> Result<u64, WriteError> {
        self.write_with_password(w, None)
    }

    /// [`Store::write`] with a password for the directory (never in the
    /// resource): held beside the journal entry until it is applied.
    pub fn write_with_password(
        &self,
        w: Write<'_>,
        password: Option<&super::journal::Password>,
    ) -> Result<u64, WriteError> {
        // Held (synced) before the write lock, so that the fsyncs of
        // concurrent writes with passwords overlap; dropped again if the
        // write is refused.
        let file = password.map(|p| self.hold_password(p)).transpose()?;
        let written = self.write_locked(w, file.clone());
        if let (Err(_), Some(f)) = (&written, &file) {
            self.drop_password(f);
        }
        written
    }

    fn write_locked(&self, w: Write<'_>, password_file: Option<String>) -> Result<u64, WriteError> {
        let Write {
            kind,
            id,
            resource,
            intent,
            members,
        } = w;
        // Write-only: a password is never part of a snapshot (nor of the
        // journal entry that carries it), whoever the caller is.
        if let Some(o) = resource.as_object_mut() {
            o.remove("password");
        }
        let mut last = self.write_lock();
        let old = self.get(kind, id)?;
        match (&old, intent) {
            (Some(_), Intent::Create) => {
                return Err(WriteError::IdExists {
                    kind: kind.name(),
                    id: id.to_string(),
                })
            }
            (None, Intent::Update { .. }) => return Err(WriteError::NotFound),
            (
                Some(old),
                Intent::Update {
                    if_version: Some(want),
                },
            ) => {
                let current = version_of(old);
                if current != want {
                    return Err(WriteError::VersionMismatch { current });
                }
            }
            _ => {}
        }
        // Uniqueness, checked under the write lock so two creates cannot race.
        self.check_unique(kind, id, old.as_ref(), resource)?;
        let seq = *last + 1;
        set_version(resource, seq);
        let mut batch = sled::Batch::default();
        index_changes(&mut batch, kind, id, old.as_ref(), Some(resource));
        batch.insert(
            res_key(RESOURCE, kind, id),
            encode(&*resource, || id.into())?,
        );
        let mut member_keys = KeyWrites::default();
        let change = match members {
            Some(ops) => Some(self.member_changes(&mut member_keys, id, ops)?),
            None => None,
        };
        // The entry refers to the snapshot written above (stored once).
        let mut entry = new_entry(seq, kind, id, Op::Upsert, Value::Null, change);
        entry.password_file = password_file;
        journal_into(&mut batch, &entry)?;
        let spilled = member_keys.settle(&mut batch, seq, &res_key(RESOURCE, kind, id));
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(StoreError::from)?;
        if let Some(s) = spilled {
            s.finish(&self.inner.tree)?;
        }
        // Every seq since the last one is a new pending entry.
        self.inner.queue.pending(seq.saturating_sub(*last) as i64);
        *last = seq;
        if old.is_none() {
            self.forget_positions(kind);
        }
        Ok(seq)
    }

    /// Refuses `resource` (of `kind`, with `id`, replacing `old`) if
    /// another resource holds one of its unique values. A value the
    /// resource already had is not checked again: two resources that came
    /// to share a key before it was stricter (a store written by an older
    /// version) can still be changed, just not renamed onto each other.
    /// Call under the write lock.
    pub(super) fn check_unique(
        &self,
        kind: Kind,
        id: &str,
        old: Option<&Value>,
        resource: &Value,
    ) -> Result<(), WriteError> {
        for (n, def) in indexes(kind).iter().enumerate() {
            if !def.unique {
                continue;
            }
            let had = old.map(|o| index_values(o, def)).unwrap_or_default();
            for v in index_values(resource, def) {
                if had.contains(&v) {
                    continue;
                }
                let prefix = index_prefix(kind, n, &v);
                for item in self.inner.tree.scan_prefix(&prefix).keys() {
                    let k = item.map_err(StoreError::from)?;
                    if &k[prefix.len()..] != id.as_bytes() {
                        return Err(WriteError::Taken {
                            kind: kind.name(),
                            attr: def.attr,
                            value: v,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes a resource and journals the deletion. `if_version`: refused
    /// unless the stored resource is at that version. A deleted resource is
    /// first removed from every group that lists it (one journal entry per
    /// group, before the deletion's), so each group stays valid. Returns
    /// the last seq.
    pub fn delete(
        &self,
        kind: Kind,
        id: &str,
        if_version: Option<&str>,
    ) -> Result<u64, WriteError> {
        let mut last = self.write_lock();
        let Some(old) = self.get(kind, id)? else {
            return Err(WriteError::NotFound);
        };
        if let Some(want) = if_version {
            let current = version_of(&old);
            if current != want {
                return Err(WriteError::VersionMismatch { current });
            }
        }
        let mut seq = *last;
        let mut batch = sled::Batch::default();
        let mut member_keys = KeyWrites::default();
        for gid in self.groups_of(id)? {
            let Some(mut group) = self.get(Kind::Group, &gid)? else {
                continue;
            };
            seq += 1;
            set_version(&mut group, seq);
            batch.insert(
                res_key(RESOURCE, Kind::Group, &gid),
                encode(&group, || gid.clone())?,
            );
            let ops = MemberOps {
                remove: vec![id.to_string()],
                only_members: true,
                ..Default::default()
            };
            let change = self.member_changes(&mut member_keys, &gid, &ops)?;
            journal_into(
                &mut batch,
                &new_entry(
                    seq,
                    Kind::Group,
                    &gid,
                    Op::Upsert,
                    Value::Null,
                    Some(change),
                ),
            )?;
        }
        if kind == Kind::Group {
            self.drop_members(&mut member_keys, id)?;
        }
        seq += 1;
        index_changes(&mut batch, kind, id, Some(&old), None);
        batch.remove(res_key(RESOURCE, kind, id));
        journal_into(&mut batch, &new_entry(seq, kind, id, Op::Delete, old, None))?;
        let spilled = member_keys.settle(&mut batch, seq, &res_key(RESOURCE, kind, id));
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(StoreError::from)?;
        if let Some(s) = spilled {
            s.finish(&self.inner.tree)?;
        }
        // Every seq since the last one is a new pending entry.
        self.inner.queue.pending(seq.saturating_sub(*last) as i64);
        *last = seq;
        self.forget_positions(kind);
        Ok(seq)
    }
}

/// Adds to `batch` the index keys of `id` that change from `old` to `new`.
pub(super) fn index_changes(
    batch: &mut sled::Batch,
    kind: Kind,
    id: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) {
    for (n, def) in indexes(kind).iter().enumerate() {
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
            out.push(def.matching.key(s));
        }
    };
    match (v, sub) {
        (Value::String(s), None) => push(s),
        // The RDN key and the mapping's unique attributes' keys.
        (Value::Array(items), None) if def.attr == RDN_KEY => {
            for item in items {
                if let Value::String(s) = item {
                    push(s);
                }
            }
        }
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

/// The weak ETag of a stored resource: `W/"<seq of its last write>"`.
pub fn version_of(resource: &Value) -> String {
    resource
        .pointer("/meta/version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(super) fn set_version(resource: &mut Value, seq: u64) {
    if let Some(obj) = resource.as_object_mut() {
        let meta = obj
            .entry("meta")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(m) = meta.as_object_mut() {
            m.insert("version".into(), Value::String(format!("W/\"{seq}\"")));
        }
    }
}

/// The `mindex` value of indexes computed by this version.
fn index_version() -> String {
    format!(
        "{}/{}",
        super::INDEX_VERSION,
        scim2ldap_core::ldapprep::key_version()
    )
}

/// Rebuilds the indexes when they were computed another way (an older
/// store, other Unicode tables).
pub(super) fn rebuild_indexes_if_stale(tree: &sled::Tree) -> Result<(), StoreError> {
    let current = index_version();
    if tree.get(keys::META_INDEX)?.as_deref() == Some(current.as_bytes()) {
        return Ok(());
    }
    rebuild_indexes(tree)
}

/// Drops every `i` key and computes them again from the snapshots, in
/// batches. Resources that now share a unique key (two userNames that
/// LDAP treats as equal, accepted by an older version) are kept and
/// logged: each can still be changed, but not renamed onto the other.
pub(super) fn rebuild_indexes(tree: &sled::Tree) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut n = 0usize;
    for k in tree.scan_prefix([INDEX]).keys() {
        batch.remove(k?);
        n += 1;
        if n % 10_000 == 0 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    tree.apply_batch(std::mem::take(&mut batch))?;
    let mut seen: HashMap<Vec<u8>, String> = HashMap::new();
    let mut resources = 0usize;
    for item in tree.scan_prefix([RESOURCE]) {
        let (k, v) = item?;
        let Some(&kb) = k.get(1) else { continue };
        let kind = Kind::from_byte(kb);
        let id = String::from_utf8_lossy(&k[2..]).into_owned();
        let resource: Value = decode(&v, || format!("{} {id}", kind.name()))?;
        for (n, def) in indexes(kind).iter().enumerate() {
            for value in index_values(&resource, def) {
                let prefix = index_prefix(kind, n, &value);
                if def.unique {
                    if let Some(other) = seen.insert(prefix.clone(), id.clone()) {
                        tracing::warn!(
                            kind = kind.name(),
                            attribute = def.attr,
                            key = %value,
                            first = %other,
                            second = %id,
                            "two resources have names the directory treats as equal; both are kept, neither can be renamed onto the other: rename one at the identity provider"
                        );
                    }
                }
                let mut key = prefix;
                key.extend_from_slice(id.as_bytes());
                batch.insert(key, Vec::new());
            }
        }
        resources += 1;
        if resources % 5_000 == 0 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    batch.insert(keys::META_INDEX.to_vec(), index_version().into_bytes());
    tree.apply_batch(batch)?;
    tree.flush()?;
    if resources > 0 {
        tracing::info!(resources, "store indexes rebuilt");
    }
    Ok(())
}
