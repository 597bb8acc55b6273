//! A task's chain of operators: a batch goes through them in order, a watermark lets each
//! fire in order (so one operator's output reaches the next before that one fires).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;

use crate::error::Result;
use crate::metrics::PipelineMetrics;
use crate::operators::{OpContext, OpCounters, Operator};
use crate::state::TaskState;

pub(crate) struct Chain {
    pub ops: Vec<Box<dyn Operator>>,
    /// Busy nanoseconds per operator of the whole plan; this chain's start at `first`.
    busy: Arc<Vec<AtomicU64>>,
    first: usize,
    metrics: Arc<PipelineMetrics>,
}

impl Chain {
    pub fn new(
        ops: Vec<Box<dyn Operator>>,
        busy: Arc<Vec<AtomicU64>>,
        first: usize,
        metrics: Arc<PipelineMetrics>,
    ) -> Self {
        Chain {
            ops,
            busy,
            first,
            metrics,
        }
    }

    fn count(&self, counters: OpCounters) {
        if counters.late_records_dropped > 0 {
            self.metrics
                .late_records_dropped
                .fetch_add(counters.late_records_dropped, Ordering::Relaxed);
        }
        if counters.null_time_dropped > 0 {
            // a row without an event time cannot be placed: counted as a bad record
            self.metrics
                .bad_records
                .fetch_add(counters.null_time_dropped, Ordering::Relaxed);
        }
    }

    /// Runs `batch` through the operators from `start` on; the chain's output goes to `out`.
    pub fn process_from(
        &mut self,
        start: usize,
        batch: RecordBatch,
        watermark: i64,
        mut state: Option<&mut TaskState>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let mut counters = OpCounters::default();
        let mut current = vec![batch];
        for i in start..self.ops.len() {
            let mut next = Vec::new();
            let started = Instant::now();
            for b in current {
                if b.num_rows() == 0 {
                    continue;
                }
                let mut ctx = OpContext {
                    watermark,
                    state: state.as_deref_mut(),
                    counters: &mut counters,
                };
                self.ops[i].process(0, b, &mut ctx, &mut next)?;
            }
            if let Some(b) = self.busy.get(self.first + i) {
                b.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            current = next;
            if current.is_empty() {
                break;
            }
        }
        out.extend(current.into_iter().filter(|b| b.num_rows() > 0));
        self.count(counters);
        Ok(())
    }

    pub fn on_watermark(
        &mut self,
        watermark: i64,
        mut state: Option<&mut TaskState>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        for i in 0..self.ops.len() {
            let mut fired = Vec::new();
            let mut counters = OpCounters::default();
            let started = Instant::now();
            {
                let mut ctx = OpContext {
                    watermark,
                    state: state.as_deref_mut(),
                    counters: &mut counters,
                };
                self.ops[i].on_watermark(watermark, &mut ctx, &mut fired)?;
            }
            if let Some(b) = self.busy.get(self.first + i) {
                b.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            self.count(counters);
            for batch in fired {
                self.process_from(i + 1, batch, watermark, state.as_deref_mut(), out)?;
            }
        }
        Ok(())
    }

    pub fn snapshot(&mut self, state: &mut TaskState) -> Result<()> {
        for op in &mut self.ops {
            op.snapshot(state)?;
        }
        Ok(())
    }

    pub fn restore(&mut self, state: &TaskState) -> Result<()> {
        for op in &mut self.ops {
            op.restore(state)?;
        }
        Ok(())
    }
}
