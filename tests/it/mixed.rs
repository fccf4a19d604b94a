//! Changes to users who are group members, as an identity provider's
//! update cycle sends them: a deleted member leaves each of its groups as
//! a delta (one modify per group, no read) and its entry goes without a
//! read, each write asserting the entry's entryUUID; a group replaced by
//! hand is read before it is written; after a restart, which forgets the
//! deleted members' values, the groups still end right.

use std::collections::HashSet;

use serde_json::{json, Value};

use scim2ldap::model::{MappingPlanner, Model, SharedModel};
use scim2ldap::store::{Kind, Op, Store};
use scim2ldap::writer::{Directory, MemberPlan, Plan, Planner};

use crate::harness::{first, Harness};
use crate::wire::{behind_tap, LdapTap};

const PEOPLE: &str = "ou=people,dc=example,dc=com";
const GROUPS: &str = "ou=groups,dc=example,dc=com";
const PLACEHOLDER: &str = "cn=empty-group-placeholder,dc=example,dc=com";
/// A member value put in a group by hand: the daemon does not manage it.
const BY_HAND: &str = "cn=by hand,dc=example,dc=com";

fn dn(uid: &str) -> String {
    format!("uid={uid},{PEOPLE}")
}

fn group_dn(cn: &str) -> String {
    format!("cn={cn},{GROUPS}")
}

async fn user(h: &Harness, name: &str) -> String {
    let body = json!({"userName": name, "name": {"givenName": name, "familyName": "Test"}});
    let r = h.send("POST", "/Users", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn group(h: &Harness, cn: &str, members: &[&str]) -> String {
    let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
    let body = json!({"displayName": cn, "members": members});
    let r = h.send("POST", "/Groups", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn patch(h: &Harness, path: &str, ops: Value) {
    let r = h
        .send("PATCH", path, Some(json!({ "Operations": ops })))
        .await;
    assert!([200, 204].contains(&r.status), "{} {}", r.status, r.body);
}

/// The member values of a group entry, lower-cased and sorted.
async fn members(h: &Harness, cn: &str) -> Vec<String> {
    h.member_values(&group_dn(cn)).await
}

fn sorted(values: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = values.iter().map(|s| s.to_lowercase()).collect();
    v.sort();
    v
}

/// Restarts the daemon with one directory connection (one lane: what it
/// sends is in journal order, and the root DSE is read once) behind a
/// tap that counts what reaches slapd.
async fn one_lane_behind_tap(h: &mut Harness) -> LdapTap {
    let path = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("timeout_secs = 5"), "{text}");
    std::fs::write(
        &path,
        text.replacen("timeout_secs = 5", "timeout_secs = 5\nconnections = 1", 1),
    )
    .unwrap();
    behind_tap(h).await
}

/// A PATCH of `id`'s title, applied: the lane has read the root DSE
/// (whether the assertion control is there) before counting starts.
async fn warm_up(h: &Harness, id: &str) {
    patch(
        h,
        &format!("/Users/{id}"),
        json!([{"op": "replace", "path": "title", "value": "warm"}]),
    )
    .await;
    h.settle().await;
}

mod a_deleted_member_leaves_its_groups_by_one_modify_each_reading_only_one_changed_by_hand {
    use scim2ldap_slapd::SlapdOptions;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain() {
        super::deleted_member(SlapdOptions::default()).await
    }

    /// memberof and refint, as the benchmark's slapd runs them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_overlays() {
        super::deleted_member(SlapdOptions::with_overlays()).await
    }
}

async fn deleted_member(dir: scim2ldap_slapd::SlapdOptions) {
    let mut h = Harness::start_with(dir, crate::harness::MAPPING).await;
    let gone = user(&h, "gone").await;
    let stays = user(&h, "stays").await;
    group(&h, "both", &[&gone, &stays]).await;
    group(&h, "alone", &[&gone]).await;
    group(&h, "handled", &[&gone, &stays]).await;
    h.settle().await;
    // A value the identity provider never sent, added by hand.
    h.ldap_modify(
        &group_dn("both"),
        vec![ldap3::Mod::Add(
            "member".into(),
            HashSet::from([BY_HAND.to_string()]),
        )],
    )
    .await;
    // The deleted member's value removed already, by hand (or by a
    // directory's referential integrity, when the deletion reaches it
    // first): slapd answers the removal noSuchAttribute.
    h.ldap_modify(
        &group_dn("handled"),
        vec![ldap3::Mod::Delete(
            "member".into(),
            HashSet::from([dn("gone")]),
        )],
    )
    .await;
    let tap = one_lane_behind_tap(&mut h).await;
    warm_up(&h, &stays).await;

    let (searches, modifies) = (tap.searches(), tap.modifies());
    let r = h.send("DELETE", &format!("/Users/{gone}"), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;

    assert!(
        h.ldap_get(&dn("gone")).await.is_none(),
        "the user is deleted"
    );
    assert_eq!(
        members(&h, "both").await,
        sorted(&[&dn("stays"), BY_HAND]),
        "exactly the deleted member's value is gone"
    );
    assert_eq!(
        members(&h, "alone").await,
        sorted(&[PLACEHOLDER]),
        "an emptied group holds the placeholder"
    );
    assert_eq!(members(&h, "handled").await, sorted(&[&dn("stays")]));
    // One modify per group and the delete, with no read of the user's
    // entry nor of the groups as the daemon left them. The group whose
    // value was removed by hand answers the delta noSuchAttribute: it is
    // found and read (two searches) and converged (one more modify),
    // never taken as done, since the value the delta names may not be
    // the one the group holds (a member renamed meanwhile).
    assert_eq!(tap.searches() - searches, 2, "searches");
    assert_eq!(tap.modifies() - modifies, 4, "modifies");
    assert_eq!(h.daemon().store.pending_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_replaced_by_hand_is_read_before_a_member_change() {
    let mut h = Harness::start().await;
    let a = user(&h, "a").await;
    let b = user(&h, "b").await;
    let gid = group(&h, "team", &[&a, &b]).await;
    h.settle().await;
    let old = first(&h.ldap_get(&group_dn("team")).await.unwrap(), "entryUUID").unwrap();
    // An administrator deletes the group and puts another one at its DN,
    // with the member a and a value of their own.
    {
        let mut ldap = crate::harness::admin_conn(&h.slapd).await;
        ldap.delete(&group_dn("team"))
            .await
            .unwrap()
            .success()
            .unwrap();
        let _ = ldap.unbind().await;
    }
    h.ldap_add(
        &group_dn("team"),
        &[
            ("objectClass", &["top", "groupOfNames"]),
            ("cn", &["team"]),
            ("member", &[&dn("a"), BY_HAND]),
        ],
    )
    .await;
    let new = first(&h.ldap_get(&group_dn("team")).await.unwrap(), "entryUUID").unwrap();
    assert_ne!(old, new);
    let tap = one_lane_behind_tap(&mut h).await;
    warm_up(&h, &b).await;

    let searches = tap.searches();
    patch(
        &h,
        &format!("/Groups/{gid}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{a}\"]")}]),
    )
    .await;
    h.settle().await;
    // The delta asserted the linked entryUUID: the directory refused it on
    // the other entry, and the writer read the group instead of trusting
    // its link (a blind delta sends no search at all).
    assert!(
        tap.searches() - searches >= 1,
        "the replaced group was not read"
    );
    // What the reading path does with an entry at the group's DN whose
    // entryUUID is not the linked one and when the linked one is nowhere:
    // it converges that entry as the group's (as for any linked entry
    // found at its DN), removing the member a and keeping the value set
    // by hand (a delta; b was never in that entry and is not added by a
    // removal).
    let e = h.ldap_get(&group_dn("team")).await.unwrap();
    assert_eq!(first(&e, "entryUUID").as_deref(), Some(new.as_str()));
    assert_eq!(members(&h, "team").await, sorted(&[BY_HAND]));
    assert_eq!(h.daemon().store.pending_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_members_removal_stays_a_delta_and_ends_right_after_a_restart() {
    let mut h = Harness::start().await;
    let gone = user(&h, "gone").await;
    let stays = user(&h, "stays").await;
    let gid = group(&h, "team", &[&gone, &stays]).await;
    h.settle().await;
    // The directory down: the deletion is journaled (the group's member
    // removal first, then the user's deletion) and not applied.
    h.slapd.stop().unwrap();
    let r = h.send("DELETE", &format!("/Users/{gone}"), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.stop_daemon().await;
    h.slapd.restart().expect("slapd restarts");

    // The writer's planner and client by hand: the deletion is routed
    // and applied before the group's removal is planned, as another lane
    // may do.
    let cfg = h.config();
    let store = Store::open(&cfg.store.path).unwrap();
    let model = || SharedModel::new(Model::load(&cfg.mapping_file).unwrap());
    let planner = MappingPlanner {
        model: model(),
        store: store.clone(),
        departed: Default::default(),
    };
    let pending: Vec<_> = store
        .entries_from(store.pending_after(0, 10).unwrap()[0])
        .map(Result::unwrap)
        .collect();
    let removal = pending
        .iter()
        .find(|e| e.kind == Kind::Group && e.id == gid)
        .expect("the group's member removal")
        .clone();
    let delete = pending
        .iter()
        .find(|e| e.kind == Kind::User && e.op == Op::Delete)
        .expect("the user's deletion")
        .clone();
    assert!(removal.seq < delete.seq);
    planner.route(&delete).unwrap();
    assert_eq!(planner.departed.len(), 1);
    let mut dir = Directory::new(cfg.ldap.clone());
    let plan = planner.plan(&delete).unwrap();
    let link = store.link(Kind::User, &gone).unwrap();
    assert!(link.is_some());
    let full = || planner.full_members(&delete);
    let new_link = dir.apply(&plan, link.as_ref(), &full).await.unwrap();
    store.mark_applied(&delete, new_link.as_ref()).unwrap();
    assert!(store.link(Kind::User, &gone).unwrap().is_none());
    assert!(h.ldap_get(&dn("gone")).await.is_none());

    // Remembered: the removal is a delta naming the deleted entry's DN.
    let remove_gone = |plan: Plan| match plan {
        Plan::Group(g) => g.members[0].values.clone(),
        other => panic!("{other:?}"),
    };
    match remove_gone(planner.plan(&removal).unwrap()) {
        MemberPlan::Delta { add, remove, .. } => {
            assert!(add.is_empty());
            assert_eq!(
                sorted(&remove.iter().map(String::as_str).collect::<Vec<_>>()),
                sorted(&[&dn("gone")])
            );
        }
        other => panic!("{other:?}"),
    }
    // Forgotten (a restart): the group converges to its whole list.
    let restarted = MappingPlanner {
        model: model(),
        store: store.clone(),
        departed: Default::default(),
    };
    match remove_gone(restarted.plan(&removal).unwrap()) {
        MemberPlan::Full(values) => assert_eq!(
            sorted(&values.iter().map(String::as_str).collect::<Vec<_>>()),
            sorted(&[&dn("stays")])
        ),
        other => panic!("{other:?}"),
    }
    drop((planner, restarted, store));

    // The daemon, started again, knows nothing of the deletion's values
    // and applies the removal by converging the group.
    h.start_daemon().await;
    h.settle().await;
    assert_eq!(members(&h, "team").await, sorted(&[&dn("stays")]));
    assert_eq!(h.daemon().store.pending_count(), 0);
    h.assert_directory_matches_store().await;
}
