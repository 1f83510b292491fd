//! Access keys of the caller's account, and bearer tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::ApiState;
use crate::auth::{Caller, TokenEntry, ms_to_datetime, now_ms};
use crate::dto::{AccessKeyDto, AccessKeyList, AccessKeyPatch, TokenDto};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

/// The caller's key `id`; another account's is `AccessKeyNotFound`.
async fn owned_key(s: &ApiState, caller: &Caller, id: &str) -> ApiResult<()> {
    match s.registry.get_access_key(id).await? {
        Some(k) if k.account_id == caller.account_id => Ok(()),
        _ => Err(lode_registry::RegistryError::AccessKeyNotFound(id.to_owned()).into()),
    }
}

/// Creates an access key for the caller's account; the secret is shown only here.
#[utoipa::path(post, path = "/api/v1/accessKeys", tag = "accessKeys",
    responses(
        (status = 201, body = AccessKeyDto, description = "The new key, with its secret"),
    ))]
pub(crate) async fn create_access_key(
    State(s): State<ApiState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<AccessKeyDto>)> {
    let key = s.registry.create_access_key(&caller.account_id).await?;
    Ok((StatusCode::CREATED, Json(AccessKeyDto::from_key(key, true))))
}

/// Lists the caller's access keys (without secrets).
#[utoipa::path(get, path = "/api/v1/accessKeys", tag = "accessKeys",
    responses(
        (status = 200, body = AccessKeyList),
    ))]
pub(crate) async fn list_access_keys(
    State(s): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<AccessKeyList>> {
    let keys = s.registry.list_access_keys(&caller.account_id).await?;
    Ok(Json(AccessKeyList {
        items: keys
            .into_iter()
            .map(|k| AccessKeyDto::from_key(k, false))
            .collect(),
    }))
}

/// Enables or disables an access key.
#[utoipa::path(patch, path = "/api/v1/accessKeys/{accessKeyId}", tag = "accessKeys",
    params(("accessKeyId" = String, Path)),
    request_body = AccessKeyPatch,
    responses(
        (status = 200, body = AccessKeyDto),
        (status = 404, body = ErrorBody, description = "AccessKeyNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
    ))]
pub(crate) async fn update_access_key(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AccessKeyPatch>,
) -> ApiResult<Json<AccessKeyDto>> {
    owned_key(&s, &caller, &id).await?;
    let key = s.registry.set_access_key_enabled(&id, body.enabled).await?;
    Ok(Json(AccessKeyDto::from_key(key, false)))
}

/// Deletes an access key.
#[utoipa::path(delete, path = "/api/v1/accessKeys/{accessKeyId}", tag = "accessKeys",
    params(("accessKeyId" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "AccessKeyNotFound"),
    ))]
pub(crate) async fn delete_access_key(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    owned_key(&s, &caller, &id).await?;
    s.registry.delete_access_key(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a bearer token (valid 12 h by default) for the signing key; the call
/// itself must be signed.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "accessKeys",
    responses(
        (status = 201, body = TokenDto),
        (status = 401, body = ErrorBody, description = "MissingSignature (bearer tokens cannot mint tokens)"),
    ))]
pub(crate) async fn create_token(
    State(s): State<ApiState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<TokenDto>)> {
    if caller.via_token {
        return Err(ApiError::MissingSignature(crate::signing::HEADER_SIGNATURE));
    }
    let ttl = i64::try_from(s.config.token_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at_ms = now_ms().saturating_add(ttl);
    let token = s.shared.replay.issue_token(TokenEntry {
        account_id: caller.account_id,
        access_key_id: caller.access_key_id,
        expires_at_ms,
    });
    Ok((
        StatusCode::CREATED,
        Json(TokenDto {
            token,
            expires_at: ms_to_datetime(expires_at_ms),
        }),
    ))
}
