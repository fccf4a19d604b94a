//! Groups end to end against slapd: Entra ID's and Okta's group flows,
//! membership styles, empty groups, renames and deactivation.

use serde_json::{json, Value};

use scim2ldap_slapd::SlapdOptions;

use crate::harness::{first, Harness, MAPPING};

/// Runs a group test twice: against a plain slapd (the default: the daemon
/// alone keeps `member` values right) and against one with the `memberof`
/// and `refint` overlays (the server rewrites and removes `member` values
/// on renames and deletes too, and the daemon must not trip over it).
macro_rules! both_directories {
    ($name:ident) => {
        mod $name {
            use scim2ldap_slapd::SlapdOptions;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plain() {
                super::$name(SlapdOptions::default()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn with_overlays() {
                super::$name(SlapdOptions::with_overlays()).await
            }
        }
    };
}

const PEOPLE: &str = "ou=people,dc=example,dc=com";
const GROUPS: &str = "ou=groups,dc=example,dc=com";
const PLACEHOLDER: &str = "cn=empty-group-placeholder,dc=example,dc=com";

async fn user(h: &Harness, name: &str) -> String {
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": name, "name": {"givenName": name, "familyName": "Test"}, "active": true})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

fn dn(uid: &str) -> String {
    format!("uid={uid},{PEOPLE}")
}

/// The member values of a group entry, lower-cased and sorted.
async fn members(h: &Harness, cn: &str) -> Vec<String> {
    h.member_values(&format!("cn={cn},{GROUPS}")).await
}

fn patch(ops: Value) -> Option<Value> {
    Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}))
}

both_directories!(entra_group_flow);
async fn entra_group_flow(dir: SlapdOptions) {
    let h = Harness::start_with(dir, MAPPING).await;
    let alice = user(&h, "alice").await;
    let bob = user(&h, "bob").await;

    // Entra creates groups empty, with Microsoft's marker schema.
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({
                "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                "displayName": "Group1",
                "members": [],
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                            "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                "meta": {"resourceType": "Group"}
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    assert_eq!(
        members(&h, "Group1").await,
        vec![PLACEHOLDER],
        "an empty groupOfNames holds the placeholder"
    );
    let r = h.send("GET", &format!("/Groups/{gid}"), None).await;
    assert!(
        r.body.get("members").is_none(),
        "the placeholder never shows in SCIM: {}",
        r.body
    );
    let r = h
        .send(
            "GET",
            "/Groups?filter=displayName%20eq%20%22group1%22",
            None,
        )
        .await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);

    // Add members (Entra's capitalised Add).
    let r = h
        .send("PATCH", &format!("/Groups/{gid}"), patch(json!([{"op": "Add", "path": "members", "value": [{"value": alice}, {"value": bob}]}])))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(
        members(&h, "Group1").await,
        vec![dn("alice"), dn("bob")],
        "placeholder removed, both members in"
    );
    let r = h.send("GET", &format!("/Users/{alice}"), None).await;
    assert_eq!(
        r.body["groups"][0]["value"],
        gid.as_str(),
        "a user's groups are computed: {}",
        r.body
    );
    let r = h.send("GET", &format!("/Groups/{gid}"), None).await;
    assert_eq!(
        r.body["members"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.body
    );
    let r = h
        .send(
            "GET",
            &format!("/Groups/{gid}?excludedAttributes=members"),
            None,
        )
        .await;
    assert!(r.body.get("members").is_none(), "{}", r.body);

    // Remove with a value list (Entra's default shape).
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "Remove", "path": "members", "value": [{"value": alice}]}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(members(&h, "Group1").await, vec![dn("bob")]);

    // Remove by filter (aadOptscim062020): the group becomes empty and valid.
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "remove", "path": format!("members[value eq \"{bob}\"]")}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(members(&h, "Group1").await, vec![PLACEHOLDER]);

    // An unknown member id is refused and nothing of the request applies.
    let before = h.daemon().store.last_seq();
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([
                {"op": "Replace", "path": "displayName", "value": "Never"},
                {"op": "Add", "path": "members", "value": [{"value": alice}, {"value": "no-such-id"}]}
            ])),
        )
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{}",
        r.body
    );
    assert_eq!(h.daemon().store.last_seq(), before);

    // Rename: the group's RDN is its displayName, so it moves.
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "Replace", "path": "displayName", "value": "Group2"}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert!(h.ldap_get(&format!("cn=Group1,{GROUPS}")).await.is_none());
    assert_eq!(members(&h, "Group2").await, vec![PLACEHOLDER]);

    // Delete.
    let r = h.send("DELETE", &format!("/Groups/{gid}"), None).await;
    assert_eq!(r.status, 204);
    h.settle().await;
    assert!(h.ldap_get(&format!("cn=Group2,{GROUPS}")).await.is_none());
    assert_eq!(h.daemon().store.pending_count(), 0, "nothing parked");
}

both_directories!(okta_group_push_flow);
async fn okta_group_push_flow(dir: SlapdOptions) {
    let h = Harness::start_with(dir, MAPPING).await;
    let u1 = user(&h, "u1").await;
    let u2 = user(&h, "u2").await;

    let r = h
        .send("POST", "/Groups", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Engineering", "members": []})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();

    // Okta renames before each membership change, with the id included.
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "replace", "value": {"id": gid, "displayName": "Eng"}}])),
        )
        .await;
    assert!(r.status == 204 || r.status == 200, "{}", r.body);
    // Member add without `type`, with `display`.
    let r = h
        .send("PATCH", &format!("/Groups/{gid}"), patch(json!([{"op": "add", "path": "members", "value": [{"value": u1, "display": "u1"}]}])))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(members(&h, "Eng").await, vec![dn("u1")]);

    // Replace the whole list, then with [].
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "replace", "path": "members", "value": [{"value": u2}]}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(members(&h, "Eng").await, vec![dn("u2")]);
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "replace", "path": "members", "value": []}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(members(&h, "Eng").await, vec![PLACEHOLDER]);

    // PUT with members, then import-style GET of all groups.
    let r = h
        .send(
            "PUT",
            &format!("/Groups/{gid}"),
            Some(json!({"displayName": "Eng", "members": [{"value": u1}, {"value": u2}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert_eq!(members(&h, "Eng").await, vec![dn("u1"), dn("u2")]);
    let r = h.send("GET", "/Groups?startIndex=1&count=100", None).await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(
        r.body["Resources"][0]["members"].as_array().map(Vec::len),
        Some(2)
    );

    // A second group with the same name is a conflict, not a parked entry.
    let r = h
        .send("POST", "/Groups", Some(json!({"displayName": "eng"})))
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        r.body
    );
    // A name with NUL could not be checked for uniqueness: refused.
    let before = h.daemon().store.last_seq();
    let r = h
        .send("POST", "/Groups", Some(json!({"displayName": "Eng\u{0}"})))
        .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{}",
        r.body
    );
    assert_eq!(h.daemon().store.last_seq(), before);
    assert_eq!(h.daemon().store.pending_count(), 0);
}

both_directories!(user_rename_rewrites_groups_and_deleting_last_member_keeps_group_valid);
async fn user_rename_rewrites_groups_and_deleting_last_member_keeps_group_valid(dir: SlapdOptions) {
    let h = Harness::start_with(dir, MAPPING).await;
    let carol = user(&h, "carol").await;
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "Ops", "members": [{"value": carol}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    h.settle().await;
    assert_eq!(members(&h, "Ops").await, vec![dn("carol")]);

    // Rename: modrdn of the user, and the group's member value follows.
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{carol}"),
            patch(json!([{"op": "replace", "path": "userName", "value": "caroline"}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert!(h.ldap_get(&dn("carol")).await.is_none());
    assert_eq!(members(&h, "Ops").await, vec![dn("caroline")]);

    // Deleting the last member leaves a valid group with the placeholder.
    let r = h.send("DELETE", &format!("/Users/{carol}"), None).await;
    assert_eq!(r.status, 204);
    h.settle().await;
    assert!(h.ldap_get(&dn("caroline")).await.is_none());
    assert_eq!(members(&h, "Ops").await, vec![PLACEHOLDER]);
    let r = h
        .send("GET", "/Groups?filter=displayName%20eq%20%22Ops%22", None)
        .await;
    assert!(
        r.body["Resources"][0].get("members").is_none(),
        "{}",
        r.body
    );
    assert_eq!(h.daemon().store.pending_count(), 0, "nothing parked");
}

/// The mapping with its [group] table swapped for another style.
fn mapping_with_group(group: &str) -> String {
    let base = crate::harness::MAPPING;
    let start = base
        .find("\n[group]\n")
        .expect("example has a [group] table")
        + 1;
    let end = base[start..]
        .find("\n# Custom SCIM schema extensions")
        .map(|i| start + i + 1)
        .unwrap_or(base.len());
    format!("{}{group}\n{}", &base[..start], &base[end..])
}

both_directories!(member_uid_and_unique_member_styles);
async fn member_uid_and_unique_member_styles(dir: SlapdOptions) {
    // posixGroup + memberUid (uid values), empty allowed.
    let posix = mapping_with_group(
        r#"[group]
dn = "cn={displayName},ou=groups,dc=example,dc=com"
object_classes = ["top", "posixGroup"]
[group.attributes]
cn = "displayName"
gidNumber = { value = "5000" }
[group.members]
attribute = "memberUid"
value = "attribute:uid"
empty = "allow"
"#,
    );
    let h = Harness::start_with(dir.clone(), &posix).await;
    let dave = user(&h, "dave").await;
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "staff", "members": [{"value": dave}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    let g = h
        .ldap_get(&format!("cn=staff,{GROUPS}"))
        .await
        .expect("posix group");
    assert_eq!(first(&g, "memberUid").as_deref(), Some("dave"));
    // A uid change rewrites memberUid.
    h.send(
        "PATCH",
        &format!("/Users/{dave}"),
        patch(json!([{"op": "replace", "path": "userName", "value": "david"}])),
    )
    .await;
    h.settle().await;
    let g = h.ldap_get(&format!("cn=staff,{GROUPS}")).await.unwrap();
    assert_eq!(first(&g, "memberUid").as_deref(), Some("david"));
    // Empty is allowed: the attribute simply goes.
    h.send(
        "PATCH",
        &format!("/Groups/{gid}"),
        patch(json!([{"op": "replace", "path": "members", "value": []}])),
    )
    .await;
    h.settle().await;
    let g = h.ldap_get(&format!("cn=staff,{GROUPS}")).await.unwrap();
    assert_eq!(first(&g, "memberUid"), None);
    assert_eq!(h.daemon().store.pending_count(), 0);
    drop(h);

    // groupOfUniqueNames + uniqueMember (DNs), with a placeholder.
    let unique = mapping_with_group(
        r#"[group]
dn = "cn={displayName},ou=groups,dc=example,dc=com"
object_classes = ["top", "groupOfUniqueNames"]
[group.attributes]
cn = "displayName"
[group.members]
attribute = "uniqueMember"
empty = { placeholder = "cn=nobody,dc=example,dc=com" }
"#,
    );
    let h = Harness::start_with(dir, &unique).await;
    let erin = user(&h, "erin").await;
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "uniq", "members": [{"value": erin}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    let g = h
        .ldap_get(&format!("cn=uniq,{GROUPS}"))
        .await
        .expect("unique group");
    assert_eq!(
        first(&g, "uniqueMember").map(|s| s.to_lowercase()),
        Some(dn("erin"))
    );
    h.send(
        "PATCH",
        &format!("/Groups/{gid}"),
        patch(json!([{"op": "remove", "path": "members"}])),
    )
    .await;
    h.settle().await;
    let g = h.ldap_get(&format!("cn=uniq,{GROUPS}")).await.unwrap();
    assert_eq!(
        first(&g, "uniqueMember").as_deref(),
        Some("cn=nobody,dc=example,dc=com")
    );
    assert_eq!(h.daemon().store.pending_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_locks_and_reactivation_unlocks() {
    let h = Harness::start().await;
    let frank = user(&h, "frank").await;
    h.settle().await;
    // Entra's string boolean.
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{frank}"),
            patch(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        )
        .await;
    assert_eq!(
        (r.status, r.body["active"].as_bool()),
        (200, Some(false)),
        "{}",
        r.body
    );
    h.settle().await;
    let e = h.ldap_get(&dn("frank")).await.expect("still there");
    assert_eq!(
        first(&e, "pwdAccountLockedTime").as_deref(),
        Some("000001010000Z")
    );
    let r = h.send("GET", &format!("/Users/{frank}"), None).await;
    assert_eq!(
        r.body["active"], false,
        "a deactivated user is still returned"
    );

    // Okta's path-less replace reactivates.
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{frank}"),
            patch(json!([{"op": "replace", "value": {"active": true}}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    let e = h.ldap_get(&dn("frank")).await.unwrap();
    assert_eq!(
        first(&e, "pwdAccountLockedTime"),
        None,
        "reactivation removes the lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_can_move_and_delete_can_deactivate() {
    let mapping = crate::harness::MAPPING
        .replace(
            "# move_to = \"ou=disabled,dc=example,dc=com\"",
            "move_to = \"ou=groups,dc=example,dc=com\"",
        )
        .replace("action = \"delete\"", "action = \"deactivate\"");
    assert!(
        mapping.contains("move_to = \"ou=groups"),
        "the example's commented move_to line changed"
    );
    let h = Harness::start_with(Default::default(), &mapping).await;
    let gina = user(&h, "gina").await;
    h.settle().await;
    let r = h.send("DELETE", &format!("/Users/{gina}"), None).await;
    assert_eq!(r.status, 204);
    h.settle().await;
    assert!(
        h.ldap_get(&dn("gina")).await.is_none(),
        "moved away from ou=people"
    );
    let e = h
        .ldap_get(&format!("uid=gina,{GROUPS}"))
        .await
        .expect("kept, deactivated, under move_to");
    assert_eq!(
        first(&e, "pwdAccountLockedTime").as_deref(),
        Some("000001010000Z")
    );
    assert_eq!(h.daemon().store.pending_count(), 0);
}

both_directories!(deactivated_users_leave_their_groups_and_come_back);
async fn deactivated_users_leave_their_groups_and_come_back(dir: SlapdOptions) {
    let mapping =
        crate::harness::MAPPING.replace("# remove_from_groups = true", "remove_from_groups = true");
    assert!(
        mapping.contains("\nremove_from_groups = true"),
        "the example's commented line changed"
    );
    let h = Harness::start_with(dir, &mapping).await;
    let hal = user(&h, "hal").await;
    let ivy = user(&h, "ivy").await;
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "Solo", "members": [{"value": hal}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "Pair", "members": [{"value": hal}, {"value": ivy}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    h.settle().await;

    let r = h
        .send(
            "PATCH",
            &format!("/Users/{hal}"),
            patch(json!([{"op": "replace", "path": "active", "value": false}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert_eq!(
        members(&h, "Pair").await,
        vec![dn("ivy")],
        "left out while inactive"
    );
    assert_eq!(
        members(&h, "Solo").await,
        vec![PLACEHOLDER],
        "a group left empty keeps its placeholder"
    );
    // SCIM still lists the membership: the IdP's view does not change.
    let r = h.send("GET", &format!("/Users/{hal}"), None).await;
    assert_eq!(
        r.body["groups"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.body
    );

    let r = h
        .send(
            "PATCH",
            &format!("/Users/{hal}"),
            patch(json!([{"op": "replace", "path": "active", "value": true}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert_eq!(
        members(&h, "Pair").await,
        vec![dn("hal"), dn("ivy")],
        "back when reactivated"
    );
    assert_eq!(
        members(&h, "Solo").await,
        vec![dn("hal")],
        "placeholder gone again"
    );
    assert_eq!(h.daemon().store.pending_count(), 0, "nothing parked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posix_numbers_are_allocated_once_from_the_range() {
    let base = crate::harness::MAPPING.replace(
        "object_classes = [\"top\", \"person\", \"organizationalPerson\", \"inetOrgPerson\"]",
        "object_classes = [\"top\", \"person\", \"organizationalPerson\", \"inetOrgPerson\", \"posixAccount\"]",
    );
    assert!(
        base.contains("\"posixAccount\"]"),
        "the example's user object_classes line changed"
    );
    let users_posix = base.replace(
        "[user.attributes]\n",
        "[user.attributes]\nuidNumber = { allocate = \"20000-20001\" }\ngidNumber = { value = \"100\" }\nhomeDirectory = \"/home/{userName}\"\n",
    );
    let mapping = {
        let start = users_posix.find("\n[group]\n").unwrap() + 1;
        let end = users_posix[start..]
            .find("\n# Custom SCIM schema extensions")
            .map(|i| start + i + 1)
            .unwrap_or(users_posix.len());
        format!(
            "{}{}\n{}",
            &users_posix[..start],
            r#"[group]
dn = "cn={displayName},ou=groups,dc=example,dc=com"
object_classes = ["top", "posixGroup"]
[group.attributes]
cn = "displayName"
gidNumber = { allocate = "30000-39999" }
[group.members]
attribute = "memberUid"
value = "attribute:uid"
empty = "allow"
"#,
            &users_posix[end..]
        )
    };
    let h = Harness::start_with(Default::default(), &mapping).await;
    let a = user(&h, "pa").await;
    let b = user(&h, "pb").await;
    h.settle().await;
    let ea = h.ldap_get(&dn("pa")).await.expect("posix user pa");
    let eb = h.ldap_get(&dn("pb")).await.expect("posix user pb");
    assert_eq!(first(&ea, "uidNumber").as_deref(), Some("20000"));
    assert_eq!(first(&eb, "uidNumber").as_deref(), Some("20001"));
    assert_eq!(first(&ea, "homeDirectory").as_deref(), Some("/home/pa"));

    // The number stays with the user through PUT and PATCH, and is not
    // shown over SCIM.
    let r = h
        .send(
            "PUT",
            &format!("/Users/{a}"),
            Some(json!({"userName": "pa", "name": {"givenName": "P", "familyName": "A"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.body.to_string().contains("20000"),
        "allocated numbers are not SCIM attributes: {}",
        r.body
    );
    h.send(
        "PATCH",
        &format!("/Users/{b}"),
        patch(json!([{"op": "replace", "path": "title", "value": "x"}])),
    )
    .await;
    h.settle().await;
    assert_eq!(
        first(&h.ldap_get(&dn("pa")).await.unwrap(), "uidNumber").as_deref(),
        Some("20000")
    );
    assert_eq!(
        first(&h.ldap_get(&dn("pb")).await.unwrap(), "uidNumber").as_deref(),
        Some("20001")
    );

    // The range is used up: a clear error, nothing journaled.
    let before = h.daemon().store.last_seq();
    let r = h
        .send("POST", "/Users", Some(json!({"userName": "pc"})))
        .await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body["detail"].as_str().unwrap().contains("20000-20001"),
        "{}",
        r.body
    );
    assert_eq!(h.daemon().store.last_seq(), before);

    // Groups get a gidNumber the same way.
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "devs", "members": [{"value": a}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    h.settle().await;
    let g = h
        .ldap_get(&format!("cn=devs,{GROUPS}"))
        .await
        .expect("posix group");
    assert_eq!(first(&g, "gidNumber").as_deref(), Some("30000"));
    assert_eq!(first(&g, "memberUid").as_deref(), Some("pa"));
    assert_eq!(h.daemon().store.pending_count(), 0, "nothing parked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_display_is_kept_as_sent() {
    let h = Harness::start().await;
    let jo = user(&h, "jo").await;
    let kim = user(&h, "kim").await;
    let r = h.send("POST", "/Groups", Some(json!({"displayName": "Shown", "members": [{"value": jo, "display": "Jo Example"}]}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["members"][0]["display"], "Jo Example", "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    h.send(
        "PATCH",
        &format!("/Groups/{gid}"),
        patch(
            json!([{"op": "add", "path": "members", "value": [{"value": kim, "display": "Kim"}]}]),
        ),
    )
    .await;
    let r = h.send("GET", &format!("/Groups/{gid}"), None).await;
    let shown: Vec<(String, String)> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["value"].as_str().unwrap().to_string(),
                m["display"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        shown.contains(&(jo.clone(), "Jo Example".to_string()))
            && shown.contains(&(kim.clone(), "Kim".to_string())),
        "{shown:?}"
    );
}

/// The values of one attribute of a group entry, sorted (DNs
/// lower-cased): empty when the attribute is absent.
async fn group_values(h: &Harness, cn: &str, attr: &str) -> Vec<String> {
    let e = h
        .ldap_get(&format!("cn={cn},{GROUPS}"))
        .await
        .unwrap_or_else(|| panic!("group {cn} exists"));
    let mut v: Vec<String> = e
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| {
            v.iter()
                .map(|s| {
                    if s.contains('=') {
                        s.to_lowercase()
                    } else {
                        s.clone()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

both_directories!(member_and_member_uid_on_one_group_entry);
/// groupOfNames + posixGroup on one entry (the rfc2307bis preset, against
/// a slapd where posixGroup is AUXILIARY): `member` holds DNs and the
/// placeholder, `memberUid` the uids of user members and nothing while
/// empty, through every kind of change.
async fn member_and_member_uid_on_one_group_entry(dir: SlapdOptions) {
    let mapping = include_str!("../../examples/openldap-rfc2307bis.toml")
        .replace("# remove_from_groups = true", "remove_from_groups = true");
    assert!(
        mapping.contains("\nremove_from_groups = true"),
        "the preset's commented remove_from_groups line changed"
    );
    // Run with and without the overlays: without them scim2ldap itself
    // rewrites and removes member values.
    let opts = SlapdOptions {
        posix_group_auxiliary: true,
        ..dir
    };
    let h = Harness::start_with(opts, &mapping).await;
    let report = scim2ldap::check::run(&h.dir.join("config.toml")).await;
    assert!(report.ok(), "{report}");
    let alice = user(&h, "alice").await;
    let bob = user(&h, "bob").await;

    // An empty group: the placeholder in member, no memberUid, a gidNumber
    // from the range.
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "unix", "members": []})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    let mut classes = group_values(&h, "unix", "objectClass").await;
    classes.iter_mut().for_each(|c| *c = c.to_lowercase());
    assert_eq!(classes, vec!["groupofnames", "posixgroup", "top"]);
    assert_eq!(group_values(&h, "unix", "gidNumber").await, vec!["10000"]);
    assert_eq!(group_values(&h, "unix", "member").await, vec![PLACEHOLDER]);
    assert!(group_values(&h, "unix", "memberUid").await.is_empty());

    // Two users (Entra's Add): both attributes, placeholder gone.
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "Add", "path": "members", "value": [{"value": alice}, {"value": bob}]}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(
        group_values(&h, "unix", "member").await,
        vec![dn("alice"), dn("bob")]
    );
    assert_eq!(
        group_values(&h, "unix", "memberUid").await,
        vec!["alice", "bob"]
    );

    // A nested group is a member DN, and has no uid for memberUid.
    let r = h
        .send("POST", "/Groups", Some(json!({"displayName": "inner"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let inner = r.body["id"].as_str().unwrap().to_string();
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "add", "path": "members", "value": [{"value": inner}]}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(group_values(&h, "inner", "gidNumber").await, vec!["10001"]);
    let inner_dn = format!("cn=inner,{GROUPS}");
    assert_eq!(
        group_values(&h, "unix", "member").await,
        vec![inner_dn.clone(), dn("alice"), dn("bob")]
    );
    assert_eq!(
        group_values(&h, "unix", "memberUid").await,
        vec!["alice", "bob"]
    );

    // Remove with Entra's value list: a user and the nested group.
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "Remove", "path": "members", "value": [{"value": alice}, {"value": inner}]}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(group_values(&h, "unix", "member").await, vec![dn("bob")]);
    assert_eq!(group_values(&h, "unix", "memberUid").await, vec!["bob"]);

    // A userName change renames the entry (uid is the RDN): member gets
    // the new DN, memberUid the new uid.
    let r = h
        .send(
            "PATCH",
            &format!("/Users/{bob}"),
            patch(json!([{"op": "replace", "path": "userName", "value": "robert"}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert!(h.ldap_get(&dn("bob")).await.is_none());
    assert_eq!(group_values(&h, "unix", "member").await, vec![dn("robert")]);
    assert_eq!(group_values(&h, "unix", "memberUid").await, vec!["robert"]);

    // remove_from_groups: out of both attributes while inactive (the
    // placeholder keeps the groupOfNames valid), back when reactivated.
    for (active, member, uids) in [
        (false, vec![PLACEHOLDER.to_string()], vec![]),
        (true, vec![dn("robert")], vec!["robert".to_string()]),
    ] {
        let r = h
            .send(
                "PATCH",
                &format!("/Users/{bob}"),
                patch(json!([{"op": "replace", "path": "active", "value": active}])),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        h.settle().await;
        assert_eq!(
            group_values(&h, "unix", "member").await,
            member,
            "active={active}"
        );
        assert_eq!(
            group_values(&h, "unix", "memberUid").await,
            uids,
            "active={active}"
        );
    }

    // Deleting the last member: back to the placeholder, memberUid gone.
    let r = h.send("DELETE", &format!("/Users/{bob}"), None).await;
    assert_eq!(r.status, 204);
    h.settle().await;
    assert!(h.ldap_get(&dn("robert")).await.is_none());
    assert_eq!(group_values(&h, "unix", "member").await, vec![PLACEHOLDER]);
    assert!(group_values(&h, "unix", "memberUid").await.is_empty());

    // PUT with the whole list.
    let r = h
        .send(
            "PUT",
            &format!("/Groups/{gid}"),
            Some(json!({"displayName": "unix", "members": [{"value": alice}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert_eq!(group_values(&h, "unix", "member").await, vec![dn("alice")]);
    assert_eq!(group_values(&h, "unix", "memberUid").await, vec!["alice"]);

    // The directory disagrees with a delta (memberUid removed by hand):
    // the writer converges both attributes instead.
    h.ldap_modify(
        &format!("cn=unix,{GROUPS}"),
        vec![ldap3::Mod::Delete(
            "memberUid".to_string(),
            std::collections::HashSet::from(["alice".to_string()]),
        )],
    )
    .await;
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            patch(json!([{"op": "remove", "path": format!("members[value eq \"{alice}\"]")}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    assert_eq!(group_values(&h, "unix", "member").await, vec![PLACEHOLDER]);
    assert!(group_values(&h, "unix", "memberUid").await.is_empty());
    assert_eq!(group_values(&h, "unix", "gidNumber").await, vec!["10000"]);
    assert_eq!(h.daemon().store.pending_count(), 0, "nothing parked");
}
