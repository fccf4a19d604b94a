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
use tokio::sync::{watch, Notify};
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
}

/// Turns journal entries into plans. Implemented by the mapping layer.
pub trait Planner: Send + Sync {
    fn plan(&self, entry: &JournalEntry) -> Result<Plan, String>;
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
            let ldap = self.conn().await?;
            match ldap
                .search(&dn, Scope::Base, "(objectClass=*)", &wanted)
                .await
                .and_then(|r| r.success())
            {
                Ok((entries, _)) => {
                    if let Some(e) = entries.into_iter().next() {
                        return Ok(Some(SearchEntry::construct(e)));
                    }
                }
                Err(LdapError::LdapResult { result }) if result.rc == 32 => {}
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(None)
    }

    fn uuid_of(&self, e: &SearchEntry) -> Option<String> {
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
            Plan::Upsert(want) => self.upsert(want, link).await.map(Some),
        }
    }

    async fn upsert(&mut self, want: &Desired, link: Option<&Link>) -> Result<Link, ApplyError> {
        let Some(mut cur) = self.find(link, &want.dn, &want.managed).await? else {
            let mut attrs: Vec<(String, HashSet<String>)> = Vec::new();
            attrs.push((
                "objectClass".into(),
                want.object_classes.iter().cloned().collect(),
            ));
            for (name, values) in &want.attrs {
                let set: HashSet<String> =
                    values.iter().filter(|v| !v.is_empty()).cloned().collect();
                if !set.is_empty() {
                    attrs.push((name.clone(), set));
                }
            }
            let ldap = self.conn().await?;
            ldap.add(&want.dn, attrs)
                .await
                .and_then(|r| r.success())
                .map_err(classify)?;
            info!(dn = %want.dn, "added entry");
            let uuid = self
                .find(None, &want.dn, &[])
                .await?
                .and_then(|e| self.uuid_of(&e));
            return Ok(Link {
                dn: want.dn.clone(),
                uuid,
            });
        };

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
            // Re-read: the RDN change altered the naming attribute's values.
            cur = self
                .find(None, &want.dn, &want.managed)
                .await?
                .ok_or_else(|| ApplyError::Retry(format!("{} vanished after rename", want.dn)))?;
        }

        let mods = diff(want, &cur);
        if !mods.is_empty() {
            let ldap = self.conn().await?;
            ldap.modify(&cur.dn, mods)
                .await
                .and_then(|r| r.success())
                .map_err(classify)?;
            info!(dn = %cur.dn, "modified entry");
        }
        Ok(Link {
            dn: cur.dn.clone(),
            uuid: self
                .uuid_of(&cur)
                .or_else(|| link.and_then(|l| l.uuid.clone())),
        })
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
    dir: Directory,
    wake: Arc<Notify>,
    processed: watch::Sender<u64>,
    up: watch::Sender<bool>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// How many pending entries one pass reads at a time.
const BATCH: usize = 512;

impl Writer {
    pub fn new(store: Store, planner: Arc<dyn Planner>, cfg: LdapConfig) -> (Writer, WriterHandle) {
        let wake = Arc::new(Notify::new());
        let (tx, rx) = watch::channel(0);
        let (up_tx, up_rx) = watch::channel(true);
        (
            Writer {
                store,
                planner,
                dir: Directory::new(cfg),
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
    /// (after finishing the entry in hand).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let wake = self.wake.clone();
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            match self.pass().await? {
                Pass::Done => {
                    backoff.reset();
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Pass::More => backoff.reset(),
                Pass::Retry(msg) => {
                    self.up.send_if_modified(|u| std::mem::replace(u, false));
                    self.dir.reset();
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

    /// One pass over the pending entries, oldest first.
    async fn pass(&mut self) -> Result<Pass, StoreError> {
        let horizon = self.store.last_seq();
        let seqs = self.store.pending_after(0, BATCH)?;
        let full = seqs.len() >= BATCH;
        // Resources with a parked entry: their later entries wait behind it.
        let mut blocked: HashSet<(Kind, String)> = HashSet::new();
        for seq in seqs {
            let Some(entry) = self.store.entry(seq)? else {
                continue;
            };
            let key = (entry.kind, entry.id.clone());
            if blocked.contains(&key) {
                continue;
            }
            if let EntryState::Failed(_) = self.store.state(seq)? {
                blocked.insert(key);
                continue;
            }
            match self.apply_one(&entry).await? {
                Ok(()) => {}
                Err(ApplyError::Retry(msg)) => return Ok(Pass::Retry(msg)),
                Err(ApplyError::Park { code, message }) => {
                    warn!(seq, kind = entry.kind.name(), id = %entry.id, code, error = %message, "parked journal entry: fix the cause, then `scim2ldap journal retry {seq}`");
                    self.store.mark_failed(
                        seq,
                        &Failure {
                            code,
                            message,
                            at: crate::store::now_rfc3339(),
                        },
                    )?;
                    blocked.insert(key);
                }
            }
        }
        if full {
            return Ok(Pass::More);
        }
        self.processed.send_replace(horizon);
        Ok(Pass::Done)
    }

    async fn apply_one(
        &mut self,
        entry: &JournalEntry,
    ) -> Result<Result<(), ApplyError>, StoreError> {
        let plan = match self.planner.plan(entry) {
            Ok(p) => p,
            Err(message) => {
                return Ok(Err(ApplyError::Park {
                    code: None,
                    message,
                }))
            }
        };
        let link = self.store.link(entry.kind, &entry.id)?;
        let result = self.dir.apply(&plan, link.as_ref()).await;
        if let Some(m) = &self.metrics {
            let op = if matches!(plan, Plan::Delete { .. }) {
                "delete"
            } else {
                "upsert"
            };
            match &result {
                Ok(_) => m.ldap(op, "success"),
                Err(ApplyError::Retry(_)) => m.ldap(op, "unreachable"),
                Err(ApplyError::Park { code: Some(rc), .. }) => m.ldap(op, rc_name(*rc)),
                Err(ApplyError::Park { code: None, .. }) => m.ldap(op, "mappingError"),
            }
        }
        match result {
            Ok(new_link) => {
                self.store.mark_applied(entry, new_link.as_ref())?;
                if self.up.send_if_modified(|u| !std::mem::replace(u, true)) {
                    info!("directory reachable again; delivering queued writes");
                }
                debug!(seq = entry.seq, kind = entry.kind.name(), id = %entry.id, "applied");
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

enum Pass {
    /// Everything pending was applied or parked.
    Done,
    /// A full batch was handled; there may be more.
    More,
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
