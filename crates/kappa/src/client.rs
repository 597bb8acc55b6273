//! The Kafka-client commands (`kappa topic|produce|consume`), built on librdkafka so they work
//! against Kappa and any Kafka cluster alike.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Clone)]
pub struct Connection {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        short = 'b',
        env = "KAPPA_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap_server: String,
    /// Extra librdkafka client properties (key=value), repeatable.
    #[arg(long = "property", short = 'X', value_parser = parse_kv, global = true)]
    pub properties: Vec<(String, String)>,
}

impl Connection {
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_server);
        c.set("log_level", "3");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A client configuration with a tool's own defaults, which `-X` properties override.
    pub fn client_config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = self.client_config();
        for (k, v) in defaults {
            if !self.properties.iter().any(|(key, _)| key == k) {
                c.set(*k, *v);
            }
        }
        c
    }
}

pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got '{s}'"))
}

#[derive(clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
        /// Topic config (key=value), repeatable.
        #[arg(long = "config", short = 'c', value_parser = parse_kv)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        conn: Connection,
    },
    /// List topics.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Show a topic's partitions, offsets and configs.
    Describe {
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Change a topic's configs or grow its partition count.
    Alter {
        name: String,
        #[arg(long = "config", short = 'c', value_parser = parse_kv)]
        configs: Vec<(String, String)>,
        /// Remove a config override, repeatable.
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
        /// New (larger) partition count.
        #[arg(long, short = 'p')]
        partitions: Option<usize>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete a topic.
    Delete {
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

fn admin(conn: &Connection) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    conn.client_config()
        .create()
        .context("creating Kafka admin client")
}

fn metadata_consumer(conn: &Connection) -> anyhow::Result<BaseConsumer> {
    conn.client_config()
        .create()
        .context("creating Kafka client")
}

pub async fn topic(cmd: TopicCommand) -> anyhow::Result<()> {
    let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            conn,
        } => {
            let mut topic = NewTopic::new(
                &name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            );
            for (k, v) in &configs {
                topic = topic.set(k, v);
            }
            for r in admin(&conn)?.create_topics([&topic], &opts).await? {
                r.map_err(|(t, e)| anyhow!("cannot create topic '{t}': {e}"))?;
            }
            println!("created topic {name}");
        }
        TopicCommand::List { conn } => {
            let md = tokio::task::spawn_blocking(move || {
                metadata_consumer(&conn)?
                    .fetch_metadata(None, TIMEOUT)
                    .map_err(anyhow::Error::from)
            })
            .await??;
            let mut names: Vec<_> = md
                .topics()
                .iter()
                .map(|t| (t.name().to_string(), t.partitions().len()))
                .collect();
            names.sort();
            for (name, partitions) in names {
                println!("{name}\t{partitions}");
            }
        }
        TopicCommand::Describe { name, conn } => {
            let conn2 = conn.clone();
            let topic = name.clone();
            let rows =
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64, i64)>> {
                    let consumer = metadata_consumer(&conn2)?;
                    let md = consumer.fetch_metadata(Some(&topic), TIMEOUT)?;
                    let t = md
                        .topics()
                        .first()
                        .ok_or_else(|| anyhow!("no metadata for '{topic}'"))?;
                    if let Some(e) = t.error() {
                        bail!("topic '{topic}': {:?}", RDKafkaErrorCode::from(e));
                    }
                    t.partitions()
                        .iter()
                        .map(|p| {
                            let (lo, hi) = consumer.fetch_watermarks(&topic, p.id(), TIMEOUT)?;
                            Ok((p.id(), lo, hi))
                        })
                        .collect()
                })
                .await??;
            println!("topic: {name}  partitions: {}", rows.len());
            println!("partition\tstart_offset\tend_offset");
            for (p, lo, hi) in rows {
                println!("{p}\t{lo}\t{hi}");
            }
            let configs = admin(&conn)?
                .describe_configs([&ResourceSpecifier::Topic(&name)], &opts)
                .await?;
            println!("configs:");
            for resource in configs {
                let resource = resource.map_err(|e| anyhow!("describing configs: {e}"))?;
                for entry in resource.entries {
                    let marker = match entry.source {
                        ConfigSource::DynamicTopic => "  (override)",
                        ConfigSource::StaticBroker => "  (broker)",
                        _ => "",
                    };
                    println!(
                        "  {}={}{marker}",
                        entry.name,
                        entry.value.unwrap_or_default()
                    );
                }
            }
        }
        TopicCommand::Alter {
            name,
            configs,
            delete_configs,
            partitions,
            conn,
        } => {
            let admin = admin(&conn)?;
            if !configs.is_empty() || !delete_configs.is_empty() {
                // AlterConfigs replaces every override: start from the current ones.
                let current = admin
                    .describe_configs([&ResourceSpecifier::Topic(&name)], &opts)
                    .await?;
                let mut overrides: HashMap<String, String> = HashMap::new();
                for resource in current {
                    let resource = resource.map_err(|e| anyhow!("describing configs: {e}"))?;
                    for e in resource.entries {
                        // The topic's own settings only: not the broker's defaults.
                        if matches!(e.source, ConfigSource::DynamicTopic) {
                            overrides.insert(e.name, e.value.unwrap_or_default());
                        }
                    }
                }
                for k in &delete_configs {
                    overrides.remove(k);
                }
                overrides.extend(configs.iter().cloned());
                let spec = ResourceSpecifier::Topic(&name);
                let mut alter = AlterConfig::new(spec);
                for (k, v) in &overrides {
                    alter = alter.set(k, v);
                }
                for r in admin.alter_configs([&alter], &opts).await? {
                    r.map_err(|(_, e)| anyhow!("cannot alter configs of '{name}': {e}"))?;
                }
                println!("altered configs of {name}");
            }
            if let Some(count) = partitions {
                for r in admin
                    .create_partitions([&NewPartitions::new(&name, count)], &opts)
                    .await?
                {
                    r.map_err(|(t, e)| anyhow!("cannot add partitions to '{t}': {e}"))?;
                }
                println!("topic {name} now has {count} partitions");
            }
        }
        TopicCommand::Delete { name, conn } => {
            for r in admin(&conn)?.delete_topics(&[&name], &opts).await? {
                r.map_err(|(t, e)| anyhow!("cannot delete topic '{t}': {e}"))?;
            }
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ProduceArgs {
    topic: String,
    /// Split each line into key and value at the first occurrence of this string.
    #[arg(long)]
    key_separator: Option<String>,
    /// Write every record to this partition (default: by key, or spread when there is none).
    #[arg(long)]
    partition: Option<i32>,
    /// Header added to every record (key=value), repeatable.
    #[arg(long = "header", short = 'H', value_parser = parse_kv)]
    headers: Vec<(String, String)>,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    #[command(flatten)]
    conn: Connection,
}

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let producer: FutureProducer = args
        .conn
        .client_config()
        .set("acks", &args.acks)
        .set("compression.codec", &args.compression)
        .set("linger.ms", "5")
        .create()
        .context("creating producer")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(10_000);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut headers = OwnedHeaders::new();
    for (k, v) in &args.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut sent = 0u64;
    let mut failed = 0u64;
    use futures::StreamExt;
    while let Some(line) = rx.recv().await {
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let mut record = FutureRecord::to(&args.topic)
            .payload(&value)
            .headers(headers.clone());
        if let Some(k) = &key {
            record = record.key(k);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    inflight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    if let Some(result) = inflight.next().await {
                        count_delivery(result, &mut sent, &mut failed);
                    }
                }
                Err((e, _)) => bail!("cannot produce: {e}"),
            }
        }
        while inflight.len() > 50_000 {
            if let Some(result) = inflight.next().await {
                count_delivery(result, &mut sent, &mut failed);
            }
        }
    }
    while let Some(result) = inflight.next().await {
        count_delivery(result, &mut sent, &mut failed);
    }
    eprintln!("produced {sent} records to {}", args.topic);
    if failed > 0 {
        bail!("{failed} records were not delivered");
    }
    Ok(())
}

fn count_delivery(
    result: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
    sent: &mut u64,
    failed: &mut u64,
) {
    match result {
        Ok(Ok(_)) => *sent += 1,
        Ok(Err((e, _))) => {
            eprintln!("delivery failed: {e}");
            *failed += 1;
        }
        Err(_) => *failed += 1,
    }
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum OutputFormat {
    /// The value only.
    Value,
    /// key<TAB>value
    Kv,
    /// One JSON object per record: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

#[derive(clap::Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Start at the earliest offset (default: only new records).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset (needs --partition, or applies to every partition).
    #[arg(long)]
    offset: Option<i64>,
    /// Only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when every partition is read to its end offset as of the start.
    #[arg(long)]
    exit_at_end: bool,
    /// Consume as a member of this consumer group: partitions come from the group and
    /// offsets are committed to it (--from-beginning applies when it has none yet).
    #[arg(long, conflicts_with_all = ["offset", "partition"])]
    group: Option<String>,
    #[arg(long, value_enum, default_value = "value")]
    format: OutputFormat,
    #[command(flatten)]
    conn: Connection,
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || consume_blocking(args)).await?
}

fn consume_blocking(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = args.conn.client_config();
    config.set("enable.partition.eof", "true");
    match &args.group {
        // Only offsets of records actually printed are stored and committed: closing the
        // consumer drains prefetched records, which must not count as consumed.
        Some(group) => config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                if args.from_beginning {
                    "earliest"
                } else {
                    "latest"
                },
            ),
        // librdkafka needs a group id for assign(); offsets are never committed to it.
        None => config
            .set("group.id", "kappa-cli")
            .set("enable.auto.commit", "false"),
    };
    let consumer: BaseConsumer = config.create().context("creating consumer")?;
    let md = consumer.fetch_metadata(Some(&args.topic), TIMEOUT)?;
    let topic = md
        .topics()
        .first()
        .ok_or_else(|| anyhow!("no metadata for '{}'", args.topic))?;
    if let Some(e) = topic.error() {
        bail!("topic '{}': {:?}", args.topic, RDKafkaErrorCode::from(e));
    }
    let partitions: Vec<i32> = match args.partition {
        Some(p) => vec![p],
        None => topic.partitions().iter().map(|p| p.id()).collect(),
    };
    if args.group.is_some() {
        consumer.subscribe(&[&args.topic])?;
    } else {
        let start = match (args.offset, args.from_beginning) {
            (Some(o), _) => Offset::Offset(o),
            (None, true) => Offset::Beginning,
            (None, false) => Offset::End,
        };
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition_offset(&args.topic, p, start)?;
        }
        consumer.assign(&tpl)?;
    }
    let mut count = 0u64;
    let mut at_end = std::collections::HashSet::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        if args.max_messages.is_some_and(|m| count >= m) {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            out.flush()?;
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                // A group member reads only the partitions the group gave it.
                let reading: Vec<i32> = match args.group {
                    Some(_) => consumer
                        .assignment()
                        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                        .unwrap_or_default(),
                    None => partitions.clone(),
                };
                if args.exit_at_end
                    && !reading.is_empty()
                    && reading.iter().all(|p| at_end.contains(p))
                {
                    break;
                }
                continue;
            }
            Err(e) => bail!("consume failed: {e}"),
        };
        at_end.remove(&msg.partition());
        count += 1;
        if args.group.is_some() {
            consumer.store_offset_from_message(&msg)?;
        }
        let value = msg.payload().map(String::from_utf8_lossy);
        let key = msg.key().map(String::from_utf8_lossy);
        match args.format {
            OutputFormat::Value => writeln!(out, "{}", value.unwrap_or_default())?,
            OutputFormat::Kv => writeln!(
                out,
                "{}\t{}",
                key.unwrap_or_default(),
                value.unwrap_or_default()
            )?,
            OutputFormat::Json => {
                let headers: serde_json::Map<String, serde_json::Value> = msg
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    h.value
                                        .map(|v| String::from_utf8_lossy(v).into())
                                        .unwrap_or(serde_json::Value::Null),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let obj = serde_json::json!({
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "timestamp": msg.timestamp().to_millis(),
                    "key": key,
                    "value": value,
                    "headers": headers,
                });
                writeln!(out, "{obj}")?;
            }
        }
    }
    out.flush()?;
    if args.group.is_some() && count > 0 {
        consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
            .context("committing the group's offsets")?;
    }
    Ok(())
}
