//! The loaded mapping and the SCIM schemas it implies, shared by the
//! request handlers and the writer, and swapped whole on reload; and the
//! planner that turns journal entries into directory plans with it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use crate::mapping::{is_inactive, LdapEntry, Mapping, MemberAttr, Reference, Resolver};
use crate::scim::schema::SchemaRegistry;
use crate::scim::ScimError;
use crate::store::{JournalEntry, Kind, Op, Store};
use crate::writer::{
    Claim, Desired, GroupPlan, MemberAttrPlan, MemberPlan, Membership, Plan, PlanError, Planner,
    Route,
};

/// Why a mapping file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Every problem of the file, each located (file:line:col: key).
    #[error(transparent)]
    Invalid(#[from] crate::mapping::MappingError),
}

/// One consistent mapping plus the schemas derived from it.
pub struct Model {
    pub mapping: Mapping,
    pub users: SchemaRegistry,
    pub groups: SchemaRegistry,
}

impl Model {
    /// Reads and validates the mapping file.
    pub fn load(path: &Path) -> Result<Model, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mapping = Mapping::parse(&text, &path.display().to_string())?;
        Ok(Model::new(mapping))
    }

    pub fn new(mapping: Mapping) -> Model {
        let users = mapping.user_registry();
        let groups = mapping.group_registry();
        Model {
            mapping,
            users,
            groups,
        }
    }

    /// The mapping of one resource type (`None`: groups without `[group]`).
    pub fn resource_mapping(&self, kind: Kind) -> Option<&crate::mapping::ResourceMapping> {
        match kind {
            Kind::User => Some(&self.mapping.user),
            Kind::Group => self.mapping.group.as_ref().map(|g| &g.resource),
        }
    }

    pub fn registry(&self, kind: Kind) -> &SchemaRegistry {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    /// The directory entry a resource maps to (a group's without members).
    /// An error here is the client's (400) and is found before anything is
    /// journaled.
    pub fn entry(
        &self,
        kind: Kind,
        resource: &Value,
        resolver: &dyn Resolver,
    ) -> Result<LdapEntry, ScimError> {
        match kind {
            Kind::User => self.mapping.user_entry(resource, &self.users, resolver),
            Kind::Group => match &self.mapping.group {
                Some(g) => g.resource.entry_with(resource, &self.groups, resolver),
                None => Err(ScimError::new(
                    501,
                    None,
                    "this server's mapping has no [group] table: groups are not provisioned",
                )),
            },
        }
    }

    /// (attribute, low, high) of every number the mapping allocates for
    /// resources of `kind`.
    pub fn allocations(&self, kind: Kind) -> Vec<(String, u64, u64)> {
        let rm = match kind {
            Kind::User => Some(&self.mapping.user),
            Kind::Group => self.mapping.group.as_ref().map(|g| &g.resource),
        };
        rm.map(|r| {
            r.allocations()
                .into_iter()
                .map(|(a, lo, hi)| (a.to_string(), lo, hi))
                .collect()
        })
        .unwrap_or_default()
    }

    /// Where group member values point back at entries, for rewriting them
    /// on renames: DN-valued member attributes (unless the directory's
    /// refint does it) and attribute-valued ones (memberUid = uid), `also`
    /// attributes included.
    fn referrers(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut dn = Vec::new();
        let mut value = Vec::new();
        if let Some(g) = &self.mapping.group {
            for a in g.members.attributes() {
                match a.value {
                    Reference::Dn if !g.members.refint => dn.push(a.attribute.to_string()),
                    Reference::Dn => {}
                    Reference::Attribute(own) => {
                        value.push((a.attribute.to_string(), own.clone()));
                    }
                }
            }
        }
        // Users' attributes that name other users (`manager`, resolved to
        // a DN or to an attribute of the referenced entry) follow renames
        // too; a directory's referential integrity rarely covers them.
        for rule in self.mapping.user.rules() {
            match &rule.resolve {
                Some(Reference::Dn)
                    if !dn.iter().any(|d| d.eq_ignore_ascii_case(&rule.attribute)) =>
                {
                    dn.push(rule.attribute.clone());
                }
                Some(Reference::Dn) => {}
                Some(Reference::Attribute(own)) => {
                    value.push((rule.attribute.clone(), own.clone()));
                }
                None => {}
            }
        }
        (dn, value)
    }

    /// The plan for a resource's state: the entry plus which attributes the
    /// writer may touch.
    fn desired(
        &self,
        kind: Kind,
        resource: &Value,
        resolver: &dyn Resolver,
    ) -> Result<Desired, PlanError> {
        let e = self
            .entry(kind, resource, resolver)
            .map_err(|e| PlanError::Mapping(e.detail))?;
        let (managed, required): (Vec<String>, Vec<String>) = match kind {
            Kind::User => {
                let managed: Vec<String> = self
                    .mapping
                    .user_managed_attributes()
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                let required = managed
                    .iter()
                    .filter(|a| self.mapping.user.is_required(a))
                    .cloned()
                    .collect();
                (managed, required)
            }
            Kind::Group => {
                let g = self.mapping.group.as_ref().ok_or(PlanError::NoGroupTable)?;
                let managed: Vec<String> = g
                    .resource
                    .managed_attributes()
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                let required = managed
                    .iter()
                    .filter(|a| g.resource.is_required(a))
                    .cloned()
                    .collect();
                (managed, required)
            }
        };
        let (dn_referrers, value_referrers) = self.referrers();
        let ad_disable = (kind == Kind::User
            && self.mapping.user_policy.deactivate.ad_user_account_control)
            .then(|| is_inactive(resource));
        Ok(Desired {
            ad_disable,
            memberships: Vec::new(),
            claim: None,
            password: None,
            dn: e.dn,
            object_classes: e.object_classes,
            attrs: e.attrs,
            managed,
            required,
            dn_referrers,
            value_referrers,
        })
    }
}

/// The current model; readers take a cheap `Arc` snapshot.
#[derive(Clone)]
pub struct SharedModel(Arc<RwLock<Arc<Model>>>);

impl SharedModel {
    pub fn new(model: Model) -> SharedModel {
        SharedModel(Arc::new(RwLock::new(Arc::new(model))))
    }
    pub fn current(&self) -> Arc<Model> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn replace(&self, model: Model) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(model);
    }
}

/// The value one member id has in a member attribute, if it can be worked
/// out.
fn member_value(value: &Reference, id: &str, resolver: &dyn Resolver) -> Option<String> {
    match value {
        Reference::Dn => resolver.dn(id),
        Reference::Attribute(a) => resolver.attribute(id, a).into_iter().next(),
    }
}

/// How many deleted entries [`Departed`] remembers; the oldest go first.
pub const DEPARTED_CAPACITY: usize = 16_384;

/// The member values of entries whose deletion the writer was given
/// (what [`StoreResolver`] worked out for them while they were linked),
/// so that removing a deleted member from its groups is still planned as
/// a delta. The store journals those removals before the deletion, but
/// they may be planned in another lane after the deletion was applied:
/// the link is gone by then, the snapshot too, and the member's value
/// could otherwise be found only by converging the group's whole member
/// list (reading the group, once per deletion). Bounded (the oldest
/// dropped first) and in memory only: after a restart, or for an entry
/// dropped from it, the whole list is converged as before.
///
/// Used only for values *removed* from groups: nothing is ever added,
/// and no other reference (a manager) is resolved, from it.
#[derive(Default)]
pub struct Departed(Mutex<DepartedBook>);

#[derive(Default)]
struct DepartedBook {
    /// Per SCIM id: its linked DN and, per attribute a member attribute
    /// copies (memberUid = uid), its first value.
    by_id: HashMap<String, (String, Vec<(String, String)>)>,
    /// Ids in the order they were remembered, oldest first.
    order: VecDeque<String>,
}

impl Departed {
    /// Remembers the member values of `id`, deleted from the directory
    /// soon: its linked DN and `values` (attribute, value).
    fn remember(&self, id: &str, dn: String, values: Vec<(String, String)>) {
        let mut book = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if book.by_id.insert(id.to_string(), (dn, values)).is_none() {
            book.order.push_back(id.to_string());
            while book.order.len() > DEPARTED_CAPACITY {
                if let Some(old) = book.order.pop_front() {
                    book.by_id.remove(&old);
                }
            }
        }
    }

    /// The value `id` had in a member attribute that holds `value`, if
    /// it is remembered.
    fn value(&self, value: &Reference, id: &str) -> Option<String> {
        let book = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (dn, values) = book.by_id.get(id)?;
        match value {
            Reference::Dn => Some(dn.clone()),
            Reference::Attribute(a) => values
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(a))
                .map(|(_, v)| v.clone()),
        }
    }

    /// How many entries are remembered.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Resolves references between resources (a manager, a group member)
/// through the store: the linked entry's DN, or where the mapping would put
/// the entry.
pub struct StoreResolver<'a> {
    pub store: &'a Store,
    pub model: &'a Model,
}

impl StoreResolver<'_> {
    fn mapped(&self, id: &str) -> Option<LdapEntry> {
        if let Some(snapshot) = self.store.get(Kind::User, id).ok()? {
            return self
                .model
                .mapping
                .user
                .entry(&snapshot, &self.model.users)
                .ok();
        }
        let snapshot = self.store.get(Kind::Group, id).ok()??;
        self.model
            .mapping
            .group
            .as_ref()?
            .resource
            .entry(&snapshot, &self.model.groups)
            .ok()
    }
}

impl Resolver for StoreResolver<'_> {
    /// Where the entry of `id` is, as a reference to it should name it:
    /// where it is linked, unless its latest state puts it under the same
    /// parent with another RDN — a rename the directory has not seen yet
    /// (or, during a replay, one undone and redone). Then the new name:
    /// it is where the entry ends up, and a group or manager written in
    /// another lane meanwhile would otherwise keep the old one, racing the
    /// rename's own rewrite of references. A link elsewhere (an entry
    /// adopted in another subtree, a deactivated user moved away) is kept.
    fn dn(&self, id: &str) -> Option<String> {
        for kind in [Kind::User, Kind::Group] {
            if let Ok(Some(link)) = self.store.link(kind, id) {
                if let Some(latest) = self.mapped(id) {
                    let (_, latest_parent) = crate::writer::split_rdn(&latest.dn);
                    let (_, linked_parent) = crate::writer::split_rdn(&link.dn);
                    if latest.dn != link.dn && crate::writer::same_dn(latest_parent, linked_parent)
                    {
                        return Some(latest.dn);
                    }
                }
                return Some(link.dn);
            }
        }
        self.mapped(id).map(|e| e.dn)
    }
    fn attribute(&self, id: &str, attribute: &str) -> Vec<String> {
        self.mapped(id)
            .and_then(|e| e.get(attribute).cloned())
            .unwrap_or_default()
    }
}

/// The writer's planner: the current mapping applied to journal entries.
pub struct MappingPlanner {
    pub model: SharedModel,
    pub store: Store,
    /// Member values of entries being deleted, for removing them from
    /// their groups as deltas after the deletion (in memory; empty after
    /// a restart).
    pub departed: Departed,
}

impl MappingPlanner {
    /// With `remove_from_groups`, an inactive user is left out of every
    /// group entry.
    fn left_out(&self, model: &Model, id: &str) -> bool {
        model.mapping.user_policy.deactivate.remove_from_groups
            && matches!(self.store.get(Kind::User, id), Ok(Some(u)) if is_inactive(&u))
    }

    /// A user's place in each of its groups' entries (in while active, out
    /// while inactive), for the `remove_from_groups` policy. The user's
    /// values are those of the entry being planned (`desired`): after a
    /// rename, the new DN and uid, which the writer has just rewritten in
    /// the groups, not the linked DN it is leaving.
    fn memberships(
        &self,
        model: &Model,
        entry: &JournalEntry,
        user: &Value,
        desired: &Desired,
        resolver: &StoreResolver<'_>,
    ) -> Result<Vec<Membership>, PlanError> {
        let Some(g) = model.mapping.group.as_ref() else {
            return Ok(Vec::new());
        };
        if !model.mapping.user_policy.deactivate.remove_from_groups {
            return Ok(Vec::new());
        }
        // The user's value in each member attribute (its DN in member, its
        // uid in memberUid); one it has none in is skipped.
        let own = |value: &Reference| match value {
            Reference::Dn => Some(desired.dn.clone()),
            Reference::Attribute(a) => desired
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(a))
                .and_then(|(_, v)| v.first().cloned()),
        };
        let values: Vec<(&str, String, Option<&str>)> = g
            .members
            .attributes()
            .into_iter()
            .filter_map(|a| own(a.value).map(|v| (a.attribute, v, a.placeholder)))
            .collect();
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for gid in self
            .store
            .groups_of(&entry.id)
            .map_err(|e| PlanError::Store(e.to_string()))?
        {
            if let Some(group_dn) = resolver.dn(&gid) {
                for (attr, value, placeholder) in &values {
                    out.push(Membership {
                        group_dn: group_dn.clone(),
                        attr: attr.to_string(),
                        value: value.clone(),
                        present: !is_inactive(user),
                        placeholder: placeholder.map(str::to_string),
                    });
                }
            }
        }
        Ok(out)
    }

    fn group_plan(
        &self,
        model: &Model,
        entry: &JournalEntry,
        resolver: &StoreResolver<'_>,
    ) -> Result<Plan, PlanError> {
        let g = model
            .mapping
            .group
            .as_ref()
            .ok_or(PlanError::NoGroupTable)?;
        let desired = model.desired(Kind::Group, &entry.snapshot, resolver)?;
        // The values of the ids in one attribute. `None` when one cannot be
        // worked out because it is gone (deleted since). A member that
        // exists but has no value there (a nested group in memberUid) is
        // skipped in an attribute without a placeholder; in one with a
        // placeholder, whose delta assumes that every member has a value,
        // it is `None` too (the whole list then decides the placeholder).
        // A member removed because it was deleted may be gone from the
        // store and the directory already (its deletion applied in
        // another lane): its value is then the one remembered in
        // `departed`, if it is (only for removals).
        let values = |a: &MemberAttr<'_>, ids: &[String], removed: bool| -> Option<Vec<String>> {
            let mut out = Vec::new();
            for id in ids.iter().filter(|id| !self.left_out(model, id)) {
                match member_value(a.value, id, resolver) {
                    Some(v) => out.push(v),
                    None if a.placeholder.is_none() && self.is_known(id) => {}
                    None => match removed.then(|| self.departed.value(a.value, id)).flatten() {
                        Some(v) => out.push(v),
                        None => return None,
                    },
                }
            }
            Some(out)
        };
        let mut full: Option<Vec<Vec<String>>> = None;
        let mut members = Vec::new();
        for (i, a) in g.members.attributes().into_iter().enumerate() {
            let delta = entry.members.as_ref().and_then(|c| {
                Some(MemberPlan::Delta {
                    add: values(&a, &c.add, false)?,
                    remove: values(&a, &c.remove, true)?,
                    empty_before: c.empty_before,
                    empty_after: c.empty_after,
                })
            });
            let plan = match delta {
                Some(d) => d,
                // No delta, or a member that can no longer be resolved:
                // converge this attribute to the whole current list.
                None => {
                    if full.is_none() {
                        full = Some(self.member_lists(model, &entry.id, resolver)?);
                    }
                    MemberPlan::Full(full.as_ref().map(|f| f[i].clone()).unwrap_or_default())
                }
            };
            members.push(MemberAttrPlan {
                attr: a.attribute.to_string(),
                values: plan,
                placeholder: a.placeholder.map(str::to_string),
            });
        }
        Ok(Plan::Group(GroupPlan {
            desired,
            members,
            only_members: entry.members.as_ref().is_some_and(|c| c.only_members),
        }))
    }

    /// Whether the store still has this user or group.
    fn is_known(&self, id: &str) -> bool {
        [Kind::User, Kind::Group]
            .into_iter()
            .any(|k| self.store.exists(k, id).unwrap_or(false))
    }

    /// A group's member values as the store lists its members now, one
    /// list per member attribute of the mapping (main first): members left
    /// out (inactive with `remove_from_groups`) or without a value in an
    /// attribute are not in its list.
    fn member_lists(
        &self,
        model: &Model,
        gid: &str,
        resolver: &StoreResolver<'_>,
    ) -> Result<Vec<Vec<String>>, PlanError> {
        let Some(g) = model.mapping.group.as_ref() else {
            return Ok(Vec::new());
        };
        let ids: Vec<String> = self
            .store
            .members(gid)
            .map_err(|e| PlanError::Store(e.to_string()))?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !self.left_out(model, id))
            .collect();
        Ok(g.members
            .attributes()
            .into_iter()
            .map(|a| {
                ids.iter()
                    .filter_map(|id| member_value(a.value, id, resolver))
                    .collect()
            })
            .collect())
    }
}

impl Planner for MappingPlanner {
    /// Where the entry's plan goes, without its member lists: the same DN
    /// as [`MappingPlanner::plan`] works out, the link, and what it names.
    fn route(&self, entry: &JournalEntry) -> Result<Route, PlanError> {
        let model = self.model.current();
        let resolver = StoreResolver {
            store: &self.store,
            model: &model,
        };
        // An Upsert of a resource deleted since converges to its absence.
        let dn = match entry.effective_op() {
            // The same error as `plan` gives.
            Op::Upsert if entry.kind == Kind::Group && model.mapping.group.is_none() => {
                return Err(PlanError::NoGroupTable);
            }
            Op::Delete if entry.kind == Kind::User && model.mapping.delete_deactivates() => {
                model
                    .desired(entry.kind, &deactivated(&entry.snapshot), &resolver)?
                    .dn
            }
            _ => model.desired(entry.kind, &entry.snapshot, &resolver)?.dn,
        };
        let linked = self
            .store
            .link(entry.kind, &entry.id)
            .map_err(|e| PlanError::Store(e.to_string()))?
            .map(|l| l.dn);
        if let (Op::Delete, Some(at)) = (entry.effective_op(), &linked) {
            if !(entry.kind == Kind::User && model.mapping.delete_deactivates()) {
                self.remember_departed(&model, entry, at, &resolver);
            }
        }
        Ok(Route {
            resource: (entry.kind, entry.id.clone()),
            dn,
            linked,
            dependencies: self.dependencies(entry),
        })
    }

    fn plan(&self, entry: &JournalEntry) -> Result<Plan, PlanError> {
        let model = self.model.current();
        let resolver = StoreResolver {
            store: &self.store,
            model: &model,
        };
        // An Upsert of a resource deleted since converges to its absence
        // (its snapshot is then the last state, from the Delete entry).
        let mut plan = match entry.effective_op() {
            Op::Upsert if entry.kind == Kind::Group => self.group_plan(&model, entry, &resolver)?,
            Op::Upsert => {
                let mut desired = model.desired(entry.kind, &entry.snapshot, &resolver)?;
                if entry.kind == Kind::User {
                    desired.memberships =
                        self.memberships(&model, entry, &entry.snapshot, &desired, &resolver)?;
                    // Write-only: only the password this entry carried.
                    desired.password = model
                        .mapping
                        .password
                        .as_ref()
                        .map(|m| m.write(entry.password.as_ref()));
                }
                Plan::Upsert(desired)
            }
            Op::Delete if entry.kind == Kind::User && model.mapping.delete_deactivates() => {
                // The mapping keeps deleted users, deactivated.
                Plan::Upsert(model.desired(entry.kind, &deactivated(&entry.snapshot), &resolver)?)
            }
            Op::Delete => Plan::Delete {
                dn: model.desired(entry.kind, &entry.snapshot, &resolver)?.dn,
            },
        };
        let desired = match &mut plan {
            Plan::Upsert(d) => Some(d),
            Plan::Group(g) => Some(&mut g.desired),
            Plan::Delete { .. } => None,
        };
        if let (Some(d), Some(rm)) = (desired, model.resource_mapping(entry.kind)) {
            d.claim = Some(Claim {
                id: entry.id.clone(),
                // The resource's creation, not this entry's: its add may
                // have been made for an earlier entry of the resource.
                accepted_at: entry
                    .snapshot
                    .pointer("/meta/created")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(&entry.at)
                    .to_string(),
                id_attribute: rm.id_attribute().map(str::to_string),
                policy: rm.adopt_policy().clone(),
            });
        }
        Ok(plan)
    }

    fn full_members(&self, entry: &JournalEntry) -> Result<Vec<Vec<String>>, PlanError> {
        let model = self.model.current();
        let resolver = StoreResolver {
            store: &self.store,
            model: &model,
        };
        self.member_lists(&model, &entry.id, &resolver)
    }
}

impl MappingPlanner {
    /// Remembers, before a linked entry is deleted, the values its groups'
    /// member attributes hold for it: its linked DN (where
    /// [`StoreResolver::dn`] finds a deleted entry while it is linked) and
    /// the attributes they copy (memberUid = uid), from its last state.
    fn remember_departed(
        &self,
        model: &Model,
        entry: &JournalEntry,
        linked: &str,
        resolver: &StoreResolver<'_>,
    ) {
        let mut values = Vec::new();
        if let Some(g) = &model.mapping.group {
            let own: Vec<&str> = g
                .members
                .attributes()
                .into_iter()
                .filter_map(|a| match a.value {
                    Reference::Attribute(own) => Some(own.as_str()),
                    Reference::Dn => None,
                })
                .collect();
            if !own.is_empty() {
                if let Ok(e) = model.entry(entry.kind, &entry.snapshot, resolver) {
                    for a in own {
                        if let Some(v) = e.get(a).and_then(|v| v.first()) {
                            values.push((a.to_string(), v.clone()));
                        }
                    }
                }
            }
        }
        self.departed
            .remember(&entry.id, linked.to_string(), values);
    }

    /// The users a user entry names through `resolve` rules (the
    /// enterprise manager): written as their DN, so they must exist first.
    /// A group names the members it adds: they must be in the directory
    /// first.
    fn dependencies(&self, entry: &JournalEntry) -> Vec<(Kind, String)> {
        if entry.effective_op() != Op::Upsert {
            return Vec::new();
        }
        if entry.kind == Kind::Group {
            // A member must be in the directory before a group names it.
            let added = entry
                .members
                .as_ref()
                .map(|m| m.add.as_slice())
                .unwrap_or_default();
            return added
                .iter()
                .map(|id| match self.store.exists(Kind::Group, id) {
                    Ok(true) => (Kind::Group, id.clone()),
                    _ => (Kind::User, id.clone()),
                })
                .collect();
        }
        let model = self.model.current();
        let mut out = Vec::new();
        for rule in model.mapping.user.rules() {
            if rule.resolve.is_none() {
                continue;
            }
            for src in &rule.sources {
                for id in src
                    .values(&entry.snapshot, &model.users)
                    .unwrap_or_default()
                {
                    if id != entry.id && !out.iter().any(|(_, o)| o == &id) {
                        out.push((Kind::User, id));
                    }
                }
            }
        }
        out
    }
}

/// A user's snapshot as a deleted user is kept when the mapping
/// deactivates instead of deleting.
fn deactivated(snapshot: &Value) -> Value {
    let mut gone = snapshot.clone();
    if let Some(o) = gone.as_object_mut() {
        o.insert("active".into(), Value::Bool(false));
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departed_entries_are_bounded_oldest_first() {
        let d = Departed::default();
        d.remember("a", "uid=a,dc=x".into(), vec![("uid".into(), "a".into())]);
        assert_eq!(d.value(&Reference::Dn, "a").as_deref(), Some("uid=a,dc=x"));
        assert_eq!(
            d.value(&Reference::Attribute("UID".into()), "a").as_deref(),
            Some("a")
        );
        assert_eq!(d.value(&Reference::Attribute("mail".into()), "a"), None);
        assert_eq!(d.value(&Reference::Dn, "b"), None);
        // Remembered again: still one entry, the latest values.
        d.remember("a", "uid=a2,dc=x".into(), Vec::new());
        assert_eq!(d.len(), 1);
        assert_eq!(d.value(&Reference::Dn, "a").as_deref(), Some("uid=a2,dc=x"));
        for i in 0..DEPARTED_CAPACITY {
            d.remember(&format!("u{i}"), format!("uid=u{i},dc=x"), Vec::new());
        }
        assert_eq!(d.len(), DEPARTED_CAPACITY);
        assert_eq!(d.value(&Reference::Dn, "a"), None, "the oldest went first");
        assert!(d.value(&Reference::Dn, "u0").is_some());
    }
}
