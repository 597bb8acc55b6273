//! Windowed aggregation (TUMBLE, HOP, CUMULATE): groups by window and key, fires each window
//! once when the watermark passes its end; open windows are part of every checkpoint, so
//! they survive a restart without re-reading their input.

use datafusion::arrow::array::RecordBatch;

use super::{OpContext, Operator};
use crate::aggregate::WindowAggregate;
use crate::error::Result;
use crate::state::TaskState;

pub struct WindowAggregateOp {
    op: u32,
    inner: WindowAggregate,
}

impl WindowAggregateOp {
    pub fn new(op: u32, inner: WindowAggregate) -> Self {
        WindowAggregateOp { op, inner }
    }
}

impl Operator for WindowAggregateOp {
    fn name(&self) -> String {
        "window_aggregate".into()
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
