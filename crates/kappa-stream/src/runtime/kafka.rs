//! The pipeline's Kafka producer (transactional with exactly-once) and what writes through
//! it: the sink, the state changelog and the dead-letter topic. Every write first waits at
//! the gate, so a task past a barrier writes into the next checkpoint's transaction.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int8Array, RecordBatch};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::{Delivery, Gate};
use crate::error::{Result, StreamError};
use crate::format::{Encoded, RecordEncoder};
use crate::metrics::PipelineMetrics;
use crate::operators::{is_changelog, DELETE, UPDATE_BEFORE};
use crate::pipeline::{client_config, set_default, SinkSpec};
use crate::state::ChangelogWriter;
use crate::window::event_times;

pub(crate) struct ProducerContextImpl {
    first_error: Mutex<Option<String>>,
    changelog_topic: String,
    /// The highest offset delivered per changelog partition.
    changelog_offsets: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for ProducerContextImpl {}

impl ProducerContext for ProducerContextImpl {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, _)) => {
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
            // the changelog topic, whatever its epoch suffix
            Ok(m) if m.topic().starts_with(&self.changelog_topic) => {
                if let Ok(mut o) = self.changelog_offsets.lock() {
                    let e = o.entry(m.partition()).or_insert(-1);
                    *e = (*e).max(m.offset());
                }
            }
            Ok(_) => {}
        }
    }
}

pub(crate) type PipelineProducer = ThreadedProducer<ProducerContextImpl>;

/// The pipeline's producer: transactional (`transactional_id`) with exactly-once.
pub(crate) fn producer(
    properties: &[(String, String)],
    delivery: Delivery,
    transactional_id: &str,
    checkpoint_interval: Duration,
    changelog_topic: &str,
) -> Result<Arc<PipelineProducer>> {
    let mut config = client_config(properties);
    set_default(&mut config, "linger.ms", "5");
    match delivery {
        Delivery::ExactlyOnce => {
            config.set("transactional.id", transactional_id);
            // a transaction spans a checkpoint interval and its commit
            let timeout = (checkpoint_interval.as_millis() as u64 * 3).clamp(60_000, 900_000);
            set_default(&mut config, "transaction.timeout.ms", &timeout.to_string());
        }
        Delivery::AtLeastOnce => {
            set_default(&mut config, "acks", "all");
            set_default(&mut config, "enable.idempotence", "true");
        }
        Delivery::None => set_default(&mut config, "acks", "1"),
    }
    let producer: PipelineProducer = config.create_with_context(ProducerContextImpl {
        first_error: Mutex::new(None),
        changelog_topic: changelog_topic.to_string(),
        changelog_offsets: Mutex::new(HashMap::new()),
    })?;
    Ok(Arc::new(producer))
}

pub(crate) fn failed(producer: &PipelineProducer) -> Option<String> {
    producer
        .context()
        .first_error
        .lock()
        .ok()
        .and_then(|e| e.clone())
}

/// Starts the changelog's known ends at a restored checkpoint's.
pub(crate) fn seed_changelog_ends(producer: &PipelineProducer, ends: &[(i32, i64)]) {
    if let Ok(mut o) = producer.context().changelog_offsets.lock() {
        for &(p, end) in ends {
            let e = o.entry(p).or_insert(-1);
            *e = (*e).max(end - 1);
        }
    }
}

/// The next offset of each changelog partition the producer has written to.
pub(crate) fn changelog_ends(producer: &PipelineProducer) -> HashMap<i32, i64> {
    producer
        .context()
        .changelog_offsets
        .lock()
        .map(|o| o.iter().map(|(&p, &off)| (p, off + 1)).collect())
        .unwrap_or_default()
}

/// Sends, waiting while librdkafka's queue is full (for at most a minute); the time spent
/// waiting is added to `waited` (backpressure from the cluster).
pub(crate) fn send_counting(
    producer: &PipelineProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
    waited: Option<&AtomicU64>,
    abort: Option<&std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let mut blocked: Option<Instant> = None;
    let outcome = loop {
        match producer.send(record) {
            Ok(()) => break Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                if blocked.is_none_or(|t| t.elapsed() < Duration::from_secs(60))
                    && !abort.is_some_and(|a| a.load(Ordering::Relaxed)) =>
            {
                record = r;
                blocked.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => break Err(e.into()),
        }
    };
    if let (Some(t), Some(w)) = (blocked, waited) {
        w.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    outcome
}

pub(crate) fn send(producer: &PipelineProducer, record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    send_counting(producer, record, None, None)
}

/// Where a task's writes stand: the last barrier it passed.
#[derive(Clone)]
pub(crate) struct TaskGate {
    pub gate: Arc<Gate>,
    pub barrier: Arc<AtomicU64>,
}

impl TaskGate {
    pub fn wait(&self) -> Result<()> {
        self.gate.wait(self.barrier.load(Ordering::Acquire))
    }
}

/// Writes a task's state changes to its changelog partition.
pub(crate) struct Changelog {
    pub producer: Arc<PipelineProducer>,
    pub topic: String,
    pub partition: i32,
    pub gate: TaskGate,
}

impl ChangelogWriter for Changelog {
    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.gate.wait()?;
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic)
            .partition(self.partition)
            .key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        send(&self.producer, record)
    }
}

/// Sends records a source could not decode to the dead-letter topic.
pub(crate) fn dead_letter(
    producer: &PipelineProducer,
    gate: &TaskGate,
    topic: &str,
    origin: &str,
    reason: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<()> {
    gate.wait()?;
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "kappa.error",
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: "kappa.source",
            value: Some(origin.as_bytes()),
        });
    let mut record = BaseRecord::<[u8], [u8]>::to(topic)
        .payload(payload)
        .headers(headers);
    if let Some(k) = key {
        record = record.key(k);
    }
    send(producer, record)
}

impl super::source::Sink for SinkWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.write_batch(batch)
    }
}

/// A task's writer to the sink topic.
pub(crate) struct SinkWriter {
    spec: Arc<SinkSpec>,
    producer: Arc<PipelineProducer>,
    gate: TaskGate,
    value_encoder: RecordEncoder,
    key_encoder: Option<RecordEncoder>,
    values: Encoded,
    keys: Encoded,
    metrics: Arc<PipelineMetrics>,
    runtime: Arc<super::RuntimeControl>,
    /// The key columns under the names the message key uses (`'key.fields-prefix'` removed).
    key_schema: Option<datafusion::arrow::datatypes::SchemaRef>,
}

impl SinkWriter {
    pub fn new(
        spec: Arc<SinkSpec>,
        producer: Arc<PipelineProducer>,
        gate: TaskGate,
        metrics: Arc<PipelineMetrics>,
        runtime: Arc<super::RuntimeControl>,
    ) -> Self {
        let key_schema = match (&spec.key, &spec.key_prefix) {
            (Some((_, cols)), Some(prefix)) => {
                Some(Arc::new(datafusion::arrow::datatypes::Schema::new(
                    cols.iter()
                        .map(|&c| {
                            let f = spec.schema.field(c);
                            let name = f.name().strip_prefix(prefix.as_str()).unwrap_or(f.name());
                            f.clone().with_name(name)
                        })
                        .collect::<Vec<_>>(),
                )))
            }
            _ => None,
        };
        SinkWriter {
            key_schema,
            value_encoder: RecordEncoder::new(spec.format, spec.csv_delimiter),
            key_encoder: spec
                .key
                .as_ref()
                .map(|(f, _)| RecordEncoder::new(*f, spec.csv_delimiter)),
            spec,
            producer,
            gate,
            values: Encoded::default(),
            keys: Encoded::default(),
            metrics,
            runtime,
        }
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.gate.wait()?;
        let kinds = if is_changelog(&batch.schema()) {
            batch
                .column(batch.num_columns() - 1)
                .as_any()
                .downcast_ref::<Int8Array>()
                .cloned()
        } else {
            None
        };
        let n_cols = self.spec.schema.fields().len();
        let columns = batch.columns()[..n_cols.min(batch.num_columns())].to_vec();
        let columns = crate::operators::cast_to(columns, &self.spec.schema)?;
        let batch = RecordBatch::try_new(self.spec.schema.clone(), columns)?;
        self.values.clear();
        self.keys.clear();
        self.value_encoder
            .encode(&batch, &self.spec.value_columns, &mut self.values)?;
        if let (Some(enc), Some((_, cols))) = (&self.key_encoder, &self.spec.key) {
            match &self.key_schema {
                Some(schema) => {
                    let key_batch = RecordBatch::try_new(
                        schema.clone(),
                        cols.iter().map(|&c| batch.column(c).clone()).collect(),
                    )?;
                    let all: Vec<usize> = (0..cols.len()).collect();
                    enc.encode(&key_batch, &all, &mut self.keys)?;
                }
                None => enc.encode(&batch, cols, &mut self.keys)?,
            }
        }
        let mut written = 0u64;
        for i in 0..self.values.len() {
            let kind = kinds.as_ref().map_or(0, |k| k.value(i));
            if kind == UPDATE_BEFORE {
                // an upsert table only needs the new image
                continue;
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.spec.topic);
            if !(self.spec.upsert && kind == DELETE) {
                record = record.payload(self.values.get(i));
            }
            if !self.keys.is_empty() {
                record = record.key(self.keys.get(i));
            }
            send_counting(
                &self.producer,
                record,
                Some(&self.runtime.backpressure_nanos),
                Some(&self.gate.gate.abort),
            )?;
            written += 1;
            if written.is_multiple_of(1024) {
                // a slow sink still shows progress
                self.metrics.records_out.fetch_add(1024, Ordering::Relaxed);
            }
        }
        self.metrics
            .records_out
            .fetch_add(written % 1024, Ordering::Relaxed);
        if let Some(c) = self.spec.event_time_column {
            if let Ok(times) = event_times(batch.column(c)) {
                let now = chrono::Utc::now().timestamp_millis();
                for t in times.iter().flatten() {
                    self.metrics.observe_latency_ms(now.saturating_sub(t));
                }
            }
        }
        if let Some(e) = failed(&self.producer) {
            return Err(StreamError::Source(format!(
                "writing to topic '{}': {e}",
                self.spec.topic
            )));
        }
        Ok(())
    }
}
