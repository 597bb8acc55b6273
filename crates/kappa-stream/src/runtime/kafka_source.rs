//! The Kafka source: a consumer assigned some of a topic's partitions (read_committed),
//! decoding each poll's records per partition into the table's columns with their Kafka
//! metadata; records that do not decode go to the dead-letter topic, are skipped, or fail
//! the pipeline, as the table says.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};

use super::kafka::{self, PipelineProducer, TaskGate};
use super::source::{Source, SplitBatch};
use crate::error::{Result, StreamError};
use crate::format::RecordDecoder;
use crate::metrics::PipelineMetrics;
use crate::pipeline::{assemble, BadRecordPolicy, SourceSpec};

pub(crate) struct KafkaSource {
    pipeline: String,
    spec: Arc<SourceSpec>,
    consumer: BaseConsumer,
    decoder: RecordDecoder,
    /// Partition id to split index.
    slot: HashMap<i32, usize>,
    partitions: usize,
    /// Next offset to read per partition, where known.
    positions: HashMap<i32, i64>,
    producer: Arc<PipelineProducer>,
    gate: TaskGate,
    metrics: Arc<PipelineMetrics>,
    last_warning: Instant,
}

impl KafkaSource {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipeline: String,
        spec: Arc<SourceSpec>,
        consumer: BaseConsumer,
        partitions: &[i32],
        positions: HashMap<i32, i64>,
        producer: Arc<PipelineProducer>,
        gate: TaskGate,
        metrics: Arc<PipelineMetrics>,
    ) -> Result<Self> {
        let decoder =
            RecordDecoder::new(spec.format, spec.value_schema.clone(), spec.csv_delimiter)?;
        Ok(KafkaSource {
            pipeline,
            decoder,
            consumer,
            slot: partitions
                .iter()
                .enumerate()
                .map(|(i, &p)| (p, i))
                .collect(),
            partitions: partitions.len(),
            positions,
            producer,
            gate,
            metrics,
            spec,
            last_warning: Instant::now() - Duration::from_secs(60),
        })
    }
}

impl Source for KafkaSource {
    fn splits(&self) -> usize {
        self.partitions
    }

    fn positions(&self) -> Vec<(i32, i64)> {
        self.positions.iter().map(|(&p, &o)| (p, o)).collect()
    }

    fn poll(&mut self, max: usize, wait: Duration, out: &mut Vec<SplitBatch>) -> Result<()> {
        let mut messages: Vec<BorrowedMessage<'_>> = Vec::new();
        let mut wait = wait;
        while messages.len() < max {
            match self.consumer.poll(wait) {
                Some(Ok(m)) => messages.push(m),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => return Err(e.into()),
                Some(Err(e)) => {
                    // transient (a broker restarting, a connection lost): librdkafka retries
                    if self.last_warning.elapsed() > Duration::from_secs(10) {
                        tracing::warn!(pipeline = %self.pipeline, "reading '{}': {e}", self.spec.topic);
                        self.last_warning = Instant::now();
                    }
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        let mut by_partition: Vec<(i32, Vec<usize>)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match by_partition.iter_mut().find(|(p, _)| *p == m.partition()) {
                Some((_, v)) => v.push(i),
                None => by_partition.push((m.partition(), vec![i])),
            }
        }
        for (partition, idx) in by_partition {
            let Some(&split) = self.slot.get(&partition) else {
                continue;
            };
            let msgs: Vec<&BorrowedMessage<'_>> = idx.iter().map(|&i| &messages[i]).collect();
            let Some(last) = msgs.last() else { continue };
            self.positions.insert(partition, last.offset() + 1);
            // tombstones carry no row
            let live: Vec<&BorrowedMessage<'_>> =
                msgs.into_iter().filter(|m| m.payload().is_some()).collect();
            self.metrics
                .records_in
                .fetch_add(live.len() as u64, Ordering::Relaxed);
            let payloads: Vec<&[u8]> = live
                .iter()
                .map(|m| m.payload().unwrap_or_default())
                .collect();
            let decoded = self.decoder.decode(&payloads)?;
            for (i, reason) in &decoded.bad {
                let m = live[*i];
                self.metrics.bad_records.fetch_add(1, Ordering::Relaxed);
                match &self.spec.bad_records {
                    BadRecordPolicy::Fail => {
                        return Err(StreamError::BadRecord {
                            topic: self.spec.topic.clone(),
                            partition,
                            offset: m.offset(),
                            reason: format!(
                                "{reason} (table '{}'; set 'json.ignore-parse-errors' = 'true' or 'dead-letter.topic' to go on)",
                                self.spec.table
                            ),
                        });
                    }
                    BadRecordPolicy::Skip => {}
                    BadRecordPolicy::DeadLetter(topic) => {
                        let origin = format!("{}[{}]@{}", self.spec.topic, partition, m.offset());
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
                out.push(SplitBatch { split, batch: None });
                continue;
            };
            let rows: Vec<&BorrowedMessage<'_>> = match &decoded.rows {
                None => live,
                Some(r) => r.iter().map(|&i| live[i]).collect(),
            };
            let batch = assemble(&self.spec, &values, &rows, partition)?;
            out.push(SplitBatch {
                split,
                batch: Some(batch),
            });
        }
        Ok(())
    }
}
