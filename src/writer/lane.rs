//! The lanes: one task per directory connection, each applying the entries
//! the dispatcher gives it, in order; and the dispatcher's book of what
//! every lane holds.
//!
//! Architecture invariant: a lane decides nothing about order or about
//! what is blocked. It plans the entry it is given, applies it, records the
//! outcome in the store (a later entry of the same resource needs the link
//! the earlier one made) and reports it. The one liberty it takes:
//! consecutive member-only changes of one group waiting in its channel
//! leave as one modify carrying all their values, recorded and reported
//! one by one, in order; if the directory refuses that modify, they are
//! applied one by one as usual. After any failure it hands back,
//! untried, whatever it is given until the dispatcher, having heard of the
//! failure, says [`ToLane::Resume`]: the dispatcher then decides again about
//! each entry handed back.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use super::directory::Directory;
use super::dispatch::LaneKey;
use super::errors::ApplyError;
use super::members::{delta_values, MergedMembers};
use super::plan::{FullMembers, GroupPlan, Plan, PlanError, Planner, Route};
use crate::store::{Failure, JournalEntry, Kind, Link, Op, Store, StoreError};

/// How many entries one lane holds at most (in hand and queued) for an
/// entry that could go to any lane. Small, so that such an entry goes to
/// the lane that is free when it is dispatched.
pub(super) const LANE_DEPTH: usize = 8;

/// How many entries one lane holds at most for an entry that must go to
/// it anyway, behind an entry that shares one of its keys (the same group,
/// a member it names). Deep, so that a burst of member changes to one
/// group waits in the lane, where consecutive ones leave as one modify,
/// instead of stopping the dispatcher (which waits while the entry in
/// front of it has no lane).
pub(super) const JOIN_DEPTH: usize = 256;

/// What a lane needs of the directory: converge to a plan, and drop the
/// connection after it failed. [`Directory`] in the daemon; a fake in the
/// dispatcher's tests.
pub(super) trait Apply: Send + 'static {
    fn apply<'a>(
        &'a mut self,
        plan: &'a Plan,
        link: Option<&'a Link>,
        full: FullMembers<'a>,
    ) -> impl Future<Output = Result<Option<Link>, ApplyError>> + Send + 'a;
    fn reset(&mut self);
}

impl Apply for Directory {
    fn apply<'a>(
        &'a mut self,
        plan: &'a Plan,
        link: Option<&'a Link>,
        full: FullMembers<'a>,
    ) -> impl Future<Output = Result<Option<Link>, ApplyError>> + Send + 'a {
        Directory::apply(self, plan, link, full)
    }
    fn reset(&mut self) {
        Directory::reset(self)
    }
}

/// How many times the directory may refuse one entry before it is parked.
pub(super) const MAX_REFUSALS: u32 = 3;

/// An entry given to a lane, with its route.
pub(super) struct Work {
    pub entry: JournalEntry,
    pub route: Route,
    /// How many times the directory refused it already.
    pub refusals: u32,
}

/// What a lane reports for each entry it was given, in order.
pub(super) enum Report {
    /// Tried: the entry's resource, the kind of operation and the outcome
    /// (already recorded in the store).
    Tried {
        seq: u64,
        resource: (Kind, String),
        op: &'static str,
        outcome: Result<Option<Link>, ApplyError>,
    },
    /// Not tried: the lane failed an entry before it and had not yet been
    /// told to resume. The dispatcher decides about it again.
    Returned(Box<Work>),
}

pub(super) enum ToLane {
    Work(Box<Work>),
    /// The dispatcher has heard of the lane's last failure: apply again.
    Resume,
}

/// A report, with the lane it comes from.
pub(super) type LaneReport = (usize, Result<Report, StoreError>);

/// The lane tasks, and what the dispatcher knows of what they hold.
pub(super) struct Lanes {
    senders: Vec<mpsc::UnboundedSender<ToLane>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    reports: mpsc::UnboundedReceiver<LaneReport>,
    /// Keys of every entry given to each lane and not yet reported, in
    /// order.
    held: Vec<VecDeque<Vec<LaneKey>>>,
    /// Which lane holds each key, and how many of its entries.
    holders: HashMap<LaneKey, (usize, usize)>,
    /// Lanes that failed an entry and are handing back the ones behind it:
    /// nothing goes to them, or to a lane behind what they hold, until
    /// they hold nothing.
    draining: Vec<bool>,
}

impl Lanes {
    pub(super) fn start<D: Apply>(dirs: Vec<D>, planner: Arc<dyn Planner>, store: Store) -> Lanes {
        let (report_tx, reports) = mpsc::unbounded_channel();
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for (i, dir) in dirs.into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            let lane = tokio::spawn(lane_task(
                i,
                dir,
                planner.clone(),
                store.clone(),
                rx,
                report_tx.clone(),
            ));
            tasks.push(tokio::spawn(guard(i, lane, report_tx.clone())));
        }
        Lanes {
            tasks,
            held: senders.iter().map(|_| Default::default()).collect(),
            draining: senders.iter().map(|_| false).collect(),
            senders,
            reports,
            holders: HashMap::new(),
        }
    }

    /// Ends the lane tasks (each finishes the entry in hand) and waits
    /// for them.
    pub(super) async fn stop(self) {
        drop(self.senders);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    pub(super) fn idle(&self) -> bool {
        self.held.iter().all(|h| h.is_empty())
    }

    /// The lane for an entry with these keys: the one that holds any of
    /// them (up to [`JOIN_DEPTH`] entries), else the least busy (up to
    /// [`LANE_DEPTH`]); `None` if two lanes hold them, the lane is full or
    /// handing entries back (wait for a report, then ask again).
    pub(super) fn choose(&self, keys: &[LaneKey]) -> Option<usize> {
        let mut lane = None;
        for k in keys {
            if let Some(&(l, _)) = self.holders.get(k) {
                match lane {
                    Some(other) if other != l => return None,
                    _ => lane = Some(l),
                }
            }
        }
        let (lane, depth) = match lane {
            Some(l) => (l, JOIN_DEPTH),
            None => (
                (0..self.held.len())
                    .filter(|&l| !self.draining[l])
                    .min_by_key(|&l| self.held[l].len())?,
                LANE_DEPTH,
            ),
        };
        (!self.draining[lane] && self.held[lane].len() < depth).then_some(lane)
    }

    pub(super) fn send(&mut self, lane: usize, work: Work, keys: Vec<LaneKey>) {
        for k in &keys {
            self.holders.entry(k.clone()).or_insert((lane, 0)).1 += 1;
        }
        self.held[lane].push_back(keys);
        if self.senders[lane]
            .send(ToLane::Work(Box::new(work)))
            .is_err()
        {
            // The lane task ended (it reported a store error, or
            // panicked and its guard reported that): the report is
            // waiting in the channel.
            warn!(lane, "writer lane stopped");
        }
    }

    /// Tells a lane that failed an entry to apply again: what it holds now
    /// comes back untried first.
    pub(super) fn resume(&mut self, lane: usize) {
        self.draining[lane] = !self.held[lane].is_empty();
        let _ = self.senders[lane].send(ToLane::Resume);
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
        if self.held[lane].is_empty() {
            self.draining[lane] = false;
        }
    }

    /// A report if one is waiting.
    pub(super) fn try_report(&mut self) -> Option<LaneReport> {
        let (lane, report) = self.reports.try_recv().ok()?;
        self.release(lane);
        Some((lane, report))
    }

    /// The next report.
    pub(super) async fn next_report(&mut self) -> LaneReport {
        match self.reports.recv().await {
            Some((lane, report)) => {
                self.release(lane);
                (lane, report)
            }
            None => (0, Err(StoreError::WriterStopped)),
        }
    }
}

/// Watches a lane task: if it panics, reports that in its place, so that
/// the dispatcher, which would otherwise wait for the lane's report for
/// ever, stops the writer with an error. A lane ends on its own only when
/// told to (its channel closed) or after reporting a store error.
async fn guard(
    lane: usize,
    task: tokio::task::JoinHandle<()>,
    reports: mpsc::UnboundedSender<LaneReport>,
) {
    let Err(e) = task.await else {
        return;
    };
    let message = if e.is_panic() {
        panic_message(e.into_panic())
    } else {
        e.to_string()
    };
    error!(lane, panic = %message, "a writer lane panicked: the writer stops");
    let _ = reports.send((lane, Err(StoreError::LanePanicked { lane, message })));
}

/// The text of a panic's payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_string(), |s| s.to_string()),
    }
}

/// A test hook around a lane's directory: when armed, the first entry any
/// lane applies panics there, as a panic in the LDAP client would. Armed
/// only from Rust code ([`super::Writer::inject_lane_panic`]).
pub(super) struct PanicHook<D> {
    pub inner: D,
    /// Shared by every lane; taken by the first apply.
    pub armed: Arc<AtomicBool>,
}

impl<D: Apply> Apply for PanicHook<D> {
    fn apply<'a>(
        &'a mut self,
        plan: &'a Plan,
        link: Option<&'a Link>,
        full: FullMembers<'a>,
    ) -> impl Future<Output = Result<Option<Link>, ApplyError>> + Send + 'a {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("injected lane panic (test hook)");
        }
        self.inner.apply(plan, link, full)
    }
    fn reset(&mut self) {
        self.inner.reset()
    }
}

/// A message taken from the lane's channel and not handled yet: it comes
/// before anything still in the channel. An entry looked at for a batch
/// and left out keeps its plan, so that it is planned once.
enum Taken {
    Work(Box<Work>, Option<Box<Result<Plan, PlanError>>>),
    Resume,
}

impl From<ToLane> for Taken {
    fn from(msg: ToLane) -> Taken {
        match msg {
            ToLane::Work(w) => Taken::Work(w, None),
            ToLane::Resume => Taken::Resume,
        }
    }
}

/// What a lane carries from one entry to the next.
struct LaneState<D> {
    lane: usize,
    dir: D,
    planner: Arc<dyn Planner>,
    store: Store,
    reports: mpsc::UnboundedSender<LaneReport>,
    /// An entry failed and the dispatcher has not said to resume yet:
    /// entries are handed back untried.
    stopped: bool,
}

impl<D: Apply> LaneState<D> {
    /// Sends a report; false when the lane must end (a store error, or the
    /// dispatcher is gone). A failure stops the lane until it is told to
    /// resume; "unreachable" also drops the connection.
    fn report(&mut self, report: Result<Report, StoreError>) -> bool {
        if let Ok(Report::Tried {
            outcome: Err(e), ..
        }) = &report
        {
            self.stopped = true;
            if let ApplyError::Retry(_) = e {
                self.dir.reset();
            }
        }
        let fatal = report.is_err();
        self.reports.send((self.lane, report)).is_ok() && !fatal
    }

    /// Applies one entry (with its plan, if it was made already), or hands
    /// it back while the lane is stopped, and reports it.
    async fn one(&mut self, work: Box<Work>, plan: Option<Result<Plan, PlanError>>) -> bool {
        let report = if self.stopped {
            Ok(Report::Returned(work))
        } else {
            apply_one(&mut self.dir, &self.planner, &self.store, *work, plan).await
        };
        self.report(report)
    }
}

/// How many entries one combined member modify carries at most.
const BATCH_ENTRIES: usize = 256;
/// How many member values (of its largest member attribute) one combined
/// member modify carries at most; an entry that would go past it waits
/// for the next one.
const BATCH_VALUES: usize = 1000;

/// Whether an entry may take part in a combined member modify: a
/// member-only change of a group, never refused before (a retried entry
/// goes alone, so that its refusals are its own).
fn joins_batches(work: &Work) -> bool {
    let e = &work.entry;
    e.kind == Kind::Group
        && e.op == Op::Upsert
        && work.refusals == 0
        && e.password_file.is_none()
        && e.members.as_ref().is_some_and(|m| m.only_members)
}

/// One lane: applies the entries it is given in order on its connection
/// and reports each. After a failure (parked, or the directory could not
/// be reached) it hands entries back untried until it is told to resume.
///
/// Consecutive member-only changes of one group waiting in the channel
/// leave as one modify ([`apply_batch`]).
async fn lane_task<D: Apply>(
    lane: usize,
    dir: D,
    planner: Arc<dyn Planner>,
    store: Store,
    mut rx: mpsc::UnboundedReceiver<ToLane>,
    reports: mpsc::UnboundedSender<LaneReport>,
) {
    let mut st = LaneState {
        lane,
        dir,
        planner,
        store,
        reports,
        stopped: false,
    };
    // Taken from the channel while looking for a batch, not handled yet.
    let mut taken: VecDeque<Taken> = VecDeque::new();
    loop {
        let msg = match taken.pop_front() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m.into(),
                None => return,
            },
        };
        let (work, plan) = match msg {
            Taken::Resume => {
                st.stopped = false;
                continue;
            }
            Taken::Work(w, p) => (w, p.map(|p| *p)),
        };
        if st.stopped || !joins_batches(&work) {
            if !st.one(work, plan).await {
                return;
            }
            continue;
        }
        let plan = plan.unwrap_or_else(|| st.planner.plan(&work.entry));
        // The changes of the same group right behind it, as far as they
        // merge. Merging starts only once a second one is there, so that a
        // lone change (or one big change) costs nothing more.
        let mut merged: Option<MergedMembers> = None;
        let mut batch = vec![(work, plan)];
        while batch.len() < BATCH_ENTRIES {
            let next = match taken.pop_front() {
                Some(m) => m,
                None => match rx.try_recv() {
                    Ok(m) => m.into(),
                    Err(_) => break,
                },
            };
            let Taken::Work(w, p) = next else {
                taken.push_front(next);
                break;
            };
            if !joins_batches(&w) || w.entry.id != batch[0].0.entry.id {
                taken.push_front(Taken::Work(w, p));
                break;
            }
            if merged.is_none() {
                merged = match &batch[0].1 {
                    Ok(Plan::Group(g)) if delta_values(g) < BATCH_VALUES => MergedMembers::start(g),
                    _ => None,
                };
            }
            let Some(m) = merged.as_mut() else {
                taken.push_front(Taken::Work(w, p));
                break;
            };
            let p = p.map_or_else(|| st.planner.plan(&w.entry), |p| *p);
            let fits = match &p {
                Ok(Plan::Group(g)) => m.values() + delta_values(g) <= BATCH_VALUES && m.absorb(g),
                _ => false,
            };
            if !fits {
                taken.push_front(Taken::Work(w, Some(Box::new(p))));
                break;
            }
            batch.push((w, p));
        }
        let going_on = match merged {
            Some(m) if batch.len() > 1 => apply_batch(&mut st, batch, m.into_plan()).await,
            _ => {
                let (w, p) = batch.pop().expect("one entry");
                st.one(w, Some(p)).await
            }
        };
        if !going_on {
            return;
        }
    }
}

/// Applies consecutive member-only changes of one group as one modify
/// (`plan`, their merged deltas). On success each entry is recorded as
/// applied and reported, in order. If the directory refuses the combined
/// modify, the entries are applied one by one as usual, so that a bad
/// member is refused (and parked) alone; if it cannot be reached, the
/// lane stops as after any entry. False when the lane must end.
async fn apply_batch<D: Apply>(
    st: &mut LaneState<D>,
    batch: Vec<(Box<Work>, Result<Plan, PlanError>)>,
    plan: GroupPlan,
) -> bool {
    let first = &batch[0].0.entry;
    let (kind, id) = (first.kind, first.id.clone());
    let values = delta_values(&plan);
    let link = match st.store.link(kind, &id) {
        Ok(l) => l,
        Err(e) => return st.report(Err(e)),
    };
    let last = batch.last().map(|(w, _)| &w.entry).unwrap_or(first);
    let full = || st.planner.full_members(last);
    let plan = Plan::Group(plan);
    let outcome = st.dir.apply(&plan, link.as_ref(), &full).await;
    match outcome {
        Ok(new_link) => {
            debug!(lane = st.lane, id = %id, entries = batch.len(), values, first_seq = batch[0].0.entry.seq, last_seq = last.seq, "member changes of one group applied in one modify");
            for (work, _) in batch {
                let entry = work.entry;
                if let Err(e) = st.store.mark_applied(&entry, new_link.as_ref()) {
                    return st.report(Err(e));
                }
                let report = Report::Tried {
                    seq: entry.seq,
                    resource: (entry.kind, entry.id),
                    op: "group",
                    outcome: Ok(new_link.clone()),
                };
                if !st.report(Ok(report)) {
                    return false;
                }
            }
            true
        }
        Err(ApplyError::Retry(message)) => {
            // As for one entry: the first is reported unreachable, the
            // lane stops and hands the others back.
            let mut batch = batch.into_iter();
            let (work, _) = batch.next().expect("a batch has entries");
            let report = Report::Tried {
                seq: work.entry.seq,
                resource: (kind, id),
                op: "group",
                outcome: Err(ApplyError::Retry(message)),
            };
            if !st.report(Ok(report)) {
                return false;
            }
            for (work, plan) in batch {
                if !st.one(work, Some(plan)).await {
                    return false;
                }
            }
            true
        }
        Err(e) => {
            debug!(lane = st.lane, id = %id, entries = batch.len(), error = %e.message(), "the directory refused member changes of one group in one modify; applying them one by one");
            for (work, plan) in batch {
                if !st.one(work, Some(plan)).await {
                    return false;
                }
            }
            true
        }
    }
}

/// Plans one entry (unless its plan was made already), applies it and
/// records the outcome in the store.
async fn apply_one<D: Apply>(
    dir: &mut D,
    planner: &Arc<dyn Planner>,
    store: &Store,
    Work {
        mut entry,
        refusals,
        ..
    }: Work,
    plan: Option<Result<Plan, PlanError>>,
) -> Result<Report, StoreError> {
    let resource = (entry.kind, entry.id.clone());
    let seq = entry.seq;
    // The password the entry carried, if the store still holds it (it
    // forgets it once the entry is applied: a replay sends none).
    if entry.password_file.is_some() {
        entry.password = store.pending_password(&entry)?;
    }
    let plan = match plan.unwrap_or_else(|| planner.plan(&entry)) {
        Ok(p) => p,
        Err(e) => {
            let message = e.to_string();
            park(store, &entry, None, &message)?;
            return Ok(Report::Tried {
                seq,
                resource,
                op: "plan",
                outcome: Err(ApplyError::Park {
                    code: None,
                    message,
                }),
            });
        }
    };
    let op = match plan {
        Plan::Delete { .. } => "delete",
        Plan::Group(_) => "group",
        Plan::Upsert(_) => "upsert",
    };
    let link = store.link(entry.kind, &entry.id)?;
    let full = || planner.full_members(&entry);
    let mut outcome = dir.apply(&plan, link.as_ref(), &full).await;
    // Refused once too often: parked with the directory's answer.
    if let Err(ApplyError::Refused { code, message }) = &outcome {
        if refusals + 1 >= MAX_REFUSALS {
            outcome = Err(ApplyError::Park {
                code: Some(*code),
                message: message.clone(),
            });
        } else {
            warn!(seq, kind = entry.kind.name(), id = %entry.id, code, error = %message, attempt = refusals + 1, "the directory refused this entry; trying it again shortly, the other writes go on");
        }
    }
    match &outcome {
        Err(ApplyError::Retry(_)) | Err(ApplyError::Refused { .. }) => {}
        Err(ApplyError::Park { code, message }) => {
            park(store, &entry, *code, message)?;
        }
        Ok(new_link) => {
            store.mark_applied(&entry, new_link.as_ref())?;
            debug!(seq = entry.seq, kind = entry.kind.name(), id = %entry.id, "applied");
        }
    }
    Ok(Report::Tried {
        seq,
        resource,
        op,
        outcome,
    })
}

/// Parks an entry, with a log line that says what to do.
pub(super) fn park(
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
