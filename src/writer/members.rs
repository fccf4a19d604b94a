//! A group's member values: the delta modifications, converging whole
//! lists when the directory disagrees with a delta, one entry's place in
//! its groups (`remove_from_groups`), and the dry-run view of a group plan.
//!
//! Architecture invariant: knows LDAP and plans, never the store, the
//! mapping or the dispatcher; the full member lists come through
//! [`FullMembers`].

use std::collections::{HashMap, HashSet};

use ldap3::{LdapError, Mod};
use tracing::debug;

use super::diff::{attr_ci, norm_value};
use super::directory::Directory;
use super::errors::{classify, permissive_modify, ApplyError};
use super::plan::{Desired, FullMembers, GroupPlan, MemberAttrPlan, MemberPlan, Membership};

impl Directory {
    /// Applies a group's member change: the deltas alone (one modify for
    /// every member attribute); if the directory disagrees with them (a
    /// value already there or already gone, an emptiness the store did not
    /// expect), converges every member attribute to the full current list
    /// instead. Attributes planned as full lists are converged.
    /// With `keep` (an adopted group under `keep_members`), converging to
    /// the whole list never removes a value the list does not name.
    pub(super) async fn apply_members(
        &mut self,
        dn: &str,
        g: &GroupPlan,
        full: FullMembers<'_>,
        keep: bool,
    ) -> Result<(), ApplyError> {
        let mods = member_delta_mods(g);
        if !mods.is_empty() {
            let ldap = self.conn().await?;
            match ldap
                .with_controls(permissive_modify())
                .modify(dn, mods)
                .await
                .and_then(|r| r.success())
            {
                Ok(_) => {
                    debug!(%dn, "changed members");
                }
                // attributeOrValueExists, noSuchAttribute, objectClassViolation:
                // the entry is not in the state the delta assumes (a replay, a
                // change made by hand): converge to the whole list.
                Err(LdapError::LdapResult { result }) if [16, 20, 65].contains(&result.rc) => {
                    debug!(%dn, rc = result.rc, "member delta did not apply; converging the whole list");
                    let lists = full_lists(g, full)?;
                    let targets: Vec<(&MemberAttrPlan, &[String])> = g
                        .members
                        .iter()
                        .zip(lists.iter().map(Vec::as_slice))
                        .collect();
                    return self.converge_members(dn, &targets, keep).await;
                }
                Err(e) => return Err(classify(e)),
            }
        }
        let targets: Vec<(&MemberAttrPlan, &[String])> = g
            .members
            .iter()
            .filter_map(|m| match &m.values {
                MemberPlan::Full(values) => Some((m, values.as_slice())),
                MemberPlan::Delta { .. } => None,
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        self.converge_members(dn, &targets, keep).await
    }

    /// With `keep`, values the list does not name are left alone (an
    /// adopted group's own members) and no placeholder is added.
    async fn converge_members(
        &mut self,
        dn: &str,
        targets: &[(&MemberAttrPlan, &[String])],
        keep: bool,
    ) -> Result<(), ApplyError> {
        // A whole list to read and compare: the directory gets a second
        // more per 1,000 values (see `member_timeout`).
        let values: usize = targets.iter().map(|(_, v)| v.len()).sum();
        self.allow_extra(std::time::Duration::from_millis(values as u64));
        let attrs: Vec<String> = targets.iter().map(|(m, _)| m.attr.clone()).collect();
        let cur = self
            .find(None, dn, &attrs)
            .await?
            .ok_or_else(|| ApplyError::Retry(format!("{dn} vanished")))?;
        let mut mods = Vec::new();
        for (m, values) in targets {
            let have: Vec<String> = attr_ci(&cur.attrs, &m.attr).cloned().unwrap_or_default();
            let mut want: Vec<String> = values.to_vec();
            // Kept values stand in for the placeholder.
            if want.is_empty() && (!keep || have.is_empty()) {
                want.extend(m.placeholder.iter().cloned());
            }
            let have_n: HashMap<String, &String> =
                have.iter().map(|v| (norm_value(v), v)).collect();
            let want_n: HashMap<String, &String> =
                want.iter().map(|v| (norm_value(v), v)).collect();
            let add: HashSet<String> = want_n
                .iter()
                .filter(|(k, _)| !have_n.contains_key(*k))
                .map(|(_, v)| (*v).clone())
                .collect();
            let placeholder = m.placeholder.as_deref().map(norm_value);
            let del: HashSet<String> = have_n
                .iter()
                // Kept: everything but the placeholder, once there are members.
                .filter(|(k, _)| !keep || (placeholder.as_ref() == Some(*k) && !values.is_empty()))
                .filter(|(k, _)| !want_n.contains_key(*k))
                .map(|(_, v)| (*v).clone())
                .collect();
            if !add.is_empty() {
                mods.push(Mod::Add(m.attr.clone(), add));
            }
            if !del.is_empty() {
                mods.push(Mod::Delete(m.attr.clone(), del));
            }
        }
        if mods.is_empty() {
            return Ok(());
        }
        let ldap = self.conn().await?;
        ldap.with_controls(permissive_modify())
            .modify(dn, mods)
            .await
            .and_then(|r| r.success())
            .map_err(classify)?;
        debug!(%dn, "converged members");
        Ok(())
    }

    pub(super) async fn set_memberships(&mut self, want: &Desired) -> Result<(), ApplyError> {
        for m in &want.memberships {
            self.set_membership(m).await?;
        }
        Ok(())
    }

    /// Puts one member value into a group entry or takes it out, keeping
    /// the group valid with its placeholder. Already so is fine.
    async fn set_membership(&mut self, m: &Membership) -> Result<(), ApplyError> {
        let value = HashSet::from([m.value.clone()]);
        let mut attempts: Vec<Vec<Mod<String>>> = Vec::new();
        if m.present {
            attempts.push(vec![Mod::Add(m.attr.clone(), value.clone())]);
            if let Some(p) = &m.placeholder {
                attempts.push(vec![Mod::Delete(
                    m.attr.clone(),
                    HashSet::from([p.clone()]),
                )]);
            }
        } else {
            let mut remove = vec![Mod::Delete(m.attr.clone(), value.clone())];
            attempts.push(remove.clone());
            if let Some(p) = &m.placeholder {
                // If that would empty the group, it fails (65): then swap in
                // the placeholder in the same operation.
                remove.push(Mod::Add(m.attr.clone(), HashSet::from([p.clone()])));
                attempts.push(remove);
            }
        }
        let mut i = 0;
        while i < attempts.len() {
            let mods = attempts[i].clone();
            let ldap = self.conn().await?;
            match ldap
                .with_controls(permissive_modify())
                .modify(&m.group_dn, mods)
                .await
                .and_then(|r| r.success())
            {
                Ok(_) => {
                    debug!(group = %m.group_dn, present = m.present, "set membership");
                    // Removal done: the placeholder swap is not needed.
                    if !m.present {
                        break;
                    }
                }
                // Already in, already out, or the group is gone.
                Err(LdapError::LdapResult { result }) if [16, 20, 32].contains(&result.rc) => {}
                Err(LdapError::LdapResult { result }) if result.rc == 65 && !m.present => {}
                Err(e) => return Err(classify(e)),
            }
            i += 1;
        }
        Ok(())
    }
}

/// A group plan as `serve --dry-run` logs it: a comment line per member
/// delta, then the entry as an add record with the member attributes
/// planned as full lists (an empty one as its placeholder, or absent).
pub(super) fn group_ldif(g: &GroupPlan) -> String {
    let mut attrs = g.desired.attrs.clone();
    let mut note = String::new();
    for m in &g.members {
        match &m.values {
            MemberPlan::Full(values) if values.is_empty() => {
                if let Some(p) = &m.placeholder {
                    attrs.insert(m.attr.clone(), vec![p.clone()]);
                }
            }
            MemberPlan::Full(values) => {
                attrs.insert(m.attr.clone(), values.clone());
            }
            MemberPlan::Delta { add, remove, .. } => {
                note += &format!("# {}: add {add:?}, remove {remove:?}\n", m.attr);
            }
        }
    }
    note + &crate::ldif::add(&g.desired.dn, &g.desired.object_classes, &attrs)
}

/// The modifications of a group's member deltas, every member attribute
/// in one list: values added and removed, and the placeholder dropped or
/// put back when the group stops or starts being empty. Attributes planned
/// as full lists add nothing.
pub(super) fn member_delta_mods(g: &GroupPlan) -> Vec<Mod<String>> {
    let mut mods: Vec<Mod<String>> = Vec::new();
    for m in &g.members {
        let MemberPlan::Delta {
            add,
            remove,
            empty_before,
            empty_after,
        } = &m.values
        else {
            continue;
        };
        if !add.is_empty() {
            mods.push(Mod::Add(m.attr.clone(), add.iter().cloned().collect()));
        }
        if !remove.is_empty() {
            mods.push(Mod::Delete(
                m.attr.clone(),
                remove.iter().cloned().collect(),
            ));
        }
        if let Some(p) = &m.placeholder {
            if *empty_before && !*empty_after {
                mods.push(Mod::Delete(m.attr.clone(), HashSet::from([p.clone()])));
            }
            if *empty_after && !*empty_before {
                mods.push(Mod::Add(m.attr.clone(), HashSet::from([p.clone()])));
            }
        }
    }
    mods
}

/// Consecutive member-only changes of one group merged into one plan, so
/// that they leave as one modify: per member attribute, the values added
/// and removed (sets of normalised values, first spelling and order kept),
/// the first change's `empty_before` and the last one's `empty_after`.
///
/// A change joins only when merging keeps the meaning of applying the
/// changes one after another: the same entry (`desired`) and member
/// attributes, every attribute a delta, no value added by one change and
/// removed by another, and an emptiness that follows on (the first
/// change's `empty_after` is the next one's `empty_before`).
pub(super) struct MergedMembers {
    plan: GroupPlan,
    /// Per member attribute: the normalised values added and removed.
    seen: Vec<(HashSet<String>, HashSet<String>)>,
}

impl MergedMembers {
    /// Starts from a member-only change planned as deltas; `None` for any
    /// other plan (it is applied alone).
    pub(super) fn start(g: &GroupPlan) -> Option<MergedMembers> {
        if !g.only_members || g.members.is_empty() {
            return None;
        }
        let mut seen = Vec::with_capacity(g.members.len());
        for m in &g.members {
            let MemberPlan::Delta { add, remove, .. } = &m.values else {
                return None;
            };
            seen.push((
                add.iter().map(|v| norm_value(v)).collect(),
                remove.iter().map(|v| norm_value(v)).collect(),
            ));
        }
        Some(MergedMembers {
            plan: g.clone(),
            seen,
        })
    }

    /// How many values the largest member attribute's delta carries.
    pub(super) fn values(&self) -> usize {
        delta_values(&self.plan)
    }

    /// Merges the next change of the group if that keeps its meaning;
    /// false (and nothing changed) otherwise.
    pub(super) fn absorb(&mut self, g: &GroupPlan) -> bool {
        if !g.only_members
            || g.desired != self.plan.desired
            || g.members.len() != self.plan.members.len()
        {
            return false;
        }
        // Check everything before changing anything.
        let mut normalised = Vec::with_capacity(g.members.len());
        for ((have, next), (added, removed)) in
            self.plan.members.iter().zip(&g.members).zip(&self.seen)
        {
            let (
                MemberPlan::Delta {
                    empty_after: was_empty,
                    ..
                },
                MemberPlan::Delta {
                    add,
                    remove,
                    empty_before,
                    ..
                },
            ) = (&have.values, &next.values)
            else {
                return false;
            };
            if have.attr != next.attr || have.placeholder != next.placeholder {
                return false;
            }
            if was_empty != empty_before {
                return false;
            }
            let add_n: Vec<String> = add.iter().map(|v| norm_value(v)).collect();
            let remove_n: Vec<String> = remove.iter().map(|v| norm_value(v)).collect();
            if add_n.iter().any(|v| removed.contains(v))
                || remove_n.iter().any(|v| added.contains(v))
            {
                return false;
            }
            normalised.push((add_n, remove_n));
        }
        for (((have, next), (added, removed)), (add_n, remove_n)) in self
            .plan
            .members
            .iter_mut()
            .zip(&g.members)
            .zip(&mut self.seen)
            .zip(normalised)
        {
            let (
                MemberPlan::Delta {
                    add,
                    remove,
                    empty_after,
                    ..
                },
                MemberPlan::Delta {
                    add: next_add,
                    remove: next_remove,
                    empty_after: next_empty_after,
                    ..
                },
            ) = (&mut have.values, &next.values)
            else {
                // Both deltas: checked above.
                continue;
            };
            for (v, n) in next_add.iter().zip(add_n) {
                if added.insert(n) {
                    add.push(v.clone());
                }
            }
            for (v, n) in next_remove.iter().zip(remove_n) {
                if removed.insert(n) {
                    remove.push(v.clone());
                }
            }
            *empty_after = *next_empty_after;
        }
        true
    }

    pub(super) fn into_plan(self) -> GroupPlan {
        self.plan
    }
}

/// How many values a group plan's largest member attribute carries.
pub(super) fn delta_values(g: &GroupPlan) -> usize {
    g.members
        .iter()
        .map(|m| match &m.values {
            MemberPlan::Delta { add, remove, .. } => add.len() + remove.len(),
            MemberPlan::Full(v) => v.len(),
        })
        .max()
        .unwrap_or(0)
}

/// The group's full member lists, one per member attribute of the plan.
/// A count that differs means the mapping was reloaded since the plan was
/// made: the next pass plans again.
pub(super) fn full_lists(
    g: &GroupPlan,
    full: FullMembers<'_>,
) -> Result<Vec<Vec<String>>, ApplyError> {
    let lists = full().map_err(|e| ApplyError::Park {
        code: None,
        message: e.to_string(),
    })?;
    if lists.len() != g.members.len() {
        return Err(ApplyError::Retry(format!(
            "the mapping's member attributes changed while {} was being written; planning it again",
            g.desired.dn
        )));
    }
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use ldap3::Mod;

    use super::*;

    #[test]
    fn member_deltas_of_every_attribute_go_in_one_modify() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        let placeholder = "cn=empty,dc=example,dc=com";
        let plan = |add: &[&str], uid_add: &[&str], empty_before, empty_after| GroupPlan {
            desired: Desired::default(),
            members: vec![
                MemberAttrPlan {
                    attr: "member".into(),
                    values: MemberPlan::Delta {
                        add: add.iter().map(|s| s.to_string()).collect(),
                        remove: Vec::new(),
                        empty_before,
                        empty_after,
                    },
                    placeholder: Some(placeholder.into()),
                },
                MemberAttrPlan {
                    attr: "memberUid".into(),
                    values: MemberPlan::Delta {
                        add: uid_add.iter().map(|s| s.to_string()).collect(),
                        remove: Vec::new(),
                        empty_before,
                        empty_after,
                    },
                    placeholder: None,
                },
            ],
            only_members: true,
        };
        // First members of an empty group: both attributes, placeholder out.
        assert_eq!(
            member_delta_mods(&plan(&["uid=a,dc=x", "cn=g,dc=x"], &["a"], true, false)),
            vec![
                Mod::Add("member".into(), set(&["uid=a,dc=x", "cn=g,dc=x"])),
                Mod::Delete("member".into(), set(&[placeholder])),
                Mod::Add("memberUid".into(), set(&["a"])),
            ]
        );
        // Only a nested group: memberUid has nothing to send.
        assert_eq!(
            member_delta_mods(&plan(&["cn=g,dc=x"], &[], false, false)),
            vec![Mod::Add("member".into(), set(&["cn=g,dc=x"]))]
        );
        // A full list sends no delta.
        let mut p = plan(&["uid=a,dc=x"], &["a"], false, false);
        p.members[1].values = MemberPlan::Full(vec!["a".into()]);
        assert_eq!(
            member_delta_mods(&p),
            vec![Mod::Add("member".into(), set(&["uid=a,dc=x"]))]
        );
    }

    #[test]
    fn dry_run_shows_every_member_attribute() {
        let g = GroupPlan {
            desired: Desired {
                dn: "cn=unix,dc=x".into(),
                object_classes: vec!["groupOfNames".into(), "posixGroup".into()],
                attrs: BTreeMap::from([("cn".to_string(), vec!["unix".to_string()])]),
                ..Desired::default()
            },
            members: vec![
                MemberAttrPlan {
                    attr: "member".into(),
                    values: MemberPlan::Full(Vec::new()),
                    placeholder: Some("cn=empty,dc=x".into()),
                },
                MemberAttrPlan {
                    attr: "memberUid".into(),
                    values: MemberPlan::Full(Vec::new()),
                    placeholder: None,
                },
            ],
            only_members: false,
        };
        assert_eq!(
            group_ldif(&g),
            "dn: cn=unix,dc=x\nchangetype: add\nobjectClass: groupOfNames\nobjectClass: posixGroup\ncn: unix\nmember: cn=empty,dc=x\n"
        );
        let mut g = g;
        g.members[0].values = MemberPlan::Full(vec!["uid=a,dc=x".into()]);
        g.members[1].values = MemberPlan::Delta {
            add: vec!["a".into()],
            remove: Vec::new(),
            empty_before: true,
            empty_after: false,
        };
        assert_eq!(
            group_ldif(&g),
            "# memberUid: add [\"a\"], remove []\ndn: cn=unix,dc=x\nchangetype: add\nobjectClass: groupOfNames\nobjectClass: posixGroup\ncn: unix\nmember: uid=a,dc=x\n"
        );
    }

    #[test]
    fn merged_member_changes_keep_the_meaning_of_applying_them_in_turn() {
        let placeholder = "cn=empty,dc=x";
        let change = |add: &[&str], remove: &[&str], empty_before, empty_after| GroupPlan {
            desired: Desired {
                dn: "cn=g,dc=x".into(),
                ..Desired::default()
            },
            members: vec![MemberAttrPlan {
                attr: "member".into(),
                values: MemberPlan::Delta {
                    add: add.iter().map(|s| s.to_string()).collect(),
                    remove: remove.iter().map(|s| s.to_string()).collect(),
                    empty_before,
                    empty_after,
                },
                placeholder: Some(placeholder.into()),
            }],
            only_members: true,
        };
        // Into an empty group: the placeholder goes once, a value spelled
        // twice is sent once.
        let mut m = MergedMembers::start(&change(&["uid=a,dc=x"], &[], true, false)).unwrap();
        assert!(m.absorb(&change(&["uid=b,dc=x"], &[], false, false)));
        assert!(m.absorb(&change(&["UID=A, DC=X"], &[], false, false)));
        assert!(m.absorb(&change(&[], &["uid=c,dc=x"], false, false)));
        assert_eq!(m.values(), 3);
        // Removing a value added earlier in the batch, or adding one
        // removed: not merged, nothing changed.
        assert!(!m.absorb(&change(&[], &["uid=b,dc=x"], false, false)));
        assert!(!m.absorb(&change(&["uid=C,dc=x"], &[], false, false)));
        // An emptiness that does not follow on, another entry, a full list,
        // a change that is not member-only: not merged either.
        assert!(!m.absorb(&change(&["uid=d,dc=x"], &[], true, false)));
        let mut other = change(&["uid=d,dc=x"], &[], false, false);
        other.desired.dn = "cn=h,dc=x".into();
        assert!(!m.absorb(&other));
        let mut full = change(&[], &[], false, false);
        full.members[0].values = MemberPlan::Full(vec!["uid=d,dc=x".into()]);
        assert!(!m.absorb(&full));
        assert!(MergedMembers::start(&full).is_none());
        let mut not_only = change(&["uid=d,dc=x"], &[], false, false);
        not_only.only_members = false;
        assert!(!m.absorb(&not_only));
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        assert_eq!(
            member_delta_mods(&m.into_plan()),
            vec![
                Mod::Add("member".into(), set(&["uid=a,dc=x", "uid=b,dc=x"])),
                Mod::Delete("member".into(), set(&["uid=c,dc=x"])),
                Mod::Delete("member".into(), set(&[placeholder])),
            ]
        );
        // Emptied, then a new member: the placeholder neither comes nor
        // goes.
        let mut m = MergedMembers::start(&change(&[], &["uid=a,dc=x"], false, true)).unwrap();
        assert!(m.absorb(&change(&["uid=b,dc=x"], &[], true, false)));
        assert_eq!(
            member_delta_mods(&m.into_plan()),
            vec![
                Mod::Add("member".into(), set(&["uid=b,dc=x"])),
                Mod::Delete("member".into(), set(&["uid=a,dc=x"])),
            ]
        );
    }
}
