//! Confluent Schema Registry's REST API over the registry: the routes, their JSON, and
//! errors as `{"error_code": ..., "message": ...}` with Confluent's codes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::compat::CompatibilityLevel;
use crate::error::RegistryError;
use crate::records::{ConfigValue, Mode, Reference};
use crate::registry::{Registry, SchemaRequest, SubjectVersion, VersionSpec};
use crate::schema::{ParsedSchema, SchemaType};
use crate::state::StoredSchema;

pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Reg = State<Arc<Registry>>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;
type Result2 = Result<Response, RegistryError>;

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.codes();
        if status >= 500 {
            tracing::error!(error = %self, "schema registry request failed");
        }
        let body = json!({"error_code": code, "message": self.to_string()});
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response()
    }
}

fn reply(value: Value) -> Result2 {
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], value.to_string()).into_response())
}

pub fn router(registry: Arc<Registry>) -> Router {
    // the body limit is checked by `body()` so an oversized body gets a JSON error
    let limit = registry.config.max_request_bytes;
    let routes: Vec<(&str, MethodRouter<Arc<Registry>>)> = vec![
        ("/", get(|| async { reply(json!({})) })),
        ("/contexts", get(|| async { reply(json!(["."])) })),
        ("/schemas", get(list_schemas)),
        (
            "/schemas/types",
            get(|| async { reply(json!(["JSON", "PROTOBUF", "AVRO"])) }),
        ),
        ("/schemas/ids/{id}", get(schema_by_id)),
        ("/schemas/ids/{id}/schema", get(raw_schema_by_id)),
        ("/schemas/ids/{id}/subjects", get(subjects_by_id)),
        ("/schemas/ids/{id}/versions", get(versions_by_id)),
        ("/schemas/guids/{guid}", get(schema_by_guid)),
        ("/subjects", get(list_subjects)),
        ("/subjects/{subject}", post(lookup).delete(delete_subject)),
        (
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        ),
        (
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        ),
        (
            "/subjects/{subject}/versions/{version}/schema",
            get(get_raw_version),
        ),
        (
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        ),
        (
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        ),
        (
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_one),
        ),
        (
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        ),
        (
            "/config/{subject}",
            get(get_config).put(put_config).delete(delete_config),
        ),
        ("/mode", get(get_global_mode).put(put_global_mode)),
        (
            "/mode/{subject}",
            get(get_mode).put(put_mode).delete(delete_mode),
        ),
    ];
    let mut router = Router::new();
    for (path, methods) in routes {
        // Confluent's server answers a path with a trailing slash too, and Java's client
        // sends one (POST /compatibility/subjects/{s}/versions/)
        if path != "/" {
            router = router.route(&format!("{path}/"), methods.clone());
        }
        router = router.route(path, methods);
    }
    router
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, CONTENT_TYPE)],
                json!({"error_code": 404, "message": "HTTP 404 Not Found"}).to_string(),
            )
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::CONTENT_TYPE, CONTENT_TYPE)],
                json!({"error_code": 405, "message": "HTTP 405 Method Not Allowed"}).to_string(),
            )
        })
        .layer(DefaultBodyLimit::max(limit.saturating_add(1)))
        .layer(axum::middleware::from_fn_with_state(
            registry.clone(),
            count_request,
        ))
        .with_state(registry)
}

/// Counts each request by its route template (not its path: ids and subjects would make
/// the label set unbounded).
async fn count_request(
    State(reg): Reg,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().trim_end_matches('/').to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    reg.metrics
        .record(&method, &route, response.status().as_u16());
    response
}

// ---- request parts ----

fn params(q: Params) -> Result<HashMap<String, String>, RegistryError> {
    q.map(|Query(m)| m)
        .map_err(|e| RegistryError::BadRequest(format!("bad query string: {}", e.body_text())))
}

fn flag(p: &HashMap<String, String>, name: &str) -> bool {
    p.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, RegistryError> {
    p.map(|Path(t)| t)
        .map_err(|e| RegistryError::BadRequest(format!("bad path: {}", e.body_text())))
}

fn id_param(s: &str) -> Result<i32, RegistryError> {
    s.parse::<i32>()
        .map_err(|_| RegistryError::SchemaNotFound(s.to_string()))
}

fn body<T: for<'de> Deserialize<'de>>(
    limit: usize,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<T, RegistryError> {
    let bytes = bytes.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RegistryError::BodyTooLarge {
                size: limit + 1,
                limit,
            }
        } else {
            RegistryError::BadRequest(e.body_text())
        }
    })?;
    if bytes.len() > limit {
        return Err(RegistryError::BodyTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            RegistryError::Unprocessable(format!("Unrecognized request: {e}"))
        }
        _ => RegistryError::BadRequest(format!("Malformed JSON request body: {e}")),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: Option<String>,
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
    id: Option<i32>,
    version: Option<i32>,
    /// Confluent's data contracts. Kappa has no rules engine yet: a schema that carries
    /// rules or metadata is refused rather than stored without them (a client would
    /// otherwise run without its rules, for example write fields meant to be encrypted
    /// in the clear).
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    rule_set: Option<Value>,
}

fn is_empty_contract(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.values().all(|x| match x {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        }),
        _ => false,
    }
}

impl SchemaBody {
    fn request(self) -> Result<SchemaRequest, RegistryError> {
        if !is_empty_contract(&self.rule_set) || !is_empty_contract(&self.metadata) {
            return Err(RegistryError::InvalidRuleSet(
                "schema metadata and rule sets (data contracts) are not supported by Kappa's registry yet".into(),
            ));
        }
        let schema_type = match &self.schema_type {
            None => SchemaType::Avro,
            Some(t) => SchemaType::parse(t).ok_or_else(|| {
                RegistryError::InvalidSchema(format!(
                    "unknown schema type '{t}': one of AVRO, JSON, PROTOBUF"
                ))
            })?,
        };
        let schema = self
            .schema
            .ok_or_else(|| RegistryError::InvalidSchema("Empty schema".into()))?;
        if schema.trim().is_empty() {
            return Err(RegistryError::InvalidSchema("Empty schema".into()));
        }
        Ok(SchemaRequest {
            schema,
            schema_type,
            references: self.references,
            id: self.id,
            version: self.version,
        })
    }
}

// ---- response shapes ----

/// The schema text in the format asked for: Protobuf's `serialized` is its descriptor.
fn schema_text(
    reg: &Registry,
    schema: &StoredSchema,
    format: Option<&String>,
) -> Result<String, RegistryError> {
    if format.is_some_and(|f| f.eq_ignore_ascii_case("serialized"))
        && schema.schema_type == SchemaType::Protobuf
    {
        if let ParsedSchema::Protobuf(p) = reg.parsed(schema)?.as_ref() {
            return Ok(p.serialized());
        }
    }
    Ok(schema.text.clone())
}

fn schema_fields(out: &mut serde_json::Map<String, Value>, schema: &StoredSchema, text: String) {
    if schema.schema_type != SchemaType::Avro {
        out.insert("schemaType".into(), json!(schema.schema_type.as_str()));
    }
    if !schema.references.is_empty() {
        out.insert("references".into(), json!(schema.references));
    }
    out.insert("schema".into(), json!(text));
}

fn version_json(
    reg: &Registry,
    v: &SubjectVersion,
    format: Option<&String>,
) -> Result<Value, RegistryError> {
    let mut out = serde_json::Map::new();
    out.insert("subject".into(), json!(v.subject));
    out.insert("version".into(), json!(v.version));
    schema_with_ids(&mut out, reg, &v.schema, format)?;
    if v.deleted {
        out.insert("deleted".into(), json!(true));
    }
    Ok(Value::Object(out))
}

// ---- schemas ----

async fn schema_by_id(
    State(reg): Reg,
    id: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let schema = reg.schema_by_id(id_param(&path(id)?)?)?;
    schema_json(&reg, &schema, p.get("format"))
}

/// A schema by its id or guid: `{"id", "guid", "schemaType", "references", "schema"}`.
fn schema_json(reg: &Registry, schema: &StoredSchema, format: Option<&String>) -> Result2 {
    let mut out = serde_json::Map::new();
    schema_with_ids(&mut out, reg, schema, format)?;
    reply(Value::Object(out))
}

/// `id`, `guid`, `schemaType`, `references` and `schema` of a stored schema.
fn schema_with_ids(
    out: &mut serde_json::Map<String, Value>,
    reg: &Registry,
    schema: &StoredSchema,
    format: Option<&String>,
) -> Result<(), RegistryError> {
    out.insert("id".into(), json!(schema.id));
    out.insert("guid".into(), json!(schema.guid));
    schema_fields(out, schema, schema_text(reg, schema, format)?);
    Ok(())
}

async fn schema_by_guid(
    State(reg): Reg,
    guid: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let schema = reg.schema_by_guid(&path(guid)?)?;
    schema_json(&reg, &schema, p.get("format"))
}

async fn raw_schema_by_id(
    State(reg): Reg,
    id: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let schema = reg.schema_by_id(id_param(&path(id)?)?)?;
    raw(schema_text(&reg, &schema, p.get("format"))?)
}

fn raw(text: String) -> Result2 {
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

async fn subjects_by_id(
    State(reg): Reg,
    id: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let mut subjects: Vec<String> = reg
        .id_versions(id_param(&path(id)?)?, flag(&p, "deleted"))?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    reply(json!(subjects))
}

async fn versions_by_id(
    State(reg): Reg,
    id: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let versions: Vec<Value> = reg
        .id_versions(id_param(&path(id)?)?, flag(&p, "deleted"))?
        .into_iter()
        .map(|(s, v)| json!({"subject": s, "version": v}))
        .collect();
    reply(json!(versions))
}

async fn list_schemas(State(reg): Reg, q: Params) -> Result2 {
    let p = params(q)?;
    let prefix = p.get("subjectPrefix").map(String::as_str).unwrap_or("");
    let all = reg.all_versions(prefix, flag(&p, "deleted"), flag(&p, "latestOnly"));
    // Confluent pages this listing, 1000 schemas at most unless asked for fewer
    let (offset, limit) = page(&p, 1000)?;
    let out: Result<Vec<Value>, _> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|v| version_json(&reg, v, None))
        .collect();
    reply(json!(out?))
}

/// `offset` and `limit` of a listing; a missing or negative limit is `default`.
fn page(p: &HashMap<String, String>, default: usize) -> Result<(usize, usize), RegistryError> {
    let number = |name: &str| -> Result<Option<i64>, RegistryError> {
        p.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    RegistryError::BadRequest(format!("{name} must be a number, not '{v}'"))
                })
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0).max(0) as usize;
    let limit = match number("limit")? {
        Some(l) if l >= 0 => (l as usize).min(default),
        _ => default,
    };
    Ok((offset, limit))
}

// ---- subjects ----

async fn list_subjects(State(reg): Reg, q: Params) -> Result2 {
    let p = params(q)?;
    let prefix = p.get("subjectPrefix").map(String::as_str).unwrap_or("");
    let (offset, limit) = page(&p, usize::MAX)?;
    let subjects: Vec<String> = reg
        .subjects(prefix, flag(&p, "deleted"), flag(&p, "deletedOnly"))
        .into_iter()
        .skip(offset)
        .take(limit)
        .collect();
    reply(json!(subjects))
}

async fn list_versions(
    State(reg): Reg,
    subject: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    reply(json!(reg.versions(
        &path(subject)?,
        flag(&p, "deleted"),
        flag(&p, "deletedOnly")
    )?))
}

async fn get_version(
    State(reg): Reg,
    sv: Result<Path<(String, String)>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let (subject, version) = path(sv)?;
    let v = reg.version(&subject, VersionSpec::parse(&version)?, flag(&p, "deleted"))?;
    reply(version_json(&reg, &v, p.get("format"))?)
}

async fn get_raw_version(
    State(reg): Reg,
    sv: Result<Path<(String, String)>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let (subject, version) = path(sv)?;
    let v = reg.version(&subject, VersionSpec::parse(&version)?, flag(&p, "deleted"))?;
    raw(schema_text(&reg, &v.schema, p.get("format"))?)
}

async fn referenced_by(
    State(reg): Reg,
    sv: Result<Path<(String, String)>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let (subject, version) = path(sv)?;
    reply(json!(reg.referenced_by(
        &subject,
        VersionSpec::parse(&version)?,
        flag(&p, "deleted")
    )?))
}

async fn register(
    State(reg): Reg,
    subject: Result<Path<String>, PathRejection>,
    q: Params,
    bytes: Result<Bytes, BytesRejection>,
) -> Result2 {
    let p = params(q)?;
    let subject = path(subject)?;
    let request = body::<SchemaBody>(reg.config.max_request_bytes, bytes)?.request()?;
    let v = reg
        .register(&subject, &request, flag(&p, "normalize"))
        .await?;
    reply(
        json!({"id": v.schema.id, "guid": v.schema.guid, "version": v.version, "subject": v.subject}),
    )
}

async fn lookup(
    State(reg): Reg,
    subject: Result<Path<String>, PathRejection>,
    q: Params,
    bytes: Result<Bytes, BytesRejection>,
) -> Result2 {
    let p = params(q)?;
    let subject = path(subject)?;
    let request = body::<SchemaBody>(reg.config.max_request_bytes, bytes)?.request()?;
    let v = reg
        .lookup(
            &subject,
            &request,
            flag(&p, "normalize"),
            flag(&p, "deleted"),
        )
        .await?;
    reply(version_json(&reg, &v, None)?)
}

async fn delete_subject(
    State(reg): Reg,
    subject: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    reply(json!(
        reg.delete_subject(&path(subject)?, flag(&p, "permanent"))
            .await?
    ))
}

async fn delete_version(
    State(reg): Reg,
    sv: Result<Path<(String, String)>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let (subject, version) = path(sv)?;
    let spec = VersionSpec::parse(&version)?;
    reply(json!(
        reg.delete_version(&subject, spec, flag(&p, "permanent"))
            .await?
    ))
}

// ---- compatibility ----

async fn compatibility_all(
    State(reg): Reg,
    subject: Result<Path<String>, PathRejection>,
    q: Params,
    bytes: Result<Bytes, BytesRejection>,
) -> Result2 {
    let subject = path(subject)?;
    compatibility(&reg, &subject, None, q, bytes).await
}

async fn compatibility_one(
    State(reg): Reg,
    sv: Result<Path<(String, String)>, PathRejection>,
    q: Params,
    bytes: Result<Bytes, BytesRejection>,
) -> Result2 {
    let (subject, version) = path(sv)?;
    let spec = VersionSpec::parse(&version)?;
    compatibility(&reg, &subject, Some(spec), q, bytes).await
}

async fn compatibility(
    reg: &Registry,
    subject: &str,
    version: Option<VersionSpec>,
    q: Params,
    bytes: Result<Bytes, BytesRejection>,
) -> Result2 {
    let p = params(q)?;
    let request = body::<SchemaBody>(reg.config.max_request_bytes, bytes)?.request()?;
    let checked = reg
        .check_compatibility(subject, version, &request, flag(&p, "normalize"))
        .await;
    let reasons = match checked {
        Ok(reasons) => reasons,
        // verbose: an invalid schema is an incompatible one, with the reason (as Confluent)
        Err(RegistryError::InvalidSchema(e)) if flag(&p, "verbose") => vec![e],
        Err(e) => return Err(e),
    };
    let mut out = json!({"is_compatible": reasons.is_empty()});
    if flag(&p, "verbose") {
        out["messages"] = json!(reasons);
    }
    reply(out)
}

// ---- config ----

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
    normalize: Option<bool>,
}

impl ConfigBody {
    fn update(&self) -> Result<ConfigValue, RegistryError> {
        let level = match self
            .compatibility
            .as_deref()
            .or(self.compatibility_level.as_deref())
        {
            Some(l) => {
                Some(CompatibilityLevel::parse(l).ok_or(RegistryError::InvalidCompatibilityLevel)?)
            }
            None => None,
        };
        if level.is_none() && self.normalize.is_none() {
            return Err(RegistryError::InvalidCompatibilityLevel);
        }
        Ok(ConfigValue {
            compatibility_level: level,
            normalize: self.normalize,
        })
    }
}

/// Settings as JSON: GET and DELETE name the level `compatibilityLevel`, PUT answers with
/// `compatibility`, as Confluent's API does.
fn config_json(c: &ConfigValue, level_key: &str) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(l) = c.compatibility_level {
        out.insert(level_key.into(), json!(l.as_str()));
    }
    if let Some(n) = c.normalize {
        out.insert("normalize".into(), json!(n));
    }
    Value::Object(out)
}

async fn get_global_config(State(reg): Reg) -> Result2 {
    reply(config_json(
        &reg.get_config(None, true)?,
        "compatibilityLevel",
    ))
}

async fn put_global_config(State(reg): Reg, bytes: Result<Bytes, BytesRejection>) -> Result2 {
    let update = body::<ConfigBody>(reg.config.max_request_bytes, bytes)?.update()?;
    reg.set_config(None, update.clone()).await?;
    reply(config_json(&update, "compatibility"))
}

async fn delete_global_config(State(reg): Reg) -> Result2 {
    reply(config_json(
        &reg.delete_config(None).await?,
        "compatibilityLevel",
    ))
}

async fn get_config(
    State(reg): Reg,
    subject: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let config = reg.get_config(Some(&path(subject)?), flag(&p, "defaultToGlobal"))?;
    reply(config_json(&config, "compatibilityLevel"))
}

async fn put_config(
    State(reg): Reg,
    subject: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result2 {
    let subject = path(subject)?;
    let update = body::<ConfigBody>(reg.config.max_request_bytes, bytes)?.update()?;
    reg.set_config(Some(&subject), update.clone()).await?;
    reply(config_json(&update, "compatibility"))
}

async fn delete_config(State(reg): Reg, subject: Result<Path<String>, PathRejection>) -> Result2 {
    let previous = reg.delete_config(Some(&path(subject)?)).await?;
    reply(config_json(&previous, "compatibilityLevel"))
}

// ---- mode ----

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
}

fn mode_str(m: Mode) -> Value {
    crate::records::to_value(&m)
}

async fn get_global_mode(State(reg): Reg) -> Result2 {
    reply(json!({"mode": mode_str(reg.get_mode(None, true)?)}))
}

async fn put_global_mode(
    State(reg): Reg,
    q: Params,
    bytes: Result<Bytes, BytesRejection>,
) -> Result2 {
    let p = params(q)?;
    let mode = body::<ModeBody>(reg.config.max_request_bytes, bytes)?;
    let mode = Mode::parse(&mode.mode).ok_or(RegistryError::InvalidMode)?;
    reg.set_mode(None, mode, flag(&p, "force")).await?;
    reply(json!({"mode": mode_str(mode)}))
}

async fn get_mode(
    State(reg): Reg,
    subject: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result2 {
    let p = params(q)?;
    let mode = reg.get_mode(Some(&path(subject)?), flag(&p, "defaultToGlobal"))?;
    reply(json!({"mode": mode_str(mode)}))
}

async fn put_mode(
    State(reg): Reg,
    subject: Result<Path<String>, PathRejection>,
    q: Params,
    bytes: Result<Bytes, BytesRejection>,
) -> Result2 {
    let p = params(q)?;
    let subject = path(subject)?;
    let mode = body::<ModeBody>(reg.config.max_request_bytes, bytes)?;
    let mode = Mode::parse(&mode.mode).ok_or(RegistryError::InvalidMode)?;
    reg.set_mode(Some(&subject), mode, flag(&p, "force"))
        .await?;
    reply(json!({"mode": mode_str(mode)}))
}

async fn delete_mode(State(reg): Reg, subject: Result<Path<String>, PathRejection>) -> Result2 {
    let previous = reg.delete_mode(&path(subject)?).await?;
    reply(json!({"mode": mode_str(previous)}))
}
