//! The transaction APIs: InitProducerId (with and without a transactional id),
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, ListTransactions,
//! DescribeTransactions and DescribeProducers. The coordinator (`crate::txn`) decides; these
//! turn its answers into responses, with the error codes each version of the API knows.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedTxn,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTxn;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;

use super::{str_bytes, topic_name, RequestContext};
use crate::broker::Broker;
use crate::groups::{CommittedOffset, OFFSETS_TOPIC};
use crate::topics::now_ms;
use crate::txn::coordinator::allocate_id;
use crate::txn::{ProducerIdAndEpoch, TxnState, OFFSETS_PARTITION};

/// PRODUCER_FENCED (KIP-588) is new in these versions; older clients know it as
/// INVALID_PRODUCER_EPOCH, as Kafka answers them.
fn fenced_for(e: ResponseError, version: i16, since: i16) -> ResponseError {
    if e == ResponseError::ProducerFenced && version < since {
        ResponseError::InvalidProducerEpoch
    } else {
        e
    }
}

pub async fn init_producer_id(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let answer = |ctx: &mut RequestContext, r: Result<ProducerIdAndEpoch, ResponseError>| match r {
        Ok(ids) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(ids.producer_id))
            .with_producer_epoch(ids.epoch),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(ctx.err(fenced_for(e, ctx.api_version, 4)))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    };
    // KIP-360: a producer that knows its id asks for the next epoch instead of a new id.
    let expected = (ctx.api_version >= 3 && req.producer_id.0 >= 0).then_some(ProducerIdAndEpoch {
        producer_id: req.producer_id.0,
        epoch: req.producer_epoch,
    });
    match req.transactional_id {
        Some(id) => {
            let result = broker
                .txns
                .init_producer_id(broker, &id.0, req.transaction_timeout_ms, expected)
                .await;
            answer(ctx, result)
        }
        None => {
            let result = match expected {
                Some(e) if e.epoch >= 0 && e.epoch < i16::MAX - 1 => Ok(ProducerIdAndEpoch {
                    producer_id: e.producer_id,
                    epoch: e.epoch + 1,
                }),
                _ => allocate_id(broker).await.map(|id| ProducerIdAndEpoch {
                    producer_id: id,
                    epoch: 0,
                }),
            };
            answer(ctx, result)
        }
    }
}

/// The partitions a transaction names that exist; unknown ones answer
/// UNKNOWN_TOPIC_OR_PARTITION and make the rest OPERATION_NOT_ATTEMPTED, as in Kafka.
fn check_partitions(
    broker: &Arc<Broker>,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<(String, i32, bool)> {
    topics
        .iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            let topic = broker.topics.get(&name);
            t.partitions.iter().map(move |p| {
                let known = name != OFFSETS_TOPIC
                    && topic.as_ref().is_some_and(|t| t.partition(*p).is_some());
                (name.clone(), *p, known)
            })
        })
        .collect()
}

async fn add_one(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let partitions = check_partitions(broker, topics);
    let code = if partitions.iter().any(|(_, _, known)| !known) {
        None
    } else {
        let wanted: Vec<(String, i32)> =
            partitions.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        Some(
            match broker
                .txns
                .add_partitions(id, producer_id, epoch, &wanted)
                .await
            {
                Ok(()) => 0,
                Err(e) => ctx.err(fenced_for(e, ctx.api_version, 2)),
            },
        )
    };
    let mut by_topic: BTreeMap<String, Vec<AddPartitionsToTxnPartitionResult>> = BTreeMap::new();
    for (t, p, known) in partitions {
        let c = match code {
            Some(c) => c,
            None if known => ctx.err(ResponseError::OperationNotAttempted),
            None => ctx.err(ResponseError::UnknownTopicOrPartition),
        };
        by_topic.entry(t).or_default().push(
            AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(p)
                .with_partition_error_code(c),
        );
    }
    by_topic
        .into_iter()
        .map(|(t, results)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic_name(&t))
                .with_results_by_partition(results)
        })
        .collect()
}

pub async fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.api_version <= 3 {
        let results = add_one(
            broker,
            ctx,
            &req.v3_and_below_transactional_id.0,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &req.v3_and_below_topics,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    // v4+: the batched form (brokers verifying for each other, KIP-890). `verify_only` asks
    // whether the partitions are in the transaction without adding them.
    let mut results = Vec::new();
    for t in &req.transactions {
        let topic_results = if t.verify_only {
            verify_only(broker, ctx, t)
        } else {
            add_one(
                broker,
                ctx,
                &t.transactional_id.0,
                t.producer_id.0,
                t.producer_epoch,
                &t.topics,
            )
            .await
        };
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

fn verify_only(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    t: &kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction,
) -> Vec<AddPartitionsToTxnTopicResult> {
    t.topics
        .iter()
        .map(|topic| {
            let results = topic
                .partitions
                .iter()
                .map(|p| {
                    let code = match broker.txns.verify_write(
                        t.producer_id.0,
                        t.producer_epoch,
                        &topic.name.0,
                        *p,
                    ) {
                        Ok(()) => 0,
                        Err(e) => ctx.err(e),
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(results)
        })
        .collect()
}

pub async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let code = if req.group_id.0.is_empty() {
        ctx.err(ResponseError::InvalidGroupId)
    } else {
        let partition = [(OFFSETS_TOPIC.to_string(), OFFSETS_PARTITION)];
        match broker
            .txns
            .add_partitions(
                &req.transactional_id.0,
                req.producer_id.0,
                req.producer_epoch,
                &partition,
            )
            .await
        {
            Ok(()) => 0,
            Err(e) => ctx.err(fenced_for(e, ctx.api_version, 2)),
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let checked = broker.txns.check_offset_commit(
        &req.transactional_id.0,
        req.producer_id.0,
        req.producer_epoch,
    );
    let now = now_ms();
    let offsets: Vec<(String, i32, CommittedOffset)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_timestamp: now,
                    },
                )
            })
        })
        .collect();
    let all = |code: i16| -> Vec<(String, i32, i16)> {
        offsets
            .iter()
            .map(|(t, p, _)| (t.clone(), *p, code))
            .collect()
    };
    let results = match checked {
        Err(e) => {
            let code = ctx.err(fenced_for(e, ctx.api_version, 3));
            all(code)
        }
        Ok(()) => {
            // v3+ (KIP-447): the member, its generation and static instance id are checked.
            let (member, instance, generation) = if ctx.api_version >= 3 {
                (
                    req.member_id.to_string(),
                    req.group_instance_id.as_ref().map(|i| i.to_string()),
                    req.generation_id,
                )
            } else {
                (String::new(), None, -1)
            };
            match broker
                .groups
                .txn_commit(
                    &req.group_id.0,
                    &member,
                    instance.as_deref(),
                    generation,
                    req.producer_id.0,
                    req.producer_epoch,
                    offsets.clone(),
                    &broker.topics,
                )
                .await
            {
                Ok(results) => {
                    for (_, _, code) in &results {
                        ctx.code(*code);
                    }
                    results
                }
                Err(e) => {
                    let code = ctx.err(fenced_for(e, ctx.api_version, 3));
                    all(code)
                }
            }
        }
    };
    let mut by_topic: BTreeMap<String, Vec<TxnOffsetCommitResponsePartition>> = BTreeMap::new();
    for (t, p, code) in results {
        by_topic.entry(t).or_default().push(
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(p)
                .with_error_code(code),
        );
    }
    TxnOffsetCommitResponse::default().with_topics(
        by_topic
            .into_iter()
            .map(|(t, parts)| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(topic_name(&t))
                    .with_partitions(parts)
            })
            .collect(),
    )
}

pub async fn end_txn(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: EndTxnRequest,
) -> EndTxnResponse {
    let code = match broker
        .txns
        .end_txn(
            broker,
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await
    {
        Ok(()) => 0,
        Err(e) => ctx.err(fenced_for(e, ctx.api_version, 2)),
    };
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub fn list_transactions(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for f in &req.state_filters {
        match TxnState::from_name(f) {
            Some(s) => states.push(s),
            None => unknown.push(f.clone()),
        }
    }
    let now = now_ms();
    let listed = broker
        .txns
        .all()
        .into_iter()
        .filter(|m| states.is_empty() || states.contains(&m.state))
        .filter(|m| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id)
        })
        // v1: only transactions running longer than this (ms); -1 or 0: all.
        .filter(|m| {
            ctx.api_version < 1
                || req.duration_filter <= 0
                || (m.start_ms >= 0 && now - m.start_ms > req.duration_filter)
        })
        .map(|m| {
            ListedTxn::default()
                .with_transactional_id(TransactionalId(str_bytes(&m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}

pub fn describe_transactions(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let described = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let Some(m) = broker.txns.get(&id.0) else {
                return DescribedTxn::default()
                    .with_transactional_id(id)
                    .with_error_code(ctx.err(ResponseError::TransactionalIdNotFound))
                    .with_transaction_state(str_bytes(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1);
            };
            let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (t, p) in &m.partitions {
                topics.entry(t.clone()).or_default().push(*p);
            }
            DescribedTxn::default()
                .with_transactional_id(id)
                .with_transaction_state(str_bytes(m.state.name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(m.start_ms)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.producer_epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, parts)| {
                            TopicData::default()
                                .with_topic(topic_name(&t))
                                .with_partitions(parts)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(described)
}

pub fn describe_producers(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(&t.name.0);
            let partitions = t
                .partition_indexes
                .into_iter()
                .map(|p| {
                    let Some(log) = topic.as_ref().and_then(|t| t.partition(p)) else {
                        return PartitionResponse::default()
                            .with_partition_index(p)
                            .with_error_code(ctx.err(ResponseError::UnknownTopicOrPartition));
                    };
                    let mut producers = log.producers();
                    producers.sort_by_key(|e| e.producer_id);
                    let active = producers
                        .into_iter()
                        .map(|e| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(e.producer_id))
                                .with_producer_epoch(e.epoch as i32)
                                .with_last_sequence(e.batches.back().map_or(-1, |b| b.last_seq))
                                .with_last_timestamp(e.last_timestamp)
                                .with_coordinator_epoch(if e.txn_first_offset.is_some() {
                                    0
                                } else {
                                    -1
                                })
                                .with_current_txn_start_offset(e.txn_first_offset.unwrap_or(-1))
                        })
                        .collect();
                    PartitionResponse::default()
                        .with_partition_index(p)
                        .with_active_producers(active)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
