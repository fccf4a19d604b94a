//! Group commit: writers record the seq they need durable and wait; one
//! thread flushes for all of them, so concurrent requests share one fsync.
//! A flush that fails ends the thread and fails every commit, those
//! waiting and those to come: nothing is acknowledged that may not be on
//! disk, and the daemon learns of it ([`Store::flush_failure`]) to exit.
//!
//! Knows seqs and sled's flush, nothing of what was written.

use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

use super::{Store, StoreError};

/// The flusher thread and what writers share with it. Dropping it stops
/// the thread and joins it, so that the database is closed (and its lock
/// released) when the last handle goes.
pub(super) struct Flusher {
    commit: Arc<GroupCommit>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct GroupCommit {
    state: Mutex<CommitState>,
    wake: Condvar,
    /// What waiting writers watch: how far the disk is, and whether
    /// flushing failed.
    flushed_tx: watch::Sender<Flushed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flushed {
    /// The highest seq known to be on disk.
    upto: u64,
    /// A flush failed: no later seq will ever be on disk.
    failed: bool,
}

struct CommitState {
    wanted: u64,
    stop: bool,
    error: Option<String>,
}

impl Flusher {
    /// Starts the thread; everything up to `flushed` is on disk already.
    pub(super) fn start(db: sled::Db, flushed: u64) -> Result<Flusher, StoreError> {
        Flusher::start_with(
            move || db.flush().map(drop).map_err(|e| e.to_string()),
            flushed,
        )
    }

    /// [`Flusher::start`] with the flush to call (a failing one in tests).
    fn start_with(
        flush: impl FnMut() -> Result<(), String> + Send + 'static,
        flushed: u64,
    ) -> Result<Flusher, StoreError> {
        let (flushed_tx, _) = watch::channel(Flushed {
            upto: flushed,
            failed: false,
        });
        let commit = Arc::new(GroupCommit {
            state: Mutex::new(CommitState {
                wanted: 0,
                stop: false,
                error: None,
            }),
            wake: Condvar::new(),
            flushed_tx,
        });
        let handle = {
            let commit = commit.clone();
            std::thread::Builder::new()
                .name("store-flush".into())
                .spawn(move || flusher(flush, commit))
                .map_err(StoreError::FlusherStart)?
        };
        Ok(Flusher {
            commit,
            thread: Mutex::new(Some(handle)),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        let mut s = self.commit.state.lock().unwrap_or_else(|p| p.into_inner());
        s.stop = true;
        self.commit.wake.notify_all();
        drop(s);
        if let Some(h) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl GroupCommit {
    /// Waits until every write up to `seq` is on disk; an error at once
    /// when a flush has failed, or as soon as one fails.
    async fn wait(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.flushed_tx.subscribe();
        if rx.borrow().upto >= seq {
            return Ok(());
        }
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = &s.error {
                return Err(StoreError::FlushFailed(e.clone()));
            }
            s.wanted = s.wanted.max(seq);
            self.wake.notify_one();
        }
        let flushed = *rx
            .wait_for(|f| f.upto >= seq || f.failed)
            .await
            .map_err(|_| StoreError::FlusherGone)?;
        if flushed.upto >= seq {
            return Ok(());
        }
        Err(StoreError::FlushFailed(
            self.error().unwrap_or_else(|| "unknown error".into()),
        ))
    }

    fn error(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .error
            .clone()
    }

    /// Waits until a flush fails; its error.
    async fn failure(&self) -> String {
        let mut rx = self.flushed_tx.subscribe();
        // The sender lives as long as `self`: the wait ends only on failure.
        let _ = rx.wait_for(|f| f.failed).await;
        self.error().unwrap_or_else(|| "unknown error".into())
    }
}

impl Store {
    /// Waits until every write up to `seq` is on disk. Fails (at once, or
    /// while waiting) once flushing to disk has failed.
    pub async fn commit(&self, seq: u64) -> Result<(), StoreError> {
        self.inner.flusher.commit.wait(seq).await
    }

    /// Why flushing to disk failed, if it did; the store then acknowledges
    /// nothing more.
    pub fn flush_error(&self) -> Option<String> {
        self.inner.flusher.commit.error()
    }

    /// Waits until flushing to disk fails (never, normally); its error.
    pub async fn flush_failure(&self) -> String {
        self.inner.flusher.commit.failure().await
    }

    /// Flushes synchronously (for commands run outside the daemon).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }
}

fn flusher(mut flush: impl FnMut() -> Result<(), String>, commit: Arc<GroupCommit>) {
    let mut flushed = commit.flushed_tx.borrow().upto;
    loop {
        let wanted = {
            let mut s = commit.state.lock().unwrap_or_else(|p| p.into_inner());
            while s.wanted <= flushed && !s.stop {
                s = commit.wake.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.stop {
                return;
            }
            s.wanted
        };
        // Everything up to `wanted` was inserted before it was asked for, so
        // one flush now makes all of it durable, and whatever else arrived.
        match flush() {
            Ok(()) => {
                flushed = wanted;
                commit.flushed_tx.send_modify(|f| f.upto = flushed);
            }
            Err(e) => {
                tracing::error!(error = %e, "flushing the store to disk failed: nothing more is acknowledged");
                let mut s = commit.state.lock().unwrap_or_else(|p| p.into_inner());
                s.error = Some(e);
                drop(s);
                // Wakes every writer waiting on a flush: each gets the error.
                commit.flushed_tx.send_modify(|f| f.failed = true);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    /// A flush that fails once `fail` is set, after the first call.
    fn flaky(fail: Arc<AtomicBool>) -> impl FnMut() -> Result<(), String> + Send + 'static {
        move || {
            if fail.load(Ordering::SeqCst) {
                Err("disk full".into())
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_failed_flush_fails_every_waiting_and_later_commit() {
        let fail = Arc::new(AtomicBool::new(false));
        let f = Arc::new(Flusher::start_with(flaky(fail.clone()), 0).unwrap());
        f.commit.wait(1).await.unwrap();
        fail.store(true, Ordering::SeqCst);
        let waiters: Vec<_> = (2..10)
            .map(|seq| {
                let f = f.clone();
                tokio::spawn(async move { f.commit.wait(seq).await })
            })
            .collect();
        for w in waiters {
            let r = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("a waiter is woken when the flush fails")
                .unwrap();
            assert!(
                matches!(&r, Err(StoreError::FlushFailed(e)) if e == "disk full"),
                "{r:?}"
            );
        }
        // Later commits fail at once; what was on disk before still is.
        assert!(matches!(
            f.commit.wait(20).await,
            Err(StoreError::FlushFailed(_))
        ));
        f.commit.wait(1).await.unwrap();
        assert_eq!(f.commit.error().as_deref(), Some("disk full"));
        let failure = tokio::time::timeout(Duration::from_secs(5), f.commit.failure())
            .await
            .unwrap();
        assert_eq!(failure, "disk full");
    }
}
