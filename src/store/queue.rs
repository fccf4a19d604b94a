//! The journal's queue gauges for `/metrics`: how many entries are pending
//! (`q` keys) and parked (`f` keys), kept up to date where those keys are
//! written and removed (counted once when the store opens), and the oldest
//! pending entry, found with one seek. Reading them never walks the queue,
//! so a scrape costs the same with a backlog of a million entries.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use super::keys::{seq_key, seq_of, JOURNAL, PARKED, PENDING};
use super::{Store, StoreError};

/// The counts, one per store.
#[derive(Default)]
pub(super) struct QueueCounts {
    pending: AtomicI64,
    parked: AtomicI64,
    /// The oldest pending entry seen last and its acceptance time (Unix
    /// seconds), so that scrapes while it stays the oldest read nothing.
    oldest: Mutex<Option<(u64, f64)>>,
}

impl QueueCounts {
    /// Counts the `q` and `f` keys once (at open).
    pub(super) fn count(tree: &sled::Tree) -> QueueCounts {
        let n = |p: u8| tree.scan_prefix([p]).keys().count() as i64;
        QueueCounts {
            pending: AtomicI64::new(n(PENDING)),
            parked: AtomicI64::new(n(PARKED)),
            oldest: Mutex::new(None),
        }
    }

    /// `n` entries became pending (negative: stopped being pending).
    pub(super) fn pending(&self, n: i64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` entries were parked (negative: un-parked).
    pub(super) fn parked(&self, n: i64) {
        self.parked.fetch_add(n, Ordering::Relaxed);
    }
}

/// What `/metrics` shows of the journal's queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueGauges {
    /// Entries not yet applied, parked ones included.
    pub pending: u64,
    /// Entries the directory refused, waiting for an administrator.
    pub parked: u64,
    /// The oldest pending entry: its seq and when it was accepted (Unix
    /// seconds).
    pub oldest_pending: Option<(u64, f64)>,
}

impl Store {
    /// The queue's gauges, in O(1): counters, and one seek for the oldest
    /// pending entry (whose time is read once per oldest entry).
    pub fn queue_gauges(&self) -> Result<QueueGauges, StoreError> {
        let q = &self.inner.queue;
        let first = match self.inner.tree.scan_prefix([PENDING]).keys().next() {
            Some(k) => Some(seq_of(&k?)),
            None => None,
        };
        let oldest = match first {
            None => None,
            Some(seq) => {
                let mut cached = q.oldest.lock().unwrap_or_else(|p| p.into_inner());
                match *cached {
                    Some((s, at)) if s == seq => Some((s, at)),
                    _ => {
                        let at = self.accepted_at(seq)?.unwrap_or(0.0);
                        *cached = Some((seq, at));
                        Some((seq, at))
                    }
                }
            }
        };
        Ok(QueueGauges {
            // A concurrent skip and apply of one entry may both count it;
            // never show a negative count.
            pending: q.pending.load(Ordering::Relaxed).max(0) as u64,
            parked: q.parked.load(Ordering::Relaxed).max(0) as u64,
            oldest_pending: oldest,
        })
    }

    /// When entry `seq` was accepted, Unix seconds.
    fn accepted_at(&self, seq: u64) -> Result<Option<f64>, StoreError> {
        #[derive(serde::Deserialize)]
        struct At {
            at: String,
        }
        let Some(v) = self.inner.tree.get(seq_key(JOURNAL, seq))? else {
            return Ok(None);
        };
        let at: At = super::decode(&v, || format!("journal {seq}"))?;
        Ok(humantime::parse_rfc3339_weak(&at.at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{now_rfc3339, Change, Failure, Intent, Kind, Link, Store, Write};

    /// The gauges against the truth (walking the keys), after each step.
    fn check(s: &Store, pending: u64, parked: u64, oldest: Option<u64>) {
        let g = s.queue_gauges().unwrap();
        assert_eq!(g.pending, pending, "pending");
        assert_eq!(g.parked, parked, "parked");
        assert_eq!(g.oldest_pending.map(|o| o.0), oldest, "oldest pending");
        assert_eq!(s.pending_count() as u64, pending, "pending (walked)");
        assert_eq!(s.parked().unwrap().len() as u64, parked, "parked (walked)");
        if let Some((_, at)) = g.oldest_pending {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(at > now - 60.0 && at <= now + 1.0, "{at} vs {now}");
        }
    }

    fn user<'a>(id: &'a str, r: &'a mut serde_json::Value, intent: Intent<'a>) -> Write<'a> {
        Write {
            kind: Kind::User,
            id,
            resource: r,
            intent,
            members: None,
        }
    }

    #[test]
    fn gauges_stay_right_through_create_apply_park_retry_skip_delete_and_reopen() {
        let dir = std::env::temp_dir().join(format!("scim2ldap-queue-{}", uuid::Uuid::new_v4()));
        let s = Store::open(&dir).unwrap();
        check(&s, 0, 0, None);
        let a = s
            .write(user("a", &mut json!({"userName": "a"}), Intent::Create))
            .unwrap();
        let b = s
            .write(user("b", &mut json!({"userName": "b"}), Intent::Create))
            .unwrap();
        let c = s
            .write(user("c", &mut json!({"userName": "c"}), Intent::Create))
            .unwrap();
        check(&s, 3, 0, Some(a));
        let link = |id: &str| Link {
            dn: format!("uid={id}"),
            uuid: Some(format!("uuid-{id}")),
            adopted: false,
            applied: None,
        };
        // Apply a: b is the oldest now.
        s.mark_applied(&s.entry(a).unwrap().unwrap(), Some(&link("a")))
            .unwrap();
        check(&s, 2, 0, Some(b));
        // Park b (twice: counted once), retry it, park it again, skip it.
        let f = Failure {
            code: Some(65),
            message: "objectClassViolation".into(),
            at: now_rfc3339(),
        };
        s.mark_failed(b, &f).unwrap();
        s.mark_failed(b, &f).unwrap();
        check(&s, 2, 1, Some(b));
        assert_eq!(s.retry(b).unwrap(), Change::Done);
        assert_eq!(s.retry(b).unwrap(), Change::NotApplicable);
        check(&s, 2, 0, Some(b));
        s.mark_failed(b, &f).unwrap();
        assert_eq!(s.skip(b).unwrap(), Change::Done);
        assert_eq!(s.skip(b).unwrap(), Change::NotApplicable);
        check(&s, 1, 0, Some(c));
        // Park c and apply it anyway (an administrator fixed the directory
        // and the retry went through).
        s.mark_failed(c, &f).unwrap();
        check(&s, 1, 1, Some(c));
        s.mark_applied(&s.entry(c).unwrap().unwrap(), Some(&link("c")))
            .unwrap();
        check(&s, 0, 0, None);
        // A delete journals one entry; adopting one journals none pending.
        let d = s.delete(Kind::User, "a", None).unwrap();
        check(&s, 1, 0, Some(d));
        s.adopt(Kind::User, "z", &mut json!({"userName": "z"}), &link("z"))
            .unwrap();
        check(&s, 1, 0, Some(d));
        // Requeue a..c: a and c again (b stays skipped).
        assert_eq!(s.requeue(a, c).unwrap(), 2);
        check(&s, 3, 0, Some(a));
        // Counted again, the same, after a reopen.
        drop(s);
        let s = Store::open(&dir).unwrap();
        check(&s, 3, 0, Some(a));
        drop(s);
        std::fs::remove_dir_all(dir).ok();
    }
}
