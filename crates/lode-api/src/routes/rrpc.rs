//! Synchronous cloud-to-device requests (RRPC) on system and custom topics.
//!
//! `POST /api/v1/rrpc` sends any payload to a device and waits for its answer:
//! on `/sys/{pk}/{dn}/rrpc/request/{messageId}` (answered on `.../rrpc/response/{messageId}`)
//! or, with `topic` `user/...`, on `/ext/rrpc/{messageId}/{pk}/{dn}/user/...` (answered on
//! the same topic). Answers are consumed by the platform, never routed to subscribers.
//! Throttled as RRpc (1,000 calls per second per account).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use lode_thing::ThingError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;

/// The routes of this module, merged into the signed API.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(rrpc))
}

/// An RRPC request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RrpcRequest {
    product_key: String,
    device_name: String,
    /// Payload, base64 (standard alphabet). Give this or `payloadText`.
    #[serde(default)]
    payload: Option<String>,
    /// Payload as UTF-8 text.
    #[serde(default)]
    payload_text: Option<String>,
    /// A custom topic `user/<level>[/...]` of the device: the request goes to
    /// `/ext/rrpc/{messageId}/{productKey}/{deviceName}/user/...`. Absent: the system
    /// RRPC topic `/sys/{productKey}/{deviceName}/rrpc/request/{messageId}`.
    #[serde(default)]
    topic: Option<String>,
    /// How long to wait for the answer, in ms (1,000 to 60,000; default 5,000).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The device's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RrpcResponse {
    /// The answer, base64.
    payload: String,
    /// The answer as text, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_text: Option<String>,
}

/// Sends a payload to a device and returns its answer: `DeviceOffline` (409) when it is not
/// connected, `DeviceNotSubscribed` (409) when it does not listen on the RRPC topic,
/// `Timeout` (504) when it does not answer in time.
#[utoipa::path(post, path = "/api/v1/rrpc", tag = "rrpc",
    request_body = RrpcRequest,
    responses(
        (status = 200, body = RrpcResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 409, body = ErrorBody, description = "DeviceOffline, DeviceNotSubscribed"),
        (status = 429, body = ErrorBody, description = "Throttling (RRpc: 1,000 qps per account, 100 per IP)"),
        (status = 504, body = ErrorBody, description = "Timeout"),
    ))]
pub(crate) async fn rrpc(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<RrpcRequest>,
) -> ApiResult<Json<RrpcResponse>> {
    s.owned_product(&caller, &body.product_key).await?;
    let engine = s.engine()?;
    let payload =
        super::messaging::payload(body.payload, body.payload_text, s.config.max_publish_bytes)?;
    let timeout = body.timeout_ms.map(Duration::from_millis);
    let answer = engine
        .rrpc(
            &body.product_key,
            &body.device_name,
            body.topic.as_deref(),
            payload,
            timeout,
        )
        .await
        .map_err(|e| match e {
            ThingError::InvalidTopic(m) => ApiError::invalid("topic", m),
            e @ ThingError::NotSubscribed(_) => ApiError::Refused {
                status: StatusCode::CONFLICT,
                code: "DeviceNotSubscribed",
                message: e.to_string(),
            },
            e => ApiError::Thing(e),
        })?;
    Ok(Json(RrpcResponse {
        payload: base64::engine::general_purpose::STANDARD.encode(&answer),
        payload_text: std::str::from_utf8(&answer).ok().map(str::to_owned),
    }))
}
