//! Metadata and DescribeCluster: the topics, partitions and the one broker a client sees.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use uuid::Uuid;

use crate::broker::Broker;
use crate::topics::{Topic, TopicError};

use super::{str_bytes, topic_error_code, topic_name, RequestContext};

/// ACL operation bits (Kafka's AclOperation codes) a client may perform: without ACLs, all.
const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
pub(super) const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);
/// What Kafka sends when authorized operations were not requested.
pub(super) const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

pub(super) fn metadata(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: MetadataRequest,
) -> MetadataResponse {
    let cfg = &broker.config;
    let topic_ops = if ctx.api_version >= 8 && req.include_topic_authorized_operations {
        TOPIC_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let cluster_ops =
        if (8..=10).contains(&ctx.api_version) && req.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        };
    let auto_create =
        cfg.auto_create_topics && (ctx.api_version < 4 || req.allow_auto_topic_creation);
    let requested: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && ctx.api_version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
    };
    let mut topics = Vec::new();
    match requested {
        None => {
            for t in broker.topics.list() {
                topics.push(
                    metadata_topic(&t, ctx.api_version).with_topic_authorized_operations(topic_ops),
                );
            }
        }
        Some(list) => {
            for (name, id) in list {
                let found = match (&name, id) {
                    (Some(name), _) => broker
                        .topics
                        .get_or_create(name, auto_create, cfg.num_partitions)
                        .map_err(|e| (name.clone(), e)),
                    (None, id) => broker
                        .topics
                        .get_by_id(id)
                        .ok_or_else(|| (String::new(), TopicError::Unknown(id.to_string()))),
                };
                match found {
                    Ok(t) => topics.push(
                        metadata_topic(&t, ctx.api_version)
                            .with_topic_authorized_operations(topic_ops),
                    ),
                    Err((name, e)) => {
                        let code = ctx.err(topic_error_code(&e));
                        topics.push(
                            MetadataResponseTopic::default()
                                .with_name(Some(topic_name(&name)))
                                .with_topic_id(if ctx.api_version >= 10 {
                                    id
                                } else {
                                    Uuid::nil()
                                })
                                .with_error_code(code),
                        );
                    }
                }
            }
        }
    }
    let v = ctx.api_version;
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(cfg.node_id))
            .with_host(str_bytes(&broker.advertised_host))
            .with_port(broker.advertised_port)])
        .with_cluster_id((v >= 2).then(|| str_bytes(&broker.topics.cluster_id)))
        .with_controller_id(BrokerId(if v >= 1 { cfg.node_id } else { -1 }))
        .with_cluster_authorized_operations(cluster_ops)
        .with_topics(topics)
}

fn metadata_topic(t: &Topic, version: i16) -> MetadataResponseTopic {
    let node = BrokerId(0);
    let partitions = (0..t.partitions.len() as i32)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(node)
                .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(if version >= 10 { t.id } else { Uuid::nil() })
        .with_is_internal(version >= 1 && t.name.starts_with("__"))
        .with_partitions(partitions)
}

pub(super) fn describe_cluster(
    broker: &Arc<Broker>,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let ops = if req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    DescribeClusterResponse::default()
        .with_cluster_authorized_operations(ops)
        .with_cluster_id(str_bytes(&broker.topics.cluster_id))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(broker.config.node_id))
            .with_host(str_bytes(&broker.advertised_host))
            .with_port(broker.advertised_port)])
}
