//! The lean Kafka producer behind `kappa bench produce --client native`: each record is
//! encoded straight into its partition's open RecordBatch v2, and Produce requests are
//! pipelined on one connection per partition leader. It exists so the broker can be measured
//! with a client that leaves it most of the CPU (librdkafka spends about 3 CPU-s per GB of
//! 1 KiB records on this project's 2-core machine), the way Kafka's own perf test uses
//! Kafka's own producer. Plain records only: no idempotence, compression or retries.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, MetadataRequest, MetadataResponse, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

#[cfg(test)]
use crate::wire::encode_frame;
use crate::wire::{read_answer, BrokerConnection, CLIENT_ID};

/// What to send and how.
pub struct NativeProduce {
    pub bootstrap: String,
    pub topic: String,
    pub records: u64,
    pub record_size: usize,
    pub acks: i16,
    pub batch_size: usize,
    pub linger: Duration,
    /// Records per second; 0 sends as fast as the broker takes them.
    pub rate: u64,
    /// Produce requests awaiting their answer, per connection (the Java producer's
    /// `max.in.flight.requests.per.connection`).
    pub max_in_flight: usize,
}

/// Per-record results, in the order the answers came.
pub struct ProduceOutcome {
    pub elapsed: Duration,
    pub latencies_us: Vec<u32>,
    /// When each record of `latencies_us` was handed to the producer (ms since the start).
    pub sent_ms: Vec<u32>,
    pub failed: u64,
    pub first_error: Option<String>,
}

const REQUEST_TIMEOUT_MS: i32 = 30_000;
/// Offset of the attributes field in a RecordBatch: the CRC-32C covers everything from it on.
const ATTRIBUTES_AT: usize = 21;
const BATCH_HEADER_LEN: usize = 61;

pub fn run(job: &NativeProduce) -> anyhow::Result<ProduceOutcome> {
    if job.max_in_flight == 0 {
        bail!("--max-in-flight must be at least 1");
    }
    let bootstrap = job
        .bootstrap
        .split(',')
        .next()
        .filter(|s| !s.is_empty())
        .context("no bootstrap server")?;
    let mut conn = BrokerConnection::open(bootstrap)?;
    let topology = topic_leaders(&mut conn, &job.topic)?;
    let partitions = topology.leader_of.len();

    // One sender thread (and, unless acks=0, one reader thread) per leader.
    let mut senders: HashMap<BrokerId, SyncSender<SealedBatch>> = HashMap::new();
    let mut threads = Vec::new();
    let start = Instant::now();
    // Batch buffers come back once their request is encoded: fresh 1 MB allocations would
    // each cost page faults, more than the records' own encoding.
    let (recycle, recycled) = channel::<Vec<u8>>();
    for (&node, address) in &topology.addresses {
        if !topology.leader_of.contains(&node) {
            continue;
        }
        let conn = if address == bootstrap {
            conn.try_clone()?
        } else {
            BrokerConnection::open(address)?
        };
        // Room for a few batches per partition; beyond that the generator waits, as a
        // producer whose buffer memory is full.
        let (tx, rx) = sync_channel(4 * partitions.max(4));
        senders.insert(node, tx);
        threads.push(spawn_connection(conn, job, rx, recycle.clone(), start)?);
    }
    drop(conn);

    // A connection thread that fails makes the generator stop with "connection ended"; its
    // own error (the cause) is the one reported.
    let generated = generate(job, &topology, &senders, start, &recycled);
    drop(senders);
    let mut outcome = ProduceOutcome::empty();
    let mut ended = Ok(());
    for thread in threads {
        match thread.join() {
            Ok(Ok(part)) => outcome.absorb(part),
            Ok(Err(e)) => ended = Err(e),
            Err(_) => ended = Err(anyhow!("a connection thread panicked")),
        }
    }
    outcome.elapsed = start.elapsed();
    ended.and(generated).map(|()| outcome)
}

/// Generates the records, `job.rate` a second if set, into batches handed to the leaders'
/// connections.
fn generate(
    job: &NativeProduce,
    topology: &Topology,
    senders: &HashMap<BrokerId, SyncSender<SealedBatch>>,
    start: Instant,
    recycled: &Receiver<Vec<u8>>,
) -> anyhow::Result<()> {
    let partitions = topology.leader_of.len();
    let wall_ms_at_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let now_ms = |at: Instant| wall_ms_at_start + at.duration_since(start).as_millis() as i64;
    let payload: Vec<u8> = (0..job.record_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let mut open: Vec<Option<OpenBatch>> = (0..partitions).map(|_| None).collect();
    let deliver = |partition: usize, batch: OpenBatch| -> anyhow::Result<()> {
        let leader = topology.leader_of[partition];
        let sender = senders.get(&leader).context("partition without a leader")?;
        sender
            .send(batch.seal(partition as i32))
            .map_err(|_| anyhow!("the connection to broker {} ended", leader.0))
    };
    let mut key = itoa::Buffer::new();
    for i in 0..job.records {
        if job.rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / job.rate as f64);
            loop {
                let now = Instant::now();
                if due <= now + Duration::from_micros(200) {
                    break;
                }
                // Sleep no later than the next batch's linger deadline.
                let deadline = open
                    .iter()
                    .flatten()
                    .map(|b| b.opened + job.linger)
                    .min()
                    .unwrap_or(due)
                    .min(due);
                if deadline > now {
                    std::thread::sleep(deadline - now);
                }
                seal_lingered(&mut open, job.linger, &deliver)?;
            }
        }
        let key = key.format(i % 1024).as_bytes();
        let partition = (murmur2(key) & 0x7fff_ffff) as usize % partitions;
        let now = Instant::now();
        let batch = open[partition].get_or_insert_with(|| {
            let buf = recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(job.batch_size));
            OpenBatch::new(buf, now)
        });
        batch.append(key, &payload, now_ms(now), now.duration_since(start));
        if batch.buf.len() + job.record_size + 32 > job.batch_size {
            if let Some(full) = open[partition].take() {
                deliver(partition, full)?;
            }
        }
        if i % 64 == 0 {
            seal_lingered(&mut open, job.linger, &deliver)?;
        }
    }
    for (partition, batch) in open.iter_mut().enumerate() {
        if let Some(batch) = batch.take() {
            deliver(partition, batch)?;
        }
    }
    Ok(())
}

impl ProduceOutcome {
    fn empty() -> ProduceOutcome {
        ProduceOutcome {
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
            sent_ms: Vec::new(),
            failed: 0,
            first_error: None,
        }
    }

    fn absorb(&mut self, part: ProduceOutcome) {
        self.latencies_us.extend(part.latencies_us);
        self.sent_ms.extend(part.sent_ms);
        self.failed += part.failed;
        if self.first_error.is_none() {
            self.first_error = part.first_error;
        }
    }
}

/// Hands on every open batch that has waited `linger` since its first record.
fn seal_lingered(
    open: &mut [Option<OpenBatch>],
    linger: Duration,
    deliver: &impl Fn(usize, OpenBatch) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let now = Instant::now();
    for (partition, slot) in open.iter_mut().enumerate() {
        if slot.as_ref().is_some_and(|b| now >= b.opened + linger) {
            if let Some(batch) = slot.take() {
                deliver(partition, batch)?;
            }
        }
    }
    Ok(())
}

/// A RecordBatch v2 being filled: its header is written when it is sealed.
struct OpenBatch {
    buf: Vec<u8>,
    opened: Instant,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    /// When each record was handed over, since the start of the run.
    sent: Vec<Duration>,
}

struct SealedBatch {
    partition: i32,
    bytes: Bytes,
    sent: Vec<Duration>,
}

impl OpenBatch {
    /// A batch written into `buf` (whatever it held is dropped).
    fn new(mut buf: Vec<u8>, opened: Instant) -> OpenBatch {
        buf.clear();
        buf.resize(BATCH_HEADER_LEN, 0);
        OpenBatch {
            buf,
            opened,
            count: 0,
            base_timestamp: -1,
            max_timestamp: -1,
            sent: Vec::new(),
        }
    }

    fn append(&mut self, key: &[u8], value: &[u8], timestamp: i64, since_start: Duration) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        let timestamp_delta = timestamp - self.base_timestamp;
        let offset_delta = self.count as i64;
        let body_len = 1
            + varint_len(timestamp_delta)
            + varint_len(offset_delta)
            + varint_len(key.len() as i64)
            + key.len()
            + varint_len(value.len() as i64)
            + value.len()
            + 1;
        put_varint(&mut self.buf, body_len as i64);
        self.buf.push(0); // attributes
        put_varint(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_varint(&mut self.buf, key.len() as i64);
        self.buf.extend_from_slice(key);
        put_varint(&mut self.buf, value.len() as i64);
        self.buf.extend_from_slice(value);
        self.buf.push(0); // no headers
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.sent.push(since_start);
    }

    fn seal(mut self, partition: i32) -> SealedBatch {
        let batch_length = (self.buf.len() - 12) as i32;
        let mut header = &mut self.buf[..BATCH_HEADER_LEN];
        header.put_i64(0); // base offset: the broker assigns it
        header.put_i32(batch_length);
        header.put_i32(-1); // partition leader epoch
        header.put_i8(2); // magic
        header.put_u32(0); // CRC, below
        header.put_i16(0); // attributes: no compression, create time
        header.put_i32(self.count - 1);
        header.put_i64(self.base_timestamp);
        header.put_i64(self.max_timestamp);
        header.put_i64(-1); // producer id
        header.put_i16(-1); // producer epoch
        header.put_i32(-1); // base sequence
        header.put_i32(self.count);
        let crc = kappa_log::batch::crc32c(&self.buf[ATTRIBUTES_AT..]);
        self.buf[17..21].copy_from_slice(&crc.to_be_bytes());
        SealedBatch {
            partition,
            bytes: Bytes::from(self.buf),
            sent: self.sent,
        }
    }
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// A zigzag varint, as record fields are encoded.
fn put_varint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Kafka's murmur2, as its Java producer's default partitioner hashes keys, so keyed records
/// land where a Java producer would put them.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, &b) in rest.iter().enumerate().rev() {
            h ^= (b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// Where a topic's partitions are led.
struct Topology {
    /// The leader of each partition, by partition index.
    leader_of: Vec<BrokerId>,
    addresses: HashMap<BrokerId, String>,
}

fn topic_leaders(conn: &mut BrokerConnection, topic: &str) -> anyhow::Result<Topology> {
    let version = conn.version(ApiKey::Metadata, 1, 9)?;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    // A topic just created may have no leader for a moment, as on a Kafka cluster.
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let response: MetadataResponse = conn.call(ApiKey::Metadata, version, &request)?;
        let found = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))
            .with_context(|| format!("the broker's metadata has no topic {topic}"))?;
        let problem = match found.error_code.err() {
            Some(e) => Some(e.to_string()),
            None => found
                .partitions
                .iter()
                .find_map(|p| p.error_code.err().map(|e| e.to_string()))
                .or_else(|| found.partitions.is_empty().then(|| "no partitions".into())),
        };
        match problem {
            None => {
                let mut leader_of = vec![BrokerId(-1); found.partitions.len()];
                for p in &found.partitions {
                    let slot = leader_of
                        .get_mut(p.partition_index as usize)
                        .context("partition indexes are not 0..n")?;
                    *slot = p.leader_id;
                }
                let addresses = response
                    .brokers
                    .iter()
                    .map(|b| (b.node_id, format!("{}:{}", b.host.as_str(), b.port)))
                    .collect();
                return Ok(Topology {
                    leader_of,
                    addresses,
                });
            }
            Some(e) if Instant::now() >= give_up => bail!("topic {topic}: {e}"),
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A request on the wire, awaiting its answer.
struct InFlight {
    correlation_id: i32,
    batches: Vec<(i32, Vec<Duration>)>,
}

/// Starts the threads that send `batches` on `conn`, at most `max_in_flight` requests
/// unanswered, and read the answers. The handle yields the records' latencies.
fn spawn_connection(
    mut conn: BrokerConnection,
    job: &NativeProduce,
    batches: Receiver<SealedBatch>,
    recycle: Sender<Vec<u8>>,
    start: Instant,
) -> anyhow::Result<JoinHandle<anyhow::Result<ProduceOutcome>>> {
    let version = conn.version(ApiKey::Produce, 3, 9)?;
    let (acks, topic) = (job.acks, job.topic.clone());
    // The reader takes a request off this channel when it starts waiting for its answer,
    // so `max_in_flight - 1` queued plus the one it holds are in flight.
    let (in_flight_tx, in_flight_rx) = sync_channel::<InFlight>(job.max_in_flight - 1);
    let reader = if acks == 0 {
        None
    } else {
        let stream = conn.stream.try_clone()?;
        let address = conn.address.clone();
        Some(std::thread::spawn(move || {
            read_produce_answers(stream, &address, version, in_flight_rx, start)
        }))
    };
    Ok(std::thread::spawn(move || {
        let sent = send_batches(
            &mut conn,
            version,
            acks,
            &topic,
            (batches, recycle),
            (in_flight_tx, start),
        );
        let answered = match reader {
            Some(reader) => reader
                .join()
                .map_err(|_| anyhow!("the reader thread panicked"))?,
            None => Ok(ProduceOutcome::empty()),
        };
        // The reader's error first: a sender stops with "connection ended" when it does.
        match (sent, answered) {
            (Ok(written), Ok(mut outcome)) => {
                outcome.absorb(written);
                Ok(outcome)
            }
            (_, Err(e)) | (Err(e), _) => Err(e),
        }
    }))
}

/// Sends every batch, one per partition per request, gathering those already waiting into
/// the same request, and hands each batch's buffer back to `recycle` once encoded. With
/// acks=0 nobody answers: the records it returns count as done once written.
fn send_batches(
    conn: &mut BrokerConnection,
    version: i16,
    acks: i16,
    topic: &str,
    (batches, recycle): (Receiver<SealedBatch>, Sender<Vec<u8>>),
    (in_flight, start): (SyncSender<InFlight>, Instant),
) -> anyhow::Result<ProduceOutcome> {
    let mut unanswered = ProduceOutcome::empty();
    // Batches received whose partition already had one in the request being gathered.
    let mut waiting: Vec<SealedBatch> = Vec::new();
    let mut frame = BytesMut::new();
    let mut closed = false;
    loop {
        let mut taken: Vec<SealedBatch> = Vec::new();
        for b in std::mem::take(&mut waiting) {
            if taken.iter().any(|t| t.partition == b.partition) {
                waiting.push(b);
            } else {
                taken.push(b);
            }
        }
        if taken.is_empty() {
            if closed {
                break;
            }
            match batches.recv() {
                Ok(b) => taken.push(b),
                Err(_) => break,
            }
        }
        // Take what else is ready, up to the first batch of a partition already taken (so
        // the channel's bound still holds the generator back).
        while !closed {
            match batches.try_recv() {
                Ok(b) if taken.iter().any(|t| t.partition == b.partition) => {
                    waiting.push(b);
                    break;
                }
                Ok(b) => taken.push(b),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => closed = true,
            }
        }
        conn.correlation_id = conn.correlation_id.wrapping_add(1);
        let records: Vec<(i32, &[u8])> =
            taken.iter().map(|b| (b.partition, &b.bytes[..])).collect();
        let cuts = encode_produce_frame(
            &mut frame,
            version,
            conn.correlation_id,
            (acks, topic),
            &records,
        );
        drop(records);
        let mut batches = Vec::with_capacity(taken.len());
        let mut data = Vec::with_capacity(taken.len());
        for b in taken {
            batches.push((b.partition, b.sent));
            data.push(b.bytes);
        }
        if acks == 0 {
            for (_, sent) in &batches {
                unanswered.record(sent, start, None);
            }
        } else {
            let record = InFlight {
                correlation_id: conn.correlation_id,
                batches,
            };
            in_flight
                .send(record)
                .map_err(|_| anyhow!("the connection to {} ended", conn.address))?;
        }
        write_gathered(&mut conn.stream, &frame, &cuts, &data)
            .with_context(|| format!("sending Produce to {}", conn.address))?;
        for bytes in data {
            if let Ok(buf) = bytes.try_into_mut() {
                let _ = recycle.send(Vec::from(buf));
            }
        }
    }
    Ok(unanswered)
}

/// Encodes a Produce request frame for one topic into `frame`, all but the partitions'
/// record bytes, which are sent from the batches' own buffers (`write_gathered`), as the Java
/// producer does with its gathering writes. Returns where each partition's records go in
/// `frame`. Versions 3 to 9; 9 is the first flexible one.
fn encode_produce_frame(
    frame: &mut BytesMut,
    version: i16,
    correlation_id: i32,
    (acks, topic): (i16, &str),
    records: &[(i32, &[u8])],
) -> Vec<usize> {
    let flexible = version >= 9;
    // Flexible versions count arrays and strings plus one, in an unsigned varint.
    let put_len = |frame: &mut BytesMut, len: usize| {
        if flexible {
            put_uvarint(frame, len as u64 + 1);
        } else {
            frame.put_i32(len as i32);
        }
    };
    frame.clear();
    frame.put_i32(0); // the frame's length, below
    frame.put_i16(ApiKey::Produce as i16);
    frame.put_i16(version);
    frame.put_i32(correlation_id);
    // The header's client id is a plain nullable string even in header version 2.
    frame.put_i16(CLIENT_ID.len() as i16);
    frame.put_slice(CLIENT_ID.as_bytes());
    if flexible {
        frame.put_u8(0); // the header's tagged fields
        frame.put_u8(0); // transactional id: null
    } else {
        frame.put_i16(-1); // transactional id: null
    }
    frame.put_i16(acks);
    frame.put_i32(REQUEST_TIMEOUT_MS);
    put_len(frame, 1); // one topic
    if flexible {
        put_uvarint(frame, topic.len() as u64 + 1);
    } else {
        frame.put_i16(topic.len() as i16);
    }
    frame.put_slice(topic.as_bytes());
    put_len(frame, records.len());
    let mut cuts = Vec::with_capacity(records.len());
    for (partition, bytes) in records {
        frame.put_i32(*partition);
        put_len(frame, bytes.len());
        cuts.push(frame.len());
        if flexible {
            frame.put_u8(0); // the partition's tagged fields
        }
    }
    if flexible {
        frame.put_u8(0); // the topic's tagged fields
        frame.put_u8(0); // the request's tagged fields
    }
    let total = frame.len() - 4 + records.iter().map(|(_, b)| b.len()).sum::<usize>();
    frame[..4].copy_from_slice(&(total as i32).to_be_bytes());
    cuts
}

fn put_uvarint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes `frame` with `records[i]` inserted at `cuts[i]`, in as few system calls as the
/// socket takes.
fn write_gathered(
    stream: &mut impl Write,
    frame: &[u8],
    cuts: &[usize],
    records: &[Bytes],
) -> std::io::Result<()> {
    let mut slices = Vec::with_capacity(2 * cuts.len() + 1);
    let mut from = 0;
    for (&cut, bytes) in cuts.iter().zip(records) {
        slices.push(std::io::IoSlice::new(&frame[from..cut]));
        slices.push(std::io::IoSlice::new(bytes));
        from = cut;
    }
    slices.push(std::io::IoSlice::new(&frame[from..]));
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_produce_answers(
    stream: TcpStream,
    address: &str,
    version: i16,
    in_flight: Receiver<InFlight>,
    start: Instant,
) -> anyhow::Result<ProduceOutcome> {
    let mut outcome = ProduceOutcome::empty();
    let mut stream = BufReader::new(stream);
    while let Ok(request) = in_flight.recv() {
        let response: ProduceResponse = read_answer(
            &mut stream,
            ApiKey::Produce,
            version,
            request.correlation_id,
            address,
        )?;
        for (partition, sent) in &request.batches {
            let code = response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .find(|p| p.index == *partition)
                .map(|p| p.error_code);
            let error = match code {
                Some(code) => code.err().map(|e| format!("partition {partition}: {e}")),
                None => Some(format!("partition {partition}: missing from the answer")),
            };
            outcome.record(sent, start, error);
        }
    }
    Ok(outcome)
}

impl ProduceOutcome {
    /// Counts one batch's records (sent at `sent`, since `start`) as answered now, or failed
    /// with `error`.
    fn record(&mut self, sent: &[Duration], start: Instant, error: Option<String>) {
        let now = start.elapsed();
        match error {
            Some(e) => {
                self.failed += sent.len() as u64;
                self.first_error.get_or_insert(e);
            }
            None => {
                for &sent in sent {
                    self.latencies_us
                        .push(now.saturating_sub(sent).as_micros() as u32);
                    self.sent_ms.push(sent.as_millis() as u32);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::ProduceRequest;

    #[test]
    fn keys_hash_to_the_partitions_the_java_producer_picks() {
        // Partitions of 1000 that Kafka's DefaultPartitioner picks for these keys (the
        // vectors kafka-python checks its murmur2 against).
        let cases: [(&[u8], u32); 6] = [
            (b"", 681),
            (b"a", 524),
            (b"ab", 434),
            (b"abc", 107),
            (b"123456789", 566),
            (b"\x00 ", 742),
        ];
        for (key, partition) in cases {
            assert_eq!(
                (murmur2(key) & 0x7fff_ffff) % 1000,
                partition,
                "key {key:?}"
            );
        }
    }

    #[test]
    fn gathered_produce_frames_equal_kafka_protocol_encoding() {
        let batches: Vec<Bytes> = (0..3u8)
            .map(|i| Bytes::from(vec![i; 100 + 300 * i as usize]))
            .collect();
        let records: Vec<(i32, &[u8])> = batches
            .iter()
            .enumerate()
            .map(|(i, b)| (i as i32 * 2, &b[..]))
            .collect();
        let topic = "gathered-topic";
        for version in 3..=9 {
            let mut frame = BytesMut::new();
            let cuts = encode_produce_frame(&mut frame, version, 77, (-1, topic), &records);
            let mut sent = Vec::new();
            write_gathered(&mut sent, &frame, &cuts, &batches).unwrap();

            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(REQUEST_TIMEOUT_MS)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(topic)))
                    .with_partition_data(
                        records
                            .iter()
                            .zip(&batches)
                            .map(|((p, _), b)| {
                                PartitionProduceData::default()
                                    .with_index(*p)
                                    .with_records(Some(b.clone()))
                            })
                            .collect(),
                    )]);
            let mut expected = BytesMut::new();
            encode_frame(&mut expected, ApiKey::Produce, version, 77, &request).unwrap();
            assert_eq!(sent, expected.to_vec(), "version {version}");
        }
    }

    #[test]
    fn sealed_batches_are_valid_record_batches_with_every_record() {
        let start = Instant::now();
        let mut batch = OpenBatch::new(vec![7; 10], start);
        let mut key = itoa::Buffer::new();
        for i in 0..5u64 {
            let value = vec![b'x'; 100 + i as usize];
            batch.append(
                key.format(i * 300).as_bytes(),
                &value,
                1_700_000_000_000 + i as i64,
                Duration::ZERO,
            );
        }
        let sealed = batch.seal(3);
        let header = kappa_log::batch::validate(&sealed.bytes).expect("a valid batch");
        assert_eq!(header.record_count, 5);
        assert_eq!(header.last_offset_delta, 4);
        assert_eq!(header.base_timestamp, 1_700_000_000_000);
        assert_eq!(header.max_timestamp, 1_700_000_000_004);
        // kafka-protocol's decoder, written by others, reads it back.
        let mut bytes = sealed.bytes.clone();
        let set =
            kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).expect("decodable");
        let records = set.records;
        let keys: Vec<_> = records.iter().map(|r| r.key.clone().unwrap()).collect();
        assert_eq!(keys, ["0", "300", "600", "900", "1200"].map(Bytes::from));
        assert_eq!(records[4].value.as_ref().map(|v| v.len()), Some(104));
        assert_eq!(records[4].timestamp, 1_700_000_000_004);
        assert_eq!(records[4].offset, 4);
    }
}
