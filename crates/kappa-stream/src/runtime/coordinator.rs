//! The pipeline's coordinator: restores the last committed checkpoint (or a savepoint),
//! starts the tasks, triggers checkpoints, and completes each one by committing it — the
//! Kafka transaction with exactly-once, else a flush and an offset commit.
//!
//! The committed source offsets carry the checkpoint in their metadata
//! (`kappa-v2;chk=N;wm=W;cl=P:O,...`): its id (naming the local RocksDB checkpoints that
//! match it), the watermark, and the changelog offsets its state reaches. A restart whose
//! local checkpoints do not match rebuilds state from the changelog up to those offsets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::chain::Chain;
use super::exchange::Exchange;
use super::kafka::{self, Changelog, PipelineProducer, SinkWriter, TaskGate};
use super::kafka_source::KafkaSource;
use super::keyed_task::KeyedTask;
use super::source_task::{Output, SourceTask};
use super::{Delivery, Gate, RunSpec, RuntimeControl, SharedWatermarks};
use crate::error::{Result, StreamError};
use crate::operators::OpSpec;
use crate::pipeline::{client_config, set_default, topic_partitions, PipelineControl, StartupMode};
use crate::state::{copy_dir_plain, list_checkpoints, TaskState};

/// Batches a task's input queue holds: what a stalled task buffers in memory.
pub(crate) const CHANNEL_BATCHES: usize = 4;

pub(crate) enum Control {
    /// A checkpoint's barrier; `last`: the pipeline stops after this checkpoint, so sources
    /// read nothing more.
    Barrier {
        id: u64,
        last: bool,
    },
    /// Read on after a `last` barrier whose stop was called off.
    Resume,
    End,
}

pub(crate) enum Ack {
    Source {
        checkpoint: u64,
        offsets: Vec<(i32, i64)>,
        watermark: i64,
        idle: bool,
    },
    Task {
        checkpoint: u64,
        new_bytes: u64,
        alignment: Duration,
    },
    Finished {
        task: String,
        outcome: std::result::Result<(), String>,
    },
}

/// A committed checkpoint as the source offsets' metadata records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointMeta {
    pub id: u64,
    /// Which changelog topic holds the state (0: the first).
    pub epoch: u64,
    pub watermark: i64,
    /// Per changelog partition, the offset its state reaches (exclusive).
    pub changelog: Vec<(i32, i64)>,
}

impl CheckpointMeta {
    pub fn encode(&self) -> String {
        let cl: Vec<String> = self
            .changelog
            .iter()
            .map(|(p, o)| format!("{p}:{o}"))
            .collect();
        format!(
            "kappa-v2;chk={};wm={};ep={};cl={}",
            self.id,
            self.watermark,
            self.epoch,
            cl.join(",")
        )
    }

    pub fn decode(text: &str) -> Option<CheckpointMeta> {
        let rest = text.strip_prefix("kappa-v2;")?;
        let mut meta = CheckpointMeta {
            id: 0,
            epoch: 0,
            watermark: i64::MIN,
            changelog: Vec::new(),
        };
        for part in rest.split(';') {
            let (k, v) = part.split_once('=')?;
            match k {
                "chk" => meta.id = v.parse().ok()?,
                "wm" => meta.watermark = v.parse().ok()?,
                "ep" => meta.epoch = v.parse().ok()?,
                "cl" => {
                    for e in v.split(',').filter(|e| !e.is_empty()) {
                        let (p, o) = e.split_once(':')?;
                        meta.changelog.push((p.parse().ok()?, o.parse().ok()?));
                    }
                }
                _ => {}
            }
        }
        Some(meta)
    }
}

/// A savepoint's `_metadata.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavepointMeta {
    pub pipeline: String,
    pub sql: String,
    pub checkpoint: u64,
    pub created_at_ms: i64,
    pub topic: String,
    pub offsets: Vec<(i32, i64)>,
    pub watermark: i64,
    pub parallelism: usize,
    /// `(state id, signature)` of the stateful operators.
    pub operators: Vec<(u32, String)>,
    pub dir: String,
}

fn task_dir(state_dir: &Path, task: usize) -> PathBuf {
    state_dir.join(format!("task-{task}"))
}

/// The stateful operators of a plan with their state ids.
pub(crate) fn state_ids(ops: &[OpSpec]) -> Vec<Option<(u32, String)>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    ops.iter()
        .map(|op| {
            let sig = op.signature()?;
            let n = seen.entry(sig.clone()).or_insert(0);
            let id = op.state_id(*n)?;
            *n += 1;
            Some((id, sig))
        })
        .collect()
}

/// Checks that a savepoint's operator state fits the new plan: every stateful operator of the
/// savepoint must be in the plan with the same signature.
pub(crate) fn check_compatible(
    saved: &[(u32, String)],
    plan: &[Option<(u32, String)>],
) -> std::result::Result<(), String> {
    for (id, sig) in saved {
        if plan.iter().flatten().any(|(i, _)| i == id) {
            continue;
        }
        let kind = sig.split('(').next().unwrap_or(sig);
        let candidate = plan
            .iter()
            .flatten()
            .find(|(_, s)| s.split('(').next() == Some(kind));
        return Err(match candidate {
            Some((_, new)) => format!(
                "the savepoint's state of {sig} cannot be restored into the new query's {new}: its keys or aggregates changed (keep the GROUP BY keys and aggregate calls, or start without the savepoint)"
            ),
            None => format!(
                "the savepoint holds state of {sig}, which the new query does not have (start without the savepoint to drop it)"
            ),
        });
    }
    Ok(())
}

fn admin_config(properties: &[(String, String)]) -> rdkafka::ClientConfig {
    client_config(properties)
}

/// Creates the compacted changelog topic (one partition per keyed task) when missing, and
/// returns its partition count.
fn ensure_changelog(
    properties: &[(String, String)],
    topic: &str,
    partitions: usize,
) -> Result<usize> {
    let probe: BaseConsumer = client_config(properties).create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let existing = loop {
        match topic_partitions(&probe, topic) {
            Ok(p) => break p,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!("reading the changelog topic's metadata: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    };
    if !existing.is_empty() {
        return Ok(existing.len());
    }
    let admin: AdminClient<DefaultClientContext> = admin_config(properties).create()?;
    let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let results = futures::executor::block_on(admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    for r in results {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(StreamError::Checkpoint(format!(
                    "creating the changelog topic '{t}': {code}"
                )));
            }
        }
    }
    Ok(partitions)
}

/// Rebuilds a task's state from its changelog partition, up to `end` (exclusive).
fn rebuild_from_changelog(
    properties: &[(String, String)],
    topic: &str,
    partition: i32,
    end: i64,
    state: &mut TaskState,
) -> Result<u64> {
    if end <= 0 {
        return Ok(0);
    }
    let mut config = client_config(properties);
    config
        .set("group.id", "kappa-changelog-restore")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut applied = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if Instant::now() > deadline {
            return Err(StreamError::Checkpoint(format!(
                "restoring from changelog '{topic}' partition {partition} timed out"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                if m.offset() >= end {
                    break;
                }
                if let Some(k) = m.key() {
                    state.apply_raw(k, m.payload());
                    applied += 1;
                }
                if applied.is_multiple_of(10_000) {
                    state.flush()?;
                }
                if m.offset() + 1 >= end {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => {
                tracing::warn!("reading changelog '{topic}': {e}");
            }
            None => {}
        }
    }
    state.flush()?;
    Ok(applied)
}

struct Pending {
    id: u64,
    started: Instant,
    acks: usize,
    offsets: HashMap<i32, i64>,
    watermarks: Vec<(i64, bool)>,
    new_bytes: u64,
    alignment: Duration,
    savepoint: Option<super::SavepointRequest>,
}

pub(crate) fn run(
    spec: RunSpec,
    control: &PipelineControl,
    runtime: &Arc<RuntimeControl>,
) -> Result<()> {
    let RunSpec {
        id,
        group_id,
        sql,
        source,
        ops,
        sink,
        resume,
        settings,
    } = spec;
    let metrics = control.metrics.clone();
    let source = Arc::new(source);
    let sink = Arc::new(sink);
    let props = source.properties.clone();
    let changelog_base = format!("_kappa-pipeline-{id}-changelog");

    // the partitions to read (a topic that does not exist yet is waited for)
    let mut committer_config = client_config(&props);
    committer_config
        .set("group.id", &group_id)
        .set("enable.auto.commit", "false");
    let committer: BaseConsumer = committer_config.create()?;
    let mut warned = false;
    let partitions = loop {
        match topic_partitions(&committer, &source.topic) {
            Ok(p) if !p.is_empty() => break p,
            Ok(_) => {
                if !warned {
                    tracing::warn!(pipeline = %id, topic = %source.topic, "waiting for the source topic to exist");
                    warned = true;
                }
            }
            // the cluster is not answering yet (starting, or a network problem): try again
            Err(e) => {
                tracing::warn!(pipeline = %id, topic = %source.topic, "reading the source topic's metadata: {e}; retrying")
            }
        }
        if control.stop.load(Ordering::Relaxed) || runtime.cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    tracing::info!(pipeline = %id, topic = %source.topic, partitions = partitions.len(), "pipeline starting");

    // first fence an earlier instance (aborting the transaction it left open, or letting its
    // commit finish), so that the committed offsets read next are final
    let producer = kafka::producer(
        &sink.properties,
        settings.delivery,
        &settings.transactional_id,
        settings.checkpoint_interval,
        &changelog_base,
    )?;
    if settings.delivery == Delivery::ExactlyOnce {
        let started = Instant::now();
        producer.init_transactions(Duration::from_secs(60))?;
        producer.begin_transaction()?;
        tracing::info!(pipeline = %id, transactional_id = %settings.transactional_id, ms = super::millis_since(started), "transactions initialized (an earlier instance is fenced)");
    }

    // where to start: a savepoint, the committed checkpoint, or the startup mode
    let ids = state_ids(&ops);
    let mut savepoint: Option<SavepointMeta> = None;
    if let Some(dir) = &settings.from_savepoint {
        let path = dir.join("_metadata.json");
        let bytes = std::fs::read(&path).map_err(|e| {
            StreamError::Checkpoint(format!("reading savepoint {}: {e}", path.display()))
        })?;
        let meta: SavepointMeta = serde_json::from_slice(&bytes)
            .map_err(|e| StreamError::Checkpoint(format!("savepoint {}: {e}", path.display())))?;
        check_compatible(&meta.operators, &ids).map_err(StreamError::Checkpoint)?;
        savepoint = Some(meta);
    }
    let mut committed: HashMap<i32, i64> = HashMap::new();
    let mut meta: Option<CheckpointMeta> = None;
    let mut v1_watermark: Option<i64> = None;
    if savepoint.is_none() && (resume || source.startup == StartupMode::GroupOffsets) {
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition(&source.topic, p);
        }
        let c = committer.committed_offsets(tpl, Duration::from_secs(10))?;
        for e in c.elements() {
            if let Offset::Offset(o) = e.offset() {
                committed.insert(e.partition(), o);
            }
            if resume {
                if let Some(m) = CheckpointMeta::decode(e.metadata()) {
                    if meta.as_ref().is_none_or(|x| m.id > x.id) {
                        meta = Some(m);
                    }
                }
                // offsets the v1 runtime committed: its watermark (windows up to it fired)
                if let Some(w) = e
                    .metadata()
                    .strip_prefix("kappa-watermark=")
                    .and_then(|w| w.parse::<i64>().ok())
                {
                    v1_watermark = Some(v1_watermark.map_or(w, |x: i64| x.min(w)));
                }
            }
        }
    }
    if let Some(sp) = &savepoint {
        committed = sp.offsets.iter().copied().collect();
    }

    // a start from a savepoint begins a new changelog (the old one holds a timeline the
    // savepoint leaves behind); a checkpoint names the changelog its state is in
    let epoch = match (&savepoint, &meta) {
        (Some(_), _) => crate::state::now_ms(),
        (None, Some(m)) => m.epoch,
        (None, None) => 0,
    };
    let changelog_topic = if epoch == 0 {
        changelog_base.clone()
    } else {
        format!("{changelog_base}-{epoch}")
    };

    let keyed_at = ops.iter().position(|o| o.partition_keys().is_some());
    let parallelism = settings.parallelism.max(1);
    let keyed_tasks = if keyed_at.is_some() { parallelism } else { 0 };
    let source_tasks = parallelism.min(partitions.len()).max(1);
    runtime
        .parallelism
        .store(parallelism as u64, Ordering::Relaxed);

    // with exactly-once, writes past a barrier must go to the next transaction; with
    // at-least-once, holding them keeps the checkpoint's flush finite under load
    let gate = Arc::new(Gate::new(settings.delivery != Delivery::None));
    if let Some(m) = &meta {
        // the changelog's state reaches these offsets (until tasks write more)
        kafka::seed_changelog_ends(&producer, &m.changelog);
    }
    let abort = Arc::new(AtomicBool::new(false));
    let busy: Arc<Vec<AtomicU64>> = Arc::new((0..ops.len()).map(|_| AtomicU64::new(0)).collect());
    let (ack_tx, ack_rx): (Sender<Ack>, Receiver<Ack>) = mpsc::channel();
    let mut next_id = meta
        .as_ref()
        .map_or(0, |m| m.id)
        .max(savepoint.as_ref().map_or(0, |s| s.checkpoint));
    gate.open(next_id);
    let restored_watermark = meta
        .as_ref()
        .map(|m| m.watermark)
        .or(savepoint.as_ref().map(|s| s.watermark))
        .or(v1_watermark)
        .filter(|&w| w != i64::MIN);

    // keyed tasks: state restored, then started
    let mut handles = Vec::new();
    let mut inboxes = Vec::new();
    if let Some(at) = keyed_at {
        let cl_partitions = ensure_changelog(&props, &changelog_topic, keyed_tasks)?;
        if cl_partitions != keyed_tasks && (meta.is_some() || savepoint.is_some()) {
            return Err(StreamError::Checkpoint(format!(
                "the pipeline's state was written by {cl_partitions} tasks; run it with 'parallelism.default' = '{cl_partitions}' (changing the parallelism of a stateful pipeline is not supported yet)"
            )));
        }
        if let Some(sp) = &savepoint {
            if sp.parallelism != keyed_tasks {
                return Err(StreamError::Checkpoint(format!(
                    "the savepoint was taken with parallelism {}; start it with 'parallelism.default' = '{}'",
                    sp.parallelism, sp.parallelism
                )));
            }
        }
        let mut restored_from = None;
        for task in 0..keyed_tasks {
            let dir = task_dir(&settings.state_dir, task);
            let mut state = match (&savepoint, &meta) {
                (Some(_), _) => {
                    let sp_dir = settings.from_savepoint.clone().unwrap_or_default();
                    restored_from = Some(format!("savepoint {}", sp_dir.display()));
                    let from = sp_dir.join(format!("task-{task}"));
                    TaskState::open(&dir, &settings.state.clone(), Some(&from), false)?
                }
                (None, Some(m)) => {
                    let local = dir.join(format!("chk-{}", m.id));
                    if local.join("CURRENT").exists() {
                        restored_from = Some(format!("local checkpoint {}", m.id));
                        TaskState::open(&dir, &settings.state, Some(&local), false)?
                    } else {
                        restored_from = Some(format!("changelog (checkpoint {})", m.id));
                        let mut s = TaskState::open(&dir, &settings.state, None, true)?;
                        let end = m
                            .changelog
                            .iter()
                            .find(|(p, _)| *p == task as i32)
                            .map_or(0, |(_, o)| *o);
                        let n = rebuild_from_changelog(
                            &props,
                            &changelog_topic,
                            task as i32,
                            end,
                            &mut s,
                        )?;
                        tracing::info!(pipeline = %id, task, records = n, "state rebuilt from the changelog");
                        s
                    }
                }
                (None, None) => TaskState::open(&dir, &settings.state, None, true)?,
            };
            let task_gate = TaskGate {
                gate: gate.clone(),
                barrier: Arc::new(AtomicU64::new(next_id)),
            };
            if settings.delivery != Delivery::None {
                state.set_changelog(Some(Box::new(Changelog {
                    producer: producer.clone(),
                    topic: changelog_topic.clone(),
                    partition: task as i32,
                    gate: task_gate.clone(),
                })));
                if savepoint.is_some() {
                    // the changelog must describe the savepoint's state from here on
                    state.republish()?;
                }
            }
            let task_ops = ops[at..]
                .iter()
                .zip(&ids[at..])
                .map(|(o, sid)| o.instantiate(sid.as_ref().map(|(i, _)| *i), &settings.state))
                .collect::<Result<Vec<_>>>()?;
            let mut chain = Chain::new(task_ops, busy.clone(), at, metrics.clone());
            chain.restore(&state)?;
            let (tx, rx) = mpsc::sync_channel(CHANNEL_BATCHES);
            inboxes.push(tx);
            let keyed = KeyedTask {
                index: task,
                inbox: rx,
                inputs: source_tasks,
                chain,
                state,
                sink: Box::new(SinkWriter::new(
                    sink.clone(),
                    producer.clone(),
                    task_gate.clone(),
                    metrics.clone(),
                    runtime.clone(),
                )),
                acks: ack_tx.clone(),
                gate: task_gate,
                metrics: metrics.clone(),
                runtime: runtime.clone(),
                restored_watermark,
            };
            let acks = ack_tx.clone();
            handles.push(spawn_task(format!("{id}-keyed-{task}"), acks, move || {
                keyed.run()
            })?);
        }
        if let Ok(mut c) = runtime.checkpoints.lock() {
            c.restored_from = restored_from;
        }
    }

    // source tasks: partitions dealt round-robin
    let watermarks = Arc::new(SharedWatermarks::new(source_tasks));
    let mut controls = Vec::new();
    let pre = keyed_at.unwrap_or(ops.len());
    for task in 0..source_tasks {
        let mine: Vec<i32> = partitions
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| i % source_tasks == task)
            .map(|(_, p)| p)
            .collect();
        let mut config = client_config(&props);
        config
            .set("group.id", &group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed");
        set_default(&mut config, "auto.offset.reset", "earliest");
        set_default(&mut config, "max.partition.fetch.bytes", "10485760");
        set_default(&mut config, "fetch.max.bytes", "52428800");
        // librdkafka's prefetch is what a stalled pipeline holds in memory: bounded
        set_default(&mut config, "queued.max.messages.kbytes", "65536");
        set_default(&mut config, "fetch.queue.backoff.ms", "10");
        let consumer: BaseConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        let mut positions = HashMap::new();
        for &p in &mine {
            let offset = match (committed.get(&p), &source.startup) {
                (Some(&o), _) => {
                    positions.insert(p, o);
                    Offset::Offset(o)
                }
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
        let task_gate = TaskGate {
            gate: gate.clone(),
            barrier: Arc::new(AtomicU64::new(next_id)),
        };
        let output = if keyed_at.is_some() {
            let keys = ops[pre]
                .partition_keys()
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            Output::Exchange(Exchange::new(
                task,
                keys,
                inboxes.clone(),
                runtime.clone(),
                gate.clone(),
            ))
        } else {
            Output::Sink(Box::new(SinkWriter::new(
                sink.clone(),
                producer.clone(),
                task_gate.clone(),
                metrics.clone(),
                runtime.clone(),
            )))
        };
        let task_ops = ops[..pre]
            .iter()
            .map(|o| o.instantiate(None, &settings.state))
            .collect::<Result<Vec<_>>>()?;
        let (ctl_tx, ctl_rx) = mpsc::channel();
        controls.push(ctl_tx);
        let reader = KafkaSource::new(
            id.clone(),
            source.clone(),
            consumer,
            &mine,
            positions,
            producer.clone(),
            task_gate.clone(),
            metrics.clone(),
        )?;
        let st = SourceTask {
            index: task,
            pipeline: id.clone(),
            source: source.clone(),
            reader: Box::new(reader),
            restored_watermark,
            chain: Chain::new(task_ops, busy.clone(), 0, metrics.clone()),
            output,
            control: ctl_rx,
            acks: ack_tx.clone(),
            gate: task_gate,
            metrics: metrics.clone(),
            watermarks: watermarks.clone(),
            max_batch: settings.max_batch,
            abort: abort.clone(),
        };
        handles.push(spawn_task(
            format!("{id}-source-{task}"),
            ack_tx.clone(),
            move || st.run(),
        )?);
    }
    drop(inboxes);
    if let Some(w) = restored_watermark {
        metrics.watermark_ms.fetch_max(w, Ordering::Relaxed);
    }
    let names: Vec<String> = ops.iter().map(OpSpec::name).collect();
    tracing::info!(pipeline = %id, topic = %source.topic, partitions = partitions.len(), source_tasks, keyed_tasks, delivery = ?settings.delivery, "pipeline running");

    let total_acks = source_tasks + keyed_tasks;
    let mut pending: Option<Pending> = None;
    let mut last_trigger = Instant::now();
    let mut stopping = false;
    let mut finished = 0usize;
    let fail = |e: StreamError| -> Result<()> {
        abort.store(true, Ordering::Relaxed);
        gate.fail();
        Err(e)
    };
    let mut cancelled = false;
    let outcome: Result<()> = loop {
        if runtime.cancel.load(Ordering::Relaxed) {
            cancelled = true;
            break Ok(());
        }
        // publish operator timings
        if let Ok(mut o) = metrics.operators.lock() {
            *o = names
                .iter()
                .zip(busy.iter())
                .map(|(n, b)| (n.clone(), b.load(Ordering::Relaxed)))
                .collect();
        }
        if pending.is_none() {
            let savepoint_req = runtime.savepoint.lock().ok().and_then(|mut s| s.take());
            let want_stop = control.stop.load(Ordering::Relaxed) && !stopping;
            if want_stop {
                stopping = true;
            }
            if savepoint_req.is_some()
                || want_stop
                || last_trigger.elapsed() >= settings.checkpoint_interval
            {
                if let Some(req) = &savepoint_req {
                    if req.stop {
                        stopping = true;
                    }
                }
                next_id += 1;
                for c in &controls {
                    let _ = c.send(Control::Barrier {
                        id: next_id,
                        last: stopping,
                    });
                }
                pending = Some(Pending {
                    id: next_id,
                    started: Instant::now(),
                    acks: 0,
                    offsets: HashMap::new(),
                    watermarks: Vec::new(),
                    new_bytes: 0,
                    alignment: Duration::ZERO,
                    savepoint: savepoint_req,
                });
                last_trigger = Instant::now();
            }
        }
        let ack = match ack_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(a) => a,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        };
        match ack {
            Ack::Finished { task, outcome } => {
                finished += 1;
                if let Err(e) = outcome {
                    tracing::warn!(pipeline = %id, "task {task} failed: {e}");
                    break fail(StreamError::Source(e));
                }
                if finished == handles.len() {
                    break Ok(());
                }
                if !stopping {
                    break fail(StreamError::Checkpoint(format!(
                        "task {task} ended unexpectedly"
                    )));
                }
            }
            Ack::Source {
                checkpoint,
                offsets,
                watermark,
                idle,
            } => {
                if let Some(p) = pending.as_mut().filter(|p| p.id == checkpoint) {
                    p.acks += 1;
                    p.offsets.extend(offsets);
                    p.watermarks.push((watermark, idle));
                }
            }
            Ack::Task {
                checkpoint,
                new_bytes,
                alignment,
                ..
            } => {
                if let Some(p) = pending.as_mut().filter(|p| p.id == checkpoint) {
                    p.acks += 1;
                    p.new_bytes += new_bytes;
                    p.alignment = p.alignment.max(alignment);
                }
            }
        }
        if pending.as_ref().is_some_and(|p| p.acks == total_acks) {
            let Some(p) = pending.take() else { continue };
            let completed = complete(
                &p,
                &producer,
                &committer,
                &source.topic,
                settings.delivery,
                &gate,
                &runtime.cancel,
                epoch,
            );
            let meta = match completed {
                Ok(m) => m,
                Err(_) if runtime.cancel.load(Ordering::Relaxed) => {
                    cancelled = true;
                    break Ok(());
                }
                Err(e) => {
                    if let Ok(mut c) = runtime.checkpoints.lock() {
                        c.failed += 1;
                    }
                    if let Some(req) = p.savepoint {
                        let _ = req.reply.send(Err(e.to_string()));
                    }
                    break fail(e);
                }
            };
            let full: u64 = (0..keyed_tasks)
                .map(|t| dir_size(&task_dir(&settings.state_dir, t).join(format!("chk-{}", p.id))))
                .sum();
            if let Ok(mut c) = runtime.checkpoints.lock() {
                c.completed += 1;
                c.last_id = Some(p.id);
                c.last_completed_at_ms = Some(chrono::Utc::now().timestamp_millis());
                c.last_duration_ms = Some(super::millis_since(p.started));
                c.last_alignment_ms = Some(p.alignment.as_millis() as u64);
                c.last_size_bytes = Some(p.new_bytes);
                c.last_full_size_bytes = Some(full);
            }
            if let Some(req) = p.savepoint {
                let result = write_savepoint(
                    &req.dir,
                    &settings.state_dir,
                    keyed_tasks,
                    SavepointMeta {
                        pipeline: id.clone(),
                        sql: sql.clone(),
                        checkpoint: p.id,
                        created_at_ms: chrono::Utc::now().timestamp_millis(),
                        topic: source.topic.clone(),
                        offsets: p.offsets.iter().map(|(&k, &v)| (k, v)).collect(),
                        watermark: meta.watermark,
                        parallelism: keyed_tasks,
                        operators: ids.iter().flatten().cloned().collect(),
                        dir: req.dir.display().to_string(),
                    },
                );
                if result.is_err() && !control.stop.load(Ordering::Relaxed) {
                    // the pipeline goes on: it was asked to stop only with a savepoint
                    stopping = false;
                    for c in &controls {
                        let _ = c.send(Control::Resume);
                    }
                }
                let _ = req.reply.send(result.map_err(|e| e.to_string()));
            }
            for t in 0..keyed_tasks {
                let dir = task_dir(&settings.state_dir, t);
                for (cid, path) in list_checkpoints(&dir) {
                    if cid < p.id {
                        let _ = std::fs::remove_dir_all(path);
                    }
                }
            }
            if stopping {
                for c in &controls {
                    let _ = c.send(Control::End);
                }
            }
        }
    };
    if outcome.is_err() || cancelled {
        abort.store(true, Ordering::Relaxed);
        gate.fail();
        if settings.delivery == Delivery::ExactlyOnce {
            let _ = producer.abort_transaction(Duration::from_secs(10));
        }
    }
    for h in handles {
        let _ = h.join();
    }
    if outcome.is_ok() && !cancelled && settings.delivery == Delivery::ExactlyOnce {
        // what was written after the last checkpoint is redone from it on the next start
        if let Err(e) = producer.abort_transaction(Duration::from_secs(30)) {
            tracing::warn!(pipeline = %id, "aborting the transaction after the last checkpoint: {e}");
        }
    }
    if outcome.is_ok() {
        tracing::info!(pipeline = %id, "pipeline stopped");
    }
    outcome
}

fn spawn_task(
    name: String,
    acks: Sender<Ack>,
    f: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let outcome = match outcome {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(panic) => Err(format!(
                    "internal error: {}",
                    crate::pipeline::panic_message(&panic)
                )),
            };
            let _ = acks.send(Ack::Finished {
                task: name,
                outcome,
            });
        })
        .map_err(|e| StreamError::Checkpoint(format!("starting a task thread: {e}")))
}

#[allow(clippy::too_many_arguments)]
/// Commits checkpoint `p`: its offsets (with the checkpoint in their metadata) and, with
/// exactly-once, the transaction holding its output and changelog.
fn complete(
    p: &Pending,
    producer: &PipelineProducer,
    committer: &BaseConsumer,
    topic: &str,
    delivery: Delivery,
    gate: &Gate,
    cancel: &AtomicBool,
    epoch: u64,
) -> Result<CheckpointMeta> {
    let timeout = Duration::from_secs(60);
    if delivery != Delivery::ExactlyOnce {
        flush(producer, timeout, cancel)?;
        if let Some(e) = kafka::failed(producer) {
            return Err(StreamError::Source(format!("writing output: {e}")));
        }
    }
    let mut changelog: Vec<(i32, i64)> = kafka::changelog_ends(producer).into_iter().collect();
    let meta_of = |changelog: &[(i32, i64)]| CheckpointMeta {
        id: p.id,
        epoch,
        watermark: super::combine(p.watermarks.iter().copied()),
        changelog: changelog.to_vec(),
    };
    let tpl_of = |meta: &CheckpointMeta| -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        let text = meta.encode();
        for (&part, &off) in &p.offsets {
            let mut e = tpl.add_partition(topic, part);
            e.set_offset(Offset::Offset(off))?;
            e.set_metadata(text.clone());
        }
        Ok(tpl)
    };
    match delivery {
        Delivery::ExactlyOnce => {
            // the changelog's last offsets are known once its records are delivered
            flush(producer, timeout, cancel)?;
            changelog = kafka::changelog_ends(producer).into_iter().collect();
            changelog.sort_unstable();
            let meta = meta_of(&changelog);
            let tpl = tpl_of(&meta)?;
            if tpl.count() > 0 {
                let cgm = committer
                    .group_metadata()
                    .ok_or_else(|| StreamError::Checkpoint("no consumer group metadata".into()))?;
                producer.send_offsets_to_transaction(&tpl, &cgm, timeout)?;
            }
            producer.commit_transaction(timeout)?;
            producer.begin_transaction()?;
            gate.open(p.id);
            Ok(meta)
        }
        Delivery::AtLeastOnce | Delivery::None => {
            changelog.sort_unstable();
            let meta = meta_of(&changelog);
            let tpl = tpl_of(&meta)?;
            if tpl.count() > 0 {
                committer.commit(&tpl, CommitMode::Sync)?;
            }
            gate.open(p.id);
            Ok(meta)
        }
    }
}

/// Waits for every message sent to be delivered, up to `timeout`, unless cancelled.
fn flush(producer: &PipelineProducer, timeout: Duration, cancel: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match producer.flush(Duration::from_millis(200)) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::OperationTimedOut)) => {
                if cancel.load(Ordering::Relaxed) {
                    return Err(StreamError::Checkpoint(
                        "cancelled while flushing the output".into(),
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(StreamError::Checkpoint(format!(
                        "the output was not delivered within {timeout:?}"
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Copies checkpoint `meta.checkpoint` of every task into a self-contained directory.
fn write_savepoint(
    dir: &Path,
    state_dir: &Path,
    tasks: usize,
    meta: SavepointMeta,
) -> Result<SavepointMeta> {
    if dir.join("_metadata.json").exists() {
        return Err(StreamError::Checkpoint(format!(
            "savepoint directory {} already holds a savepoint",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| StreamError::Checkpoint(format!("creating {}: {e}", dir.display())))?;
    for t in 0..tasks {
        let from = task_dir(state_dir, t).join(format!("chk-{}", meta.checkpoint));
        copy_dir_plain(&from, &dir.join(format!("task-{t}")))?;
    }
    let bytes =
        serde_json::to_vec_pretty(&meta).map_err(|e| StreamError::Checkpoint(e.to_string()))?;
    let path = dir.join("_metadata.json");
    std::fs::write(&path, bytes)
        .map_err(|e| StreamError::Checkpoint(format!("writing {}: {e}", path.display())))?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_metadata_round_trips() {
        let m = CheckpointMeta {
            id: 42,
            epoch: 7,
            watermark: -5,
            changelog: vec![(0, 10), (1, 0)],
        };
        assert_eq!(CheckpointMeta::decode(&m.encode()), Some(m));
        assert_eq!(CheckpointMeta::decode("kappa-watermark=5"), None);
        assert_eq!(CheckpointMeta::decode("kappa-v2;chk=x"), None);
    }

    #[test]
    fn savepoint_state_must_match_the_new_plan() {
        let saved = vec![(7, "group_aggregate(keys: k Int64; count(1))".to_string())];
        assert!(check_compatible(&saved, &[None, Some((7, "x".into()))]).is_ok());
        let e = check_compatible(
            &saved,
            &[Some((8, "group_aggregate(keys: k Utf8; count(1))".into()))],
        )
        .unwrap_err();
        assert!(e.contains("keys or aggregates changed"), "{e}");
        let e = check_compatible(&saved, &[None]).unwrap_err();
        assert!(e.contains("does not have"), "{e}");
    }
}
