//! Produce: validate and append every partition's batches in request order, then answer once
//! the writes (acks=1) or fsyncs (acks=all) are done.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kappa_log::{AppendInfo, LogError};

use crate::broker::Broker;
use crate::durability::Syncer;
use crate::groups::OFFSETS_TOPIC;
use crate::metrics::TopicLabels;
use crate::produce_stream::IncomingRecords;
use crate::topics::{now_ms, TopicError};
use crate::txn::TXN_STATE_TOPIC;

use super::{log_error_code, str_bytes, topic_error_code, Handled, RequestContext};

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

/// Phase one, in request order: validate and append every partition's batches. Phase two,
/// spawned: wait for the fsyncs acks=all asks for, then answer. The connection reads and
/// appends the next request while this one's fsync runs.
pub(super) async fn produce(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: ProduceRequest,
) -> Handled {
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
                Ok(t) if acks == -1 && t.min_insync_replicas > 1 => {
                    Err(ResponseError::NotEnoughReplicas)
                }
                Ok(t) => t
                    .partition_with_syncer(p.index)
                    .map(|p| (&p.log, &p.syncer))
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
