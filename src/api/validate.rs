//! What is checked before anything is journaled: canonical names and
//! coerced values, the required name, the numbers the mapping allocates,
//! an entry the mapping can place (and, once known, the directory's
//! syntaxes accept), and the uniqueness keys the store enforces.
//!
//! Knows the model and the mapping's entry; never writes the store
//! (except allocation counters) and never reaches the directory.

use serde_json::Value;
use tracing::debug;

use super::password::take_password;
use super::syntax::check_syntaxes;
use super::Api;
use crate::mapping::ALLOCATED_KEY;
use crate::scim::schema::canonicalize;
use crate::scim::ScimError;
use crate::store::{Kind, Password, RDN_KEY};

impl Api {
    /// Canonical names, coerced values, required attributes, and a mapping
    /// that can place the resource: everything checked before journaling.
    /// `old` is the stored state of the resource being updated (`None` on
    /// create): the numbers allocated for it carry over.
    /// Returns the password the resource carried, taken out of it: a
    /// password is never stored with the resource (write-only).
    pub(super) fn validate(
        &self,
        kind: Kind,
        resource: &mut Value,
        old: Option<&Value>,
    ) -> Result<Option<Password>, ScimError> {
        let model = self.model.current();
        let dropped = canonicalize(resource, model.registry(kind))?;
        if !dropped.is_empty() {
            debug!(attributes = ?dropped, "ignored attributes this server's schema does not define");
        }
        let password = take_password(resource)?;
        // The required name first: a refused request must not use up an
        // allocated number.
        let required = match kind {
            Kind::User => "userName",
            Kind::Group => "displayName",
        };
        let name = resource
            .get(required)
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.trim().is_empty() {
            return Err(ScimError::invalid_value(format!(
                "{required} is required and must be a non-empty string"
            )));
        }
        // NUL cannot be indexed, so it would slip past the uniqueness check.
        if name.contains('\0') {
            return Err(ScimError::invalid_value(format!(
                "{required} must not contain NUL"
            )));
        }
        self.allocate(kind, resource, old, &model)?;
        let resolver = crate::model::StoreResolver {
            store: &self.store,
            model: &model,
        };
        let entry = model.entry(kind, resource, &resolver)?;
        if let Some(syntaxes) = self.syntaxes.get() {
            check_syntaxes(&syntaxes, &model, kind, &entry)?;
        }
        if let Some(obj) = resource.as_object_mut() {
            obj.insert(RDN_KEY.into(), unique_keys(&model, kind, &entry));
        }
        Ok(password)
    }

    /// Numbers the mapping allocates per resource (uidNumber, gidNumber):
    /// kept from `old`, or handed out now, and attached under
    /// [`ALLOCATED_KEY`] where the mapping reads them.
    fn allocate(
        &self,
        kind: Kind,
        resource: &mut Value,
        old: Option<&Value>,
        model: &crate::model::Model,
    ) -> Result<(), ScimError> {
        let wanted = model.allocations(kind);
        if wanted.is_empty() {
            return Ok(());
        }
        let kept = old
            .and_then(|o| o.get(ALLOCATED_KEY))
            .and_then(Value::as_object);
        let mut numbers = serde_json::Map::new();
        for (attr, lo, hi) in wanted {
            let n = match kept.and_then(|k| k.get(&attr)).and_then(Value::as_u64) {
                Some(n) => n,
                None => self
                    .store
                    .allocate(kind, &attr, lo, hi)
                    .map_err(|e| ScimError::internal(e.to_string()))?
                    .ok_or_else(|| {
                        ScimError::internal(format!(
                            "the {attr} range {lo}-{hi} of the mapping is used up; widen it"
                        ))
                    })?,
            };
            numbers.insert(attr, Value::from(n));
        }
        if let Some(obj) = resource.as_object_mut() {
            obj.insert(ALLOCATED_KEY.into(), Value::Object(numbers));
        }
        Ok(())
    }
}

/// What the store keeps under [`RDN_KEY`]: the entry's RDN key, and with
/// `unique = true` rules in the mapping (AD's sAMAccountName) a list that
/// adds `attr=value` keys, so that the store refuses a second resource
/// holding one of them with 409, before anything is journaled.
fn unique_keys(
    model: &crate::model::Model,
    kind: Kind,
    entry: &crate::mapping::LdapEntry,
) -> Value {
    let mut keys = model
        .resource_mapping(kind)
        .map(|m| m.unique_keys(entry))
        .unwrap_or_else(|| vec![entry.rdn_key()]);
    if keys.len() == 1 {
        Value::String(keys.remove(0))
    } else {
        Value::Array(keys.into_iter().map(Value::String).collect())
    }
}
