//! Behaviour of the partition log as the broker relies on it.

use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::batch::tests::make_batch;
use crate::batch::{self, BatchHeader};
use crate::{Log, LogConfig, LogError, TimestampType};

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

/// Appends `n` batches with random sizes; returns each batch's (base, last, max_ts).
fn fill(log: &Log, n: usize, seed: u64) -> Vec<(i64, i64, i64)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut ts = 1_000_000;
    for _ in 0..n {
        let count = rng.random_range(1..20);
        ts += rng.random_range(0..50);
        let b = make_batch(count, ts, rng.random_range(0..600));
        let info = log.append(&b, ts).unwrap();
        out.push((info.base_offset, info.last_offset, ts + count as i64 - 1));
    }
    out
}

fn batches_in(bytes: &[u8]) -> Vec<BatchHeader> {
    batch::validate_all(bytes).unwrap()
}

#[test]
fn append_assigns_consecutive_offsets_and_reads_back_at_random_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let written = fill(&log, 400, 1);
    assert!(
        log.segment_count() > 3,
        "small segment.bytes must have rolled"
    );
    for w in written.windows(2) {
        assert_eq!(w[1].0, w[0].1 + 1);
    }
    let end = log.end_offset();
    assert_eq!(end, written.last().unwrap().1 + 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..500 {
        let offset = rng.random_range(0..end);
        let max = rng.random_range(1..5000);
        let read = log.read(offset, max, true).unwrap();
        let headers = batches_in(&read.bytes);
        let first = headers[0];
        assert!(
            first.base_offset <= offset && offset <= first.last_offset(),
            "offset {offset} not in first batch {first:?}"
        );
        assert!(read.bytes.len() <= max || headers.len() == 1);
        // The slices a fetch sends are those batches exactly, and as many as fit.
        let slices = log.read_slices(offset, max, true).unwrap();
        assert_eq!(slices.read_to_vec().unwrap(), read.bytes);
        let last = headers[headers.len() - 1];
        assert_eq!(slices.next_offset, last.last_offset() + 1);
        if slices.next_offset < end {
            let following = log.read(slices.next_offset, 1, true).unwrap();
            assert!(
                read.bytes.len() + following.bytes.len() > max,
                "a read of {max} bytes at {offset} stopped early at {}",
                slices.next_offset
            );
        }
        let strict = log.read_slices(offset, max, false).unwrap();
        if (first.size) > max {
            assert!(strict.slices.is_empty() && strict.next_offset == offset);
        } else {
            assert_eq!(strict.read_to_vec().unwrap(), read.bytes);
        }
        for pair in headers.windows(2) {
            assert_eq!(
                pair[1].base_offset,
                pair[0].last_offset() + 1,
                "reads span segments contiguously"
            );
        }
    }
    // Reading everything returns every batch exactly once, in order.
    let all = log.read(0, usize::MAX / 2, true).unwrap();
    let headers = batches_in(&all.bytes);
    assert_eq!(headers.len(), written.len());
    assert_eq!(log.read(end, 1000, true).unwrap().bytes.len(), 0);
    assert!(matches!(
        log.read(end + 1, 1000, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn timestamp_lookup_finds_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let written = fill(&log, 300, 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let last_ts = written.last().unwrap().2;
    for _ in 0..400 {
        let ts = rng.random_range(999_000..last_ts + 100);
        let expected = written.iter().find(|w| w.2 >= ts).map(|w| w.0);
        let found = log
            .find_batch_by_time(ts)
            .unwrap()
            .map(|(h, _)| h.base_offset);
        assert_eq!(found, expected, "lookup of {ts}");
    }
}

#[test]
fn oversized_and_corrupt_batches_leave_the_log_untouched() {
    for timestamp_type in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
        for direct_writes in [false, true] {
            let config = LogConfig {
                max_message_bytes: 1000,
                timestamp_type,
                direct_writes,
                ..small_config()
            };
            corrupt_batches_leave_the_log_untouched(config);
        }
    }
}

fn corrupt_batches_leave_the_log_untouched(config: LogConfig) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config, 0).unwrap();
    let first = make_batch(1, 0, 10);
    log.append(&first, 0).unwrap();
    let big = make_batch(1, 0, 2000);
    assert!(matches!(
        log.append(&big, 0),
        Err(LogError::MessageTooLarge { .. })
    ));
    let mut bad = make_batch(2, 0, 100);
    bad[80] ^= 1;
    // A valid batch followed by a corrupt one: neither is written. (The log checks CRCs on its
    // own copy of the bytes, and must drop that copy.)
    let mut two = make_batch(1, 0, 10);
    two.extend_from_slice(&bad);
    assert!(matches!(
        log.append_deferred(&two, 0),
        Err(LogError::CorruptBatch(e)) if e.contains("CRC")
    ));
    assert!(log.append(&[1, 2, 3], 0).is_err());
    assert_eq!(log.end_offset(), 1);
    assert_eq!(log.size_bytes(), first.len() as u64);
    // The next append lands right after the first batch, and the file holds exactly the two.
    let next = make_batch(3, 5, 300);
    let info = log.append(&next, 5).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (1, 3));
    let all = log.read(0, 1 << 20, true).unwrap();
    let headers = batches_in(&all.bytes);
    assert_eq!(headers.len(), 2);
    assert_eq!(all.bytes.len(), first.len() + next.len());
    // Past base offset and length, and but for what LogAppendTime rewrites (attributes, max
    // timestamp and so the CRC), the stored batches are what was sent.
    let tail = |b: &[u8]| b[43..].to_vec();
    assert_eq!(tail(&all.bytes[..first.len()]), tail(&first));
    assert_eq!(tail(&all.bytes[first.len()..]), tail(&next));
    log.close().unwrap();
    assert_segment_files_hold_whole_batches(dir.path());
    let reopened = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(reopened.end_offset(), 4);
}

#[test]
fn the_crc_matches_the_reference_implementation() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for len in (0..300).chain([4095, 4096, 4097, 65_536, 1 << 20]) {
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        assert_eq!(batch::crc32c(&data), crc32c::crc32c(&data), "length {len}");
    }
    assert_eq!(batch::crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1000,
        ..small_config()
    };
    let log = Log::open(dir.path(), config, 0).unwrap();
    log.append(&make_batch(1, 0, 10), 0).unwrap();
    log.append(&make_batch(1, 0, 10), 500).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&make_batch(1, 0, 10), 1500).unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn retention_by_size_and_time_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let written = fill(&log, 300, 4);
    let segments = log.segment_count();
    let size = log.size_bytes();
    log.set_config(LogConfig {
        retention_bytes: (size / 2) as i64,
        ..small_config()
    });
    let deleted = log.enforce_retention(0).unwrap();
    assert!(deleted > 0 && deleted < segments);
    assert!(log.size_bytes() <= size / 2 + 16 * 1024);
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        log.read(start - 1, 100, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let first = batches_in(&log.read(start, 100, true).unwrap().bytes)[0];
    assert_eq!(first.base_offset, start);

    // Time: everything older than retention.ms goes except the active segment.
    let last_ts = written.last().unwrap().2;
    log.set_config(LogConfig {
        retention_ms: 10,
        ..small_config()
    });
    log.enforce_retention(last_ts + 1_000_000).unwrap();
    assert_eq!(log.segment_count(), 1);
    // The start offset survives a restart.
    let start = log.log_start_offset();
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.log_start_offset(), start);
}

#[test]
fn delete_records_moves_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    fill(&log, 200, 5);
    let before = log.segment_count();
    assert_eq!(log.delete_records_before(500).unwrap(), 500);
    assert!(log.segment_count() < before);
    assert!(log.read(499, 10, true).is_err());
    let h = batches_in(&log.read(500, 10, true).unwrap().bytes)[0];
    assert!(h.base_offset <= 500 && h.last_offset() >= 500);
    assert!(log.delete_records_before(log.end_offset() + 1).is_err());
}

fn last_segment_file(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

fn direct_config() -> LogConfig {
    LogConfig {
        direct_writes: true,
        ..small_config()
    }
}

#[test]
fn recovery_cuts_a_torn_tail_at_every_byte_of_the_last_batch() {
    recovery_cuts_a_torn_tail(small_config());
}

#[test]
fn recovery_cuts_a_torn_tail_after_direct_writes() {
    recovery_cuts_a_torn_tail(direct_config());
}

fn recovery_cuts_a_torn_tail(config: LogConfig) {
    let small_config = || config.clone();
    let template = tempfile::tempdir().unwrap();
    let (end_before_last, last_len) = {
        let log = Log::open(template.path(), small_config(), 0).unwrap();
        fill(&log, 30, 6);
        let before = log.end_offset();
        let last = make_batch(7, 5_000_000, 300);
        log.append(&last, 0).unwrap();
        log.flush_to(log.end_offset()).unwrap();
        (before, last.len())
        // dropped without close(): an unclean shutdown
    };
    let file = last_segment_file(template.path());
    let copy_template = || {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(template.path()).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        dir
    };
    // As the crash left it, the file may end in a direct append's zero padding: recovery
    // keeps every batch and trims only the padding.
    let full_len = {
        let dir = copy_template();
        let log = Log::open(dir.path(), small_config(), 0).unwrap();
        assert_eq!(log.end_offset(), end_before_last + 7);
        log.close().unwrap();
        std::fs::metadata(dir.path().join(file.file_name().unwrap()))
            .unwrap()
            .len()
    };
    let crashed_len = std::fs::metadata(&file).unwrap().len();
    if config.direct_writes && crate::direct::open(&file).unwrap().is_some() {
        assert!(
            crashed_len > full_len,
            "direct writes leave padding after the last batch"
        );
    } else {
        assert_eq!(crashed_len, full_len);
    }
    for cut in 1..=last_len as u64 {
        let dir = copy_template();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(file.file_name().unwrap()))
            .unwrap();
        f.set_len(full_len - cut).unwrap();
        let log = Log::open(dir.path(), small_config(), 0).unwrap();
        assert_eq!(log.end_offset(), end_before_last, "cut {cut}");
        // The log takes appends again where it was cut, and they read back.
        let info = log.append(&make_batch(2, 0, 10), 0).unwrap();
        assert_eq!(info.base_offset, end_before_last);
        let h = batches_in(&log.read(end_before_last, 1000, true).unwrap().bytes);
        assert_eq!(h.len(), 1);
    }
}

#[test]
fn recovery_cuts_from_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (offsets, sizes) = {
        let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
        let mut offsets = Vec::new();
        let mut sizes = Vec::new();
        for i in 0..10 {
            let b = make_batch(3, i, 200);
            sizes.push(b.len());
            offsets.push(log.append(&b, 0).unwrap().base_offset);
        }
        (offsets, sizes)
    };
    let file = last_segment_file(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    let sixth: usize = sizes[..6].iter().sum();
    bytes[sixth + 100] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(log.end_offset(), offsets[6]);
    assert_eq!(log.size_bytes(), sixth as u64);
}

#[test]
fn clean_reopen_keeps_state_and_rebuilds_missing_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let log = Log::open(dir.path(), small_config(), 0).unwrap();
        let w = fill(&log, 200, 8);
        log.close().unwrap();
        w
    };
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().ends_with("0.index") {
            std::fs::remove_file(p).unwrap();
            break;
        }
    }
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.end_offset(), written.last().unwrap().1 + 1);
    for w in written.iter().step_by(7) {
        let h = batches_in(&log.read(w.0, 10, true).unwrap().bytes)[0];
        assert_eq!((h.base_offset, h.last_offset()), (w.0, w.1));
        let t = log.find_batch_by_time(w.2).unwrap().unwrap().0;
        assert!(t.max_timestamp >= w.2 && t.base_offset <= w.0);
    }
}

#[test]
fn concurrent_appenders_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(dir.path(), small_config(), 0).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let info = log.append(&make_batch(2, 0, 100), 0).unwrap();
                    log.flush_to(info.last_offset + 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.end_offset(), 800);
    let all = log.read(0, usize::MAX / 2, true).unwrap();
    assert_eq!(batches_in(&all.bytes).len(), 400);
}

/// A batch from idempotent producer `pid` with the given epoch and first sequence.
fn producer_batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Vec<u8> {
    let mut b = make_batch(count, 0, 20 * count as usize);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn idempotent_retries_are_deduplicated_and_gaps_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let first = log.append(&producer_batch(7, 0, 0, 3), 0).unwrap();
    let second = log.append(&producer_batch(7, 0, 3, 2), 0).unwrap();
    assert_eq!((second.base_offset, second.last_offset), (3, 4));
    // A retry of either remembered batch gets the original offsets and writes nothing.
    let retry = log.append(&producer_batch(7, 0, 0, 3), 0).unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (first.base_offset, first.last_offset)
    );
    assert_eq!(log.end_offset(), 5);
    // A gap, an old epoch, and an unknown producer that does not start at 0.
    assert!(matches!(
        log.append(&producer_batch(7, 0, 9, 1), 0),
        Err(LogError::OutOfOrderSequence {
            expected: 5,
            got: 9,
            ..
        })
    ));
    log.append(&producer_batch(7, 1, 0, 1), 0).unwrap();
    assert!(matches!(
        log.append(&producer_batch(7, 0, 5, 1), 0),
        Err(LogError::InvalidProducerEpoch { .. })
    ));
    assert!(matches!(
        log.append(&producer_batch(8, 0, 4, 1), 0),
        Err(LogError::UnknownProducerId(8))
    ));
    assert_eq!(log.end_offset(), 6);
    // Only the last five batches are remembered, as in Kafka.
    for seq in 1..7 {
        log.append(&producer_batch(7, 1, seq, 1), 0).unwrap();
    }
    assert!(log.append(&producer_batch(7, 1, 1, 1), 0).is_err());
    assert!(
        log.append(&producer_batch(7, 1, 2, 1), 0)
            .unwrap()
            .duplicate
    );
    // A corrupt copy of a remembered batch is refused, not taken for a retry.
    let mut corrupt_retry = producer_batch(7, 1, 2, 1);
    let last = corrupt_retry.len() - 1;
    corrupt_retry[last] ^= 1;
    assert!(matches!(
        log.append(&corrupt_retry, 0),
        Err(LogError::CorruptBatch(_))
    ));
}

#[test]
fn producer_state_survives_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_config(), 0).unwrap();
        for seq in 0..50 {
            log.append(&producer_batch(3, 2, seq * 4, 4), 0).unwrap();
        }
        log.close().unwrap();
    }
    {
        let log = Log::open(dir.path(), small_config(), 0).unwrap();
        assert!(
            log.append(&producer_batch(3, 2, 196, 4), 0)
                .unwrap()
                .duplicate
        );
        for seq in 50..400 {
            log.append(&producer_batch(3, 2, seq * 4, 4), 0).unwrap();
        }
        assert!(log.segment_count() > 2, "rolls wrote snapshots");
        // dropped without close: the state is rebuilt from the last snapshot plus the log
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        assert!(!p.to_string_lossy().ends_with(".clean-shutdown"));
    }
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let dup = log.append(&producer_batch(3, 2, 399 * 4, 4), 0).unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.last_offset, log.end_offset() - 1);
    assert!(matches!(
        log.append(&producer_batch(3, 2, 401 * 4, 4), 0),
        Err(LogError::OutOfOrderSequence { .. })
    ));
    log.append(&producer_batch(3, 2, 400 * 4, 4), 0).unwrap();
}

mod compaction {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    fn keyed(key: &str, value: Option<&str>, ts: i64, compression: Compression) -> Vec<u8> {
        let record = crate::records::plain_record(
            0,
            ts,
            Some(Bytes::copy_from_slice(key.as_bytes())),
            value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        );
        crate::records::encode_batch(&[record], compression)
            .unwrap()
            .to_vec()
    }

    fn compact_config(delete_retention_ms: i64) -> LogConfig {
        LogConfig {
            segment_bytes: 2048,
            cleanup_policy: crate::CleanupPolicy::Compact,
            delete_retention_ms,
            ..LogConfig::default()
        }
    }

    /// Every record from the start: (offset, key, value).
    fn read_records(log: &Log) -> Vec<(i64, String, Option<String>)> {
        let bytes = log
            .read(log.log_start_offset(), usize::MAX / 2, true)
            .unwrap()
            .bytes;
        let mut buf = Bytes::from(bytes);
        let mut out = Vec::new();
        while !buf.is_empty() {
            for r in RecordBatchDecoder::decode(&mut buf).unwrap().records {
                let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                out.push((
                    r.offset,
                    key,
                    r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                ));
            }
        }
        out
    }

    fn write_updates(log: &Log) -> (Vec<(i64, String, Option<String>)>, i64) {
        let mut written = Vec::new();
        for i in 0..600 {
            let key = format!("k{}", i % 13);
            // Every 7th write of a key deletes it; codecs vary by batch.
            let value = if i % 91 == 90 {
                None
            } else {
                Some(format!("v{i}"))
            };
            let compression = [Compression::None, Compression::Gzip, Compression::Lz4][i % 3];
            let info = log
                .append(
                    &keyed(&key, value.as_deref(), 1_000 + i as i64, compression),
                    0,
                )
                .unwrap();
            written.push((info.base_offset, key, value));
        }
        (written, log.end_offset())
    }

    #[test]
    fn keeps_the_latest_value_per_key_with_offsets_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), compact_config(i64::MAX / 4), 0).unwrap();
        let (written, end) = write_updates(&log);
        let before = log.size_bytes();
        let stats = log.clean(10_000).unwrap();
        assert!(stats.segments_rewritten > 0 && stats.records_removed > 0);
        assert!(log.size_bytes() < before / 3);
        assert_eq!(log.end_offset(), end);
        let got = read_records(&log);
        // Every surviving record is exactly what was written at that offset.
        for (offset, key, value) in &got {
            assert_eq!(
                &written[*offset as usize],
                &(*offset, key.clone(), value.clone())
            );
        }
        // The latest value of every key is there (tombstones kept within delete.retention.ms).
        let mut latest = std::collections::HashMap::new();
        for w in &written {
            latest.insert(w.1.clone(), w.0);
        }
        for (key, offset) in &latest {
            assert!(
                got.iter().any(|g| g.0 == *offset && &g.1 == key),
                "latest of {key} missing"
            );
        }
        // Within closed segments no key appears twice.
        let active_base = log.lock_state().active_base();
        let mut seen = std::collections::HashSet::new();
        for g in got.iter().filter(|g| g.0 < active_base) {
            assert!(seen.insert(g.1.clone()), "{} kept twice", g.1);
        }
        // Offsets still look up: reading at a removed offset starts at the next kept one.
        let first_kept = got[0].0;
        assert!(log.read(first_kept, 100, true).is_ok());
        // Nothing new to clean until the active segment rolls.
        assert_eq!(log.clean(10_000).unwrap(), crate::CleanStats::default());
    }

    #[test]
    fn batches_thinned_by_compaction_survive_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |key: &str, value: &str| {
            crate::records::plain_record(
                0,
                5,
                Some(Bytes::copy_from_slice(key.as_bytes())),
                Some(Bytes::copy_from_slice(value.as_bytes())),
            )
        };
        let (end, expected) = {
            let log = Log::open(dir.path(), compact_config(i64::MAX / 4), 0).unwrap();
            for i in 0..60 {
                // b, a, c in one batch: a is overwritten by the next batch, so compaction keeps
                // b and c, offsets 0 and 2 of a 2-record batch.
                let mut records = vec![
                    rec(&format!("b{i}"), "b"),
                    rec("a", &format!("a{i}")),
                    rec(&format!("c{i}"), "c"),
                ];
                for (o, r) in records.iter_mut().enumerate() {
                    r.offset = o as i64;
                }
                let compression = [Compression::None, Compression::Gzip, Compression::Lz4][i % 3];
                log.append(
                    &crate::records::encode_batch(&records, compression).unwrap(),
                    0,
                )
                .unwrap();
            }
            let stats = log.clean(10_000).unwrap();
            assert!(stats.records_removed > 0);
            (log.end_offset(), read_records(&log))
            // dropped without close: the next open recovers the active segment
        };
        // Make every segment go through recovery: remove the indexes.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "index") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let log = Log::open(dir.path(), compact_config(i64::MAX / 4), 0).unwrap();
        assert_eq!(log.end_offset(), end);
        assert_eq!(read_records(&log), expected);
    }

    #[test]
    fn compacted_logs_name_the_records_without_a_key_and_write_none() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), compact_config(0), 0).unwrap();
        for compression in [Compression::None, Compression::Gzip] {
            // Records 0, 3 and 7 of ten have no key; the others are fine.
            let records: Vec<_> = (0..10)
                .map(|i| {
                    let key = (![0, 3, 7].contains(&i)).then(|| Bytes::from(format!("k{i}")));
                    let mut r =
                        crate::records::plain_record(i, 0, key, Some(Bytes::from_static(b"v")));
                    // One batch: offset - sequence constant, base sequence -1 (no producer).
                    r.sequence = i as i32 - 1;
                    r
                })
                .collect();
            let batch = crate::records::encode_batch(&records, compression).unwrap();
            match log.append(&batch, 0) {
                Err(LogError::InvalidRecords { indices, reason }) => {
                    assert_eq!(indices, vec![0, 3, 7]);
                    assert!(reason.contains("key"), "{reason}");
                }
                other => panic!("expected InvalidRecords, got {other:?}"),
            }
            // Kafka rejects the whole batch: nothing was written.
            assert_eq!(log.end_offset(), 0);
        }
    }

    #[test]
    fn compacted_logs_refuse_records_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), compact_config(0), 0).unwrap();
        for compression in [Compression::None, Compression::Gzip] {
            let keyless = crate::records::plain_record(0, 0, None, Some(Bytes::from_static(b"v")));
            let batch = crate::records::encode_batch(&[keyless], compression).unwrap();
            assert!(matches!(
                log.append(&batch, 0),
                Err(LogError::InvalidRecords { ref indices, .. }) if indices == &[0]
            ));
            log.append(&keyed("k", Some("v"), 0, compression), 0)
                .unwrap();
        }
        assert_eq!(log.end_offset(), 2);
        // The same batch is fine where nothing is compacted.
        let plain = Log::open(&dir.path().join("plain"), small_config(), 0).unwrap();
        let keyless = crate::records::plain_record(0, 0, None, Some(Bytes::from_static(b"v")));
        plain
            .append(
                &crate::records::encode_batch(&[keyless], Compression::None).unwrap(),
                0,
            )
            .unwrap();
    }

    #[test]
    fn tombstones_go_after_delete_retention() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), compact_config(100), 0).unwrap();
        let (written, _) = write_updates(&log);
        log.clean(1_000_000).unwrap();
        let got = read_records(&log);
        let active_base = log.lock_state().active_base();
        assert!(
            got.iter()
                .filter(|g| g.0 < active_base)
                .all(|g| g.2.is_some()),
            "an old tombstone survived"
        );
        assert!(
            written.iter().any(|w| w.2.is_none() && w.0 < active_base),
            "the test wrote tombstones"
        );
    }

    #[test]
    fn an_interrupted_clean_leaves_the_old_segments_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (written, end) = {
            let log = Log::open(dir.path(), compact_config(i64::MAX / 4), 0).unwrap();
            write_updates(&log)
        };
        // A crash after writing a cleaned file but before the swap...
        let first_log = last_segment_file(dir.path()).with_file_name(format!("{:020}.log", 0));
        std::fs::write(
            dir.path().join(format!("{:020}.log.cleaned", 0)),
            b"half written",
        )
        .unwrap();
        // ...and one after the old indexes were removed but before the rename.
        std::fs::remove_file(first_log.with_extension("index")).unwrap();
        let log = Log::open(dir.path(), compact_config(i64::MAX / 4), 0).unwrap();
        assert!(!dir.path().join(format!("{:020}.log.cleaned", 0)).exists());
        assert_eq!(log.end_offset(), end);
        let got = read_records(&log);
        assert_eq!(got.len(), written.len());
        // And a full pass still works afterwards.
        log.clean(10_000).unwrap();
        assert!(read_records(&log).len() < written.len());
    }

    /// Appends keyed updates until `segments` more segments have rolled.
    fn roll_more(log: &Log, segments: usize, ts: i64) {
        let target = log.segment_count() + segments;
        let mut i = 0;
        while log.segment_count() < target {
            log.append(
                &keyed(&format!("late{}", i % 3), Some("x"), ts, Compression::None),
                0,
            )
            .unwrap();
            i += 1;
        }
    }

    #[test]
    fn the_dirty_ratio_decides_when_a_pass_runs() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), compact_config(i64::MAX / 4), 0).unwrap();
        write_updates(&log);
        // Everything is dirty at first: a pass runs.
        assert!(log.clean(10_000).unwrap().segments_rewritten > 0);
        // One more closed segment is a small share of the cleanable bytes...
        roll_more(&log, 1, 2_000);
        log.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.9,
            ..compact_config(i64::MAX / 4)
        });
        assert_eq!(log.clean(10_000).unwrap(), crate::CleanStats::default());
        // ...enough with a lower min.cleanable.dirty.ratio.
        log.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..compact_config(i64::MAX / 4)
        });
        assert!(log.clean(10_000).unwrap().records_removed > 0);
        assert_eq!(log.clean(10_000).unwrap(), crate::CleanStats::default());
    }

    #[test]
    fn max_compaction_lag_forces_a_pass_and_a_roll() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), compact_config(i64::MAX / 4), 0).unwrap();
        write_updates(&log);
        log.clean(10_000).unwrap();
        roll_more(&log, 1, 2_000);
        let lagging = |max_compaction_lag_ms| LogConfig {
            min_cleanable_dirty_ratio: 1.0,
            max_compaction_lag_ms,
            ..compact_config(i64::MAX / 4)
        };
        log.set_config(lagging(i64::MAX));
        assert_eq!(log.clean(10_000).unwrap(), crate::CleanStats::default());
        // The dirty segment's records (timestamp 2000) are older than 5 s at 10 s.
        log.set_config(lagging(5_000));
        assert!(log.clean(10_000).unwrap().records_removed > 0);
        // The active segment of a compacted log rolls after max.compaction.lag.ms.
        let segments = log.segment_count();
        log.append(&keyed("a", Some("1"), 20_000, Compression::None), 20_000)
            .unwrap();
        log.append(&keyed("a", Some("2"), 22_000, Compression::None), 22_000)
            .unwrap();
        assert_eq!(log.segment_count(), segments + 1);
    }

    #[test]
    fn segments_younger_than_min_compaction_lag_are_not_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            min_compaction_lag_ms: 60_000,
            ..compact_config(i64::MAX / 4)
        };
        let log = Log::open(dir.path(), config, 0).unwrap();
        let (written, _) = write_updates(&log);
        // Timestamps are 1000 to 1600: at 30 s they are all younger than a minute.
        assert_eq!(log.clean(30_000).unwrap(), crate::CleanStats::default());
        assert_eq!(read_records(&log).len(), written.len());
        assert!(log.clean(100_000).unwrap().records_removed > 0);
    }
}

#[test]
fn a_torn_tail_despite_the_clean_marker_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let end = {
        let log = Log::open(dir.path(), small_config(), 0).unwrap();
        fill(&log, 50, 9);
        log.close().unwrap();
        log.end_offset()
    };
    // As after a power loss that kept the marker but not the last write's data.
    let file = last_segment_file(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0u8; 100]);
    std::fs::write(&file, &bytes).unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.end_offset(), end);
    assert_eq!(
        log.append(&make_batch(1, 0, 10), 0).unwrap().base_offset,
        end
    );
}

#[test]
fn timestamp_lookup_respects_the_log_start_inside_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    for i in 0..100 {
        log.append(&make_batch(1, 1_000 + i, 10), 0).unwrap();
    }
    log.delete_records_before(50).unwrap();
    // Offset 10 holds timestamp 1_010, but everything below 50 is gone: the answer is 50.
    let (header, _) = log.find_batch_by_time(1_010).unwrap().unwrap();
    assert_eq!(header.base_offset, 50);
    let (header, _) = log.find_batch_by_time(1_070).unwrap().unwrap();
    assert_eq!(header.base_offset, 70);
}

#[test]
fn max_timestamp_between_index_points_survives_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let config = LogConfig {
            index_interval_bytes: 150,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config, 0).unwrap();
        // Batches 0 and 2 get index entries; the highest timestamp sits in batch 1, between them.
        for ts in [1_000i64, 9_000, 2_000, 3_000] {
            log.append(&make_batch(1, ts, 10), 0).unwrap();
        }
        assert_eq!(log.max_timestamp(), Some(9_000));
        log.close().unwrap();
    }
    let log = Log::open(
        dir.path(),
        LogConfig {
            index_interval_bytes: 150,
            ..LogConfig::default()
        },
        0,
    )
    .unwrap();
    assert_eq!(log.max_timestamp(), Some(9_000));
    assert_eq!(
        log.find_batch_by_time(8_000)
            .unwrap()
            .unwrap()
            .0
            .base_offset,
        1
    );
}

/// Every `.log` file holds exactly whole batches: no padding left after the last one.
fn assert_segment_files_hold_whole_batches(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                batch::whole_batches_len(&bytes),
                bytes.len(),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn deferred_appends_are_seen_only_once_written_and_land_intact() {
    for config in [small_config(), direct_config()] {
        deferred_appends_land_intact(config);
    }
}

fn deferred_appends_land_intact(config: LogConfig) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config, 0).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    // Every batch appended, in order, as the log stamped it (base offset per batch).
    let mut expected: Vec<(i64, Vec<u8>)> = Vec::new();
    for round in 0..300 {
        // Sizes around the 4 KiB block, below and above it, so that writes start and end at
        // every kind of position inside a block.
        let payload = rng.random_range(0..9000);
        let batch = make_batch(rng.random_range(1..4), round, payload);
        let info = log.append_deferred(&batch, round).unwrap();
        expected.push((info.base_offset, batch));
        assert_eq!(log.end_offset(), info.last_offset + 1);
        if rng.random_range(0..3) == 0 {
            let hw_before = log.high_watermark();
            assert!(hw_before <= info.base_offset);
            // Nothing past the high watermark is readable yet.
            let read = log.read(hw_before, 1 << 20, true).unwrap();
            assert!(read.bytes.is_empty());
            assert_eq!(read.high_watermark, hw_before);
            assert_eq!(log.write_pending().unwrap(), log.end_offset());
        }
    }
    log.write_pending().unwrap();
    assert!(log.segment_count() > 10, "small segments must have rolled");
    let all = log.read(0, usize::MAX / 2, true).unwrap();
    let headers = batches_in(&all.bytes);
    assert_eq!(headers.len(), expected.len());
    let mut at = 0;
    for (header, (base, batch)) in headers.iter().zip(&expected) {
        assert_eq!(header.base_offset, *base);
        // Past the base offset (8 bytes) and length, a stored batch is what the producer sent.
        assert_eq!(&all.bytes[at + 8..at + header.size], &batch[8..]);
        at += header.size;
    }
    // Rolled segments were trimmed to their batches.
    log.close().unwrap();
    assert_segment_files_hold_whole_batches(dir.path());
}

#[test]
fn a_crash_keeps_written_appends_and_loses_only_unwritten_ones() {
    for direct_writes in [false, true] {
        a_crash_keeps_written_appends(direct_writes);
    }
}

fn a_crash_keeps_written_appends(direct_writes: bool) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 30,
        direct_writes,
        ..small_config()
    };
    let (written_end, lost) = {
        let log = Log::open(dir.path(), config.clone(), 0).unwrap();
        for i in 0..50 {
            log.append_deferred(&make_batch(3, i, 1000 + 97 * i as usize), i)
                .unwrap();
            if i % 7 == 0 {
                log.write_pending().unwrap();
            }
        }
        log.write_pending().unwrap();
        let written_end = log.end_offset();
        let lost = log.append_deferred(&make_batch(5, 0, 3000), 0).unwrap();
        assert_eq!(log.high_watermark(), written_end);
        // Dropped without close() or a write: the process died.
        (written_end, lost)
    };
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(log.end_offset(), written_end);
    assert_eq!(log.high_watermark(), written_end);
    // The offsets the lost batch had are given again, and everything before it reads back.
    let again = log.append(&make_batch(5, 0, 10), 0).unwrap();
    assert_eq!(again.base_offset, lost.base_offset);
    let all = log.read(0, usize::MAX / 2, true).unwrap();
    assert_eq!(batches_in(&all.bytes).len(), 51);
    log.close().unwrap();
    assert_segment_files_hold_whole_batches(dir.path());
}

#[test]
fn records_past_the_high_watermark_cannot_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    log.append(&make_batch(4, 0, 10), 0).unwrap();
    log.append_deferred(&make_batch(4, 0, 10), 0).unwrap();
    assert!(matches!(
        log.delete_records_before(6),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.write_pending().unwrap();
    assert_eq!(log.delete_records_before(6).unwrap(), 6);
}

/// Reads at random offsets and budgets return exactly the expected batches, wherever they
/// come from (segment files, the tail cache, or both in one read).
fn check_random_reads(log: &Log, expected: &[(i64, Vec<u8>)], rng: &mut rand::rngs::StdRng) {
    let hw = log.high_watermark();
    let visible: Vec<_> = expected.iter().filter(|(base, _)| *base < hw).collect();
    for _ in 0..40 {
        let i = rng.random_range(0..visible.len());
        let (base, _) = visible[i];
        let budget = rng.random_range(1..60_000);
        let read = log.read_slices(*base, budget, true).unwrap();
        let bytes = read.read_to_vec().unwrap();
        let headers = batches_in(&bytes);
        assert!(!headers.is_empty());
        let mut at = 0;
        for (k, header) in headers.iter().enumerate() {
            let (want_base, want) = visible[i + k];
            assert_eq!(header.base_offset, *want_base);
            assert_eq!(&bytes[at + 8..at + header.size], &want[8..]);
            at += header.size;
        }
        assert_eq!(read.high_watermark, hw);
    }
}

#[test]
fn the_tail_cache_serves_the_newest_records_and_reads_agree_across_its_edge() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 30,
        tail_cache_bytes: 20_000,
        ..direct_config()
    };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut expected = Vec::new();
    for round in 0..200 {
        let batch = make_batch(rng.random_range(1..5), round, rng.random_range(0..3000));
        let info = log.append_deferred(&batch, round).unwrap();
        expected.push((info.base_offset, batch));
        if rng.random_range(0..4) == 0 {
            log.write_pending().unwrap();
            check_random_reads(&log, &expected, &mut rng);
        }
    }
    log.write_pending().unwrap();
    check_random_reads(&log, &expected, &mut rng);
    let last = expected.last().unwrap().0;
    let tail = log.read_slices(last, 1 << 20, true).unwrap();
    let segment = last_segment_file(dir.path());
    if crate::direct::open(&segment).unwrap().is_some() {
        // Direct writes leave the newest records out of the page cache: memory serves them.
        assert!(matches!(tail.slices[..], [crate::LogSlice::Memory(_)]));
        let old = log.read_slices(0, 100, true).unwrap();
        assert!(matches!(old.slices[..], [crate::LogSlice::File(_)]));
    }
    // A restart reads everything back from the files alone.
    log.close().unwrap();
    let log = Log::open(dir.path(), config, 0).unwrap();
    check_random_reads(&log, &expected, &mut rng);
}

#[test]
fn without_direct_writes_files_never_hold_padding_and_reads_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 30,
        direct_writes: false,
        ..small_config()
    };
    let log = Log::open(dir.path(), config, 0).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut expected = Vec::new();
    for round in 0..50 {
        let batch = make_batch(2, round, rng.random_range(0..3000));
        expected.push((log.append(&batch, round).unwrap().base_offset, batch));
        // Written through the page cache: the file holds exactly the batches at all times.
        assert_segment_files_hold_whole_batches(dir.path());
    }
    check_random_reads(&log, &expected, &mut rng);
    let read = log.read_slices(0, usize::MAX / 2, true).unwrap();
    assert!(read
        .slices
        .iter()
        .all(|s| matches!(s, crate::LogSlice::File(_))));
}

#[test]
fn appends_that_must_roll_or_write_first_are_announced_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            segment_bytes: 40 << 20,
            ..small_config()
        },
        0,
    )
    .unwrap();
    let batch = make_batch(1, 0, 900_000);
    assert!(!log.needs_room(batch.len(), 0));
    // Nobody writes (acks=0 and a write loop that lags): memory stays bounded because an
    // append beyond the limit writes what is pending first.
    let mut written_by_appends = false;
    for _ in 0..40 {
        if log.needs_room(batch.len(), 0) {
            written_by_appends = true;
        }
        log.append_deferred(&batch, 0).unwrap();
        // At most 32 MiB wait in memory (each batch is one record).
        let pending = (log.end_offset() - log.high_watermark()) as usize;
        assert!(
            pending * batch.len() <= 32 << 20,
            "{pending} batches pending"
        );
    }
    assert!(written_by_appends && log.high_watermark() > 0);
    // The next one would overfill the segment: it rolls first.
    assert!(log.needs_room(8 << 20, 0));
    log.append_deferred(&make_batch(1, 0, 100), 0).unwrap();
    log.write_pending().unwrap();
    assert!(!log.needs_room(batch.len(), 0));
    assert_eq!(
        batches_in(&log.read(0, usize::MAX / 2, true).unwrap().bytes).len(),
        41
    );
}

/// Fetches send cached stretches with sendfile and read the others on the blocking pool, so
/// the probe must see a stretch dropped from the page cache, and see it again once read.
#[test]
fn file_slices_tell_whether_the_page_cache_holds_them() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&vec![7u8; 1 << 20]).unwrap();
    file.sync_all().unwrap();
    let slice = crate::FileSlice {
        file: std::sync::Arc::new(std::fs::File::open(&path).unwrap()),
        position: 4096,
        len: 512 * 1024,
    };
    assert!(slice.in_page_cache(), "just written");
    rustix::fs::fadvise(&*slice.file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    if on_tmpfs(&slice.file) {
        return;
    }
    assert!(!slice.in_page_cache(), "dropped from the page cache");
    // Finding a stretch reads the batch headers at its ends: that does not make it cached.
    let mut header = [0u8; 61];
    slice
        .file
        .read_exact_at(&mut header, slice.position)
        .unwrap();
    let last = slice.position + slice.len - 61;
    slice.file.read_exact_at(&mut header, last).unwrap();
    assert!(!slice.in_page_cache(), "only its ends were read");
    let mut stretch = vec![0u8; slice.len as usize];
    slice
        .file
        .read_exact_at(&mut stretch, slice.position)
        .unwrap();
    assert!(slice.in_page_cache(), "read again");
}

/// A fetch plans on the blocking pool when finding its batches would read headers from the
/// disk: the log must tell that before reading, and see the pages again once read.
#[test]
fn a_log_tells_whether_finding_batches_would_wait_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    for i in 0..400 {
        log.append(&make_batch(10, i, 8_000), 0).unwrap();
    }
    log.flush_to(log.end_offset()).unwrap();
    let segment = std::fs::File::open(last_segment_file(dir.path())).unwrap();
    assert!(!log.read_would_wait(0, 1 << 20), "just written");
    rustix::fs::fadvise(&segment, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    if on_tmpfs(&segment) {
        return;
    }
    let middle = log.end_offset() / 2;
    assert!(log.read_would_wait(middle, 1 << 20));
    assert!(
        !log.read_would_wait(log.end_offset(), 1 << 20),
        "the tail has nothing to find"
    );
    let read = log.read(middle, 1 << 20, true).unwrap();
    assert!(!read.bytes.is_empty());
    assert!(!log.read_would_wait(middle, 1 << 20), "read again");
}

/// A fetch that runs past the end of its segment reads the next segment's headers too.
#[test]
fn the_next_segment_counts_when_a_read_runs_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 512 * 1024,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config, 0).unwrap();
    for i in 0..200 {
        log.append(&make_batch(10, i, 8_000), 0).unwrap();
    }
    log.flush_to(log.end_offset()).unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 2);
    let second = std::fs::File::open(&segments[1]).unwrap();
    rustix::fs::fadvise(&second, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    if on_tmpfs(&second) {
        return;
    }
    // Offset 0 is in the cached first segment; 64 KiB from it stays there, 1 MiB does not.
    assert!(!log.read_would_wait(0, 64 * 1024));
    assert!(log.read_would_wait(0, 1 << 20));
}

/// tmpfs keeps every page in memory, so the page-cache tests cannot drop any there.
fn on_tmpfs(file: &std::fs::File) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let tmpfs = rustix::fs::fstatfs(file).unwrap().f_type as i64 == TMPFS_MAGIC;
    if tmpfs {
        eprintln!("skipped: the test directory is on tmpfs, which cannot drop pages");
    }
    tmpfs
}

/// Pages of a file in the page cache, and how many of them are dirty (`cachestat(2)`, Linux
/// 6.5 and later); `None` where the kernel lacks it.
fn dirty_and_cached_pages(file: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451; // the same number on every architecture
    let range = Range { off: 0, len: 0 };
    let mut stat = Stat::default();
    // SAFETY: the kernel reads `range` and writes `stat`, both live, correctly laid out
    // (`struct cachestat_range`, `struct cachestat`) for the call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    (r == 0).then_some((stat.nr_dirty, stat.nr_cache))
}

/// Buffered appends do not pile up as dirty pages for the kernel's flusher to write in one
/// burst (which stalled appends and fsyncs): the log starts their write-out as it goes.
#[test]
fn buffered_appends_are_written_back_as_they_go() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        direct_writes: false,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config, 0).unwrap();
    for i in 0..4_000 {
        log.append(&make_batch(1, i, 8_000), 0).unwrap();
    }
    assert!(log.size_bytes() > 30 << 20, "{}", log.size_bytes());
    let segment = std::fs::File::open(last_segment_file(dir.path())).unwrap();
    if on_tmpfs(&segment) {
        return;
    }
    let Some((dirty, cached)) = dirty_and_cached_pages(&segment) else {
        eprintln!("skipped: the kernel has no cachestat");
        return;
    };
    assert!(cached > 0, "written pages stay cached for readers");
    // At most the last megabyte not yet handed to the kernel (4 KiB pages), not ~32 MB.
    assert!(dirty <= 2 * 256, "{dirty} pages of {cached} still dirty");
}

/// Small segments whose retention keeps about two of them: rolls reuse expired files.
fn reuse_config(direct_writes: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 2 << 20,
        retention_bytes: 4 << 20,
        direct_writes,
        ..small_config()
    }
}

fn log_file_inodes(dir: &Path) -> std::collections::BTreeMap<u64, u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            let base = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            (base, std::fs::metadata(&p).unwrap().ino())
        })
        .collect()
}

/// Reads the whole log from its start; checks offsets run on from there and each batch is the
/// one appended at its offset.
fn assert_log_holds(log: &Log, appended: &std::collections::BTreeMap<i64, Vec<u8>>) {
    let start = log.log_start_offset();
    let all = log.read(start, usize::MAX / 2, true).unwrap();
    let mut at = 0;
    let mut next = start;
    for header in batches_in(&all.bytes) {
        assert_eq!(header.base_offset, next, "offsets run on");
        let sent = &appended[&header.base_offset];
        assert_eq!(&all.bytes[at + 12..at + header.size], &sent[12..]);
        at += header.size;
        next = header.last_offset() + 1;
    }
    assert_eq!(next, log.end_offset());
}

#[test]
fn rolls_reuse_the_files_of_expired_segments_and_read_only_new_bytes() {
    for direct_writes in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), reuse_config(direct_writes), 0).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut appended = std::collections::BTreeMap::new();
        let mut inodes = std::collections::BTreeSet::new();
        let mut rolls = 0;
        let mut active = 0;
        while rolls < 12 {
            let batch = make_batch(rng.random_range(1..8), 0, rng.random_range(1000..30_000));
            let info = log.append(&batch, 0).unwrap();
            appended.insert(info.base_offset, batch);
            let files = log_file_inodes(dir.path());
            if *files.keys().next_back().unwrap() != active {
                active = *files.keys().next_back().unwrap();
                rolls += 1;
                // Reads from the start see only this log's batches, never an old file's.
                assert_log_holds(&log, &appended);
            }
            inodes.extend(files.into_values());
        }
        // Retention keeps about three segments; without reuse there would be thirteen files.
        assert!(inodes.len() <= 5, "{} files for 13 segments", inodes.len());
        assert!(log.segment_count() <= 4);
        log.close().unwrap();
        assert_segment_files_hold_whole_batches(dir.path());
        let log = Log::open(dir.path(), reuse_config(direct_writes), 0).unwrap();
        assert_log_holds(&log, &appended);
    }
}

#[test]
fn a_crash_in_a_reused_file_keeps_what_was_written_and_none_of_the_old_bytes() {
    for direct_writes in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = reuse_config(direct_writes);
        let mut appended = std::collections::BTreeMap::new();
        let written_end = {
            let log = Log::open(dir.path(), config.clone(), 0).unwrap();
            let mut reused = false;
            let mut i = 0;
            // Fill until a roll reused a file, then write a little into it.
            while !reused || i % 5 != 0 {
                let batch = make_batch(3, i, 4000 + 97 * (i as usize % 50));
                let info = log.append(&batch, i).unwrap();
                appended.insert(info.base_offset, batch);
                assert!(i < 10_000, "no roll reused a file");
                reused |= dir
                    .path()
                    .read_dir()
                    .unwrap()
                    .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "reused"));
                i += 1;
            }
            let active = *log_file_inodes(dir.path()).keys().next_back().unwrap();
            let path = dir.path().join(format!("{active:020}.log"));
            assert!(
                std::fs::metadata(&path).unwrap().len() > 1 << 20,
                "the active file still holds the expired segment's bytes"
            );
            log.append_deferred(&make_batch(5, 0, 3000), 0).unwrap();
            // Dropped without close() or a write: the process died.
            log.high_watermark()
        };
        let log = Log::open(dir.path(), config, 0).unwrap();
        assert_eq!(log.end_offset(), written_end);
        assert_log_holds(&log, &appended);
        // The old bytes were cut; the marker went with them.
        assert_segment_files_hold_whole_batches(dir.path());
        assert!(!dir
            .path()
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().path().extension().is_some_and(|x| x == "reused") }));
        let next = log.append(&make_batch(2, 0, 100), 0).unwrap();
        assert_eq!(next.base_offset, written_end);
    }
}

#[test]
fn a_file_being_read_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), reuse_config(false), 0).unwrap();
    let batch = |i: i64| make_batch(4, i, 20_000);
    while log.segment_count() < 3 {
        log.append(&batch(0), 0).unwrap();
    }
    // A fetch planned on the oldest segment, still to be sent.
    let read = log.read_slices(0, 1 << 20, true).unwrap();
    let Some(crate::LogSlice::File(slice)) = read.slices.first().cloned() else {
        panic!("a file slice")
    };
    let mut before = vec![0u8; slice.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&*slice.file, &mut before, slice.position).unwrap();
    let oldest_inode = *log_file_inodes(dir.path()).values().next().unwrap();
    let mut i = 1;
    // Rolls leave the segment being read alone, and the periodic retention deletes it.
    for round in 0..2 {
        for _ in 0..300 {
            log.append(&batch(i), i).unwrap();
            i += 1;
        }
        if round == 0 {
            assert_eq!(
                log.log_start_offset(),
                0,
                "nothing reused while the read runs"
            );
            assert!(log.enforce_retention(0).unwrap() > 0);
        }
    }
    assert!(log.log_start_offset() > 0);
    assert!(!log_file_inodes(dir.path())
        .values()
        .any(|ino| *ino == oldest_inode));
    let mut after = vec![0u8; slice.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&*slice.file, &mut after, slice.position).unwrap();
    assert_eq!(before, after);
}

#[test]
fn markers_of_reused_files_left_by_a_crash_during_a_roll_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    while log.segment_count() < 3 {
        log.append(&make_batch(3, 0, 2000), 0).unwrap();
    }
    log.close().unwrap();
    let bases: Vec<u64> = log_file_inodes(dir.path()).into_keys().collect();
    let marker = |base: u64| dir.path().join(format!("{base:020}.reused"));
    std::fs::write(marker(bases[0]), b"").unwrap();
    std::fs::write(marker(bases[1] + 1), b"").unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert!(!marker(bases[0]).exists() && !marker(bases[1] + 1).exists());
    assert_eq!(log.segment_count(), 3);
}

/// `records` read into memory of their own as the broker reads a request, placed at `at`
/// within a block (right when it is what the log asked).
fn owned(records: &[u8], at: usize) -> crate::OwnedRecords {
    let mut owned = crate::OwnedRecords::new(at, records.len());
    let (first, rest) = records.split_at(records.len() / 3);
    owned.extend_from_slice(first);
    // The rest as a socket read fills it.
    let spare = owned.spare_capacity_mut();
    for (slot, byte) in spare.iter_mut().zip(rest) {
        slot.write(*byte);
    }
    // SAFETY: the loop above initialized `rest.len()` bytes.
    unsafe { owned.assume_filled(rest.len()) };
    assert_eq!(owned.as_slice(), records);
    owned
}

#[test]
fn records_in_memory_of_their_own_land_intact_taken_as_they_are_or_copied() {
    for timestamp_type in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
        for config in [small_config(), direct_config(), reuse_config(false)] {
            owned_appends_land_intact(LogConfig {
                timestamp_type,
                ..config
            });
        }
    }
}

/// Appends, in random order: copied request bytes, records placed where the file ends (taken
/// without a copy where the log writes whole blocks), and records placed wrongly (copied);
/// with writes at random moments, rolls, and reused files. Reads from the tail cache, from the
/// files after a clean close, and after a crash must all give back exactly what was appended.
fn owned_appends_land_intact(config: LogConfig) {
    let dir = tempfile::tempdir().unwrap();
    let log_append_time = config.timestamp_type == TimestampType::LogAppendTime;
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(33);
    let mut appended = std::collections::BTreeMap::new();
    for round in 0..400 {
        // One to three batches per request, of sizes around the 4 KiB block and far above it.
        let mut request = Vec::new();
        let mut bases = Vec::new();
        for _ in 0..rng.random_range(1..4) {
            let payload = if rng.random_range(0..4) == 0 {
                rng.random_range(20_000..200_000)
            } else {
                rng.random_range(0..9000)
            };
            bases.push(request.len());
            request.extend_from_slice(&make_batch(rng.random_range(1..4), round, payload));
        }
        let info = match rng.random_range(0..4) {
            0 => log.append_deferred(&request, round).unwrap(),
            1 => {
                let misplaced = (log.records_placement() + rng.random_range(1..4096)) % 4096;
                log.append_owned(owned(&request, misplaced), round).unwrap()
            }
            _ => {
                let records = owned(&request, log.records_placement());
                log.append_owned(records, round).unwrap()
            }
        };
        let mut offset = info.base_offset;
        for (i, &at) in bases.iter().enumerate() {
            let end = bases.get(i + 1).copied().unwrap_or(request.len());
            let batch = request[at..end].to_vec();
            let count = batches_in(&batch)[0].last_offset_delta as i64 + 1;
            appended.insert(offset, batch);
            offset += count;
        }
        assert_eq!(offset, info.last_offset + 1);
        if rng.random_range(0..3) == 0 {
            assert_eq!(log.write_pending().unwrap(), log.end_offset());
        }
    }
    log.write_pending().unwrap();
    assert!(log.segment_count() > 1 || config.retention_bytes > 0);
    let holds = |log: &Log, appended: &std::collections::BTreeMap<i64, Vec<u8>>| {
        if log_append_time {
            // The stored batches differ from the sent ones where LogAppendTime rewrites them.
            let all = log
                .read(log.log_start_offset(), usize::MAX / 2, true)
                .unwrap();
            let mut at = 0;
            for header in batches_in(&all.bytes) {
                let sent = &appended[&header.base_offset];
                assert_eq!(&all.bytes[at + 43..at + header.size], &sent[43..]);
                at += header.size;
            }
            assert_eq!(at, all.bytes.len());
        } else {
            assert_log_holds(log, appended);
        }
    };
    holds(&log, &appended);
    log.close().unwrap();
    assert_segment_files_hold_whole_batches(dir.path());
    let reopened = Log::open(dir.path(), config.clone(), 0).unwrap();
    holds(&reopened, &appended);
    // More appends, then a crash (no close): recovery keeps every written batch.
    for round in 0..20 {
        let batch = make_batch(2, round, rng.random_range(0..20_000));
        let info = reopened
            .append_owned(owned(&batch, reopened.records_placement()), round)
            .unwrap();
        appended.insert(info.base_offset, batch);
    }
    reopened.write_pending().unwrap();
    let end = reopened.end_offset();
    std::mem::forget(reopened);
    let recovered = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(recovered.end_offset(), end);
    holds(&recovered, &appended);
}

#[test]
fn a_corrupt_batch_in_records_of_their_own_leaves_the_log_untouched() {
    for direct_writes in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            direct_writes,
            ..small_config()
        };
        let log = Log::open(dir.path(), config, 0).unwrap();
        let first = make_batch(1, 0, 5000);
        log.append_owned(owned(&first, log.records_placement()), 0)
            .unwrap();
        let mut bad = make_batch(2, 0, 6000);
        bad[3000] ^= 1;
        let mut two = make_batch(1, 0, 10);
        two.extend_from_slice(&bad);
        assert!(matches!(
            log.append_owned(owned(&two, log.records_placement()), 0),
            Err(LogError::CorruptBatch(e)) if e.contains("CRC")
        ));
        assert_eq!(log.end_offset(), 1);
        let next = make_batch(3, 5, 300);
        let info = log
            .append_owned(owned(&next, log.records_placement()), 5)
            .unwrap();
        assert_eq!((info.base_offset, info.last_offset), (1, 3));
        log.write_pending().unwrap();
        let all = log.read(0, 1 << 20, true).unwrap();
        assert_eq!(all.bytes.len(), first.len() + next.len());
        assert_eq!(&all.bytes[first.len() + 12..], &next[12..]);
        log.close().unwrap();
        assert_segment_files_hold_whole_batches(dir.path());
    }
}

mod topic_settings {
    use super::*;

    #[test]
    fn create_time_outside_the_allowed_window_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            timestamp_before_max_ms: 1_000,
            timestamp_after_max_ms: 500,
            ..small_config()
        };
        let log = Log::open(dir.path(), config.clone(), 0).unwrap();
        let now = 1_000_000;
        for ts in [now - 1_001, now + 501] {
            match log.append(&make_batch(1, ts, 10), now) {
                Err(LogError::InvalidTimestamp(m)) => assert!(
                    m.contains(&format!("[{}, {}]", now - 1_000, now + 500)),
                    "{m}"
                ),
                other => panic!("{ts}: {other:?}"),
            }
        }
        // A batch whose last record is too new is refused whole.
        assert!(log.append(&make_batch(600, now, 600), now).is_err());
        assert_eq!(log.end_offset(), 0);
        log.append(&make_batch(1, now - 1_000, 10), now).unwrap();
        log.append(&make_batch(1, now + 500, 10), now).unwrap();
        // LogAppendTime replaces the producer's timestamps: nothing to check.
        log.set_config(LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..config
        });
        log.append(&make_batch(1, 5, 10), now).unwrap();
        assert_eq!(log.end_offset(), 3);
    }

    #[test]
    fn a_full_index_rolls_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            index_interval_bytes: 0,
            // Room for three offset entries (8 bytes) and two time entries (12 bytes).
            segment_index_bytes: 24,
            ..small_config()
        };
        let log = Log::open(dir.path(), config, 0).unwrap();
        for i in 0..12 {
            log.append(&make_batch(1, 1_000 + i, 10), 0).unwrap();
        }
        let state = log.lock_state();
        assert!(state.segments.len() >= 6, "{}", state.segments.len());
        assert!(state.segments.values().all(|s| s.index_entries() <= 3));
        drop(state);
        // Everything reads back across the small segments.
        let bytes = log.read(0, usize::MAX / 2, true).unwrap().bytes;
        assert_eq!(batches_in(&bytes).len(), 12);
    }

    #[test]
    fn flush_messages_and_flush_ms_say_when_an_fsync_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush_messages: 3,
            ..small_config()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let log = Log::open(dir.path(), config.clone(), now).unwrap();
        assert!(!log.flush_due(now));
        log.append(&make_batch(2, 1, 10), 0).unwrap();
        assert!(!log.flush_due(now));
        log.append(&make_batch(1, 1, 10), 0).unwrap();
        assert!(log.flush_due(now));
        assert!(log.flush_to(log.end_offset()).unwrap());
        assert!(!log.flush_due(now));
        log.append(&make_batch(1, 1, 10), 0).unwrap();
        assert!(!log.flush_due(now));
        log.set_config(LogConfig {
            flush_ms: 1_000,
            ..config
        });
        assert!(!log.flush_due(now));
        assert!(log.flush_due(now + 60_000));
    }

    #[test]
    fn deleted_segments_stay_as_files_for_file_delete_delay() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes: 1,
            reuse_segment_files: false,
            file_delete_delay_ms: 1_000,
            ..small_config()
        };
        let deleted = |dir: &Path| {
            std::fs::read_dir(dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .to_string_lossy()
                        .ends_with(".deleted")
                })
                .count()
        };
        let log = Log::open(dir.path(), config, 0).unwrap();
        fill(&log, 200, 3);
        let segments = log.segment_count();
        assert!(segments > 2);
        assert_eq!(log.enforce_retention(10_000).unwrap(), segments - 1);
        // Renamed, not gone: .log, .index and .timeindex of each.
        assert!(deleted(dir.path()) >= segments - 1);
        log.enforce_retention(10_999).unwrap();
        assert!(deleted(dir.path()) > 0);
        log.enforce_retention(11_000).unwrap();
        assert_eq!(deleted(dir.path()), 0);
        // A restart removes what a crash left behind.
        fill(&log, 200, 4);
        log.enforce_retention(20_000).unwrap();
        assert!(deleted(dir.path()) > 0);
        drop(log);
        let log = Log::open(dir.path(), small_config(), 0).unwrap();
        assert_eq!(deleted(dir.path()), 0);
        assert!(log.end_offset() > 0);
    }
}
