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
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::diff::norm_value;
use super::directory::Directory;
use super::errors::{rc_name, ApplyError};
use super::lane::{park, Apply, Lanes, Report, Work};
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
        let mut seen = HashSet::with_capacity(keys.len());
        keys.retain(|k| seen.insert(k.clone()));
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
}

impl WriterHandle {
    /// Tells the writer that new entries are pending.
    pub fn wake(&self) {
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
        Writer::with_dirs(store, planner, dirs)
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
            },
            WriterHandle {
                wake,
                news,
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
        let mut lanes = Lanes::start(dirs, self.planner.clone(), self.store.clone());
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
    /// held by two lanes waits until one of them lets go. Whether an entry
    /// is blocked is decided when it is handed out, so a park reported
    /// meanwhile counts.
    async fn pass(
        &self,
        lanes: &mut Lanes,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Pass, StoreError> {
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
            self.processed.send_replace(st.horizon);
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
        Ok(Some(Ready::new(Work { entry, route })))
    }

    /// Takes in what a lane reports, and decides what follows from it.
    fn absorb(&self, lane: usize, report: Report, lanes: &mut Lanes, st: &mut PassState) {
        match report {
            Report::Tried {
                resource,
                op,
                outcome,
            } => {
                self.count(op, &outcome);
                match outcome {
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
