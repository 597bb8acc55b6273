//! `kappa sql` (a shell and a script runner, as the Flink SQL client) and `kappa pipeline`,
//! both talking to a running Kappa's HTTP API.

use std::io::IsTerminal;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args)]
pub struct SqlArgs {
    /// Run the statements in FILE and exit.
    #[arg(short = 'f', long = "file")]
    file: Option<std::path::PathBuf>,
    /// Run these statements and exit.
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
    /// The Kappa HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "KAPPA_SERVER")]
    server: String,
}

#[derive(clap::Subcommand)]
pub enum PipelineCommand {
    /// List pipelines with their state and counters.
    List(ServerArg),
    /// Show one pipeline: its SQL, state, error and metrics.
    Describe(IdArg),
    /// Stop a pipeline (it flushes its output and commits its offsets).
    Stop(IdArg),
    /// Start a stopped pipeline; it resumes from its last checkpoint (or a savepoint).
    Start(StartArgs),
    /// Stop and forget a pipeline.
    Delete(IdArg),
    /// Write a savepoint: the pipeline's state and offsets in a directory you can copy.
    Savepoint(SavepointArgs),
    /// Replace a pipeline's query, keeping the state of operators that did not change.
    Upgrade(UpgradeArgs),
}

#[derive(clap::Args)]
pub struct StartArgs {
    id: String,
    /// Start from this savepoint directory instead of the last checkpoint.
    #[arg(long = "from-savepoint")]
    from_savepoint: Option<std::path::PathBuf>,
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "KAPPA_SERVER")]
    server: String,
}

#[derive(clap::Args)]
pub struct SavepointArgs {
    id: String,
    /// Stop the pipeline once the savepoint is written.
    #[arg(long)]
    stop: bool,
    /// Where to write it (default: under the data directory's savepoints/).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "KAPPA_SERVER")]
    server: String,
}

#[derive(clap::Args)]
pub struct UpgradeArgs {
    id: String,
    /// A file with the new `INSERT INTO ... SELECT ...`.
    #[arg(long)]
    sql: std::path::PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "KAPPA_SERVER")]
    server: String,
}

#[derive(clap::Args)]
pub struct ServerArg {
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "KAPPA_SERVER")]
    server: String,
}

#[derive(clap::Args)]
pub struct IdArg {
    id: String,
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "KAPPA_SERVER")]
    server: String,
}

/// A minimal HTTP/1.1 client: one request per connection.
pub(crate) async fn http(
    server: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let authority = server
        .strip_prefix("http://")
        .with_context(|| format!("--server must be an http:// URL, not {server}"))?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to Kappa at {server}"))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap_or(0);
            if size == 0 || rest.len() < nl + 2 + size {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[(nl + 4 + size).min(rest.len())..];
        }
        body = out;
    }
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&body).into()))
    };
    Ok((status, value))
}

fn print_results(results: &Value) {
    for r in results.as_array().into_iter().flatten() {
        let statement = r["statement"].as_str().unwrap_or("");
        match statement {
            "INSERT" => println!(
                "[INFO] Submitted pipeline {} ({})",
                r["pipeline"].as_str().unwrap_or("?"),
                r["name"].as_str().unwrap_or("")
            ),
            "SHOW TABLES" | "SHOW VIEWS" => {
                for row in r["rows"].as_array().into_iter().flatten() {
                    println!("{}", row.as_str().unwrap_or(""));
                }
            }
            "SHOW PIPELINES" => print_pipelines(&r["rows"]),
            "DESCRIBE" => println!("{}", serde_json::to_string_pretty(r).unwrap_or_default()),
            _ => println!(
                "[INFO] {statement} {}",
                r["name"].as_str().or(r["key"].as_str()).unwrap_or("")
            ),
        }
    }
}

fn print_pipelines(rows: &Value) {
    println!(
        "{:<8} {:<10} {:>12} {:>12} {:>8} {:<24} NAME",
        "ID", "STATE", "RECORDS_IN", "RECORDS_OUT", "LATE", "WATERMARK"
    );
    for p in rows.as_array().into_iter().flatten() {
        let m = &p["metrics"];
        let wm = m["watermark_ms"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<8} {:<10} {:>12} {:>12} {:>8} {:<24} {}",
            p["id"].as_str().unwrap_or(""),
            p["state"].as_str().unwrap_or(""),
            m["records_in"],
            m["records_out"],
            m["late_records_dropped"],
            wm,
            p["name"].as_str().unwrap_or("")
        );
        if let Some(e) = p["error"].as_str() {
            println!("         error: {e}");
        }
    }
}

/// Submits a script; on error prints it with a caret under the position.
async fn submit(server: &str, sql: &str) -> anyhow::Result<bool> {
    let (status, body) = http(server, "POST", "/v1/sql", Some(&json!({ "sql": sql }))).await?;
    print_results(&body["results"]);
    if status == 200 {
        return Ok(true);
    }
    let (line, column) = (
        body["line"].as_u64().unwrap_or(0),
        body["column"].as_u64().unwrap_or(0),
    );
    eprintln!(
        "[ERROR] {}",
        body["error"].as_str().unwrap_or(&body.to_string())
    );
    if line > 0 {
        if let Some(text) = sql.lines().nth(line as usize - 1) {
            eprintln!(
                "  at line {line}, column {column}:\n  {text}\n  {}^",
                " ".repeat(column.saturating_sub(1) as usize)
            );
        }
    }
    Ok(false)
}

pub async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let script = match (&args.file, &args.execute) {
        (Some(f), _) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, Some(e)) => Some(e.clone()),
        (None, None) if !std::io::stdin().is_terminal() => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            Some(s)
        }
        (None, None) => None,
    };
    if let Some(script) = script {
        if !submit(&args.server, &script).await? {
            bail!("the script failed");
        }
        return Ok(());
    }
    shell(&args.server).await
}

async fn shell(server: &str) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".kappa_sql_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("Kappa SQL shell on {server}. End statements with ';'. Ctrl-D quits.");
    let mut buffer = String::new();
    // SET applies to the rest of the session, as in Flink's SQL client: each request carries them
    let mut settings = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "kappa> "
        } else {
            "    -> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                buffer.push_str(&line);
                buffer.push('\n');
                if line.trim_end().ends_with(';') {
                    let statement = std::mem::take(&mut buffer);
                    let _ = editor.add_history_entry(statement.trim());
                    let is_set = statement
                        .trim_start()
                        .to_ascii_uppercase()
                        .starts_with("SET ");
                    match submit(server, &format!("{settings}{statement}")).await {
                        Ok(true) if is_set => settings.push_str(&statement),
                        Ok(_) => {}
                        Err(e) => eprintln!("[ERROR] {e:#}"),
                    }
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => buffer.clear(),
            Err(_) => break,
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

pub async fn pipeline(cmd: PipelineCommand) -> anyhow::Result<()> {
    let mut request: Option<Value> = None;
    let (server, method, path) = match &cmd {
        PipelineCommand::List(a) => (&a.server, "GET", "/v1/pipelines".to_string()),
        PipelineCommand::Describe(a) => (&a.server, "GET", format!("/v1/pipelines/{}", a.id)),
        PipelineCommand::Stop(a) => (&a.server, "POST", format!("/v1/pipelines/{}/stop", a.id)),
        PipelineCommand::Start(a) => {
            if let Some(dir) = &a.from_savepoint {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                request = Some(json!({"from_savepoint": dir}));
            }
            (&a.server, "POST", format!("/v1/pipelines/{}/start", a.id))
        }
        PipelineCommand::Delete(a) => (&a.server, "DELETE", format!("/v1/pipelines/{}", a.id)),
        PipelineCommand::Savepoint(a) => {
            let mut r = json!({"stop": a.stop});
            if let Some(dir) = &a.dir {
                r["dir"] = json!(std::path::absolute(dir).unwrap_or_else(|_| dir.clone()));
            }
            request = Some(r);
            (
                &a.server,
                "POST",
                format!("/v1/pipelines/{}/savepoint", a.id),
            )
        }
        PipelineCommand::Upgrade(a) => {
            let sql = std::fs::read_to_string(&a.sql)
                .with_context(|| format!("reading {}", a.sql.display()))?;
            request = Some(json!({"sql": sql}));
            (&a.server, "POST", format!("/v1/pipelines/{}/upgrade", a.id))
        }
    };
    let (status, body) = http(server, method, &path, request.as_ref()).await?;
    if status >= 400 {
        bail!("{}", body["error"].as_str().unwrap_or(&body.to_string()));
    }
    match cmd {
        PipelineCommand::List(_) => print_pipelines(&body),
        PipelineCommand::Describe(_) => println!("{}", serde_json::to_string_pretty(&body)?),
        PipelineCommand::Delete(a) => println!("deleted {}", a.id),
        PipelineCommand::Savepoint(_) => println!(
            "savepoint of checkpoint {} written to {}",
            body["checkpoint"],
            body["dir"].as_str().unwrap_or("?")
        ),
        _ => print_pipelines(&json!([body])),
    }
    Ok(())
}
