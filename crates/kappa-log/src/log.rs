//! The partition log: an ordered set of segments, appends with offset assignment, reads,
//! group-committed fsync, retention and crash recovery.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::batch::ControlType;
use crate::batch::{self, BatchHeader};
use crate::direct::{AlignedBuf, OwnedRecords};
use crate::producer_state::{self, ProducerState, SequenceCheck};
use crate::segment::{read_batches, PendingWrite, Segment};
use crate::txn_index::AbortedTxn;
use crate::{LogConfig, LogError, Result, TimestampType};

const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const LOG_START_FILE: &str = "log-start-offset";
/// Appended bytes a partition may hold in memory before an append waits to write them: what
/// bounds memory when appends outrun the disk and nobody waits for their writes (acks=0).
const MAX_PENDING_BYTES: u64 = 32 << 20;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp for LogAppendTime topics, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    pub records: i64,
    pub bytes: usize,
    /// The batches were a producer's retry of batches already written (idempotence): nothing
    /// was appended and the offsets are those of the first write.
    pub duplicate: bool,
    /// The records are written from the memory they were read into, without a copy
    /// ([`Log::append_owned`]).
    pub uncopied: bool,
}

/// A stretch of a segment file holding whole batches. It stays valid after the log's lock is
/// released because bytes below a segment's size are never rewritten in place: retention and
/// deletion unlink files, the cleaner renames a new file over the old, and the open handle
/// keeps the old bytes.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<std::fs::File>,
    pub position: u64,
    pub len: u64,
}

impl FileSlice {
    /// Whether reading the stretch would not wait for the disk, judged by five bytes spread
    /// over it: a log is written and read in order, so its pages are cached or not in long
    /// runs. Its ends alone would not do: finding the stretch read the batch headers there.
    /// Where the kernel cannot tell (no `RWF_NOWAIT`), it answers yes. A miss may start the
    /// kernel's readahead (without waiting for it), which the read that follows wants anyway.
    pub fn in_page_cache(&self) -> bool {
        self.len == 0
            || (0..4)
                .map(|quarter| self.position + self.len * quarter / 4)
                .chain([self.position + self.len - 1])
                .all(|at| page_cached(&self.file, at))
    }
}

/// Whether reading the byte at `at` would not wait for the disk (`preadv2` with `RWF_NOWAIT`;
/// yes where the kernel cannot tell).
pub(crate) fn page_cached(file: &std::fs::File, at: u64) -> bool {
    let mut byte = [0u8; 1];
    !matches!(
        rustix::io::preadv2(
            file,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            at,
            rustix::io::ReadWriteFlags::NOWAIT,
        ),
        Err(rustix::io::Errno::AGAIN)
    )
}

/// A stretch of whole batches a read found: in a segment file, or (the newest records, with
/// direct writes) in the partition's tail cache.
#[derive(Debug, Clone)]
pub enum LogSlice {
    File(FileSlice),
    Memory(bytes::Bytes),
}

impl LogSlice {
    pub fn len(&self) -> u64 {
        match self {
            LogSlice::File(f) => f.len,
            LogSlice::Memory(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whole batches found in the log, not yet read: see [`Log::read_slices`].
#[derive(Debug, Default)]
pub struct FileRead {
    pub slices: Vec<LogSlice>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Where the next read continues: after the last batch found (or the base offset of the
    /// batch that follows it, which differs only across a compaction gap); the requested
    /// offset when nothing was found.
    pub next_offset: i64,
}

impl FileRead {
    /// Bytes of all the slices together.
    pub fn len(&self) -> u64 {
        self.slices.iter().map(LogSlice::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slices' bytes, read into memory.
    pub fn read_to_vec(&self) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; self.len() as usize];
        let mut at = 0;
        for slice in &self.slices {
            let end = at + slice.len() as usize;
            match slice {
                LogSlice::File(f) => f.file.read_exact_at(&mut bytes[at..end], f.position)?,
                LogSlice::Memory(b) => bytes[at..end].copy_from_slice(b),
            }
            at = end;
        }
        Ok(bytes)
    }
}

/// Whole batches read from the log.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub bytes: Vec<u8>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

pub(crate) struct LogState {
    pub(crate) segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    pub(crate) config: LogConfig,
    pub(crate) closed: bool,
    /// A write to the file failed: appended bytes may be lost, so the log takes no more
    /// appends (Kafka takes such a log offline too).
    failed: Option<String>,
    producers: ProducerState,
    /// Closed segments ending at or below this offset have been compacted (Kafka's cleaner
    /// checkpoint, kept in memory: after a restart every segment counts as dirty once).
    pub(crate) cleaner_checkpoint: i64,
    /// Files of retired segments and when they are to be removed (`file.delete.delay.ms`).
    pending_deletes: Vec<(i64, PathBuf)>,
    /// The offset after the last transaction marker appended: until the file holds it, the
    /// last stable offset readers see does not move past the transactions markers ended.
    marker_pending_until: i64,
}

impl LogState {
    /// The segment holding `offset` (the last one starting at or before it), then the later ones.
    fn segments_from(&self, offset: i64) -> impl Iterator<Item = &Segment> {
        let later = (
            std::ops::Bound::Excluded(offset),
            std::ops::Bound::Unbounded,
        );
        self.segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(later))
            .map(|(_, segment)| segment)
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }
    fn next_offset(&self) -> i64 {
        self.active().next_offset
    }
    /// (whether the active segment must roll first, whether pending bytes must be written
    /// first) before appending `incoming` bytes.
    fn room_needed(&self, incoming: u64, now_ms: i64) -> (bool, bool) {
        let active = self.active();
        let roll = active.size > 0
            && (active.size + incoming > self.config.segment_bytes
                || now_ms - active.created_ms >= self.config.roll_ms(active.base_offset)
                || active.index_full(self.config.segment_index_bytes));
        (roll, active.pending_bytes() + incoming > MAX_PENDING_BYTES)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(closed_error());
        }
        match &self.failed {
            Some(e) => Err(failed_error(e)),
            None => Ok(()),
        }
    }
    /// First offset of the oldest open transaction, `i64::MAX` when none is open.
    pub(crate) fn first_unstable_offset(&self) -> i64 {
        self.producers.first_unstable_offset().unwrap_or(i64::MAX)
    }
    /// Base offset of the active segment (the one compaction never touches).
    pub(crate) fn active_base(&self) -> i64 {
        self.active().base_offset
    }
}

/// One partition's log. All methods take `&self`; appends serialize on an internal lock,
/// reads hold it only to find positions, and fsyncs are shared by concurrent callers.
///
/// An append lands in memory first ([`Log::append_deferred`]); [`Log::write_pending`] writes
/// everything appended so far to the file in one go, and only then do readers see it. So a
/// reader never sees a record that a crash of the process could take back.
pub struct Log {
    dir: PathBuf,
    state: Mutex<LogState>,
    /// Serializes writes to the file (they must land in order) and holds the spare buffer that
    /// gathers appends while the other one is written. Taken before `state`, never after.
    writer: Mutex<AlignedBuf>,
    flush_lock: Mutex<()>,
    /// Offset below which everything is known to be on disk.
    flushed_offset: AtomicI64,
    /// Offset below which everything is in the file: the high watermark readers see.
    written_offset: AtomicI64,
    /// Mirrors the log end offset for lock-free readers (metrics, fetch wake-ups).
    end_offset: AtomicI64,
    /// First offset of the oldest open transaction (`i64::MAX`: none), for lock-free readers
    /// of the last stable offset.
    first_unstable: AtomicI64,
    /// Wall-clock time of the last fsync (or of the open), for `flush.ms`.
    last_flush_ms: AtomicI64,
}

impl Log {
    /// Opens (or creates) the log in `dir`. After an unclean shutdown the active segment is
    /// read batch by batch, CRC-checked and cut at the first torn or corrupt batch.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log> {
        std::fs::create_dir_all(dir)?;
        crate::cleaner::remove_leftovers(dir)?;
        remove_retired(dir)?;
        let clean_marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = clean_marker.exists();
        let mut bases: Vec<i64> = Vec::new();
        let mut reused_markers = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".reused") {
                reused_markers.push((stem.parse::<i64>().ok(), dir.join(&*name)));
            }
            if let Some(stem) = name.strip_suffix(".log") {
                let base = stem.parse::<i64>().map_err(|_| {
                    LogError::InvalidDirectory(
                        dir.display().to_string(),
                        format!("unexpected file {name}"),
                    )
                })?;
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let last = bases.last().copied();
        // Only the active segment can still hold an expired segment's bytes; a crash during a
        // roll can leave the marker of one that has since been trimmed, or of none.
        for (base, marker) in reused_markers {
            if base.is_none() || base != last {
                std::fs::remove_file(marker)?;
            }
        }
        for base in bases {
            // Rolled segments were fsynced before the next one was created, so only the
            // active one can hold a torn tail.
            let recover = !clean && Some(base) == last;
            let opened = Segment::open(dir, base, recover, config.index_interval_bytes)?;
            if opened.truncated_bytes > 0 {
                tracing::warn!(
                    log = %dir.display(),
                    segment = base,
                    bytes = opened.truncated_bytes,
                    reason = opened.truncation_reason.as_deref().unwrap_or(""),
                    "recovery cut a torn or corrupt tail"
                );
            }
            segments.insert(base, opened.segment);
        }
        let mut log_start_offset = match std::fs::read_to_string(dir.join(LOG_START_FILE)) {
            Ok(s) => s.trim().parse::<i64>().unwrap_or(0),
            Err(_) => 0,
        };
        if segments.is_empty() {
            let base = log_start_offset.max(0);
            segments.insert(base, Segment::create(dir, base, now_ms)?);
            sync_dir(dir)?;
        }
        let first_base = *segments.keys().next().expect("non-empty");
        log_start_offset = log_start_offset.max(first_base);
        let end = segments
            .values()
            .next_back()
            .expect("non-empty")
            .next_offset;
        log_start_offset = log_start_offset.min(end);
        // Producer state: the newest snapshot, then every batch header written after it.
        // Open transactions and the aborted-transaction index of the replayed segments are
        // rebuilt from the markers found on the way, so a torn tail takes its entries along.
        let (snapshot_offset, mut producers) = producer_state::load_snapshot(dir, end)?;
        let replay_from = snapshot_offset.max(log_start_offset);
        for segment in segments.values_mut() {
            if segment.next_offset <= replay_from {
                continue;
            }
            let mut aborted: Vec<AbortedTxn> = segment
                .txn_index
                .entries()
                .iter()
                .filter(|e| e.last_offset < replay_from)
                .copied()
                .collect();
            if let Some(pos) = segment.position_of(replay_from)? {
                segment.for_each_header(pos, |h, kind| {
                    replay_batch(&mut producers, h, kind, &mut aborted);
                })?;
            }
            segment.txn_index.replace(aborted)?;
        }
        producers.truncate_before(log_start_offset);
        let first_unstable = producers.first_unstable_offset().unwrap_or(i64::MAX);
        // What survived a crash may sit only in the page cache: make it durable before it is
        // reported as such (acks=all waits, idempotent retries answered as duplicates).
        segments
            .values()
            .next_back()
            .expect("non-empty")
            .file
            .sync_data()?;
        if clean {
            // The marker must not come back after a power loss, or a torn tail would go unchecked.
            std::fs::remove_file(&clean_marker)?;
            sync_dir(dir)?;
        }
        Ok(Log {
            dir: dir.to_path_buf(),
            state: Mutex::new(LogState {
                segments,
                log_start_offset,
                config,
                closed: false,
                failed: None,
                producers,
                cleaner_checkpoint: 0,
                pending_deletes: Vec::new(),
                marker_pending_until: 0,
            }),
            writer: Mutex::new(AlignedBuf::default()),
            flush_lock: Mutex::new(()),
            flushed_offset: AtomicI64::new(end),
            written_offset: AtomicI64::new(end),
            end_offset: AtomicI64::new(end),
            first_unstable: AtomicI64::new(first_unstable),
            last_flush_ms: AtomicI64::new(now_ms),
        })
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, LogState> {
        self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding the lock leaves the state as consistent as the file: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.lock().config.clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        self.lock().config = config;
    }

    /// Offset the next appended record gets (the log end offset).
    pub fn end_offset(&self) -> i64 {
        self.end_offset.load(Ordering::Acquire)
    }

    /// Offset below which records are in the file and visible to readers (the high
    /// watermark): the end offset once [`Log::write_pending`] has caught up.
    pub fn high_watermark(&self) -> i64 {
        self.written_offset.load(Ordering::Acquire)
    }

    /// The last stable offset: below it every transaction is decided (committed or aborted),
    /// so a read_committed consumer may read up to it. The high watermark when no transaction
    /// is open.
    pub fn last_stable_offset(&self) -> i64 {
        self.high_watermark()
            .min(self.first_unstable.load(Ordering::Acquire))
    }

    /// The aborted transactions a read_committed reader of `from..upper` must drop: those
    /// whose ABORT marker is at or after `from` and whose first record is before `upper`, as
    /// (producer id, first offset), in marker order.
    pub fn aborted_txns(&self, from: i64, upper: i64) -> Vec<(i64, i64)> {
        let state = self.lock();
        let mut out = Vec::new();
        // Markers lie after their transaction's records: a segment past `upper` can still hold
        // the marker of a transaction begun before it. As in Kafka, the search ends at an entry
        // whose marker left the last stable offset at or past `upper`: every transaction begun
        // before `upper` had ended by then.
        for segment in state.segments_from(from) {
            let mut complete = false;
            for e in segment.txn_index.entries() {
                if e.last_offset >= from && e.first_offset < upper {
                    out.push((e.producer_id, e.first_offset));
                }
                complete |= e.last_stable_offset >= upper;
            }
            if complete {
                break;
            }
        }
        out
    }

    /// Every producer's state in this partition (DescribeProducers).
    pub fn producers(&self) -> Vec<producer_state::ProducerEntry> {
        self.lock().producers.entries().cloned().collect()
    }

    /// Offset below which records are fsynced (Kafka's recovery point).
    pub fn durable_offset(&self) -> i64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    /// Whether every append is to be fsynced (`flush = always`).
    pub fn flushes_always(&self) -> bool {
        self.lock().config.flush == crate::FlushPolicy::Always
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.lock().segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    /// Validates every batch in `records` (a produce request's record set), then assigns
    /// offsets and appends them all; on any error nothing is appended. Returns once the
    /// batches are in the file (fsynced too with `flush = always`).
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo> {
        let info = self.append_deferred(records, now_ms)?;
        self.write_pending()?;
        if self.flushes_always() {
            self.flush_to(info.last_offset + 1)?;
        }
        Ok(info)
    }

    /// Like [`Log::append`], but returns once the batches are appended in memory: they reach
    /// the file, and readers, with the next [`Log::write_pending`]. A broker answers acks=1
    /// and acks=all only after that, and meanwhile gathers many appends into one write.
    pub fn append_deferred(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo> {
        self.append_incoming(Incoming::Borrowed(records), now_ms, None)
    }

    /// Appends a transaction marker (a control batch) for `producer_id`'s open transaction in
    /// this partition, as the transaction coordinator asks: the transaction ends here, and an
    /// ABORT goes into the aborted-transaction index. Like [`Log::append_deferred`], it reaches
    /// the file with the next [`Log::write_pending`]. A marker of an epoch older than the
    /// producer's is refused (a stale coordinator's).
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        kind: ControlType,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let batch =
            batch::marker_batch(producer_id, producer_epoch, kind, coordinator_epoch, now_ms);
        self.append_incoming(Incoming::Borrowed(&batch), now_ms, Some(kind))
    }

    /// [`Log::append_deferred`] for records read into memory of their own, placed as
    /// [`Log::records_placement`] asked: when that still holds, they are written from that
    /// memory without a copy.
    pub fn append_owned(&self, records: OwnedRecords, now_ms: i64) -> Result<AppendInfo> {
        self.append_incoming(Incoming::Owned(records), now_ms, None)
    }

    /// Where within a block of memory the records of the next append should start for the
    /// log to write them from there (see [`OwnedRecords::new`]): with direct writes, where the
    /// file ends within its last block.
    pub fn records_placement(&self) -> usize {
        let state = self.lock();
        state.active().placement(state.config.direct_writes)
    }

    fn append_incoming(
        &self,
        incoming: Incoming<'_>,
        now_ms: i64,
        marker: Option<ControlType>,
    ) -> Result<AppendInfo> {
        // compression.type: batches in another codec are re-encoded first (a copy; the
        // records then go the usual way).
        let target = self.lock().config.recompress;
        if let (Some(target), None) = (target, marker) {
            if let Some(reencoded) = crate::recompress::recompress(incoming.bytes(), target)? {
                return self.append_incoming(Incoming::Borrowed(&reencoded), now_ms, None);
            }
        }
        let records = incoming.bytes();
        // Bodies (CRC, record framing) are checked on the staged copy, in `stamp`.
        let mut headers = batch::validate_all_but_body(records)?;
        if marker.is_none() && headers.iter().any(|h| h.is_control()) {
            return Err(LogError::InvalidRecord(
                "control batches are written by the broker, not by producers".into(),
            ));
        }
        self.make_room(records.len() as u64, now_ms)?;
        let mut state = self.lock();
        state.check_open()?;
        let max = state.config.max_message_bytes;
        if let Some(h) = headers.iter().find(|h| h.size > max) {
            return Err(LogError::MessageTooLarge { size: h.size, max });
        }
        // The header bounds the batch's timestamps: its first record's and the largest.
        for h in &headers {
            for ts in [h.base_timestamp, h.max_timestamp] {
                if let Some(why) = state.config.timestamp_out_of_range(ts, now_ms) {
                    return Err(LogError::InvalidTimestamp(why));
                }
            }
        }
        if state.config.cleanup_policy.compacts() {
            let mut at = 0;
            for h in &headers {
                // As Kafka's validator: the first batch with offending records fails the
                // whole append, naming those records by their index within that batch.
                let indices = batch::null_key_indices(&records[at..], h)?;
                if !indices.is_empty() {
                    return Err(LogError::InvalidRecords {
                        reason: "a compacted topic cannot accept a record without a key".into(),
                        indices,
                    });
                }
                at += h.size;
            }
        }
        // Idempotence: every batch must continue its producer's sequence, or repeat one of its
        // last batches exactly (a retry, answered with the first write's offsets).
        let mut duplicates = Vec::new();
        if headers.iter().any(|h| h.producer_id >= 0) {
            let mut overlay: Option<ProducerState> = None;
            for h in &headers {
                let check = overlay.as_ref().unwrap_or(&state.producers).check(h)?;
                if let SequenceCheck::Duplicate(meta) = check {
                    duplicates.push(meta);
                } else if headers.len() > 1 {
                    overlay
                        .get_or_insert_with(|| state.producers.clone())
                        .update(h);
                }
            }
            if !duplicates.is_empty() {
                // Answered as a retry only if it is one, whole: CRCs and all.
                batch::validate_all(records)?;
                if duplicates.len() != headers.len() {
                    return Err(LogError::CorruptBatch(
                        "a request mixes retried and new batches of one producer".into(),
                    ));
                }
                let first = duplicates[0];
                let last = duplicates[duplicates.len() - 1];
                return Ok(AppendInfo {
                    base_offset: first.first_offset,
                    last_offset: last.last_offset,
                    log_append_time: -1,
                    log_start_offset: state.log_start_offset,
                    records: 0,
                    bytes: 0,
                    duplicate: true,
                    uncopied: false,
                });
            }
        }
        let total = records.len();
        let config = state.config.clone();
        let base_offset = state.next_offset();
        let log_append_time = if config.timestamp_type == TimestampType::LogAppendTime {
            now_ms
        } else {
            -1
        };
        let active = state.active_mut();
        if active.size == 0 {
            active.created_ms = now_ms;
        }
        let mut uncopied = false;
        let next = match incoming {
            Incoming::Borrowed(records) => {
                let staged = active.stage(records, config.direct_writes)?;
                match stamp(staged, &mut headers, base_offset, log_append_time) {
                    Ok(next) => next,
                    Err(e) => {
                        active.unstage(total);
                        return Err(e);
                    }
                }
            }
            Incoming::Owned(mut records) => {
                let next = stamp(
                    records.as_mut_slice(),
                    &mut headers,
                    base_offset,
                    log_append_time,
                )?;
                uncopied = active.stage_owned(records, config.direct_writes)?;
                next
            }
        };
        if let Err(e) = active.appended(&headers, config.index_interval_bytes) {
            // The pending bytes and the segment's size now disagree: take the log offline
            // rather than write a file that does not match its indexes.
            state.failed = Some(e.to_string());
            return Err(e);
        }
        for h in &headers {
            if !h.is_control() {
                state.producers.update(h);
                continue;
            }
            let first =
                state
                    .producers
                    .complete_txn(h.producer_id, h.producer_epoch, h.max_timestamp);
            if marker == Some(ControlType::Abort) {
                let entry = AbortedTxn {
                    producer_id: h.producer_id,
                    first_offset: first.unwrap_or(h.base_offset),
                    last_offset: h.base_offset,
                    last_stable_offset: state
                        .producers
                        .first_unstable_offset()
                        .unwrap_or(h.base_offset + 1),
                };
                if let Err(e) = state.active_mut().txn_index.push(entry) {
                    state.failed = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        if marker.is_some() {
            // The transaction ends for readers once its marker is in the file, not before: the
            // last stable offset moves past it then (see `finish_write`).
            state.marker_pending_until = next;
        } else if state.marker_pending_until <= self.high_watermark() {
            self.first_unstable
                .store(state.first_unstable_offset(), Ordering::Release);
        } else {
            // A transaction begun here, behind a marker not yet written.
            self.first_unstable
                .fetch_min(state.first_unstable_offset(), Ordering::AcqRel);
        }
        self.end_offset.store(next, Ordering::Release);
        let records_count = headers.iter().map(|h| h.last_offset_delta as i64 + 1).sum();
        let info = AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time,
            log_start_offset: state.log_start_offset,
            records: records_count,
            bytes: total,
            duplicate: false,
            uncopied,
        };
        Ok(info)
    }

    /// Before an append: rolls the active segment when the append would overfill it or it is
    /// too old, and writes pending bytes when too many wait. Both need the writer lock, which
    /// is taken before the state lock, so this runs before the append takes the state lock.
    fn make_room(&self, incoming: u64, now_ms: i64) -> Result<()> {
        // A statement of its own: the state lock must be released before writing.
        let needed = self.lock().room_needed(incoming, now_ms);
        match needed {
            (false, false) => return Ok(()),
            (false, true) => return self.write_pending().map(|_| ()),
            (true, _) => {}
        }
        let mut spare = self.lock_writer();
        let mut state = self.lock();
        state.check_open()?;
        if state.room_needed(incoming, now_ms).0 {
            self.write_locked(&mut state, &mut spare)?;
            if let Err(e) = self.roll(&mut state, now_ms) {
                state.failed = Some(e.to_string());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether appending `incoming` bytes now means file I/O first (a segment roll, or a
    /// write of a full buffer), so that a caller on an async runtime can append elsewhere.
    pub fn needs_room(&self, incoming: usize, now_ms: i64) -> bool {
        let (roll, write) = self.lock().room_needed(incoming as u64, now_ms);
        roll || write
    }

    fn lock_writer(&self) -> MutexGuard<'_, AlignedBuf> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes everything appended so far to the file, where readers find it, and returns the
    /// high watermark. Appends go on meanwhile (into the other buffer); concurrent callers
    /// write one after the other.
    pub fn write_pending(&self) -> Result<i64> {
        let mut spare = self.lock_writer();
        let job = {
            let mut state = self.lock();
            if let Some(e) = &state.failed {
                return Err(failed_error(e));
            }
            state.active_mut().take_pending(&mut spare)
        };
        if let Some(mut job) = job {
            let written = job.write();
            self.finish_write(&mut self.lock(), job, written, &mut spare)?;
        }
        Ok(self.high_watermark())
    }

    /// [`Log::write_pending`] for callers that hold both locks (roll, close).
    fn write_locked(&self, state: &mut LogState, spare: &mut AlignedBuf) -> Result<()> {
        if let Some(mut job) = state.active_mut().take_pending(spare) {
            let written = job.write();
            self.finish_write(state, job, written, spare)?;
        }
        Ok(())
    }

    fn finish_write(
        &self,
        state: &mut LogState,
        job: PendingWrite,
        written: Result<bool>,
        spare: &mut AlignedBuf,
    ) -> Result<()> {
        let direct_ok = match written {
            Ok(direct_ok) => direct_ok,
            Err(e) => {
                tracing::error!(log = %self.dir.display(), error = %e, "write failed; the log takes no more appends");
                state.failed = Some(e.to_string());
                return Err(e);
            }
        };
        let cache_bytes = state.config.tail_cache_bytes;
        let next_offset = job.next_offset;
        *spare = match state.segments.get_mut(&job.base_offset) {
            Some(segment) => segment.written_through(job, direct_ok, cache_bytes),
            None => job.into_buffer(),
        };
        self.written_offset.fetch_max(next_offset, Ordering::AcqRel);
        if state.marker_pending_until <= next_offset {
            self.first_unstable
                .store(state.first_unstable_offset(), Ordering::Release);
        }
        Ok(())
    }

    fn roll(&self, state: &mut LogState, now_ms: i64) -> Result<()> {
        // Make the old segment durable first: recovery relies on only the active one being torn.
        state.active_mut().seal_time_index()?;
        state.active_mut().trim()?;
        state.active().flush()?;
        let base = state.next_offset();
        producer_state::write_snapshot(&self.dir, base, &state.producers)?;
        let segment = match self.take_expired_for_reuse(state, now_ms)? {
            Some(expired) => Segment::reuse(expired, &self.dir, base, now_ms)?,
            None => Segment::create(&self.dir, base, now_ms)?,
        };
        state.segments.insert(base, segment);
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// At a roll: the oldest segment, out of the log, when retention is due to delete it and
    /// nothing reads its file any more, for the new segment to reuse its file. The periodic
    /// retention deletes what else has expired.
    fn take_expired_for_reuse(&self, state: &mut LogState, now_ms: i64) -> Result<Option<Segment>> {
        if !state.config.reuse_segment_files
            || !state.config.cleanup_policy.deletes()
            || state.segments.len() < 2
        {
            return Ok(None);
        }
        let total: i64 = state.segments.values().map(|s| s.size as i64).sum();
        let (&base, oldest) = state.segments.iter().next().expect("non-empty");
        // Readers (fetches being sent, fsyncs) hold the file through clones of its handle.
        if Arc::strong_count(&oldest.file) > 1 || !state.config.expires(oldest, total, now_ms) {
            return Ok(None);
        }
        let expired = state.segments.remove(&base).expect("present");
        self.move_log_start(state, expired.next_offset)?;
        Ok(Some(expired))
    }

    /// Makes everything below `offset` durable, writing pending appends first. Concurrent
    /// callers share one fsync: whoever holds the flush lock syncs all data written so far,
    /// the others find their data covered. Whether this call fsynced.
    pub fn flush_to(&self, offset: i64) -> Result<bool> {
        if self.flushed_offset.load(Ordering::Acquire) >= offset {
            return Ok(false);
        }
        if self.high_watermark() < offset {
            self.write_pending()?;
        }
        let _guard = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.flushed_offset.load(Ordering::Acquire) >= offset {
            return Ok(false);
        }
        let (file, end) = {
            let state = self.lock();
            (Arc::clone(&state.active().file), self.high_watermark())
        };
        // Older segments were synced when they were rolled.
        if let Err(e) = file.sync_data() {
            // What the page cache held may be gone (Linux drops the dirty pages of a failed
            // writeback), so acknowledging later appends would hide a hole.
            self.lock().failed = Some(e.to_string());
            return Err(e.into());
        }
        self.flushed_offset.fetch_max(end, Ordering::AcqRel);
        self.last_flush_ms.store(wall_clock_ms(), Ordering::Release);
        Ok(true)
    }

    /// Whether `flush.messages` or `flush.ms` ask for an fsync now: that many records are not
    /// yet durable, or some have waited that long since the last fsync.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        let unflushed = self.end_offset().saturating_sub(self.durable_offset());
        if unflushed <= 0 {
            return false;
        }
        let (messages, ms) = {
            let state = self.lock();
            (state.config.flush_messages, state.config.flush_ms)
        };
        unflushed >= messages
            || now_ms.saturating_sub(self.last_flush_ms.load(Ordering::Acquire)) >= ms
    }

    /// Whether finding the batches to read from `offset` (up to `max_bytes`) would wait for
    /// the disk: the pages where [`Log::read_slices`] reads batch headers, by the index at
    /// `offset` and at `max_bytes` further on, are probed without waiting.
    pub fn read_would_wait(&self, offset: i64, max_bytes: usize) -> bool {
        let state = self.lock();
        let mut budget = max_bytes as u64;
        for segment in state.segments_from(offset) {
            let (cached, held) = segment.headers_cached(offset, budget);
            if !cached {
                return true;
            }
            budget = budget.saturating_sub(held);
            if budget == 0 {
                break;
            }
        }
        false
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// (at least one batch when `at_least_one`).
    pub fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool) -> Result<ReadResult> {
        let slices = self.read_slices(offset, max_bytes, at_least_one)?;
        Ok(ReadResult {
            bytes: slices.read_to_vec()?,
            high_watermark: slices.high_watermark,
            log_start_offset: slices.log_start_offset,
        })
    }

    /// Finds the whole batches [`Log::read`] would return, as stretches of segment files,
    /// without reading them: a fetch hands them to the socket as they are (sendfile). Batch
    /// boundaries come from the sparse index and a few batch headers, never from the data.
    pub fn read_slices(
        &self,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<FileRead> {
        self.read_slices_below(offset, max_bytes, at_least_one, i64::MAX)
    }

    /// [`Log::read_slices`] of the batches below `upper` only (a batch boundary, such as the
    /// last stable offset for a read_committed fetch).
    pub fn read_slices_below(
        &self,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
        upper: i64,
    ) -> Result<FileRead> {
        let state = self.lock();
        let end = state.next_offset();
        let start = state.log_start_offset;
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        let mut out = FileRead {
            slices: Vec::new(),
            high_watermark: self.high_watermark(),
            log_start_offset: start,
            next_offset: offset,
        };
        let mut budget = max_bytes as u64;
        for segment in state.segments_from(offset) {
            if offset >= upper || segment.base_offset >= upper {
                break;
            }
            let Some(pos) = segment.position_of(offset)? else {
                continue;
            };
            // Where the readable part of this segment ends.
            let stop = match segment.position_of(upper)? {
                Some(stop) => stop,
                None => segment.written,
            };
            if stop <= pos {
                break;
            }
            let available = stop - pos;
            let (mut end_pos, mut next) =
                segment.batches_within(pos, pos.saturating_add(budget).min(stop))?;
            if end_pos == pos && at_least_one && out.slices.is_empty() {
                // Kafka returns the first batch even when it exceeds the limits, so a consumer
                // can always make progress.
                let header = segment.batch_at(pos)?;
                end_pos = pos + (header.size as u64).min(available);
                next = Some(header.last_offset() + 1);
            }
            let (Some(next), true) = (next, end_pos > pos) else {
                break;
            };
            segment.slices(pos, end_pos, &mut out.slices);
            out.next_offset = next;
            budget = budget.saturating_sub(end_pos - pos);
            if end_pos < pos + available || budget == 0 {
                break; // the budget ran out inside this segment
            }
        }
        Ok(out)
    }

    /// Calls `f` with every batch from the log start to the high watermark, in order: its
    /// header and its bytes. Internal topics (committed offsets, transaction state) replay
    /// themselves with it on start.
    pub fn scan_batches(&self, mut f: impl FnMut(&BatchHeader, bytes::Bytes)) -> Result<()> {
        let mut offset = self.log_start_offset();
        let end = self.high_watermark();
        while offset < end {
            let read = self.read(offset, 1 << 20, true)?;
            let bytes = bytes::Bytes::from(read.bytes);
            let before = offset;
            let mut at = 0;
            while at < bytes.len() {
                let Ok(header) = BatchHeader::parse(&bytes[at..]) else {
                    break;
                };
                let one = bytes.slice(at..(at + header.size).min(bytes.len()));
                at += header.size;
                offset = offset.max(header.last_offset() + 1);
                f(&header, one);
            }
            if offset == before {
                break; // nothing readable: never loop on the same offset
            }
        }
        Ok(())
    }

    /// The first batch whose max timestamp is at least `ts`, with its header: the caller finds
    /// the exact record inside it. `None` when every record is older.
    pub fn find_batch_by_time(&self, ts: i64) -> Result<Option<(BatchHeader, Vec<u8>)>> {
        let state = self.lock();
        let start = state.log_start_offset;
        for segment in state.segments.values() {
            if segment.next_offset <= start {
                continue;
            }
            if let Some(pos) = segment.position_of_time(ts, start)? {
                let bytes = read_batches(&segment.file, pos, segment.written, 0, true)?;
                let header = BatchHeader::parse(&bytes)?;
                if header.last_offset() < start {
                    continue;
                }
                return Ok(Some((header, bytes)));
            }
        }
        Ok(None)
    }

    /// The largest timestamp in the log and the offset of the batch that holds it.
    pub fn max_timestamp(&self) -> Option<i64> {
        let state = self.lock();
        state
            .segments
            .values()
            .map(|s| s.max_timestamp)
            .max()
            .filter(|t| *t >= 0)
    }

    /// DeleteRecords: moves the log start offset to `offset` and drops segments wholly below it.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let mut state = self.lock();
        if state.closed {
            return Err(closed_error());
        }
        // As Kafka: up to the high watermark, never into records readers cannot see yet.
        let end = self.high_watermark();
        if offset < 0 || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: state.log_start_offset,
                end,
            });
        }
        if offset > state.log_start_offset {
            state.log_start_offset = offset;
            self.persist_log_start(offset)?;
            self.drop_segments_below(&mut state, offset)?;
            state.producers.truncate_before(offset);
        }
        Ok(state.log_start_offset)
    }

    fn persist_log_start(&self, offset: i64) -> Result<()> {
        let tmp = self.dir.join(format!("{LOG_START_FILE}.tmp"));
        std::fs::write(&tmp, offset.to_string())?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(LOG_START_FILE))?;
        sync_dir(&self.dir)
    }

    fn drop_segments_below(&self, state: &mut LogState, offset: i64) -> Result<usize> {
        let mut dropped = 0;
        loop {
            let mut iter = state.segments.iter();
            let (Some((&base, seg)), Some(_)) = (iter.next(), iter.next()) else {
                break;
            };
            if seg.next_offset > offset {
                break;
            }
            let segment = state.segments.remove(&base).expect("present");
            retire(state, segment, wall_clock_ms())?;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Applies `retention.ms` and `retention.bytes` (when the cleanup policy deletes): whole
    /// closed segments go, oldest first, and the log start offset moves. Returns segments deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let mut state = self.lock();
        // A closed (or deleted) log's directory may already belong to a re-created topic.
        if state.closed {
            return Ok(0);
        }
        purge_retired(&mut state, now_ms);
        if !state.config.cleanup_policy.deletes() {
            return Ok(0);
        }
        let mut total: i64 = state.segments.values().map(|s| s.size as i64).sum();
        let mut deleted = 0;
        let mut new_start = state.log_start_offset;
        while state.segments.len() > 1 {
            let (&base, oldest) = state.segments.iter().next().expect("non-empty");
            if !state.config.expires(oldest, total, now_ms) {
                break;
            }
            total -= oldest.size as i64;
            new_start = new_start.max(oldest.next_offset);
            let segment = state.segments.remove(&base).expect("present");
            retire(&mut state, segment, now_ms)?;
            deleted += 1;
        }
        if deleted > 0 {
            self.move_log_start(&mut state, new_start)?;
        }
        Ok(deleted)
    }

    /// Moves the log start offset up to `offset` (never down), durably.
    fn move_log_start(&self, state: &mut LogState, offset: i64) -> Result<()> {
        if offset > state.log_start_offset {
            state.log_start_offset = offset;
        }
        let start = state.log_start_offset;
        state.producers.truncate_before(start);
        self.persist_log_start(start)
    }

    /// Flushes everything and marks the shutdown clean so the next open skips recovery.
    pub fn close(&self) -> Result<()> {
        let mut spare = self.lock_writer();
        let mut state = self.lock();
        if state.closed {
            return Ok(());
        }
        if state.failed.is_some() {
            // The file may hold part of a write past what was written whole: no clean marker,
            // so that the next start checks the tail batch by batch.
            state.closed = true;
            tracing::warn!(log = %self.dir.display(), "closing a log after a failed write; the next start recovers it");
            return Ok(());
        }
        self.write_locked(&mut state, &mut spare)?;
        state.active_mut().seal_time_index()?;
        state.active_mut().trim()?;
        for segment in state.segments.values() {
            segment.flush()?;
        }
        producer_state::write_snapshot(&self.dir, state.next_offset(), &state.producers)?;
        state.closed = true;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        std::fs::write(&marker, b"")?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Deletes the log's files (topic deletion). The log must not be used afterwards.
    pub fn delete(&self) -> Result<()> {
        let mut state = self.lock();
        state.closed = true;
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

/// Records to append: a request's, copied into the log's write buffer, or in memory of their
/// own that the log may take as it is.
enum Incoming<'a> {
    Borrowed(&'a [u8]),
    Owned(OwnedRecords),
}

impl Incoming<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Incoming::Borrowed(records) => records,
            Incoming::Owned(records) => records.as_slice(),
        }
    }
}

/// Checks each staged batch's body (a copy is checked right after it is made, while its bytes
/// are still in the CPU's cache), then
/// gives it its offsets and, for LogAppendTime, its timestamp. Returns the next offset.
fn stamp(
    staged: &mut [u8],
    headers: &mut [BatchHeader],
    base_offset: i64,
    log_append_time: i64,
) -> Result<i64> {
    let mut next = base_offset;
    let mut pos = 0;
    for header in headers.iter_mut() {
        let bytes = &mut staged[pos..pos + header.size];
        batch::check_body(bytes, header)?;
        batch::set_base_offset(bytes, next);
        if log_append_time >= 0 {
            batch::set_log_append_time(bytes, header.size, log_append_time);
            header.max_timestamp = log_append_time;
        }
        header.base_offset = next;
        next = header.last_offset() + 1;
        pos += header.size;
    }
    Ok(next)
}

impl LogConfig {
    /// Whether retention deletes `oldest` (a closed segment) of a log of `total` bytes.
    fn expires(&self, oldest: &Segment, total: i64, now_ms: i64) -> bool {
        // A closed segment compaction emptied has no timestamp: nothing to keep.
        let expired = self.retention_ms >= 0
            && (oldest.size == 0
                || (oldest.max_timestamp >= 0
                    && now_ms - oldest.max_timestamp > self.retention_ms));
        let over_size =
            self.retention_bytes >= 0 && total - oldest.size as i64 >= self.retention_bytes;
        expired || over_size
    }
}

/// Removes a segment from use: at once, or after `file.delete.delay.ms` (its files renamed
/// `*.deleted` meanwhile; see [`purge_retired`]).
fn retire(state: &mut LogState, segment: Segment, now_ms: i64) -> Result<()> {
    let delay = state.config.file_delete_delay_ms;
    if delay <= 0 {
        return segment.delete();
    }
    let due = now_ms.saturating_add(delay);
    for path in segment.retire()? {
        state.pending_deletes.push((due, path));
    }
    Ok(())
}

/// Removes the files of retired segments whose delay has passed.
fn purge_retired(state: &mut LogState, now_ms: i64) {
    state.pending_deletes.retain(|(due, path)| {
        if *due > now_ms {
            return true;
        }
        match std::fs::remove_file(path) {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "could not remove a deleted segment's file");
                true
            }
        }
    });
}

/// Files of segments retired before a restart: nothing reads them any more.
fn remove_retired(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .to_string_lossy()
            .ends_with(crate::segment::DELETED_SUFFIX)
        {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl Log {
    /// The idempotence state of one producer (epoch and last batches), if it has any.
    pub fn producer(&self, producer_id: i64) -> Option<producer_state::ProducerEntry> {
        self.lock().producers.get(producer_id).cloned()
    }
}

fn failed_error(e: &str) -> LogError {
    LogError::Io(std::io::Error::other(format!(
        "an earlier write to this log failed ({e}); it takes no more appends"
    )))
}

fn closed_error() -> LogError {
    LogError::Io(std::io::Error::other("log is closed"))
}

/// Applies one batch header found while replaying the log to the producer state; an ABORT
/// marker adds its transaction to `aborted`.
fn replay_batch(
    producers: &mut ProducerState,
    header: &BatchHeader,
    kind: Option<ControlType>,
    aborted: &mut Vec<AbortedTxn>,
) {
    if !header.is_control() {
        producers.update(header);
        return;
    }
    let Some(kind) = kind else {
        return;
    };
    let first = producers.complete_txn(
        header.producer_id,
        header.producer_epoch,
        header.max_timestamp,
    );
    if kind == ControlType::Abort {
        aborted.push(AbortedTxn {
            producer_id: header.producer_id,
            first_offset: first.unwrap_or(header.base_offset),
            last_offset: header.base_offset,
            last_stable_offset: producers
                .first_unstable_offset()
                .unwrap_or(header.base_offset + 1),
        });
    }
}
