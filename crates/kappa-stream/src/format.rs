//! Record formats: Kafka message bytes to Arrow batches (`json`, `csv`, `raw`) and back.
//! Decoding takes a whole batch of messages at once; only when that fails does it look at
//! messages one by one to tell the bad ones from the good.

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion::arrow::json::writer::{make_encoder, EncoderOptions, NullableEncoder};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StreamError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FormatKind {
    Json,
    Csv,
    Raw,
}

impl FormatKind {
    pub fn parse(name: &str) -> Option<FormatKind> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(FormatKind::Json),
            "csv" => Some(FormatKind::Csv),
            "raw" => Some(FormatKind::Raw),
            _ => None,
        }
    }
}

/// Timestamps as Flink's JSON and CSV formats write them (`SQL` standard).
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";
pub const TIMESTAMP_LTZ_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3fZ";

/// The outcome of decoding a batch of messages.
pub struct Decoded {
    /// The good records, in message order.
    pub batch: Option<RecordBatch>,
    /// Which message each row of `batch` came from; `None` when every message decoded.
    pub rows: Option<Vec<usize>>,
    /// Messages that did not decode, with the reason.
    pub bad: Vec<(usize, String)>,
}

pub struct RecordDecoder {
    kind: FormatKind,
    schema: SchemaRef,
    csv_delimiter: u8,
}

impl RecordDecoder {
    pub fn new(kind: FormatKind, schema: SchemaRef, csv_delimiter: u8) -> Result<Self> {
        if kind == FormatKind::Raw
            && (schema.fields().len() != 1
                || !matches!(
                    schema.field(0).data_type(),
                    DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 | DataType::LargeBinary
                ))
        {
            return Err(StreamError::Config(
                "the 'raw' format needs exactly one physical column of type STRING or BYTES".into(),
            ));
        }
        Ok(RecordDecoder {
            kind,
            schema,
            csv_delimiter,
        })
    }

    pub fn decode(&self, messages: &[&[u8]]) -> Result<Decoded> {
        if let Ok(batch) = self.decode_all(messages) {
            return Ok(Decoded {
                batch: Some(batch),
                rows: None,
                bad: Vec::new(),
            });
        }
        // slow path: find the bad messages, then decode the good ones together
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match self.decode_all(std::slice::from_ref(m)) {
                Ok(_) => good.push(i),
                Err(e) => bad.push((i, e)),
            }
        }
        let batch = if good.is_empty() {
            None
        } else {
            let msgs: Vec<&[u8]> = good.iter().map(|&i| messages[i]).collect();
            Some(self.decode_all(&msgs).map_err(StreamError::Source)?)
        };
        Ok(Decoded {
            batch,
            rows: Some(good),
            bad,
        })
    }

    fn decode_all(&self, messages: &[&[u8]]) -> std::result::Result<RecordBatch, String> {
        match self.kind {
            FormatKind::Json => self.decode_json(messages),
            FormatKind::Csv => self.decode_csv(messages),
            FormatKind::Raw => self.decode_raw(messages),
        }
    }

    fn decode_json(&self, messages: &[&[u8]]) -> std::result::Result<RecordBatch, String> {
        let mut decoder = datafusion::arrow::json::ReaderBuilder::new(self.schema.clone())
            .with_batch_size(messages.len().max(1))
            .build_decoder()
            .map_err(|e| e.to_string())?;
        for (i, m) in messages.iter().enumerate() {
            let consumed = decoder.decode(m).map_err(|e| e.to_string())?;
            if consumed != m.len() && !m[consumed..].iter().all(u8::is_ascii_whitespace) {
                return Err("more than one JSON value in the message".into());
            }
            if decoder.has_partial_record() {
                return Err("incomplete JSON object".into());
            }
            if decoder.len() != i + 1 {
                return Err("the message is not one JSON object".into());
            }
        }
        finish(decoder.flush(), messages.len(), &self.schema)
    }

    fn decode_csv(&self, messages: &[&[u8]]) -> std::result::Result<RecordBatch, String> {
        let mut decoder = datafusion::arrow::csv::ReaderBuilder::new(self.schema.clone())
            .with_header(false)
            .with_delimiter(self.csv_delimiter)
            .with_batch_size(messages.len().max(1))
            .build_decoder();
        for m in messages {
            let line = m.strip_suffix(b"\n").unwrap_or(m);
            if line.contains(&b'\n') {
                return Err("a CSV message must be one line".into());
            }
            let mut rest: &[u8] = line;
            while !rest.is_empty() {
                let n = decoder.decode(rest).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("CSV decoder made no progress".into());
                }
                rest = &rest[n..];
            }
            decoder.decode(b"\n").map_err(|e| e.to_string())?;
        }
        finish(decoder.flush(), messages.len(), &self.schema)
    }

    fn decode_raw(&self, messages: &[&[u8]]) -> std::result::Result<RecordBatch, String> {
        let column: ArrayRef = match self.schema.field(0).data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => {
                let strings = messages
                    .iter()
                    .map(|m| std::str::from_utf8(m).map_err(|e| format!("not UTF-8: {e}")))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                datafusion::arrow::compute::cast(
                    &StringArray::from(strings),
                    self.schema.field(0).data_type(),
                )
                .map_err(|e| e.to_string())?
            }
            _ => datafusion::arrow::compute::cast(
                &BinaryArray::from(messages.to_vec()),
                self.schema.field(0).data_type(),
            )
            .map_err(|e| e.to_string())?,
        };
        RecordBatch::try_new(self.schema.clone(), vec![column]).map_err(|e| e.to_string())
    }
}

fn finish(
    flushed: std::result::Result<Option<RecordBatch>, datafusion::arrow::error::ArrowError>,
    expected: usize,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, String> {
    let batch = flushed
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    if batch.num_rows() != expected {
        return Err(format!(
            "decoded {} records from {expected} messages",
            batch.num_rows()
        ));
    }
    Ok(batch)
}

/// Encodes rows of a batch, all into one buffer (no allocation per record).
pub struct RecordEncoder {
    kind: FormatKind,
    csv_delimiter: u8,
    json_options: EncoderOptions,
    format_options: FormatOptions<'static>,
}

/// Encoded records: record `i` is `buf[ends[i-1]..ends[i]]`.
#[derive(Default)]
pub struct Encoded {
    pub buf: Vec<u8>,
    pub ends: Vec<usize>,
}

impl Encoded {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl RecordEncoder {
    pub fn new(kind: FormatKind, csv_delimiter: u8) -> Self {
        RecordEncoder {
            kind,
            csv_delimiter,
            json_options: EncoderOptions::default()
                .with_explicit_nulls(true)
                .with_timestamp_format(TIMESTAMP_FORMAT.into())
                .with_timestamp_tz_format(TIMESTAMP_LTZ_FORMAT.into()),
            format_options: FormatOptions::new()
                .with_timestamp_format(Some(TIMESTAMP_FORMAT))
                .with_timestamp_tz_format(Some(TIMESTAMP_LTZ_FORMAT)),
        }
    }

    /// Encodes `columns` of every row of `batch`, appending to `out`.
    pub fn encode(&self, batch: &RecordBatch, columns: &[usize], out: &mut Encoded) -> Result<()> {
        let schema = batch.schema();
        match self.kind {
            FormatKind::Json => {
                let fields: Vec<FieldRef> = columns
                    .iter()
                    .map(|&c| schema.fields()[c].clone())
                    .collect();
                let names: Vec<Vec<u8>> = fields
                    .iter()
                    .map(|f| {
                        let mut n = serde_json::to_vec(f.name()).unwrap_or_default();
                        n.push(b':');
                        n
                    })
                    .collect();
                let mut encoders: Vec<NullableEncoder<'_>> = Vec::with_capacity(columns.len());
                for (f, &c) in fields.iter().zip(columns) {
                    encoders.push(make_encoder(
                        f,
                        batch.column(c).as_ref(),
                        &self.json_options,
                    )?);
                }
                for row in 0..batch.num_rows() {
                    out.buf.push(b'{');
                    for (i, enc) in encoders.iter_mut().enumerate() {
                        if i > 0 {
                            out.buf.push(b',');
                        }
                        out.buf.extend_from_slice(&names[i]);
                        if enc.is_null(row) {
                            out.buf.extend_from_slice(b"null");
                        } else {
                            enc.encode(row, &mut out.buf);
                        }
                    }
                    out.buf.push(b'}');
                    out.ends.push(out.buf.len());
                }
            }
            FormatKind::Csv => {
                let formatters = columns
                    .iter()
                    .map(|&c| {
                        ArrayFormatter::try_new(batch.column(c).as_ref(), &self.format_options)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let mut cell = String::new();
                for row in 0..batch.num_rows() {
                    for (i, (f, &c)) in formatters.iter().zip(columns).enumerate() {
                        if i > 0 {
                            out.buf.push(self.csv_delimiter);
                        }
                        if batch.column(c).is_null(row) {
                            continue;
                        }
                        cell.clear();
                        use std::fmt::Write;
                        let _ = write!(cell, "{}", f.value(row));
                        let needs_quotes = cell.bytes().any(|b| {
                            b == self.csv_delimiter || b == b'"' || b == b'\n' || b == b'\r'
                        });
                        if needs_quotes {
                            out.buf.push(b'"');
                            out.buf
                                .extend_from_slice(cell.replace('"', "\"\"").as_bytes());
                            out.buf.push(b'"');
                        } else {
                            out.buf.extend_from_slice(cell.as_bytes());
                        }
                    }
                    out.ends.push(out.buf.len());
                }
            }
            FormatKind::Raw => {
                let [c] = columns else {
                    return Err(StreamError::Config(
                        "the 'raw' format writes exactly one column".into(),
                    ));
                };
                let column = batch.column(*c);
                let as_binary = datafusion::arrow::compute::cast(column, &DataType::Binary)?;
                let bytes = as_binary
                    .as_any()
                    .downcast_ref::<BinaryArray>()
                    .expect("cast to binary yields a binary array");
                for row in 0..batch.num_rows() {
                    if !bytes.is_null(row) {
                        out.buf.extend_from_slice(bytes.value(row));
                    }
                    out.ends.push(out.buf.len());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    #[test]
    fn json_batch_with_bad_messages_keeps_the_good_ones_in_order() {
        let d = RecordDecoder::new(FormatKind::Json, schema(), b',').unwrap();
        let msgs: Vec<&[u8]> = vec![
            br#"{"id": 1, "name": "a", "ts": "2024-01-01 00:00:01.500"}"#,
            br#"{"id": "abc"}"#,
            b"not json",
            br#"{"id": 3, "ts": 1704067200000}"#,
            br#"{"id": 4"#,
            br#"{"id": 5}{"id": 6}"#,
            br#"{"id": 7, "extra": [1,2]}"#,
        ];
        let out = d.decode(&msgs).unwrap();
        assert_eq!(out.rows, Some(vec![0, 3, 6]));
        assert_eq!(
            out.bad.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![1, 2, 4, 5]
        );
        let b = out.batch.unwrap();
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 3, 7]);
        let ts = b
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_704_067_201_500);
        assert_eq!(ts.value(1), 1_704_067_200_000);
        assert!(ts.is_null(2));
    }

    #[test]
    fn json_round_trip_writes_flink_sql_timestamps_and_nulls() {
        let d = RecordDecoder::new(FormatKind::Json, schema(), b',').unwrap();
        let msgs: Vec<&[u8]> = vec![
            br#"{"id": 1, "name": "q\"x", "ts": "2024-01-01T00:00:01.5Z"}"#,
            br#"{"id": 2}"#,
        ];
        let b = d.decode(&msgs).unwrap().batch.unwrap();
        let mut out = Encoded::default();
        RecordEncoder::new(FormatKind::Json, b',')
            .encode(&b, &[0, 1, 2], &mut out)
            .unwrap();
        assert_eq!(
            std::str::from_utf8(out.get(0)).unwrap(),
            r#"{"id":1,"name":"q\"x","ts":"2024-01-01 00:00:01.500"}"#
        );
        assert_eq!(
            std::str::from_utf8(out.get(1)).unwrap(),
            r#"{"id":2,"name":null,"ts":null}"#
        );
    }

    #[test]
    fn csv_and_raw() {
        let d = RecordDecoder::new(FormatKind::Csv, schema(), b',').unwrap();
        let msgs: Vec<&[u8]> = vec![b"1,a,2024-01-01 00:00:00", b"x,b,", b"3,\"c,d\",\n"];
        let out = d.decode(&msgs).unwrap();
        assert_eq!(out.rows, Some(vec![0, 2]));
        let b = out.batch.unwrap();
        let mut enc = Encoded::default();
        RecordEncoder::new(FormatKind::Csv, b',')
            .encode(&b, &[0, 1, 2], &mut enc)
            .unwrap();
        assert_eq!(
            std::str::from_utf8(enc.get(0)).unwrap(),
            "1,a,2024-01-01 00:00:00.000"
        );
        assert_eq!(std::str::from_utf8(enc.get(1)).unwrap(), "3,\"c,d\",");

        let raw_schema = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]));
        let raw = RecordDecoder::new(FormatKind::Raw, raw_schema, b',').unwrap();
        let out = raw.decode(&[b"hello", b"\xff\xfe"]).unwrap();
        assert_eq!(out.rows, Some(vec![0]));
        assert!(RecordDecoder::new(FormatKind::Raw, schema(), b',').is_err());
    }
}
