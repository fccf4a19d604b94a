//! The last hours in memory, for the status page's charts: one sample per
//! minute (queue depth, parked entries, entries applied during that
//! minute) in a ring of fixed size, so memory stays bounded however long
//! the daemon runs. Lost on restart, on purpose: the store keeps what
//! matters, this is only a picture.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One sample per minute for six hours.
pub const CAPACITY: usize = 6 * 60;

/// One minute of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time (seconds) of the sample, at the end of its minute.
    pub at: u64,
    /// Entries not yet applied (parked ones not included).
    pub pending: u64,
    pub parked: u64,
    /// Entries applied during the minute before `at`.
    pub applied: u64,
}

/// A ring of at most `capacity` samples, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl Default for History {
    fn default() -> History {
        History::with_capacity(CAPACITY)
    }
}

impl History {
    pub fn with_capacity(capacity: usize) -> History {
        History {
            samples: VecDeque::with_capacity(capacity.min(CAPACITY)),
            capacity: capacity.max(1),
        }
    }

    /// Adds a sample; the oldest goes when the ring is full.
    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_samples_and_no_more() {
        let mut h = History::with_capacity(3);
        for i in 0..5 {
            h.push(Sample {
                at: i,
                pending: i,
                parked: 0,
                applied: 1,
            });
        }
        assert_eq!(h.len(), 3);
        assert_eq!(
            h.samples().iter().map(|s| s.at).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        let full = History::default();
        assert_eq!(full.capacity, CAPACITY);
    }
}
