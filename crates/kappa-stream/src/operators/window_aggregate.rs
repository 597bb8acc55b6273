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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{AggregateCall, GroupColumn};
    use crate::operators::OpCounters;
    use crate::state::StateConfig;
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;
    use std::sync::Arc;

    fn ts() -> DataType {
        DataType::Timestamp(TimeUnit::Millisecond, None)
    }

    fn op() -> WindowAggregateOp {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("x", DataType::Int64, true),
            Field::new("window_start", ts(), false),
            Field::new("window_end", ts(), false),
        ]));
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("x", &input).unwrap()])
            .schema(input.clone())
            .alias("s")
            .build()
            .unwrap();
        let out = Arc::new(Schema::new(vec![
            Field::new("window_start", ts(), false),
            Field::new("window_end", ts(), false),
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
        ]));
        let agg = WindowAggregate::new(
            2,
            3,
            vec![col("k", &input).unwrap()],
            vec![
                GroupColumn::WindowStart,
                GroupColumn::WindowEnd,
                GroupColumn::Key(0),
            ],
            vec![AggregateCall {
                function: Arc::new(sum),
                filter: None,
            }],
            out,
            &input,
        )
        .unwrap();
        WindowAggregateOp::new(3, agg)
    }

    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("x", DataType::Int64, true),
            Field::new("window_start", ts(), false),
            Field::new("window_end", ts(), false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2 + 10),
                )),
            ],
        )
        .unwrap()
    }

    fn fire(o: &mut WindowAggregateOp, wm: i64, state: &mut TaskState) -> Vec<(i64, i64, i64)> {
        let mut counters = OpCounters::default();
        let mut ctx = OpContext {
            watermark: wm,
            state: Some(state),
            counters: &mut counters,
        };
        let mut out = Vec::new();
        o.on_watermark(wm, &mut ctx, &mut out).unwrap();
        let mut rows = Vec::new();
        for b in out {
            let start = b
                .column(0)
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .unwrap()
                .clone();
            let k = b
                .column(2)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            let s = b
                .column(3)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            for r in 0..b.num_rows() {
                rows.push((start.value(r), k.value(r), s.value(r)));
            }
        }
        rows.sort();
        rows
    }

    fn feed(o: &mut WindowAggregateOp, rows: &[(i64, i64, i64)], state: &mut TaskState) {
        let mut counters = OpCounters::default();
        let mut ctx = OpContext {
            watermark: i64::MIN,
            state: Some(state),
            counters: &mut counters,
        };
        o.process(0, batch(rows), &mut ctx, &mut Vec::new())
            .unwrap();
    }

    #[test]
    fn open_windows_survive_a_restore_and_fired_ones_stay_fired() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = TaskState::open(dir.path(), &StateConfig::default(), None, true).unwrap();
        let mut o = op();
        feed(&mut o, &[(1, 5, 0), (2, 7, 0), (1, 1, 10)], &mut state);
        // window [0, 10) fires; [10, 20) stays open
        assert_eq!(fire(&mut o, 9, &mut state), vec![(0, 1, 5), (0, 2, 7)]);
        o.snapshot(&mut state).unwrap();
        let (chk, _) = state.checkpoint(1).unwrap();
        // after the checkpoint: input that a restore forgets
        feed(&mut o, &[(1, 100, 10)], &mut state);
        drop(state);

        let mut state =
            TaskState::open(dir.path(), &StateConfig::default(), Some(&chk), false).unwrap();
        let mut o = op();
        o.restore(&state).unwrap();
        assert_eq!(o.open_windows(), 1);
        // a late row for the fired window is dropped, as before the restore
        feed(&mut o, &[(1, 50, 0), (1, 2, 10)], &mut state);
        assert_eq!(fire(&mut o, 19, &mut state), vec![(10, 1, 3)]);
    }
}
