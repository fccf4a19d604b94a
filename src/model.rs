//! The loaded mapping and the SCIM schemas it implies, shared by the
//! request handlers and the writer, and swapped whole on reload; and the
//! planner that turns journal entries into directory plans with it.

use std::path::Path;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::ldap::{Desired, Plan, Planner};
use crate::mapping::{LdapEntry, Mapping, Resolver};
use crate::scim::schema::SchemaRegistry;
use crate::scim::ScimError;
use crate::store::{JournalEntry, Kind, Op, Store};

/// One consistent mapping plus the schemas derived from it.
pub struct Model {
    pub mapping: Mapping,
    pub users: SchemaRegistry,
    pub groups: SchemaRegistry,
}

impl Model {
    /// Reads and validates the mapping file.
    pub fn load(path: &Path) -> Result<Model, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mapping =
            Mapping::parse(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
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

    pub fn registry(&self, kind: Kind) -> &SchemaRegistry {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    /// The directory entry a resource maps to. An error here is the
    /// client's (400) and is found before anything is journaled.
    pub fn entry(
        &self,
        kind: Kind,
        resource: &Value,
        resolver: &dyn Resolver,
    ) -> Result<LdapEntry, ScimError> {
        match kind {
            Kind::User => self.mapping.user_entry(resource, &self.users, resolver),
            Kind::Group => Err(ScimError::new(
                501,
                None,
                "groups are not provisioned by this version",
            )),
        }
    }

    /// The plan for a resource's state: the entry plus which attributes the
    /// writer may touch.
    fn desired(
        &self,
        kind: Kind,
        resource: &Value,
        resolver: &dyn Resolver,
    ) -> Result<Desired, String> {
        let e = self
            .entry(kind, resource, resolver)
            .map_err(|e| format!("mapping: {}", e.detail))?;
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
        Ok(Desired {
            dn: e.dn,
            object_classes: e.object_classes,
            attrs: e.attrs,
            managed,
            required,
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

/// Resolves references between resources (a user's manager) through the
/// store: the linked entry's DN, or where the mapping would put it.
pub struct StoreResolver<'a> {
    pub store: &'a Store,
    pub model: &'a Model,
}

impl StoreResolver<'_> {
    fn mapped(&self, id: &str) -> Option<LdapEntry> {
        let snapshot = self.store.get(Kind::User, id).ok()??;
        self.model
            .mapping
            .user
            .entry(&snapshot, &self.model.users)
            .ok()
    }
}

impl Resolver for StoreResolver<'_> {
    fn dn(&self, id: &str) -> Option<String> {
        if let Ok(Some(link)) = self.store.link(Kind::User, id) {
            return Some(link.dn);
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
}

impl Planner for MappingPlanner {
    fn plan(&self, entry: &JournalEntry) -> Result<Plan, String> {
        let model = self.model.current();
        let resolver = StoreResolver {
            store: &self.store,
            model: &model,
        };
        Ok(match entry.op {
            Op::Upsert => Plan::Upsert(model.desired(entry.kind, &entry.snapshot, &resolver)?),
            Op::Delete if entry.kind == Kind::User && model.mapping.delete_deactivates() => {
                // The mapping keeps deleted users, deactivated.
                let mut gone = entry.snapshot.clone();
                if let Some(o) = gone.as_object_mut() {
                    o.insert("active".into(), Value::Bool(false));
                }
                Plan::Upsert(model.desired(entry.kind, &gone, &resolver)?)
            }
            Op::Delete => Plan::Delete {
                dn: model.desired(entry.kind, &entry.snapshot, &resolver)?.dn,
            },
        })
    }

    /// The users a user entry names through `resolve` rules (the
    /// enterprise manager): written as their DN, so they must exist first.
    fn dependencies(&self, entry: &JournalEntry) -> Vec<(Kind, String)> {
        if entry.kind != Kind::User || entry.op != Op::Upsert {
            return Vec::new();
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
