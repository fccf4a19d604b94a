use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::scim::schema::ENTERPRISE_USER_URN;
use crate::scim::ScimType;

const EXAMPLE: &str = include_str!("../../../../examples/openldap.toml");
const AD: &str = include_str!("../../../../examples/ad.toml");

/// A small valid file; tests append to it or replace parts of it.
const BASE: &str = r#"
[user]
dn = "uid={userName},ou=people,dc=example,dc=com"
object_classes = ["top", "person", "organizationalPerson", "inetOrgPerson"]

[user.attributes]
uid = "userName"
cn = { from = ["displayName", "{name.givenName} {name.familyName}", "userName"], required = true }
sn = { from = ["name.familyName", "userName"], required = true }

[user.deactivate]
set = { pwdAccountLockedTime = "000001010000Z" }
"#;

const GROUP: &str = r#"
[group]
dn = "cn={displayName},ou=groups,dc=example,dc=com"
object_classes = ["top", "groupOfNames"]
[group.attributes]
cn = "displayName"
[group.members]
attribute = "member"
empty = { placeholder = "cn=empty,dc=example,dc=com" }
"#;

pub(super) fn parse(text: &str) -> Mapping {
    Mapping::parse(text, "mapping.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// The one problem `text` has; fails if it parses or has several.
pub(super) fn problem(text: &str) -> Problem {
    let err = Mapping::parse(text, "mapping.toml").expect_err("should not validate");
    assert_eq!(err.problems().len(), 1, "expected one problem, got:\n{err}");
    err.problems()[0].clone()
}

/// 1-based line of the first line containing `needle`.
pub(super) fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

/// Asserts the problem points at the line holding `needle`, names `key`
/// and says `message` (a substring).
fn check(text: &str, needle: &str, key: &str, message: &str) {
    let p = problem(text);
    assert_eq!(p.file, "mapping.toml");
    assert_eq!(p.line, line_of(text, needle), "line of {p}");
    assert_eq!(p.key, key, "key of {p}");
    assert!(
        p.message.contains(message),
        "message of {p} lacks {message:?}"
    );
    assert!(
        p.to_string()
            .starts_with(&format!("mapping.toml:{}:{}: {key}: ", p.line, p.column)),
        "{p}"
    );
}

fn users() -> SchemaRegistry {
    SchemaRegistry::users(vec![])
}

fn groups() -> SchemaRegistry {
    SchemaRegistry::groups(vec![])
}

/// An Entra create body: no displayName.
fn entra_create() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_URN],
        "id": "6b1f0c3e-0000-4000-8000-000000000001",
        "externalId": "alice",
        "userName": "alice@example.com",
        "active": true,
        "name": {"givenName": "Alice", "familyName": "Smith"},
        "title": "Engineer",
        "emails": [{"primary": true, "type": "work", "value": " Alice@Example.COM "}],
        "phoneNumbers": [
            {"type": "work", "value": "+1 555 0100"},
            {"type": "mobile", "value": "+1 555 0199"}
        ],
        ENTERPRISE_USER_URN: {"department": "Sales", "employeeNumber": "1001", "manager": {"value": "mgr-id"}}
    })
}

struct Dir(HashMap<&'static str, (&'static str, &'static str)>);

impl Resolver for Dir {
    fn dn(&self, id: &str) -> Option<String> {
        self.0.get(id).map(|(dn, _)| dn.to_string())
    }
    fn attribute(&self, id: &str, attribute: &str) -> Vec<String> {
        match self.0.get(id) {
            Some((_, uid)) if attribute.eq_ignore_ascii_case("uid") => vec![uid.to_string()],
            _ => Vec::new(),
        }
    }
}

fn dir() -> Dir {
    Dir(HashMap::from([
        ("mgr-id", ("uid=boss,ou=people,dc=example,dc=com", "boss")),
        ("u1", ("uid=alice,ou=people,dc=example,dc=com", "alice")),
        ("u2", ("uid=bob,ou=people,dc=example,dc=com", "bob")),
    ]))
}

fn attrs(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

// ---- the shipped example ----

#[test]
fn example_parses_and_maps_an_entra_user() {
    let m = parse(EXAMPLE);
    assert_eq!(m.user.rdn_attribute(), "uid");
    assert_eq!(m.user.parent_dn(), "ou=people,dc=example,dc=com");
    assert_eq!(m.user.search_class(), "inetOrgPerson");
    assert!(m.user.is_required("CN") && m.user.is_required("sn") && m.user.is_required("uid"));
    assert!(!m.user.is_required("mail"));
    assert_eq!(m.user_policy.delete, DeleteAction::Delete);
    assert_eq!(
        m.user_policy.deactivate.set["pwdAccountLockedTime"],
        vec!["000001010000Z"]
    );
    let g = m.group.as_ref().expect("example maps groups");
    assert_eq!(g.members.attribute, "member");
    assert_eq!(g.members.value, Reference::Dn);
    assert_eq!(
        g.members.empty,
        EmptyGroup::Placeholder("cn=empty-group-placeholder,dc=example,dc=com".into())
    );
    let managed = m.user.managed_attributes();
    for a in [
        "uid",
        "cn",
        "sn",
        "givenName",
        "displayName",
        "mail",
        "title",
        "telephoneNumber",
        "mobile",
        "departmentNumber",
        "employeeNumber",
        "manager",
    ] {
        assert!(managed.contains(&a), "{a} not managed: {managed:?}");
    }

    let e = m
        .user_entry(&entra_create(), &m.user_registry(), &dir())
        .unwrap();
    assert_eq!(e.dn, "uid=alice@example.com,ou=people,dc=example,dc=com");
    assert_eq!(e.attrs["cn"], vec!["Alice Smith"]);
    assert_eq!(e.attrs["sn"], vec!["Smith"]);
    assert_eq!(e.attrs["mail"], vec!["alice@example.com"]);
    assert_eq!(e.attrs["telephoneNumber"], vec!["+1 555 0100"]);
    assert_eq!(e.attrs["mobile"], vec!["+1 555 0199"]);
    assert_eq!(e.attrs["departmentNumber"], vec!["Sales"]);
    assert_eq!(e.attrs["employeeNumber"], vec!["1001"]);
    assert_eq!(
        e.attrs["manager"],
        vec!["uid=boss,ou=people,dc=example,dc=com"]
    );
    assert!(
        !e.attrs.contains_key("displayName"),
        "no displayName was sent"
    );
    assert!(
        !e.attrs.contains_key("pwdAccountLockedTime"),
        "user is active"
    );
    assert_eq!(
        e.object_classes,
        ["top", "person", "organizationalPerson", "inetOrgPerson"]
    );
}

#[test]
fn example_extension_block_is_valid_when_uncommented() {
    let start = EXAMPLE.find("# [[extension]]").unwrap();
    let block: String = EXAMPLE[start..]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("{}\n{block}\n", &EXAMPLE[..start]);
    let m = parse(&text);
    assert_eq!(m.extensions.len(), 1);
    let ext = &m.extensions[0];
    assert_eq!(ext.resource, ResourceKind::User);
    assert_eq!(
        ext.attributes[1].kind,
        crate::scim::schema::AttrType::Integer
    );
    assert!(ext.attributes[1].multi_valued);
    assert_eq!(
        m.user_registry()
            .extension(&ext.urn)
            .map(|s| s.attributes.len()),
        Some(2)
    );
}

// ---- SCIM → LDAP ----

#[test]
fn fallbacks_move_on_until_a_source_has_a_value() {
    let m = parse(BASE);
    let r = users();
    let e = m
        .user
        .entry(&json!({"userName": "bob", "displayName": "  "}), &r)
        .unwrap();
    assert_eq!(
        e.attrs["cn"],
        vec!["bob"],
        "blank displayName and an incomplete template are skipped"
    );
    assert_eq!(e.attrs["sn"], vec!["bob"]);
    let e = m
        .user
        .entry(
            &json!({"userName": "bob", "name": {"givenName": "Bob", "familyName": "Jones"}}),
            &r,
        )
        .unwrap();
    assert_eq!(e.attrs["cn"], vec!["Bob Jones"]);
    let e = m
        .user
        .entry(&json!({"userName": "bob", "displayName": "Bobby"}), &r)
        .unwrap();
    assert_eq!(e.attrs["cn"], vec!["Bobby"]);
}

#[test]
fn missing_required_value_is_400_naming_attribute_and_sources() {
    let m = parse(BASE);
    let err = m
        .user
        .entry(&json!({"displayName": "x"}), &users())
        .unwrap_err();
    assert_eq!(
        (err.status, err.scim_type),
        (400, Some(ScimType::InvalidValue))
    );
    assert!(
        err.detail.contains("uid is required") && err.detail.contains("tried userName"),
        "{}",
        err.detail
    );
    let no_sn = BASE.replace(
        "[\"name.familyName\", \"userName\"]",
        "[\"name.familyName\", \"nickName\"]",
    );
    let err = parse(&no_sn)
        .user
        .entry(&json!({"userName": "a"}), &users())
        .unwrap_err();
    assert_eq!(err.scim_type, Some(ScimType::InvalidValue));
    assert!(
        err.detail.contains("sn is required")
            && err.detail.contains("tried name.familyName, nickName"),
        "{}",
        err.detail
    );

    let text = BASE.replace(
        "uid = \"userName\"",
        "uid = \"userName\"\ntitle = { from = \"title\", required = true }",
    );
    let err = parse(&text)
        .user
        .entry(&json!({"userName": "a"}), &users())
        .unwrap_err();
    assert!(
        err.detail.contains("title") && err.detail.contains("tried title"),
        "{}",
        err.detail
    );
}

#[test]
fn rdn_values_are_escaped_and_round_trip() {
    let m = parse(BASE);
    for name in [
        "a,b+c=d*)(uid=*",
        " lead",
        "trail ",
        "#hash",
        "x\\y\"z<>;",
        "Jörg\0",
    ] {
        let e = m.user.entry(&json!({"userName": name}), &users()).unwrap();
        let dn = parse_dn(&e.dn).unwrap_or_else(|err| panic!("{:?}: {err}", e.dn));
        assert_eq!(dn.len(), 4, "{:?}", e.dn);
        assert_eq!(
            (dn[0][0].attr.as_str(), dn[0][0].value.as_str()),
            ("uid", name)
        );
        assert_eq!(e.rdn_value, name);
        assert!(e.dn.ends_with(",ou=people,dc=example,dc=com"));
        assert_eq!(e.attrs["uid"], vec![name.to_string()]);
    }
}

#[test]
fn rdn_value_is_added_to_the_attribute_when_the_rule_differs() {
    let text = BASE.replace("uid={userName}", "cn={userName|lowercase} (ext)");
    let m = parse(&text);
    let e = m
        .user
        .entry(
            &json!({"userName": "Bob", "displayName": "Bobby"}),
            &users(),
        )
        .unwrap();
    assert_eq!(e.dn, "cn=bob (ext),ou=people,dc=example,dc=com");
    assert_eq!(e.attrs["cn"], vec!["bob (ext)", "Bobby"]);
    assert_eq!(e.rdn(), "cn=bob (ext)");
}

#[test]
fn multi_valued_sources_booleans_numbers_constants_and_transforms() {
    let text = BASE.replace(
        "uid = \"userName\"",
        r#"uid = "userName"
mail = { from = "emails.value", transform = "lowercase" }
l = { value = "HQ" }
description = "{{{userName|uppercase}}} active={active}"
employeeType = "userType"
roomNumber = { from = "name.formatted", transform = ["trim", "uppercase"] }"#,
    );
    let m = parse(&text);
    let e = m
        .user
        .entry(
            &json!({"userName": "al", "active": false, "userType": 7,
                "name": {"formatted": "  x y "},
                "emails": [{"value": "A@x"}, {"value": "a@X"}, {"value": "b@x"}, {"value": ""}]}),
            &users(),
        )
        .unwrap();
    assert_eq!(
        e.attrs["mail"],
        vec!["a@x", "b@x"],
        "duplicates (ignoring case) and blanks dropped"
    );
    assert_eq!(e.attrs["l"], vec!["HQ"]);
    assert_eq!(e.attrs["description"], vec!["{AL} active=FALSE"]);
    assert_eq!(e.attrs["employeeType"], vec!["7"]);
    assert_eq!(e.attrs["roomNumber"], vec!["X Y"]);
}

// ---- transforms ----

fn tr(text: &str) -> Transform {
    template::Transform::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn before_takes_the_part_before_a_separator_or_the_whole_value() {
    let t = tr("before:@");
    assert_eq!(
        t.apply("Test_User_ab6490ee@contoso.com"),
        "Test_User_ab6490ee"
    );
    assert_eq!(t.apply("alice"), "alice", "no separator: the whole value");
    assert_eq!(t.apply("a@b@c"), "a", "the first separator");
    assert_eq!(t.apply("@x"), "", "nothing before it: blank, so no value");
    assert_eq!(
        tr("before:::").apply("a::b"),
        "a",
        "a separator of any text"
    );
    assert_eq!(tr("before:ü").apply("grüße"), "gr");
}

#[test]
fn max_length_counts_characters_and_never_cuts_one() {
    let t = tr("max_length:20");
    assert_eq!(
        t.apply("Test_User_ab6490ee_long_name"),
        "Test_User_ab6490ee_l"
    );
    assert_eq!(t.apply("short"), "short");
    assert_eq!(t.apply(&"x".repeat(20)), "x".repeat(20));
    // Twenty characters of two, three and four bytes: whole characters.
    assert_eq!(tr("max_length:3").apply("éèêë"), "éèê");
    assert_eq!(tr("max_length:2").apply("日本語"), "日本");
    assert_eq!(tr("max_length:1").apply("😀😀"), "😀");
    // A base letter is not separated from the accents that follow it.
    assert_eq!(tr("max_length:2").apply("ae\u{301}x"), "a");
    assert_eq!(tr("max_length:3").apply("ae\u{301}x"), "ae\u{301}");
    assert_eq!(tr("max_length:2").apply("e\u{301}\u{302}"), "");
    assert_eq!(tr("truncate:5").apply("abcdefg"), "abcde", "alias");
}

#[test]
fn replace_swaps_every_character_of_a_set() {
    let ad = tr(r#"replace:"/\[]:;|=,+*?<>:_"#);
    assert_eq!(
        ad.apply(r#"a"b/c\d[e]f:g;h|i=j,k+l*m?n<o>p"#),
        "a_b_c_d_e_f_g_h_i_j_k_l_m_n_o_p"
    );
    assert_eq!(
        tr("replace: .:").apply("J. R. Smith"),
        "JRSmith",
        "empty: removed"
    );
    assert_eq!(tr("replace:é:e").apply("éé"), "ee");
    assert_eq!(tr("replace:a:xyz").apply("aba"), "xyzbxyz");
}

#[test]
fn trim_with_a_set_trims_those_characters() {
    assert_eq!(tr("trim:. ").apply(" .a.b. ."), "a.b");
    assert_eq!(tr("trim").apply("  a  "), "a");
    assert_eq!(tr("trim:. ").apply("..."), "");
}

#[test]
fn ascii_folds_accents_and_drops_what_has_no_ascii_form() {
    let t = tr("ascii");
    assert_eq!(t.apply("Jérôme Müller-Łukasz"), "Jerome Muller-Lukasz");
    assert_eq!(t.apply("Straße Ørsted Æsir"), "Strasse Orsted AEsir");
    assert_eq!(t.apply("ﬁle"), "file", "compatibility forms");
    assert_eq!(t.apply("李a"), "a");
}

#[test]
fn transforms_print_as_written() {
    for text in [
        "lowercase",
        "uppercase",
        "trim",
        "trim:. ",
        "before:@",
        "max_length:20",
        r#"replace:"/\[]:;|=,+*?<>:_"#,
        "ascii",
    ] {
        assert_eq!(tr(text).to_string(), text);
        assert_eq!(tr(&tr(text).to_string()), tr(text));
    }
}

#[test]
fn bad_transforms_say_what_is_wrong() {
    for (text, msg) in [
        ("max_length:0", "above 0"),
        ("max_length:x", "whole number"),
        ("max_length", "needs an argument"),
        ("before", "needs an argument"),
        ("before:", "needs an argument"),
        ("replace:abc", "separated by ':'"),
        ("replace::_", "names no character"),
        ("lowercase:x", "takes no argument"),
        ("ascii:1", "takes no argument"),
        ("trim:", "needs an argument"),
        ("frob", "unknown transform"),
    ] {
        let e = template::Transform::parse(text).expect_err(text);
        assert!(e.contains(msg), "{text}: {e}");
    }
    // In a rule: the key of the list item, and the line.
    let text = BASE.replace(
        "uid = \"userName\"",
        "uid = \"userName\"\nl = { from = \"userName\", transform = [\"before:@\", \"max_length:0\"] }",
    );
    check(
        &text,
        "max_length:0",
        "user.attributes.l.transform[1]",
        "max_length needs a whole number of characters above 0",
    );
    // In a placeholder: the rule's key.
    let text = BASE.replace("uid = \"userName\"", "uid = \"{userName|max_length:-1}\"");
    check(
        &text,
        "max_length:-1",
        "user.attributes.uid",
        "in placeholder",
    );
}

/// The AD rule of examples/ad.toml, on Entra's and Okta's default
/// userNames.
#[test]
fn the_ad_sam_account_name_rule_fits_ad() {
    let m = parse(AD);
    let sam = |user_name: &str| -> Option<String> {
        let r = json!({"userName": user_name, "name": {"givenName": "T", "familyName": "U"}});
        match m.user.entry(&r, &users()) {
            Ok(e) => Some(e.get("sAMAccountName").unwrap()[0].clone()),
            Err(_) => None,
        }
    };
    assert_eq!(
        sam("Test_User_ab6490ee@contoso.com").as_deref(),
        Some("Test_User_ab6490ee")
    );
    assert_eq!(
        sam("averyveryverylongname.person@contoso.com").as_deref(),
        Some("averyveryverylongnam")
    );
    assert_eq!(
        sam(r#"a"b/c\d[e]f:g;h|i=j,@x"#).as_deref(),
        Some("a_b_c_d_e_f_g_h_i_j_")
    );
    assert_eq!(sam(" .john.smith. @x").as_deref(), Some("john.smith"));
    // Cut at 20, then the trailing dot trimmed.
    assert_eq!(
        sam("abcdefghijklmnopqrs.tu@x").as_deref(),
        Some("abcdefghijklmnopqrs")
    );
    assert_eq!(
        sam("...@x"),
        None,
        "nothing left: refused (400), not written"
    );
    let e = m
        .user
        .entry(
            &json!({"userName": "Test_User_ab6490ee@contoso.com"}),
            &users(),
        )
        .unwrap();
    assert_eq!(
        e.get("userPrincipalName").unwrap(),
        &vec!["Test_User_ab6490ee@contoso.com".to_string()],
        "the UPN as sent"
    );
    let sam_rule = m.user.rule("sAMAccountName").unwrap();
    assert!(sam_rule.unique && sam_rule.required);
    assert_eq!(
        m.user.unique_keys(&e),
        vec![e.rdn_key(), "samaccountname=test_user_ab6490ee".to_string()]
    );
    // A lossy rule is never read back nor used to look an entry up.
    assert_eq!(
        m.user
            .ldap_filter_for("userName", "alice@contoso.com")
            .as_deref(),
        Some("(&(objectClass=user)(userPrincipalName=alice@contoso.com))")
    );
    let back = m.user.to_scim(&e.attrs);
    assert_eq!(back["userName"], "Test_User_ab6490ee@contoso.com");
}

#[test]
fn placeholders_take_every_transform_with_escapes() {
    let text = BASE.replace(
        "uid = \"userName\"",
        r#"uid = "userName"
l = '{userName|before:@|replace:\|\}\"\\:-|max_length:6}'
description = '{userName | lowercase | before:\ @ }'"#,
    );
    let m = parse(&text);
    let e = m
        .user
        .entry(&json!({"userName": r#"A|}"\bcdef @X"#}), &users())
        .unwrap();
    assert_eq!(e.attrs["l"], vec!["A----b"]);
    assert_eq!(e.attrs["description"], vec![r#"a|}"\bcdef"#]);
}

#[test]
fn unique_is_a_rule_key_and_refuses_a_fixed_value() {
    let text = BASE.replace(
        "uid = \"userName\"",
        "uid = \"userName\"\nemployeeNumber = { from = \"userName\", transform = \"before:@\", unique = true }",
    );
    let m = parse(&text);
    let e = m
        .user
        .entry(&json!({"userName": "Al@x"}), &users())
        .unwrap();
    assert_eq!(
        m.user.unique_keys(&e),
        vec!["uid=al@x".to_string(), "employeenumber=al".to_string()]
    );
    // Without unique rules, only the RDN.
    assert_eq!(parse(BASE).user.unique_keys(&e), vec![e.rdn_key()]);
    let text = BASE.replace(
        "uid = \"userName\"",
        "uid = \"userName\"\nl = { value = \"HQ\", unique = true }",
    );
    check(
        &text,
        "unique = true",
        "user.attributes.l.unique",
        "cannot be unique",
    );
}

#[test]
fn id_attribute_holds_the_scim_id() {
    let text = BASE.replace(
        "object_classes = [\"top\", \"person\"",
        "id_attribute = \"employeeNumber\"\nobject_classes = [\"top\", \"person\"",
    );
    let m = parse(&text);
    assert!(m.user.managed_attributes().contains(&"employeeNumber"));
    let e = m
        .user
        .entry(&json!({"id": "abc-1", "userName": "a"}), &users())
        .unwrap();
    assert_eq!(e.attrs["employeeNumber"], vec!["abc-1"]);
    assert_eq!(
        m.user.ldap_filter_for("id", "abc-1").as_deref(),
        Some("(&(objectClass=inetOrgPerson)(employeeNumber=abc-1))")
    );
    assert_eq!(
        m.user
            .to_scim(&attrs(&[("EMPLOYEENUMBER", &["abc-1"]), ("uid", &["a"])]))["id"],
        "abc-1"
    );
}

#[test]
fn complex_value_without_value_sub_is_a_mapping_fault() {
    // `name` is complex without `value`; the check at load time refuses it.
    let text = BASE.replace(
        "uid = \"userName\"",
        "uid = \"userName\"\ndescription = \"name\"",
    );
    let p = problem(&text);
    assert!(
        p.message.contains("complex") && p.message.contains("givenName"),
        "{p}"
    );
}

#[test]
fn deactivation_sets_attributes_and_moves() {
    let text = BASE.replace(
        "set = { pwdAccountLockedTime = \"000001010000Z\" }",
        "set = { pwdAccountLockedTime = \"000001010000Z\", description = [\"disabled\", \"by scim\"] }\nmove_to = \"ou=disabled, dc=example,dc=com\"",
    );
    let m = parse(&text);
    let reg = users();
    let e = m
        .user_entry(
            &json!({"userName": "a,b", "active": "False"}),
            &reg,
            &NoResolver,
        )
        .unwrap();
    assert_eq!(e.dn, r"uid=a\,b,ou=disabled,dc=example,dc=com");
    assert_eq!(e.attrs["description"], vec!["disabled", "by scim"]);
    assert_eq!(e.attrs["pwdAccountLockedTime"], vec!["000001010000Z"]);
    let e = m
        .user_entry(
            &json!({"userName": "a,b", "active": true}),
            &reg,
            &NoResolver,
        )
        .unwrap();
    assert_eq!(e.dn, r"uid=a\,b,ou=people,dc=example,dc=com");
    assert!(!e.attrs.contains_key("pwdAccountLockedTime"));
    let managed = m.user_managed_attributes();
    assert!(managed.contains(&"pwdAccountLockedTime") && managed.contains(&"description"));
}

// ---- groups ----

#[test]
fn group_members_placeholder_and_unresolved() {
    let m = parse(&format!("{BASE}{GROUP}"));
    let g = m.group.as_ref().unwrap();
    let reg = groups();
    let ge = g
        .entry(&json!({"displayName": "Sales, EU", "members": [{"value": "u1"}, {"value": "u2", "type": "User"}, {"value": "gone"}]}), &reg, &dir())
        .unwrap();
    assert_eq!(ge.entry.dn, r"cn=Sales\, EU,ou=groups,dc=example,dc=com");
    assert_eq!(
        ge.entry.attrs["member"],
        vec![
            "uid=alice,ou=people,dc=example,dc=com",
            "uid=bob,ou=people,dc=example,dc=com"
        ]
    );
    assert_eq!(ge.unresolved_members, vec!["gone"]);

    let ge = g
        .entry(
            &json!({"displayName": "Empty", "members": []}),
            &reg,
            &dir(),
        )
        .unwrap();
    assert_eq!(ge.entry.attrs["member"], vec!["cn=empty,dc=example,dc=com"]);
    assert!(g.is_required("member"));
    assert!(g.managed_attributes().contains(&"member"));
    let back = attrs(&[
        ("cn", &["Empty"]),
        ("member", &["CN=empty,dc=example,dc=com", "uid=x"]),
    ]);
    assert_eq!(g.member_values(&back), vec!["uid=x"]);
    assert_eq!(g.to_scim(&back)["displayName"], "Empty");
    assert_eq!(
        g.ldap_filter_for("displayName", "Sales (EU)*").as_deref(),
        Some(r"(&(objectClass=groupOfNames)(cn=Sales \28EU\29\2a))")
    );
}

#[test]
fn member_uid_style_and_empty_allowed() {
    let text = format!("{BASE}{GROUP}")
        .replace(
            "attribute = \"member\"",
            "attribute = \"memberUid\"\nvalue = \"attribute:uid\"",
        )
        .replace(
            "empty = { placeholder = \"cn=empty,dc=example,dc=com\" }",
            "empty = \"allow\"",
        );
    let m = parse(&text);
    let g = m.group.as_ref().unwrap();
    assert_eq!(g.members.value, Reference::Attribute("uid".into()));
    let ge = g
        .entry(
            &json!({"displayName": "G", "members": [{"value": "u2"}]}),
            &groups(),
            &dir(),
        )
        .unwrap();
    assert_eq!(ge.entry.attrs["memberUid"], vec!["bob"]);
    let ge = g
        .entry(&json!({"displayName": "G"}), &groups(), &dir())
        .unwrap();
    assert!(!ge.entry.attrs.contains_key("memberUid"));
    assert!(!g.is_required("memberUid"));
}

/// groupOfNames + posixGroup: member DNs (with the placeholder) and
/// memberUid uids (none while empty).
const COMBINED: &str = r#"
[group]
dn = "cn={displayName},ou=groups,dc=example,dc=com"
object_classes = ["top", "groupOfNames", "posixGroup"]
[group.attributes]
cn = "displayName"
gidNumber = { allocate = "10000-59999" }
[group.members]
attribute = "member"
empty = { placeholder = "cn=empty,dc=example,dc=com" }
also = [{ attribute = "memberUid", value = "attribute:uid" }]
"#;

#[test]
fn also_lists_members_in_a_second_attribute() {
    let m = parse(&format!("{BASE}{COMBINED}"));
    let g = m.group.as_ref().unwrap();
    assert_eq!(
        g.members.also,
        vec![MemberAttribute {
            attribute: "memberUid".into(),
            value: Reference::Attribute("uid".into()),
        }]
    );
    let attrs: Vec<(&str, &Reference, Option<&str>)> = g
        .members
        .attributes()
        .iter()
        .map(|a| (a.attribute, a.value, a.placeholder))
        .collect();
    assert_eq!(
        attrs,
        vec![
            ("member", &Reference::Dn, Some("cn=empty,dc=example,dc=com")),
            ("memberUid", &Reference::Attribute("uid".into()), None),
        ]
    );
    let managed = g.managed_attributes();
    assert!(managed.contains(&"member") && managed.contains(&"memberUid"));
    assert!(g.is_required("member"));
    assert!(
        !g.is_required("memberUid"),
        "an also attribute is removed while empty"
    );

    // "g2" (a nested group) has a DN but no uid: member only, and it is
    // not unresolved.
    struct WithGroup(Dir);
    impl Resolver for WithGroup {
        fn dn(&self, id: &str) -> Option<String> {
            if id == "g2" {
                return Some("cn=nested,ou=groups,dc=example,dc=com".into());
            }
            self.0.dn(id)
        }
        fn attribute(&self, id: &str, a: &str) -> Vec<String> {
            self.0.attribute(id, a)
        }
    }
    let r = WithGroup(dir());
    let ge = g
        .entry(
            &json!({"displayName": "Devs", "members": [{"value": "u1"}, {"value": "g2"}, {"value": "u2"}]}),
            &groups(),
            &r,
        )
        .unwrap();
    assert_eq!(
        ge.entry.attrs["member"],
        vec![
            "uid=alice,ou=people,dc=example,dc=com",
            "cn=nested,ou=groups,dc=example,dc=com",
            "uid=bob,ou=people,dc=example,dc=com"
        ]
    );
    assert_eq!(ge.entry.attrs["memberUid"], vec!["alice", "bob"]);
    assert!(ge.unresolved_members.is_empty());

    let ge = g
        .entry(&json!({"displayName": "Empty"}), &groups(), &r)
        .unwrap();
    assert_eq!(ge.entry.attrs["member"], vec!["cn=empty,dc=example,dc=com"]);
    assert!(
        !ge.entry.attrs.contains_key("memberUid"),
        "no placeholder in memberUid"
    );
    let ge = g
        .entry(
            &json!({"displayName": "OnlyNested", "members": [{"value": "g2"}]}),
            &groups(),
            &r,
        )
        .unwrap();
    assert_eq!(
        ge.entry.attrs["member"],
        vec!["cn=nested,ou=groups,dc=example,dc=com"]
    );
    assert!(!ge.entry.attrs.contains_key("memberUid"));

    // The array-of-tables form is the same; value defaults to "dn".
    let text = format!("{BASE}{COMBINED}").replace(
        "also = [{ attribute = \"memberUid\", value = \"attribute:uid\" }]\n",
        "[[group.members.also]]\nattribute = \"memberUid\"\nvalue = \"attribute:uid\"\n[[group.members.also]]\nattribute = \"uniqueMember\"\n",
    );
    let m = parse(&text);
    let also = &m.group.as_ref().unwrap().members.also;
    assert_eq!(also.len(), 2);
    assert_eq!(also[0].attribute, "memberUid");
    assert_eq!(
        also[1],
        MemberAttribute {
            attribute: "uniqueMember".into(),
            value: Reference::Dn,
        }
    );

    // Without also, nothing changes.
    let m = parse(&format!("{BASE}{GROUP}"));
    let g = m.group.as_ref().unwrap();
    assert!(g.members.also.is_empty());
    assert_eq!(g.members.attributes().len(), 1);
}

#[test]
fn rfc2307bis_example_combines_member_and_member_uid() {
    let m = parse(include_str!(
        "../../../../examples/openldap-rfc2307bis.toml"
    ));
    let g = m.group.as_ref().expect("the preset maps groups");
    assert_eq!(
        g.resource.object_classes(),
        ["top", "groupOfNames", "posixGroup"]
    );
    assert_eq!(g.members.attribute, "member");
    assert_eq!(
        g.members.empty,
        EmptyGroup::Placeholder("cn=empty-group-placeholder,dc=example,dc=com".into())
    );
    assert_eq!(
        g.members.also,
        vec![MemberAttribute {
            attribute: "memberUid".into(),
            value: Reference::Attribute("uid".into()),
        }]
    );
    assert_eq!(g.resource.allocations(), vec![("gidNumber", 10000, 59999)]);
    assert_eq!(m.user.allocations(), vec![("uidNumber", 10000, 59999)]);
}

#[test]
fn error_group_members_also() {
    let text = |also: &str| {
        format!("{BASE}{COMBINED}").replace(
            "also = [{ attribute = \"memberUid\", value = \"attribute:uid\" }]",
            also,
        )
    };
    check(
        &text("also = [{ attribute = \"member Uid\" }]"),
        "also = ",
        "group.members.also[0].attribute",
        "not an LDAP attribute name",
    );
    check(
        &text("also = [{ attribute = \"MEMBER\" }]"),
        "also = ",
        "group.members.also[0].attribute",
        "already a member attribute",
    );
    check(
        &text("also = [{ attribute = \"memberUid\", value = \"attribute:uid\" }, { attribute = \"memberuid\", value = \"attribute:uid\" }]"),
        "also = ",
        "group.members.also[1].attribute",
        "already a member attribute",
    );
    check(
        &text("also = [{ attribute = \"gidNumber\", value = \"attribute:uid\" }]"),
        "also = ",
        "group.members.also[0].attribute",
        "also mapped in [group.attributes]",
    );
    check(
        &text("also = [{ attribute = \"memberUid\", value = \"attribute:mail\" }]"),
        "also = ",
        "group.members.also[0].value",
        "does not write mail",
    );
    check(
        &text("also = [{ attribute = \"memberUid\", value = \"uid\" }]"),
        "also = ",
        "group.members.also[0].value",
        "unknown reference",
    );
    check(
        &text("also = [\n  { attribute = \"memberUid\", value = \"attribute:uid\" },\n  { attribute = \"memberUid2\", value = \"attribute:uid\", empty = \"allow\" },\n]"),
        "memberUid2",
        "group.members.also[1].empty",
        "belongs to [group.members] itself",
    );
    check(
        &text("also = [{ attribute = \"memberUid\", value = \"attribute:uid\", refint = true }]"),
        "also = ",
        "group.members.also[0].refint",
        "covers every DN-valued member attribute",
    );
    check(
        &text("also = [{ attribute = \"memberUid\", valeu = \"attribute:uid\" }]"),
        "also = ",
        "group.members.also.valeu",
        "unknown field `valeu`",
    );
    check(
        &text("also = { attribute = \"memberUid\" }"),
        "also = ",
        "group.members.also",
        "invalid type",
    );
}

// ---- LDAP → SCIM ----

#[test]
fn to_scim_rebuilds_the_resource() {
    let m = parse(EXAMPLE);
    let a = attrs(&[
        ("UID", &["alice"]),
        ("cn", &["Alice Smith"]),
        ("sn", &["Smith"]),
        ("givenName", &["Alice"]),
        ("mail", &["alice@example.com"]),
        ("telephoneNumber", &["+1 555 0100"]),
        ("mobile", &["+1 555 0199"]),
        ("departmentNumber", &["Sales"]),
        ("manager", &["uid=boss,dc=x"]),
        ("unmapped", &["x"]),
    ]);
    let s = m.user.to_scim(&a);
    assert_eq!(s["userName"], "alice");
    assert_eq!(
        s["displayName"], "Alice Smith",
        "read back through cn, whose first source is displayName"
    );
    assert_eq!(
        s["name"],
        json!({"familyName": "Smith", "givenName": "Alice"})
    );
    assert_eq!(
        s["emails"],
        json!([{"type": "work", "value": "alice@example.com"}])
    );
    assert_eq!(
        s["phoneNumbers"],
        json!([{"type": "work", "value": "+1 555 0100"}, {"type": "mobile", "value": "+1 555 0199"}])
    );
    assert_eq!(
        s[ENTERPRISE_USER_URN],
        json!({"department": "Sales"}),
        "manager is resolved, so not read back"
    );
    assert_eq!(
        s["schemas"],
        json!([
            "urn:ietf:params:scim:schemas:core:2.0:User",
            ENTERPRISE_USER_URN
        ])
    );
    assert!(s.get("unmapped").is_none());
    let mut a = a;
    a.insert("displayName".into(), vec!["Ali".into()]);
    assert_eq!(
        m.user.to_scim(&a)["displayName"],
        "Ali",
        "the rule with displayName as its only source wins"
    );
}

#[test]
fn to_scim_types_extension_values() {
    let text = format!(
        "{BASE}\n{}",
        r#"[[extension]]
urn = "urn:example:acme:2.0:User"
resource = "User"
attributes = [{ name = "vip", type = "boolean" }, { name = "badges", type = "integer", multi_valued = true }]
"#
    )
    .replace(
        "uid = \"userName\"",
        "uid = \"userName\"\nl = \"urn:example:acme:2.0:User:vip\"\nroomNumber = \"urn:example:acme:2.0:User:badges\"",
    );
    let m = parse(&text);
    let reg = m.user_registry();
    let r = json!({"userName": "a", "urn:example:acme:2.0:User": {"vip": true, "badges": [3, 4]}});
    let e = m.user.entry(&r, &reg).unwrap();
    assert_eq!(e.attrs["l"], vec!["TRUE"]);
    assert_eq!(e.attrs["roomNumber"], vec!["3", "4"]);
    let s = m.user.to_scim(&e.attrs);
    assert_eq!(
        s["urn:example:acme:2.0:User"],
        json!({"vip": true, "badges": [3, 4]})
    );
}

#[test]
fn ldap_filters_escape_and_use_the_rule() {
    let m = parse(EXAMPLE);
    assert_eq!(
        m.user.ldap_filter_for("userName", "alice").as_deref(),
        Some("(&(objectClass=inetOrgPerson)(uid=alice))")
    );
    assert_eq!(
        m.user
            .ldap_filter_for(
                "urn:ietf:params:scim:schemas:core:2.0:User:userName",
                "a,b+c=d*)(uid=*"
            )
            .as_deref(),
        Some(r"(&(objectClass=inetOrgPerson)(uid=a,b+c=d\2a\29\28uid=\2a))")
    );
    assert_eq!(
        m.user
            .ldap_filter_for(r#"emails[type eq "work"].value"#, " Bob@X ")
            .as_deref(),
        Some("(&(objectClass=inetOrgPerson)(mail=bob@x))"),
        "the rule's transforms apply"
    );
    assert_eq!(
        m.user.ldap_filter_for("displayName", "D").as_deref(),
        Some("(&(objectClass=inetOrgPerson)(displayName=D))")
    );
    assert_eq!(m.user.ldap_filter_for("externalId", "x"), None);
    assert_eq!(m.user.ldap_filter_for("id", "x"), None, "no id_attribute");
    assert_eq!(m.user.ldap_filter_for("not a path", "x"), None);
}

// ---- one test per error kind ----

#[test]
fn error_unknown_key() {
    check(
        &BASE.replace("[user.attributes]", "colour = \"blue\"\n[user.attributes]"),
        "colour",
        "user.colour",
        "unknown field `colour`",
    );
    check(
        &BASE.replace("sn = {", "sn = { transfrm = \"trim\", "),
        "sn = {",
        "user.attributes.sn.transfrm",
        "unknown field `transfrm`",
    );
    check(
        &format!("{BASE}\n[grop]\n"),
        "[grop]",
        "grop",
        "unknown field `grop`",
    );
}

#[test]
fn error_unknown_transform_reads_as_documented() {
    let text = BASE.replace("uid = \"userName\"", "uid = \"userName\"\nmail = { from = 'emails[type eq \"work\"].value', transform = \"lowercas\" }");
    let p = problem(&text);
    let line = line_of(&text, "lowercas");
    let col = text
        .lines()
        .nth(line - 1)
        .unwrap()
        .find("\"lowercas\"")
        .unwrap()
        + 1;
    assert_eq!(
        p.to_string(),
        format!("mapping.toml:{line}:{col}: user.attributes.mail.transform: unknown transform \"lowercas\" ({})", template::Transform::EXPECTED)
    );
    let text = BASE.replace("uid = \"userName\"", "uid = \"{userName|lower}\"");
    check(
        &text,
        "lower",
        "user.attributes.uid",
        "unknown transform \"lower\" (expected lowercase",
    );
}

#[test]
fn error_bad_scim_path() {
    check(
        &BASE.replace("uid = \"userName\"", "uid = \"user Name\""),
        "user Name",
        "user.attributes.uid",
        "bad SCIM path",
    );
    check(
        &BASE.replace(
            "\"name.familyName\", \"userName\"]",
            "\"name.familyName\", \"emails[type eq]\"]",
        ),
        "emails[type eq]",
        "user.attributes.sn.from[1]",
        "bad SCIM path",
    );
    check(
        &BASE.replace("uid = \"userName\"", "uid = \"{userName\""),
        "{userName\"",
        "user.attributes.uid",
        "unclosed '{'",
    );
}

#[test]
fn error_path_not_in_schema() {
    check(
        &BASE.replace("uid = \"userName\"", "uid = \"usrName\""),
        "usrName",
        "user.attributes.uid",
        "\"usrName\" is not an attribute",
    );
    check(
        &BASE.replace(
            "\"name.familyName\", \"userName\"]",
            "\"name.famlyName\", \"userName\"]",
        ),
        "famlyName",
        "user.attributes.sn.from[0]",
        "no sub-attribute \"famlyName\"",
    );
    check(
        &BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nl = \"urn:example:nope:2.0:User:x\"",
        ),
        "nope",
        "user.attributes.l",
        "unknown schema",
    );
    // Group paths are checked against the Group schema.
    check(
        &format!("{BASE}{GROUP}").replace("cn = \"displayName\"", "cn = \"userName\""),
        "cn = \"userName\"",
        "group.attributes.cn",
        "not an attribute",
    );
}

#[test]
fn error_bad_dn_templates() {
    check(
        &BASE.replace("ou=people,dc=example", "ou=people,,dc=example"),
        "dn = ",
        "user.dn",
        "empty RDN",
    );
    check(
        &BASE.replace("uid={userName},", "uid=alice,"),
        "dn = ",
        "user.dn",
        "must use a {placeholder}",
    );
    check(
        &BASE.replace("ou=people", "ou={title}"),
        "dn = ",
        "user.dn",
        "outside the RDN",
    );
    check(
        &BASE.replace(
            "uid={userName},ou=people,dc=example,dc=com",
            "uid={userName}",
        ),
        "dn = ",
        "user.dn",
        "no parent",
    );
    check(
        &BASE.replace("uid={userName},", "uid={userName}+cn={displayName},"),
        "dn = ",
        "user.dn",
        "multi-valued RDNs",
    );
    check(
        &BASE.replace("uid={userName},", "uid={userName};x,"),
        "dn = ",
        "user.dn",
        "must be escaped",
    );
}

#[test]
fn error_rdn_attribute_without_rule() {
    check(
        &BASE.replace("uid={userName}", "mail={userName}"),
        "dn = ",
        "user.dn",
        "the RDN attribute mail has no rule",
    );
}

#[test]
fn error_attribute_names() {
    check(
        &BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nUID = \"userName\"",
        ),
        "UID =",
        "user.attributes.UID",
        "same LDAP attribute",
    );
    check(
        &BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\n\"mail.work\" = \"userName\"",
        ),
        "mail.work",
        "user.attributes.mail.work",
        "not an LDAP attribute name",
    );
    check(
        &BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nobjectClass = \"userName\"",
        ),
        "objectClass =",
        "user.attributes.objectClass",
        "object_classes",
    );
}

#[test]
fn error_object_classes() {
    let text = BASE.replace(
        "[\"top\", \"person\", \"organizationalPerson\", \"inetOrgPerson\"]",
        "[]",
    );
    check(&text, "object_classes", "user.object_classes", "is empty");
    let text = BASE.replace("\"organizationalPerson\"", "\"Person\"");
    check(
        &text,
        "object_classes",
        "user.object_classes[2]",
        "listed twice",
    );
}

#[test]
fn error_rule_shapes() {
    check(
        &BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nl = { required = true }",
        ),
        "l = {",
        "user.attributes.l",
        "needs from",
    );
    check(
        &BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nl = { from = \"title\", value = \"x\" }",
        ),
        "l = {",
        "user.attributes.l.value",
        "not both",
    );
    check(
        &BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nl = { from = [] }",
        ),
        "l = {",
        "user.attributes.l.from",
        "empty list",
    );
    check(
        &BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nl = { from = \"title\", resolve = \"guid\" }",
        ),
        "l = {",
        "user.attributes.l.resolve",
        "unknown reference",
    );
    check(
        &BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nl = \"fixed {{text}}\"",
        ),
        "l = ",
        "user.attributes.l",
        "no {placeholder}",
    );
    check(
        &BASE.replace("uid = \"userName\"", "uid = 3"),
        "uid = 3",
        "user.attributes.uid",
        "invalid type: integer",
    );
}

#[test]
fn error_group_members() {
    let text = format!("{BASE}{GROUP}").replace("attribute = \"member\"\n", "");
    check(
        &text,
        "[group.members]",
        "group.members.attribute",
        "missing field `attribute`",
    );
    let text = format!("{BASE}{GROUP}").replace("[group.members]", "[group.nomembers]");
    check(
        &text,
        "[group.nomembers]",
        "group.nomembers",
        "unknown field",
    );
    let text = format!("{BASE}{GROUP}").replace(
        "empty = { placeholder = \"cn=empty,dc=example,dc=com\" }",
        "empty = \"alow\"",
    );
    check(
        &text,
        "alow",
        "group.members.empty",
        "unknown value \"alow\"",
    );
    let text = format!("{BASE}{GROUP}").replace("cn=empty,dc=example", "cn=empty,,dc=example");
    check(
        &text,
        "placeholder",
        "group.members.empty.placeholder",
        "bad DN",
    );
    let text = format!("{BASE}{GROUP}").replace(
        "attribute = \"member\"",
        "attribute = \"memberUid\"\nvalue = \"attribute:mail\"",
    );
    check(
        &text,
        "attribute:mail",
        "group.members.value",
        "does not write mail",
    );
    let text = format!("{BASE}{GROUP}").replace(
        "cn = \"displayName\"",
        "cn = \"displayName\"\nmember = \"displayName\"",
    );
    check(
        &text,
        "attribute = \"member\"",
        "group.members.attribute",
        "also mapped",
    );
}

#[test]
fn error_deactivate_policy() {
    let no_table = BASE.replace(
        "[user.deactivate]\nset = { pwdAccountLockedTime = \"000001010000Z\" }\n",
        "",
    );
    check(&no_table, "[user]", "user.deactivate", "missing");
    let empty = BASE.replace("set = { pwdAccountLockedTime = \"000001010000Z\" }", "");
    check(
        &empty,
        "[user.deactivate]",
        "user.deactivate",
        "does nothing",
    );
    let clash = BASE.replace("pwdAccountLockedTime", "CN");
    check(&clash, "set = ", "user.deactivate.set.CN", "also mapped");
    let groups = BASE.replace("set = {", "remove_from_groups = true\nset = {");
    check(
        &groups,
        "remove_from_groups",
        "user.deactivate.remove_from_groups",
        "needs a [group]",
    );
    let same = BASE.replace(
        "set = {",
        "move_to = \"ou=People,dc=example,dc=com\"\nset = {",
    );
    check(
        &same,
        "move_to",
        "user.deactivate.move_to",
        "parent of active users",
    );
    let blank = BASE.replace("\"000001010000Z\"", "\"\"");
    check(
        &blank,
        "set = ",
        "user.deactivate.set.pwdAccountLockedTime",
        "non-empty",
    );
}

#[test]
fn error_delete_action() {
    check(
        &format!("{BASE}\n[user.delete]\naction = \"purge\"\n"),
        "purge",
        "user.delete.action",
        "unknown action \"purge\"",
    );
}

#[test]
fn error_extensions() {
    let ext = |body: &str| format!("{BASE}\n[[extension]]\n{body}\n");
    check(
        &ext("urn = \"acme\"\nresource = \"User\"\nattributes = [{ name = \"a\" }]"),
        "urn = ",
        "extension[0].urn",
        "not a schema URN",
    );
    check(
        &ext("urn = \"urn:x:User\"\nresource = \"Device\"\nattributes = [{ name = \"a\" }]"),
        "Device",
        "extension[0].resource",
        "unknown resource",
    );
    check(&ext("urn = \"urn:x:User\"\nresource = \"User\"\nattributes = [{ name = \"a\", type = \"complex\" }]"), "complex", "extension[0].attributes[0].type", "unknown type");
    check(&ext("urn = \"urn:x:User\"\nresource = \"User\"\nattributes = [{ name = \"a\" }, { name = \"A\" }]"), "name = \"A\"", "extension[0].attributes[1].name", "declared twice");
    check(
        &ext(&format!("urn = \"{ENTERPRISE_USER_URN}\"\nresource = \"User\"\nattributes = [{{ name = \"a\" }}]")),
        "urn = ",
        "extension[0].urn",
        "built in",
    );
    check(&ext("urn = \"urn:x:User\"\nresource = \"User\"\nattributes = [{ name = \"a\", colour = 1 }]"), "colour", "extension.attributes.colour", "unknown field");
}

#[test]
fn error_toml_syntax_has_a_line() {
    let text = BASE.replace("uid = \"userName\"", "uid = \"userName\"\nuid = \"x\"");
    let p = problem(&text);
    assert_eq!(p.line, line_of(&text, "uid = \"x\""));
    assert!(p.message.contains("duplicate key"), "{p}");
    let p = problem("[user\n");
    assert_eq!(p.line, 1);
    let p = problem("");
    assert!(p.message.contains("missing field `user`"), "{p}");
}

#[test]
fn all_problems_are_reported_in_file_order() {
    let text = BASE
        .replace("uid = \"userName\"", "uid = \"usrName\"")
        .replace(
            "\"name.familyName\", \"userName\"]",
            "\"name.familyName\", \"userName\"], transform = \"up\"",
        );
    let err = Mapping::parse(&text, "m.toml").unwrap_err();
    let lines: Vec<usize> = err.problems().iter().map(|p| p.line).collect();
    assert_eq!(
        lines,
        vec![line_of(&text, "usrName"), line_of(&text, "\"up\"")]
    );
    assert_eq!(err.to_string().lines().count(), 2);
    assert!(err
        .to_string()
        .starts_with(&format!("m.toml:{}:", lines[0])));
}

// ---- no panics ----

proptest! {
    #[test]
    fn transforms_never_panic_and_max_length_keeps_a_prefix(
        spec in "[a-z_]{0,10}(:[\\PC]{0,6}){0,2}",
        value in "\\PC{0,40}",
        n in 1usize..30,
    ) {
        if let Ok(t) = template::Transform::parse(&spec) {
            let _ = t.apply(&value);
        }
        let cut = tr(&format!("max_length:{n}")).apply(&value);
        prop_assert!(value.starts_with(&cut));
        prop_assert!(cut.chars().count() <= n);
    }

    #[test]
    fn parse_never_panics(text in "\\PC{0,200}") {
        let _ = Mapping::parse(&text, "f.toml");
    }

    #[test]
    fn parse_never_panics_on_dn_and_source_strings(dn in "[a-z={},\\\\ #+\"|]{0,40}", src in "[a-zA-Z.\\[\\]\" {}|:]{0,40}") {
        let text = BASE
            .replace("uid={userName},ou=people,dc=example,dc=com", &dn.replace('\\', "\\\\").replace('"', "\\\""))
            .replace("uid = \"userName\"", &format!("uid = \"userName\"\nl = '{}'", src.replace('\'', "")));
        let _ = Mapping::parse(&text, "f.toml");
    }

    #[test]
    fn any_user_name_gives_a_dn_that_round_trips(name in "\\PC{1,40}") {
        prop_assume!(!name.trim().is_empty());
        let m = parse(BASE);
        let e = m.user.entry(&json!({"userName": name}), &users()).unwrap();
        let dn = parse_dn(&e.dn).unwrap();
        prop_assert_eq!(dn.len(), 4);
        prop_assert_eq!(&dn[0][0].value, &name);
        let filter = m.user.ldap_filter_for("userName", &name).unwrap();
        prop_assert!(!filter[1..filter.len() - 1].contains("*"));
    }
}

#[test]
fn dn_template_literals_keep_dn_syntax() {
    let text = BASE.replace(
        "uid={userName},ou=people",
        r"cn=Team {userName}\\, EU {{1}} ,ou=people",
    );
    let m = parse(&text.replace("uid = \"userName\"", "uid = \"userName\"\ncn = \"userName\"").replace(
        "cn = { from = [\"displayName\", \"{name.givenName} {name.familyName}\", \"userName\"], required = true }\n",
        "",
    ));
    assert_eq!(m.user.rdn_attribute(), "cn");
    let e = m.user.entry(&json!({"userName": "x+y"}), &users()).unwrap();
    assert_eq!(e.rdn_value, "Team x+y, EU {1}");
    assert_eq!(e.dn, r"cn=Team x\+y\, EU {1},ou=people,dc=example,dc=com");
    assert_eq!(e.attrs["cn"], vec!["Team x+y, EU {1}", "x+y"]);
}

#[test]
fn adopt_defaults_users_in_the_parent_and_no_groups() {
    let m = parse(&format!("{BASE}{GROUP}"));
    let u = m.user.adopt_policy();
    assert!(u.enabled);
    assert_eq!(u.under, vec!["ou=people,dc=example,dc=com"]);
    let g = m.group.as_ref().unwrap().resource.adopt_policy();
    assert!(!g.enabled);
    assert!(g.keep_members);
}

#[test]
fn adopt_tables_are_read_and_checked() {
    let text = format!(
        "{BASE}\n[user.adopt]\nunder = [\"OU=Staff, DC=example,DC=com\"]\nnever = [\"uid=root,ou=staff,dc=example,dc=com\"]\nfilter = \"(objectClass=inetOrgPerson)\"\nnever_filter = \"(employeeType=service)\"\n{GROUP}\n[group.adopt]\nenabled = true\nkeep_members = false\n"
    );
    let m = parse(&text);
    let u = m.user.adopt_policy();
    assert_eq!(u.under, vec!["OU=Staff,DC=example,DC=com"]);
    assert_eq!(u.never, vec!["uid=root,ou=staff,dc=example,dc=com"]);
    assert_eq!(
        u.directory_condition().unwrap(),
        "(&(objectClass=inetOrgPerson)(!(employeeType=service)))"
    );
    let g = m.group.as_ref().unwrap().resource.adopt_policy();
    assert!(g.enabled && !g.keep_members);

    check(
        &format!("{BASE}\n[user.adopt]\nunder = [\"not a dn\"]\n"),
        "under = ",
        "user.adopt.under[0]",
        "is not a DN",
    );
    check(
        &format!("{BASE}\n[user.adopt]\nfilter = \"uid=x\"\n"),
        "filter = ",
        "user.adopt.filter",
        "not an LDAP filter",
    );
    check(
        &format!("{BASE}\n[user.adopt]\nkeep_members = true\n"),
        "keep_members",
        "user.adopt.keep_members",
        "groups only",
    );
    check(
        &format!("{BASE}\n[user.adopt]\nunder = []\n"),
        "under = ",
        "user.adopt.under",
        "is empty",
    );
}

/// homeDirectory is IA5 (ASCII only): the posix presets fold a login
/// name's accents instead of writing a value the directory refuses.
#[test]
fn posix_presets_write_an_ascii_home_directory() {
    for text in [
        include_str!("../../../../examples/openldap-posix.toml"),
        include_str!("../../../../examples/openldap-rfc2307bis.toml"),
    ] {
        let m = parse(text);
        let user = serde_json::json!({
            "userName": "Jérôme.Müller",
            "name": {"givenName": "Jérôme", "familyName": "Müller"},
            "urn:ietf:params:scim:schemas:extension:posix:2.0:User":
                {"uidNumber": 10000, "gidNumber": 10000},
            (ALLOCATED_KEY): {"uidNumber": 10000, "gidNumber": 10000},
        });
        let e = m
            .user_entry(&user, &m.user_registry(), &dir())
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(e.attrs["homeDirectory"], vec!["/home/Jerome.Muller"]);
        assert_eq!(e.attrs["uid"], vec!["Jérôme.Müller"]);
    }
}
