//! Links: the directory entry each resource is linked to (`l` keys: DN and
//! stable id), the reverse index from a stable id (entryUUID, objectGUID,
//! ...) to the SCIM id (`a` keys), so that one entry is never linked
//! twice, and adoption's record of an entry that exists already. A link
//! also carries the writer's fingerprint of what it last applied
//! ([`Applied`]: opaque hashes here), cleared by a replay.
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
    /// A fingerprint of what the writer last applied to the entry (the
    /// writer's business: opaque hashes here), so that the next update can
    /// be sent without reading the entry first. Absent in older links, in
    /// links of adopted entries and after `journal replay`: the writer
    /// then reads the entry, as it always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
}

/// What the writer last applied to a linked entry, as hashes: enough to
/// tell which managed attributes an update changes, never the values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Applied {
    /// The entry's shape: its object classes, the managed and required
    /// attribute names (a mapping reload that changes them makes the
    /// writer read again).
    pub shape: u64,
    /// One hash per managed attribute (in the shape's order) of the values
    /// the directory holds for it.
    pub attrs: Vec<u64>,
    /// Active Directory: whether ACCOUNTDISABLE was last set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// [`Applied::digest`] of the fingerprint this one was worked out from
    /// without reading the entry; 0 after a read. A fingerprint made from
    /// one that was cleared meanwhile (a replay) is not kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub from: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Applied {
    /// A stable 64-bit digest of the fingerprint (FNV-1a; `from` left out).
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::default();
        h.u64(self.shape);
        h.u64(self.attrs.len() as u64);
        for a in &self.attrs {
            h.u64(*a);
        }
        h.u64(match self.disabled {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        // Never 0: 0 means "after a read".
        h.finish().max(1)
    }
}

/// FNV-1a, 64 bits: stable across builds and versions (unlike
/// `std::hash::DefaultHasher`), which a stored fingerprint needs.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// A byte string with its length first, so that ("ab", "c") and
    /// ("a", "bc") differ.
    pub fn field(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.bytes(b);
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
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
        // Unchanged (an entry with nothing to send hands back the link it
        // was given, whose `from` names the fingerprint before it): nothing
        // to write, nothing to check.
        if old.as_ref() == new {
            return Ok(());
        }
        // A fingerprint worked out from the one stored without reading the
        // entry is kept only if that one is still there: a replay that
        // cleared it meanwhile wins, and the next write reads the entry.
        let checked;
        let new = match new {
            Some(l)
                if l.applied.as_ref().is_some_and(|a| {
                    a.from != 0
                        && old
                            .as_ref()
                            .and_then(|o| o.applied.as_ref())
                            .map(Applied::digest)
                            != Some(a.from)
                }) =>
            {
                checked = Link {
                    applied: None,
                    ..l.clone()
                };
                Some(&checked)
            }
            other => other,
        };
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

    /// Adds to `batch` the clearing of `id`'s fingerprint of what was last
    /// applied, so that the writer reads the entry before its next write
    /// (`journal replay`: the directory may hold anything, a backup
    /// restored, values changed by hand). Nothing when there is none.
    pub(super) fn forget_applied_into(
        &self,
        batch: &mut sled::Batch,
        kind: Kind,
        id: &str,
    ) -> Result<(), StoreError> {
        if let Some(mut l) = self.link(kind, id)? {
            if l.applied.take().is_some() {
                batch.insert(res_key(LINK, kind, id), encode(&l, || "link".into())?);
            }
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

#[cfg(test)]
mod fingerprint_tests {
    use super::*;
    use crate::store::{Intent, Write};
    use serde_json::json;

    fn applied(shape: u64, from: u64) -> Applied {
        Applied {
            shape,
            attrs: vec![1, 2],
            disabled: None,
            from,
        }
    }

    #[test]
    fn old_links_read_without_a_fingerprint_and_new_ones_round_trip() {
        let old: Link = serde_json::from_str(r#"{"dn":"uid=a","uuid":"u1"}"#).unwrap();
        assert_eq!(old.applied, None);
        let l = Link {
            applied: Some(applied(7, 0)),
            ..old.clone()
        };
        let text = serde_json::to_string(&l).unwrap();
        assert!(!text.contains("from"), "{text}");
        assert_eq!(serde_json::from_str::<Link>(&text).unwrap(), l);
        // Without one, a link is written as before.
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"dn":"uid=a","uuid":"u1"}"#
        );
    }

    #[test]
    fn the_digest_is_stable_and_ignores_from() {
        // FNV-1a of known input, so that a stored digest means the same
        // after an upgrade.
        let mut h = Fnv::default();
        h.bytes(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(applied(7, 0).digest(), applied(7, 99).digest());
        assert_ne!(applied(7, 0).digest(), applied(8, 0).digest());
        assert_ne!(applied(7, 0).digest(), 0);
    }

    #[tokio::test]
    async fn a_fingerprint_made_without_reading_is_kept_only_over_the_one_it_came_from() {
        let dir = std::env::temp_dir().join(format!("scim2ldap-links-{}", uuid::Uuid::new_v4()));
        let s = Store::open(&dir).unwrap();
        let mut u = json!({"userName": "a"});
        let seq = s
            .write(Write {
                kind: Kind::User,
                id: "a",
                resource: &mut u,
                intent: Intent::Create,
                members: None,
            })
            .unwrap();
        let e = s.entry(seq).unwrap().unwrap();
        let base = Link {
            dn: "uid=a".into(),
            uuid: Some("u-a".into()),
            ..Link::default()
        };
        let read = Link {
            applied: Some(applied(1, 0)),
            ..base.clone()
        };
        s.mark_applied(&e, Some(&read)).unwrap();
        assert_eq!(s.link(Kind::User, "a").unwrap(), Some(read.clone()));
        // Worked out from the stored one: kept.
        let next = Link {
            applied: Some(applied(2, applied(1, 0).digest())),
            ..base.clone()
        };
        s.mark_applied(&e, Some(&next)).unwrap();
        assert_eq!(s.link(Kind::User, "a").unwrap(), Some(next.clone()));
        // Handed back unchanged (an entry with nothing to send): kept,
        // although its `from` names the fingerprint before it.
        s.mark_applied(&e, Some(&next)).unwrap();
        assert_eq!(s.link(Kind::User, "a").unwrap(), Some(next.clone()));
        // Worked out from one that is no longer there (a replay cleared it
        // meanwhile): the link is recorded without a fingerprint.
        let stale = Link {
            applied: Some(applied(3, applied(1, 0).digest())),
            ..base.clone()
        };
        s.mark_applied(&e, Some(&stale)).unwrap();
        assert_eq!(s.link(Kind::User, "a").unwrap(), Some(base.clone()));
        // A requeue clears it.
        s.mark_applied(&e, Some(&read)).unwrap();
        assert_eq!(s.requeue(seq, seq).unwrap(), 1);
        assert_eq!(s.link(Kind::User, "a").unwrap(), Some(base.clone()));
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }
}
