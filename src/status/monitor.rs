//! The sampler: a task of the daemon that watches what the status shows
//! over time. Every second it looks whether the writer reaches the
//! directory (so "down since" is right to the second); every 10 s it counts
//! the queue and refreshes systemd's `STATUS=` line when it changed; every
//! minute it adds a [`Sample`] to the [`History`] ring and the minute's
//! adoptions to a 24-hour ring. Everything it keeps is bounded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::{short_line, Activity, Adoptions, History, Sample};
use crate::store::Store;
use crate::writer::WriterHandle;

/// Minutes of adoptions kept: one day.
const DAY_MINUTES: usize = 24 * 60;

/// What the sampler has seen; shared with the status command and page.
#[derive(Debug)]
pub struct Monitor {
    pub activity: Arc<Activity>,
    history: Mutex<History>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The directory's last observed state and since when.
    directory: Option<(bool, SystemTime)>,
    /// Adoptions per minute (unix minute, counts), the last day.
    adoptions: VecDeque<(u64, Adoptions)>,
    /// Adoption totals at the last minute's sample.
    adoption_totals: Adoptions,
    /// The store's applied count at the last minute's sample.
    applied_total: u64,
    /// The latest queue counts (pending without parked, parked).
    counts: (u64, u64),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl Monitor {
    pub fn new(activity: Arc<Activity>) -> Monitor {
        Monitor {
            activity,
            history: Mutex::new(History::default()),
            state: Mutex::new(State::default()),
        }
    }

    /// Records the directory's state as seen at `now`.
    pub fn observe_directory(&self, up: bool, now: SystemTime) {
        let mut s = lock(&self.state);
        match s.directory {
            Some((was, _)) if was == up => {}
            // The first observation: up since the start (the writer starts
            // out assuming it is), down since now.
            None if up => s.directory = Some((true, self.activity.started())),
            _ => s.directory = Some((up, now)),
        }
    }

    /// Since when the directory is `up` (or down), as observed; `None` if
    /// the sampler has not seen that state yet.
    pub fn directory_since(&self, up: bool) -> Option<SystemTime> {
        match lock(&self.state).directory {
            Some((was, since)) if was == up => Some(since),
            None if up => Some(self.activity.started()),
            _ => None,
        }
    }

    /// Records the adoption totals (since start) at `now`: the difference
    /// from the last call goes to the current minute.
    pub fn record_adoptions(&self, totals: Adoptions, now: SystemTime) {
        let minute = unix(now) / 60;
        let mut s = lock(&self.state);
        let delta = Adoptions {
            users: totals.users.saturating_sub(s.adoption_totals.users),
            groups: totals.groups.saturating_sub(s.adoption_totals.groups),
        };
        s.adoption_totals = totals;
        if delta == Adoptions::default() {
            return;
        }
        match s.adoptions.back_mut() {
            Some((m, a)) if *m == minute => {
                a.users += delta.users;
                a.groups += delta.groups;
            }
            _ => {
                if s.adoptions.len() == DAY_MINUTES {
                    s.adoptions.pop_front();
                }
                s.adoptions.push_back((minute, delta));
            }
        }
    }

    /// Adoptions in the 24 hours before `now`.
    pub fn adoptions_last_day(&self, now: SystemTime) -> Adoptions {
        let from = (unix(now) / 60).saturating_sub(DAY_MINUTES as u64);
        let s = lock(&self.state);
        let mut out = Adoptions::default();
        for (m, a) in &s.adoptions {
            if *m > from {
                out.users += a.users;
                out.groups += a.groups;
            }
        }
        out
    }

    /// Records the queue counts; returns the `STATUS=` text if it changed.
    fn record_counts(&self, pending: u64, parked: u64) -> bool {
        let mut s = lock(&self.state);
        let changed = s.counts != (pending, parked);
        s.counts = (pending, parked);
        changed
    }

    /// Adds the minute's sample: the latest counts, and the entries applied
    /// since the last sample (`applied_total`: the store's count).
    pub fn push_minute(&self, applied_total: u64, now: SystemTime) {
        let (pending, parked, applied) = {
            let mut s = lock(&self.state);
            let applied = applied_total.saturating_sub(s.applied_total);
            s.applied_total = applied_total;
            (s.counts.0, s.counts.1, applied)
        };
        lock(&self.history).push(Sample {
            at: unix(now),
            pending,
            parked,
            applied,
        });
    }

    /// The history, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        lock(&self.history).samples()
    }

    /// Entries applied since the last minute's sample (the chart's
    /// unfinished minute).
    pub fn applied_since_sample(&self, applied_total: u64) -> u64 {
        applied_total.saturating_sub(lock(&self.state).applied_total)
    }
}

/// What the sampler reads besides the store and the writer.
pub struct SamplerParts {
    /// Adoption totals since the daemon started (from the metrics).
    pub adoptions: Box<dyn Fn() -> Adoptions + Send + Sync>,
    /// Sends the systemd `STATUS=` line (the text after `STATUS=`).
    pub notify: Box<dyn Fn(&str) + Send + Sync>,
    /// Prefix of the `STATUS=` line (e.g. "serving on 127.0.0.1:8443").
    pub serving: String,
}

/// Runs the sampler until `stop`.
pub async fn run(
    monitor: Arc<Monitor>,
    store: Store,
    writer: WriterHandle,
    parts: SamplerParts,
    mut stop: watch::Receiver<bool>,
) {
    monitor.observe_directory(writer.directory_up(), SystemTime::now());
    monitor.push_minute(store.applied_count(), SystemTime::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    let mut last_line = String::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let now = SystemTime::now();
        let up = writer.directory_up();
        monitor.observe_directory(up, now);
        if n % 10 == 9 {
            // O(1): the store's own counters.
            if let Ok(q) = store.queue_gauges() {
                let (pending, parked) = (q.pending.saturating_sub(q.parked), q.parked);
                monitor.record_counts(pending, parked);
                let line = short_line(pending, parked, up);
                let line = format!("{}; {line}", parts.serving);
                if line != last_line {
                    (parts.notify)(&line);
                    last_line = line;
                }
            }
            monitor.record_adoptions((parts.adoptions)(), now);
        }
        if n % 60 == 59 {
            monitor.push_minute(store.applied_count(), now);
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_state_keeps_its_since() {
        let m = Monitor::new(Arc::new(Activity::default()));
        let start = m.activity.started();
        assert_eq!(m.directory_since(true), Some(start));
        let t1 = start + Duration::from_secs(30);
        m.observe_directory(true, t1);
        assert_eq!(m.directory_since(true), Some(start));
        m.observe_directory(false, t1);
        m.observe_directory(false, t1 + Duration::from_secs(5));
        assert_eq!(m.directory_since(false), Some(t1));
        assert_eq!(m.directory_since(true), None);
    }

    #[test]
    fn adoptions_count_over_the_last_day_only() {
        let m = Monitor::new(Arc::new(Activity::default()));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000 * 60);
        m.record_adoptions(
            Adoptions {
                users: 3,
                groups: 0,
            },
            t0,
        );
        m.record_adoptions(
            Adoptions {
                users: 5,
                groups: 1,
            },
            t0 + Duration::from_secs(3600),
        );
        assert_eq!(
            m.adoptions_last_day(t0 + Duration::from_secs(7200)),
            Adoptions {
                users: 5,
                groups: 1
            }
        );
        // A day and a half later only the second hour's are in the window.
        assert_eq!(
            m.adoptions_last_day(t0 + Duration::from_secs(24 * 3600 + 1800)),
            Adoptions {
                users: 2,
                groups: 1
            }
        );
    }

    #[test]
    fn minute_samples_count_what_was_applied_in_between() {
        let m = Monitor::new(Arc::new(Activity::default()));
        let t = SystemTime::now();
        m.record_counts(4, 1);
        m.push_minute(10, t);
        m.push_minute(25, t + Duration::from_secs(60));
        let h = m.history();
        assert_eq!(h.len(), 2);
        assert_eq!((h[1].pending, h[1].parked, h[1].applied), (4, 1, 15));
        assert_eq!(m.applied_since_sample(27), 2);
    }
}
