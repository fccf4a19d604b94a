//! The journal: idempotent replay, writes queued while the directory is
//! down, parked entries handled with `scim2ldap journal`.

use std::time::Duration;

use serde_json::{json, Value};

use scim2ldap::slapd::SlapdOptions;
use scim2ldap::store::EntryState;

use crate::harness::{cli, dump, first, Harness, MAPPING};

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

/// Waits until no journal entry is pending (parked ones count as pending
/// for this).
async fn drained(h: &Harness) {
    let store = h.daemon().store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while store.pending_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} journal entries still pending after 40 s",
            store.pending_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    h.settle().await;
    let people = h.slapd.people_dn();
    let original = dump(&h.slapd, &people).await;
    assert_eq!(original.len(), 12, "{:#?}", original.keys());
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
    drained(&h).await;
    assert_eq!(dump(&h.slapd, &people).await, original);

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
        drained(&h).await;
        rebuilt.push(dump(&h.slapd, &people).await);
    }
    assert_eq!(rebuilt[0], rebuilt[1]);
    assert_eq!(rebuilt[0], original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_stopped_mid_load_every_acknowledged_write_lands_in_order() {
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
    drained(&h).await;

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
    drained(&h).await;
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
    };
    let mut dir = Directory::new(cfg.ldap.clone());
    let people = h.slapd.people_dn();
    let mut steps = 0;
    let entries: Vec<_> = store.entries_from(0).map(Result::unwrap).collect();
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
        steps += 1;
    }
    assert_eq!(steps, 9);
    // The last entry deleted "twice, renamed"; boss remains.
    let left = dump(&h.slapd, &people).await;
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        vec![format!("uid=boss,{people}")]
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
    for round in 1..=5 {
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
    let people = h.slapd.people_dn();
    let original = dump(&h.slapd, &people).await;
    assert_eq!(original.len(), 5);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let config = h.config_path();
    let (ok, out, err) = run_cli(&["journal", "--config", &config, "compact"]).await;
    assert!(ok, "{out}{err}");
    // 6 creates + 30 patches + 1 delete: one snapshot kept per live user.
    assert!(out.contains("removed 32 applied entries"), "{out}");
    assert!(out.contains("kept 5"), "{out}");

    h.stop_daemon().await;
    h.use_fresh_slapd(SlapdOptions::default()).await;
    let (ok, out, err) = run_cli(&["journal", "--config", &config, "replay", "--from", "1"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("5 entries queued"), "{out}");
    assert!(out.contains("were compacted"), "{out}");
    h.start_daemon().await;
    drained(&h).await;
    assert_eq!(dump(&h.slapd, &people).await, original);
}
