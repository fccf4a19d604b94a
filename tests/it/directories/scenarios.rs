//! The scenarios, written once for every server (see `env::Env` for what
//! each preset says an entry holds). Each ends by comparing the whole of
//! the test's OU with what the daemon reports.

use std::time::Duration;

use serde_json::{json, Value};

use scim2ldap::store::Kind;

use super::env::{first, Env, Server};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Meets AD's default password policy.
const HAND_SET_PASSWORD: &str = "Hand-Set-Pa55!";

/// Entra ID's default create body (its userName is a UPN; no displayName).
fn entra_user(name: &str) -> Value {
    json!({
        "schemas": [USER, ENTERPRISE],
        "externalId": format!("{name}-mailnickname"),
        "userName": name,
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": format!("{name}.Mail@Contoso.com ")}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Given Family", "familyName": "Family", "givenName": "Given"},
        "roles": [],
    })
}

/// Okta's default create body (userName is the login, an email address).
fn okta_user(login: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": login,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": true, "value": login, "type": "work"}],
        "displayName": format!("{given} {family}"),
        "locale": "en-US",
        "externalId": format!("00u{}", login.len()),
        "groups": [],
        "active": true,
    })
}

/// Reads the user's entry at the DN the preset gives it and checks it.
async fn check_user(env: &Env, id: &str) -> super::env::Entry {
    let u = env.get(&format!("/Users/{id}")).await;
    let dn = env.user_dn(&u);
    assert_eq!(
        env.linked_dn(Kind::User, id).to_lowercase(),
        dn,
        "the link names the preset's DN"
    );
    let e = env
        .entry(&dn)
        .await
        .unwrap_or_else(|| panic!("{:?}: no entry at {dn}", env.server));
    let problems = env.check_user(&u, &e);
    assert!(
        problems.is_empty(),
        "{:?}:\n{}",
        env.server,
        problems.join("\n")
    );
    e
}

/// Deactivates, checks that the account is locked the preset's way and
/// that the directory refuses its bind, reactivates and checks it back.
async fn deactivate_and_reactivate(env: &Env, id: &str, dn: &str, entra: bool) {
    assert_eq!(
        env.bind_as(dn, HAND_SET_PASSWORD).await,
        Ok(()),
        "{dn} binds while active"
    );
    let (off, on) = if entra {
        (
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
            json!([{"op": "Replace", "path": "active", "value": "True"}]),
        )
    } else {
        (
            json!([{"op": "replace", "value": {"active": false}}]),
            json!([{"op": "replace", "value": {"active": true}}]),
        )
    };
    env.patch(&format!("/Users/{id}"), off).await;
    env.settle().await;
    let e = check_user(env, id).await;
    assert!(env.is_locked(&e), "{:?}: {e:?}", env.server);
    assert!(
        env.bind_as(dn, HAND_SET_PASSWORD).await.is_err(),
        "{:?}: a deactivated account must not bind",
        env.server
    );
    env.patch(&format!("/Users/{id}"), on).await;
    env.settle().await;
    let e = check_user(env, id).await;
    assert!(!env.is_locked(&e), "{:?}: {e:?}", env.server);
    assert_eq!(
        env.bind_as(dn, HAND_SET_PASSWORD).await,
        Ok(()),
        "{:?}: a reactivated account binds again",
        env.server
    );
}

/// Deletes a user: gone, or (AD's preset) kept and disabled.
async fn delete_user(env: &mut Env, id: &str, dn: &str) {
    env.ok("DELETE", &format!("/Users/{id}"), None, 204).await;
    env.settle().await;
    env.ok("GET", &format!("/Users/{id}"), None, 404).await;
    let e = env.entry(dn).await;
    if env.is_ad() {
        let e = e.expect("AD's preset keeps a deleted user's object");
        assert!(env.is_locked(&e), "kept disabled: {e:?}");
        env.kept.insert(dn.to_string());
    } else {
        assert!(e.is_none(), "{:?}: {dn} is still there", env.server);
    }
}

/// Entra: create with its default body, look-up first; update through
/// PATCH (capitalised ops, booleans as strings); deactivate and
/// reactivate; delete.
pub async fn entra_user_lifecycle(server: Server) {
    let Some(mut env) = Env::start(server).await else {
        return;
    };
    // As in Entra's own test bodies; more than 20 characters before the @.
    let name = format!("Test_User_{}_ab6490ee@contoso.com", env.tag);
    // "Test connection" and the lookup before a create.
    let r = env
        .get(&format!("/Users?filter=userName%20eq%20%22{name}%22"))
        .await;
    assert_eq!(r["totalResults"], 0, "{r}");
    let id = env.create_user(entra_user(&name)).await;
    env.settle().await;
    let e = check_user(&env, &id).await;
    let dn = env.user_dn(&env.get(&format!("/Users/{id}")).await);
    if env.is_ad() {
        // The UPN as sent; a logon name AD takes (at most 20 characters).
        assert_eq!(
            first(&e, "userPrincipalName").as_deref(),
            Some(name.as_str())
        );
        let sam = first(&e, "sAMAccountName").unwrap();
        assert!(sam.len() <= 20 && !sam.contains('@'), "{sam:?}");
        // Active on create: an enabled account.
        assert!(!env.is_locked(&e), "{e:?}");
    }

    // Update: Entra's PATCH.
    env.patch(
        &format!("/Users/{id}"),
        json!([
            {"op": "Replace", "path": "title", "value": "Engineer"},
            {"op": "Replace", "path": "name.familyName", "value": "Newfamily"},
            {"op": "Add", "path": "displayName", "value": "Given Newfamily"},
        ]),
    )
    .await;
    env.settle().await;
    let e = check_user(&env, &id).await;
    assert_eq!(first(&e, "title").as_deref(), Some("Engineer"));
    assert_eq!(first(&e, "sn").as_deref(), Some("Newfamily"));
    env.patch(
        &format!("/Users/{id}"),
        json!([{"op": "Remove", "path": "title"}]),
    )
    .await;
    env.settle().await;
    let e = check_user(&env, &id).await;
    assert_eq!(first(&e, "title"), None, "a removed attribute is removed");

    // Deactivation, checked by binding as the user.
    env.set_password_by_hand(&dn, HAND_SET_PASSWORD).await;
    deactivate_and_reactivate(&env, &id, &dn, true).await;

    env.assert_directory_matches().await;
    // Entra deactivates before it deletes.
    env.patch(
        &format!("/Users/{id}"),
        json!([{"op": "Replace", "path": "active", "value": "False"}]),
    )
    .await;
    delete_user(&mut env, &id, &dn).await;
    env.assert_directory_matches().await;
}

/// Okta: lookup with paging parameters, create with its default body,
/// full PUT for updates (a PUT that leaves out an attribute removes it),
/// path-less deactivate and reactivate, delete.
pub async fn okta_user_lifecycle(server: Server) {
    let Some(mut env) = Env::start(server).await else {
        return;
    };
    let login = format!("isabella.{}@example.org", env.tag);
    let r = env
        .get(&format!(
            "/Users?filter=userName%20eq%20%22{login}%22&startIndex=1&count=100"
        ))
        .await;
    assert_eq!(r["totalResults"], 0, "{r}");
    let id = env.create_user(okta_user(&login, "Isabella", "Shaw")).await;
    env.settle().await;
    check_user(&env, &id).await;
    let dn = env.user_dn(&env.get(&format!("/Users/{id}")).await);

    // Okta's PUT: the whole user, with a title, then without it.
    let mut put = okta_user(&login, "Isabella", "Shaw-Brown");
    put["id"] = json!(id);
    put["title"] = json!("Director");
    env.ok("PUT", &format!("/Users/{id}"), Some(put.clone()), 200)
        .await;
    env.settle().await;
    let e = check_user(&env, &id).await;
    assert_eq!(first(&e, "title").as_deref(), Some("Director"));
    assert_eq!(
        first(&e, "displayName").as_deref(),
        Some("Isabella Shaw-Brown")
    );
    put.as_object_mut().unwrap().remove("title");
    env.ok("PUT", &format!("/Users/{id}"), Some(put), 200).await;
    env.settle().await;
    let e = check_user(&env, &id).await;
    assert_eq!(first(&e, "title"), None);

    env.set_password_by_hand(&dn, HAND_SET_PASSWORD).await;
    deactivate_and_reactivate(&env, &id, &dn, false).await;
    env.assert_directory_matches().await;

    env.patch(
        &format!("/Users/{id}"),
        json!([{"op": "replace", "value": {"active": false}}]),
    )
    .await;
    delete_user(&mut env, &id, &dn).await;
    env.assert_directory_matches().await;
}

/// Groups: one created with members (Entra: create, then add), an empty
/// one, member add and remove (Entra's shapes), Okta's replace of the
/// whole list (down to empty), a nested group, a deleted member and a
/// deleted group.
pub async fn groups_and_members(server: Server) {
    let Some(mut env) = Env::start(server).await else {
        return;
    };
    let t = env.tag.clone();
    let mut ids = Vec::new();
    for n in ["ann", "bob", "cid"] {
        let login = format!("{n}.{t}@example.org");
        ids.push(env.create_user(okta_user(&login, n, "Member")).await);
    }
    let team = env
        .create_group(
            json!({"schemas": [GROUP], "displayName": format!("Team {t}"),
                             "members": [{"value": ids[0]}, {"value": ids[1]}]}),
        )
        .await;
    let empty = env
        .create_group(json!({"schemas": [GROUP], "displayName": format!("Empty {t}")}))
        .await;
    env.settle().await;
    let e = env
        .entry(&env.linked_dn(Kind::Group, &empty))
        .await
        .expect("the empty group exists");
    match server {
        Server::OpenLdap => assert_eq!(
            e.get("member").cloned().unwrap_or_default().len(),
            1,
            "the placeholder: {e:?}"
        ),
        _ => assert!(!e.contains_key("member"), "no member at all: {e:?}"),
    }
    env.assert_directory_matches().await;

    // Entra: add one member, remove another.
    env.patch(
        &format!("/Groups/{team}"),
        json!([{"op": "Add", "path": "members", "value": [{"value": ids[2]}]}]),
    )
    .await;
    env.patch(
        &format!("/Groups/{team}"),
        json!([{"op": "Remove", "path": "members", "value": [{"value": ids[0]}]}]),
    )
    .await;
    env.settle().await;
    let e = env.entry(&env.linked_dn(Kind::Group, &team)).await.unwrap();
    assert_eq!(e.get("member").map(Vec::len), Some(2), "{e:?}");
    env.assert_directory_matches().await;

    // Okta: replace the whole list, then empty it.
    env.patch(
        &format!("/Groups/{empty}"),
        json!([{"op": "replace", "value": {"id": empty, "displayName": format!("Empty {t}")}},
               {"op": "replace", "path": "members", "value": [{"value": ids[0]}, {"value": ids[2]}]}]),
    )
    .await;
    env.settle().await;
    env.assert_directory_matches().await;
    env.patch(
        &format!("/Groups/{empty}"),
        json!([{"op": "replace", "path": "members", "value": []}]),
    )
    .await;
    env.settle().await;
    env.assert_directory_matches().await;

    // A nested group: a group whose member is a group.
    let outer = env
        .create_group(
            json!({"schemas": [GROUP], "displayName": format!("Outer {t}"),
                             "members": [{"value": team, "type": "Group"}]}),
        )
        .await;
    env.settle().await;
    let e = env
        .entry(&env.linked_dn(Kind::Group, &outer))
        .await
        .unwrap();
    let members: Vec<String> = e
        .get("member")
        .map(|v| v.iter().map(|m| m.to_lowercase()).collect())
        .unwrap_or_default();
    assert_eq!(
        members,
        vec![env.linked_dn(Kind::Group, &team).to_lowercase()],
        "the member value is the inner group's DN"
    );
    env.assert_directory_matches().await;

    // A deleted member leaves the group; a deleted group is gone.
    let dn = env.linked_dn(Kind::User, &ids[1]);
    delete_user(&mut env, &ids[1].clone(), &dn.to_lowercase()).await;
    let e = env.entry(&env.linked_dn(Kind::Group, &team)).await.unwrap();
    assert_eq!(e.get("member").map(Vec::len), Some(1), "{e:?}");
    let outer_dn = env.linked_dn(Kind::Group, &outer);
    env.ok("DELETE", &format!("/Groups/{outer}"), None, 204)
        .await;
    env.settle().await;
    assert!(env.entry(&outer_dn).await.is_none(), "{outer_dn} is gone");
    env.assert_directory_matches().await;
}

/// A changed userName moves the entry (modrdn) and the member values that
/// named it follow.
pub async fn rename_rewrites_member_values(server: Server) {
    let Some(env) = Env::start(server).await else {
        return;
    };
    let t = env.tag.clone();
    let id = env
        .create_user(okta_user(&format!("old.{t}@example.org"), "Re", "Name"))
        .await;
    let group = env
        .create_group(
            json!({"schemas": [GROUP], "displayName": format!("Renamed {t}"),
                             "members": [{"value": id}]}),
        )
        .await;
    env.settle().await;
    let old = env.linked_dn(Kind::User, &id);
    let uuid_attr = if env.is_ad() {
        "objectguid"
    } else {
        "entryuuid"
    };
    let stable = first(&env.entry(&old).await.unwrap(), uuid_attr).expect("a stable id");
    env.patch(
        &format!("/Users/{id}"),
        json!([{"op": "Replace", "path": "userName", "value": format!("new.{t}@example.org")}]),
    )
    .await;
    env.settle().await;
    assert!(env.entry(&old).await.is_none(), "{old} moved away");
    let e = check_user(&env, &id).await;
    assert_eq!(
        first(&e, uuid_attr),
        Some(stable),
        "the same entry, renamed"
    );
    let new = env.linked_dn(Kind::User, &id);
    let g = env
        .entry(&env.linked_dn(Kind::Group, &group))
        .await
        .unwrap();
    assert_eq!(
        g.get("member")
            .map(|v| v.iter().map(|m| m.to_lowercase()).collect::<Vec<_>>()),
        Some(vec![new.to_lowercase()]),
        "the member value follows the rename"
    );
    env.assert_directory_matches().await;
}

/// An entry that was in the directory before the daemon is adopted by the
/// identity provider's lookup, then updated in place; attributes the
/// preset does not name stay.
pub async fn adopts_an_existing_entry(server: Server) {
    let Some(env) = Env::start(server).await else {
        return;
    };
    // AD's preset takes userName as a UPN.
    let name = if env.is_ad() {
        format!("existing.{}@example.com", env.tag)
    } else {
        format!("existing.{}", env.tag)
    };
    let u = json!({"userName": name});
    let dn = env.user_dn(&u);
    let attrs: Vec<(&str, Vec<String>)> = if env.is_ad() {
        vec![
            (
                "objectClass",
                vec![
                    "top".into(),
                    "person".into(),
                    "organizationalPerson".into(),
                    "user".into(),
                ],
            ),
            ("cn", vec![super::env::ad_cn(&name)]),
            ("sAMAccountName", vec![super::env::sam_account_name(&name)]),
            ("userPrincipalName", vec![name.clone()]),
            ("sn", vec!["Before".into()]),
            ("description", vec!["set by hand".into()]),
        ]
    } else {
        vec![
            (
                "objectClass",
                vec![
                    "top".into(),
                    "person".into(),
                    "organizationalPerson".into(),
                    "inetOrgPerson".into(),
                ],
            ),
            ("uid", vec![name.clone()]),
            ("cn", vec![name.clone()]),
            ("sn", vec!["Before".into()]),
            ("description", vec!["set by hand".into()]),
        ]
    };
    let attrs: Vec<(&str, Vec<&str>)> = attrs
        .iter()
        .map(|(k, v)| (*k, v.iter().map(String::as_str).collect()))
        .collect();
    let attrs: Vec<(&str, &[&str])> = attrs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    env.ldap_add(&dn, &attrs).await;
    let uuid_attr = if env.is_ad() {
        "objectguid"
    } else {
        "entryuuid"
    };
    let stable = first(&env.entry(&dn).await.unwrap(), uuid_attr).unwrap();

    let r = env
        .get(&format!("/Users?filter=userName%20eq%20%22{name}%22"))
        .await;
    assert_eq!(
        r["totalResults"], 1,
        "{:?}: adopted by the lookup: {r}",
        server
    );
    let id = r["Resources"][0]["id"].as_str().unwrap().to_string();
    env.patch(
        &format!("/Users/{id}"),
        json!([{"op": "Replace", "path": "title", "value": "Adopted"},
               {"op": "Replace", "path": "name.familyName", "value": "After"}]),
    )
    .await;
    env.settle().await;
    let e = env.entry(&dn).await.expect("the same entry");
    assert_eq!(first(&e, uuid_attr), Some(stable));
    assert_eq!(first(&e, "title").as_deref(), Some("Adopted"));
    assert_eq!(first(&e, "sn").as_deref(), Some("After"));
    assert_eq!(first(&e, "description").as_deref(), Some("set by hand"));
    let r = env
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": name, "name": {"familyName": "Dup"}})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    env.assert_directory_matches().await;
}

/// The preset with the password written where the directory takes it:
/// `userPassword` (hashed by the server), AD's `unicodePwd`.
fn with_password(server: Server) -> impl FnOnce(String) -> String {
    move |preset: String| {
        if preset.lines().any(|l| l.trim() == "[user.password]") {
            return preset;
        }
        let table = match server {
            Server::SambaAd => {
                "[user.password]\nattribute = \"unicodePwd\"\nformat = \"ad_unicode_pwd\"\n"
            }
            _ => "[user.password]\nattribute = \"userPassword\"\n",
        };
        // A table the preset has commented out is taken out of it too.
        let commented: String = table.lines().map(|l| format!("# {l}\n")).collect();
        format!("{}\n{table}", preset.replace(&commented, ""))
    }
}

/// Okta's "Sync password": the password sent on create is the account's,
/// a password change replaces it, a PUT without one keeps it; AD's
/// account ends enabled with it. Checked by binding as the user.
pub async fn password_set_and_changed(server: Server) {
    let Some(env) = Env::start_with(server, with_password(server)).await else {
        return;
    };
    let spc = env.get("/ServiceProviderConfig").await;
    assert_eq!(spc["changePassword"]["supported"], true, "{spc}");
    let login = format!("pw.{}@example.org", env.tag);
    let mut body = okta_user(&login, "Pass", "Word");
    let (first_pw, second_pw) = ("Okta-Pa55word!1", "Changed-Pa55word!2");
    body["password"] = json!(first_pw);
    let id = env.create_user(body.clone()).await;
    env.settle().await;
    let e = check_user(&env, &id).await;
    assert!(
        !env.is_locked(&e),
        "{:?}: enabled with its password: {e:?}",
        server
    );
    let dn = env.linked_dn(Kind::User, &id);
    assert_eq!(
        env.bind_as(&dn, first_pw).await,
        Ok(()),
        "{server:?}: the password sent on create"
    );
    if let Some(stored) = first(&e, "userPassword") {
        assert!(
            stored.starts_with('{'),
            "{server:?}: stored hashed, not {stored:?}"
        );
    }

    // Okta's password change.
    env.patch(
        &format!("/Users/{id}"),
        json!([{"op": "replace", "value": {"password": second_pw}}]),
    )
    .await;
    env.settle().await;
    assert_eq!(
        env.bind_as(&dn, second_pw).await,
        Ok(()),
        "{server:?}: the changed password"
    );
    assert!(
        env.bind_as(&dn, first_pw).await.is_err(),
        "{server:?}: the old password is gone"
    );

    // Okta's PUT never carries the password: it stays.
    let mut put = okta_user(&login, "Pass", "Word-Two");
    put["id"] = json!(id);
    env.ok("PUT", &format!("/Users/{id}"), Some(put), 200).await;
    env.settle().await;
    check_user(&env, &id).await;
    assert_eq!(
        env.bind_as(&dn, second_pw).await,
        Ok(()),
        "{server:?}: a PUT without password keeps it"
    );
    env.assert_directory_matches().await;
}

/// A password the directory's policy refuses (AD's complexity and length
/// rules): the entry parks with the directory's reason and the account
/// keeps the password it had. Samba AD only: the OpenLDAP and 389 DS
/// fixtures run no password policy that would refuse one.
pub async fn a_refused_password_parks_and_keeps_the_old_one(server: Server) {
    let Some(env) = Env::start_with(server, with_password(server)).await else {
        return;
    };
    let login = format!("weak.{}@example.org", env.tag);
    let mut body = okta_user(&login, "Weak", "Password");
    let good = "Okta-Pa55word!1";
    body["password"] = json!(good);
    let id = env.create_user(body).await;
    env.settle().await;
    let dn = env.linked_dn(Kind::User, &id);
    assert_eq!(env.bind_as(&dn, good).await, Ok(()), "the first password");

    env.patch(
        &format!("/Users/{id}"),
        json!([{"op": "replace", "value": {"password": "a"}}]),
    )
    .await;
    let reasons = env.parked_reasons(Duration::from_secs(30)).await;
    assert_eq!(reasons.len(), 1, "one parked entry: {reasons:?}");
    let why = reasons[0].to_lowercase();
    assert!(
        why.contains("constraint") && why.contains("password"),
        "the directory's reason: {reasons:?}"
    );
    assert_eq!(
        env.bind_as(&dn, good).await,
        Ok(()),
        "the account keeps its password"
    );
    assert!(
        env.bind_as(&dn, "a").await.is_err(),
        "the refused password was not set"
    );
    let e = env.entry(&dn).await.expect("the entry is still there");
    assert!(!env.is_locked(&e), "still enabled: {e:?}");
}

/// `scim2ldap check` with the server's own preset: the pairing is right
/// (the server's kind read from its root DSE), the bind works, the schema
/// has what the preset writes and the stable-id attribute exists.
pub async fn check_passes_with_the_preset(server: Server) {
    let Some(env) = Env::start(server).await else {
        return;
    };
    let report = scim2ldap::check::run(&env.config_path()).await;
    let text = report.to_string();
    assert!(report.ok(), "{server:?}: check fails:\n{text}");
    let kind = match server {
        Server::OpenLdap => "OpenLDAP",
        Server::Dirsrv => "389 Directory Server (or FreeIPA)",
        Server::SambaAd => "Active Directory (or Samba AD)",
    };
    assert!(
        text.contains(&format!("the directory is {kind}")),
        "{server:?}: the server's kind:\n{text}"
    );
}

/// The FreeIPA-style preset on plain 389 DS, as far as its schema allows:
/// `check` passes with `nsUniqueId` as the stable id (plain 389 DS has no
/// `ipaUniqueID`) and refuses `ipaUniqueID`, naming the attribute.
pub async fn check_passes_with_the_freeipa_preset_on_389_ds(server: Server) {
    let Some(env) = Env::start(server).await else {
        return;
    };
    let dir = env.config_path().parent().unwrap().to_path_buf();
    // FreeIPA's containers (cn=users,cn=accounts,...) are not on a plain
    // 389 DS: the test's OUs stand in for them.
    std::fs::write(
        dir.join("mapping.toml"),
        include_str!("../../../examples/freeipa.toml")
            .replace("cn=users,cn=accounts,dc=example,dc=com", &env.people)
            .replace("cn=groups,cn=accounts,dc=example,dc=com", &env.groups),
    )
    .unwrap();
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    for (uuid, ok) in [("nsUniqueId", true), ("ipaUniqueID", false)] {
        std::fs::write(
            env.config_path(),
            config.replace(
                "uuid_attribute = \"entryUUID\"",
                &format!("uuid_attribute = \"{uuid}\""),
            ),
        )
        .unwrap();
        let report = scim2ldap::check::run(&env.config_path()).await;
        let text = report.to_string();
        assert_eq!(report.ok(), ok, "{uuid}:\n{text}");
        if !ok {
            assert!(
                report.problems.iter().any(|p| p.contains("ipaUniqueID")),
                "{text}"
            );
        }
    }
}
