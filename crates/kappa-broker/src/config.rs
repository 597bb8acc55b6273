use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::topic_configs::{BrokerDefaults, ConfigError};

/// Settings of the embedded broker (the `[broker]` table of the TOML file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Address the Kafka listener binds.
    pub listen: String,
    /// host:port clients are told to connect to; defaults to the listen address.
    pub advertised_listener: Option<String>,
    pub node_id: i32,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    /// Largest request frame a client may make the broker allocate.
    pub max_request_bytes: usize,
    /// A connection with no request and no response for this long is closed, and so is one
    /// whose client stops reading a response for this long (Kafka's connections.max.idle.ms).
    pub connections_max_idle_ms: u64,
    /// How often retention and compaction run over all partitions.
    pub log_maintenance_interval_ms: u64,
    /// `always` fsyncs every append; `on-demand` only for acks=all, roll and close.
    pub flush: String,
    /// Fsyncs per second the broker-wide group-commit rounds stay under on average (0: no
    /// limit): bounds the rate of device flushes, at the cost of some acks=all latency when
    /// many partitions wait at once.
    pub max_fsyncs_per_sec: u32,
    /// Write partitions with O_DIRECT (bypassing the page cache) where the file system allows.
    pub direct_writes: bool,
    /// With direct writes: bytes of each partition's newest records kept in memory for
    /// consumers at the tail.
    pub tail_cache_bytes: u64,
    /// A segment roll reuses the file of the oldest segment when retention is due to delete
    /// it: fsyncs then need no journal commit (overwritten blocks, unchanged size).
    pub reuse_segment_files: bool,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_segment_bytes: i64,
    pub log_segment_ms: i64,
    pub message_max_bytes: i64,
    /// Longest `transaction.timeout.ms` a producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`).
    pub transaction_max_timeout_ms: i32,
    /// How often the coordinator looks for transactions that outlived their timeout (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub transaction_check_interval_ms: u64,
    /// Kafka broker configs that set topic defaults, by their Kafka names
    /// (`log.cleaner.min.cleanable.ratio = "0.1"`, `log.retention.hours = "48"`): the
    /// `[broker.properties]` table. Each is checked as Kafka checks it; they win over the
    /// fields above.
    pub properties: BTreeMap<String, String>,
    /// How long the first rebalance of an empty group waits for more members to join, and
    /// again after each that does, within the rebalance timeout (Kafka's
    /// `group.initial.rebalance.delay.ms`, default 3 s; 0: none).
    pub group_initial_rebalance_delay_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from("kappa-data"),
            listen: "127.0.0.1:9092".into(),
            advertised_listener: None,
            node_id: 0,
            auto_create_topics: true,
            num_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            connections_max_idle_ms: 600_000,
            log_maintenance_interval_ms: 30_000,
            flush: "on-demand".into(),
            max_fsyncs_per_sec: 3000,
            direct_writes: false,
            reuse_segment_files: true,
            tail_cache_bytes: 4 << 20,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_segment_bytes: 1 << 30,
            log_segment_ms: 7 * 24 * 3600 * 1000,
            message_max_bytes: 1_048_588,
            transaction_max_timeout_ms: 900_000,
            transaction_check_interval_ms: 1_000,
            properties: BTreeMap::new(),
            group_initial_rebalance_delay_ms: 3_000,
        }
    }
}

/// Kafka broker configs `[broker.properties]` may set that are settings of the broker itself
/// (fields above), not topic defaults.
const OWN_PROPERTIES: &[&str] = &["num.partitions", "auto.create.topics.enable"];

impl BrokerConfig {
    /// The topic defaults this configuration sets, under Kafka's broker names: the typed
    /// fields where they differ from Kafka's defaults, then `properties`.
    pub fn broker_defaults(&self) -> Result<BrokerDefaults, ConfigError> {
        let kafka = BrokerConfig::default();
        let mut set = BTreeMap::new();
        for (name, value, default) in [
            (
                "log.retention.ms",
                self.log_retention_ms,
                kafka.log_retention_ms,
            ),
            (
                "log.retention.bytes",
                self.log_retention_bytes,
                kafka.log_retention_bytes,
            ),
            (
                "log.segment.bytes",
                self.log_segment_bytes,
                kafka.log_segment_bytes,
            ),
            ("log.roll.ms", self.log_segment_ms, kafka.log_segment_ms),
            (
                "message.max.bytes",
                self.message_max_bytes,
                kafka.message_max_bytes,
            ),
        ] {
            if value != default {
                set.insert(name.to_string(), value.to_string());
            }
        }
        set.extend(
            self.properties
                .iter()
                .filter(|(k, _)| !OWN_PROPERTIES.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        BrokerDefaults::new(set)
    }

    /// Applies the `properties` that are settings of the broker itself (`num.partitions`,
    /// `auto.create.topics.enable`), checked as Kafka checks them; the others set topic
    /// defaults (see [`BrokerConfig::broker_defaults`]).
    pub fn with_kafka_properties(mut self) -> Result<BrokerConfig, ConfigError> {
        let invalid = |name: &str, value: &str, reason: &str| ConfigError::InvalidValue {
            name: name.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if let Some(v) = self.properties.get("num.partitions") {
            let n = v
                .trim()
                .parse::<i32>()
                .map_err(|_| invalid("num.partitions", v, "Not a number of type INT"))?;
            if n < 1 {
                return Err(invalid("num.partitions", v, "Value must be at least 1"));
            }
            self.num_partitions = n;
        }
        if let Some(v) = self.properties.get("auto.create.topics.enable") {
            self.auto_create_topics = match v.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(invalid(
                        "auto.create.topics.enable",
                        v,
                        "Expected value to be either true or false",
                    ))
                }
            };
        }
        Ok(self)
    }

    pub fn flush_always(&self) -> bool {
        self.flush == "always"
    }
}
