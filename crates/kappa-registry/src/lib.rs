//! Kappa's schema registry: Avro, JSON Schema and Protobuf schemas with versions, references
//! and compatibility rules, served over Confluent Schema Registry's REST API and stored in a
//! compacted `_schemas` topic that it reaches through the Kafka protocol.

pub mod api;
pub mod avro;
pub mod compat;
pub mod error;
pub mod json_schema;
pub mod metrics;
pub mod protobuf;
pub mod records;
pub mod registry;
pub mod schema;
pub mod state;
pub mod store;

pub use error::RegistryError;
pub use registry::{Registry, RegistryConfig};
