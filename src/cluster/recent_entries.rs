//! Log entries appended but not yet applied, kept in memory as appended.
//!
//! openraft 0.9 reads every entry back from the log store twice or more after
//! appending it: once per follower to replicate it (on the leader) and once
//! to apply it (on every node). Read from sled, each is a page lookup, a copy
//! and a decode of the log record, and on the leader the mutations the batch
//! was encoded from are lost, so apply decodes them again. Serving those reads
//! from the entries as they were appended avoids all of that.
//!
//! The entries held are a contiguous run of indexes ending at the last
//! appended entry; the state machine releases them once applied. The run is
//! bounded in entries and bytes, so a leader that cannot commit (no quorum)
//! does not hold its whole backlog in memory: what falls out is still in
//! sled, and reads fall back to it.

use std::collections::VecDeque;

use openraft::EntryPayload;
use parking_lot::Mutex;

use super::types::Entry;

/// Most entries held. Applying keeps up within a few entries; the bounds
/// only matter when it cannot (a leader that lost its quorum, a slow apply).
const MAX_ENTRIES: usize = 256;
/// Most encoded payload bytes held. On the leader an entry also holds the
/// decoded mutations, several times larger: this bounds that too.
const MAX_BYTES: usize = 16 << 20;

#[derive(Default)]
pub struct RecentEntries {
    inner: Mutex<Run>,
}

#[derive(Default)]
struct Run {
    entries: VecDeque<Entry>,
    bytes: usize,
}

fn payload_len(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(p) => p.bytes.len(),
        _ => 0,
    }
}

impl Run {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= payload_len(&e);
        }
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.bytes -= payload_len(&e);
        }
    }
}

impl RecentEntries {
    /// Records entries just appended to the log (in index order).
    pub fn appended<'a>(&self, entries: impl IntoIterator<Item = &'a Entry>) {
        let mut run = self.inner.lock();
        for entry in entries {
            let index = entry.log_id.index;
            // Appends continue the run; anything else (a gap after entries
            // fell out) starts a new one, so the run never has holes.
            if run.entries.back().is_some_and(|last| last.log_id.index + 1 != index) {
                run.entries.clear();
                run.bytes = 0;
            }
            run.bytes += payload_len(entry);
            run.entries.push_back(entry.clone());
            while run.entries.len() > MAX_ENTRIES || (run.bytes > MAX_BYTES && run.entries.len() > 1) {
                run.pop_front();
            }
        }
    }

    /// Entries `start..end` (`end` = None: through the last appended), if
    /// every one of them is held.
    pub fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let run = self.inner.lock();
        let first = run.first_index()?;
        let last = first + run.entries.len() as u64 - 1;
        let end = end.unwrap_or(last + 1);
        if start < first || end > last + 1 {
            return None;
        }
        if end <= start {
            return Some(Vec::new());
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(run.entries.range(from..to).cloned().collect())
    }

    /// The state machine applied everything through `index`: forget it.
    pub fn applied(&self, index: u64) {
        let mut run = self.inner.lock();
        while run.first_index().is_some_and(|i| i <= index) {
            run.pop_front();
        }
    }

    /// The log was truncated from `index` on (conflicting entries removed).
    pub fn truncated(&self, index: u64) {
        let mut run = self.inner.lock();
        while run.entries.back().is_some_and(|e| e.log_id.index >= index) {
            run.pop_back();
        }
    }

    /// The log was purged through `index`.
    pub fn purged(&self, index: u64) {
        self.applied(index)
    }

    #[cfg(test)]
    fn indexes(&self) -> Vec<u64> {
        self.inner.lock().entries.iter().map(|e| e.log_id.index).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::LogPayload;
    use openraft::{CommittedLeaderId, LogId};

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(LogPayload::from_bytes(vec![0u8; bytes].into())),
        }
    }

    #[test]
    fn serves_only_ranges_it_holds_entirely() {
        let recent = RecentEntries::default();
        recent.appended(&[entry(5, 1), entry(6, 1), entry(7, 1)]);
        let got = |s, e| {
            recent
                .get(s, e)
                .map(|v| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>())
        };
        assert_eq!(got(5, Some(8)), Some(vec![5, 6, 7]));
        assert_eq!(got(6, None), Some(vec![6, 7]));
        assert_eq!(got(7, Some(7)), Some(vec![]));
        assert_eq!(got(4, Some(6)), None, "index 4 is not held");
        assert_eq!(got(6, Some(9)), None, "index 8 does not exist here");
    }

    #[test]
    fn applied_entries_are_released() {
        let recent = RecentEntries::default();
        recent.appended(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        recent.applied(2);
        assert_eq!(recent.indexes(), vec![3]);
        recent.purged(3);
        assert!(recent.indexes().is_empty());
    }

    #[test]
    fn truncation_drops_the_conflicting_tail_and_appends_continue() {
        let recent = RecentEntries::default();
        recent.appended(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        recent.truncated(2);
        assert_eq!(recent.indexes(), vec![1]);
        recent.appended(&[entry(2, 1)]);
        assert_eq!(recent.indexes(), vec![1, 2]);
    }

    #[test]
    fn a_gap_starts_a_new_run() {
        let recent = RecentEntries::default();
        recent.appended(&[entry(1, 1), entry(2, 1)]);
        recent.appended(&[entry(9, 1)]);
        assert_eq!(recent.indexes(), vec![9]);
        assert!(recent.get(1, Some(3)).is_none());
    }

    #[test]
    fn the_run_is_bounded_in_entries_and_bytes() {
        let recent = RecentEntries::default();
        let many: Vec<Entry> = (1..=MAX_ENTRIES as u64 + 10).map(|i| entry(i, 1)).collect();
        recent.appended(&many);
        assert_eq!(recent.indexes().len(), MAX_ENTRIES);
        assert_eq!(recent.indexes()[0], 11);

        let recent = RecentEntries::default();
        let big = MAX_BYTES / 2 + 1;
        recent.appended(&[entry(1, big), entry(2, big), entry(3, big)]);
        assert_eq!(recent.indexes(), vec![3], "two halves and a bit exceed the byte bound");
    }
}
