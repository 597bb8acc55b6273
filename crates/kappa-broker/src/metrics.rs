//! Broker metrics in Prometheus form: requests, errors and latency per API, bytes and records
//! per topic, and per-partition log size and end offset (read at scrape time).

use std::fmt::Write;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::groups::GroupCoordinator;
use crate::topics::TopicRegistry;
use crate::txn::TxnMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone)]
pub struct LatencyHistogram;

impl MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        // 50µs .. ~1.6s
        Histogram::new(exponential_buckets(0.00005, 2.0, 16))
    }
}

pub struct BrokerMetrics {
    registry: Registry,
    pub requests: Family<ApiLabels, Counter>,
    pub request_errors: Family<ApiLabels, Counter>,
    pub request_latency: Family<ApiLabels, Histogram, LatencyHistogram>,
    pub bytes_in: Family<TopicLabels, Counter>,
    pub records_in: Family<TopicLabels, Counter>,
    pub bytes_out: Family<TopicLabels, Counter>,
    pub records_out: Family<TopicLabels, Counter>,
    pub fetch_disk_read_bytes: Counter,
    pub produce_uncopied_bytes: Counter,
}

impl BrokerMetrics {
    /// `fsync_duration`: the fsync rounds' histogram (`Commits::fsync_duration`).
    pub fn new(fsync_duration: Histogram, txns: &TxnMetrics) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<ApiLabels, Counter>::default();
        let request_errors = Family::<ApiLabels, Counter>::default();
        let request_latency = Family::new_with_constructor(LatencyHistogram);
        let bytes_in = Family::<TopicLabels, Counter>::default();
        let records_in = Family::<TopicLabels, Counter>::default();
        let bytes_out = Family::<TopicLabels, Counter>::default();
        let records_out = Family::<TopicLabels, Counter>::default();
        registry.register(
            "kappa_broker_requests",
            "Kafka requests handled, by API",
            requests.clone(),
        );
        registry.register(
            "kappa_broker_request_errors",
            "Kafka requests answered with at least one error code, by API",
            request_errors.clone(),
        );
        registry.register(
            "kappa_broker_request_duration_seconds",
            "Time from a request's arrival until its response is written to the socket, by API",
            request_latency.clone(),
        );
        registry.register(
            "kappa_topic_bytes_in",
            "Record batch bytes appended, by topic",
            bytes_in.clone(),
        );
        registry.register(
            "kappa_topic_records_in",
            "Records appended, by topic",
            records_in.clone(),
        );
        registry.register(
            "kappa_topic_bytes_out",
            "Record batch bytes fetched, by topic",
            bytes_out.clone(),
        );
        registry.register(
            "kappa_topic_records_out",
            "Records fetched, by topic (counted as offsets consumers move past, so compaction gaps count too)",
            records_out.clone(),
        );
        let fetch_disk_read_bytes = Counter::default();
        registry.register(
            "kappa_fetch_disk_read_bytes",
            "Fetched bytes that were not in the page cache, read on the blocking pool",
            fetch_disk_read_bytes.clone(),
        );
        let produce_uncopied_bytes = Counter::default();
        registry.register(
            "kappa_produce_uncopied_bytes",
            "Produced record batch bytes written to the log from the memory they were read into from the network, without a copy",
            produce_uncopied_bytes.clone(),
        );
        registry.register(
            "kappa_log_fsync_duration_seconds",
            "Time each fsync of a partition's log took, as acks=all requests wait for it",
            fsync_duration,
        );
        registry.register(
            "kappa_transactions_started",
            "Transactions begun (their first AddPartitionsToTxn or AddOffsetsToTxn)",
            txns.started.clone(),
        );
        registry.register(
            "kappa_transactions_committed",
            "Transactions committed (markers written)",
            txns.committed.clone(),
        );
        registry.register(
            "kappa_transactions_aborted",
            "Transactions aborted (markers written), timed-out and fenced ones included",
            txns.aborted.clone(),
        );
        registry.register(
            "kappa_transactions_timed_out",
            "Transactions the coordinator aborted because they outlived transaction.timeout.ms",
            txns.timed_out.clone(),
        );
        registry.register(
            "kappa_transactions_open",
            "Transactions open now",
            txns.open.clone(),
        );
        BrokerMetrics {
            registry,
            requests,
            request_errors,
            request_latency,
            bytes_in,
            records_in,
            bytes_out,
            records_out,
            fetch_disk_read_bytes,
            produce_uncopied_bytes,
        }
    }

    /// Renders all metrics in the OpenMetrics text format, partition gauges included.
    pub fn render(&self, topics: &TopicRegistry, groups: &GroupCoordinator) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        let list = topics.list();
        let mut size = String::from(
            "# HELP kappa_partition_log_size_bytes Bytes of the partition's log segments.\n# TYPE kappa_partition_log_size_bytes gauge\n",
        );
        let mut end = String::from(
            "# HELP kappa_partition_end_offset Log end offset (next offset to be written).\n# TYPE kappa_partition_end_offset gauge\n",
        );
        let mut start = String::from(
            "# HELP kappa_partition_start_offset Log start offset (first offset kept).\n# TYPE kappa_partition_start_offset gauge\n",
        );
        let mut lso_lag = String::from(
            "# HELP kappa_partition_lso_lag Records between the last stable offset and the log end offset (held back by open transactions or not yet written).\n# TYPE kappa_partition_lso_lag gauge\n",
        );
        for topic in &list {
            for (p, log) in topic.logs().enumerate() {
                let labels = format!("{{topic=\"{}\",partition=\"{p}\"}}", topic.name);
                let _ = writeln!(
                    size,
                    "kappa_partition_log_size_bytes{labels} {}",
                    log.size_bytes()
                );
                let _ = writeln!(
                    end,
                    "kappa_partition_end_offset{labels} {}",
                    log.end_offset()
                );
                let _ = writeln!(
                    start,
                    "kappa_partition_start_offset{labels} {}",
                    log.log_start_offset()
                );
                let _ = writeln!(
                    lso_lag,
                    "kappa_partition_lso_lag{labels} {}",
                    (log.end_offset() - log.last_stable_offset()).max(0)
                );
            }
        }
        out.push_str(&size);
        out.push_str(&end);
        out.push_str(&start);
        out.push_str(&lso_lag);
        let mut committed = String::from(
            "# HELP kappa_group_committed_offset Offset a consumer group committed, by partition.\n# TYPE kappa_group_committed_offset gauge\n",
        );
        let mut lag = String::from(
            "# HELP kappa_group_lag Records between a group's committed offset and the log end offset.\n# TYPE kappa_group_lag gauge\n",
        );
        for (group, topic, partition, offset) in groups.all_offsets() {
            let Some(log) = topics
                .get(&topic)
                .and_then(|t| t.partition(partition).cloned())
            else {
                continue;
            };
            let labels = format!(
                "{{group=\"{}\",topic=\"{topic}\",partition=\"{partition}\"}}",
                escape_label(&group)
            );
            let _ = writeln!(committed, "kappa_group_committed_offset{labels} {offset}");
            let _ = writeln!(
                lag,
                "kappa_group_lag{labels} {}",
                (log.high_watermark() - offset).max(0)
            );
        }
        out.push_str(&committed);
        out.push_str(&lag);
        out.push_str("# EOF\n");
        out
    }
}

/// Escapes a label value for the text format: group ids are arbitrary strings.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::escape_label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
