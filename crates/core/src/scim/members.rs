//! A group's `members` in PATCH and in request bodies, handled apart from
//! the PATCH engine: member operations become one net edit of member ids
//! (replace the list, add some, remove some), so the store can apply them
//! as a delta without ever loading a large group's whole member list.
//!
//! Accepts every shape Entra ID and Okta send: `add` of a list (with or
//! without `type`), `remove` by `members[value eq "id"]`, `remove` of
//! `members` with a value list (Entra), `replace` of `members` with a list
//! or `[]` (Okta), and path-less add/replace whose value has a `members`
//! key.

use std::collections::HashSet;

use serde_json::Value;

use crate::scim::filter::{CompareOp, Filter};
use crate::scim::patch::{PatchOpKind, PatchOperation};
use crate::scim::ScimError;

/// The net effect of a request on a group's member ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberEdit {
    /// The whole new list (before `add` and `remove` are applied).
    pub replace: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
    /// `display` given for added members, by id.
    pub displays: Vec<(String, String)>,
}

impl MemberEdit {
    pub fn is_empty(&self) -> bool {
        self.replace.is_none() && self.add.is_empty() && self.remove.is_empty()
    }

    // Linear in the ids and the lists (hash sets, not `contains`): a
    // request may carry tens of thousands of members, and this runs under
    // the store's write lock.
    fn add(&mut self, ids: Vec<String>) {
        match &mut self.replace {
            Some(list) => {
                let mut seen: HashSet<String> = list.iter().cloned().collect();
                for id in ids {
                    if seen.insert(id.clone()) {
                        list.push(id);
                    }
                }
            }
            None => {
                let mut in_add: HashSet<String> = self.add.iter().cloned().collect();
                let mut added = HashSet::with_capacity(ids.len());
                for id in ids {
                    added.insert(id.clone());
                    if in_add.insert(id.clone()) {
                        self.add.push(id);
                    }
                }
                self.remove.retain(|r| !added.contains(r));
            }
        }
    }

    fn remove(&mut self, ids: Vec<String>) {
        match &mut self.replace {
            Some(list) => {
                let gone: HashSet<String> = ids.into_iter().collect();
                list.retain(|r| !gone.contains(r));
            }
            None => {
                let mut in_add: HashSet<String> = self.add.iter().cloned().collect();
                let mut in_remove: HashSet<String> = self.remove.iter().cloned().collect();
                let mut cancelled = HashSet::new();
                for id in ids {
                    if in_add.remove(&id) {
                        cancelled.insert(id);
                    } else if in_remove.insert(id.clone()) {
                        self.remove.push(id);
                    }
                }
                if !cancelled.is_empty() {
                    self.add.retain(|a| !cancelled.contains(a));
                }
            }
        }
    }

    fn set(&mut self, ids: Vec<String>) {
        let mut seen = HashSet::with_capacity(ids.len());
        let list: Vec<String> = ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect();
        *self = MemberEdit {
            replace: Some(list),
            add: Vec::new(),
            remove: Vec::new(),
            displays: std::mem::take(&mut self.displays),
        };
    }
}

fn is_members(name: &str) -> bool {
    name.eq_ignore_ascii_case("members")
}

/// The member ids in a `members` value: a list (or one) of `{"value": id}`
/// objects or bare id strings.
pub fn member_ids(value: &Value) -> Result<Vec<String>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        v => vec![v],
    };
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    for item in items {
        let id = match item {
            Value::String(s) => s.as_str(),
            Value::Object(o) => match o
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .map(|(_, v)| v)
            {
                Some(Value::String(s)) => s.as_str(),
                _ => {
                    return Err(ScimError::invalid_value(
                        "each member needs a \"value\" with the member's id",
                    ))
                }
            },
            other => {
                return Err(ScimError::invalid_value(format!(
                    "a member must be an object with \"value\", not {other}"
                )))
            }
        };
        let id = id.trim();
        if id.is_empty() {
            return Err(ScimError::invalid_value("a member's \"value\" is empty"));
        }
        if seen.insert(id.to_string()) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// How many members a `members` value names, duplicates included: what
/// a cap on members per request counts, before anything is de-duplicated
/// or looked up.
pub fn member_count(value: &Value) -> usize {
    match value {
        Value::Array(a) => a.len(),
        Value::Null => 0,
        _ => 1,
    }
}

/// How many members a group body (POST / PUT) names.
pub fn body_member_count(body: &Value) -> usize {
    body.as_object()
        .and_then(|o| o.iter().find(|(k, _)| is_members(k)))
        .map_or(0, |(_, v)| member_count(v))
}

/// How many members the operations of one PATCH name: the values of
/// operations on `members` (or of path-less ones with a `members` key)
/// and the terms of `members[...]` filters.
pub fn ops_member_count(ops: &[PatchOperation]) -> usize {
    fn terms(f: &Filter) -> usize {
        match f {
            Filter::Or(a, b) | Filter::And(a, b) => terms(a) + terms(b),
            Filter::Not(a) => terms(a),
            _ => 1,
        }
    }
    ops.iter()
        .map(|op| match &op.path {
            Some(path) if is_members(&path.attr.name) => {
                path.filter.as_ref().map_or(0, terms) + op.value.as_ref().map_or(0, member_count)
            }
            Some(_) => 0,
            None => op.value.as_ref().map_or(0, body_member_count),
        })
        .sum()
}

/// The `display` given with members, by id.
pub fn member_displays(value: &Value) -> Vec<(String, String)> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    items
        .into_iter()
        .filter_map(|m| {
            let o = m.as_object()?;
            let get = |k: &str| {
                o.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .and_then(|(_, v)| v.as_str())
            };
            Some((
                get("value")?.trim().to_string(),
                get("display")?.to_string(),
            ))
        })
        .collect()
}

/// The ids named by `value eq "id"` terms joined with `or`.
fn filter_ids(f: &Filter, out: &mut Vec<String>) -> Result<(), ScimError> {
    match f {
        Filter::Or(a, b) => {
            filter_ids(a, out)?;
            filter_ids(b, out)
        }
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: Value::String(id),
        } if path.name.eq_ignore_ascii_case("value") && path.sub.is_none() => {
            out.push(id.clone());
            Ok(())
        }
        other => Err(ScimError::invalid_filter(format!(
            "members can be selected by `value eq \"<id>\"` (joined with `or`), not by `{other}`"
        ))),
    }
}

/// Splits a group PATCH into the member edit and the operations left for
/// the PATCH engine.
pub fn split_member_ops(
    ops: Vec<PatchOperation>,
) -> Result<(MemberEdit, Vec<PatchOperation>), ScimError> {
    let mut edit = MemberEdit::default();
    let mut rest = Vec::new();
    for op in ops {
        match &op.path {
            Some(path) if is_members(&path.attr.name) && path.attr.sub.is_none() => {
                let selected = match &path.filter {
                    Some(f) => {
                        let mut ids = Vec::new();
                        filter_ids(f, &mut ids)?;
                        Some(ids)
                    }
                    None => None,
                };
                if path.sub.is_some() {
                    // `members[value eq "x"].display` and the like: nothing
                    // of a member but its id is kept.
                    continue;
                }
                let value_ids = match &op.value {
                    Some(v) => {
                        edit.displays.extend(member_displays(v));
                        Some(member_ids(v)?)
                    }
                    None => None,
                };
                match (op.op, selected, value_ids) {
                    (PatchOpKind::Add, None, Some(ids)) => edit.add(ids),
                    (PatchOpKind::Add, _, _) => {
                        return Err(ScimError::invalid_value(
                            "add to members needs a value: a list of {\"value\": id}",
                        ))
                    }
                    (PatchOpKind::Replace, None, Some(ids)) => edit.set(ids),
                    (PatchOpKind::Replace, None, None) => edit.set(Vec::new()),
                    (PatchOpKind::Replace, Some(old), ids) => {
                        edit.remove(old);
                        edit.add(ids.unwrap_or_default());
                    }
                    (PatchOpKind::Remove, Some(ids), _) => edit.remove(ids),
                    (PatchOpKind::Remove, None, Some(ids)) if !ids.is_empty() => edit.remove(ids),
                    (PatchOpKind::Remove, None, _) => edit.set(Vec::new()),
                }
            }
            None if matches!(op.op, PatchOpKind::Add | PatchOpKind::Replace) => {
                let mut op = op;
                let mut members = None;
                if let Some(Value::Object(obj)) = &mut op.value {
                    if let Some(key) = obj.keys().find(|k| is_members(k)).cloned() {
                        members = obj.remove(&key);
                    }
                }
                if let Some(m) = members {
                    edit.displays.extend(member_displays(&m));
                    let ids = member_ids(&m)?;
                    match op.op {
                        PatchOpKind::Add => edit.add(ids),
                        _ => edit.set(ids),
                    }
                }
                if op
                    .value
                    .as_ref()
                    .is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty()))
                {
                    rest.push(op);
                }
            }
            _ => rest.push(op),
        }
    }
    Ok((edit, rest))
}

/// Takes `members` out of a group body (POST / PUT) as the edit that
/// replaces the membership with them.
pub fn take_members(body: &mut Value) -> Result<MemberEdit, ScimError> {
    let value = match body.as_object_mut() {
        Some(obj) => match obj.keys().find(|k| is_members(k)).cloned() {
            Some(k) => obj.remove(&k).unwrap_or(Value::Null),
            None => Value::Null,
        },
        None => Value::Null,
    };
    Ok(MemberEdit {
        replace: Some(member_ids(&value)?),
        displays: member_displays(&value),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::patch::parse_patch_request;
    use serde_json::json;

    fn split(body: Value) -> (MemberEdit, usize) {
        let (edit, rest) = split_member_ops(parse_patch_request(&body).unwrap()).unwrap();
        (edit, rest.len())
    }

    #[test]
    fn entra_add_and_remove_shapes() {
        let (e, rest) = split(json!({"Operations": [
            {"op": "Add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "b"}]},
            {"op": "remove", "path": "members[value eq \"c\"]"},
            {"op": "Replace", "path": "displayName", "value": "G2"}
        ]}));
        assert_eq!(
            e,
            MemberEdit {
                replace: None,
                add: vec!["a".into()],
                remove: vec!["c".into()],
                displays: Vec::new(),
            }
        );
        assert_eq!(rest, 1);
    }

    #[test]
    fn okta_replace_with_list_and_with_empty_list() {
        let (e, _) = split(
            json!({"Operations": [{"op": "replace", "path": "members", "value": [{"value": "x", "display": "X"}]}]}),
        );
        assert_eq!(e.replace, Some(vec!["x".to_string()]));
        let (e, _) =
            split(json!({"Operations": [{"op": "replace", "path": "members", "value": []}]}));
        assert_eq!(e.replace, Some(vec![]));
        // Okta's rename before a membership change: no member edit at all.
        let (e, rest) = split(
            json!({"Operations": [{"op": "replace", "value": {"id": "g", "displayName": "New"}}]}),
        );
        assert!(e.is_empty());
        assert_eq!(rest, 1);
    }

    #[test]
    fn pathless_value_with_members_is_split() {
        let (e, rest) =
            split(json!({"Operations": [{"op": "add", "value": {"members": [{"value": "m"}]}}]}));
        assert_eq!(e.add, vec!["m".to_string()]);
        assert_eq!(rest, 0, "nothing left for the engine");
    }

    #[test]
    fn remove_all_and_bad_shapes() {
        let (e, _) = split(json!({"Operations": [{"op": "remove", "path": "members"}]}));
        assert_eq!(e.replace, Some(vec![]));
        let bad = parse_patch_request(
            &json!({"Operations": [{"op": "add", "path": "members", "value": [{"display": "x"}]}]}),
        )
        .unwrap();
        assert_eq!(split_member_ops(bad).unwrap_err().status, 400);
        let bad = parse_patch_request(
            &json!({"Operations": [{"op": "remove", "path": "members[display eq \"x\"]"}]}),
        )
        .unwrap();
        assert_eq!(
            split_member_ops(bad).unwrap_err().scim_type,
            Some(crate::scim::ScimType::InvalidFilter)
        );
    }

    #[test]
    fn members_are_counted_before_deduplication() {
        assert_eq!(
            body_member_count(&json!({"Members": [{"value": "a"}, {"value": "a"}, "b"]})),
            3
        );
        assert_eq!(body_member_count(&json!({"displayName": "G"})), 0);
        let ops = parse_patch_request(&json!({"Operations": [
            {"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
            {"op": "remove", "path": "members[value eq \"c\" or value eq \"d\"]"},
            {"op": "add", "value": {"members": [{"value": "e"}]}},
            {"op": "replace", "path": "displayName", "value": "x"}
        ]}))
        .unwrap();
        assert_eq!(ops_member_count(&ops), 5);
    }

    #[test]
    fn take_members_from_a_body() {
        let mut body = json!({"displayName": "G", "members": [{"value": "a", "type": "User", "display": "A"}, "b", {"value": "a"}]});
        let edit = take_members(&mut body).unwrap();
        assert_eq!(edit.replace, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(edit.displays, vec![("a".to_string(), "A".to_string())]);
        assert!(body.get("members").is_none());
    }
}
