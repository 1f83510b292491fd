//! The thing model of the caller's products and devices: the TSL and the data
//! parsing script (draft, publish, test), property set, service calls, latest
//! values, property/event/call history, desired values and the device message log.
//!
//! Every route needs the thing-model runtime ([`ApiState::with_thing`]); without
//! it they answer 503 `ServiceUnavailable`. Times in queries and answers are
//! milliseconds since the Unix epoch.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use lode_history::{DeviceKey, Order, Query};
use lode_registry::RegistryError;
use lode_thing::{Invocation, ScriptDirection, ThingEngine};
use serde_json::Value;

use crate::ApiState;
use crate::auth::{Caller, now_ms};
use crate::dto::{
    BatchSetPropertiesRequest, BatchSetResponse, BatchSetResult, CallHistoryQuery,
    DeleteDesiredQuery, DesiredDto, DesiredList, DesiredQuery, DesiredVersionDto,
    DesiredVersionList, DraftQuery, EventHistoryPage, EventHistoryQuery, HistoryQuery,
    InvokeServiceRequest, InvokeServiceResponse, LatestPropertyDto, LatestPropertyList, LogPage,
    MessageIdDto, PropertyHistoryPage, ScriptBody, ScriptDto, ScriptTestDirection,
    ScriptTestRequest, ScriptTestResponse, ServiceCallDto, ServiceCallPage, SetDesiredRequest,
    SetPropertiesRequest, ThingModelDto,
};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Most devices of one batch property set.
const BATCH_SET_MAX: usize = 100;

/// History window when the query gives no start.
const DEFAULT_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Records per page when the query gives no limit.
const DEFAULT_LIMIT: u32 = 50;

/// The engine and the caller's product `pk`.
async fn product<'a>(s: &'a ApiState, caller: &Caller, pk: &str) -> ApiResult<&'a ThingEngine> {
    let engine = s.engine()?;
    s.owned_product(caller, pk).await?;
    Ok(engine)
}

/// The engine and the device `pk/dn` of one of the caller's products.
async fn device<'a>(
    s: &'a ApiState,
    caller: &Caller,
    pk: &str,
    dn: &str,
) -> ApiResult<(&'a ThingEngine, DeviceKey)> {
    let engine = product(s, caller, pk).await?;
    if s.registry.get_device(pk, dn).await?.is_none() {
        return Err(RegistryError::DeviceNotFound(lode_alink::identity_key(pk, dn)).into());
    }
    Ok((engine, DeviceKey::new(pk, dn)))
}

/// The history query of a request: its window (default the last 24 hours up to
/// now), order (default newest first), page size and cursor.
fn history_query(
    device: DeviceKey,
    identifier: Option<String>,
    (start, end): (Option<i64>, Option<i64>),
    order: Option<&str>,
    limit: Option<u32>,
    cursor: Option<String>,
) -> ApiResult<Query> {
    let end = end.unwrap_or_else(|| now_ms().saturating_add(1));
    let start = start.unwrap_or_else(|| end.saturating_sub(DEFAULT_WINDOW_MS));
    if start > end {
        return Err(ApiError::invalid("start", "must not be after end"));
    }
    let order = match order {
        None | Some("desc") => Order::NewestFirst,
        Some("asc") => Order::OldestFirst,
        Some(_) => return Err(ApiError::invalid("order", "asc or desc")),
    };
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err(ApiError::invalid("limit", "at least 1"));
    }
    Ok(Query {
        device,
        identifier: identifier.filter(|i| !i.is_empty()),
        start,
        end,
        order,
        limit,
        cursor: cursor.filter(|c| !c.is_empty()),
    })
}

fn non_empty(field: &str, items: &serde_json::Map<String, Value>) -> ApiResult<()> {
    if items.is_empty() {
        return Err(ApiError::invalid(field, "give at least one property"));
    }
    Ok(())
}

// --- thing model

/// The thing model of a product: the published one, or with `draft=true` the draft.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/thing-model", tag = "thingModel",
    params(("productKey" = String, Path), DraftQuery),
    responses(
        (status = 200, body = ThingModelDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn get_thing_model(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiQuery(q): ApiQuery<DraftQuery>,
) -> ApiResult<Json<ThingModelDto>> {
    let engine = product(&s, &caller, &pk).await?;
    let doc = engine.tsl_document(&pk).await?;
    let tsl = engine.tsl_json(&pk, q.draft).await?;
    Ok(Json(ThingModelDto::new(&doc, tsl)))
}

/// Validates and saves the draft thing model (the TSL JSON is the body). Every
/// error is reported with its path, in the message and in `errors`.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/thing-model", tag = "thingModel",
    params(("productKey" = String, Path)),
    request_body(content = Object, description = "The TSL JSON of the reference platform"),
    responses(
        (status = 200, body = ThingModelDto, description = "The saved draft"),
        (status = 400, body = ErrorBody, description = "InvalidThingModel, InvalidParameter"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn put_thing_model(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(tsl): ApiJson<Value>,
) -> ApiResult<Json<ThingModelDto>> {
    let engine = product(&s, &caller, &pk).await?;
    let doc = engine.save_tsl_draft(&pk, &tsl).await?;
    let tsl = engine.tsl_json(&pk, true).await?;
    Ok(Json(ThingModelDto::new(&doc, tsl)))
}

/// Publishes the draft thing model: devices' messages are checked against it from now on.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/thing-model/publish", tag = "thingModel",
    params(("productKey" = String, Path)),
    responses(
        (status = 200, body = ThingModelDto, description = "The published thing model"),
        (status = 400, body = ErrorBody, description = "NothingToPublish"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn publish_thing_model(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
) -> ApiResult<Json<ThingModelDto>> {
    let engine = product(&s, &caller, &pk).await?;
    let doc = engine.publish_tsl(&pk).await?;
    let tsl = engine.tsl_json(&pk, false).await?;
    Ok(Json(ThingModelDto::new(&doc, tsl)))
}

// --- data parsing script

/// The data parsing script of a product: the published one, or with `draft=true` the draft.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/script", tag = "thingModel",
    params(("productKey" = String, Path), DraftQuery),
    responses(
        (status = 200, body = ScriptDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn get_script(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiQuery(q): ApiQuery<DraftQuery>,
) -> ApiResult<Json<ScriptDto>> {
    let engine = product(&s, &caller, &pk).await?;
    let doc = engine.script_document(&pk).await?;
    Ok(Json(ScriptDto::new(doc, q.draft)))
}

/// Checks (size, syntax, both functions defined) and saves the draft script.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/script", tag = "thingModel",
    params(("productKey" = String, Path)),
    request_body = ScriptBody,
    responses(
        (status = 200, body = ScriptDto, description = "The saved draft"),
        (status = 400, body = ErrorBody, description = "ScriptError (with the line), InvalidParameter"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn put_script(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<ScriptBody>,
) -> ApiResult<Json<ScriptDto>> {
    let engine = product(&s, &caller, &pk).await?;
    let doc = engine.save_script_draft(&pk, &body.source).await?;
    Ok(Json(ScriptDto::new(doc, true)))
}

/// Publishes the draft script: raw messages of the product go through it from now on.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/script/publish", tag = "thingModel",
    params(("productKey" = String, Path)),
    responses(
        (status = 200, body = ScriptDto, description = "The published script"),
        (status = 400, body = ErrorBody, description = "NothingToPublish"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn publish_script(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
) -> ApiResult<Json<ScriptDto>> {
    let engine = product(&s, &caller, &pk).await?;
    let doc = engine.publish_script(&pk).await?;
    Ok(Json(ScriptDto::new(doc, false)))
}

/// The bytes a script test runs on.
fn script_sample(body: &ScriptTestRequest) -> ApiResult<Vec<u8>> {
    match body.direction {
        ScriptTestDirection::Up => {
            if body.message.is_some() {
                return Err(ApiError::invalid("message", "only for direction down"));
            }
            match (&body.payload_hex, &body.payload_base64) {
                (Some(h), None) => {
                    let digits: String = h.chars().filter(|c| !c.is_whitespace()).collect();
                    hex::decode(digits)
                        .map_err(|e| ApiError::invalid("payloadHex", format!("not hex: {e}")))
                }
                (None, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| ApiError::invalid("payloadBase64", format!("not base64: {e}"))),
                _ => Err(ApiError::invalid(
                    "payloadHex",
                    "give payloadHex or payloadBase64 (one of them)",
                )),
            }
        }
        ScriptTestDirection::Down => {
            if body.payload_hex.is_some() || body.payload_base64.is_some() {
                return Err(ApiError::invalid(
                    "payloadHex",
                    "only for direction up; give message",
                ));
            }
            match &body.message {
                Some(m @ Value::Object(_)) => {
                    serde_json::to_vec(m).map_err(|e| ApiError::Internal(e.to_string()))
                }
                Some(_) => Err(ApiError::invalid("message", "must be a JSON object")),
                None => Err(ApiError::invalid("message", "give the Alink JSON message")),
            }
        }
    }
}

/// Runs a script (the product's draft unless `source` is given) on a sample:
/// `up` runs `rawDataToProtocol` over `payloadHex` or `payloadBase64` and returns
/// the Alink JSON; `down` runs `protocolToRawData` over `message` and returns
/// `{hex, length}`. A failing script is `ScriptError` with its line.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/script/test", tag = "thingModel",
    params(("productKey" = String, Path)),
    request_body = ScriptTestRequest,
    responses(
        (status = 200, body = ScriptTestResponse),
        (status = 400, body = ErrorBody, description = "ScriptError (with the line), InvalidParameter"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn test_script(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<ScriptTestRequest>,
) -> ApiResult<Json<ScriptTestResponse>> {
    let engine = product(&s, &caller, &pk).await?;
    let sample = script_sample(&body)?;
    let source = match body.source {
        Some(src) => src,
        None => engine.script_document(&pk).await?.draft.ok_or_else(|| {
            ApiError::invalid("source", "the product has no draft script; give source")
        })?,
    };
    let direction = match body.direction {
        ScriptTestDirection::Up => ScriptDirection::Up,
        ScriptTestDirection::Down => ScriptDirection::Down,
    };
    let result = engine
        .test_script(&pk, Some(source), direction, &sample)
        .await?;
    Ok(Json(ScriptTestResponse { result }))
}

// --- calls to devices

/// Sets properties of a device (`thing.service.property.set`, async): the answer
/// is the message id; the device's reply is recorded with that service call.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/properties/set", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    request_body = SetPropertiesRequest,
    responses(
        (status = 200, body = MessageIdDto),
        (status = 400, body = ErrorBody, description = "InvalidParameter (every refused property in errors)"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 409, body = ErrorBody, description = "DeviceOffline"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn set_properties(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SetPropertiesRequest>,
) -> ApiResult<Json<MessageIdDto>> {
    let engine = product(&s, &caller, &pk).await?;
    non_empty("items", &body.items)?;
    let message_id = engine
        .set_properties(&pk, &dn, Value::Object(body.items))
        .await?;
    Ok(Json(MessageIdDto { message_id }))
}

/// Sets the same property values on up to 100 devices of a product; the answer
/// has, per device in request order, a message id or the error code and message.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/properties/set", tag = "thingModel",
    params(("productKey" = String, Path)),
    request_body = BatchSetPropertiesRequest,
    responses(
        (status = 200, body = BatchSetResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn batch_set_properties(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<BatchSetPropertiesRequest>,
) -> ApiResult<Json<BatchSetResponse>> {
    let engine = product(&s, &caller, &pk).await?;
    non_empty("items", &body.items)?;
    let mut names: Vec<String> = Vec::with_capacity(body.device_names.len());
    for name in body.device_names {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() || names.len() > BATCH_SET_MAX {
        return Err(ApiError::invalid(
            "deviceNames",
            format!("give 1 to {BATCH_SET_MAX} device names"),
        ));
    }
    let params = Value::Object(body.items);
    let mut items = Vec::with_capacity(names.len());
    for device_name in names {
        let outcome = engine
            .set_properties(&pk, &device_name, params.clone())
            .await;
        items.push(match outcome {
            Ok(id) => BatchSetResult {
                device_name,
                message_id: Some(id),
                code: None,
                message: None,
            },
            Err(e) => {
                let e = ApiError::from(e);
                BatchSetResult {
                    device_name,
                    message_id: None,
                    code: Some(e.status_and_code().1.to_owned()),
                    message: Some(e.public_message()),
                }
            }
        });
    }
    Ok(Json(BatchSetResponse { items }))
}

/// Calls a service of a device. A sync service (`callType` in the published
/// thing model) waits for the device's answer up to `timeoutMs` and returns it;
/// no answer in time is 504 `Timeout` (the call is then `timed_out`). An async
/// service returns the message id at once. Throttled in the RRpc class.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/services/{identifier}", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("identifier" = String, Path)),
    request_body = InvokeServiceRequest,
    responses(
        (status = 200, body = InvokeServiceResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter (every refused argument in errors)"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound, ServiceNotFound"),
        (status = 409, body = ErrorBody, description = "DeviceOffline"),
        (status = 429, body = ErrorBody, description = "Throttling (RRpc: 1,000 qps per account, 100 per IP)"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
        (status = 504, body = ErrorBody, description = "Timeout"),
    ))]
pub(crate) async fn invoke_service(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn, identifier)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<InvokeServiceRequest>,
) -> ApiResult<Json<InvokeServiceResponse>> {
    let engine = product(&s, &caller, &pk).await?;
    let timeout = body.timeout_ms.map(Duration::from_millis);
    let outcome = engine
        .invoke_service(&pk, &dn, &identifier, Value::Object(body.args), timeout)
        .await?;
    Ok(Json(match outcome {
        Invocation::Sync {
            id,
            code,
            data,
            message,
        } => InvokeServiceResponse {
            message_id: id,
            call_type: "sync".to_owned(),
            code: Some(code),
            data: Some(data),
            message,
        },
        Invocation::Async { id } => InvokeServiceResponse {
            message_id: id,
            call_type: "async".to_owned(),
            code: None,
            data: None,
            message: None,
        },
    }))
}

// --- queries

/// Latest property values: every property of the published thing model in its
/// order (value null when never reported), then values of properties the model
/// no longer has.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/properties", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = LatestPropertyList),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn latest_properties(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<LatestPropertyList>> {
    let (engine, device) = device(&s, &caller, &pk, &dn).await?;
    let tsl = engine.tsl_json(&pk, false).await?;
    let mut latest: HashMap<String, lode_history::LatestProperty> = engine
        .store()
        .latest(&device)
        .await?
        .into_iter()
        .map(|l| (l.identifier.clone(), l))
        .collect();
    let mut items = Vec::new();
    let defined = tsl
        .get("properties")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for p in defined {
        let Some(identifier) = p.get("identifier").and_then(Value::as_str) else {
            continue;
        };
        let value = latest.remove(identifier);
        items.push(LatestPropertyDto {
            identifier: identifier.to_owned(),
            name: p.get("name").and_then(Value::as_str).map(str::to_owned),
            data_type: p
                .pointer("/dataType/type")
                .and_then(Value::as_str)
                .map(str::to_owned),
            time: value.as_ref().map(|v| v.device_time),
            server_time: value.as_ref().map(|v| v.server_time),
            value: value.map(|v| v.value),
        });
    }
    let mut rest: Vec<_> = latest.into_values().collect();
    rest.sort_by(|a, b| a.identifier.cmp(&b.identifier));
    items.extend(rest.into_iter().map(|v| LatestPropertyDto {
        identifier: v.identifier,
        name: None,
        data_type: None,
        value: Some(v.value),
        time: Some(v.device_time),
        server_time: Some(v.server_time),
    }));
    Ok(Json(LatestPropertyList { items }))
}

/// Values of one property by device time.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/properties/{identifier}/history", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("identifier" = String, Path), HistoryQuery),
    responses(
        (status = 200, body = PropertyHistoryPage),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidCursor"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn property_history(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn, identifier)): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<PropertyHistoryPage>> {
    let (engine, device) = device(&s, &caller, &pk, &dn).await?;
    let query = history_query(
        device,
        Some(identifier.clone()),
        (q.start, q.end),
        q.order.as_deref(),
        q.limit,
        q.cursor,
    )?;
    let page = engine.store().property_history(query).await?;
    Ok(Json(PropertyHistoryPage {
        identifier,
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Events a device reported, by device time.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/event-history", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path), EventHistoryQuery),
    responses(
        (status = 200, body = EventHistoryPage),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidCursor"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn event_history(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<EventHistoryQuery>,
) -> ApiResult<Json<EventHistoryPage>> {
    let (engine, device) = device(&s, &caller, &pk, &dn).await?;
    let event_type = match q.event_type.as_deref() {
        None | Some("") => None,
        Some(t @ ("info" | "alert" | "error")) => Some(t.to_owned()),
        Some(_) => return Err(ApiError::invalid("eventType", "info, alert or error")),
    };
    let query = history_query(
        device,
        q.identifier,
        (q.start, q.end),
        q.order.as_deref(),
        q.limit,
        q.cursor,
    )?;
    let page = engine.store().event_history(query, event_type).await?;
    Ok(Json(EventHistoryPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Property sets and service calls of a device, by the time they were sent.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/service-calls", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path), CallHistoryQuery),
    responses(
        (status = 200, body = ServiceCallPage),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidCursor"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn service_calls(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<CallHistoryQuery>,
) -> ApiResult<Json<ServiceCallPage>> {
    let (engine, device) = device(&s, &caller, &pk, &dn).await?;
    let query = history_query(
        device,
        q.identifier,
        (q.start, q.end),
        q.order.as_deref(),
        q.limit,
        q.cursor,
    )?;
    let page = engine.store().call_history(query).await?;
    Ok(Json(ServiceCallPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One property set or service call, by its message id: the way to learn the
/// outcome of an async call.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/service-calls/{messageId}", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("messageId" = String, Path)),
    responses(
        (status = 200, body = ServiceCallDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound, ServiceCallNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn service_call(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn, message_id)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<ServiceCallDto>> {
    let (engine, device) = device(&s, &caller, &pk, &dn).await?;
    match engine.store().call(&device, &message_id).await? {
        Some(call) => Ok(Json(call.into())),
        None => Err(ApiError::CallNotFound(message_id)),
    }
}

/// Desired property values of a device (all, or those named in `identifiers`).
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/desired", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path), DesiredQuery),
    responses(
        (status = 200, body = DesiredList),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn get_desired(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DesiredQuery>,
) -> ApiResult<Json<DesiredList>> {
    let (engine, device) = device(&s, &caller, &pk, &dn).await?;
    let ids: Vec<String> = q
        .identifiers
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
        .collect();
    let values = engine.store().desired(&device, &ids).await?;
    Ok(Json(DesiredList {
        items: values.into_iter().map(DesiredDto::from).collect(),
    }))
}

/// Sets desired values (read-write properties of the published thing model),
/// optionally only if each is still at the given version.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/devices/{deviceName}/desired", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    request_body = SetDesiredRequest,
    responses(
        (status = 200, body = DesiredVersionList),
        (status = 400, body = ErrorBody, description = "InvalidParameter (every refused property in errors)"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 409, body = ErrorBody, description = "VersionConflict"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn set_desired(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SetDesiredRequest>,
) -> ApiResult<Json<DesiredVersionList>> {
    let engine = product(&s, &caller, &pk).await?;
    non_empty("items", &body.items)?;
    let versions: HashMap<String, u64> = body.versions.into_iter().collect();
    let set = engine.set_desired(&pk, &dn, body.items, &versions).await?;
    Ok(Json(DesiredVersionList {
        items: set
            .into_iter()
            .map(|(identifier, version)| DesiredVersionDto {
                identifier,
                version,
            })
            .collect(),
    }))
}

/// Deletes a desired value, optionally only if it is still at `version`.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/devices/{deviceName}/desired/{identifier}", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("identifier" = String, Path), DeleteDesiredQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound, NotFound"),
        (status = 409, body = ErrorBody, description = "VersionConflict"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn delete_desired(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn, identifier)): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<DeleteDesiredQuery>,
) -> ApiResult<StatusCode> {
    let (engine, device) = device(&s, &caller, &pk, &dn).await?;
    engine
        .store()
        .delete_desired(&device, &identifier, q.version)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The device message log (up and down, with the outcome of each), for debugging.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/log", tag = "thingModel",
    params(("productKey" = String, Path), ("deviceName" = String, Path), HistoryQuery),
    responses(
        (status = 200, body = LogPage),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidCursor"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn device_log(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<LogPage>> {
    let (engine, device) = device(&s, &caller, &pk, &dn).await?;
    let query = history_query(
        device,
        None,
        (q.start, q.end),
        q.order.as_deref(),
        q.limit,
        q.cursor,
    )?;
    let page = engine.store().device_log(query).await?;
    Ok(Json(LogPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DeviceKey {
        DeviceKey::new("pk", "dn")
    }

    #[test]
    fn history_query_defaults_to_the_last_day_newest_first() {
        let q = history_query(dev(), None, (None, None), None, None, None).expect("valid");
        assert_eq!(q.end - q.start, DEFAULT_WINDOW_MS);
        assert!(q.end > now_ms() - 1_000);
        assert_eq!(q.order, Order::NewestFirst);
        assert_eq!(q.limit, DEFAULT_LIMIT);
        let q = history_query(
            dev(),
            Some("temp".into()),
            (Some(10), Some(20)),
            Some("asc"),
            Some(5),
            Some("c".into()),
        )
        .expect("valid");
        assert_eq!(
            (q.start, q.end, q.order, q.limit),
            (10, 20, Order::OldestFirst, 5)
        );
        assert_eq!(q.identifier.as_deref(), Some("temp"));
        assert_eq!(q.cursor.as_deref(), Some("c"));
        let q = history_query(
            dev(),
            Some(String::new()),
            (None, Some(1_000)),
            None,
            None,
            None,
        )
        .expect("valid");
        assert_eq!((q.start, q.identifier), (1_000 - DEFAULT_WINDOW_MS, None));
    }

    #[test]
    fn history_query_refusals() {
        let bad = [
            history_query(dev(), None, (Some(2), Some(1)), None, None, None),
            history_query(dev(), None, (None, None), Some("up"), None, None),
            history_query(dev(), None, (None, None), None, Some(0), None),
        ];
        for (r, field) in bad.into_iter().zip(["start", "order", "limit"]) {
            match r {
                Err(ApiError::InvalidParameter { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidParameter {field}, got {other:?}"),
            }
        }
    }

    fn sample(direction: ScriptTestDirection) -> ScriptTestRequest {
        ScriptTestRequest {
            direction,
            source: None,
            payload_hex: None,
            payload_base64: None,
            message: None,
        }
    }

    #[test]
    fn script_samples() {
        let mut up = sample(ScriptTestDirection::Up);
        up.payload_hex = Some("01 ff 2A".into());
        assert_eq!(script_sample(&up).expect("hex"), vec![1, 0xff, 0x2a]);
        up.payload_hex = None;
        up.payload_base64 = Some("AQI=".into());
        assert_eq!(script_sample(&up).expect("base64"), vec![1, 2]);
        up.payload_hex = Some("00".into());
        assert!(script_sample(&up).is_err(), "both encodings");
        up.payload_base64 = None;
        up.payload_hex = Some("0g".into());
        assert!(script_sample(&up).is_err(), "not hex");
        assert!(script_sample(&sample(ScriptTestDirection::Up)).is_err());

        let mut down = sample(ScriptTestDirection::Down);
        assert!(script_sample(&down).is_err(), "no message");
        down.message = Some(serde_json::json!([1]));
        assert!(script_sample(&down).is_err(), "not an object");
        down.message = Some(serde_json::json!({"id": "1"}));
        assert_eq!(
            script_sample(&down).expect("json"),
            br#"{"id":"1"}"#.to_vec()
        );
        down.payload_hex = Some("00".into());
        assert!(script_sample(&down).is_err(), "payload with down");
    }
}
