//! The writer: a dispatcher that reads pending journal entries oldest
//! first and hands them out to the lanes, and the handle the rest of the
//! daemon holds on it.
//!
//! The dispatcher is the one owner, in memory, of what is blocked: lanes
//! report outcomes, the dispatcher decides which entries wait. The store's
//! parked marks (`f` keys) are the durable record, read again every pass.
//!
//! Architecture invariant: knows the journal, routes and lanes; never
//! LDAP operations (those are the lanes' and the directory client's), SCIM
//! JSON or the mapping.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::diff::norm_value;
use super::directory::Directory;
use super::errors::{rc_name, ApplyError};
use super::lane::{park, Apply, Lanes, PanicHook, Report, Work};
use super::plan::{Planner, Route};
use crate::config::LdapConfig;
use crate::store::{EntryState, Kind, Link, Store, StoreError};

/// How many pending entries the dispatcher reads from the store at a time.
const BATCH: usize = 512;

/// What orders entries against each other: while a lane holds an entry,
/// every later entry sharing one of its keys goes to that lane, behind it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum LaneKey {
    /// A resource: the entry's own, or one it names.
    Resource(Kind, String),
    /// A DN the entry targets or is linked to, normalised
    /// (case-insensitive, escapes resolved).
    Dn(String),
}

impl LaneKey {
    /// The keys of an entry with this route: its resource, the resources
    /// it names, the DN its plan targets and the DN it is linked to now.
    fn of(route: &Route) -> Vec<LaneKey> {
        let mut keys = vec![
            LaneKey::Resource(route.resource.0, route.resource.1.clone()),
            LaneKey::Dn(norm_value(&route.dn)),
        ];
        if let Some(linked) = &route.linked {
            keys.push(LaneKey::Dn(norm_value(linked)));
        }
        keys.extend(
            route
                .dependencies
                .iter()
                .map(|(k, id)| LaneKey::Resource(*k, id.clone())),
        );
        // Without cloning the keys again: a group of 50,000 members names
        // 50,000 resources.
        let mut seen = HashSet::with_capacity(keys.len());
        let first: Vec<bool> = keys.iter().map(|k| seen.insert(k)).collect();
        drop(seen);
        let mut first = first.into_iter();
        keys.retain(|_| first.next().unwrap_or(false));
        keys
    }
}

/// Resources with a parked or waiting entry in this pass: their later
/// entries wait behind it, and so do entries that name them.
#[derive(Default)]
struct Blocked(HashSet<(Kind, String)>);

impl Blocked {
    fn contains(&self, resource: &(Kind, String)) -> bool {
        self.0.contains(resource)
    }
    fn insert(&mut self, resource: (Kind, String)) {
        self.0.insert(resource);
    }
    /// What stops an entry with this route, if anything: its own resource,
    /// or the first resource it names that is blocked.
    fn stops<'a>(&self, route: &'a Route) -> Option<&'a (Kind, String)> {
        if self.0.contains(&route.resource) {
            return Some(&route.resource);
        }
        route.dependencies.iter().find(|d| self.0.contains(*d))
    }
}

/// An entry read and routed, waiting for a lane.
struct Ready {
    work: Work,
    keys: Vec<LaneKey>,
}

impl Ready {
    fn new(work: Work) -> Ready {
        let keys = LaneKey::of(&work.route);
        Ready { work, keys }
    }
}

/// Handle on the running writer.
#[derive(Clone)]
pub struct WriterHandle {
    /// Starts a pass when the writer is idle.
    wake: Arc<Notify>,
    /// Tells a running pass that entries were accepted.
    news: Arc<Notify>,
    processed: watch::Receiver<u64>,
    up: watch::Receiver<bool>,
    /// Cuts short the wait after the directory could not be reached.
    retry_now: Arc<Notify>,
}

impl WriterHandle {
    /// Tells the writer that new entries are pending.
    pub fn wake(&self) {
        self.wake.notify_one();
        self.news.notify_one();
        self.retry_now.notify_one();
    }

    /// Tells the writer that a new entry is pending. Unlike [`wake`], it
    /// does not cut short the wait after the directory could not be
    /// reached: a write accepted during an outage would otherwise start
    /// another failing attempt (and its warning) at once, one per write.
    /// The backoff, and the probe that notices the directory answering
    /// again, decide when the writer tries next.
    ///
    /// [`wake`]: WriterHandle::wake
    pub fn accepted(&self) {
        self.wake.notify_one();
        self.news.notify_one();
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
    news: Arc<Notify>,
    processed: watch::Sender<u64>,
    up: watch::Sender<bool>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Test hook: the first entry a lane applies panics there.
    inject_lane_panic: bool,
    /// Entries the directory refused, by seq: how many times, and when to
    /// try again. They wait (and so does what follows them for their
    /// resource) while the rest flows; after [`MAX_REFUSALS`] they park.
    refused: std::sync::Mutex<std::collections::HashMap<u64, (u32, Instant)>>,
    /// An administrator's wake: cuts short the wait after the directory
    /// could not be reached (a new write does not).
    retry_now: Arc<Notify>,
    /// Where to probe the directory while it is unreachable, so writes
    /// resume within a second of its return. `None` with fake directories.
    probe: Option<LdapConfig>,
}

/// What one pass knows besides the lanes.
struct PassState {
    /// The last seq this pass takes; moved on when entries are accepted
    /// while it runs.
    horizon: u64,
    /// The last seq read from the store.
    after: u64,
    /// Seqs read and not yet looked at.
    queue: VecDeque<u64>,
    /// Entries a lane handed back untried, oldest first: they go before
    /// anything read after them.
    returned: VecDeque<Ready>,
    /// The entry read last, waiting for a lane.
    ready: Option<Ready>,
    blocked: Blocked,
    /// Set when a lane could not reach the directory: the pass ends.
    retry: Option<String>,
}

impl Writer {
    pub fn new(store: Store, planner: Arc<dyn Planner>, cfg: LdapConfig) -> (Writer, WriterHandle) {
        let dirs = (0..cfg.connections.max(1))
            .map(|_| Directory::new(cfg.clone()))
            .collect();
        let (mut writer, handle) = Writer::with_dirs(store, planner, dirs);
        if !cfg.dry_run {
            writer.probe = Some(cfg);
        }
        (writer, handle)
    }

    fn with_dirs(
        store: Store,
        planner: Arc<dyn Planner>,
        dirs: Vec<Directory>,
    ) -> (Writer, WriterHandle) {
        let wake = Arc::new(Notify::new());
        let news = Arc::new(Notify::new());
        let (tx, rx) = watch::channel(0);
        let (up_tx, up_rx) = watch::channel(true);
        let retry_now = Arc::new(Notify::new());
        (
            Writer {
                store,
                planner,
                dirs,
                wake: wake.clone(),
                news: news.clone(),
                processed: tx,
                up: up_tx,
                metrics: None,
                refused: Default::default(),
                retry_now: retry_now.clone(),
                probe: None,
                inject_lane_panic: false,
            },
            WriterHandle {
                wake,
                news,
                processed: rx,
                up: up_rx,
                retry_now,
            },
        )
    }

    /// Counts every apply attempt, by result, into `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<crate::metrics::Metrics>) {
        for d in &mut self.dirs {
            d.metrics = Some(metrics.clone());
        }
        self.metrics = Some(metrics);
    }

    /// A test hook: makes the first entry a lane applies panic in the
    /// lane, as a panic in the LDAP client would. Only Rust code can set
    /// it (the daemon's `TestHooks`).
    pub fn inject_lane_panic(&mut self) {
        self.inject_lane_panic = true;
    }

    /// Applies pending entries until `shutdown` turns true, then returns
    /// (after finishing the entries the lanes hold). Returns an error, and
    /// never waits for ever, when the store fails or a lane panics: the
    /// daemon then stops being ready and exits.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        let dirs = std::mem::take(&mut self.dirs);
        self.run_with(dirs, shutdown).await
    }

    /// [`Writer::run`] with these connections, one lane each.
    async fn run_with<D: Apply>(
        self,
        dirs: Vec<D>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let armed = Arc::new(AtomicBool::new(self.inject_lane_panic));
        let dirs = dirs.into_iter().map(|inner| PanicHook {
            inner,
            armed: armed.clone(),
        });
        let mut lanes = Lanes::start(dirs.collect(), self.planner.clone(), self.store.clone());
        let result = self.run_lanes(&mut lanes, &mut shutdown).await;
        // The lane tasks hold the store: they are gone before this returns.
        lanes.stop().await;
        result
    }

    async fn run_lanes(
        &self,
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
                    let due = self.next_refusal_due();
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = shutdown.changed() => {}
                        _ = async {
                            match due {
                                Some(at) => tokio::time::sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        } => {}
                    }
                }
                Pass::Retry(msg) => {
                    self.up.send_if_modified(|u| std::mem::replace(u, false));
                    let delay = backoff.next_delay();
                    warn!(error = %msg, retry_in = ?delay, pending = self.store.pending_count(), "directory unavailable; writes stay queued");
                    // An administrator's `journal retry` or the directory
                    // answering again cuts the wait short; a new write
                    // does not (`WriterHandle::accepted`).
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.retry_now.notified() => {}
                        _ = self.directory_back() => {}
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
    /// held by two lanes waits until one of them lets go. Whether an entry
    /// is blocked is decided when it is handed out, so a park reported
    /// meanwhile counts.
    async fn pass(
        &self,
        lanes: &mut Lanes,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Pass, StoreError> {
        // Refused entries an administrator skipped or retried meanwhile
        // are no longer waiting.
        self.refused_lock()
            .retain(|seq, _| matches!(self.store.state(*seq), Ok(EntryState::Pending)));
        let mut st = PassState {
            horizon: self.store.last_seq(),
            after: 0,
            queue: VecDeque::new(),
            returned: VecDeque::new(),
            ready: None,
            blocked: Blocked::default(),
            retry: None,
        };
        loop {
            while let Some((lane, report)) = lanes.try_report() {
                self.absorb(lane, report?, lanes, &mut st);
            }
            if st.retry.is_some() || *shutdown.borrow() {
                break;
            }
            // The next entry to hand out: one handed back first (it is
            // older than anything read after it), else the one read last.
            let Some(next) = st.returned.front().or(st.ready.as_ref()) else {
                let Some(seq) = st.queue.pop_front() else {
                    if self.read_more(&mut st)? {
                        continue;
                    }
                    if lanes.idle() {
                        break;
                    }
                    // Caught up, lanes busy: wait for a lane to report, for
                    // new entries, or for shutdown.
                    tokio::select! {
                        (lane, report) = lanes.next_report() => {
                            self.absorb(lane, report?, lanes, &mut st);
                        }
                        _ = self.news.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                };
                st.ready = self.prepare(seq, &mut st.blocked)?;
                continue;
            };
            let handed_back = !st.returned.is_empty();
            if let Some((k, id)) = st.blocked.stops(&next.work.route) {
                let entry = &next.work.entry;
                debug!(seq = entry.seq, kind = entry.kind.name(), id = %entry.id, waits_for_kind = k.name(), waits_for = %id, "waiting: an earlier write of its resource, or of one it names, is parked");
                let resource = next.work.route.resource.clone();
                st.blocked.insert(resource);
                self.take_next(&mut st, handed_back);
                continue;
            }
            match lanes.choose(&next.keys) {
                Some(lane) => {
                    let Ready { work, keys } = self.take_next(&mut st, handed_back);
                    lanes.send(lane, work, keys);
                }
                None => {
                    let (lane, report) = lanes.next_report().await;
                    self.absorb(lane, report?, lanes, &mut st);
                }
            }
        }
        // Let the lanes finish what they hold before anything else.
        while !lanes.idle() {
            let (lane, report) = lanes.next_report().await;
            self.absorb(lane, report?, lanes, &mut st);
        }
        if let Some(msg) = st.retry {
            return Ok(Pass::Retry(msg));
        }
        if !*shutdown.borrow() {
            // Not past an entry that waits to be tried again: "processed"
            // means applied or parked.
            let done = match self.below_refused() {
                Some(below) => st.horizon.min(below),
                None => st.horizon,
            };
            self.processed.send_if_modified(|p| {
                let moved = done > *p;
                *p = (*p).max(done);
                moved
            });
        }
        Ok(Pass::Done)
    }

    fn take_next(&self, st: &mut PassState, handed_back: bool) -> Ready {
        let next = if handed_back {
            st.returned.pop_front()
        } else {
            st.ready.take()
        };
        next.expect("looked at above")
    }

    /// Reads the next seqs up to the horizon, moving the horizon on when
    /// entries were accepted meanwhile. False when there is nothing more.
    fn read_more(&self, st: &mut PassState) -> Result<bool, StoreError> {
        let seqs = self.store.pending_after(st.after, BATCH)?;
        let fresh: Vec<u64> = seqs.into_iter().filter(|s| *s <= st.horizon).collect();
        if let Some(&last) = fresh.last() {
            st.after = last;
            st.queue.extend(fresh);
            return Ok(true);
        }
        let now = self.store.last_seq();
        if now > st.horizon {
            st.horizon = now;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads entry `seq` and works out its route; `None` when it is gone,
    /// parked, or must wait for a later pass. A route that cannot be
    /// worked out parks the entry, as a plan error does in a lane.
    fn prepare(&self, seq: u64, blocked: &mut Blocked) -> Result<Option<Ready>, StoreError> {
        let Some(entry) = self.store.entry(seq)? else {
            return Ok(None);
        };
        let resource = (entry.kind, entry.id.clone());
        if blocked.contains(&resource) {
            return Ok(None);
        }
        if let EntryState::Failed(_) = self.store.state(seq)? {
            blocked.insert(resource);
            return Ok(None);
        }
        let refusals = match self.refused_lock().get(&seq) {
            Some((_, at)) if *at > Instant::now() => {
                // Refused a moment ago: it waits for its turn, and so do
                // the later entries of its resource.
                blocked.insert(resource);
                return Ok(None);
            }
            Some((n, _)) => *n,
            None => 0,
        };
        let route = match self.planner.route(&entry) {
            Ok(r) => r,
            Err(e) => {
                let message = e.to_string();
                park(&self.store, &entry, None, &message)?;
                self.count(
                    "plan",
                    &Err(ApplyError::Park {
                        code: None,
                        message,
                    }),
                );
                blocked.insert(resource);
                return Ok(None);
            }
        };
        if let Some((k, id)) = blocked.stops(&route) {
            debug!(seq, kind = entry.kind.name(), id = %entry.id, waits_for_kind = k.name(), waits_for = %id, "waiting: it names a resource whose earlier write is parked");
            blocked.insert(resource);
            return Ok(None);
        }
        Ok(Some(Ready::new(Work {
            entry,
            route,
            refusals,
        })))
    }

    /// Takes in what a lane reports, and decides what follows from it.
    fn absorb(&self, lane: usize, report: Report, lanes: &mut Lanes, st: &mut PassState) {
        match report {
            Report::Tried {
                seq,
                resource,
                op,
                outcome,
            } => {
                self.count(op, &outcome);
                if !matches!(outcome, Err(ApplyError::Refused { .. })) {
                    self.refused_lock().remove(&seq);
                }
                match outcome {
                    Err(ApplyError::Refused { .. }) => {
                        let mut refused = self.refused_lock();
                        let n = refused.get(&seq).map_or(0, |(n, _)| *n) + 1;
                        refused.insert(seq, (n, Instant::now() + refusal_delay(n)));
                        st.blocked.insert(resource);
                        lanes.resume(lane);
                    }
                    Ok(_) => {
                        if self.up.send_if_modified(|u| !std::mem::replace(u, true)) {
                            info!("directory reachable again; delivering queued writes");
                        }
                    }
                    Err(ApplyError::Park { .. }) => {
                        st.blocked.insert(resource);
                        lanes.resume(lane);
                    }
                    Err(ApplyError::Retry(msg)) => {
                        st.retry.get_or_insert(msg);
                        lanes.resume(lane);
                    }
                }
            }
            // After "unreachable" the pass ends: the entry stays pending
            // for the next one.
            Report::Returned(_) if st.retry.is_some() => {}
            Report::Returned(work) => st.returned.push_back(Ready::new(*work)),
        }
    }

    fn count(&self, op: &'static str, outcome: &Result<Option<Link>, ApplyError>) {
        if let Some(m) = &self.metrics {
            match outcome {
                Ok(_) => m.ldap(op, "success"),
                Err(ApplyError::Retry(_)) => m.ldap(op, "unreachable"),
                Err(ApplyError::Park { code: Some(rc), .. }) => m.ldap(op, rc_name(*rc)),
                Err(ApplyError::Park { code: None, .. }) => m.ldap(op, "mappingError"),
                Err(ApplyError::Refused { code, .. }) => m.ldap(op, rc_name(*code)),
            }
        }
    }
}

/// How long an entry the directory refused `n` times waits before its
/// next try.
fn refusal_delay(n: u32) -> Duration {
    match n {
        0 | 1 => Duration::from_secs(1),
        _ => Duration::from_secs(4),
    }
}

impl Writer {
    fn refused_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, (u32, Instant)>> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the next refused entry is due, if one waits.
    fn next_refusal_due(&self) -> Option<Instant> {
        self.refused_lock().values().map(|(_, at)| *at).min()
    }

    /// The highest seq below every refused entry still waiting.
    fn below_refused(&self) -> Option<u64> {
        self.refused_lock()
            .keys()
            .min()
            .map(|s| s.saturating_sub(1))
    }

    /// Returns once the directory answers a connection and bind (probed
    /// every second); never, without a configuration to probe.
    async fn directory_back(&self) {
        let Some(cfg) = &self.probe else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut dir = Directory::new(cfg.clone());
            if dir.conn().await.is_ok() {
                return;
            }
        }
    }
}

enum Pass {
    /// Everything pending was applied, parked or held back behind a
    /// parked entry.
    Done,
    /// The directory is unreachable: back off.
    Retry(String),
}

/// The dispatcher's ordering, with a planner that reads routes from the
/// snapshot and a directory that only records what it was asked, when, on
/// which lane.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use serde_json::{json, Value};

    use super::*;
    use crate::writer::plan::{
        Desired, FullMembers, GroupPlan, MemberAttrPlan, MemberPlan, Plan, PlanError,
    };

    /// Snapshots carry `dn`, `deps` (user ids it names) and `delay` (ms the
    /// fake directory takes); `badRoute` makes the route fail.
    struct FakePlanner;

    impl Planner for FakePlanner {
        fn route(&self, e: &crate::store::JournalEntry) -> Result<Route, PlanError> {
            if e.snapshot["badRoute"] == json!(true) {
                return Err(PlanError::Mapping("no value for uid".into()));
            }
            Ok(Route {
                resource: (e.kind, e.id.clone()),
                dn: e.snapshot["dn"].as_str().unwrap_or_default().to_string(),
                linked: None,
                dependencies: e.snapshot["deps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| d.as_str().unwrap_or_default().to_string())
                    // A group names the members it adds.
                    .chain(e.members.iter().flat_map(|m| m.add.iter().cloned()))
                    .map(|d| (Kind::User, d))
                    .collect(),
            })
        }
        fn plan(&self, e: &crate::store::JournalEntry) -> Result<Plan, PlanError> {
            let delay = e.snapshot["delay"].as_u64().unwrap_or(0);
            if e.kind == Kind::Group {
                // Member values are `uid=<id>,dc=x`; without a member change,
                // an empty full list.
                let dn = |ids: &[String]| ids.iter().map(|i| format!("uid={i},dc=x")).collect();
                let values = match &e.members {
                    Some(c) => MemberPlan::Delta {
                        add: dn(&c.add),
                        remove: dn(&c.remove),
                        empty_before: c.empty_before,
                        empty_after: c.empty_after,
                    },
                    None => MemberPlan::Full(Vec::new()),
                };
                return Ok(Plan::Group(GroupPlan {
                    desired: Desired {
                        dn: e.snapshot["dn"].as_str().unwrap_or_default().to_string(),
                        attrs: BTreeMap::from([("delay".to_string(), vec![delay.to_string()])]),
                        ..Desired::default()
                    },
                    members: vec![MemberAttrPlan {
                        attr: "member".into(),
                        values,
                        placeholder: None,
                    }],
                    only_members: e.members.as_ref().is_some_and(|c| c.only_members),
                }));
            }
            Ok(Plan::Upsert(Desired {
                dn: e.snapshot["dn"].as_str().unwrap_or_default().to_string(),
                attrs: BTreeMap::from([
                    ("seq".to_string(), vec![e.seq.to_string()]),
                    ("delay".to_string(), vec![delay.to_string()]),
                ]),
                ..Desired::default()
            }))
        }
        fn full_members(
            &self,
            _: &crate::store::JournalEntry,
        ) -> Result<Vec<Vec<String>>, PlanError> {
            Ok(Vec::new())
        }
    }

    /// One apply: its seq, its lane, and when it started and ended on a
    /// clock shared by every lane (a counter).
    #[derive(Debug, Clone, Copy)]
    struct Applied {
        seq: u64,
        lane: usize,
        start: usize,
        end: usize,
    }

    /// One apply of a group plan: its member values added and removed.
    #[derive(Debug, Clone)]
    struct GroupApplied {
        lane: usize,
        start: usize,
        end: usize,
        add: Vec<String>,
        remove: Vec<String>,
    }

    #[derive(Clone, Default)]
    struct Log {
        clock: Arc<AtomicUsize>,
        applied: Arc<Mutex<Vec<Applied>>>,
        groups: Arc<Mutex<Vec<GroupApplied>>>,
    }

    impl Log {
        fn of(&self, seq: u64) -> Applied {
            let applied = self.applied.lock().unwrap();
            let found = applied.iter().find(|a| a.seq == seq);
            *found.unwrap_or_else(|| panic!("entry {seq} was not applied: {applied:?}"))
        }
        fn tried(&self, seq: u64) -> bool {
            self.applied.lock().unwrap().iter().any(|a| a.seq == seq)
        }
        /// The member deltas applied, in order, as (added, removed) ids.
        fn group_applies(&self) -> Vec<GroupApplied> {
            let mut g = self.groups.lock().unwrap().clone();
            g.sort_by_key(|a| a.start);
            g
        }
    }

    /// `uid=<id>,dc=x` back to `<id>`.
    fn ids(values: &[String]) -> Vec<String> {
        values
            .iter()
            .map(|v| {
                v.trim_start_matches("uid=")
                    .trim_end_matches(",dc=x")
                    .to_string()
            })
            .collect()
    }

    /// Applies after the plan's delay; parks an entry whose DN has `park`,
    /// and a group plan that adds a member whose id has `park`.
    struct FakeDir {
        lane: usize,
        log: Log,
    }

    impl FakeDir {
        async fn apply_group(&mut self, g: &GroupPlan) -> Result<Option<Link>, ApplyError> {
            let delay: u64 = g.desired.attrs["delay"][0].parse().unwrap();
            let (add, remove) = match &g.members[0].values {
                MemberPlan::Delta { add, remove, .. } => (add.clone(), remove.clone()),
                MemberPlan::Full(v) => (v.clone(), Vec::new()),
            };
            let start = self.log.clock.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let end = self.log.clock.fetch_add(1, Ordering::SeqCst);
            let park = add.iter().any(|v| v.contains("park"));
            self.log.groups.lock().unwrap().push(GroupApplied {
                lane: self.lane,
                start,
                end,
                add,
                remove,
            });
            if park {
                return Err(ApplyError::Park {
                    code: Some(19),
                    message: "constraintViolation (19)".into(),
                });
            }
            Ok(Some(Link {
                dn: g.desired.dn.clone(),
                ..Link::default()
            }))
        }
    }

    impl Apply for FakeDir {
        async fn apply(
            &mut self,
            plan: &Plan,
            _link: Option<&Link>,
            _full: FullMembers<'_>,
        ) -> Result<Option<Link>, ApplyError> {
            let d = match plan {
                Plan::Upsert(d) => d,
                Plan::Group(g) => return self.apply_group(g).await,
                Plan::Delete { .. } => panic!("the fake planner makes no deletes"),
            };
            let seq: u64 = d.attrs["seq"][0].parse().unwrap();
            let delay: u64 = d.attrs["delay"][0].parse().unwrap();
            let start = self.log.clock.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let end = self.log.clock.fetch_add(1, Ordering::SeqCst);
            self.log.applied.lock().unwrap().push(Applied {
                seq,
                lane: self.lane,
                start,
                end,
            });
            if d.dn.contains("park") {
                return Err(ApplyError::Park {
                    code: Some(65),
                    message: "objectClassViolation (65)".into(),
                });
            }
            Ok(Some(Link {
                dn: d.dn.clone(),
                ..Link::default()
            }))
        }
        fn reset(&mut self) {}
    }

    struct Journal {
        dir: std::path::PathBuf,
        store: Store,
        seen: HashSet<String>,
    }

    impl Journal {
        fn new() -> Journal {
            let dir =
                std::env::temp_dir().join(format!("scim2ldap-dispatch-{}", uuid::Uuid::new_v4()));
            let store = Store::open(&dir).unwrap();
            Journal {
                dir,
                store,
                seen: HashSet::new(),
            }
        }

        /// Journals a write of user `id`; returns its seq.
        fn write(&mut self, id: &str, snapshot: Value) -> u64 {
            let mut resource = snapshot;
            resource["userName"] = json!(id);
            let create = self.seen.insert(id.to_string());
            let intent = if create {
                crate::store::Intent::Create
            } else {
                crate::store::Intent::Update { if_version: None }
            };
            self.store
                .write(crate::store::Write {
                    kind: Kind::User,
                    id,
                    resource: &mut resource,
                    intent,
                    members: None,
                })
                .unwrap()
        }

        fn user(&mut self, id: &str, delay: u64) -> u64 {
            self.write(id, json!({"dn": format!("uid={id},dc=x"), "delay": delay}))
        }

        /// Journals a change of group `id` (created on its first write,
        /// with no members): `add` and `remove` are member ids, and the
        /// change is member-only after the create. Returns its seq.
        fn group(&mut self, id: &str, add: &[&str], remove: &[&str]) -> u64 {
            let mut resource =
                json!({"displayName": id, "dn": format!("cn={id},dc=x"), "delay": 0});
            let create = self.seen.insert(id.to_string());
            let ops = crate::store::MemberOps {
                add: add.iter().map(|m| (m.to_string(), Kind::User)).collect(),
                remove: remove.iter().map(|m| m.to_string()).collect(),
                only_members: !create,
                ..Default::default()
            };
            self.store
                .write(crate::store::Write {
                    kind: Kind::Group,
                    id,
                    resource: &mut resource,
                    intent: if create {
                        crate::store::Intent::Create
                    } else {
                        crate::store::Intent::Update { if_version: None }
                    },
                    members: (!create).then_some(&ops),
                })
                .unwrap()
        }

        /// Runs the writer with `lanes` fake connections until every entry
        /// is processed, then stops it.
        async fn run(&self, lanes: usize) -> Log {
            let log = Log::default();
            let (writer, handle) =
                Writer::with_dirs(self.store.clone(), Arc::new(FakePlanner), Vec::new());
            let dirs: Vec<FakeDir> = (0..lanes)
                .map(|lane| FakeDir {
                    lane,
                    log: log.clone(),
                })
                .collect();
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(writer.run_with(dirs, stop_rx));
            handle.wake();
            tokio::time::timeout(
                Duration::from_secs(20),
                handle.wait_processed(self.store.last_seq()),
            )
            .await
            .expect("the writer processed every entry");
            stop.send_replace(true);
            task.await.unwrap().unwrap();
            log
        }

        fn state(&self, seq: u64) -> EntryState {
            self.store.state(seq).unwrap()
        }
    }

    impl Drop for Journal {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A directory that cannot be reached: counts the attempts.
    struct DownDir(Arc<std::sync::atomic::AtomicUsize>);

    impl Apply for DownDir {
        async fn apply(
            &mut self,
            _plan: &Plan,
            _link: Option<&Link>,
            _full: FullMembers<'_>,
        ) -> Result<Option<Link>, ApplyError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(ApplyError::Retry("connection refused".into()))
        }
        fn reset(&mut self) {}
    }

    #[tokio::test]
    async fn writes_accepted_during_an_outage_do_not_cut_the_backoff_short() {
        let mut j = Journal::new();
        j.user("first", 0);
        let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (writer, handle) =
            Writer::with_dirs(j.store.clone(), Arc::new(FakePlanner), Vec::new());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(writer.run_with(vec![DownDir(tries.clone())], stop_rx));
        handle.accepted();
        // Two failed attempts: the wait now is at least 750 ms (1 s, with
        // jitter). Fifty writes within it start no attempt of their own.
        while tries.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = std::time::Instant::now();
        for i in 0..50 {
            j.user(&format!("u{i}"), 0);
            handle.accepted();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "the writes took too long to show anything"
        );
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        // An administrator's wake does.
        handle.wake();
        tokio::time::timeout(Duration::from_secs(5), async {
            while tries.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a wake starts another attempt");
        stop.send_replace(true);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn entries_of_one_resource_apply_in_order_while_others_run_beside_them() {
        let mut j = Journal::new();
        let a: Vec<u64> = [60, 0, 30, 0, 10]
            .into_iter()
            .map(|d| j.user("a", d))
            .collect();
        let others: Vec<u64> = ["b", "c", "d"].into_iter().map(|u| j.user(u, 0)).collect();
        let log = j.run(4).await;
        for w in a.windows(2) {
            let (before, after) = (log.of(w[0]), log.of(w[1]));
            assert!(
                before.end < after.start,
                "{before:?} finished before {after:?} started"
            );
        }
        // The others did not wait for the slow first entry of `a`.
        for s in others {
            assert!(log.of(s).end < log.of(a[0]).end, "{s} ran beside a");
        }
        for s in a {
            assert_eq!(j.state(s), EntryState::Applied);
        }
    }

    #[tokio::test]
    async fn an_entry_naming_another_resource_waits_behind_its_earlier_write() {
        let mut j = Journal::new();
        let boss = j.user("boss", 50);
        let filler = j.user("filler", 0);
        let report = j.write(
            "report",
            json!({"dn": "uid=report,dc=x", "deps": ["boss"], "delay": 0}),
        );
        let log = j.run(4).await;
        assert!(log.of(boss).end < log.of(report).start);
        assert_eq!(log.of(report).lane, log.of(boss).lane, "queued behind it");
        assert!(log.of(filler).end < log.of(boss).end);
    }

    #[tokio::test]
    async fn entries_sharing_a_dn_go_to_the_same_lane_in_order() {
        let mut j = Journal::new();
        let old = j.write("old", json!({"dn": "uid=Same,dc=x", "delay": 40}));
        let other = j.user("other", 0);
        let new = j.write("new", json!({"dn": "UID=same, DC=X", "delay": 0}));
        let log = j.run(4).await;
        assert_eq!(log.of(new).lane, log.of(old).lane);
        assert!(log.of(old).end < log.of(new).start);
        assert_ne!(log.of(other).lane, log.of(old).lane);
    }

    #[tokio::test]
    async fn an_entry_whose_keys_two_lanes_hold_waits_for_both() {
        let mut j = Journal::new();
        let a = j.user("a", 40);
        let b = j.user("b", 60);
        let group = j.write(
            "both",
            json!({"dn": "cn=both,dc=x", "deps": ["a", "b"], "delay": 0}),
        );
        let log = j.run(4).await;
        assert_ne!(log.of(a).lane, log.of(b).lane, "a and b ran side by side");
        assert!(log.of(a).end < log.of(group).start);
        assert!(log.of(b).end < log.of(group).start);
    }

    #[tokio::test]
    async fn a_parked_entry_blocks_its_resource_and_what_names_it_and_nothing_else() {
        for lanes in [1, 4] {
            let mut j = Journal::new();
            let parked = j.write("p", json!({"dn": "uid=park-me,dc=x", "delay": 0}));
            // Behind it in its lane: unrelated entries, handed back and
            // applied after all.
            let unrelated: Vec<u64> = ["u1", "u2"].into_iter().map(|u| j.user(u, 0)).collect();
            // An entry reads its resource's latest snapshot: the later
            // write keeps what parks it.
            let later = j.write("p", json!({"dn": "uid=park-me,dc=x", "delay": 1}));
            let names = j.write(
                "names-p",
                json!({"dn": "uid=names-p,dc=x", "deps": ["p"], "delay": 0}),
            );
            let after_names = j.write(
                "names-p",
                json!({"dn": "uid=names-p,dc=x", "deps": ["p"], "delay": 1}),
            );
            let last = j.user("u3", 0);
            let log = j.run(lanes).await;
            assert!(matches!(j.state(parked), EntryState::Failed(_)));
            for s in [later, names, after_names] {
                assert!(!log.tried(s), "{s} waits ({lanes} lanes)");
                assert_eq!(j.state(s), EntryState::Pending);
            }
            for s in unrelated.into_iter().chain([last]) {
                assert_eq!(j.state(s), EntryState::Applied, "{s} ({lanes} lanes)");
            }
        }
    }

    #[tokio::test]
    async fn a_route_that_cannot_be_worked_out_parks_the_entry() {
        let mut j = Journal::new();
        let bad = j.write("bad", json!({"badRoute": true}));
        // An entry reads its resource's latest snapshot: the later write
        // keeps what fails the route.
        let later = j.write("bad", json!({"badRoute": true, "delay": 1}));
        let other = j.user("other", 0);
        let log = j.run(2).await;
        match j.state(bad) {
            EntryState::Failed(f) => {
                assert_eq!(f.message, "mapping: no value for uid");
                assert_eq!(f.code, None);
            }
            s => panic!("{s:?}"),
        }
        assert!(!log.tried(later));
        assert_eq!(j.state(later), EntryState::Pending);
        assert_eq!(j.state(other), EntryState::Applied);
    }

    #[tokio::test]
    async fn a_lane_that_panics_ends_the_writer_with_an_error() {
        for lanes in [1, 4] {
            let mut j = Journal::new();
            let first = j.user("a", 0);
            j.user("b", 20);
            let (mut writer, handle) =
                Writer::with_dirs(j.store.clone(), Arc::new(FakePlanner), Vec::new());
            writer.inject_lane_panic();
            let dirs: Vec<FakeDir> = (0..lanes)
                .map(|lane| FakeDir {
                    lane,
                    log: Log::default(),
                })
                .collect();
            let (_stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(writer.run_with(dirs, stop_rx));
            handle.wake();
            let ended = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the writer ends instead of waiting for the lane")
                .expect("the dispatcher itself did not panic");
            match ended {
                Err(StoreError::LanePanicked { message, .. }) => {
                    assert_eq!(message, "injected lane panic (test hook)")
                }
                other => panic!("{other:?} ({lanes} lanes)"),
            }
            // The entry in the panicked lane stays pending, for after the
            // restart.
            assert_eq!(j.state(first), EntryState::Pending, "{lanes} lanes");
        }
    }

    #[tokio::test]
    async fn a_burst_of_member_adds_to_one_group_leaves_as_one_apply_with_every_value_in_order() {
        for lanes in [1, 4] {
            let mut j = Journal::new();
            let create = j.group("g", &[], &[]);
            let members: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
            let seqs: Vec<u64> = members.iter().map(|m| j.group("g", &[m], &[])).collect();
            let log = j.run(lanes).await;
            let applies = log.group_applies();
            // The create, then the 20 changes (all waiting in the lane when
            // the first was taken) in one apply.
            assert_eq!(applies.len(), 2, "{applies:?} ({lanes} lanes)");
            assert_eq!(ids(&applies[1].add), members, "{lanes} lanes");
            assert!(applies[1].remove.is_empty());
            for s in seqs.into_iter().chain([create]) {
                assert_eq!(j.state(s), EntryState::Applied, "{s} ({lanes} lanes)");
            }
        }
    }

    #[tokio::test]
    async fn a_lane_holds_more_than_lane_depth_of_one_group_so_its_changes_merge() {
        let mut j = Journal::new();
        j.group("g", &[], &[]);
        let members: Vec<String> = (0..300).map(|i| format!("m{i:03}")).collect();
        for m in &members {
            j.group("g", &[m], &[]);
        }
        let log = j.run(2).await;
        let applies = log.group_applies();
        // At LANE_DEPTH (8) a lane would hold 8 at a time: 38 applies or
        // more. It holds up to JOIN_DEPTH, and a batch carries up to 256
        // (what arrives while one is applied makes the next).
        let sizes: Vec<usize> = applies.iter().map(|a| a.add.len()).collect();
        assert!(applies.len() <= 5, "{sizes:?}");
        assert!(applies[1..].iter().all(|a| a.add.len() <= 256));
        let added: Vec<String> = applies[1..].iter().flat_map(|a| ids(&a.add)).collect();
        assert_eq!(added, members);
    }

    #[tokio::test]
    async fn a_member_added_then_removed_is_not_merged_into_one_apply() {
        let mut j = Journal::new();
        j.group("g", &[], &[]);
        let seqs = [
            j.group("g", &["a"], &[]),
            j.group("g", &["b"], &[]),
            j.group("g", &[], &["a"]),
            j.group("g", &["c"], &[]),
        ];
        let log = j.run(1).await;
        let applies: Vec<(Vec<String>, Vec<String>)> = log.group_applies()[1..]
            .iter()
            .map(|a| (ids(&a.add), ids(&a.remove)))
            .collect();
        // The removal of `a` starts a new apply (with what follows it).
        assert_eq!(
            applies,
            vec![
                (vec!["a".to_string(), "b".to_string()], vec![]),
                (vec!["c".to_string()], vec!["a".to_string()]),
            ]
        );
        for s in seqs {
            assert_eq!(j.state(s), EntryState::Applied);
        }
    }

    #[tokio::test]
    async fn a_failed_combined_apply_falls_back_one_by_one_and_only_the_bad_entry_parks() {
        for lanes in [1, 4] {
            let mut j = Journal::new();
            j.group("g", &[], &[]);
            let m1 = j.group("g", &["m1"], &[]);
            let m2 = j.group("g", &["m2"], &[]);
            let bad = j.group("g", &["park-me"], &[]);
            let m4 = j.group("g", &["m4"], &[]);
            let other = j.user("u", 0);
            let log = j.run(lanes).await;
            let applies: Vec<Vec<String>> = log.group_applies()[1..]
                .iter()
                .map(|a| ids(&a.add))
                .collect();
            assert_eq!(
                applies,
                vec![
                    vec!["m1", "m2", "park-me", "m4"],
                    vec!["m1"],
                    vec!["m2"],
                    vec!["park-me"],
                ],
                "{lanes} lanes"
            );
            assert_eq!(j.state(m1), EntryState::Applied);
            assert_eq!(j.state(m2), EntryState::Applied);
            match j.state(bad) {
                EntryState::Failed(f) => assert_eq!(f.code, Some(19)),
                s => panic!("{s:?} ({lanes} lanes)"),
            }
            // Behind the parked change of its group, as any later write of
            // a resource with a parked entry.
            assert_eq!(j.state(m4), EntryState::Pending, "{lanes} lanes");
            assert_eq!(j.state(other), EntryState::Applied, "{lanes} lanes");
        }
    }

    #[tokio::test]
    async fn only_consecutive_changes_of_one_group_merge_and_order_across_resources_holds() {
        // One lane: another resource's entry between two changes of the
        // group is applied between them.
        let mut j = Journal::new();
        j.group("g", &[], &[]);
        j.group("g", &["m1"], &[]);
        let x = j.user("x", 0);
        j.group("g", &["m2"], &[]);
        j.group("g", &["m3"], &[]);
        let log = j.run(1).await;
        let applies = log.group_applies();
        let added: Vec<Vec<String>> = applies[1..].iter().map(|a| ids(&a.add)).collect();
        assert_eq!(added, vec![vec!["m1"], vec!["m2", "m3"]]);
        assert!(applies[1].end < log.of(x).start);
        assert!(log.of(x).end < applies[2].start);

        // A member added is in the directory before the apply that names it.
        let mut j = Journal::new();
        j.group("g", &[], &[]);
        let slow = j.user("slow", 40);
        j.group("g", &["slow"], &[]);
        j.group("g", &["m2"], &[]);
        let log = j.run(4).await;
        let applies = log.group_applies();
        let added: Vec<Vec<String>> = applies[1..].iter().map(|a| ids(&a.add)).collect();
        assert_eq!(added, vec![vec!["slow", "m2"]]);
        assert!(log.of(slow).end < applies[1].start);
        let _ = applies[1].lane;
    }
}
