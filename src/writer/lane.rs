//! The lanes: one task per directory connection, each applying the entries
//! the dispatcher gives it, in order; and the dispatcher's book of what
//! every lane holds.
//!
//! Architecture invariant: a lane decides nothing about order or about
//! what is blocked. It plans the entry it is given, applies it, records the
//! outcome in the store (a later entry of the same resource needs the link
//! the earlier one made) and reports it. After any failure it hands back,
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
use super::plan::{FullMembers, Plan, Planner, Route};
use crate::store::{Failure, JournalEntry, Kind, Link, Store, StoreError};

/// How many entries one lane holds at most (in hand and queued). Small, so
/// that an entry goes to the lane that is free when it is dispatched.
pub(super) const LANE_DEPTH: usize = 8;

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
    /// them, else the least busy; `None` if two lanes hold them, the lane
    /// is full or handing entries back (wait for a report, then ask again).
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
        let lane = match lane {
            Some(l) => l,
            None => (0..self.held.len())
                .filter(|&l| !self.draining[l])
                .min_by_key(|&l| self.held[l].len())?,
        };
        (!self.draining[lane] && self.held[lane].len() < LANE_DEPTH).then_some(lane)
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

/// One lane: applies the entries it is given in order on its connection
/// and reports each. After a failure (parked, or the directory could not
/// be reached) it hands entries back untried until it is told to resume.
async fn lane_task<D: Apply>(
    lane: usize,
    mut dir: D,
    planner: Arc<dyn Planner>,
    store: Store,
    mut rx: mpsc::UnboundedReceiver<ToLane>,
    reports: mpsc::UnboundedSender<LaneReport>,
) {
    let mut stopped = false;
    while let Some(msg) = rx.recv().await {
        let work = match msg {
            ToLane::Resume => {
                stopped = false;
                continue;
            }
            ToLane::Work(w) => w,
        };
        let report = if stopped {
            Ok(Report::Returned(work))
        } else {
            apply_one(&mut dir, &planner, &store, *work).await
        };
        if let Ok(Report::Tried {
            outcome: Err(e), ..
        }) = &report
        {
            stopped = true;
            if let ApplyError::Retry(_) = e {
                dir.reset();
            }
        }
        let fatal = report.is_err();
        if reports.send((lane, report)).is_err() || fatal {
            return;
        }
    }
}

/// Plans one entry, applies it and records the outcome in the store.
async fn apply_one<D: Apply>(
    dir: &mut D,
    planner: &Arc<dyn Planner>,
    store: &Store,
    Work {
        mut entry,
        refusals,
        ..
    }: Work,
) -> Result<Report, StoreError> {
    let resource = (entry.kind, entry.id.clone());
    let seq = entry.seq;
    // The password the entry carried, if the store still holds it (it
    // forgets it once the entry is applied: a replay sends none).
    if entry.holds_password {
        entry.password = store.pending_password(seq)?;
    }
    let plan = match planner.plan(&entry) {
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
