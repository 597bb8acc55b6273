//! The operator chain of a pipeline: stateless filters and projections, window assignment
//! and windowed aggregation, driven by batches and by watermarks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;

use crate::aggregate::WindowAggregate;
use crate::error::Result;
use crate::session::SessionAggregate;
use crate::window::WindowAssign;

pub enum Operator {
    Filter {
        predicate: Arc<dyn PhysicalExpr>,
    },
    Project {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    WindowAssign(WindowAssign),
    WindowAggregate(Box<WindowAggregate>),
    SessionAggregate(Box<SessionAggregate>),
}

impl Operator {
    pub fn name(&self) -> String {
        match self {
            Operator::Filter { .. } => "filter".into(),
            Operator::Project { .. } => "project".into(),
            Operator::WindowAssign(w) => format!("window_assign_{}", w.kind.name().to_lowercase()),
            Operator::WindowAggregate(_) => "window_aggregate".into(),
            Operator::SessionAggregate(_) => "session_aggregate".into(),
        }
    }
}

/// Counts that operators report while processing.
#[derive(Debug, Default, Clone)]
pub struct OperatorStats {
    pub late_records_dropped: u64,
    pub null_time_dropped: u64,
    /// Processing time per operator, in chain order.
    pub busy: Vec<Duration>,
}

/// A linear chain of operators; the last one's output goes to the sink.
pub struct Dataflow {
    pub ops: Vec<Operator>,
    pub stats: OperatorStats,
}

impl Dataflow {
    pub fn new(ops: Vec<Operator>) -> Self {
        let busy = vec![Duration::ZERO; ops.len()];
        Dataflow {
            ops,
            stats: OperatorStats {
                busy,
                ..Default::default()
            },
        }
    }

    pub fn operator_names(&self) -> Vec<String> {
        self.ops.iter().map(Operator::name).collect()
    }

    /// Pushes one source batch through the chain; `origin` is its partition and first offset.
    pub fn process(
        &mut self,
        batch: RecordBatch,
        origin: Option<(i32, i64)>,
        watermark: i64,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        run_from(
            &mut self.ops,
            &mut self.stats,
            0,
            batch,
            origin,
            watermark,
            out,
        )
    }

    /// Lets stateful operators fire what the watermark completes, in chain order so one
    /// operator's output reaches the next before that one fires.
    pub fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        for i in 0..self.ops.len() {
            let mut fired = Vec::new();
            let started = Instant::now();
            match &mut self.ops[i] {
                Operator::WindowAggregate(agg) => agg.on_watermark(watermark, &mut fired)?,
                Operator::SessionAggregate(agg) => agg.on_watermark(watermark, &mut fired)?,
                _ => continue,
            }
            self.stats.busy[i] += started.elapsed();
            for batch in fired {
                run_from(
                    &mut self.ops,
                    &mut self.stats,
                    i + 1,
                    batch,
                    None,
                    watermark,
                    out,
                )?;
            }
        }
        Ok(())
    }

    /// The smallest source offset per partition that open state still depends on.
    pub fn pinned_offsets(&self) -> HashMap<i32, i64> {
        let mut pinned = HashMap::new();
        for op in &self.ops {
            match op {
                Operator::WindowAggregate(agg) => agg.pinned_offsets(&mut pinned),
                Operator::SessionAggregate(agg) => agg.pinned_offsets(&mut pinned),
                _ => {}
            }
        }
        pinned
    }

    pub fn open_windows(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Operator::WindowAggregate(a) => a.open_windows(),
                Operator::SessionAggregate(a) => a.open_windows(),
                _ => 0,
            })
            .sum()
    }
}

fn run_from(
    ops: &mut [Operator],
    stats: &mut OperatorStats,
    start: usize,
    mut batch: RecordBatch,
    origin: Option<(i32, i64)>,
    watermark: i64,
    out: &mut Vec<RecordBatch>,
) -> Result<()> {
    for (i, op) in ops.iter_mut().enumerate().skip(start) {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let next = match op {
            Operator::Filter { predicate } => {
                let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| DataFusionError::Internal("WHERE is not boolean".into()))?;
                Some(filter_record_batch(&batch, mask)?)
            }
            Operator::Project { exprs, schema } => {
                let n = batch.num_rows();
                let columns = exprs
                    .iter()
                    .map(|e| e.evaluate(&batch)?.into_array(n))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                Some(RecordBatch::try_new(schema.clone(), columns)?)
            }
            Operator::WindowAssign(assign) => {
                let assigned = assign.process(&batch, watermark)?;
                stats.late_records_dropped += assigned.late;
                stats.null_time_dropped += assigned.null_time;
                assigned.batch
            }
            Operator::WindowAggregate(agg) => {
                let before = agg.late_rows();
                agg.process(&batch, origin)?;
                stats.late_records_dropped += agg.late_rows() - before;
                None
            }
            Operator::SessionAggregate(agg) => {
                let before = agg.late_rows();
                agg.process(&batch, origin)?;
                stats.late_records_dropped += agg.late_rows() - before;
                None
            }
        };
        stats.busy[i] += started.elapsed();
        match next {
            Some(b) => batch = b,
            None => return Ok(()),
        }
    }
    if batch.num_rows() > 0 {
        out.push(batch);
    }
    Ok(())
}
