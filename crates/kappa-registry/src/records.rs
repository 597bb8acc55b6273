//! The records of the `_schemas` topic, in the layout Confluent's registry writes, so the
//! topic reads the same to either: a JSON key naming what a record is about, a JSON value
//! with its content, and a null value (tombstone) when it is gone.

use serde::{Deserialize, Serialize};

use crate::compat::CompatibilityLevel;
use crate::schema::SchemaType;

/// A schema reference as the REST API and the topic spell it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordKey {
    Schema {
        subject: String,
        version: i32,
        magic: i32,
    },
    Config {
        subject: Option<String>,
        magic: i32,
    },
    Mode {
        subject: Option<String>,
        magic: i32,
    },
    /// Written by Confluent's registry; carries nothing for Kappa.
    Noop {
        #[serde(default)]
        magic: i32,
    },
    /// Confluent's marker for a soft-deleted subject (all versions up to `version`).
    DeleteSubject {
        subject: String,
        #[serde(default)]
        magic: i32,
    },
    /// Confluent's marker for a permanently deleted subject.
    ClearSubject {
        subject: Option<String>,
        #[serde(default)]
        magic: i32,
    },
}

impl RecordKey {
    pub fn schema(subject: &str, version: i32) -> RecordKey {
        RecordKey::Schema {
            subject: subject.to_string(),
            version,
            magic: 1,
        }
    }
    pub fn config(subject: Option<&str>) -> RecordKey {
        RecordKey::Config {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }
    pub fn mode(subject: Option<&str>) -> RecordKey {
        RecordKey::Mode {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }
}

fn is_avro(t: &SchemaType) -> bool {
    *t == SchemaType::Avro
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaValue {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    #[serde(default, skip_serializing_if = "is_avro")]
    pub schema_type: SchemaType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    pub schema: String,
    #[serde(default)]
    pub deleted: bool,
}

/// A subject's or the global settings; every field optional, as in Confluent's records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility_level: Option<CompatibilityLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    #[default]
    Readwrite,
    Readonly,
    Import,
    /// Confluent's READONLY_OVERRIDE: read-only, and overrides subject-level modes.
    ReadonlyOverride,
    /// Confluent's mode for a subject kept in step from another registry: read-only here.
    Forward,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.to_ascii_uppercase().as_str() {
            "READWRITE" => Some(Mode::Readwrite),
            "READONLY" => Some(Mode::Readonly),
            "IMPORT" => Some(Mode::Import),
            "READONLY_OVERRIDE" => Some(Mode::ReadonlyOverride),
            "FORWARD" => Some(Mode::Forward),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeValue {
    pub mode: Mode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubjectValue {
    pub subject: String,
    pub version: i32,
}

/// One record as it goes to or comes from the topic.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreRecord {
    pub key: RecordKey,
    /// None: a tombstone.
    pub value: Option<serde_json::Value>,
}

impl StoreRecord {
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        // serialising these types cannot fail: no maps with non-string keys, no foreign types
        let key = serde_json::to_vec(&self.key).unwrap_or_default();
        let value = self
            .value
            .as_ref()
            .map(|v| serde_json::to_vec(v).unwrap_or_default());
        (key, value)
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<StoreRecord, serde_json::Error> {
        Ok(StoreRecord {
            key: serde_json::from_slice(key)?,
            value: value.map(serde_json::from_slice).transpose()?,
        })
    }
}

pub fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
