//! Kafka transactions: the coordinator's state machine ([`state`]) and the coordinator that
//! stores it and writes the markers ([`coordinator`]).

pub mod coordinator;
pub mod state;

pub use coordinator::{TxnCoordinator, TxnMetrics, OFFSETS_PARTITION, TXN_STATE_TOPIC};
pub use state::{ProducerIdAndEpoch, TxnMetadata, TxnState};
