use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Errors of a running dataflow.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("bad record at {topic}[{partition}]@{offset}: {reason}")]
    BadRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Source(String),
    #[error("state: {0}")]
    State(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

pub type Result<T, E = StreamError> = std::result::Result<T, E>;
