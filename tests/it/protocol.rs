//! The SCIM protocol as the identity providers speak it: the user request
//! bodies of Microsoft's "Develop and plan provisioning for a SCIM
//! endpoint" tutorial (and of its known-issues page, with and without the
//! aadOptscim062020 flag) and of Okta's SCIM 2.0 reference, replayed over
//! HTTP and checked in slapd; then paging, sorting, `.search`, projection,
//! ETags and discovery.

use serde_json::{json, Value};

use crate::harness::{first, Harness, MAPPING};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn dn(uid: &str) -> String {
    format!("uid={uid},ou=people,dc=example,dc=com")
}

/// Entra's create body from the tutorial ("Create User").
fn entra_create(user_name: &str) -> Value {
    json!({
        "schemas": [USER, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": user_name,
        "active": true,
        "emails": [{
            "primary": true,
            "type": "work",
            "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"
        }],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName"
        },
        "roles": []
    })
}

async fn entra_test_connection(h: &Harness) {
    let r = h
        .send(
            "GET",
            &format!(
                "/Users?filter={}",
                enc("userName eq \"ed6e6bf2-2d8c-4f66-a9bd-2f5e1c0e7a1d\"")
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["schemas"], json!([LIST]));
    assert_eq!(r.body["totalResults"], 0);
    assert_eq!(r.body["Resources"], json!([]));
}

/// Create, get, filter (found and not found) as in the tutorial; returns
/// the new user's id.
async fn entra_create_get_filter(h: &Harness, user_name: &str) -> String {
    let r = h
        .send("POST", "/Users", Some(entra_create(user_name)))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["userName"], user_name);
    assert_eq!(r.body["meta"]["resourceType"], "User");
    assert_eq!(r.body["roles"], Value::Null, "an empty list is no value");
    h.settle().await;
    let e = h.ldap_get(&dn(user_name)).await.expect("entry created");
    assert_eq!(first(&e, "cn").as_deref(), Some("givenName familyName"));
    assert_eq!(first(&e, "sn").as_deref(), Some("familyName"));
    assert_eq!(first(&e, "givenName").as_deref(), Some("givenName"));
    assert_eq!(
        first(&e, "mail").as_deref(),
        Some("test_user_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com")
    );
    assert_eq!(first(&e, "pwdAccountLockedTime"), None);

    let r = h.send("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["externalId"], "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    assert_eq!(r.body["emails"][0]["type"], "work");

    let r = h
        .send(
            "GET",
            &format!(
                "/Users?filter={}",
                enc(&format!("userName eq \"{user_name}\""))
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["itemsPerPage"], 1);
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());
    let r = h
        .send(
            "GET",
            &format!("/Users?filter={}", enc("userName eq \"non-existent user\"")),
            None,
        )
        .await;
    assert_eq!((r.status, r.body["totalResults"].as_u64()), (200, Some(0)));
    id
}

async fn patch(h: &Harness, id: &str, body: Value) -> Value {
    let r = h.send("PATCH", &format!("/Users/{id}"), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert_eq!(h.daemon().store.pending_count(), 0, "applied, not parked");
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_user_flow_without_the_flag() {
    let h = Harness::start().await;
    entra_test_connection(&h).await;
    let name = "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1";
    let id = entra_create_get_filter(&h, name).await;

    // "Update User [Multi-valued properties]".
    let body = patch(
        &h,
        &id,
        json!({
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
            ]
        }),
    )
    .await;
    assert_eq!(body["emails"][0]["value"], "updatedEmail@microsoft.com");
    let e = h.ldap_get(&dn(name)).await.unwrap();
    assert_eq!(
        first(&e, "mail").as_deref(),
        Some("updatedemail@microsoft.com")
    );
    assert_eq!(first(&e, "sn").as_deref(), Some("updatedFamilyName"));

    // The known-issues page's request without the flag: one capitalised
    // Replace per attribute, enterprise attribute by full path.
    patch(
        &h,
        &id,
        json!({
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "Replace", "path": "displayName", "value": "Pvlo"},
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "TestBcwqnm@test.microsoft.com"},
                {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
                {"op": "Replace", "path": "name.familyName", "value": "Pkqf"},
                {"op": "Replace", "path": "externalId", "value": "Eqpj"},
                {"op": "Replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "Eqpj"}
            ]
        }),
    )
    .await;
    let e = h.ldap_get(&dn(name)).await.unwrap();
    assert_eq!(first(&e, "cn").as_deref(), Some("Pvlo"));
    assert_eq!(first(&e, "displayName").as_deref(), Some("Pvlo"));
    assert_eq!(first(&e, "givenName").as_deref(), Some("Gtfd"));
    assert_eq!(first(&e, "sn").as_deref(), Some("Pkqf"));
    assert_eq!(
        first(&e, "mail").as_deref(),
        Some("testbcwqnm@test.microsoft.com")
    );
    assert_eq!(first(&e, "employeeNumber").as_deref(), Some("Eqpj"));

    // Disable with Entra's string boolean.
    let body = patch(
        &h,
        &id,
        json!({
            "schemas": [PATCH_OP],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}]
        }),
    )
    .await;
    assert_eq!(body["active"], false);
    let e = h.ldap_get(&dn(name)).await.unwrap();
    assert_eq!(
        first(&e, "pwdAccountLockedTime").as_deref(),
        Some("000001010000Z")
    );

    // "Update User [Single-valued properties]": userName is the RDN.
    let renamed = "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com";
    patch(
        &h,
        &id,
        json!({
            "schemas": [PATCH_OP],
            "Operations": [{"op": "Replace", "path": "userName", "value": renamed}]
        }),
    )
    .await;
    assert!(h.ldap_get(&dn(name)).await.is_none(), "old DN gone");
    let e = h.ldap_get(&dn(renamed)).await.expect("renamed entry");
    assert_eq!(
        first(&e, "pwdAccountLockedTime").as_deref(),
        Some("000001010000Z"),
        "still disabled after the rename"
    );

    // "Delete User".
    let r = h.send("DELETE", &format!("/Users/{id}"), None).await;
    assert_eq!(r.status, 204);
    h.settle().await;
    assert!(h.ldap_get(&dn(renamed)).await.is_none());
    let r = h.send("GET", &format!("/Users/{id}"), None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (404, Some("404")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_user_flow_with_the_flag() {
    let h = Harness::start().await;
    entra_test_connection(&h).await;
    let name = "Test_User_dfeef4c5-5681-4387-b016-bdf221e82081";
    let id = entra_create_get_filter(&h, name).await;
    let boss = entra_create_get_filter(&h, "Test_User_boss").await;

    // The flag's single path-less replace whose keys are paths.
    patch(
        &h,
        &id,
        json!({
            "schemas": [PATCH_OP],
            "Operations": [{
                "op": "replace",
                "value": {
                    "displayName": "Pvlo",
                    "emails[type eq \"work\"].value": "TestBcwqnm@test.microsoft.com",
                    "name.givenName": "Gtfd",
                    "name.familyName": "Pkqf",
                    "externalId": "Eqpj",
                    format!("{ENTERPRISE}:employeeNumber"): "Eqpj",
                    format!("{ENTERPRISE}:department"): "Sales"
                }
            }]
        }),
    )
    .await;
    let e = h.ldap_get(&dn(name)).await.unwrap();
    assert_eq!(first(&e, "cn").as_deref(), Some("Pvlo"));
    assert_eq!(first(&e, "givenName").as_deref(), Some("Gtfd"));
    assert_eq!(first(&e, "sn").as_deref(), Some("Pkqf"));
    assert_eq!(
        first(&e, "mail").as_deref(),
        Some("testbcwqnm@test.microsoft.com")
    );
    assert_eq!(first(&e, "employeeNumber").as_deref(), Some("Eqpj"));
    assert_eq!(first(&e, "departmentNumber").as_deref(), Some("Sales"));
    let r = h.send("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(r.body["externalId"], "Eqpj");
    assert_eq!(r.body[ENTERPRISE]["department"], "Sales");

    // The manager, added the way Entra sends it: the manager's id as the
    // value of the complex attribute; LDAP gets the manager's DN.
    patch(
        &h,
        &id,
        json!({
            "schemas": [PATCH_OP],
            "Operations": [{"op": "add", "path": format!("{ENTERPRISE}:manager"), "value": boss}]
        }),
    )
    .await;
    let e = h.ldap_get(&dn(name)).await.unwrap();
    assert_eq!(
        first(&e, "manager").as_deref(),
        Some(dn("Test_User_boss").as_str())
    );

    // Disable with a real boolean, then enable again.
    patch(
        &h,
        &id,
        json!({
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "path": "active", "value": false}]
        }),
    )
    .await;
    let e = h.ldap_get(&dn(name)).await.unwrap();
    assert_eq!(
        first(&e, "pwdAccountLockedTime").as_deref(),
        Some("000001010000Z")
    );
    patch(
        &h,
        &id,
        json!({
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "path": "active", "value": true}]
        }),
    )
    .await;
    assert_eq!(
        first(
            &h.ldap_get(&dn(name)).await.unwrap(),
            "pwdAccountLockedTime"
        ),
        None
    );

    // Removing the department clears the LDAP attribute.
    patch(
        &h,
        &id,
        json!({
            "schemas": [PATCH_OP],
            "Operations": [{"op": "remove", "path": format!("{ENTERPRISE}:department")}]
        }),
    )
    .await;
    assert_eq!(
        first(&h.ldap_get(&dn(name)).await.unwrap(), "departmentNumber"),
        None
    );

    let r = h.send("DELETE", &format!("/Users/{id}"), None).await;
    assert_eq!(r.status, 204);
    h.settle().await;
    assert!(h.ldap_get(&dn(name)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_user_flow() {
    let h = Harness::start().await;
    let name = "test.user@okta.local";
    let lookup = format!(
        "/Users?filter={}&startIndex=1&count=100",
        enc(&format!("userName eq \"{name}\""))
    );
    let r = h.send("GET", &lookup, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 0);
    assert_eq!(r.body["startIndex"], 1);
    assert_eq!(r.body["itemsPerPage"], 0);

    // Create, as Okta sends it (with a password and an empty groups list).
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({
                "schemas": [USER],
                "userName": name,
                "name": {"givenName": "Test", "familyName": "User"},
                "emails": [{"primary": true, "value": name, "type": "work"}],
                "displayName": "Test User",
                "locale": "en-US",
                "externalId": "00ujl29u0le5T6Aj10h7",
                "groups": [],
                "password": "1mz050nq",
                "active": true
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.get("password").is_none(), "never returned");
    let id = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    let e = h.ldap_get(&dn(name)).await.expect("entry created");
    assert_eq!(first(&e, "cn").as_deref(), Some("Test User"));
    assert_eq!(first(&e, "displayName").as_deref(), Some("Test User"));
    assert_eq!(first(&e, "mail").as_deref(), Some(name));

    let r = h.send("GET", &lookup, None).await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());

    // A second create of the same userName: 409 uniqueness.
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": "TEST.USER@okta.local"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        r.body
    );

    // Update: PUT with the full object, as Okta does.
    let r = h
        .send(
            "PUT",
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": [USER],
                "id": id,
                "userName": name,
                "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
                "emails": [{"primary": true, "value": name, "type": "work"}],
                "displayName": "Another User",
                "locale": "en-US",
                "groups": [],
                "active": true,
                "meta": {"resourceType": "User", "created": "2019-01-01T00:00:00.000Z"}
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"]["middleName"], "Excited");
    assert_ne!(r.body["meta"]["created"], "2019-01-01T00:00:00.000Z");
    h.settle().await;
    let e = h.ldap_get(&dn(name)).await.unwrap();
    assert_eq!(first(&e, "cn").as_deref(), Some("Another User"));
    assert_eq!(first(&e, "givenName").as_deref(), Some("Another"));

    // Deactivate: path-less replace of active.
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": false}}]
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    h.settle().await;
    let e = h.ldap_get(&dn(name)).await.unwrap();
    assert_eq!(
        first(&e, "pwdAccountLockedTime").as_deref(),
        Some("000001010000Z")
    );
    // Okta re-sends the same state: nothing is journaled.
    let before = h.daemon().store.last_seq();
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": false}}]
            })),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.daemon().store.last_seq(), before);
    // Reactivate.
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": true}}]
            })),
        )
        .await;
    assert_eq!(r.status, 200);
    h.settle().await;
    assert_eq!(
        first(
            &h.ldap_get(&dn(name)).await.unwrap(),
            "pwdAccountLockedTime"
        ),
        None
    );

    // A bad token gets a SCIM error body.
    let r = h
        .send_raw("GET", "/Users", None, None, Some("not-a-token"), &[])
        .await;
    assert_eq!((r.status, r.body["status"].as_str()), (401, Some("401")));
}

async fn create_users(h: &Harness, names: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let r = h
            .send(
                "POST",
                "/Users",
                Some(json!({
                    "schemas": [USER, ENTERPRISE],
                    "userName": n,
                    "externalId": format!("ext-{i}"),
                    "name": {"givenName": n, "familyName": format!("Family{}", names.len() - i)},
                    "emails": [{"value": format!("{n}@example.com"), "type": "work", "primary": true}],
                    "password": "secret",
                    ENTERPRISE: {"department": "R&D", "employeeNumber": format!("{i}")}
                })),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    ids
}

fn ids_of(body: &Value) -> Vec<String> {
    body["Resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no Resources: {body}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_import_paging_sorting_and_search() {
    let h = Harness::start().await;
    let names = ["dave", "Alice", "carol", "bob", "erin"];
    let mut ids = create_users(&h, &names).await;

    // Okta's import: pages of 2 until everything is seen, stable order.
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let r = h
            .send("GET", &format!("/Users?startIndex={start}&count=2"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["totalResults"], 5);
        assert_eq!(r.body["startIndex"], start);
        let page = ids_of(&r.body);
        assert_eq!(r.body["itemsPerPage"], page.len());
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        seen.extend(page);
        start += 2;
    }
    assert_eq!(start, 7, "three pages, then an empty one");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    ids.sort();
    assert_eq!(sorted, ids, "every user exactly once");
    let again: Vec<String> = {
        let r = h.send("GET", "/Users?count=5", None).await;
        ids_of(&r.body)
    };
    assert_eq!(again, seen, "the same order every time");

    // Edges: count=0 gives the total only; negative and zero values are
    // read as the RFC says; beyond the end is empty.
    let r = h.send("GET", "/Users?count=0", None).await;
    assert_eq!(
        (
            r.body["totalResults"].as_u64(),
            r.body["itemsPerPage"].as_u64()
        ),
        (Some(5), Some(0))
    );
    assert_eq!(r.body["Resources"], json!([]));
    let r = h.send("GET", "/Users?startIndex=-3&count=-1", None).await;
    assert_eq!(
        (
            r.status,
            r.body["startIndex"].as_u64(),
            r.body["itemsPerPage"].as_u64()
        ),
        (200, Some(1), Some(0))
    );
    let r = h.send("GET", "/Users?startIndex=0&count=1", None).await;
    assert_eq!(ids_of(&r.body), seen[..1]);
    let r = h.send("GET", "/Users?startIndex=99&count=10", None).await;
    assert_eq!(
        (
            r.body["totalResults"].as_u64(),
            r.body["itemsPerPage"].as_u64()
        ),
        (Some(5), Some(0))
    );
    let r = h.send("GET", "/Users?count=lots", None).await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidValue"))
    );
    let r = h
        .send(
            "GET",
            "/Users?startIndex=999999999999999999999999&count=2",
            None,
        )
        .await;
    assert_eq!((r.status, r.body["itemsPerPage"].as_u64()), (200, Some(0)));

    // Sorting: userName is case-insensitive.
    let r = h.send("GET", "/Users?sortBy=userName", None).await;
    let order: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["Alice", "bob", "carol", "dave", "erin"]);
    let r = h
        .send(
            "GET",
            &format!(
                "/Users?sortBy=name.familyName&sortOrder=descending&filter={}&startIndex=2&count=2",
                enc("userName ne \"erin\"")
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 4);
    let order: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    // Family5 dave, Family4 Alice, Family3 carol, Family2 bob: page 2..3.
    assert_eq!(order, ["Alice", "carol"]);
    let r = h.send("GET", "/Users?sortOrder=sideways", None).await;
    assert_eq!(r.status, 400);

    // POST /Users/.search with the same parameters in the body.
    let r = h
        .send(
            "POST",
            "/Users/.search",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "emails.value co \"example.com\" and not (userName sw \"e\")",
                "attributes": ["userName", "name.givenName"],
                "sortBy": "userName",
                "sortOrder": "descending",
                "startIndex": 1,
                "count": 3
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["schemas"], json!([LIST]));
    assert_eq!(r.body["totalResults"], 4);
    let resources = r.body["Resources"].as_array().unwrap();
    assert_eq!(resources.len(), 3);
    assert_eq!(resources[0]["userName"], "dave");
    for u in resources {
        let mut keys: Vec<&str> = u.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["id", "name", "schemas", "userName"], "{u}");
        assert_eq!(u["name"].as_object().unwrap().len(), 1);
    }
    let r = h
        .send(
            "POST",
            "/.search",
            Some(json!({"filter": "userName eq \"bob\"", "excludedAttributes": ["emails"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 1);
    assert!(r.body["Resources"][0].get("emails").is_none());
    assert_eq!(r.body["Resources"][0]["userName"], "bob");
    // Sorting happens before projection removes the sort attribute.
    let r = h
        .send(
            "POST",
            "/.search",
            Some(json!({"sortBy": "userName", "attributes": ["name.givenName"], "count": 3})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let given: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"]["givenName"].as_str().unwrap())
        .collect();
    assert_eq!(given, ["Alice", "bob", "carol"]);
    assert!(r.body["Resources"][0].get("userName").is_none());
    let r = h
        .send(
            "POST",
            "/Users/.search",
            Some(json!({"filter": "userName eq"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidFilter"))
    );
    let r = h
        .send(
            "POST",
            "/Users/.search",
            Some(json!({"schemas": [PATCH_OP]})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidSyntax"))
    );

    // Nothing about a bad query reached the directory.
    assert_eq!(h.daemon().store.last_seq(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_etags_and_errors() {
    let h = Harness::start().await;

    // attributes on a POST response.
    let r = h
        .send(
            "POST",
            "/Users?attributes=userName",
            Some(json!({"schemas": [USER, ENTERPRISE], "userName": "zoe",
                        "name": {"givenName": "Zoe", "familyName": "Z"},
                        ENTERPRISE: {"department": "Ops"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"schemas": [USER], "id": r.body["id"], "userName": "zoe"})
    );
    let etag = r
        .headers
        .get("etag")
        .expect("ETag even when meta is not returned");
    let etag = etag.to_str().unwrap().to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    let id = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    assert!(
        h.ldap_get(&dn("zoe")).await.is_some(),
        "the projection does not change what is stored"
    );

    // GET with attributes / excludedAttributes.
    let r = h
        .send(
            "GET",
            &format!(
                "/Users/{id}?attributes={}",
                enc(&format!("{ENTERPRISE}:department,name.familyName"))
            ),
            None,
        )
        .await;
    assert_eq!(
        r.body,
        json!({"schemas": [USER, ENTERPRISE], "id": id, "name": {"familyName": "Z"},
               ENTERPRISE: {"department": "Ops"}})
    );
    let r = h
        .send(
            "GET",
            &format!("/Users/{id}?excludedAttributes=name,meta,id"),
            None,
        )
        .await;
    assert!(r.body.get("name").is_none() && r.body.get("meta").is_none());
    assert_eq!(r.body["id"], id.as_str(), "id is always returned");
    assert_eq!(r.body["userName"], "zoe");
    let r = h
        .send(
            "GET",
            &format!(
                "/Users?attributes=userName&filter={}",
                enc("userName eq \"zoe\"")
            ),
            None,
        )
        .await;
    assert_eq!(
        r.body["Resources"][0],
        json!({"schemas": [USER], "id": id, "userName": "zoe"})
    );

    // PATCH response with excludedAttributes.
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{id}?excludedAttributes={ENTERPRISE}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "title", "value": "Boss"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["title"], "Boss");
    assert!(r.body.get(ENTERPRISE).is_none());
    assert_eq!(r.body["schemas"], json!([USER]));
    let new_etag = r.headers.get("etag").unwrap().to_str().unwrap().to_string();
    assert_ne!(new_etag, etag);

    // A malformed projection is refused before anything is written.
    let before = h.daemon().store.last_seq();
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{id}?attributes={}", enc("emails[type eq \"work\"]")),
            Some(json!({"Operations": [{"op": "add", "path": "title", "value": "X"}]})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidPath"))
    );
    assert_eq!(h.daemon().store.last_seq(), before);

    // If-None-Match: 304 while unchanged, 200 with the new ETag after.
    let r = h
        .send_raw(
            "GET",
            &format!("/Users/{id}"),
            None,
            None,
            Some(&h.token),
            &[("If-None-Match", &new_etag)],
        )
        .await;
    assert_eq!(r.status, 304);
    assert_eq!(r.body, Value::Null);
    let r = h
        .send_raw(
            "GET",
            &format!("/Users/{id}"),
            None,
            None,
            Some(&h.token),
            &[("If-None-Match", &etag)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["meta"]["version"], new_etag.as_str());
    // If-Match: the stale ETag is refused on PUT and PATCH, the current one
    // accepted.
    let put = json!({"schemas": [USER], "userName": "zoe", "name": {"familyName": "Z"}});
    let r = h
        .send_raw(
            "PUT",
            &format!("/Users/{id}"),
            Some(put.to_string()),
            Some("application/scim+json"),
            Some(&h.token),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!((r.status, r.body["status"].as_str()), (412, Some("412")));
    let r = h
        .send_raw(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({"Operations": [{"op": "remove", "path": "title"}]}).to_string()),
            Some("application/scim+json"),
            Some(&h.token),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(r.status, 412);
    let r = h
        .send_raw(
            "PUT",
            &format!("/Users/{id}"),
            Some(put.to_string()),
            Some("application/scim+json"),
            Some(&h.token),
            &[("If-Match", &new_etag)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Hostile input: every answer a SCIM error, never a dropped connection.
    let deep = format!("{}userName pr{}", "(".repeat(5000), ")".repeat(5000));
    let long_not = format!("{}userName pr{}", "not (".repeat(200), ")".repeat(200));
    for (q, status) in [
        (format!("/Users?filter={}", enc(&deep)), 400),
        (format!("/Users?filter={}", enc(&long_not)), 400),
        (format!("/Users?filter={}", enc("active gt true")), 400),
        (
            format!("/Users?filter={}", enc("emails[type eq \"work\"")),
            400,
        ),
        (
            format!("/Users?filter={}", enc("userName eq \"\u{0}\"")),
            400,
        ),
        ("/Users?filter=%ff%fe".to_string(), 400),
        ("/Users?sortBy=%5B%5D".to_string(), 400),
        ("/Users?attributes=..".to_string(), 400),
        ("/Users?excludedAttributes=a.b.c".to_string(), 400),
        (format!("/Users/{id}?attributes=%00"), 400),
        ("/Schemas/urn:nope".to_string(), 404),
        ("/Nope".to_string(), 404),
    ] {
        let r = h.send("GET", &q, None).await;
        assert_eq!(r.status, status, "{q}: {}", r.body);
        if status >= 400 {
            assert_eq!(r.body["status"], status.to_string(), "{q}: {}", r.body);
        }
    }
    for body in [
        json!([]),
        json!("x"),
        json!({"Operations": "x"}),
        json!({"Operations": [{"op": "jump"}]}),
        json!({"Operations": [{"op": "add", "path": "emails[", "value": 1}]}),
        json!({"Operations": [{"op": "replace", "path": "active", "value": {"a": 1}}]}),
    ] {
        let r = h
            .send("PATCH", &format!("/Users/{id}"), Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body["scimType"].is_string(), "{body}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_the_mapping() {
    let mapping = format!(
        "{MAPPING}\n[[extension]]\nurn = \"urn:example:params:scim:schemas:extension:acme:2.0:User\"\n\
         resource = \"User\"\nattributes = [{{ name = \"costCenter\", type = \"string\" }}, \
         {{ name = \"badges\", type = \"integer\", multi_valued = true }}]\n"
    );
    let h = Harness::start_with(Default::default(), &mapping).await;
    let acme = "urn:example:params:scim:schemas:extension:acme:2.0:User";

    let r = h.send("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["sort"]["supported"], true);
    assert_eq!(r.body["etag"]["supported"], true);
    assert_eq!(r.body["patch"]["supported"], true);
    assert!(r.body["meta"]["location"]
        .as_str()
        .unwrap()
        .ends_with("/scim/v2/ServiceProviderConfig"));

    let r = h.send("GET", "/ResourceTypes", None).await;
    assert_eq!(r.body["schemas"], json!([LIST]));
    let user = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "User")
        .expect("User resource type")
        .clone();
    assert_eq!(user["endpoint"], "/Users");
    let exts: Vec<&str> = user["schemaExtensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["schema"].as_str().unwrap())
        .collect();
    assert_eq!(exts, [ENTERPRISE, acme]);
    let r = h.send("GET", "/ResourceTypes/User", None).await;
    assert_eq!(r.body, user);

    let r = h.send("GET", "/Schemas", None).await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&USER) && ids.contains(&ENTERPRISE) && ids.contains(&acme),
        "{ids:?}"
    );
    assert_eq!(r.body["totalResults"], ids.len());
    let r = h.send("GET", &format!("/Schemas/{acme}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let badges = r.body["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "badges")
        .expect("badges declared");
    assert_eq!(
        (badges["type"].as_str(), badges["multiValued"].as_bool()),
        (Some("integer"), Some(true))
    );
    assert!(r.body["meta"]["location"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/Schemas/{acme}")));

    // The extension is stored and returned, and its attributes filter.
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER, acme], "userName": "max", acme: {"costCenter": "CC-7", "badges": ["3", 4]}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body[acme]["badges"], json!([3, 4]));
    let r = h
        .send(
            "GET",
            &format!(
                "/Users?filter={}",
                enc(&format!("{acme}:costCenter eq \"cc-7\""))
            ),
            None,
        )
        .await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);

    // RFC 7644 §4: filters on discovery are refused; only GET is allowed.
    let r = h.send("GET", "/Schemas?filter=id%20pr", None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (403, Some("403")));
    let r = h.send("POST", "/ResourceTypes", Some(json!({}))).await;
    assert_eq!(r.status, 405);
    let r = h.send("GET", "/ResourceTypes/Device", None).await;
    assert_eq!(r.status, 404);
}
