//! A source task: reads its share of the source topic's partitions, decodes records into Arrow
//! batches (bad ones to the dead-letter topic, skipped, or failing the pipeline), tracks
//! per-partition watermarks, runs the operators before the keyed exchange, and sends the
//! result on (or, when nothing is keyed, writes it to the sink). A barrier from the
//! coordinator is taken between polls: the task reports its next offsets and watermark, then
//! passes the barrier downstream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::max;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};

use super::chain::Chain;
use super::coordinator::{Ack, Control};
use super::exchange::{Exchange, Msg};
use super::kafka::{self, PipelineProducer, SinkWriter, TaskGate};
use super::SharedWatermarks;
use crate::error::{Result, StreamError};
use crate::format::RecordDecoder;
use crate::metrics::PipelineMetrics;
use crate::pipeline::{assemble, BadRecordPolicy, SourceSpec};
use crate::watermark::WatermarkTracker;
use crate::window::event_times;

pub(crate) enum Output {
    Exchange(Exchange),
    Sink(Box<SinkWriter>),
}

pub(crate) struct SourceTask {
    pub index: usize,
    pub pipeline: String,
    pub source: Arc<SourceSpec>,
    pub consumer: Option<BaseConsumer>,
    pub partitions: Vec<i32>,
    /// Next offset to read per partition, where known.
    pub positions: HashMap<i32, i64>,
    pub restored_watermark: Option<i64>,
    pub chain: Chain,
    pub output: Output,
    pub control: Receiver<Control>,
    pub acks: Sender<Ack>,
    pub gate: TaskGate,
    pub producer: Arc<PipelineProducer>,
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
        let consumer = self
            .consumer
            .take()
            .ok_or_else(|| StreamError::Source("a source task without its consumer".into()))?;
        let decoder = RecordDecoder::new(
            self.source.format,
            self.source.value_schema.clone(),
            self.source.csv_delimiter,
        )?;
        let slot: HashMap<i32, usize> = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, i))
            .collect();
        let mut tracker = WatermarkTracker::new(self.partitions.len(), self.source.idle_timeout);
        if let Some(wm) = self.restored_watermark {
            tracker.restore(wm);
            self.watermarks.set(self.index, wm, false);
        }
        let mut sent_watermark = (i64::MIN, false);
        let mut last_poll_warning = Instant::now() - Duration::from_secs(60);
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
                        let offsets: Vec<(i32, i64)> =
                            self.positions.iter().map(|(&p, &o)| (p, o)).collect();
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
                        self.pass(|| Msg::End)?;
                        return Ok(());
                    }
                }
            }

            if draining {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let mut messages: Vec<BorrowedMessage<'_>> = Vec::new();
            let mut wait = Duration::from_millis(50);
            while messages.len() < self.max_batch {
                match consumer.poll(wait) {
                    Some(Ok(m)) => messages.push(m),
                    Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => return Err(e.into()),
                    Some(Err(e)) => {
                        if last_poll_warning.elapsed() > Duration::from_secs(10) {
                            tracing::warn!(pipeline = %self.pipeline, "reading '{}': {e}", self.source.topic);
                            last_poll_warning = Instant::now();
                        }
                        break;
                    }
                    None => break,
                }
                wait = Duration::ZERO;
            }
            let now = Instant::now();
            let mut by_partition: Vec<(i32, Vec<usize>)> = Vec::new();
            for (i, m) in messages.iter().enumerate() {
                match by_partition.iter_mut().find(|(p, _)| *p == m.partition()) {
                    Some((_, v)) => v.push(i),
                    None => by_partition.push((m.partition(), vec![i])),
                }
            }
            for (partition, idx) in by_partition {
                let msgs: Vec<&BorrowedMessage<'_>> = idx.iter().map(|&i| &messages[i]).collect();
                let Some(last) = msgs.last() else { continue };
                self.positions.insert(partition, last.offset() + 1);
                let live: Vec<&BorrowedMessage<'_>> =
                    msgs.into_iter().filter(|m| m.payload().is_some()).collect();
                self.metrics
                    .records_in
                    .fetch_add(live.len() as u64, Ordering::Relaxed);
                let payloads: Vec<&[u8]> = live
                    .iter()
                    .map(|m| m.payload().unwrap_or_default())
                    .collect();
                let decoded = decoder.decode(&payloads)?;
                for (i, reason) in &decoded.bad {
                    let m = live[*i];
                    self.metrics.bad_records.fetch_add(1, Ordering::Relaxed);
                    match &self.source.bad_records {
                        BadRecordPolicy::Fail => {
                            return Err(StreamError::BadRecord {
                                topic: self.source.topic.clone(),
                                partition,
                                offset: m.offset(),
                                reason: format!(
                                    "{reason} (table '{}'; set 'json.ignore-parse-errors' = 'true' or 'dead-letter.topic' to go on)",
                                    self.source.table
                                ),
                            });
                        }
                        BadRecordPolicy::Skip => {}
                        BadRecordPolicy::DeadLetter(topic) => {
                            let origin =
                                format!("{}[{}]@{}", self.source.topic, partition, m.offset());
                            kafka::dead_letter(
                                &self.producer,
                                &self.gate,
                                topic,
                                &origin,
                                reason,
                                m.key(),
                                payloads[*i],
                            )?;
                        }
                    }
                }
                let Some(values) = decoded.batch else {
                    if let Some(&s) = slot.get(&partition) {
                        tracker.observe(s, None, now);
                    }
                    continue;
                };
                let rows: Vec<&BorrowedMessage<'_>> = match &decoded.rows {
                    None => live,
                    Some(r) => r.iter().map(|&i| live[i]).collect(),
                };
                let batch = assemble(&self.source, &values, &rows, partition)?;
                let candidate = match &self.source.watermark {
                    Some(expr) => match expr
                        .evaluate(&batch)
                        .and_then(|v| v.into_array(batch.num_rows()))
                        .map_err(StreamError::from)
                        .and_then(|wm| event_times(&wm))
                    {
                        Ok(times) => max(&times),
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
                if let Some(&s) = slot.get(&partition) {
                    tracker.observe(s, candidate, now);
                }
                let batches = std::mem::take(&mut out);
                self.emit(batches)?;
            }
            drop(messages);
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
