//! Fetch responses written without copying the records: the response is encoded around the
//! records as a list of chunks, small encoded parts in memory and stretches of segment files
//! that the connection hands to the socket with sendfile(2). The bytes on the wire are those
//! kafka-protocol's encoder would write for the same response (see the tests).

use bytes::{BufMut, Bytes, BytesMut};
use kappa_log::{FileSlice, LogSlice};

/// One partition of a fetch answer.
#[derive(Debug)]
pub struct FetchedPartition {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Whole batches, in order; empty on error or when there is nothing new.
    pub records: Vec<LogSlice>,
    /// The offset after the last batch in `records` (for metrics; not sent).
    pub next_offset: i64,
    /// read_committed: the aborted transactions in `records`, as (producer id, first offset);
    /// `None` (sent as null) for read_uncommitted.
    pub aborted: Option<Vec<(i64, i64)>>,
}

impl FetchedPartition {
    /// Bytes of records this partition answers with.
    pub fn records_len(&self) -> u64 {
        self.records.iter().map(LogSlice::len).sum()
    }
}

#[derive(Debug)]
pub struct FetchedTopic {
    pub name: String,
    pub partitions: Vec<FetchedPartition>,
}

/// A fetch answer before encoding.
#[derive(Debug, Default)]
pub struct Fetched {
    pub topics: Vec<FetchedTopic>,
}

/// A piece of a response frame.
#[derive(Debug)]
pub enum Chunk {
    Bytes(Bytes),
    File(FileSlice),
}

/// The whole response frame (length prefix included) for Fetch `version` (4..=12), in the
/// order the pieces go on the wire.
pub fn encode(version: i16, correlation_id: i32, fetched: &Fetched) -> Vec<Chunk> {
    let flexible = version >= 12;
    let mut out = ChunkWriter::default();
    out.buf.put_i32(0); // the frame length, set below
    out.buf.put_i32(correlation_id);
    if flexible {
        out.buf.put_u8(0); // response header v1: no tagged fields
    }
    out.buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        out.buf.put_i16(0); // error_code
        out.buf.put_i32(0); // session_id
    }
    out.array_len(fetched.topics.len(), flexible);
    for topic in &fetched.topics {
        out.string(&topic.name, flexible);
        out.array_len(topic.partitions.len(), flexible);
        for p in &topic.partitions {
            out.buf.put_i32(p.index);
            out.buf.put_i16(p.error_code);
            out.buf.put_i64(p.high_watermark);
            out.buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                out.buf.put_i64(p.log_start_offset);
            }
            match &p.aborted {
                None => out.null_array(flexible),
                Some(aborted) => {
                    out.array_len(aborted.len(), flexible);
                    for (producer_id, first_offset) in aborted {
                        out.buf.put_i64(*producer_id);
                        out.buf.put_i64(*first_offset);
                        if flexible {
                            out.buf.put_u8(0); // aborted transaction tagged fields
                        }
                    }
                }
            }
            if version >= 11 {
                out.buf.put_i32(-1); // preferred_read_replica
            }
            let len = p.records_len();
            if flexible {
                out.uvarint(len + 1);
            } else {
                out.buf.put_i32(len as i32);
            }
            for slice in &p.records {
                out.records(slice.clone());
            }
            if flexible {
                out.buf.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            out.buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        out.buf.put_u8(0); // response tagged fields
    }
    out.finish()
}

/// The frame's size as the length prefix counts it (every byte after the prefix).
fn frame_len(chunks: &[Chunk]) -> u64 {
    chunks
        .iter()
        .map(|c| match c {
            Chunk::Bytes(b) => b.len() as u64,
            Chunk::File(f) => f.len,
        })
        .sum::<u64>()
        - 4
}

#[derive(Default)]
struct ChunkWriter {
    chunks: Vec<Chunk>,
    buf: BytesMut,
}

impl ChunkWriter {
    fn array_len(&mut self, len: usize, flexible: bool) {
        if flexible {
            self.uvarint(len as u64 + 1);
        } else {
            self.buf.put_i32(len as i32);
        }
    }

    /// A null array (nullable arrays: -1, or 0 in the compact form).
    fn null_array(&mut self, flexible: bool) {
        if flexible {
            self.uvarint(0);
        } else {
            self.buf.put_i32(-1);
        }
    }

    fn string(&mut self, s: &str, flexible: bool) {
        if flexible {
            self.uvarint(s.len() as u64 + 1);
        } else {
            self.buf.put_i16(s.len() as i16);
        }
        self.buf.put_slice(s.as_bytes());
    }

    fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    fn records(&mut self, slice: LogSlice) {
        if slice.is_empty() {
            return;
        }
        if !self.buf.is_empty() {
            self.chunks.push(Chunk::Bytes(self.buf.split().freeze()));
        }
        self.chunks.push(match slice {
            LogSlice::File(f) => Chunk::File(f),
            LogSlice::Memory(b) => Chunk::Bytes(b),
        });
    }

    fn finish(mut self) -> Vec<Chunk> {
        if !self.buf.is_empty() {
            self.chunks.push(Chunk::Bytes(self.buf.split().freeze()));
        }
        let len = frame_len(&self.chunks) as i32;
        if let Some(Chunk::Bytes(first)) = self.chunks.first_mut() {
            let mut patched = BytesMut::from(&first[..]);
            patched[..4].copy_from_slice(&len.to_be_bytes());
            *first = patched.freeze();
        }
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use bytes::Buf;
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    use super::*;

    fn slice_of(file: &Arc<std::fs::File>, position: u64, len: u64) -> LogSlice {
        LogSlice::File(FileSlice {
            file: Arc::clone(file),
            position,
            len,
        })
    }

    /// The chunks as the socket would receive them.
    fn materialize(chunks: &[Chunk]) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut out = Vec::new();
        for c in chunks {
            match c {
                Chunk::Bytes(b) => out.extend_from_slice(b),
                Chunk::File(f) => {
                    let mut buf = vec![0u8; f.len as usize];
                    f.file.read_exact_at(&mut buf, f.position).unwrap();
                    out.extend_from_slice(&buf);
                }
            }
        }
        out
    }

    #[test]
    fn every_version_decodes_as_kafka_protocol_reads_it() {
        let mut tmp = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        tmp.write_all(&data).unwrap();
        let file = Arc::new(tmp);
        let fetched = Fetched {
            topics: vec![
                FetchedTopic {
                    name: "orders".into(),
                    partitions: vec![
                        FetchedPartition {
                            index: 0,
                            error_code: 0,
                            high_watermark: 1234,
                            last_stable_offset: 1234,
                            log_start_offset: 5,
                            // Two file slices (two segments), one of them longer than a varint
                            // byte, and a stretch from the tail cache.
                            records: vec![
                                slice_of(&file, 10, 300),
                                slice_of(&file, 5000, 70_000),
                                LogSlice::Memory(Bytes::copy_from_slice(&data[400..1400])),
                            ],
                            next_offset: 0,
                            aborted: Some(vec![(77, 12), (78, 1_000_000)]),
                        },
                        FetchedPartition {
                            index: 3,
                            error_code: 1,
                            high_watermark: 9,
                            last_stable_offset: 9,
                            log_start_offset: 0,
                            records: vec![],
                            next_offset: 0,
                            aborted: None,
                        },
                    ],
                },
                FetchedTopic {
                    name: "e".repeat(200),
                    partitions: vec![],
                },
            ],
        };
        for version in 4..=12 {
            let chunks = encode(version, 42, &fetched);
            let wire = materialize(&chunks);
            let mut frame = Bytes::from(wire);
            let len = frame.get_i32();
            assert_eq!(len as usize, frame.len(), "v{version} length prefix");
            let header =
                ResponseHeader::decode(&mut frame, ApiKey::Fetch.response_header_version(version))
                    .unwrap();
            assert_eq!(header.correlation_id, 42);
            let response = FetchResponse::decode(&mut frame, version).unwrap();
            assert!(
                frame.is_empty(),
                "v{version}: {} bytes left over",
                frame.len()
            );
            assert_eq!(response.responses.len(), 2);
            let t = &response.responses[0];
            assert_eq!(t.topic.0.as_str(), "orders");
            let p = &t.partitions[0];
            assert_eq!((p.partition_index, p.error_code), (0, 0));
            assert_eq!((p.high_watermark, p.last_stable_offset), (1234, 1234));
            assert_eq!(p.log_start_offset, if version >= 5 { 5 } else { -1 });
            let mut expected = data[10..310].to_vec();
            expected.extend_from_slice(&data[5000..75_000]);
            expected.extend_from_slice(&data[400..1400]);
            assert_eq!(p.records.as_deref(), Some(&expected[..]));
            let aborted: Vec<_> = p
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect();
            assert_eq!(aborted, vec![(77, 12), (78, 1_000_000)], "v{version}");
            let q = &t.partitions[1];
            assert_eq!((q.partition_index, q.error_code), (3, 1));
            assert!(
                q.aborted_transactions.is_none(),
                "v{version}: read_uncommitted sends null"
            );
            assert_eq!(q.records.as_deref(), Some(&[][..]));
            assert_eq!(response.responses[1].topic.0.len(), 200);
            // Records travel as file chunks, never through memory.
            let files: Vec<_> = chunks
                .iter()
                .filter_map(|c| match c {
                    Chunk::File(f) => Some((f.position, f.len)),
                    _ => None,
                })
                .collect();
            assert_eq!(files, vec![(10, 300), (5000, 70_000)]);
        }
    }
}
