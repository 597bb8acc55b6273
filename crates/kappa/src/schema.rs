//! `kappa schema ...`: the schema registry from the command line, over Confluent's REST API
//! (so it works against Kappa's registry or Confluent's). `check` is what a CI/CD pipeline
//! runs before deploying a schema change.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::sql::http;

#[derive(clap::Args)]
pub struct RegistryArg {
    /// The schema registry's URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8081",
        env = "KAPPA_REGISTRY_URL"
    )]
    registry_url: String,
}

#[derive(clap::Args)]
pub struct SchemaFile {
    /// The subject (for a topic's values, by convention `TOPIC-value`).
    #[arg(long)]
    subject: String,
    /// AVRO, JSON or PROTOBUF [default: from the file's extension: .avsc, .json, .proto]
    #[arg(long = "type")]
    schema_type: Option<String>,
    /// A schema reference, NAME=SUBJECT:VERSION (repeatable).
    #[arg(long = "reference")]
    references: Vec<String>,
    /// The schema file.
    file: PathBuf,
}

#[derive(clap::Subcommand)]
pub enum SchemaCommand {
    /// Register a schema file under a subject; prints its id and version.
    Register {
        #[command(flatten)]
        schema: SchemaFile,
        /// Store the schema's normalized form.
        #[arg(long)]
        normalize: bool,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Print a schema: by id, or a subject's version (latest by default).
    Get {
        #[arg(long, conflicts_with = "subject")]
        id: Option<i32>,
        #[arg(long, required_unless_present = "id")]
        subject: Option<String>,
        #[arg(long, default_value = "latest")]
        version: String,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// List subjects, or the versions of one subject.
    List {
        #[arg(long)]
        subject: Option<String>,
        /// Include soft-deleted subjects or versions.
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Delete a subject or one of its versions (soft; `--permanent` after a soft delete).
    Delete {
        #[arg(long)]
        subject: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        permanent: bool,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Show or set the compatibility level, global or of a subject.
    Config {
        #[arg(long)]
        subject: Option<String>,
        /// NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE
        #[arg(long)]
        set: Option<String>,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Check a schema file against a subject's compatibility rules; exits 1 with the reasons
    /// when it is incompatible.
    Check {
        #[command(flatten)]
        schema: SchemaFile,
        /// Check against this version only [default: the versions the subject's level asks for]
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        registry: RegistryArg,
    },
}

/// Percent-encodes a path segment (subjects may hold any character).
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn call(
    reg: &RegistryArg,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let (status, value) = http(&reg.registry_url, method, path, body)
        .await
        .with_context(|| format!("calling the schema registry at {}", reg.registry_url))?;
    if !(200..300).contains(&status) {
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        let code = value.get("error_code").cloned().unwrap_or(json!(status));
        bail!("{message} (error {code})");
    }
    Ok(value)
}

fn schema_body(file: &SchemaFile) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(&file.file)
        .with_context(|| format!("reading {}", file.file.display()))?;
    let schema_type = match &file.schema_type {
        Some(t) => t.to_ascii_uppercase(),
        None => match file.file.extension().and_then(|e| e.to_str()) {
            Some("avsc") | Some("avro") => "AVRO".into(),
            Some("json") => "JSON".into(),
            Some("proto") => "PROTOBUF".into(),
            _ => bail!(
                "cannot tell the schema type of {}: give --type AVRO|JSON|PROTOBUF",
                file.file.display()
            ),
        },
    };
    let mut references = Vec::new();
    for r in &file.references {
        let (name, rest) = r
            .split_once('=')
            .with_context(|| format!("--reference {r}: expected NAME=SUBJECT:VERSION"))?;
        let (subject, version) = rest
            .rsplit_once(':')
            .with_context(|| format!("--reference {r}: expected NAME=SUBJECT:VERSION"))?;
        let version: i32 = version
            .parse()
            .with_context(|| format!("--reference {r}: version must be a number"))?;
        references.push(json!({"name": name, "subject": subject, "version": version}));
    }
    Ok(json!({"schema": text, "schemaType": schema_type, "references": references}))
}

fn print(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub async fn run(cmd: SchemaCommand) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Register {
            schema,
            normalize,
            registry,
        } => {
            let body = schema_body(&schema)?;
            let path = format!(
                "/subjects/{}/versions?normalize={normalize}",
                segment(&schema.subject)
            );
            let out = call(&registry, "POST", &path, Some(&body)).await?;
            let version = call(
                &registry,
                "POST",
                &format!("/subjects/{}", segment(&schema.subject)),
                Some(&body),
            )
            .await
            .ok()
            .and_then(|v| v.get("version").cloned())
            .or_else(|| out.get("version").cloned())
            .unwrap_or(Value::Null);
            println!(
                "registered {} version {} with id {}",
                schema.subject, version, out["id"]
            );
        }
        SchemaCommand::Get {
            id,
            subject,
            version,
            registry,
        } => {
            let out = match (id, subject) {
                (Some(id), _) => {
                    call(&registry, "GET", &format!("/schemas/ids/{id}"), None).await?
                }
                (None, Some(s)) => {
                    call(
                        &registry,
                        "GET",
                        &format!("/subjects/{}/versions/{}", segment(&s), segment(&version)),
                        None,
                    )
                    .await?
                }
                (None, None) => bail!("give --id or --subject"),
            };
            print(&out);
        }
        SchemaCommand::List {
            subject,
            deleted,
            registry,
        } => {
            let out = match subject {
                Some(s) => {
                    call(
                        &registry,
                        "GET",
                        &format!("/subjects/{}/versions?deleted={deleted}", segment(&s)),
                        None,
                    )
                    .await?
                }
                None => {
                    call(
                        &registry,
                        "GET",
                        &format!("/subjects?deleted={deleted}"),
                        None,
                    )
                    .await?
                }
            };
            for item in out.as_array().into_iter().flatten() {
                match item {
                    Value::String(s) => println!("{s}"),
                    other => println!("{other}"),
                }
            }
        }
        SchemaCommand::Delete {
            subject,
            version,
            permanent,
            registry,
        } => {
            let path = match &version {
                Some(v) => format!(
                    "/subjects/{}/versions/{}?permanent={permanent}",
                    segment(&subject),
                    segment(v)
                ),
                None => format!("/subjects/{}?permanent={permanent}", segment(&subject)),
            };
            let out = call(&registry, "DELETE", &path, None).await?;
            println!(
                "deleted {subject} version(s) {out}{}",
                if permanent { " permanently" } else { "" }
            );
        }
        SchemaCommand::Config {
            subject,
            set,
            registry,
        } => {
            let path = match &subject {
                Some(s) => format!("/config/{}", segment(s)),
                None => "/config".to_string(),
            };
            match set {
                Some(level) => {
                    let out = call(
                        &registry,
                        "PUT",
                        &path,
                        Some(&json!({"compatibility": level.to_ascii_uppercase()})),
                    )
                    .await?;
                    println!("{}", out["compatibility"].as_str().unwrap_or_default());
                }
                None => {
                    let out = call(
                        &registry,
                        "GET",
                        &format!("{path}?defaultToGlobal=true"),
                        None,
                    )
                    .await?;
                    println!("{}", out["compatibilityLevel"].as_str().unwrap_or_default());
                }
            }
        }
        SchemaCommand::Check {
            schema,
            version,
            registry,
        } => {
            let body = schema_body(&schema)?;
            let subject = segment(&schema.subject);
            let path = match &version {
                Some(v) => format!(
                    "/compatibility/subjects/{subject}/versions/{}?verbose=true",
                    segment(v)
                ),
                None => format!("/compatibility/subjects/{subject}/versions?verbose=true"),
            };
            let out = call(&registry, "POST", &path, Some(&body)).await?;
            if out["is_compatible"].as_bool() == Some(true) {
                println!(
                    "compatible: {} may be registered under {}",
                    schema.file.display(),
                    schema.subject
                );
            } else {
                eprintln!(
                    "incompatible: {} may not be registered under {}",
                    schema.file.display(),
                    schema.subject
                );
                for m in out["messages"].as_array().into_iter().flatten() {
                    eprintln!(
                        "  - {}",
                        m.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| m.to_string())
                    );
                }
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
