//! Building record batches the broker writes itself (internal topics) and tests write:
//! plain records with a key, a value and a timestamp, encoded as one RecordBatch v2.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::LogError;

/// A record outside any producer session (no producer id, no sequence).
pub fn plain_record(
    offset: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp,
        key,
        value,
        headers: IndexMap::new(),
    }
}

/// Encodes records as one v2 batch with the given compression.
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<BytesMut, LogError> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| LogError::CorruptBatch(e.to_string()))?;
    Ok(buf)
}
