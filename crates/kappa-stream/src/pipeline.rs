//! Runs a dataflow as a pipeline on its own thread: a Kafka source (one consumer assigned
//! every partition of the table's topic, per-partition watermarks), the operator chain,
//! and a Kafka sink. Offsets are committed to the pipeline's consumer group only after the
//! output they produced is acknowledged, and never past records that open windows still
//! need, so a restart re-reads what was not yet reflected in the output (at-least-once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StreamError};
use crate::format::{Encoded, FormatKind, RecordDecoder, RecordEncoder};
use crate::metrics::PipelineMetrics;
use crate::operator::Dataflow;
use crate::watermark::WatermarkTracker;
use crate::window::event_times;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartupMode {
    Earliest,
    Latest,
    GroupOffsets,
    Timestamp(i64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BadRecordPolicy {
    Fail,
    Skip,
    DeadLetter(String),
}

/// Where a source table's column comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceColumn {
    /// A column of the decoded value.
    Value(usize),
    /// Kafka metadata (`METADATA FROM 'timestamp' | 'partition' | 'offset'`).
    Timestamp,
    Partition,
    Offset,
}

pub struct SourceSpec {
    pub table: String,
    pub topic: String,
    pub properties: Vec<(String, String)>,
    pub startup: StartupMode,
    pub format: FormatKind,
    pub csv_delimiter: u8,
    pub value_schema: SchemaRef,
    pub columns: Vec<SourceColumn>,
    pub schema: SchemaRef,
    /// Evaluated on the source batch; its maximum per partition is that partition's watermark.
    pub watermark: Option<Arc<dyn PhysicalExpr>>,
    pub idle_timeout: Option<Duration>,
    pub bad_records: BadRecordPolicy,
}

pub struct SinkSpec {
    pub table: String,
    pub topic: String,
    pub properties: Vec<(String, String)>,
    pub format: FormatKind,
    pub csv_delimiter: u8,
    /// The sink's declared columns: the dataflow's output is cast to them, by position.
    pub schema: SchemaRef,
    pub value_columns: Vec<usize>,
    pub key: Option<(FormatKind, Vec<usize>)>,
    /// A timestamp column of the output to measure end-to-end latency by.
    pub event_time_column: Option<usize>,
    /// `upsert-kafka`: the input is an updating stream; deletes become tombstones.
    pub upsert: bool,
    /// `'key.fields-prefix'`: the key columns' names carry it; the message key does not.
    pub key_prefix: Option<String>,
}

pub struct PipelineRun {
    pub id: String,
    pub group_id: String,
    pub source: SourceSpec,
    pub dataflow: Dataflow,
    pub sink: SinkSpec,
    /// Use the group's committed offsets when there are any (a restart).
    pub resume: bool,
    pub max_batch: usize,
    pub commit_interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PipelineState {
    Running,
    Stopped,
    Failed,
}

/// Shared between a pipeline's thread and its owner.
#[derive(Debug)]
pub struct PipelineControl {
    pub stop: AtomicBool,
    pub metrics: Arc<PipelineMetrics>,
    pub status: Mutex<(PipelineState, Option<String>)>,
}

impl PipelineControl {
    pub fn new(metrics: Arc<PipelineMetrics>) -> Arc<Self> {
        Arc::new(PipelineControl {
            stop: AtomicBool::new(false),
            metrics,
            status: Mutex::new((PipelineState::Running, None)),
        })
    }

    pub fn state(&self) -> (PipelineState, Option<String>) {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or((PipelineState::Failed, None))
    }

    pub(crate) fn set(&self, state: PipelineState, error: Option<String>) {
        if let Ok(mut s) = self.status.lock() {
            *s = (state, error);
        }
    }
}

/// Starts the pipeline's thread.
pub fn spawn(run: PipelineRun, control: Arc<PipelineControl>) -> std::thread::JoinHandle<()> {
    let name = format!("pipeline-{}", run.id);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let id = run.id.clone();
            // a bug in an operator fails this pipeline, not the process
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_pipeline(run, &control)
            }));
            match outcome {
                Ok(Ok(())) => control.set(PipelineState::Stopped, None),
                Ok(Err(e)) => {
                    tracing::error!(pipeline = %id, "pipeline failed: {e}");
                    control.set(PipelineState::Failed, Some(e.to_string()));
                }
                Err(panic) => {
                    let what = panic_message(&panic);
                    tracing::error!(pipeline = %id, "pipeline crashed: {what}");
                    control.set(
                        PipelineState::Failed,
                        Some(format!("internal error: {what}")),
                    );
                }
            }
        })
        .expect("spawning a pipeline thread")
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

struct SinkContext {
    first_error: Mutex<Option<String>>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Sends, waiting while librdkafka's queue is full (for at most a minute: the cluster is not
/// taking writes then, and the pipeline fails rather than hang).
fn send_retrying(
    producer: &ThreadedProducer<SinkContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                if Instant::now() < deadline =>
            {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

pub(crate) fn set_default(config: &mut ClientConfig, key: &str, value: &str) {
    if config.get(key).is_none() {
        config.set(key, value);
    }
}

pub(crate) fn client_config(properties: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

struct Sink {
    spec: SinkSpec,
    producer: ThreadedProducer<SinkContext>,
    value_encoder: RecordEncoder,
    key_encoder: Option<RecordEncoder>,
    values: Encoded,
    keys: Encoded,
}

impl Sink {
    fn new(spec: SinkSpec) -> Result<Self> {
        let mut config = client_config(&spec.properties);
        set_default(&mut config, "linger.ms", "5");
        set_default(&mut config, "acks", "all");
        let producer: ThreadedProducer<SinkContext> = config.create_with_context(SinkContext {
            first_error: Mutex::new(None),
        })?;
        Ok(Sink {
            value_encoder: RecordEncoder::new(spec.format, spec.csv_delimiter),
            key_encoder: spec
                .key
                .as_ref()
                .map(|(f, _)| RecordEncoder::new(*f, spec.csv_delimiter)),
            spec,
            producer,
            values: Encoded::default(),
            keys: Encoded::default(),
        })
    }

    fn failed(&self) -> Option<String> {
        self.producer
            .context()
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
    }

    fn write(&mut self, batch: &RecordBatch, metrics: &PipelineMetrics) -> Result<()> {
        let columns = batch
            .columns()
            .iter()
            .zip(self.spec.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        let batch = RecordBatch::try_new(self.spec.schema.clone(), columns)?;
        self.values.clear();
        self.keys.clear();
        self.value_encoder
            .encode(&batch, &self.spec.value_columns, &mut self.values)?;
        if let (Some(enc), Some((_, cols))) = (&self.key_encoder, &self.spec.key) {
            enc.encode(&batch, cols, &mut self.keys)?;
        }
        for i in 0..self.values.len() {
            let mut record =
                BaseRecord::<[u8], [u8]>::to(&self.spec.topic).payload(self.values.get(i));
            if !self.keys.is_empty() {
                record = record.key(self.keys.get(i));
            }
            send_retrying(&self.producer, record)?;
        }
        metrics
            .records_out
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        if let Some(c) = self.spec.event_time_column {
            if let Ok(times) = event_times(batch.column(c)) {
                let now = chrono::Utc::now().timestamp_millis();
                for t in times.iter().flatten() {
                    metrics.observe_latency_ms(now.saturating_sub(t));
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.producer.flush(Duration::from_secs(60))?;
        match self.failed() {
            Some(e) => Err(StreamError::Source(format!(
                "writing to topic '{}': {e}",
                self.spec.topic
            ))),
            None => Ok(()),
        }
    }
}

fn run_pipeline(run: PipelineRun, control: &PipelineControl) -> Result<()> {
    let PipelineRun {
        id,
        group_id,
        source,
        mut dataflow,
        sink,
        resume,
        max_batch,
        commit_interval,
    } = run;
    let metrics = control.metrics.clone();
    let source = &source;
    let mut config = client_config(&source.properties);
    config
        .set("group.id", &group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("topic.metadata.refresh.interval.ms", "1000");
    set_default(&mut config, "auto.offset.reset", "earliest");
    // larger fetches than librdkafka's 1 MiB per partition: a pipeline reads in bulk
    set_default(&mut config, "max.partition.fetch.bytes", "10485760");
    set_default(&mut config, "fetch.max.bytes", "52428800");
    set_default(&mut config, "queued.max.messages.kbytes", "262144");
    // librdkafka waits a whole second (its default) before fetching again once its local
    // queue is full; a pipeline drains that queue in well under that, then would sit idle
    set_default(&mut config, "fetch.queue.backoff.ms", "10");
    let consumer: BaseConsumer = config.create()?;
    // a source topic that does not exist yet is waited for, as a consumer subscribing to it would
    let mut warned = false;
    let partitions = loop {
        let partitions = topic_partitions(&consumer, &source.topic)?;
        if !partitions.is_empty() {
            break partitions;
        }
        if control.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !warned {
            tracing::warn!(pipeline = %id, topic = %source.topic, "waiting for the source topic to exist");
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let slot: HashMap<i32, usize> = partitions
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, i))
        .collect();

    // the watermark committed with the offsets: windows up to it have fired and been written
    let mut restored_watermark: Option<i64> = None;
    let committed: HashMap<i32, i64> = if resume || source.startup == StartupMode::GroupOffsets {
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition(&source.topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        if resume {
            restored_watermark = committed
                .elements()
                .iter()
                .filter_map(|e| {
                    e.metadata()
                        .strip_prefix("kappa-watermark=")?
                        .parse::<i64>()
                        .ok()
                })
                .min();
        }
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    } else {
        HashMap::new()
    };
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let offset = match (committed.get(&p), &source.startup) {
            (Some(&o), _) => Offset::Offset(o),
            (None, StartupMode::Earliest) => Offset::Beginning,
            (None, StartupMode::Latest) => Offset::End,
            (None, StartupMode::GroupOffsets) => Offset::Stored,
            (None, StartupMode::Timestamp(ts)) => Offset::Offset(*ts),
        };
        tpl.add_partition_offset(&source.topic, p, offset)?;
    }
    if let StartupMode::Timestamp(_) = source.startup {
        if committed.is_empty() {
            tpl = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
        }
    }
    consumer.assign(&tpl)?;

    let decoder = RecordDecoder::new(
        source.format,
        source.value_schema.clone(),
        source.csv_delimiter,
    )?;
    let mut sink = Sink::new(sink)?;
    let dead_letters: Option<(String, ThreadedProducer<SinkContext>)> = match &source.bad_records {
        BadRecordPolicy::DeadLetter(topic) => Some((
            topic.clone(),
            client_config(&source.properties).create_with_context(SinkContext {
                first_error: Mutex::new(None),
            })?,
        )),
        _ => None,
    };
    let mut tracker = WatermarkTracker::new(partitions.len(), source.idle_timeout);
    let mut out: Vec<RecordBatch> = Vec::new();
    if let Some(wm) = restored_watermark {
        tracker.restore(wm);
        metrics.watermark_ms.store(wm, Ordering::Relaxed);
        // nothing is open yet: this only marks the windows up to wm as fired
        dataflow.on_watermark(wm, &mut out)?;
    }
    let mut next_offsets: HashMap<i32, i64> = HashMap::new();
    let mut last_commit = Instant::now();
    let mut last_poll_warning = Instant::now() - Duration::from_secs(60);
    let mut reported_null_time = 0u64;
    let op_names = dataflow.operator_names();
    tracing::info!(pipeline = %id, topic = %source.topic, partitions = partitions.len(), "pipeline running");

    while !control.stop.load(Ordering::Relaxed) {
        // one poll round: up to max_batch messages, grouped by partition in arrival order
        let mut messages: Vec<BorrowedMessage<'_>> = Vec::new();
        let mut wait = Duration::from_millis(100);
        while messages.len() < max_batch {
            match consumer.poll(wait) {
                Some(Ok(m)) => messages.push(m),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => return Err(e.into()),
                Some(Err(e)) => {
                    // transient (a broker restarting, a connection lost): librdkafka retries
                    if last_poll_warning.elapsed() > Duration::from_secs(10) {
                        tracing::warn!(pipeline = %id, "reading '{}': {e}", source.topic);
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
            let (Some(first), Some(last)) = (msgs.first(), msgs.last()) else {
                continue;
            };
            let first_offset = first.offset();
            next_offsets.insert(partition, last.offset() + 1);
            // tombstones carry no row
            let live: Vec<&BorrowedMessage<'_>> =
                msgs.into_iter().filter(|m| m.payload().is_some()).collect();
            metrics
                .records_in
                .fetch_add(live.len() as u64, Ordering::Relaxed);
            let payloads: Vec<&[u8]> = live
                .iter()
                .map(|m| m.payload().unwrap_or_default())
                .collect();
            let decoded = decoder.decode(&payloads)?;
            for (i, reason) in &decoded.bad {
                let m = live[*i];
                metrics.bad_records.fetch_add(1, Ordering::Relaxed);
                match (&source.bad_records, &dead_letters) {
                    (BadRecordPolicy::Fail, _) => {
                        return Err(StreamError::BadRecord {
                            topic: source.topic.clone(),
                            partition,
                            offset: m.offset(),
                            reason: format!(
                                "{reason} (table '{}'; set 'json.ignore-parse-errors' = 'true' or 'dead-letter.topic' to go on)",
                                source.table
                            ),
                        });
                    }
                    (BadRecordPolicy::Skip, _) => {}
                    (BadRecordPolicy::DeadLetter(_), Some((topic, producer))) => {
                        let origin = format!("{}[{}]@{}", source.topic, partition, m.offset());
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
                            .payload(payloads[*i])
                            .headers(headers);
                        if let Some(k) = m.key() {
                            record = record.key(k);
                        }
                        send_retrying(producer, record)?;
                    }
                    (BadRecordPolicy::DeadLetter(_), None) => {}
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
            let batch = assemble(source, &values, &rows, partition)?;
            let candidate = match &source.watermark {
                Some(expr) => match expr
                    .evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(StreamError::from)
                    .and_then(|wm| event_times(&wm))
                {
                    Ok(times) => max(&times),
                    // e.g. an event time so far out that `ts - INTERVAL` overflows: this batch
                    // does not move the watermark; the window operators drop such rows
                    Err(e) => {
                        tracing::warn!(pipeline = %id, "WATERMARK expression: {e}");
                        None
                    }
                },
                None => None,
            };
            let current = tracker.current();
            dataflow.process(batch, Some((partition, first_offset)), current, &mut out)?;
            if let Some(&s) = slot.get(&partition) {
                tracker.observe(s, candidate, now);
            }
        }
        drop(messages);
        if let Some(wm) = tracker.advance(now) {
            metrics.watermark_ms.store(wm, Ordering::Relaxed);
            dataflow.on_watermark(wm, &mut out)?;
        }
        for batch in out.drain(..) {
            sink.write(&batch, &metrics)?;
        }
        metrics
            .late_records_dropped
            .store(dataflow.stats.late_records_dropped, Ordering::Relaxed);
        let null_time = dataflow.stats.null_time_dropped;
        metrics
            .bad_records
            .fetch_add(null_time - reported_null_time, Ordering::Relaxed);
        reported_null_time = null_time;
        if let Ok(mut ops) = metrics.operators.lock() {
            *ops = op_names
                .iter()
                .zip(&dataflow.stats.busy)
                .map(|(n, d)| (n.clone(), d.as_nanos() as u64))
                .collect();
        }
        if let Some(e) = sink.failed() {
            return Err(StreamError::Source(format!(
                "writing to topic '{}': {e}",
                sink.spec.topic
            )));
        }
        if last_commit.elapsed() >= commit_interval {
            commit(
                &consumer,
                &sink,
                dead_letters.as_ref().map(|d| &d.1),
                &source.topic,
                &dataflow,
                &next_offsets,
                tracker.current(),
            )?;
            last_commit = Instant::now();
        }
    }
    commit(
        &consumer,
        &sink,
        dead_letters.as_ref().map(|d| &d.1),
        &source.topic,
        &dataflow,
        &next_offsets,
        tracker.current(),
    )?;
    tracing::info!(pipeline = %id, "pipeline stopped");
    Ok(())
}

/// The topic's partitions, empty when the topic does not exist.
pub(crate) fn topic_partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let Some(md) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    match md.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) | Some(RDKafkaErrorCode::UnknownTopic) => {
            return Ok(Vec::new())
        }
        Some(code) => return Err(StreamError::Source(format!("topic '{topic}': {code}"))),
    }
    let mut partitions: Vec<i32> = md.partitions().iter().map(|p| p.id()).collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// Flushes the sink, then commits for each partition the next offset to read, held back to
/// the first offset that an open window still needs.
fn commit(
    consumer: &BaseConsumer,
    sink: &Sink,
    dead_letters: Option<&ThreadedProducer<SinkContext>>,
    topic: &str,
    dataflow: &Dataflow,
    next_offsets: &HashMap<i32, i64>,
    watermark: i64,
) -> Result<()> {
    if next_offsets.is_empty() {
        return Ok(());
    }
    sink.flush()?;
    if let Some(p) = dead_letters {
        p.flush(Duration::from_secs(60))?;
        if let Some(e) = p.context().first_error.lock().ok().and_then(|e| e.clone()) {
            return Err(StreamError::Source(format!(
                "writing to the dead-letter topic: {e}"
            )));
        }
    }
    let pinned = dataflow.pinned_offsets();
    let mut tpl = TopicPartitionList::new();
    for (&p, &next) in next_offsets {
        let offset = pinned.get(&p).map_or(next, |&o| o.min(next));
        let mut e = tpl.add_partition(topic, p);
        e.set_offset(Offset::Offset(offset))?;
        if watermark != i64::MIN {
            e.set_metadata(format!("kappa-watermark={watermark}"));
        }
    }
    consumer.commit(&tpl, CommitMode::Sync)?;
    Ok(())
}

/// The source table's batch: decoded value columns and Kafka metadata, in table order.
pub(crate) fn assemble(
    source: &SourceSpec,
    values: &RecordBatch,
    rows: &[&BorrowedMessage<'_>],
    partition: i32,
) -> Result<RecordBatch> {
    let columns = source
        .columns
        .iter()
        .zip(source.schema.fields())
        .map(|(c, field)| -> Result<ArrayRef> {
            let array: ArrayRef = match c {
                SourceColumn::Value(i) => values.column(*i).clone(),
                SourceColumn::Timestamp => Arc::new(TimestampMillisecondArray::from_iter(
                    rows.iter().map(|m| m.timestamp().to_millis()),
                )),
                SourceColumn::Partition => Arc::new(Int32Array::from(vec![partition; rows.len()])),
                SourceColumn::Offset => Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|m| m.offset()),
                )),
            };
            if array.data_type() == field.data_type() {
                Ok(array)
            } else {
                Ok(cast(&array, field.data_type())?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(source.schema.clone(), columns)?)
}
