//! Adopting entries the directory already has: a SCIM lookup that misses
//! in the store (`userName eq "alice"`) searches the directory through the
//! mapping's reverse direction and, when exactly one entry matches, records
//! it as a resource (new id, snapshot read back from the entry, link by its
//! stable id) so that the identity provider links it instead of creating a
//! duplicate. `scim2ldap import` does the same for a whole subtree.
//!
//! Architecture invariant: adoption reads the directory and never writes
//! to it; the only thing it writes is the store (through
//! [`Store::adopt`], which journals the adoption as already applied).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Scope, SearchEntry};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::config::LdapConfig;
use crate::mapping::ResourceMapping;
use crate::model::SharedModel;
use crate::scim::filter::parse_filter;
use crate::scim::meta::Meta;
use crate::store::{now_rfc3339, Kind, Link, Store, WriteError};
use crate::writer::{ApplyError, Directory, WriterHandle};

/// Longest a lookup waits for the directory before the miss is answered
/// from the store alone: identity providers time out their requests.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Entries asked for per page by `import`.
const PAGE: i32 = 500;

/// What happened to one directory entry offered for adoption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Adopted(String),
    /// The entry is linked to a resource already.
    AlreadyLinked(String),
    /// A resource with the same unique attribute (userName) exists.
    Conflict(String),
    /// The entry does not read back as a usable resource (no userName).
    Unusable(String),
}

/// Counts for one resource type of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// The mapping's adopt table turns adoption of this type off: nothing
    /// was read.
    pub off: bool,
    /// Entries found but on the adopt table's `never` list.
    pub refused: usize,
    pub scanned: usize,
    pub adopted: usize,
    pub already_linked: usize,
    pub conflicts: usize,
    pub unusable: usize,
}

pub struct Adopter {
    store: Store,
    model: SharedModel,
    /// Tells whether the directory is known to be down (then lookups do
    /// not wait for it). `None` outside the daemon.
    writer: Option<WriterHandle>,
    /// `public_url + base_path`, for `meta.location` of imported
    /// resources when there is no request to take it from.
    base_url: Option<String>,
    /// One connection for lookups, separate from the writer's.
    dir: Mutex<Directory>,
    search_timeout: Duration,
    /// Counts adoptions, when the daemon supplies its metrics.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Adopter {
    pub fn new(
        store: Store,
        model: SharedModel,
        ldap: &LdapConfig,
        writer: Option<WriterHandle>,
        base_url: Option<String>,
    ) -> Adopter {
        let mut cfg = ldap.clone();
        let search_timeout = cfg.timeout;
        cfg.timeout = cfg.timeout.min(LOOKUP_TIMEOUT);
        Adopter {
            store,
            model,
            writer,
            base_url,
            dir: Mutex::new(Directory::new(cfg)),
            search_timeout,
            metrics: None,
        }
    }

    /// Counts every adoption in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Adopter {
        self.metrics = Some(metrics);
        self
    }

    /// The hook `GET /Users?filter=...` calls before answering from the
    /// store: when the filter is `userName eq` / `externalId eq` (users) or
    /// `displayName eq` / `externalId eq` (groups) and the store has no
    /// match, looks in the directory and adopts a single matching entry.
    /// Never fails: whatever goes wrong, the store answers alone.
    pub async fn before_list(&self, kind: Kind, filter: Option<&str>, base_url: &str) {
        let Some(text) = filter.filter(|f| !f.trim().is_empty()) else {
            return;
        };
        let Ok(filter) = parse_filter(text) else {
            return;
        };
        let Some((path, value)) = filter.eq_lookup() else {
            return;
        };
        if path.sub.is_some() || path.urn.is_some() {
            return;
        }
        let attr = path.name.as_str();
        let allowed = match kind {
            Kind::User => ["userName", "externalId"],
            Kind::Group => ["displayName", "externalId"],
        };
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(attr)) {
            return;
        }
        match self.store.lookup(kind, attr, value) {
            Ok(Some(ids)) if ids.is_empty() => {}
            _ => return,
        }
        if self.writer.as_ref().is_some_and(|w| !w.directory_up()) {
            debug!(
                attr,
                value, "directory unavailable: lookup answered from the store alone"
            );
            return;
        }
        match tokio::time::timeout(
            LOOKUP_TIMEOUT,
            self.lookup_and_adopt(kind, attr, value, base_url),
        )
        .await
        {
            Ok(Ok(Some(Outcome::Adopted(id)))) => {
                // Durable before the identity provider is told the id.
                if let Err(e) = self.store.commit(self.store.last_seq()).await {
                    warn!(error = %e, "could not flush the adoption");
                }
                debug!(kind = kind.name(), %id, attr, value, "lookup answered with the adopted entry")
            }
            Ok(Ok(Some(other))) => {
                info!(kind = kind.name(), attr, value, outcome = ?other, "directory entry not adopted")
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "directory lookup failed: answered from the store alone")
            }
            Err(_) => {
                self.dir.lock().await.reset();
                debug!("directory lookup timed out: answered from the store alone")
            }
        }
    }

    /// Searches for the entry holding `attr = value` and adopts it when it
    /// is the only one. `None`: no entry (or more than one).
    pub async fn lookup_and_adopt(
        &self,
        kind: Kind,
        attr: &str,
        value: &str,
        base_url: &str,
    ) -> Result<Option<Outcome>, AdoptError> {
        let model = self.model.current();
        let Some(rm) = model.resource_mapping(kind) else {
            return Ok(None);
        };
        let Some(filter) = rm.ldap_filter_for(attr, value) else {
            return Ok(None);
        };
        let policy = rm.adopt_policy();
        if !policy.enabled {
            debug!(
                kind = kind.name(),
                attr, value, "lookup missed; adoption of this type is off in the mapping"
            );
            return Ok(None);
        }
        let filter = policy.narrow(&filter);
        let mut dir = self.dir.lock().await;
        let attrs = wanted(rm, &model.mapping, kind, dir.uuid_attribute());
        let mut entries = Vec::new();
        for base in &policy.under {
            let ldap = dir.conn().await?;
            let r = ldap
                .search(base, Scope::Subtree, &filter, attrs.clone())
                .await
                .and_then(|r| r.success());
            match r {
                Ok((found, _)) => entries.extend(found),
                Err(ldap3::LdapError::LdapResult { result }) if result.rc == 32 => {}
                Err(e) => {
                    dir.reset();
                    return Err(AdoptError::Search {
                        base: base.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        let base = policy.under.join("; ");
        let mut entries: Vec<SearchEntry> =
            entries.into_iter().map(SearchEntry::construct).collect();
        // Subtrees may nest: one entry found twice is one entry.
        entries.dedup_by(|a, b| crate::mapping::adopt::same_entry(&a.dn, &b.dn));
        entries.retain(|e| match policy.check_dn(&e.dn) {
            Ok(()) => true,
            Err(why) => {
                info!(dn = %e.dn, %why, "not adopted");
                false
            }
        });
        match entries.len() {
            0 => Ok(None),
            1 => {
                let entry = entries.into_iter().next().expect("one entry");
                let uuid = dir.uuid_of(&entry);
                drop(dir);
                self.adopt_entry(kind, rm, entry, uuid, Some(base_url))
                    .map(Some)
            }
            n => {
                warn!(
                    filter,
                    base, n, "several directory entries match: none adopted"
                );
                Ok(None)
            }
        }
    }

    /// Records one directory entry as a resource.
    fn adopt_entry(
        &self,
        kind: Kind,
        rm: &ResourceMapping,
        entry: SearchEntry,
        uuid: Option<String>,
        base_url: Option<&str>,
    ) -> Result<Outcome, AdoptError> {
        if let Some(u) = &uuid {
            if let Some(id) = self.store.linked_id(kind, u)? {
                return Ok(Outcome::AlreadyLinked(id));
            }
        }
        let attrs: BTreeMap<String, Vec<String>> = entry.attrs.into_iter().collect();
        let mut resource = rm.to_scim(&attrs);
        let model = self.model.current();
        if crate::scim::schema::canonicalize(&mut resource, model.registry(kind)).is_err() {
            return Ok(Outcome::Unusable(format!(
                "{}: its attributes do not read back as a SCIM {}",
                entry.dn,
                kind.name()
            )));
        }
        let key = match kind {
            Kind::User => "userName",
            Kind::Group => "displayName",
        };
        if resource
            .get(key)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
        {
            return Ok(Outcome::Unusable(format!(
                "{}: no {key} can be read back through the mapping",
                entry.dn
            )));
        }
        // An id the mapping wrote into the entry earlier is reused, so a
        // store rebuilt from the directory keeps the identity provider's ids.
        let id = match resource.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && self.store.get(kind, id)?.is_none() => id.to_string(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let now = now_rfc3339();
        if let Some(obj) = resource.as_object_mut() {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        Meta {
            kind,
            id: &id,
            base_url: base_url.or(self.base_url.as_deref()),
            created: &now,
            last_modified: &now,
        }
        .stamp(&mut resource);
        if let Some(obj) = resource.as_object_mut() {
            if let Some(key) = crate::dn::first_rdn_key(&entry.dn) {
                obj.insert(crate::store::RDN_KEY.into(), Value::String(key));
            }
        }
        let link = Link {
            dn: entry.dn.clone(),
            uuid,
            adopted: true,
            applied: None,
        };
        if link.uuid.is_none() {
            warn!(dn = %entry.dn, "adopting an entry without a stable id: it stays linked by DN only");
        }
        match self.store.adopt(kind, &id, &mut resource, &link) {
            Ok(_) => {
                info!(kind = kind.name(), dn = %link.dn, %id, "adopted an existing directory entry");
                if let Some(m) = &self.metrics {
                    m.adopted(kind.name());
                }
                Ok(Outcome::Adopted(id))
            }
            Err(WriteError::Taken { attr, value, .. }) => {
                Ok(Outcome::Conflict(format!("{}: {attr} {value:?}", entry.dn)))
            }
            Err(WriteError::AlreadyLinked { dn, linked_to, .. }) => {
                let what = format!("{dn} (already linked to {linked_to})");
                Ok(Outcome::Conflict(format!("{}: entry {what:?}", entry.dn)))
            }
            Err(WriteError::Store(e)) => Err(AdoptError::Store(e)),
            Err(e) => Err(AdoptError::Refused(e.to_string())),
        }
    }

    /// Adopts every entry of the mapping's object class under the user
    /// (and group) DN template's parent, reading the directory page by
    /// page. Entries already linked are left alone.
    pub async fn import(&self) -> Result<Vec<(Kind, ImportCounts)>, AdoptError> {
        self.import_with_progress(&|_, _| {}).await
    }

    /// [`Adopter::import`], calling `progress(kind, entries read)` after
    /// each entry (for `import`'s progress bar).
    pub async fn import_with_progress(
        &self,
        progress: &(dyn Fn(Kind, usize) + Sync),
    ) -> Result<Vec<(Kind, ImportCounts)>, AdoptError> {
        let model = self.model.current();
        let mut out = Vec::new();
        for kind in [Kind::User, Kind::Group] {
            let Some(rm) = model.resource_mapping(kind) else {
                continue;
            };
            let policy = rm.adopt_policy();
            let mut counts = ImportCounts::default();
            if !policy.enabled {
                counts.off = true;
                out.push((kind, counts));
                continue;
            }
            let mut dir = self.dir.lock().await;
            let attrs = wanted(rm, &model.mapping, kind, dir.uuid_attribute());
            let filter = policy.narrow(&format!(
                "(objectClass={})",
                crate::dn::escape_filter_value(rm.search_class())
            ));
            for base in &policy.under {
                let ldap = dir.conn().await?;
                ldap.with_timeout(self.search_timeout);
                let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
                    Box::new(EntriesOnly::new()),
                    Box::new(PagedResults::new(PAGE)),
                ];
                let mut stream = ldap
                    .streaming_search_with(adapters, base, Scope::Subtree, &filter, attrs.clone())
                    .await
                    .map_err(|e| AdoptError::Search {
                        base: base.clone(),
                        message: e.to_string(),
                    })?;
                while let Some(e) = stream.next().await.map_err(|e| AdoptError::Search {
                    base: base.clone(),
                    message: e.to_string(),
                })? {
                    let entry = SearchEntry::construct(e);
                    counts.scanned += 1;
                    progress(kind, counts.scanned);
                    if let Err(why) = policy.check_dn(&entry.dn) {
                        info!(dn = %entry.dn, %why, "not imported");
                        counts.refused += 1;
                        continue;
                    }
                    let uuid = dir.uuid_of(&entry);
                    let dn = entry.dn.clone();
                    match self.adopt_entry(kind, rm, entry, uuid, None)? {
                        Outcome::Adopted(_) => counts.adopted += 1,
                        Outcome::AlreadyLinked(_) => counts.already_linked += 1,
                        Outcome::Conflict(why) => {
                            warn!(%dn, %why, "not imported: a resource with the same name exists");
                            counts.conflicts += 1
                        }
                        Outcome::Unusable(why) => {
                            warn!(%dn, %why, "not imported");
                            counts.unusable += 1
                        }
                    }
                }
                let res = stream.finish().await;
                if res.rc != 0 && res.rc != 32 {
                    return Err(AdoptError::Search {
                        base: base.clone(),
                        message: format!(
                            "{} ({}) {}",
                            crate::writer::rc_name(res.rc),
                            res.rc,
                            res.text
                        ),
                    });
                }
            }
            self.store.flush()?;
            out.push((kind, counts));
        }
        Ok(out)
    }
}

/// The attributes to read: every mapped one, the RDN's, the stable id.
fn wanted(
    rm: &ResourceMapping,
    mapping: &crate::mapping::Mapping,
    kind: Kind,
    uuid_attr: &str,
) -> Vec<String> {
    let mut v: Vec<String> = match kind {
        Kind::User => mapping
            .user_managed_attributes()
            .into_iter()
            .map(str::to_string)
            .collect(),
        Kind::Group => rm
            .managed_attributes()
            .into_iter()
            .map(str::to_string)
            .collect(),
    };
    v.push(rm.rdn_attribute().to_string());
    v.push("objectClass".into());
    v.push(uuid_attr.to_string());
    v.sort();
    v.dedup();
    v
}

/// Why a lookup or an import could not adopt.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The directory could not be reached or bound.
    #[error("{}", .0.message())]
    Directory(ApplyError),
    #[error("searching {base}: {message}")]
    Search { base: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The store refused the adoption for a reason other than a conflict.
    #[error("{0}")]
    Refused(String),
}

impl From<ApplyError> for AdoptError {
    fn from(e: ApplyError) -> AdoptError {
        AdoptError::Directory(e)
    }
}

/// Shared handle, as the API and the admin channel hold it.
pub type SharedAdopter = Arc<Adopter>;
