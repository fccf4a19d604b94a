//! The LDAP writer: takes journal entries in order and converges the
//! directory to the state each one carries.
//!
//! For every entry it asks a [`Planner`] (the mapping) what the directory
//! should hold, reads what it does hold, and sends the minimal add /
//! modrdn / modify / delete. Because it converges to a state instead of
//! replaying a delta, applying an entry twice leaves the directory as
//! applying it once.
//!
//! Architecture invariant: this module knows LDAP and the journal, never
//! SCIM JSON or the mapping file; only attributes named in a [`Desired`]
//! are ever modified.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{
    ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry,
};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info, warn};

use crate::config::LdapConfig;
use crate::store::{EntryState, Failure, JournalEntry, Kind, Link, Store, StoreError};

/// What the directory should hold for one journal entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The entry must exist and match.
    Upsert(Desired),
    /// The entry must not exist. `dn` is where it would be if it was never
    /// linked (the link, when there is one, wins).
    Delete { dn: String },
    /// A group: its entry, plus a change to its member attributes.
    Group(GroupPlan),
}

/// A group's entry and its membership change.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    /// The entry without the member attributes (not in `managed` either).
    pub desired: Desired,
    /// Every attribute that lists the members, the mapping's main one
    /// first (`member`; then `memberUid` on a groupOfNames + posixGroup
    /// entry), each with its change. Their deltas go in one modify.
    pub members: Vec<MemberAttrPlan>,
    /// Only members changed: the delta can go to the linked entry without
    /// reading it first (a 50,000-member entry is costly to read).
    pub only_members: bool,
}

/// One member attribute of a group and what to do with its values.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberAttrPlan {
    /// `member`, `uniqueMember`, `memberUid`, ...
    pub attr: String,
    pub values: MemberPlan,
    /// The value that keeps a group valid while the attribute has no
    /// member values; `None`: the attribute is removed then.
    pub placeholder: Option<String>,
}

/// What to do with a group's member values.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberPlan {
    /// Converge to exactly these values (reads the current ones).
    Full(Vec<String>),
    /// Add and remove these values only: costs the same whatever the size
    /// of the group. `empty_before` / `empty_after` say when the placeholder
    /// goes or comes.
    Delta {
        add: Vec<String>,
        remove: Vec<String>,
        empty_before: bool,
        empty_after: bool,
    },
}

/// An entry as the mapping says it should be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub dn: String,
    pub object_classes: Vec<String>,
    /// Mapped attributes that have values.
    pub attrs: BTreeMap<String, Vec<String>>,
    /// Every attribute the mapping names: one of these with no value in
    /// `attrs` is removed from the entry; attributes not named here are
    /// never touched.
    pub managed: Vec<String>,
    /// Managed attributes that are never emptied (the directory requires
    /// them): with no value in `attrs`, the entry keeps what it has.
    pub required: Vec<String>,
    /// Group member attributes whose values are this entry's DN: rewritten
    /// in every group when the entry is renamed (empty when the directory
    /// does that itself).
    pub dn_referrers: Vec<String>,
    /// (group member attribute, own attribute): group values that are this
    /// entry's value of `own` (memberUid = uid), rewritten when it changes.
    pub value_referrers: Vec<(String, String)>,
    /// Active Directory: `Some(true)` sets bit 2 (ACCOUNTDISABLE) of
    /// userAccountControl, `Some(false)` clears it; the other bits are kept.
    pub ad_disable: Option<bool>,
    /// Group entries this entry must be in (`present`) or out of: a user
    /// left out of its groups while inactive, put back when reactivated.
    pub memberships: Vec<Membership>,
}

/// One group entry's member value for this entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub group_dn: String,
    pub attr: String,
    pub value: String,
    pub present: bool,
    /// The group's empty-group placeholder, if it has one.
    pub placeholder: Option<String>,
}

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

/// Gives a group's current member values, for when a delta cannot be
/// applied: one list per [`GroupPlan::members`] attribute, in that order.
pub type FullMembers<'a> = &'a (dyn Fn() -> Result<Vec<Vec<String>>, String> + Send + Sync);

/// Turns journal entries into plans. Implemented by the mapping layer.
pub trait Planner: Send + Sync {
    fn plan(&self, entry: &JournalEntry) -> Result<Plan, String>;
    /// The member values a group has now, one list per member attribute
    /// of its plan (same order): used when a delta cannot be applied (the
    /// entry is missing, or the directory disagrees).
    fn full_members(&self, entry: &JournalEntry) -> Result<Vec<Vec<String>>, String>;
    /// Other resources this entry names (a group's members, a user's
    /// manager). The writer does not apply the entry while one of them has
    /// an earlier write that has not reached the directory (parked, or
    /// waiting itself): the entry and the later writes of its resource
    /// wait, in order, and go ahead once that write is applied or skipped.
    fn dependencies(&self, _entry: &JournalEntry) -> Vec<(Kind, String)> {
        Vec::new()
    }
}

/// Why an entry could not be applied.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// The directory could not be reached or was busy: retry later.
    Retry(String),
    /// Retrying cannot fix it (schema violation, access, bad mapping):
    /// park the entry.
    Park { code: Option<u32>, message: String },
}

const UAC: &str = "userAccountControl";

/// RFC 4527's post-read control.
const POST_READ_OID: &str = "1.3.6.1.1.13.2";

/// LDAP result codes worth retrying: busy, unavailable, and limits that a
/// later attempt may not hit.
const RETRYABLE: &[u32] = &[3, 11, 51, 52, 80];

fn classify(e: LdapError) -> ApplyError {
    match e {
        LdapError::LdapResult { result } if !RETRYABLE.contains(&result.rc) => ApplyError::Park {
            code: Some(result.rc),
            message: format!(
                "{} ({}){}",
                rc_name(result.rc),
                result.rc,
                if result.text.is_empty() {
                    String::new()
                } else {
                    format!(": {}", result.text)
                }
            ),
        },
        other => ApplyError::Retry(other.to_string()),
    }
}

/// Names of the LDAP result codes an administrator is likely to see.
pub fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        11 => "adminLimitExceeded",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        80 => "other",
        _ => "ldapError",
    }
}

/// A connection to the directory, opened on first use and re-opened after
/// a failure; one connection serves every operation.
pub struct Directory {
    cfg: LdapConfig,
    /// Attribute holding the directory's stable id (entryUUID, objectGUID).
    uuid_attr: String,
    ldap: Option<Ldap>,
}

impl Directory {
    pub fn new(cfg: LdapConfig) -> Directory {
        let uuid_attr = cfg.uuid_attribute.clone();
        Directory {
            cfg,
            uuid_attr,
            ldap: None,
        }
    }

    /// The open connection, connecting and binding if needed.
    pub async fn conn(&mut self) -> Result<&mut Ldap, ApplyError> {
        if self.ldap.as_mut().is_some_and(|l| l.is_closed()) {
            self.ldap = None;
        }
        if self.ldap.is_none() {
            let mut settings = LdapConnSettings::new().set_conn_timeout(self.cfg.timeout);
            let tls = self.cfg.url.starts_with("ldaps://") || self.cfg.starttls;
            if tls {
                let config = crate::tls::ldap_client_config(self.cfg.ca_file.as_deref())
                    .map_err(ApplyError::Retry)?;
                settings = settings.set_config(config).set_starttls(self.cfg.starttls);
            }
            let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url)
                .await
                .map_err(|e| {
                    let text = e.to_string();
                    let hint = crate::tls::explain(&text)
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default();
                    let how = if self.cfg.starttls {
                        " with StartTLS"
                    } else {
                        ""
                    };
                    ApplyError::Retry(format!(
                        "cannot connect to {}{how}: {text}{hint}",
                        self.cfg.url
                    ))
                })?;
            ldap3::drive!(conn);
            ldap.with_timeout(self.cfg.timeout);
            if !self.cfg.bind_dn.is_empty() {
                ldap.simple_bind(&self.cfg.bind_dn, self.cfg.bind_password.expose())
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| match classify(e) {
                        ApplyError::Park { message, .. } => ApplyError::Retry(format!(
                            "bind as {} failed: {message}",
                            self.cfg.bind_dn
                        )),
                        r => r,
                    })?;
            }
            debug!(url = %self.cfg.url, "connected to the directory");
            self.ldap = Some(ldap);
        }
        match self.ldap.as_mut() {
            Some(l) => {
                l.with_timeout(self.cfg.timeout);
                Ok(l)
            }
            None => Err(ApplyError::Retry("not connected".into())),
        }
    }

    /// Drops the connection so the next operation reconnects.
    pub fn reset(&mut self) {
        self.ldap = None;
    }

    /// Reads one entry: through the link's stable id when there is one,
    /// else at `dn`. `None` when it does not exist.
    async fn find(
        &mut self,
        link: Option<&Link>,
        dn: &str,
        attrs: &[String],
    ) -> Result<Option<SearchEntry>, ApplyError> {
        let mut wanted: Vec<String> = attrs.to_vec();
        wanted.push("objectClass".into());
        wanted.push(self.uuid_attr.clone());
        // The cheapest read first: the entry where it was linked, if it is
        // still the same entry there (an administrator may have moved it).
        if let Some(Link {
            dn: at,
            uuid: Some(uuid),
        }) = link
        {
            if let Some(e) = self.read_at(at, &wanted).await? {
                if self.uuid_of(&e).as_deref() == Some(uuid.as_str()) {
                    return Ok(Some(e));
                }
            }
        }
        if let Some(uuid) = link.and_then(|l| l.uuid.as_deref()) {
            let filter = format!("({}={})", self.uuid_attr, escape_uuid(uuid));
            let base = self.cfg.base_dn.clone();
            let ldap = self.conn().await?;
            let (entries, _) = ldap
                .search(&base, Scope::Subtree, &filter, &wanted)
                .await
                .and_then(|r| r.success())
                .map_err(classify)?;
            if let Some(e) = entries.into_iter().next() {
                return Ok(Some(SearchEntry::construct(e)));
            }
        }
        let mut dns = vec![dn.to_string()];
        if let Some(l) = link {
            if !same_dn(&l.dn, dn) {
                dns.insert(0, l.dn.clone());
            }
        }
        for dn in dns {
            if let Some(e) = self.read_at(&dn, &wanted).await? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// The entry at `dn`, if there is one.
    async fn read_at(
        &mut self,
        dn: &str,
        attrs: &[String],
    ) -> Result<Option<SearchEntry>, ApplyError> {
        let ldap = self.conn().await?;
        match ldap
            .search(dn, Scope::Base, "(objectClass=*)", attrs)
            .await
            .and_then(|r| r.success())
        {
            Ok((entries, _)) => Ok(entries.into_iter().next().map(SearchEntry::construct)),
            Err(LdapError::LdapResult { result }) if result.rc == 32 => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// The attribute that holds the directory's stable id.
    pub fn uuid_attribute(&self) -> &str {
        &self.uuid_attr
    }

    /// The stable id of an entry read with [`Self::uuid_attribute`].
    pub fn uuid_of(&self, e: &SearchEntry) -> Option<String> {
        if let Some(v) = attr_ci(&e.attrs, &self.uuid_attr).and_then(|v| v.first()) {
            return Some(v.clone());
        }
        // objectGUID (AD) is binary: keep it as hex, searched with \xx escapes.
        attr_ci(&e.bin_attrs, &self.uuid_attr)
            .and_then(|v| v.first())
            .map(|b| {
                format!(
                    "hex:{}",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                )
            })
    }

    /// Converges the directory to `plan`. Returns the link to record
    /// (`None` after a delete).
    pub async fn apply(
        &mut self,
        plan: &Plan,
        link: Option<&Link>,
        full_members: FullMembers<'_>,
    ) -> Result<Option<Link>, ApplyError> {
        if self.cfg.dry_run {
            // serve --dry-run: show the change as LDIF, send nothing.
            // Written with `if let` so that a new kind of plan falls to the
            // last branch instead of failing to compile here.
            let (ldif, link) = if let Plan::Upsert(want) = plan {
                (
                    crate::ldif::add(&want.dn, &want.object_classes, &want.attrs),
                    Some(Link {
                        dn: want.dn.clone(),
                        uuid: None,
                    }),
                )
            } else if let Plan::Delete { dn } = plan {
                (crate::ldif::delete(dn), None)
            } else if let Plan::Group(g) = plan {
                let link = Some(Link {
                    dn: g.desired.dn.clone(),
                    uuid: None,
                });
                (group_ldif(g), link)
            } else {
                (format!("# {plan:?}\n"), link.cloned())
            };
            info!(dry_run = true, "would converge the directory to:\n{ldif}");
            return Ok(link);
        }
        match plan {
            Plan::Delete { dn } => {
                if let Some(cur) = self.find(link, dn, &[]).await? {
                    let ldap = self.conn().await?;
                    match ldap.delete(&cur.dn).await.and_then(|r| r.success()) {
                        Ok(_)
                        | Err(LdapError::LdapResult {
                            result: ldap3::LdapResult { rc: 32, .. },
                        }) => {}
                        Err(e) => return Err(classify(e)),
                    }
                    info!(dn = %cur.dn, "deleted entry");
                }
                Ok(None)
            }
            Plan::Upsert(want) => self.upsert(want, link, None).await.map(Some),
            Plan::Group(g) => self
                .upsert(&g.desired, link, Some((g, full_members)))
                .await
                .map(Some),
        }
    }

    async fn upsert(
        &mut self,
        want: &Desired,
        link: Option<&Link>,
        group: Option<(&GroupPlan, FullMembers<'_>)>,
    ) -> Result<Link, ApplyError> {
        // Fast path for an entry never linked: add it at once, with the
        // post-read control asking for its stable id in the same answer. If
        // it is there already (an earlier attempt, an existing entry), the
        // converging path below takes over.
        if let (Some(l), Some((g, _))) = (link, group) {
            if g.only_members
                && g.members
                    .iter()
                    .all(|m| matches!(m.values, MemberPlan::Delta { .. }))
                && same_dn(&l.dn, &want.dn)
            {
                let mods = member_delta_mods(g);
                if mods.is_empty() {
                    return Ok(l.clone());
                }
                let ldap = self.conn().await?;
                match ldap.modify(&l.dn, mods).await.and_then(|r| r.success()) {
                    Ok(_) => return Ok(l.clone()),
                    // Moved, or not in the state the delta assumes: converge.
                    Err(LdapError::LdapResult { result })
                        if [16, 20, 32, 65].contains(&result.rc) => {}
                    Err(e) => return Err(classify(e)),
                }
            }
        }
        if link.is_none() {
            if let Some(done) = self.add_entry(want, group).await? {
                self.set_memberships(want).await?;
                return Ok(done);
            }
        }
        let mut read = want.managed.clone();
        if want.ad_disable.is_some() {
            read.push(UAC.to_string());
        }
        let Some(mut cur) = self.find(link, &want.dn, &read).await? else {
            return match self.add_entry(want, group).await? {
                Some(done) => {
                    self.set_memberships(want).await?;
                    Ok(done)
                }
                None => Err(ApplyError::Retry(format!(
                    "{} appeared while it was being added",
                    want.dn
                ))),
            };
        };

        // Values that group member attributes hold for this entry (memberUid
        // = uid), read before a rename changes them.
        let referenced: Vec<(String, Vec<String>, Vec<String>)> = want
            .value_referrers
            .iter()
            .map(|(group_attr, own)| {
                let old = attr_ci(&cur.attrs, own).cloned().unwrap_or_default();
                let new = want
                    .attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(own))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                (group_attr.clone(), old, new)
            })
            .collect();

        if !same_dn(&cur.dn, &want.dn) {
            let (new_rdn, new_parent) = split_rdn(&want.dn);
            let (_, old_parent) = split_rdn(&cur.dn);
            let new_sup = (!same_dn(old_parent, new_parent)).then_some(new_parent);
            let ldap = self.conn().await?;
            ldap.modifydn(&cur.dn, new_rdn, true, new_sup)
                .await
                .and_then(|r| r.success())
                .map_err(classify)?;
            info!(from = %cur.dn, to = %want.dn, "renamed entry");
            for attr in &want.dn_referrers {
                self.rewrite_references(attr, &cur.dn, &want.dn).await?;
            }
            // Re-read: the RDN change altered the naming attribute's values.
            cur = self
                .find(None, &want.dn, &read)
                .await?
                .ok_or_else(|| ApplyError::Retry(format!("{} vanished after rename", want.dn)))?;
        }

        for (group_attr, old, new) in &referenced {
            if let ([old], [new]) = (old.as_slice(), new.as_slice()) {
                if old != new {
                    self.rewrite_references(group_attr, old, new).await?;
                }
            }
        }

        let mut mods = diff(want, &cur);
        if let Some(disable) = want.ad_disable {
            mods.retain(|m| !matches!(m, Mod::Replace(a, _) | Mod::Delete(a, _) if a.eq_ignore_ascii_case(UAC)));
            let current = attr_ci(&cur.attrs, UAC).and_then(|v| v.first()).cloned();
            let value = user_account_control(current.as_deref(), disable);
            if current.as_deref() != Some(value.as_str()) {
                mods.push(Mod::Replace(UAC.to_string(), HashSet::from([value])));
            }
        }
        if !mods.is_empty() {
            let ldap = self.conn().await?;
            ldap.modify(&cur.dn, mods)
                .await
                .and_then(|r| r.success())
                .map_err(classify)?;
            info!(dn = %cur.dn, "modified entry");
        }
        self.set_memberships(want).await?;
        if let Some((g, full)) = group {
            self.apply_members(&cur.dn, g, full).await?;
        }
        Ok(Link {
            dn: cur.dn.clone(),
            uuid: self
                .uuid_of(&cur)
                .or_else(|| link.and_then(|l| l.uuid.clone())),
        })
    }

    /// Applies a group's member change: the deltas alone (one modify for
    /// every member attribute); if the directory disagrees with them (a
    /// value already there or already gone, an emptiness the store did not
    /// expect), converges every member attribute to the full current list
    /// instead. Attributes planned as full lists are converged.
    async fn apply_members(
        &mut self,
        dn: &str,
        g: &GroupPlan,
        full: FullMembers<'_>,
    ) -> Result<(), ApplyError> {
        let mods = member_delta_mods(g);
        if !mods.is_empty() {
            let ldap = self.conn().await?;
            match ldap.modify(dn, mods).await.and_then(|r| r.success()) {
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
                    return self.converge_members(dn, &targets).await;
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
        self.converge_members(dn, &targets).await
    }

    /// Makes each member attribute hold exactly its values (or its
    /// placeholder when there are none, or nothing), reading them in one
    /// search and sending only what differs in one modify.
    async fn converge_members(
        &mut self,
        dn: &str,
        targets: &[(&MemberAttrPlan, &[String])],
    ) -> Result<(), ApplyError> {
        let attrs: Vec<String> = targets.iter().map(|(m, _)| m.attr.clone()).collect();
        let cur = self
            .find(None, dn, &attrs)
            .await?
            .ok_or_else(|| ApplyError::Retry(format!("{dn} vanished")))?;
        let mut mods = Vec::new();
        for (m, values) in targets {
            let have: Vec<String> = attr_ci(&cur.attrs, &m.attr).cloned().unwrap_or_default();
            let mut want: Vec<String> = values.to_vec();
            if want.is_empty() {
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
            let del: HashSet<String> = have_n
                .iter()
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
        ldap.modify(dn, mods)
            .await
            .and_then(|r| r.success())
            .map_err(classify)?;
        debug!(%dn, "converged members");
        Ok(())
    }

    async fn set_memberships(&mut self, want: &Desired) -> Result<(), ApplyError> {
        for m in &want.memberships {
            self.set_membership(m).await?;
        }
        Ok(())
    }

    /// Adds the entry `want` describes (a group with its members). `None`
    /// when an entry is at that DN already.
    async fn add_entry(
        &mut self,
        want: &Desired,
        group: Option<(&GroupPlan, FullMembers<'_>)>,
    ) -> Result<Option<Link>, ApplyError> {
        let mut attrs: Vec<(String, HashSet<String>)> = Vec::new();
        attrs.push((
            "objectClass".into(),
            want.object_classes.iter().cloned().collect(),
        ));
        for (name, values) in &want.attrs {
            let set: HashSet<String> = values.iter().filter(|v| !v.is_empty()).cloned().collect();
            if !set.is_empty() {
                attrs.push((name.clone(), set));
            }
        }
        if let Some(disable) = want.ad_disable {
            let mapped = attrs.iter().position(|(k, _)| k.eq_ignore_ascii_case(UAC));
            let current = mapped.and_then(|i| attrs[i].1.iter().next().cloned());
            let value = user_account_control(current.as_deref(), disable);
            if let Some(i) = mapped {
                attrs.remove(i);
            }
            attrs.push((UAC.to_string(), HashSet::from([value])));
        }
        if let Some((g, full)) = group {
            // A delta on a group that was not empty needs the whole list:
            // asked once for every attribute.
            let needs_full = g.members.iter().any(|m| {
                matches!(
                    m.values,
                    MemberPlan::Delta {
                        empty_before: false,
                        ..
                    }
                )
            });
            let lists = if needs_full {
                Some(full_lists(g, full)?)
            } else {
                None
            };
            for (i, m) in g.members.iter().enumerate() {
                let values = match (&m.values, &lists) {
                    (MemberPlan::Full(v), _) => v.clone(),
                    (
                        MemberPlan::Delta {
                            add,
                            empty_before: true,
                            ..
                        },
                        _,
                    ) => add.clone(),
                    (MemberPlan::Delta { .. }, Some(lists)) => lists[i].clone(),
                    (MemberPlan::Delta { .. }, None) => Vec::new(),
                };
                let values: HashSet<String> = if values.is_empty() {
                    m.placeholder.iter().cloned().collect()
                } else {
                    values.into_iter().collect()
                };
                if !values.is_empty() {
                    attrs.push((m.attr.clone(), values));
                }
            }
        }
        let uuid_attr = self.uuid_attr.clone();
        let ldap = self.conn().await?;
        let added = ldap
            .with_controls(ldap3::controls::PostRead::new(vec![uuid_attr.as_str()]))
            .add(&want.dn, attrs)
            .await
            .and_then(|r| r.success());
        let result = match added {
            Ok(r) => r,
            Err(LdapError::LdapResult { result }) if result.rc == 68 => return Ok(None),
            Err(e) => return Err(classify(e)),
        };
        info!(dn = %want.dn, "added entry");
        let uuid = match post_read_value(&result, &uuid_attr) {
            Some(u) => Some(u),
            // The directory ignored the control (Active Directory does).
            None => self
                .find(None, &want.dn, &[])
                .await?
                .and_then(|e| self.uuid_of(&e)),
        };
        Ok(Some(Link {
            dn: want.dn.clone(),
            uuid,
        }))
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

    /// Replaces `old` with `new` in `attr` of every entry under the base
    /// that holds it (group member values after a rename).
    async fn rewrite_references(
        &mut self,
        attr: &str,
        old: &str,
        new: &str,
    ) -> Result<(), ApplyError> {
        let filter = format!("({attr}={})", ldap_escape(old));
        let base = self.cfg.base_dn.clone();
        let ldap = self.conn().await?;
        let (entries, _) = ldap
            .search(&base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|r| r.success())
            .map_err(classify)?;
        for e in entries {
            let e = SearchEntry::construct(e);
            let mods = vec![
                Mod::Delete(attr.to_string(), HashSet::from([old.to_string()])),
                Mod::Add(attr.to_string(), HashSet::from([new.to_string()])),
            ];
            let ldap = self.conn().await?;
            match ldap.modify(&e.dn, mods).await.and_then(|r| r.success()) {
                // Already rewritten (by a replay, or by the directory).
                Ok(_)
                | Err(LdapError::LdapResult {
                    result: ldap3::LdapResult { rc: 16 | 20, .. },
                }) => {}
                Err(e) => return Err(classify(e)),
            }
            info!(group = %e.dn, %attr, "rewrote member value after rename");
        }
        Ok(())
    }
}

/// A group plan as `serve --dry-run` logs it: a comment line per member
/// delta, then the entry as an add record with the member attributes
/// planned as full lists (an empty one as its placeholder, or absent).
fn group_ldif(g: &GroupPlan) -> String {
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
fn member_delta_mods(g: &GroupPlan) -> Vec<Mod<String>> {
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

/// The group's full member lists, one per member attribute of the plan.
/// A count that differs means the mapping was reloaded since the plan was
/// made: the next pass plans again.
fn full_lists(g: &GroupPlan, full: FullMembers<'_>) -> Result<Vec<Vec<String>>, ApplyError> {
    let lists = full().map_err(|message| ApplyError::Park {
        code: None,
        message,
    })?;
    if lists.len() != g.members.len() {
        return Err(ApplyError::Retry(format!(
            "the mapping's member attributes changed while {} was being written; planning it again",
            g.desired.dn
        )));
    }
    Ok(lists)
}

/// The value of `attr` in a post-read response control, if the directory
/// sent one.
fn post_read_value(result: &ldap3::LdapResult, attr: &str) -> Option<String> {
    let ctrl = result
        .ctrls
        .iter()
        .find(|c| c.1.ctype == POST_READ_OID && c.1.val.is_some())?;
    // The parser expects well-formed BER; a directory that sends anything
    // else loses only this shortcut.
    let parsed =
        std::panic::catch_unwind(|| ctrl.1.parse::<ldap3::controls::PostReadResp>()).ok()?;
    attr_ci(&parsed.attrs, attr).and_then(|v| v.first().cloned())
}

/// A member value in comparable form: DNs parsed and lower-cased, other
/// values lower-cased (member attributes compare case-insensitively).
fn norm_value(v: &str) -> String {
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

fn attr_ci<'a, V>(attrs: &'a HashMap<String, V>, name: &str) -> Option<&'a V> {
    attrs.get(name).or_else(|| {
        attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The stable id as a filter value: plain ids are escaped per RFC 4515,
/// binary ones (kept as `hex:...`) become `\xx` byte escapes.
fn escape_uuid(uuid: &str) -> String {
    match uuid.strip_prefix("hex:") {
        Some(hex) => hex
            .as_bytes()
            .chunks(2)
            .map(|c| format!("\\{}", String::from_utf8_lossy(c)))
            .collect(),
        None => ldap_escape(uuid).into_owned(),
    }
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

// ---- the background writer -------------------------------------------------

/// Exponential backoff with jitter, capped.
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }
    /// The next delay: doubles each time, with ±25 % jitter so that many
    /// daemons do not retry in step.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = 0.75 + (nanos % 1000) as f64 / 2000.0;
        base.mul_f64(jitter)
    }
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Handle on the running writer.
#[derive(Clone)]
pub struct WriterHandle {
    wake: Arc<Notify>,
    processed: watch::Receiver<u64>,
    up: watch::Receiver<bool>,
}

impl WriterHandle {
    /// Tells the writer that new entries are pending.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
    /// Highest seq such that every entry up to it is applied or parked.
    pub fn processed(&self) -> u64 {
        *self.processed.borrow()
    }
    /// False while the directory cannot be reached (after a failed attempt,
    /// until the next success).
    pub fn directory_up(&self) -> bool {
        *self.up.borrow()
    }
    /// Waits until every entry up to `seq` is applied or parked.
    pub async fn wait_processed(&self, seq: u64) {
        let mut rx = self.processed.clone();
        let _ = rx.wait_for(|p| *p >= seq).await;
    }
}

pub struct Writer {
    store: Store,
    planner: Arc<dyn Planner>,
    /// One connection per lane: resources are applied in parallel across
    /// lanes, each resource's entries in order within its lane. Taken by
    /// [`Writer::run`], which gives each to a lane task.
    dirs: Vec<Directory>,
    wake: Arc<Notify>,
    processed: watch::Sender<u64>,
    up: watch::Sender<bool>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// How many pending entries the dispatcher reads from the store at a time.
const BATCH: usize = 512;

/// How many entries one lane holds at most (in hand and queued). Small, so
/// that an entry goes to the lane that is free when it is dispatched.
const LANE_DEPTH: usize = 8;

impl Writer {
    pub fn new(store: Store, planner: Arc<dyn Planner>, cfg: LdapConfig) -> (Writer, WriterHandle) {
        let wake = Arc::new(Notify::new());
        let (tx, rx) = watch::channel(0);
        let (up_tx, up_rx) = watch::channel(true);
        (
            Writer {
                store,
                planner,
                dirs: (0..cfg.connections.max(1))
                    .map(|_| Directory::new(cfg.clone()))
                    .collect(),
                wake: wake.clone(),
                processed: tx,
                up: up_tx,
                metrics: None,
            },
            WriterHandle {
                wake,
                processed: rx,
                up: up_rx,
            },
        )
    }

    /// Counts every apply attempt, by result, into `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<crate::metrics::Metrics>) {
        self.metrics = Some(metrics);
    }

    /// Applies pending entries until `shutdown` turns true, then returns
    /// (after finishing the entries the lanes hold).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        let mut lanes = Lanes::start(
            std::mem::take(&mut self.dirs),
            self.planner.clone(),
            self.store.clone(),
        );
        let result = self.run_lanes(&mut lanes, &mut shutdown).await;
        // The lane tasks hold the store: they are gone before this returns.
        lanes.stop().await;
        result
    }

    async fn run_lanes(
        &mut self,
        lanes: &mut Lanes,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let wake = self.wake.clone();
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            match self.pass(lanes, shutdown).await? {
                Pass::Done => {
                    backoff.reset();
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Pass::Retry(msg) => {
                    self.up.send_if_modified(|u| std::mem::replace(u, false));
                    let delay = backoff.next_delay();
                    warn!(error = %msg, retry_in = ?delay, pending = self.store.pending_count(), "directory unavailable; writes stay queued");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// One pass over the pending entries, oldest first, until none is left
    /// that can be applied now. Entries are dispatched one by one to the
    /// lanes, which apply them at once, each on its own connection; the
    /// pass keeps taking entries accepted while it runs.
    ///
    /// Order: while an entry is in a lane, every later entry that shares
    /// one of its keys (its resource, the resources it names, the DNs it
    /// touches) goes to the same lane, behind it. An entry whose keys are
    /// held by two lanes waits until one of them lets go.
    async fn pass(
        &mut self,
        lanes: &mut Lanes,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Pass, StoreError> {
        lanes.new_pass();
        let mut horizon = self.store.last_seq();
        // Resources with a parked or waiting entry: their later entries
        // wait behind it, and so do entries that name them.
        let mut blocked: HashSet<(Kind, String)> = HashSet::new();
        let mut retry: Option<String> = None;
        let mut queue: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
        let mut after = 0;
        // The entry at the head of the queue, read and planned, waiting
        // for a lane.
        let mut ready: Option<Ready> = None;
        loop {
            while let Some(report) = lanes.try_report() {
                self.absorb(report?, &mut blocked, &mut retry);
            }
            if retry.is_some() || *shutdown.borrow() {
                break;
            }
            if ready.is_none() {
                let Some(seq) = queue.pop_front() else {
                    let seqs = self.store.pending_after(after, BATCH)?;
                    let fresh: Vec<u64> = seqs.into_iter().filter(|s| *s <= horizon).collect();
                    if let Some(&last) = fresh.last() {
                        after = last;
                        queue.extend(fresh);
                        continue;
                    }
                    // Caught up to the horizon: take what was accepted
                    // meanwhile, or wait for the lanes, or end the pass.
                    let now = self.store.last_seq();
                    if now > horizon {
                        horizon = now;
                        continue;
                    }
                    if lanes.idle() {
                        break;
                    }
                    if let Some(report) = lanes.next_report(Some(Duration::from_millis(1))).await {
                        self.absorb(report?, &mut blocked, &mut retry);
                    }
                    continue;
                };
                ready = self.prepare(seq, &mut blocked)?;
                if ready.is_none() {
                    continue;
                }
            }
            let r = ready.as_ref().expect("prepared above");
            match lanes.choose(&r.keys) {
                Some(lane) => {
                    let Ready { work, keys } = ready.take().expect("prepared above");
                    lanes.send(lane, work, keys);
                }
                None => {
                    if let Some(report) = lanes.next_report(None).await {
                        self.absorb(report?, &mut blocked, &mut retry);
                    }
                }
            }
        }
        // Let the lanes finish what they hold before anything else.
        while !lanes.idle() {
            if let Some(report) = lanes.next_report(None).await {
                self.absorb(report?, &mut blocked, &mut retry);
            }
        }
        if let Some(msg) = retry {
            return Ok(Pass::Retry(msg));
        }
        if !*shutdown.borrow() {
            self.processed.send_replace(horizon);
        }
        Ok(Pass::Done)
    }

    /// Reads entry `seq` and works out its ordering keys; `None` when it
    /// is gone or must wait for a later pass.
    fn prepare(
        &self,
        seq: u64,
        blocked: &mut HashSet<(Kind, String)>,
    ) -> Result<Option<Ready>, StoreError> {
        let Some(entry) = self.store.entry(seq)? else {
            return Ok(None);
        };
        let key = (entry.kind, entry.id.clone());
        if blocked.contains(&key) {
            return Ok(None);
        }
        if let EntryState::Failed(_) = self.store.state(seq)? {
            blocked.insert(key);
            return Ok(None);
        }
        let deps = self.planner.dependencies(&entry);
        if let Some((k, id)) = deps.iter().find(|d| blocked.contains(*d)) {
            debug!(seq, kind = entry.kind.name(), id = %entry.id, waits_for_kind = k.name(), waits_for = %id, "waiting: it names a resource whose earlier write is parked");
            blocked.insert(key);
            return Ok(None);
        }
        let mut keys = self.lane_keys(&entry);
        keys.extend(deps.iter().map(resource_lane_key));
        keys.sort_unstable();
        keys.dedup();
        Ok(Some(Ready {
            work: Work { entry, deps },
            keys,
        }))
    }

    /// Takes in what a lane reports.
    fn absorb(
        &self,
        report: Report,
        blocked: &mut HashSet<(Kind, String)>,
        retry: &mut Option<String>,
    ) {
        match report {
            Report::Tried(key, op, outcome) => {
                self.count(op, &outcome);
                match outcome {
                    Ok(_) => {
                        if self.up.send_if_modified(|u| !std::mem::replace(u, true)) {
                            info!("directory reachable again; delivering queued writes");
                        }
                    }
                    Err(ApplyError::Park { .. }) => {
                        blocked.insert(key);
                    }
                    Err(ApplyError::Retry(msg)) => {
                        retry.get_or_insert(msg);
                    }
                }
            }
            Report::Waiting(key) => {
                blocked.insert(key);
            }
            Report::NotTried => {}
        }
    }

    /// The ordering keys of an entry: its resource, the DN its plan
    /// targets, and the DN it is linked to now.
    fn lane_keys(&self, entry: &JournalEntry) -> Vec<String> {
        let mut keys = vec![resource_lane_key(&(entry.kind, entry.id.clone()))];
        if let Ok(plan) = self.planner.plan(entry) {
            let dn = match &plan {
                Plan::Upsert(d) => &d.dn,
                Plan::Group(g) => &g.desired.dn,
                Plan::Delete { dn } => dn,
            };
            keys.push(format!("d{}", norm_value(dn)));
        }
        if let Ok(Some(link)) = self.store.link(entry.kind, &entry.id) {
            keys.push(format!("d{}", norm_value(&link.dn)));
        }
        keys
    }

    fn count(&self, op: &'static str, outcome: &Result<Option<Link>, ApplyError>) {
        if let Some(m) = &self.metrics {
            match outcome {
                Ok(_) => m.ldap(op, "success"),
                Err(ApplyError::Retry(_)) => m.ldap(op, "unreachable"),
                Err(ApplyError::Park { code: Some(rc), .. }) => m.ldap(op, rc_name(*rc)),
                Err(ApplyError::Park { code: None, .. }) => m.ldap(op, "mappingError"),
            }
        }
    }
}

/// An entry given to a lane, with the resources it names.
struct Work {
    entry: JournalEntry,
    deps: Vec<(Kind, String)>,
}

/// An entry read and keyed, waiting for a lane.
struct Ready {
    work: Work,
    keys: Vec<String>,
}

/// What a lane reports for each entry it was given, in order.
enum Report {
    /// Tried: the kind of operation and the outcome.
    Tried(
        (Kind, String),
        &'static str,
        Result<Option<Link>, ApplyError>,
    ),
    /// Held back behind a parked entry of its resource or of one it names.
    Waiting((Kind, String)),
    /// Not tried: the directory could not be reached earlier in this pass.
    NotTried,
}

enum ToLane {
    /// Forget what was parked or unreachable in the last pass.
    NewPass,
    Work(Box<Work>),
}

/// The lane tasks, and what the dispatcher knows of what they hold.
struct Lanes {
    senders: Vec<mpsc::UnboundedSender<ToLane>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    reports: mpsc::UnboundedReceiver<(usize, Result<Report, StoreError>)>,
    /// Keys of every entry given to each lane and not yet reported, in
    /// order.
    held: Vec<std::collections::VecDeque<Vec<String>>>,
    /// Which lane holds each key, and how many of its entries.
    holders: HashMap<String, (usize, usize)>,
}

impl Lanes {
    fn start(dirs: Vec<Directory>, planner: Arc<dyn Planner>, store: Store) -> Lanes {
        let (report_tx, reports) = mpsc::unbounded_channel();
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for (i, dir) in dirs.into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            tasks.push(tokio::spawn(lane_task(
                i,
                dir,
                planner.clone(),
                store.clone(),
                rx,
                report_tx.clone(),
            )));
        }
        Lanes {
            tasks,
            held: senders.iter().map(|_| Default::default()).collect(),
            senders,
            reports,
            holders: HashMap::new(),
        }
    }

    /// Ends the lane tasks (each finishes the entry in hand) and waits
    /// for them.
    async fn stop(self) {
        drop(self.senders);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    fn new_pass(&mut self) {
        for tx in &self.senders {
            let _ = tx.send(ToLane::NewPass);
        }
    }

    fn idle(&self) -> bool {
        self.held.iter().all(|h| h.is_empty())
    }

    /// The lane for an entry with these keys: the one that holds any of
    /// them, else the least busy; `None` if two lanes hold them or the
    /// lane is full (wait for a report, then ask again).
    fn choose(&self, keys: &[String]) -> Option<usize> {
        let mut lane = None;
        for k in keys {
            if let Some(&(l, _)) = self.holders.get(k) {
                match lane {
                    Some(other) if other != l => return None,
                    _ => lane = Some(l),
                }
            }
        }
        let lane = lane.unwrap_or_else(|| {
            (0..self.held.len())
                .min_by_key(|&l| self.held[l].len())
                .unwrap_or(0)
        });
        (self.held[lane].len() < LANE_DEPTH).then_some(lane)
    }

    fn send(&mut self, lane: usize, work: Work, keys: Vec<String>) {
        for k in &keys {
            self.holders.entry(k.clone()).or_insert((lane, 0)).1 += 1;
        }
        self.held[lane].push_back(keys);
        if self.senders[lane]
            .send(ToLane::Work(Box::new(work)))
            .is_err()
        {
            // The lane task ended (it reported a store error): its
            // report is waiting in the channel.
            warn!(lane, "writer lane stopped");
        }
    }

    fn release(&mut self, lane: usize) {
        if let Some(keys) = self.held[lane].pop_front() {
            for k in keys {
                if let Some(h) = self.holders.get_mut(&k) {
                    h.1 -= 1;
                    if h.1 == 0 {
                        self.holders.remove(&k);
                    }
                }
            }
        }
    }

    fn try_report(&mut self) -> Option<Result<Report, StoreError>> {
        let (lane, report) = self.reports.try_recv().ok()?;
        self.release(lane);
        Some(report)
    }

    /// The next report, waiting at most `wait` (forever with `None`).
    async fn next_report(&mut self, wait: Option<Duration>) -> Option<Result<Report, StoreError>> {
        let got = match wait {
            Some(d) => tokio::time::timeout(d, self.reports.recv()).await.ok()?,
            None => self.reports.recv().await,
        };
        match got {
            Some((lane, report)) => {
                self.release(lane);
                Some(report)
            }
            None => Some(Err(StoreError::WriterStopped)),
        }
    }
}

/// One lane: applies the entries it is given in order on its connection,
/// recording each outcome in the store at once (a later entry of the same
/// resource needs the link the earlier one made), and reports each. An
/// entry of a resource parked earlier in the pass, or naming one, is held
/// back; after the directory could not be reached, nothing more is tried
/// until the next pass.
async fn lane_task(
    lane: usize,
    mut dir: Directory,
    planner: Arc<dyn Planner>,
    store: Store,
    mut rx: mpsc::UnboundedReceiver<ToLane>,
    reports: mpsc::UnboundedSender<(usize, Result<Report, StoreError>)>,
) {
    let mut parked: HashSet<(Kind, String)> = HashSet::new();
    let mut down = false;
    while let Some(msg) = rx.recv().await {
        let work = match msg {
            ToLane::NewPass => {
                parked.clear();
                down = false;
                continue;
            }
            ToLane::Work(w) => *w,
        };
        let report = if down {
            Ok(Report::NotTried)
        } else {
            apply_one(&mut dir, &planner, &store, work, &mut parked).await
        };
        if let Ok(Report::Tried(_, _, Err(ApplyError::Retry(_)))) = &report {
            down = true;
            dir.reset();
        }
        let fatal = report.is_err();
        if reports.send((lane, report)).is_err() || fatal {
            return;
        }
    }
}

async fn apply_one(
    dir: &mut Directory,
    planner: &Arc<dyn Planner>,
    store: &Store,
    Work { entry, deps }: Work,
    parked: &mut HashSet<(Kind, String)>,
) -> Result<Report, StoreError> {
    let key = (entry.kind, entry.id.clone());
    if parked.contains(&key) || deps.iter().any(|d| parked.contains(d)) {
        parked.insert(key.clone());
        return Ok(Report::Waiting(key));
    }
    let plan = match planner.plan(&entry) {
        Ok(p) => p,
        Err(message) => {
            parked.insert(key);
            park(store, &entry, None, &message)?;
            return Ok(Report::Tried(
                (entry.kind, entry.id),
                "plan",
                Err(ApplyError::Park {
                    code: None,
                    message,
                }),
            ));
        }
    };
    let op = match plan {
        Plan::Delete { .. } => "delete",
        Plan::Group(_) => "group",
        Plan::Upsert(_) => "upsert",
    };
    let link = store.link(entry.kind, &entry.id)?;
    let full = || planner.full_members(&entry);
    let outcome = dir.apply(&plan, link.as_ref(), &full).await;
    match &outcome {
        Err(ApplyError::Retry(_)) => {}
        Err(ApplyError::Park { code, message }) => {
            parked.insert(key);
            park(store, &entry, *code, message)?;
        }
        Ok(new_link) => {
            store.mark_applied(&entry, new_link.as_ref())?;
            debug!(seq = entry.seq, kind = entry.kind.name(), id = %entry.id, "applied");
        }
    }
    Ok(Report::Tried((entry.kind, entry.id), op, outcome))
}

fn resource_lane_key(key: &(Kind, String)) -> String {
    format!("r{}{}", key.0.name(), key.1)
}

/// Parks an entry, with a log line that says what to do.
fn park(
    store: &Store,
    entry: &JournalEntry,
    code: Option<u32>,
    message: &str,
) -> Result<(), StoreError> {
    warn!(seq = entry.seq, kind = entry.kind.name(), id = %entry.id, code, error = %message, "parked journal entry: fix the cause, then `scim2ldap journal retry {}` (or `skip {}`)", entry.seq, entry.seq);
    store.mark_failed(
        entry.seq,
        &Failure {
            code,
            message: message.to_string(),
            at: crate::store::now_rfc3339(),
        },
    )
}

enum Pass {
    /// Everything pending was applied, parked or held back behind a
    /// parked entry.
    Done,
    /// The directory is unreachable: back off.
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn uuid_escaping() {
        assert_eq!(escape_uuid("hex:0aff"), r"\0a\ff");
        assert_eq!(escape_uuid("a*b"), r"a\2ab");
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(75) && d[0] <= Duration::from_millis(125));
        assert!(d[4] >= Duration::from_millis(300) && d[4] <= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[test]
    fn classify_separates_retryable_from_permanent() {
        let res = |rc| LdapError::LdapResult {
            result: ldap3::LdapResult {
                rc,
                matched: String::new(),
                text: "x".into(),
                refs: vec![],
                ctrls: vec![],
            },
        };
        assert!(matches!(classify(res(51)), ApplyError::Retry(_)));
        assert!(matches!(
            classify(res(65)),
            ApplyError::Park { code: Some(65), .. }
        ));
    }
}
