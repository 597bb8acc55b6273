//! Fetch: find whole batches (up to the last stable offset for read_committed consumers),
//! long-poll for `min.bytes`, and hand the stored bytes to the response as they are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use crate::broker::Broker;
use crate::fetch_response::{Fetched, FetchedPartition, FetchedTopic};
use crate::metrics::TopicLabels;
use crate::topics::Topic;

use super::{log_error_code, RequestContext};

pub(super) async fn fetch(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    req: FetchRequest,
) -> Fetched {
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
