//! What the writer applied last: the latest entry marked applied (seq,
//! resource, time), kept under `mapplied` in the same batch as the mark,
//! so that `scim2ldap status` shows it with the daemon stopped too; and a
//! count of entries applied since the store was opened, for the status
//! page's applied-per-minute chart.
//!
//! Knows journal entries only; never what applying one meant.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::keys::META_LAST_APPLIED;
use super::{decode, encode, now_rfc3339, Kind, Store, StoreError};
use crate::journal::JournalEntry;

/// The latest journal entry marked applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastApplied {
    pub seq: u64,
    pub kind: Kind,
    pub id: String,
    /// RFC 3339 time it was marked applied.
    pub at: String,
}

/// Adds the `mapplied` record for `entry` to `batch` (with the mark).
pub(super) fn record_into(batch: &mut sled::Batch, entry: &JournalEntry) -> Result<(), StoreError> {
    let rec = LastApplied {
        seq: entry.seq,
        kind: entry.kind,
        id: entry.id.clone(),
        at: now_rfc3339(),
    };
    batch.insert(
        META_LAST_APPLIED.to_vec(),
        encode(&rec, || "last applied".into())?,
    );
    Ok(())
}

impl Store {
    /// The latest entry marked applied, if any ever was.
    pub fn last_applied(&self) -> Result<Option<LastApplied>, StoreError> {
        match self.inner.tree.get(META_LAST_APPLIED)? {
            None => Ok(None),
            Some(v) => decode(&v, || "last applied".into()).map(Some),
        }
    }

    /// Entries marked applied since this store was opened.
    pub fn applied_count(&self) -> u64 {
        self.inner.applied.load(Ordering::Relaxed)
    }

    /// Counts one entry marked applied.
    pub(super) fn count_applied(&self) {
        self.inner.applied.fetch_add(1, Ordering::Relaxed);
    }
}
