//! Consecutive member-only changes of one group leave as one LDAP modify:
//! a burst of single-member PATCHes queued while the directory is down
//! reaches it in a few modifies (counted on the wire, between the daemon
//! and slapd), and a member the directory refuses parks alone.

use std::time::Duration;

use serde_json::json;

use scim2ldap::store::EntryState;
use scim2ldap_slapd::SlapdOptions;

use crate::harness::{cli, Harness};
use crate::wire::behind_tap;

async fn user(h: &Harness, name: &str) -> String {
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": name, "name": {"givenName": name, "familyName": "Test"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn add_member(h: &Harness, gid: &str, member: &str) {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": member}]}],
    });
    let r = h.send("PATCH", &format!("/Groups/{gid}"), Some(body)).await;
    assert_eq!(r.status, 204, "{}", r.body);
}

/// Waits until `done` holds, for at most `limit`.
async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The values of a group entry's attribute, lower-cased and sorted.
async fn values(h: &Harness, cn: &str, attr: &str) -> Vec<String> {
    let e = h
        .ldap_get(&format!("cn={cn},{}", h.slapd.groups_dn()))
        .await
        .unwrap_or_else(|| panic!("group {cn} exists"));
    let mut v: Vec<String> = e
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.iter().map(|s| s.to_lowercase()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_member_adds_queued_while_the_directory_is_down_leaves_in_a_few_modifies() {
    let mut h = Harness::start().await;
    let relay = behind_tap(&mut h).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(user(&h, &format!("b{i:03}")).await);
    }
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "burst", "members": []})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;

    // The directory goes away; 200 single-member PATCHes are acknowledged
    // and queued.
    h.slapd.stop().expect("slapd stops");
    for id in &ids {
        add_member(&h, &gid, id).await;
    }
    assert!(h.daemon().store.pending_count() >= 200);

    let before = relay.modifies();
    h.slapd.restart().expect("slapd restarts");
    let store = h.daemon().store.clone();
    wait_until(Duration::from_secs(40), "the queue drains", || {
        store.pending_count() == 0
    })
    .await;
    let sent = relay.modifies() - before;

    let people = h.slapd.people_dn();
    let mut want: Vec<String> = (0..200).map(|i| format!("uid=b{i:03},{people}")).collect();
    want.sort();
    assert_eq!(values(&h, "burst", "member").await, want);
    // One modify per change would be 200; consecutive changes of the group
    // leave together (the first may leave alone, before the rest is
    // dispatched).
    assert!(
        sent <= 10,
        "{sent} modifies reached the directory for 200 member adds"
    );
    h.assert_directory_matches_store().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_the_directory_refuses_parks_alone_while_the_others_of_the_burst_apply() {
    // groupOfNames + posixGroup: each member is a DN in `member` and a uid
    // in `memberUid`, an IA5String. A uid with a non-ASCII letter is a
    // valid `uid` (a Directory String) but slapd refuses it in memberUid
    // (invalidAttributeSyntax): the user applies, adding it to the group
    // is refused.
    let mapping = include_str!("../../examples/openldap-rfc2307bis.toml");
    let opts = SlapdOptions {
        posix_group_auxiliary: true,
        ..SlapdOptions::default()
    };
    let mut h = Harness::start_with(opts, mapping).await;
    let relay = behind_tap(&mut h).await;
    let names: Vec<String> = (0..30)
        .map(|i| {
            if i == 15 {
                "jösé".to_string()
            } else {
                format!("p{i:02}")
            }
        })
        .collect();
    let mut ids = Vec::new();
    for n in &names {
        ids.push(user(&h, n).await);
    }
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "posix", "members": []})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    let people = h.slapd.people_dn();
    assert!(
        h.ldap_get(&format!("uid=jösé,{people}")).await.is_some(),
        "the user itself is in the directory"
    );

    h.slapd.stop().expect("slapd stops");
    let store = h.daemon().store.clone();
    let mut seqs = Vec::new();
    for id in &ids {
        add_member(&h, &gid, id).await;
        seqs.push(store.last_seq());
    }
    let bad = seqs[15];
    h.slapd.restart().expect("slapd restarts");

    // Refused three times (once now, after 1 s, after 4 s), then parked.
    wait_until(Duration::from_secs(30), "the refused member parks", || {
        matches!(store.state(bad), Ok(EntryState::Failed(_)))
    })
    .await;
    let EntryState::Failed(f) = store.state(bad).unwrap() else {
        unreachable!()
    };
    assert_eq!(f.code, Some(21), "{f:?}");
    // The combined modify was sent (and refused): one carrying many values.
    assert!(
        relay.largest_modify() > 1000,
        "largest modify: {} bytes",
        relay.largest_modify()
    );
    // Those before it are in the group; those after it wait behind it, in
    // order, as any later write of a group with a parked entry does.
    let uids = |range: std::ops::Range<usize>| -> Vec<String> {
        let mut v: Vec<String> = names[range].to_vec();
        v.sort();
        v
    };
    let dns = |range: std::ops::Range<usize>| -> Vec<String> {
        let mut v: Vec<String> = names[range]
            .iter()
            .map(|n| format!("uid={n},{people}"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(values(&h, "posix", "memberUid").await, uids(0..15));
    assert_eq!(values(&h, "posix", "member").await, dns(0..15));
    for (i, s) in seqs.iter().enumerate() {
        let state = store.state(*s).unwrap();
        match i {
            0..15 => assert_eq!(state, EntryState::Applied, "change {i}"),
            15 => {}
            _ => assert_eq!(state, EntryState::Pending, "change {i}"),
        }
    }

    // Skipping it lets the rest of the burst through.
    let config = h.config_path();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        cli(&["journal", "--config", &config, "skip", &bad.to_string()])
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    wait_until(Duration::from_secs(30), "the queue drains", || {
        store.pending_count() == 0
    })
    .await;
    let rest: Vec<usize> = (0..30).filter(|i| *i != 15).collect();
    let mut want_uids: Vec<String> = rest.iter().map(|i| names[*i].clone()).collect();
    want_uids.sort();
    let mut want_dns: Vec<String> = rest
        .iter()
        .map(|i| format!("uid={},{people}", names[*i]))
        .collect();
    want_dns.sort();
    assert_eq!(values(&h, "posix", "memberUid").await, want_uids);
    assert_eq!(values(&h, "posix", "member").await, want_dns);
    // Skipped: no longer pending, nor parked.
    assert_eq!(store.state(bad).unwrap(), EntryState::Applied);
    assert!(store.parked().unwrap().is_empty());
}
