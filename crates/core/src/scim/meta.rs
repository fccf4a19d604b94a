//! What the server, not the client, writes into a resource (RFC 7643
//! §3.1): `meta` (resourceType, created, lastModified, location) and the
//! core schema in `schemas`. The SCIM endpoints stamp what they store, and
//! adoption stamps what it reads from the directory, with this one code.
//! Time is a parameter: the caller reads the clock.

use serde_json::{json, Map, Value};

use crate::scim::kind::Kind;
use crate::scim::schema::{CORE_GROUP_URN, CORE_USER_URN};

/// The endpoint of a resource type: `Users`, `Groups`.
pub fn endpoint(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "Users",
        Kind::Group => "Groups",
    }
}

/// A resource's URI (`meta.location`, the `Location` header, `$ref`).
pub fn location(base_url: &str, kind: Kind, id: &str) -> String {
    format!("{base_url}/{}/{id}", endpoint(kind))
}

/// The core schema of a resource type.
pub fn core_schema(kind: Kind) -> &'static str {
    match kind {
        Kind::User => CORE_USER_URN,
        Kind::Group => CORE_GROUP_URN,
    }
}

/// `meta.created` of a stored resource, to carry over to its next version.
pub fn created(resource: &Value) -> Option<&str> {
    resource.pointer("/meta/created").and_then(Value::as_str)
}

/// The server-assigned part of one version of a resource.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub kind: Kind,
    pub id: &'a str,
    /// The base URL the resource is served under; without one (an import
    /// run from the command line) `meta.location` is left out.
    pub base_url: Option<&'a str>,
    /// RFC 3339; for a new resource the same as `last_modified`.
    pub created: &'a str,
    pub last_modified: &'a str,
}

impl Meta<'_> {
    /// Replaces `resource`'s `meta` with this one and puts the core schema
    /// first in `schemas` when it is missing. A resource that is not a JSON
    /// object is left alone.
    pub fn stamp(&self, resource: &mut Value) {
        let Some(obj) = resource.as_object_mut() else {
            return;
        };
        let mut meta = Map::new();
        meta.insert(
            "resourceType".into(),
            Value::String(self.kind.name().into()),
        );
        meta.insert("created".into(), Value::String(self.created.into()));
        meta.insert(
            "lastModified".into(),
            Value::String(self.last_modified.into()),
        );
        if let Some(base) = self.base_url {
            meta.insert(
                "location".into(),
                Value::String(location(base, self.kind, self.id)),
            );
        }
        obj.insert("meta".into(), Value::Object(meta));
        let core = core_schema(self.kind);
        let schemas = obj.entry("schemas").or_insert_with(|| json!([]));
        if let Some(list) = schemas.as_array_mut() {
            if !list
                .iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(core)))
            {
                list.insert(0, Value::String(core.into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta<'a>(base_url: Option<&'a str>, created: &'a str) -> Meta<'a> {
        Meta {
            kind: Kind::Group,
            id: "g-1",
            base_url,
            created,
            last_modified: "2026-01-02T00:00:00Z",
        }
    }

    #[test]
    fn location_names_the_endpoint() {
        assert_eq!(
            location("https://h/scim/v2", Kind::User, "u-1"),
            "https://h/scim/v2/Users/u-1"
        );
        assert_eq!(location("", Kind::Group, "g"), "/Groups/g");
    }

    #[test]
    fn stamp_replaces_meta_and_adds_the_core_schema_first() {
        let mut r = json!({
            "schemas": ["urn:x:ext"],
            "displayName": "a",
            "meta": {"resourceType": "User", "version": "W/\"1\""},
        });
        meta(Some("https://h"), "2026-01-01T00:00:00Z").stamp(&mut r);
        assert_eq!(
            r,
            json!({
                "schemas": [CORE_GROUP_URN, "urn:x:ext"],
                "displayName": "a",
                "meta": {
                    "resourceType": "Group",
                    "created": "2026-01-01T00:00:00Z",
                    "lastModified": "2026-01-02T00:00:00Z",
                    "location": "https://h/Groups/g-1",
                },
            })
        );
        // Keys keep the order clients see.
        let keys: Vec<_> = r["meta"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["resourceType", "created", "lastModified", "location"]
        );
    }

    #[test]
    fn stamp_without_a_base_url_has_no_location_and_keeps_a_listed_schema() {
        let mut r = json!({"schemas": ["URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:GROUP"]});
        meta(None, "c").stamp(&mut r);
        assert_eq!(r["schemas"].as_array().unwrap().len(), 1);
        assert!(r["meta"].get("location").is_none());
        assert_eq!(created(&r), Some("c"));

        let mut r = json!({});
        meta(None, "c").stamp(&mut r);
        assert_eq!(r["schemas"], json!([CORE_GROUP_URN]));

        let mut not_an_object = json!([1]);
        meta(None, "c").stamp(&mut not_an_object);
        assert_eq!(not_an_object, json!([1]));
    }
}
