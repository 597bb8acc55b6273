//! Tables and views: their definitions as written, and what Kappa derives from them
//! (Arrow schemas, connector settings).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast::DataType as SqlType;
use kappa_stream::format::FormatKind;
use kappa_stream::pipeline::{BadRecordPolicy, SourceColumn, StartupMode};

use crate::parser::{CreateTable, SqlError};

/// A declared table.
#[derive(Debug, Clone)]
pub struct Table {
    pub def: CreateTable,
    /// The `CREATE TABLE` statement as written, persisted and re-parsed on start.
    pub sql: String,
    pub schema: SchemaRef,
    pub connector: KafkaOptions,
}

#[derive(Debug, Clone)]
pub struct View {
    pub name: String,
    pub query_sql: String,
    pub sql: String,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub tables: BTreeMap<String, Table>,
    /// In creation order: a view only refers to what existed before it.
    pub views: Vec<View>,
}

impl Catalog {
    pub fn view(&self, name: &str) -> Option<&View> {
        self.views.iter().find(|v| v.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct KafkaOptions {
    pub topic: String,
    pub format: FormatKind,
    pub csv_delimiter: u8,
    pub key: Option<(FormatKind, Vec<String>)>,
    /// `'value.fields-include' = 'EXCEPT_KEY'`: the value leaves out the key's fields.
    pub value_except_key: bool,
    pub startup: StartupMode,
    pub idle_timeout: Option<Duration>,
    pub group_id: Option<String>,
    /// librdkafka properties (`properties.*` without the prefix).
    pub properties: Vec<(String, String)>,
    pub bad_records: BadRecordPolicy,
    pub fail_on_missing_field: bool,
}

/// Maps a SQL type as Flink writes it to Arrow.
pub fn arrow_type(t: &SqlType) -> Result<DataType, String> {
    let text = t.to_string().to_ascii_uppercase();
    let (base, params) = match text.find('(') {
        Some(i) => (
            text[..i].trim().to_string(),
            text[i + 1..].trim_end_matches(')').to_string(),
        ),
        None => (text.trim().to_string(), String::new()),
    };
    let nums: Vec<u64> = params
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let precision = |default: u64| nums.first().copied().unwrap_or(default);
    Ok(match base.as_str() {
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "FLOAT" | "REAL" => DataType::Float32,
        "DOUBLE" | "DOUBLE PRECISION" => DataType::Float64,
        "DECIMAL" | "NUMERIC" | "DEC" => {
            let p = precision(10).min(38) as u8;
            let s = nums.get(1).copied().unwrap_or(0).min(p as u64) as i8;
            DataType::Decimal128(p, s)
        }
        "VARCHAR" | "STRING" | "CHAR" | "TEXT" | "CHARACTER VARYING" | "CHARACTER" => {
            DataType::Utf8
        }
        "BYTES" | "VARBINARY" | "BINARY" | "BYTEA" => DataType::Binary,
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "TIMESTAMP WITHOUT TIME ZONE" => {
            DataType::Timestamp(timestamp_unit(precision(6)), None)
        }
        "TIMESTAMP_LTZ" | "TIMESTAMP WITH LOCAL TIME ZONE" | "TIMESTAMP WITH TIME ZONE" => {
            DataType::Timestamp(timestamp_unit(precision(6)), Some("UTC".into()))
        }
        _ if base.starts_with("TIMESTAMP") && base.ends_with("WITH LOCAL TIME ZONE") => {
            DataType::Timestamp(timestamp_unit(precision(6)), Some("UTC".into()))
        }
        _ => return Err(format!("unsupported type {t}")),
    })
}

fn timestamp_unit(precision: u64) -> TimeUnit {
    match precision {
        0..=3 => TimeUnit::Millisecond,
        4..=6 => TimeUnit::Microsecond,
        _ => TimeUnit::Nanosecond,
    }
}

/// Builds a table from its definition, checking columns and connector options.
pub fn table_from_def(def: CreateTable, sql: String) -> Result<Table, SqlError> {
    let mut fields = Vec::new();
    for c in &def.columns {
        if fields.iter().any(|f: &Field| f.name() == &c.name) {
            return Err(SqlError::new(
                format!("duplicate column '{}'", c.name),
                c.span.start,
            ));
        }
        let dt = arrow_type(&c.data_type).map_err(|m| SqlError::new(m, c.span.start))?;
        let dt = match c.metadata.as_deref() {
            None => dt,
            Some("timestamp") | Some("partition") | Some("offset") => dt,
            Some(other) => {
                return Err(SqlError::new(
                    format!(
                        "unknown metadata key '{other}' (supported: timestamp, partition, offset)"
                    ),
                    c.span.start,
                ))
            }
        };
        // NOT NULL is accepted but not enforced: a missing field decodes as NULL
        fields.push(Field::new(&c.name, dt, true));
    }
    let schema = Arc::new(Schema::new(fields));
    if let Some(wm) = &def.watermark {
        match schema.field_with_name(&wm.column) {
            Ok(f) if matches!(f.data_type(), DataType::Timestamp(..)) => {}
            Ok(f) => {
                return Err(SqlError::new(
                    format!(
                    "the rowtime column '{}' must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), but is {}",
                    wm.column,
                    f.data_type()
                ),
                    wm.span.start,
                ))
            }
            Err(_) => {
                return Err(SqlError::new(
                    format!(
                        "the rowtime attribute field '{}' is not defined in the table schema",
                        wm.column
                    ),
                    wm.span.start,
                ))
            }
        }
    }
    let connector = kafka_options(&def, &schema)
        .map_err(|m| SqlError::unpositioned(format!("table '{}': {m}", def.name)))?;
    Ok(Table {
        def,
        sql,
        schema,
        connector,
    })
}

fn kafka_options(def: &CreateTable, schema: &SchemaRef) -> Result<KafkaOptions, String> {
    let o = &def.options;
    match o.get("connector").map(String::as_str) {
        Some("kafka") => {}
        Some(other) => {
            return Err(format!(
                "connector '{other}' is not supported (supported: 'kafka')"
            ))
        }
        None => return Err("missing option 'connector' (use 'connector' = 'kafka')".into()),
    }
    let known_prefixes = [
        "properties.",
        "json.",
        "csv.",
        "key.",
        "value.",
        "scan.",
        "sink.",
    ];
    let known = ["connector", "topic", "format", "dead-letter.topic"];
    for k in o.keys() {
        if !known.contains(&k.as_str()) && !known_prefixes.iter().any(|p| k.starts_with(p)) {
            return Err(format!("unsupported option '{k}'"));
        }
    }
    let topic = o.get("topic").cloned().ok_or("missing option 'topic'")?;
    if topic.is_empty() || topic.contains(';') {
        return Err("option 'topic' names one topic".into());
    }
    let format_name = o
        .get("value.format")
        .or_else(|| o.get("format"))
        .ok_or("missing option 'format' ('json', 'csv' or 'raw')")?;
    let format = FormatKind::parse(format_name)
        .ok_or_else(|| format!("unsupported format '{format_name}' (supported: json, csv, raw)"))?;
    let csv_delimiter = match o.get("csv.field-delimiter") {
        Some(d) if d.len() == 1 => d.as_bytes()[0],
        Some(d) => {
            return Err(format!(
                "'csv.field-delimiter' must be one character, not '{d}'"
            ))
        }
        None => b',',
    };
    let key = match o.get("key.fields") {
        Some(fields) => {
            let names: Vec<String> = fields
                .split(';')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            for n in &names {
                if schema.field_with_name(n).is_err() {
                    return Err(format!("'key.fields' names unknown column '{n}'"));
                }
            }
            let kf = o.get("key.format").map(String::as_str).unwrap_or("json");
            let kind =
                FormatKind::parse(kf).ok_or_else(|| format!("unsupported key.format '{kf}'"))?;
            Some((kind, names))
        }
        None => None,
    };
    let startup = match o.get("scan.startup.mode").map(String::as_str) {
        None | Some("group-offsets") => StartupMode::GroupOffsets,
        Some("earliest-offset") => StartupMode::Earliest,
        Some("latest-offset") => StartupMode::Latest,
        Some("timestamp") => StartupMode::Timestamp(
            o.get("scan.startup.timestamp-millis")
                .and_then(|t| t.parse().ok())
                .ok_or("'scan.startup.mode' = 'timestamp' needs 'scan.startup.timestamp-millis'")?,
        ),
        Some(other) => {
            return Err(format!(
                "unsupported scan.startup.mode '{other}' (earliest-offset, latest-offset, group-offsets, timestamp)"
            ))
        }
    };
    let idle_timeout = match o.get("scan.watermark.idle-timeout") {
        Some(t) => Some(parse_duration(t)?),
        None => None,
    };
    let flag = |k: &str| -> Result<bool, String> {
        match o.get(k).map(|v| v.to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(v) => Err(format!("'{k}' must be 'true' or 'false', not '{v}'")),
        }
    };
    let bad_records = match (
        o.get("dead-letter.topic"),
        flag("json.ignore-parse-errors")? || flag("csv.ignore-parse-errors")?,
    ) {
        (Some(t), _) => BadRecordPolicy::DeadLetter(t.clone()),
        (None, true) => BadRecordPolicy::Skip,
        (None, false) => BadRecordPolicy::Fail,
    };
    let properties: Vec<(String, String)> = o
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("properties.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .filter(|(k, _)| k != "group.id")
        .collect();
    let value_except_key = match o
        .get("value.fields-include")
        .map(|v| v.to_ascii_uppercase())
    {
        None => false,
        Some(v) if v == "ALL" => false,
        Some(v) if v == "EXCEPT_KEY" => {
            if key.is_none() {
                return Err("'value.fields-include' = 'EXCEPT_KEY' needs 'key.fields'".into());
            }
            true
        }
        Some(v) => {
            return Err(format!(
                "'value.fields-include' must be ALL or EXCEPT_KEY, not '{v}'"
            ))
        }
    };
    Ok(KafkaOptions {
        value_except_key,
        topic,
        format,
        csv_delimiter,
        key,
        startup,
        idle_timeout,
        group_id: o.get("properties.group.id").cloned(),
        properties,
        bad_records,
        fail_on_missing_field: flag("json.fail-on-missing-field")?,
    })
}

/// Durations as Flink writes them: `5 s`, `500 ms`, `1 min`, `5000` (milliseconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad duration '{text}'"))?;
    let unit_ms: u64 = match unit.trim() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000,
        "min" | "m" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        other => return Err(format!("bad duration unit '{other}' in '{text}'")),
    };
    let ms = n
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("duration '{text}' is too long"))?;
    Ok(Duration::from_millis(ms))
}

/// Where each of a source table's columns comes from, and the physical value schema.
pub fn source_layout(table: &Table) -> (Vec<SourceColumn>, SchemaRef) {
    let mut columns = Vec::new();
    let mut value_fields = Vec::new();
    for (c, f) in table.def.columns.iter().zip(table.schema.fields()) {
        columns.push(match c.metadata.as_deref() {
            Some("timestamp") => SourceColumn::Timestamp,
            Some("partition") => SourceColumn::Partition,
            Some("offset") => SourceColumn::Offset,
            _ => {
                let mut field = f.as_ref().clone();
                if !table.connector.fail_on_missing_field {
                    field = field.with_nullable(true);
                }
                value_fields.push(field);
                SourceColumn::Value(value_fields.len() - 1)
            }
        });
    }
    (columns, Arc::new(Schema::new(value_fields)))
}
