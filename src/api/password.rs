//! The SCIM password, write-only (RFC 7643 §7): taken out of a resource
//! before it is stored, kept for the write only when the mapping writes
//! one, a password-only change refused when it does not, and a PATCH
//! removing it refused.
//!
//! Knows the request and the mapping's `password` setting; never where
//! the password is kept on its way to the directory (the store's).

use serde_json::Value;
use tracing::debug;

use super::Api;
use crate::scim::ScimError;
use crate::store::Password;

impl Api {
    /// Whether the mapping writes passwords to the directory.
    pub(super) fn maps_password(&self) -> bool {
        self.model.current().mapping.password.is_some()
    }

    /// The password an update carried, kept only when the mapping writes
    /// one. When it does not and the password was all the update changed
    /// (a password change from the identity provider), 400: answering 200
    /// would make the identity provider report a password as synced that
    /// reached nothing. Alongside other changes it is dropped and they go
    /// ahead.
    pub(super) fn wanted_password(
        &self,
        sent: Option<Password>,
        nothing_else_changed: bool,
    ) -> Result<Option<Password>, ScimError> {
        match sent {
            Some(p) if self.maps_password() => Ok(Some(p)),
            Some(_) if nothing_else_changed => Err(ScimError::new(
                400,
                None,
                "this server's mapping writes no password to the directory, so the password \
                 change was not applied (nor kept); turn password sync off for this \
                 application (Okta: Provisioning, To App, Sync Password), or map the password \
                 in the mapping file ([user.password])",
            )),
            Some(_) => {
                debug!("dropped a password: the mapping writes none");
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

/// Takes the SCIM `password` out of a (canonicalized) resource: a
/// non-empty string, else 400. An empty one is no password.
pub(super) fn take_password(resource: &mut Value) -> Result<Option<Password>, ScimError> {
    let Some(obj) = resource.as_object_mut() else {
        return Ok(None);
    };
    let key = obj
        .keys()
        .find(|k| k.eq_ignore_ascii_case("password"))
        .cloned();
    match key.and_then(|k| obj.remove(&k)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(Password::new(s))),
        Some(_) => Err(ScimError::invalid_value("password must be a string")),
    }
}

/// A PATCH `remove` of the password is refused: it is write-only, and
/// the directory's password is not this server's to delete; a new one is
/// set with `replace`.
pub(super) fn refuse_password_removal(
    operations: &[crate::scim::patch::PatchOperation],
) -> Result<(), ScimError> {
    let names_password = |p: &crate::scim::path::PatchPath| {
        let t = p.to_string().to_ascii_lowercase();
        t == "password" || t == "urn:ietf:params:scim:schemas:core:2.0:user:password"
    };
    if operations.iter().any(|o| {
        o.op == crate::scim::patch::PatchOpKind::Remove
            && o.path.as_ref().is_some_and(names_password)
    }) {
        return Err(ScimError::mutability(
            "password is write-only: it cannot be removed, only replaced with a new one",
        ));
    }
    Ok(())
}
