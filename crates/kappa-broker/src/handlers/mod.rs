//! One function per Kafka API, one file per API family (metadata, produce, fetch, offsets,
//! admin, groups, txn). Each turns a decoded request into a response; errors go into the
//! response's error codes exactly where a Kafka broker would put them. This file holds the
//! dispatch, the versions served, and what the families share.

mod admin;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod txn;

use admin::*;
use fetch::*;
use groups::*;
use metadata::*;
use offsets::*;
use produce::*;

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kappa_log::LogError;

use crate::broker::Broker;
use crate::fetch_response::Fetched;
use crate::produce_stream::IncomingRecords;
use crate::topic_configs::{self, ConfigType};
use crate::topics::TopicError;

/// Whether a topic config is a list (APPEND and SUBTRACT apply to lists only).
fn is_list(name: &str) -> bool {
    topic_configs::find(name).is_some_and(|d| d.kind == ConfigType::List)
}

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
        TopicError::InvalidConfig(_) | TopicError::Config(_) => ResponseError::InvalidConfig,
        TopicError::Storage(_) | TopicError::DataDirInUse(_) => ResponseError::KafkaStorageError,
    }
}

fn log_error_code(e: &LogError) -> ResponseError {
    match e {
        LogError::CorruptBatch(_) => ResponseError::CorruptMessage,
        LogError::InvalidRecord(_) | LogError::InvalidRecords { .. } => {
            ResponseError::InvalidRecord
        }
        LogError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
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
