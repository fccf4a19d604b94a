//! Group commit: writers record the seq they need durable and wait; one
//! thread flushes for all of them, so concurrent requests share one fsync.
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
    /// The highest seq known to be on disk.
    flushed_tx: watch::Sender<u64>,
}

struct CommitState {
    wanted: u64,
    stop: bool,
    error: Option<String>,
}

impl Flusher {
    /// Starts the thread; everything up to `flushed` is on disk already.
    pub(super) fn start(db: sled::Db, flushed: u64) -> Result<Flusher, StoreError> {
        let (flushed_tx, _) = watch::channel(flushed);
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
                .spawn(move || flusher(db, commit))
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

impl Store {
    /// Waits until every write up to `seq` is on disk.
    pub async fn commit(&self, seq: u64) -> Result<(), StoreError> {
        let commit = &self.inner.flusher.commit;
        let mut rx = commit.flushed_tx.subscribe();
        if *rx.borrow() >= seq {
            return Ok(());
        }
        {
            let mut s = commit.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = &s.error {
                return Err(StoreError::FlushFailed(e.clone()));
            }
            s.wanted = s.wanted.max(seq);
            commit.wake.notify_one();
        }
        rx.wait_for(|f| *f >= seq)
            .await
            .map_err(|_| StoreError::FlusherGone)?;
        Ok(())
    }

    /// Flushes synchronously (for commands run outside the daemon).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }
}

fn flusher(db: sled::Db, commit: Arc<GroupCommit>) {
    let mut flushed = *commit.flushed_tx.borrow();
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
        match db.flush() {
            Ok(_) => {
                flushed = wanted;
                commit.flushed_tx.send_replace(flushed);
            }
            Err(e) => {
                let mut s = commit.state.lock().unwrap_or_else(|p| p.into_inner());
                s.error = Some(e.to_string());
                return;
            }
        }
    }
}
