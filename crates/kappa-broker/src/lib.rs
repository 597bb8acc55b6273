//! kappa-broker: a single-node broker that speaks the Apache Kafka wire protocol.
//!
//! It frames and decodes requests with the `kafka-protocol` crate, keeps topics and their
//! partition logs (kappa-log), coordinates consumer groups and transactions, and answers as
//! a Kafka broker would, error codes included.
//! It knows nothing of SQL or the registry.

pub mod broker;
pub mod config;
mod durability;
mod fetch_response;
pub mod groups;
mod handlers;
pub mod metrics;
pub mod produce_stream;
mod server;
pub mod topic_configs;
pub mod topics;
pub mod txn;

pub use broker::{Broker, BrokerError};
pub use config::BrokerConfig;
pub use handlers::supported_versions;
pub use server::{decode_request, Decoded, FrameError};
