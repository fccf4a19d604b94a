//! After each drain, the directory is read back (as the rootdn: no size
//! limit) and checked entry by entry: a phase that was fast but wrong
//! fails the benchmark.

use std::collections::HashSet;

use ldap3::{Scope, SearchEntry};

use scim2ldap_slapd::Slapd;

use crate::daemon::ldap;
use crate::phases::{change, Change};
use crate::raw::PLACEHOLDER;

/// What the deactivation of the example mapping sets (ppolicy's lock).
const LOCKED: &str = "000001010000Z";

/// Entries below `base` matching `filter`, with `attrs`.
async fn entries(slapd: &Slapd, base: &str, filter: &str, attrs: &[&str]) -> Vec<SearchEntry> {
    let mut l = ldap(slapd).await;
    let (found, _) = l
        .search(base, Scope::OneLevel, filter, attrs.to_vec())
        .await
        .unwrap()
        .success()
        .unwrap();
    let _ = l.unbind().await;
    found.into_iter().map(SearchEntry::construct).collect()
}

fn one<'a>(e: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

/// The number in a name `<prefix>NNNN`.
fn index(name: &str, prefix: &str) -> usize {
    name[prefix.len()..].parse().unwrap()
}

/// After a drain: `n` users `<prefix>NNNNNN` below `base`, with the title
/// and displayName of the PATCH phase when `patched`.
pub async fn users(slapd: &Slapd, base: &str, prefix: &str, n: usize, patched: bool) {
    let found = entries(
        slapd,
        base,
        &format!("(&(objectClass=inetOrgPerson)(uid={prefix}*))"),
        &["uid", "title", "displayName"],
    )
    .await;
    assert_eq!(
        found.len(),
        n,
        "{base}: {} users, expected {n}",
        found.len()
    );
    if patched {
        for e in &found {
            let i = index(one(e, "uid").unwrap(), prefix);
            assert_eq!(
                one(e, "title"),
                Some(format!("Title {i}").as_str()),
                "{}",
                e.dn
            );
            assert_eq!(
                one(e, "displayName"),
                Some(format!("Display {i}").as_str()),
                "{}",
                e.dn
            );
        }
    }
}

/// After a drain: the daemon's users `user<from>` .. `user<from+n-1>` are
/// all in the directory.
pub async fn created(slapd: &Slapd, from: usize, n: usize) {
    let found = entries(slapd, &slapd.people_dn(), "(uid=user*)", &["uid"]).await;
    let there = found
        .iter()
        .map(|e| index(one(e, "uid").unwrap(), "user"))
        .filter(|i| (from..from + n).contains(i))
        .count();
    assert_eq!(
        there,
        n,
        "users {from}..{}: {there} in the directory",
        from + n
    );
}

/// Where the `users` prefix lives: the daemon's users in ou=people, the
/// raw baseline's in ou=raw.
fn users_base(slapd: &Slapd, users: &str) -> String {
    if users == "raw" {
        format!("ou=raw,{}", slapd.suffix())
    } else {
        slapd.people_dn()
    }
}

/// After a drain: each group below `base` matching `filter` holds exactly
/// the users `<users>NNNNNN` that `want(cn)` lists, or the placeholder
/// alone if it lists none; returns how many groups and members were
/// found.
async fn groups(
    slapd: &Slapd,
    base: &str,
    filter: &str,
    users: &str,
    want: impl Fn(&str) -> Vec<usize>,
) -> (usize, usize) {
    let found = entries(slapd, base, filter, &["cn", "member"]).await;
    let users_dn = users_base(slapd, users);
    let mut total = 0;
    for e in &found {
        let members: HashSet<String> = e
            .attrs
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case("member"))
            .map(|(_, v)| v.iter().map(|m| m.to_lowercase()).collect())
            .unwrap_or_default();
        let mut expected: HashSet<String> = want(one(e, "cn").unwrap())
            .into_iter()
            .map(|i| format!("uid={users}{i:06},{users_dn}").to_lowercase())
            .collect();
        total += expected.len();
        if expected.is_empty() {
            expected.insert(PLACEHOLDER.to_lowercase());
        }
        assert_eq!(members, expected, "{}", e.dn);
    }
    (found.len(), total)
}

/// After a drain: the groups `<prefix>NNNN` below `base` hold the `n`
/// member adds between them (user i in group i % g).
pub async fn members(slapd: &Slapd, base: &str, prefix: &str, users: &str, n: usize, g: usize) {
    let want = |cn: &str| {
        let k = index(cn, prefix);
        (0..n).filter(|i| i % g == k).collect()
    };
    let found = groups(slapd, base, &format!("(cn={prefix}*)"), users, want).await;
    assert_eq!(found, (g, n), "{base}: (groups, members)");
}

/// After a drain: the one group `cn` below `base` holds users 0..m.
pub async fn one_group(slapd: &Slapd, base: &str, cn: &str, users: &str, m: usize) {
    let found = groups(slapd, base, &format!("(cn={cn})"), users, |_| {
        (0..m).collect()
    })
    .await;
    assert_eq!(found, (1, m), "{cn}: (groups, members)");
}

/// After the mixed phase's drain, for users 0..n (user i in group
/// i % g, users 0..m also in `onegroup`): deleted users are gone and out
/// of every group; updated users carry the new title and displayName;
/// deactivated users are locked (`pwdAccountLockedTime`, the example
/// mapping's `[user.deactivate]`) and still members (it does not set
/// `remove_from_groups`); nobody else is locked.
pub async fn mixed(slapd: &Slapd, n: usize, g: usize, m: usize) {
    let people = slapd.people_dn();
    let found = entries(
        slapd,
        &people,
        "(uid=user*)",
        &["uid", "title", "displayName", "pwdAccountLockedTime"],
    )
    .await;
    let mut seen = HashSet::new();
    for e in &found {
        let i = index(one(e, "uid").unwrap(), "user");
        assert!(i < n, "{}: unexpected", e.dn);
        let (title, display, locked) = match change(i) {
            Change::Delete => panic!("{}: deleted, still in the directory", e.dn),
            Change::Update => (format!("Updated {i}"), format!("Updated display {i}"), None),
            Change::Deactivate => (format!("Title {i}"), format!("Display {i}"), Some(LOCKED)),
        };
        assert_eq!(one(e, "title"), Some(title.as_str()), "{}", e.dn);
        assert_eq!(one(e, "displayName"), Some(display.as_str()), "{}", e.dn);
        assert_eq!(one(e, "pwdAccountLockedTime"), locked, "{}", e.dn);
        seen.insert(i);
    }
    let kept = |i: &usize| change(*i) != Change::Delete;
    assert_eq!(seen.len(), (0..n).filter(kept).count(), "surviving users");

    let groups_dn = slapd.groups_dn();
    let want = |cn: &str| {
        let k = index(cn, "group");
        (0..n).filter(|i| i % g == k).filter(kept).collect()
    };
    let (found, _) = groups(slapd, &groups_dn, "(cn=group*)", "user", want).await;
    assert_eq!(found, g, "groups");
    let want = |_: &str| (0..m).filter(kept).collect();
    let (found, _) = groups(slapd, &groups_dn, "(cn=onegroup)", "user", want).await;
    assert_eq!(found, 1, "onegroup");
}
