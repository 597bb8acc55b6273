//! Session windows: per key, sessions that merge as events bridge them, each fired once when
//! the watermark passes its end; open sessions are part of every checkpoint.

use datafusion::arrow::array::RecordBatch;

use super::{OpContext, Operator};
use crate::error::Result;
use crate::session::SessionAggregate;
use crate::state::TaskState;

pub struct SessionAggregateOp {
    op: u32,
    inner: SessionAggregate,
}

impl SessionAggregateOp {
    pub fn new(op: u32, inner: SessionAggregate) -> Self {
        SessionAggregateOp { op, inner }
    }
}

impl Operator for SessionAggregateOp {
    fn name(&self) -> String {
        "session_aggregate".into()
    }

    fn process(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        ctx: &mut OpContext<'_>,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let before = self.inner.late_rows();
        self.inner.process(&batch, None)?;
        ctx.counters.late_records_dropped += self.inner.late_rows() - before;
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: i64,
        _ctx: &mut OpContext<'_>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.inner.on_watermark(watermark, out)
    }

    fn snapshot(&mut self, state: &mut TaskState) -> Result<()> {
        self.inner.snapshot(self.op, state)
    }

    fn restore(&mut self, state: &TaskState) -> Result<()> {
        self.inner.restore(self.op, state)
    }

    fn open_windows(&self) -> usize {
        self.inner.open_windows()
    }
}
