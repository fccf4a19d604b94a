//! Existing directory entries: a lookup that misses in the store adopts a
//! matching entry instead of letting the identity provider create a
//! duplicate; `scim2ldap import` adopts a whole subtree.

use std::time::Duration;

use serde_json::json;

use crate::harness::{cli, first, Harness};

const OC: &[&str] = &["top", "person", "organizationalPerson", "inetOrgPerson"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_lookup_then_create_links_an_existing_entry_and_keeps_the_link() {
    let mut h = Harness::start().await;
    let people = h.slapd.people_dn();
    let dn = format!("uid=alice,{people}");
    h.ldap_add(
        &dn,
        &[
            ("objectClass", OC),
            ("uid", &["alice"]),
            ("cn", &["Alice Liddell"]),
            ("sn", &["Liddell"]),
            ("givenName", &["Alice"]),
            ("mail", &["alice@example.com"]),
            ("description", &["set by hand"]),
        ],
    )
    .await;
    let before = h.ldap_get(&dn).await.unwrap();
    let uuid = first(&before, "entryUUID").unwrap();

    // Entra: look the user up first.
    let r = h
        .send("GET", "/Users?filter=userName%20eq%20%22alice%22", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    let u = &r.body["Resources"][0];
    assert_eq!(u["userName"], "alice");
    assert_eq!(u["name"]["familyName"], "Liddell");
    assert_eq!(u["emails"][0]["value"], "alice@example.com");
    let id = u["id"].as_str().unwrap().to_string();
    // Adoption did not write to the directory.
    let after = h.ldap_get(&dn).await.unwrap();
    assert_eq!(first(&after, "entryCSN"), first(&before, "entryCSN"));
    // The link is the entry's entryUUID.
    let link = h
        .daemon()
        .store
        .link(scim2ldap::store::Kind::User, &id)
        .unwrap()
        .expect("linked");
    assert_eq!(link.uuid.as_deref(), Some(uuid.as_str()));

    // The same lookup again finds the same resource; a create is refused.
    let r = h
        .send("GET", "/Users?filter=userName%20eq%20%22ALICE%22", None)
        .await;
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": "alice", "name": {"familyName": "Liddell"}})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);

    // Entra updates the linked user: the existing entry changes, the
    // attributes the mapping does not name stay.
    let patch = |title: &str| {
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "Replace", "path": "title", "value": title}]})
    };
    let r = h
        .send("PATCH", &format!("/Users/{id}"), Some(patch("Queen")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    let e = h.ldap_get(&dn).await.unwrap();
    assert_eq!(first(&e, "title").as_deref(), Some("Queen"));
    assert_eq!(first(&e, "description").as_deref(), Some("set by hand"));

    // An administrator renames the entry; the link follows it.
    h.ldap_rename(&dn, "uid=alice.renamed").await;
    let r = h
        .send("PATCH", &format!("/Users/{id}"), Some(patch("Empress")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    let found = h
        .ldap_search(
            &format!("(entryUUID={uuid})"),
            &["title", "description", "uid"],
        )
        .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].attrs["title"], vec!["Empress"]);
    assert_eq!(found[0].attrs["description"], vec!["set by hand"]);
    let all = h.ldap_search("(objectClass=inetOrgPerson)", &["uid"]).await;
    assert_eq!(all.len(), 1, "no second entry: {all:?}");

    // With the directory down, a miss is answered from the store alone.
    h.slapd.stop().unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        h.send("GET", "/Users?filter=userName%20eq%20%22bob%22", None),
    )
    .await
    .expect("answered without waiting for the directory");
    assert_eq!((r.status, r.body["totalResults"].as_u64()), (200, Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_adopts_a_subtree_once() {
    let h = Harness::start().await;
    let people = h.slapd.people_dn();
    for i in 0..7 {
        let name = format!("imp{i}");
        let sn = format!("Surname {i}");
        h.ldap_add(
            &format!("uid={name},{people}"),
            &[
                ("objectClass", OC),
                ("uid", &[name.as_str()]),
                ("cn", &[name.as_str()]),
                ("sn", &[sn.as_str()]),
            ],
        )
        .await;
    }
    // One of them is adopted by a lookup already.
    let r = h
        .send("GET", "/Users?filter=userName%20eq%20%22imp3%22", None)
        .await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);

    let config = h.config_path();
    let run = |c: String| tokio::task::spawn_blocking(move || cli(&["import", "--config", &c]));
    let (ok, out, err) = run(config.clone()).await.unwrap();
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Users: 7 entries read, 6 adopted, 1 already linked"),
        "{out}"
    );
    let r = h.send("GET", "/Users", None).await;
    assert_eq!(r.body["totalResults"], 7, "{}", r.body);
    let r = h
        .send("GET", "/Users?filter=userName%20eq%20%22imp5%22", None)
        .await;
    assert_eq!(r.body["Resources"][0]["name"]["familyName"], "Surname 5");

    // Again: nothing new.
    let (ok, out, err) = run(config).await.unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 adopted, 7 already linked"), "{out}");
    // Nothing was written to the directory, and nothing is queued.
    assert_eq!(h.daemon().store.pending_count(), 0);
}
