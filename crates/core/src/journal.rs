//! Journal entries: what one accepted write asks of the directory. The
//! store keeps them (in order, with their state: pending, parked, skipped)
//! and the writer plans from them; how they are stored is the store's.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scim::Kind;

/// What an accepted write asks of the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Make the entry match `snapshot` (create or update).
    Upsert,
    /// Remove the resource; `snapshot` is its last state, so the writer can
    /// find the entry even if it was never linked.
    Delete,
}

/// One accepted operation. Immutable once written; its state (pending,
/// parked) lives beside it in the store, so that changing state never
/// rewrites the snapshot.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Journal entries on disk are this JSON: the names are the store's
    /// format, and an entry written before `only_members` existed still
    /// reads.
    #[test]
    fn the_stored_form_is_stable() {
        let stored = json!({
            "seq": 7, "at": "2026-01-01T00:00:00Z", "kind": "Group", "id": "g",
            "op": "Upsert", "snapshot": {"displayName": "a"},
            "members": {"add": ["u"], "empty_before": true, "empty_after": false},
        });
        let e: JournalEntry = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!((e.kind, e.op), (Kind::Group, Op::Upsert));
        let m = e.members.clone().unwrap();
        assert!(!m.only_members && m.remove.is_empty());
        let mut again = serde_json::to_value(&e).unwrap();
        assert_eq!(again["members"]["only_members"], json!(false));
        again["members"]
            .as_object_mut()
            .unwrap()
            .remove("only_members");
        assert_eq!(again, stored);

        let delete = JournalEntry {
            op: Op::Delete,
            members: None,
            ..e
        };
        let v = serde_json::to_value(&delete).unwrap();
        assert_eq!(v["op"], "Delete");
        assert!(v.get("members").is_none());
    }
}
