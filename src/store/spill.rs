//! Large member changes, written in bounded batches.
//!
//! sled builds one atomic batch in memory with every page it touches kept
//! until the batch ends: measured with this store's key shapes, one batch
//! of 100,000 `M`/`B` keys (a 50,000-member group) raised the process's
//! resident memory by about 550 MiB, which it then kept; the same keys in
//! batches of 1,000 raised it by about 60 MiB.
//!
//! So a write whose member keys are more than [`MAX_INLINE`] goes in two
//! steps, without losing atomicity for anyone who matters:
//! 1. the write's own batch (snapshot, indexes, journal entry) carries,
//!    instead of the member keys and the entry's pending mark `q`, a
//!    marker `x<seq>` holding both;
//! 2. the member keys are then applied in batches of [`CHUNK`], and the
//!    last one removes the marker and sets the pending mark.
//!
//! Both steps run under the store's write lock, before the write is
//! acknowledged (the acknowledgement waits for the flush of both). The
//! writer never sees the entry before its member keys are complete (it is
//! not pending until then). A crash between the steps leaves the marker,
//! and opening the store finishes its work before anything else reads it.
//! Until then a concurrent read may see part of the new member list, never
//! a journal entry without its keys.

use super::keys::{seq_key, seq_of, PENDING, SPILL};
use super::StoreError;

/// Member keys that go in the write's own batch; above this, they spill.
pub(super) const MAX_INLINE: usize = 1_000;

/// Keys per batch when a spilled change is applied.
const CHUNK: usize = 1_000;

/// Key writes gathered before it is known whether they fit in the batch.
#[derive(Default)]
pub(super) struct KeyWrites(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl KeyWrites {
    pub(super) fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.push((key, Some(value)));
    }

    pub(super) fn remove(&mut self, key: Vec<u8>) {
        self.0.push((key, None));
    }

    /// Puts the writes in `batch` if they are few. Otherwise records them
    /// in a marker for `seq` (whose pending mark, already in `batch`, is
    /// taken out of it and kept in the marker): the caller applies `batch`,
    /// then [`Spilled::finish`].
    pub(super) fn settle(
        self,
        batch: &mut sled::Batch,
        seq: u64,
        pending_value: &[u8],
    ) -> Option<Spilled> {
        if self.0.len() <= MAX_INLINE {
            for (k, v) in self.0 {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            return None;
        }
        let marker = encode(pending_value, &self.0);
        batch.insert(seq_key(SPILL, seq), marker);
        batch.remove(seq_key(PENDING, seq));
        Some(Spilled {
            seq,
            pending_value: pending_value.to_vec(),
            writes: self.0,
        })
    }
}

/// Member keys recorded in a marker, still to be applied.
pub(super) struct Spilled {
    seq: u64,
    pending_value: Vec<u8>,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Spilled {
    /// Applies the keys in bounded batches; the last one removes the marker
    /// and makes the entry pending.
    pub(super) fn finish(self, tree: &sled::Tree) -> Result<(), StoreError> {
        let mut writes = self.writes.into_iter().peekable();
        loop {
            let mut batch = sled::Batch::default();
            for (k, v) in writes.by_ref().take(CHUNK) {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            if writes.peek().is_none() {
                batch.remove(seq_key(SPILL, self.seq));
                batch.insert(seq_key(PENDING, self.seq), self.pending_value);
                tree.apply_batch(batch)?;
                return Ok(());
            }
            tree.apply_batch(batch)?;
        }
    }
}

/// Finishes every spilled change a crash interrupted. Run at open, before
/// the store is read. Returns how many there were.
pub(super) fn finish_interrupted(tree: &sled::Tree) -> Result<usize, StoreError> {
    let mut n = 0;
    for item in tree.scan_prefix([SPILL]) {
        let (k, v) = item?;
        let seq = seq_of(&k);
        let (pending_value, writes) = decode(&v).ok_or_else(|| StoreError::Corrupt {
            record: format!("member change marker {seq}"),
            detail: "does not decode".into(),
        })?;
        Spilled {
            seq,
            pending_value,
            writes,
        }
        .finish(tree)?;
        n += 1;
    }
    if n > 0 {
        tree.flush()?;
    }
    Ok(n)
}

type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// `len value` of the pending mark, then per write: `1 len key len value`
/// or `0 len key`; lengths are u32 big-endian.
fn encode(pending_value: &[u8], writes: &Writes) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    put(&mut out, pending_value);
    for (k, v) in writes {
        out.push(u8::from(v.is_some()));
        put(&mut out, k);
        if let Some(v) = v {
            put(&mut out, v);
        }
    }
    out
}

fn decode(mut b: &[u8]) -> Option<(Vec<u8>, Writes)> {
    fn take(b: &mut &[u8]) -> Option<Vec<u8>> {
        let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let v = b.get(4..4 + n)?.to_vec();
        *b = &b[4 + n..];
        Some(v)
    }
    let pending = take(&mut b)?;
    let mut writes = Vec::new();
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        let k = take(&mut b)?;
        let v = match tag {
            1 => Some(take(&mut b)?),
            0 => None,
            _ => return None,
        };
        writes.push((k, v));
    }
    Some((pending, writes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Intent, Kind, MemberOps, Store, Write};
    use serde_json::json;

    fn group_with(s: &Store, id: &str, members: usize) -> u64 {
        let ops = MemberOps {
            replace: Some(
                (0..members)
                    .map(|i| (format!("user-{i:05}"), Kind::User))
                    .collect(),
            ),
            ..Default::default()
        };
        s.write(Write {
            kind: Kind::Group,
            id,
            resource: &mut json!({"displayName": id}),
            intent: Intent::Create,
            members: Some(&ops),
        })
        .unwrap()
    }

    #[test]
    fn a_large_member_change_is_written_whole_and_pending_once_complete() {
        let dir = std::env::temp_dir().join(format!("scim2ldap-spill-{}", uuid::Uuid::new_v4()));
        let s = Store::open(&dir).unwrap();
        // Below and above the limit: 500 members are 1,000 keys (inline),
        // 3,000 members are 6,000 keys (spilled, six batches).
        let small = group_with(&s, "small", MAX_INLINE / 2);
        let big = group_with(&s, "big", 3_000);
        assert_eq!(s.members("small").unwrap().len(), 500);
        assert_eq!(s.members("big").unwrap().len(), 3_000);
        assert_eq!(s.groups_of("user-02999").unwrap(), vec!["big".to_string()]);
        assert_eq!(s.pending_after(0, 10).unwrap(), vec![small, big]);
        assert_eq!(s.inner.tree.scan_prefix([SPILL]).count(), 0);
        assert_eq!(
            s.entry(big).unwrap().unwrap().members.unwrap().add.len(),
            3_000
        );

        // Deleting the big group removes its 6,000 keys the same way.
        let del = s.delete(Kind::Group, "big", None).unwrap();
        assert!(s.members("big").unwrap().is_empty());
        assert!(s.groups_of("user-02999").unwrap().is_empty());
        assert_eq!(s.pending_after(0, 10).unwrap(), vec![small, big, del]);
        assert_eq!(s.inner.tree.scan_prefix([SPILL]).count(), 0);
        drop(s);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_change_a_crash_interrupted_is_finished_at_open() {
        let dir = std::env::temp_dir().join(format!("scim2ldap-spill-{}", uuid::Uuid::new_v4()));
        let s = Store::open(&dir).unwrap();
        let seq = group_with(&s, "g", 10);
        // What the write's own batch leaves when the process dies before
        // the member keys are applied: the marker, no pending mark.
        let mut writes = KeyWrites::default();
        for i in 0..2_000 {
            writes.insert(
                crate::store::keys::pair_key(
                    crate::store::keys::MEMBER,
                    "g",
                    &format!("late-{i:05}"),
                ),
                b"u".to_vec(),
            );
        }
        let mut batch = sled::Batch::default();
        batch.insert(seq_key(PENDING, seq + 1), b"rgg".to_vec());
        let spilled = writes.settle(&mut batch, seq + 1, b"rgg");
        assert!(spilled.is_some());
        s.inner.tree.apply_batch(batch).unwrap();
        assert!(!s
            .inner
            .tree
            .contains_key(seq_key(PENDING, seq + 1))
            .unwrap());
        s.inner.tree.flush().unwrap();
        drop(spilled);
        drop(s);

        let s = Store::open(&dir).unwrap();
        assert_eq!(s.members("g").unwrap().len(), 2_010);
        assert!(s
            .inner
            .tree
            .contains_key(seq_key(PENDING, seq + 1))
            .unwrap());
        assert_eq!(s.inner.tree.scan_prefix([SPILL]).count(), 0);
        drop(s);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn markers_round_trip() {
        let writes = vec![
            (b"Mg\0u1".to_vec(), Some(b"u".to_vec())),
            (b"Bu1\0g".to_vec(), Some(Vec::new())),
            (b"Mg\0u2".to_vec(), None),
        ];
        let enc = encode(b"rgg", &writes);
        assert_eq!(decode(&enc), Some((b"rgg".to_vec(), writes)));
        assert_eq!(decode(&enc[..enc.len() - 1]), None);
    }
}
