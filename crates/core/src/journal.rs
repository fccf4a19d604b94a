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
    /// The full SCIM resource the writer converges the directory to, which
    /// makes applying an entry twice harmless. A group's snapshot has no
    /// members.
    ///
    /// Stored only with a Delete (the resource's last state: its own key is
    /// gone). An Upsert is stored without it and refers to the resource's
    /// current snapshot, which the store fills in when the entry is read
    /// (entries of one resource are applied in order and converge, so
    /// applying the latest state early is correct). Entries written before
    /// that (format 2) may still carry it, and are read as they are.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub snapshot: Value,
    /// Filled in by the store when it reads an Upsert whose resource has
    /// been deleted since: `snapshot` is then the resource's last state and
    /// the entry converges to the resource's absence (as its later Delete
    /// entry will). Never serialized.
    #[serde(skip)]
    pub superseded: bool,
    /// For groups: the membership change this operation made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MemberChange>,
    /// The write carried a password for the directory (a user, with a
    /// mapping that writes one): the name under which the store holds it
    /// beside the journal until the entry is applied or skipped. The
    /// password itself is never in the journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// The password, filled in by the store only for the writer, while
    /// the store still holds it. Never serialized.
    #[serde(skip)]
    pub password: Option<Password>,
}

impl JournalEntry {
    /// What applying the entry means now: a Delete for an Upsert whose
    /// resource was deleted since ([`JournalEntry::superseded`]).
    pub fn effective_op(&self) -> Op {
        if self.superseded {
            Op::Delete
        } else {
            self.op
        }
    }
}

/// A password on its way to the directory. `Debug` never shows it, it is
/// never serialized, and its text is reachable only through
/// [`Password::expose`], so that a log line or a `{:?}` cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(text: impl Into<String>) -> Password {
        Password(text.into())
    }

    /// The cleartext: for the writer's encoding, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
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

/// A copy of a SCIM request body with every password replaced by
/// `"<redacted>"`, for `Debug` and logs: a `password` member at any depth
/// (a resource, a path-less PATCH value), and the `value` of a PATCH
/// operation whose `path` is the password.
pub fn redact_passwords(body: &Value) -> Value {
    fn names_password(k: &str) -> bool {
        let k = k.trim().to_ascii_lowercase();
        k == "password" || k.ends_with(":user:password")
    }
    match body {
        Value::Object(o) => {
            let op_on_password = o.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("path") && v.as_str().is_some_and(names_password)
            });
            Value::Object(
                o.iter()
                    .map(|(k, v)| {
                        let hide = names_password(k)
                            || (op_on_password && k.eq_ignore_ascii_case("value"));
                        let v = if hide {
                            Value::String("<redacted>".into())
                        } else {
                            redact_passwords(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(redact_passwords).collect()),
        other => other.clone(),
    }
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
        assert!(v.get("password_file").is_none());
    }

    /// An Upsert stored without its snapshot (it refers to the resource's)
    /// reads with a null one, and is written back without it.
    #[test]
    fn an_entry_without_its_snapshot_reads_and_writes_back_the_same() {
        let stored = json!({
            "seq": 8, "at": "2026-01-01T00:00:00Z", "kind": "User", "id": "u",
            "op": "Upsert",
        });
        let e: JournalEntry = serde_json::from_value(stored.clone()).unwrap();
        assert!(e.snapshot.is_null() && !e.superseded);
        assert_eq!(e.effective_op(), Op::Upsert);
        assert_eq!(serde_json::to_value(&e).unwrap(), stored);
        let gone = JournalEntry {
            superseded: true,
            ..e
        };
        assert_eq!(gone.effective_op(), Op::Delete);
        assert_eq!(serde_json::to_value(&gone).unwrap(), stored);
    }

    /// The password is never written with the entry, nor shown by
    /// `Debug`; only the marker that the store holds one is.
    #[test]
    fn the_password_is_never_serialized_nor_debugged() {
        let e = JournalEntry {
            seq: 1,
            at: "2026-01-01T00:00:00Z".into(),
            kind: Kind::User,
            id: "u".into(),
            op: Op::Upsert,
            snapshot: json!({"userName": "a"}),
            members: None,
            password_file: Some("f00d".into()),
            password: Some(Password::new("canary-Zx81")),
            superseded: false,
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("canary"), "{text}");
        assert!(text.contains("\"password_file\":\"f00d\""), "{text}");
        let dbg = format!("{e:?} {:#?}", e.password);
        assert!(!dbg.contains("canary") && dbg.contains("redacted"), "{dbg}");
        let back: JournalEntry = serde_json::from_str(&text).unwrap();
        assert!(back.password_file.is_some() && back.password.is_none());
    }

    #[test]
    fn request_bodies_are_redacted() {
        let body = json!({
            "userName": "a", "password": "c1",
            "urn:ietf:params:scim:schemas:core:2.0:User:password": "c2",
            "Operations": [
                {"op": "replace", "value": {"Password": "c3", "active": true}},
                {"op": "replace", "path": "password", "value": "c4"},
                {"op": "replace", "path": "displayName", "value": "shown"},
            ],
        });
        let text = redact_passwords(&body).to_string();
        for c in ["c1", "c2", "c3", "c4"] {
            assert!(!text.contains(&format!("\"{c}\"")), "{c} in {text}");
        }
        assert!(
            text.contains("shown") && text.contains("\"userName\":\"a\""),
            "{text}"
        );
    }
}
