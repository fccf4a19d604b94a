//! The discovery endpoints: `/ServiceProviderConfig`, `/Schemas[/{id}]`,
//! `/ResourceTypes[/{name}]`, built by the core's `discovery` from the
//! model's schemas (Groups only where the mapping provisions them).
//!
//! Knows the model and the core's documents; never the store.

use super::{Api, ApiRequest, ApiResponse, MAX_PAGE};
use crate::scim::discovery;
use crate::scim::ScimError;
use crate::store::Kind;

impl Api {
    /// `/ServiceProviderConfig`, `/Schemas[/{id}]`, `/ResourceTypes[/{name}]`.
    pub(super) fn discovery(
        &self,
        req: &ApiRequest,
        served: &[Kind],
        endpoint: &str,
        id: Option<&str>,
    ) -> Result<ApiResponse, ScimError> {
        // RFC 7644 §4: a filter here would be silently ignored, which a
        // client could take for a match; refuse it instead.
        if req
            .query
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("filter") && !v.trim().is_empty())
        {
            return Err(ScimError::new(
                403,
                None,
                "the discovery endpoints do not support filtering",
            ));
        }
        let model = self.model.current();
        let mut types = Vec::new();
        if served.contains(&Kind::User) {
            types.push(discovery::ResourceType {
                name: "User",
                endpoint: "/Users",
                description: "User Account",
                schemas: &model.users,
            });
        }
        // Groups are discoverable only where the mapping provisions them.
        if served.contains(&Kind::Group) && model.mapping.group.is_some() {
            types.push(discovery::ResourceType {
                name: "Group",
                endpoint: "/Groups",
                description: "Group",
                schemas: &model.groups,
            });
        }
        let base = req.base_url.as_str();
        let found = match (endpoint.to_ascii_lowercase().as_str(), id) {
            ("serviceproviderconfig", None) => Some(discovery::service_provider_config(
                base,
                discovery::Capabilities {
                    max_results: MAX_PAGE,
                    change_password: self.maps_password(),
                },
            )),
            ("schemas", None) => Some(discovery::schemas(base, &types)),
            ("schemas", Some(id)) => discovery::find_schema(base, &types, id),
            ("resourcetypes", None) => Some(discovery::resource_types(base, &types)),
            ("resourcetypes", Some(name)) => discovery::find_resource_type(base, &types, name),
            _ => None,
        };
        match found {
            Some(doc) => Ok(ApiResponse::json(200, doc)),
            None => Err(ScimError::not_found(format!(
                "no SCIM endpoint at {}",
                req.path
            ))),
        }
    }
}

pub(super) fn discovery_endpoint(segment: &str) -> bool {
    ["ServiceProviderConfig", "Schemas", "ResourceTypes"]
        .iter()
        .any(|e| e.eq_ignore_ascii_case(segment))
}
