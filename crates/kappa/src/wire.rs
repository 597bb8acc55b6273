//! A small blocking Kafka protocol connection (kafka-protocol's codecs over a TcpStream): what
//! the native bench producer and the admin commands librdkafka has no API for (`kappa txn`)
//! speak to a broker with.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub const CLIENT_ID: &str = "kappa";
/// Largest response frame this client reads.
const MAX_RESPONSE: usize = 64 << 20;

/// One blocking connection to a broker, with the API versions it supports.
pub struct BrokerConnection {
    pub address: String,
    pub stream: TcpStream,
    versions: HashMap<i16, (i16, i16)>,
    pub correlation_id: i32,
}

impl BrokerConnection {
    pub fn open(address: &str) -> anyhow::Result<BrokerConnection> {
        let stream =
            TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        let mut conn = BrokerConnection {
            address: address.to_string(),
            stream,
            versions: HashMap::new(),
            correlation_id: 0,
        };
        let response: ApiVersionsResponse =
            conn.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        if let Some(e) = response.error_code.err() {
            bail!("ApiVersions to {address}: {e}");
        }
        conn.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    pub fn try_clone(&self) -> anyhow::Result<BrokerConnection> {
        Ok(BrokerConnection {
            address: self.address.clone(),
            stream: self.stream.try_clone()?,
            versions: self.versions.clone(),
            correlation_id: self.correlation_id,
        })
    }

    /// The highest version of `api` both sides speak, within `lowest..=highest`.
    pub fn version(&self, api: ApiKey, lowest: i16, highest: i16) -> anyhow::Result<i16> {
        let (min, max) = self
            .versions
            .get(&(api as i16))
            .copied()
            .with_context(|| format!("{} does not support {api:?}", self.address))?;
        let v = max.min(highest);
        if v < lowest.max(min) {
            bail!(
                "{} supports {api:?} versions {min}..={max}, this client {lowest}..={highest}",
                self.address
            );
        }
        Ok(v)
    }

    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &Req,
    ) -> anyhow::Result<Resp> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let mut frame = BytesMut::new();
        encode_frame(&mut frame, api, version, self.correlation_id, body)?;
        self.stream
            .write_all(&frame)
            .with_context(|| format!("sending {api:?} to {}", self.address))?;
        let expected = self.correlation_id;
        let mut reader = &self.stream;
        read_answer(&mut reader, api, version, expected, &self.address)
    }
}

/// Encodes a request frame into `buf` (cleared first).
pub fn encode_frame<T: Encodable>(
    buf: &mut BytesMut,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> anyhow::Result<()> {
    buf.clear();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(buf, api.request_header_version(version))?;
    body.encode(buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads one response frame and decodes it, checking its correlation id.
pub fn read_answer<R: Read, Resp: Decodable>(
    stream: &mut R,
    api: ApiKey,
    version: i16,
    expected: i32,
    address: &str,
) -> anyhow::Result<Resp> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .with_context(|| format!("reading the answer to {api:?} from {address}"))?;
    let len = i32::from_be_bytes(len);
    if len < 4 || len as usize > MAX_RESPONSE {
        bail!("{address} answered {api:?} with a frame of {len} bytes");
    }
    let mut buf = vec![0u8; len as usize];
    stream
        .read_exact(&mut buf)
        .with_context(|| format!("reading the answer to {api:?} from {address}"))?;
    let mut bytes = Bytes::from(buf);
    let header = ResponseHeader::decode(&mut bytes, api.response_header_version(version))
        .with_context(|| format!("decoding {api:?} answer header from {address}"))?;
    if header.correlation_id != expected {
        bail!(
            "{address} answered correlation id {} where {expected} was due",
            header.correlation_id
        );
    }
    let response = Resp::decode(&mut bytes, version)
        .with_context(|| format!("decoding {api:?} answer from {address}"))?;
    if bytes.has_remaining() {
        bail!(
            "{address}: {} bytes left over after {api:?} answer",
            bytes.remaining()
        );
    }
    Ok(response)
}
