//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! AlterConfigs and IncrementalAlterConfigs.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalAlterResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::broker::Broker;
use crate::groups::OFFSETS_TOPIC;
use crate::topic_configs::{self, ConfigError, ConfigType};
use crate::topics::{validate_config, validate_topic_name, TopicError};
use crate::txn::TXN_STATE_TOPIC;

use super::{is_list, str_bytes, topic_error_code, topic_name, RequestContext};

pub(super) fn create_topics(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = if t.num_partitions == -1 {
                broker.config.num_partitions
            } else {
                t.num_partitions
            };
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                if let Some(v) = &c.value {
                    configs.insert(c.name.to_string(), v.to_string());
                }
            }
            let assigned = (!t.assignments.is_empty()).then(|| {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err((
                        ResponseError::InvalidRequest,
                        "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".to_string(),
                    ));
                }
                let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
                indexes.sort_unstable();
                if indexes.iter().enumerate().any(|(i, p)| *p != i as i32) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        "partitions should be a consecutive 0-based integer sequence".to_string(),
                    ));
                }
                for a in &t.assignments {
                    check_replicas(broker.config.node_id, &a.broker_ids)?;
                }
                Ok(t.assignments.len() as i32)
            });
            let partitions = match assigned {
                Some(Ok(n)) => n,
                _ => partitions,
            };
            let result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let outcome = if t.replication_factor != -1 && t.replication_factor != 1 {
                Err((
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "replication factor {} is larger than the 1 available broker",
                        t.replication_factor
                    ),
                ))
            } else if let Some(Err(refused)) = assigned {
                Err(refused)
            } else if req.validate_only {
                broker
                    .topics
                    .validate_create(&name, partitions, &configs)
                    .map(|_| None)
                    .map_err(|e| (topic_error_code(&e), e.to_string()))
            } else {
                broker
                    .topics
                    .create(&name, partitions, &configs)
                    .map(Some)
                    .map_err(|e| (topic_error_code(&e), e.to_string()))
            };
            match outcome {
                Ok(_) if ctx.api_version < 5 => result,
                Ok(created) => {
                    let overrides = created
                        .as_ref()
                        .map(|t| t.configs.clone())
                        .unwrap_or(configs);
                    let configs = broker
                        .topics
                        .effective_configs(&overrides)
                        .into_iter()
                        .map(|(def, value, chain)| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(def.name))
                                .with_value(Some(str_bytes(&value)))
                                .with_config_source(chain[0].source as i8)
                        })
                        .collect();
                    result
                        .with_topic_id(
                            created
                                .filter(|_| ctx.api_version >= 7)
                                .map(|t| t.id)
                                .unwrap_or_default(),
                        )
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(configs))
                }
                Err((code, message)) => result
                    .with_error_code(ctx.err(code))
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub(super) fn delete_topics(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut targets: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let name = name.or_else(|| broker.topics.get_by_id(id).map(|t| t.name.clone()));
            let v = ctx.api_version;
            let result = DeletableTopicResult::default()
                .with_name(name.as_deref().map(topic_name))
                .with_topic_id(if v >= 6 { id } else { Uuid::nil() });
            let Some(name) = name else {
                return result.with_error_code(ctx.err(ResponseError::UnknownTopicId));
            };
            if name == OFFSETS_TOPIC || name == TXN_STATE_TOPIC {
                return result
                    .with_error_code(ctx.err(ResponseError::InvalidTopicException))
                    .with_error_message(
                        (v >= 5).then(|| str_bytes("internal topics cannot be deleted")),
                    );
            }
            match broker.topics.delete(&name) {
                Ok(id) => result.with_topic_id(if v >= 6 { id } else { Uuid::nil() }),
                Err(e) => result
                    .with_error_code(ctx.err(topic_error_code(&e)))
                    .with_error_message((v >= 5).then(|| str_bytes(&e.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) fn create_partitions(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if let Some(assignments) = &t.assignments {
                let current = broker
                    .topics
                    .get(&t.name.0)
                    .map(|topic| topic.partitions.len() as i32)
                    .unwrap_or(0);
                let checked = if assignments.len() as i64 != t.count as i64 - current as i64 {
                    Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "Increasing the number of partitions by {} but {} assignments provided.",
                            t.count as i64 - current as i64,
                            assignments.len()
                        ),
                    ))
                } else {
                    assignments
                        .iter()
                        .try_for_each(|a| check_replicas(broker.config.node_id, &a.broker_ids))
                };
                if let Err((code, message)) = checked {
                    let code = ctx.err(code);
                    return result
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(&message)));
                }
            }
            match broker
                .topics
                .add_partitions(&t.name.0, t.count, req.validate_only)
            {
                Ok(()) => result,
                Err(e) => result
                    .with_error_code(ctx.err(topic_error_code(&e)))
                    .with_error_message(Some(str_bytes(&e.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// A manual replica assignment of one partition: on one broker, this one, as Kafka's
/// controller checks it (INVALID_REPLICA_ASSIGNMENT with its messages otherwise).
fn check_replicas(node_id: i32, replicas: &[BrokerId]) -> Result<(), (ResponseError, String)> {
    let refuse = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
    match replicas {
        [] => refuse("The manual partition assignment includes an empty replica list.".into()),
        [BrokerId(id), ..] if replicas.iter().skip(1).any(|b| b.0 == *id) => refuse(format!(
            "The manual partition assignment includes the broker {id} more than once."
        )),
        _ => match replicas.iter().find(|b| b.0 != node_id) {
            Some(BrokerId(other)) => refuse(format!(
                "The manual partition assignment includes broker {other}, but no broker with that ID is registered."
            )),
            None => Ok(()),
        },
    }
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub(super) fn describe_configs(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let version = ctx.api_version;
    let include_synonyms = req.include_synonyms;
    let results =
        req.resources
            .into_iter()
            .map(|r| {
                let result = DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
                let wanted = |k: &str| {
                    r.configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|w| w.as_str() == k))
                };
                let entries: Vec<DescribedConfig> = match r.resource_type {
                    RESOURCE_TOPIC => {
                        let Some(topic) = broker.topics.get(&r.resource_name) else {
                            let code = ctx.err(ResponseError::UnknownTopicOrPartition);
                            return result.with_error_code(code).with_error_message(Some(
                                str_bytes(&format!("unknown topic '{}'", r.resource_name.as_str())),
                            ));
                        };
                        broker
                            .topics
                            .effective_configs(&topic.configs)
                            .into_iter()
                            .map(|(def, value, chain)| DescribedConfig {
                                name: def.name.to_string(),
                                value: Some(value),
                                source: chain[0].source as i8,
                                read_only: false,
                                kind: def.kind as i8,
                                synonyms: chain
                                    .into_iter()
                                    .map(|c| (c.name, Some(c.value), c.source as i8))
                                    .collect(),
                            })
                            .collect()
                    }
                    RESOURCE_BROKER => broker_configs(broker),
                    _ => {
                        let code = ctx.err(ResponseError::InvalidRequest);
                        return result
                            .with_error_code(code)
                            .with_error_message(Some(str_bytes("unsupported resource type")));
                    }
                };
                let configs = entries
                    .into_iter()
                    .filter(|c| wanted(&c.name))
                    .map(|c| {
                        let synonyms = if include_synonyms {
                            c.synonyms
                                .iter()
                                .map(|(name, value, source)| {
                                    DescribeConfigsSynonym::default()
                                        .with_name(str_bytes(name))
                                        .with_value(value.as_deref().map(str_bytes))
                                        .with_source(*source)
                                })
                                .collect()
                        } else {
                            Vec::new()
                        };
                        DescribeConfigsResourceResult::default()
                            .with_name(str_bytes(&c.name))
                            .with_value(c.value.as_deref().map(str_bytes))
                            .with_read_only(c.read_only)
                            .with_config_source(c.source)
                            .with_synonyms(synonyms)
                            .with_config_type(if version >= 3 { c.kind } else { 0 })
                    })
                    .collect();
                result.with_configs(configs)
            })
            .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// One config as DescribeConfigs reports it.
struct DescribedConfig {
    name: String,
    value: Option<String>,
    /// Kafka's ConfigSource code.
    source: i8,
    read_only: bool,
    /// Kafka's ConfigType code.
    kind: i8,
    /// (name, value, source), the effective one first.
    synonyms: Vec<(String, Option<String>, i8)>,
}

const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// The broker's configs: its own settings, and every broker config that sets a topic
/// default (`log.retention.hours`...), from its configuration or Kafka's default. All are
/// read-only: Kappa changes none of them at runtime.
fn broker_configs(broker: &Arc<Broker>) -> Vec<DescribedConfig> {
    let c = &broker.config;
    let kafka = crate::BrokerConfig::default();
    let entry = |name: &str, value: Option<String>, kind: ConfigType, set: bool| {
        let source = if set {
            SOURCE_STATIC_BROKER
        } else {
            SOURCE_DEFAULT
        };
        DescribedConfig {
            name: name.to_string(),
            value: value.clone(),
            source,
            read_only: true,
            kind: kind as i8,
            synonyms: vec![(name.to_string(), value, source)],
        }
    };
    let mut out = vec![
        entry(
            "node.id",
            Some(c.node_id.to_string()),
            ConfigType::Int,
            true,
        ),
        entry(
            "broker.id",
            Some(c.node_id.to_string()),
            ConfigType::Int,
            true,
        ),
        entry(
            "auto.create.topics.enable",
            Some(c.auto_create_topics.to_string()),
            ConfigType::Boolean,
            c.auto_create_topics != kafka.auto_create_topics,
        ),
        entry(
            "num.partitions",
            Some(c.num_partitions.to_string()),
            ConfigType::Int,
            c.num_partitions != kafka.num_partitions,
        ),
        entry(
            "default.replication.factor",
            Some("1".into()),
            ConfigType::Int,
            false,
        ),
        entry(
            "offsets.topic.replication.factor",
            Some("1".into()),
            ConfigType::Short,
            true,
        ),
        entry(
            "transaction.state.log.replication.factor",
            Some("1".into()),
            ConfigType::Short,
            true,
        ),
        entry(
            "socket.request.max.bytes",
            Some(c.max_request_bytes.to_string()),
            ConfigType::Int,
            c.max_request_bytes != kafka.max_request_bytes,
        ),
        entry(
            "connections.max.idle.ms",
            Some(c.connections_max_idle_ms.to_string()),
            ConfigType::Long,
            c.connections_max_idle_ms != kafka.connections_max_idle_ms,
        ),
        entry(
            "log.retention.check.interval.ms",
            Some(c.log_maintenance_interval_ms.to_string()),
            ConfigType::Long,
            c.log_maintenance_interval_ms != kafka.log_maintenance_interval_ms,
        ),
        entry(
            "log.dirs",
            Some(c.data_dir.display().to_string()),
            ConfigType::List,
            true,
        ),
    ];
    let defaults = broker.topics.defaults();
    for def in crate::topic_configs::TOPIC_CONFIGS {
        for (i, synonym) in def.synonyms.iter().enumerate() {
            let set = defaults.set().get(synonym.name).cloned();
            // Kafka's default sits on the last synonym (log.retention.hours=168); the others
            // have none.
            let value = set.clone().or_else(|| {
                (i + 1 == def.synonyms.len()).then(|| match def.default.parse::<i64>() {
                    Ok(ms) if synonym.factor > 1 => (ms / synonym.factor).to_string(),
                    _ => def.default.to_string(),
                })
            });
            let kind = if synonym.factor > 1 {
                ConfigType::Int
            } else {
                def.kind
            };
            out.push(entry(synonym.name, value, kind, set.is_some()));
        }
    }
    out
}

/// Applies a set of changes to a topic's overrides, validating all before writing any.
/// Returns the (error code, message) for the resource's response entry.
fn alter_topic_configs(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    (resource_type, name): (i8, &str),
    validate_only: bool,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), TopicError>,
) -> (i16, Option<StrBytes>) {
    if resource_type != RESOURCE_TOPIC {
        let code = ctx.err(ResponseError::InvalidRequest);
        return (code, Some(str_bytes("only topic configs can be altered")));
    }
    let result = validate_topic_name(name)
        .and_then(|()| {
            broker
                .topics
                .get(name)
                .ok_or_else(|| TopicError::Unknown(name.to_string()))
        })
        .and_then(|topic| {
            let mut configs = topic.configs.clone();
            change(&mut configs)?;
            broker.topics.check_overrides(&configs)?;
            if validate_only {
                return Ok(());
            }
            broker.topics.set_configs(name, configs)
        });
    match result {
        Ok(()) => (0, None),
        Err(e) => (
            ctx.err(topic_error_code(&e)),
            Some(str_bytes(&e.to_string())),
        ),
    }
}

pub(super) fn incremental_alter_configs(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let resp = IncrementalAlterResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let (code, message) = alter_topic_configs(
                broker,
                ctx,
                (r.resource_type, &r.resource_name),
                req.validate_only,
                |configs| {
                    for c in &r.configs {
                        let key = c.name.to_string();
                        let value = c.value.as_ref().map(|v| v.to_string());
                        match (c.config_operation, value) {
                            (0, Some(v)) => {
                                configs.insert(key.clone(), validate_config(&key, &v)?);
                            }
                            (1, _) => {
                                if topic_configs::find(&key).is_none() {
                                    return Err(ConfigError::UnknownName(key).into());
                                }
                                configs.remove(&key);
                            }
                            (op @ (2 | 3), Some(v)) if is_list(&key) => {
                                let current = broker
                                    .topics
                                    .defaults()
                                    .effective(&key, configs)
                                    .unwrap_or_default();
                                let mut items: Vec<String> = current
                                    .split(',')
                                    .map(|s| s.trim().to_string())
                                    .filter(|s| !s.is_empty())
                                    .collect();
                                for item in v.split(',').map(str::trim) {
                                    if op == 2 && !items.iter().any(|i| i == item) {
                                        items.push(item.to_string());
                                    } else if op == 3 {
                                        items.retain(|i| i != item);
                                    }
                                }
                                configs
                                    .insert(key.clone(), validate_config(&key, &items.join(","))?);
                            }
                            (op @ (2 | 3), Some(_)) => {
                                if topic_configs::find(&key).is_none() {
                                    return Err(ConfigError::UnknownName(key).into());
                                }
                                let what = if op == 2 { "append" } else { "subtract" };
                                return Err(TopicError::InvalidConfig(format!(
                                    "Config value {what} is not allowed for config key: {key}"
                                )));
                            }
                            (op, _) => {
                                return Err(TopicError::InvalidConfig(format!(
                                    "operation {op} is not valid for '{key}'"
                                )));
                            }
                        }
                    }
                    Ok(())
                },
            );
            resp.with_error_code(code).with_error_message(message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub(super) fn alter_configs(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let resp = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            // AlterConfigs replaces the whole set of overrides.
            let (code, message) = alter_topic_configs(
                broker,
                ctx,
                (r.resource_type, &r.resource_name),
                req.validate_only,
                |configs| {
                    configs.clear();
                    for c in &r.configs {
                        if let Some(v) = &c.value {
                            configs.insert(
                                c.name.to_string(),
                                validate_config(c.name.as_str(), v.as_str())?,
                            );
                        }
                    }
                    Ok(())
                },
            );
            resp.with_error_code(code).with_error_message(message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}
