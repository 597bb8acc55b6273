//! `kappa bench produce|consume`: throughput and latency in the spirit of Kafka's
//! kafka-producer-perf-test and kafka-consumer-perf-test. Prints comparable figures.
//! `kappa bench nexmark` writes Nexmark's person, auction and bid events to three topics.
//! `kappa bench fsync` measures the disk alone (see `bench_disk`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::bench_producer::ProduceOutcome;
use crate::client::Connection;
use crate::nexmark::{EventKind, GeneratorConfig, NexmarkGenerator, DEFAULT_BASE_TIME_MS};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Produce fixed-size records as fast as possible (or at --rate) and report throughput
    /// and per-record latency percentiles.
    Produce {
        #[arg(long, default_value = "kappa-bench")]
        topic: String,
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        #[arg(long, default_value_t = 1024)]
        record_size: usize,
        /// Partitions of the topic when the bench creates it.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(long, default_value = "all")]
        acks: String,
        /// librdkafka batch.size in bytes.
        #[arg(long, default_value_t = 1_000_000)]
        batch_size: usize,
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        /// Target records per second (0: unthrottled).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value = "none")]
        compression: String,
        /// The producer: librdkafka, or Kappa's own lean one (no compression, no -X
        /// properties), which leaves the broker most of the CPU on a small machine.
        #[arg(long, value_enum, default_value_t = BenchClient::Librdkafka)]
        client: BenchClient,
        /// With `--client native`: Produce requests awaiting their answer per connection.
        /// Kappa answers pipelined requests concurrently, so a deep pipeline keeps requests
        /// from queueing in the client behind an fsync (librdkafka allows 1,000,000).
        #[arg(long, default_value_t = 64)]
        max_in_flight: usize,
        /// Also print one line per second of sending: records, p50, p99 and max latency of
        /// the records sent in that second (as kafka-producer-perf-test's periodic lines).
        #[arg(long)]
        timeline: bool,
        /// Produce in transactions of this many records each (librdkafka only; 0: none). With
        /// 1 KiB records and the default batch.size, a transaction of N records spans about
        /// N / 976 full batches; the line printed says how many batches the run averaged.
        #[arg(long, default_value_t = 0)]
        records_per_txn: u64,
        #[command(flatten)]
        conn: Connection,
    },
    /// Read a topic from the beginning to its end and report throughput.
    Consume {
        #[arg(long, default_value = "kappa-bench")]
        topic: String,
        /// Consume as this consumer group (subscribe) instead of assigning every partition.
        #[arg(long)]
        group: Option<String>,
        /// Members of the group, each a consumer of its own; after reading everything, one
        /// leaves and the time until the others own every partition again is reported.
        #[arg(long, default_value_t = 3)]
        members: usize,
        #[command(flatten)]
        conn: Connection,
    },
    /// Requests per second against a schema registry: registrations, then GET /schemas/ids/{id}.
    Registry(crate::bench_registry::RegistryBenchArgs),
    /// The disk's own fsync latency at a steady write rate, without Kappa: the reference for
    /// acks=all latency, as `dd` is for throughput.
    Fsync(crate::bench_disk::FsyncBenchArgs),
    /// Generate Nexmark events (persons, auctions, bids as JSON) into three topics, keyed by
    /// person id, auction id and the bid's auction; see bench/nexmark/*.sql for the queries.
    Nexmark {
        /// Events in total (persons:auctions:bids = 1:3:46).
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Events per second, with event times from the wall clock (0: as fast as possible,
        /// event times 0.1 ms apart from 2015-07-15, Nexmark's 10,000 events/s).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Partitions of each topic when the bench creates it.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(long, default_value = "nexmark-person")]
        person_topic: String,
        #[arg(long, default_value = "nexmark-auction")]
        auction_topic: String,
        #[arg(long, default_value = "nexmark-bid")]
        bid_topic: String,
        /// Seed of the generator's draws (0: those of Beam's generator).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "1")]
        acks: String,
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        #[arg(long, default_value = "none")]
        compression: String,
        /// Only generate and serialize the events, without a broker: the generator's speed.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchClient {
    Librdkafka,
    Native,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Produce {
            topic,
            records,
            record_size,
            partitions,
            acks,
            batch_size,
            linger_ms,
            rate,
            compression,
            client,
            max_in_flight,
            timeline,
            records_per_txn,
            conn,
        } => {
            if records_per_txn > 0 && matches!(client, BenchClient::Native) {
                bail!("--records-per-txn needs --client librdkafka (the native producer has no transactions)");
            }
            let admin: AdminClient<DefaultClientContext> = conn.client_config().create()?;
            let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
            for r in admin.create_topics([&new], &AdminOptions::new()).await? {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, e)) => bail!("cannot create {t}: {e}"),
                }
            }
            let outcome = match client {
                BenchClient::Librdkafka => {
                    librdkafka_produce(
                        &conn,
                        &topic,
                        records,
                        record_size,
                        [
                            &acks,
                            &batch_size.to_string(),
                            &linger_ms.to_string(),
                            &compression,
                        ],
                        rate,
                        timeline,
                        records_per_txn,
                    )
                    .await?
                }
                BenchClient::Native => {
                    if compression != "none" || !conn.properties.is_empty() {
                        bail!(
                            "--client native sends uncompressed records and takes no -X properties"
                        );
                    }
                    let job = crate::bench_producer::NativeProduce {
                        bootstrap: conn.bootstrap_server.clone(),
                        topic: topic.clone(),
                        records,
                        record_size,
                        acks: match acks.as_str() {
                            "all" | "-1" => -1,
                            "1" => 1,
                            "0" => 0,
                            other => bail!("--acks {other}: expected all, -1, 1 or 0"),
                        },
                        batch_size,
                        linger: Duration::from_millis(linger_ms),
                        rate,
                        max_in_flight,
                    };
                    tokio::task::spawn_blocking(move || crate::bench_producer::run(&job)).await??
                }
            };
            let ProduceOutcome {
                elapsed,
                mut latencies_us,
                sent_ms,
                failed,
                first_error,
            } = outcome;
            if timeline {
                print_timeline(&sent_ms, &latencies_us);
            }
            latencies_us.sort_unstable();
            let pct = |p: f64| percentile_ms(&latencies_us, p);
            let ok = latencies_us.len() as f64;
            let elapsed = elapsed.as_secs_f64();
            let txns = if records_per_txn > 0 {
                format!(
                    ", transactions of {records_per_txn} records (~{:.0} batches of {batch_size} B)",
                    (records_per_txn as f64 * record_size as f64 / batch_size as f64).max(1.0)
                )
            } else {
                String::new()
            };
            println!(
                "produce: {} records of {record_size} B, acks={acks}, {partitions} partitions{}{txns}: {:.0} records/s, {:.1} MB/s, latency ms p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}; {failed} failed",
                latencies_us.len(),
                if rate > 0 { format!(", target {rate} records/s") } else { String::new() },
                ok / elapsed,
                ok * record_size as f64 / elapsed / 1e6,
                pct(0.5),
                pct(0.99),
                pct(0.999),
                pct(1.0),
            );
            if failed > 0 {
                bail!(
                    "{failed} records failed{}",
                    first_error
                        .map(|e| format!(", the first with {e}"))
                        .unwrap_or_default()
                );
            }
        }
        BenchCommand::Consume {
            topic,
            group: None,
            conn,
            ..
        } => {
            tokio::task::spawn_blocking(move || consume_bench(&topic, &conn)).await??;
        }
        BenchCommand::Consume {
            topic,
            group: Some(group),
            members,
            conn,
        } => {
            tokio::task::spawn_blocking(move || {
                group_consume_bench(&topic, &group, members.max(2), &conn)
            })
            .await??;
        }
        BenchCommand::Registry(args) => crate::bench_registry::run(args).await?,
        BenchCommand::Fsync(args) => {
            tokio::task::spawn_blocking(move || crate::bench_disk::run(args)).await??
        }
        BenchCommand::Nexmark {
            events,
            rate,
            partitions,
            person_topic,
            auction_topic,
            bid_topic,
            seed,
            acks,
            linger_ms,
            compression,
            dry_run,
            conn,
        } => {
            let topics = [person_topic, auction_topic, bid_topic];
            let producer = if dry_run {
                None
            } else {
                let admin: AdminClient<DefaultClientContext> = conn.client_config().create()?;
                let new: Vec<_> = topics
                    .iter()
                    .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
                    .collect();
                for r in admin.create_topics(&new, &AdminOptions::new()).await? {
                    match r {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((t, e)) => bail!("cannot create {t}: {e}"),
                    }
                }
                let producer: ThreadedProducer<CountingContext> = conn
                    .client_config()
                    .set("acks", &acks)
                    .set("batch.size", "1000000")
                    .set("linger.ms", linger_ms.to_string())
                    .set("compression.codec", &compression)
                    .set("queue.buffering.max.kbytes", "1048576")
                    .set("queue.buffering.max.messages", "1000000")
                    .create_with_context(CountingContext::default())
                    .context("creating producer")?;
                Some(producer)
            };
            let config = GeneratorConfig {
                max_events: events,
                seed,
                ..GeneratorConfig::default()
            };
            tokio::task::spawn_blocking(move || {
                nexmark_bench(config, rate, &topics, producer.as_ref())
            })
            .await??;
        }
    }
    Ok(())
}

/// Sends `records` records through librdkafka; `[acks, batch.size, linger.ms, compression]`;
/// in transactions of `records_per_txn` records when that is not 0.
#[allow(clippy::too_many_arguments)]
async fn librdkafka_produce(
    conn: &Connection,
    topic: &str,
    records: u64,
    record_size: usize,
    [acks, batch_size, linger_ms, compression]: [&str; 4],
    rate: u64,
    timeline: bool,
    records_per_txn: u64,
) -> anyhow::Result<ProduceOutcome> {
    let context = LatencyContext {
        start: Instant::now(),
        latencies_us: Mutex::new(Vec::with_capacity(records as usize)),
        sent_ms: Mutex::new(Vec::with_capacity(if timeline {
            records as usize
        } else {
            0
        })),
        timeline,
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let txn_id = format!("kappa-bench-{}", std::process::id());
    let mut config = conn.client_config_with(&[
        ("acks", acks),
        ("batch.size", batch_size),
        ("linger.ms", linger_ms),
        ("compression.codec", compression),
        ("queue.buffering.max.kbytes", "1048576"),
        ("queue.buffering.max.messages", "1000000"),
    ]);
    if records_per_txn > 0 && config.get("transactional.id").is_none() {
        config.set("transactional.id", &txn_id);
    }
    let producer: ThreadedProducer<LatencyContext> = config
        .create_with_context(context)
        .context("creating producer")?;
    const TXN_TIMEOUT: Duration = Duration::from_secs(60);
    if records_per_txn > 0 {
        producer
            .init_transactions(TXN_TIMEOUT)
            .context("initializing transactions")?;
    }
    let payload: Vec<u8> = (0..record_size).map(|i| b'a' + (i % 26) as u8).collect();
    let topic = topic.to_string();
    let (elapsed, producer) = tokio::task::spawn_blocking(
        move || -> anyhow::Result<(Duration, ThreadedProducer<LatencyContext>)> {
            let start = Instant::now();
            let mut key = String::new();
            for i in 0..records {
                if rate > 0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    let now = Instant::now();
                    if due > now + Duration::from_micros(200) {
                        std::thread::sleep(due - now);
                    }
                }
                if records_per_txn > 0 && i % records_per_txn == 0 {
                    producer
                        .begin_transaction()
                        .context("beginning a transaction")?;
                }
                key.clear();
                use std::fmt::Write;
                let _ = write!(key, "{}", i % 1024);
                let sent = producer.context().start.elapsed().as_nanos() as usize;
                let record = BaseRecord::with_opaque_to(&topic, sent)
                    .payload(&payload[..])
                    .key(&key);
                send_when_room(&producer, record)?;
                if records_per_txn > 0 && ((i + 1) % records_per_txn == 0 || i + 1 == records) {
                    // Wait for the transaction's records to be delivered before committing.
                    // rust-rdkafka's flush (which commit_transaction calls first) polls in
                    // 100 ms slices that do not end early: waiting here for the polling thread
                    // to see every delivery keeps that fixed 100 ms out of each transaction.
                    let waited = Instant::now();
                    while producer.in_flight_count() > 0 && waited.elapsed() < TXN_TIMEOUT {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    producer
                        .commit_transaction(TXN_TIMEOUT)
                        .context("committing a transaction")?;
                }
            }
            producer.flush(Duration::from_secs(120))?;
            Ok((start.elapsed(), producer))
        },
    )
    .await??;
    let take =
        |m: &Mutex<Vec<u32>>| std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()));
    let outcome = ProduceOutcome {
        elapsed,
        latencies_us: take(&producer.context().latencies_us),
        sent_ms: take(&producer.context().sent_ms),
        failed: producer.context().failed.load(Ordering::Relaxed),
        first_error: producer
            .context()
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(),
    };
    Ok(outcome)
}
/// Hands a record to librdkafka, waiting while its queue is full.
fn send_when_room<C, K, P>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> anyhow::Result<()>
where
    C: ProducerContext,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(500));
            }
            Err((e, _)) => bail!("produce failed: {e}"),
        }
    }
}

/// Generates the events and sends each to the topic of its kind (when there is a producer),
/// paced to `rate` events/s when it is not 0.
fn nexmark_bench(
    mut config: GeneratorConfig,
    rate: u64,
    topics: &[String; 3],
    producer: Option<&ThreadedProducer<CountingContext>>,
) -> anyhow::Result<()> {
    if rate > 0 {
        // Event time is wall-clock time: event n is at now + n / rate, when it is sent.
        config.base_time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        config.events_per_sec = rate as f64;
    } else {
        config.base_time_ms = DEFAULT_BASE_TIME_MS;
    }
    let total = config.max_events;
    let mut generator = NexmarkGenerator::new(config);
    let mut payload = Vec::with_capacity(1024);
    let mut key = Vec::with_capacity(20);
    let mut counts = [0u64; 3];
    let mut bytes = 0u64;
    let start = Instant::now();
    let mut last_report = start;
    while let Some(event) = generator.next_event(&mut payload) {
        let n = generator.events_so_far() - 1;
        if rate > 0 {
            let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
            let now = Instant::now();
            if due > now + Duration::from_micros(200) {
                std::thread::sleep(due - now);
            }
        }
        let kind = match event.kind {
            EventKind::Person => 0,
            EventKind::Auction => 1,
            EventKind::Bid => 2,
        };
        counts[kind] += 1;
        bytes += payload.len() as u64;
        let Some(producer) = producer else {
            continue;
        };
        key.clear();
        {
            use std::io::Write;
            let _ = write!(key, "{}", event.key);
        }
        let record = BaseRecord::to(&topics[kind])
            .payload(&payload[..])
            .key(&key[..]);
        send_when_room(producer, record)?;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "nexmark: {} of {total} events in {secs:.0} s ({:.0} events/s)",
                n + 1,
                (n + 1) as f64 / secs
            );
        }
    }
    let generated = start.elapsed().as_secs_f64();
    if let Some(producer) = producer {
        producer.flush(Duration::from_secs(300))?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent: u64 = counts.iter().sum();
    let failed = producer.map_or(0, |p| p.context().failed.load(Ordering::Relaxed));
    println!(
        "nexmark: {sent} events ({} persons, {} auctions, {} bids), {:.1} MB of JSON{}: {:.0} events/s, {:.1} MB/s{}; {failed} failed",
        counts[0],
        counts[1],
        counts[2],
        bytes as f64 / 1e6,
        match (producer.is_some(), rate) {
            (false, _) => " (dry run: generated, not sent)".to_string(),
            (true, 0) => String::new(),
            (true, r) => format!(", target {r} events/s"),
        },
        sent as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        if producer.is_some() {
            format!(" (generated and handed to the client in {generated:.2} s, all acknowledged in {elapsed:.2} s)")
        } else {
            String::new()
        },
    );
    if failed > 0 {
        if let Some(e) = producer.and_then(|p| p.context().first_error.lock().ok()?.clone()) {
            bail!("{failed} events failed, the first with: {e}");
        }
        bail!("{failed} events failed");
    }
    Ok(())
}

/// Counts failed deliveries and keeps the first error.
#[derive(Default)]
struct CountingContext {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(e.to_string());
            }
        }
    }
}

/// The consumers' fetch size: 1 MiB per fetch, as kafka-consumer-perf-test's `--fetch-size`
/// default. Larger fetches make librdkafka allocate (and the kernel zero) a fresh buffer of
/// that size per response, which costs more than the extra requests (docs/benchmarks.md).
const FETCH_MAX_BYTES: (&str, &str) = ("fetch.max.bytes", "1048576");
const PARTITION_FETCH_MAX_BYTES: (&str, &str) = ("max.partition.fetch.bytes", "1048576");

/// A consumer context that does not log the partition ends the consume bench asks for.
struct EndsExpected;

impl ClientContext for EndsExpected {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndsExpected {}

fn consume_bench(topic: &str, conn: &Connection) -> anyhow::Result<()> {
    let consumer: BaseConsumer<EndsExpected> = conn
        .client_config_with(&[
            ("group.id", "kappa-bench"),
            ("enable.auto.commit", "false"),
            // The end of each partition: its high watermark, or for read_committed its last
            // stable offset. Offsets alone cannot say it: transaction markers take offsets
            // that no record is delivered for, and aborted records are skipped.
            ("enable.partition.eof", "true"),
            FETCH_MAX_BYTES,
            PARTITION_FETCH_MAX_BYTES,
        ])
        .create_with_context(EndsExpected)?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md.topics().first().context("no topic metadata")?;
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut pending: std::collections::HashSet<i32> =
        t.partitions().iter().map(|p| p.id()).collect();
    let start = Instant::now();
    let (mut bytes, mut records) = (0u64, 0u64);
    while !pending.is_empty() {
        match consumer.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                bytes += m.payload_len() as u64 + m.key().map(|k| k.len()).unwrap_or(0) as u64;
                records += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => bail!("consume failed: {e}"),
            None => bail!("no records for 5 s with partitions {pending:?} not read to their end"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "consume: {records} records, {:.1} MB in {elapsed:.2} s: {:.0} records/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        records as f64 / elapsed,
        bytes as f64 / elapsed / 1e6
    );
    Ok(())
}

/// Measures each record's latency where librdkafka reports its delivery (its poll thread),
/// as kafka-producer-perf-test does in its callback.
struct LatencyContext {
    start: Instant,
    latencies_us: Mutex<Vec<u32>>,
    /// With `timeline`: when each record of `latencies_us` was sent (ms since `start`).
    sent_ms: Mutex<Vec<u32>>,
    timeline: bool,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// The `p` quantile (0..=1) of sorted microsecond latencies, in milliseconds.
pub(crate) fn percentile_ms<T: Copy + Into<u64>>(sorted_us: &[T], p: f64) -> f64 {
    sorted_us
        .get(((sorted_us.len() as f64 * p) as usize).min(sorted_us.len().saturating_sub(1)))
        .map(|v| (*v).into() as f64 / 1000.0)
        .unwrap_or(f64::NAN)
}

/// One line per second of sending: how many records were sent in it and their latencies.
fn print_timeline(sent_ms: &[u32], latencies_us: &[u32]) {
    let mut seconds: Vec<Vec<u32>> = Vec::new();
    for (&at, &latency) in sent_ms.iter().zip(latencies_us) {
        let second = (at / 1000) as usize;
        if seconds.len() <= second {
            seconds.resize_with(second + 1, Vec::new);
        }
        seconds[second].push(latency);
    }
    for (second, mut window) in seconds.into_iter().enumerate() {
        window.sort_unstable();
        let at = |p: f64| percentile_ms(&window, p);
        println!(
            "  second {second}: {} records, latency ms p50 {:.2} p99 {:.2} max {:.2}",
            window.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    /// Nanoseconds since `start` when the record was handed to the client.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_nanos: usize) {
        match result {
            Ok(_) => {
                let now = self.start.elapsed().as_nanos() as usize;
                let micros = (now.saturating_sub(sent_nanos) / 1000) as u32;
                self.latencies_us
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(micros);
                if self.timeline {
                    self.sent_ms
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((sent_nanos / 1_000_000) as u32);
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// N consumers in one group read the topic from the beginning; then one leaves and the time
/// until the others own every partition again is the rebalance time.
fn group_consume_bench(
    topic: &str,
    group: &str,
    members: usize,
    conn: &Connection,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize};
    use std::sync::Arc;
    let probe: BaseConsumer = conn.client_config().create()?;
    let md = probe.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    let mut total = 0i64;
    for p in 0..partitions as i32 {
        let (lo, hi) = probe.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        total += hi - lo;
    }
    let remaining = Arc::new(AtomicI64::new(total));
    let bytes = Arc::new(AtomicU64::new(0));
    let owned: Vec<Arc<AtomicUsize>> = (0..members)
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let stops: Vec<Arc<AtomicBool>> = (0..members)
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let start = Instant::now();
    let threads: Vec<_> = (0..members)
        .map(|i| {
            let consumer: BaseConsumer = conn
                .client_config_with(&[
                    ("group.id", group),
                    ("auto.offset.reset", "earliest"),
                    ("enable.auto.commit", "true"),
                    // Members learn of a rebalance at their next heartbeat: keep it short so
                    // the figure measures the rebalance, not the client's wait.
                    ("heartbeat.interval.ms", "500"),
                    FETCH_MAX_BYTES,
                    PARTITION_FETCH_MAX_BYTES,
                ])
                .create()?;
            consumer.subscribe(&[topic])?;
            let (remaining, bytes, owned, stop) = (
                remaining.clone(),
                bytes.clone(),
                owned[i].clone(),
                stops[i].clone(),
            );
            Ok(std::thread::spawn(move || {
                let mut checked = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                        bytes.fetch_add(m.payload_len() as u64, Ordering::Relaxed);
                        remaining.fetch_sub(1, Ordering::Relaxed);
                    }
                    // Reading the assignment copies it: once a millisecond is enough.
                    if checked.elapsed() >= Duration::from_millis(1) {
                        owned.store(
                            consumer.assignment().map(|a| a.count()).unwrap_or(0),
                            Ordering::Relaxed,
                        );
                        checked = Instant::now();
                    }
                }
                consumer.unsubscribe();
                drop(consumer);
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let all_own = || {
        owned.iter().all(|o| o.load(Ordering::Relaxed) > 0)
            && owned
                .iter()
                .map(|o| o.load(Ordering::Relaxed))
                .sum::<usize>()
                == partitions
    };
    let mut stable: Option<(Instant, i64)> = None;
    while remaining.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        if stable.is_none() && all_own() {
            stable = Some((Instant::now(), remaining.load(Ordering::Relaxed)));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed().as_secs_f64();
    if remaining.load(Ordering::Relaxed) > 0 {
        bail!("group did not read the topic within 300 s");
    }
    let mb = bytes.load(Ordering::Relaxed) as f64 / 1e6;
    println!(
        "group consume: {members} members, {total} records, {mb:.1} MB in {elapsed:.2} s (including the first rebalance): {:.0} records/s, {:.1} MB/s",
        total as f64 / elapsed,
        mb / elapsed
    );
    if let Some((at, left)) = stable {
        let secs = at.elapsed().as_secs_f64() - (start.elapsed().as_secs_f64() - elapsed);
        let per_record = mb / total.max(1) as f64;
        println!(
            "group consume, once all {members} members owned partitions: {left} records in {secs:.2} s: {:.0} records/s, {:.1} MB/s",
            left as f64 / secs,
            left as f64 * per_record / secs
        );
    }
    // One member leaves; the others must take over its partitions.
    let leaving_at = Instant::now();
    stops[members - 1].store(true, Ordering::Relaxed);
    let owned_by_rest = || {
        owned[..members - 1]
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    while owned_by_rest() < partitions && leaving_at.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "rebalance after one member left: {:.0} ms until the remaining {} members owned all {partitions} partitions",
        leaving_at.elapsed().as_secs_f64() * 1000.0,
        members - 1
    );
    for s in &stops {
        s.store(true, Ordering::Relaxed);
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
