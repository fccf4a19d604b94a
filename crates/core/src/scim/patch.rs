//! The PATCH engine (RFC 7644 §3.5.2), tolerant of what Entra ID and Okta
//! actually send (DESIGN.md, "What the identity providers send"):
//!
//! - `op` and the `Operations` key in any case, `schemas` optional;
//! - Entra's string booleans and its manager as `{"value": id}`, a bare id
//!   or an array of one (all normalised by `schema::canonical_value`);
//! - member removal by a `value` list, or by `members[value eq "id"]`;
//! - path-less add/replace whose value keys are paths
//!   (`"name.givenName"`, `"urn:...:User:department"`), attribute names or
//!   extension URNs holding objects;
//! - Okta's group-push replace of `{id, displayName}`: an unchanged `id` is
//!   ignored, read-only attributes (`meta`, `groups`) are ignored;
//! - add/replace on `attr[filter].sub` where nothing matches creates the
//!   element from the filter's `eq` terms (Entra's
//!   `emails[type eq "work"].value`).
//!
//! The whole request is applied to a copy; the resource changes only if
//! every operation succeeds, and the result is canonicalised.

use serde_json::{Map, Value};

use crate::scim::error::ScimError;
use crate::scim::filter::{CompareOp, Filter};
use crate::scim::json::{get_ci, is_empty_value, key_ci, remove_ci, type_name, values_of};
use crate::scim::path::{AttrPath, PatchPath};
use crate::scim::schema::{
    canonical_value, canonicalize, AttrDef, AttrType, Mutability, SchemaRegistry,
};

/// The three PATCH operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Replace,
    Remove,
}

impl PatchOpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PatchOpKind::Add => "add",
            PatchOpKind::Replace => "replace",
            PatchOpKind::Remove => "remove",
        }
    }
}

/// One parsed operation of a PatchOp body.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// Parses a PatchOp body (RFC 7644 §3.5.2) into its operations, checking
/// every path before anything is applied.
pub fn parse_patch_request(request: &Value) -> Result<Vec<PatchOperation>, ScimError> {
    let Value::Object(body) = request else {
        return Err(ScimError::invalid_syntax(format!(
            "a PATCH body must be a JSON object with \"Operations\", not {}",
            type_name(request)
        )));
    };
    let ops = match get_ci(body, "Operations") {
        Some(Value::Array(ops)) => ops.iter().collect::<Vec<_>>(),
        // A single operation object instead of a list of one.
        Some(op @ Value::Object(_)) => vec![op],
        Some(other) => {
            return Err(ScimError::invalid_syntax(format!(
                "\"Operations\" must be a list of operations, not {}",
                type_name(other)
            )))
        }
        None => {
            return Err(ScimError::invalid_syntax(
                "the PATCH body has no \"Operations\" list",
            ))
        }
    };
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        let Value::Object(op) = op else {
            return Err(ScimError::invalid_syntax(format!(
                "Operations[{i}] must be an object, not {}",
                type_name(op)
            )));
        };
        let kind = match get_ci(op, "op") {
            Some(Value::String(s)) if s.eq_ignore_ascii_case("add") => PatchOpKind::Add,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("replace") => PatchOpKind::Replace,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("remove") => PatchOpKind::Remove,
            Some(Value::String(s)) => {
                return Err(ScimError::invalid_syntax(format!(
                    "Operations[{i}]: unknown op \"{s}\"; expected add, replace or remove"
                )))
            }
            Some(other) => {
                return Err(ScimError::invalid_syntax(format!(
                    "Operations[{i}]: \"op\" must be a string, not {}",
                    type_name(other)
                )))
            }
            None => {
                return Err(ScimError::invalid_syntax(format!(
                    "Operations[{i}] has no \"op\""
                )))
            }
        };
        let path = match get_ci(op, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(PatchPath::parse(s).map_err(|e| prefix(i, kind, e))?),
            Some(other) => {
                return Err(ScimError::invalid_path(format!(
                    "Operations[{i}]: \"path\" must be a string, not {}",
                    type_name(other)
                )))
            }
        };
        let value = get_ci(op, "value").cloned();
        out.push(PatchOperation {
            op: kind,
            path,
            value,
        });
    }
    Ok(out)
}

fn prefix(i: usize, kind: PatchOpKind, e: ScimError) -> ScimError {
    ScimError {
        detail: format!("Operations[{i}] ({}): {}", kind.as_str(), e.detail),
        ..e
    }
}

/// Applies a whole PatchOp body to `resource`, atomically: on error the
/// resource is unchanged. Returns the names of attributes that were dropped
/// because no schema knows them, for the caller to log.
pub fn apply_patch(
    resource: &mut Value,
    request: &Value,
    reg: &SchemaRegistry,
) -> Result<Vec<String>, ScimError> {
    let ops = parse_patch_request(request)?;
    apply_operations(resource, &ops, reg)
}

/// Applies already parsed operations; see [`apply_patch`].
pub fn apply_operations(
    resource: &mut Value,
    ops: &[PatchOperation],
    reg: &SchemaRegistry,
) -> Result<Vec<String>, ScimError> {
    let mut work = resource.clone();
    let Some(root) = work.as_object_mut() else {
        return Err(ScimError::invalid_syntax(format!(
            "the resource to patch must be a JSON object, not {}",
            type_name(resource)
        )));
    };
    let mut engine = Engine {
        reg,
        dropped: Vec::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        engine.apply(root, op).map_err(|e| prefix(i, op.op, e))?;
    }
    let mut dropped = engine.dropped;
    dropped.extend(canonicalize(&mut work, reg)?);
    check_required_kept(resource, &work, reg)?;
    let mut seen = std::collections::HashSet::new();
    dropped.retain(|d| seen.insert(d.clone()));
    *resource = work;
    Ok(dropped)
}

/// A required attribute (userName, a Group's displayName) that was there
/// before the PATCH must still be there after it.
fn check_required_kept(
    before: &Value,
    after: &Value,
    reg: &SchemaRegistry,
) -> Result<(), ScimError> {
    for schema in reg.all() {
        for def in schema.attributes.iter().filter(|d| d.required) {
            let path = AttrPath {
                urn: Some(schema.id.clone()),
                name: def.name.clone(),
                sub: None,
            };
            let had = crate::scim::eval::select_attr(before, &path, reg)
                .iter()
                .any(|v| !is_empty_value(v));
            let has = crate::scim::eval::select_attr(after, &path, reg)
                .iter()
                .any(|v| !is_empty_value(v));
            if had && !has {
                return Err(ScimError::mutability(format!(
                    "'{}' is required and cannot be removed or emptied",
                    def.name
                )));
            }
        }
    }
    Ok(())
}

struct Engine<'r> {
    reg: &'r SchemaRegistry,
    /// Attributes written by the request that no schema knows.
    dropped: Vec<String>,
}

/// What a path points at once its schema is known.
struct Target<'d> {
    /// The top-level attribute, if the registry knows it.
    def: Option<&'d AttrDef>,
    /// The sub-attribute the path ends in, if any.
    sub: Option<String>,
    /// The sub-attribute's definition, if known.
    sub_def: Option<&'d AttrDef>,
}

impl<'r> Engine<'r> {
    fn apply(
        &mut self,
        root: &mut Map<String, Value>,
        op: &PatchOperation,
    ) -> Result<(), ScimError> {
        match &op.path {
            Some(path) => self.apply_path(root, op.op, path, op.value.as_ref()),
            None => {
                if op.op == PatchOpKind::Remove {
                    return Err(ScimError::no_target(
                        "remove needs a \"path\" naming what to remove",
                    ));
                }
                let value = match &op.value {
                    Some(Value::Object(v)) => v,
                    // Some clients wrap the object in a list of one.
                    Some(Value::Array(items)) if items.len() == 1 && items[0].is_object() => {
                        match items[0].as_object() {
                            Some(v) => v,
                            None => {
                                return Err(ScimError::invalid_value(
                                    "a path-less value must be an object",
                                ))
                            }
                        }
                    }
                    Some(other) => {
                        return Err(ScimError::invalid_value(format!(
                            "without a \"path\", the value must be an object of attributes, not {}",
                            type_name(other)
                        )))
                    }
                    None => {
                        return Err(ScimError::invalid_value(
                            "the operation has neither \"path\" nor \"value\"",
                        ))
                    }
                };
                for (key, v) in value {
                    self.apply_keyed(root, op.op, key, v)?;
                }
                Ok(())
            }
        }
    }

    /// One key of a path-less add/replace value: an attribute name, a path
    /// (Entra with aadOptscim062020), or an extension URN holding an object.
    fn apply_keyed(
        &mut self,
        root: &mut Map<String, Value>,
        op: PatchOpKind,
        key: &str,
        value: &Value,
    ) -> Result<(), ScimError> {
        if let Some(ext) = self.reg.extension(key) {
            let ext_id = ext.id.clone();
            return match value {
                Value::Object(obj) => {
                    for (k, v) in obj {
                        match PatchPath::parse(&format!("{ext_id}:{k}")) {
                            Ok(p) => self.apply_path(root, op, &p, Some(v))?,
                            Err(_) => self.dropped.push(format!("{ext_id}:{k}")),
                        }
                    }
                    Ok(())
                }
                Value::Null if op == PatchOpKind::Replace => {
                    remove_ci(root, &ext_id);
                    Ok(())
                }
                Value::Null => Ok(()),
                other => Err(ScimError::invalid_value(format!(
                    "extension {ext_id} must be given as an object, not {}",
                    type_name(other)
                ))),
            };
        }
        match PatchPath::parse(key) {
            Ok(p) => self.apply_path(root, op, &p, Some(value)),
            Err(_) => {
                // Not even a well-formed attribute name: nothing any schema
                // knows, so it goes the way of other unknown attributes.
                self.dropped.push(key.to_string());
                Ok(())
            }
        }
    }

    fn apply_path(
        &mut self,
        root: &mut Map<String, Value>,
        op: PatchOpKind,
        path: &PatchPath,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let reg = self.reg;
        let attr = &path.attr;
        let core_named = attr.urn.as_deref().is_none_or(|u| reg.is_core(u));
        if core_named && attr.name.eq_ignore_ascii_case("schemas") {
            // Rebuilt by canonicalize from the extensions present.
            return Ok(());
        }
        if core_named && attr.name.eq_ignore_ascii_case("id") {
            return check_id_unchanged(root, op, value);
        }
        if path.filter.is_none() && path.sub.is_none() {
            if let Some(ext) = reg.whole_extension(attr) {
                return self.apply_whole_extension(root, op, &ext.id, value);
            }
        }
        let def = reg.resolve(&attr.parent()).map(|(_, d, _)| d);
        if def.is_some_and(|d| d.mutability == Mutability::ReadOnly) {
            // RFC 7643 §7: values of readOnly attributes sent by a client
            // are ignored (Okta's group push sends meta, Entra may send groups).
            return Ok(());
        }
        let sub = path.leaf_sub().map(str::to_string);
        let sub_def = match (def, &sub) {
            (Some(d), Some(s)) => {
                if d.ty != AttrType::Complex {
                    return Err(ScimError::invalid_path(format!(
                        "'{}' has no sub-attributes, so '{path}' names nothing",
                        d.name
                    )));
                }
                match d.sub(s) {
                    Some(sd) => Some(sd),
                    None => {
                        return Err(ScimError::invalid_path(format!(
                            "'{}' has no sub-attribute '{s}'",
                            d.name
                        )))
                    }
                }
            }
            _ => None,
        };
        if op == PatchOpKind::Remove {
            if let Some(d) = def.filter(|d| d.required && path.filter.is_none() && sub.is_none()) {
                return Err(ScimError::mutability(format!(
                    "'{}' is required and cannot be removed",
                    d.name
                )));
            }
        }
        if def.is_some_and(|d| !d.multi_valued) && path.filter.is_some() {
            return Err(ScimError::invalid_path(format!(
                "'{path}': a value filter applies to multi-valued attributes, and '{}' is single-valued",
                attr.name
            )));
        }
        let Some(container) = container_mut(root, attr, reg, op != PatchOpKind::Remove)? else {
            return Ok(());
        };
        let key = match key_ci(container, &attr.name) {
            Some(k) => k.to_string(),
            None => def.map_or_else(|| attr.name.clone(), |d| d.name.clone()),
        };
        let target = Target { def, sub, sub_def };
        match &path.filter {
            None => match &target.sub {
                None => self.whole_attribute(container, &key, op, &target, value),
                Some(_) => self.sub_attribute(container, &key, op, &target, value),
            },
            Some(filter) => {
                self.filtered(container, &key, &attr.parent(), filter, op, &target, value)
            }
        }
    }

    fn apply_whole_extension(
        &mut self,
        root: &mut Map<String, Value>,
        op: PatchOpKind,
        ext_id: &str,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        match op {
            PatchOpKind::Remove => {
                remove_ci(root, ext_id);
                Ok(())
            }
            PatchOpKind::Add | PatchOpKind::Replace => {
                let obj = match value {
                    Some(Value::Object(o)) => o,
                    Some(Value::Null) | None if op == PatchOpKind::Replace => {
                        remove_ci(root, ext_id);
                        return Ok(());
                    }
                    Some(other) => {
                        return Err(ScimError::invalid_value(format!(
                            "extension {ext_id} must be given as an object, not {}",
                            type_name(other)
                        )))
                    }
                    None => {
                        return Err(ScimError::invalid_value(format!(
                            "{} needs a value",
                            op.as_str()
                        )))
                    }
                };
                if op == PatchOpKind::Replace {
                    remove_ci(root, ext_id);
                }
                for (k, v) in obj {
                    match PatchPath::parse(&format!("{ext_id}:{k}")) {
                        Ok(p) => self.apply_path(root, PatchOpKind::Add, &p, Some(v))?,
                        Err(_) => self.dropped.push(format!("{ext_id}:{k}")),
                    }
                }
                Ok(())
            }
        }
    }

    /// Normalises a value written to `def` (or passes it through when the
    /// attribute is unknown; canonicalize reports those).
    fn normalize(
        &mut self,
        def: Option<&AttrDef>,
        value: &Value,
        label: &str,
    ) -> Result<Option<Value>, ScimError> {
        match def {
            Some(d) => canonical_value(d, value.clone(), label, &mut self.dropped),
            None if value.is_null() => Ok(None),
            None => Ok(Some(value.clone())),
        }
    }

    /// Normalises one element of a multi-valued attribute.
    fn normalize_element(
        &mut self,
        def: Option<&AttrDef>,
        value: &Value,
        label: &str,
    ) -> Result<Option<Value>, ScimError> {
        match def {
            Some(d) => {
                let mut single = d.clone();
                single.multi_valued = false;
                canonical_value(&single, value.clone(), label, &mut self.dropped)
            }
            None => self.normalize(None, value, label),
        }
    }

    /// add / replace / remove of a whole attribute (`members`, `name`,
    /// `userName`, `urn:...:User:manager`).
    fn whole_attribute(
        &mut self,
        container: &mut Map<String, Value>,
        key: &str,
        op: PatchOpKind,
        target: &Target<'_>,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let def = target.def;
        let multi = def.is_some_and(|d| d.multi_valued);
        match op {
            PatchOpKind::Remove => {
                match value {
                    // Entra: {"op":"Remove","path":"members","value":[{"value":"id"}]}
                    // removes only the listed members.
                    Some(v) if multi && !is_empty_value(v) => {
                        let listed = self.normalize(def, v, key)?.unwrap_or(Value::Null);
                        let listed = values_of(&listed);
                        let case_exact = value_case_exact(def);
                        if let Some(Value::Array(items)) = container.get_mut(key) {
                            items
                                .retain(|e| !listed.iter().any(|l| same_element(e, l, case_exact)));
                        }
                    }
                    _ => {
                        container.shift_remove(key);
                    }
                }
                Ok(())
            }
            PatchOpKind::Add | PatchOpKind::Replace => {
                let Some(raw) = value else {
                    return Err(ScimError::invalid_value(format!(
                        "{} of '{key}' needs a value",
                        op.as_str()
                    )));
                };
                let Some(new) = self.normalize(def, raw, key)? else {
                    if op == PatchOpKind::Replace {
                        container.shift_remove(key);
                    }
                    return Ok(());
                };
                if multi && op == PatchOpKind::Add {
                    let case_exact = value_case_exact(def);
                    let slot = container
                        .entry(key.to_string())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if !slot.is_array() {
                        let old = std::mem::take(slot);
                        *slot = Value::Array(if old.is_null() { Vec::new() } else { vec![old] });
                    }
                    if let Value::Array(items) = slot {
                        for element in values_of(&new) {
                            add_element(items, element.clone(), case_exact);
                        }
                    }
                    return Ok(());
                }
                let complex_single =
                    def.is_some_and(|d| d.ty == AttrType::Complex && !d.multi_valued);
                match (complex_single, container.get_mut(key), new) {
                    (true, Some(Value::Object(existing)), Value::Object(new)) => {
                        merge_complex(existing, new)
                    }
                    (_, _, new) => {
                        container.insert(key.to_string(), new);
                    }
                }
                Ok(())
            }
        }
    }

    /// `name.givenName`, `urn:...:manager.value`, `emails.value` (no filter).
    fn sub_attribute(
        &mut self,
        container: &mut Map<String, Value>,
        key: &str,
        op: PatchOpKind,
        target: &Target<'_>,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let Some(sub) = target.sub.as_deref() else {
            return Ok(());
        };
        let multi = target.def.is_some_and(|d| d.multi_valued);
        let sub_key = target.sub_def.map_or(sub, |d| d.name.as_str()).to_string();
        let new = match op {
            PatchOpKind::Remove => None,
            PatchOpKind::Add | PatchOpKind::Replace => {
                let Some(raw) = value else {
                    return Err(ScimError::invalid_value(format!(
                        "{} of '{key}.{sub}' needs a value",
                        op.as_str()
                    )));
                };
                match self.normalize(target.sub_def, raw, &format!("{key}.{sub_key}"))? {
                    Some(v) => Some(v),
                    None if op == PatchOpKind::Add => return Ok(()),
                    None => None,
                }
            }
        };
        let Some(new) = new else {
            match container.get_mut(key) {
                Some(Value::Object(o)) => {
                    remove_ci(o, sub);
                }
                Some(Value::Array(items)) => {
                    if sub.eq_ignore_ascii_case("value") {
                        // An email or member without its value means nothing.
                        items.clear();
                    } else {
                        for o in items.iter_mut().filter_map(Value::as_object_mut) {
                            remove_ci(o, sub);
                        }
                    }
                }
                _ => {}
            }
            return Ok(());
        };
        match container.get_mut(key) {
            Some(Value::Object(o)) => set_ci(o, &sub_key, new),
            Some(Value::Array(items)) if !items.is_empty() => {
                for o in items.iter_mut().filter_map(Value::as_object_mut) {
                    set_ci(o, &sub_key, new.clone());
                }
            }
            _ => {
                let mut o = Map::new();
                o.insert(sub_key, new);
                let v = if multi {
                    Value::Array(vec![Value::Object(o)])
                } else {
                    Value::Object(o)
                };
                container.insert(key.to_string(), v);
            }
        }
        Ok(())
    }

    /// `emails[type eq "work"]`, `emails[type eq "work"].value`,
    /// `members[value eq "id"]`.
    #[allow(clippy::too_many_arguments)] // each is a distinct piece of the path; a struct would only rename them
    fn filtered(
        &mut self,
        container: &mut Map<String, Value>,
        key: &str,
        attr: &AttrPath,
        filter: &Filter,
        op: PatchOpKind,
        target: &Target<'_>,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let reg = self.reg;
        let case_exact = value_case_exact(target.def);
        let sub = target.sub.as_deref();
        let sub_key = match (sub, target.sub_def) {
            (_, Some(d)) => Some(d.name.clone()),
            (Some(s), None) => Some(s.to_string()),
            (None, None) => None,
        };
        // The new value, normalised, or None for remove (and for a null
        // replace, which clears).
        let new = match op {
            PatchOpKind::Remove => None,
            PatchOpKind::Add | PatchOpKind::Replace => {
                let Some(raw) = value else {
                    return Err(ScimError::invalid_value(format!(
                        "{} of '{key}[...]' needs a value",
                        op.as_str()
                    )));
                };
                let label = match &sub_key {
                    Some(s) => format!("{key}.{s}"),
                    None => key.to_string(),
                };
                let v = match &sub_key {
                    Some(_) => self.normalize(target.sub_def, raw, &label)?,
                    None => self.normalize_element(target.def, raw, &label)?,
                };
                match v {
                    Some(v) => Some(v),
                    None if op == PatchOpKind::Add => return Ok(()),
                    None => None,
                }
            }
        };
        if new.is_none() {
            let Some(slot) = container.get_mut(key) else {
                return Ok(());
            };
            if let Value::Object(_) = slot {
                let one = std::mem::take(slot);
                *slot = Value::Array(vec![one]);
            }
            let Value::Array(items) = slot else {
                return Ok(());
            };
            match sub {
                // Removing the element itself, or its `value`, which is
                // what the element is.
                None => items.retain(|e| !filter.matches_sub(e, attr, reg)),
                Some(s) if s.eq_ignore_ascii_case("value") => {
                    items.retain(|e| !filter.matches_sub(e, attr, reg))
                }
                Some(s) => {
                    for e in items.iter_mut() {
                        if filter.matches_sub(e, attr, reg) {
                            if let Value::Object(o) = e {
                                remove_ci(o, s);
                            }
                        }
                    }
                }
            }
            return Ok(());
        }
        let Some(new) = new else {
            return Ok(());
        };
        if sub_key.is_none()
            && !new.is_object()
            && target.def.is_some_and(|d| d.ty == AttrType::Complex)
        {
            return Err(ScimError::invalid_value(format!(
                "a value for '{key}[...]' must be an object, not {}",
                type_name(&new)
            )));
        }
        let slot = container
            .entry(key.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if !slot.is_array() {
            let old = std::mem::take(slot);
            *slot = Value::Array(if old.is_null() { Vec::new() } else { vec![old] });
        }
        let Value::Array(items) = slot else {
            return Ok(());
        };
        let matching: Vec<usize> = (0..items.len())
            .filter(|&i| filter.matches_sub(&items[i], attr, reg))
            .collect();
        if matching.is_empty() {
            // Nothing matches: build the element the filter describes (Entra's
            // emails[type eq "work"].value on a user with no work email).
            let Some(mut element) = element_from_filter(filter, target.def) else {
                return Err(ScimError::no_target(format!(
                    "no value of '{key}' matches the filter, and the filter is not a set of 'eq' terms a new value could be built from"
                )));
            };
            match (&sub_key, new) {
                (Some(s), v) => set_ci(&mut element, s, v),
                (None, Value::Object(fields)) => {
                    for (k, v) in fields {
                        set_ci(&mut element, &k, v);
                    }
                }
                (None, other) => {
                    return Err(ScimError::invalid_value(format!(
                        "a value for '{key}[...]' must be an object, not {}",
                        type_name(&other)
                    )))
                }
            }
            add_element(items, Value::Object(element), case_exact);
            return Ok(());
        }
        let eq_terms = element_from_filter(filter, target.def);
        for &i in &matching {
            let Some(Value::Object(element)) = items.get_mut(i) else {
                continue;
            };
            match (&sub_key, &new, op) {
                (Some(s), v, _) => set_ci(element, s, v.clone()),
                (None, Value::Object(fields), PatchOpKind::Add) => {
                    for (k, v) in fields {
                        set_ci(element, k, v.clone());
                    }
                }
                (None, Value::Object(fields), _) => {
                    // Replace the element, keeping what the filter selected
                    // it by so it is still the "work" email afterwards.
                    let mut replacement = eq_terms.clone().unwrap_or_default();
                    for (k, v) in fields {
                        set_ci(&mut replacement, k, v.clone());
                    }
                    *element = replacement;
                }
                (None, _, _) => {}
            }
        }
        if new.get("primary").and_then(Value::as_bool) == Some(true)
            || (sub_key.as_deref() == Some("primary") && new == Value::Bool(true))
        {
            if let Some(&keep) = matching.first() {
                demote_other_primaries(items, keep);
            }
        }
        Ok(())
    }
}

/// `id` is assigned by the server: sending the same value back (Okta's
/// group push) is fine, changing or removing it is not.
fn check_id_unchanged(
    root: &Map<String, Value>,
    op: PatchOpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let current = get_ci(root, "id");
    match (op, value) {
        (PatchOpKind::Remove, _) => Err(ScimError::mutability(
            "'id' is assigned by the server and cannot be removed",
        )),
        (_, Some(v)) if current == Some(v) || v.is_null() => Ok(()),
        (_, Some(Value::String(s))) if current.and_then(Value::as_str) == Some(s.as_str()) => {
            Ok(())
        }
        _ => Err(ScimError::mutability(
            "'id' is assigned by the server and cannot be changed",
        )),
    }
}

/// The object holding `attr`: the resource, or its extension object
/// (created when `create`). `None` when the extension is absent and not to
/// be created.
fn container_mut<'a>(
    root: &'a mut Map<String, Value>,
    attr: &AttrPath,
    reg: &SchemaRegistry,
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, ScimError> {
    let ext_key: Option<String> = match attr.urn.as_deref() {
        Some(urn) if reg.is_core(urn) => None,
        Some(urn) => Some(
            reg.extension(urn)
                .map_or_else(|| urn.to_string(), |s| s.id.clone()),
        ),
        None => {
            if key_ci(root, &attr.name).is_some() {
                None
            } else {
                match reg.resolve(attr) {
                    Some((schema, _, _)) if !reg.is_core(&schema.id) => Some(schema.id.clone()),
                    _ => None,
                }
            }
        }
    };
    let Some(ext_key) = ext_key else {
        return Ok(Some(root));
    };
    let key = match key_ci(root, &ext_key) {
        Some(k) => k.to_string(),
        None if create => {
            root.insert(ext_key.clone(), Value::Object(Map::new()));
            ext_key
        }
        None => return Ok(None),
    };
    let Some(slot) = root.get_mut(&key) else {
        return Ok(None);
    };
    if slot.is_null() {
        if !create {
            return Ok(None);
        }
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(o) => Ok(Some(o)),
        other => Err(ScimError::invalid_value(format!(
            "the stored extension {key} is {}, not an object",
            type_name(other)
        ))),
    }
}

/// Sets `map[name]`, replacing a differently-cased existing key in place.
fn set_ci(map: &mut Map<String, Value>, name: &str, value: Value) {
    match key_ci(map, name).map(str::to_string) {
        Some(k) => {
            map.insert(k, value);
        }
        None => {
            map.insert(name.to_string(), value);
        }
    }
}

/// Whether values of a multi-valued attribute compare case-exactly by `value`.
fn value_case_exact(def: Option<&AttrDef>) -> bool {
    def.and_then(|d| d.sub("value"))
        .is_some_and(|v| v.case_exact)
}

/// Two values of a multi-valued attribute are the same when their `value`
/// sub-attributes are equal (a member is its id; display names may differ),
/// or, without one, when they are equal JSON.
fn same_element(a: &Value, b: &Value, case_exact: bool) -> bool {
    let key = |v: &Value| -> Option<Value> {
        match v {
            Value::Object(o) => get_ci(o, "value").cloned(),
            other => Some(other.clone()),
        }
    };
    match (key(a), key(b)) {
        (Some(Value::String(x)), Some(Value::String(y))) => {
            if case_exact {
                x == y
            } else {
                x.to_lowercase() == y.to_lowercase()
            }
        }
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Appends to a multi-valued attribute, de-duplicated by value: adding a
/// member that is already there updates it instead (RFC 7644 §3.5.2.1).
fn add_element(items: &mut Vec<Value>, element: Value, case_exact: bool) {
    let primary = element.get("primary").and_then(Value::as_bool) == Some(true);
    let index = match items
        .iter()
        .position(|e| same_element(e, &element, case_exact))
    {
        Some(i) => {
            if let (Some(Value::Object(existing)), Value::Object(fields)) =
                (items.get_mut(i), element)
            {
                for (k, v) in fields {
                    set_ci(existing, &k, v);
                }
            }
            i
        }
        None => {
            items.push(element);
            items.len() - 1
        }
    };
    if primary {
        demote_other_primaries(items, index);
    }
}

/// RFC 7643 §2.4: at most one value of an attribute is primary.
fn demote_other_primaries(items: &mut [Value], keep: usize) {
    for (i, e) in items.iter_mut().enumerate() {
        if i == keep {
            continue;
        }
        if let Value::Object(o) = e {
            if let Some(p) = crate::scim::json::get_ci_mut(o, "primary") {
                if p.as_bool() == Some(true) {
                    *p = Value::Bool(false);
                }
            }
        }
    }
}

/// Merges the sub-attributes of `new` into a single-valued complex
/// attribute (RFC 7644 §3.5.2.3: unspecified sub-attributes stay). When
/// `value` changes (a new manager), the old sub-attributes describe someone
/// else, so the attribute is replaced as a whole.
fn merge_complex(existing: &mut Map<String, Value>, new: Map<String, Value>) {
    let identity_changed = match (get_ci(existing, "value"), get_ci(&new, "value")) {
        (Some(old), Some(new)) => old != new,
        _ => false,
    };
    if identity_changed {
        *existing = new;
        return;
    }
    for (k, v) in new {
        set_ci(existing, &k, v);
    }
}

/// The element a filter made only of `sub eq value` terms joined by `and`
/// describes: `type eq "work"` → `{"type": "work"}`.
fn element_from_filter(filter: &Filter, def: Option<&AttrDef>) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    collect_eq_terms(filter, def, &mut out)?;
    Some(out)
}

fn collect_eq_terms(
    filter: &Filter,
    def: Option<&AttrDef>,
    out: &mut Map<String, Value>,
) -> Option<()> {
    match filter {
        Filter::And(a, b) => {
            collect_eq_terms(a, def, out)?;
            collect_eq_terms(b, def, out)
        }
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } if path.sub.is_none() && !value.is_null() => {
            let sub_def = def.and_then(|d| d.sub(&path.name));
            let name = sub_def.map_or_else(|| path.name.clone(), |d| d.name.clone());
            let mut ignored = Vec::new();
            let v = match sub_def {
                Some(sd) => canonical_value(sd, value.clone(), &name, &mut ignored).ok()??,
                None => value.clone(),
            };
            out.insert(name, v);
            Some(())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{
        CORE_GROUP_URN, CORE_USER_URN, ENTERPRISE_USER_URN, MS_ADSCIM_GROUP_URN,
    };
    use crate::scim::ScimType;
    use serde_json::json;

    fn users() -> SchemaRegistry {
        SchemaRegistry::users(vec![])
    }

    fn groups() -> SchemaRegistry {
        SchemaRegistry::groups(vec![])
    }

    /// A stored resource: what POST would have made of `body`.
    fn stored(mut body: Value, id: &str, reg: &SchemaRegistry) -> Value {
        body["id"] = json!(id);
        canonicalize(&mut body, reg).unwrap();
        body
    }

    fn patch(resource: &mut Value, body: Value, reg: &SchemaRegistry) -> Vec<String> {
        match apply_patch(resource, &body, reg) {
            Ok(d) => d,
            Err(e) => panic!("{body}: {e}"),
        }
    }

    fn patch_err(resource: &Value, body: Value, reg: &SchemaRegistry) -> ScimError {
        let mut r = resource.clone();
        let e = apply_patch(&mut r, &body, reg).unwrap_err();
        assert_eq!(
            &r, resource,
            "a failed PATCH must leave the resource unchanged"
        );
        e
    }

    /// The user of "Create User" in Microsoft's SCIM tutorial.
    fn entra_user() -> Value {
        stored(
            json!({
                "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
                "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
                "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
                "active": true,
                "emails": [{
                    "primary": true,
                    "type": "work",
                    "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"
                }],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
                "roles": []
            }),
            "6764549bef60420686bc",
            &users(),
        )
    }

    #[test]
    fn entra_tutorial_update_user_multi_valued_properties() {
        let reg = users();
        let mut u = entra_user();
        patch(
            &mut u,
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                    {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
                ]
            }),
            &reg,
        );
        assert_eq!(
            u["emails"],
            json!([{"primary": true, "type": "work", "value": "updatedEmail@microsoft.com"}])
        );
        assert_eq!(
            u["name"],
            json!({"formatted": "givenName familyName", "familyName": "updatedFamilyName", "givenName": "givenName"})
        );
        assert_eq!(
            u["userName"],
            "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"
        );
    }

    #[test]
    fn entra_tutorial_update_user_single_valued_and_disable() {
        let reg = users();
        let mut u = entra_user();
        patch(
            &mut u,
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Replace", "path": "userName", "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"}]
            }),
            &reg,
        );
        assert_eq!(
            u["userName"],
            "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
        );

        // Disable, without the aadOptscim062020 flag: the string "False".
        patch(
            &mut u,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
            &reg,
        );
        assert_eq!(u["active"], json!(false));
        // With the flag: a real boolean, lowercase op; "Operations" first.
        patch(
            &mut u,
            json!({"Operations": [{"op": "replace", "path": "active", "value": true}],
                             "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}),
            &reg,
        );
        assert_eq!(u["active"], json!(true));
    }

    #[test]
    fn entra_add_single_value_string_with_and_without_flag() {
        let reg = users();
        for op in ["Add", "add"] {
            let mut u = entra_user();
            patch(
                &mut u,
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": op, "path": "nickName", "value": "Babs"}]}),
                &reg,
            );
            assert_eq!(u["nickName"], "Babs");
        }
    }

    #[test]
    fn entra_replace_multiple_attributes_without_flag() {
        let reg = users();
        let mut u = entra_user();
        patch(
            &mut u,
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "Replace", "path": "displayName", "value": "Pvlo"},
                    {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "TestBcwqnm@test.microsoft.com"},
                    {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
                    {"op": "Replace", "path": "name.familyName", "value": "Pkqf"},
                    {"op": "Replace", "path": "externalId", "value": "Eqpj"},
                    {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "Eqpj"}
                ]
            }),
            &reg,
        );
        assert_eq!(u["displayName"], "Pvlo");
        assert_eq!(u["emails"][0]["value"], "TestBcwqnm@test.microsoft.com");
        assert_eq!(u["name"]["givenName"], "Gtfd");
        assert_eq!(u["name"]["familyName"], "Pkqf");
        assert_eq!(u["externalId"], "Eqpj");
        assert_eq!(u[ENTERPRISE_USER_URN], json!({"employeeNumber": "Eqpj"}));
        assert_eq!(u["schemas"], json!([CORE_USER_URN, ENTERPRISE_USER_URN]));
    }

    #[test]
    fn entra_replace_multiple_attributes_with_flag_uses_path_keys() {
        let reg = users();
        let mut u = entra_user();
        patch(
            &mut u,
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "TestMhvaes@test.microsoft.com"},
                    {"op": "replace", "value": {
                        "displayName": "Bjfe",
                        "name.givenName": "Kkom",
                        "name.familyName": "Unua",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Aklq"
                    }}
                ]
            }),
            &reg,
        );
        let mut want = entra_user();
        want["emails"][0]["value"] = json!("TestMhvaes@test.microsoft.com");
        want["displayName"] = json!("Bjfe");
        want["name"]["givenName"] = json!("Kkom");
        want["name"]["familyName"] = json!("Unua");
        want[ENTERPRISE_USER_URN] = json!({"employeeNumber": "Aklq"});
        want["schemas"] = json!([CORE_USER_URN, ENTERPRISE_USER_URN]);
        canonicalize(&mut want, &reg).unwrap();
        assert_eq!(u, want);
    }

    #[test]
    fn pathless_value_may_hold_filtered_paths_and_extension_objects() {
        let reg = users();
        let mut u = entra_user();
        patch(
            &mut u,
            json!({"Operations": [{"op": "add", "value": {
                "emails[type eq \"home\"].value": "home@example.com",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"Department": "Sales", "manager": "boss"},
                "TITLE": "Engineer"
            }}]}),
            &reg,
        );
        assert_eq!(
            u["emails"][1],
            json!({"type": "home", "value": "home@example.com"})
        );
        assert_eq!(
            u[ENTERPRISE_USER_URN],
            json!({"department": "Sales", "manager": {"value": "boss"}})
        );
        assert_eq!(u["title"], "Engineer");
    }

    #[test]
    fn filtered_add_creates_the_element_the_filter_describes() {
        let reg = users();
        let mut u = stored(json!({"userName": "bob"}), "1", &reg);
        patch(
            &mut u,
            json!({"Operations": [
                {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "bob@work.example"},
                {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"},
                {"op": "Add", "path": "phoneNumbers[type eq \"work\"].value", "value": "+1 555 0101"},
                {"op": "Add", "path": "addresses[type eq \"work\"].locality", "value": "Paris"},
                {"op": "Add", "path": "addresses[type eq \"work\"].country", "value": "FR"}
            ]}),
            &reg,
        );
        assert_eq!(
            u["emails"],
            json!([{"type": "work", "value": "bob@work.example"}])
        );
        assert_eq!(
            u["phoneNumbers"],
            json!([{"type": "mobile", "value": "+1 555 0100"}, {"type": "work", "value": "+1 555 0101"}])
        );
        assert_eq!(
            u["addresses"],
            json!([{"type": "work", "locality": "Paris", "country": "FR"}])
        );
        // Replace on an element that now exists updates it in place.
        patch(
            &mut u,
            json!({"Operations": [{"op": "replace", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0199"}]}),
            &reg,
        );
        assert_eq!(
            u["phoneNumbers"][0],
            json!({"type": "mobile", "value": "+1 555 0199"})
        );
        assert_eq!(u["phoneNumbers"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn filtered_replace_without_eq_terms_and_no_match_is_no_target() {
        let reg = users();
        let u = entra_user();
        let e = patch_err(
            &u,
            json!({"Operations": [{"op": "replace", "path": "emails[value co \"nobody\"].type", "value": "home"}]}),
            &reg,
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
    }

    #[test]
    fn entra_manager_in_every_shape() {
        let reg = users();
        let path = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
        for value in [
            json!({"value": "m-1"}),
            json!("m-1"),
            json!([{"value": "m-1"}]),
            json!(["m-1"]),
        ] {
            for op in ["Add", "Replace"] {
                let mut u = entra_user();
                patch(
                    &mut u,
                    json!({"Operations": [{"op": op, "path": path, "value": value.clone()}]}),
                    &reg,
                );
                assert_eq!(
                    u[ENTERPRISE_USER_URN]["manager"],
                    json!({"value": "m-1"}),
                    "{op} {value}"
                );
            }
        }
        // A new manager replaces the old one's displayName too.
        let mut u = entra_user();
        u[ENTERPRISE_USER_URN] = json!({"manager": {"value": "m-1", "displayName": "Old Boss"}});
        patch(
            &mut u,
            json!({"Operations": [{"op": "Replace", "path": path, "value": "m-2"}]}),
            &reg,
        );
        assert_eq!(u[ENTERPRISE_USER_URN]["manager"], json!({"value": "m-2"}));
        // Removing the manager removes the extension object once empty.
        patch(
            &mut u,
            json!({"Operations": [{"op": "Remove", "path": path}]}),
            &reg,
        );
        assert!(u.get(ENTERPRISE_USER_URN).is_none());
        assert_eq!(u["schemas"], json!([CORE_USER_URN]));
    }

    /// The group of "Create Group" in Microsoft's SCIM tutorial.
    fn entra_group() -> Value {
        stored(
            json!({
                "schemas": [CORE_GROUP_URN, MS_ADSCIM_GROUP_URN],
                "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                "displayName": "displayName",
                "meta": {"resourceType": "Group"}
            }),
            "a99962b9f99d4c4fac67",
            &groups(),
        )
    }

    #[test]
    fn entra_tutorial_group_updates() {
        let reg = groups();
        let mut g = entra_group();
        patch(
            &mut g,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "Replace", "path": "displayName", "value": "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}]}),
            &reg,
        );
        assert_eq!(
            g["displayName"],
            "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
        );

        let add = |id: &str| {
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "Add", "path": "members", "value": [{"$ref": null, "value": id}]}]})
        };
        patch(&mut g, add("f648f8d5ea4e4cd38e9c"), &reg);
        patch(&mut g, add("u1091"), &reg);
        patch(&mut g, add("7f4bc1a3-285e-48ae-8202-5accb43efb0e"), &reg);
        assert_eq!(
            g["members"],
            json!([{"value": "f648f8d5ea4e4cd38e9c"}, {"value": "u1091"}, {"value": "7f4bc1a3-285e-48ae-8202-5accb43efb0e"}])
        );

        // Without the flag: remove by a value list, only the listed member.
        patch(
            &mut g,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "Remove", "path": "members", "value": [{"value": "u1091"}]}]}),
            &reg,
        );
        assert_eq!(
            g["members"],
            json!([{"value": "f648f8d5ea4e4cd38e9c"}, {"value": "7f4bc1a3-285e-48ae-8202-5accb43efb0e"}])
        );
        // With the flag: a value-filter path.
        patch(
            &mut g,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "remove", "path": "members[value eq \"7f4bc1a3-285e-48ae-8202-5accb43efb0e\"]"}]}),
            &reg,
        );
        assert_eq!(g["members"], json!([{"value": "f648f8d5ea4e4cd38e9c"}]));
        // The tutorial's own remove body empties the group; members goes away.
        patch(
            &mut g,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "f648f8d5ea4e4cd38e9c"}]}]}),
            &reg,
        );
        assert!(g.get("members").is_none());
        assert_eq!(
            g["displayName"],
            "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
        );
        assert_eq!(g["schemas"], json!([CORE_GROUP_URN]));
    }

    fn okta_group() -> Value {
        stored(
            json!({"schemas": [CORE_GROUP_URN], "displayName": "Test SCIMv2", "members": []}),
            "abf4dd94-a4c0-4f67-89c9-76b03340cb9b",
            &groups(),
        )
    }

    #[test]
    fn okta_group_push_replace_of_id_and_display_name() {
        let reg = groups();
        let mut g = okta_group();
        patch(
            &mut g,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "value": {"id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b", "displayName": "Test SCIMv2 renamed"}}]}),
            &reg,
        );
        assert_eq!(g["displayName"], "Test SCIMv2 renamed");
        assert_eq!(g["id"], "abf4dd94-a4c0-4f67-89c9-76b03340cb9b");

        let e = patch_err(
            &g,
            json!({"Operations": [{"op": "replace", "value": {"id": "other", "displayName": "x"}}]}),
            &reg,
        );
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
        assert!(e.detail.contains("Operations[0]"), "{}", e.detail);

        // Read-only attributes are ignored, not errors.
        let before = g.clone();
        patch(
            &mut g,
            json!({"Operations": [{"op": "replace", "value": {"meta": {"created": "2020-01-01T00:00:00Z"}}}]}),
            &reg,
        );
        assert_eq!(g, before);
    }

    #[test]
    fn okta_membership_changes() {
        let reg = groups();
        let mut g = okta_group();
        let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [
            {"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"},
            {"value": "89bb1940-b905-4575-9e7f-6f887cfb368e", "display": "test.user2@okta.local"}
        ]}]});
        patch(&mut g, add.clone(), &reg);
        // The same add again changes nothing: members are de-duplicated by value.
        patch(&mut g, add, &reg);
        assert_eq!(
            g["members"],
            json!([
                {"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"},
                {"value": "89bb1940-b905-4575-9e7f-6f887cfb368e", "display": "test.user2@okta.local"}
            ])
        );
        patch(
            &mut g,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "remove", "path": "members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"}]}),
            &reg,
        );
        assert_eq!(
            g["members"],
            json!([{"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"}])
        );
        patch(
            &mut g,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "members", "value": [{"value": "u-9", "display": "nine"}]}]}),
            &reg,
        );
        assert_eq!(g["members"], json!([{"value": "u-9", "display": "nine"}]));
        patch(
            &mut g,
            json!({"Operations": [{"op": "replace", "path": "members", "value": []}]}),
            &reg,
        );
        assert!(g.get("members").is_none());
        assert_eq!(g["displayName"], "Test SCIMv2");
    }

    #[test]
    fn okta_deactivate_is_a_pathless_replace() {
        let reg = users();
        let mut u = entra_user();
        patch(
            &mut u,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "value": {"active": false}}]}),
            &reg,
        );
        assert_eq!(u["active"], json!(false));
    }

    #[test]
    fn request_shapes_are_accepted_case_insensitively() {
        let reg = users();
        let mut u = entra_user();
        patch(
            &mut u,
            json!({"operations": [{"OP": "REPLACE", "PATH": "DisplayName", "VALUE": "x"}]}),
            &reg,
        );
        assert_eq!(u["displayName"], "x");
        // A single operation object instead of a list.
        patch(
            &mut u,
            json!({"Operations": {"op": "add", "path": "title", "value": "t"}}),
            &reg,
        );
        assert_eq!(u["title"], "t");
        // Path-less replace of an unqualified extension attribute.
        patch(
            &mut u,
            json!({"Operations": [{"op": "replace", "value": {"department": "Ops"}}]}),
            &reg,
        );
        assert_eq!(u[ENTERPRISE_USER_URN]["department"], "Ops");
        // String booleans inside sub-attributes.
        patch(
            &mut u,
            json!({"Operations": [{"op": "add", "path": "emails", "value": {"value": "b@x", "primary": "True"}}]}),
            &reg,
        );
        assert_eq!(u["emails"][1], json!({"value": "b@x", "primary": true}));
        assert_eq!(
            u["emails"][0]["primary"],
            json!(false),
            "only one primary email"
        );
    }

    #[test]
    fn bad_requests_get_the_right_error_and_change_nothing() {
        let reg = users();
        let u = entra_user();
        let cases = [
            (json!([1, 2]), ScimType::InvalidSyntax),
            (json!("Operations"), ScimType::InvalidSyntax),
            (
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"Operations": [{"path": "title", "value": "x"}]}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"Operations": [{"op": "merge", "path": "title", "value": "x"}]}),
                ScimType::InvalidSyntax,
            ),
            (json!({"Operations": ["add"]}), ScimType::InvalidSyntax),
            (
                json!({"Operations": [{"op": "add", "path": "emails[type eq", "value": "x"}]}),
                ScimType::InvalidPath,
            ),
            (
                json!({"Operations": [{"op": "add", "path": 7, "value": "x"}]}),
                ScimType::InvalidPath,
            ),
            (
                json!({"Operations": [{"op": "add", "path": "name.nope", "value": "x"}]}),
                ScimType::InvalidPath,
            ),
            (
                json!({"Operations": [{"op": "add", "path": "userName.x", "value": "x"}]}),
                ScimType::InvalidPath,
            ),
            (
                json!({"Operations": [{"op": "add", "path": "name[givenName eq \"x\"]", "value": {}}]}),
                ScimType::InvalidPath,
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "userName", "value": {"a": 1}}]}),
                ScimType::InvalidValue,
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "active", "value": "perhaps"}]}),
                ScimType::InvalidValue,
            ),
            (
                json!({"Operations": [{"op": "replace", "value": "x"}]}),
                ScimType::InvalidValue,
            ),
            (
                json!({"Operations": [{"op": "add", "path": "title"}]}),
                ScimType::InvalidValue,
            ),
            (
                json!({"Operations": [{"op": "remove"}]}),
                ScimType::NoTarget,
            ),
            (
                json!({"Operations": [{"op": "remove", "path": "userName"}]}),
                ScimType::Mutability,
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "userName", "value": null}]}),
                ScimType::Mutability,
            ),
            (
                json!({"Operations": [{"op": "replace", "value": {"userName": ""}}]}),
                ScimType::Mutability,
            ),
            (
                json!({"Operations": [{"op": "remove", "path": "id"}]}),
                ScimType::Mutability,
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "id", "value": "new"}]}),
                ScimType::Mutability,
            ),
        ];
        for (body, want) in cases {
            let e = patch_err(&u, body.clone(), &reg);
            assert_eq!(e.scim_type, Some(want), "{body}: {e}");
            assert_eq!(e.status, 400);
        }
        let e = patch_err(
            &entra_group(),
            json!({"Operations": [{"op": "Remove", "path": "displayName"}]}),
            &groups(),
        );
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
    }

    #[test]
    fn a_failing_operation_undoes_the_earlier_ones() {
        let reg = users();
        let u = entra_user();
        let e = patch_err(
            &u,
            json!({"Operations": [
                {"op": "replace", "path": "displayName", "value": "changed"},
                {"op": "replace", "path": "active", "value": []},
                {"op": "replace", "path": "active", "value": {"x": 1}}
            ]}),
            &reg,
        );
        assert!(e.detail.starts_with("Operations[2]"), "{}", e.detail);
    }

    #[test]
    fn removing_what_is_not_there_is_a_no_op() {
        let reg = users();
        let mut u = entra_user();
        let before = u.clone();
        patch(
            &mut u,
            json!({"Operations": [
                {"op": "remove", "path": "nickName"},
                {"op": "remove", "path": "emails[type eq \"home\"]"},
                {"op": "remove", "path": "phoneNumbers[type eq \"mobile\"].value"},
                {"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"},
                {"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"},
                {"op": "remove", "path": "name.middleName"}
            ]}),
            &reg,
        );
        assert_eq!(u, before);
    }

    #[test]
    fn removes_by_path_forms() {
        let reg = users();
        let mut u = entra_user();
        patch(
            &mut u,
            json!({"Operations": [
                {"op": "add", "path": "emails", "value": [{"value": "h@x", "type": "home"}]},
                {"op": "remove", "path": "emails[type eq \"work\"].value"},
                {"op": "remove", "path": "name.formatted"},
                {"op": "remove", "path": "emails[type eq \"home\"].type"}
            ]}),
            &reg,
        );
        assert_eq!(u["emails"], json!([{"value": "h@x"}]));
        assert_eq!(
            u["name"],
            json!({"familyName": "familyName", "givenName": "givenName"})
        );
    }

    #[test]
    fn unknown_attributes_are_dropped_and_reported() {
        let reg = users();
        let mut u = entra_user();
        let dropped = patch(
            &mut u,
            json!({"Operations": [
                {"op": "add", "path": "favouriteColour", "value": "blue"},
                {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:custom:2.0:User:worksiteId", "value": "180"},
                {"op": "replace", "value": {"shoe size": 9, "nickName": "n"}}
            ]}),
            &reg,
        );
        assert_eq!(u["nickName"], "n");
        assert!(u.get("favouriteColour").is_none());
        assert!(
            dropped.contains(&"favouriteColour".to_string()),
            "{dropped:?}"
        );
        assert!(dropped.contains(&"shoe size".to_string()), "{dropped:?}");
        assert!(
            dropped.contains(&"urn:ietf:params:scim:schemas:extension:custom:2.0:User".to_string()),
            "{dropped:?}"
        );
    }

    #[test]
    fn replace_of_a_complex_attribute_keeps_unnamed_sub_attributes() {
        let reg = users();
        let mut u = entra_user();
        patch(
            &mut u,
            json!({"Operations": [{"op": "replace", "path": "name", "value": {"givenName": "G"}}]}),
            &reg,
        );
        assert_eq!(
            u["name"],
            json!({"formatted": "givenName familyName", "familyName": "familyName", "givenName": "G"})
        );
        // Replacing the whole extension does replace it.
        u[ENTERPRISE_USER_URN] = json!({"department": "A", "division": "B"});
        patch(
            &mut u,
            json!({"Operations": [{"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "value": {"department": "C"}}]}),
            &reg,
        );
        assert_eq!(u[ENTERPRISE_USER_URN], json!({"department": "C"}));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn op_name() -> impl Strategy<Value = &'static str> {
            proptest::sample::select(vec!["add", "Add", "replace", "Replace", "remove", "REMOVE"])
        }

        fn path() -> impl Strategy<Value = Option<&'static str>> {
            proptest::option::of(proptest::sample::select(vec![
                "userName",
                "displayName",
                "active",
                "name",
                "name.givenName",
                "emails",
                "emails.value",
                "emails[type eq \"work\"]",
                "emails[type eq \"work\"].value",
                "emails[type eq \"work\" and primary eq true].value",
                "emails[value co \"x\"].type",
                "phoneNumbers[type eq \"mobile\"].value",
                "groups",
                "meta",
                "id",
                "externalId",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                "unknownThing",
            ]))
        }

        fn value() -> impl Strategy<Value = Option<Value>> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                proptest::sample::select(vec!["True", "false", "x", "", "work", "m-1"])
                    .prop_map(Value::from),
                any::<i32>().prop_map(Value::from),
            ];
            let v = leaf.prop_recursive(2, 8, 3, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    proptest::collection::vec(
                        (
                            proptest::sample::select(vec![
                                "value",
                                "type",
                                "primary",
                                "givenName",
                                "active",
                                "displayName",
                                "name.familyName",
                                "department",
                                "id",
                            ]),
                            inner
                        ),
                        0..3
                    )
                    .prop_map(|kv| Value::Object(
                        kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                    )),
                ]
            });
            proptest::option::of(v)
        }

        fn operation() -> impl Strategy<Value = Value> {
            (op_name(), path(), value()).prop_map(|(op, path, value)| {
                let mut o = Map::new();
                o.insert("op".into(), json!(op));
                if let Some(p) = path {
                    o.insert("path".into(), json!(p));
                }
                if let Some(v) = value {
                    o.insert("value".into(), v);
                }
                Value::Object(o)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn random_patches_succeed_canonically_or_change_nothing(
                ops in proptest::collection::vec(operation(), 1..6)
            ) {
                let reg = users();
                let mut u = entra_user();
                let before = u.clone();
                let body = json!({"Operations": ops});
                match apply_patch(&mut u, &body, &reg) {
                    Ok(_) => {
                        // The result is in stored form and still has its userName and id.
                        let mut again = u.clone();
                        canonicalize(&mut again, &reg).unwrap();
                        prop_assert_eq!(&again, &u);
                        prop_assert!(u["userName"].is_string());
                        prop_assert_eq!(&u["id"], &before["id"]);
                    }
                    Err(e) => {
                        prop_assert_eq!(&u, &before);
                        prop_assert!(e.status == 400);
                    }
                }
            }

            #[test]
            fn arbitrary_json_bodies_never_panic(body in value()) {
                let reg = groups();
                let mut g = entra_group();
                let before = g.clone();
                if apply_patch(&mut g, &body.unwrap_or(Value::Null), &reg).is_err() {
                    prop_assert_eq!(g, before);
                }
            }
        }
    }
}
