//! The journal: idempotent replay, writes queued while the directory is
//! down, parked entries handled with `scim2ldap journal`.

use std::time::Duration;

use serde_json::{json, Value};

use scim2ldap::store::EntryState;
use scim2ldap_slapd::SlapdOptions;

use crate::harness::{cli, dump, dump_all, first, Harness, MAPPING};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn user(name: &str, title: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Given", "familyName": format!("Family {name}")},
        "emails": [{"type": "work", "value": format!("{name}@example.com")}],
        "title": title,
        "active": true
    })
}

fn replace(path: &str, value: Value) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": path, "value": value}]
    })
}

fn members_op(op: &str, ids: &[&String]) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": op, "path": "members",
                        "value": ids.iter().map(|id| json!({"value": id})).collect::<Vec<_>>()}]
    })
}

async fn group(h: &Harness, name: &str, members: &[&String]) -> String {
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": name,
                        "members": members.iter().map(|id| json!({"value": id})).collect::<Vec<_>>()})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn patch_group(h: &Harness, id: &str, body: Value) {
    let r = h.send("PATCH", &format!("/Groups/{id}"), Some(body)).await;
    assert!(r.status == 204 || r.status == 200, "{}", r.body);
}

/// Runs the command line off the runtime's worker threads.
async fn run_cli(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&refs)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_idempotent_and_rebuilds_an_empty_directory_identically() {
    let mut h = Harness::start().await;
    // A history with creates, updates, renames, deactivations and deletes.
    let mut ids = Vec::new();
    for i in 0..16 {
        let r = h
            .send("POST", "/Users", Some(user(&format!("r{i}"), "first")))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    // Groups over those users, before their renames, deletes and
    // deactivations: member values are rewritten and removed by the
    // user history, and member deltas are the writes that do not converge
    // by themselves.
    let id = |i: usize| &ids[i];
    let g0 = group(&h, "g0", &(0..8).map(id).collect::<Vec<_>>()).await;
    let g1 = group(&h, "g1", &(4..12).map(id).collect::<Vec<_>>()).await;
    patch_group(
        &h,
        &g1,
        members_op("add", &(12..16).map(id).collect::<Vec<_>>()),
    )
    .await;
    patch_group(&h, &g1, members_op("remove", &[id(5)])).await;
    let g2 = group(&h, "g2", &[]).await;
    patch_group(&h, &g2, members_op("add", &[id(1), id(2)])).await;
    let g3 = group(&h, "g3", &[id(3)]).await;
    assert_eq!(
        h.send("DELETE", &format!("/Groups/{g3}"), None)
            .await
            .status,
        204
    );
    for (i, id) in ids.iter().enumerate() {
        let path = format!("/Users/{id}");
        let r = h
            .send("PATCH", &path, Some(replace("title", json!("second"))))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        match i % 4 {
            0 => {
                let r = h
                    .send(
                        "PATCH",
                        &path,
                        Some(replace("userName", json!(format!("renamed{i}")))),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
            }
            1 => assert_eq!(h.send("DELETE", &path, None).await.status, 204),
            2 => {
                let r = h
                    .send("PATCH", &path, Some(replace("active", json!(false))))
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
            }
            _ => {}
        }
    }
    // A member removed after its rename, a group emptied.
    patch_group(&h, &g0, members_op("remove", &[&ids[0]])).await;
    patch_group(&h, &g2, members_op("remove", &[&ids[2]])).await;
    h.settle().await;
    h.assert_directory_matches_store().await;
    let people = h.slapd.people_dn();
    assert_eq!(dump(&h.slapd, &people).await.len(), 12);
    let original = dump_all(&h.slapd).await;
    assert_eq!(original.len(), 12 + 3, "{:#?}", original.keys());
    assert!(original.contains_key(&format!("uid=renamed0,{people}")));
    assert!(
        original[&format!("uid=r2,{people}")].contains_key("pwdaccountlockedtime"),
        "deactivated: {:?}",
        original[&format!("uid=r2,{people}")]
    );

    // Every entry applied a second time, into the same directory: nothing
    // changes.
    let config = h.config_path();
    let (ok, out, err) = run_cli(&["journal", "--config", &config, "replay", "--from", "1"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("queued to be applied again"), "{out}");
    h.drained().await;
    assert_eq!(dump_all(&h.slapd).await, original);

    // The whole journal into a fresh, empty directory, twice.
    let mut rebuilt = Vec::new();
    for _ in 0..2 {
        h.stop_daemon().await;
        h.use_fresh_slapd(SlapdOptions::default()).await;
        assert!(dump(&h.slapd, &people).await.is_empty());
        // The daemon is stopped: the command opens the store itself.
        let (ok, out, err) =
            run_cli(&["journal", "--config", &config, "replay", "--from", "1"]).await;
        assert!(ok, "{out}{err}");
        assert!(out.contains("daemon is not running"), "{out}");
        h.start_daemon().await;
        h.drained().await;
        h.assert_directory_matches_store().await;
        rebuilt.push(dump_all(&h.slapd).await);
    }
    assert_eq!(rebuilt[0], rebuilt[1]);
    assert_eq!(rebuilt[0], original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_stopped_mid_load_every_acknowledged_write_lands_in_order() {
    directory_stopped_mid_load(false).await
}

/// The same with a group whose members change, are renamed and deleted
/// during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_stopped_mid_load_group_members_land_too() {
    directory_stopped_mid_load(true).await
}

async fn directory_stopped_mid_load(with_group: bool) {
    let mut h = Harness::start().await;
    let pid = h.slapd.pid().expect("slapd runs");
    // Order-sensitive histories: a title counter, a rename chain, a delete
    // and re-create under the same name, deactivate / reactivate.
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = h
            .send("POST", "/Users", Some(user(&format!("q{i}"), "t0")))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    // A group over them: during the outage it gains and loses members, one
    // member is renamed and one deleted.
    let gid = if with_group {
        group(&h, "outage", &[&ids[0], &ids[1], &ids[2]]).await
    } else {
        String::new()
    };
    let mut stopped = false;
    let mut recreated = String::new();
    for step in 1..=30 {
        if step == 8 {
            // The directory goes away in the middle of the load.
            let s = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(s.success());
            stopped = true;
        }
        let r = h
            .send(
                "PATCH",
                &format!("/Users/{}", ids[0]),
                Some(replace("title", json!(format!("t{step}")))),
            )
            .await;
        assert_eq!(r.status, 200, "step {step}: {}", r.body);
        if step % 10 == 0 {
            let r = h
                .send(
                    "PATCH",
                    &format!("/Users/{}", ids[1]),
                    Some(replace("userName", json!(format!("q1-{step}")))),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        if step == 12 {
            assert_eq!(
                h.send("DELETE", &format!("/Users/{}", ids[2]), None)
                    .await
                    .status,
                204
            );
        }
        if with_group && step == 9 {
            patch_group(&h, &gid, members_op("add", &[&ids[3]])).await;
        }
        if with_group && step == 11 {
            patch_group(&h, &gid, members_op("remove", &[&ids[0]])).await;
        }
        if step == 14 {
            let r = h.send("POST", "/Users", Some(user("q2", "reborn"))).await;
            assert_eq!(r.status, 201, "{}", r.body);
            recreated = r.body["id"].as_str().unwrap().to_string();
        }
        if step % 3 == 0 {
            let r = h
                .send(
                    "PATCH",
                    &format!("/Users/{}", ids[3]),
                    Some(replace("active", json!(step % 2 == 0))),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stopped);
    // Everything since the stop is queued.
    assert!(!h.daemon().writer.directory_up());
    assert!(h.daemon().store.pending_count() > 20);
    let people = h.slapd.people_dn();

    h.slapd.restart().expect("slapd restarts");
    h.drained().await;

    let q0 = h.ldap_get(&format!("uid=q0,{people}")).await.expect("q0");
    assert_eq!(first(&q0, "title").as_deref(), Some("t30"));
    assert!(h.ldap_get(&format!("uid=q1,{people}")).await.is_none());
    assert!(h.ldap_get(&format!("uid=q1-10,{people}")).await.is_none());
    assert!(h.ldap_get(&format!("uid=q1-20,{people}")).await.is_none());
    assert!(h.ldap_get(&format!("uid=q1-30,{people}")).await.is_some());
    let q2 = h.ldap_get(&format!("uid=q2,{people}")).await.expect("q2");
    assert_eq!(first(&q2, "title").as_deref(), Some("reborn"));
    assert!(!recreated.is_empty());
    // Step 30 is the last change of q3: 30 % 3 == 0, active = true.
    let q3 = h.ldap_get(&format!("uid=q3,{people}")).await.expect("q3");
    assert_eq!(first(&q3, "pwdAccountLockedTime"), None, "{q3:?}");
    assert_eq!(dump(&h.slapd, &people).await.len(), 4);
    if !with_group {
        h.assert_directory_matches_store().await;
        return;
    }
    // The group: q0 removed, q1 under its last name, the deleted q2 gone
    // (the re-created q2 is another user), q3 added.
    let g = h
        .ldap_get(&format!("cn=outage,{}", h.slapd.groups_dn()))
        .await
        .expect("group");
    let mut members: Vec<String> = g["member"].iter().map(|m| m.to_lowercase()).collect();
    members.sort();
    assert_eq!(
        members,
        vec![format!("uid=q1-30,{people}"), format!("uid=q3,{people}")]
    );
    h.assert_directory_matches_store().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_entries_are_listed_retried_and_skipped_with_the_journal_command() {
    // uidNumber is not allowed on inetOrgPerson: the directory refuses any
    // user that has a costCenter with objectClassViolation.
    let bad = MAPPING.replace(
        "title = \"title\"\n",
        &format!("title = \"title\"\nuidNumber = \"{ENTERPRISE}:costCenter\"\n"),
    );
    assert_ne!(bad, MAPPING);
    let h = Harness::start_with(SlapdOptions::default(), &bad).await;
    let config = h.config_path();
    let people = h.slapd.people_dn();

    let with_cc = |name: &str, cc: &str| {
        let mut u = user(name, "staff");
        u["schemas"].as_array_mut().unwrap().push(json!(ENTERPRISE));
        u[ENTERPRISE] = json!({"costCenter": cc});
        u
    };
    let anna = h
        .send("POST", "/Users", Some(with_cc("anna", "1000")))
        .await;
    assert_eq!(anna.status, 201, "{}", anna.body);
    let anna = anna.body["id"].as_str().unwrap().to_string();
    let bert = h
        .send("POST", "/Users", Some(with_cc("bert", "2000")))
        .await;
    let bert = bert.body["id"].as_str().unwrap().to_string();
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{bert}"),
            Some(replace("title", json!("Boss"))),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Erin's manager is anna: erin waits until anna is in the directory.
    let mut erin = user("erin", "staff");
    erin["schemas"]
        .as_array_mut()
        .unwrap()
        .push(json!(ENTERPRISE));
    erin[ENTERPRISE] = json!({"manager": {"value": anna}});
    let r = h.send("POST", "/Users", Some(erin)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let carl = h.send("POST", "/Users", Some(user("carl", "staff"))).await;
    assert_eq!(carl.status, 201);
    h.settle().await;

    // Parked entries do not block other resources.
    assert!(h.ldap_get(&format!("uid=carl,{people}")).await.is_some());
    for name in ["anna", "bert", "erin"] {
        assert!(h.ldap_get(&format!("uid={name},{people}")).await.is_none());
    }
    let parked = h.daemon().store.parked().unwrap();
    assert_eq!(parked.len(), 2, "{parked:?}");
    let (seq_anna, seq_bert) = (parked[0], parked[1]);

    let (ok, out, err) =
        run_cli(&["journal", "--config", &config, "list", "--state", "failed"]).await;
    assert!(ok, "{err}");
    eprintln!("$ scim2ldap journal list --state failed\n{out}");
    assert!(out.contains(&anna) && out.contains(&bert), "{out}");
    assert!(out.contains("objectClassViolation (65)"), "{out}");
    assert!(!out.contains("carl"), "{out}");
    let (ok, out, _) =
        run_cli(&["journal", "--config", &config, "list", "--state", "pending"]).await;
    assert!(ok && out.contains("bert") && out.contains("erin"), "{out}");
    assert!(
        out.contains(&format!(
            "waits behind entry {seq_bert} of the same resource"
        )),
        "{out}"
    );
    let (ok, out, _) = run_cli(&[
        "journal",
        "--config",
        &config,
        "show",
        &seq_anna.to_string(),
    ])
    .await;
    assert!(ok, "{out}");
    eprintln!("$ scim2ldap journal show {seq_anna}\n{out}");
    assert!(out.contains("failed (parked)"), "{out}");
    assert!(
        out.contains("ldap code:  65 (objectClassViolation)"),
        "{out}"
    );
    assert!(out.contains("journal retry"), "{out}");

    // Fix the mapping, reload, retry anna: anna, then erin (who names
    // her) reach the directory.
    std::fs::write(h.dir.join("mapping.toml"), MAPPING).unwrap();
    h.daemon().reload(&h.dir.join("config.toml")).unwrap();
    let (ok, out, err) = run_cli(&[
        "journal",
        "--config",
        &config,
        "retry",
        &seq_anna.to_string(),
    ])
    .await;
    assert!(ok, "{out}{err}");
    let store = h.daemon().store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.state(seq_anna).unwrap() != EntryState::Applied
        || h.ldap_get(&format!("uid=erin,{people}")).await.is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "anna not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = h.ldap_get(&format!("uid=anna,{people}")).await.unwrap();
    assert_eq!(first(&a, "uidNumber"), None);
    let e = h.ldap_get(&format!("uid=erin,{people}")).await.unwrap();
    assert_eq!(
        first(&e, "manager").map(|m| m.to_lowercase()),
        Some(format!("uid=anna,{people}"))
    );
    // Bert's create stays parked until it is retried or skipped.
    assert!(h.ldap_get(&format!("uid=bert,{people}")).await.is_none());

    // Skip bert's create: his later PATCH (a full snapshot) goes ahead.
    let (ok, out, err) = run_cli(&[
        "journal",
        "--config",
        &config,
        "skip",
        &seq_bert.to_string(),
    ])
    .await;
    assert!(ok, "{out}{err}");
    h.drained().await;
    let b = h
        .ldap_get(&format!("uid=bert,{people}"))
        .await
        .expect("bert");
    assert_eq!(first(&b, "title").as_deref(), Some("Boss"));

    // What cannot be done says why.
    let (ok, _, err) = run_cli(&[
        "journal",
        "--config",
        &config,
        "retry",
        &seq_bert.to_string(),
    ])
    .await;
    assert!(
        !ok && err.contains("is not parked (it is skipped)"),
        "{err}"
    );
    let (ok, _, err) = run_cli(&["journal", "--config", &config, "show", "99999"]).await;
    assert!(!ok && err.contains("no journal entry 99999"), "{err}");
    let (ok, out, _) = run_cli(&["journal", "--config", &config, "stats"]).await;
    assert!(ok, "{out}");
    eprintln!("$ scim2ldap journal stats\n{out}");
    for (k, v) in [("parked", 0), ("skipped", 1), ("pending", 0)] {
        let line = format!("{k:<18} {v}\n");
        assert!(out.contains(&line), "{line:?} in\n{out}");
    }
    assert!(out.contains("reachable"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_applied_twice_leaves_the_directory_as_applied_once() {
    use scim2ldap::model::{MappingPlanner, Model, SharedModel};
    use scim2ldap::writer::{Directory, Planner};

    let mut h = Harness::start().await;
    let r = h.send("POST", "/Users", Some(user("twice", "a"))).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let path = format!("/Users/{id}");
    let r = h.send("POST", "/Users", Some(user("boss", "b"))).await;
    let boss = r.body["id"].as_str().unwrap().to_string();
    // A group of both: its members follow the rename and the delete, and a
    // member delta applied twice must not add or remove twice.
    let team = group(&h, "team", &[&id, &boss]).await;
    patch_group(&h, &team, members_op("remove", &[&boss])).await;
    patch_group(&h, &team, members_op("add", &[&boss])).await;
    let solo = group(&h, "solo", &[]).await;
    patch_group(&h, &solo, members_op("add", &[&id])).await;
    for body in [
        replace("title", json!("b")),
        replace(
            ENTERPRISE,
            json!({"manager": {"value": boss}, "department": "R&D"}),
        ),
        replace("userName", json!("twice, renamed")),
        replace("active", json!(false)),
        replace("active", json!(true)),
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "remove", "path": "title"}]}),
    ] {
        let r = h.send("PATCH", &path, Some(body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(h.send("DELETE", &path, None).await.status, 204);
    h.stop_daemon().await;
    // Apply the journal by hand into an empty directory, each entry twice.
    h.use_fresh_slapd(SlapdOptions::default()).await;
    let cfg = h.config();
    let store = scim2ldap::store::Store::open(&cfg.store.path).unwrap();
    let planner = MappingPlanner {
        model: SharedModel::new(Model::load(&cfg.mapping_file).unwrap()),
        store: store.clone(),
        departed: Default::default(),
    };
    let mut dir = Directory::new(cfg.ldap.clone());
    let people = h.slapd.people_dn();
    let groups = h.slapd.groups_dn();
    let mut steps = 0;
    let entries: Vec<_> = store.entries_from(0).map(Result::unwrap).collect();
    // As `journal replay` does: the links describe the old directory, and
    // requeueing makes the writer read the new one before trusting them.
    store.requeue(1, u64::MAX).unwrap();

    for e in entries {
        let plan = planner.plan(&e).unwrap();
        let mut states = Vec::new();
        for _ in 0..2 {
            let link = store.link(e.kind, &e.id).unwrap();
            let full = || planner.full_members(&e);
            let new_link = dir.apply(&plan, link.as_ref(), &full).await.unwrap();
            store.mark_applied(&e, new_link.as_ref()).unwrap();
            states.push(dump(&h.slapd, &people).await);
        }
        assert_eq!(
            states[0], states[1],
            "entry {} applied twice differs",
            e.seq
        );
        // Groups are compared at the end only: a group entry applied again
        // whose write meets the directory already changed (its add gets
        // entryAlreadyExists, its member delta attributeOrValueExists or
        // noSuchAttribute) converges to the member list the store holds
        // *now*, not to that entry's: the directory jumps ahead to the
        // latest membership, which the later entries then keep.
        steps += 1;
    }
    // 9 user entries; 5 group entries, and the member removals the user's
    // delete journals for the two groups naming it.
    assert_eq!(steps, 9 + 5 + 2);
    // The last entry deleted "twice, renamed"; boss remains.
    let left = dump(&h.slapd, &people).await;
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        vec![format!("uid=boss,{people}")]
    );
    // ... alone in team; solo is back to the placeholder.
    let all = dump_all(&h.slapd).await;
    assert_eq!(
        all[&format!("cn=team,{groups}")]["member"],
        vec![format!("uid=boss,{people}")]
    );
    assert_eq!(
        all[&format!("cn=solo,{groups}")]["member"],
        vec![crate::harness::PLACEHOLDER.to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bounds_the_journal_and_replay_still_rebuilds_everything() {
    let mut h = Harness::start().await;
    // Retention of one second.
    let path = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("path = \"state\"", "path = \"state\"\nretention_secs = 1"),
    )
    .unwrap();
    h.stop_daemon().await;
    h.start_daemon().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let r = h
            .send("POST", "/Users", Some(user(&format!("k{i}"), "v0")))
            .await;
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    // A group whose history is member deltas only: compaction keeps its
    // last entry, and the replay must still rebuild every member.
    let gid = group(&h, "compacted", &[&ids[0]]).await;
    for round in 1..=5 {
        patch_group(&h, &gid, members_op("add", &[&ids[round]])).await;
        if round % 2 == 0 {
            patch_group(&h, &gid, members_op("remove", &[&ids[round - 1]])).await;
        }
        for id in &ids {
            let r = h
                .send(
                    "PATCH",
                    &format!("/Users/{id}"),
                    Some(replace("title", json!(format!("v{round}")))),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    assert_eq!(
        h.send("DELETE", &format!("/Users/{}", ids[0]), None)
            .await
            .status,
        204
    );
    h.settle().await;
    h.assert_directory_matches_store().await;
    let people = h.slapd.people_dn();
    assert_eq!(dump(&h.slapd, &people).await.len(), 5);
    let original = dump_all(&h.slapd).await;
    assert_eq!(original.len(), 6);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let config = h.config_path();
    let (ok, out, err) = run_cli(&["journal", "--config", &config, "compact"]).await;
    assert!(ok, "{out}{err}");
    // 6 creates + 30 patches + 1 delete, a group's create, 7 member
    // changes and the member removal the delete journals: one entry kept
    // per live user and group.
    assert!(out.contains("removed 40 applied entries"), "{out}");
    assert!(out.contains("kept 6"), "{out}");

    h.stop_daemon().await;
    h.use_fresh_slapd(SlapdOptions::default()).await;
    let (ok, out, err) = run_cli(&["journal", "--config", &config, "replay", "--from", "1"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("6 entries queued"), "{out}");
    assert!(out.contains("were compacted"), "{out}");
    h.start_daemon().await;
    h.drained().await;
    assert_eq!(dump_all(&h.slapd).await, original);
    h.assert_directory_matches_store().await;
}
