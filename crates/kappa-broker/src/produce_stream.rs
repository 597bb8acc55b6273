//! Reading a large Produce request as it arrives, so that each partition's records land in
//! memory of their own, placed where the partition's log can write them without copying
//! them (`kappa_log::OwnedRecords`). Copying records into the log's write buffer was a third of
//! the broker's CPU time at full load.
//!
//! The rest of the request is gathered into a "skeleton" frame: the same bytes, but each
//! record set is replaced by a null one, so the usual decoder reads it; the record sets follow
//! in the order of their partitions. Small ones stay in the connection's read buffer, as the
//! record sets of a small frame do.

use std::pin::Pin;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kappa_log::{AppendInfo, Log, LogError, OwnedRecords};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Record sets smaller than this stay slices of the connection's read buffer, copied by the
/// log as usual.
pub const STREAM_RECORDS_FROM: usize = 64 * 1024;

/// A Produce request read by [`read_produce`].
pub struct StreamedProduce {
    /// The frame (without its length prefix), each record set replaced by a null one.
    pub skeleton: Bytes,
    /// For each partition of the request, in order: its records (`None` when null).
    pub records: Vec<Option<IncomingRecords>>,
}

/// A partition's records in a Produce request: a slice of the bytes read from the network,
/// or in memory of their own (which the log may write without copying).
pub enum IncomingRecords {
    Shared(Bytes),
    Owned(OwnedRecords),
}

impl IncomingRecords {
    pub fn len(&self) -> usize {
        match self {
            IncomingRecords::Shared(records) => records.len(),
            IncomingRecords::Owned(records) => records.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            IncomingRecords::Shared(records) => records,
            IncomingRecords::Owned(records) => records.as_slice(),
        }
    }

    pub fn append_to(self, log: &Log, now_ms: i64) -> std::result::Result<AppendInfo, LogError> {
        match self {
            IncomingRecords::Shared(records) => log.append_deferred(&records, now_ms),
            IncomingRecords::Owned(records) => log.append_owned(records, now_ms),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed Produce request: {0}")]
    Malformed(String),
}

type Result<T> = std::result::Result<T, StreamError>;

fn malformed(what: &str) -> StreamError {
    StreamError::Malformed(what.to_string())
}

/// Reads a Produce request of `len` bytes (its length prefix already taken from `buf`, which
/// holds the bytes read so far) of version `version`. `placement` tells where within a block
/// a partition's records should sit in memory (`Log::records_placement`; 0 when unknown).
pub async fn read_produce<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    len: usize,
    version: i16,
    placement: impl Fn(&str, i32) -> usize,
) -> Result<StreamedProduce> {
    let mut stream = FrameStream {
        reader,
        buf,
        left: len,
        skeleton: BytesMut::with_capacity(1024),
    };
    let flexible = version >= 9;
    // Request header (version 1, or 2 with tagged fields).
    stream.copy(8).await?;
    stream.string(false).await?;
    if flexible {
        stream.tagged_fields().await?;
    }
    // transactional_id, acks, timeout_ms
    stream.string(flexible).await?;
    stream.copy(6).await?;
    let mut records = Vec::new();
    let topics = stream.array_len(flexible).await?;
    for _ in 0..topics {
        let name = stream.string(flexible).await?.unwrap_or_default();
        let name = std::str::from_utf8(&name).map_err(|_| malformed("topic name"))?;
        let partitions = stream.array_len(flexible).await?;
        for _ in 0..partitions {
            let index = stream.copy(4).await?.get_i32();
            let taken = stream.records(flexible, || placement(name, index)).await?;
            records.push(taken);
            if flexible {
                stream.tagged_fields().await?;
            }
        }
        if flexible {
            stream.tagged_fields().await?;
        }
    }
    if flexible {
        stream.tagged_fields().await?;
    }
    // Anything after is the decoder's to judge.
    let rest = stream.left;
    stream.copy(rest).await?;
    Ok(StreamedProduce {
        skeleton: stream.skeleton.freeze(),
        records,
    })
}

/// The rest of one frame: `left` bytes, the first of them (maybe) already in `buf`.
struct FrameStream<'a, R> {
    reader: &'a mut R,
    buf: &'a mut BytesMut,
    left: usize,
    skeleton: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameStream<'_, R> {
    /// Makes `buf` hold the frame's next `n` bytes.
    async fn fill(&mut self, n: usize) -> Result<()> {
        if n > self.left {
            return Err(malformed("a field runs past the end of the frame"));
        }
        if self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
        }
        while self.buf.len() < n {
            if self.reader.read_buf(self.buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        Ok(())
    }

    /// Takes the frame's next `n` bytes.
    async fn take(&mut self, n: usize) -> Result<Bytes> {
        self.fill(n).await?;
        self.left -= n;
        Ok(self.buf.split_to(n).freeze())
    }

    /// Moves the frame's next `n` bytes into the skeleton and returns them.
    async fn copy(&mut self, n: usize) -> Result<Bytes> {
        let bytes = self.take(n).await?;
        self.skeleton.put_slice(&bytes);
        Ok(bytes)
    }

    /// Takes an unsigned varint, without copying it into the skeleton.
    async fn take_unsigned_varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1).await?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint longer than 5 bytes"))
    }

    async fn unsigned_varint(&mut self) -> Result<u64> {
        let value = self.take_unsigned_varint().await?;
        put_unsigned_varint(&mut self.skeleton, value);
        Ok(value)
    }

    /// A (compact when `flexible`) nullable string's bytes.
    async fn string(&mut self, flexible: bool) -> Result<Option<Bytes>> {
        let len = if flexible {
            self.unsigned_varint().await? as i64 - 1
        } else {
            i64::from(self.copy(2).await?.get_i16())
        };
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(self.copy(len as usize).await?))
    }

    async fn array_len(&mut self, flexible: bool) -> Result<usize> {
        let len = if flexible {
            self.unsigned_varint().await? as i64 - 1
        } else {
            i64::from(self.copy(4).await?.get_i32())
        };
        // Each element takes at least one byte: a count beyond the frame is a lie.
        if len > self.left as i64 {
            return Err(malformed("array longer than the frame"));
        }
        Ok(len.max(0) as usize)
    }

    async fn tagged_fields(&mut self) -> Result<()> {
        let count = self.unsigned_varint().await?;
        for _ in 0..count {
            self.unsigned_varint().await?;
            let size = self.unsigned_varint().await?;
            self.copy(usize::try_from(size).map_err(|_| malformed("tagged field size"))?)
                .await?;
        }
        Ok(())
    }

    /// A partition's record set, which leaves a null one in the skeleton: large ones are read
    /// into memory of their own, placed for `placement()`; small ones are slices of the read
    /// buffer.
    async fn records(
        &mut self,
        flexible: bool,
        placement: impl FnOnce() -> usize,
    ) -> Result<Option<IncomingRecords>> {
        let len = if flexible {
            self.take_unsigned_varint().await? as i64 - 1
        } else {
            i64::from(self.take(4).await?.get_i32())
        };
        if len < 0 {
            // Null (any other negative length is the decoder's to refuse).
            if flexible {
                self.skeleton.put_u8(0);
            } else {
                self.skeleton.put_i32(len as i32);
            }
            return Ok(None);
        }
        let len = len as usize;
        if len > self.left {
            return Err(malformed("a record set runs past the end of the frame"));
        }
        if flexible {
            self.skeleton.put_u8(0);
        } else {
            self.skeleton.put_i32(-1);
        }
        if len < STREAM_RECORDS_FROM {
            return Ok(Some(IncomingRecords::Shared(self.take(len).await?)));
        }
        let mut records = OwnedRecords::new(placement(), len);
        let buffered = self.buf.len().min(len);
        records.extend_from_slice(&self.buf[..buffered]);
        self.buf.advance(buffered);
        while records.len() < len {
            let missing = len - records.len();
            let spare = &mut records.spare_capacity_mut()[..missing];
            let mut read = ReadBuf::uninit(spare);
            std::future::poll_fn(|cx| Pin::new(&mut *self.reader).poll_read(cx, &mut read)).await?;
            let n = read.filled().len();
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            // SAFETY: `poll_read` initialized the `n` bytes it reports filled.
            unsafe { records.assume_filled(n) };
        }
        self.left -= len;
        Ok(Some(IncomingRecords::Owned(records)))
    }
}

fn put_unsigned_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{decode_request, Decoded};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, RequestKind, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use rand::{Rng, SeedableRng};

    /// Gives its bytes out in reads of random sizes, as a socket does.
    struct Trickle {
        bytes: Bytes,
        rng: rand::rngs::StdRng,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let most = self.bytes.len().min(out.remaining());
            let n = if most == 0 {
                0
            } else {
                self.rng.random_range(1..=most.min(100_000))
            };
            let chunk = self.bytes.split_to(n);
            out.put_slice(&chunk);
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn request(rng: &mut rand::rngs::StdRng) -> ProduceRequest {
        let topics = (0..rng.random_range(1..4))
            .map(|t| {
                let partitions = (0..rng.random_range(1..5))
                    .map(|p| {
                        let len = match rng.random_range(0..4) {
                            0 => None,
                            1 => Some(rng.random_range(0..STREAM_RECORDS_FROM)),
                            _ => Some(rng.random_range(STREAM_RECORDS_FROM..400_000)),
                        };
                        let records = len.map(|len| {
                            Bytes::from((0..len).map(|i| (i * 7 + p) as u8).collect::<Vec<u8>>())
                        });
                        PartitionProduceData::default()
                            .with_index(p as i32)
                            .with_records(records)
                    })
                    .collect();
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(format!("topic-{t}"))))
                    .with_partition_data(partitions)
            })
            .collect();
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1234)
            .with_topic_data(topics)
    }

    fn frame(version: i16, request: &ProduceRequest) -> Bytes {
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(version)
            .with_correlation_id(99)
            .with_client_id(Some(StrBytes::from_static_str("stream-test")))
            .encode(&mut frame, ApiKey::Produce.request_header_version(version))
            .unwrap();
        request.encode(&mut frame, version).unwrap();
        frame.freeze()
    }

    fn position(topic: &str, partition: i32) -> usize {
        (topic.len() * 1000).wrapping_add((partition as usize).wrapping_mul(777))
    }

    #[tokio::test]
    async fn large_record_sets_are_taken_out_and_the_rest_decodes_as_sent() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for version in 3..=11 {
            for _ in 0..8 {
                let sent = request(&mut rng);
                let frame = frame(version, &sent);
                // The next frame's first bytes follow on the wire.
                let mut wire = frame.to_vec();
                wire.extend_from_slice(b"next");
                let mut reader = Trickle {
                    bytes: Bytes::from(wire),
                    rng: rand::rngs::StdRng::seed_from_u64(rng.random()),
                };
                let mut buf = BytesMut::new();
                let read = read_produce(&mut reader, &mut buf, frame.len(), version, position)
                    .await
                    .unwrap();
                let Ok(Decoded::Request {
                    request: RequestKind::Produce(skeleton),
                    correlation_id: 99,
                    ..
                }) = decode_request(read.skeleton)
                else {
                    panic!("the skeleton decodes as the Produce request");
                };
                let mut taken = read.records.into_iter();
                let mut rebuilt = skeleton.clone();
                for (t, topic) in rebuilt.topic_data.iter_mut().enumerate() {
                    for (p, partition) in topic.partition_data.iter_mut().enumerate() {
                        let sent_records = &sent.topic_data[t].partition_data[p].records;
                        assert!(partition.records.is_none());
                        match taken.next().unwrap() {
                            Some(IncomingRecords::Owned(owned)) => {
                                assert!(owned.len() >= STREAM_RECORDS_FROM);
                                assert_eq!(
                                    owned.prefix(),
                                    position(topic.name.as_str(), partition.index) % 4096
                                );
                                partition.records = Some(Bytes::copy_from_slice(owned.as_slice()));
                            }
                            Some(IncomingRecords::Shared(records)) => {
                                assert!(records.len() < STREAM_RECORDS_FROM);
                                partition.records = Some(records);
                            }
                            None => assert!(sent_records.is_none()),
                        }
                    }
                }
                assert!(taken.next().is_none());
                assert_eq!(rebuilt, sent, "version {version}");
                // What followed the frame is left for the next one.
                let mut rest = buf.to_vec();
                reader.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, b"next");
            }
        }
    }

    #[tokio::test]
    async fn cut_or_lying_frames_are_errors_not_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for version in [3, 8, 9, 11] {
            let sent = request(&mut rng);
            let frame = frame(version, &sent);
            // The connection ends mid-frame.
            for cut in [5, frame.len() / 2, frame.len() - 1] {
                let mut reader = Trickle {
                    bytes: frame.slice(..cut),
                    rng: rand::rngs::StdRng::seed_from_u64(1),
                };
                let mut buf = BytesMut::new();
                let read = read_produce(&mut reader, &mut buf, frame.len(), version, position);
                assert!(matches!(read.await, Err(StreamError::Io(_))));
            }
            // Flipped bytes in the fields before the records, and a frame length that is short.
            for _ in 0..300 {
                let mut bytes = frame.to_vec();
                let at = rng.random_range(0..bytes.len().min(200));
                bytes[at] = rng.random();
                let len = if rng.random_range(0..4) == 0 {
                    rng.random_range(8..bytes.len())
                } else {
                    bytes.len()
                };
                let mut reader = Trickle {
                    bytes: Bytes::from(bytes),
                    rng: rand::rngs::StdRng::seed_from_u64(2),
                };
                let mut buf = BytesMut::new();
                // Any outcome but a panic or a read past the frame's length.
                if let Ok(read) = read_produce(&mut reader, &mut buf, len, version, position).await
                {
                    let taken: usize = read.records.iter().flatten().map(|r| r.len()).sum();
                    // (A null record set is no longer than the length field it replaces.)
                    assert!(read.skeleton.len() + taken <= len);
                }
            }
        }
    }
}
