//! kappa-log: durable storage of one Kafka partition.
//!
//! A partition is a directory of segments named by base offset; each segment holds RecordBatch
//! v2 bytes exactly as producers sent them (with broker-assigned offsets), plus a sparse offset
//! index and a time index. The crate knows nothing of the network: it appends, reads, looks
//! up by offset and time, rolls, enforces retention, and recovers a torn tail after a crash.
//! For transactions it keeps the last stable offset, writes the coordinator's markers and
//! indexes aborted transactions per segment.

pub mod batch;
mod cleaner;
mod config;
mod direct;
mod log;
pub mod producer_state;
mod recompress;
pub mod records;
mod segment;
#[cfg(test)]
mod tests;
mod txn_index;
#[cfg(test)]
mod txn_tests;

pub use batch::ControlType;
pub use cleaner::CleanStats;
pub use config::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};
pub use direct::OwnedRecords;
pub use log::{AppendInfo, FileRead, FileSlice, Log, LogSlice, ReadResult};
pub use txn_index::AbortedTxn;

/// Errors of the partition log. Variants map onto Kafka error codes in the broker.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A CreateTime timestamp too far from the broker's clock
    /// (`message.timestamp.before.max.ms` / `message.timestamp.after.max.ms`).
    #[error("{0}")]
    InvalidTimestamp(String),
    /// Some records of a batch are invalid, for `reason`; nothing of the append was written.
    /// `indices`: their positions within the first batch that has any (ascending), which the
    /// broker reports as ProduceResponse `record_errors` (KIP-467).
    #[error("invalid records at batch indices {indices:?}: {reason}")]
    InvalidRecords { reason: String, indices: Vec<usize> },
    #[error("unknown producer id {0}: its state is gone; it must reinitialize")]
    UnknownProducerId(i64),
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("log directory {0} is invalid: {1}")]
    InvalidDirectory(String, String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, LogError>;
