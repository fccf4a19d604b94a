//! Updates of linked entries without a read: the writer trusts the
//! fingerprint of what it last applied, sends only the changed attributes,
//! and reads the entry when the directory says it is not as recorded (an
//! administrator moved it, another entry stands at its DN) or after a
//! `journal replay`. The LDAP operations the daemon sends are counted by a
//! proxy between it and slapd, on the wire.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use crate::harness::{cli, first, Harness};
use crate::wire::behind_tap;

async fn patch(h: &Harness, id: &str, ops: Value) {
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({ "Operations": ops })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn create(h: &Harness, body: Value) -> String {
    let r = h.send("POST", "/Users", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// The entry's attributes, operational ones left out, values sorted.
async fn entry(h: &Harness, dn: &str) -> BTreeMap<String, Vec<String>> {
    let e = h
        .ldap_get(dn)
        .await
        .unwrap_or_else(|| panic!("{dn} missing"));
    let skip: HashSet<&str> = [
        "entryuuid",
        "entrycsn",
        "entrydn",
        "structuralobjectclass",
        "createtimestamp",
        "creatorsname",
        "modifytimestamp",
        "modifiersname",
        "hassubordinates",
        "subschemasubentry",
    ]
    .into_iter()
    .collect();
    e.into_iter()
        .filter(|(k, _)| !skip.contains(k.to_lowercase().as_str()))
        .map(|(k, mut v)| {
            v.sort();
            (k, v)
        })
        .collect()
}

fn expected(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            v.sort();
            (k.to_string(), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_converge_the_entry_exactly_without_reading_it() {
    let mut h = Harness::start().await;
    let counts = behind_tap(&mut h).await;
    let people = h.slapd.people_dn();
    let dn = format!("uid=pat,{people}");
    let id = create(
        &h,
        json!({
            "userName": "pat",
            "name": {"givenName": "Pat", "familyName": "Doe"},
            "title": "Clerk",
            "emails": [{"type": "work", "value": "pat@example.com"}],
            "phoneNumbers": [{"type": "work", "value": "+1 555 0100"}],
        }),
    )
    .await;
    h.settle().await;
    // A value the mapping does not name, set by hand: never touched.
    h.ldap_modify(
        &dn,
        vec![ldap3::Mod::Replace(
            "description".into(),
            HashSet::from(["set by hand".into()]),
        )],
    )
    .await;

    let (searches, modifies) = (counts.searches(), counts.modifies());
    const N: usize = 24;
    for i in 0..N {
        patch(
            &h,
            &id,
            json!([{"op": "replace", "path": "title", "value": format!("Title {i}")}]),
        )
        .await;
    }
    h.settle().await;
    // Removing attributes, changing a required one and a multi-source one.
    patch(
        &h,
        &id,
        json!([
            {"op": "remove", "path": "phoneNumbers"},
            {"op": "replace", "path": "displayName", "value": "Pat D."},
            {"op": "replace", "path": "name.familyName", "value": "Dee"},
            {"op": "add", "path": "phoneNumbers", "value": [{"type": "mobile", "value": "+1 555 0199"}]},
        ]),
    )
    .await;
    patch(&h, &id, json!([{"op": "remove", "path": "title"}])).await;
    h.settle().await;
    let searched = counts.searches() - searches;
    let modified = counts.modifies() - modifies;
    // At most one modify per PATCH (fewer when a later PATCH's state was
    // already applied by an earlier entry, which converges to the current
    // snapshot); the only searches are each lane's one read of the root
    // DSE (whether the assertion control is there). The read before each
    // applied entry (N + 2 of them) is gone.
    assert!(
        (1..=N + 2).contains(&modified),
        "{modified} modifies for {} PATCHes",
        N + 2
    );
    let lanes = 4;
    assert!(
        searched <= lanes,
        "{searched} searches for {} PATCHes",
        N + 2
    );
    eprintln!(
        "{} PATCHes: {searched} searches, {modified} modifies",
        N + 2
    );

    assert_eq!(
        entry(&h, &dn).await,
        expected(&[
            (
                "objectClass",
                &["top", "person", "organizationalPerson", "inetOrgPerson"]
            ),
            ("uid", &["pat"]),
            ("cn", &["Pat D."]),
            ("sn", &["Dee"]),
            ("givenName", &["Pat"]),
            ("displayName", &["Pat D."]),
            ("mail", &["pat@example.com"]),
            ("mobile", &["+1 555 0199"]),
            ("description", &["set by hand"]),
        ])
    );
    h.assert_directory_matches_store().await;

    // A PATCH that changes a required attribute's sources to nothing
    // leaves it, as the reading path does.
    patch(&h, &id, json!([{"op": "remove", "path": "displayName"}])).await;
    h.settle().await;
    let e = entry(&h, &dn).await;
    assert_eq!(e["cn"], vec!["Pat Dee".to_string()], "cn falls back");
    assert!(!e.contains_key("displayName"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_moved_by_hand_is_found_and_updated() {
    let h = Harness::start().await;
    let people = h.slapd.people_dn();
    let dn = format!("uid=mover,{people}");
    let id = create(
        &h,
        json!({"userName": "mover", "name": {"familyName": "M"}, "title": "A"}),
    )
    .await;
    h.settle().await;
    let uuid = first(&h.ldap_get(&dn).await.unwrap(), "entryUUID").unwrap();
    // The administrator renames it: the modify at the linked DN meets
    // noSuchObject, and the writer finds the entry by its entryUUID.
    h.ldap_rename(&dn, "uid=moved").await;
    patch(
        &h,
        &id,
        json!([{"op": "replace", "path": "title", "value": "B"}]),
    )
    .await;
    h.settle().await;
    let found = h
        .ldap_search(&format!("(entryUUID={uuid})"), &["title", "uid"])
        .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].attrs["title"], vec!["B".to_string()]);
    // Converged to the mapping's DN, as the reading path always did.
    assert!(
        crate::harness::first(&h.ldap_get(&dn).await.unwrap(), "entryUUID").as_deref()
            == Some(uuid.as_str())
    );
    h.assert_directory_matches_store().await;

    // Moved away again, and somebody else's entry put at its DN: the
    // assertion on the entryUUID keeps the modify off that entry.
    h.ldap_rename(&dn, "uid=moved2").await;
    h.ldap_add(
        &dn,
        &[
            ("objectClass", &["inetOrgPerson"]),
            ("cn", &["Someone else"]),
            ("sn", &["Else"]),
            ("uid", &["mover"]),
        ],
    )
    .await;
    patch(
        &h,
        &id,
        json!([{"op": "replace", "path": "title", "value": "C"}]),
    )
    .await;
    h.settle().await;
    let other = h.ldap_get(&dn).await.unwrap();
    assert_eq!(first(&other, "title"), None, "the stranger is untouched");
    assert_eq!(first(&other, "cn").as_deref(), Some("Someone else"));
    assert_ne!(first(&other, "entryUUID").as_deref(), Some(uuid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reads_and_converges_values_changed_by_hand() {
    let h = Harness::start().await;
    let people = h.slapd.people_dn();
    let dn = format!("uid=rep,{people}");
    let id = create(
        &h,
        json!({
            "userName": "rep",
            "name": {"familyName": "R"},
            "emails": [{"type": "work", "value": "rep@example.com"}],
        }),
    )
    .await;
    patch(
        &h,
        &id,
        json!([{"op": "replace", "path": "title", "value": "Kept"}]),
    )
    .await;
    h.settle().await;
    // An administrator restores an older backup, or edits by hand.
    h.ldap_modify(
        &dn,
        vec![
            ldap3::Mod::Replace("title".into(), HashSet::from(["By hand".into()])),
            ldap3::Mod::Replace("mail".into(), HashSet::from(["old@example.com".into()])),
        ],
    )
    .await;
    let config = h.config_path();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        cli(&["journal", "--config", &config, "replay", "--from", "1"])
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    h.drained().await;
    let e = h.ldap_get(&dn).await.unwrap();
    assert_eq!(first(&e, "title").as_deref(), Some("Kept"));
    assert_eq!(first(&e, "mail").as_deref(), Some("rep@example.com"));
    h.assert_directory_matches_store().await;
    // And the next PATCH goes without a read again, converging as before.
    patch(
        &h,
        &id,
        json!([{"op": "replace", "path": "title", "value": "New"}]),
    )
    .await;
    h.settle().await;
    let e = h.ldap_get(&dn).await.unwrap();
    assert_eq!(first(&e, "title").as_deref(), Some("New"));
    assert_eq!(first(&e, "mail").as_deref(), Some("rep@example.com"));
}
