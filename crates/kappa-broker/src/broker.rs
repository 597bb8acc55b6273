//! The broker's shared state: topics and their logs, the group and transaction coordinators,
//! metrics, and how clients reach it. The network side (`server`) and the API handlers
//! (`handlers`) both work on it; neither imports the other's state.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::BrokerConfig;
use crate::groups::GroupCoordinator;
use crate::metrics::BrokerMetrics;
use crate::topics::{TopicError, TopicRegistry};
use crate::txn::TxnCoordinator;

/// The broker's shared state.
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: TopicRegistry,
    pub metrics: BrokerMetrics,
    pub groups: GroupCoordinator,
    pub txns: TxnCoordinator,
    /// Woken whenever records become readable, so long-polling fetches can answer early.
    pub data_arrived: Arc<Notify>,
    pub advertised_host: String,
    pub advertised_port: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("invalid listener address '{0}'")]
    Address(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Broker {
    /// Opens the data directory (recovering partitions as needed).
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        let config = config.with_kafka_properties().map_err(TopicError::from)?;
        let topics = TopicRegistry::open(&config)?;
        let groups = GroupCoordinator::open(
            &topics,
            std::time::Duration::from_millis(config.group_initial_rebalance_delay_ms),
        )?;
        let txns = TxnCoordinator::open(&topics, config.transaction_max_timeout_ms)?;
        let advertised = config
            .advertised_listener
            .clone()
            .unwrap_or_else(|| config.listen.clone());
        let (host, port) = advertised
            .rsplit_once(':')
            .and_then(|(h, p)| {
                p.parse::<i32>()
                    .ok()
                    .map(|p| (h.trim_matches(['[', ']']).to_string(), p))
            })
            .ok_or_else(|| BrokerError::Address(advertised.clone()))?;
        let data_arrived = topics.commits.data_arrived.clone();
        let metrics = BrokerMetrics::new(topics.commits.fsync_duration.clone(), &txns.metrics);
        Ok(Arc::new(Broker {
            config,
            topics,
            metrics,
            groups,
            txns,
            data_arrived,
            advertised_host: host,
            advertised_port: port,
        }))
    }
}
