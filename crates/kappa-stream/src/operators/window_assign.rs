//! Window assignment (TUMBLE, HOP, CUMULATE, and SESSION's `[t, t + gap)`): adds
//! `window_start`, `window_end` and `window_time`; with `drop_late`, rows whose every window
//! has fired are dropped and counted.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;

use super::{OpContext, Operator};
use crate::error::Result;
use crate::window::{WindowAssign, WindowKind};

pub struct WindowAssignOp {
    inner: WindowAssign,
}

impl WindowAssignOp {
    pub fn new(kind: WindowKind, time_column: usize, input: &Schema, drop_late: bool) -> Self {
        WindowAssignOp {
            inner: WindowAssign::new(kind, time_column, input, drop_late),
        }
    }
}

impl Operator for WindowAssignOp {
    fn name(&self) -> String {
        format!("window_assign_{}", self.inner.kind.name().to_lowercase())
    }

    fn process(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        ctx: &mut OpContext<'_>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let assigned = self.inner.process(&batch, ctx.watermark)?;
        ctx.counters.late_records_dropped += assigned.late;
        ctx.counters.null_time_dropped += assigned.null_time;
        if let Some(b) = assigned.batch {
            out.push(b);
        }
        Ok(())
    }
}
