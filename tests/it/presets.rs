//! The shipped presets against a real directory: `check` tells a preset
//! pointed at the wrong kind of server and names the one to use.

use crate::harness::Harness;

/// Runs `check` with `mapping` in place of the harness's mapping (the
/// running daemon keeps its own) and returns (ok, problems, report).
async fn check_with(h: &Harness, mapping: &str) -> (bool, String, String) {
    std::fs::write(h.dir.join("mapping.toml"), mapping).unwrap();
    let report = scim2ldap::check::run(&h.dir.join("config.toml")).await;
    (report.ok(), report.problems.join("\n"), report.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_a_preset_pointed_at_the_wrong_kind_of_server() {
    let h = Harness::start().await;

    // The OpenLDAP preset on slapd: the pairing is right and said so.
    let (ok, _, text) = check_with(&h, include_str!("../../examples/openldap.toml")).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("ok       the directory is OpenLDAP (its root DSE is an OpenLDAProotDSE)"),
        "{text}"
    );
    assert!(
        text.contains("[ldap] uuid_attribute: the directory has entryUUID"),
        "{text}"
    );

    // The AD preset on slapd: refused, naming the OpenLDAP presets first.
    let (ok, problems, text) = check_with(&h, include_str!("../../examples/ad.toml")).await;
    assert!(!ok, "{text}");
    let first = problems.lines().next().unwrap_or_default();
    assert!(
        first.contains("this mapping is written for Active Directory (or Samba AD)")
            && first.contains("but the directory is OpenLDAP")
            && first.contains("start from examples/openldap.toml"),
        "{text}"
    );
    // The schema comparison still reports what is missing.
    assert!(
        problems.contains("the directory has no object class \"user\""),
        "{text}"
    );

    // The 389 DS and FreeIPA presets on slapd.
    for preset in [
        include_str!("../../examples/389ds.toml"),
        include_str!("../../examples/freeipa.toml"),
    ] {
        let (ok, problems, text) = check_with(&h, preset).await;
        assert!(!ok, "{text}");
        assert!(
            problems.contains("this mapping is written for 389 Directory Server (or FreeIPA)")
                && problems.contains("start from examples/openldap.toml"),
            "{text}"
        );
    }

    // A uuid_attribute the directory does not have, named with the one
    // that works there.
    let config = std::fs::read_to_string(h.dir.join("config.toml")).unwrap();
    assert!(!config.contains("uuid_attribute"), "{config}");
    let objectguid = config.replacen("[ldap]\n", "[ldap]\nuuid_attribute = \"objectGUID\"\n", 1);
    assert!(
        objectguid.contains("uuid_attribute = \"objectGUID\""),
        "{objectguid}"
    );
    std::fs::write(h.dir.join("config-guid.toml"), objectguid).unwrap();
    std::fs::write(
        h.dir.join("mapping.toml"),
        include_str!("../../examples/openldap.toml"),
    )
    .unwrap();
    let report = scim2ldap::check::run(&h.dir.join("config-guid.toml")).await;
    let problems = report.problems.join("\n");
    assert!(
        problems
            .contains("[ldap] uuid_attribute: the directory has no attribute type \"objectGUID\"")
            && problems.contains("on OpenLDAP use entryUUID"),
        "{report}"
    );
}

/// The OpenLDAP preset with its "before the @" option for userName as an
/// email address, plus a `unique = true` rule: the derived names reach the
/// directory, and a second user whose derived name is taken is refused
/// with 409 before anything is stored, as AD's sAMAccountName is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_user_names_give_short_unique_names() {
    let preset = include_str!("../../examples/openldap.toml");
    let mapping = preset
        .replacen(
            "dn = \"uid={userName},ou=people,dc=example,dc=com\"\n",
            "",
            1,
        )
        .replacen(
            "# dn = \"uid={userName|before:@|lowercase},ou=people,dc=example,dc=com\"",
            "dn = \"uid={userName|before:@|lowercase},ou=people,dc=example,dc=com\"",
            1,
        )
        .replacen("uid = \"userName\"\n", "", 1)
        .replacen(
            "# uid = { from = \"userName\", transform = [\"before:@\", \"lowercase\"] }",
            "uid = { from = \"userName\", transform = [\"before:@\", \"lowercase\"] }\nroomNumber = { from = \"userName\", transform = [\"before:@\", \"replace:._:\", \"max_length:8\"], unique = true }",
            1,
        );
    assert!(
        mapping.contains("\ndn = \"uid={userName|before:@")
            && mapping.contains("\nuid = { from")
            && !mapping.contains("\nuid = \"userName\""),
        "the preset's commented option lines changed"
    );
    let h = Harness::start_with(Default::default(), &mapping).await;
    let user = |name: &str| {
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name,
            "name": {"givenName": "T", "familyName": "U"},
            "active": true
        })
    };
    let r = h
        .send(
            "POST",
            "/Users",
            Some(user("Test_User.ab6490ee@contoso.com")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    let dn = format!("uid=test_user.ab6490ee,{}", h.slapd.people_dn());
    let e = h.ldap_get(&dn).await.unwrap_or_else(|| panic!("no {dn}"));
    assert_eq!(e["uid"], vec!["test_user.ab6490ee"]);
    assert_eq!(e["roomNumber"], vec!["TestUser"]);

    // Another domain, same name before the @: the RDN is taken.
    let before = h.daemon().store.last_seq();
    let r = h
        .send(
            "POST",
            "/Users",
            Some(user("test_user.AB6490EE@fabrikam.com")),
        )
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        r.body
    );
    // A different uid, but the unique roomNumber is taken (compared
    // as the directory compares: case does not count).
    let r = h
        .send("POST", "/Users", Some(user("testuser_x@contoso.com")))
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        r.body
    );
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("roomnumber=testuser"),
        "{}",
        r.body
    );
    assert_eq!(h.daemon().store.last_seq(), before, "nothing stored");

    // Renaming the first user frees its name for another.
    let r = h
        .send(
            "PUT",
            &format!("/Users/{id}"),
            Some(user("renamed@contoso.com")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h
        .send("POST", "/Users", Some(user("testuser_x@contoso.com")))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    h.settle().await;
    let e = h
        .ldap_get(&format!("uid=testuser_x,{}", h.slapd.people_dn()))
        .await
        .expect("the second user's entry");
    assert_eq!(e["roomNumber"], vec!["testuser"]);
    let e = h
        .ldap_get(&format!("uid=renamed,{}", h.slapd.people_dn()))
        .await
        .expect("the renamed entry");
    assert_eq!(e["roomNumber"], vec!["renamed"]);
}
