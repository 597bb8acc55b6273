/// Whether the broker or the producer sets record timestamps (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// `cleanup.policy`: delete (retention), compact, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

impl CleanupPolicy {
    pub fn deletes(&self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    pub fn compacts(&self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
}

/// When appended data is fsynced regardless of what the producer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Only when a producer asks for it (acks=all), at segment roll and at close.
    OnDemand,
    /// After every append, whatever the acks.
    Always,
}

/// Per-partition settings, derived from the topic's configs.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// -1: keep forever.
    pub retention_ms: i64,
    /// -1: no size limit.
    pub retention_bytes: i64,
    pub max_message_bytes: usize,
    pub timestamp_type: TimestampType,
    pub cleanup_policy: CleanupPolicy,
    pub index_interval_bytes: u64,
    pub flush: FlushPolicy,
    /// How long compaction keeps tombstones (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// Write appends with `O_DIRECT` where the file system allows it, bypassing the page cache
    /// (see the `direct` module); otherwise through the page cache.
    pub direct_writes: bool,
    /// With direct writes: bytes of the newest records a partition keeps in memory for
    /// consumers at the tail, which the page cache no longer holds.
    pub tail_cache_bytes: u64,
    /// A roll reuses the file of the oldest segment when retention is due to delete it,
    /// overwriting its blocks instead of appending to a new file (see `Segment::reuse`).
    pub reuse_segment_files: bool,
    /// Largest size of a segment's offset or time index (`segment.index.bytes`): a segment
    /// whose index is full rolls.
    pub segment_index_bytes: u64,
    /// Up to this much earlier than `segment_ms` a segment rolls (`segment.jitter.ms`), a
    /// different amount per segment, so that partitions do not all roll at once.
    pub segment_jitter_ms: i64,
    /// The broker fsyncs once this many records are not yet durable (`flush.messages`).
    pub flush_messages: i64,
    /// The broker fsyncs data not yet durable after this long (`flush.ms`).
    pub flush_ms: i64,
    /// Files of deleted segments are renamed `*.deleted` and removed this much later
    /// (`file.delete.delay.ms`), so that readers still using them finish first.
    pub file_delete_delay_ms: i64,
    /// Compaction runs when the closed segments not yet cleaned hold at least this share of
    /// the cleanable bytes (`min.cleanable.dirty.ratio`)...
    pub min_cleanable_dirty_ratio: f64,
    /// ...or when the oldest record not yet cleaned is older than this
    /// (`max.compaction.lag.ms`), which also bounds how long a compacted log's active segment
    /// stays open.
    pub max_compaction_lag_ms: i64,
    /// Segments holding records younger than this are not compacted (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// With CreateTime: a batch with a timestamp more than this before the broker's clock is
    /// refused (`message.timestamp.before.max.ms`).
    pub timestamp_before_max_ms: i64,
    /// With CreateTime: a batch with a timestamp more than this after the broker's clock is
    /// refused (`message.timestamp.after.max.ms`).
    pub timestamp_after_max_ms: i64,
    /// `compression.type` other than `producer`: batches are stored with this codec,
    /// re-encoded on append when the producer used another (as Kafka does). `None`: as sent.
    pub recompress: Option<kafka_protocol::records::Compression>,
}

impl LogConfig {
    /// How long the active segment stays open: `segment.ms`, or `max.compaction.lag.ms` when
    /// that is shorter and the log is compacted (as Kafka's `maxSegmentMs`), less the
    /// segment's jitter.
    pub fn roll_ms(&self, base_offset: i64) -> i64 {
        let max = if self.cleanup_policy.compacts() && self.max_compaction_lag_ms > 0 {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        };
        let bound = self.segment_jitter_ms.min(max);
        if bound <= 0 {
            return max;
        }
        // A fixed pseudo-random jitter per segment: the same after a restart.
        let jitter = (base_offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1;
        max - (jitter % bound as u64) as i64
    }

    /// Why a batch's timestamp `ts` is refused at broker time `now_ms`, if it is.
    pub fn timestamp_out_of_range(&self, ts: i64, now_ms: i64) -> Option<String> {
        // -1 is "no timestamp"; LogAppendTime replaces the producer's.
        if ts == -1 || self.timestamp_type != TimestampType::CreateTime {
            return None;
        }
        let too_old = now_ms.saturating_sub(ts) > self.timestamp_before_max_ms;
        let too_new = ts.saturating_sub(now_ms) > self.timestamp_after_max_ms;
        (too_old || too_new).then(|| {
            format!(
                "Timestamp {ts} of message is out of range. The timestamp should be within [{}, {}]",
                now_ms.saturating_sub(self.timestamp_before_max_ms),
                now_ms.saturating_add(self.timestamp_after_max_ms)
            )
        })
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            cleanup_policy: CleanupPolicy::Delete,
            index_interval_bytes: 4096,
            flush: FlushPolicy::OnDemand,
            delete_retention_ms: 24 * 3600 * 1000,
            direct_writes: false,
            tail_cache_bytes: 4 << 20,
            reuse_segment_files: true,
            segment_index_bytes: 10 << 20,
            segment_jitter_ms: 0,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            // Kafka's default is a minute; the broker passes it. Unit tests want files gone.
            file_delete_delay_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
            max_compaction_lag_ms: i64::MAX,
            min_compaction_lag_ms: 0,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            recompress: None,
        }
    }
}
