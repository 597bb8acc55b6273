//! What the three formats share: the schema type, references resolved to their text, and
//! one parsed form that the registry stores, compares and checks for compatibility.

use serde::{Deserialize, Serialize};

/// A schema's format, spelled as Confluent's REST API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SchemaType {
    #[default]
    #[serde(rename = "AVRO")]
    Avro,
    #[serde(rename = "JSON")]
    Json,
    #[serde(rename = "PROTOBUF")]
    Protobuf,
}

impl SchemaType {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }

    pub fn parse(s: &str) -> Option<SchemaType> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Some(SchemaType::Avro),
            "JSON" => Some(SchemaType::Json),
            "PROTOBUF" => Some(SchemaType::Protobuf),
            _ => None,
        }
    }
}

/// A schema that the one being parsed refers to, with its text fetched from the registry.
/// `name` is what the referring schema uses: for Avro the referenced type's full name, for
/// Protobuf the import path (`other.proto`), for JSON Schema the URL used in `$ref`.
/// The registry passes every schema reachable through references, dependencies first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub schema: String,
}

/// Why a schema text is not a valid schema (Confluent's 42201).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSchema(pub String);

/// A schema parsed in its format.
#[derive(Debug, Clone)]
pub enum ParsedSchema {
    Avro(crate::avro::AvroSchema),
    Json(crate::json_schema::JsonSchema),
    Protobuf(crate::protobuf::ProtobufSchema),
}

impl ParsedSchema {
    pub fn parse(
        schema_type: SchemaType,
        text: &str,
        dependencies: &[Dependency],
    ) -> Result<ParsedSchema, InvalidSchema> {
        Ok(match schema_type {
            SchemaType::Avro => {
                ParsedSchema::Avro(crate::avro::AvroSchema::parse(text, dependencies)?)
            }
            SchemaType::Json => {
                ParsedSchema::Json(crate::json_schema::JsonSchema::parse(text, dependencies)?)
            }
            SchemaType::Protobuf => {
                ParsedSchema::Protobuf(crate::protobuf::ProtobufSchema::parse(text, dependencies)?)
            }
        })
    }

    pub fn schema_type(&self) -> SchemaType {
        match self {
            ParsedSchema::Avro(_) => SchemaType::Avro,
            ParsedSchema::Json(_) => SchemaType::Json,
            ParsedSchema::Protobuf(_) => SchemaType::Protobuf,
        }
    }

    /// The text the registry stores and returns, and compares to decide that two
    /// registrations are the same schema.
    pub fn canonical(&self) -> String {
        match self {
            ParsedSchema::Avro(s) => s.canonical(),
            ParsedSchema::Json(s) => s.canonical(),
            ParsedSchema::Protobuf(s) => s.canonical(),
        }
    }

    /// The form stored for `normalize=true`: equal for schemas that differ only in ways
    /// that do not change what they accept.
    pub fn normalized(&self) -> String {
        match self {
            ParsedSchema::Avro(s) => s.normalized(),
            ParsedSchema::Json(s) => s.normalized(),
            ParsedSchema::Protobuf(s) => s.normalized(),
        }
    }

    /// Why data written with `writer` cannot be read with `reader` (empty: it can).
    /// BACKWARD checks the new schema as reader of the old; FORWARD the old as reader of
    /// the new. Schemas of different types are always incompatible.
    pub fn incompatibilities(reader: &ParsedSchema, writer: &ParsedSchema) -> Vec<String> {
        match (reader, writer) {
            (ParsedSchema::Avro(r), ParsedSchema::Avro(w)) => crate::avro::incompatibilities(r, w),
            (ParsedSchema::Json(r), ParsedSchema::Json(w)) => {
                crate::json_schema::incompatibilities(r, w)
            }
            (ParsedSchema::Protobuf(r), ParsedSchema::Protobuf(w)) => {
                crate::protobuf::incompatibilities(r, w)
            }
            _ => vec![format!(
                "schema type changed from {} to {}",
                writer.schema_type().as_str(),
                reader.schema_type().as_str()
            )],
        }
    }
}
