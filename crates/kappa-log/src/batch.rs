//! Kafka RecordBatch (magic v2) headers: parsing, validation and the few in-place rewrites
//! the log does (base offset, log-append time). Record payloads are never decoded here.

use crate::LogError;

/// Size of the fixed RecordBatch v2 header.
pub const HEADER_LEN: usize = 61;
/// Bytes before the batch length field ends (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// The fields of a RecordBatch v2 header the log needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Whole size of the batch in bytes, including the 12-byte offset/length prefix.
    pub size: usize,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Needs `HEADER_LEN` bytes; checks only that the
    /// declared length is plausible, not the CRC (see [`validate`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, LogError> {
        if buf.len() < HEADER_LEN {
            return Err(LogError::CorruptBatch(format!(
                "batch header needs {HEADER_LEN} bytes, got {}",
                buf.len()
            )));
        }
        let length = i32_at(buf, OFF_LENGTH);
        if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(LogError::CorruptBatch(format!(
                "batch length {length} is smaller than a batch header"
            )));
        }
        Ok(BatchHeader {
            base_offset: i64_at(buf, OFF_BASE_OFFSET),
            size: length as usize + LOG_OVERHEAD,
            magic: buf[OFF_MAGIC] as i8,
            crc: u32::from_be_bytes(arr(buf, OFF_CRC)),
            attributes: i16::from_be_bytes(arr(buf, OFF_ATTRIBUTES)),
            last_offset_delta: i32_at(buf, OFF_LAST_OFFSET_DELTA),
            base_timestamp: i64_at(buf, OFF_BASE_TIMESTAMP),
            max_timestamp: i64_at(buf, OFF_MAX_TIMESTAMP),
            producer_id: i64_at(buf, OFF_PRODUCER_ID),
            producer_epoch: i16::from_be_bytes(arr(buf, OFF_PRODUCER_EPOCH)),
            base_sequence: i32_at(buf, OFF_BASE_SEQUENCE),
            record_count: i32_at(buf, OFF_RECORD_COUNT),
        })
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn compression_codec(&self) -> i16 {
        self.attributes & 0x07
    }
}

/// CRC-32C (Castagnoli), the checksum of RecordBatch v2. `crc-fast` folds the data with
/// carry-less multiplication (VPCLMULQDQ where the CPU has it): about four times the `crc32c`
/// crate's speed on data in cache, and 1.5 times on data coming from memory.
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

/// Parses and fully checks one batch a producer sent, at the start of `buf`: magic 2, a length
/// that fits in `buf`, a matching CRC-32C, and records whose offsets are dense (n records,
/// deltas 0..n-1). Returns the header.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, LogError> {
    validate_as(buf, Origin::Producer, Body::Check)
}

/// The checks [`validate_all_but_body`] leaves out, on a batch whose header it returned: the
/// CRC-32C and, uncompressed, the records' framing.
pub fn check_body(batch: &[u8], header: &BatchHeader) -> Result<(), LogError> {
    check_body_as(batch, header, Origin::Producer)
}

fn check_body_as(batch: &[u8], header: &BatchHeader, origin: Origin) -> Result<(), LogError> {
    let computed = crc32c(&batch[OFF_ATTRIBUTES..header.size]);
    if computed != header.crc {
        return Err(LogError::CorruptBatch(format!(
            "CRC mismatch: stored {:#010x}, computed {computed:#010x}",
            header.crc
        )));
    }
    if header.compression_codec() == 0 {
        check_record_framing(&batch[HEADER_LEN..header.size], header, origin)?;
    }
    Ok(())
}

/// Checks one batch read back from a segment. Compaction leaves gaps inside batches, so the
/// record offsets need only rise within the batch's range.
pub fn validate_stored(buf: &[u8]) -> Result<BatchHeader, LogError> {
    validate_as(buf, Origin::Stored, Body::Check)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Producer,
    Stored,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Check,
    /// The caller checks it with [`check_body`] (on its own copy of the bytes).
    Later,
}

fn validate_as(buf: &[u8], origin: Origin, body: Body) -> Result<BatchHeader, LogError> {
    let header = BatchHeader::parse(buf)?;
    if header.magic != 2 {
        return Err(LogError::UnsupportedMagic(header.magic));
    }
    if header.size > buf.len() {
        return Err(LogError::CorruptBatch(format!(
            "batch declares {} bytes but only {} are present",
            header.size,
            buf.len()
        )));
    }
    if header.record_count < 0 || header.last_offset_delta < 0 {
        return Err(LogError::CorruptBatch(format!(
            "invalid record count {} / last offset delta {}",
            header.record_count, header.last_offset_delta
        )));
    }
    if header.record_count == 0 && !header.is_control() {
        return Err(LogError::CorruptBatch("batch holds no records".into()));
    }
    // Offsets inside a produced batch are dense: n records span exactly n offsets. A stored
    // batch may have lost records to compaction, never gained offsets.
    let dense = header.last_offset_delta == header.record_count - 1;
    let spans = header.last_offset_delta >= header.record_count - 1;
    if header.record_count > 0 && !(dense || (origin == Origin::Stored && spans)) {
        return Err(LogError::CorruptBatch(format!(
            "last offset delta {} does not match {} records",
            header.last_offset_delta, header.record_count
        )));
    }
    if body == Body::Check {
        check_body_as(buf, &header, origin)?;
    }
    Ok(header)
}

/// Iterates over the records of an uncompressed batch body: (index, record bytes after the
/// length prefix). Errors when a length prefix is missing or runs past the batch.
fn for_each_record(
    mut records: &[u8],
    count: i32,
    mut f: impl FnMut(i32, &[u8]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    for i in 0..count {
        let (len, used) = read_varint(records).ok_or_else(|| {
            LogError::CorruptBatch(format!("record {i} of {count} has no valid length"))
        })?;
        let available = records.len() - used;
        if len < 0 || len as u64 > available as u64 {
            return Err(LogError::CorruptBatch(format!(
                "record {i} of {count} declares {len} bytes, {available} remain"
            )));
        }
        let end = used + len as usize;
        f(i, &records[used..end])?;
        records = &records[end..];
    }
    if !records.is_empty() {
        return Err(LogError::CorruptBatch(format!(
            "{} bytes follow the {count} records the batch declares",
            records.len()
        )));
    }
    Ok(())
}

/// A record's offset delta and key length (-1: null key), from its body.
fn record_offset_delta_and_key_len(body: &[u8]) -> Option<(i64, i64)> {
    // attributes (1 byte), timestamp delta, offset delta, key length.
    let mut at = 1;
    at += read_varint(body.get(at..)?)?.1;
    let (offset_delta, used) = read_varint(body.get(at..)?)?;
    at += used;
    let (key_len, _) = read_varint(body.get(at..)?)?;
    Some((offset_delta, key_len))
}

/// For uncompressed batches: the records' length prefixes must tile the batch exactly, number
/// `record_count`, and carry offset deltas 0..n-1 (rising within the batch's range once
/// compacted), as Kafka's validator insists, so nobody downstream trusts a lie.
fn check_record_framing(
    records: &[u8],
    header: &BatchHeader,
    origin: Origin,
) -> Result<(), LogError> {
    let mut previous = -1i64;
    for_each_record(records, header.record_count, |i, body| {
        let Some((delta, _)) = record_offset_delta_and_key_len(body) else {
            return Err(LogError::CorruptBatch(format!("record {i} does not parse")));
        };
        let fits = match origin {
            Origin::Producer => delta == i as i64,
            Origin::Stored => delta > previous && delta <= header.last_offset_delta as i64,
        };
        if !fits {
            return Err(LogError::CorruptBatch(format!(
                "record {i} carries offset delta {delta}"
            )));
        }
        previous = delta;
        Ok(())
    })
}

/// The indices within the (validated) batch at the start of `buf` of its records with a null
/// key, in order: a compacted topic refuses those, as Kafka does, and names them to the producer
/// (ProduceResponse `record_errors`, KIP-467).
pub fn null_key_indices(buf: &[u8], header: &BatchHeader) -> Result<Vec<usize>, LogError> {
    if header.is_control() {
        return Ok(Vec::new());
    }
    if header.compression_codec() != 0 {
        let mut bytes = bytes::Bytes::copy_from_slice(&buf[..header.size]);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
            .map_err(|e| LogError::CorruptBatch(e.to_string()))?;
        return Ok(set
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.key.is_none())
            .map(|(i, _)| i)
            .collect());
    }
    let mut null_keys = Vec::new();
    for_each_record(
        &buf[HEADER_LEN..header.size],
        header.record_count,
        |i, body| {
            let (_, key_len) = record_offset_delta_and_key_len(body)
                .ok_or_else(|| LogError::CorruptBatch("record fields do not parse".into()))?;
            if key_len < 0 {
                null_keys.push(i as usize);
            }
            Ok(())
        },
    )?;
    Ok(null_keys)
}

/// A transaction marker's kind (the control record key's type field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

/// Bytes of a control batch [`control_type`] needs: the header and the start of its one record.
pub const CONTROL_PREFIX_LEN: usize = HEADER_LEN + 32;

/// The marker kind of a control batch, from its first bytes (at least the header and the
/// first record's key; control batches are never compressed). `None` when the batch is no
/// marker Kafka defines (an unknown control type is skipped by readers, as in Kafka).
pub fn control_type(buf: &[u8]) -> Option<ControlType> {
    let body = buf.get(HEADER_LEN..)?;
    let (_len, used) = read_varint(body)?;
    let record = body.get(used..)?;
    // attributes, timestamp delta, offset delta, key length, key (version i16, type i16).
    let mut at = 1;
    at += read_varint(record.get(at..)?)?.1;
    at += read_varint(record.get(at..)?)?.1;
    let (key_len, used) = read_varint(record.get(at..)?)?;
    at += used;
    if key_len < 4 {
        return None;
    }
    let key = record.get(at..at + 4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(ControlType::Abort),
        1 => Some(ControlType::Commit),
        _ => None,
    }
}

/// A transaction marker batch as Kafka writes it: one control record whose key is (version 0,
/// type) and whose value is (version 0, coordinator epoch). The base offset is set on append.
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    kind: ControlType,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let kind_code: i16 = match kind {
        ControlType::Abort => 0,
        ControlType::Commit => 1,
    };
    let mut record = vec![0u8]; // attributes
    record.extend_from_slice(&[0, 0]); // timestamp delta 0, offset delta 0 (zigzag)
    record.push(8); // key length 4 (zigzag)
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&kind_code.to_be_bytes());
    record.push(12); // value length 6 (zigzag)
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&coordinator_epoch.to_be_bytes());
    record.push(0); // no headers
    let mut buf = Vec::with_capacity(HEADER_LEN + 1 + record.len());
    buf.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let length = (HEADER_LEN - LOG_OVERHEAD + 1 + record.len()) as i32;
    buf.extend_from_slice(&length.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    buf.push(2); // magic
    buf.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    buf.extend_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    buf.extend_from_slice(&timestamp.to_be_bytes());
    buf.extend_from_slice(&timestamp.to_be_bytes());
    buf.extend_from_slice(&producer_id.to_be_bytes());
    buf.extend_from_slice(&producer_epoch.to_be_bytes());
    buf.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    buf.extend_from_slice(&1i32.to_be_bytes()); // record count
    buf.push((record.len() as u8) << 1); // record length (zigzag; always < 64)
    buf.extend_from_slice(&record);
    let crc = crc32c(&buf[OFF_ATTRIBUTES..]);
    buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    buf
}

/// A zigzag varint (as record lengths are written): (value, bytes used).
fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, b) in buf.iter().take(10).enumerate() {
        raw |= ((b & 0x7F) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

/// Iterates over the batches of a buffer that holds whole batches, validating each.
pub fn validate_all(buf: &[u8]) -> Result<Vec<BatchHeader>, LogError> {
    validate_all_as(buf, Body::Check)
}

/// [`validate_all`] but for the batches' bodies (CRC, record framing), which the caller must
/// check with [`check_body`]. The log checks them on its copy of the bytes right after making
/// it, while they are in the CPU's cache: one pass over memory instead of two.
pub fn validate_all_but_body(buf: &[u8]) -> Result<Vec<BatchHeader>, LogError> {
    validate_all_as(buf, Body::Later)
}

fn validate_all_as(mut buf: &[u8], body: Body) -> Result<Vec<BatchHeader>, LogError> {
    let mut headers = Vec::new();
    if buf.is_empty() {
        return Err(LogError::CorruptBatch("no record batch".into()));
    }
    while !buf.is_empty() {
        let header = validate_as(buf, Origin::Producer, body)?;
        buf = &buf[header.size..];
        headers.push(header);
    }
    Ok(headers)
}

/// Sets the base offset of the batch at the start of `buf` (outside the CRC).
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `now_ms` as its max timestamp, and rewrites the CRC.
pub fn set_log_append_time(buf: &mut [u8], size: usize, now_ms: i64) {
    let attributes = i16::from_be_bytes(arr(buf, OFF_ATTRIBUTES)) | ATTR_TIMESTAMP_TYPE;
    buf[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    buf[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c(&buf[OFF_ATTRIBUTES..size]);
    buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Scans `buf` for whole batches from its start and returns the length of the prefix made of
/// whole batches (no CRC check: used on data the log itself wrote and already validated).
pub fn whole_batches_len(buf: &[u8]) -> usize {
    let mut pos = 0;
    while buf.len() - pos >= LOG_OVERHEAD {
        let length = i32_at(buf, pos + OFF_LENGTH);
        if length <= 0 {
            break;
        }
        let size = length as usize + LOG_OVERHEAD;
        if pos + size > buf.len() {
            break;
        }
        pos += size;
    }
    pos
}

fn arr<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(arr(buf, at))
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(arr(buf, at))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a valid v2 batch of `count` keyless records with about `payload` value bytes in
    /// all, each record encoded as Kafka writes it.
    pub fn make_batch(count: i32, base_ts: i64, payload: usize) -> Vec<u8> {
        fn zigzag(buf: &mut Vec<u8>, v: i64) {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            while z >= 0x80 {
                buf.push((z as u8 & 0x7F) | 0x80);
                z >>= 7;
            }
            buf.push(z as u8);
        }
        let mut buf = vec![0u8; HEADER_LEN];
        let value_len = payload / count.max(1) as usize;
        for i in 0..count as i64 {
            // attributes, timestamp delta, offset delta, null key, value, no headers
            let mut body = vec![0u8];
            zigzag(&mut body, i);
            zigzag(&mut body, i);
            zigzag(&mut body, -1);
            zigzag(&mut body, value_len as i64);
            body.extend((0..value_len).map(|j| (j % 251) as u8));
            zigzag(&mut body, 0);
            zigzag(&mut buf, body.len() as i64);
            buf.extend_from_slice(&body);
        }
        let len = (buf.len() - LOG_OVERHEAD) as i32;
        buf[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        buf[OFF_MAGIC] = 2;
        buf[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(count - 1).to_be_bytes());
        buf[OFF_BASE_TIMESTAMP..OFF_BASE_TIMESTAMP + 8].copy_from_slice(&base_ts.to_be_bytes());
        let max_ts = base_ts + count as i64 - 1;
        buf[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&max_ts.to_be_bytes());
        buf[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&(-1i64).to_be_bytes());
        buf[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2].copy_from_slice(&(-1i16).to_be_bytes());
        buf[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
        buf[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c(&buf[OFF_ATTRIBUTES..]);
        buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        buf
    }

    fn recrc(batch: &mut [u8]) {
        let crc = crc32c(&batch[OFF_ATTRIBUTES..]);
        batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }

    fn set_count(batch: &mut [u8], count: i32) {
        batch[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
        batch[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(count - 1).to_be_bytes());
        recrc(batch);
    }

    #[test]
    fn record_count_and_offsets_must_match_the_records() {
        let mut batch = make_batch(3, 0, 30);
        set_count(&mut batch, 4);
        assert!(
            matches!(validate(&batch), Err(LogError::CorruptBatch(m)) if m.contains("record 3 of 4"))
        );
        set_count(&mut batch, 2);
        assert!(matches!(validate(&batch), Err(LogError::CorruptBatch(m)) if m.contains("follow")));
        // A last offset delta that claims more offsets than records.
        let mut batch = make_batch(3, 0, 30);
        batch[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        recrc(&mut batch);
        assert!(
            matches!(validate(&batch), Err(LogError::CorruptBatch(m)) if m.contains("offset delta"))
        );
        // A record whose own offset delta is not its index.
        let mut batch = make_batch(1, 0, 10);
        batch[HEADER_LEN + 3] = 2 << 1; // length, attributes, timestamp delta, then offset delta
        recrc(&mut batch);
        assert!(
            matches!(validate(&batch), Err(LogError::CorruptBatch(m)) if m.contains("offset delta 2"))
        );
    }

    #[test]
    fn an_absurd_record_length_is_an_error_not_a_panic() {
        let mut batch = make_batch(1, 0, 0);
        batch.truncate(HEADER_LEN);
        // zigzag(i64::MAX - 1): a length no batch can hold
        batch.extend_from_slice(&[0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        let len = (batch.len() - LOG_OVERHEAD) as i32;
        batch[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        recrc(&mut batch);
        assert!(matches!(validate(&batch), Err(LogError::CorruptBatch(_))));
    }

    #[test]
    fn valid_batch_round_trips_header_fields() {
        let batch = make_batch(5, 1000, 100);
        let h = validate(&batch).unwrap();
        assert_eq!(h.size, batch.len());
        assert_eq!(h.record_count, 5);
        assert_eq!(h.last_offset_delta, 4);
        assert_eq!(h.max_timestamp, 1004);
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut batch = make_batch(3, 0, 50);
        batch[HEADER_LEN + 7] ^= 0x40;
        assert!(matches!(validate(&batch), Err(LogError::CorruptBatch(m)) if m.contains("CRC")));
    }

    #[test]
    fn truncated_and_wrong_magic_are_rejected() {
        let batch = make_batch(3, 0, 50);
        assert!(validate(&batch[..batch.len() - 1]).is_err());
        assert!(validate(&batch[..20]).is_err());
        let mut bad = batch.clone();
        bad[OFF_MAGIC] = 1;
        assert!(matches!(validate(&bad), Err(LogError::UnsupportedMagic(1))));
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let mut batch = make_batch(2, 10, 20);
        let size = batch.len();
        set_log_append_time(&mut batch, size, 99_999);
        let h = validate(&batch).unwrap();
        assert_eq!(h.max_timestamp, 99_999);
        assert_ne!(h.attributes & ATTR_TIMESTAMP_TYPE, 0);
    }

    #[test]
    fn a_marker_batch_is_valid_and_says_its_kind() {
        for kind in [ControlType::Commit, ControlType::Abort] {
            let batch = marker_batch(42, 7, kind, 3, 1_700_000_000_000);
            let header = validate_stored(&batch).expect("valid");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 7));
            assert_eq!(header.record_count, 1);
            assert_eq!(control_type(&batch), Some(kind));
            // kafka-protocol, a decoder Kappa did not write, reads the same marker.
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes::Bytes::from(
                batch.clone(),
            ))
            .expect("decodes");
            let record = &set.records[0];
            assert!(record.control && record.transactional);
            let key = record.key.as_ref().expect("key");
            let code = if kind == ControlType::Commit { 1 } else { 0 };
            assert_eq!(&key[..], &[0, 0, 0, code]);
            assert_eq!(
                &record.value.as_ref().expect("value")[..],
                &[0, 0, 0, 0, 0, 3]
            );
        }
        assert_eq!(control_type(&[0u8; 10]), None);
    }
}
