//! A keyed task: owns the keys whose hash falls to it, with its own RocksDB state. Its input
//! arrives from every source task; its watermark is the minimum over those inputs (idle ones
//! aside); a checkpoint barrier is aligned (an input that delivered the barrier is held back
//! until all have), then the operators snapshot, the task writes a local checkpoint and
//! reports to the coordinator.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;

use super::chain::Chain;
use super::coordinator::Ack;
use super::exchange::{Envelope, Msg};
use super::kafka::TaskGate;
use super::source::Sink;
use super::{combine, RuntimeControl};
use crate::error::Result;
use crate::metrics::PipelineMetrics;
use crate::state::TaskState;

struct Input {
    watermark: i64,
    idle: bool,
    /// Delivered the barrier of the checkpoint being aligned.
    blocked: bool,
    ended: bool,
    held: VecDeque<Msg>,
}

pub(crate) struct KeyedTask {
    pub index: usize,
    pub inbox: Receiver<Envelope>,
    pub inputs: usize,
    pub chain: Chain,
    pub state: TaskState,
    pub sink: Box<dyn Sink>,
    pub acks: Sender<Ack>,
    pub gate: TaskGate,
    pub metrics: Arc<PipelineMetrics>,
    pub runtime: Arc<RuntimeControl>,
    pub restored_watermark: Option<i64>,
}

impl KeyedTask {
    pub fn run(mut self) -> Result<()> {
        let start = self.restored_watermark.unwrap_or(i64::MIN);
        let mut inputs: Vec<Input> = (0..self.inputs)
            .map(|_| Input {
                watermark: start,
                idle: false,
                blocked: false,
                ended: false,
                held: VecDeque::new(),
            })
            .collect();
        let mut watermark = start;
        let mut aligning: Option<(u64, Instant)> = None;
        let mut out: Vec<RecordBatch> = Vec::new();
        let mut committed_seen = self.gate.barrier.load(Ordering::Acquire);
        loop {
            // a checkpoint this task's sink took part in has completed
            let committed = self.gate.gate.committed();
            if committed > committed_seen {
                self.sink.commit(committed)?;
                committed_seen = committed;
            }
            let env = match self.inbox.recv_timeout(Duration::from_millis(100)) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    if self.gate.gate.abort.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let mut queue: VecDeque<(usize, Msg)> = VecDeque::new();
            queue.push_back((env.from, env.msg));
            while let Some((from, msg)) = queue.pop_front() {
                let Some(input) = inputs.get_mut(from) else {
                    continue;
                };
                if input.blocked {
                    input.held.push_back(msg);
                    continue;
                }
                match msg {
                    Msg::Batch(batch) => {
                        self.runtime.queued_batches.fetch_sub(1, Ordering::Relaxed);
                        self.chain.process_from(
                            0,
                            batch,
                            watermark,
                            Some(&mut self.state),
                            &mut out,
                        )?;
                        for b in out.drain(..) {
                            self.sink.write(&b)?;
                        }
                    }
                    Msg::Watermark { watermark: w, idle } => {
                        input.watermark = input.watermark.max(w);
                        input.idle = idle;
                        let combined = combine(
                            inputs
                                .iter()
                                .filter(|i| !i.ended)
                                .map(|i| (i.watermark, i.idle)),
                        );
                        if combined > watermark {
                            watermark = combined;
                            if self.index == 0 {
                                self.metrics
                                    .watermark_ms
                                    .fetch_max(watermark, Ordering::Relaxed);
                            }
                            self.chain
                                .on_watermark(watermark, Some(&mut self.state), &mut out)?;
                            for b in out.drain(..) {
                                self.sink.write(&b)?;
                            }
                        }
                    }
                    Msg::Barrier(n) => {
                        input.blocked = true;
                        let since = match aligning {
                            Some((_, t)) => t,
                            None => {
                                let t = Instant::now();
                                aligning = Some((n, t));
                                t
                            }
                        };
                        if inputs.iter().all(|i| i.blocked || i.ended) {
                            let alignment = since.elapsed();
                            self.chain.snapshot(&mut self.state)?;
                            self.sink.prepare_commit(n)?;
                            let (_, new_bytes) = self.state.checkpoint(n)?;
                            let _ = self.acks.send(Ack::Task {
                                checkpoint: n,
                                new_bytes,
                                alignment,
                            });
                            self.gate.barrier.store(n, Ordering::Release);
                            aligning = None;
                            // release what the aligned inputs held back, in order
                            for (i, input) in inputs.iter_mut().enumerate() {
                                input.blocked = false;
                                for m in input.held.drain(..) {
                                    queue.push_back((i, m));
                                }
                            }
                        }
                    }
                    Msg::End => {
                        input.ended = true;
                        if inputs.iter().all(|i| i.ended) {
                            // the last checkpoint completed before the end was sent
                            let committed = self.gate.gate.committed();
                            if committed > committed_seen {
                                self.sink.commit(committed)?;
                            }
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}
