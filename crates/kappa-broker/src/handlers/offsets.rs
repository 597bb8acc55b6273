//! ListOffsets (earliest, latest, last stable, by time) and DeleteRecords.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::*;
use kafka_protocol::records::RecordBatchDecoder;
use kappa_log::{Log, LogError};

use crate::broker::Broker;

use super::{log_error_code, RequestContext};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub(super) fn list_offsets(
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

pub(super) async fn delete_records(
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
