//! The SCIM resource types this server keeps.

use serde::{Deserialize, Serialize};

/// The two SCIM resource types. Serialized as `"User"` / `"Group"`, which
/// journal entries on disk hold: the variant names are part of the store's
/// format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    /// The resource type's name (RFC 7643 §6), as in `meta.resourceType`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_as_the_resource_type_name() {
        for kind in [Kind::User, Kind::Group] {
            let text = serde_json::to_string(&kind).unwrap();
            assert_eq!(text, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<Kind>(&text).unwrap(), kind);
        }
    }
}
