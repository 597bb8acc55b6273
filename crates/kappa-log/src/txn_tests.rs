//! Transactions as the partition log keeps them: the last stable offset, markers, the
//! aborted-transaction index, and all three after restarts, crashes, retention and compaction.

use rand::{Rng, SeedableRng};

use crate::batch::tests::make_batch;
use crate::batch::{self, ControlType};
use crate::{Log, LogConfig, LogError};

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

/// A batch of `count` records from producer `pid`, transactional or only idempotent.
fn txn_batch(pid: i64, epoch: i16, seq: i32, count: i32, transactional: bool) -> Vec<u8> {
    let mut b = make_batch(count, 1_000, 30 * count as usize);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    if transactional {
        b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    }
    let crc = batch::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Offsets a read_committed reader keeps from `0..lso`: every record not in an aborted
/// transaction, by reading the batches and dropping those the aborted list names (as a
/// client does).
fn committed_offsets(log: &Log) -> Vec<i64> {
    let lso = log.last_stable_offset();
    let read = log.read_slices_below(0, usize::MAX / 2, true, lso).unwrap();
    let bytes = read.read_to_vec().unwrap();
    let aborted = log.aborted_txns(0, read.next_offset);
    let mut out = Vec::new();
    let mut open_aborts: Vec<i64> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = batch::BatchHeader::parse(&bytes[at..]).unwrap();
        at += h.size;
        assert!(
            h.last_offset() < lso,
            "a read_committed read passed the LSO"
        );
        if h.is_control() {
            open_aborts.retain(|p| *p != h.producer_id);
            continue;
        }
        if h.is_transactional()
            && aborted
                .iter()
                .any(|(p, first)| *p == h.producer_id && *first <= h.base_offset)
            && !open_aborts.contains(&h.producer_id)
        {
            open_aborts.push(h.producer_id);
        }
        if h.is_transactional() && open_aborts.contains(&h.producer_id) {
            continue;
        }
        out.extend(h.base_offset..=h.last_offset());
    }
    out
}

#[test]
fn the_last_stable_offset_waits_for_the_oldest_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    log.append(&make_batch(2, 0, 10), 0).unwrap();
    assert_eq!(log.last_stable_offset(), 2);
    let a = log.append(&txn_batch(1, 0, 0, 3, true), 0).unwrap();
    assert_eq!(a.base_offset, 2);
    log.append(&make_batch(2, 0, 10), 0).unwrap();
    let b = log.append(&txn_batch(2, 0, 0, 2, true), 0).unwrap();
    log.append(&txn_batch(1, 0, 3, 2, true), 0).unwrap();
    assert_eq!(log.high_watermark(), 11);
    assert_eq!(
        log.last_stable_offset(),
        2,
        "producer 1's transaction is open"
    );
    // A read_committed read stops before it, even with room for more.
    let read = log
        .read_slices_below(0, 1 << 20, true, log.last_stable_offset())
        .unwrap();
    assert_eq!(read.next_offset, 2);
    let commit = log.append_marker(1, 0, ControlType::Commit, 0, 5).unwrap();
    assert_eq!(
        log.last_stable_offset(),
        2,
        "a transaction ends for readers only once its marker is in the file"
    );
    log.write_pending().unwrap();
    assert_eq!(commit.base_offset, 11);
    assert_eq!(
        log.last_stable_offset(),
        b.base_offset,
        "producer 2's is still open"
    );
    log.append_marker(2, 0, ControlType::Abort, 0, 5).unwrap();
    log.write_pending().unwrap();
    assert_eq!(log.last_stable_offset(), 13);
    assert_eq!(log.aborted_txns(0, 13), vec![(2, b.base_offset)]);
    assert_eq!(log.aborted_txns(13, 20), vec![]);
    assert_eq!(log.aborted_txns(0, b.base_offset), vec![]);
    // Offsets 0..2, txn 1 (2..5, 9..11), 5..7; not producer 2's 7..9, nor the markers.
    assert_eq!(committed_offsets(&log), vec![0, 1, 2, 3, 4, 5, 6, 9, 10]);
}

#[test]
fn markers_are_written_only_by_the_log_and_never_for_an_older_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    // A producer may not send a control batch itself.
    let marker = batch::marker_batch(1, 0, ControlType::Commit, 0, 0);
    assert!(matches!(
        log.append(&marker, 0),
        Err(LogError::InvalidRecord(_))
    ));
    log.append(&txn_batch(1, 3, 0, 1, true), 0).unwrap();
    assert!(matches!(
        log.append_marker(1, 2, ControlType::Abort, 0, 0),
        Err(LogError::InvalidProducerEpoch { .. })
    ));
    // The coordinator fences with a newer epoch: the old one's writes are refused after it.
    log.append_marker(1, 4, ControlType::Abort, 0, 0).unwrap();
    assert!(matches!(
        log.append(&txn_batch(1, 3, 1, 1, true), 0),
        Err(LogError::InvalidProducerEpoch { .. })
    ));
    log.append(&txn_batch(1, 4, 0, 1, true), 0).unwrap();
    log.write_pending().unwrap();
    assert_eq!(log.last_stable_offset(), 2);
}

#[test]
fn open_transactions_and_aborted_ones_survive_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // pid -> next sequence; pid -> whether a transaction is open
    let mut seqs = [0i32; 4];
    let mut open = [false; 4];
    let mut expected_aborted = Vec::new();
    let mut first = [0i64; 4];
    for round in 0..6 {
        let log = Log::open(dir.path(), small_config(), 0).unwrap();
        if round > 0 {
            // After the restart the log agrees with what was written before it.
            let lso = open
                .iter()
                .zip(first)
                .filter(|(o, _)| **o)
                .map(|(_, f)| f)
                .min()
                .unwrap_or(log.high_watermark());
            assert_eq!(log.last_stable_offset(), lso, "round {round}");
            assert_eq!(
                log.aborted_txns(0, i64::MAX),
                expected_aborted,
                "round {round}"
            );
        }
        for _ in 0..150 {
            let pid = rng.random_range(0..4usize);
            match rng.random_range(0..10) {
                0 if open[pid] => {
                    let kind = if rng.random_bool(0.5) {
                        expected_aborted.push((pid as i64, first[pid]));
                        ControlType::Abort
                    } else {
                        ControlType::Commit
                    };
                    log.append_marker(pid as i64, 0, kind, 0, 0).unwrap();
                    open[pid] = false;
                }
                _ => {
                    let n = rng.random_range(1..5);
                    let info = log
                        .append(&txn_batch(pid as i64, 0, seqs[pid], n, true), 0)
                        .unwrap();
                    seqs[pid] += n;
                    if !open[pid] {
                        open[pid] = true;
                        first[pid] = info.base_offset;
                    }
                }
            }
        }
        log.write_pending().unwrap();
        assert!(log.segment_count() > 1);
        if round % 2 == 0 {
            log.close().unwrap();
        } // else: dropped, as by a crash after the write
    }
}

#[test]
fn a_torn_marker_takes_its_index_entry_along() {
    let dir = tempfile::tempdir().unwrap();
    let path;
    {
        let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
        log.append(&txn_batch(9, 0, 0, 4, true), 0).unwrap();
        log.append_marker(9, 0, ControlType::Abort, 0, 0).unwrap();
        log.write_pending().unwrap();
        assert_eq!(log.aborted_txns(0, 10), vec![(9, 0)]);
        path = dir.path().join(format!("{:020}.log", 0));
    }
    // The marker's last bytes never reached the file.
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(log.end_offset(), 4);
    assert_eq!(log.aborted_txns(0, 10), vec![]);
    assert_eq!(log.last_stable_offset(), 0, "the transaction is open again");
}

#[test]
fn retention_and_delete_records_take_index_files_along() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let mut seq = 0;
    for _ in 0..150 {
        log.append(&txn_batch(5, 0, seq, 10, true), 0).unwrap();
        seq += 10;
        log.append_marker(5, 0, ControlType::Abort, 0, 0).unwrap();
    }
    log.write_pending().unwrap();
    let count = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".txnindex")
            })
            .count()
    };
    let before = count(dir.path());
    assert!(before > 2, "{before} index files");
    let end = log.high_watermark();
    log.delete_records_before(end - 1).unwrap();
    assert_eq!(count(dir.path()), 1);
    assert_eq!(log.aborted_txns(end - 1, end), vec![(5, end - 11)]);
}

#[test]
fn compaction_drops_aborted_records_and_keeps_committed_ones() {
    use bytes::Bytes;
    use kafka_protocol::records::{Compression, Record, TimestampType};
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup_policy: crate::CleanupPolicy::Compact,
        segment_bytes: 4096,
        delete_retention_ms: 0,
        ..small_config()
    };
    let log = Log::open(dir.path(), config, 0).unwrap();
    let keyed = |pid: i64, seq: i32, key: &str, value: &str| {
        let record = Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: seq,
            timestamp: 1,
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: Default::default(),
        };
        crate::records::encode_batch(&[record], Compression::None).unwrap()
    };
    // Key k: committed "good", then an aborted "bad" (must not win); filler rolls segments.
    log.append(&keyed(1, 0, "k", "good"), 1).unwrap();
    log.append_marker(1, 0, ControlType::Commit, 0, 1).unwrap();
    log.append(&keyed(2, 0, "k", "bad"), 1).unwrap();
    log.append_marker(2, 0, ControlType::Abort, 0, 1).unwrap();
    for i in 0..60 {
        log.append(&keyed(3, i, &format!("f{i}"), &"x".repeat(200)), 1)
            .unwrap();
    }
    log.append_marker(3, 0, ControlType::Commit, 0, 1).unwrap();
    log.write_pending().unwrap();
    assert!(log.segment_count() > 2);
    let stats = log.clean(1_000_000).unwrap();
    assert!(stats.records_removed > 0);
    let all = Bytes::from(log.read(0, usize::MAX / 2, true).unwrap().bytes);
    let mut values = Vec::new();
    let mut at = 0;
    while at < all.len() {
        let h = batch::BatchHeader::parse(&all[at..]).unwrap();
        let mut one = all.slice(at..at + h.size);
        at += h.size;
        if h.is_control() {
            continue;
        }
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut one).unwrap();
        values.extend(
            set.records
                .into_iter()
                .filter(|r| r.key.as_deref() == Some(b"k".as_slice()))
                .map(|r| r.value.unwrap()),
        );
    }
    assert_eq!(values, vec![Bytes::from("good")]);
}
