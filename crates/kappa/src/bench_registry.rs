//! `kappa bench registry`: requests per second against a schema registry's REST API, for the
//! call every deserializer makes (`GET /schemas/ids/{id}`) and for registrations, over
//! keep-alive HTTP/1.1 connections, with latency percentiles.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(clap::Args)]
pub struct RegistryBenchArgs {
    /// The schema registry's URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8081",
        env = "KAPPA_REGISTRY_URL"
    )]
    registry_url: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds of `GET /schemas/ids/{id}`.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Distinct schemas registered (each a new version of one of `--subjects` subjects).
    #[arg(long, default_value_t = 2000)]
    registrations: usize,
    #[arg(long, default_value_t = 8)]
    subjects: usize,
}

/// One keep-alive connection: sends a request, reads one response (Content-Length bodies).
struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    async fn open(authority: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
            host: authority.to_string(),
        })
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no HTTP status")?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed mid-response");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().context("bad content-length")?;
                }
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

use crate::bench::percentile_ms as pct;

fn report(what: &str, mut latencies: Vec<u64>, elapsed: Duration) {
    latencies.sort_unstable();
    println!(
        "{what}: {} requests in {:.2} s: {:.0} requests/s, latency ms p50 {:.3} p99 {:.3} max {:.3}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        pct(&latencies, 1.0),
    );
}

pub async fn run(args: RegistryBenchArgs) -> anyhow::Result<()> {
    let authority = args
        .registry_url
        .strip_prefix("http://")
        .with_context(|| format!("--registry-url must be http://, not {}", args.registry_url))?
        .trim_end_matches('/')
        .to_string();
    let run_id = std::process::id();

    // registrations: each connection registers its share of distinct schemas, spread over
    // a few subjects (compatibility checked against each subject's latest version)
    let per_conn = args.registrations.div_ceil(args.connections.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections.max(1) {
        let authority = authority.clone();
        let subjects = args.subjects.max(1);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&authority).await?;
            let mut latencies = Vec::with_capacity(per_conn);
            let mut ids = Vec::new();
            for i in 0..per_conn {
                let n = c * per_conn + i;
                // every schema differs (a new optional field), so each one is a new id
                let schema = json!({"type": "record", "name": "Bench", "namespace": format!("bench.r{run_id}"),
                    "fields": [{"name": "id", "type": "long"},
                               {"name": format!("f{n}"), "type": ["null", "string"], "default": null}]});
                let body = json!({"schema": schema.to_string()}).to_string();
                let path = format!("/subjects/bench-{run_id}-{}/versions", n % subjects);
                let t = Instant::now();
                let (status, response) = conn.request("POST", &path, &body).await?;
                latencies.push(t.elapsed().as_micros() as u64);
                if status != 200 {
                    bail!("registration answered {status}: {}", String::from_utf8_lossy(&response));
                }
                let v: serde_json::Value = serde_json::from_slice(&response)?;
                ids.push(v["id"].as_i64().context("no id in the answer")?);
            }
            anyhow::Ok((latencies, ids))
        }));
    }
    let mut latencies = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        let (l, i) = t.await??;
        latencies.extend(l);
        ids.extend(i);
    }
    report("register", latencies, started.elapsed());

    // reads: GET /schemas/ids/{id} over the ids just registered, as deserializers do
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let ids = std::sync::Arc::new(ids);
    let mut tasks = Vec::new();
    for c in 0..args.connections.max(1) {
        let authority = authority.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&authority).await?;
            let mut latencies = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let id = ids[i % ids.len()];
                i += 7;
                let t = Instant::now();
                let (status, body) = conn
                    .request("GET", &format!("/schemas/ids/{id}"), "")
                    .await?;
                latencies.push(t.elapsed().as_micros() as u64);
                if status != 200 {
                    bail!(
                        "GET /schemas/ids/{id} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    report("GET /schemas/ids/{id}", latencies, started.elapsed());
    Ok(())
}
