//! Users end to end: SCIM over HTTP in, entries in a real slapd out.

use serde_json::{json, Value};

use crate::harness::{first, Harness};

fn alice() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "alice",
        "externalId": "ext-alice",
        "name": {"givenName": "Alice", "familyName": "Liddell"},
        "emails": [{"value": "Alice@Example.com", "type": "work", "primary": true}],
        "title": "Engineer",
        "active": true
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_filter_replace_patch_delete() {
    let h = Harness::start().await;

    // Create.
    let r = h.send("POST", "/Users", Some(alice())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().expect("id").to_string();
    let location = r
        .headers
        .get("location")
        .expect("Location header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(location.ends_with(&format!("/Users/{id}")), "{location}");
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/scim+json"
    );
    assert_eq!(r.body["meta"]["resourceType"], "User");
    assert!(r.headers.get("etag").is_some());
    h.settle().await;
    let dn = "uid=alice,ou=people,dc=example,dc=com";
    let e = h.ldap_get(dn).await.expect("entry created");
    assert_eq!(
        first(&e, "cn").as_deref(),
        Some("Alice Liddell"),
        "cn falls back to given + family name: {e:?}"
    );
    assert_eq!(first(&e, "sn").as_deref(), Some("Liddell"));
    assert_eq!(first(&e, "givenName").as_deref(), Some("Alice"));
    assert_eq!(
        first(&e, "mail").as_deref(),
        Some("alice@example.com"),
        "mail is lowercased by the mapping"
    );
    assert_eq!(first(&e, "title").as_deref(), Some("Engineer"));

    // Read, and filter the way Entra and Okta do.
    let r = h.send("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(
        (r.status, r.body["userName"].as_str()),
        (200, Some("alice"))
    );
    let r = h
        .send(
            "GET",
            "/Users?filter=userName%20eq%20%22ALICE%22&startIndex=1&count=100",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());
    let r = h
        .send("GET", "/Users?filter=externalId+eq+%22ext-alice%22", None)
        .await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    let r = h
        .send(
            "GET",
            "/Users?filter=userName%20eq%20%227b1e2f3a-0000-4000-8000-000000000000%22",
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["totalResults"].as_u64()),
        (200, Some(0)),
        "Entra's Test connection: {}",
        r.body
    );
    assert_eq!(r.body["Resources"], json!([]));

    // Duplicate userName: 409 uniqueness, nothing written.
    let before = h.daemon().store.last_seq();
    let r = h.send("POST", "/Users", Some(alice())).await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        r.body
    );
    assert_eq!(h.daemon().store.last_seq(), before);

    // An attribute the mapping does not name, set by an administrator,
    // must survive every update.
    h.ldap_modify(
        dn,
        vec![ldap3::Mod::Replace(
            "description".to_string(),
            ["set by hand".to_string()].into(),
        )],
    )
    .await;

    // Replace (PUT): title removed, family name changed.
    let mut body = alice();
    body["name"]["familyName"] = json!("Pleasance");
    body.as_object_mut().unwrap().remove("title");
    let r = h.send("PUT", &format!("/Users/{id}"), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    let e = h.ldap_get(dn).await.unwrap();
    assert_eq!(first(&e, "sn").as_deref(), Some("Pleasance"));
    assert_eq!(first(&e, "title"), None, "title removed by PUT");
    assert_eq!(
        first(&e, "description").as_deref(),
        Some("set by hand"),
        "unmapped attribute untouched"
    );

    // PATCH in Entra's capitalised style on simple and name.* paths.
    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Replace", "path": "name.givenName", "value": "Alicia"},
            {"op": "Add", "path": "title", "value": "Manager"},
            {"op": "replace", "path": "displayName", "value": "Alicia P."}
        ]
    });
    let r = h.send("PATCH", &format!("/Users/{id}"), Some(patch)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"]["givenName"], "Alicia");
    h.settle().await;
    let e = h.ldap_get(dn).await.unwrap();
    assert_eq!(first(&e, "givenName").as_deref(), Some("Alicia"));
    assert_eq!(first(&e, "title").as_deref(), Some("Manager"));
    assert_eq!(
        first(&e, "cn").as_deref(),
        Some("Alicia P."),
        "cn prefers displayName"
    );
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({"Operations": [{"op": "remove", "path": "title"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert_eq!(first(&h.ldap_get(dn).await.unwrap(), "title"), None);

    // Rename: userName is in the DN, so the entry moves (modrdn) and keeps
    // its entryUUID and the hand-set attribute.
    let uuid = first(&h.ldap_get(dn).await.unwrap(), "entryUUID").unwrap();
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({"Operations": [{"op": "replace", "path": "userName", "value": "alice2"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert!(h.ldap_get(dn).await.is_none(), "old DN gone");
    let e = h
        .ldap_get("uid=alice2,ou=people,dc=example,dc=com")
        .await
        .expect("renamed entry");
    assert_eq!(first(&e, "entryUUID").as_deref(), Some(uuid.as_str()));
    assert_eq!(first(&e, "description").as_deref(), Some("set by hand"));

    // Delete.
    let r = h.send("DELETE", &format!("/Users/{id}"), None).await;
    assert_eq!(r.status, 204);
    h.settle().await;
    assert!(h
        .ldap_get("uid=alice2,ou=people,dc=example,dc=com")
        .await
        .is_none());
    let r = h.send("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["status"], "404");
    assert!(
        h.daemon().store.pending_count() == 0,
        "nothing left pending or parked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_user_name_is_escaped_in_dn_and_filters() {
    let h = Harness::start().await;
    let nasty = "a,b+c=d*)(uid=*";
    let mut body = alice();
    body["userName"] = json!(nasty);
    body["emails"] = json!([]);
    let r = h.send("POST", "/Users", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    h.settle().await;
    assert_eq!(h.daemon().store.pending_count(), 0, "applied, not parked");

    // The directory holds exactly one entry with that uid, at an escaped DN.
    let escaped_filter = format!("(uid={})", ldap3::ldap_escape(nasty));
    let found = h.ldap_search(&escaped_filter, &["uid"]).await;
    assert_eq!(found.len(), 1, "{found:?}");
    // The server may write the escapes as \2C or \, : parse the DN back.
    let dn = scim2ldap::dn::parse_dn(&found[0].dn).expect("a well-formed DN");
    assert_eq!(
        dn.len(),
        4,
        "one RDN under ou=people,dc=example,dc=com: {}",
        found[0].dn
    );
    assert_eq!(
        (dn[0][0].attr.as_str(), dn[0][0].value.as_str()),
        ("uid", nasty)
    );
    assert_eq!(dn[1][0].value, "people");
    assert_eq!(first(&found[0].attrs, "uid").as_deref(), Some(nasty));
    // No other entry was touched by an injected filter.
    assert_eq!(
        h.ldap_search("(objectClass=inetOrgPerson)", &["uid"])
            .await
            .len(),
        1
    );

    // An update converges the same entry in place: no spurious rename.
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({"Operations": [{"op": "replace", "path": "title", "value": "Tester"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert_eq!(
        h.daemon().store.pending_count(),
        0,
        "update applied, not parked"
    );
    let found = h.ldap_search(&escaped_filter, &["title"]).await;
    assert_eq!(first(&found[0].attrs, "title").as_deref(), Some("Tester"));

    // SCIM filter finds it by its exact name.
    let q = format!(
        "/Users?filter={}",
        urlencode(&format!("userName eq \"{nasty}\""))
    );
    let r = h.send("GET", &q, None).await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_scim_errors() {
    let h = Harness::start().await;
    let r = h.send_raw("GET", "/Users", None, None, None, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["status"], "401");
    assert!(r.body["detail"].as_str().unwrap().contains("bearer token"));
    let r = h
        .send_raw("GET", "/Users", None, None, Some("wrong"), &[])
        .await;
    assert_eq!(r.status, 401);

    let r = h
        .send_raw(
            "POST",
            "/Users",
            Some("{not json".into()),
            Some("application/scim+json"),
            Some(&h.token),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidSyntax")),
        "{}",
        r.body
    );
    let r = h
        .send_raw(
            "POST",
            "/Users",
            Some(alice().to_string()),
            Some("text/plain"),
            Some(&h.token),
            &[],
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.body);
    let r = h
        .send("POST", "/Users", Some(json!({"name": {"givenName": "x"}})))
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{}",
        r.body
    );
    let r = h.send("GET", "/Users?filter=userName%20eq", None).await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidFilter")),
        "{}",
        r.body
    );
    let r = h.send("GET", "/Users/does-not-exist", None).await;
    assert_eq!(r.status, 404);
    let r = h
        .send(
            "PATCH",
            "/Users/does-not-exist",
            Some(json!({"Operations": []})),
        )
        .await;
    assert_eq!(r.status, 404);
    let big = "x".repeat(2 * 1024 * 1024);
    let r = h
        .send_raw(
            "POST",
            "/Users",
            Some(big),
            Some("application/scim+json"),
            Some(&h.token),
            &[],
        )
        .await;
    assert_eq!(r.status, 413);
    // Nothing of the bad requests reached the journal.
    assert_eq!(h.daemon().store.last_seq(), 0);

    // A stale If-Match is refused with 412.
    let r = h.send("POST", "/Users", Some(alice())).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = h
        .send_raw(
            "DELETE",
            &format!("/Users/{id}"),
            None,
            None,
            Some(&h.token),
            &[("If-Match", "W/\"999\"")],
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.body);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_accepted_while_directory_is_down_land_after_restart() {
    let mut h = Harness::start().await;
    h.slapd.stop().unwrap();

    // The directory is down: the write is still acknowledged from the
    // journal, and reads are served from the store.
    let r = h.send("POST", "/Users", Some(alice())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = h
        .send("GET", "/Users?filter=userName%20eq%20%22alice%22", None)
        .await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(h.daemon().store.pending_count(), 1, "queued, not applied");

    // Restart the daemon while the directory is still down: nothing lost.
    h.stop_daemon().await;
    h.start_daemon().await;
    let r = h.send("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(
        (r.status, r.body["userName"].as_str()),
        (200, Some("alice"))
    );

    // The directory comes back: the queued create is delivered.
    h.slapd.restart().unwrap();
    h.daemon().writer.wake();
    h.settle().await;
    let e = h
        .ldap_get("uid=alice,ou=people,dc=example,dc=com")
        .await
        .expect("queued create delivered");
    assert_eq!(first(&e, "sn").as_deref(), Some("Liddell"));
    assert_eq!(h.daemon().store.pending_count(), 0);
}
