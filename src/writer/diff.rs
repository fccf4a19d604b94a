//! Comparing entries: the attribute diff between a plan and what the
//! directory holds, value and DN normalisation, userAccountControl bits,
//! and the fingerprint of an applied entry with the modifications it
//! allows without a read.
//!
//! Architecture invariant: pure functions over plans and read entries; no
//! connection, no store access (only the link's `Applied` type), no
//! dispatcher.

use std::collections::{HashMap, HashSet};

use ldap3::{Mod, SearchEntry};

use super::plan::Desired;
use crate::store::{Applied, Fnv};

pub(super) const UAC: &str = "userAccountControl";

/// The userAccountControl value with ACCOUNTDISABLE (bit 2) set or cleared,
/// starting from what the entry has (else the mapped value, else 512, a
/// normal account), all other bits kept.
pub fn user_account_control(current: Option<&str>, disable: bool) -> String {
    const ACCOUNTDISABLE: u32 = 2;
    let base = current
        .and_then(|c| c.trim().parse::<u32>().ok())
        .unwrap_or(512);
    let v = if disable {
        base | ACCOUNTDISABLE
    } else {
        base & !ACCOUNTDISABLE
    };
    v.to_string()
}

/// A member value in comparable form: DNs parsed and lower-cased, other
/// values lower-cased (member attributes compare case-insensitively).
pub(super) fn norm_value(v: &str) -> String {
    match crate::dn::parse_dn(v) {
        Ok(dn) if v.contains('=') => dn
            .iter()
            .map(|rdn| {
                rdn.iter()
                    .map(|a| format!("{}={}", a.attr.to_lowercase(), a.value.to_lowercase()))
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => v.to_lowercase(),
    }
}

/// The modifications that make `cur` match `want`, touching only managed
/// attributes (and adding, never removing, object classes).
pub fn diff(want: &Desired, cur: &SearchEntry) -> Vec<Mod<String>> {
    let mut mods = Vec::new();
    let have_oc: HashSet<String> = attr_ci(&cur.attrs, "objectClass")
        .into_iter()
        .flatten()
        .map(|s| s.to_lowercase())
        .collect();
    let missing: HashSet<String> = want
        .object_classes
        .iter()
        .filter(|oc| !have_oc.contains(&oc.to_lowercase()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        mods.push(Mod::Add("objectClass".to_string(), missing));
    }
    for name in &want.managed {
        let desired: HashSet<String> = want
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.iter().filter(|s| !s.is_empty()).cloned().collect())
            .unwrap_or_default();
        let current: HashSet<String> = attr_ci(&cur.attrs, name)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if desired == current {
            continue;
        }
        if desired.is_empty() {
            if want.required.iter().any(|r| r.eq_ignore_ascii_case(name)) || current.is_empty() {
                continue;
            }
            mods.push(Mod::Delete(name.clone(), HashSet::new()));
        } else {
            mods.push(Mod::Replace(name.clone(), desired));
        }
    }
    mods
}

/// The managed attributes a fingerprint covers: (lower-cased, as the plan
/// spells it), sorted and without case duplicates.
fn managed_names(want: &Desired) -> Vec<(String, &str)> {
    let mut names: Vec<(String, &str)> = want
        .managed
        .iter()
        .map(|n| (n.to_lowercase(), n.as_str()))
        .collect();
    names.sort();
    names.dedup_by(|a, b| a.0 == b.0);
    names
}

/// The values `want` sets for `name`, as [`diff`] compares them: the
/// non-empty ones, as a set.
fn desired_set(want: &Desired, name: &str) -> HashSet<String> {
    want.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.iter().filter(|s| !s.is_empty()).cloned().collect())
        .unwrap_or_default()
}

/// A set of values as one stable hash (sorted, each with its length).
fn values_hash(values: &HashSet<String>) -> u64 {
    let mut sorted: Vec<&String> = values.iter().collect();
    sorted.sort();
    let mut h = Fnv::default();
    h.u64(sorted.len() as u64);
    for v in sorted {
        h.field(v.as_bytes());
    }
    h.finish()
}

/// Lower-cased, sorted, deduplicated names, hashed into `h`.
fn names_into(h: &mut Fnv, names: &[String]) {
    let mut n: Vec<String> = names.iter().map(|s| s.to_lowercase()).collect();
    n.sort();
    n.dedup();
    h.u64(n.len() as u64);
    for x in &n {
        h.field(x.as_bytes());
    }
}

/// The fingerprint of the entry `want` describes once it is applied: the
/// shape (object classes, managed and required names, whether
/// userAccountControl is the writer's through `ad_disable`), one hash per
/// managed attribute of the values [`diff`] would leave there, and the
/// ACCOUNTDISABLE state. A required attribute without a value hashes as
/// empty (the entry keeps whatever it has, which the next update with a
/// value replaces).
pub(super) fn fingerprint(want: &Desired) -> Applied {
    let names = managed_names(want);
    let mut shape = Fnv::default();
    names_into(&mut shape, &want.object_classes);
    names_into(&mut shape, &want.managed);
    names_into(&mut shape, &want.required);
    shape.u64(u64::from(want.ad_disable.is_some()));
    let attrs = names
        .iter()
        .map(|(lower, name)| {
            // With `ad_disable` the writer sets one bit of the value the
            // entry has: the mapped value is only the add's starting point.
            if want.ad_disable.is_some() && lower.eq_ignore_ascii_case(UAC) {
                0
            } else {
                values_hash(&desired_set(want, name))
            }
        })
        .collect();
    Applied {
        shape: shape.finish(),
        attrs,
        disabled: want.ad_disable,
        from: 0,
    }
}

/// The modifications that bring an entry last applied as `last` to `want`,
/// without reading it: a replace of every managed attribute whose values
/// changed (with no values: the attribute is removed; a required one is
/// left alone), and the new fingerprint. `None` when the entry must be
/// read: the shape changed (a mapping reload), ACCOUNTDISABLE changes (the
/// other bits are the entry's), or an attribute that group member values
/// copy (memberUid = uid) changes (its old value is needed to rewrite
/// them).
pub(super) fn trusted_mods(want: &Desired, last: &Applied) -> Option<(Vec<Mod<String>>, Applied)> {
    let mut now = fingerprint(want);
    if now.shape != last.shape || now.attrs.len() != last.attrs.len() {
        return None;
    }
    if want.ad_disable.is_some() && want.ad_disable != last.disabled {
        return None;
    }
    let mut mods = Vec::new();
    for (i, (_, name)) in managed_names(want).iter().enumerate() {
        if now.attrs[i] == last.attrs[i] {
            continue;
        }
        if want
            .value_referrers
            .iter()
            .any(|(_, own)| own.eq_ignore_ascii_case(name))
        {
            return None;
        }
        let desired = desired_set(want, name);
        if desired.is_empty() && want.required.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            continue;
        }
        mods.push(Mod::Replace(name.to_string(), desired));
    }
    now.from = last.digest();
    Some((mods, now))
}

/// A modification with its attribute and values as bytes, so that it can
/// go in one modify with binary values (AD's `unicodePwd`).
pub(super) fn mod_bytes(m: Mod<String>) -> Mod<Vec<u8>> {
    let set = |v: HashSet<String>| v.into_iter().map(String::into_bytes).collect();
    match m {
        Mod::Add(a, v) => Mod::Add(a.into_bytes(), set(v)),
        Mod::Delete(a, v) => Mod::Delete(a.into_bytes(), set(v)),
        Mod::Replace(a, v) => Mod::Replace(a.into_bytes(), set(v)),
        Mod::Increment(a, v) => Mod::Increment(a.into_bytes(), v.into_bytes()),
    }
}

pub(super) fn attr_ci<'a, V>(attrs: &'a HashMap<String, V>, name: &str) -> Option<&'a V> {
    attrs.get(name).or_else(|| {
        attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Splits a DN into its first RDN and the parent DN, honouring `\`
/// escapes (RFC 4514).
pub fn split_rdn(dn: &str) -> (&str, &str) {
    let bytes = dn.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => return (&dn[..i], dn[i + 1..].trim_start()),
            _ => i += 1,
        }
    }
    (dn, "")
}

/// Whether two DNs name the same entry: parsed (so `\,` and `\2C` are
/// the same), attribute types and values compared case-insensitively, which
/// is what the naming attributes in use (uid, cn, ou, dc) do. Unparseable
/// DNs fall back to comparing the text.
/// Whether the leaf RDN values of two DNs that are the same entry differ
/// in case (or other bytes LDAP matching ignores): a rename the directory
/// must still be told of (`Case.Only` → `case.only`), as a modrdn.
pub fn rdn_spelled_differently(a: &str, b: &str) -> bool {
    match (crate::dn::parse_dn(a), crate::dn::parse_dn(b)) {
        (Ok(x), Ok(y)) => match (x.first(), y.first()) {
            (Some(p), Some(q)) => {
                p.iter().map(|v| &v.value).collect::<Vec<_>>()
                    != q.iter().map(|v| &v.value).collect::<Vec<_>>()
            }
            _ => false,
        },
        _ => false,
    }
}

pub fn same_dn(a: &str, b: &str) -> bool {
    fn norm(dn: &crate::dn::ParsedDn) -> Vec<Vec<(String, String)>> {
        dn.iter()
            .map(|rdn| {
                let mut avas: Vec<(String, String)> = rdn
                    .iter()
                    .map(|a| (a.attr.to_lowercase(), a.value.to_lowercase()))
                    .collect();
                avas.sort();
                avas
            })
            .collect()
    }
    if a == b {
        return true;
    }
    match (crate::dn::parse_dn(a), crate::dn::parse_dn(b)) {
        (Ok(x), Ok(y)) => norm(&x) == norm(&y),
        _ => a.eq_ignore_ascii_case(b),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use ldap3::{Mod, SearchEntry};

    use super::*;
    use crate::writer::plan::Desired;

    fn entry(attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: "uid=a,ou=people,dc=x".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    fn desired(attrs: &[(&str, &[&str])], managed: &[&str], required: &[&str]) -> Desired {
        Desired {
            dn: "uid=a,ou=people,dc=x".into(),
            object_classes: vec!["inetOrgPerson".into()],
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            managed: managed.iter().map(|s| s.to_string()).collect(),
            required: required.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn diff_touches_only_what_differs_among_managed_attributes() {
        let cur = entry(&[
            ("objectClass", &["top", "inetOrgPerson"]),
            ("cn", &["A"]),
            ("mail", &["a@x"]),
            ("description", &["admin's note"]),
        ]);
        let want = desired(
            &[("cn", &["A"]), ("mail", &["b@x"])],
            &["cn", "mail", "title"],
            &[],
        );
        let mods = diff(&want, &cur);
        assert_eq!(
            mods,
            vec![Mod::Replace(
                "mail".to_string(),
                HashSet::from(["b@x".to_string()])
            )]
        );
    }

    #[test]
    fn diff_removes_unset_attributes_but_never_required_ones() {
        let cur = entry(&[
            ("objectClass", &["inetOrgPerson"]),
            ("cn", &["A"]),
            ("sn", &["B"]),
            ("title", &["Boss"]),
        ]);
        let want = desired(&[], &["cn", "sn", "title"], &["cn", "sn"]);
        assert_eq!(
            diff(&want, &cur),
            vec![Mod::Delete("title".to_string(), HashSet::new())]
        );
    }

    #[test]
    fn diff_adds_missing_object_classes_case_insensitively() {
        let cur = entry(&[("objectClass", &["InetOrgPerson"])]);
        let mut want = desired(&[], &[], &[]);
        want.object_classes = vec!["inetorgperson".into(), "posixAccount".into()];
        assert_eq!(
            diff(&want, &cur),
            vec![Mod::Add(
                "objectClass".to_string(),
                HashSet::from(["posixAccount".to_string()])
            )]
        );
    }

    #[test]
    fn split_rdn_honours_escapes() {
        assert_eq!(
            split_rdn(r"uid=a\,b\+c,ou=people,dc=x"),
            (r"uid=a\,b\+c", "ou=people,dc=x")
        );
        assert_eq!(split_rdn("dc=x"), ("dc=x", ""));
        assert!(same_dn("uid=A, ou=People,dc=x", "uid=a,ou=people,dc=x"));
        assert!(same_dn(
            r"uid=a\,b\+c\=d,ou=people,dc=x",
            r"uid=a\2Cb\2Bc\3Dd,ou=people,dc=x"
        ));
        assert!(!same_dn("uid=a,ou=people,dc=x", "uid=b,ou=people,dc=x"));
    }

    #[test]
    fn member_values_compare_as_dns() {
        assert_eq!(
            norm_value("uid=A\\2Cb,ou=People,dc=x"),
            norm_value("UID=a\\,B, ou=people,dc=x")
        );
        assert_ne!(norm_value("uid=a,dc=x"), norm_value("uid=b,dc=x"));
        assert_eq!(norm_value("Alice"), "alice");
    }

    #[test]
    fn account_control_keeps_other_bits() {
        assert_eq!(
            user_account_control(Some("66048"), true),
            "66050",
            "DONT_EXPIRE_PASSWORD kept"
        );
        assert_eq!(user_account_control(Some("66050"), false), "66048");
        assert_eq!(user_account_control(None, true), "514");
        assert_eq!(user_account_control(Some("514"), true), "514");
        assert_eq!(user_account_control(Some("junk"), false), "512");
    }
}

#[cfg(test)]
mod rename_tests {
    use super::*;

    #[test]
    fn a_case_only_change_of_the_rdn_is_a_rename() {
        let a = "uid=Case.Only,ou=people,dc=example,dc=com";
        let b = "uid=case.only,ou=people,dc=example,dc=com";
        assert!(same_dn(a, b));
        assert!(rdn_spelled_differently(a, b));
        assert!(!rdn_spelled_differently(a, a));
        // Only the parent's spelling differs: nothing to rename.
        assert!(!rdn_spelled_differently(
            a,
            "uid=Case.Only,OU=People,dc=example,dc=com"
        ));
    }
}

#[cfg(test)]
mod trust_tests {
    use std::collections::HashSet;

    use ldap3::Mod;

    use super::*;
    use crate::writer::plan::Desired;

    fn user(attrs: &[(&str, &[&str])]) -> Desired {
        Desired {
            dn: "uid=a,ou=people,dc=x".into(),
            object_classes: vec!["inetOrgPerson".into()],
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            managed: ["uid", "cn", "sn", "mail", "title"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            required: vec!["cn".into(), "sn".into()],
            ..Default::default()
        }
    }

    fn set(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_fingerprint_follows_values_as_diff_compares_them() {
        let a = user(&[("cn", &["A"]), ("mail", &["a@x", "b@x"])]);
        // Order, duplicates, empty values and the name's case do not count.
        let b = user(&[("CN", &["A"]), ("mail", &["b@x", "", "a@x", "b@x"])]);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        // A value's case does (diff compares values exactly).
        let c = user(&[("cn", &["a"]), ("mail", &["a@x", "b@x"])]);
        assert_ne!(fingerprint(&a).attrs, fingerprint(&c).attrs);
        assert_eq!(fingerprint(&a).shape, fingerprint(&c).shape);
        // ("ab") and ("a", "b") differ.
        let d = user(&[("cn", &["A"]), ("mail", &["a@xb@x"])]);
        assert_ne!(fingerprint(&a), fingerprint(&d));
        // Classes and managed names are the shape.
        let mut e = a.clone();
        e.object_classes.push("posixAccount".into());
        assert_ne!(fingerprint(&a).shape, fingerprint(&e).shape);
        let mut f = a.clone();
        f.managed.push("description".into());
        assert_ne!(fingerprint(&a).shape, fingerprint(&f).shape);
        assert_eq!(fingerprint(&a).attrs.len(), 5);
    }

    #[test]
    fn only_changed_attributes_are_replaced_and_emptied_ones_removed() {
        let before = user(&[
            ("uid", &["a"]),
            ("cn", &["A"]),
            ("sn", &["S"]),
            ("mail", &["a@x"]),
            ("title", &["Boss"]),
        ]);
        let last = fingerprint(&before);
        // Nothing changed: nothing to send, and the same fingerprint.
        let (mods, now) = trusted_mods(&before, &last).unwrap();
        assert!(mods.is_empty());
        assert_eq!(now.digest(), last.digest());
        assert_eq!(now.from, last.digest());
        // mail changed, title gone, sn (required) without a value.
        let after = user(&[("uid", &["a"]), ("cn", &["A"]), ("mail", &["b@x", "c@x"])]);
        let (mut mods, now) = trusted_mods(&after, &last).unwrap();
        mods.sort_by_key(|m| format!("{m:?}"));
        assert_eq!(
            mods,
            vec![
                Mod::Replace("mail".to_string(), set(&["b@x", "c@x"])),
                Mod::Replace("title".to_string(), HashSet::new()),
            ]
        );
        assert_eq!(now.attrs, fingerprint(&after).attrs);
        // Applied again from there: nothing more.
        let (mods, _) = trusted_mods(&after, &now).unwrap();
        assert!(mods.is_empty());
        // sn gets a value back: replaced.
        let (mods, _) = trusted_mods(&before, &now).unwrap();
        assert!(mods.contains(&Mod::Replace("sn".to_string(), set(&["S"]))));
    }

    #[test]
    fn what_needs_the_entry_is_read() {
        let before = user(&[("uid", &["a"]), ("cn", &["A"])]);
        let last = fingerprint(&before);
        // A mapping reload changed the classes or the managed attributes.
        let mut other = before.clone();
        other.object_classes.push("posixAccount".into());
        assert!(trusted_mods(&other, &last).is_none());
        let mut other = before.clone();
        other.managed.retain(|m| m != "title");
        assert!(trusted_mods(&other, &last).is_none());
        // memberUid = uid: a changed uid needs its old value.
        let mut referred = before.clone();
        referred.value_referrers = vec![("memberUid".into(), "uid".into())];
        let last_r = fingerprint(&referred);
        let mut renamed = referred.clone();
        renamed.attrs.insert("uid".into(), vec!["b".into()]);
        assert!(trusted_mods(&renamed, &last_r).is_none());
        // ... while another attribute's change does not.
        let mut titled = referred.clone();
        titled.attrs.insert("title".into(), vec!["T".into()]);
        assert_eq!(trusted_mods(&titled, &last_r).unwrap().0.len(), 1);
    }

    #[test]
    fn account_control_is_read_only_when_the_disabled_bit_changes() {
        let mut active = user(&[("cn", &["A"]), (UAC, &["512"])]);
        active.managed.push(UAC.into());
        active.ad_disable = Some(false);
        let last = fingerprint(&active);
        assert_eq!(last.disabled, Some(false));
        // Same state, another title: no userAccountControl in the modify.
        let mut titled = active.clone();
        titled.attrs.insert("title".into(), vec!["T".into()]);
        titled.attrs.insert(UAC.into(), vec!["66048".into()]);
        let (mods, _) = trusted_mods(&titled, &last).unwrap();
        assert_eq!(mods, vec![Mod::Replace("title".to_string(), set(&["T"]))]);
        // Deactivated: the current value is needed (its other bits).
        let mut disabled = active.clone();
        disabled.ad_disable = Some(true);
        assert!(trusted_mods(&disabled, &last).is_none());
    }
}
