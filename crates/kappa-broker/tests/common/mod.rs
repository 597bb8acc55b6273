//! Helpers shared by the broker's integration tests: an in-process broker on a free port and
//! raw Kafka requests encoded with kafka-protocol.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;
use kappa_broker::{Broker, BrokerConfig};
use kappa_log::records::{encode_batch, plain_record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Running {
    pub broker: Arc<Broker>,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

pub async fn start(config: BrokerConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: addr.to_string(),
        ..config
    };
    let broker = Broker::open(config).unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(broker.clone().serve(listener, rx));
    Running {
        broker,
        addr,
        _dir: dir,
        _stop: stop,
    }
}

pub fn frame<T: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &T) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("bad-input-test")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf
}

/// Reads one response; `None` when the broker closed the connection.
pub async fn read_response(stream: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut len))
        .await
        .expect("broker answers or closes within 10 s")
        .ok()?;
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await.ok()?;
    Some(Bytes::from(buf))
}

pub async fn call<Req: Encodable, Resp: Decodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    body: &Req,
) -> Resp {
    stream
        .write_all(&frame(api, version, 7, body))
        .await
        .unwrap();
    let mut bytes = read_response(stream).await.expect("a response");
    let header = ResponseHeader::decode(&mut bytes, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    Resp::decode(&mut bytes, version).unwrap()
}

pub async fn still_serving(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    )
    .await;
    assert_eq!(r.error_code, 0);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

pub async fn closed(stream: &mut TcpStream) -> bool {
    read_response(stream).await.is_none()
}

pub fn batch(values: &[&str]) -> Bytes {
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            plain_record(
                i as i64,
                1_000 + i as i64,
                None,
                Some(Bytes::copy_from_slice(v.as_bytes())),
            )
        })
        .collect();
    encode_batch(&records, Compression::None).unwrap().freeze()
}

pub fn produce_request(topic: &str, acks: i16, records: Option<Bytes>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(records)])])
}

pub async fn produce(
    stream: &mut TcpStream,
    topic: &str,
    acks: i16,
    records: Option<Bytes>,
) -> (i16, i64) {
    let r: ProduceResponse = call(
        stream,
        ApiKey::Produce,
        9,
        &produce_request(topic, acks, records),
    )
    .await;
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub fn end_offset(running: &Running, topic: &str) -> i64 {
    running.broker.topics.get(topic).unwrap().partitions[0]
        .log
        .end_offset()
}
