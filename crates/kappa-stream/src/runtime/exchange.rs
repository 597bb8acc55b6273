//! What flows between tasks (batches, watermarks, barriers) and the keyed exchange that
//! splits batches by the hash of their key columns.

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::common::hash_utils::create_hashes_with_hasher;
use datafusion::physical_expr::PhysicalExpr;

use super::{Gate, RuntimeControl};
use crate::error::{Result, StreamError};

pub(crate) enum Msg {
    Batch(RecordBatch),
    Watermark { watermark: i64, idle: bool },
    Barrier(u64),
    End,
}

pub(crate) struct Envelope {
    /// The sending task (an input channel of the receiver).
    pub from: usize,
    pub msg: Msg,
}

/// The sending side of a keyed exchange, in one upstream task.
pub(crate) struct Exchange {
    pub from: usize,
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub outputs: Vec<SyncSender<Envelope>>,
    pub runtime: Arc<RuntimeControl>,
    pub gate: Arc<Gate>,
    hashes: Vec<u64>,
}

/// The task a key hash belongs to.
pub(crate) fn task_of(hash: u64, tasks: usize) -> usize {
    (hash % tasks as u64) as usize
}

impl Exchange {
    pub fn new(
        from: usize,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        outputs: Vec<SyncSender<Envelope>>,
        runtime: Arc<RuntimeControl>,
        gate: Arc<Gate>,
    ) -> Self {
        Exchange {
            from,
            keys,
            outputs,
            runtime,
            gate,
            hashes: Vec::new(),
        }
    }

    /// Sends, waiting while the receiver's queue is full (backpressure, counted).
    fn send_to(&self, task: usize, msg: Msg) -> Result<()> {
        let mut env = Envelope {
            from: self.from,
            msg,
        };
        let mut blocked: Option<Instant> = None;
        let is_batch = matches!(env.msg, Msg::Batch(_));
        loop {
            match self.outputs[task].try_send(env) {
                Ok(()) => break,
                Err(TrySendError::Full(e)) => {
                    env = e;
                    blocked.get_or_insert_with(Instant::now);
                    if self.gate.abort.load(Ordering::Relaxed) {
                        return Err(StreamError::Checkpoint("the pipeline is failing".into()));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(StreamError::Checkpoint(
                        "a downstream task has stopped".into(),
                    ))
                }
            }
        }
        if let Some(t) = blocked {
            self.runtime
                .backpressure_nanos
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        if is_batch {
            self.runtime.queued_batches.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Splits a batch by key hash among the downstream tasks.
    pub fn send_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let n = self.outputs.len();
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if n == 1 || self.keys.is_empty() {
            // one task, or no key (a global aggregate): everything to task 0
            return self.send_to(0, Msg::Batch(batch));
        }
        let rows = batch.num_rows();
        let columns = super::super::operators::evaluate(&self.keys, &batch)?;
        self.hashes.clear();
        self.hashes.resize(rows, 0);
        create_hashes_with_hasher(
            &columns,
            &BuildHasherDefault::<DefaultHasher>::default(),
            &mut self.hashes,
        )?;
        let mut per_task: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (row, h) in self.hashes.iter().enumerate() {
            per_task[task_of(*h, n)].push(row as u32);
        }
        for (task, rows_of) in per_task.into_iter().enumerate() {
            if rows_of.is_empty() {
                continue;
            }
            let part = if rows_of.len() == rows {
                batch.clone()
            } else {
                take_record_batch(&batch, &UInt32Array::from(rows_of))?
            };
            self.send_to(task, Msg::Batch(part))?;
        }
        Ok(())
    }

    /// Sends a watermark, barrier or end to every downstream task.
    pub fn broadcast(&self, make: impl Fn() -> Msg) -> Result<()> {
        for task in 0..self.outputs.len() {
            self.send_to(task, make())?;
        }
        Ok(())
    }
}
