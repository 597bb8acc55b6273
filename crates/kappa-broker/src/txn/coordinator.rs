//! The transaction coordinator: one [`TxnMetadata`] per transactional id, every change stored
//! in the compacted `__transaction_state` topic (fsynced before the answer), COMMIT/ABORT
//! markers written to every partition of a transaction (and to `__consumer_offsets` for its
//! offset commits), timed-out transactions aborted with a bumped epoch, and transactions a
//! crash left half-ended completed on start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use kappa_log::records::{encode_batch, plain_record};
use kappa_log::{ControlType, Log, LogError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::state::{
    EndOutcome, InitOutcome, ProducerIdAndEpoch, TxnMetadata, TxnPartition, TxnState,
};
use crate::broker::Broker;
use crate::groups::OFFSETS_TOPIC;
use crate::topics::{now_ms, TopicError, TopicRegistry};

pub const TXN_STATE_TOPIC: &str = "__transaction_state";
/// The partition of `__consumer_offsets` a group's offsets live in (it has one).
pub const OFFSETS_PARTITION: i32 = 0;

/// Counters and gauges of the coordinator (registered by [`crate::metrics::BrokerMetrics`]).
#[derive(Default, Clone)]
pub struct TxnMetrics {
    pub started: Counter,
    pub committed: Counter,
    pub aborted: Counter,
    pub timed_out: Counter,
    pub open: Gauge,
}

pub struct TxnCoordinator {
    /// The stored state of every transactional id.
    view: Mutex<HashMap<String, TxnMetadata>>,
    /// Serializes the changes of one transactional id (held across storing and markers).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Producer id -> transactional id, for produce-side checks and descriptions.
    by_producer: Mutex<HashMap<i64, String>>,
    log: Arc<Log>,
    max_timeout_ms: i32,
    pub metrics: TxnMetrics,
}

/// A failure to store the coordinator's state or write markers.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("transaction state could not be stored: {0}")]
    Store(#[from] LogError),
    #[error("transaction markers could not be written: {0}")]
    Markers(String),
}

impl From<TxnError> for ResponseError {
    fn from(_: TxnError) -> ResponseError {
        // What clients retry on, as Kafka answers when its state log cannot be written.
        ResponseError::CoordinatorNotAvailable
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TxnCoordinator {
    /// Opens (creating if needed) the transaction state topic and replays it.
    pub fn open(topics: &TopicRegistry, max_timeout_ms: i32) -> Result<TxnCoordinator, TopicError> {
        let log = topics.internal_log(TXN_STATE_TOPIC)?;
        let mut view: HashMap<String, TxnMetadata> = HashMap::new();
        log.scan_batches(|header, mut bytes| {
            let set = match RecordBatchDecoder::decode(&mut bytes) {
                Ok(set) => set,
                Err(e) => {
                    tracing::warn!(offset = header.base_offset, error = %e, "skipping an undecodable batch in {TXN_STATE_TOPIC}");
                    return;
                }
            };
            for record in set.records {
                let Some(id) = record
                    .key
                    .as_ref()
                    .and_then(|k| String::from_utf8(k.to_vec()).ok())
                else {
                    continue;
                };
                match record
                    .value
                    .as_ref()
                    .and_then(|v| serde_json::from_slice::<TxnMetadata>(v).ok())
                {
                    Some(m) => {
                        view.insert(id, m);
                    }
                    None => {
                        view.remove(&id);
                    }
                }
            }
        })?;
        let by_producer = view
            .values()
            .map(|m| (m.producer_id, m.transactional_id.clone()))
            .collect();
        let metrics = TxnMetrics::default();
        metrics.open.set(
            view.values()
                .filter(|m| m.state == TxnState::Ongoing)
                .count() as i64,
        );
        Ok(TxnCoordinator {
            view: Mutex::new(view),
            locks: Mutex::new(HashMap::new()),
            by_producer: Mutex::new(by_producer),
            log,
            max_timeout_ms,
            metrics,
        })
    }

    fn id_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks).entry(id.to_string()).or_default().clone()
    }

    /// The stored metadata of `id`.
    pub fn get(&self, id: &str) -> Option<TxnMetadata> {
        lock(&self.view).get(id).cloned()
    }

    /// The stored metadata of `id`, which a request about an open transaction needs.
    fn existing(&self, id: &str) -> Result<TxnMetadata, ResponseError> {
        self.get(id).ok_or(ResponseError::InvalidProducerIdMapping)
    }

    /// Every transactional id's metadata.
    pub fn all(&self) -> Vec<TxnMetadata> {
        let mut all: Vec<_> = lock(&self.view).values().cloned().collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }

    /// The transactional id a producer id belongs to.
    pub fn transactional_id_of(&self, producer_id: i64) -> Option<String> {
        lock(&self.by_producer).get(&producer_id).cloned()
    }

    /// Appends `metadata` to the state topic (fsynced when `durable`), then makes it current.
    async fn store(
        &self,
        previous: Option<&TxnMetadata>,
        metadata: TxnMetadata,
        durable: bool,
    ) -> Result<(), TxnError> {
        let now = now_ms();
        let value = serde_json::to_vec(&metadata)
            .map_err(|e| TxnError::Store(LogError::Io(std::io::Error::other(e))))?;
        let record = plain_record(
            0,
            now,
            Some(Bytes::from(metadata.transactional_id.clone())),
            Some(Bytes::from(value)),
        );
        let buf = encode_batch(&[record], Compression::None)?;
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let info = log.append(&buf, now)?;
            if durable {
                log.flush_to(info.last_offset + 1)?;
            }
            Ok::<_, LogError>(())
        })
        .await
        .map_err(|e| TxnError::Store(LogError::Io(std::io::Error::other(e.to_string()))))??;
        let was_open = previous.is_some_and(|p| p.state == TxnState::Ongoing);
        let is_open = metadata.state == TxnState::Ongoing;
        if is_open && !was_open {
            self.metrics.started.inc();
            self.metrics.open.inc();
        } else if was_open && !is_open {
            self.metrics.open.dec();
        }
        {
            let mut by_producer = lock(&self.by_producer);
            if let Some(p) = previous {
                if p.producer_id != metadata.producer_id {
                    by_producer.remove(&p.producer_id);
                }
            }
            by_producer.insert(metadata.producer_id, metadata.transactional_id.clone());
        }
        lock(&self.view).insert(metadata.transactional_id.clone(), metadata);
        Ok(())
    }

    /// InitProducerId with a transactional id: (producer id, epoch).
    pub async fn init_producer_id(
        &self,
        broker: &Arc<Broker>,
        id: &str,
        timeout_ms: i32,
        expected: Option<ProducerIdAndEpoch>,
    ) -> Result<ProducerIdAndEpoch, ResponseError> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let id_lock = self.id_lock(id);
        let _serial = id_lock.lock().await;
        let now = now_ms();
        let current = self.get(id);
        // A new id costs a file write: allocated off the runtime, and only when needed.
        let needs_id = current
            .as_ref()
            .is_none_or(|m| m.producer_epoch >= i16::MAX - 1);
        let fresh = if needs_id {
            Some(allocate_id(broker).await?)
        } else {
            None
        };
        let mut new_id = || fresh.unwrap_or(-1);
        let Some(current) = current else {
            let metadata = TxnMetadata::new(id, new_id(), timeout_ms, now);
            let ids = metadata.ids();
            self.store(None, metadata, true).await?;
            return Ok(ids);
        };
        match current.init(timeout_ms, expected, now, &mut new_id)? {
            InitOutcome::Unchanged(ids) => Ok(ids),
            InitOutcome::Store {
                metadata,
                abort_first,
            } => {
                let ids = metadata.ids();
                if let Some(partitions) = abort_first {
                    // Fence first: the open transaction is aborted with the new epoch, and a
                    // crash meanwhile finds it in PrepareEpochFence and finishes the abort.
                    let mut fencing = metadata.clone();
                    fencing.state = TxnState::PrepareEpochFence;
                    fencing.partitions = partitions;
                    self.store(Some(&current), fencing.clone(), true).await?;
                    self.write_markers(broker, &fencing, false).await?;
                    self.metrics.aborted.inc();
                    self.store(Some(&fencing), metadata, true).await?;
                } else {
                    self.store(Some(&current), metadata, true).await?;
                }
                Ok(ids)
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with `__consumer_offsets`' partition).
    pub async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TxnPartition],
    ) -> Result<(), ResponseError> {
        let id_lock = self.id_lock(id);
        let _serial = id_lock.lock().await;
        let current = self.existing(id)?;
        if let Some(next) = current.add_partitions(producer_id, epoch, partitions, now_ms())? {
            self.store(Some(&current), next, true).await?;
        }
        Ok(())
    }

    /// Whether a TxnOffsetCommit of this producer may go ahead.
    pub fn check_offset_commit(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<(), ResponseError> {
        let current = self.existing(id)?;
        current.check_offset_commit(producer_id, epoch)?;
        if !current
            .partitions
            .contains(&(OFFSETS_TOPIC.to_string(), OFFSETS_PARTITION))
        {
            // AddOffsetsToTxn must come first, or the offsets would never get a marker.
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    /// Whether `producer_id` may write a transactional batch of `epoch` to the partition:
    /// only inside its open transaction, after AddPartitionsToTxn named the partition (so no
    /// transaction is left without a marker: KIP-890's verification).
    pub fn verify_write(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), ResponseError> {
        let Some(id) = self.transactional_id_of(producer_id) else {
            return Err(ResponseError::InvalidProducerIdMapping);
        };
        let view = lock(&self.view);
        let Some(m) = view.get(&id) else {
            return Err(ResponseError::InvalidProducerIdMapping);
        };
        if m.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if epoch < m.producer_epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if m.state != TxnState::Ongoing || !m.partitions.contains(&(topic.to_string(), partition)) {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    /// EndTxn: markers written and durable in every partition before the answer.
    pub async fn end_txn(
        &self,
        broker: &Arc<Broker>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let id_lock = self.id_lock(id);
        let _serial = id_lock.lock().await;
        let current = self.existing(id)?;
        match current.end(producer_id, epoch, commit)? {
            EndOutcome::AlreadyDone => Ok(()),
            EndOutcome::Prepare { commit } => {
                let prepared = current.prepared(commit, now_ms());
                self.store(Some(&current), prepared.clone(), true).await?;
                // From here on the outcome is decided: a failure to write the markers is
                // retried by the ticker (and after a restart), never reported as a failure.
                if let Err(e) = self.finish(broker, &prepared).await {
                    tracing::warn!(transactional_id = id, error = %e, "markers not written yet; retrying in the background");
                }
                Ok(())
            }
        }
    }

    /// Writes the markers of a prepared transaction, then stores it complete.
    async fn finish(&self, broker: &Arc<Broker>, prepared: &TxnMetadata) -> Result<(), TxnError> {
        let commit = prepared.state == TxnState::PrepareCommit;
        self.write_markers(broker, prepared, commit).await?;
        if commit {
            self.metrics.committed.inc();
        } else {
            self.metrics.aborted.inc();
        }
        self.store(Some(prepared), prepared.completed(now_ms()), false)
            .await
    }

    /// Writes a COMMIT or ABORT marker of the transaction's producer id and epoch to each of
    /// its partitions and waits until all are on disk.
    async fn write_markers(
        &self,
        broker: &Arc<Broker>,
        m: &TxnMetadata,
        commit: bool,
    ) -> Result<(), TxnError> {
        let kind = if commit {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        let (pid, epoch) = (m.producer_id, m.producer_epoch);
        let mut targets = Vec::new();
        let mut offsets = false;
        for (topic, partition) in &m.partitions {
            if topic == OFFSETS_TOPIC {
                offsets = true;
                continue;
            }
            // A partition deleted since it joined the transaction needs no marker.
            if let Some(t) = broker.topics.get(topic) {
                if let Some(p) = t.partition_with_syncer(*partition) {
                    targets.push((p.log.clone(), p.syncer.clone()));
                }
            }
        }
        let logs: Vec<Arc<Log>> = targets.iter().map(|(l, _)| l.clone()).collect();
        let appended = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            logs.iter()
                .map(|log| log.append_marker(pid, epoch, kind, 0, now))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| TxnError::Markers(e.to_string()))?;
        for ((log, syncer), result) in targets.iter().zip(appended) {
            match result {
                Ok(info) => syncer
                    .wait_durable(info.last_offset + 1)
                    .await
                    .map_err(TxnError::Markers)?,
                // The partition has seen a newer epoch of this producer: whoever bumped it
                // wrote (or will write) the marker that ends this transaction there.
                Err(LogError::InvalidProducerEpoch { .. }) => {
                    tracing::debug!(log = %log.dir().display(), producer_id = pid, "marker of an older epoch skipped")
                }
                Err(e) => return Err(TxnError::Markers(e.to_string())),
            }
        }
        if offsets {
            broker
                .groups
                .complete_txn(pid, epoch, commit)
                .await
                .map_err(|e| TxnError::Markers(e.to_string()))?;
        }
        Ok(())
    }

    /// The periodic pass: aborts transactions open longer than their timeout (fencing their
    /// producer with a bumped epoch) and finishes transactions whose markers are not all
    /// written (after a crash or a failed write).
    pub async fn tick(&self, broker: &Arc<Broker>) {
        let now = now_ms();
        let due: Vec<TxnMetadata> = lock(&self.view)
            .values()
            .filter(|m| m.timed_out(now) || m.state.is_preparing())
            .cloned()
            .collect();
        for m in due {
            let id_lock = self.id_lock(&m.transactional_id);
            let Ok(_serial) = id_lock.try_lock() else {
                continue; // a request is changing it right now
            };
            let Some(current) = self.get(&m.transactional_id) else {
                continue;
            };
            let result = if current.timed_out(now) {
                tracing::info!(transactional_id = %current.transactional_id, producer_id = current.producer_id, "aborting a transaction that outlived its timeout");
                let fenced = current.fenced(now);
                match self.store(Some(&current), fenced.clone(), true).await {
                    Ok(()) => {
                        self.metrics.timed_out.inc();
                        self.finish(broker, &fenced).await
                    }
                    Err(e) => Err(e),
                }
            } else if current.state.is_preparing() {
                self.finish(broker, &current).await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                tracing::warn!(transactional_id = %current.transactional_id, error = %e, "transaction not completed yet; will retry");
            }
        }
    }
}

/// A new producer id: the registry persists blocks of ids with an fsync, so not on a runtime
/// thread.
pub async fn allocate_id(broker: &Arc<Broker>) -> Result<i64, ResponseError> {
    let broker = broker.clone();
    tokio::task::spawn_blocking(move || broker.topics.allocate_producer_id())
        .await
        .map_err(|_| ResponseError::KafkaStorageError)?
        .map_err(|_| ResponseError::KafkaStorageError)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::records::{Compression, Record, TimestampType};

    use super::*;
    use crate::BrokerConfig;

    fn open(dir: &std::path::Path) -> Arc<Broker> {
        Broker::open(BrokerConfig {
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".into(),
            ..BrokerConfig::default()
        })
        .expect("broker opens")
    }

    /// A transactional batch of `n` records from the producer, as a client writes it.
    fn txn_records(producer_id: i64, epoch: i16, n: i32) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i,
                timestamp: now_ms(),
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
                headers: Default::default(),
            })
            .collect();
        encode_batch(&records, Compression::None)
            .expect("encodes")
            .to_vec()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_prepared_before_a_crash_is_completed_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ids, end_before) = {
            let broker = open(dir.path());
            broker
                .topics
                .create("t", 2, &BTreeMap::new())
                .expect("topic");
            let ids = broker
                .txns
                .init_producer_id(&broker, "app", 60_000, None)
                .await
                .expect("init");
            let parts = [("t".to_string(), 0), ("t".to_string(), 1)];
            broker
                .txns
                .add_partitions("app", ids.producer_id, ids.epoch, &parts)
                .await
                .expect("add");
            let topic = broker.topics.get("t").expect("topic");
            for p in &topic.partitions {
                p.log
                    .append(&txn_records(ids.producer_id, ids.epoch, 3), now_ms())
                    .expect("append");
                assert_eq!(p.log.last_stable_offset(), 0, "the transaction is open");
            }
            // The commit is decided (PrepareCommit stored), then the process dies before any
            // marker is written.
            let current = broker.txns.get("app").expect("metadata");
            broker
                .txns
                .store(Some(&current), current.prepared(true, now_ms()), true)
                .await
                .expect("store");
            (ids, topic.partitions[0].log.end_offset())
        };
        let broker = open(dir.path());
        let m = broker.txns.get("app").expect("state survives");
        assert_eq!(m.state, TxnState::PrepareCommit);
        broker.txns.tick(&broker).await;
        let m = broker.txns.get("app").expect("metadata");
        assert_eq!(m.state, TxnState::CompleteCommit);
        assert_eq!(m.ids(), ids);
        for p in &broker.topics.get("t").expect("topic").partitions {
            // The marker follows the records and every record is stable and committed.
            assert_eq!(p.log.end_offset(), end_before + 1);
            assert_eq!(p.log.last_stable_offset(), end_before + 1);
            assert!(p.log.aborted_txns(0, i64::MAX).is_empty());
        }
        // A retried EndTxn of the client that never got its answer succeeds.
        broker
            .txns
            .end_txn(&broker, "app", ids.producer_id, ids.epoch, true)
            .await
            .expect("a retried commit is answered");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_transaction_is_aborted_and_its_producer_fenced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = open(dir.path());
        broker
            .topics
            .create("t", 1, &BTreeMap::new())
            .expect("topic");
        let ids = broker
            .txns
            .init_producer_id(&broker, "slow", 1, None)
            .await
            .expect("init");
        broker
            .txns
            .add_partitions("slow", ids.producer_id, ids.epoch, &[("t".to_string(), 0)])
            .await
            .expect("add");
        let log = broker.topics.get("t").expect("topic").partitions[0]
            .log
            .clone();
        log.append(&txn_records(ids.producer_id, ids.epoch, 2), now_ms())
            .expect("append");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        broker.txns.tick(&broker).await;
        let m = broker.txns.get("slow").expect("metadata");
        assert_eq!(m.state, TxnState::CompleteAbort);
        assert_eq!(m.producer_epoch, ids.epoch + 1);
        assert_eq!(log.aborted_txns(0, i64::MAX), vec![(ids.producer_id, 0)]);
        assert_eq!(log.last_stable_offset(), log.end_offset());
        assert_eq!(broker.txns.metrics.timed_out.get(), 1);
        // The old epoch is refused by the coordinator and by the partition.
        assert_eq!(
            broker
                .txns
                .end_txn(&broker, "slow", ids.producer_id, ids.epoch, true)
                .await,
            Err(ResponseError::ProducerFenced)
        );
        assert!(matches!(
            log.append(&txn_records(ids.producer_id, ids.epoch, 1), now_ms()),
            Err(LogError::InvalidProducerEpoch { .. })
        ));
    }
}
