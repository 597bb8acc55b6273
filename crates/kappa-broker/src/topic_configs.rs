//! Every topic config Apache Kafka 3.x and 4.x defines: its type, default, validator, the
//! broker configs that set its default (Kafka's synonyms, highest priority first), and whether
//! Kappa honours it or only keeps and describes it.
//!
//! Values are checked as Kafka's `ConfigDef` checks them, with the same messages
//! (`Invalid value x for configuration y: Not a number of type LONG`), so a client sees the
//! INVALID_CONFIG answer a Kafka broker would give. Only names Kafka does not know are refused
//! as such (`Unknown topic config name: x`).

use std::collections::BTreeMap;

/// The value type of a config, as DescribeConfigs (v3+) reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

impl ConfigType {
    fn kafka_name(self) -> &'static str {
        match self {
            ConfigType::Boolean => "BOOLEAN",
            ConfigType::String => "STRING",
            ConfigType::Int => "INT",
            ConfigType::Short => "SHORT",
            ConfigType::Long => "LONG",
            ConfigType::Double => "DOUBLE",
            ConfigType::List => "LIST",
        }
    }
}

/// Kafka's validator of a config's value (after its type is checked).
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// Any value of the type.
    Any,
    /// `Range.atLeast`.
    AtLeast(i64),
    /// `Range.between`, bounds included.
    Between(i64, i64),
    /// `ValidString.in`: one of these, case-sensitive.
    OneOf(&'static [&'static str]),
    /// `ValidList.in`: every item one of these.
    ListOf(&'static [&'static str]),
    /// gzip levels: 1 to 9, or -1 for the codec's default.
    GzipLevel,
    /// `ThrottledReplicaListValidator`: `*` or `partition:broker` pairs.
    ThrottledReplicas,
    /// A Kafka release (`2.8`, `3.0-IV1`): message.format.version's validator.
    MessageFormatVersion,
    /// Tiered storage: `true` is refused as by a Kafka broker without a remote log manager.
    RemoteStorage,
}

/// What Kappa does with a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Changes how the partition logs behave.
    Honoured,
    /// Accepted, validated, kept and described; it has no effect on a single node (the codec
    /// levels: batches are re-encoded at each codec's default level).
    Stored,
}

/// A broker config that sets a topic config's default, and the factor from its unit to the
/// topic config's (`log.retention.hours` counts hours, `retention.ms` milliseconds).
#[derive(Clone, Copy, Debug)]
pub struct Synonym {
    pub name: &'static str,
    pub factor: i64,
}

const fn same(name: &'static str) -> Synonym {
    Synonym { name, factor: 1 }
}
const fn hours(name: &'static str) -> Synonym {
    Synonym {
        name,
        factor: 3_600_000,
    }
}
const fn minutes(name: &'static str) -> Synonym {
    Synonym {
        name,
        factor: 60_000,
    }
}

/// One topic config.
#[derive(Clone, Copy, Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// Kafka's default, as DescribeConfigs shows it.
    pub default: &'static str,
    pub check: Check,
    /// Broker configs setting the default, highest priority first (may be empty).
    pub synonyms: &'static [Synonym],
    pub support: Support,
}

const LONG_MAX: &str = "9223372036854775807";
const CLEANUP_POLICIES: &[&str] = &["compact", "delete"];
/// Kafka's `BrokerCompressionType` names, in its order.
pub const COMPRESSION_TYPES: &[&str] =
    &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];

const fn def(
    name: &'static str,
    kind: ConfigType,
    default: &'static str,
    check: Check,
    synonyms: &'static [Synonym],
    support: Support,
) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default,
        check,
        synonyms,
        support,
    }
}

use Check::*;
use Support::*;

const BOOLEAN: ConfigType = ConfigType::Boolean;
const STRING: ConfigType = ConfigType::String;
const INT: ConfigType = ConfigType::Int;
const LONG: ConfigType = ConfigType::Long;
const DOUBLE: ConfigType = ConfigType::Double;
const LIST: ConfigType = ConfigType::List;

/// Every topic config of Kafka 3.x and 4.x, by name. Configs Kafka 4.0 removed
/// (message.format.version, message.downconversion.enable,
/// message.timestamp.difference.max.ms) are kept for 3.x clients.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    def(
        "cleanup.policy",
        LIST,
        "delete",
        ListOf(CLEANUP_POLICIES),
        &[same("log.cleanup.policy")],
        Honoured,
    ),
    def(
        "compression.gzip.level",
        INT,
        "-1",
        GzipLevel,
        &[same("compression.gzip.level")],
        Stored,
    ),
    def(
        "compression.lz4.level",
        INT,
        "9",
        Between(1, 17),
        &[same("compression.lz4.level")],
        Stored,
    ),
    def(
        "compression.type",
        STRING,
        "producer",
        OneOf(COMPRESSION_TYPES),
        &[same("compression.type")],
        Honoured,
    ),
    def(
        "compression.zstd.level",
        INT,
        "3",
        Between(-131_072, 22),
        &[same("compression.zstd.level")],
        Stored,
    ),
    def(
        "delete.retention.ms",
        LONG,
        "86400000",
        AtLeast(0),
        &[same("log.cleaner.delete.retention.ms")],
        Honoured,
    ),
    def(
        "file.delete.delay.ms",
        LONG,
        "60000",
        AtLeast(0),
        &[same("log.segment.delete.delay.ms")],
        Honoured,
    ),
    def(
        "flush.messages",
        LONG,
        LONG_MAX,
        AtLeast(1),
        &[same("log.flush.interval.messages")],
        Honoured,
    ),
    def(
        "flush.ms",
        LONG,
        LONG_MAX,
        AtLeast(0),
        &[
            same("log.flush.interval.ms"),
            same("log.flush.scheduler.interval.ms"),
        ],
        Honoured,
    ),
    def(
        "follower.replication.throttled.replicas",
        LIST,
        "",
        ThrottledReplicas,
        &[],
        Stored,
    ),
    def(
        "index.interval.bytes",
        INT,
        "4096",
        AtLeast(0),
        &[same("log.index.interval.bytes")],
        Honoured,
    ),
    def(
        "leader.replication.throttled.replicas",
        LIST,
        "",
        ThrottledReplicas,
        &[],
        Stored,
    ),
    def(
        "local.retention.bytes",
        LONG,
        "-2",
        AtLeast(-2),
        &[same("log.local.retention.bytes")],
        Stored,
    ),
    def(
        "local.retention.ms",
        LONG,
        "-2",
        AtLeast(-2),
        &[same("log.local.retention.ms")],
        Stored,
    ),
    def(
        "max.compaction.lag.ms",
        LONG,
        LONG_MAX,
        AtLeast(1),
        &[same("log.cleaner.max.compaction.lag.ms")],
        Honoured,
    ),
    def(
        "max.message.bytes",
        INT,
        "1048588",
        AtLeast(0),
        &[same("message.max.bytes")],
        Honoured,
    ),
    def(
        "message.downconversion.enable",
        BOOLEAN,
        "true",
        Any,
        &[same("log.message.downconversion.enable")],
        Stored,
    ),
    def(
        "message.format.version",
        STRING,
        "3.0-IV1",
        MessageFormatVersion,
        &[same("log.message.format.version")],
        Stored,
    ),
    def(
        "message.timestamp.after.max.ms",
        LONG,
        "3600000",
        AtLeast(0),
        &[same("log.message.timestamp.after.max.ms")],
        Honoured,
    ),
    def(
        "message.timestamp.before.max.ms",
        LONG,
        LONG_MAX,
        AtLeast(0),
        &[same("log.message.timestamp.before.max.ms")],
        Honoured,
    ),
    def(
        "message.timestamp.difference.max.ms",
        LONG,
        LONG_MAX,
        AtLeast(0),
        &[same("log.message.timestamp.difference.max.ms")],
        Honoured,
    ),
    def(
        "message.timestamp.type",
        STRING,
        "CreateTime",
        OneOf(TIMESTAMP_TYPES),
        &[same("log.message.timestamp.type")],
        Honoured,
    ),
    def(
        "min.cleanable.dirty.ratio",
        DOUBLE,
        "0.5",
        Between(0, 1),
        &[same("log.cleaner.min.cleanable.ratio")],
        Honoured,
    ),
    def(
        "min.compaction.lag.ms",
        LONG,
        "0",
        AtLeast(0),
        &[same("log.cleaner.min.compaction.lag.ms")],
        Honoured,
    ),
    def(
        "min.insync.replicas",
        INT,
        "1",
        AtLeast(1),
        &[same("min.insync.replicas")],
        Honoured,
    ),
    def(
        "preallocate",
        BOOLEAN,
        "false",
        Any,
        &[same("log.preallocate")],
        Stored,
    ),
    def("remote.copy.lag.bytes", LONG, "0", AtLeast(-1), &[], Stored),
    def("remote.copy.lag.ms", LONG, "0", AtLeast(-1), &[], Stored),
    def(
        "remote.log.copy.disable",
        BOOLEAN,
        "false",
        Any,
        &[],
        Stored,
    ),
    def(
        "remote.log.delete.on.disable",
        BOOLEAN,
        "false",
        Any,
        &[],
        Stored,
    ),
    def(
        "remote.storage.enable",
        BOOLEAN,
        "false",
        RemoteStorage,
        &[],
        Stored,
    ),
    def(
        "retention.bytes",
        LONG,
        "-1",
        Any,
        &[same("log.retention.bytes")],
        Honoured,
    ),
    def(
        "retention.ms",
        LONG,
        "604800000",
        AtLeast(-1),
        &[
            same("log.retention.ms"),
            minutes("log.retention.minutes"),
            hours("log.retention.hours"),
        ],
        Honoured,
    ),
    def(
        "segment.bytes",
        INT,
        "1073741824",
        AtLeast(14),
        &[same("log.segment.bytes")],
        Honoured,
    ),
    def(
        "segment.index.bytes",
        INT,
        "10485760",
        AtLeast(4),
        &[same("log.index.size.max.bytes")],
        Honoured,
    ),
    def(
        "segment.jitter.ms",
        LONG,
        "0",
        AtLeast(0),
        &[same("log.roll.jitter.ms"), hours("log.roll.jitter.hours")],
        Honoured,
    ),
    def(
        "segment.ms",
        LONG,
        "604800000",
        AtLeast(1),
        &[same("log.roll.ms"), hours("log.roll.hours")],
        Honoured,
    ),
    def(
        "unclean.leader.election.enable",
        BOOLEAN,
        "false",
        Any,
        &[same("unclean.leader.election.enable")],
        Stored,
    ),
];

/// Why a config was refused. The messages are Kafka's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("Unknown topic config name: {0}")]
    UnknownName(String),
    #[error("Unknown broker config name: {0}")]
    UnknownBrokerName(String),
    #[error("Invalid value {value} for configuration {name}: {reason}")]
    InvalidValue {
        name: String,
        value: String,
        reason: String,
    },
    /// A value that is valid alone but not with the others (Kafka's `validateValues`).
    #[error("{0}")]
    Conflict(String),
}

/// The definition of topic config `name`.
pub fn find(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The topic config a broker config sets the default of, and the synonym itself.
pub fn find_by_synonym(broker_name: &str) -> Option<(&'static ConfigDef, &'static Synonym)> {
    TOPIC_CONFIGS.iter().find_map(|d| {
        d.synonyms
            .iter()
            .find(|s| s.name == broker_name)
            .map(|s| (d, s))
    })
}

/// Checks one topic config's value as Kafka does; returns the value to store (trimmed, and
/// cleanup.policy's items in one order).
pub fn validate(name: &str, value: &str) -> Result<String, ConfigError> {
    let def = find(name).ok_or_else(|| ConfigError::UnknownName(name.to_string()))?;
    check_value(def, name, value, def.kind)
}

fn check_value(
    def: &ConfigDef,
    name: &str,
    value: &str,
    kind: ConfigType,
) -> Result<String, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidValue {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    let trimmed = value.trim();
    let not_a = || invalid(format!("Not a number of type {}", kind.kafka_name()));
    // The number to range-check, if the type is numeric.
    let number: Option<f64> = match kind {
        ConfigType::Int => Some(trimmed.parse::<i32>().map_err(|_| not_a())? as f64),
        ConfigType::Long => Some(trimmed.parse::<i64>().map_err(|_| not_a())? as f64),
        ConfigType::Double => {
            let v = trimmed.parse::<f64>().map_err(|_| not_a())?;
            if v.is_nan() {
                return Err(not_a());
            }
            Some(v)
        }
        ConfigType::Boolean => {
            if !trimmed.eq_ignore_ascii_case("true") && !trimmed.eq_ignore_ascii_case("false") {
                return Err(invalid("Expected value to be either true or false".into()));
            }
            None
        }
        ConfigType::Short => Some(trimmed.parse::<i16>().map_err(|_| not_a())? as f64),
        ConfigType::String | ConfigType::List => None,
    };
    match (def.check, number) {
        (AtLeast(min), Some(v)) if v < min as f64 => {
            return Err(invalid(format!("Value must be at least {min}")));
        }
        (Between(min, _), Some(v)) if v < min as f64 => {
            return Err(invalid(format!("Value must be at least {min}")));
        }
        (Between(_, max), Some(v)) if v > max as f64 => {
            return Err(invalid(format!("Value must be no more than {max}")));
        }
        (GzipLevel, Some(v)) if v != -1.0 && !(1.0..=9.0).contains(&v) => {
            return Err(invalid("Value must be between 1 and 9, or -1".into()));
        }
        (OneOf(valid), _) if !valid.contains(&trimmed) => {
            return Err(invalid(format!(
                "String must be one of: {}",
                valid.join(", ")
            )));
        }
        (ListOf(valid), _) => {
            let mut items: Vec<&str> = list_items(trimmed).collect();
            if let Some(bad) = items.iter().find(|i| !valid.contains(i)) {
                return Err(ConfigError::InvalidValue {
                    name: name.to_string(),
                    value: bad.to_string(),
                    reason: format!("String must be one of: {}", valid.join(", ")),
                });
            }
            if items.is_empty() {
                return Err(invalid(format!(
                    "Kappa needs at least one of: {}",
                    valid.join(", ")
                )));
            }
            items.sort_unstable();
            items.dedup();
            return Ok(items.join(","));
        }
        (ThrottledReplicas, _) => {
            let items: Vec<&str> = list_items(trimmed).collect();
            let pair = |i: &&str| {
                i.split_once(':').is_some_and(|(p, b)| {
                    !p.is_empty()
                        && !b.is_empty()
                        && p.trim().bytes().all(|c| c.is_ascii_digit())
                        && b.trim().bytes().all(|c| c.is_ascii_digit())
                })
            };
            if !(items == ["*"] || items.iter().all(pair)) {
                return Err(invalid(format!(
                    "{name} must be the literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],..."
                )));
            }
            return Ok(items.join(","));
        }
        (MessageFormatVersion, _) if !is_kafka_version(trimmed) => {
            return Err(invalid(format!(
                "Version `{trimmed}` is not a valid version"
            )));
        }
        (RemoteStorage, _) if trimmed.eq_ignore_ascii_case("true") => {
            return Err(ConfigError::Conflict(
                "Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.".into(),
            ));
        }
        _ => {}
    }
    Ok(match kind {
        ConfigType::Boolean => trimmed.to_ascii_lowercase(),
        ConfigType::Int | ConfigType::Short | ConfigType::Long => {
            trimmed.trim_start_matches('+').to_string()
        }
        _ => trimmed.to_string(),
    })
}

fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A Kafka release as `MetadataVersion` (3.x) reads them: `0.10.2`, `2.8`, `3.0-IV1`; as
/// there, segments past the release's (three for 0.x, two after) are ignored: `0.10.0.0`
/// and `2.8.1` are accepted (librdkafka's tests set `0.10.0.0`).
fn is_kafka_version(v: &str) -> bool {
    let (release, iv) = match v.split_once("-IV") {
        Some((r, iv)) => (r, Some(iv)),
        None => (v, None),
    };
    let parts: Vec<&str> = release.split('.').collect();
    let numeric = |s: &&str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let known_major = matches!(parts.first(), Some(&("0" | "1" | "2" | "3")));
    let needed = if parts.first() == Some(&"0") { 3 } else { 2 };
    known_major
        && (needed..=4).contains(&parts.len())
        && parts.iter().all(numeric)
        && iv.is_none_or(|i| numeric(&i))
}

/// Checks a broker config that sets a topic default (`log.retention.hours = 48`); returns the
/// topic config it sets and its value in the topic config's unit.
pub fn validate_broker(name: &str, value: &str) -> Result<(&'static str, String), ConfigError> {
    let (def, synonym) =
        find_by_synonym(name).ok_or_else(|| ConfigError::UnknownBrokerName(name.to_string()))?;
    if synonym.factor == 1 {
        return Ok((def.name, check_value(def, name, value, def.kind)?));
    }
    // log.retention.hours and the like are INTs in their own unit.
    let v = value
        .trim()
        .parse::<i32>()
        .map_err(|_| ConfigError::InvalidValue {
            name: name.to_string(),
            value: value.to_string(),
            reason: "Not a number of type INT".into(),
        })?;
    let in_ms = (v as i64).saturating_mul(synonym.factor);
    let checked = check_value(def, def.name, &in_ms.to_string(), def.kind).map_err(|_| {
        ConfigError::InvalidValue {
            name: name.to_string(),
            value: value.to_string(),
            reason: "Value out of range".into(),
        }
    })?;
    Ok((def.name, checked))
}

/// Where a topic config's effective value comes from, as DescribeConfigs reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// DYNAMIC_TOPIC_CONFIG: the topic's own override.
    Topic = 1,
    /// STATIC_BROKER_CONFIG: a broker config (its synonym) set in the broker's configuration.
    StaticBroker = 4,
    /// DEFAULT_CONFIG: Kafka's default.
    Default = 5,
}

/// One value a topic config takes from one place (its override, a broker synonym, the default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The config's name there: the topic config's, or the broker synonym's.
    pub name: String,
    /// In that config's own unit (hours for log.retention.hours).
    pub value: String,
    pub source: Source,
}

/// Topic config defaults a broker's configuration sets, under their broker names
/// (`log.retention.hours`), each checked.
#[derive(Clone, Debug, Default)]
pub struct BrokerDefaults {
    /// Broker config name -> value as written.
    set: BTreeMap<String, String>,
    /// Topic config name -> effective default in the topic config's unit.
    effective: BTreeMap<String, String>,
}

impl BrokerDefaults {
    /// Checks every setting; the first synonym of a topic config that is set wins, as in Kafka.
    pub fn new(set: BTreeMap<String, String>) -> Result<BrokerDefaults, ConfigError> {
        let mut by_topic: BTreeMap<&str, (usize, String)> = BTreeMap::new();
        for (name, value) in &set {
            let (topic_name, v) = validate_broker(name, value)?;
            let def = find(topic_name).expect("synonyms belong to known configs");
            let rank = def
                .synonyms
                .iter()
                .position(|s| s.name == name)
                .unwrap_or(usize::MAX);
            if by_topic.get(topic_name).is_none_or(|(r, _)| rank < *r) {
                by_topic.insert(topic_name, (rank, v));
            }
        }
        let effective: BTreeMap<String, String> = by_topic
            .into_iter()
            .map(|(k, (_, v))| (k.to_string(), v))
            .collect();
        check_conflicts(&|k| {
            effective
                .get(k)
                .cloned()
                .or_else(|| find(k).map(|d| d.default.to_string()))
        })?;
        Ok(BrokerDefaults { set, effective })
    }

    /// The broker's default for a topic config: what its configuration sets, else Kafka's.
    pub fn value(&self, topic_config: &str) -> Option<String> {
        self.effective
            .get(topic_config)
            .cloned()
            .or_else(|| find(topic_config).map(|d| d.default.to_string()))
    }

    /// Whether the broker's configuration sets a topic config's default (through a synonym).
    pub fn is_set(&self, topic_config: &str) -> bool {
        self.effective.contains_key(topic_config)
    }

    /// Broker configs set, by name.
    pub fn set(&self) -> &BTreeMap<String, String> {
        &self.set
    }

    /// Every place a topic config's value could come from, highest priority first: the
    /// topic's override, each broker synonym set, and Kafka's default (under the synonym that
    /// carries it in Kafka, e.g. log.retention.hours=168). The first is the effective value.
    pub fn resolve(&self, def: &ConfigDef, overrides: &BTreeMap<String, String>) -> Vec<Resolved> {
        let mut out = Vec::new();
        if let Some(v) = overrides.get(def.name) {
            out.push(Resolved {
                name: def.name.to_string(),
                value: v.clone(),
                source: Source::Topic,
            });
        }
        for s in def.synonyms {
            if let Some(v) = self.set.get(s.name) {
                out.push(Resolved {
                    name: s.name.to_string(),
                    value: v.trim().to_string(),
                    source: Source::StaticBroker,
                });
            }
        }
        // Kafka's default sits on the last synonym (the coarsest unit), else on the config.
        let (name, value) = match def.synonyms.last() {
            Some(s) if s.factor > 1 => match def.default.parse::<i64>() {
                Ok(ms) if ms % s.factor == 0 => (s.name, (ms / s.factor).to_string()),
                _ => (def.name, def.default.to_string()),
            },
            Some(s) => (s.name, def.default.to_string()),
            None => (def.name, def.default.to_string()),
        };
        out.push(Resolved {
            name: name.to_string(),
            value,
            source: Source::Default,
        });
        out
    }

    /// The effective value of a topic config for a topic with these overrides.
    pub fn effective(&self, name: &str, overrides: &BTreeMap<String, String>) -> Option<String> {
        overrides.get(name).cloned().or_else(|| self.value(name))
    }
}

/// Kafka's checks across configs (`LogConfig.validateValues`), on effective values.
pub fn check_conflicts(effective: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let long = |k: &str| effective(k).and_then(|v| v.trim().parse::<i64>().ok());
    if let (Some(min), Some(max)) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms")) {
        if min > max {
            return Err(ConfigError::Conflict(format!(
                "conflict topic config setting min.compaction.lag.ms ({min}) > max.compaction.lag.ms ({max})"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(name: &str, value: &str) -> String {
        validate(name, value).unwrap_err().to_string()
    }

    #[test]
    fn every_name_is_accepted_with_its_default() {
        for d in TOPIC_CONFIGS {
            if d.name == "cleanup.policy" {
                assert_eq!(validate(d.name, d.default).unwrap(), "delete");
                continue;
            }
            assert_eq!(
                validate(d.name, d.default).as_deref(),
                Ok(d.default),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn the_names_tools_set_are_accepted() {
        for (name, value) in [
            ("min.cleanable.dirty.ratio", "0.1"),
            ("max.compaction.lag.ms", "60000"),
            ("unclean.leader.election.enable", "true"),
            ("preallocate", "TRUE"),
            ("segment.index.bytes", "4096"),
            ("message.timestamp.after.max.ms", "0"),
            ("message.timestamp.before.max.ms", "86400000"),
            ("flush.messages", "1"),
            ("flush.ms", "1000"),
            ("file.delete.delay.ms", "0"),
            ("compression.type", "gzip"),
            ("compression.type", "zstd"),
            ("compression.type", "uncompressed"),
            ("message.format.version", "2.8"),
            ("message.format.version", "0.10.2"),
            ("message.format.version", "3.0-IV1"),
            ("cleanup.policy", "delete,compact"),
            ("follower.replication.throttled.replicas", "*"),
            ("leader.replication.throttled.replicas", "0:0,1:0"),
            ("remote.storage.enable", "false"),
            ("compression.zstd.level", "-5"),
            ("compression.gzip.level", "9"),
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
            ("local.retention.ms", "-2"),
        ] {
            validate(name, value).unwrap_or_else(|e| panic!("{name}={value}: {e}"));
        }
        assert_eq!(
            validate("cleanup.policy", " delete , compact ").unwrap(),
            "compact,delete"
        );
        assert_eq!(validate("preallocate", "TRUE").unwrap(), "true");
    }

    #[test]
    fn wrong_types_get_kafkas_message() {
        assert_eq!(
            err("retention.ms", "abc"),
            "Invalid value abc for configuration retention.ms: Not a number of type LONG"
        );
        assert_eq!(
            err("segment.bytes", "3000000000"),
            "Invalid value 3000000000 for configuration segment.bytes: Not a number of type INT"
        );
        assert_eq!(
            err("min.cleanable.dirty.ratio", "half"),
            "Invalid value half for configuration min.cleanable.dirty.ratio: Not a number of type DOUBLE"
        );
        assert_eq!(
            err("preallocate", "yes"),
            "Invalid value yes for configuration preallocate: Expected value to be either true or false"
        );
    }

    #[test]
    fn out_of_range_values_get_kafkas_message() {
        assert_eq!(
            err("min.cleanable.dirty.ratio", "1.5"),
            "Invalid value 1.5 for configuration min.cleanable.dirty.ratio: Value must be no more than 1"
        );
        assert_eq!(
            err("min.cleanable.dirty.ratio", "-0.1"),
            "Invalid value -0.1 for configuration min.cleanable.dirty.ratio: Value must be at least 0"
        );
        assert_eq!(
            err("max.compaction.lag.ms", "0"),
            "Invalid value 0 for configuration max.compaction.lag.ms: Value must be at least 1"
        );
        assert_eq!(
            err("segment.index.bytes", "3"),
            "Invalid value 3 for configuration segment.index.bytes: Value must be at least 4"
        );
        assert_eq!(
            err("retention.ms", "-2"),
            "Invalid value -2 for configuration retention.ms: Value must be at least -1"
        );
        assert_eq!(
            err("flush.messages", "0"),
            "Invalid value 0 for configuration flush.messages: Value must be at least 1"
        );
        assert_eq!(
            err("compression.lz4.level", "18"),
            "Invalid value 18 for configuration compression.lz4.level: Value must be no more than 17"
        );
        assert!(err("compression.gzip.level", "0").contains("between 1 and 9"));
    }

    #[test]
    fn invalid_choices_get_kafkas_message() {
        assert_eq!(
            err("compression.type", "brotli"),
            "Invalid value brotli for configuration compression.type: String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer"
        );
        assert_eq!(
            err("message.timestamp.type", "createtime"),
            "Invalid value createtime for configuration message.timestamp.type: String must be one of: CreateTime, LogAppendTime"
        );
        assert_eq!(
            err("cleanup.policy", "delete,shred"),
            "Invalid value shred for configuration cleanup.policy: String must be one of: compact, delete"
        );
        assert!(err("message.format.version", "9.9").contains("is not a valid version"));
        assert!(err("leader.replication.throttled.replicas", "0-1").contains("literal '*'"));
        assert!(err("remote.storage.enable", "true").contains("Tiered Storage"));
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!(
            err("retention.hours", "1"),
            "Unknown topic config name: retention.hours"
        );
        assert_eq!(
            err("log.retention.ms", "1"),
            "Unknown topic config name: log.retention.ms"
        );
        assert_eq!(err("", "1"), "Unknown topic config name: ");
    }

    #[test]
    fn compaction_lags_must_be_ordered() {
        let values: BTreeMap<&str, &str> = [
            ("min.compaction.lag.ms", "5000"),
            ("max.compaction.lag.ms", "1000"),
        ]
        .into();
        let e = check_conflicts(&|k| values.get(k).map(|v| v.to_string())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "conflict topic config setting min.compaction.lag.ms (5000) > max.compaction.lag.ms (1000)"
        );
    }

    #[test]
    fn every_synonym_is_a_distinct_broker_config() {
        let mut seen = std::collections::HashSet::new();
        for d in TOPIC_CONFIGS {
            for s in d.synonyms {
                assert!(seen.insert(s.name), "{} twice", s.name);
            }
        }
    }

    #[test]
    fn broker_synonyms_convert_units_and_the_first_set_wins() {
        assert_eq!(
            validate_broker("log.retention.hours", "2").unwrap(),
            ("retention.ms", "7200000".to_string())
        );
        let d = BrokerDefaults::new(
            [
                ("log.retention.hours".to_string(), "2".to_string()),
                ("log.retention.ms".to_string(), "1000".to_string()),
                (
                    "log.cleaner.min.cleanable.ratio".to_string(),
                    "0.1".to_string(),
                ),
            ]
            .into(),
        )
        .unwrap();
        assert_eq!(d.value("retention.ms").as_deref(), Some("1000"));
        assert_eq!(d.value("min.cleanable.dirty.ratio").as_deref(), Some("0.1"));
        assert_eq!(d.value("segment.ms").as_deref(), Some("604800000"));
        let retention = find("retention.ms").unwrap();
        let overrides: BTreeMap<String, String> = [("retention.ms".into(), "5".into())].into();
        let chain = d.resolve(retention, &overrides);
        let names: Vec<_> = chain.iter().map(|r| (r.name.as_str(), r.source)).collect();
        assert_eq!(
            names,
            [
                ("retention.ms", Source::Topic),
                ("log.retention.ms", Source::StaticBroker),
                ("log.retention.hours", Source::StaticBroker),
                ("log.retention.hours", Source::Default),
            ]
        );
        assert_eq!(chain[3].value, "168");
        assert!(matches!(
            BrokerDefaults::new([("log.retention.days".to_string(), "1".to_string())].into()),
            Err(ConfigError::UnknownBrokerName(_))
        ));
        assert!(BrokerDefaults::new(
            [("log.index.size.max.bytes".to_string(), "2".to_string())].into()
        )
        .is_err());
    }

    #[test]
    fn message_format_versions_read_as_kafka_reads_them() {
        for ok in [
            "0.10.0",
            "0.10.0.0",
            "0.10.0-IV1",
            "2.8",
            "2.8.1",
            "3.0-IV1",
        ] {
            assert!(is_kafka_version(ok), "{ok}");
        }
        for bad in ["0.10", "4.0", "x.1", "2", "", "2.8.1.1.1"] {
            assert!(!is_kafka_version(bad), "{bad}");
        }
    }
}
