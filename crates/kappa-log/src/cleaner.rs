//! Log compaction (`cleanup.policy=compact`): keeps the latest record of every key in the
//! closed segments, drops tombstones once `delete.retention.ms` has passed, never changes an
//! offset and never touches the active segment. A segment is rewritten to `<base>.log.cleaned`,
//! fsynced, then renamed over the original: a crash leaves the old or the new file, never a mix.
//! Records of aborted transactions are dropped, and transaction markers once
//! `delete.retention.ms` has passed; nothing at or after an open transaction is touched.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use crate::batch::BatchHeader;
use crate::log::LogState;
use crate::segment::{log_path, read_batches, Segment};
use crate::txn_index::AbortedTxn;
use crate::{Log, LogError, Result};

/// What one cleaning pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

const READ_CHUNK: usize = 4 << 20;

pub(crate) fn cleaned_path(dir: &Path, base: i64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.log.cleaned"))
}

/// Leftovers of a pass interrupted by a crash: the originals are intact, so drop them.
pub(crate) fn remove_leftovers(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(".log.cleaned") {
            tracing::warn!(file = %path.display(), "removing an interrupted compaction's output");
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn codec(header: &BatchHeader) -> Compression {
    match header.compression_codec() {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

fn corrupt(e: impl std::fmt::Display) -> LogError {
    LogError::CorruptBatch(e.to_string())
}

/// Calls `f` with every whole batch (its header and bytes) of a closed segment.
fn for_each_batch(
    file: &File,
    size: u64,
    mut f: impl FnMut(&BatchHeader, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut pos = 0u64;
    while pos < size {
        let chunk = read_batches(file, pos, size, READ_CHUNK, true)?;
        if chunk.is_empty() {
            break;
        }
        let mut at = 0;
        while at < chunk.len() {
            let header = BatchHeader::parse(&chunk[at..])?;
            f(&header, &chunk[at..at + header.size])?;
            at += header.size;
        }
        pos += chunk.len() as u64;
    }
    Ok(())
}

impl Log {
    /// One compaction pass over the cleanable segments, when they are dirty enough (see
    /// [`cleanable`]).
    pub fn clean(&self, now_ms: i64) -> Result<CleanStats> {
        let (closed, cleaned_to, delete_retention_ms, aborted) = {
            let state = self.lock_state();
            if state.closed || !state.config.cleanup_policy.compacts() {
                return Ok(CleanStats::default());
            }
            let Some((closed, cleaned_to)) = cleanable(&state, now_ms) else {
                return Ok(CleanStats::default());
            };
            let aborted: Vec<AbortedTxn> = state
                .segments
                .values()
                .flat_map(|s| s.txn_index.entries().iter().copied())
                .collect();
            (
                closed,
                cleaned_to,
                state.config.delete_retention_ms,
                aborted,
            )
        };
        // Records of an aborted transaction are dropped, never taken as a key's latest value.
        let is_aborted = |header: &BatchHeader| {
            header.is_transactional()
                && aborted.iter().any(|a| {
                    a.producer_id == header.producer_id
                        && a.first_offset <= header.base_offset
                        && header.base_offset < a.last_offset
                })
        };
        // The latest offset of every key in the closed segments.
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for (_, file, size) in &closed {
            for_each_batch(file, *size, |header, bytes| {
                if header.is_control() || is_aborted(header) {
                    return Ok(());
                }
                let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(bytes))
                    .map_err(corrupt)?;
                for r in set.records {
                    if let Some(key) = r.key {
                        latest.insert(key, r.offset);
                    }
                }
                Ok(())
            })?;
        }
        let horizon = now_ms.saturating_sub(delete_retention_ms.max(0));
        let mut stats = CleanStats::default();
        for (base, file, size) in closed {
            let mut out: Vec<u8> = Vec::with_capacity(size as usize);
            let mut removed = 0u64;
            for_each_batch(&file, size, |header, bytes| {
                // A marker goes once delete.retention.ms has passed: by then the records of
                // its transaction were cleaned too (aborted ones are dropped below).
                let expired_marker = header.is_control() && header.max_timestamp < horizon;
                if expired_marker || is_aborted(header) {
                    removed += header.record_count.max(0) as u64;
                    return Ok(());
                }
                if header.is_control() {
                    out.extend_from_slice(bytes);
                    return Ok(());
                }
                let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(bytes))
                    .map_err(corrupt)?;
                let total = set.records.len();
                let keep: Vec<_> = set
                    .records
                    .into_iter()
                    // A compressed batch's records carry their own offsets: keep only those inside
                    // the range its header claims, so a rewrite can never move data.
                    .filter(|r| r.offset >= header.base_offset && r.offset <= header.last_offset())
                    .filter(|r| match &r.key {
                        None => true,
                        Some(k) => {
                            let is_latest = latest.get(k) == Some(&r.offset);
                            let expired_tombstone = r.value.is_none() && r.timestamp < horizon;
                            is_latest && !expired_tombstone
                        }
                    })
                    .collect();
                removed += (total - keep.len()) as u64;
                if keep.len() == total {
                    out.extend_from_slice(bytes);
                } else if !keep.is_empty() {
                    let buf = crate::records::encode_batch(&keep, codec(header))?;
                    out.extend_from_slice(&buf);
                }
                Ok(())
            })?;
            if removed == 0 {
                continue;
            }
            if let Err(e) = check_rewrite(&out, base) {
                tracing::error!(log = %self.dir().display(), segment = base, error = %e, "not swapping in an inconsistent cleaned segment");
                continue;
            }
            stats.segments_rewritten += 1;
            stats.records_removed += removed;
            stats.bytes_before += size;
            stats.bytes_after += out.len() as u64;
            let cleaned = cleaned_path(self.dir(), base);
            std::fs::write(&cleaned, &out)?;
            File::open(&cleaned)?.sync_all()?;
            self.swap_in_cleaned(base, size)?;
        }
        let mut state = self.lock_state();
        state.cleaner_checkpoint = state.cleaner_checkpoint.max(cleaned_to);
        Ok(stats)
    }

    /// Replaces segment `base` by its cleaned file, unless retention removed it meanwhile.
    fn swap_in_cleaned(&self, base: i64, expected_size: u64) -> Result<()> {
        let mut state = self.lock_state();
        let cleaned = cleaned_path(self.dir(), base);
        if state.closed {
            // Deleted meanwhile: the directory may belong to a re-created topic now.
            return Ok(());
        }
        if state
            .segments
            .get(&base)
            .is_none_or(|s| s.size != expected_size)
        {
            std::fs::remove_file(&cleaned)?;
            return Ok(());
        }
        let index_interval = state.config.index_interval_bytes;
        let old = state.segments.remove(&base).expect("checked above");
        // Old indexes would point into the old file: remove them first; a crash before the
        // rename then just rebuilds them for the old file.
        old.delete_indexes()?;
        std::fs::rename(&cleaned, log_path(self.dir(), base))?;
        std::fs::File::open(self.dir())?.sync_all()?;
        let mut opened = Segment::open(self.dir(), base, true, index_interval)?;
        opened.segment.seal_time_index()?;
        state.segments.insert(base, opened.segment);
        Ok(())
    }
}

/// A closed segment as a pass reads it: base offset, file, size.
type ClosedSegment = (i64, Arc<File>, u64);

/// The segments a compaction pass rewrites, and the offset it will have cleaned up to; `None`
/// when no pass is due. As Kafka's cleaner: the cleanable segments are the closed ones up to
/// the first holding a record younger than `min.compaction.lag.ms`; a pass is due when those
/// not cleaned yet (dirty) hold at least `min.cleanable.dirty.ratio` of their bytes, or when
/// the oldest dirty record is older than `max.compaction.lag.ms`.
pub(crate) fn cleanable(state: &LogState, now_ms: i64) -> Option<(Vec<ClosedSegment>, i64)> {
    let config = &state.config;
    let active_base = state.active_base();
    let young = now_ms.saturating_sub(config.min_compaction_lag_ms.max(0));
    // As Kafka: nothing at or after the oldest open transaction is cleaned, since whether its
    // records stay is not decided yet.
    let first_unstable = state.first_unstable_offset();
    let segments: Vec<&Segment> = state
        .segments
        .values()
        .filter(|s| s.base_offset != active_base)
        .take_while(|s| config.min_compaction_lag_ms <= 0 || s.max_timestamp <= young)
        .take_while(|s| s.next_offset <= first_unstable)
        .collect();
    let checkpoint = state.cleaner_checkpoint;
    let dirty: Vec<&&Segment> = segments
        .iter()
        .filter(|s| s.next_offset > checkpoint)
        .collect();
    let first_dirty = dirty.first()?;
    let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
    let total_bytes: u64 = segments.iter().map(|s| s.size).sum();
    let ratio = if total_bytes == 0 {
        0.0
    } else {
        dirty_bytes as f64 / total_bytes as f64
    };
    let first_ts = first_dirty.first_timestamp();
    let overdue = first_ts >= 0 && now_ms.saturating_sub(first_ts) > config.max_compaction_lag_ms;
    let dirty_enough = dirty_bytes > 0 && ratio >= config.min_cleanable_dirty_ratio;
    if !dirty_enough && !overdue {
        return None;
    }
    let cleaned_to = segments.last().map(|s| s.next_offset).unwrap_or(checkpoint);
    let closed = segments
        .iter()
        .map(|s| (s.base_offset, Arc::clone(&s.file), s.size))
        .collect();
    Some((closed, cleaned_to))
}

/// The rewritten segment must read back as whole, valid batches with rising offsets from `base`
/// on: recovery would otherwise cut it after the swap.
fn check_rewrite(out: &[u8], base: i64) -> Result<()> {
    let mut at = 0;
    let mut next = base;
    while at < out.len() {
        let header = crate::batch::validate_stored(&out[at..])?;
        if header.base_offset < next {
            return Err(LogError::CorruptBatch(format!(
                "batch at offset {} follows offset {}",
                header.base_offset,
                next - 1
            )));
        }
        next = header.last_offset() + 1;
        at += header.size;
    }
    Ok(())
}
