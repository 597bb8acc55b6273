//! Tables and views: their definitions as written, and what Kappa derives from them
//! (Arrow schemas, connector settings).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast::DataType as SqlType;
use kappa_stream::format::FormatKind;
use kappa_stream::pipeline::{BadRecordPolicy, SourceColumn, StartupMode};
use serde::{Deserialize, Serialize};

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
    /// `'connector' = 'upsert-kafka'`: the table is a changelog keyed by its PRIMARY KEY (the
    /// message key, in `key`): a record upserts its key's row, a tombstone (NULL value)
    /// deletes it; written, an update is the new row, a delete is a tombstone.
    pub upsert: bool,
    /// `'key.fields-prefix'`: the key columns' names start with it; in the message key the
    /// fields are named without it. Only with `'value.fields-include' = 'EXCEPT_KEY'`.
    pub key_fields_prefix: Option<String>,
    /// `'sink.delivery-guarantee'` (default at-least-once).
    pub delivery_guarantee: DeliveryGuarantee,
    /// `'sink.transactional-id-prefix'`: with exactly-once, the prefix of the Kafka
    /// transactional ids; when absent Kappa derives one from the pipeline id.
    pub transactional_id_prefix: Option<String>,
}

/// What a Kafka sink promises about its records (Flink's `sink.delivery-guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryGuarantee {
    /// `exactly-once`: records are written in Kafka transactions committed with the input
    /// offsets; a `read_committed` reader sees each record once.
    ExactlyOnce,
    /// `at-least-once`: after a failure records may be written again, never lost.
    #[default]
    AtLeastOnce,
    /// `none`: records may be lost or duplicated.
    None,
}

impl DeliveryGuarantee {
    /// Flink's values, case-insensitively.
    pub fn parse(text: &str) -> Option<DeliveryGuarantee> {
        match text.trim().to_ascii_lowercase().as_str() {
            "exactly-once" => Some(DeliveryGuarantee::ExactlyOnce),
            "at-least-once" => Some(DeliveryGuarantee::AtLeastOnce),
            "none" => Some(DeliveryGuarantee::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryGuarantee::ExactlyOnce => "exactly-once",
            DeliveryGuarantee::AtLeastOnce => "at-least-once",
            DeliveryGuarantee::None => "none",
        }
    }
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

/// The format options Kappa implements, by format (without the `json.`/`csv.` prefix).
fn format_options(format: FormatKind) -> (&'static str, &'static [&'static str]) {
    match format {
        FormatKind::Json => ("json", &["fail-on-missing-field", "ignore-parse-errors"]),
        FormatKind::Csv => ("csv", &["field-delimiter", "ignore-parse-errors"]),
        FormatKind::Raw => ("raw", &[]),
    }
}

/// The options a connector implements, given the value format and how it was named
/// (`format` or `value.format`); `properties.*` stands for any librdkafka property.
fn supported_options(upsert: bool, format: FormatKind, via_value_format: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "connector",
        "topic",
        "properties.*",
        "key.format",
        "key.fields-prefix",
        "value.format",
        "value.fields-include",
        "sink.delivery-guarantee",
        "sink.transactional-id-prefix",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !upsert {
        // an upsert-kafka table is only written (reading it is not supported yet), so a
        // dead-letter topic for records that do not decode has nothing to do there
        v.extend(
            [
                "dead-letter.topic",
                "format",
                "key.fields",
                "scan.startup.mode",
                "scan.startup.timestamp-millis",
                "scan.watermark.idle-timeout",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
    }
    let (id, options) = format_options(format);
    for o in options {
        v.push(format!("{id}.{o}"));
        // Flink names a value format's options after the option that chose it
        // ('value.format' -> 'value.json.*'); Kappa also takes the short 'json.*'
        if via_value_format {
            v.push(format!("value.{id}.{o}"));
        }
    }
    v.sort();
    v
}

/// Refuses every option the connector does not implement, as Flink does.
fn check_supported(
    connector: &str,
    options: &BTreeMap<String, String>,
    supported: &[String],
) -> Result<(), String> {
    let unsupported: Vec<&str> = options
        .keys()
        .filter(|k| {
            let property = k.len() > "properties.".len() && k.starts_with("properties.");
            !property && !supported.contains(*k)
        })
        .map(String::as_str)
        .collect();
    if unsupported.is_empty() {
        return Ok(());
    }
    Err(format!(
        "Unsupported options found for '{connector}'.\n\nUnsupported options:\n\n{}\n\nSupported options:\n\n{}",
        unsupported.join("\n"),
        supported.join("\n")
    ))
}

fn one_topic(option: &str, topic: &str) -> Result<(), String> {
    if topic.trim().is_empty() || topic.contains(';') {
        return Err(format!("option '{option}' names one topic"));
    }
    Ok(())
}

/// Key columns must be distinct physical columns of the table.
fn check_key_columns(
    def: &CreateTable,
    schema: &SchemaRef,
    option: &str,
    names: &[String],
) -> Result<(), String> {
    for (i, n) in names.iter().enumerate() {
        if schema.field_with_name(n).is_err() {
            return Err(format!("'{option}' names unknown column '{n}'"));
        }
        if names[..i].contains(n) {
            return Err(format!("'{option}' names column '{n}' twice"));
        }
        if def
            .columns
            .iter()
            .any(|c| &c.name == n && c.metadata.is_some())
        {
            return Err(format!(
                "'{option}' names METADATA column '{n}': the key is made of physical columns"
            ));
        }
    }
    Ok(())
}

fn kafka_options(def: &CreateTable, schema: &SchemaRef) -> Result<KafkaOptions, String> {
    let o = &def.options;
    let upsert = match o.get("connector").map(String::as_str) {
        Some("kafka") => false,
        Some("upsert-kafka") => true,
        Some(other) => {
            return Err(format!(
                "connector '{other}' is not supported (supported: 'kafka', 'upsert-kafka')"
            ))
        }
        None => {
            return Err(
                "missing option 'connector' (use 'connector' = 'kafka' or 'upsert-kafka')".into(),
            )
        }
    };
    let connector = if upsert { "upsert-kafka" } else { "kafka" };
    let (format_name, via_value_format) = match (o.get("format"), o.get("value.format")) {
        (_, Some(f)) if upsert => (f, true),
        (_, None) if upsert => {
            return Err(
                "'upsert-kafka' needs option 'value.format' ('json', 'csv' or 'raw')".into(),
            )
        }
        (Some(_), Some(_)) => {
            return Err("options 'format' and 'value.format' name the same thing: give one".into())
        }
        (Some(f), None) => (f, false),
        (None, Some(f)) => (f, true),
        (None, None) => return Err("missing option 'format' ('json', 'csv' or 'raw')".into()),
    };
    let format = FormatKind::parse(format_name)
        .ok_or_else(|| format!("unsupported format '{format_name}' (supported: json, csv, raw)"))?;
    let key_format =
        match o.get("key.format") {
            Some(kf) => Some(FormatKind::parse(kf).ok_or_else(|| {
                format!("unsupported key.format '{kf}' (supported: json, csv, raw)")
            })?),
            None => None,
        };
    check_supported(
        connector,
        o,
        &supported_options(upsert, format, via_value_format),
    )?;

    let topic = o.get("topic").cloned().ok_or("missing option 'topic'")?;
    one_topic("topic", &topic)?;

    // a format option, under 'json.x' or (value format named by 'value.format') 'value.json.x'
    let (format_id, _) = format_options(format);
    let format_option = |name: &str| -> Result<Option<(String, &String)>, String> {
        let short = format!("{format_id}.{name}");
        let long = format!("value.{format_id}.{name}");
        match (o.get(&short), o.get(&long)) {
            (Some(_), Some(_)) => Err(format!(
                "options '{short}' and '{long}' name the same thing: give one"
            )),
            (Some(v), None) => Ok(Some((short, v))),
            (None, Some(v)) => Ok(Some((long, v))),
            (None, None) => Ok(None),
        }
    };
    let flag = |name: &str| -> Result<bool, String> {
        match format_option(name)? {
            None => Ok(false),
            Some((_, v)) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some((_, v)) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some((k, v)) => Err(format!("'{k}' must be 'true' or 'false', not '{v}'")),
        }
    };
    let csv_delimiter = match format_option("field-delimiter")? {
        Some((_, d)) if d.len() == 1 => d.as_bytes()[0],
        Some((k, d)) => return Err(format!("'{k}' must be one character, not '{d}'")),
        None => b',',
    };

    let key = if upsert {
        let Some(pk) = &def.primary_key else {
            return Err("'upsert-kafka' tables require to define a PRIMARY KEY constraint. The PRIMARY KEY specifies which columns should be read from or write to the Kafka message key. The PRIMARY KEY also defines records in the 'upsert-kafka' table should update or delete on which keys.".into());
        };
        let Some(kind) = key_format else {
            return Err("'upsert-kafka' needs option 'key.format' ('json', 'csv' or 'raw')".into());
        };
        check_key_columns(def, schema, "PRIMARY KEY", pk)?;
        Some((kind, pk.clone()))
    } else {
        if def.primary_key.is_some() {
            return Err(format!(
                "The Kafka table '{}' with '{format_name}' format doesn't support defining PRIMARY KEY constraint on the table, because it can't guarantee the semantic of primary key (a changelog keyed by its PRIMARY KEY is 'connector' = 'upsert-kafka')",
                def.name
            ));
        }
        match o.get("key.fields") {
            Some(fields) => {
                let names: Vec<String> = fields
                    .split(';')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err("'key.fields' names no column".into());
                }
                check_key_columns(def, schema, "key.fields", &names)?;
                Some((key_format.unwrap_or(FormatKind::Json), names))
            }
            None if key_format.is_some() => {
                return Err("A key format 'key.format' requires the declaration of one or more of key fields using 'key.fields'.".into())
            }
            None => None,
        }
    };
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
    let key_fields_prefix = match o.get("key.fields-prefix") {
        None => None,
        Some(p) if p.is_empty() => None,
        Some(p) => {
            let Some((_, names)) = &key else {
                return Err("'key.fields-prefix' needs 'key.fields'".into());
            };
            if !value_except_key {
                return Err("A key prefix is not allowed when option 'value.fields-include' is set to 'ALL'. Set it to 'EXCEPT_KEY' instead to avoid field overlaps.".into());
            }
            if let Some(n) = names
                .iter()
                .find(|n| !n.starts_with(p.as_str()) || n.len() == p.len())
            {
                return Err(format!(
                    "All key fields must be prefixed with '{p}' when option 'key.fields-prefix' is set but field '{n}' is not prefixed."
                ));
            }
            Some(p.clone())
        }
    };

    let startup = if upsert {
        // as Flink's upsert-kafka: the table is the whole changelog, read from the start
        StartupMode::Earliest
    } else {
        let timestamp = o.get("scan.startup.timestamp-millis");
        match o.get("scan.startup.mode").map(String::as_str) {
            Some("timestamp") => {
                let t = timestamp.ok_or(
                    "'scan.startup.mode' = 'timestamp' needs 'scan.startup.timestamp-millis'",
                )?;
                StartupMode::Timestamp(t.trim().parse().map_err(|_| {
                    format!(
                        "'scan.startup.timestamp-millis' must be milliseconds since the epoch, not '{t}'"
                    )
                })?)
            }
            _ if timestamp.is_some() => {
                return Err("'scan.startup.timestamp-millis' is only used with 'scan.startup.mode' = 'timestamp'".into())
            }
            None | Some("group-offsets") => StartupMode::GroupOffsets,
            Some("earliest-offset") => StartupMode::Earliest,
            Some("latest-offset") => StartupMode::Latest,
            Some(other) => {
                return Err(format!(
                    "unsupported scan.startup.mode '{other}' (earliest-offset, latest-offset, group-offsets, timestamp)"
                ))
            }
        }
    };
    let idle_timeout = match o.get("scan.watermark.idle-timeout") {
        Some(t) => Some(parse_duration(t)?),
        None => None,
    };

    let ignore_parse_errors = flag("ignore-parse-errors")?;
    let bad_records = match o.get("dead-letter.topic") {
        Some(t) => {
            one_topic("dead-letter.topic", t)?;
            if *t == topic {
                return Err("'dead-letter.topic' must differ from 'topic'".into());
            }
            if ignore_parse_errors {
                return Err(format!(
                    "'dead-letter.topic' and '{format_id}.ignore-parse-errors' = 'true' contradict each other: bad records go to the dead-letter topic or are skipped"
                ));
            }
            BadRecordPolicy::DeadLetter(t.clone())
        }
        None if ignore_parse_errors => BadRecordPolicy::Skip,
        None => BadRecordPolicy::Fail,
    };

    let delivery_guarantee = match o.get("sink.delivery-guarantee") {
        None => DeliveryGuarantee::default(),
        Some(v) => DeliveryGuarantee::parse(v).ok_or_else(|| {
            format!(
                "'sink.delivery-guarantee' must be 'exactly-once', 'at-least-once' or 'none', not '{v}'"
            )
        })?,
    };
    let transactional_id_prefix = match o.get("sink.transactional-id-prefix") {
        None => None,
        Some(p) if p.trim().is_empty() => {
            return Err("'sink.transactional-id-prefix' must not be empty".into())
        }
        Some(p) => Some(p.clone()),
    };

    let properties: Vec<(String, String)> = o
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("properties.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .filter(|(k, _)| k != "group.id")
        .collect();
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
        fail_on_missing_field: format == FormatKind::Json && flag("fail-on-missing-field")?,
        upsert,
        key_fields_prefix,
        delivery_guarantee,
        transactional_id_prefix,
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
        "d" | "day" | "days" => 86_400_000,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{parse_script, Statement};

    fn table(sql: &str) -> Result<Table, String> {
        let mut n = 0;
        let mut parsed = parse_script(sql, &mut n).map_err(|e| e.to_string())?;
        let Statement::CreateTable(def) = parsed.remove(0).statement else {
            panic!("not a CREATE TABLE: {sql}")
        };
        table_from_def(def, sql.to_string()).map_err(|e| e.message)
    }

    fn kafka(columns: &str, options: &str) -> Result<KafkaOptions, String> {
        table(&format!(
            "CREATE TABLE t ({columns}) WITH ('connector' = 'kafka', 'topic' = 't', {options})"
        ))
        .map(|t| t.connector)
    }

    fn upsert(columns: &str, options: &str) -> Result<KafkaOptions, String> {
        table(&format!(
            "CREATE TABLE t ({columns}) WITH ('connector' = 'upsert-kafka', 'topic' = 't', {options})"
        ))
        .map(|t| t.connector)
    }

    /// The lines of the "Supported options" part of an unsupported-options message.
    fn supported_in(message: &str) -> Vec<&str> {
        let (_, list) = message
            .split_once("Supported options:\n\n")
            .unwrap_or_else(|| panic!("no supported list in {message}"));
        list.lines().collect()
    }

    #[test]
    fn every_option_kappa_honoured_before_is_still_accepted() {
        let o = kafka(
            "id BIGINT, name STRING, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'",
            "'format' = 'json', 'key.format' = 'json', 'key.fields' = 'id', \
             'value.fields-include' = 'EXCEPT_KEY', 'scan.startup.mode' = 'timestamp', \
             'scan.startup.timestamp-millis' = '1700000000000', \
             'scan.watermark.idle-timeout' = '5 s', 'json.fail-on-missing-field' = 'true', \
             'dead-letter.topic' = 'dlq', 'properties.group.id' = 'g', \
             'properties.auto.offset.reset' = 'earliest'",
        )
        .unwrap();
        assert_eq!(o.key, Some((FormatKind::Json, vec!["id".to_string()])));
        assert!(o.value_except_key && o.fail_on_missing_field && !o.upsert);
        assert_eq!(o.startup, StartupMode::Timestamp(1_700_000_000_000));
        assert_eq!(o.idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(o.bad_records, BadRecordPolicy::DeadLetter("dlq".into()));
        assert_eq!(o.group_id.as_deref(), Some("g"));
        assert_eq!(
            o.properties,
            vec![("auto.offset.reset".to_string(), "earliest".to_string())]
        );
        assert_eq!(o.delivery_guarantee, DeliveryGuarantee::AtLeastOnce);
        assert_eq!(o.transactional_id_prefix, None);

        let o = kafka(
            "a STRING, b STRING",
            "'value.format' = 'csv', 'csv.field-delimiter' = '|', 'csv.ignore-parse-errors' = 'true'",
        )
        .unwrap();
        assert_eq!((o.format, o.csv_delimiter), (FormatKind::Csv, b'|'));
        assert_eq!(o.bad_records, BadRecordPolicy::Skip);
        let o = kafka(
            "a STRING",
            "'format' = 'json', 'json.ignore-parse-errors' = 'true'",
        )
        .unwrap();
        assert_eq!(o.bad_records, BadRecordPolicy::Skip);
        // Flink's spelling for a format chosen with 'value.format'
        let o = kafka(
            "a STRING",
            "'value.format' = 'json', 'value.json.ignore-parse-errors' = 'true'",
        )
        .unwrap();
        assert_eq!(o.bad_records, BadRecordPolicy::Skip);
        let o = kafka("a STRING", "'format' = 'raw'").unwrap();
        assert_eq!(o.startup, StartupMode::GroupOffsets);
    }

    #[test]
    fn unsupported_options_are_refused_in_flinks_words() {
        let e = kafka(
            "a STRING",
            "'format' = 'json', 'sink.foo' = 'x', 'json.bar' = 'y'",
        )
        .unwrap_err();
        assert!(
            e.contains("Unsupported options found for 'kafka'.\n\nUnsupported options:\n\njson.bar\nsink.foo\n\nSupported options:\n\nconnector\n"),
            "{e}"
        );
        let supported = supported_in(&e);
        let mut sorted = supported.clone();
        sorted.sort();
        assert_eq!(supported, sorted);
        for o in [
            "topic",
            "format",
            "value.format",
            "key.format",
            "key.fields",
            "value.fields-include",
            "scan.startup.mode",
            "scan.watermark.idle-timeout",
            "sink.delivery-guarantee",
            "sink.transactional-id-prefix",
            "dead-letter.topic",
            "properties.*",
            "json.ignore-parse-errors",
            "json.fail-on-missing-field",
        ] {
            assert!(supported.contains(&o), "{o} missing from {supported:?}");
        }
        assert!(!supported.iter().any(|o| o.starts_with("csv.")), "{e}");

        // format options only for the format in use
        let e = kafka("a STRING", "'format' = 'json', 'csv.field-delimiter' = ';'").unwrap_err();
        assert!(
            e.contains("Unsupported options:\n\ncsv.field-delimiter\n"),
            "{e}"
        );
        let e = kafka(
            "a STRING",
            "'format' = 'csv', 'json.ignore-parse-errors' = 'true'",
        )
        .unwrap_err();
        assert!(
            e.contains("Unsupported options:\n\njson.ignore-parse-errors\n"),
            "{e}"
        );
        assert!(supported_in(&e).contains(&"csv.field-delimiter"), "{e}");
        let e = kafka(
            "a STRING",
            "'format' = 'raw', 'json.ignore-parse-errors' = 'true'",
        )
        .unwrap_err();
        assert!(e.contains("json.ignore-parse-errors"), "{e}");
        // 'value.json.*' is Flink's spelling after 'value.format', not after 'format'
        let e = kafka(
            "a STRING",
            "'format' = 'json', 'value.json.ignore-parse-errors' = 'true'",
        )
        .unwrap_err();
        assert!(
            e.contains("Unsupported options:\n\nvalue.json.ignore-parse-errors\n"),
            "{e}"
        );
        // the key format's options are not implemented
        let e = kafka(
            "a STRING",
            "'format' = 'json', 'key.format' = 'json', 'key.fields' = 'a', 'key.json.ignore-parse-errors' = 'true'",
        )
        .unwrap_err();
        assert!(e.contains("key.json.ignore-parse-errors"), "{e}");
        // options Kappa does not implement yet are refused, not ignored
        for option in [
            "'sink.parallelism' = '2'",
            "'scan.parallelism' = '2'",
            "'sink.partitioner' = 'fixed'",
            "'scan.topic-partition-discovery.interval' = '10 s'",
            "'topic-pattern' = 'a.*'",
            "'properties.' = 'x'",
        ] {
            let e = kafka("a STRING", &format!("'format' = 'json', {option}")).unwrap_err();
            assert!(e.contains("Unsupported options"), "{option}: {e}");
        }
    }

    #[test]
    fn option_values_are_checked() {
        for (options, needle) in [
            ("'format' = 'avro'", "unsupported format 'avro'"),
            ("'format' = 'json', 'value.format' = 'json'", "give one"),
            (
                "'value.format' = 'json', 'json.ignore-parse-errors' = 'true', 'value.json.ignore-parse-errors' = 'true'",
                "give one",
            ),
            ("'format' = 'json', 'key.format' = 'json'", "requires the declaration of one or more of key fields"),
            ("'format' = 'json', 'key.fields' = 'nope'", "unknown column 'nope'"),
            ("'format' = 'json', 'key.fields' = 'a;a'", "twice"),
            ("'format' = 'json', 'key.fields' = ';'", "no column"),
            ("'format' = 'json', 'key.fields' = 'ts'", "METADATA"),
            ("'format' = 'json', 'value.fields-include' = 'EXCEPT_KEY'", "needs 'key.fields'"),
            ("'format' = 'json', 'scan.startup.timestamp-millis' = '5'", "only used with"),
            (
                "'format' = 'json', 'scan.startup.mode' = 'timestamp', 'scan.startup.timestamp-millis' = 'soon'",
                "milliseconds",
            ),
            ("'format' = 'json', 'scan.startup.mode' = 'timestamp'", "needs 'scan.startup.timestamp-millis'"),
            ("'format' = 'json', 'sink.delivery-guarantee' = 'twice'", "'exactly-once', 'at-least-once' or 'none'"),
            ("'format' = 'json', 'sink.transactional-id-prefix' = ''", "empty"),
            ("'format' = 'json', 'dead-letter.topic' = 't'", "differ"),
            (
                "'format' = 'json', 'dead-letter.topic' = 'd', 'json.ignore-parse-errors' = 'true'",
                "contradict",
            ),
            ("'format' = 'json', 'json.ignore-parse-errors' = 'yes'", "'true' or 'false'"),
            ("'format' = 'csv', 'csv.field-delimiter' = '||'", "one character"),
            ("'format' = 'json', 'key.fields' = 'a', 'key.fields-prefix' = 'k_'", "EXCEPT_KEY"),
            (
                "'format' = 'json', 'key.fields' = 'a', 'value.fields-include' = 'EXCEPT_KEY', 'key.fields-prefix' = 'k_'",
                "field 'a' is not prefixed",
            ),
        ] {
            let e = kafka(
                "a STRING, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'",
                options,
            )
            .unwrap_err();
            assert!(e.contains(needle), "{options}: {e}");
        }
        let e = table("CREATE TABLE t (a STRING) WITH ('connector' = 'kafka-ish', 'topic' = 't', 'format' = 'json')")
            .unwrap_err();
        assert!(e.contains("'kafka', 'upsert-kafka'"), "{e}");
        let e = kafka(
            "a STRING, PRIMARY KEY (a) NOT ENFORCED",
            "'format' = 'json'",
        )
        .unwrap_err();
        assert!(
            e.contains("doesn't support defining PRIMARY KEY") && e.contains("upsert-kafka"),
            "{e}"
        );
    }

    #[test]
    fn delivery_guarantee_and_transactional_id_prefix() {
        for (v, g) in [
            ("exactly-once", DeliveryGuarantee::ExactlyOnce),
            ("EXACTLY-ONCE", DeliveryGuarantee::ExactlyOnce),
            ("at-least-once", DeliveryGuarantee::AtLeastOnce),
            ("none", DeliveryGuarantee::None),
        ] {
            let o = kafka(
                "a STRING",
                &format!("'format' = 'json', 'sink.delivery-guarantee' = '{v}'"),
            )
            .unwrap();
            assert_eq!(o.delivery_guarantee, g);
            assert_eq!(DeliveryGuarantee::parse(g.as_str()), Some(g));
        }
        assert_eq!(DeliveryGuarantee::parse("exactly_once"), None);
        assert_eq!(
            serde_json::to_string(&DeliveryGuarantee::ExactlyOnce).unwrap(),
            "\"exactly-once\""
        );
        let o = kafka(
            "a STRING",
            "'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = 'orders-'",
        )
        .unwrap();
        assert_eq!(o.transactional_id_prefix.as_deref(), Some("orders-"));
    }

    #[test]
    fn key_fields_prefix_is_stripped_from_prefixed_key_columns() {
        let o = kafka(
            "k_id BIGINT, v STRING",
            "'format' = 'json', 'key.fields' = 'k_id', 'value.fields-include' = 'EXCEPT_KEY', 'key.fields-prefix' = 'k_'",
        )
        .unwrap();
        assert_eq!(o.key_fields_prefix.as_deref(), Some("k_"));
    }

    #[test]
    fn upsert_kafka_is_keyed_by_its_primary_key() {
        let o = upsert(
            "region STRING, city STRING, n BIGINT, PRIMARY KEY (city, region) NOT ENFORCED",
            "'key.format' = 'json', 'value.format' = 'json', 'value.fields-include' = 'EXCEPT_KEY', \
             'value.json.fail-on-missing-field' = 'true', 'sink.delivery-guarantee' = 'exactly-once', \
             'sink.transactional-id-prefix' = 'p', 'properties.acks' = 'all'",
        )
        .unwrap();
        assert!(o.upsert && o.value_except_key && o.fail_on_missing_field);
        // only written: a dead-letter topic (for records that do not decode) has no use
        let e = upsert(
            "id BIGINT PRIMARY KEY NOT ENFORCED, v STRING",
            "'key.format' = 'json', 'value.format' = 'json', 'dead-letter.topic' = 'dlq'",
        )
        .unwrap_err();
        assert!(e.contains("dead-letter.topic"), "{e}");
        assert_eq!(
            o.key,
            Some((
                FormatKind::Json,
                vec!["city".to_string(), "region".to_string()]
            ))
        );
        assert_eq!(o.startup, StartupMode::Earliest);
        assert_eq!(o.delivery_guarantee, DeliveryGuarantee::ExactlyOnce);
        let o = upsert(
            "id BIGINT PRIMARY KEY NOT ENFORCED, v STRING",
            "'key.format' = 'raw', 'value.format' = 'csv'",
        )
        .unwrap();
        assert_eq!(o.key, Some((FormatKind::Raw, vec!["id".to_string()])));
        assert!(!o.value_except_key);
        let o = upsert(
            "k_id BIGINT, v STRING, PRIMARY KEY (k_id) NOT ENFORCED",
            "'key.format' = 'json', 'value.format' = 'json', 'key.fields-prefix' = 'k_', 'value.fields-include' = 'EXCEPT_KEY'",
        )
        .unwrap();
        assert_eq!(o.key_fields_prefix.as_deref(), Some("k_"));
    }

    #[test]
    fn upsert_kafka_needs_a_primary_key_and_both_formats() {
        let e = upsert("a STRING", "'key.format' = 'json', 'value.format' = 'json'").unwrap_err();
        assert!(
            e.contains("'upsert-kafka' tables require to define a PRIMARY KEY constraint"),
            "{e}"
        );
        let pk = "a STRING, b STRING, PRIMARY KEY (a) NOT ENFORCED";
        let e = upsert(pk, "'value.format' = 'json'").unwrap_err();
        assert!(e.contains("'key.format'"), "{e}");
        let e = upsert(pk, "'key.format' = 'json'").unwrap_err();
        assert!(e.contains("'value.format'"), "{e}");
        let e = upsert(pk, "'key.format' = 'json', 'format' = 'json'").unwrap_err();
        assert!(e.contains("'value.format'"), "{e}");
        for option in [
            "'format' = 'json'",
            "'key.fields' = 'a'",
            "'scan.startup.mode' = 'earliest-offset'",
            "'sink.buffer-flush.interval' = '1 s'",
            "'csv.field-delimiter' = ';'",
        ] {
            let e = upsert(
                pk,
                &format!("'key.format' = 'json', 'value.format' = 'json', {option}"),
            )
            .unwrap_err();
            assert!(
                e.contains("Unsupported options found for 'upsert-kafka'."),
                "{option}: {e}"
            );
            let supported = supported_in(&e);
            assert!(
                supported.contains(&"key.format")
                    && supported.contains(&"value.json.ignore-parse-errors"),
                "{e}"
            );
            assert!(
                !supported.contains(&"key.fields") && !supported.contains(&"format"),
                "{e}"
            );
        }
        let e = upsert(
            "a STRING, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', PRIMARY KEY (ts) NOT ENFORCED",
            "'key.format' = 'json', 'value.format' = 'json'",
        )
        .unwrap_err();
        assert!(e.contains("physical"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5 s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1 min"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1 d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("-1 s").is_err());
        assert!(parse_duration("99999999999999999999 s").is_err());
        assert!(parse_duration("1 fortnight").is_err());
    }
}
