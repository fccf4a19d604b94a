//! The directory client: one connection (opened on first use, re-opened
//! after a failure), reading an entry by its link, and converging one
//! entry to a plan with add / modrdn / modify / delete.
//!
//! Architecture invariant: knows LDAP and plans, never SCIM JSON, the
//! mapping, the journal's order or the dispatcher; only attributes named in
//! a [`Desired`] are ever modified.

use std::collections::HashSet;

use ldap3::{
    ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry,
};
use tracing::{debug, info};

use super::diff::{
    attr_ci, diff, fingerprint, mod_bytes, rdn_spelled_differently, same_dn, split_rdn,
    trusted_mods, user_account_control, UAC,
};
use super::errors::{classify, permissive_modify, ApplyError};
use super::members::{full_lists, group_ldif, member_delta_mods};
use super::plan::{Desired, FullMembers, GroupPlan, MemberPlan, Plan};
use crate::config::LdapConfig;
use crate::journal::Password;
use crate::mapping::{PasswordFormat, PasswordWrite};
use crate::store::Link;

/// RFC 4527's post-read control.
const POST_READ_OID: &str = "1.3.6.1.1.13.2";

/// RFC 4528's assertion control: the modify applies only if the entry at
/// the DN matches a filter (here: its stable id), else 122.
const ASSERTION_OID: &str = "1.3.6.1.1.12";

/// Answers to a modify sent without reading that mean the entry is not as
/// last applied (moved or gone: 32; another entry at its DN: 122; values
/// or classes that differ: 16, 20, 65, 67, 69): the entry is read and
/// converged instead.
const NOT_AS_RECORDED: &[u32] = &[16, 20, 32, 65, 67, 69, 122];

/// A connection to the directory, opened on first use and re-opened after
/// a failure; one connection serves every operation.
pub struct Directory {
    cfg: LdapConfig,
    /// Attribute holding the directory's stable id (entryUUID, objectGUID).
    uuid_attr: String,
    ldap: Option<Ldap>,
    /// Whether the directory supports the assertion control (read once
    /// from its root DSE): without it, every update reads the entry.
    assertion: Option<bool>,
    /// Added to `ldap.timeout` for the plan being applied: a group of
    /// 50,000 members takes the directory longer to add or read than the
    /// timeout meant for one entry, and timing it out would retry it for
    /// ever as "directory unavailable".
    extra_timeout: std::time::Duration,
    /// Counts adoptions of existing entries, when the daemon supplies its
    /// metrics.
    pub(super) metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Directory {
    /// Gives the operations of the plan being applied at least `extra`
    /// more than `ldap.timeout`.
    pub(super) fn allow_extra(&mut self, extra: std::time::Duration) {
        self.extra_timeout = self.extra_timeout.max(extra);
    }

    pub fn new(cfg: LdapConfig) -> Directory {
        let uuid_attr = cfg.uuid_attribute.clone();
        Directory {
            cfg,
            uuid_attr,
            ldap: None,
            assertion: None,
            extra_timeout: std::time::Duration::ZERO,
            metrics: None,
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
            ldap.with_timeout(self.cfg.timeout + self.extra_timeout);
            if !self.cfg.bind_dn.is_empty() {
                ldap.simple_bind(&self.cfg.bind_dn, self.cfg.bind_password.expose())
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| {
                        // A refused bind refuses every write: not this entry's.
                        ApplyError::Retry(format!(
                            "bind as {} failed: {}",
                            self.cfg.bind_dn,
                            classify(e).message()
                        ))
                    })?;
            }
            debug!(url = %self.cfg.url, "connected to the directory");
            self.ldap = Some(ldap);
        }
        match self.ldap.as_mut() {
            Some(l) => {
                l.with_timeout(self.cfg.timeout + self.extra_timeout);
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
    pub(super) async fn find(
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
            ..
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

    /// Decides about an entry found at `want.dn` when the resource is not
    /// linked and its add met `entryAlreadyExists`. It may be:
    /// - this resource's own entry, whose add succeeded while its answer or
    ///   its link was lost (a crash, a timeout): it carries the resource's
    ///   id in the mapping's `id_attribute`, or it was created by the
    ///   daemon's bind DN after the write was accepted;
    /// - somebody else's entry: taken over only if the mapping's adoption
    ///   policy allows it (its place, its `never` list, and its filters,
    ///   which the directory evaluates); otherwise the write parks with a
    ///   message that says what to do, and the entry is not touched.
    ///
    /// Returns true when the entry is somebody else's, now adopted.
    async fn claim_existing(&mut self, want: &Desired) -> Result<bool, ApplyError> {
        let Some(claim) = &want.claim else {
            return Ok(false);
        };
        let mut attrs = vec![
            self.uuid_attr.clone(),
            "creatorsName".to_string(),
            "createTimestamp".to_string(),
            "whenCreated".to_string(),
        ];
        attrs.extend(claim.id_attribute.iter().cloned());
        let Some(cur) = self.read_at(&want.dn, &attrs).await? else {
            // Gone meanwhile: the converging path adds it.
            return Ok(false);
        };
        let refuse = |message: String| ApplyError::Park {
            code: Some(68),
            message,
        };
        if let Some(a) = &claim.id_attribute {
            if let Some(v) = attr_ci(&cur.attrs, a).and_then(|v| v.first()) {
                if v == &claim.id {
                    return Ok(false);
                }
                return Err(refuse(format!(
                    "{} already exists and its {a} names another resource ({v}); it is not taken over. Give this resource another name at the identity provider, or remove the entry",
                    cur.dn
                )));
            }
        }
        if self.created_by_daemon_since(&cur, &claim.accepted_at) {
            debug!(dn = %cur.dn, id = %claim.id, "found this resource's own earlier add; converging it");
            return Ok(false);
        }
        claim.policy.check_dn(&cur.dn).map_err(|why| {
            refuse(format!(
                "{} already exists and was not made by scim2ldap: {why}",
                cur.dn
            ))
        })?;
        if let Some(condition) = claim.policy.directory_condition() {
            let ldap = self.conn().await?;
            let matches = match ldap
                .search(&cur.dn, Scope::Base, &condition, vec!["1.1"])
                .await
                .and_then(|r| r.success())
            {
                Ok((entries, _)) => !entries.is_empty(),
                Err(LdapError::LdapResult { result }) if result.rc == 32 => false,
                Err(e) => return Err(classify(e)),
            };
            if !matches {
                let why = crate::mapping::Refusal::Filtered { dn: cur.dn.clone() };
                return Err(refuse(format!(
                    "{} already exists and was not made by scim2ldap: {why}",
                    cur.dn
                )));
            }
        }
        info!(dn = %cur.dn, id = %claim.id, "adopted an existing directory entry: the identity provider created a resource where it stands, and the mapping's adoption policy allows taking it over; its mapped attributes now follow the identity provider");
        if let Some(m) = &self.metrics {
            m.adopted(claim.policy.kind.as_str());
        }
        Ok(true)
    }

    /// Whether `entry` was made by this daemon for the resource created at
    /// `accepted_at`: created by the bind DN (where the directory says who
    /// created it, as OpenLDAP and 389 DS do) in or after the second the
    /// resource was accepted. An entry that existed before is never
    /// mistaken for the daemon's own; a clock on the directory that runs
    /// behind the daemon's errs the safe way (the entry is then judged by
    /// the adoption policy).
    fn created_by_daemon_since(&self, entry: &SearchEntry, accepted_at: &str) -> bool {
        let creator = attr_ci(&entry.attrs, "creatorsName").and_then(|v| v.first());
        if creator.is_some_and(|c| !same_dn(c, &self.cfg.bind_dn)) {
            return false;
        }
        let created = attr_ci(&entry.attrs, "createTimestamp")
            .or_else(|| attr_ci(&entry.attrs, "whenCreated"))
            .and_then(|v| v.first())
            .and_then(|t| generalized_time_secs(t));
        let accepted = humantime::parse_rfc3339_weak(accepted_at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        match (created, accepted) {
            (Some(c), Some(a)) => c >= a,
            _ => false,
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
                    crate::ldif::add(&want.dn, &want.object_classes, &want.attrs)
                        + &redacted_password(want),
                    Some(Link {
                        dn: want.dn.clone(),
                        ..Link::default()
                    }),
                )
            } else if let Plan::Delete { dn } = plan {
                (crate::ldif::delete(dn), None)
            } else if let Plan::Group(g) = plan {
                let link = Some(Link {
                    dn: g.desired.dn.clone(),
                    ..Link::default()
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
                if self.delete_linked(link).await? {
                    return Ok(None);
                }
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
            Plan::Group(g) => {
                self.extra_timeout = member_timeout(g);
                let done = self
                    .upsert(&g.desired, link, Some((g, full_members)))
                    .await
                    .map(Some);
                self.extra_timeout = std::time::Duration::ZERO;
                done
            }
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
                // Asserting the group's stable id where the directory
                // supports it: a delta never lands on another entry put
                // at the group's DN.
                let mut controls = permissive_modify();
                if let Some(uuid) = &l.uuid {
                    if self.supports_assertion().await? {
                        controls.push(assertion_control(&self.uuid_attr, uuid));
                    }
                }
                let ldap = self.conn().await?;
                match ldap
                    .with_controls(controls)
                    .modify(&l.dn, mods)
                    .await
                    .and_then(|r| r.success())
                {
                    Ok(_) => return Ok(l.clone()),
                    // Moved, another entry at the DN (122), or not in the
                    // state the delta assumes: read and converge.
                    Err(LdapError::LdapResult { result })
                        if [16, 20, 32, 65, 122].contains(&result.rc) =>
                    {
                        debug!(dn = %l.dn, rc = result.rc, "member delta without a read did not apply; reading the group");
                    }
                    // The root DSE listed the assertion control, the
                    // server refuses it anyway: read from now on.
                    Err(LdapError::LdapResult { result }) if result.rc == 12 => {
                        self.assertion = Some(false);
                    }
                    Err(e) => return Err(classify(e)),
                }
            }
        }
        // A linked user entry whose last applied state is known: the changed
        // attributes go without a read, unless the directory says the entry
        // is not as recorded.
        if let (Some(l), None) = (link, &group) {
            if let Some(done) = self.trusted_update(want, l).await? {
                self.set_memberships(want).await?;
                return Ok(done);
            }
        }
        let mut adopted = false;
        if link.is_none() {
            if let Some(done) = self.add_entry(want, group).await? {
                self.set_memberships(want).await?;
                return Ok(done);
            }
            // An entry is there already: converge it only if it is ours or
            // the adoption policy lets the identity provider take it over.
            adopted = self.claim_existing(want).await?;
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

        if !same_dn(&cur.dn, &want.dn) || rdn_spelled_differently(&cur.dn, &want.dn) {
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
        // The link still names another DN: an earlier apply renamed the
        // entry and stopped before its references were rewritten or the
        // link recorded (a crash, a lost connection), or an administrator
        // moved it. References to where it was linked follow it too.
        if let Some(l) = link {
            if !same_dn(&l.dn, &want.dn) || rdn_spelled_differently(&l.dn, &want.dn) {
                for attr in &want.dn_referrers {
                    self.rewrite_references(attr, &l.dn, &want.dn).await?;
                }
            }
        }

        for (group_attr, old, new) in &referenced {
            if let ([old], [new]) = (old.as_slice(), new.as_slice()) {
                if old != new {
                    self.rewrite_references(group_attr, old, new).await?;
                }
            }
        }

        let mut mods = diff(want, &cur);
        let mut uac = None;
        if let Some(disable) = want.ad_disable {
            mods.retain(|m| !matches!(m, Mod::Replace(a, _) | Mod::Delete(a, _) if a.eq_ignore_ascii_case(UAC)));
            let current = attr_ci(&cur.attrs, UAC).and_then(|v| v.first()).cloned();
            let value = user_account_control(current.as_deref(), disable);
            if current.as_deref() != Some(value.as_str()) {
                uac = Some(Mod::Replace(UAC.to_string(), HashSet::from([value])));
            }
        }
        // The password (write-only: only when the entry carried one, never
        // compared, never removed) before the userAccountControl change,
        // in the same modify: AD enables an account only once it has one,
        // and a password the directory refuses leaves the entry as it was.
        let mut mods: Vec<Mod<Vec<u8>>> = mods.into_iter().map(mod_bytes).collect();
        let password = password_mod(want.password.as_ref(), None);
        let sets_password = password.is_some();
        mods.extend(password);
        mods.extend(uac.map(mod_bytes));
        if !mods.is_empty() {
            let ldap = self.conn().await?;
            ldap.with_controls(permissive_modify())
                .modify(&cur.dn, mods)
                .await
                .and_then(|r| r.success())
                .map_err(classify)?;
            info!(dn = %cur.dn, password = sets_password, "modified entry");
        }
        self.set_memberships(want).await?;
        if let Some((g, full)) = group {
            // An adopted group under keep_members: values the identity
            // provider did not send are never removed, now or later.
            let keep = (adopted || link.is_some_and(|l| l.adopted))
                && want.claim.as_ref().is_some_and(|c| c.policy.keep_members);
            self.apply_members(&cur.dn, g, full, keep).await?;
        }
        Ok(Link {
            dn: cur.dn.clone(),
            uuid: self
                .uuid_of(&cur)
                .or_else(|| link.and_then(|l| l.uuid.clone())),
            adopted: adopted || link.is_some_and(|l| l.adopted),
            // Read and converged: the entry is as `want` says.
            applied: group.is_none().then(|| fingerprint(want)),
        })
    }

    /// Updates a linked entry from the fingerprint of what was last
    /// applied to it, without reading it: the changed managed attributes
    /// are replaced (and the password set, when the entry carries one) in
    /// one modify that asserts the entry's stable id. `None` when the
    /// entry must be read instead: no fingerprint or stable id, a rename,
    /// a change that needs the entry's current values ([`trusted_mods`]),
    /// a directory without the assertion control, or an answer that says
    /// the entry is not as recorded ([`NOT_AS_RECORDED`]).
    async fn trusted_update(
        &mut self,
        want: &Desired,
        l: &Link,
    ) -> Result<Option<Link>, ApplyError> {
        let (Some(last), Some(uuid)) = (&l.applied, &l.uuid) else {
            return Ok(None);
        };
        if !same_dn(&l.dn, &want.dn) || rdn_spelled_differently(&l.dn, &want.dn) {
            return Ok(None);
        }
        let Some((mods, applied)) = trusted_mods(want, last) else {
            return Ok(None);
        };
        let password = password_mod(want.password.as_ref(), None);
        if mods.is_empty() && password.is_none() {
            // Nothing to send; the fingerprint changes only when a required
            // attribute lost its value (the entry keeps it).
            if applied.digest() == last.digest() {
                return Ok(Some(l.clone()));
            }
            return Ok(Some(Link {
                applied: Some(applied),
                ..l.clone()
            }));
        }
        if !self.supports_assertion().await? {
            return Ok(None);
        }
        let sets_password = password.is_some();
        let mut mods: Vec<Mod<Vec<u8>>> = mods.into_iter().map(mod_bytes).collect();
        mods.extend(password);
        let control = assertion_control(&self.uuid_attr, uuid);
        let ldap = self.conn().await?;
        match ldap
            .with_controls(control)
            .modify(&l.dn, mods)
            .await
            .and_then(|r| r.success())
        {
            Ok(_) => {
                info!(dn = %l.dn, password = sets_password, "modified entry");
                Ok(Some(Link {
                    applied: Some(applied),
                    ..l.clone()
                }))
            }
            Err(LdapError::LdapResult { result }) if NOT_AS_RECORDED.contains(&result.rc) => {
                debug!(dn = %l.dn, rc = result.rc, "the entry is not as last applied; reading it");
                Ok(None)
            }
            // unavailableCriticalExtension: the root DSE listed the control,
            // the server refuses it anyway. Read from now on.
            Err(LdapError::LdapResult { result }) if result.rc == 12 => {
                self.assertion = Some(false);
                Ok(None)
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// Deletes a linked entry without reading it: one delete at its
    /// linked DN asserting its stable id. False when the entry must be
    /// found first instead: no stable id, a directory without the
    /// assertion control, or an entry that is not there (32: moved or
    /// gone) or not the linked one (122: another entry at its DN).
    async fn delete_linked(&mut self, link: Option<&Link>) -> Result<bool, ApplyError> {
        let Some(Link {
            dn,
            uuid: Some(uuid),
            ..
        }) = link
        else {
            return Ok(false);
        };
        if !self.supports_assertion().await? {
            return Ok(false);
        }
        let control = assertion_control(&self.uuid_attr, uuid);
        let ldap = self.conn().await?;
        match ldap
            .with_controls(control)
            .delete(dn)
            .await
            .and_then(|r| r.success())
        {
            Ok(_) => {
                info!(%dn, "deleted entry");
                Ok(true)
            }
            Err(LdapError::LdapResult { result }) if [32, 122].contains(&result.rc) => {
                debug!(%dn, rc = result.rc, "the linked entry is not at its DN; looking for it");
                Ok(false)
            }
            Err(LdapError::LdapResult { result }) if result.rc == 12 => {
                self.assertion = Some(false);
                Ok(false)
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// Whether the directory lists the assertion control in its root DSE
    /// (read once per `Directory`).
    async fn supports_assertion(&mut self) -> Result<bool, ApplyError> {
        if let Some(known) = self.assertion {
            return Ok(known);
        }
        let ldap = self.conn().await?;
        let known = match ldap
            .search("", Scope::Base, "(objectClass=*)", vec!["supportedControl"])
            .await
            .and_then(|r| r.success())
        {
            Ok((entries, _)) => entries
                .into_iter()
                .next()
                .map(SearchEntry::construct)
                .and_then(|e| {
                    attr_ci(&e.attrs, "supportedControl")
                        .map(|v| v.iter().any(|c| c.trim() == ASSERTION_OID))
                })
                .unwrap_or(false),
            // A root DSE the daemon may not read: no control, read entries.
            Err(LdapError::LdapResult { .. }) => false,
            Err(e) => return Err(classify(e)),
        };
        if !known {
            info!("the directory does not list the assertion control (RFC 4528): every update reads the entry first");
        }
        self.assertion = Some(known);
        Ok(known)
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
        // Active Directory's password (`unicodePwd`) is set after the add,
        // with the account created disabled and enabled only then: the
        // order AD's password policy requires. A user created active
        // without a password gets a long random one (AD enables no account
        // without one; the identity provider's sign-in does not use it).
        let ad_password = want
            .password
            .as_ref()
            .filter(|p| p.format == PasswordFormat::AdUnicodePwd);
        let mut after_add: Vec<Mod<Vec<u8>>> = Vec::new();
        if let Some(disable) = want.ad_disable {
            let mapped = attrs.iter().position(|(k, _)| k.eq_ignore_ascii_case(UAC));
            let current = mapped.and_then(|i| attrs[i].1.iter().next().cloned());
            let value = user_account_control(current.as_deref(), disable || ad_password.is_some());
            if let Some(i) = mapped {
                attrs.remove(i);
            }
            if ad_password.is_some() && !disable {
                let enabled = user_account_control(Some(&value), false);
                let random = random_password();
                after_add.extend(password_mod(ad_password, Some(&random)));
                after_add.push(mod_bytes(Mod::Replace(
                    UAC.to_string(),
                    HashSet::from([enabled]),
                )));
            }
            attrs.push((UAC.to_string(), HashSet::from([value])));
        }
        match &want.password {
            Some(p) if p.format == PasswordFormat::Plain => {
                if let Some(pw) = &p.password {
                    attrs.push((
                        p.attribute.clone(),
                        HashSet::from([pw.expose().to_string()]),
                    ));
                }
            }
            Some(p) if after_add.is_empty() => after_add.extend(password_mod(Some(p), None)),
            _ => {}
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
        if !after_add.is_empty() {
            // Refused (a password the policy does not accept): the entry
            // stays as added, disabled; the retry converges it, as the
            // daemon's own add.
            let ldap = self.conn().await?;
            ldap.modify(&want.dn, after_add)
                .await
                .and_then(|r| r.success())
                .map_err(classify)?;
            info!(dn = %want.dn, "set the password and enabled the account");
        }
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
            adopted: false,
            applied: group.is_none().then(|| fingerprint(want)),
        }))
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
            match ldap
                .with_controls(permissive_modify())
                .modify(&e.dn, mods)
                .await
                .and_then(|r| r.success())
            {
                // Already rewritten (by a replay, or by the directory), or
                // the group was deleted since the search.
                Ok(_)
                | Err(LdapError::LdapResult {
                    result:
                        ldap3::LdapResult {
                            rc: 16 | 20 | 32, ..
                        },
                }) => {}
                Err(e) => return Err(classify(e)),
            }
            info!(group = %e.dn, %attr, "rewrote member value after rename");
        }
        Ok(())
    }
}

/// The value of `attr` in a post-read response control, if the directory
/// sent one.
/// The replace that sets the entry's password: the one the entry carried,
/// else `fallback`; `None` when there is neither (the directory's password
/// is left alone).
/// Extra time the directory gets for a group plan: a second per 1,000
/// member values it carries (a full list also has to be read and compared
/// by the directory). Nothing for ordinary groups.
fn member_timeout(g: &GroupPlan) -> std::time::Duration {
    let values: usize = g
        .members
        .iter()
        .map(|m| match &m.values {
            MemberPlan::Full(v) => v.len(),
            MemberPlan::Delta { add, remove, .. } => add.len() + remove.len(),
        })
        .sum();
    std::time::Duration::from_millis(values as u64)
}

fn password_mod(want: Option<&PasswordWrite>, fallback: Option<&Password>) -> Option<Mod<Vec<u8>>> {
    let want = want?;
    let value = match (&want.password, fallback) {
        (Some(_), _) => want.value()?,
        (None, Some(f)) => crate::mapping::encode_password(want.format, f.expose()),
        (None, None) => return None,
    };
    Some(Mod::Replace(
        want.attribute.clone().into_bytes(),
        HashSet::from([value]),
    ))
}

/// A long random password for an AD account the identity provider sent
/// none for (two random UUIDs: 244 bits), with the character classes AD's
/// complexity rule asks for. Never stored, never logged.
fn random_password() -> Password {
    Password::new(format!(
        "{}-{}-Aa1",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// `serve --dry-run`: the password line of an add record, without the
/// password (`attr:: <redacted>` is not valid base64, so the LDIF cannot be
/// fed to a directory by mistake with a wrong password).
fn redacted_password(want: &Desired) -> String {
    match &want.password {
        Some(p) if p.password.is_some() => format!("{}:: <redacted>\n", p.attribute),
        _ => String::new(),
    }
}

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

/// The assertion control (RFC 4528, critical) for `(attr=uuid)`: the
/// filter as BER, an equalityMatch ([3] AttributeValueAssertion).
/// Binary ids (kept as `hex:...`) are asserted as their bytes.
fn assertion_control(attr: &str, uuid: &str) -> ldap3::controls::RawControl {
    let value: Vec<u8> = match uuid.strip_prefix("hex:") {
        Some(hex) => hex
            .as_bytes()
            .chunks(2)
            .filter_map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
            .collect(),
        None => uuid.as_bytes().to_vec(),
    };
    let mut ava = ber(0x04, attr.as_bytes());
    ava.extend(ber(0x04, &value));
    ldap3::controls::RawControl {
        ctype: ASSERTION_OID.to_string(),
        crit: true,
        val: Some(ber(0xa3, &ava)),
    }
}

/// One BER element: tag, definite length, content.
fn ber(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![tag];
    if n < 0x80 {
        out.push(n as u8);
    } else if n <= 0xff {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_replaced_only_when_there_is_one() {
        use crate::mapping::{PasswordFormat, PasswordMapping};
        let m = PasswordMapping {
            attribute: "unicodePwd".into(),
            format: PasswordFormat::AdUnicodePwd,
        };
        let none = m.write(None);
        assert!(password_mod(Some(&none), None).is_none());
        assert!(password_mod(None, Some(&Password::new("x"))).is_none());
        let fallback = password_mod(Some(&none), Some(&Password::new("r")));
        let sent = password_mod(
            Some(&m.write(Some(&Password::new("ab")))),
            Some(&Password::new("r")),
        );
        for (m, want) in [(fallback, "r"), (sent, "ab")] {
            match m {
                Some(Mod::Replace(a, v)) => {
                    assert_eq!(a, b"unicodePwd");
                    let v: Vec<_> = v.into_iter().collect();
                    assert_eq!(
                        v,
                        vec![crate::mapping::encode_password(
                            PasswordFormat::AdUnicodePwd,
                            want
                        )]
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let r = random_password();
        let t = r.expose();
        assert!(
            t.len() >= 64
                && t.chars().any(|c| c.is_ascii_uppercase())
                && t.chars().any(|c| c.is_ascii_digit())
        );
        assert_ne!(random_password(), r);

        let mut want = Desired {
            password: Some(m.write(Some(&Password::new("secret-1")))),
            ..Desired::default()
        };
        assert_eq!(redacted_password(&want), "unicodePwd:: <redacted>\n");
        want.password = Some(m.write(None));
        assert_eq!(redacted_password(&want), "");
    }

    #[test]
    fn the_assertion_is_an_equality_filter_in_ber() {
        let c = assertion_control("entryUUID", "ab");
        assert_eq!(c.ctype, "1.3.6.1.1.12");
        assert!(c.crit);
        let mut want = vec![0xa3, 15, 0x04, 9];
        want.extend_from_slice(b"entryUUID");
        want.extend_from_slice(&[0x04, 2, b'a', b'b']);
        assert_eq!(c.val.unwrap(), want);
        // A binary id is asserted as its bytes.
        let c = assertion_control("objectGUID", "hex:0aff");
        assert!(c.val.unwrap().ends_with(&[0x04, 2, 0x0a, 0xff]));
        // Long content takes the long form of the length.
        assert_eq!(ber(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(ber(0x04, &[0; 300])[..4], [0x04, 0x82, 1, 44]);
    }

    #[test]
    fn big_groups_get_more_time() {
        let plan = |values: MemberPlan| GroupPlan {
            desired: Desired::default(),
            members: vec![crate::plan::MemberAttrPlan {
                attr: "member".into(),
                values,
                placeholder: None,
            }],
            only_members: false,
        };
        let many: Vec<String> = (0..50_000).map(|i| format!("uid=u{i}")).collect();
        assert_eq!(
            member_timeout(&plan(MemberPlan::Full(many.clone()))),
            std::time::Duration::from_secs(50)
        );
        let delta = MemberPlan::Delta {
            add: many[..2].to_vec(),
            remove: many[2..3].to_vec(),
            empty_before: false,
            empty_after: false,
        };
        assert_eq!(
            member_timeout(&plan(delta)),
            std::time::Duration::from_millis(3)
        );
    }

    #[test]
    fn uuid_escaping() {
        assert_eq!(escape_uuid("hex:0aff"), r"\0a\ff");
        assert_eq!(escape_uuid("a*b"), r"a\2ab");
    }
}

/// Seconds since the Unix epoch of an LDAP GeneralizedTime
/// (`20261203151000Z`, `20261203151000.0Z`); `None` if it is not one.
fn generalized_time_secs(t: &str) -> Option<i64> {
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.len() < 14 || !t.ends_with('Z') {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &digits[0..4],
        &digits[4..6],
        &digits[6..8],
        &digits[8..10],
        &digits[10..12],
        &digits[12..14]
    );
    humantime::parse_rfc3339(&text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
}

#[cfg(test)]
mod claim_tests {
    use super::generalized_time_secs;

    #[test]
    fn generalized_time_is_read() {
        assert_eq!(generalized_time_secs("19700101000010Z"), Some(10));
        assert_eq!(generalized_time_secs("19700101000010.0Z"), Some(10));
        assert_eq!(generalized_time_secs("1970010100Z"), None);
        assert_eq!(generalized_time_secs("19700101000010"), None);
    }
}
