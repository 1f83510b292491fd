//! Gateways and sub-devices: a gateway's topology (list, add, delete) and a sub-device's
//! gateway. The caller's account must own every device named; adding needs no device
//! signature. A connected gateway hears of each change on `thing/topo/change`.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lode_gateway::{GatewayError, Gateways};
use lode_registry::{RegistryError, TopologyLink};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

/// The running gateway service, installed by the server as a request extension.
pub(crate) struct Topology(Gateways);

impl<S: Send + Sync> FromRequestParts<S> for Topology {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Gateways>()
            .cloned()
            .map(Topology)
            .ok_or_else(|| ApiError::Internal("the gateway service is not running".into()))
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> ApiError {
        match e {
            GatewayError::DeviceNotFound(key) => {
                ApiError::Registry(RegistryError::DeviceNotFound(key))
            }
            GatewayError::Registry(r) => ApiError::Registry(r),
        }
    }
}

/// A device named by ProductKey and DeviceName.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DeviceRef {
    product_key: String,
    device_name: String,
}

/// A sub-device attached to a gateway.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Link {
    gateway_product_key: String,
    gateway_device_name: String,
    product_key: String,
    device_name: String,
    iot_id: String,
    /// When it was attached (RFC 3339).
    gmt_create: String,
}

impl From<TopologyLink> for Link {
    fn from(l: TopologyLink) -> Link {
        Link {
            gateway_product_key: l.gateway_product_key,
            gateway_device_name: l.gateway_device_name,
            product_key: l.product_key,
            device_name: l.device_name,
            iot_id: l.iot_id,
            gmt_create: l.created_at.to_rfc3339(),
        }
    }
}

/// Sub-devices of a gateway.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LinkList {
    items: Vec<Link>,
}

/// Sub-devices to add to or delete from a gateway's topology.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SubDevices {
    sub_devices: Vec<DeviceRef>,
}

/// The most sub-devices one call names.
const MAX_PER_CALL: usize = 200;

impl SubDevices {
    fn pairs(self) -> Result<Vec<(String, String)>, ApiError> {
        if self.sub_devices.is_empty() || self.sub_devices.len() > MAX_PER_CALL {
            return Err(ApiError::invalid(
                "subDevices",
                format!("between 1 and {MAX_PER_CALL} sub-devices"),
            ));
        }
        Ok(self
            .sub_devices
            .into_iter()
            .map(|d| (d.product_key, d.device_name))
            .collect())
    }
}

fn list(links: Vec<TopologyLink>) -> Json<LinkList> {
    Json(LinkList {
        items: links.into_iter().map(Link::from).collect(),
    })
}

/// The sub-devices of a gateway.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/topology",
    tag = "gateways",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = LinkList),
        (status = 404, body = ErrorBody, description = "DeviceNotFound"),
    ))]
pub(crate) async fn get_topology(
    Topology(gw): Topology,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<LinkList>> {
    Ok(list(gw.topology(&caller.account_id, (&pk, &dn)).await?))
}

/// Adds sub-devices to a gateway's topology, all or none (those already there stay).
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/topology",
    tag = "gateways",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    request_body = SubDevices,
    responses(
        (status = 200, body = LinkList, description = "The links of the sub-devices named"),
        (status = 400, body = ErrorBody, description = "InvalidParameter (node types), SubDeviceHasGateway, QuotaExceeded.SubDevicesPerGateway"),
        (status = 404, body = ErrorBody, description = "DeviceNotFound"),
    ))]
pub(crate) async fn add_topology(
    Topology(gw): Topology,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SubDevices>,
) -> ApiResult<Json<LinkList>> {
    let subs = body.pairs()?;
    Ok(list(
        gw.add_topology(&caller.account_id, (&pk, &dn), &subs)
            .await?,
    ))
}

/// Deletes sub-devices from a gateway's topology (their sessions end); sub-devices not
/// attached to it are ignored.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/topology/delete",
    tag = "gateways",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    request_body = SubDevices,
    responses(
        (status = 200, body = LinkList, description = "The links removed"),
        (status = 404, body = ErrorBody, description = "DeviceNotFound"),
    ))]
pub(crate) async fn delete_topology(
    Topology(gw): Topology,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SubDevices>,
) -> ApiResult<Json<LinkList>> {
    let subs = body.pairs()?;
    Ok(list(
        gw.remove_topology(&caller.account_id, (&pk, &dn), &subs)
            .await?,
    ))
}

/// The gateway of a sub-device.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/gateway",
    tag = "gateways",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = Link),
        (status = 404, body = ErrorBody, description = "DeviceNotFound, or NotFound when it has no gateway"),
    ))]
pub(crate) async fn get_gateway(
    Topology(gw): Topology,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<Link>> {
    match gw.gateway_of(&caller.account_id, (&pk, &dn)).await? {
        Some(link) => Ok(Json(link.into())),
        None => Err(ApiError::NotFound),
    }
}

/// The routes of this module, merged into the signed API.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(get_topology, add_topology))
        .routes(routes!(delete_topology))
        .routes(routes!(get_gateway))
}
