//! A group's members in a request: the cap on how many one request may
//! name, the check of the ids an edit names (and their kinds), and whether
//! a large group is shown without its members.
//!
//! Knows member ids and the store's member keys through `Store`; how the
//! members are presented is `present.rs`'s.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Api, LIST_MEMBERS_MAX};
use crate::scim::members::MemberEdit;
use crate::scim::project::Projection;
use crate::scim::ScimError;
use crate::store::{Kind, MemberOps};

impl Api {
    /// Refuses a request that names more members than
    /// `server.max_members_per_request`, before any of them is looked at.
    pub(super) fn member_cap(&self, named: usize) -> Result<(), ScimError> {
        if named > self.max_members {
            return Err(ScimError::invalid_value(format!(
                "this request names {named} members; at most {} are accepted in one request (server.max_members_per_request): send the rest in further PATCH requests",
                self.max_members
            )));
        }
        Ok(())
    }

    /// Checks the member ids of a group edit (each must be a User or a
    /// Group this server knows, and not the group itself) and works out
    /// their kinds.
    pub(super) fn member_ops(&self, gid: &str, edit: MemberEdit) -> Result<MemberOps, ScimError> {
        let kind_of = |id: String| -> Result<(String, Kind), ScimError> {
            if id == gid {
                return Err(ScimError::invalid_value(
                    "a group cannot be a member of itself",
                ));
            }
            for kind in [Kind::User, Kind::Group] {
                if self
                    .store
                    .exists(kind, &id)
                    .map_err(|e| ScimError::internal(e.to_string()))?
                {
                    return Ok((id, kind));
                }
            }
            Err(ScimError::invalid_value(format!(
                "members: there is no User or Group with id {id:?}"
            )))
        };
        Ok(MemberOps {
            replace: edit
                .replace
                .map(|l| l.into_iter().map(kind_of).collect::<Result<Vec<_>, _>>())
                .transpose()?,
            add: edit
                .add
                .into_iter()
                .map(kind_of)
                .collect::<Result<Vec<_>, _>>()?,
            remove: edit.remove,
            displays: edit.displays.into_iter().collect(),
            only_members: false,
        })
    }

    /// A group listed or written (`in_list`) with more than [`LIST_MEMBERS_MAX`]
    /// members is shown without them, unless `attributes` names `members`.
    pub(super) fn members_left_out(
        &self,
        gid: &str,
        in_list: bool,
        projection: &Projection,
    ) -> Result<bool, ScimError> {
        if !in_list || projection.names("members") {
            return Ok(false);
        }
        let n = self
            .store
            .member_count_upto(gid, LIST_MEMBERS_MAX + 1)
            .map_err(|e| ScimError::internal(e.to_string()))?;
        Ok(n > LIST_MEMBERS_MAX)
    }
}

/// Parses a request body as JSON. The items of its `members` list that
/// say nothing but a member's id (`{"value": id}`, with perhaps `type` and
/// `$ref`, which the daemon does not use: a member's kind is what the
/// store holds) are kept as the bare id string, which the member edit
/// reads the same way: a 50,000-member group body then holds 50,000
/// strings rather than 50,000 maps. Every other item, and everything
/// else in the body, is kept as parsed.
pub fn parse_body(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<Body>(bytes).map(|b| b.0)
}

/// A member item reduced to its id, if it holds nothing else the daemon
/// reads.
fn compact_member(item: Value) -> Value {
    let Value::Object(o) = &item else {
        return item;
    };
    let mut id = None;
    for (k, v) in o {
        if k.eq_ignore_ascii_case("value") {
            match (v, &id) {
                (Value::String(s), None) => id = Some(s),
                _ => return item,
            }
        } else if !(k.eq_ignore_ascii_case("type") || k.eq_ignore_ascii_case("$ref")) {
            return item;
        }
    }
    match id {
        Some(id) => Value::String(id.clone()),
        None => item,
    }
}

/// A request body: a JSON value whose top-level `members` list is read
/// item by item through [`compact_member`].
struct Body(Value);

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BodyVisitor).map(Body)
    }
}

struct BodyVisitor;

/// The scalar `visit_*` methods of a visitor that builds a `Value`, as
/// `Value` itself parses them.
macro_rules! scalar_visits {
    () => {
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_string()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
    };
}
impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    scalar_visits!();
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = if k.eq_ignore_ascii_case("members") {
                map.next_value::<Members>()?.0
            } else {
                map.next_value()?
            };
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// A `members` value: a list is read item by item, each item reduced by
/// [`compact_member`] as soon as it is parsed; anything else as parsed.
struct Members(Value);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(v) = seq.next_element::<Value>()? {
                    out.push(compact_member(v));
                }
                Ok(Value::Array(out))
            }
            // Anything else: as `Value` parses it.
            scalar_visits!();
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
                Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(ListVisitor).map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn member_items_with_only_an_id_are_kept_as_the_id() {
        let body = br#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "G", "externalId": 7, "ratio": 1.5, "none": null,
            "members": [{"value": "a"}, {"value": "b", "type": "User", "$ref": null},
                        {"value": "c", "display": "C"}, {"value": 5}, {"type": "User"},
                        {"value": "d", "Value": "e"}, "f", {"value": " g "}]}"#;
        let parsed = parse_body(body).unwrap();
        assert_eq!(
            parsed,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "G", "externalId": 7, "ratio": 1.5, "none": null,
                "members": ["a", "b", {"value": "c", "display": "C"}, {"value": 5},
                            {"type": "User"}, {"value": "d", "Value": "e"}, "f", " g "]})
        );
        // What the member edit reads is what it read from the plain parse.
        let mut plain: Value = serde_json::from_slice(body).unwrap();
        let mut compact = parsed;
        plain["members"].as_array_mut().unwrap().truncate(3);
        compact["members"].as_array_mut().unwrap().truncate(3);
        assert_eq!(
            crate::scim::members::take_members(&mut compact).unwrap(),
            crate::scim::members::take_members(&mut plain).unwrap()
        );
    }

    #[test]
    fn every_other_body_parses_as_plain_json() {
        for body in [
            &br#"{"Operations": [{"op": "add", "path": "members", "value": [{"value": "a"}]}]}"#[..],
            br#"{"MEMBERS": {"value": "a"}, "x": [1, {"members": [{"value": "b"}]}]}"#,
            br#"{"members": null}"#,
            br#"{"members": "a"}"#,
            br#"[1, 2]"#,
            br#""text""#,
            br#"-3"#,
            br#"{"a": 18446744073709551615, "b": -1e300}"#,
        ] {
            assert_eq!(
                parse_body(body).unwrap(),
                serde_json::from_slice::<Value>(body).unwrap(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for bad in [
            &b"{"[..],
            b"{\"members\": [{\"value\": \"a\"},]}",
            b"{} x",
            b"nul",
        ] {
            assert_eq!(
                parse_body(bad).unwrap_err().to_string(),
                serde_json::from_slice::<Value>(bad)
                    .unwrap_err()
                    .to_string()
            );
        }
    }
}
