//! Devices: create, batch registration jobs, query, list, enable/disable,
//! secret reset, delete, tags, status and lifecycle log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lode_mqtt::ReasonCode;
use lode_registry::{DeviceFilter, DeviceState, NewDevice, PageRequest, RegistryError};
use rand::Rng;

use crate::ApiState;
use crate::auth::Caller;
use crate::dto::{
    BatchRegister, CreateDevice, DeviceDto, DeviceEventPage, DeviceListQuery, DevicePage,
    DeviceStatusDto, JobAccepted, JobDto, PageQuery, TagKeysQuery, TagsBody,
};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::products::{page, tag_keys};
use lode_device::lifecycle;

/// Length of a generated DeviceName.
const GENERATED_NAME_LEN: usize = 20;

fn generated_name() -> String {
    let mut rng = rand::rng();
    lode_alink::random_alphanumeric(&mut |b: &mut [u8]| rng.fill_bytes(b), GENERATED_NAME_LEN)
}

async fn owned_device(
    s: &ApiState,
    caller: &Caller,
    pk: &str,
    dn: &str,
) -> ApiResult<lode_registry::Device> {
    s.owned_product(caller, pk).await?;
    s.registry
        .get_device(pk, dn)
        .await?
        .ok_or_else(|| RegistryError::DeviceNotFound(lode_alink::identity_key(pk, dn)).into())
}

/// The sessions sub-devices hold over their gateways' connections, when the gateway
/// runtime is installed (as a request extension): a sub-device that is disabled, deleted
/// or given a new secret loses its session at once, as a device loses its connection.
pub(crate) struct SubDeviceSessions(Option<lode_gateway::Gateways>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SubDeviceSessions {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(SubDeviceSessions(
            parts.extensions.get::<lode_gateway::Gateways>().cloned(),
        ))
    }
}

impl SubDeviceSessions {
    fn end(&self, product_key: &str, device_name: &str, reason: &str) {
        if let Some(gateways) = &self.0 {
            gateways.end_sub_device(product_key, device_name, reason);
        }
    }
}

/// Registers one device; the name is generated when absent.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices", tag = "devices",
    params(("productKey" = String, Path)),
    request_body = CreateDevice,
    responses(
        (status = 201, body = DeviceDto, description = "The device, with its DeviceSecret"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidDeviceName, QuotaExceeded.DevicesPerProduct, QuotaExceeded.DevicesPerAccount"),
        (status = 409, body = ErrorBody, description = "DeviceAlreadyExists"),
    ))]
pub(crate) async fn create_device(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<CreateDevice>,
) -> ApiResult<(StatusCode, Json<DeviceDto>)> {
    s.owned_product(&caller, &pk).await?;
    let new = NewDevice {
        device_name: body.device_name.unwrap_or_else(generated_name),
        nickname: body.nickname,
        dynamically_registered: false,
    };
    let d = s.registry.create_device(&pk, new).await?;
    lifecycle::announce(&s.broker, lifecycle::Action::Create, &d).await;
    Ok((StatusCode::CREATED, Json(DeviceDto::from_device(d, true))))
}

/// Starts registering up to 10,000 devices; poll `GET /api/v1/jobs/{jobId}`.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices:batch", tag = "devices",
    params(("productKey" = String, Path)),
    request_body = BatchRegister,
    responses(
        (status = 202, body = JobAccepted),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidParameter, BatchTooLarge"),
    ))]
pub(crate) async fn batch_register(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiJson(body): ApiJson<BatchRegister>,
) -> ApiResult<(StatusCode, Json<JobAccepted>)> {
    s.owned_product(&caller, &pk).await?;
    let len = body.device_names.len();
    if len == 0 {
        return Err(ApiError::invalid("deviceNames", "give at least one name"));
    }
    let limit = s.registry.limits().batch_register_max;
    if len > limit {
        return Err(RegistryError::BatchTooLarge { len, limit }.into());
    }
    let job_id = s.shared.jobs.start(&caller.account_id, &pk, len);
    let id = job_id.clone();
    tokio::spawn(async move {
        let outcome = s
            .registry
            .register_devices_batch(&pk, body.device_names)
            .await;
        if let Ok(items) = &outcome {
            for d in items.iter().filter_map(|item| item.result.as_ref().ok()) {
                lifecycle::announce(&s.broker, lifecycle::Action::Create, d).await;
            }
        }
        s.shared.jobs.finish(&id, outcome);
    });
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id })))
}

/// A batch registration job of the caller: status, counts, failures per name,
/// and the registered devices with their secrets.
#[utoipa::path(get, path = "/api/v1/jobs/{jobId}", tag = "devices",
    params(("jobId" = String, Path)),
    responses(
        (status = 200, body = JobDto),
        (status = 404, body = ErrorBody, description = "JobNotFound"),
    ))]
pub(crate) async fn get_job(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobDto>> {
    s.shared
        .jobs
        .get(&caller.account_id, &id)
        .map(Json)
        .ok_or(ApiError::JobNotFound(id))
}

/// Devices of a product, ordered by DeviceName, with filters.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices", tag = "devices",
    params(("productKey" = String, Path), DeviceListQuery),
    responses(
        (status = 200, body = DevicePage),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidPageSize"),
    ))]
pub(crate) async fn list_devices(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(pk): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeviceListQuery>,
) -> ApiResult<Json<DevicePage>> {
    s.owned_product(&caller, &pk).await?;
    let (page_no, page_size) = page(q.page_no, q.page_size)?;
    let state = q
        .state
        .as_deref()
        .map(|st| {
            DeviceState::parse(st).map_err(|_| {
                ApiError::invalid("state", "one of Inactive, Online, Offline, Disabled")
            })
        })
        .transpose()?;
    let tag = match (q.tag_key, q.tag_value) {
        (Some(k), v) => Some((k, v)),
        (None, Some(_)) => return Err(ApiError::invalid("tagValue", "needs tagKey")),
        (None, None) => None,
    };
    let filter = DeviceFilter {
        state,
        name_prefix: q.name.filter(|n| !n.is_empty()),
        tag,
    };
    let p = s
        .registry
        .list_devices(&pk, filter, PageRequest::Page { page_no, page_size })
        .await?;
    Ok(Json(DevicePage {
        items: p
            .items
            .into_iter()
            .map(|d| DeviceDto::from_device(d, false))
            .collect(),
        total: p.total,
        page_no,
        page_size,
    }))
}

/// A device, with its DeviceSecret.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = DeviceDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn get_device(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<DeviceDto>> {
    let d = owned_device(&s, &caller, &pk, &dn).await?;
    Ok(Json(DeviceDto::from_device(d, true)))
}

/// Deletes a device and ends its connection.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/devices/{deviceName}", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn delete_device(
    State(s): State<ApiState>,
    caller: Caller,
    sessions: SubDeviceSessions,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    s.owned_product(&caller, &pk).await?;
    let d = s.registry.get_device(&pk, &dn).await?;
    s.registry.delete_device(&pk, &dn).await?;
    s.broker.disconnect_identity(
        &lode_alink::identity_key(&pk, &dn),
        ReasonCode::AdministrativeAction,
    );
    sessions.end(&pk, &dn, "deleted through the management API");
    if let Some(d) = d {
        lifecycle::announce(&s.broker, lifecycle::Action::Delete, &d).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../devices/{deviceName}:enable|:disable|:resetSecret`: one axum route,
/// dispatched on the suffix after the last `:`.
pub(crate) async fn device_action(
    state: State<ApiState>,
    caller: Caller,
    sessions: SubDeviceSessions,
    ApiPath((pk, name_action)): ApiPath<(String, String)>,
) -> Response {
    let Some((dn, action)) = name_action.rsplit_once(':') else {
        return ApiError::MethodNotAllowed.into_response();
    };
    let path = ApiPath((pk, dn.to_owned()));
    match action {
        "enable" => enable_device(state, caller, path).await.into_response(),
        "disable" => disable_device(state, caller, sessions, path)
            .await
            .into_response(),
        "resetSecret" => reset_device_secret(state, caller, sessions, path)
            .await
            .into_response(),
        _ => ApiError::NotFound.into_response(),
    }
}

/// Enables a disabled device.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}:enable", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = DeviceDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn enable_device(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<DeviceDto>> {
    s.owned_product(&caller, &pk).await?;
    let d = s
        .registry
        .set_device_enabled(&pk, &dn, true, Some("enabled through the management API"))
        .await?;
    lifecycle::announce(&s.broker, lifecycle::Action::Enable, &d).await;
    Ok(Json(DeviceDto::from_device(d, false)))
}

/// Disables a device: refused at connect from now on, and its connection ends at once.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}:disable", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = DeviceDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn disable_device(
    State(s): State<ApiState>,
    caller: Caller,
    sessions: SubDeviceSessions,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<DeviceDto>> {
    s.owned_product(&caller, &pk).await?;
    let d = s
        .registry
        .set_device_enabled(&pk, &dn, false, Some("disabled through the management API"))
        .await?;
    s.broker.disconnect_identity(
        &lode_alink::identity_key(&pk, &dn),
        ReasonCode::AdministrativeAction,
    );
    sessions.end(&pk, &dn, "disabled through the management API");
    lifecycle::announce(&s.broker, lifecycle::Action::Disable, &d).await;
    Ok(Json(DeviceDto::from_device(d, false)))
}

/// Gives a device a new DeviceSecret (returned); a connection signed with the
/// old one ends at once.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}:resetSecret", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = DeviceDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn reset_device_secret(
    State(s): State<ApiState>,
    caller: Caller,
    sessions: SubDeviceSessions,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<DeviceDto>> {
    s.owned_product(&caller, &pk).await?;
    let d = s.registry.reset_device_secret(&pk, &dn).await?;
    s.broker.disconnect_identity(
        &lode_alink::identity_key(&pk, &dn),
        ReasonCode::AdministrativeAction,
    );
    sessions.end(&pk, &dn, "secret reset through the management API");
    Ok(Json(DeviceDto::from_device(d, true)))
}

/// Adds or replaces device tags; returns all of them.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/devices/{deviceName}/tags", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    request_body = TagsBody,
    responses(
        (status = 200, body = TagsBody),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidTag, TooManyTags"),
    ))]
pub(crate) async fn put_device_tags(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<TagsBody>,
) -> ApiResult<Json<TagsBody>> {
    s.owned_product(&caller, &pk).await?;
    let tags = s.registry.set_device_tags(&pk, &dn, body.tags).await?;
    Ok(Json(TagsBody { tags }))
}

/// Removes device tags by key; returns the rest.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/devices/{deviceName}/tags", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path), TagKeysQuery),
    responses(
        (status = 200, body = TagsBody),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn delete_device_tags(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TagKeysQuery>,
) -> ApiResult<Json<TagsBody>> {
    s.owned_product(&caller, &pk).await?;
    let tags = s
        .registry
        .remove_device_tags(&pk, &dn, tag_keys(&q)?)
        .await?;
    Ok(Json(TagsBody { tags }))
}

/// Connection status of a device.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/status", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = DeviceStatusDto),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn device_status(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<DeviceStatusDto>> {
    let d = owned_device(&s, &caller, &pk, &dn).await?;
    Ok(Json(DeviceStatusDto {
        state: d.state,
        online: d.state == DeviceState::Online,
        last_online: d.last_online_at,
        last_ip: d.last_ip,
    }))
}

/// A device's lifecycle log, newest first (kept after deletion).
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/events", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path), PageQuery),
    responses(
        (status = 200, body = DeviceEventPage),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidPageSize"),
    ))]
pub(crate) async fn device_events(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<DeviceEventPage>> {
    s.owned_product(&caller, &pk).await?;
    let (page_no, page_size) = page(q.page_no, q.page_size)?;
    let p = s
        .registry
        .list_device_events(&pk, &dn, PageRequest::Page { page_no, page_size })
        .await?;
    Ok(Json(DeviceEventPage {
        items: p.items.into_iter().map(Into::into).collect(),
        total: p.total,
        page_no,
        page_size,
    }))
}
