//! What the runtime needs of a source and of a sink. A source task drives a [`Source`] (the
//! Kafka topic reader today; connectors add files, databases, HTTP); a task that ends the
//! dataflow writes to a [`Sink`].

use std::time::Duration;

use datafusion::arrow::array::RecordBatch;

use crate::error::Result;

/// Rows a source read from one of its splits (a Kafka partition).
pub struct SplitBatch {
    /// The split's index among the task's splits (see [`Source::splits`]).
    pub split: usize,
    /// The table's columns; `None` when the split delivered only records without a row
    /// (tombstones, records that did not decode).
    pub batch: Option<RecordBatch>,
}

/// A source of one table, read by one task: it owns some of the table's splits.
pub trait Source: Send {
    /// The number of splits this task reads; watermarks are kept per split.
    fn splits(&self) -> usize;

    /// Reads up to `max` records, waiting at most `wait` for the first, decoded into the
    /// table's columns, in each split's order. Records that do not decode go where the table
    /// says (the dead-letter topic, skipped, or an error that fails the pipeline).
    fn poll(&mut self, max: usize, wait: Duration, out: &mut Vec<SplitBatch>) -> Result<()>;

    /// Where reading resumes after the records polled so far, per split id: what a
    /// checkpoint records.
    fn positions(&self) -> Vec<(i32, i64)>;
}

/// The end of a dataflow. `write` is called with every output batch; a checkpoint's barrier
/// calls `prepare_commit` once everything before it is written, and `commit` follows when
/// that checkpoint has completed (a file sink renames its in-progress files then). The Kafka
/// sink writes inside the pipeline's transaction, which the coordinator commits, so both
/// are no-ops there.
pub trait Sink: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;

    fn prepare_commit(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }

    fn commit(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }
}
