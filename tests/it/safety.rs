//! Directory safety (what must hold before pointing the daemon at a
//! production directory): names LDAP treats as equal are one name.

use serde_json::{json, Value};

use crate::harness::{Harness, MAPPING};

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Carol", "familyName": "Kaye"},
        "active": true
    })
}

/// RFC 4518: `carol`, `carol ` and fullwidth `ｃａｒｏｌ` are one uid to
/// slapd; before, the daemon accepted all three and one directory entry
/// was renamed and overwritten by each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_equal_to_ldap_are_refused_as_duplicates() {
    let h = Harness::start().await;
    let r = h.send("POST", "/Users", Some(user("carol"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let carol = r.body["id"].as_str().unwrap().to_string();
    for twin in ["carol ", "ｃａｒｏｌ", "CAROL", " carol"] {
        let r = h.send("POST", "/Users", Some(user(twin))).await;
        assert_eq!(r.status, 409, "{twin:?}: {}", r.body);
        assert_eq!(r.body["scimType"], "uniqueness", "{}", r.body);
    }
    let r = h.send("POST", "/Users", Some(user("car  ol"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h.send("POST", "/Users", Some(user("car ol"))).await;
    assert_eq!(r.status, 409, "{}", r.body);
    // A rename onto an equal name is refused too.
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{carol}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "userName", "value": "Car Ol"}]
            })),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    // Values are kept as sent.
    let r = h
        .send(
            "GET",
            "/Users?filter=userName%20eq%20%22car%20%20ol%22",
            None,
        )
        .await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    assert_eq!(r.body["Resources"][0]["userName"], "car  ol");
    h.settle().await;
    let people = h.ldap_search("(objectClass=inetOrgPerson)", &["uid"]).await;
    assert_eq!(people.len(), 2, "exactly carol and car  ol: {people:?}");
}

/// The RDN is unique whatever SCIM attribute it is built from: two users
/// whose entries would share a DN are refused like two equal userNames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_whose_entries_would_share_a_dn_are_refused() {
    let mapping = MAPPING.replace(
        "dn = \"uid={userName},ou=people,dc=example,dc=com\"",
        "dn = \"uid={externalId},ou=people,dc=example,dc=com\"",
    );
    assert_ne!(mapping, MAPPING, "the preset's DN template changed");
    let h = Harness::start_with(Default::default(), &mapping).await;
    let mut a = user("alice");
    a["externalId"] = json!("E-1");
    let r = h.send("POST", "/Users", Some(a)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut b = user("bob");
    b["externalId"] = json!("e-1 ");
    let r = h.send("POST", "/Users", Some(b)).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["scimType"], "uniqueness");
    assert!(
        r.body["detail"].as_str().unwrap().contains("uid=e-1"),
        "{}",
        r.body
    );
    h.settle().await;
    let people = h.ldap_search("(objectClass=inetOrgPerson)", &["uid"]).await;
    assert_eq!(people.len(), 1, "{people:?}");
}

/// Waits until the daemon has read the directory's schema.
async fn schema_known(h: &Harness) {
    for _ in 0..100 {
        if h.daemon().syntaxes.get().is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the daemon did not read the directory's schema within 5 s");
}

/// A value the directory's schema forbids is refused with 400 naming the
/// SCIM source and the LDAP attribute, and nothing is journaled; before,
/// such an entry stayed pending for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_schema_forbids_are_refused_before_they_are_journaled() {
    let h = Harness::start().await;
    schema_known(&h).await;
    let before = h.daemon().store.last_seq();

    let mut u = user("mailuser");
    u["emails"] = json!([{"value": "jörg@example.com", "type": "work", "primary": true}]);
    let r = h.send("POST", "/Users", Some(u)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["scimType"], "invalidValue");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("mail") && detail.contains("IA5String") && detail.contains("emails"),
        "{detail}"
    );

    // uid is a Directory String of at most 256 characters in slapd's schema.
    let r = h.send("POST", "/Users", Some(user(&"x".repeat(300)))).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("uid") && detail.contains("256"), "{detail}");

    assert_eq!(h.daemon().store.last_seq(), before, "nothing journaled");
    // What the schema allows still goes through.
    let r = h.send("POST", "/Users", Some(user(&"y".repeat(200)))).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Entries made "before" a request must be older than it: LDAP timestamps
/// have one-second resolution.
async fn let_a_second_pass() {
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
}

/// The parked journal entries' messages.
fn parked_messages(h: &Harness) -> Vec<String> {
    let store = &h.daemon().store;
    store
        .parked()
        .unwrap()
        .into_iter()
        .map(|seq| match store.state(seq).unwrap() {
            scim2ldap::store::EntryState::Failed(f) => f.message,
            other => panic!("entry {seq} is listed as parked but is {other:?}"),
        })
        .collect()
}

/// An existing directory group is not taken over by a SCIM group of the
/// same name (groups are not adopted unless the mapping allows it): its
/// members stay, and the write parks with a message that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_group_is_not_taken_over() {
    let h = Harness::start().await;
    let people = h.slapd.people_dn();
    let groups = h.slapd.groups_dn();
    let rootish = format!("uid=rootish,{people}");
    h.ldap_add(
        &rootish,
        &[
            ("objectClass", &["inetOrgPerson"]),
            ("uid", &["rootish"]),
            ("cn", &["Root Ish"]),
            ("sn", &["Ish"]),
        ],
    )
    .await;
    let sudo = format!("cn=sudo,{groups}");
    h.ldap_add(
        &sudo,
        &[
            ("objectClass", &["groupOfNames"]),
            ("cn", &["sudo"]),
            ("member", &[rootish.as_str()]),
        ],
    )
    .await;
    let_a_second_pass().await;

    let r = h.send("POST", "/Users", Some(user("attacker"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let attacker = r.body["id"].as_str().unwrap().to_string();
    // The lookup Okta and Entra make first adopts nothing.
    let r = h
        .send("GET", "/Groups?filter=displayName%20eq%20%22sudo%22", None)
        .await;
    assert_eq!(r.body["totalResults"], 0, "{}", r.body);
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "sudo",
                "members": [{"value": attacker}]
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    h.settle().await;

    let e = h.ldap_get(&sudo).await.expect("the group is still there");
    assert_eq!(
        e["member"],
        vec![rootish.clone()],
        "members unchanged: {e:?}"
    );
    let parked = parked_messages(&h);
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(
        parked[0].contains("cn=sudo") && parked[0].contains("[group.adopt]"),
        "{}",
        parked[0]
    );
    // The rest flows: a later user lands.
    let r = h.send("POST", "/Users", Some(user("bystander"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    h.settle().await;
    assert!(h
        .ldap_get(&format!("uid=bystander,{people}"))
        .await
        .is_some());
}

/// An existing user the policy does not allow (on the `never` list) keeps
/// its attributes; one it allows (the default: inside the DN template's
/// parent) is adopted once, linked to exactly one id, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_users_are_adopted_only_as_the_policy_says() {
    let never = MAPPING.replacen(
        "\n[user.attributes]\n",
        "\n[user.adopt]\nnever = [\"uid=localops,ou=people,dc=example,dc=com\"]\n\n[user.attributes]\n",
        1,
    );
    assert_ne!(never, MAPPING);
    for (mapping, allowed) in [(never.as_str(), false), (MAPPING, true)] {
        let h = Harness::start_with(Default::default(), mapping).await;
        let people = h.slapd.people_dn();
        let dn = format!("uid=localops,{people}");
        h.ldap_add(
            &dn,
            &[
                ("objectClass", &["inetOrgPerson"]),
                ("uid", &["localops"]),
                ("cn", &["Local Ops"]),
                ("sn", &["original"]),
            ],
        )
        .await;
        let_a_second_pass().await;
        let mut body = user("localops");
        body["name"] = json!({"givenName": "Local", "familyName": "pwned"});
        let r = h.send("POST", "/Users", Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        h.settle().await;
        let e = h.ldap_get(&dn).await.expect("entry");
        let store = &h.daemon().store;
        let link = store.link(scim2ldap::store::Kind::User, &id).unwrap();
        if allowed {
            assert_eq!(e["sn"], vec!["pwned"], "adopted: the IdP's value: {e:?}");
            let link = link.expect("linked");
            assert!(link.dn.eq_ignore_ascii_case(&dn), "{link:?}");
            let uuid = link.uuid.expect("stable id");
            assert_eq!(
                store
                    .linked_id(scim2ldap::store::Kind::User, &uuid)
                    .unwrap()
                    .as_deref(),
                Some(id.as_str())
            );
            assert!(parked_messages(&h).is_empty());
            let metrics = h.daemon().edge.metrics.render();
            assert!(
                metrics.contains("scim2ldap_adoptions_total{kind=\"User\"} 1"),
                "{metrics}"
            );
        } else {
            assert_eq!(e["sn"], vec!["original"], "not touched: {e:?}");
            assert!(link.is_none(), "{link:?}");
            let parked = parked_messages(&h);
            assert_eq!(parked.len(), 1, "{parked:?}");
            assert!(parked[0].contains("never"), "{}", parked[0]);
        }
    }
}

/// An entry the directory refuses (slapd answers "other" (80) for an RDN
/// too long for its database: `uid=` and 250 characters, within the
/// schema's bound of 256) is tried a few times on its own and parked with
/// the directory's answer; meanwhile every other write lands at once.
/// Before, the writer took the refusal for an outage and backed off
/// globally, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_entry_parks_alone_while_the_rest_flows() {
    let h = Harness::start().await;
    let people = h.slapd.people_dn();
    let long = "l".repeat(250);
    let r = h.send("POST", "/Users", Some(user(&long))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let started = std::time::Instant::now();
    for i in 0..20 {
        let r = h
            .send("POST", "/Users", Some(user(&format!("later{i}"))))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // All 20 land within a few seconds, while the refused one waits.
    loop {
        let landed = h.ldap_search("(uid=later*)", &["uid"]).await.len();
        if landed == 20 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "only {landed} of 20 later users landed within 4 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        h.daemon().writer.directory_up(),
        "a refusal is not an outage"
    );
    h.settle().await;
    let parked = parked_messages(&h);
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(parked[0].contains("(80)"), "{}", parked[0]);
    assert!(h.ldap_get(&format!("uid={long},{people}")).await.is_none());
    // The refusals are counted by result.
    let metrics = h.daemon().edge.metrics.render();
    assert!(metrics.contains("result=\"other\"} 3"), "{metrics}");
}

/// While the directory is down writes are queued and the writer backs off
/// (up to a minute between tries); when it comes back, queued writes land
/// within about a second, not at the next backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_resume_within_a_second_of_the_directory_returning() {
    let mut h = Harness::start().await;
    h.slapd.stop().unwrap();
    // Several failed tries, so that the backoff has grown past a few seconds.
    for i in 0..6 {
        let r = h
            .send("POST", "/Users", Some(user(&format!("queued{i}"))))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    assert!(!h.daemon().writer.directory_up());
    tokio::task::block_in_place(|| h.slapd.restart()).expect("slapd restarts");
    let back = std::time::Instant::now();
    loop {
        if h.ldap_search("(uid=queued*)", &["uid"]).await.len() == 6 {
            break;
        }
        assert!(
            back.elapsed() < std::time::Duration::from_millis(2500),
            "queued writes did not land within 2.5 s of the directory's return"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    h.settle().await;
}

/// Renames reach every reference: a user's `manager` (resolved to a DN)
/// and group members follow the manager's rename, including a rename that
/// changes only the case of the userName (sent as a modrdn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_reach_managers_and_members_even_case_only() {
    let h = Harness::start().await;
    let people = h.slapd.people_dn();
    let groups = h.slapd.groups_dn();
    let r = h.send("POST", "/Users", Some(user("Case.Only"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let boss = r.body["id"].as_str().unwrap().to_string();
    let mut report = user("report");
    report["schemas"] = json!([
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    ]);
    report["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] =
        json!({"manager": {"value": boss}});
    let r = h.send("POST", "/Users", Some(report)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "bosses", "members": [{"value": boss}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    h.settle().await;
    let report_dn = format!("uid=report,{people}");
    let group_dn = format!("cn=bosses,{groups}");
    let e = h.ldap_get(&report_dn).await.unwrap();
    assert_eq!(e["manager"], vec![format!("uid=Case.Only,{people}")]);

    for (name, expect) in [("case.only", "uid=case.only"), ("chief", "uid=chief")] {
        let r = h
            .send(
                "PATCH",
                &format!("/Users/{boss}"),
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "userName", "value": name}]
                })),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        h.settle().await;
        let want = format!("{expect},{people}");
        let found = h.ldap_search(&format!("(uid={name})"), &["uid"]).await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].dn, want, "the DN itself follows, case included");
        let e = h.ldap_get(&report_dn).await.unwrap();
        assert_eq!(e["manager"], vec![want.clone()], "manager follows {name}");
        let g = h.ldap_get(&group_dn).await.unwrap();
        assert_eq!(g["member"], vec![want.clone()], "member follows {name}");
    }
    assert!(parked_messages(&h).is_empty());
}

/// A group never freezes after its members are deleted while the
/// directory's own referential integrity removes their values too (300
/// members, 150 deleted from 4 clients; slapd
/// with refint and memberof, the mapping also removing them): before, the
/// group's next write failed with noSuchAttribute (16) and parked, and
/// every later write of the group waited behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_members_under_refint_never_freezes_a_group() {
    let h = Harness::start_with(
        scim2ldap_slapd::SlapdOptions::with_overlays(),
        crate::harness::MAPPING,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..300 {
        let r = h.send("POST", "/Users", Some(user(&format!("m{i}")))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let members: Vec<_> = ids.iter().map(|id| json!({"value": id})).collect();
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "everyone", "members": members})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    // Delete half of them from 4 clients at once.
    let doomed: Vec<String> = ids.iter().take(150).cloned().collect();
    let h = &h;
    let delete_all = |chunk: Vec<String>| async move {
        for id in chunk {
            let r = h.send("DELETE", &format!("/Users/{id}"), None).await;
            assert_eq!(r.status, 204, "{}", r.body);
        }
    };
    let c: Vec<Vec<String>> = doomed.chunks(38).map(|c| c.to_vec()).collect();
    tokio::join!(
        delete_all(c[0].clone()),
        delete_all(c[1].clone()),
        delete_all(c[2].clone()),
        delete_all(c[3].clone())
    );
    // A later member change still reaches the directory.
    let r = h.send("POST", "/Users", Some(user("latecomer"))).await;
    let late = r.body["id"].as_str().unwrap().to_string();
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": late}]}]
            })),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert!(parked_messages(h).is_empty(), "{:?}", parked_messages(h));
    let g = h
        .ldap_get(&format!("cn=everyone,{}", h.slapd.groups_dn()))
        .await
        .unwrap();
    assert_eq!(g["member"].len(), 151, "150 left plus the latecomer");
    assert!(g["member"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&format!("uid=latecomer,{}", h.slapd.people_dn()))));
}

/// `scim2ldap check` says how many existing entries each adoption policy
/// would let the identity provider take over, and how many it protects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_counts_what_each_adoption_policy_would_adopt() {
    let mapping = MAPPING.replacen(
        "\n[user.attributes]\n",
        "\n[user.adopt]\nnever = [\"uid=root2,ou=people,dc=example,dc=com\"]\n\n[user.attributes]\n",
        1,
    );
    let h = Harness::start_with(Default::default(), &mapping).await;
    let people = h.slapd.people_dn();
    for uid in ["old1", "old2", "root2"] {
        h.ldap_add(
            &format!("uid={uid},{people}"),
            &[
                ("objectClass", &["inetOrgPerson"]),
                ("uid", &[uid]),
                ("cn", &[uid]),
                ("sn", &[uid]),
            ],
        )
        .await;
    }
    h.ldap_add(
        &format!("cn=legacy,{}", h.slapd.groups_dn()),
        &[
            ("objectClass", &["groupOfNames"]),
            ("cn", &["legacy"]),
            ("member", &["cn=x,dc=example,dc=com"]),
        ],
    )
    .await;
    let report = scim2ldap::check::run(&h.dir.join("config.toml")).await;
    let text = report.to_string();
    assert!(report.ok(), "{text}");
    assert!(
        text.contains(
            "[user.adopt] 2 existing entries under ou=people,dc=example,dc=com may be adopted"
        ) && text.contains("1 protected by `never`"),
        "{text}"
    );
    assert!(
        text.contains("[group.adopt] adoption is off: 1 existing entries"),
        "{text}"
    );
}
