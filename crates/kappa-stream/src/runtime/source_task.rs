//! A source task: polls its [`Source`] (its share of a table's splits, decoded into Arrow
//! batches), tracks a watermark per split, runs the operators before the keyed exchange, and
//! sends the result on (or, when nothing is keyed, writes it to the sink). A barrier from the
//! coordinator is taken between polls: the task reports the source's positions and its
//! watermark, then passes the barrier downstream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::max;

use super::chain::Chain;
use super::coordinator::{Ack, Control};
use super::exchange::{Exchange, Msg};
use super::kafka::TaskGate;
use super::source::{Sink, Source, SplitBatch};
use super::SharedWatermarks;
use crate::error::{Result, StreamError};
use crate::metrics::PipelineMetrics;
use crate::pipeline::SourceSpec;
use crate::watermark::WatermarkTracker;
use crate::window::event_times;

pub(crate) enum Output {
    Exchange(Exchange),
    Sink(Box<dyn Sink>),
}

pub(crate) struct SourceTask {
    pub index: usize,
    pub pipeline: String,
    pub source: Arc<SourceSpec>,
    pub reader: Box<dyn Source>,
    pub restored_watermark: Option<i64>,
    pub chain: Chain,
    pub output: Output,
    pub control: Receiver<Control>,
    pub acks: Sender<Ack>,
    pub gate: TaskGate,
    pub metrics: Arc<PipelineMetrics>,
    pub watermarks: Arc<SharedWatermarks>,
    pub max_batch: usize,
    pub abort: Arc<AtomicBool>,
}

impl SourceTask {
    fn emit(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        for b in batches {
            match &mut self.output {
                Output::Exchange(x) => x.send_batch(b)?,
                Output::Sink(s) => s.write(&b)?,
            }
        }
        Ok(())
    }

    fn pass(&mut self, msg: impl Fn() -> Msg) -> Result<()> {
        match &self.output {
            Output::Exchange(x) => x.broadcast(msg),
            Output::Sink(_) => Ok(()),
        }
    }

    pub fn run(mut self) -> Result<()> {
        let mut tracker = WatermarkTracker::new(self.reader.splits(), self.source.idle_timeout);
        if let Some(wm) = self.restored_watermark {
            tracker.restore(wm);
            self.watermarks.set(self.index, wm, false);
        }
        let mut sent_watermark = (i64::MIN, false);
        let mut committed_seen = self.gate.barrier.load(Ordering::Acquire);
        let mut polled: Vec<SplitBatch> = Vec::new();
        let mut out: Vec<RecordBatch> = Vec::new();
        // after the last barrier before a stop: read nothing more
        let mut draining = false;
        loop {
            if self.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            // a barrier or the end, between two polls
            while let Ok(c) = self.control.try_recv() {
                match c {
                    Control::Barrier { id: n, last } => {
                        let offsets = self.reader.positions();
                        if let Output::Sink(sink) = &mut self.output {
                            sink.prepare_commit(n)?;
                        }
                        self.pass(|| Msg::Barrier(n))?;
                        let _ = self.acks.send(Ack::Source {
                            checkpoint: n,
                            offsets,
                            watermark: tracker.current(),
                            idle: tracker.all_idle(Instant::now()),
                        });
                        self.gate.barrier.store(n, Ordering::Release);
                        draining = last;
                    }
                    Control::Resume => draining = false,
                    Control::End => {
                        let committed = self.gate.gate.committed();
                        if committed > committed_seen {
                            if let Output::Sink(sink) = &mut self.output {
                                sink.commit(committed)?;
                            }
                        }
                        self.pass(|| Msg::End)?;
                        return Ok(());
                    }
                }
            }

            // a checkpoint this task's sink took part in has completed
            let committed = self.gate.gate.committed();
            if committed > committed_seen {
                if let Output::Sink(sink) = &mut self.output {
                    sink.commit(committed)?;
                }
                committed_seen = committed;
            }
            if draining {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            polled.clear();
            self.reader
                .poll(self.max_batch, Duration::from_millis(50), &mut polled)?;
            let now = Instant::now();
            for SplitBatch { split, batch } in polled.drain(..) {
                let Some(batch) = batch else {
                    tracker.observe(split, None, now);
                    continue;
                };
                let candidate = match &self.source.watermark {
                    Some(expr) => match expr
                        .evaluate(&batch)
                        .and_then(|v| v.into_array(batch.num_rows()))
                        .map_err(StreamError::from)
                        .and_then(|wm| event_times(&wm))
                    {
                        Ok(times) => max(&times),
                        // e.g. an event time so far out that `ts - INTERVAL` overflows: this
                        // batch does not move the watermark; the window operators drop such rows
                        Err(e) => {
                            tracing::warn!(pipeline = %self.pipeline, "WATERMARK expression: {e}");
                            None
                        }
                    },
                    None => None,
                };
                // as v1: the pipeline's watermark before this batch decides lateness
                let current = self.watermarks.global();
                self.chain.process_from(0, batch, current, None, &mut out)?;
                tracker.observe(split, candidate, now);
                let batches = std::mem::take(&mut out);
                self.emit(batches)?;
            }

            tracker.advance(now);
            let wm = tracker.current();
            let idle = tracker.all_idle(now);
            if (wm, idle) != sent_watermark {
                sent_watermark = (wm, idle);
                self.watermarks.set(self.index, wm, idle);
                match &self.output {
                    Output::Exchange(x) => x.broadcast(|| Msg::Watermark {
                        watermark: wm,
                        idle,
                    })?,
                    Output::Sink(_) => {
                        // nothing keyed downstream: this task fires its own chain
                        let global = self.watermarks.global();
                        self.metrics
                            .watermark_ms
                            .fetch_max(global, Ordering::Relaxed);
                        self.chain.on_watermark(global, None, &mut out)?;
                        let batches = std::mem::take(&mut out);
                        self.emit(batches)?;
                    }
                }
            }
        }
    }
}
