//! `[user.adopt]` / `[group.adopt]`: which entries that already exist in
//! the directory the daemon may take over (adopt), and which never.
//!
//! Adoption makes the identity provider the authority for an entry's
//! mapped attributes, so it happens only under an explicit rule: inside the
//! subtrees listed in `under` (default: the DN template's parent), matching
//! `filter` when one is given, not listed in `never` and not matching
//! `never_filter`. Users may be adopted by default (provisioning with
//! matching, as identity providers expect); groups may not, since taking
//! over an existing group hands its membership — often its privileges — to
//! whoever controls the group's name at the identity provider.
//!
//! The DN rules are decided here; the two filters are LDAP filters that the
//! directory evaluates ([`AdoptPolicy::directory_condition`]), so that they
//! mean exactly what they mean to the directory.

use std::fmt;

use crate::dn::{parse_dn, rdn_key};

use super::ResourceKind;

/// A validated adoption policy for one resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptPolicy {
    pub kind: ResourceKind,
    /// Adoption is allowed at all.
    pub enabled: bool,
    /// Subtrees (canonical DNs) inside which entries may be adopted.
    pub under: Vec<String>,
    /// An LDAP filter an entry must match as well.
    pub filter: Option<String>,
    /// DNs (canonical) never adopted.
    pub never: Vec<String>,
    /// An LDAP filter: entries matching it are never adopted.
    pub never_filter: Option<String>,
    /// Groups: member values of an adopted group that the identity
    /// provider did not send are kept (never removed by the daemon).
    pub keep_members: bool,
}

/// Why an entry may not be adopted, phrased with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Disabled {
        kind: ResourceKind,
    },
    Outside {
        dn: String,
        under: Vec<String>,
    },
    Never {
        dn: String,
    },
    /// The directory says the entry does not match `filter`, or matches
    /// `never_filter`.
    Filtered {
        dn: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = |k: &ResourceKind| match k {
            ResourceKind::User => "user",
            ResourceKind::Group => "group",
        };
        match self {
            Refusal::Disabled { kind } => write!(
                f,
                "adopting existing {}s is off in the mapping; to let the identity provider take this entry over, set `enabled = true` in [{}.adopt] and run `scim2ldap journal retry`, or give the resource another name",
                table(kind),
                table(kind)
            ),
            Refusal::Outside { dn, under } => write!(
                f,
                "{dn} is outside the subtrees where existing entries may be adopted ({}); add its subtree to `under` in the mapping's adopt table and run `scim2ldap journal retry`, or give the resource another name",
                under.join("; ")
            ),
            Refusal::Never { dn } => write!(
                f,
                "{dn} is listed in `never` in the mapping's adopt table: it is never taken over; give the resource another name at the identity provider"
            ),
            Refusal::Filtered { dn } => write!(
                f,
                "{dn} does not pass the adopt table's `filter` / `never_filter`; change them and run `scim2ldap journal retry`, or give the resource another name"
            ),
        }
    }
}

/// `attr=value` keys of a DN's RDNs, leaf first (the first AVA of each).
fn keys_of(dn: &str) -> Option<Vec<String>> {
    let parsed = parse_dn(dn).ok()?;
    Some(
        parsed
            .iter()
            .map(|rdn| {
                rdn.first()
                    .map(|a| rdn_key(&a.attr, &a.value))
                    .unwrap_or_default()
            })
            .collect(),
    )
}

/// Whether two DNs name the same entry, as the directory compares them.
pub fn same_entry(a: &str, b: &str) -> bool {
    match (keys_of(a), keys_of(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Whether `dn` is `base` or inside its subtree.
pub fn within(dn: &str, base: &str) -> bool {
    match (keys_of(dn), keys_of(base)) {
        (Some(d), Some(b)) => d.len() >= b.len() && d[d.len() - b.len()..] == b[..],
        _ => false,
    }
}

impl AdoptPolicy {
    /// The policy when the mapping has no adopt table: users inside the DN
    /// template's parent, no groups.
    pub fn default_for(kind: ResourceKind, parent_dn: &str) -> AdoptPolicy {
        AdoptPolicy {
            kind,
            enabled: kind == ResourceKind::User,
            under: vec![parent_dn.to_string()],
            filter: None,
            never: Vec::new(),
            never_filter: None,
            keep_members: true,
        }
    }

    /// The DN half of the policy: `Ok` when an entry at `dn` may be
    /// adopted as far as its place says (the filters are the directory's
    /// to check, with [`AdoptPolicy::directory_condition`]).
    pub fn check_dn(&self, dn: &str) -> Result<(), Refusal> {
        if !self.enabled {
            return Err(Refusal::Disabled { kind: self.kind });
        }
        if self.never.iter().any(|n| same_entry(n, dn)) {
            return Err(Refusal::Never { dn: dn.to_string() });
        }
        if !self.under.iter().any(|u| within(dn, u)) {
            return Err(Refusal::Outside {
                dn: dn.to_string(),
                under: self.under.clone(),
            });
        }
        Ok(())
    }

    /// The LDAP filter an adoptable entry must match: `filter` and not
    /// `never_filter`; `None` when neither is set.
    pub fn directory_condition(&self) -> Option<String> {
        match (&self.filter, &self.never_filter) {
            (None, None) => None,
            (Some(f), None) => Some(f.clone()),
            (None, Some(n)) => Some(format!("(!{n})")),
            (Some(f), Some(n)) => Some(format!("(&{f}(!{n}))")),
        }
    }

    /// `search` narrowed to the entries this policy allows by filter.
    pub fn narrow(&self, search: &str) -> String {
        match self.directory_condition() {
            None => search.to_string(),
            Some(c) => format!("(&{search}{c})"),
        }
    }
}

/// A light syntax check of an LDAP filter (RFC 4515) for the mapping
/// file: parenthesised, balanced, not empty. The directory checks the rest
/// (`scim2ldap check` runs each filter once).
pub fn check_filter_text(f: &str) -> Result<(), String> {
    let t = f.trim();
    if !(t.starts_with('(') && t.ends_with(')')) {
        return Err(format!(
            "{f:?} is not an LDAP filter; write it in parentheses, e.g. \"(objectClass=inetOrgPerson)\""
        ));
    }
    let mut depth = 0i32;
    let mut escaped = false;
    for c in t.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("{f:?}: a ')' has no matching '('"));
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{f:?}: a '(' is not closed"));
    }
    if t == "()" {
        return Err("the filter is empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> AdoptPolicy {
        AdoptPolicy::default_for(ResourceKind::User, "ou=people,dc=example,dc=com")
    }

    #[test]
    fn users_inside_the_parent_may_be_adopted_by_default() {
        let p = users();
        assert_eq!(p.check_dn("uid=alice,ou=people,dc=example,dc=com"), Ok(()));
        // As the directory compares DNs: case and spaces do not count.
        assert_eq!(p.check_dn("UID=Alice,OU=People, DC=example,DC=com"), Ok(()));
        assert!(matches!(
            p.check_dn("uid=alice,ou=admins,dc=example,dc=com"),
            Err(Refusal::Outside { .. })
        ));
        // A suffix of the base is not inside it.
        assert!(matches!(
            p.check_dn("dc=example,dc=com"),
            Err(Refusal::Outside { .. })
        ));
    }

    #[test]
    fn groups_are_not_adopted_by_default() {
        let p = AdoptPolicy::default_for(ResourceKind::Group, "ou=groups,dc=example,dc=com");
        let e = p
            .check_dn("cn=sudo,ou=groups,dc=example,dc=com")
            .unwrap_err();
        assert_eq!(
            e,
            Refusal::Disabled {
                kind: ResourceKind::Group
            }
        );
        assert!(e.to_string().contains("[group.adopt]"), "{e}");
        assert!(p.keep_members);
    }

    #[test]
    fn never_wins_over_under() {
        let mut p = users();
        p.never = vec!["uid=root,ou=people,dc=example,dc=com".into()];
        assert!(matches!(
            p.check_dn("uid=ROOT,ou=people,dc=example,dc=com"),
            Err(Refusal::Never { .. })
        ));
        assert_eq!(p.check_dn("uid=rooty,ou=people,dc=example,dc=com"), Ok(()));
    }

    #[test]
    fn filters_become_one_condition_for_the_directory() {
        let mut p = users();
        assert_eq!(p.narrow("(uid=a)"), "(uid=a)");
        p.filter = Some("(objectClass=inetOrgPerson)".into());
        assert_eq!(p.narrow("(uid=a)"), "(&(uid=a)(objectClass=inetOrgPerson))");
        p.never_filter = Some("(memberOf=cn=admins,dc=example,dc=com)".into());
        assert_eq!(
            p.directory_condition().unwrap(),
            "(&(objectClass=inetOrgPerson)(!(memberOf=cn=admins,dc=example,dc=com)))"
        );
        p.filter = None;
        assert_eq!(
            p.directory_condition().unwrap(),
            "(!(memberOf=cn=admins,dc=example,dc=com))"
        );
    }

    #[test]
    fn filter_text_is_checked_for_shape() {
        assert!(check_filter_text("(uid=a)").is_ok());
        assert!(check_filter_text("(&(a=b)(c=\\29))").is_ok());
        assert!(check_filter_text("uid=a").is_err());
        assert!(check_filter_text("((uid=a)").is_err());
        assert!(check_filter_text("(uid=a))").is_err());
        assert!(check_filter_text("()").is_err());
    }
}
