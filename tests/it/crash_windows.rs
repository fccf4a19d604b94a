//! The two windows a crash can hit between the directory and the store,
//! made deterministic: the LDAP change is made (by hand, or by the
//! writer's own client with nothing recorded) while the journal entry
//! stays pending, then the daemon starts and must converge without
//! duplicates, losses or parked entries.
//!
//! 1. After the LDAP write, before `mark_applied`: every kind of change
//!    (modify, rename, deactivation, member delta, group create, delete)
//!    is applied once more.
//! 2. After an add, before the link is recorded: the entry exists at the
//!    planned DN, the resource has no link, its create is pending: the add
//!    meets entryAlreadyExists (68) and must take the entry over, once.

use serde_json::{json, Value};

use scim2ldap::model::{MappingPlanner, Model, SharedModel};
use scim2ldap::store::{EntryState, Kind, Store};
use scim2ldap::writer::{Directory, Planner};

use crate::harness::{first, Harness};

fn user(name: &str) -> Value {
    json!({"userName": name, "name": {"givenName": "G", "familyName": format!("F {name}")},
           "title": "t0", "active": true})
}

fn patch(path: &str, value: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
           "Operations": [{"op": "replace", "path": path, "value": value}]})
}

fn members(op: &str, ids: &[&str]) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
           "Operations": [{"op": op, "path": "members",
                           "value": ids.iter().map(|i| json!({"value": i})).collect::<Vec<_>>()}]})
}

async fn create(h: &Harness, path: &str, body: Value) -> String {
    let r = h.send("POST", path, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn ok(h: &Harness, method: &str, path: &str, body: Option<Value>) {
    let r = h.send(method, path, body).await;
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        r.body
    );
}

/// Stops the directory, so that what is sent next stays pending.
fn directory_down(h: &mut Harness) {
    h.slapd.stop().unwrap();
}

/// Stops the daemon and brings the directory back: the pending entries
/// are in the store, and nothing applies them.
async fn daemon_down_directory_up(h: &mut Harness) {
    h.stop_daemon().await;
    h.slapd.restart().expect("slapd restarts");
}

/// Applies every pending entry to the directory with the writer's own
/// client and planner, in journal order, recording nothing: the state a
/// SIGKILL right after each LDAP write leaves. Returns how many.
async fn apply_without_recording(h: &Harness) -> usize {
    let cfg = h.config();
    let store = Store::open(&cfg.store.path).unwrap();
    let planner = MappingPlanner {
        model: SharedModel::new(Model::load(&cfg.mapping_file).unwrap()),
        store: store.clone(),
        departed: Default::default(),
    };
    let mut dir = Directory::new(cfg.ldap.clone());
    let pending = store.pending_after(0, 10_000).unwrap();
    assert!(!pending.is_empty());
    let first_seq = pending[0];
    let entries: Vec<_> = store
        .entries_from(first_seq)
        .map(Result::unwrap)
        .filter(|e| pending.contains(&e.seq))
        .collect();
    for e in &entries {
        let plan = planner.plan(e).unwrap();
        let link = store.link(e.kind, &e.id).unwrap();
        let full = || planner.full_members(e);
        dir.apply(&plan, link.as_ref(), &full)
            .await
            .unwrap_or_else(|err| panic!("entry {} by hand: {err:?}", e.seq));
    }
    for e in &entries {
        assert_eq!(store.state(e.seq).unwrap(), EntryState::Pending);
    }
    let n = entries.len();
    drop(planner);
    drop(store);
    n
}

/// Starts the daemon, lets it drain, and checks the directory against
/// the store: nothing pending, nothing parked, everything in place.
async fn converges(h: &mut Harness) {
    h.start_daemon().await;
    h.settle().await;
    let d = h.daemon();
    assert_eq!(d.store.pending_count(), 0, "parked: {:?}", d.store.parked());
    h.assert_directory_matches_store().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_ldap_write_before_it_is_recorded() {
    let mut h = Harness::start().await;
    let alice = create(&h, "/Users", user("alice")).await;
    let bob = create(&h, "/Users", user("bob")).await;
    let gone = create(&h, "/Users", user("gone")).await;
    let team = create(
        &h,
        "/Groups",
        json!({"displayName": "team", "members": [{"value": alice}, {"value": gone}]}),
    )
    .await;
    h.settle().await;

    directory_down(&mut h);
    ok(
        &h,
        "PATCH",
        &format!("/Users/{alice}"),
        Some(patch("title", json!("t1"))),
    )
    .await;
    ok(
        &h,
        "PATCH",
        &format!("/Users/{alice}"),
        Some(patch("active", json!(false))),
    )
    .await;
    ok(
        &h,
        "PATCH",
        &format!("/Users/{bob}"),
        Some(patch("userName", json!("robert"))),
    )
    .await;
    ok(
        &h,
        "PATCH",
        &format!("/Groups/{team}"),
        Some(members("add", &[&bob])),
    )
    .await;
    ok(&h, "DELETE", &format!("/Users/{gone}"), None).await;
    let carol = create(&h, "/Users", user("carol")).await;
    let ops = create(
        &h,
        "/Groups",
        json!({"displayName": "ops", "members": [{"value": carol}, {"value": bob}]}),
    )
    .await;
    ok(
        &h,
        "PATCH",
        &format!("/Groups/{ops}"),
        Some(members("remove", &[&carol])),
    )
    .await;
    daemon_down_directory_up(&mut h).await;

    let n = apply_without_recording(&h).await;
    assert!(n >= 8, "{n} entries applied by hand");
    // The directory already has every change; the store knows none.
    let people = h.slapd.people_dn();
    assert!(h.ldap_get(&format!("uid=robert,{people}")).await.is_some());
    assert!(h.ldap_get(&format!("uid=gone,{people}")).await.is_none());

    converges(&mut h).await;
    let a = h.ldap_get(&format!("uid=alice,{people}")).await.unwrap();
    assert_eq!(first(&a, "title").as_deref(), Some("t1"));
    assert!(first(&a, "pwdAccountLockedTime").is_some(), "{a:?}");
    assert!(h.ldap_get(&format!("uid=bob,{people}")).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_an_add_before_the_link_is_recorded() {
    let mut h = Harness::start().await;
    directory_down(&mut h);
    let dave = create(&h, "/Users", user("dave")).await;
    let ops = create(
        &h,
        "/Groups",
        json!({"displayName": "ops", "members": [{"value": dave}]}),
    )
    .await;
    daemon_down_directory_up(&mut h).await;

    // The adds landed, as the writer would have made them; the store has
    // neither link, and both creates are pending.
    let people = h.slapd.people_dn();
    let dave_dn = format!("uid=dave,{people}");
    h.ldap_add(
        &dave_dn,
        &[
            ("objectClass", &["inetOrgPerson"]),
            ("uid", &["dave"]),
            ("cn", &["G F dave"]),
            ("sn", &["F dave"]),
            ("givenName", &["G"]),
            ("title", &["t0"]),
        ],
    )
    .await;
    let ops_dn = format!("cn=ops,{}", h.slapd.groups_dn());
    h.ldap_add(
        &ops_dn,
        &[
            ("objectClass", &["groupOfNames"]),
            ("cn", &["ops"]),
            ("member", &[&dave_dn]),
        ],
    )
    .await;
    {
        let store = Store::open(&h.config().store.path).unwrap();
        assert!(store.link(Kind::User, &dave).unwrap().is_none());
        assert!(store.link(Kind::Group, &ops).unwrap().is_none());
        assert_eq!(store.pending_count(), 2);
    }

    converges(&mut h).await;
    // Taken over once: linked to the entry that is there, not a second one.
    let d = h.daemon();
    let uuid = first(&h.ldap_get(&dave_dn).await.unwrap(), "entryUUID").unwrap();
    let link = d
        .store
        .link(Kind::User, &dave)
        .unwrap()
        .expect("dave linked");
    assert_eq!(link.uuid.as_deref(), Some(uuid.as_str()), "{link:?}");
    assert_eq!(link.dn.to_lowercase(), dave_dn);
    assert!(d.store.link(Kind::Group, &ops).unwrap().is_some());
    assert_eq!(h.ldap_search("(uid=dave)", &["uid"]).await.len(), 1);
}

/// After a rename's modrdn, before its references were rewritten (and
/// before the link was recorded): on restart the entry is already at its
/// new DN, and the groups that named its old DN still follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_rename_before_its_references_are_rewritten() {
    let mut h = Harness::start().await;
    let people = h.slapd.people_dn();
    let groups = h.slapd.groups_dn();
    let u = create(&h, "/Users", user("before")).await;
    let g = create(
        &h,
        "/Groups",
        json!({"displayName": "crew", "members": [{"value": u}]}),
    )
    .await;
    let _ = g;
    h.settle().await;
    directory_down(&mut h);
    ok(
        &h,
        "PATCH",
        &format!("/Users/{u}"),
        Some(patch("userName", json!("after"))),
    )
    .await;
    daemon_down_directory_up(&mut h).await;
    // The modrdn alone, as a crash right after it leaves it.
    h.ldap_rename(&format!("uid=before,{people}"), "uid=after")
        .await;
    let crew = format!("cn=crew,{groups}");
    let e = h.ldap_get(&crew).await.unwrap();
    assert_eq!(e["member"], vec![format!("uid=before,{people}")]);
    converges(&mut h).await;
    let e = h.ldap_get(&crew).await.unwrap();
    assert_eq!(e["member"], vec![format!("uid=after,{people}")], "{e:?}");
}
