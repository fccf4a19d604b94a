//! The filter parser on arbitrary text: it must never panic, and whatever
//! it accepts must print back to a filter that parses to the same tree and
//! can be evaluated against a resource.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim2ldap_core::scim::filter::{parse_filter, Filter};
use scim2ldap_core::scim::path::PatchPath;
use scim2ldap_core::scim::query::sort_resources;
use scim2ldap_core::scim::schema::SchemaRegistry;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // PATCH paths embed filters; the same input exercises both parsers.
    let _ = PatchPath::parse(text);
    let Ok(filter) = parse_filter(text) else {
        return;
    };
    let printed = filter.to_string();
    let again = parse_filter(&printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e}"));
    assert_eq!(filter, again, "{text:?} printed as {printed:?}");
    let reg = SchemaRegistry::users(Vec::new());
    let _ = filter.validate(&reg);
    let mut users = vec![
        json!({
            "id": "1", "userName": "alice", "active": true,
            "name": {"givenName": "Alice", "familyName": "Liddell"},
            "emails": [{"value": "a@example.com", "type": "work", "primary": true}],
            "meta": {"created": "2024-05-13T04:42:34Z", "version": "W/\"1\""},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"}
        }),
        json!({"id": "2", "userName": 42, "emails": "x"}),
    ];
    for u in &users {
        let _ = filter.matches(u, &reg);
    }
    if let Filter::Compare { path, .. } | Filter::Present(path) = &filter {
        sort_resources(&mut users, path, true, &reg);
    }
});
