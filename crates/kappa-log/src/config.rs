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
        }
    }
}
