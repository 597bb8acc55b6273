//! The `_schemas` topic through the Kafka protocol: created compacted on first start, read
//! whole to rebuild the state, appended to with acks=all before a write is answered. Any
//! Kafka cluster serves, the embedded broker by default.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::RegistryError;
use crate::records::StoreRecord;

pub struct KafkaStore {
    producer: FutureProducer,
    topic: String,
}

fn store_error(what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Store(format!("{what}: {e}"))
}

impl KafkaStore {
    /// Connects, creates the topic when it is missing, and returns every record in it.
    pub async fn open(
        bootstrap: &str,
        topic: &str,
    ) -> Result<(KafkaStore, Vec<StoreRecord>), RegistryError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "kappa-registry");
        let admin: AdminClient<DefaultClientContext> = config
            .create()
            .map_err(|e| store_error("creating the admin client", e))?;
        let new_topic =
            NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
        let results = admin
            .create_topics(
                [&new_topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .map_err(|e| store_error("creating the schemas topic", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(store_error(&format!("creating topic {name}"), code));
                }
            }
        }

        let producer: FutureProducer = config
            .clone()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| store_error("creating the producer", e))?;

        let consumer_config = config.clone();
        let topic_name = topic.to_string();
        let records = tokio::task::spawn_blocking(move || read_all(consumer_config, &topic_name))
            .await
            .map_err(|e| store_error("reading the schemas topic", e))??;
        Ok((
            KafkaStore {
                producer,
                topic: topic.to_string(),
            },
            records,
        ))
    }

    /// Appends records in order, each acknowledged by all replicas before the next is sent.
    /// Returns how many were acknowledged, and the error that stopped the rest.
    pub async fn append(&self, records: &[StoreRecord]) -> (usize, Result<(), RegistryError>) {
        for (i, record) in records.iter().enumerate() {
            let (key, value) = record.encode();
            let mut message = FutureRecord::to(&self.topic).key(&key).partition(0);
            if let Some(v) = &value {
                message = message.payload(v);
            }
            if let Err((e, _)) = self.producer.send(message, Duration::from_secs(30)).await {
                return (i, Err(store_error("writing to the schemas topic", e)));
            }
        }
        (records.len(), Ok(()))
    }
}

/// Reads partition 0 of the topic from its start to its end as of now.
fn read_all(mut config: ClientConfig, topic: &str) -> Result<Vec<StoreRecord>, RegistryError> {
    let consumer: BaseConsumer = config
        .set("group.id", "kappa-registry-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| store_error("creating the reader", e))?;
    // every record must be on one partition for their order to mean anything (Confluent's
    // registry refuses to start otherwise too)
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| store_error("reading the schemas topic's metadata", e))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions != 1 {
        return Err(RegistryError::Store(format!(
            "the schemas topic {topic} has {partitions} partitions; it must have exactly 1"
        )));
    }
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(30))
        .map_err(|e| store_error("reading the schemas topic's offsets", e))?;
    let mut records = Vec::new();
    if high <= low {
        return Ok(records);
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .map_err(|e| store_error("assigning the schemas topic", e))?;
    consumer
        .assign(&assignment)
        .map_err(|e| store_error("assigning the schemas topic", e))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if std::time::Instant::now() > deadline {
            return Err(RegistryError::Timeout(format!(
                "reading the schemas topic up to offset {high}"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            // compaction may have removed the records just below the end
            let position = consumer.position().ok().and_then(|list| {
                list.find_partition(topic, 0)
                    .and_then(|p| p.offset().to_raw())
            });
            if position.is_some_and(|p| p >= high) {
                return Ok(records);
            }
            continue;
        };
        let message = message.map_err(|e| store_error("reading the schemas topic", e))?;
        let offset = message.offset();
        match message.key() {
            Some(key) => match StoreRecord::decode(key, message.payload()) {
                Ok(record) => records.push(record),
                Err(e) => {
                    tracing::warn!(offset, error = %e, "skipping an unreadable record in the schemas topic")
                }
            },
            None => tracing::warn!(offset, "skipping a record without key in the schemas topic"),
        }
        if offset + 1 >= high {
            return Ok(records);
        }
    }
}
