//! Response projection: the `attributes` and `excludedAttributes`
//! parameters of RFC 7644 §3.4.2.5 and §3.9.
//!
//! `attributes` replaces the default set of returned attributes with the
//! ones named; `excludedAttributes` removes the named ones from it. Names
//! are in standard attribute notation (§3.10): `userName`,
//! `name.givenName`, `emails.value`, URN-qualified
//! (`urn:...:enterprise:2.0:User:department`) or a whole extension URN.
//! Either way `schemas`, `id` and every attribute whose schema says
//! `returned: always` stay, `returned: never` ones never appear, and
//! `returned: request` ones appear only when named in `attributes`.
//!
//! [`Projection::wants`] answers for one top-level attribute before the
//! resource is read, so that a handler can skip loading what will not be
//! returned (a group's members under `excludedAttributes=members`).

use serde_json::{Map, Value};

use crate::scim::error::ScimError;
use crate::scim::json::key_ci;
use crate::scim::path::AttrPath;
use crate::scim::schema::{common_attributes, AttrDef, Returned, Schema, SchemaRegistry};

/// What is kept of one attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keep {
    All,
    Nothing,
    /// Only these sub-attributes (canonical names, lowercased).
    Only(Vec<String>),
    /// Everything but these sub-attributes (lowercased).
    Except(Vec<String>),
}

/// A parsed `attributes` / `excludedAttributes` pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    /// `None`: the default set.
    include: Option<Vec<AttrPath>>,
    exclude: Vec<AttrPath>,
}

/// What a path names once resolved against a registry.
enum Target<'a> {
    /// A whole schema (a bare schema URN).
    Schema(&'a Schema),
    /// An attribute of a schema, perhaps one sub-attribute of it.
    Attr {
        schema: &'a str,
        attr: &'a str,
        sub: Option<&'a str>,
    },
}

/// Splits a comma-separated parameter into parsed paths (400 invalidPath
/// for a malformed one); blanks are ignored.
fn parse_list<'a>(
    items: impl Iterator<Item = &'a str>,
    param: &str,
) -> Result<Vec<AttrPath>, ScimError> {
    let mut out = Vec::new();
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let path = AttrPath::parse(item)
            .map_err(|e| ScimError::invalid_path(format!("{param}: {}", e.detail)))?;
        out.push(path);
    }
    Ok(out)
}

impl Projection {
    /// The default set: everything but `returned: never` / `request`.
    pub fn all() -> Projection {
        Projection::default()
    }

    /// From the query parameters' text (comma-separated lists).
    pub fn parse(
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Result<Projection, ScimError> {
        let include = parse_list(attributes.unwrap_or_default().split(','), "attributes")?;
        let exclude = parse_list(
            excluded.unwrap_or_default().split(','),
            "excludedAttributes",
        )?;
        Ok(Projection {
            include: if include.is_empty() {
                None
            } else {
                Some(include)
            },
            exclude,
        })
    }

    /// From the members of a SearchRequest body: each may be an array of
    /// names or one comma-separated string.
    pub fn from_json(
        attributes: Option<&Value>,
        excluded: Option<&Value>,
    ) -> Result<Projection, ScimError> {
        fn text(v: Option<&Value>, param: &str) -> Result<Option<String>, ScimError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Array(items)) => {
                    let mut parts = Vec::new();
                    for i in items {
                        match i {
                            Value::String(s) => parts.push(s.as_str()),
                            _ => {
                                return Err(ScimError::invalid_value(format!(
                                    "{param} must be a list of attribute names"
                                )))
                            }
                        }
                    }
                    Ok(Some(parts.join(",")))
                }
                Some(_) => Err(ScimError::invalid_value(format!(
                    "{param} must be a list of attribute names"
                ))),
            }
        }
        let a = text(attributes, "attributes")?;
        let e = text(excluded, "excludedAttributes")?;
        Projection::parse(a.as_deref(), e.as_deref())
    }

    /// Whether `attributes` names the top-level attribute `name` itself
    /// (or one of its sub-attributes): asked for outright, not merely
    /// part of the default set.
    pub fn names(&self, name: &str) -> bool {
        self.include
            .as_ref()
            .is_some_and(|l| l.iter().any(|p| p.name.eq_ignore_ascii_case(name)))
    }

    /// Whether this is the default set (nothing to do but drop `never`
    /// and `request` attributes).
    pub fn is_default(&self) -> bool {
        self.include.is_none() && self.exclude.is_empty()
    }

    /// Whether any part of the top-level attribute `name` (of the core
    /// schema, or unqualified) may be in the response. `false` is a
    /// promise: the attribute will not be returned, so it need not be read.
    pub fn wants(&self, name: &str, reg: &SchemaRegistry) -> bool {
        let path = AttrPath::new(name);
        match reg.resolve(&path) {
            Some((schema, def, _)) => self.keep(&schema.id, def, reg) != Keep::Nothing,
            // An attribute no schema knows is returned only by default.
            None => self.include.is_none(),
        }
    }

    /// Removes from `resource` what the client did not ask for, and drops
    /// from `schemas` the extensions that no longer have an object.
    pub fn apply(&self, resource: &mut Value, reg: &SchemaRegistry) {
        let Value::Object(root) = resource else {
            return;
        };
        let keys: Vec<String> = root.keys().cloned().collect();
        for key in keys {
            if key.eq_ignore_ascii_case("schemas") {
                continue;
            }
            let def = common_attributes()
                .iter()
                .find(|d| d.name.eq_ignore_ascii_case(&key))
                .or_else(|| reg.core.attr(&key));
            if let Some(def) = def {
                let keep = self.keep(&reg.core.id, def, reg);
                apply_keep(root, &key, &keep);
            } else if let Some(ext) = reg.extension(&key) {
                if let Some(Value::Object(obj)) = root.get_mut(&key) {
                    let inner: Vec<String> = obj.keys().cloned().collect();
                    for k in inner {
                        match ext.attr(&k) {
                            Some(def) => {
                                let keep = self.keep(&ext.id, def, reg);
                                apply_keep(obj, &k, &keep);
                            }
                            None => {
                                if self.include.is_some() {
                                    obj.shift_remove(&k);
                                }
                            }
                        }
                    }
                    if obj.is_empty() {
                        root.shift_remove(&key);
                    }
                }
            } else if self.include.is_some() {
                root.shift_remove(&key);
            }
        }
        let present: Vec<String> = root.keys().map(|k| k.to_ascii_lowercase()).collect();
        if let Some(Value::Array(schemas)) = root.get_mut("schemas") {
            schemas.retain(|s| {
                let Some(urn) = s.as_str() else {
                    return true;
                };
                reg.is_core(urn)
                    || reg.extension(urn).is_none()
                    || present.contains(&urn.to_ascii_lowercase())
            });
        }
    }

    /// The decision for one attribute of the schema `schema`.
    fn keep(&self, schema: &str, def: &AttrDef, reg: &SchemaRegistry) -> Keep {
        match def.returned {
            Returned::Always => return Keep::All,
            Returned::Never => return Keep::Nothing,
            Returned::Default | Returned::Request => {}
        }
        let mut keep = match &self.include {
            None if def.returned == Returned::Request => Keep::Nothing,
            None => Keep::All,
            Some(list) => {
                let mut subs = Vec::new();
                let mut whole = false;
                for p in list {
                    match hit(p, schema, def, reg) {
                        Some(None) => whole = true,
                        Some(Some(sub)) => subs.push(sub),
                        None => {}
                    }
                }
                if whole {
                    Keep::All
                } else if subs.is_empty() {
                    Keep::Nothing
                } else {
                    // Sub-attributes that are always returned come along.
                    for sd in &def.sub_attributes {
                        if sd.returned == Returned::Always {
                            subs.push(sd.name.to_ascii_lowercase());
                        }
                    }
                    Keep::Only(subs)
                }
            }
        };
        for p in &self.exclude {
            match hit(p, schema, def, reg) {
                Some(None) => return Keep::Nothing,
                Some(Some(sub)) => {
                    let always = def
                        .sub(&sub)
                        .is_some_and(|sd| sd.returned == Returned::Always);
                    if always {
                        continue;
                    }
                    keep = match keep {
                        Keep::All => Keep::Except(vec![sub]),
                        Keep::Except(mut v) => {
                            v.push(sub);
                            Keep::Except(v)
                        }
                        Keep::Only(mut v) => {
                            v.retain(|s| *s != sub);
                            if v.is_empty() {
                                Keep::Nothing
                            } else {
                                Keep::Only(v)
                            }
                        }
                        Keep::Nothing => Keep::Nothing,
                    }
                }
                None => {}
            }
        }
        keep
    }
}

/// Whether path `p` names attribute `def` of schema `schema`: `Some(None)`
/// for the whole attribute, `Some(Some(sub))` for one sub-attribute
/// (lowercased), `None` when it names something else.
fn hit(p: &AttrPath, schema: &str, def: &AttrDef, reg: &SchemaRegistry) -> Option<Option<String>> {
    match target(p, reg)? {
        Target::Schema(s) => s.id.eq_ignore_ascii_case(schema).then_some(None),
        Target::Attr {
            schema: s,
            attr,
            sub,
        } => {
            if !s.eq_ignore_ascii_case(schema) || !attr.eq_ignore_ascii_case(&def.name) {
                return None;
            }
            Some(sub.map(str::to_ascii_lowercase))
        }
    }
}

fn target<'a>(p: &AttrPath, reg: &'a SchemaRegistry) -> Option<Target<'a>> {
    if p.sub.is_none() {
        if let Some(urn) = &p.urn {
            // A bare schema URN parses as URN prefix + last segment.
            let whole = format!("{urn}:{}", p.name);
            if let Some(s) = reg.schema(&whole) {
                return Some(Target::Schema(s));
            }
        }
    }
    let (schema, def, sub) = reg.resolve(p)?;
    Some(Target::Attr {
        schema: &schema.id,
        attr: &def.name,
        sub: sub.map(|d| d.name.as_str()),
    })
}

fn apply_keep(map: &mut Map<String, Value>, key: &str, keep: &Keep) {
    let Some(k) = key_ci(map, key).map(str::to_string) else {
        return;
    };
    match keep {
        Keep::All => {}
        Keep::Nothing => {
            map.shift_remove(&k);
        }
        Keep::Only(subs) | Keep::Except(subs) => {
            let only = matches!(keep, Keep::Only(_));
            let wanted = |name: &str| subs.contains(&name.to_ascii_lowercase()) == only;
            let Some(v) = map.get_mut(&k) else {
                return;
            };
            let filter_obj = |o: &mut Map<String, Value>| o.retain(|name, _| wanted(name));
            match v {
                Value::Object(o) => filter_obj(o),
                Value::Array(items) => {
                    for item in items.iter_mut() {
                        if let Value::Object(o) = item {
                            filter_obj(o);
                        }
                    }
                    items.retain(|i| !matches!(i, Value::Object(o) if o.is_empty()));
                }
                _ => {
                    // A simple value has no sub-attributes: asking for one
                    // selects nothing, excluding one leaves it.
                    if only {
                        map.shift_remove(&k);
                    }
                    return;
                }
            }
            let empty = match map.get(&k) {
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if empty {
                map.shift_remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{CORE_USER_URN, ENTERPRISE_USER_URN};
    use serde_json::json;

    fn reg() -> SchemaRegistry {
        SchemaRegistry::users(Vec::new())
    }

    fn user() -> Value {
        json!({
            "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
            "id": "42",
            "externalId": "e-42",
            "userName": "alice",
            "name": {"givenName": "Alice", "familyName": "Liddell"},
            "emails": [{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"}],
            "active": true,
            ENTERPRISE_USER_URN: {"department": "R&D", "employeeNumber": "7"},
            "meta": {"resourceType": "User", "version": "W/\"3\""}
        })
    }

    fn check(attributes: Option<&str>, excluded: Option<&str>, expect: Value) {
        let p = Projection::parse(attributes, excluded).unwrap();
        let mut u = user();
        p.apply(&mut u, &reg());
        assert_eq!(u, expect, "attributes={attributes:?} excluded={excluded:?}");
    }

    #[test]
    fn default_set_is_unchanged() {
        check(None, None, user());
        check(Some(""), Some(" , "), user());
    }

    #[test]
    fn attributes_keep_only_named_plus_always_returned() {
        check(
            Some("userName"),
            None,
            json!({"schemas": [CORE_USER_URN], "id": "42", "userName": "alice"}),
        );
        check(
            Some("USERNAME,name.givenName"),
            None,
            json!({"schemas": [CORE_USER_URN], "id": "42", "userName": "alice",
                   "name": {"givenName": "Alice"}}),
        );
        check(
            Some("emails.type"),
            None,
            json!({"schemas": [CORE_USER_URN], "id": "42",
                   "emails": [{"type": "work"}, {"type": "home"}]}),
        );
        check(
            Some("urn:ietf:params:scim:schemas:core:2.0:User:userName,meta"),
            None,
            json!({"schemas": [CORE_USER_URN], "id": "42", "userName": "alice",
                   "meta": {"resourceType": "User", "version": "W/\"3\""}}),
        );
    }

    #[test]
    fn extension_attributes_by_urn() {
        check(
            Some(&format!("{ENTERPRISE_USER_URN}:department")),
            None,
            json!({"schemas": [CORE_USER_URN, ENTERPRISE_USER_URN], "id": "42",
                   ENTERPRISE_USER_URN: {"department": "R&D"}}),
        );
        // Unqualified names that only the extension defines resolve to it.
        check(
            Some("employeeNumber"),
            None,
            json!({"schemas": [CORE_USER_URN, ENTERPRISE_USER_URN], "id": "42",
                   ENTERPRISE_USER_URN: {"employeeNumber": "7"}}),
        );
        check(
            Some(ENTERPRISE_USER_URN),
            None,
            json!({"schemas": [CORE_USER_URN, ENTERPRISE_USER_URN], "id": "42",
                   ENTERPRISE_USER_URN: {"department": "R&D", "employeeNumber": "7"}}),
        );
        let mut expect = user();
        expect
            .as_object_mut()
            .unwrap()
            .shift_remove(ENTERPRISE_USER_URN);
        expect["schemas"] = json!([CORE_USER_URN]);
        check(None, Some(ENTERPRISE_USER_URN), expect);
    }

    #[test]
    fn excluded_attributes_remove_but_never_id() {
        let mut expect = user();
        let o = expect.as_object_mut().unwrap();
        o.shift_remove("emails");
        o["name"] = json!({"familyName": "Liddell"});
        check(None, Some("emails,name.givenName,id,schemas"), expect);
        // Both parameters: exclusions apply to the named set.
        check(
            Some("name,userName"),
            Some("name.familyName"),
            json!({"schemas": [CORE_USER_URN], "id": "42", "userName": "alice",
                   "name": {"givenName": "Alice"}}),
        );
    }

    #[test]
    fn wants_answers_before_reading() {
        let groups = SchemaRegistry::groups(Vec::new());
        let p = Projection::parse(None, Some("members")).unwrap();
        assert!(!p.wants("members", &groups));
        assert!(p.wants("displayName", &groups));
        let p = Projection::parse(Some("members.value"), None).unwrap();
        assert!(p.wants("members", &groups));
        assert!(!p.wants("displayName", &groups));
        assert!(p.wants("id", &groups));
        assert!(Projection::all().wants("members", &groups));
    }

    #[test]
    fn malformed_names_are_invalid_path() {
        let e = Projection::parse(Some("emails[type eq \"work\"]"), None).unwrap_err();
        assert_eq!(
            (e.status, e.scim_type),
            (400, Some(crate::scim::ScimType::InvalidPath))
        );
        assert!(Projection::parse(None, Some("a.b.c")).is_err());
        let e = Projection::from_json(Some(&json!([1])), None).unwrap_err();
        assert_eq!(e.status, 400);
        let p = Projection::from_json(Some(&json!(["userName", "name.givenName"])), None).unwrap();
        assert_eq!(
            p,
            Projection::parse(Some("userName,name.givenName"), None).unwrap()
        );
    }

    #[test]
    fn unknown_names_select_nothing_and_exclude_nothing() {
        check(
            Some("nosuch"),
            None,
            json!({"schemas": [CORE_USER_URN], "id": "42"}),
        );
        check(None, Some("nosuch"), user());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = String> {
            prop::sample::select(vec![
                "id",
                "schemas",
                "userName",
                "USERNAME",
                "name",
                "name.givenName",
                "emails",
                "emails.value",
                "emails.type",
                "active",
                "meta",
                "meta.version",
                "nosuch",
                "department",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
                "urn:ietf:params:scim:schemas:core:2.0:User:userName",
            ])
            .prop_map(str::to_string)
        }

        /// Every key of `a`, recursively, is in `b` with the same scalar.
        fn subset(a: &Value, b: &Value) -> bool {
            match (a, b) {
                (Value::Object(x), Value::Object(y)) => x
                    .iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| subset(v, w))),
                (Value::Array(x), Value::Array(y)) => {
                    x.iter().all(|v| y.iter().any(|w| subset(v, w)))
                }
                _ => a == b,
            }
        }

        proptest! {
            #[test]
            fn projection_keeps_id_only_removes_and_is_idempotent(
                include in prop::collection::vec(name(), 0..4),
                exclude in prop::collection::vec(name(), 0..4),
            ) {
                let p = Projection::parse(Some(&include.join(",")), Some(&exclude.join(","))).unwrap();
                let mut once = user();
                p.apply(&mut once, &reg());
                prop_assert_eq!(&once["id"], &json!("42"));
                prop_assert!(once["schemas"].as_array().is_some_and(|s| s[0] == CORE_USER_URN));
                prop_assert!(subset(&once, &user()), "{} is not part of the user", once);
                let mut twice = once.clone();
                p.apply(&mut twice, &reg());
                prop_assert_eq!(&twice, &once);
                // `wants` is safe: what it rules out is never returned.
                for attr in ["userName", "name", "emails", "active", "meta"] {
                    if !p.wants(attr, &reg()) {
                        prop_assert!(once.get(attr).is_none(), "{}", attr);
                    }
                }
            }
        }
    }
}
