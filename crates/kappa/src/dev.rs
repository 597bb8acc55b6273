//! `kappa dev`: loads the configuration (defaults < TOML file < KAPPA_* env < flags), opens the
//! data directory, serves the Kafka listener and the HTTP endpoints, and shuts down cleanly.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use kappa_broker::{Broker, BrokerConfig};
use kappa_registry::{Registry, RegistryConfig};
use serde::Deserialize;
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct DevArgs {
    /// TOML configuration file.
    #[arg(long, env = "KAPPA_CONFIG")]
    config: Option<PathBuf>,
    /// Where topics and their logs are stored [default: ./kappa-data]
    #[arg(long, env = "KAPPA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Kafka protocol listener [default: 127.0.0.1:9092]
    #[arg(long, env = "KAPPA_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// Address advertised to Kafka clients [default: the listen address]
    #[arg(long, env = "KAPPA_KAFKA_ADVERTISED")]
    kafka_advertised: Option<String>,
    /// HTTP listener for /metrics and /health [default: 127.0.0.1:8080]
    #[arg(long, env = "KAPPA_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Schema registry listener (Confluent's REST API) [default: 127.0.0.1:8081]
    #[arg(long, env = "KAPPA_REGISTRY_LISTEN")]
    registry_listen: Option<String>,
    /// Partitions of auto-created topics [default: 1]
    #[arg(long, env = "KAPPA_NUM_PARTITIONS")]
    num_partitions: Option<i32>,
    /// Create topics on first produce or metadata request [default: true]
    #[arg(long, env = "KAPPA_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// `on-demand` (fsync for acks=all) or `always` (fsync every append) [default: on-demand]
    #[arg(long, env = "KAPPA_FLUSH")]
    flush: Option<String>,
    /// Write partitions with O_DIRECT where the file system allows, keeping the newest
    /// records in memory for consumers; `false` writes through the page cache [default: false]
    #[arg(long, env = "KAPPA_DIRECT_WRITES")]
    direct_writes: Option<bool>,
    /// Roll into the file of the oldest segment when retention is due to delete it,
    /// overwriting its blocks rather than growing a new file [default: true]
    #[arg(long, env = "KAPPA_REUSE_SEGMENT_FILES")]
    reuse_segment_files: Option<bool>,
    /// How long an empty group's first rebalance waits for more members, as Kafka's
    /// `group.initial.rebalance.delay.ms` [default: 3000]
    #[arg(long, env = "KAPPA_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    group_initial_rebalance_delay_ms: Option<u64>,
}

/// The whole TOML file: one table per part.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    broker: BrokerConfig,
    http: HttpConfig,
    registry: RegistryConfig,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HttpConfig {
    listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

fn load(args: DevArgs) -> anyhow::Result<(BrokerConfig, HttpConfig, RegistryConfig)> {
    let mut file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let b = &mut file.broker;
    if let Some(v) = args.data_dir {
        b.data_dir = v;
    }
    if let Some(v) = args.kafka_listen {
        b.listen = v;
    }
    if let Some(v) = args.kafka_advertised {
        b.advertised_listener = Some(v);
    }
    if let Some(v) = args.num_partitions {
        b.num_partitions = v;
    }
    if let Some(v) = args.auto_create_topics {
        b.auto_create_topics = v;
    }
    if let Some(v) = args.flush {
        b.flush = v;
    }
    if let Some(v) = args.direct_writes {
        b.direct_writes = v;
    }
    if let Some(v) = args.reuse_segment_files {
        b.reuse_segment_files = v;
    }
    if let Some(v) = args.group_initial_rebalance_delay_ms {
        b.group_initial_rebalance_delay_ms = v;
    }
    if b.flush != "always" && b.flush != "on-demand" {
        anyhow::bail!("flush must be 'always' or 'on-demand', not '{}'", b.flush);
    }
    if b.num_partitions < 1 {
        anyhow::bail!("num_partitions must be at least 1");
    }
    if let Some(v) = args.http_listen {
        file.http.listen = v;
    }
    if let Some(v) = args.registry_listen {
        file.registry.listen = v;
    }
    Ok((file.broker, file.http, file.registry))
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let (mut broker_config, http_config, registry_config) = load(args)?;
    let kafka_listener = tokio::net::TcpListener::bind(&broker_config.listen)
        .await
        .with_context(|| format!("binding the Kafka listener on {}", broker_config.listen))?;
    let kafka_addr = kafka_listener.local_addr()?;
    // A port of 0 means "any": advertise the one we got.
    broker_config.listen = kafka_addr.to_string();
    let http_listener = tokio::net::TcpListener::bind(&http_config.listen)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", http_config.listen))?;
    let http_addr = http_listener.local_addr()?;
    let registry_listener = tokio::net::TcpListener::bind(&registry_config.listen)
        .await
        .with_context(|| {
            format!(
                "binding the schema registry listener on {}",
                registry_config.listen
            )
        })?;
    let registry_addr = registry_listener.local_addr()?;

    let data_dir = broker_config.data_dir.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config))
        .await?
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let kafka = tokio::spawn(broker.clone().serve(kafka_listener, shutdown_rx.clone()));
    // the SQL engine reaches the broker through the Kafka protocol, like any client
    let sql = kappa_sql::service::SqlService::open(data_dir.clone(), kafka_addr.to_string())
        .await
        .with_context(|| format!("opening the SQL catalog in {}", data_dir.display()))?;
    // the registry, too, keeps its schemas in a topic it reaches through the Kafka protocol
    let registry = Registry::open(&kafka_addr.to_string(), registry_config)
        .await
        .context("opening the schema registry")?;
    let mut registry_shutdown = shutdown_rx.clone();
    let registry_app = kappa_registry::api::router(registry.clone());
    let registry_http = tokio::spawn(async move {
        axum::serve(registry_listener, registry_app)
            .with_graceful_shutdown(async move {
                let _ = registry_shutdown.changed().await;
            })
            .await
    });
    let app_state = AppState {
        broker: broker.clone(),
        sql: sql.clone(),
        registry,
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .merge(crate::http_sql::routes())
        .with_state(app_state);
    let mut http_shutdown = shutdown_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(http_listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.changed().await;
            })
            .await
    });
    tracing::info!(
        kafka = %kafka_addr,
        http = %http_addr,
        registry = %registry_addr,
        data_dir = %data_dir.display(),
        "kappa dev is ready: Kafka on {kafka_addr}, HTTP (/v1/sql, /v1/pipelines, /metrics, /health) on http://{http_addr}, schema registry on http://{registry_addr}"
    );

    wait_for_signal().await;
    tracing::info!("shutting down");
    sql.shutdown().await;
    let _ = shutdown_tx.send(true);
    let _ = kafka.await;
    let _ = http.await;
    let _ = registry_http.await;
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.topics.close()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub broker: Arc<Broker>,
    pub sql: Arc<kappa_sql::service::SqlService>,
    pub registry: Arc<Registry>,
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let broker = &state.broker;
    let mut body = broker.metrics.render(&broker.topics, &broker.groups);
    // OpenMetrics ends with "# EOF": pipeline families go before it
    let eof = body.rfind("# EOF").unwrap_or(body.len());
    let tail = body.split_off(eof);
    state.sql.render_metrics(&mut body).await;
    state.registry.render_metrics(&mut body);
    body.push_str(&tail);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
