//! The discovery documents of RFC 7644 §4 and RFC 7643 §5–§7:
//! `/ServiceProviderConfig`, `/Schemas`, `/Schemas/{id}`, `/ResourceTypes`
//! and `/ResourceTypes/{name}`, generated from the schema registries the
//! loaded mapping implies, so that what a client discovers is what this
//! installation stores.
//!
//! Pure: the caller passes the base URL and the registries.

use serde_json::{json, Value};

use crate::scim::schema::{
    SchemaRegistry, LIST_RESPONSE_URN, RESOURCE_TYPE_URN, SERVICE_PROVIDER_CONFIG_URN,
};

/// One resource type the server serves.
#[derive(Debug, Clone, Copy)]
pub struct ResourceType<'a> {
    /// `User`, `Group`.
    pub name: &'a str,
    /// `/Users`, `/Groups`.
    pub endpoint: &'a str,
    pub description: &'a str,
    pub schemas: &'a SchemaRegistry,
}

/// What the server supports, for `/ServiceProviderConfig`.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Largest page a list or filter returns.
    pub max_results: usize,
    /// The mapping writes the password to the directory: a password
    /// change reaches it (`changePassword.supported`).
    pub change_password: bool,
}

/// The ServiceProviderConfig document (RFC 7643 §5).
pub fn service_provider_config(base_url: &str, caps: Capabilities) -> Value {
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_URN],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": caps.max_results},
        "changePassword": {"supported": caps.change_password},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token made by `scim2ldap token`",
            "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base_url}/ServiceProviderConfig")
        }
    })
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_URN],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// One ResourceType document (RFC 7643 §6).
pub fn resource_type(base_url: &str, rt: &ResourceType<'_>) -> Value {
    let extensions: Vec<Value> = rt
        .schemas
        .extensions
        .iter()
        .map(|s| json!({"schema": s.id, "required": false}))
        .collect();
    json!({
        "schemas": [RESOURCE_TYPE_URN],
        "id": rt.name,
        "name": rt.name,
        "endpoint": rt.endpoint,
        "description": rt.description,
        "schema": rt.schemas.core.id,
        "schemaExtensions": extensions,
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{base_url}/ResourceTypes/{}", rt.name)
        }
    })
}

/// `/ResourceTypes`: every type, as a ListResponse.
pub fn resource_types(base_url: &str, types: &[ResourceType<'_>]) -> Value {
    list(types.iter().map(|t| resource_type(base_url, t)).collect())
}

/// `/ResourceTypes/{name}`, the name compared case-insensitively.
pub fn find_resource_type(base_url: &str, types: &[ResourceType<'_>], name: &str) -> Option<Value> {
    types
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(name))
        .map(|t| resource_type(base_url, t))
}

/// Every schema of every type, each once, core schemas first.
fn all_schemas(base_url: &str, types: &[ResourceType<'_>]) -> Vec<Value> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    let ordered = types
        .iter()
        .map(|t| &t.schemas.core)
        .chain(types.iter().flat_map(|t| t.schemas.extensions.iter()));
    for s in ordered {
        if seen.iter().any(|id| id.eq_ignore_ascii_case(&s.id)) {
            continue;
        }
        seen.push(&s.id);
        let mut doc = s.to_json();
        doc["meta"]["location"] = Value::String(format!("{base_url}/Schemas/{}", s.id));
        out.push(doc);
    }
    out
}

/// `/Schemas`: every schema, as a ListResponse.
pub fn schemas(base_url: &str, types: &[ResourceType<'_>]) -> Value {
    list(all_schemas(base_url, types))
}

/// `/Schemas/{id}`, the URN compared case-insensitively.
pub fn find_schema(base_url: &str, types: &[ResourceType<'_>], id: &str) -> Option<Value> {
    all_schemas(base_url, types)
        .into_iter()
        .find(|s| s["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{
        AttrDef, Schema, CORE_GROUP_URN, CORE_USER_URN, ENTERPRISE_USER_URN, SCHEMA_URN,
    };

    const BASE: &str = "https://h/scim/v2";

    fn registries() -> (SchemaRegistry, SchemaRegistry) {
        let custom = Schema {
            id: "urn:example:params:scim:schemas:extension:acme:2.0:User".into(),
            name: "acme".into(),
            description: String::new(),
            attributes: vec![AttrDef::string("costCenter")],
        };
        (
            SchemaRegistry::users(vec![custom]),
            SchemaRegistry::groups(Vec::new()),
        )
    }

    #[test]
    fn resource_types_name_their_schemas_and_extensions() {
        let (users, groups) = registries();
        let types = [
            ResourceType {
                name: "User",
                endpoint: "/Users",
                description: "User Account",
                schemas: &users,
            },
            ResourceType {
                name: "Group",
                endpoint: "/Groups",
                description: "Group",
                schemas: &groups,
            },
        ];
        let doc = resource_types(BASE, &types);
        assert_eq!(doc["schemas"][0], LIST_RESPONSE_URN);
        assert_eq!(doc["totalResults"], 2);
        let user = &doc["Resources"][0];
        assert_eq!(user["schema"], CORE_USER_URN);
        assert_eq!(user["endpoint"], "/Users");
        assert_eq!(user["schemaExtensions"][0]["schema"], ENTERPRISE_USER_URN);
        assert_eq!(
            user["schemaExtensions"][1]["schema"],
            "urn:example:params:scim:schemas:extension:acme:2.0:User"
        );
        assert_eq!(
            user["meta"]["location"],
            format!("{BASE}/ResourceTypes/User")
        );
        assert_eq!(doc["Resources"][1]["schema"], CORE_GROUP_URN);
        assert_eq!(
            find_resource_type(BASE, &types, "group").unwrap()["id"],
            "Group"
        );
        assert!(find_resource_type(BASE, &types, "Device").is_none());
    }

    #[test]
    fn schemas_are_listed_once_with_locations() {
        let (users, groups) = registries();
        let types = [
            ResourceType {
                name: "User",
                endpoint: "/Users",
                description: "",
                schemas: &users,
            },
            ResourceType {
                name: "Group",
                endpoint: "/Groups",
                description: "",
                schemas: &groups,
            },
        ];
        let doc = schemas(BASE, &types);
        let ids: Vec<&str> = doc["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                CORE_USER_URN,
                CORE_GROUP_URN,
                ENTERPRISE_USER_URN,
                "urn:example:params:scim:schemas:extension:acme:2.0:User"
            ]
        );
        let ent = find_schema(BASE, &types, &ENTERPRISE_USER_URN.to_uppercase()).unwrap();
        assert_eq!(ent["schemas"][0], SCHEMA_URN);
        assert_eq!(
            ent["meta"]["location"],
            format!("{BASE}/Schemas/{ENTERPRISE_USER_URN}")
        );
        assert!(ent["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "manager"));
        assert!(find_schema(BASE, &types, "urn:nope").is_none());
    }

    #[test]
    fn service_provider_config_says_sort_and_etag() {
        let doc = service_provider_config(
            BASE,
            Capabilities {
                max_results: 7,
                change_password: false,
            },
        );
        assert_eq!(doc["sort"]["supported"], true);
        assert_eq!(doc["etag"]["supported"], true);
        assert_eq!(doc["filter"]["maxResults"], 7);
        assert_eq!(doc["bulk"]["supported"], false);
        assert_eq!(doc["changePassword"]["supported"], false);
        let caps = Capabilities {
            max_results: 7,
            change_password: true,
        };
        let doc = service_provider_config(BASE, caps);
        assert_eq!(doc["changePassword"]["supported"], true);
    }
}
