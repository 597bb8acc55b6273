//! `kappa group list|describe|delete|reset-offsets`, in the manner of kafka-consumer-groups.sh.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::client::Connection;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Members, assignments, committed offsets, end offsets and lag of a group.
    Describe {
        group: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete a group that has no active members (and its committed offsets).
    Delete {
        group: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Move a group's committed offsets (the group must have no active members). Shows the
    /// plan; `--execute` applies it.
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, group = "target")]
        to_earliest: bool,
        #[arg(long, group = "target")]
        to_latest: bool,
        /// Milliseconds since the epoch: the first offset at or after it.
        #[arg(long, group = "target")]
        to_datetime: Option<i64>,
        #[arg(long, group = "target")]
        to_offset: Option<i64>,
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        conn: Connection,
    },
}

fn group_consumer(conn: &Connection, group: &str) -> anyhow::Result<BaseConsumer> {
    conn.client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating Kafka client")
}

pub async fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::Delete { group, conn } => {
            let admin: AdminClient<DefaultClientContext> = conn.client_config().create()?;
            let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
            for r in admin.delete_groups(&[&group], &opts).await? {
                r.map_err(|(g, e)| anyhow!("cannot delete group '{g}': {e}"))?;
            }
            println!("deleted group {group}");
            Ok(())
        }
        other => tokio::task::spawn_blocking(move || run_blocking(other)).await?,
    }
}

fn run_blocking(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List { conn } => {
            let consumer: BaseConsumer = conn.client_config().create()?;
            let groups = consumer.fetch_group_list(None, TIMEOUT)?;
            println!("group\tstate\tprotocol_type\tmembers");
            for g in groups.groups() {
                println!(
                    "{}\t{}\t{}\t{}",
                    g.name(),
                    g.state(),
                    g.protocol_type(),
                    g.members().len()
                );
            }
        }
        GroupCommand::Describe { group, conn } => {
            let consumer = group_consumer(&conn, &group)?;
            let list = consumer.fetch_group_list(Some(&group), TIMEOUT)?;
            let info = list
                .groups()
                .first()
                .ok_or_else(|| anyhow!("no such group '{group}'"))?;
            println!(
                "group: {group}  state: {}  protocol: {}",
                info.state(),
                info.protocol()
            );
            let mut owner = std::collections::HashMap::new();
            for m in info.members() {
                let assigned = m.assignment().map(decode_assignment).unwrap_or_default();
                println!(
                    "member {} (client {}, host {}): {}",
                    m.id(),
                    m.client_id(),
                    m.client_host(),
                    assigned
                        .iter()
                        .map(|(t, p)| format!("{t}-{p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for tp in assigned {
                    owner.insert(tp, m.id().to_string());
                }
            }
            // Committed offsets of every partition the group has touched.
            let md = consumer.fetch_metadata(None, TIMEOUT)?;
            let mut tpl = TopicPartitionList::new();
            for t in md.topics().iter().filter(|t| !t.name().starts_with("__")) {
                for p in t.partitions() {
                    tpl.add_partition(t.name(), p.id());
                }
            }
            let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
            println!("topic\tpartition\tcommitted\tend\tlag\tmember");
            for e in committed.elements() {
                let Offset::Offset(offset) = e.offset() else {
                    continue;
                };
                let (_, end) = consumer.fetch_watermarks(e.topic(), e.partition(), TIMEOUT)?;
                let member = owner
                    .get(&(e.topic().to_string(), e.partition()))
                    .cloned()
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    e.topic(),
                    e.partition(),
                    offset,
                    end,
                    (end - offset).max(0),
                    member
                );
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_datetime,
            to_offset,
            execute,
            conn,
        } => {
            let consumer = group_consumer(&conn, &group)?;
            let md = consumer.fetch_metadata(Some(&topic), TIMEOUT)?;
            let t = md
                .topics()
                .first()
                .ok_or_else(|| anyhow!("no metadata for '{topic}'"))?;
            if t.error().is_some() || t.partitions().is_empty() {
                bail!("unknown topic '{topic}'");
            }
            let mut plan = TopicPartitionList::new();
            for p in t.partitions() {
                let (lo, hi) = consumer.fetch_watermarks(&topic, p.id(), TIMEOUT)?;
                let target = if to_earliest {
                    lo
                } else if to_latest {
                    hi
                } else if let Some(o) = to_offset {
                    o.clamp(lo, hi)
                } else if let Some(ts) = to_datetime {
                    let mut q = TopicPartitionList::new();
                    q.add_partition_offset(&topic, p.id(), Offset::Offset(ts))?;
                    let found = consumer.offsets_for_times(q, TIMEOUT)?;
                    match found.elements().first().map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => hi,
                    }
                } else {
                    bail!("choose one of --to-earliest, --to-latest, --to-datetime, --to-offset");
                };
                plan.add_partition_offset(&topic, p.id(), Offset::Offset(target))?;
            }
            println!("topic\tpartition\tnew_offset");
            for e in plan.elements() {
                if let Offset::Offset(o) = e.offset() {
                    println!("{}\t{}\t{}", e.topic(), e.partition(), o);
                }
            }
            if execute {
                consumer.commit(&plan, CommitMode::Sync).map_err(|e| {
                    anyhow!(
                        "cannot reset offsets of '{group}' (it must have no active members): {e}"
                    )
                })?;
                println!("offsets of group {group} reset");
            } else {
                println!("(dry run: add --execute to apply)");
            }
        }
        GroupCommand::Delete { .. } => unreachable!("handled asynchronously"),
    }
    Ok(())
}

/// (topic, partition) pairs of a consumer-protocol assignment.
fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let mut buf = Bytes::copy_from_slice(&bytes[2..]);
    match ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}
