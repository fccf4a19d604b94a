//! The key encodings: how every record of the store is named in its one
//! sled tree. The only file that knows the layout; the rest of the store
//! builds keys through these functions and prefixes.
//!
//! Every key starts with one byte saying what it is:
//!
//! | prefix | key                         | value                                          |
//! |--------|-----------------------------|------------------------------------------------|
//! | `m`    | `m` name                    | metadata (below)                               |
//! | `j`    | `j` seq (u64 big-endian)    | [`JournalEntry`](super::JournalEntry) JSON; an Upsert's without the snapshot (it refers to `r`) |
//! | `q`    | `q` seq                     | pending, not yet applied: the `r` key of its resource |
//! | `f`    | `f` seq                     | parked: [`Failure`](super::Failure) JSON       |
//! | `s`    | `s` seq                     | skipped by an administrator: RFC 3339 time     |
//! | `r`    | `r` kind id                 | the resource's SCIM JSON                       |
//! | `i`    | `i` kind attr-no value 0 id | index entry (empty value)                      |
//! | `l`    | `l` kind id                 | [`Link`](super::Link) JSON                     |
//! | `a`    | `a` kind stable-id          | SCIM id linked to that directory entry         |
//! | `M`    | `M` group-id 0 member-id    | member kind (`u` / `g`), then the `display` given |
//! | `B`    | `B` member-id 0 group-id    | empty (reverse of `M`)                         |
//! | `n`    | `n` kind attribute          | next number to allocate (u64 big-endian)       |
//! | `x`    | `x` seq                     | a large member change still being written: its member changes (ids, kinds, adds and removes) and the entry's `q` value (`spill.rs`) |
//!
//! `kind` is one byte (`u` / `g`); `attr-no` is the position of the
//! attribute in [`indexes`](super::resources::indexes). The metadata keys
//! are `mformat` (format version, checked at start-up), `mseq` (the last
//! seq assigned), `mlinkidx` (the `a` index has been built), `mindex` (how the `i`
//! keys were computed: [`super::INDEX_VERSION`] and the Unicode tables of
//! the RFC 4518 preparation; any difference rebuilds them at start-up),
//! `mcompact` (time and outcome of the last compaction), `mapplied`
//! (the last entry marked applied: seq, resource, time) and `mnopw`
//! (passwords stored by older versions in snapshots and journal entries
//! have been removed).
//!
//! Passwords are not in this tree: `secrets.rs` holds a pending entry's
//! password in a file beside it (`pending-passwords/<random name>`).
//!
//! A group's snapshot never holds its members: they are the `M` keys, so
//! adding one member to a group of 50,000 writes two keys, not the whole
//! list. Responses assemble `members` (and a user's `groups`) from them.
//!
//! Integer keys are big-endian so that sled's byte order is numeric order.
//!
//! Knows nothing of what the values mean beyond their names.

use super::Kind;

pub(super) const META_FORMAT: &[u8] = b"mformat";
pub(super) const META_SEQ: &[u8] = b"mseq";
pub(super) const META_LINK_INDEX: &[u8] = b"mlinkidx";
pub(super) const META_COMPACTION: &[u8] = b"mcompact";
pub(super) const META_INDEX: &[u8] = b"mindex";
pub(super) const META_NO_PASSWORDS: &[u8] = b"mnopw";
pub(super) const META_LAST_APPLIED: &[u8] = b"mapplied";

pub(super) const JOURNAL: u8 = b'j';
pub(super) const PENDING: u8 = b'q';
pub(super) const PARKED: u8 = b'f';
pub(super) const SKIPPED: u8 = b's';
pub(super) const RESOURCE: u8 = b'r';
pub(super) const INDEX: u8 = b'i';
pub(super) const LINK: u8 = b'l';
pub(super) const LINKED_ID: u8 = b'a';
pub(super) const MEMBER: u8 = b'M';
pub(super) const MEMBER_OF: u8 = b'B';
pub(super) const COUNTER: u8 = b'n';
pub(super) const SPILL: u8 = b'x';

/// How keys spell a [`Kind`]: one byte, `u` or `g`.
pub(super) trait KindByte {
    fn byte(self) -> u8;
    /// Anything but `g` is a user.
    fn from_byte(b: u8) -> Self;
}

impl KindByte for Kind {
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
}

/// `prefix` seq: journal entries and their state.
pub(super) fn seq_key(prefix: u8, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(prefix);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The seq of a [`seq_key`].
pub(super) fn seq_of(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[1..9]);
    u64::from_be_bytes(b)
}

/// `prefix` kind id: resources, links, and (with a stable id) the `a` index.
pub(super) fn res_key(prefix: u8, kind: Kind, id: &str) -> Vec<u8> {
    let mut k = vec![prefix, kind.byte()];
    k.extend_from_slice(id.as_bytes());
    k
}

/// Where the [`res_key`]s of one kind start.
pub(super) fn kind_prefix(prefix: u8, kind: Kind) -> [u8; 2] {
    [prefix, kind.byte()]
}

/// `i` kind attr-no value 0: the ids with that (normalised) value follow.
pub(super) fn index_prefix(kind: Kind, n: usize, value: &str) -> Vec<u8> {
    let mut k = vec![INDEX, kind.byte(), n as u8];
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

/// `M` group 0 member, or `B` member 0 group.
pub(super) fn pair_key(prefix: u8, a: &str, b: &str) -> Vec<u8> {
    let mut k = pair_prefix(prefix, a);
    k.extend_from_slice(b.as_bytes());
    k
}

/// `M` group 0 (its members follow), or `B` member 0 (its groups follow).
pub(super) fn pair_prefix(prefix: u8, a: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + a.len());
    k.push(prefix);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k
}

/// `n` kind attribute (lowercased): an allocation counter.
pub(super) fn counter_key(kind: Kind, attribute: &str) -> Vec<u8> {
    let mut k = vec![COUNTER, kind.byte()];
    k.extend_from_slice(attribute.to_ascii_lowercase().as_bytes());
    k
}
