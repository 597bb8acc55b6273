//! Kappa's stream processor runtime: the streaming operators (window assignment, windowed
//! aggregation, filters and projections over Arrow batches), per-partition event-time
//! watermarks, record formats, and the Kafka source and sink that run a dataflow as a
//! pipeline. Expressions are DataFusion physical expressions; planning lives in kappa-sql.

pub mod aggregate;
pub mod error;
pub mod format;
pub mod metrics;
pub mod operator;
pub mod pipeline;
pub mod session;
pub mod watermark;
pub mod window;

pub use error::StreamError;
pub use operator::{Dataflow, Operator};
