//! Kappa's stream processor runtime. The v2 runtime (`runtime`) runs a pipeline as a
//! dataflow of tasks: Kafka source tasks, keyed exchanges, operators (`operators`: one
//! trait, one file each) with keyed state in RocksDB (`state`), and a Kafka sink; its
//! checkpoints are Kafka transactions. The v1 runtime (`pipeline`, `operator`) stays
//! selectable with `'execution.runtime' = 'v1'` while v2 replaces it. Expressions are
//! DataFusion physical expressions; planning lives in kappa-sql.

pub mod aggregate;
pub mod error;
pub mod format;
pub mod metrics;
pub mod operator;
pub mod operators;
pub mod pipeline;
pub mod runtime;
pub mod session;
pub mod state;
pub mod watermark;
pub mod window;

pub use error::StreamError;
pub use operator::{Dataflow, Operator};
