//! Several clients writing to one resource at once: no acknowledged change
//! is lost, in the store or in the directory, and of two creates racing
//! for one name exactly one wins.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::harness::{first, Harness};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const TASKS: usize = 4;
const ROUNDS: usize = 10;

fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

async fn create_user(h: &Harness, name: &str) -> String {
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": name, "name": {"givenName": "G", "familyName": "F"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// Each task PATCHes its own attribute of one user, ten times, all at
/// once: every task's last value must be there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_to_one_user_lose_nothing() {
    let h = Arc::new(Harness::start().await);
    let id = create_user(&h, "shared").await;
    let paths = [
        "title".to_string(),
        "name.givenName".to_string(),
        format!("{ENTERPRISE}:department"),
        format!("{ENTERPRISE}:employeeNumber"),
    ];
    let mut tasks = Vec::new();
    for (t, path) in paths.iter().enumerate() {
        let (h, id, path) = (h.clone(), id.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..ROUNDS {
                let r = h
                    .send(
                        "PATCH",
                        &format!("/Users/{id}"),
                        Some(patch(
                            json!([{"op": "replace", "path": path, "value": format!("v{t}-{i}")}]),
                        )),
                    )
                    .await;
                assert_eq!(r.status, 200, "{path} round {i}: {}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.settle().await;
    let r = h.send("GET", &format!("/Users/{id}"), None).await;
    let last = |t: usize| format!("v{t}-{}", ROUNDS - 1);
    assert_eq!(r.body["title"], json!(last(0)), "{}", r.body);
    assert_eq!(r.body["name"]["givenName"], json!(last(1)), "{}", r.body);
    assert_eq!(
        r.body[ENTERPRISE]["department"],
        json!(last(2)),
        "{}",
        r.body
    );
    assert_eq!(
        r.body[ENTERPRISE]["employeeNumber"],
        json!(last(3)),
        "{}",
        r.body
    );
    let e = h
        .ldap_get(&format!("uid=shared,{}", h.slapd.people_dn()))
        .await
        .unwrap();
    assert_eq!(first(&e, "title"), Some(last(0)));
    assert_eq!(first(&e, "givenName"), Some(last(1)));
    assert_eq!(first(&e, "departmentNumber"), Some(last(2)));
    assert_eq!(first(&e, "employeeNumber"), Some(last(3)));
    assert_eq!(h.daemon().store.pending_count(), 0, "nothing parked");
}

/// Member adds (Entra's one-member PATCHes) and removes from several
/// clients to one group at once, and a rename of the group meanwhile:
/// the members are exactly the ones added and not removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_member_changes_to_one_group_lose_nothing() {
    let h = Arc::new(Harness::start().await);
    let mut users = Vec::new();
    for i in 0..TASKS * ROUNDS {
        users.push(create_user(&h, &format!("m{i}")).await);
    }
    let r = h
        .send("POST", "/Groups", Some(json!({"displayName": "crowd"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (h, gid) = (h.clone(), gid.clone());
        let mine: Vec<String> = users[t * ROUNDS..(t + 1) * ROUNDS].to_vec();
        tasks.push(tokio::spawn(async move {
            for (i, u) in mine.iter().enumerate() {
                let r = h
                    .send(
                        "PATCH",
                        &format!("/Groups/{gid}"),
                        Some(patch(json!([{"op": "add", "path": "members", "value": [{"value": u}]}]))),
                    )
                    .await;
                assert_eq!(r.status, 204, "{}", r.body);
                if i % 2 == 1 {
                    let r = h
                        .send(
                            "PATCH",
                            &format!("/Groups/{gid}"),
                            Some(patch(json!([{"op": "remove", "path": format!("members[value eq \"{u}\"]")}]))),
                        )
                        .await;
                    assert_eq!(r.status, 204, "{}", r.body);
                }
            }
            if t == 0 {
                let r = h
                    .send(
                        "PATCH",
                        &format!("/Groups/{gid}"),
                        Some(patch(json!([{"op": "replace", "path": "displayName", "value": "crowd2"}]))),
                    )
                    .await;
                assert_eq!(r.status, 204, "{}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.settle().await;
    let want: BTreeSet<String> = users.iter().step_by(2).cloned().collect();
    let r = h.send("GET", &format!("/Groups/{gid}"), None).await;
    let have: BTreeSet<String> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(have, want, "the store");
    assert_eq!(r.body["displayName"], "crowd2");
    h.assert_directory_matches_store().await;
    assert_eq!(h.daemon().store.pending_count(), 0, "nothing parked");
}

/// Creates racing for one userName, and for one group displayName:
/// exactly one 201, every other answer a 409 uniqueness, one entry in the
/// directory, linked to the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_racing_for_one_name_have_one_winner() {
    let h = Arc::new(Harness::start().await);
    for (path, body) in [
        (
            "/Users",
            json!({"userName": "dup", "name": {"givenName": "G", "familyName": "F"}}),
        ),
        ("/Groups", json!({"displayName": "dupgroup"})),
    ] {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (h, body) = (h.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                h.send("POST", path, Some(body)).await
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let r = t.await.unwrap();
            match r.status {
                201 => winners.push(r.body["id"].as_str().unwrap().to_string()),
                409 => assert_eq!(r.body["scimType"], "uniqueness", "{}", r.body),
                s => panic!("{path}: {s} {}", r.body),
            }
        }
        assert_eq!(winners.len(), 1, "{path}: {winners:?}");
        let r = h.send("GET", path, None).await;
        assert_eq!(r.body["totalResults"], 1, "{path}: {}", r.body);
        assert_eq!(r.body["Resources"][0]["id"], json!(winners[0]));
    }
    h.settle().await;
    assert_eq!(h.ldap_search("(uid=dup)", &["uid"]).await.len(), 1);
    assert_eq!(h.ldap_search("(cn=dupgroup)", &["cn"]).await.len(), 1);
    h.assert_directory_matches_store().await;
}
