//! Applying a validated mapping: SCIM resource → LDAP entry, LDAP
//! attributes → SCIM resource (adoption), and the LDAP filter that finds
//! the entry holding a given SCIM value.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::paths::{key_of, SimplePath};
use super::template::{apply_all, render, Source, Transform};
use super::{
    AttributeRule, DeleteAction, EmptyGroup, GroupMapping, Mapping, Reference, ResourceMapping,
    ScimPath,
};
use crate::dn::{escape_dn_value, escape_filter_value};
use crate::scim::schema::{AttrType, SchemaRegistry};
use crate::scim::ScimError;

/// The LDAP entry a SCIM resource maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapEntry {
    /// Full DN, RFC 4514 form, the RDN value escaped.
    pub dn: String,
    pub rdn_attr: String,
    /// The RDN value, unescaped; also one of `attrs[rdn_attr]`.
    pub rdn_value: String,
    pub object_classes: Vec<String>,
    /// Attribute names as the mapping spells them; an attribute without a
    /// value is absent (the writer removes it if it is managed).
    pub attrs: BTreeMap<String, Vec<String>>,
}

impl LdapEntry {
    /// The RDN as the directory compares it (`attr=value`, the value
    /// prepared by RFC 4518 for caseIgnoreMatch): two entries with equal
    /// keys under one parent would be one entry.
    pub fn rdn_key(&self) -> String {
        crate::dn::rdn_key(&self.rdn_attr, &self.rdn_value)
    }
}

impl LdapEntry {
    /// The RDN as modrdn wants it: `uid=alice` with the value escaped.
    pub fn rdn(&self) -> String {
        format!("{}={}", self.rdn_attr, escape_dn_value(&self.rdn_value))
    }

    /// The values of an attribute, its name compared case-insensitively.
    pub fn get(&self, attr: &str) -> Option<&Vec<String>> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v)
    }
}

/// A group's entry, and the members that could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub entry: LdapEntry,
    /// SCIM ids in `members` that the resolver could not turn into a
    /// value of the table's member attribute (no entry yet, or no such
    /// attribute; `also` attributes are not counted): left out of the
    /// entry so the rest still converges; the writer decides whether to
    /// retry.
    pub unresolved_members: Vec<String>,
}

/// What the directory holds for other SCIM resources, asked when a value
/// refers to one (group members, `resolve = "dn"` rules such as manager).
/// The LDAP writer implements it from the store's id → entry links.
pub trait Resolver {
    /// The current DN of the entry linked to this SCIM id.
    fn dn(&self, id: &str) -> Option<String>;
    /// The values of `attribute` on the entry linked to this SCIM id.
    fn attribute(&self, id: &str, attribute: &str) -> Vec<String>;
}

/// Resolves nothing: rules with `resolve` get no value.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResolver;

impl Resolver for NoResolver {
    fn dn(&self, _: &str) -> Option<String> {
        None
    }
    fn attribute(&self, _: &str, _: &str) -> Vec<String> {
        Vec::new()
    }
}

fn resolve_one(r: &Reference, id: &str, resolver: &dyn Resolver) -> Vec<String> {
    match r {
        Reference::Dn => resolver.dn(id).into_iter().collect(),
        Reference::Attribute(a) => resolver.attribute(id, a),
    }
}

/// Appends `v` unless an equal value (ignoring case, as most LDAP
/// equality rules do) is there already: the directory refuses duplicates.
fn push_unique(out: &mut Vec<String>, v: String) {
    if !out.iter().any(|o| o.to_lowercase() == v.to_lowercase()) {
        out.push(v);
    }
}

impl AttributeRule {
    /// The rule's values: those of the first source that has any, after
    /// transforms; blank values do not count. Errors are mapping faults.
    fn values(
        &self,
        resource: &Value,
        reg: &SchemaRegistry,
        resolver: &dyn Resolver,
    ) -> Result<Vec<String>, ScimError> {
        for src in &self.sources {
            let raw = src.values(resource, reg).map_err(|e| {
                ScimError::internal(format!("mapping of LDAP attribute {}: {e}", self.attribute))
            })?;
            let mut out = Vec::new();
            for v in raw {
                let v = apply_all(&self.transforms, &v);
                if v.trim().is_empty() {
                    continue;
                }
                match &self.resolve {
                    None => push_unique(&mut out, v),
                    Some(r) => {
                        for x in resolve_one(r, &v, resolver) {
                            push_unique(&mut out, x);
                        }
                    }
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        Ok(Vec::new())
    }

    fn describe_sources(&self) -> String {
        self.sources
            .iter()
            .map(Source::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ResourceMapping {
    /// The entry for a SCIM resource, with nothing resolved: rules with
    /// `resolve` get no value. The writer uses [`Self::entry_with`].
    pub fn entry(&self, resource: &Value, reg: &SchemaRegistry) -> Result<LdapEntry, ScimError> {
        self.entry_with(resource, reg, &NoResolver)
    }

    /// The entry for a SCIM resource. A required attribute without a value
    /// is 400 invalidValue naming it and the sources tried; a source that
    /// yields something LDAP cannot hold (a complex value) is a 500, since
    /// the mapping is at fault, not the client.
    pub fn entry_with(
        &self,
        resource: &Value,
        reg: &SchemaRegistry,
        resolver: &dyn Resolver,
    ) -> Result<LdapEntry, ScimError> {
        let mut attrs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rule in &self.rules {
            let values = rule.values(resource, reg, resolver)?;
            if values.is_empty() {
                if rule.required {
                    return Err(ScimError::invalid_value(format!(
                        "LDAP attribute {} is required but none of its sources has a value (tried {})",
                        rule.attribute,
                        rule.describe_sources()
                    )));
                }
                continue;
            }
            attrs.insert(rule.attribute.clone(), values);
        }
        let rdn_value = render(&self.rdn_value, resource, reg)
            .map_err(|e| ScimError::internal(format!("mapping of the DN: {e}")))?
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                ScimError::invalid_value(format!(
                    "the entry's DN needs a value for {}",
                    super::template::describe_template(&self.rdn_value)
                ))
            })?;
        // LDAP requires the RDN value among the attribute's values.
        let rdn_values = attrs
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(&self.rdn_attr))
            .map(|(_, v)| v);
        match rdn_values {
            Some(v) => {
                if !v
                    .iter()
                    .any(|x| x.to_lowercase() == rdn_value.to_lowercase())
                {
                    v.insert(0, rdn_value.clone());
                }
            }
            None => {
                attrs.insert(self.rdn_attr.clone(), vec![rdn_value.clone()]);
            }
        }
        if let Some(ida) = &self.id_attribute {
            if let Some(id) = resource
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
            {
                attrs.insert(ida.clone(), vec![id.to_string()]);
            }
        }
        Ok(LdapEntry {
            dn: format!(
                "{}={},{}",
                self.rdn_attr,
                escape_dn_value(&rdn_value),
                self.parent_dn
            ),
            rdn_attr: self.rdn_attr.clone(),
            rdn_value,
            object_classes: self.object_classes.clone(),
            attrs,
        })
    }

    /// Rules that can be read back, best first: a rule whose only source
    /// is the path beats one where it is the head of a fallback list.
    fn reversible(&self) -> Vec<(&AttributeRule, &ScimPath, &SimplePath)> {
        let mut v: Vec<_> = self
            .rules
            .iter()
            .filter(|r| r.resolve.is_none())
            .filter(|r| r.transforms.iter().all(Transform::is_reversible))
            .filter_map(|r| match r.sources.first() {
                Some(Source::Path(p)) => p.simple().map(|s| (r, p, s)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(r, _, _)| {
            (
                r.sources.len() > 1,
                !r.attribute.eq_ignore_ascii_case(&self.rdn_attr),
            )
        });
        v
    }

    /// Builds a SCIM resource from an existing entry's attributes (names
    /// compared case-insensitively), for adopting entries the directory
    /// already has. Uses every rule whose first source is a plain path;
    /// templates, constants and resolved references cannot be read back.
    /// Lowercase/uppercase/trim read back as the value stored; a rule with
    /// a lossy transform (`before`, `max_length`, `replace`, `ascii`,
    /// `trim:CHARS`) is not read back.
    pub fn to_scim(&self, attrs: &BTreeMap<String, Vec<String>>) -> Value {
        let get = |name: &str| {
            attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
                .filter(|v| !v.is_empty())
        };
        let mut root = Map::new();
        let mut schemas = vec![Value::String(self.registry.core.id.clone())];
        let mut done: Vec<String> = Vec::new();
        for (rule, _, sp) in self.reversible() {
            let Some(values) = get(&rule.attribute) else {
                continue;
            };
            let key = sp.key();
            if done.contains(&key) {
                continue;
            }
            let Some((schema, def, _)) = self.registry.resolve(&sp.attr) else {
                continue;
            };
            done.push(key);
            let holder = if self.registry.is_core(&schema.id) {
                &mut root
            } else {
                if !schemas
                    .iter()
                    .any(|s| s.as_str() == Some(schema.id.as_str()))
                {
                    schemas.push(Value::String(schema.id.clone()));
                }
                match root
                    .entry(schema.id.clone())
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    Value::Object(m) => m,
                    _ => continue,
                }
            };
            let sub = sp
                .sub
                .clone()
                .or_else(|| (def.ty == AttrType::Complex).then(|| "value".to_string()));
            match sub {
                None => {
                    let typed: Vec<Value> = values.iter().map(|v| typed_value(v, def.ty)).collect();
                    let v = if def.multi_valued {
                        Value::Array(typed)
                    } else {
                        typed[0].clone()
                    };
                    holder.insert(def.name.clone(), v);
                }
                Some(sub) => {
                    let sub_def = def.sub(&sub);
                    let sub_name = sub_def.map_or(sub.clone(), |d| d.name.clone());
                    let sub_ty = sub_def.map_or(AttrType::String, |d| d.ty);
                    if def.multi_valued {
                        let arr = match holder
                            .entry(def.name.clone())
                            .or_insert_with(|| Value::Array(Vec::new()))
                        {
                            Value::Array(a) => a,
                            _ => continue,
                        };
                        for v in values {
                            let mut el = Map::new();
                            if let Some((fa, fv)) = &sp.filter {
                                let fname = def.sub(fa).map_or(fa.clone(), |d| d.name.clone());
                                el.insert(fname, Value::String(fv.clone()));
                            }
                            el.insert(sub_name.clone(), typed_value(v, sub_ty));
                            arr.push(Value::Object(el));
                        }
                    } else {
                        let obj = match holder
                            .entry(def.name.clone())
                            .or_insert_with(|| Value::Object(Map::new()))
                        {
                            Value::Object(o) => o,
                            _ => continue,
                        };
                        obj.insert(sub_name, typed_value(&values[0], sub_ty));
                    }
                }
            }
        }
        if let Some(ida) = &self.id_attribute {
            if let Some(id) = get(ida) {
                root.insert("id".to_string(), Value::String(id[0].clone()));
            }
        }
        root.insert("schemas".to_string(), Value::Array(schemas));
        Value::Object(root)
    }

    /// An LDAP filter finding the entry whose mapped attribute holds this
    /// SCIM value, e.g. userName "alice" →
    /// `(&(objectClass=inetOrgPerson)(uid=alice))`. `None` when no
    /// reversible rule maps the attribute (then the directory cannot be
    /// searched for it). `id` is found through `id_attribute`.
    pub fn ldap_filter_for(&self, scim_attr: &str, value: &str) -> Option<String> {
        let class = escape_filter_value(self.search_class());
        let key = key_of(scim_attr)?;
        if key == "id" {
            let ida = self.id_attribute.as_deref()?;
            return Some(format!(
                "(&(objectClass={class})({ida}={}))",
                escape_filter_value(value)
            ));
        }
        let (rule, _, _) = self
            .reversible()
            .into_iter()
            .find(|(_, _, sp)| sp.key() == key)?;
        let v = apply_all(&rule.transforms, value);
        if v.trim().is_empty() {
            return None;
        }
        Some(format!(
            "(&(objectClass={class})({}={}))",
            rule.attribute,
            escape_filter_value(&v)
        ))
    }
}

/// An LDAP string as the SCIM type wants it: Boolean syntax TRUE/FALSE
/// to JSON booleans, integers to numbers; anything unparsable stays text.
fn typed_value(v: &str, ty: AttrType) -> Value {
    match ty {
        AttrType::Boolean if v.eq_ignore_ascii_case("true") => Value::Bool(true),
        AttrType::Boolean if v.eq_ignore_ascii_case("false") => Value::Bool(false),
        AttrType::Integer => v
            .trim()
            .parse::<i64>()
            .map_or_else(|_| Value::String(v.to_string()), Value::from),
        _ => Value::String(v.to_string()),
    }
}

impl GroupMapping {
    /// The group's entry, members included: each `members[].value` (a
    /// SCIM id) becomes the value each member attribute asks for; an
    /// attribute without values gets its placeholder (the table's own
    /// attribute, when it has one) or is left out.
    pub fn entry(
        &self,
        resource: &Value,
        reg: &SchemaRegistry,
        resolver: &dyn Resolver,
    ) -> Result<GroupEntry, ScimError> {
        let mut entry = self.resource.entry_with(resource, reg, resolver)?;
        let ids = member_ids(resource);
        let mut unresolved = Vec::new();
        for (i, attr) in self.members.attributes().into_iter().enumerate() {
            let mut values = Vec::new();
            for id in &ids {
                let got = resolve_one(attr.value, id, resolver);
                // Judged on the table's own attribute: a nested group has
                // no value in an `also` attribute such as memberUid.
                if got.is_empty() && i == 0 {
                    unresolved.push(id.clone());
                }
                for v in got {
                    push_unique(&mut values, v);
                }
            }
            if values.is_empty() {
                values.extend(attr.placeholder.map(str::to_string));
            }
            if !values.is_empty() {
                entry.attrs.insert(attr.attribute.to_string(), values);
            }
        }
        Ok(GroupEntry {
            entry,
            unresolved_members: unresolved,
        })
    }

    /// The group's SCIM form without members (see
    /// [`Self::member_values`]); members need a reverse lookup of DNs the
    /// caller does.
    pub fn to_scim(&self, attrs: &BTreeMap<String, Vec<String>>) -> Value {
        self.resource.to_scim(attrs)
    }

    /// The member values of an existing group entry, the placeholder left
    /// out, for the caller to turn into SCIM ids.
    pub fn member_values(&self, attrs: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        let Some(values) = attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&self.members.attribute))
            .map(|(_, v)| v)
        else {
            return Vec::new();
        };
        values
            .iter()
            .filter(|v| match &self.members.empty {
                EmptyGroup::Placeholder(p) => !p.eq_ignore_ascii_case(v),
                EmptyGroup::Allow => true,
            })
            .cloned()
            .collect()
    }

    pub fn ldap_filter_for(&self, scim_attr: &str, value: &str) -> Option<String> {
        self.resource.ldap_filter_for(scim_attr, value)
    }
}

/// The SCIM ids in a group's `members`.
fn member_ids(resource: &Value) -> Vec<String> {
    let Some(members) = resource
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("members")))
        .map(|(_, v)| v)
    else {
        return Vec::new();
    };
    let list: Vec<&Value> = match members {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    list.into_iter()
        .filter_map(|m| match m {
            Value::Object(o) => o
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .and_then(|(_, v)| v.as_str()),
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a SCIM user is inactive: `active` false, or Entra's "False".
pub fn is_inactive(resource: &Value) -> bool {
    let active = resource
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("active")));
    match active.map(|(_, v)| v) {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("false"),
        _ => false,
    }
}

impl Mapping {
    /// The user's target entry with the deactivation policy applied when
    /// `active` is false: the `set` attributes added, the DN moved under
    /// `move_to`. Reactivation is the same call on the active resource, so
    /// a converging writer undoes both. `ad_user_account_control` and
    /// `remove_from_groups` need the directory's state and are the
    /// writer's.
    pub fn user_entry(
        &self,
        resource: &Value,
        reg: &SchemaRegistry,
        resolver: &dyn Resolver,
    ) -> Result<LdapEntry, ScimError> {
        let mut entry = self.user.entry_with(resource, reg, resolver)?;
        if is_inactive(resource) {
            let d = &self.user_policy.deactivate;
            for (k, v) in &d.set {
                entry.attrs.insert(k.clone(), v.clone());
            }
            if let Some(to) = &d.move_to {
                entry.dn = format!("{},{}", entry.rdn(), to);
            }
        }
        Ok(entry)
    }

    /// Every attribute the writer may change on a user entry: the
    /// mapping's and the deactivation policy's.
    pub fn user_managed_attributes(&self) -> Vec<&str> {
        let mut v = self.user.managed_attributes();
        v.extend(self.user_policy.deactivate.attributes());
        v
    }

    /// Whether SCIM DELETE keeps the entry (deactivating it).
    pub fn delete_deactivates(&self) -> bool {
        self.user_policy.delete == DeleteAction::Deactivate
    }
}
