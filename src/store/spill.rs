//! Large member changes, written in bounded batches.
//!
//! sled builds one atomic batch in memory with every page it touches kept
//! until the batch ends: measured with this store's key shapes, one batch
//! of 100,000 `M`/`B` keys (a 50,000-member group) raised the process's
//! resident memory by about 550 MiB, which it then kept; the same keys in
//! batches of 1,000 raised it by about 60 MiB, and smaller batches hold
//! less still.
//!
//! So a write whose member keys are more than [`MAX_INLINE`] goes in two
//! steps, without losing atomicity for anyone who matters:
//! 1. the write's own batch (snapshot, indexes, journal entry) carries,
//!    instead of the member keys and the entry's pending mark `q`, a
//!    marker `x<seq>` holding the member changes (group id, then per
//!    member its id, kind, `display` and whether it is added or removed:
//!    about 50 bytes a member) and the pending mark;
//! 2. the member keys are then derived from the changes and applied in
//!    batches of [`CHUNK`] keys, and the last one removes the marker and
//!    sets the pending mark.
//!
//! Both steps run under the store's write lock, before the write is
//! acknowledged (the acknowledgement waits for the flush of both). The
//! writer never sees the entry before its member keys are complete (it is
//! not pending until then). A crash between the steps leaves the marker,
//! and opening the store finishes its work before anything else reads it.
//! Until then a concurrent read may see part of the new member list, never
//! a journal entry without its keys.
//!
//! Markers written before the member-change format (every key and value
//! spelled out) are still finished at open.

use super::keys::{seq_key, seq_of, PENDING, SPILL};
use super::members::{add_member, remove_member};
use super::StoreError;

/// Member keys that go in the write's own batch; above this, they spill.
pub(super) const MAX_INLINE: usize = 250;

/// Keys per batch when a spilled change is applied.
const CHUNK: usize = 250;

/// The first byte of a marker in the member-change format. A marker of
/// the first format starts with the big-endian u32 length of a pending
/// mark (a resource key of a few dozen bytes), so with 0.
const FORMAT_MEMBERS: u8 = 2;

/// One member's change in a group.
enum Change {
    Add {
        member: Box<str>,
        kind: u8,
        display: Option<Box<str>>,
    },
    Remove(Box<str>),
}

/// The changes of one group's members.
struct GroupChanges {
    gid: Box<str>,
    changes: Vec<Change>,
}

/// Member changes gathered before it is known whether their keys fit in
/// the batch: kept as member ids, the keys derived when they are written.
#[derive(Default)]
pub(super) struct KeyWrites {
    groups: Vec<GroupChanges>,
    /// How many keys the changes write (two per change).
    keys: usize,
}

impl KeyWrites {
    fn group(&mut self, gid: &str) -> &mut Vec<Change> {
        if self.groups.last().is_none_or(|g| &*g.gid != gid) {
            self.groups.push(GroupChanges {
                gid: gid.into(),
                changes: Vec::new(),
            });
        }
        self.keys += 2;
        &mut self.groups.last_mut().expect("just pushed").changes
    }

    /// `member` (of kind byte `kind`, with the `display` given) joins
    /// group `gid`.
    pub(super) fn add(&mut self, gid: &str, member: &str, kind: u8, display: Option<&str>) {
        self.group(gid).push(Change::Add {
            member: member.into(),
            kind,
            display: display.map(Into::into),
        });
    }

    /// `member` leaves group `gid`.
    pub(super) fn remove(&mut self, gid: &str, member: &str) {
        self.group(gid).push(Change::Remove(member.into()));
    }

    /// Every change with its group, in order.
    fn changes(&self) -> impl Iterator<Item = (&str, &Change)> {
        self.groups
            .iter()
            .flat_map(|g| g.changes.iter().map(move |c| (&*g.gid, c)))
    }

    /// Puts the keys in `batch` if they are few. Otherwise records the
    /// changes in a marker for `seq` (whose pending mark, already in
    /// `batch`, is taken out of it and kept in the marker): the caller
    /// applies `batch`, then [`Spilled::finish`].
    pub(super) fn settle(
        self,
        batch: &mut sled::Batch,
        seq: u64,
        pending_value: &[u8],
    ) -> Option<Spilled> {
        if self.keys <= MAX_INLINE {
            for (gid, c) in self.changes() {
                write_change(batch, gid, c);
            }
            return None;
        }
        let marker = encode(pending_value, &self);
        batch.insert(seq_key(SPILL, seq), marker);
        batch.remove(seq_key(PENDING, seq));
        Some(Spilled {
            seq,
            pending_value: pending_value.to_vec(),
            writes: Writes::Members(self),
        })
    }
}

fn write_change(batch: &mut sled::Batch, gid: &str, c: &Change) {
    match c {
        Change::Add {
            member,
            kind,
            display,
        } => add_member(batch, gid, member, *kind, display.as_deref()),
        Change::Remove(member) => remove_member(batch, gid, member),
    }
}

/// What a marker holds: member changes, or (a marker of the first format)
/// the keys and values themselves.
enum Writes {
    Members(KeyWrites),
    Keys(Vec<(Vec<u8>, Option<Vec<u8>>)>),
}

/// Member changes recorded in a marker, still to be applied.
pub(super) struct Spilled {
    seq: u64,
    pending_value: Vec<u8>,
    writes: Writes,
}

impl Spilled {
    /// Applies the keys in bounded batches; the last one removes the marker
    /// and makes the entry pending.
    pub(super) fn finish(self, tree: &sled::Tree) -> Result<(), StoreError> {
        let (seq, pending_value) = (self.seq, self.pending_value);
        match self.writes {
            Writes::Members(w) => in_batches(
                tree,
                seq,
                pending_value,
                w.changes(),
                CHUNK / 2,
                |b, (gid, c)| write_change(b, gid, c),
            ),
            Writes::Keys(w) => in_batches(
                tree,
                seq,
                pending_value,
                w.into_iter(),
                CHUNK,
                |b, (k, v)| match v {
                    Some(v) => b.insert(k, v),
                    None => b.remove(k),
                },
            ),
        }
    }
}

/// Applies `items`, `per_batch` in each batch; the last batch also removes
/// the marker of `seq` and sets its pending mark.
fn in_batches<T>(
    tree: &sled::Tree,
    seq: u64,
    pending_value: Vec<u8>,
    items: impl Iterator<Item = T>,
    per_batch: usize,
    put: impl Fn(&mut sled::Batch, T),
) -> Result<(), StoreError> {
    let mut items = items.peekable();
    loop {
        let mut batch = sled::Batch::default();
        for item in items.by_ref().take(per_batch) {
            put(&mut batch, item);
        }
        if items.peek().is_none() {
            batch.remove(seq_key(SPILL, seq));
            batch.insert(seq_key(PENDING, seq), pending_value);
            tree.apply_batch(batch)?;
            return Ok(());
        }
        tree.apply_batch(batch)?;
    }
}

/// Finishes every spilled change a crash interrupted. Run at open, before
/// the store is read. Returns how many there were.
pub(super) fn finish_interrupted(tree: &sled::Tree) -> Result<usize, StoreError> {
    let mut n = 0;
    for item in tree.scan_prefix([SPILL]) {
        let (k, v) = item?;
        let seq = seq_of(&k);
        let decoded = match v.first() {
            Some(&FORMAT_MEMBERS) => decode(&v[1..]).map(|(p, w)| (p, Writes::Members(w))),
            _ => decode_keys(&v).map(|(p, w)| (p, Writes::Keys(w))),
        };
        let (pending_value, writes) = decoded.ok_or_else(|| StoreError::Corrupt {
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

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn take(b: &mut &[u8]) -> Option<Vec<u8>> {
    let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let v = b.get(4..4 + n)?.to_vec();
    *b = &b[4 + n..];
    Some(v)
}

fn take_str(b: &mut &[u8]) -> Option<String> {
    String::from_utf8(take(b)?).ok()
}

// Record tags of the member-change format.
const GROUP: u8 = b'g';
const ADD: u8 = b'+';
const ADD_DISPLAY: u8 = b'*';
const REMOVE: u8 = b'-';

/// [`FORMAT_MEMBERS`], `len value` of the pending mark, then per group
/// `g len gid` followed by its changes: `+ kind len member`,
/// `* kind len member len display` or `- len member`; lengths are u32
/// big-endian.
fn encode(pending_value: &[u8], writes: &KeyWrites) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + pending_value.len() + writes.keys / 2 * 48);
    out.push(FORMAT_MEMBERS);
    put(&mut out, pending_value);
    for g in &writes.groups {
        out.push(GROUP);
        put(&mut out, g.gid.as_bytes());
        for c in &g.changes {
            match c {
                Change::Add {
                    member,
                    kind,
                    display: None,
                } => {
                    out.extend_from_slice(&[ADD, *kind]);
                    put(&mut out, member.as_bytes());
                }
                Change::Add {
                    member,
                    kind,
                    display: Some(d),
                } => {
                    out.extend_from_slice(&[ADD_DISPLAY, *kind]);
                    put(&mut out, member.as_bytes());
                    put(&mut out, d.as_bytes());
                }
                Change::Remove(member) => {
                    out.push(REMOVE);
                    put(&mut out, member.as_bytes());
                }
            }
        }
    }
    out
}

/// The pending mark and the changes of a marker in the member-change
/// format (after its first byte).
fn decode(mut b: &[u8]) -> Option<(Vec<u8>, KeyWrites)> {
    let pending = take(&mut b)?;
    let mut writes = KeyWrites::default();
    let mut gid: Option<String> = None;
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        match tag {
            GROUP => gid = Some(take_str(&mut b)?),
            ADD | ADD_DISPLAY => {
                let (&kind, rest) = b.split_first()?;
                b = rest;
                let member = take_str(&mut b)?;
                let display = match tag {
                    ADD_DISPLAY => Some(take_str(&mut b)?),
                    _ => None,
                };
                writes.add(gid.as_deref()?, &member, kind, display.as_deref());
            }
            REMOVE => {
                let member = take_str(&mut b)?;
                writes.remove(gid.as_deref()?, &member);
            }
            _ => return None,
        }
    }
    Some((pending, writes))
}

type Keys = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A marker of the first format: `len value` of the pending mark, then
/// per write `1 len key len value` or `0 len key`.
fn decode_keys(mut b: &[u8]) -> Option<(Vec<u8>, Keys)> {
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
    use crate::store::keys::{pair_key, MEMBER, MEMBER_OF};
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

    /// Opens the store at `dir` again, waiting for the threads of the one
    /// just dropped to let go of sled's lock (they can lag under load).
    fn reopen(dir: &std::path::Path) -> Store {
        for _ in 0..200 {
            match Store::open(dir) {
                Err(crate::store::StoreError::Sled(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                r => return r.unwrap(),
            }
        }
        Store::open(dir).unwrap()
    }

    fn temp_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("scim2ldap-spill-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn a_large_member_change_is_written_whole_and_pending_once_complete() {
        let dir = temp_dir();
        let s = Store::open(&dir).unwrap();
        // Below and above the limit: 125 members are 250 keys (inline),
        // 3,000 members are 6,000 keys (spilled, 24 batches).
        let small = group_with(&s, "small", MAX_INLINE / 2);
        let big = group_with(&s, "big", 3_000);
        assert_eq!(s.members("small").unwrap().len(), MAX_INLINE / 2);
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
        let dir = temp_dir();
        let s = Store::open(&dir).unwrap();
        let seq = group_with(&s, "g", 10);
        // What the write's own batch leaves when the process dies before
        // the member keys are applied: the marker, no pending mark.
        let mut writes = KeyWrites::default();
        for i in 0..2_000 {
            let display = (i % 2 == 0).then(|| format!("Late {i}"));
            writes.add("g", &format!("late-{i:05}"), b'u', display.as_deref());
        }
        writes.remove("g", "user-00003");
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

        let s = reopen(&dir);
        assert_eq!(s.members("g").unwrap().len(), 2_009);
        let with_display = s.members_with_display("g").unwrap();
        assert!(with_display.contains(&(
            "late-00002".to_string(),
            Kind::User,
            Some("Late 2".to_string())
        )));
        assert!(with_display.contains(&("late-00003".to_string(), Kind::User, None)));
        assert_eq!(s.groups_of("late-01999").unwrap(), vec!["g".to_string()]);
        assert!(s.groups_of("user-00003").unwrap().is_empty());
        assert!(s
            .inner
            .tree
            .contains_key(seq_key(PENDING, seq + 1))
            .unwrap());
        assert_eq!(s.inner.tree.scan_prefix([SPILL]).count(), 0);
        drop(s);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A marker of the first format (every key and value spelled out),
    /// as a store written by an earlier version may hold it.
    fn encode_keys(pending_value: &[u8], writes: &Keys) -> Vec<u8> {
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

    #[test]
    fn a_marker_of_the_first_format_is_finished_at_open() {
        let dir = temp_dir();
        let s = Store::open(&dir).unwrap();
        let seq = group_with(&s, "g", 10);
        let mut keys: Keys = Vec::new();
        for i in 0..1_500 {
            let m = format!("old-{i:05}");
            keys.push((pair_key(MEMBER, "g", &m), Some(b"u".to_vec())));
            keys.push((pair_key(MEMBER_OF, &m, "g"), Some(Vec::new())));
        }
        keys.push((pair_key(MEMBER, "g", "user-00001"), None));
        keys.push((pair_key(MEMBER_OF, "user-00001", "g"), None));
        let marker = encode_keys(b"rgg", &keys);
        assert_eq!(marker[0], 0);
        s.inner
            .tree
            .insert(seq_key(SPILL, seq + 1), marker)
            .unwrap();
        s.inner.tree.flush().unwrap();
        drop(s);

        let s = reopen(&dir);
        assert_eq!(s.members("g").unwrap().len(), 1_509);
        assert_eq!(s.groups_of("old-01499").unwrap(), vec!["g".to_string()]);
        assert!(s.groups_of("user-00001").unwrap().is_empty());
        assert_eq!(
            s.inner
                .tree
                .get(seq_key(PENDING, seq + 1))
                .unwrap()
                .unwrap(),
            b"rgg".as_slice()
        );
        assert_eq!(s.inner.tree.scan_prefix([SPILL]).count(), 0);
        drop(s);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn markers_round_trip_in_about_fifty_bytes_a_member() {
        let mut w = KeyWrites::default();
        w.add("g", "u1", b'u', None);
        w.add("g", "u2", b'g', Some("Two"));
        w.remove("g", "u3");
        w.remove("h", "u1");
        let enc = encode(b"rgg", &w);
        assert_eq!(enc[0], FORMAT_MEMBERS);
        let (pending, back) = decode(&enc[1..]).unwrap();
        assert_eq!(pending, b"rgg");
        assert_eq!(back.keys, 8);
        assert_eq!(encode(b"rgg", &back), enc);
        assert!(decode(&enc[1..enc.len() - 1]).is_none());

        // 50,000 members with 36-character ids.
        let mut big = KeyWrites::default();
        for i in 0..50_000 {
            big.add("group", &format!("{:036}", i), b'u', None);
        }
        let len = encode(b"rgg", &big).len();
        assert!(len < 50_000 * 50, "{len} bytes");
    }
}
