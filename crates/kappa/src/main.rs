//! The `kappa` binary: `kappa dev` runs everything on one machine; the other commands are
//! Kafka clients (they work against Kappa or any Kafka cluster).

mod bench;
mod bench_disk;
mod bench_producer;
mod bench_registry;
mod client;
mod dev;
mod group;
mod http_sql;
mod nexmark;
mod schema;
mod sql;
mod txn;
mod wire;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kappa",
    version,
    about = "Kappa: Kafka-compatible streaming in one program"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (and the HTTP endpoints) on this machine with zero configuration.
    Dev(dev::DevArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(client::TopicCommand),
    /// Produce lines from stdin to a topic.
    Produce(client::ProduceArgs),
    /// Print records of a topic.
    Consume(client::ConsumeArgs),
    /// List, describe, delete consumer groups and reset their offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Run streaming SQL against a running Kappa (a shell, or `-f FILE`).
    Sql(sql::SqlArgs),
    /// List, describe, stop, start and delete SQL pipelines.
    #[command(subcommand)]
    Pipeline(sql::PipelineCommand),
    /// Register, get, list, delete and check schemas in the schema registry.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// List and describe transactions (as kafka-transactions.sh does).
    #[command(subcommand)]
    Txn(txn::TxnCommand),
    /// Measure produce or consume throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// glibc hands blocks over 128 KiB (request frames, write buffers) back to the kernel when
/// they are freed, and the next one then faults in fresh, zeroed pages: a tenth of the broker's
/// time under heavy produce. A broker reuses such blocks all the time, so it keeps them.
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator settings; it is called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAPPA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Topic(cmd) => client::topic(cmd).await,
            Command::Produce(args) => client::produce(args).await,
            Command::Consume(args) => client::consume(args).await,
            Command::Group(cmd) => group::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Txn(cmd) => txn::run(cmd).await,
            Command::Schema(cmd) => schema::run(cmd).await,
            Command::Sql(args) => sql::sql(args).await,
            Command::Pipeline(cmd) => sql::pipeline(cmd).await,
        }
    })
}
