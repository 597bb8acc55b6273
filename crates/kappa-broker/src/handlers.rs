//! One function per Kafka API. Each turns a decoded request into a response; errors go into
//! the response's error codes exactly where a Kafka broker would put them.

mod txn;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalAlterResponse;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kappa_log::{AppendInfo, Log, LogError};
use uuid::Uuid;

use crate::durability::Syncer;
use crate::fetch_response::{Fetched, FetchedPartition, FetchedTopic};
use crate::groups::{CommittedOffset, JoinRequest, OFFSETS_TOPIC};
use crate::metrics::TopicLabels;
use crate::produce_stream::IncomingRecords;
use crate::server::Broker;
use crate::topics::{now_ms, validate_config, validate_topic_name, Topic, TopicError};
use crate::txn::TXN_STATE_TOPIC;

/// Per-request facts the handlers need.
pub struct RequestContext {
    pub api_version: i16,
    pub client_id: String,
    pub client_host: String,
    /// Error codes put in the response (for the per-API error metric).
    pub errors: u32,
    /// A Produce request's record sets, read aside as they arrived, one slot per partition
    /// in request order (see `produce_stream`); empty for other requests.
    pub streamed_records: Vec<Option<IncomingRecords>>,
}

impl RequestContext {
    /// Records `code` for metrics and returns it.
    fn code(&mut self, code: i16) -> i16 {
        if code != 0 {
            self.errors += 1;
        }
        code
    }
    fn err(&mut self, e: ResponseError) -> i16 {
        self.code(e.code())
    }
}

/// The versions implemented, per API. ApiVersions advertises exactly these.
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    Some(match key {
        ApiKey::Produce => (3, 11),
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::Metadata => (0, 12),
        ApiKey::ApiVersions => (0, 3),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::DeleteTopics => (1, 6),
        ApiKey::DeleteRecords => (0, 2),
        ApiKey::DescribeConfigs => (1, 4),
        ApiKey::AlterConfigs => (0, 2),
        ApiKey::CreatePartitions => (0, 3),
        ApiKey::IncrementalAlterConfigs => (0, 1),
        ApiKey::DescribeCluster => (0, 1),
        ApiKey::FindCoordinator => (0, 4),
        ApiKey::JoinGroup => (0, 7),
        ApiKey::SyncGroup => (0, 5),
        ApiKey::Heartbeat => (0, 4),
        ApiKey::LeaveGroup => (0, 5),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::OffsetFetch => (1, 7),
        ApiKey::ListGroups => (0, 4),
        ApiKey::DescribeGroups => (0, 5),
        ApiKey::DeleteGroups => (0, 2),
        ApiKey::OffsetDelete => (0, 0),
        ApiKey::InitProducerId => (0, 4),
        ApiKey::AddPartitionsToTxn => (0, 4),
        ApiKey::AddOffsetsToTxn => (0, 4),
        ApiKey::TxnOffsetCommit => (0, 4),
        ApiKey::EndTxn => (0, 4),
        ApiKey::ListTransactions => (0, 1),
        ApiKey::DescribeTransactions => (0, 0),
        ApiKey::DescribeProducers => (0, 0),
        _ => return None,
    })
}

pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = ApiKey::iter()
        .filter_map(|key| {
            supported_versions(key).map(|(min, max)| {
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

/// A handler's answer: now, or from a task still running (a produce waiting for its fsync).
// Built once per request and consumed at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Handled {
    Now(Option<ResponseKind>),
    /// The response and the number of error codes it carries.
    Later(tokio::task::JoinHandle<(Option<ResponseKind>, u32)>),
    /// A fetch answer: the server encodes it around the records (see `fetch_response`).
    Fetch(Fetched),
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    request: RequestKind,
) -> Handled {
    Handled::Now(Some(match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions_response(0)),
        RequestKind::Metadata(r) if metadata_creates_topics(broker, ctx, &r) => {
            ResponseKind::Metadata(blocking(broker, ctx, r, metadata).await)
        }
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata(broker, ctx, r)),
        RequestKind::Produce(r) => return produce(broker, ctx, r).await,
        RequestKind::Fetch(r) => return Handled::Fetch(fetch(broker, ctx, r).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets(broker, ctx, r)),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(blocking(broker, ctx, r, create_topics).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(blocking(broker, ctx, r, delete_topics).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(blocking(broker, ctx, r, create_partitions).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs(broker, ctx, r))
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            blocking(broker, ctx, r, incremental_alter_configs).await,
        ),
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(blocking(broker, ctx, r, alter_configs).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records(broker, ctx, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster(broker, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(txn::init_producer_id(broker, ctx, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(txn::add_partitions_to_txn(broker, ctx, r).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(txn::add_offsets_to_txn(broker, ctx, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(broker, ctx, r).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(txn::end_txn(broker, ctx, r).await),
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(txn::list_transactions(broker, ctx, r))
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(txn::describe_transactions(broker, ctx, r))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(txn::describe_producers(broker, ctx, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator(broker, ctx, r))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(join_group(broker, ctx, r).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group(broker, ctx, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat(broker, ctx, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group(broker, ctx, r)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit(broker, ctx, r).await)
        }
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch(broker, ctx, r)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups(broker, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups(broker, ctx, r))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups(broker, ctx, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete(broker, ctx, r).await)
        }
        // Unreachable: the server only decodes APIs listed in `supported_versions`.
        _ => return Handled::Now(None),
    }))
}

/// Runs a handler that writes files and fsyncs them (creating, deleting or changing topics)
/// on the blocking pool, not on the runtime thread the connection shares with others.
async fn blocking<Q, R>(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: Q,
    handler: fn(&Arc<Broker>, &mut RequestContext, Q) -> R,
) -> R
where
    Q: Send + 'static,
    R: Send + 'static,
{
    let broker = broker.clone();
    let mut inner = RequestContext {
        api_version: ctx.api_version,
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        errors: 0,
        streamed_records: Vec::new(),
    };
    let (response, inner) = match tokio::task::spawn_blocking(move || {
        let response = handler(&broker, &mut inner, req);
        (response, inner)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    ctx.errors += inner.errors;
    response
}

/// Whether a Metadata request would create topics (auto-creation of unknown names).
fn metadata_creates_topics(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: &MetadataRequest,
) -> bool {
    let auto_create =
        broker.config.auto_create_topics && (ctx.api_version < 4 || req.allow_auto_topic_creation);
    auto_create
        && req.topics.iter().flatten().any(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| broker.topics.get(&n.0).is_none())
        })
}

fn topic_error_code(e: &TopicError) -> ResponseError {
    match e {
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::Storage(_) | TopicError::DataDirInUse(_) => ResponseError::KafkaStorageError,
    }
}

/// Why a partition of a produce request was not appended: its error code, the message for
/// ProduceResponse v8+ and, when only some records of the batch were at fault, which
/// (`record_errors`, KIP-467; the batch as a whole is refused all the same, as in Kafka).
struct Rejected {
    code: ResponseError,
    message: Option<String>,
    record_errors: Vec<BatchIndexAndErrorMessage>,
}

impl Rejected {
    fn code(code: ResponseError) -> Self {
        Rejected {
            code,
            message: None,
            record_errors: Vec::new(),
        }
    }

    fn from_log_error(e: &LogError) -> Self {
        let LogError::InvalidRecords { reason, indices } = e else {
            return Rejected {
                code: log_error_code(e),
                message: Some(e.to_string()),
                record_errors: Vec::new(),
            };
        };
        let record_errors = indices
            .iter()
            .filter_map(|&i| i32::try_from(i).ok())
            .map(|i| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(i)
                    .with_batch_index_error_message(Some(str_bytes(reason)))
            })
            .collect();
        let shown: Vec<String> = indices.iter().take(3).map(|i| i.to_string()).collect();
        let more = if indices.len() > 3 { ", ..." } else { "" };
        Rejected {
            code: ResponseError::InvalidRecord,
            message: Some(format!(
                "One or more records have been rejected due to {} record errors in total \
                 (batch indices {}{more}): {reason}",
                indices.len(),
                shown.join(", "),
            )),
            record_errors,
        }
    }
}

fn log_error_code(e: &LogError) -> ResponseError {
    match e {
        LogError::CorruptBatch(_) => ResponseError::CorruptMessage,
        LogError::InvalidRecord(_) | LogError::InvalidRecords { .. } => {
            ResponseError::InvalidRecord
        }
        LogError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        LogError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::UnknownProducerId(_) => ResponseError::UnknownProducerId,
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        LogError::InvalidDirectory(..) | LogError::Io(_) => ResponseError::KafkaStorageError,
    }
}

/// Per-partition results grouped by topic, topics in name order.
fn by_topic<P>(
    results: Vec<(String, i32, i16)>,
    mut partition: impl FnMut(i32, i16) -> P,
) -> Vec<(String, Vec<P>)> {
    let mut grouped: BTreeMap<String, Vec<P>> = BTreeMap::new();
    for (t, p, code) in results {
        grouped.entry(t).or_default().push(partition(p, code));
    }
    grouped.into_iter().collect()
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

// ---------------------------------------------------------------------------------------------
// Metadata

/// ACL operation bits (Kafka's AclOperation codes) a client may perform: without ACLs, all.
const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);
/// What Kafka sends when authorized operations were not requested.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

fn metadata(
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

// ---------------------------------------------------------------------------------------------
// Produce

/// Phase one, in request order: validate and append every partition's batches. Phase two,
/// spawned: wait for the fsyncs acks=all asks for, then answer. The connection reads and
/// appends the next request while this one's fsync runs.
async fn produce(broker: &Arc<Broker>, ctx: &mut RequestContext, req: ProduceRequest) -> Handled {
    let acks = req.acks;
    let version = ctx.api_version;
    if !(acks == 0 || acks == 1 || acks == -1) {
        let code = ctx.err(ResponseError::InvalidRequiredAcks);
        let responses = req
            .topic_data
            .iter()
            .map(|t| {
                let parts = t
                    .partition_data
                    .iter()
                    .map(|p| {
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(code)
                            .with_base_offset(-1)
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(parts)
            })
            .collect();
        return Handled::Now(Some(ResponseKind::Produce(
            ProduceResponse::default().with_responses(responses),
        )));
    }
    let mut streamed = std::mem::take(&mut ctx.streamed_records).into_iter();
    type Appended = Result<(Arc<Syncer>, AppendInfo), Rejected>;
    let mut appends: Vec<(TopicName, i32, Appended)> = Vec::new();
    let now = now_ms();
    for topic_data in req.topic_data {
        let name = topic_data.name.0.to_string();
        let topic = if name == OFFSETS_TOPIC || name == TXN_STATE_TOPIC {
            // Only the group and transaction coordinators write there.
            Err(TopicError::InvalidName(name.clone()))
        } else {
            match broker.topics.get(&name) {
                Some(t) => Ok(t),
                // Creating a topic writes files and fsyncs them: not on the runtime thread.
                None => {
                    let (b, n) = (broker.clone(), name.clone());
                    tokio::task::spawn_blocking(move || {
                        b.topics.get_or_create(
                            &n,
                            b.config.auto_create_topics,
                            b.config.num_partitions,
                        )
                    })
                    .await
                    .unwrap_or_else(|e| Err(TopicError::Storage(e.to_string())))
                }
            }
        };
        for p in topic_data.partition_data {
            let streamed = streamed.next().flatten();
            let target = match &topic {
                Ok(t) => t
                    .partition(p.index)
                    .map(|log| (log, &t.syncers[p.index as usize]))
                    .ok_or(ResponseError::UnknownTopicOrPartition),
                Err(e) => Err(topic_error_code(e)),
            };
            // Appending is a copy into the partition's write buffer, or the taking of records
            // read into memory of their own: done here, in request order; the partition's write
            // loop takes it to the file. An append that must
            // first roll the segment or write a full buffer does file I/O: off the runtime.
            // A streamed request's records come aside; its frame has null ones.
            let records = streamed.or(p.records.map(IncomingRecords::Shared));
            // A transactional batch goes only into a partition its open transaction named
            // (AddPartitionsToTxn), so no transaction is left without a marker (KIP-890).
            let target = match (target, records.as_ref().and_then(transactional_writer)) {
                (Ok(t), Some((pid, epoch))) => broker
                    .txns
                    .verify_write(pid, epoch, &name, p.index)
                    .map(|()| t),
                (target, _) => target,
            };
            let appended = match (target, records) {
                (Ok((log, syncer)), Some(records)) => match if log.needs_room(records.len(), now) {
                    let log = log.clone();
                    tokio::task::spawn_blocking(move || records.append_to(&log, now))
                        .await
                        .unwrap_or_else(|e| Err(LogError::Io(std::io::Error::other(e))))
                } else {
                    records.append_to(log, now)
                } {
                    Ok(info) => Ok((syncer.clone(), info)),
                    Err(e) => {
                        tracing::debug!(topic = %name, partition = p.index, error = %e, "produce rejected");
                        Err(Rejected::from_log_error(&e))
                    }
                },
                (Ok(_), None) => Err(Rejected::code(ResponseError::CorruptMessage)),
                (Err(e), _) => Err(Rejected::code(e)),
            };
            appends.push((topic_data.name.clone(), p.index, appended));
        }
    }
    let mut any_appended = false;
    for (name, _, appended) in &appends {
        match appended {
            Ok((_, info)) if !info.duplicate => {
                any_appended = true;
                let labels = TopicLabels {
                    topic: name.0.to_string(),
                };
                broker
                    .metrics
                    .bytes_in
                    .get_or_create(&labels)
                    .inc_by(info.bytes as u64);
                broker
                    .metrics
                    .records_in
                    .get_or_create(&labels)
                    .inc_by(info.records as u64);
                if info.uncopied {
                    broker
                        .metrics
                        .produce_uncopied_bytes
                        .inc_by(info.bytes as u64);
                }
            }
            Ok(_) => {}
            Err(_) => {
                ctx.errors += 1;
            }
        }
    }
    if any_appended && acks == 0 {
        // Nobody waits for these writes; they must happen all the same.
        for (_, _, appended) in &appends {
            if let Ok((syncer, _)) = appended {
                syncer.kick();
            }
        }
    }
    Handled::Later(tokio::spawn(async move {
        let mut errors = 0;
        let mut by_topic: BTreeMap<String, (TopicName, Vec<PartitionProduceResponse>)> =
            BTreeMap::new();
        for (name, index, appended) in appends {
            let mut outcome = appended;
            if let Ok((syncer, info)) = &outcome {
                // acks=1: in the file, where consumers see it and a crash of the process cannot
                // take it back; acks=all: on disk.
                let waited = match acks {
                    0 => Ok(()),
                    -1 => syncer.wait_durable(info.last_offset + 1).await,
                    _ => syncer.wait_written(info.last_offset + 1).await,
                };
                if let Err(e) = waited {
                    outcome = Err(Rejected {
                        code: ResponseError::KafkaStorageError,
                        message: Some(e),
                        record_errors: Vec::new(),
                    });
                }
            }
            let outcome = outcome.map(|(_, info)| info);
            let mut resp = PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            match outcome {
                Ok(info) => {
                    resp = resp
                        .with_base_offset(info.base_offset)
                        .with_log_append_time_ms(info.log_append_time)
                        .with_log_start_offset(if version >= 5 {
                            info.log_start_offset
                        } else {
                            -1
                        });
                }
                Err(Rejected {
                    code,
                    message,
                    record_errors,
                }) => {
                    if code.code() != 0 {
                        errors += 1;
                    }
                    // v8+ (KIP-467): which records of the batch were invalid, and why.
                    if version >= 8 {
                        resp = resp
                            .with_error_message(message.map(|m| str_bytes(&m)))
                            .with_record_errors(record_errors);
                    }
                    resp = resp.with_error_code(code.code());
                }
            }
            by_topic
                .entry(name.0.to_string())
                .or_insert_with(|| (name.clone(), Vec::new()))
                .1
                .push(resp);
        }
        if acks == 0 {
            return (None, errors);
        }
        let responses = by_topic
            .into_values()
            .map(|(name, parts)| {
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(parts)
            })
            .collect();
        (
            Some(ResponseKind::Produce(
                ProduceResponse::default().with_responses(responses),
            )),
            errors,
        )
    }))
}

/// The producer id and epoch of a transactional record set (its first batch's header says).
fn transactional_writer(records: &IncomingRecords) -> Option<(i64, i16)> {
    let header = kappa_log::batch::BatchHeader::parse(records.bytes()).ok()?;
    header
        .is_transactional()
        .then_some((header.producer_id, header.producer_epoch))
}

// ---------------------------------------------------------------------------------------------
// Fetch

async fn fetch(broker: &Arc<Broker>, ctx: &mut RequestContext, req: FetchRequest) -> Fetched {
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, 60_000) as u64);
    let min_bytes = req.min_bytes.max(0) as u64;
    loop {
        let notified = broker.data_arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (fetched, bytes, had_error) = if fetch_reads_disk(broker, &req) {
            // Finding the batches would read their headers from the disk: not on a network
            // thread, which every connection on it shares.
            let (off_broker, off_req, version) = (broker.clone(), req.clone(), ctx.api_version);
            match tokio::task::spawn_blocking(move || fetch_once(&off_broker, &off_req, version))
                .await
            {
                Ok(found) => found,
                Err(_) => fetch_once(broker, &req, ctx.api_version),
            }
        } else {
            fetch_once(broker, &req, ctx.api_version)
        };
        if bytes >= min_bytes.max(1) || min_bytes == 0 || had_error || Instant::now() >= deadline {
            for (topic, requested) in fetched.topics.iter().zip(&req.topics) {
                let labels = TopicLabels {
                    topic: topic.name.clone(),
                };
                for (p, asked) in topic.partitions.iter().zip(&requested.partitions) {
                    ctx.code(p.error_code);
                    let bytes = p.records_len();
                    if bytes > 0 {
                        broker
                            .metrics
                            .bytes_out
                            .get_or_create(&labels)
                            .inc_by(bytes);
                        // Offsets handed over: the records the consumer moves past.
                        let records = (p.next_offset - asked.fetch_offset).max(0) as u64;
                        broker
                            .metrics
                            .records_out
                            .get_or_create(&labels)
                            .inc_by(records);
                    }
                }
            }
            return fetched;
        }
        let _ = tokio::time::timeout_at(deadline.into(), notified).await;
    }
}

/// The topic a fetch names: by name, or by id (Fetch v13 and later).
fn fetched_topic(
    broker: &Arc<Broker>,
    ft: &kafka_protocol::messages::fetch_request::FetchTopic,
) -> Option<Arc<Topic>> {
    if ft.topic.0.is_empty() {
        broker.topics.get_by_id(ft.topic_id)
    } else {
        broker.topics.get(&ft.topic.0)
    }
}

/// Whether any requested partition's batches would be found by reading from the disk.
fn fetch_reads_disk(broker: &Arc<Broker>, req: &FetchRequest) -> bool {
    req.topics.iter().any(|ft| {
        fetched_topic(broker, ft).is_some_and(|topic| {
            ft.partitions.iter().any(|fp| {
                topic.partition(fp.partition).is_some_and(|log| {
                    log.read_would_wait(fp.fetch_offset, fp.partition_max_bytes.max(0) as usize)
                })
            })
        })
    })
}

/// One pass over the requested partitions: (answer, bytes found, any partition error). Only
/// positions are looked up: the records are sent from the files when the answer is written.
fn fetch_once(broker: &Arc<Broker>, req: &FetchRequest, version: i16) -> (Fetched, u64, bool) {
    let start_offset = |o: i64| if version >= 5 { o } else { -1 };
    // Kafka's fetch.max.bytes default: a client cannot make one fetch read gigabytes.
    const MAX_FETCH_BYTES: usize = 55 * 1024 * 1024;
    let mut budget = if req.max_bytes <= 0 {
        MAX_FETCH_BYTES
    } else {
        (req.max_bytes as usize).min(MAX_FETCH_BYTES)
    };
    let mut total = 0u64;
    let mut had_error = false;
    let read_committed = req.isolation_level == 1;
    let mut topics = Vec::with_capacity(req.topics.len());
    for ft in &req.topics {
        let topic = fetched_topic(broker, ft);
        let mut partitions = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let mut pd = FetchedPartition {
                index: fp.partition,
                error_code: 0,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: Vec::new(),
                next_offset: fp.fetch_offset,
                aborted: None,
            };
            let Some(log) = topic.as_ref().and_then(|t| t.partition(fp.partition)) else {
                had_error = true;
                pd.error_code = ResponseError::UnknownTopicOrPartition.code();
                partitions.push(pd);
                continue;
            };
            let max = (fp.partition_max_bytes.max(0) as usize).min(budget);
            // Kafka returns the first batch even when it exceeds the limits, so a consumer
            // can always make progress.
            let at_least_one = total == 0;
            // The last stable offset before reading: a read_committed consumer reads no
            // further, and learns which transactions in what it got were aborted.
            let lso = log.last_stable_offset();
            let upper = if read_committed { lso } else { i64::MAX };
            match log.read_slices_below(fp.fetch_offset, max, at_least_one, upper) {
                Ok(read) => {
                    let len = read.len();
                    total += len;
                    budget = budget.saturating_sub(len as usize);
                    pd.high_watermark = read.high_watermark;
                    pd.last_stable_offset = lso.min(read.high_watermark);
                    pd.log_start_offset = start_offset(read.log_start_offset);
                    pd.next_offset = read.next_offset;
                    if read_committed {
                        pd.aborted = Some(if read.slices.is_empty() {
                            Vec::new()
                        } else {
                            log.aborted_txns(fp.fetch_offset, read.next_offset)
                        });
                    }
                    pd.records = read.slices;
                }
                Err(e) => {
                    had_error = true;
                    pd.error_code = log_error_code(&e).code();
                    pd.high_watermark = log.high_watermark();
                    pd.last_stable_offset = lso;
                    pd.log_start_offset = start_offset(log.log_start_offset());
                }
            }
            partitions.push(pd);
        }
        topics.push(FetchedTopic {
            name: ft.topic.0.to_string(),
            partitions,
        });
    }
    (Fetched { topics }, total, had_error)
}

// ---------------------------------------------------------------------------------------------
// ListOffsets

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

fn list_offsets(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(&t.name.0);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(if ctx.api_version >= 4 { 0 } else { -1 });
                    let Some(log) = topic.as_ref().and_then(|t| t.partition(p.partition_index))
                    else {
                        return resp
                            .with_error_code(ctx.err(ResponseError::UnknownTopicOrPartition));
                    };
                    let committed = req.isolation_level == 1;
                    match offset_for(log, p.timestamp, committed) {
                        Ok((ts, offset)) => resp.with_timestamp(ts).with_offset(offset),
                        Err(e) => resp.with_error_code(ctx.err(log_error_code(&e))),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (timestamp, offset) for a ListOffsets query; (-1, -1) when no record is that recent.
fn offset_for(log: &Log, query: i64, read_committed: bool) -> Result<(i64, i64), LogError> {
    match query {
        // read_committed: what such a consumer can read, up to the last stable offset.
        LATEST if read_committed => Ok((-1, log.last_stable_offset())),
        LATEST => Ok((-1, log.high_watermark())),
        EARLIEST => Ok((-1, log.log_start_offset())),
        MAX_TIMESTAMP => match log.max_timestamp() {
            Some(ts) => find_offset_by_time(log, ts, true),
            None => Ok((-1, -1)),
        },
        ts if ts >= 0 => find_offset_by_time(log, ts, false),
        _ => Ok((-1, -1)),
    }
}

fn find_offset_by_time(log: &Log, ts: i64, exact_max: bool) -> Result<(i64, i64), LogError> {
    let Some((header, bytes)) = log.find_batch_by_time(ts)? else {
        return Ok((-1, -1));
    };
    let start = log.log_start_offset();
    let mut buf = Bytes::from(bytes);
    // LogAppendTime batches carry one timestamp for all records.
    if header.attributes & 0x08 != 0 {
        return Ok((header.max_timestamp, header.base_offset.max(start)));
    }
    match RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => {
            let found = set.records.iter().find(|r| {
                r.offset >= start
                    && if exact_max {
                        r.timestamp == ts
                    } else {
                        r.timestamp >= ts
                    }
            });
            Ok(found
                .map(|r| (r.timestamp, r.offset))
                .unwrap_or((header.max_timestamp, header.base_offset.max(start))))
        }
        Err(e) => Err(LogError::CorruptBatch(e.to_string())),
    }
}

// ---------------------------------------------------------------------------------------------
// Topic administration

fn create_topics(
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
            } else if !t.assignments.is_empty() {
                Err((
                    ResponseError::InvalidRequest,
                    "manual replica assignment is not supported".to_string(),
                ))
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
                        .map(|(k, v, is_override)| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(&k))
                                .with_value(Some(str_bytes(&v)))
                                .with_config_source(if is_override { 1 } else { 5 })
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

fn delete_topics(
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

fn create_partitions(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if t.assignments.is_some() {
                let code = ctx.err(ResponseError::InvalidRequest);
                return result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes("manual assignment is not supported")));
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

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn describe_configs(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let version = ctx.api_version;
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
                let entries: Vec<(String, String, i8)> = match r.resource_type {
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
                            .map(|(k, v, o)| (k, v, if o { 1 } else { 5 }))
                            .collect()
                    }
                    RESOURCE_BROKER => broker_configs(broker)
                        .into_iter()
                        .map(|(k, v)| (k, v, 4))
                        .collect(),
                    _ => {
                        let code = ctx.err(ResponseError::InvalidRequest);
                        return result
                            .with_error_code(code)
                            .with_error_message(Some(str_bytes("unsupported resource type")));
                    }
                };
                let configs = entries
                    .into_iter()
                    .filter(|(k, _, _)| wanted(k))
                    .map(|(k, v, source)| {
                        let config_type = crate::topics::TOPIC_CONFIGS
                            .iter()
                            .find(|(n, _)| *n == k)
                            .map(|(_, t)| *t as i8)
                            .unwrap_or(2);
                        DescribeConfigsResourceResult::default()
                            .with_name(str_bytes(&k))
                            .with_value(Some(str_bytes(&v)))
                            .with_read_only(source == 4)
                            .with_config_source(source)
                            .with_config_type(if version >= 3 { config_type } else { 0 })
                    })
                    .collect();
                result.with_configs(configs)
            })
            .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn broker_configs(broker: &Arc<Broker>) -> Vec<(String, String)> {
    let c = &broker.config;
    vec![
        (
            "auto.create.topics.enable".into(),
            c.auto_create_topics.to_string(),
        ),
        ("num.partitions".into(), c.num_partitions.to_string()),
        ("log.retention.ms".into(), c.log_retention_ms.to_string()),
        (
            "log.retention.bytes".into(),
            c.log_retention_bytes.to_string(),
        ),
        ("log.segment.bytes".into(), c.log_segment_bytes.to_string()),
        ("message.max.bytes".into(), c.message_max_bytes.to_string()),
        (
            "socket.request.max.bytes".into(),
            c.max_request_bytes.to_string(),
        ),
        ("log.dirs".into(), c.data_dir.display().to_string()),
    ]
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

fn incremental_alter_configs(
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
                                validate_config(&key, "0").or_else(|e| match e {
                                    TopicError::InvalidConfig(m) if m.starts_with("unknown") => {
                                        Err(TopicError::InvalidConfig(m))
                                    }
                                    _ => Ok(String::new()),
                                })?;
                                configs.remove(&key);
                            }
                            (op @ (2 | 3), Some(v)) if key == "cleanup.policy" => {
                                let current = configs
                                    .get(&key)
                                    .cloned()
                                    .unwrap_or_else(|| "delete".into());
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

fn alter_configs(
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

async fn delete_records(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let topic = broker.topics.get(&t.name.0);
        let mut partitions = Vec::new();
        for p in t.partitions {
            let resp = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let Some(log) = topic
                .as_ref()
                .and_then(|t| t.partition(p.partition_index))
                .cloned()
            else {
                partitions
                    .push(resp.with_error_code(ctx.err(ResponseError::UnknownTopicOrPartition)));
                continue;
            };
            let offset = if p.offset == -1 {
                log.high_watermark()
            } else {
                p.offset
            };
            let result =
                tokio::task::spawn_blocking(move || log.delete_records_before(offset)).await;
            partitions.push(match result {
                Ok(Ok(low)) => resp.with_low_watermark(low),
                Ok(Err(e)) => resp.with_error_code(ctx.err(log_error_code(&e))),
                Err(_) => resp.with_error_code(ctx.err(ResponseError::UnknownServerError)),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

fn describe_cluster(broker: &Arc<Broker>, req: DescribeClusterRequest) -> DescribeClusterResponse {
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

// ---------------------------------------------------------------------------------------------
// Groups

fn find_coordinator(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let node = BrokerId(broker.config.node_id);
    let host = str_bytes(&broker.advertised_host);
    let port = broker.advertised_port;
    // Key type 0: group; 1: transactional id. This broker coordinates both.
    let error = if req.key_type == 0 || req.key_type == 1 {
        0
    } else {
        ctx.err(ResponseError::InvalidRequest)
    };
    if ctx.api_version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(if error == 0 { node } else { BrokerId(-1) })
                    .with_host(if error == 0 {
                        host.clone()
                    } else {
                        StrBytes::default()
                    })
                    .with_port(if error == 0 { port } else { -1 })
                    .with_error_code(error)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    if error != 0 {
        return FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    FindCoordinatorResponse::default()
        .with_node_id(node)
        .with_host(host)
        .with_port(port)
}

async fn join_group(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let v = ctx.api_version;
    let result = broker
        .groups
        .join(JoinRequest {
            group_id: req.group_id.0.to_string(),
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: ctx.client_id.clone(),
            client_host: ctx.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: if v >= 1 {
                req.rebalance_timeout_ms
            } else {
                req.session_timeout_ms
            },
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata)))
                .collect(),
            require_known_member_id: v >= 4,
        })
        .await;
    ctx.code(result.error);
    let members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&id))
                .with_group_instance_id(instance.filter(|_| v >= 5).map(|s| str_bytes(&s)))
                .with_metadata(metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation)
        .with_protocol_type(
            result
                .protocol_type
                .filter(|_| v >= 7)
                .map(|s| str_bytes(&s)),
        )
        .with_protocol_name(match (result.protocol, v >= 7) {
            (Some(p), _) => Some(str_bytes(&p)),
            (None, true) => None,
            (None, false) => Some(StrBytes::default()),
        })
        .with_leader(str_bytes(&result.leader))
        .with_member_id(str_bytes(&result.member_id))
        .with_members(members)
}

async fn sync_group(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| {
            (
                a.member_id.to_string(),
                Bytes::copy_from_slice(&a.assignment),
            )
        })
        .collect();
    let (error, assignment) = broker
        .groups
        .sync(
            &req.group_id.0,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            assignments,
        )
        .await;
    ctx.code(error);
    let mut resp = SyncGroupResponse::default()
        .with_error_code(error)
        .with_assignment(assignment);
    if ctx.api_version >= 5 {
        resp = resp
            .with_protocol_type(req.protocol_type)
            .with_protocol_name(req.protocol_name);
    }
    resp
}

fn heartbeat(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let code = broker.groups.heartbeat(
        &req.group_id.0,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(ctx.code(code))
}

fn leave_group(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    if ctx.api_version < 3 {
        let code = broker.groups.leave(&group, &req.member_id, None);
        return LeaveGroupResponse::default().with_error_code(ctx.code(code));
    }
    let members = req
        .members
        .into_iter()
        .map(|m| {
            let code = broker
                .groups
                .leave(&group, &m.member_id, m.group_instance_id.as_deref());
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(ctx.code(code))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

async fn offset_commit(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let now = now_ms();
    let mut wanted = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            wanted.push((
                t.name.0.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_timestamp: now,
                },
            ));
        }
    }
    let all: Vec<(String, i32)> = wanted.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    let results = match broker
        .groups
        .commit(
            &req.group_id.0,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id_or_member_epoch,
            wanted,
            &broker.topics,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => all.into_iter().map(|(t, p)| (t, p, e.code())).collect(),
    };
    let topics = by_topic(results, |p, code| {
        OffsetCommitResponsePartition::default()
            .with_partition_index(p)
            .with_error_code(ctx.code(code))
    });
    OffsetCommitResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(t, parts)| {
                OffsetCommitResponseTopic::default()
                    .with_name(topic_name(&t))
                    .with_partitions(parts)
            })
            .collect(),
    )
}

fn offset_fetch(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let v = ctx.api_version;
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    // KIP-447: a consumer that asks for stable offsets waits while a transaction's offset
    // commit for the partition is undecided.
    let require_stable = v >= 7 && req.require_stable;
    let group_id = req.group_id.0.to_string();
    let topics = broker
        .groups
        .fetch_offsets(&group_id, wanted)
        .into_iter()
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, o)| {
                    if require_stable && broker.groups.has_pending_txn_offset(&group_id, &t, p) {
                        return OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(str_bytes("")))
                            .with_error_code(ctx.err(ResponseError::UnstableOffsetCommit));
                    }
                    let (offset, epoch, metadata) = match o {
                        Some(o) => (o.offset, o.leader_epoch, o.metadata),
                        None => (-1, -1, Some(String::new())),
                    };
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(if v >= 5 { epoch } else { -1 })
                        .with_metadata(Some(str_bytes(&metadata.unwrap_or_default())))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

fn list_groups(broker: &Arc<Broker>, req: ListGroupsRequest) -> ListGroupsResponse {
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(state))
        })
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type))
                .with_group_state(str_bytes(state))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

fn describe_groups(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let v = ctx.api_version;
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            let described = if v >= 3 {
                described.with_authorized_operations(if req.include_authorized_operations {
                    GROUP_OPERATIONS
                } else {
                    OPERATIONS_NOT_REQUESTED
                })
            } else {
                described
            };
            match broker.groups.describe(&id.0) {
                None => described.with_group_state(str_bytes("Dead")),
                Some(d) => described
                    .with_group_state(str_bytes(d.state))
                    .with_protocol_type(str_bytes(&d.protocol_type))
                    .with_protocol_data(str_bytes(&d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|(member, instance, client, host, metadata, assignment)| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(&member))
                                    .with_group_instance_id(
                                        instance.filter(|_| v >= 4).map(|s| str_bytes(&s)),
                                    )
                                    .with_client_id(str_bytes(&client))
                                    .with_client_host(str_bytes(&host))
                                    .with_member_metadata(metadata)
                                    .with_member_assignment(assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

async fn delete_groups(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for id in req.groups_names {
        let code = broker.groups.delete_group(&id.0).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(ctx.code(code)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

async fn offset_delete(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    match broker
        .groups
        .delete_offsets(&req.group_id.0, partitions)
        .await
    {
        Err(e) => OffsetDeleteResponse::default().with_error_code(ctx.err(e)),
        Ok(results) => {
            let topics = by_topic(results, |p, code| {
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p)
                    .with_error_code(ctx.code(code))
            });
            OffsetDeleteResponse::default().with_topics(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(topic_name(&t))
                            .with_partitions(parts)
                    })
                    .collect(),
            )
        }
    }
}
