//! Producer state of one partition: per producer id, its epoch, the sequence ranges of its
//! last five batches (as Kafka keeps them), so a retried batch is recognised and a gap or an
//! old epoch refused, and the first offset of its open transaction, which holds back the last
//! stable offset. Snapshotted at segment roll and close; after a crash the state is rebuilt
//! from the snapshot plus the batch headers written after it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::BatchHeader;
use crate::LogError;

/// Batches remembered per producer for duplicate detection (Kafka's in-flight limit).
const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// First offset of the producer's transaction that has no marker yet.
    #[serde(default)]
    pub txn_first_offset: Option<i64>,
    /// Timestamp of the producer's last batch (DescribeProducers).
    #[serde(default)]
    pub last_timestamp: i64,
}

/// What the sequence check decided for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or the next expected sequence: append it.
    Append,
    /// Already written: answer with the offsets it got the first time.
    Duplicate(BatchMeta),
}

#[derive(Default, Clone, Debug)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset -> producer id (the smallest key bounds the LSO).
    ongoing: BTreeMap<i64, i64>,
}

/// Kafka's "no sequence": a batch outside idempotence (the broker's own transactional offset
/// commits), checked for its epoch only.
pub const NO_SEQUENCE: i32 = -1;

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

fn last_seq(header: &BatchHeader) -> i32 {
    let last = header.base_sequence as i64 + header.last_offset_delta as i64;
    (last % (i32::MAX as i64 + 1)) as i32
}

impl ProducerState {
    /// Checks one batch against the state (plus batches earlier in the same request, already
    /// applied to `self` by the caller's scratch copy).
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, LogError> {
        if header.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return if header.base_sequence == 0
                || header.base_sequence == NO_SEQUENCE
                || header.is_transactional()
            {
                Ok(SequenceCheck::Append)
            } else {
                Err(LogError::UnknownProducerId(header.producer_id))
            };
        };
        if header.producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.base_sequence == NO_SEQUENCE {
            return Ok(SequenceCheck::Append);
        }
        if header.producer_epoch > entry.epoch {
            // A new epoch restarts the sequence at 0.
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(LogError::OutOfOrderSequence {
                    producer_id: header.producer_id,
                    expected: 0,
                    got: header.base_sequence,
                })
            };
        }
        let last = last_seq(header);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == header.base_sequence && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        let expected = entry
            .batches
            .back()
            .map(|b| next_seq(b.last_seq))
            .unwrap_or(0);
        if header.base_sequence != expected {
            return Err(LogError::OutOfOrderSequence {
                producer_id: header.producer_id,
                expected,
                got: header.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch written at its (assigned) offsets.
    pub fn update(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 || header.is_control() {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
                txn_first_offset: None,
                last_timestamp: -1,
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = header.max_timestamp;
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(header.base_offset);
            self.ongoing.insert(header.base_offset, header.producer_id);
        }
        if header.base_sequence == NO_SEQUENCE {
            return;
        }
        entry.batches.push_back(BatchMeta {
            first_seq: header.base_sequence,
            last_seq: last_seq(header),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        while entry.batches.len() > REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
    }

    /// Whether a transaction marker of `epoch` may be written for `producer_id`: not when the
    /// producer has since moved to a newer epoch (a stale coordinator's marker).
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), LogError> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(LogError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: e.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// A transaction marker of `epoch` was written for `producer_id`: its open transaction (if
    /// any) ends. Returns that transaction's first offset.
    pub fn complete_txn(&mut self, producer_id: i64, epoch: i16, timestamp: i64) -> Option<i64> {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id,
                epoch,
                batches: VecDeque::new(),
                txn_first_offset: None,
                last_timestamp: -1,
            });
        if epoch > entry.epoch {
            // The coordinator bumped the epoch (a fenced or timed-out transaction): the old
            // epoch's batches are refused from now on, and the new one starts at sequence 0.
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = entry.last_timestamp.max(timestamp);
        let first = entry.txn_first_offset.take();
        if let Some(first) = first {
            self.ongoing.remove(&first);
        }
        first
    }

    /// The first offset of the oldest open transaction: the last stable offset is below it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Forgets producers whose every remembered batch lies before `log_start`, unless their
    /// transaction is still open.
    pub fn truncate_before(&mut self, log_start: i64) {
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some()
                || e.batches.back().is_some_and(|b| b.last_offset >= log_start)
        });
    }

    /// Every producer's state (DescribeProducers).
    pub fn entries(&self) -> impl Iterator<Item = &ProducerEntry> {
        self.producers.values()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// The state covers every batch below this offset.
    offset: i64,
    producers: Vec<ProducerEntry>,
}

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Writes the state as of `offset` atomically and drops snapshots older than the last two.
pub(crate) fn write_snapshot(
    dir: &Path,
    offset: i64,
    state: &ProducerState,
) -> Result<(), LogError> {
    let snapshot = Snapshot {
        offset,
        producers: state.producers.values().cloned().collect(),
    };
    let bytes =
        serde_json::to_vec(&snapshot).map_err(|e| LogError::Io(std::io::Error::other(e)))?;
    let tmp = dir.join(format!("{offset:020}.snapshot.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, snapshot_path(dir, offset))?;
    let mut offsets = list_snapshots(dir)?;
    offsets.sort_unstable();
    let keep = offsets.len().saturating_sub(2);
    for old in &offsets[..keep] {
        let _ = std::fs::remove_file(snapshot_path(dir, *old));
    }
    Ok(())
}

fn list_snapshots(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(stem) = name.to_string_lossy().strip_suffix(".snapshot") {
            if let Ok(o) = stem.parse::<i64>() {
                out.push(o);
            }
        }
    }
    Ok(out)
}

/// The newest readable snapshot at or below `end`: (offset it covers, state).
pub(crate) fn load_snapshot(dir: &Path, end: i64) -> Result<(i64, ProducerState), LogError> {
    let mut offsets = list_snapshots(dir)?;
    offsets.sort_unstable();
    for offset in offsets.into_iter().rev().filter(|o| *o <= end) {
        let Ok(bytes) = std::fs::read(snapshot_path(dir, offset)) else {
            continue;
        };
        match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(s) => {
                let producers: HashMap<i64, ProducerEntry> = s
                    .producers
                    .into_iter()
                    .map(|e| (e.producer_id, e))
                    .collect();
                let ongoing = producers
                    .values()
                    .filter_map(|e| e.txn_first_offset.map(|o| (o, e.producer_id)))
                    .collect();
                return Ok((s.offset, ProducerState { producers, ongoing }));
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), offset, error = %e, "ignoring unreadable producer snapshot")
            }
        }
    }
    Ok((0, ProducerState::default()))
}
