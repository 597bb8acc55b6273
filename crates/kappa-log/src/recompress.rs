//! Topic-level `compression.type`: batches a producer compressed with another codec (or not
//! at all) are re-encoded with the topic's, record for record, keeping their producer id,
//! epoch, sequence numbers, transactional flag and timestamps, as Kafka's broker does.
//! Control batches (transaction markers) are never compressed.

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use crate::batch::{self, BatchHeader};
use crate::{LogError, Result};

fn codec_of(header: &BatchHeader) -> Compression {
    match header.compression_codec() {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// `records` with every batch in `target`'s codec; `None` when all already are (nothing to
/// copy). Batches are checked (CRC, framing) before they are decoded.
pub(crate) fn recompress(records: &[u8], target: Compression) -> Result<Option<Vec<u8>>> {
    let headers = batch::validate_all(records)?;
    if headers
        .iter()
        .all(|h| h.is_control() || codec_of(h) == target)
    {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(records.len());
    let mut at = 0;
    for h in &headers {
        let bytes = &records[at..at + h.size];
        at += h.size;
        if h.is_control() || codec_of(h) == target {
            out.extend_from_slice(bytes);
            continue;
        }
        let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(bytes))
            .map_err(|e| LogError::CorruptBatch(e.to_string()))?;
        let encoded = crate::records::encode_batch(&set.records, target)?;
        let reencoded = batch::validate_all(&encoded)?;
        if reencoded.len() != 1 || reencoded[0].record_count != h.record_count {
            return Err(LogError::CorruptBatch(format!(
                "re-encoding a batch of {} records for compression.type gave {} batches",
                h.record_count,
                reencoded.len()
            )));
        }
        out.extend_from_slice(&encoded);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::{Record, TimestampType};

    use super::*;

    fn batch(compression: Compression, n: i32) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 42,
                producer_epoch: 3,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: 7 + i,
                timestamp: 1_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from("v".repeat(100))),
                headers: Default::default(),
            })
            .collect();
        crate::records::encode_batch(&records, compression)
            .expect("encodes")
            .to_vec()
    }

    #[test]
    fn batches_take_the_topics_codec_and_keep_their_producer_fields() {
        let mut input = batch(Compression::None, 20);
        input.extend(batch(Compression::Snappy, 5));
        let out = recompress(&input, Compression::Gzip)
            .expect("recompresses")
            .expect("changed");
        let headers = batch::validate_all(&out).expect("valid");
        assert_eq!(headers.len(), 2);
        for (h, n) in headers.iter().zip([20, 5]) {
            assert_eq!(codec_of(h), Compression::Gzip);
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, 7)
            );
            assert!(h.is_transactional());
            assert_eq!(h.record_count, n);
            assert_eq!(h.base_timestamp, 1_000);
        }
        assert!(out.len() < input.len(), "gzip shrinks repeated values");
        let back = RecordBatchDecoder::decode(&mut Bytes::from(out[..headers[0].size].to_vec()))
            .expect("decodes");
        assert_eq!(back.records.len(), 20);
        assert_eq!(back.records[19].key.as_deref(), Some(b"k19".as_slice()));
        // Already in the codec: nothing to do.
        assert!(recompress(&batch(Compression::Gzip, 3), Compression::Gzip)
            .expect("ok")
            .is_none());
        // A corrupt batch is refused before anything is decoded.
        let mut bad = batch(Compression::None, 3);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(recompress(&bad, Compression::Zstd).is_err());
    }
}
