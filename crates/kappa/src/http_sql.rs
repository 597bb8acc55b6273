//! The SQL HTTP API: `POST /v1/sql` and `/v1/pipelines`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};

use crate::dev::AppState;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/sql", post(execute))
        .route("/v1/pipelines", get(list))
        .route("/v1/pipelines/{id}", get(describe).delete(delete))
        .route("/v1/pipelines/{id}/stop", post(stop))
        .route("/v1/pipelines/{id}/start", post(start))
        .route("/v1/pipelines/{id}/savepoint", post(savepoint))
        .route("/v1/pipelines/{id}/upgrade", post(upgrade))
}

fn body_json(body: &axum::body::Bytes) -> Result<Value, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("the body must be a JSON object: {e}")})),
            )
                .into_response(),
        )
    })
}

fn failed(e: String) -> Response {
    let status = if e.contains("does not exist") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "error": e }))).into_response()
}

/// `{"dir": "...", "stop": true}`, both optional.
async fn savepoint(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let dir = request
        .get("dir")
        .and_then(Value::as_str)
        .map(std::path::PathBuf::from);
    let stop = request
        .get("stop")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match state.sql.savepoint(&id, dir, stop).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => failed(e),
    }
}

/// `{"sql": "INSERT INTO ..."}`.
async fn upgrade(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(sql) = request.get("sql").and_then(Value::as_str) else {
        return failed("missing \"sql\" (the new INSERT INTO ... SELECT ...)".into());
    };
    match state.sql.upgrade(&id, sql).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => failed(e),
    }
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("pipeline '{id}' does not exist")})),
    )
        .into_response()
}

async fn execute(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let request: Value =
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("the body must be JSON {{\"sql\": \"...\"}}: {e}")})),
            )
                .into_response(),
        };
    let Some(sql) = request.get("sql").and_then(Value::as_str) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "missing \"sql\" (a string)"})),
        )
            .into_response();
    };
    match state.sql.execute(sql).await {
        Ok(results) => Json(json!({ "results": results })).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": e.error.message,
                "line": e.error.line,
                "column": e.error.column,
                "results": e.results,
            })),
        )
            .into_response(),
    }
}

async fn list(State(state): State<AppState>) -> Response {
    Json(Value::Array(state.sql.list().await)).into_response()
}

async fn describe(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.sql.get(&id).await {
        Some(v) => Json(v).into_response(),
        None => not_found(&id),
    }
}

async fn stop(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.sql.stop(&id).await {
        Some(v) => Json(v).into_response(),
        None => not_found(&id),
    }
}

/// Optionally `{"from_savepoint": "DIR"}`.
async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if let Some(dir) = request.get("from_savepoint").and_then(Value::as_str) {
        return match state.sql.start_from_savepoint(&id, dir.into()).await {
            Ok(v) => Json(v).into_response(),
            Err(e) => failed(e),
        };
    }
    match state.sql.start(&id).await {
        Some(v) => Json(v).into_response(),
        None => not_found(&id),
    }
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if state.sql.delete(&id).await {
        Json(json!({"deleted": id})).into_response()
    } else {
        not_found(&id)
    }
}
