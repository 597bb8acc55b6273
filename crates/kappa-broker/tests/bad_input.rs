//! Bad input against a broker running in-process: malformed frames, impossible lengths,
//! unsupported versions, corrupt or oversized batches and clients that vanish mid-request get
//! a precise error or a closed connection, and the broker keeps serving everyone else.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kappa_broker::{decode_request, BrokerConfig};
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod common;
use common::*;

#[tokio::test]
async fn impossible_lengths_and_garbage_close_only_that_connection() {
    let running = start(BrokerConfig {
        max_request_bytes: 1 << 20,
        ..Default::default()
    })
    .await;
    for prefix in [i32::MAX, -5, 3, (1 << 20) + 1] {
        let mut s = TcpStream::connect(running.addr).await.unwrap();
        s.write_all(&prefix.to_be_bytes()).await.unwrap();
        assert!(closed(&mut s).await, "length {prefix}");
    }
    // Unknown API key, unsupported API, then random bytes with a plausible length.
    for body in [
        vec![0x03, 0xE7, 0, 0, 0, 0, 0, 1, 0, 0],
        vec![0, 22, 0, 0, 0, 0, 0, 1, 0, 0], // InitProducerId: not implemented yet
        (0..200).map(|i| (i * 37 % 251) as u8).collect::<Vec<u8>>(),
    ] {
        let mut s = TcpStream::connect(running.addr).await.unwrap();
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        s.write_all(&f).await.unwrap();
        assert!(closed(&mut s).await);
    }
    // A client that vanishes halfway through a request.
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    s.write_all(&100i32.to_be_bytes()).await.unwrap();
    s.write_all(&[0, 18, 0, 3, 0, 0]).await.unwrap();
    drop(s);
    still_serving(running.addr).await;
}

#[tokio::test]
async fn unsupported_api_versions_version_gets_the_supported_list() {
    let running = start(BrokerConfig::default()).await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    s.write_all(
        &frame(ApiKey::ApiVersions, 3, 11, &ApiVersionsRequest::default())
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 7 { 99 } else { *b })
            .collect::<Vec<u8>>(),
    )
    .await
    .unwrap();
    let mut bytes = read_response(&mut s).await.unwrap();
    assert_eq!(bytes.get_i32(), 11, "correlation id");
    let r = ApiVersionsResponse::decode(&mut bytes, 0).unwrap();
    assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Fetch as i16 && k.max_version == 12));
    // Another API at a version the broker does not serve closes the connection.
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    s.write_all(
        &frame(ApiKey::Metadata, 12, 1, &MetadataRequest::default())
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 7 { 40 } else { *b })
            .collect::<Vec<u8>>(),
    )
    .await
    .unwrap();
    assert!(closed(&mut s).await);
    still_serving(running.addr).await;
}

#[tokio::test]
async fn bad_batches_get_kafka_error_codes_and_leave_the_partition_untouched() {
    let running = start(BrokerConfig::default()).await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    assert_eq!(
        produce(&mut s, "t", -1, Some(batch(&["a", "b"]))).await,
        (0, 0)
    );
    let good = batch(&["c"]);

    let mut flipped = good.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xFF;
    assert_eq!(
        produce(&mut s, "t", 1, Some(Bytes::from(flipped))).await.0,
        2,
        "CORRUPT_MESSAGE"
    );

    let truncated = good.slice(..good.len() - 3);
    assert_eq!(
        produce(&mut s, "t", 1, Some(truncated)).await.0,
        2,
        "CORRUPT_MESSAGE"
    );

    let mut magic1 = good.to_vec();
    magic1[16] = 1;
    assert_eq!(
        produce(&mut s, "t", 1, Some(Bytes::from(magic1))).await.0,
        43,
        "UNSUPPORTED_FOR_MESSAGE_FORMAT"
    );

    assert_eq!(produce(&mut s, "t", 1, None).await.0, 2, "missing records");
    assert_eq!(
        produce(&mut s, "t", 5, Some(good.clone())).await.0,
        21,
        "INVALID_REQUIRED_ACKS"
    );
    assert_eq!(end_offset(&running, "t"), 2);

    // A record count that the records do not match, under a valid CRC.
    let mut lying = good.to_vec();
    lying[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c(&lying[21..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        produce(&mut s, "t", 1, Some(Bytes::from(lying))).await.0,
        2,
        "CORRUPT_MESSAGE"
    );
    assert_eq!(end_offset(&running, "t"), 2);
    // Control batches come from the broker only.
    let mut control = good.to_vec();
    control[22] |= 0x20;
    let crc = crc32c(&control[21..]);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        produce(&mut s, "t", 1, Some(Bytes::from(control))).await.0,
        87,
        "INVALID_RECORD"
    );
    // Nobody but the group coordinator writes to, or deletes, __consumer_offsets.
    assert_eq!(
        produce(&mut s, "__consumer_offsets", 1, Some(good.clone()))
            .await
            .0,
        17,
        "INVALID_TOPIC_EXCEPTION"
    );
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(
        StrBytes::from_static_str("__consumer_offsets"),
    )]);
    let r: DeleteTopicsResponse = call(&mut s, ApiKey::DeleteTopics, 5, &delete).await;
    assert_eq!(r.responses[0].error_code, 17);
    assert_eq!(produce(&mut s, "t", -1, Some(good)).await.0, 0);
    still_serving(running.addr).await;
}

fn crc32c(data: &[u8]) -> u32 {
    // Castagnoli, bitwise: test-only, so no table.
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn oversized_batch_is_message_too_large() {
    let running = start(BrokerConfig {
        message_max_bytes: 500,
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    let big = "x".repeat(1000);
    assert_eq!(
        produce(&mut s, "big", 1, Some(batch(&[&big]))).await.0,
        10,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(
        produce(&mut s, "big", 1, Some(batch(&["small"]))).await,
        (0, 0)
    );
}

#[tokio::test]
async fn fetch_errors_and_long_poll() {
    let running = start(BrokerConfig {
        auto_create_topics: false,
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("f")))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let r: CreateTopicsResponse = call(&mut s, ApiKey::CreateTopics, 7, &create).await;
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(
        produce(&mut s, "nope", 1, Some(batch(&["a"]))).await.0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    let fetch = |topic: &'static str, offset: i64, wait: i32| {
        FetchRequest::default()
            .with_max_wait_ms(wait)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(topic)))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])])
    };
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &fetch("nope", 0, 100)).await;
    assert_eq!(r.responses[0].partitions[0].error_code, 3);
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &fetch("f", 5, 100)).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );

    // A long poll returns as soon as data arrives, not at max_wait.
    let addr = running.addr;
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut w = TcpStream::connect(addr).await.unwrap();
        produce(&mut w, "f", 1, Some(batch(&["late"]))).await
    });
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &fetch("f", 0, 30_000)).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 1);
    assert!(p.records.as_ref().is_some_and(|b| !b.is_empty()));
    assert_eq!(writer.await.unwrap(), (0, 0));
}

/// Mutated copies of valid requests never panic the decoder (a quick, deterministic cousin of
/// the cargo-fuzz target in fuzz/).
#[test]
fn decoder_survives_mutated_requests() {
    let valid: Vec<BytesMut> = vec![
        frame(
            ApiKey::Produce,
            9,
            1,
            &produce_request("topic", -1, Some(batch(&["a", "b"]))),
        ),
        frame(
            ApiKey::Produce,
            3,
            1,
            &produce_request("topic", 1, Some(batch(&["a"]))),
        ),
        frame(ApiKey::Metadata, 12, 1, &MetadataRequest::default()),
        frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default()),
        frame(
            ApiKey::Fetch,
            12,
            1,
            &FetchRequest::default().with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("x")))
                .with_partitions(vec![FetchPartition::default()])]),
        ),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for _ in 0..20_000 {
        let mut f = valid[rng.random_range(0..valid.len())][4..].to_vec();
        for _ in 0..rng.random_range(1..8) {
            let i = rng.random_range(0..f.len());
            match rng.random_range(0..3) {
                0 => f[i] = rng.random(),
                1 => f[i] = 0xFF,
                _ => f.truncate(i.max(1)),
            }
        }
        let _ = decode_request(Bytes::from(f));
    }
}

/// Fetch answers are written from the segment files (sendfile): a read spanning several
/// segments decodes record for record, at every fetch version, and a consumer that goes away
/// in the middle of a large answer costs only its own connection.
#[tokio::test]
async fn fetches_across_segments_and_a_consumer_vanishing_mid_answer() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::records::RecordBatchDecoder;
    let running = start(BrokerConfig::default()).await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("seg")))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("segment.bytes"))
                .with_value(Some(StrBytes::from_static_str("65536"))),
            // The batches' timestamps are from 1970: retention must not take them at a roll.
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("-1"))),
        ])]);
    let r: CreateTopicsResponse = call(&mut s, ApiKey::CreateTopics, 7, &create).await;
    assert_eq!(r.topics[0].error_code, 0);
    // 300 batches of 10 records of ~1 KiB: about 3 MB over ~45 segments.
    let mut expected = Vec::new();
    for b in 0..300 {
        let values: Vec<String> = (0..10)
            .map(|i| format!("{b:04}-{i:02}-{}", "x".repeat(1000)))
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        assert_eq!(produce(&mut s, "seg", 1, Some(batch(&refs))).await.0, 0);
        expected.extend(values);
    }
    let segments = running.broker.topics.get("seg").unwrap().partitions[0]
        .log
        .segment_count();
    assert!(segments > 10, "only {segments} segments");

    let fetch = |offset: i64, max: i32| {
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(max)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("seg")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(max)])])
    };
    for version in [4, 7, 11, 12] {
        // Read it all in fetches of 200 kB from an offset inside a batch, as a consumer does.
        let mut offset = 5;
        let mut got: Vec<String> = Vec::new();
        while offset < expected.len() as i64 {
            let r: FetchResponse =
                call(&mut s, ApiKey::Fetch, version, &fetch(offset, 200_000)).await;
            let p = &r.responses[0].partitions[0];
            assert_eq!(p.error_code, 0);
            assert_eq!(p.high_watermark, expected.len() as i64);
            let mut records = p.records.clone().expect("records");
            assert!(
                records.len() <= 200_000,
                "v{version}: {} bytes",
                records.len()
            );
            let batches = RecordBatchDecoder::decode_all(&mut records).unwrap();
            for record in batches.iter().flat_map(|b| &b.records) {
                if record.offset >= offset {
                    assert_eq!(record.offset, 5 + got.len() as i64);
                    let value = record.value.as_ref().unwrap();
                    got.push(String::from_utf8(value.to_vec()).unwrap());
                }
            }
            offset = 5 + got.len() as i64;
        }
        assert_eq!(got, expected[5..], "v{version}");
    }

    // Ask for everything (about 3 MB) and hang up after the first bytes of the answer.
    for _ in 0..5 {
        let mut quitter = TcpStream::connect(running.addr).await.unwrap();
        quitter
            .write_all(&frame(ApiKey::Fetch, 12, 1, &fetch(0, 50 << 20)))
            .await
            .unwrap();
        let mut first = [0u8; 64];
        tokio::io::AsyncReadExt::read_exact(&mut quitter, &mut first)
            .await
            .unwrap();
        drop(quitter);
    }
    still_serving(running.addr).await;
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &fetch(0, 50 << 20)).await;
    let mut records = r.responses[0].partitions[0].records.clone().unwrap();
    let count: usize = RecordBatchDecoder::decode_all(&mut records)
        .unwrap()
        .iter()
        .map(|b| b.records.len())
        .sum();
    assert_eq!(count, expected.len());
}

/// Requests arrive however TCP cuts them: small and large frames (a large one is read into a
/// buffer of its own) written in pieces, and several frames in one write, are all answered in
/// order, and what was produced reads back whole.
#[tokio::test]
async fn frames_split_across_reads_and_packed_together() {
    use kafka_protocol::records::RecordBatchDecoder;
    let running = start(BrokerConfig::default()).await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    let big_values: Vec<String> = (0..300)
        .map(|i| format!("{i:03}{}", "v".repeat(1000)))
        .collect();
    let refs: Vec<&str> = big_values.iter().map(String::as_str).collect();
    let big = frame(
        ApiKey::Produce,
        9,
        1,
        &produce_request("pieces", 1, Some(batch(&refs))),
    );
    assert!(big.len() > 64 * 1024);
    let small = frame(
        ApiKey::Produce,
        9,
        2,
        &produce_request("pieces", 1, Some(batch(&["tail"]))),
    );
    let mut wire = big.to_vec();
    wire.extend_from_slice(&small);
    // First in pieces of 7 KB with pauses, then the same two frames in one write.
    for piece in wire.chunks(7000) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.write_all(&wire).await.unwrap();
    let mut correlation = Vec::new();
    for _ in 0..4 {
        let mut r = read_response(&mut s).await.expect("a response");
        let header =
            ResponseHeader::decode(&mut r, ApiKey::Produce.response_header_version(9)).unwrap();
        let p: ProduceResponse = ProduceResponse::decode(&mut r, 9).unwrap();
        assert_eq!(p.responses[0].partition_responses[0].error_code, 0);
        correlation.push(header.correlation_id);
    }
    assert_eq!(correlation, vec![1, 2, 1, 2]);
    let read = running.broker.topics.get("pieces").unwrap().partitions[0]
        .log
        .read(0, 10 << 20, true)
        .unwrap();
    let mut bytes = Bytes::from(read.bytes);
    let values: Vec<String> = RecordBatchDecoder::decode_all(&mut bytes)
        .unwrap()
        .iter()
        .flat_map(|b| b.records.iter())
        .map(|r| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap())
        .collect();
    let mut expected = big_values.clone();
    expected.push("tail".into());
    expected.extend(big_values);
    expected.push("tail".into());
    assert_eq!(values, expected);
}

/// connections.max.idle.ms: a connection that sends nothing is closed, one that keeps asking
/// is not, and a client that stops reading a large fetch answer is cut off.
#[tokio::test]
async fn idle_connections_and_clients_that_stop_reading_are_closed() {
    let running = start(BrokerConfig {
        connections_max_idle_ms: 400,
        ..Default::default()
    })
    .await;
    let mut silent = TcpStream::connect(running.addr).await.unwrap();
    let mut busy = TcpStream::connect(running.addr).await.unwrap();
    for _ in 0..8 {
        let r: ApiVersionsResponse = call(
            &mut busy,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        )
        .await;
        assert_eq!(r.error_code, 0);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // 1.2 s have passed: the silent one is gone, the busy one still answers.
    assert!(closed(&mut silent).await, "an idle connection stays open");
    still_serving(running.addr).await;

    // About 20 MB in one partition, then a fetch of all of it that the client never reads.
    let value = "r".repeat(100_000);
    let values: Vec<&str> = (0..20).map(|_| value.as_str()).collect();
    let mut w = TcpStream::connect(running.addr).await.unwrap();
    for _ in 0..10 {
        assert_eq!(produce(&mut w, "big", 1, Some(batch(&values))).await.0, 0);
    }
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("big")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(50 << 20)])]);
    let mut stuck = TcpStream::connect(running.addr).await.unwrap();
    stuck
        .write_all(&frame(ApiKey::Fetch, 12, 1, &fetch))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The broker gave up: draining what reached the socket ends in EOF or a reset, short of
    // the whole answer.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut stuck, &mut buf),
        )
        .await
        .expect("the broker closes the connection")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < 20_000_000, "{got} bytes arrived");
    still_serving(running.addr).await;
}

/// A batch with records a compacted topic refuses (no key) is refused whole, as in Kafka, and
/// ProduceResponse v8+ names those records (`record_errors`, KIP-467), so a client fails only
/// them with INVALID_RECORD (librdkafka's 0011_produce_batch).
#[tokio::test]
async fn a_compacted_topic_names_the_records_without_a_key() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::records::Compression;
    use kappa_log::records::{encode_batch, plain_record};
    let running = start(BrokerConfig::default()).await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("compacted")))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("cleanup.policy"))
            .with_value(Some(StrBytes::from_static_str("compact")))])]);
    let r: CreateTopicsResponse = call(&mut s, ApiKey::CreateTopics, 7, &create).await;
    assert_eq!(r.topics[0].error_code, 0);
    let records: Vec<_> = (0..20)
        .map(|i| {
            let key = (i % 10 != 0).then(|| Bytes::from(format!("k{i}")));
            let mut r = plain_record(i, 1_000, key, Some(Bytes::from_static(b"v")));
            // One batch: offset - sequence constant, base sequence -1 (no producer).
            r.sequence = i as i32 - 1;
            r
        })
        .collect();
    let records = encode_batch(&records, Compression::None).unwrap().freeze();
    for version in [7, 8, 9] {
        let r: ProduceResponse = call(
            &mut s,
            ApiKey::Produce,
            version,
            &produce_request("compacted", 1, Some(records.clone())),
        )
        .await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, ResponseError::InvalidRecord.code());
        if version >= 8 {
            let indices: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
            assert_eq!(indices, vec![0, 10], "v{version}");
            assert!(p.record_errors.iter().all(|e| e
                .batch_index_error_message
                .as_ref()
                .is_some_and(|m| m.contains("key"))));
            assert!(p.error_message.is_some());
        } else {
            assert!(p.record_errors.is_empty());
        }
    }
    assert_eq!(end_offset(&running, "compacted"), 0);
}
