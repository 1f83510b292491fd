//! Device shadows: reported and desired state, versions, deltas.
//!
//! The document is the one devices read on `/shadow/get/${pk}/${dn}`:
//! `{state:{reported,desired}, metadata, version, timestamp}` (times in seconds). An
//! application writes only `desired`; a connected device gets the difference from its
//! reported state at once (`control`), an offline one when it next signs in. With
//! `version`, a write is accepted only if it is greater than the shadow's: of two writers
//! that read the same version and send the next one, exactly one wins, the other gets
//! 409 `VersionConflict`.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use lode_history::HistoryError;
use lode_shadow::{ServiceError, ShadowError, ShadowService};
use lode_thing::ThingError;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

/// The running shadow service, installed by the server as a request extension.
pub(crate) struct Shadows(ShadowService);

impl<S: Send + Sync> FromRequestParts<S> for Shadows {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ShadowService>()
            .cloned()
            .map(Shadows)
            .ok_or_else(|| ApiError::Internal("the shadow service is not running".into()))
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::Registry(r) => ApiError::Registry(r),
            ServiceError::Shadow(ShadowError::VersionConflict { current }) => {
                ApiError::Thing(ThingError::History(HistoryError::VersionConflict {
                    current,
                }))
            }
            ServiceError::Shadow(e @ ShadowError::Internal(_)) => ApiError::Internal(e.to_string()),
            ServiceError::Shadow(e) => ApiError::invalid("desired", e.to_string()),
        }
    }
}

/// A desired-state update.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DesiredBody {
    /// Attributes to set (a `null` value removes one), or `"null"` to clear all of them.
    #[schema(value_type = Object)]
    desired: Value,
    /// The new version; it must be greater than the shadow's. Without it the shadow's
    /// version plus one, unchecked.
    #[serde(default)]
    version: Option<u64>,
}

/// The caller's device `pk/dn`, checked to exist.
async fn device(s: &ApiState, caller: &Caller, pk: &str, dn: &str) -> ApiResult<()> {
    s.owned_product(caller, pk).await?;
    if s.registry.get_device(pk, dn).await?.is_none() {
        return Err(lode_registry::RegistryError::DeviceNotFound(format!("{pk}/{dn}")).into());
    }
    Ok(())
}

/// A device's shadow document (version 0 and empty states when it has none).
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/shadow", tag = "shadow",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = Object, description = "{state:{reported,desired}, metadata, version, timestamp}"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn get_shadow(
    axum::extract::State(s): axum::extract::State<ApiState>,
    Shadows(shadows): Shadows,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    device(&s, &caller, &pk, &dn).await?;
    Ok(Json(shadows.get(&pk, &dn).await?.to_json()))
}

/// Sets desired state; a connected device gets the difference from its reported state
/// at once, an offline one when it signs in.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/devices/{deviceName}/shadow/desired", tag = "shadow",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    request_body = DesiredBody,
    responses(
        (status = 200, body = Object, description = "The new document"),
        (status = 400, body = ErrorBody, description = "InvalidParameter (not an object, deeper than 5, over 128 attributes, document over 16 KB)"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 409, body = ErrorBody, description = "VersionConflict: the version is not greater than the shadow's"),
    ))]
pub(crate) async fn put_desired(
    axum::extract::State(s): axum::extract::State<ApiState>,
    Shadows(shadows): Shadows,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<DesiredBody>,
) -> ApiResult<Json<Value>> {
    device(&s, &caller, &pk, &dn).await?;
    let doc = shadows
        .update_desired(&pk, &dn, &body.desired, body.version)
        .await?;
    Ok(Json(doc.to_json()))
}

/// The same as `PUT`.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/shadow/desired", tag = "shadow",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    request_body = DesiredBody,
    responses(
        (status = 200, body = Object, description = "The new document"),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 409, body = ErrorBody, description = "VersionConflict"),
    ))]
pub(crate) async fn post_desired(
    state: axum::extract::State<ApiState>,
    shadows: Shadows,
    caller: Caller,
    path: ApiPath<(String, String)>,
    body: ApiJson<DesiredBody>,
) -> ApiResult<Json<Value>> {
    put_desired(state, shadows, caller, path, body).await
}

/// Deletes a device's shadow (idempotent); the next document starts from version 0.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/devices/{deviceName}/shadow", tag = "shadow",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn delete_shadow(
    axum::extract::State(s): axum::extract::State<ApiState>,
    Shadows(shadows): Shadows,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    device(&s, &caller, &pk, &dn).await?;
    shadows.delete(&pk, &dn).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of this module, merged into the signed API.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(get_shadow, delete_shadow))
        .routes(routes!(put_desired, post_desired))
}
