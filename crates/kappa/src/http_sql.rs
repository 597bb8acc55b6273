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

async fn start(State(state): State<AppState>, Path(id): Path<String>) -> Response {
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
