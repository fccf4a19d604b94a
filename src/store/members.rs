//! A group's members: the `M` keys (group → member, with the member's kind
//! and the `display` given) and their reverses, the `B` keys (member →
//! group), and how a request's member operations become the effective
//! change that is journaled.
//!
//! Knows member ids and kinds, nothing of how the directory holds them.

use std::collections::{HashMap, HashSet};

use super::journal::MemberChange;
use super::keys::{pair_key, pair_prefix, KindByte, MEMBER, MEMBER_OF};
use super::{Kind, Store, StoreError};

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
    pub displays: HashMap<String, String>,
    /// The request changes nothing else of the group.
    pub only_members: bool,
}

impl MemberOps {
    pub fn is_empty(&self) -> bool {
        self.replace.is_none() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Adds to `batch` the keys of `member` (of kind byte `kind`, with the
/// `display` given) in group `gid`: its `M` key and its `B` key.
pub(super) fn add_member(
    batch: &mut sled::Batch,
    gid: &str,
    member: &str,
    kind: u8,
    display: Option<&str>,
) {
    let mut v = Vec::with_capacity(1 + display.map_or(0, str::len));
    v.push(kind);
    if let Some(d) = display {
        v.extend_from_slice(d.as_bytes());
    }
    batch.insert(pair_key(MEMBER, gid, member), v);
    batch.insert(pair_key(MEMBER_OF, member, gid), Vec::new());
}

/// Adds to `batch` the removal of `member`'s keys in group `gid`.
pub(super) fn remove_member(batch: &mut sled::Batch, gid: &str, member: &str) {
    batch.remove(pair_key(MEMBER, gid, member));
    batch.remove(pair_key(MEMBER_OF, member, gid));
}

impl Store {
    /// Works out the effective change `ops` makes to group `gid`'s members
    /// and adds the key changes to `batch`. Costs O(changed members), except
    /// a whole replacement, which compares with the current list.
    pub(super) fn member_changes(
        &self,
        batch: &mut super::spill::KeyWrites,
        gid: &str,
        ops: &MemberOps,
    ) -> Result<MemberChange, StoreError> {
        let prefix = pair_prefix(MEMBER, gid);
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
            let current: HashSet<String> = self.members(gid)?.into_iter().map(|(m, _)| m).collect();
            // Linear: hash sets, not `contains` on lists (this runs under
            // the write lock, with up to tens of thousands of members).
            let removing: HashSet<&String> = ops.remove.iter().collect();
            let mut wanted_set: HashSet<&String> = HashSet::new();
            let mut wanted: Vec<(String, Kind)> = Vec::new();
            for (m, k) in list.iter().chain(ops.add.iter()) {
                if !removing.contains(m) && wanted_set.insert(m) {
                    wanted.push((m.clone(), *k));
                }
            }
            remove = current
                .iter()
                .filter(|c| !wanted_set.contains(c))
                .cloned()
                .collect();
            remove.sort();
            add = wanted
                .into_iter()
                .filter(|(w, _)| !current.contains(w))
                .collect();
        } else {
            let removing: HashSet<&String> = ops.remove.iter().collect();
            let mut adding: HashSet<&String> = HashSet::new();
            for (m, k) in &ops.add {
                if !removing.contains(m)
                    && !adding.contains(m)
                    && !self.inner.tree.contains_key(pair_key(MEMBER, gid, m))?
                {
                    adding.insert(m);
                    add.push((m.clone(), *k));
                }
            }
            let mut removed: HashSet<&String> = HashSet::new();
            for m in &ops.remove {
                if removed.insert(m) && self.inner.tree.contains_key(pair_key(MEMBER, gid, m))? {
                    remove.push(m.clone());
                }
            }
        }
        for (m, k) in &add {
            batch.add(gid, m, k.byte(), ops.displays.get(m).map(String::as_str));
        }
        for m in &remove {
            batch.remove(gid, m);
        }
        let empty_after = if !add.is_empty() {
            false
        } else if empty_before {
            true
        } else {
            // Non-empty unless every current member is being removed; looks
            // at no more than remove.len() + 1 keys.
            let removed: HashSet<&str> = remove.iter().map(String::as_str).collect();
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
                if !removed.contains(m.as_ref()) {
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

    /// Adds to `batch` the removal of every membership of group `gid` (it
    /// is being deleted).
    pub(super) fn drop_members(
        &self,
        batch: &mut super::spill::KeyWrites,
        gid: &str,
    ) -> Result<(), StoreError> {
        let prefix = pair_prefix(MEMBER, gid);
        for k in self.inner.tree.scan_prefix(&prefix).keys() {
            let k = k?;
            batch.remove(gid, &String::from_utf8_lossy(&k[prefix.len()..]));
        }
        Ok(())
    }

    /// The members of a group, in id order.
    pub fn members(&self, gid: &str) -> Result<Vec<(String, Kind)>, StoreError> {
        let prefix = pair_prefix(MEMBER, gid);
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

    /// How many members group `gid` has, counting no further than `limit`
    /// (reads at most `limit` keys).
    pub fn member_count_upto(&self, gid: &str, limit: usize) -> Result<usize, StoreError> {
        let mut n = 0;
        for k in self
            .inner
            .tree
            .scan_prefix(pair_prefix(MEMBER, gid))
            .keys()
            .take(limit)
        {
            k?;
            n += 1;
        }
        Ok(n)
    }

    /// The members of a group with the `display` given for each, in id
    /// order.
    pub fn members_with_display(
        &self,
        gid: &str,
    ) -> Result<Vec<(String, Kind, Option<String>)>, StoreError> {
        let prefix = pair_prefix(MEMBER, gid);
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
        let prefix = pair_prefix(MEMBER_OF, member);
        let mut out = Vec::new();
        for k in self.inner.tree.scan_prefix(&prefix).keys() {
            let k = k?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }
}
