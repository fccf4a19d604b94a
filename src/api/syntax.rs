//! The early syntax check: the directory's attribute syntaxes, once the
//! daemon has read its subschema ([`DirectorySyntaxes`]), and the check of
//! a mapped entry's values against them, so that a value the directory
//! would refuse is a 400 before anything is journaled.
//!
//! Knows the syntaxes and the mapping's rules; never reads the directory
//! (the daemon does, and hands the result in).

use super::ScimError;
use crate::store::Kind;
use crate::syntax::AttributeSyntaxes;

/// The directory's attribute syntaxes once the daemon has read its
/// subschema (in the background, so a directory that is down does not
/// hold up the start). With them, a value the directory would refuse (a
/// non-ASCII IA5String, a value over a declared length bound) is a 400
/// before anything is journaled, instead of a parked entry later.
#[derive(Default)]
pub struct DirectorySyntaxes(std::sync::RwLock<Option<std::sync::Arc<AttributeSyntaxes>>>);

impl DirectorySyntaxes {
    pub fn set(&self, syntaxes: AttributeSyntaxes) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(syntaxes));
    }

    pub fn get(&self) -> Option<std::sync::Arc<AttributeSyntaxes>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Refuses an entry whose values the directory's schema forbids, naming
/// the LDAP attribute and where its value came from.
pub(super) fn check_syntaxes(
    syntaxes: &AttributeSyntaxes,
    model: &crate::model::Model,
    kind: Kind,
    entry: &crate::mapping::LdapEntry,
) -> Result<(), ScimError> {
    let rules = match kind {
        Kind::User => Some(model.mapping.user.rules()),
        Kind::Group => model.mapping.group.as_ref().map(|g| g.resource.rules()),
    };
    for (attr, values) in &entry.attrs {
        for v in values {
            if let Err(problem) = syntaxes.check(attr, v) {
                let source = rules
                    .and_then(|r| r.iter().find(|r| r.attribute.eq_ignore_ascii_case(attr)))
                    .map(|r| {
                        r.sources
                            .iter()
                            .map(|s| s.describe())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    })
                    .unwrap_or_else(|| "the mapping".into());
                return Err(ScimError::invalid_value(format!(
                    "{source}: the directory cannot store this value in {attr}: it {problem}"
                )));
            }
        }
    }
    Ok(())
}
