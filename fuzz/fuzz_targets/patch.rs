//! The PATCH engine on arbitrary JSON: it must never panic; a request it
//! refuses leaves the resource unchanged, and one it accepts leaves a
//! resource that canonicalizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim2ldap_core::scim::patch::apply_patch;
use scim2ldap_core::scim::project::Projection;
use scim2ldap_core::scim::schema::{canonicalize, SchemaRegistry};
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let reg = SchemaRegistry::users(Vec::new());
    let original = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "1",
        "userName": "alice",
        "active": true,
        "name": {"givenName": "Alice", "familyName": "Liddell"},
        "emails": [
            {"value": "a@example.com", "type": "work", "primary": true},
            {"value": "b@example.com", "type": "home"}
        ],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "department": "R&D", "manager": {"value": "2"}
        }
    });
    let mut resource = original.clone();
    match apply_patch(&mut resource, &request, &reg) {
        Err(_) => assert_eq!(resource, original, "a refused PATCH changed the resource"),
        Ok(_) => {
            let _ = canonicalize(&mut resource, &reg);
            // The same request may carry projection lists, as a client's
            // `attributes` parameter would.
            if let Some(Value::String(a)) = request.get("attributes") {
                if let Ok(p) = Projection::parse(Some(a), None) {
                    p.apply(&mut resource, &reg);
                }
            }
        }
    }
});
