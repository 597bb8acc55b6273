//! `kappa txn list|describe|producers`, in the manner of kafka-transactions.sh. librdkafka has
//! no API for these, so they speak the protocol themselves (ListTransactions to every broker,
//! DescribeTransactions to the id's coordinator, DescribeProducers to the partition leader).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    ListTransactionsRequest, ListTransactionsResponse, MetadataRequest, MetadataResponse,
    TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::Connection;
use crate::wire::BrokerConnection;

#[derive(clap::Subcommand)]
pub enum TxnCommand {
    /// Transactions known to the coordinators (every broker), with their state.
    List {
        /// Only transactions in this state (Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort, PrepareEpochFence); repeatable.
        #[arg(long)]
        state: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// State, producer id and epoch, timeout, start time and partitions of a transaction.
    Describe {
        transactional_id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Producers writing to a partition: epoch, last sequence, open transaction's first offset.
    Producers {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 0)]
        partition: i32,
        #[command(flatten)]
        conn: Connection,
    },
}

fn first_bootstrap(conn: &Connection) -> String {
    conn.bootstrap_server
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Every broker's address (from Metadata), each as (node id, host:port).
fn brokers(bootstrap: &mut BrokerConnection) -> anyhow::Result<Vec<(i32, String)>> {
    let v = bootstrap.version(ApiKey::Metadata, 1, 9)?;
    let md: MetadataResponse = bootstrap.call(
        ApiKey::Metadata,
        v,
        &MetadataRequest::default().with_topics(Some(vec![])),
    )?;
    Ok(md
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect())
}

pub async fn run(cmd: TxnCommand) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(cmd)).await?
}

fn run_blocking(cmd: TxnCommand) -> anyhow::Result<()> {
    match cmd {
        TxnCommand::List { state, conn } => {
            let mut boot = BrokerConnection::open(&first_bootstrap(&conn))?;
            println!(
                "{:<40} {:<12} {:<12} TransactionState",
                "TransactionalId", "Coordinator", "ProducerId"
            );
            for (node, address) in brokers(&mut boot)? {
                let mut c = BrokerConnection::open(&address)?;
                let v = c.version(ApiKey::ListTransactions, 0, 0)?;
                let filters = state
                    .iter()
                    .map(|s| StrBytes::from_string(s.clone()))
                    .collect();
                let r: ListTransactionsResponse = c.call(
                    ApiKey::ListTransactions,
                    v,
                    &ListTransactionsRequest::default().with_state_filters(filters),
                )?;
                if let Some(e) = r.error_code.err() {
                    bail!("ListTransactions to broker {node}: {e}");
                }
                if !r.unknown_state_filters.is_empty() {
                    bail!(
                        "unknown transaction state(s): {:?}",
                        r.unknown_state_filters
                    );
                }
                for t in r.transaction_states {
                    println!(
                        "{:<40} {:<12} {:<12} {}",
                        t.transactional_id.0, node, t.producer_id.0, t.transaction_state
                    );
                }
            }
            Ok(())
        }
        TxnCommand::Describe {
            transactional_id,
            conn,
        } => {
            let mut boot = BrokerConnection::open(&first_bootstrap(&conn))?;
            let v = boot.version(ApiKey::FindCoordinator, 1, 3)?;
            let found: FindCoordinatorResponse = boot.call(
                ApiKey::FindCoordinator,
                v,
                &FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_string(transactional_id.clone()))
                    .with_key_type(1),
            )?;
            if let Some(e) = found.error_code.err() {
                bail!("no coordinator for '{transactional_id}': {e}");
            }
            let mut c = BrokerConnection::open(&format!("{}:{}", found.host, found.port))?;
            let v = c.version(ApiKey::DescribeTransactions, 0, 0)?;
            let r: DescribeTransactionsResponse = c.call(
                ApiKey::DescribeTransactions,
                v,
                &DescribeTransactionsRequest::default().with_transactional_ids(vec![
                    TransactionalId(StrBytes::from_string(transactional_id.clone())),
                ]),
            )?;
            let t = r
                .transaction_states
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("the coordinator described no transaction"))?;
            if let Some(e) = t.error_code.err() {
                bail!("transaction '{transactional_id}': {e}");
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let partitions: Vec<String> = t
                .topics
                .iter()
                .flat_map(|topic| {
                    topic
                        .partitions
                        .iter()
                        .map(move |p| format!("{}-{p}", topic.topic.0))
                })
                .collect();
            println!("CoordinatorId: {}", found.node_id.0);
            println!("TransactionalId: {}", t.transactional_id.0);
            println!("ProducerId: {}", t.producer_id.0);
            println!("ProducerEpoch: {}", t.producer_epoch);
            println!("TransactionState: {}", t.transaction_state);
            println!("TransactionTimeoutMs: {}", t.transaction_timeout_ms);
            println!(
                "CurrentTransactionStartTimeMs: {}",
                t.transaction_start_time_ms
            );
            if t.transaction_start_time_ms >= 0 {
                println!(
                    "TransactionDurationMs: {}",
                    now - t.transaction_start_time_ms
                );
            }
            println!("TopicPartitions: {}", partitions.join(","));
            Ok(())
        }
        TxnCommand::Producers {
            topic,
            partition,
            conn,
        } => {
            let mut c = BrokerConnection::open(&first_bootstrap(&conn))?;
            let v = c.version(ApiKey::DescribeProducers, 0, 0)?;
            let r: DescribeProducersResponse = c.call(
                ApiKey::DescribeProducers,
                v,
                &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partition_indexes(vec![partition])]),
            )?;
            let p = r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .next()
                .ok_or_else(|| anyhow!("no answer for {topic}-{partition}"))?;
            if let Some(e) = p.error_code.err() {
                bail!("{topic}-{partition}: {e}");
            }
            println!(
                "{:<12} {:<8} {:<14} {:<16} CurrentTransactionStartOffset",
                "ProducerId", "Epoch", "LastSequence", "LastTimestamp"
            );
            for s in &p.active_producers {
                println!(
                    "{:<12} {:<8} {:<14} {:<16} {}",
                    s.producer_id.0,
                    s.producer_epoch,
                    s.last_sequence,
                    s.last_timestamp,
                    s.current_txn_start_offset
                );
            }
            Ok(())
        }
    }
}
