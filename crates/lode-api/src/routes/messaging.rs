//! Cloud-side messaging: publish to a device topic, broadcast to a product.
//!
//! Two broadcasts, both throttled as PubBroadcast (one per second per account):
//! a topic broadcast on `/broadcast/{pk}/{suffix}`, which devices subscribe to themselves
//! (refused with `TooManySubscribers` when the topic has more than
//! `ApiConfig::broadcast_subscribers_max` subscribers, 1,000 by default), and a device
//! broadcast on `/sys/{pk}/{dn}/broadcast/request/{messageId}` to every online device of
//! the product (auto-subscribed by devices signing in with `_ss=1`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use bytes::Bytes;
use lode_broker::PublishError;
use lode_mqtt::QoS;
use lode_registry::{DeviceFilter, DeviceState, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::dto::{BroadcastRequest, PublishRequest, PublishResponse};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

/// The level of `topic` holding its ProductKey: `/{pk}/{dn}/...` (custom
/// topics), `/sys/{pk}/...`, `/broadcast/{pk}/...`, `/ext/<kind>/{pk}/...`,
/// `/shadow/<op>/{pk}/...`, `/ota/device/<op>/{pk}/...`.
fn topic_product_key(topic: &str) -> Option<&str> {
    let mut levels = topic.split('/');
    if levels.next() != Some("") {
        return None;
    }
    let levels: Vec<&str> = levels.collect();
    let idx = match *levels.first()? {
        "sys" | "broadcast" => 1,
        "ext" | "shadow" => 2,
        "ota" => 3,
        _ => 0,
    };
    levels.get(idx).copied().filter(|s| !s.is_empty())
}

/// The payload of a request: base64 `payload` or `payloadText`, at most `max` bytes.
pub(crate) fn payload(
    payload: Option<String>,
    text: Option<String>,
    max: usize,
) -> ApiResult<Bytes> {
    let bytes = match (payload, text) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "payload",
                "give payload or payloadText, not both",
            ));
        }
        (Some(b64), None) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| ApiError::invalid("payload", format!("not base64: {e}")))?,
        (None, Some(text)) => text.into_bytes(),
        (None, None) => Vec::new(),
    };
    if bytes.len() > max {
        return Err(ApiError::invalid(
            "payload",
            format!("{} bytes is over the limit of {max}", bytes.len()),
        ));
    }
    Ok(Bytes::from(bytes))
}

/// A broadcast message id: milliseconds since the epoch and four random digits, all
/// digits as on the reference platform.
pub(crate) fn broadcast_id() -> String {
    format!(
        "{}{:04}",
        chrono::Utc::now().timestamp_millis(),
        rand::random::<u16>() % 10_000
    )
}

fn qos(q: u8) -> ApiResult<QoS> {
    match q {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        _ => Err(ApiError::invalid("qos", "0 or 1")),
    }
}

async fn send(
    s: &ApiState,
    topic: String,
    payload: Bytes,
    qos: QoS,
    retain: bool,
) -> ApiResult<Json<PublishResponse>> {
    match s.broker.publish(&topic, payload, qos, retain).await {
        Ok(delivered) => Ok(Json(PublishResponse { topic, delivered })),
        Err(PublishError::InvalidTopic(t)) => Err(ApiError::invalid(
            "topic",
            format!("{t:?} is not a valid topic name"),
        )),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// Publishes a message to a topic of one of the caller's products (QoS 0 or 1).
#[utoipa::path(post, path = "/api/v1/pub", tag = "messaging",
    request_body = PublishRequest,
    responses(
        (status = 200, body = PublishResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 403, body = ErrorBody, description = "TopicNotAllowed"),
        (status = 429, body = ErrorBody, description = "Throttling (Pub: 1,600 qps per account, 100 per IP)"),
    ))]
pub(crate) async fn publish(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<PublishRequest>,
) -> ApiResult<Json<PublishResponse>> {
    let qos = qos(body.qos)?;
    let payload = payload(body.payload, body.payload_text, s.config.max_publish_bytes)?;
    let pk = topic_product_key(&body.topic)
        .ok_or_else(|| ApiError::TopicNotAllowed(body.topic.clone()))?;
    if s.owned_product(&caller, pk).await.is_err() {
        return Err(ApiError::TopicNotAllowed(body.topic));
    }
    send(&s, body.topic, payload, qos, body.retain).await
}

/// Publishes to `/broadcast/{productKey}/{topicSuffix}`, which every device of
/// the product may subscribe to.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/broadcast", tag = "messaging",
    params(("productKey" = String, Path)),
    request_body = BroadcastRequest,
    responses(
        (status = 200, body = PublishResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 409, body = ErrorBody, description = "TooManySubscribers (over 1,000 subscribers of the topic)"),
        (status = 429, body = ErrorBody, description = "Throttling (PubBroadcast: 1 per second per account)"),
    ))]
pub(crate) async fn broadcast(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<BroadcastRequest>,
) -> ApiResult<Json<PublishResponse>> {
    s.owned_product(&caller, &pk).await?;
    let qos = qos(body.qos)?;
    let payload = payload(body.payload, body.payload_text, s.config.max_publish_bytes)?;
    let suffix = body.topic_suffix.trim_start_matches('/');
    if suffix.is_empty() {
        return Err(ApiError::invalid("topicSuffix", "must not be empty"));
    }
    let topic = format!("/broadcast/{pk}/{suffix}");
    let subscribers = s.broker.subscriber_count(&topic);
    let max = s.config.broadcast_subscribers_max;
    if subscribers > max {
        return Err(ApiError::Refused {
            status: StatusCode::CONFLICT,
            code: "TooManySubscribers",
            message: format!(
                "{topic} has {subscribers} subscribers, over the limit of {max} for a broadcast topic"
            ),
        });
    }
    send(&s, topic, payload, qos, false).await
}

/// A device broadcast.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DeviceBroadcastRequest {
    /// Payload, base64 (standard alphabet). Give this or `payloadText`.
    #[serde(default)]
    payload: Option<String>,
    /// Payload as UTF-8 text.
    #[serde(default)]
    payload_text: Option<String>,
    /// 0 (default) or 1.
    #[serde(default)]
    qos: u8,
}

/// What a device broadcast reached.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceBroadcastResponse {
    /// The `{messageId}` level of every device's topic.
    message_id: String,
    /// Online devices the broadcast was sent to.
    devices: usize,
    /// Devices whose session received it.
    delivered: usize,
}

/// Sends a payload to every online device of the product, each on its own
/// `/sys/{productKey}/{deviceName}/broadcast/request/{messageId}`.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/broadcast", tag = "messaging",
    params(("productKey" = String, Path)),
    request_body = DeviceBroadcastRequest,
    responses(
        (status = 200, body = DeviceBroadcastResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 429, body = ErrorBody, description = "Throttling (PubBroadcast: 1 per second per account)"),
    ))]
pub(crate) async fn device_broadcast(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<DeviceBroadcastRequest>,
) -> ApiResult<Json<DeviceBroadcastResponse>> {
    s.owned_product(&caller, &pk).await?;
    let qos = qos(body.qos)?;
    let payload = payload(body.payload, body.payload_text, s.config.max_publish_bytes)?;
    let message_id = broadcast_id();
    let (mut devices, mut delivered) = (0, 0);
    let mut cursor = None;
    loop {
        let page = s
            .registry
            .list_devices(
                &pk,
                DeviceFilter {
                    state: Some(DeviceState::Online),
                    ..DeviceFilter::default()
                },
                PageRequest::After {
                    cursor,
                    page_size: 200,
                },
            )
            .await?;
        for device in page.items {
            let topic = format!(
                "/sys/{pk}/{}/broadcast/request/{message_id}",
                device.device_name
            );
            devices += 1;
            match s.broker.publish(&topic, payload.clone(), qos, false).await {
                Ok(n) => delivered += usize::from(n > 0),
                Err(e) => return Err(ApiError::Internal(e.to_string())),
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(Json(DeviceBroadcastResponse {
        message_id,
        devices,
        delivered,
    }))
}

#[cfg(test)]
mod tests {
    use super::topic_product_key;

    #[test]
    fn product_key_of_topics() {
        assert_eq!(topic_product_key("/a1B/dev/user/get"), Some("a1B"));
        assert_eq!(topic_product_key("/sys/a1B/dev/thing/event"), Some("a1B"));
        assert_eq!(topic_product_key("/broadcast/a1B/x"), Some("a1B"));
        assert_eq!(topic_product_key("/ext/ntp/a1B/dev/response"), Some("a1B"));
        assert_eq!(topic_product_key("/shadow/get/a1B/dev"), Some("a1B"));
        assert_eq!(
            topic_product_key("/ota/device/upgrade/a1B/dev"),
            Some("a1B")
        );
        assert_eq!(topic_product_key("a1B/dev"), None);
        assert_eq!(topic_product_key("//x"), None);
        assert_eq!(topic_product_key("/sys"), None);
    }
}
