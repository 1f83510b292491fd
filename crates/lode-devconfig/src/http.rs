//! Downloads of configuration files at signed, time-limited URLs
//! (`GET /devconfig/files/{configId}?expires=<unix s>&signature=<hex>`), merged into the
//! server's HTTP router. The URLs are handed out in `get_reply` and pushes.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::DevConfig;

/// Path prefix of download URLs.
pub const DOWNLOAD_PREFIX: &str = "/devconfig/files";

/// The query of a download URL.
#[derive(Debug, Deserialize)]
struct Signed {
    expires: u64,
    signature: String,
}

/// The download route.
pub fn router(config: DevConfig) -> Router {
    Router::new()
        .route(&format!("{DOWNLOAD_PREFIX}/{{config_id}}"), get(download))
        .with_state(config)
}

async fn download(
    State(config): State<DevConfig>,
    Path(config_id): Path<String>,
    query: Result<Query<Signed>, QueryRejection>,
) -> Response {
    let Ok(Query(signed)) = query else {
        return (StatusCode::FORBIDDEN, "missing expires or signature").into_response();
    };
    if !config.check_url(&config_id, signed.expires, &signed.signature) {
        return (StatusCode::FORBIDDEN, "invalid or expired signature").into_response();
    }
    match config.by_id(&config_id).await {
        Ok(Some(version)) => {
            ([(CONTENT_TYPE, "application/json")], version.content).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such configuration").into_response(),
        Err(error) => {
            tracing::error!(%error, "configuration download failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}
