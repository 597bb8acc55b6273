//! The broker's topics: names, ids, partition logs and per-topic config overrides,
//! persisted in one metadata file written atomically on every change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use kappa_log::{CleanupPolicy, FlushPolicy, Log, LogConfig, TimestampType};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::durability::{Commits, Syncer};
use crate::topic_configs::{self, BrokerDefaults, ConfigDef, ConfigError, Resolved};

const METADATA_FILE: &str = "kappa-metadata.json";

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("unknown topic '{0}'")]
    Unknown(String),
    #[error(
        "invalid topic name '{0}': names are 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'"
    )]
    InvalidName(String),
    #[error("invalid partition count {0}")]
    InvalidPartitions(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Kafka's INVALID_CONFIG, with Kafka's message.
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("data directory {} is in use by another process (it holds {})", .0.display(), .0.join(LOCK_FILE).display())]
    DataDirInUse(PathBuf),
}

/// Held (flock) while a broker has the data directory open: two brokers on one directory
/// would each recover and write the other's files.
const LOCK_FILE: &str = ".lock";

/// Takes the data directory's lock, or says who has it.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, TopicError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join(LOCK_FILE))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(TopicError::DataDirInUse(data_dir.to_path_buf())),
        Err(e) => Err(std::io::Error::from(e).into()),
    }
}

impl From<kappa_log::LogError> for TopicError {
    fn from(e: kappa_log::LogError) -> Self {
        TopicError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for TopicError {
    fn from(e: std::io::Error) -> Self {
        TopicError::Storage(e.to_string())
    }
}

/// One partition: its log, and the group-commit write and fsync loop that makes appends to
/// it visible and durable.
#[derive(Clone)]
pub struct Partition {
    pub log: Arc<Log>,
    pub syncer: Arc<Syncer>,
}

/// One topic. Immutable: a change replaces the `Arc<Topic>` in the registry.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<Partition>,
    /// The effective `min.insync.replicas`: above 1, acks=all produces are refused with
    /// NOT_ENOUGH_REPLICAS, as Kafka refuses them when the in-sync replicas (here, the one
    /// broker) are fewer.
    pub min_insync_replicas: i32,
}

impl Topic {
    /// A topic whose partitions are `logs`; the partitions it keeps from `previous` keep
    /// their syncers, so requests waiting on them are not disturbed.
    fn new(
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
        logs: Vec<Arc<Log>>,
        previous: Option<&Topic>,
        registry: &TopicRegistry,
    ) -> Topic {
        let commits = &registry.commits;
        let min_insync_replicas = registry
            .defaults
            .effective("min.insync.replicas", &configs)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(1);
        let partitions = logs
            .into_iter()
            .enumerate()
            .map(
                |(i, log)| match previous.and_then(|p| p.partitions.get(i)) {
                    Some(kept) => kept.clone(),
                    None => Partition {
                        syncer: Arc::new(Syncer::new(log.clone(), commits)),
                        log,
                    },
                },
            )
            .collect();
        Topic {
            name,
            id,
            configs,
            partitions,
            min_insync_replicas,
        }
    }

    /// The log of partition `index`.
    pub fn partition(&self, index: i32) -> Option<&Arc<Log>> {
        self.partition_with_syncer(index).map(|p| &p.log)
    }

    /// Partition `index`, with its syncer (for writes that wait to be visible or durable).
    pub fn partition_with_syncer(&self, index: i32) -> Option<&Partition> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    /// The partitions' logs, in partition order.
    pub fn logs(&self) -> impl Iterator<Item = &Arc<Log>> {
        self.partitions.iter().map(|p| &p.log)
    }
}

#[derive(Serialize, Deserialize, Default)]
struct PersistedMetadata {
    cluster_id: String,
    topics: Vec<PersistedTopic>,
    /// Producer ids below this may have been handed out.
    #[serde(default)]
    producer_id_block_end: i64,
}

/// Producer ids are reserved on disk in blocks, so a restart never hands one out twice.
const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Serialize, Deserialize)]
struct PersistedTopic {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

pub struct TopicRegistry {
    /// Released when the registry is dropped (or the process dies).
    _data_dir_lock: std::fs::File,
    data_dir: PathBuf,
    defaults: BrokerDefaults,
    flush: FlushPolicy,
    direct_writes: bool,
    tail_cache_bytes: u64,
    reuse_segment_files: bool,
    pub cluster_id: String,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serializes changes so the metadata file always matches one state.
    change_lock: std::sync::Mutex<()>,
    /// (next producer id, end of the reserved block).
    producer_ids: std::sync::Mutex<(i64, i64)>,
    /// The partitions' shared write and fsync machinery.
    pub commits: Arc<Commits>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TopicError::InvalidName(name.to_string()))
    }
}

/// Checks one topic config as Kafka does; returns the value to store.
pub fn validate_config(name: &str, value: &str) -> Result<String, TopicError> {
    Ok(topic_configs::validate(name, value)?)
}

impl TopicRegistry {
    /// Loads the metadata and opens every partition log (recovering them as needed).
    pub fn open(config: &BrokerConfig) -> Result<TopicRegistry, TopicError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        let path = config.data_dir.join(METADATA_FILE);
        let persisted: PersistedMetadata = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| TopicError::Storage(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedMetadata::default(),
            Err(e) => return Err(e.into()),
        };
        let cluster_id = if persisted.cluster_id.is_empty() {
            Uuid::new_v4().simple().to_string()[..22].to_string()
        } else {
            persisted.cluster_id.clone()
        };
        let registry = TopicRegistry {
            _data_dir_lock: data_dir_lock,
            data_dir: config.data_dir.clone(),
            defaults: config.broker_defaults()?,
            flush: if config.flush_always() {
                FlushPolicy::Always
            } else {
                FlushPolicy::OnDemand
            },
            direct_writes: config.direct_writes,
            tail_cache_bytes: config.tail_cache_bytes,
            reuse_segment_files: config.reuse_segment_files,
            cluster_id,
            topics: RwLock::new(HashMap::new()),
            change_lock: std::sync::Mutex::new(()),
            producer_ids: std::sync::Mutex::new((
                persisted.producer_id_block_end,
                persisted.producer_id_block_end,
            )),
            commits: Commits::new(config.max_fsyncs_per_sec),
        };
        let now = now_ms();
        let mut topics = HashMap::new();
        for t in persisted.topics {
            let log_config = registry.log_config(&t.configs);
            let mut partitions = Vec::new();
            for p in 0..t.partitions {
                let dir = registry.partition_dir(&t.name, p);
                partitions.push(Arc::new(Log::open(&dir, log_config.clone(), now)?));
            }
            topics.insert(
                t.name.clone(),
                Arc::new(Topic::new(
                    t.name, t.id, t.configs, partitions, None, &registry,
                )),
            );
        }
        *registry.topics.write().unwrap_or_else(|e| e.into_inner()) = topics;
        registry.persist()?;
        Ok(registry)
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The broker's topic defaults.
    pub fn defaults(&self) -> &BrokerDefaults {
        &self.defaults
    }

    /// Every topic config with where its value may come from, the effective one first
    /// (see [`BrokerDefaults::resolve`]).
    pub fn effective_configs(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Vec<(&'static ConfigDef, String, Vec<Resolved>)> {
        topic_configs::TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let value = self
                    .defaults
                    .effective(def.name, overrides)
                    .unwrap_or_default();
                (def, value, self.defaults.resolve(def, overrides))
            })
            .collect()
    }

    /// Kafka's checks across a topic's configs, on its effective values.
    pub fn check_overrides(&self, overrides: &BTreeMap<String, String>) -> Result<(), TopicError> {
        Ok(topic_configs::check_conflicts(&|k| {
            self.defaults.effective(k, overrides)
        })?)
    }

    /// The settings of a topic's partition logs: its overrides, else the broker's defaults.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let get = |k: &str| self.defaults.effective(k, overrides);
        let num = |k: &str, d: i64| get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(d);
        let base = LogConfig::default();
        let difference = num("message.timestamp.difference.max.ms", i64::MAX);
        // As Kafka 3.6+: the deprecated difference applies where before/after are not set.
        let before = num("message.timestamp.before.max.ms", i64::MAX);
        let after = num("message.timestamp.after.max.ms", i64::MAX);
        let explicitly = |k: &str| overrides.contains_key(k) || self.defaults.is_set(k);
        LogConfig {
            segment_bytes: num("segment.bytes", base.segment_bytes as i64).max(14) as u64,
            segment_ms: num("segment.ms", base.segment_ms),
            retention_ms: num("retention.ms", base.retention_ms),
            retention_bytes: num("retention.bytes", base.retention_bytes),
            max_message_bytes: num("max.message.bytes", base.max_message_bytes as i64).max(0)
                as usize,
            timestamp_type: match get("message.timestamp.type").as_deref() {
                Some("LogAppendTime") => TimestampType::LogAppendTime,
                _ => TimestampType::CreateTime,
            },
            cleanup_policy: match get("cleanup.policy").as_deref() {
                Some("compact") => CleanupPolicy::Compact,
                Some("compact,delete") => CleanupPolicy::CompactDelete,
                _ => CleanupPolicy::Delete,
            },
            index_interval_bytes: num("index.interval.bytes", base.index_interval_bytes as i64)
                .max(0) as u64,
            flush: self.flush,
            delete_retention_ms: num("delete.retention.ms", base.delete_retention_ms),
            direct_writes: self.direct_writes,
            tail_cache_bytes: self.tail_cache_bytes,
            reuse_segment_files: self.reuse_segment_files,
            segment_index_bytes: num("segment.index.bytes", base.segment_index_bytes as i64).max(4)
                as u64,
            segment_jitter_ms: num("segment.jitter.ms", 0),
            recompress: match get("compression.type").as_deref() {
                Some("uncompressed") => Some(kafka_protocol::records::Compression::None),
                Some("gzip") => Some(kafka_protocol::records::Compression::Gzip),
                Some("snappy") => Some(kafka_protocol::records::Compression::Snappy),
                Some("lz4") => Some(kafka_protocol::records::Compression::Lz4),
                Some("zstd") => Some(kafka_protocol::records::Compression::Zstd),
                _ => None,
            },
            flush_messages: num("flush.messages", i64::MAX),
            flush_ms: num("flush.ms", i64::MAX),
            file_delete_delay_ms: num("file.delete.delay.ms", 60_000),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(base.min_cleanable_dirty_ratio),
            max_compaction_lag_ms: num("max.compaction.lag.ms", i64::MAX),
            min_compaction_lag_ms: num("min.compaction.lag.ms", 0),
            timestamp_before_max_ms: if explicitly("message.timestamp.before.max.ms") {
                before
            } else {
                before.min(difference)
            },
            timestamp_after_max_ms: if explicitly("message.timestamp.after.max.ms") {
                after
            } else {
                after.min(difference)
            },
        }
    }

    fn read_topics(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_topics(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_topics().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.read_topics().values().find(|t| t.id == id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.read_topics().values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// Validates a whole creation request without creating anything.
    pub fn validate_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, TopicError> {
        validate_topic_name(name)?;
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        if !(1..=10_000).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(format!(
                "{partitions}: a topic has 1 to 10000 partitions"
            )));
        }
        let configs = configs
            .iter()
            .map(|(k, v)| Ok((k.clone(), validate_config(k, v)?)))
            .collect::<Result<BTreeMap<_, _>, TopicError>>()?;
        self.check_overrides(&configs)?;
        Ok(configs)
    }

    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let _change = self.change_lock.lock().unwrap_or_else(|e| e.into_inner());
        let configs = self.validate_create(name, partitions, configs)?;
        let log_config = self.log_config(&configs);
        let now = now_ms();
        let mut logs = Vec::new();
        for p in 0..partitions {
            let dir = self.partition_dir(name, p);
            // Leftovers of a topic deleted in a crash must not come back.
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            logs.push(Arc::new(Log::open(&dir, log_config.clone(), now)?));
        }
        let topic = Arc::new(Topic::new(
            name.to_string(),
            Uuid::new_v4(),
            configs,
            logs,
            None,
            self,
        ));
        self.write_topics().insert(name.to_string(), topic.clone());
        self.persist()?;
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// The one partition of an internal topic (`__consumer_offsets`, `__transaction_state`),
    /// compacted, created on first use.
    pub fn internal_log(&self, name: &str) -> Result<Arc<Log>, TopicError> {
        let topic = match self.get(name) {
            Some(t) => t,
            None => {
                let mut configs = BTreeMap::new();
                configs.insert("cleanup.policy".to_string(), "compact".to_string());
                self.create(name, 1, &configs)?
            }
        };
        topic
            .partition(0)
            .cloned()
            .ok_or_else(|| TopicError::InvalidPartitions(format!("{name} has no partition")))
    }

    /// Returns the topic, creating it with the default partition count when auto-creation is on.
    pub fn get_or_create(
        &self,
        name: &str,
        auto_create: bool,
        partitions: i32,
    ) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        if !auto_create {
            validate_topic_name(name)?;
            return Err(TopicError::Unknown(name.to_string()));
        }
        match self.create(name, partitions, &BTreeMap::new()) {
            Err(TopicError::AlreadyExists(_)) => self
                .get(name)
                .ok_or_else(|| TopicError::Unknown(name.to_string())),
            other => other,
        }
    }

    pub fn delete(&self, name: &str) -> Result<Uuid, TopicError> {
        let _change = self.change_lock.lock().unwrap_or_else(|e| e.into_inner());
        let topic = self
            .write_topics()
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        self.persist()?;
        for log in topic.logs() {
            if let Err(e) = log.delete() {
                tracing::warn!(topic = name, error = %e, "could not remove partition files");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _change = self.change_lock.lock().unwrap_or_else(|e| e.into_inner());
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partitions.len() as i32;
        if count <= current || count > 10_000 {
            return Err(TopicError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions; the new count {count} must be larger (at most 10000)"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = self.log_config(&topic.configs);
        let mut partitions: Vec<Arc<Log>> = topic.logs().cloned().collect();
        for p in current..count {
            let dir = self.partition_dir(name, p);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            partitions.push(Arc::new(Log::open(&dir, log_config.clone(), now_ms())?));
        }
        let updated = Arc::new(Topic::new(
            topic.name.clone(),
            topic.id,
            topic.configs.clone(),
            partitions,
            Some(&topic),
            self,
        ));
        self.write_topics().insert(name.to_string(), updated);
        self.persist()
    }

    /// Replaces a topic's config overrides (already validated) and applies them to its logs.
    pub fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        let _change = self.change_lock.lock().unwrap_or_else(|e| e.into_inner());
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let log_config = self.log_config(&configs);
        for log in topic.logs() {
            log.set_config(log_config.clone());
        }
        let updated = Arc::new(Topic::new(
            topic.name.clone(),
            topic.id,
            configs,
            topic.logs().cloned().collect(),
            Some(&topic),
            self,
        ));
        self.write_topics().insert(name.to_string(), updated);
        self.persist()
    }

    fn persist(&self) -> Result<(), TopicError> {
        let mut topics: Vec<PersistedTopic> = self
            .read_topics()
            .values()
            .map(|t| PersistedTopic {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions.len() as i32,
                configs: t.configs.clone(),
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let meta = PersistedMetadata {
            cluster_id: self.cluster_id.clone(),
            topics,
            producer_id_block_end: self
                .producer_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1,
        };
        let bytes =
            serde_json::to_vec_pretty(&meta).map_err(|e| TopicError::Storage(e.to_string()))?;
        let tmp = self.data_dir.join(format!("{METADATA_FILE}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.data_dir.join(METADATA_FILE))?;
        std::fs::File::open(&self.data_dir)?.sync_all()?;
        Ok(())
    }

    /// A producer id never handed out before, even across restarts.
    pub fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        let _change = self.change_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (id, reserve) = {
            let mut ids = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
            let id = ids.0;
            ids.0 += 1;
            let reserve = id >= ids.1;
            if reserve {
                ids.1 = id + PRODUCER_ID_BLOCK;
            }
            (id, reserve)
        };
        if reserve {
            self.persist()?;
        }
        Ok(id)
    }

    /// Retention pass over every partition.
    pub fn enforce_retention(&self) {
        let now = now_ms();
        for topic in self.list() {
            for (p, log) in topic.logs().enumerate() {
                match log.enforce_retention(now) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %topic.name, partition = p, segments = n, "retention deleted segments")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = p, error = %e, "retention failed")
                    }
                }
            }
        }
    }

    /// Compaction pass over every partition of compacted topics.
    pub fn compact(&self) {
        let now = now_ms();
        for topic in self.list() {
            for (p, log) in topic.logs().enumerate() {
                match log.clean(now) {
                    Ok(stats) if stats.segments_rewritten > 0 => tracing::info!(
                        topic = %topic.name,
                        partition = p,
                        segments = stats.segments_rewritten,
                        records_removed = stats.records_removed,
                        bytes_before = stats.bytes_before,
                        bytes_after = stats.bytes_after,
                        "compacted"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = p, error = %e, "compaction failed")
                    }
                }
            }
        }
    }

    /// Flushes and closes every log cleanly.
    pub fn close(&self) {
        for topic in self.list() {
            for log in topic.logs() {
                if let Err(e) = log.close() {
                    tracing::warn!(topic = %topic.name, error = %e, "close failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dir: &Path, properties: &[(&str, &str)]) -> Result<TopicRegistry, TopicError> {
        TopicRegistry::open(&BrokerConfig {
            data_dir: dir.to_path_buf(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..BrokerConfig::default()
        })
    }

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn topic_settings_reach_the_partition_logs() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), &[]).unwrap();
        let configs = overrides(&[
            ("min.cleanable.dirty.ratio", "0.1"),
            ("max.compaction.lag.ms", "60000"),
            ("min.compaction.lag.ms", "1000"),
            ("segment.index.bytes", "4096"),
            ("segment.jitter.ms", "10"),
            ("flush.messages", "5"),
            ("flush.ms", "2000"),
            ("file.delete.delay.ms", "0"),
            ("message.timestamp.before.max.ms", "86400000"),
            ("message.timestamp.after.max.ms", "1000"),
            ("index.interval.bytes", "100"),
            ("cleanup.policy", "delete,compact"),
            ("preallocate", "true"),
            ("unclean.leader.election.enable", "true"),
        ]);
        let topic = r.create("t", 2, &configs).unwrap();
        let c = topic.partitions[1].log.config();
        assert_eq!(c.min_cleanable_dirty_ratio, 0.1);
        assert_eq!(c.max_compaction_lag_ms, 60_000);
        assert_eq!(c.min_compaction_lag_ms, 1_000);
        assert_eq!(c.segment_index_bytes, 4096);
        assert_eq!(c.segment_jitter_ms, 10);
        assert_eq!((c.flush_messages, c.flush_ms), (5, 2_000));
        assert_eq!(c.file_delete_delay_ms, 0);
        assert_eq!(c.timestamp_before_max_ms, 86_400_000);
        assert_eq!(c.timestamp_after_max_ms, 1_000);
        assert_eq!(c.index_interval_bytes, 100);
        assert_eq!(c.cleanup_policy, CleanupPolicy::CompactDelete);
        // Kafka's defaults where nothing is set.
        let d = r.log_config(&BTreeMap::new());
        assert_eq!(d.file_delete_delay_ms, 60_000);
        assert_eq!(d.timestamp_after_max_ms, 3_600_000);
        assert_eq!(d.timestamp_before_max_ms, i64::MAX);
        assert_eq!(d.segment_index_bytes, 10 << 20);
        // The deprecated difference applies where before/after are not set.
        let old = r.log_config(&overrides(&[(
            "message.timestamp.difference.max.ms",
            "500",
        )]));
        assert_eq!(
            (old.timestamp_before_max_ms, old.timestamp_after_max_ms),
            (500, 500)
        );
        // Overrides survive a restart.
        drop(topic);
        drop(r);
        let r = registry(dir.path(), &[]).unwrap();
        let kept = &r.get("t").unwrap().configs;
        assert_eq!(kept["cleanup.policy"], "compact,delete");
        assert_eq!(kept.len(), configs.len());
        assert_eq!(kept["min.cleanable.dirty.ratio"], "0.1");
    }

    #[test]
    fn broker_properties_set_defaults_and_bad_ones_stop_the_broker() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(
            dir.path(),
            &[
                ("log.retention.hours", "2"),
                ("log.cleaner.min.cleanable.ratio", "0.25"),
                ("min.insync.replicas", "2"),
            ],
        )
        .unwrap();
        let c = r.log_config(&BTreeMap::new());
        assert_eq!(c.retention_ms, 7_200_000);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.25);
        let t = r.create("t", 1, &BTreeMap::new()).unwrap();
        assert_eq!(t.min_insync_replicas, 2);
        let described = r.effective_configs(&BTreeMap::new());
        let (_, value, chain) = described
            .iter()
            .find(|(d, _, _)| d.name == "retention.ms")
            .unwrap();
        assert_eq!(value, "7200000");
        assert_eq!(chain[0].name, "log.retention.hours");
        assert_eq!(chain[0].source, topic_configs::Source::StaticBroker);
        drop(t);
        drop(r);
        for bad in [
            ("log.cleaner.min.cleanable.ratio", "2"),
            ("log.retention.fortnights", "1"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            assert!(matches!(
                registry(dir.path(), &[bad]),
                Err(TopicError::Config(_))
            ));
        }
    }

    #[test]
    fn creation_checks_values_names_and_conflicts_as_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), &[]).unwrap();
        let refused = |pairs: &[(&str, &str)]| {
            r.validate_create("t", 1, &overrides(pairs))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused(&[("no.such.config", "1")]),
            "Unknown topic config name: no.such.config"
        );
        assert_eq!(
            refused(&[("flush.ms", "-1")]),
            "Invalid value -1 for configuration flush.ms: Value must be at least 0"
        );
        assert_eq!(
            refused(&[
                ("min.compaction.lag.ms", "10"),
                ("max.compaction.lag.ms", "5")
            ]),
            "conflict topic config setting min.compaction.lag.ms (10) > max.compaction.lag.ms (5)"
        );
        let accepted = r
            .validate_create(
                "t",
                1,
                &overrides(&[
                    ("compression.type", "gzip"),
                    ("message.format.version", "2.8"),
                ]),
            )
            .unwrap();
        assert_eq!(accepted["compression.type"], "gzip");
    }
}
