//! The Kafka listener: frames requests off each connection, decodes them, dispatches to the
//! handlers and writes responses in order. A bad frame closes only its own connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

use crate::config::BrokerConfig;
use crate::fetch_response::{self, Chunk};
use crate::groups::GroupCoordinator;
use crate::handlers::{self, supported_versions, Handled, RequestContext};
use crate::metrics::{ApiLabels, BrokerMetrics};
use crate::produce_stream::{self, IncomingRecords, StreamError};
use crate::topics::{TopicError, TopicRegistry};
use crate::txn::TxnCoordinator;

/// The broker's shared state.
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: TopicRegistry,
    pub metrics: BrokerMetrics,
    pub groups: GroupCoordinator,
    pub txns: TxnCoordinator,
    /// Woken whenever records become readable, so long-polling fetches can answer early.
    pub data_arrived: Arc<Notify>,
    pub advertised_host: String,
    pub advertised_port: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("invalid listener address '{0}'")]
    Address(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Broker {
    /// Opens the data directory (recovering partitions as needed).
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        let topics = TopicRegistry::open(&config)?;
        let groups = GroupCoordinator::open(
            &topics,
            std::time::Duration::from_millis(config.group_initial_rebalance_delay_ms),
        )?;
        let txns = TxnCoordinator::open(&topics, config.transaction_max_timeout_ms)?;
        let advertised = config
            .advertised_listener
            .clone()
            .unwrap_or_else(|| config.listen.clone());
        let (host, port) = advertised
            .rsplit_once(':')
            .and_then(|(h, p)| {
                p.parse::<i32>()
                    .ok()
                    .map(|p| (h.trim_matches(['[', ']']).to_string(), p))
            })
            .ok_or_else(|| BrokerError::Address(advertised.clone()))?;
        let data_arrived = topics.commits.data_arrived.clone();
        let metrics = BrokerMetrics::new(topics.commits.fsync_duration.clone(), &txns.metrics);
        Ok(Arc::new(Broker {
            config,
            topics,
            metrics,
            groups,
            txns,
            data_arrived,
            advertised_host: host,
            advertised_port: port,
        }))
    }

    /// Accepts connections until `shutdown` turns true; also runs the retention loop.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let retention = {
            let broker = self.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let period = std::time::Duration::from_millis(
                    broker.config.log_maintenance_interval_ms.max(100),
                );
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(period) => {}
                        _ = shutdown.changed() => break,
                    }
                    let b = broker.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        b.topics.enforce_retention();
                        b.topics.compact();
                    })
                    .await;
                }
            })
        };
        let group_ticker = {
            let broker = self.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(std::time::Duration::from_millis(100));
                loop {
                    interval.tick().await;
                    broker.groups.tick();
                }
            })
        };
        // Transactions: those a crash left half-ended are finished first thing, then every
        // pass aborts the ones that outlived their timeout.
        let txn_ticker = {
            let broker = self.clone();
            tokio::spawn(async move {
                let period = std::time::Duration::from_millis(
                    broker.config.transaction_check_interval_ms.max(10),
                );
                loop {
                    broker.txns.tick(&broker).await;
                    tokio::time::sleep(period).await;
                }
            })
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let broker = self.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            if let Err(e) = broker.handle_connection(stream, peer, shutdown).await {
                                tracing::debug!(%peer, error = %e, "connection closed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        retention.abort();
        group_ticker.abort();
        txn_ticker.abort();
    }

    /// Requests are read and handled in order; responses are written in order by a separate
    /// task, so a produce waiting for its fsync does not stop the next request from being read
    /// and appended (its fsync then covers both: group commit within one connection too).
    async fn handle_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let (mut reader, writer) = stream.into_split();
        let (queue, pending) = mpsc::channel::<Queued>(MAX_IN_FLIGHT);
        let idle = Duration::from_millis(self.config.connections_max_idle_ms.max(1));
        let activity = Arc::new(Activity::new());
        let writer_task = tokio::spawn(write_responses(
            writer,
            self.metrics.fetch_disk_read_bytes.clone(),
            pending,
            peer,
            idle,
            activity.clone(),
        ));
        let result = async {
            // One buffer per connection, read into without zeroing: frames are split off it,
            // and its memory is reused once their requests are done with them.
            let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
            loop {
                if buf.capacity() - buf.len() < READ_BUFFER_BYTES / 4 {
                    // Takes back the buffer's memory when every earlier frame is dropped.
                    buf.reserve(READ_BUFFER_BYTES);
                }
                while buf.len() < 4 {
                    tokio::select! {
                        r = reader.read_buf(&mut buf) => {
                            if r? == 0 {
                                return if buf.is_empty() {
                                    Ok(())
                                } else {
                                    Err(std::io::ErrorKind::UnexpectedEof.into())
                                };
                            }
                        }
                        _ = tokio::time::sleep_until(activity.idle_deadline(idle)) => {
                            if activity.is_idle(idle) {
                                tracing::debug!(%peer, "closing an idle connection");
                                return Ok(());
                            }
                        }
                        // The writer gave up on the client (it stopped reading).
                        _ = queue.closed() => return Ok(()),
                        _ = shutdown.changed() => return Ok(()),
                    }
                }
                let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if len < 8 || len as usize > self.config.max_request_bytes {
                    let reason = format!(
                        "request size {len} out of bounds (max {})",
                        self.config.max_request_bytes
                    );
                    let _ = queue
                        .send(Queued::Ready(FrameOutcome::Close(reason), None))
                        .await;
                    return Ok(());
                }
                let len = len as usize;
                let mut streamed = Vec::new();
                let frame = if 4 + len <= READ_BUFFER_BYTES {
                    if buf.capacity() < 4 + len {
                        buf.reserve(4 + len - buf.len());
                    }
                    while buf.len() < 4 + len {
                        if reader.read_buf(&mut buf).await? == 0 {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    buf.advance(4);
                    buf.split_to(len).freeze()
                } else {
                    // The frame holds at least its api key, version and correlation id.
                    while buf.len() < 12 {
                        if reader.read_buf(&mut buf).await? == 0 {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    if let Some(version) = streamable_produce(&buf[4..8]) {
                        buf.advance(4);
                        let topics = &self.topics;
                        let placement = |topic: &str, partition: i32| {
                            topics
                                .get(topic)
                                .and_then(|t| {
                                    t.partition(partition).map(|log| log.records_placement())
                                })
                                .unwrap_or(0)
                        };
                        match produce_stream::read_produce(
                            &mut reader,
                            &mut buf,
                            len,
                            version,
                            placement,
                        )
                        .await
                        {
                            Ok(request) => {
                                streamed = request.records;
                                request.skeleton
                            }
                            Err(StreamError::Io(e)) => return Err(e),
                            Err(StreamError::Malformed(reason)) => {
                                let _ = queue
                                    .send(Queued::Ready(FrameOutcome::Close(reason), None))
                                    .await;
                                return Ok(());
                            }
                        }
                    } else {
                        // A large frame gets a buffer of its own, freed with the request, so
                        // the shared buffer stays small (and nothing kept from a request pins
                        // much).
                        let mut own = BytesMut::with_capacity(len);
                        let buffered = buf.len().min(4 + len);
                        own.extend_from_slice(&buf[4..buffered]);
                        buf.advance(buffered);
                        while own.len() < len {
                            let missing = (len - own.len()) as u64;
                            if (&mut reader).take(missing).read_buf(&mut own).await? == 0 {
                                return Err(std::io::ErrorKind::UnexpectedEof.into());
                            }
                        }
                        own.freeze()
                    }
                };
                activity.request_started();
                let queued = self.handle_frame(frame, streamed, peer).await;
                let close = matches!(queued, Queued::Ready(FrameOutcome::Close(_), _));
                if queue.send(queued).await.is_err() || close {
                    return Ok(());
                }
            }
        }
        .await;
        drop(queue);
        let _ = writer_task.await;
        result
    }

    /// Handles one request frame; `streamed` holds the record sets a Produce request's frame
    /// had taken out (see `produce_stream`).
    async fn handle_frame(
        self: &Arc<Self>,
        frame: Bytes,
        streamed: Vec<Option<IncomingRecords>>,
        peer: SocketAddr,
    ) -> Queued {
        let started = Instant::now();
        let (api_key, api_version, correlation_id, header, request) = match decode_request(frame) {
            Ok(Decoded::Request {
                api_key,
                api_version,
                correlation_id,
                header,
                request,
            }) => (api_key, api_version, correlation_id, header, request),
            Ok(Decoded::UnsupportedApiVersions { correlation_id }) => {
                // KIP-511: answer with v0 and UNSUPPORTED_VERSION so the client can downgrade.
                let body = handlers::api_versions_response(35);
                let answer = encode_response(
                    ApiKey::ApiVersions,
                    0,
                    correlation_id,
                    &ResponseKind::ApiVersions(body),
                );
                return Queued::Ready(answer, None);
            }
            Err(e) => return Queued::Ready(FrameOutcome::Close(e.to_string()), None),
        };
        tracing::trace!(%peer, ?api_key, api_version, client = ?header.client_id, "request");
        let mut ctx = RequestContext {
            api_version,
            client_id: header
                .client_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            client_host: format!("/{}", peer.ip()),
            errors: 0,
            streamed_records: streamed,
        };
        let labels = ApiLabels {
            api: format!("{api_key:?}"),
        };
        // The latency is taken once the answer is written (see `write_responses`).
        let timer = Some(Timer {
            started,
            latency: self.metrics.request_latency.get_or_create(&labels).clone(),
        });
        let broker = self.clone();
        // Counts the request once its answer is encoded.
        let finish = move |outcome: FrameOutcome, errors: u32| {
            broker.metrics.requests.get_or_create(&labels).inc();
            if errors > 0 {
                broker.metrics.request_errors.get_or_create(&labels).inc();
            }
            outcome
        };
        let encode = move |response: Option<ResponseKind>| match response {
            Some(response) => encode_response(api_key, api_version, correlation_id, &response),
            None => FrameOutcome::NoResponse,
        };
        match handlers::handle(self, &mut ctx, request).await {
            Handled::Now(response) => Queued::Ready(finish(encode(response), ctx.errors), timer),
            Handled::Fetch(fetched) => {
                let chunks = fetch_response::encode(api_version, correlation_id, &fetched);
                Queued::Ready(
                    finish(FrameOutcome::RespondChunks(chunks), ctx.errors),
                    timer,
                )
            }
            Handled::Later(task) => Queued::Pending(
                tokio::spawn(async move {
                    match task.await {
                        Ok((response, errors)) => finish(encode(response), ctx.errors + errors),
                        Err(e) => FrameOutcome::Close(format!("request task failed: {e}")),
                    }
                }),
                timer,
            ),
        }
    }
}

/// The version of the Produce request whose frame starts with `header` (api key, version), when
/// it is one whose record sets `produce_stream` can take out as they arrive.
fn streamable_produce(header: &[u8]) -> Option<i16> {
    let api_key = i16::from_be_bytes([header[0], header[1]]);
    let version = i16::from_be_bytes([header[2], header[3]]);
    let (min, max) = supported_versions(ApiKey::Produce)?;
    (api_key == ApiKey::Produce as i16 && (min..=max).contains(&version)).then_some(version)
}

/// A connection's read buffer; frames larger than this are read into buffers of their own.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How many requests of one connection may wait for their responses at once.
const MAX_IN_FLIGHT: usize = 32;

/// A response in the connection's queue: ready, or still being produced (a produce waiting
/// for its fsync).
enum Queued {
    Ready(FrameOutcome, Option<Timer>),
    Pending(tokio::task::JoinHandle<FrameOutcome>, Option<Timer>),
}

/// A request's arrival and its API's latency histogram: observed once the answer is written,
/// so the time an answer waits behind earlier ones of its connection counts too (as in Kafka's
/// total request time).
struct Timer {
    started: Instant,
    latency: Histogram,
}

/// When a connection last did something, and how many of its requests are unanswered: a
/// connection is idle only with nothing in flight.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    fn response_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.touch();
    }

    fn idle_deadline(&self, idle: Duration) -> tokio::time::Instant {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        (self.started + last + idle).into()
    }

    fn is_idle(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && tokio::time::Instant::now() >= self.idle_deadline(idle)
    }
}

async fn write_responses(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    disk_read_bytes: Counter,
    mut pending: mpsc::Receiver<Queued>,
    peer: SocketAddr,
    idle: Duration,
    activity: Arc<Activity>,
) {
    while let Some(queued) = pending.recv().await {
        let (outcome, timer) = match queued {
            Queued::Ready(o, timer) => (o, timer),
            Queued::Pending(task, timer) => match task.await {
                Ok(o) => (o, timer),
                Err(e) => (
                    FrameOutcome::Close(format!("request task failed: {e}")),
                    None,
                ),
            },
        };
        // A client that stops reading must not hold the connection (and the segment files
        // of its fetch) forever.
        let written = match outcome {
            FrameOutcome::Respond(bytes) => {
                tokio::time::timeout(idle, writer.write_all(&bytes)).await
            }
            FrameOutcome::RespondChunks(chunks) => {
                tokio::time::timeout(idle, write_chunks(&mut writer, &chunks, &disk_read_bytes))
                    .await
            }
            FrameOutcome::NoResponse => Ok(Ok(())),
            FrameOutcome::Close(reason) => {
                tracing::warn!(%peer, reason, "closing connection");
                let _ = writer.shutdown().await;
                return;
            }
        };
        match written {
            Ok(Ok(())) => {
                activity.response_done();
                if let Some(timer) = timer {
                    timer.latency.observe(timer.started.elapsed().as_secs_f64());
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "could not write a response");
                let _ = writer.shutdown().await;
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "closing a connection whose client stopped reading");
                let _ = writer.shutdown().await;
                return;
            }
        }
    }
}

/// Why a request frame cannot be served; the connection is closed, as Kafka does.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("API {0:?} is not supported")]
    UnsupportedApi(ApiKey),
    #[error("{api:?} v{version} is not supported (supported {min}..={max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// A decoded request frame (without its length prefix).
#[derive(Debug)]
// Built once per request and moved straight into its handler: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Request {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        header: RequestHeader,
        request: RequestKind,
    },
    /// An ApiVersions request the broker cannot serve as sent: it answers v0 with its versions.
    UnsupportedApiVersions { correlation_id: i32 },
}

/// Decodes one request frame. Never panics on any input (see the fuzz target).
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let api_key_raw = frame.slice(0..2).get_i16();
    let api_version = frame.slice(2..4).get_i16();
    let correlation_id = frame.slice(4..8).get_i32();
    let api_key =
        ApiKey::try_from(api_key_raw).map_err(|_| FrameError::UnknownApiKey(api_key_raw))?;
    let (min, max) = supported_versions(api_key).ok_or(FrameError::UnsupportedApi(api_key))?;
    if api_version < min || api_version > max {
        if api_key == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions { correlation_id });
        }
        return Err(FrameError::UnsupportedVersion {
            api: api_key,
            version: api_version,
            min,
            max,
        });
    }
    let malformed = |reason: String| FrameError::Malformed {
        api: api_key,
        version: api_version,
        reason,
    };
    let header_version = api_key.request_header_version(api_version);
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|e| malformed(e.to_string()))?;
    match RequestKind::decode(api_key, &mut frame, api_version) {
        Ok(request) => Ok(Decoded::Request {
            api_key,
            api_version,
            correlation_id,
            header,
            request,
        }),
        // Newer clients may send ApiVersions fields we cannot parse; still tell them our versions.
        Err(_) if api_key == ApiKey::ApiVersions => {
            Ok(Decoded::UnsupportedApiVersions { correlation_id })
        }
        Err(e) => Err(malformed(e.to_string())),
    }
}

enum FrameOutcome {
    /// A complete response frame, length prefix included.
    Respond(Bytes),
    /// A complete response frame in pieces, some of them stretches of segment files.
    RespondChunks(Vec<Chunk>),
    NoResponse,
    Close(String),
}

/// Encodes a response frame, length prefix included, ready to be written as it is.
fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> FrameOutcome {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    if let Err(e) = header.encode(&mut buf, header_version) {
        return FrameOutcome::Close(format!("could not encode response header: {e}"));
    }
    if let Err(e) = body.encode(&mut buf, version) {
        return FrameOutcome::Close(format!("could not encode {api_key:?} response: {e}"));
    }
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    FrameOutcome::Respond(buf.freeze())
}

/// Writes a response in pieces: memory pieces with write, file pieces with sendfile(2), so
/// records go from the page cache to the socket without passing through the broker. The
/// socket is corked meanwhile so the small pieces leave in full packets.
async fn write_chunks(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    chunks: &[Chunk],
    disk_read_bytes: &Counter,
) -> std::io::Result<()> {
    let socket = writer.as_ref();
    let _ = rustix::net::sockopt::set_tcp_cork(socket, true);
    let result = async {
        for chunk in chunks {
            match chunk {
                Chunk::Bytes(bytes) => writer.write_all(bytes).await?,
                Chunk::File(slice) => send_file(writer.as_ref(), slice, disk_read_bytes).await?,
            }
        }
        Ok(())
    }
    .await;
    let _ = rustix::net::sockopt::set_tcp_cork(writer.as_ref(), false);
    result
}

async fn send_file(
    socket: &TcpStream,
    slice: &kappa_log::FileSlice,
    disk_read_bytes: &Counter,
) -> std::io::Result<()> {
    let mut position = slice.position;
    let end = slice.position + slice.len;
    if !slice.in_page_cache() {
        // sendfile would wait for the disk on this runtime thread, and so would every
        // connection served by it (Kafka's KAFKA-7504). The reads share tokio's blocking pool
        // (512 threads) with the fsync rounds; many lagging consumers on a slow disk could
        // make fsyncs wait for a thread.
        send_from_disk(socket, &slice.file, position, end).await?;
        disk_read_bytes.inc_by(slice.len);
        return Ok(());
    }
    while position < end {
        socket.writable().await?;
        let want = (end - position).min(1 << 30) as usize;
        let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::fs::sendfile(socket, &*slice.file, Some(&mut position), want)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => {
                // The file is shorter than when the fetch was planned: the promised frame
                // cannot be completed, so the connection must go.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file ended before the fetched records",
                ));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) if sendfile_unsupported(&e) => {
                return send_from_disk(socket, &slice.file, position, end).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// sendfile(2) refuses files whose file system cannot splice (some FUSE and network ones).
fn sendfile_unsupported(e: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP)
    )
}

/// Sends `file[position..end]` through a buffer, read a piece at a time on the blocking pool:
/// for stretches not in the page cache, and where sendfile is refused.
async fn send_from_disk(
    socket: &TcpStream,
    file: &Arc<std::fs::File>,
    mut position: u64,
    end: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::new();
    while position < end {
        let n = (end - position).min(DISK_READ_PIECE) as usize;
        let file = file.clone();
        buf.resize(n, 0);
        buf = tokio::task::spawn_blocking(move || {
            file.read_exact_at(&mut buf, position).map(|()| buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut sent = 0;
        while sent < n {
            socket.writable().await?;
            match socket.try_write(&buf[sent..n]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => sent += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        position += n as u64;
    }
    Ok(())
}

/// What `send_from_disk` reads at a time.
const DISK_READ_PIECE: u64 = 256 * 1024;

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// The buffered fallback sends exactly the requested stretch of the file.
    #[tokio::test]
    async fn buffered_fallback_sends_the_file_stretch() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        file.write_all(&data).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let socket = TcpStream::connect(addr).await.unwrap();
        send_from_disk(&socket, &Arc::new(file), 12_345, 912_345)
            .await
            .unwrap();
        drop(socket);
        assert_eq!(reader.await.unwrap(), data[12_345..912_345]);
        let einval = std::io::Error::from_raw_os_error(rustix::io::Errno::INVAL.raw_os_error());
        assert!(sendfile_unsupported(&einval));
        let epipe = std::io::Error::from_raw_os_error(rustix::io::Errno::PIPE.raw_os_error());
        assert!(!sendfile_unsupported(&epipe));
    }
}
