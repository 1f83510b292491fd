//! Remote configuration files of products: versions, push, signed downloads.
//!
//! The configuration runtime ([`DevConfig`]) is installed by the server as a request
//! extension; without it these routes answer 503.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use lode_devconfig::{DevConfig, DevConfigError, PushReport};
use lode_registry::ConfigVersion;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// The routes of this module, merged into the signed API.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(put_config, get_config))
        .routes(routes!(list_versions))
        .routes(routes!(push_config))
}

/// The running configuration runtime, installed by the server as a request extension.
pub(crate) struct Configs(DevConfig);

impl<S: Send + Sync> FromRequestParts<S> for Configs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<DevConfig>()
            .cloned()
            .map(Configs)
            .ok_or_else(|| ApiError::Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "ServiceUnavailable",
                message: "remote configuration is not enabled on this server".into(),
            })
    }
}

impl From<DevConfigError> for ApiError {
    fn from(e: DevConfigError) -> ApiError {
        if let DevConfigError::Registry(r) = e {
            return ApiError::Registry(r);
        }
        let status = match &e {
            DevConfigError::NotJson(_) | DevConfigError::TooManyDevices(..) => {
                StatusCode::BAD_REQUEST
            }
            DevConfigError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DevConfigError::NoConfig(_) | DevConfigError::VersionNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            DevConfigError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            DevConfigError::Registry(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::Refused {
            status,
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// One version of a product's configuration file.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigVersionDto {
    product_key: String,
    version: i64,
    /// The Alink `configId` of this version.
    config_id: String,
    /// Size in bytes.
    size: u64,
    /// Lowercase hex SHA-256 of the file (the Alink `sign`, `signMethod` "Sha256").
    sha256: String,
    created_at: DateTime<Utc>,
    /// The file itself (only when one version is read).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    content: Option<serde_json::Value>,
    /// A signed download URL, as devices get it (only when one version is read).
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

impl ConfigVersionDto {
    fn new(v: ConfigVersion) -> ConfigVersionDto {
        ConfigVersionDto {
            product_key: v.product_key,
            version: v.version,
            config_id: v.config_id,
            size: v.size,
            sha256: v.sha256,
            created_at: v.created_at,
            content: None,
            url: None,
        }
    }

    fn with_content(v: ConfigVersion, configs: &DevConfig) -> ConfigVersionDto {
        let url = configs.download_url(&v.config_id);
        let content = serde_json::from_str(&v.content).ok();
        ConfigVersionDto {
            content,
            url: Some(url),
            ..ConfigVersionDto::new(v)
        }
    }
}

/// The versions of a product's configuration, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigVersionList {
    items: Vec<ConfigVersionDto>,
}

/// Which version to read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionQuery {
    /// A version number; the current version when absent.
    version: Option<i64>,
}

/// Where to push.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PushRequest {
    /// Devices to push to (at most 1,000); every online device of the product when absent.
    #[serde(default)]
    device_names: Option<Vec<String>>,
    /// How long to wait for the devices' `push_reply`, in ms (default 3,000, at most 10,000).
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// Saves the product's configuration file (the request body, JSON, at most 64 KB) as a new
/// version, which becomes the current one.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/config", tag = "remoteConfig",
    params(("productKey" = String, Path)),
    request_body(content = Object, content_type = "application/json", description = "The configuration file"),
    responses(
        (status = 200, body = ConfigVersionDto, description = "The new version"),
        (status = 400, body = ErrorBody, description = "InvalidConfig (not JSON)"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 413, body = ErrorBody, description = "ConfigTooLarge (over 64 KB)"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn put_config(
    State(s): State<ApiState>,
    caller: Caller,
    Configs(configs): Configs,
    ApiPath(pk): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<ConfigVersionDto>> {
    s.owned_product(&caller, &pk).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::from(DevConfigError::NotJson(e.to_string())))?;
    let saved = configs.save(&pk, text).await?;
    Ok(Json(ConfigVersionDto::new(saved)))
}

/// The product's current configuration file (or one version), with its download URL.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/config", tag = "remoteConfig",
    params(("productKey" = String, Path), VersionQuery),
    responses(
        (status = 200, body = ConfigVersionDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound, ConfigNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn get_config(
    State(s): State<ApiState>,
    caller: Caller,
    Configs(configs): Configs,
    ApiPath(pk): ApiPath<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<ConfigVersionDto>> {
    s.owned_product(&caller, &pk).await?;
    let v = match q.version {
        Some(n) => configs.version(&pk, n).await?,
        None => configs.current(&pk).await?,
    };
    Ok(Json(ConfigVersionDto::with_content(v, &configs)))
}

/// Every version of the product's configuration file, newest first (without content).
#[utoipa::path(get, path = "/api/v1/products/{productKey}/config/versions", tag = "remoteConfig",
    params(("productKey" = String, Path)),
    responses(
        (status = 200, body = ConfigVersionList),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn list_versions(
    State(s): State<ApiState>,
    caller: Caller,
    Configs(configs): Configs,
    ApiPath(pk): ApiPath<String>,
) -> ApiResult<Json<ConfigVersionList>> {
    s.owned_product(&caller, &pk).await?;
    let items = configs
        .versions(&pk)
        .await?
        .into_iter()
        .map(ConfigVersionDto::new)
        .collect();
    Ok(Json(ConfigVersionList { items }))
}

/// Pushes the current configuration on `thing/config/push` to the product's online devices
/// (or the listed ones) and reports each device: `acknowledged` (with the device's `code`),
/// `noReply`, `offline` or `notFound`. Offline devices are not queued.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/config/push", tag = "remoteConfig",
    params(("productKey" = String, Path)),
    request_body = PushRequest,
    responses(
        (status = 200, description = "Per-device results: {configId, version, results: [{deviceName, status, code?}]}", body = Object),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, ConfigNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn push_config(
    State(s): State<ApiState>,
    caller: Caller,
    Configs(configs): Configs,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<PushRequest>,
) -> ApiResult<Json<PushReport>> {
    s.owned_product(&caller, &pk).await?;
    let wait_ms = body.wait_ms.unwrap_or(3_000);
    if wait_ms > 10_000 {
        return Err(ApiError::invalid("waitMs", "at most 10000"));
    }
    let report = configs
        .push(&pk, body.device_names, Duration::from_millis(wait_ms))
        .await?;
    Ok(Json(report))
}
