//! Links: the directory entry each resource is linked to (`l` keys: DN and
//! stable id), the reverse index from a stable id (entryUUID, objectGUID,
//! ...) to the SCIM id (`a` keys), so that one entry is never linked
//! twice, and adoption's record of an entry that exists already.
//!
//! Knows DNs and stable ids as opaque strings; never reads the directory.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::journal::{journal_into, new_entry, Op};
use super::keys::{res_key, seq_key, LINK, LINKED_ID, META_LINK_INDEX, PENDING, RESOURCE};
use super::resources::{index_changes, set_version};
use super::{decode, encode, Kind, Store, StoreError, WriteError};

/// The directory entry a resource is linked to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Link {
    pub dn: String,
    /// The directory's stable identifier (entryUUID / objectGUID), when read.
    pub uuid: Option<String>,
    /// The entry existed before the daemon and was adopted: for a group
    /// under `keep_members`, member values the identity provider did not
    /// send are never removed. Absent (false) in older links.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

/// Builds the stable-id → SCIM id index from the links once, for stores
/// written before the index existed.
pub(super) fn build_link_index(tree: &sled::Tree) -> Result<(), StoreError> {
    if tree.contains_key(META_LINK_INDEX)? {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix([LINK]) {
        let (k, v) = item?;
        let Some(&kb) = k.get(1) else { continue };
        let link: Link = decode(&v, || "link".into())?;
        if let Some(uuid) = link.uuid {
            let mut a = vec![LINKED_ID, kb];
            a.extend_from_slice(uuid.as_bytes());
            batch.insert(a, k[2..].to_vec());
        }
    }
    batch.insert(META_LINK_INDEX.to_vec(), b"1".to_vec());
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(())
}

impl Store {
    pub fn link(&self, kind: Kind, id: &str) -> Result<Option<Link>, StoreError> {
        match self.inner.tree.get(res_key(LINK, kind, id))? {
            None => Ok(None),
            Some(v) => decode(&v, || "link".into()).map(Some),
        }
    }

    /// The SCIM id linked to the directory entry with this stable id.
    pub fn linked_id(&self, kind: Kind, uuid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .tree
            .get(res_key(LINKED_ID, kind, uuid))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Adds to `batch` the change of `id`'s link to `new` (`None`: no link),
    /// with the stable-id index kept in step. Nothing when the link is as
    /// it was: most applies leave it so, and rewriting it would only add to
    /// what sled logs.
    pub(super) fn link_into(
        &self,
        batch: &mut sled::Batch,
        kind: Kind,
        id: &str,
        new: Option<&Link>,
    ) -> Result<(), StoreError> {
        let old = self.link(kind, id)?;
        if old.as_ref() == new {
            return Ok(());
        }
        let old_uuid = old.as_ref().and_then(|l| l.uuid.as_deref());
        let new_uuid = new.and_then(|l| l.uuid.as_deref());
        if old_uuid != new_uuid {
            if let Some(u) = old_uuid {
                batch.remove(res_key(LINKED_ID, kind, u));
            }
            if let Some(u) = new_uuid {
                batch.insert(res_key(LINKED_ID, kind, u), id.as_bytes().to_vec());
            }
        }
        match new {
            Some(l) => batch.insert(res_key(LINK, kind, id), encode(l, || "link".into())?),
            None => batch.remove(res_key(LINK, kind, id)),
        }
        Ok(())
    }

    /// Records an entry that already exists in the directory as a new
    /// resource, without asking the writer to change it: snapshot, indexes,
    /// link, and a journal entry that is applied from the start (so that a
    /// replay into an empty directory recreates it). Refused when the id or
    /// the unique attributes are taken or the entry is linked already.
    pub fn adopt(
        &self,
        kind: Kind,
        id: &str,
        resource: &mut Value,
        link: &Link,
    ) -> Result<u64, WriteError> {
        let mut last = self.write_lock();
        if self.get(kind, id)?.is_some() {
            return Err(WriteError::IdExists {
                kind: kind.name(),
                id: id.to_string(),
            });
        }
        if let Some(uuid) = &link.uuid {
            if let Some(other) = self.linked_id(kind, uuid)? {
                return Err(WriteError::AlreadyLinked {
                    kind: kind.name(),
                    dn: link.dn.clone(),
                    linked_to: other,
                });
            }
        }
        self.check_unique(kind, id, None, resource)?;
        let seq = *last + 1;
        set_version(resource, seq);
        let mut batch = sled::Batch::default();
        index_changes(&mut batch, kind, id, None, Some(resource));
        batch.insert(
            res_key(RESOURCE, kind, id),
            encode(&*resource, || id.into())?,
        );
        journal_into(
            &mut batch,
            &new_entry(seq, kind, id, Op::Upsert, resource.clone(), None),
        )?;
        // Applied from the start: the entry is in the directory already.
        batch.remove(seq_key(PENDING, seq));
        self.link_into(&mut batch, kind, id, Some(link))?;
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(StoreError::from)?;
        *last = seq;
        self.forget_positions(kind);
        Ok(seq)
    }
}
