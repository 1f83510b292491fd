//! Device groups with subgroups, group members, and tag search over products, devices and groups.
//!
//! Groups belong to the caller's account; another account's group is `GroupNotFound`.
//! Member changes take up to 1,000 devices per call and report per device. Group-wide
//! operations (property set, async service call, device broadcast) resolve the group's
//! devices (optionally with its subgroups) when called and go to each device: property
//! set and service calls through the thing-model runtime, as for one device; the
//! broadcast on the device's `/sys/{pk}/{dn}/broadcast/request/{messageId}`. Each device
//! is reported `sent`, `offline` (not connected: nothing was sent) or `refused` (with the
//! code and message a single-device call would have answered).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use lode_broker::PublishError;
use lode_mqtt::QoS;
use lode_registry::{
    DeviceGroup, DeviceKeyRef, GroupListing, GroupUpdate, MembershipItem, NewGroup, PageRequest,
    RegistryError,
};
use lode_thing::{Invocation, ThingEngine, ThingError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::auth::Caller;
use crate::dto::{DeviceDto, ProductDto, TagKeysQuery, TagsBody};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::products::{page, tag_keys};

/// Calls to devices of one group operation in flight at once.
const GROUP_CALL_CONCURRENCY: usize = 32;

/// The routes of this module, merged into the signed API.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create_group, list_groups))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(list_subgroups))
        .routes(routes!(put_group_tags, delete_group_tags))
        .routes(routes!(add_group_devices, list_group_devices))
        .routes(routes!(remove_group_devices))
        .routes(routes!(device_groups))
        .routes(routes!(search_tags))
        .routes(routes!(group_set_properties))
        .routes(routes!(group_invoke_service))
        .routes(routes!(group_broadcast))
}

// --- DTOs

/// A device group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupDto {
    group_id: String,
    group_name: String,
    description: String,
    /// The parent group; absent for a top-level group.
    parent_id: Option<String>,
    /// 1 for a top-level group, up to 3.
    depth: u64,
    tags: BTreeMap<String, String>,
    /// Devices directly in the group.
    device_count: u64,
    /// Direct subgroups.
    subgroup_count: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<DeviceGroup> for GroupDto {
    fn from(g: DeviceGroup) -> Self {
        GroupDto {
            group_id: g.id,
            group_name: g.name,
            description: g.description,
            parent_id: g.parent_id,
            depth: g.depth,
            tags: g.tags,
            device_count: g.device_count,
            subgroup_count: g.subgroup_count,
            created_at: g.created_at,
            updated_at: g.updated_at,
        }
    }
}

/// `POST /groups`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateGroup {
    /// 4 to 30 characters (a non-ASCII character counts two): letters, digits, `_`;
    /// unique in the account.
    group_name: String,
    /// At most 100 characters.
    #[serde(default)]
    description: String,
    /// Creates a subgroup of this group (3 levels at most).
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// `PATCH /groups/{groupId}`: fields to change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpdateGroup {
    group_name: Option<String>,
    description: Option<String>,
}

/// Paging and scope of `GET /groups`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct GroupListQuery {
    /// Only the direct subgroups of this group.
    parent_id: Option<String>,
    /// Every group at any level (default: top-level groups only).
    #[serde(default)]
    all: bool,
    page_no: Option<u32>,
    page_size: Option<u32>,
}

/// Paging of a listing: `pageNo` from 1, `pageSize` up to 200.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct GroupPageQuery {
    page_no: Option<u32>,
    page_size: Option<u32>,
}

/// One page of groups, ordered by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupPage {
    items: Vec<GroupDto>,
    total: u64,
    page_no: u32,
    page_size: u32,
}

/// Groups, not paged.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupList {
    items: Vec<GroupDto>,
}

/// A device named by ProductKey and DeviceName.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DeviceRefDto {
    product_key: String,
    device_name: String,
}

/// `POST /groups/{groupId}/devices` and `.../devices/remove`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MembersRequest {
    /// 1 to 1,000 devices of the caller's products.
    devices: Vec<DeviceRefDto>,
}

/// The outcome for one device of a member change.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MemberResult {
    product_key: String,
    device_name: String,
    /// Added (removed) now; false when it already was (was not) a member, or on error.
    changed: bool,
    /// Error code, as in an error response.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// Outcomes of a member change, in request order.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MembersResponse {
    items: Vec<MemberResult>,
}

/// One page of a group's devices.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupDevicePage {
    items: Vec<DeviceDto>,
    total: u64,
    page_no: u32,
    page_size: u32,
}

/// `GET /tags/search`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct TagSearchQuery {
    /// `key` or `key=value`.
    tag: String,
    /// Comma-separated kinds to search: `product`, `device`, `group` (default all).
    types: Option<String>,
    /// Page of matching devices (products and groups are not paged).
    page_no: Option<u32>,
    page_size: Option<u32>,
}

/// Products, devices and groups carrying a tag.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagSearchResponse {
    products: Vec<ProductDto>,
    /// One page of the matching devices.
    devices: Vec<DeviceDto>,
    /// Matching devices over all pages.
    device_total: u64,
    groups: Vec<GroupDto>,
}

/// `POST /groups/{groupId}/properties/set`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct GroupSetProperties {
    /// Property identifier → value, checked against each device's published thing model.
    #[schema(value_type = Object)]
    items: Map<String, Value>,
    /// Also the devices of its subgroups (at any level).
    #[serde(default)]
    with_subgroups: bool,
}

/// `POST /groups/{groupId}/services/{identifier}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct GroupInvokeService {
    /// Input parameters, checked against the service's `inputData`.
    #[serde(default)]
    #[schema(value_type = Object)]
    args: Map<String, Value>,
    #[serde(default)]
    with_subgroups: bool,
}

/// `POST /groups/{groupId}/broadcast`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct GroupBroadcast {
    /// Payload, base64 (standard alphabet). Give this or `payloadText`.
    payload: Option<String>,
    /// Payload as UTF-8 text.
    payload_text: Option<String>,
    /// 0 (default) or 1.
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    with_subgroups: bool,
}

/// What happened for one device of a group operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DeviceOutcome {
    /// The request left for the device.
    Sent,
    /// The device is not connected; nothing was sent.
    Offline,
    /// Refused before sending (invalid values for its thing model, no published model, …).
    Refused,
}

/// The outcome for one device of a group operation.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupCallResult {
    product_key: String,
    device_name: String,
    status: DeviceOutcome,
    /// The request's message id (its service call record), when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    /// Error code when offline or refused, as in an error response.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// Outcomes of a group operation, one per device, ordered by ProductKey and DeviceName.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupCallResponse {
    /// The broadcast's message id (broadcast only).
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    total: usize,
    sent: usize,
    offline: usize,
    refused: usize,
    items: Vec<GroupCallResult>,
}

impl GroupCallResponse {
    fn new(message_id: Option<String>, items: Vec<GroupCallResult>) -> Self {
        let n = |o: DeviceOutcome| items.iter().filter(|i| i.status == o).count();
        GroupCallResponse {
            message_id,
            total: items.len(),
            sent: n(DeviceOutcome::Sent),
            offline: n(DeviceOutcome::Offline),
            refused: n(DeviceOutcome::Refused),
            items,
        }
    }
}

// --- helpers

/// The caller's group `id`; another account's is `GroupNotFound`.
async fn owned_group(s: &ApiState, caller: &Caller, id: &str) -> ApiResult<DeviceGroup> {
    match s.registry.groups().get_group(id).await? {
        Some(g) if g.account_id == caller.account_id => Ok(g),
        _ => Err(RegistryError::GroupNotFound(id.to_owned()).into()),
    }
}

fn member_results(items: Vec<MembershipItem>) -> MembersResponse {
    MembersResponse {
        items: items
            .into_iter()
            .map(|i| {
                let (changed, code, message) = match i.result {
                    Ok(changed) => (changed, None, None),
                    Err(e) => {
                        let e = ApiError::from(e);
                        (
                            false,
                            Some(e.status_and_code().1.to_owned()),
                            Some(e.public_message()),
                        )
                    }
                };
                MemberResult {
                    product_key: i.device.product_key,
                    device_name: i.device.device_name,
                    changed,
                    code,
                    message,
                }
            })
            .collect(),
    }
}

fn member_keys(req: MembersRequest) -> ApiResult<Vec<DeviceKeyRef>> {
    if req.devices.is_empty() {
        return Err(ApiError::invalid("devices", "give at least one device"));
    }
    Ok(req
        .devices
        .into_iter()
        .map(|d| DeviceKeyRef::new(d.product_key, d.device_name))
        .collect())
}

/// A group operation's result for a device, from the single-device call's outcome.
fn call_result(device: DeviceKeyRef, outcome: ApiResult<String>) -> GroupCallResult {
    let (status, message_id, code, message) = match outcome {
        Ok(id) => (DeviceOutcome::Sent, Some(id), None, None),
        Err(e) => {
            let status = match e {
                ApiError::Thing(ThingError::DeviceOffline(_)) => DeviceOutcome::Offline,
                _ => DeviceOutcome::Refused,
            };
            (
                status,
                None,
                Some(e.status_and_code().1.to_owned()),
                Some(e.public_message()),
            )
        }
    };
    GroupCallResult {
        product_key: device.product_key,
        device_name: device.device_name,
        status,
        message_id,
        code,
        message,
    }
}

/// Runs `call` for every device, at most [`GROUP_CALL_CONCURRENCY`] at once; the
/// results in the order of `devices`.
async fn for_each_device<F, Fut>(
    devices: Vec<DeviceKeyRef>,
    call: F,
) -> ApiResult<Vec<GroupCallResult>>
where
    F: Fn(DeviceKeyRef) -> Fut,
    Fut: std::future::Future<Output = ApiResult<String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(GROUP_CALL_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, device) in devices.into_iter().enumerate() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let fut = call(device.clone());
        tasks.spawn(async move {
            let outcome = fut.await;
            drop(permit);
            (index, call_result(device, outcome))
        });
    }
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        results.push(done.map_err(|e| ApiError::Internal(e.to_string()))?);
    }
    results.sort_by_key(|(index, _)| *index);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// Whether `service` is a sync service of the published thing model of `pk`
/// (`Ok(false)` also when the model does not define it: the call then says so).
async fn is_sync_service(
    engine: &ThingEngine,
    pk: &str,
    service: &str,
) -> Result<bool, ThingError> {
    let tsl = engine.tsl_json(pk, false).await?;
    Ok(tsl
        .get("services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| {
            s.get("identifier").and_then(Value::as_str) == Some(service)
                && s.get("callType").and_then(Value::as_str) == Some("sync")
        }))
}

// --- groups

/// Creates a group, or with `parentId` a subgroup (3 levels at most).
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups",
    request_body = CreateGroup,
    responses(
        (status = 201, body = GroupDto),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidTag, TooManyTags, QuotaExceeded.GroupsPerAccount, QuotaExceeded.GroupDepth"),
        (status = 404, body = ErrorBody, description = "GroupNotFound (the parent)"),
        (status = 409, body = ErrorBody, description = "GroupAlreadyExists"),
    ))]
pub(crate) async fn create_group(
    State(s): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateGroup>,
) -> ApiResult<(StatusCode, Json<GroupDto>)> {
    let group = s
        .registry
        .groups()
        .create_group(
            &caller.account_id,
            NewGroup {
                name: body.group_name,
                description: body.description,
                parent_id: body.parent_id.filter(|p| !p.is_empty()),
                tags: body.tags,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(group.into())))
}

/// The caller's groups by name: top-level ones, every group with `all=true`, or the
/// direct subgroups of `parentId`.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups",
    params(GroupListQuery),
    responses(
        (status = 200, body = GroupPage),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidPageSize"),
        (status = 404, body = ErrorBody, description = "GroupNotFound (the parent)"),
    ))]
pub(crate) async fn list_groups(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<GroupListQuery>,
) -> ApiResult<Json<GroupPage>> {
    let listing = match (q.parent_id.filter(|p| !p.is_empty()), q.all) {
        (Some(_), true) => return Err(ApiError::invalid("all", "not with parentId")),
        (Some(parent), false) => GroupListing::SubgroupsOf(parent),
        (None, true) => GroupListing::All,
        (None, false) => GroupListing::TopLevel,
    };
    groups_page(&s, &caller, listing, q.page_no, q.page_size).await
}

async fn groups_page(
    s: &ApiState,
    caller: &Caller,
    listing: GroupListing,
    page_no: Option<u32>,
    page_size: Option<u32>,
) -> ApiResult<Json<GroupPage>> {
    let (page_no, page_size) = page(page_no, page_size)?;
    let p = s
        .registry
        .groups()
        .list_groups(
            &caller.account_id,
            listing,
            PageRequest::Page { page_no, page_size },
        )
        .await?;
    Ok(Json(GroupPage {
        items: p.items.into_iter().map(GroupDto::from).collect(),
        total: p.total,
        page_no,
        page_size,
    }))
}

/// One group.
#[utoipa::path(get, path = "/api/v1/groups/{groupId}", tag = "groups",
    params(("groupId" = String, Path)),
    responses(
        (status = 200, body = GroupDto),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
    ))]
pub(crate) async fn get_group(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<GroupDto>> {
    Ok(Json(owned_group(&s, &caller, &id).await?.into()))
}

/// Renames a group or changes its description.
#[utoipa::path(patch, path = "/api/v1/groups/{groupId}", tag = "groups",
    params(("groupId" = String, Path)),
    request_body = UpdateGroup,
    responses(
        (status = 200, body = GroupDto),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
        (status = 409, body = ErrorBody, description = "GroupAlreadyExists"),
    ))]
pub(crate) async fn update_group(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateGroup>,
) -> ApiResult<Json<GroupDto>> {
    owned_group(&s, &caller, &id).await?;
    let group = s
        .registry
        .groups()
        .update_group(
            &id,
            GroupUpdate {
                name: body.group_name,
                description: body.description,
            },
        )
        .await?;
    Ok(Json(group.into()))
}

/// Deletes a group without subgroups; its devices only leave it.
#[utoipa::path(delete, path = "/api/v1/groups/{groupId}", tag = "groups",
    params(("groupId" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
        (status = 409, body = ErrorBody, description = "GroupHasSubgroups"),
    ))]
pub(crate) async fn delete_group(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    owned_group(&s, &caller, &id).await?;
    s.registry.groups().delete_group(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The direct subgroups of a group, by name.
#[utoipa::path(get, path = "/api/v1/groups/{groupId}/subgroups", tag = "groups",
    params(("groupId" = String, Path), GroupPageQuery),
    responses(
        (status = 200, body = GroupPage),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
    ))]
pub(crate) async fn list_subgroups(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GroupPageQuery>,
) -> ApiResult<Json<GroupPage>> {
    groups_page(
        &s,
        &caller,
        GroupListing::SubgroupsOf(id),
        q.page_no,
        q.page_size,
    )
    .await
}

/// Adds or replaces group tags; returns all of them.
#[utoipa::path(put, path = "/api/v1/groups/{groupId}/tags", tag = "groups",
    params(("groupId" = String, Path)),
    request_body = TagsBody,
    responses(
        (status = 200, body = TagsBody),
        (status = 400, body = ErrorBody, description = "InvalidTag, TooManyTags"),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
    ))]
pub(crate) async fn put_group_tags(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TagsBody>,
) -> ApiResult<Json<TagsBody>> {
    owned_group(&s, &caller, &id).await?;
    let tags = s.registry.groups().set_group_tags(&id, body.tags).await?;
    Ok(Json(TagsBody { tags }))
}

/// Removes group tags by key; returns the rest.
#[utoipa::path(delete, path = "/api/v1/groups/{groupId}/tags", tag = "groups",
    params(("groupId" = String, Path), TagKeysQuery),
    responses(
        (status = 200, body = TagsBody),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
    ))]
pub(crate) async fn delete_group_tags(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TagKeysQuery>,
) -> ApiResult<Json<TagsBody>> {
    owned_group(&s, &caller, &id).await?;
    let tags = s
        .registry
        .groups()
        .remove_group_tags(&id, tag_keys(&q)?)
        .await?;
    Ok(Json(TagsBody { tags }))
}

// --- members

/// Adds up to 1,000 devices to a group; the outcome per device (a device over its
/// 10 groups or past the group's 20,000 devices is refused, the others are added).
#[utoipa::path(post, path = "/api/v1/groups/{groupId}/devices", tag = "groups",
    params(("groupId" = String, Path)),
    request_body = MembersRequest,
    responses(
        (status = 200, body = MembersResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter, BatchTooLarge"),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
    ))]
pub(crate) async fn add_group_devices(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<MembersRequest>,
) -> ApiResult<Json<MembersResponse>> {
    owned_group(&s, &caller, &id).await?;
    let items = s
        .registry
        .groups()
        .add_devices(&id, member_keys(body)?)
        .await?;
    Ok(Json(member_results(items)))
}

/// Removes up to 1,000 devices from a group; the outcome per device.
#[utoipa::path(post, path = "/api/v1/groups/{groupId}/devices/remove", tag = "groups",
    params(("groupId" = String, Path)),
    request_body = MembersRequest,
    responses(
        (status = 200, body = MembersResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter, BatchTooLarge"),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
    ))]
pub(crate) async fn remove_group_devices(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<MembersRequest>,
) -> ApiResult<Json<MembersResponse>> {
    owned_group(&s, &caller, &id).await?;
    let items = s
        .registry
        .groups()
        .remove_devices(&id, member_keys(body)?)
        .await?;
    Ok(Json(member_results(items)))
}

/// Devices directly in a group, ordered by ProductKey and DeviceName.
#[utoipa::path(get, path = "/api/v1/groups/{groupId}/devices", tag = "groups",
    params(("groupId" = String, Path), GroupPageQuery),
    responses(
        (status = 200, body = GroupDevicePage),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidPageSize"),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
    ))]
pub(crate) async fn list_group_devices(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GroupPageQuery>,
) -> ApiResult<Json<GroupDevicePage>> {
    owned_group(&s, &caller, &id).await?;
    let (page_no, page_size) = page(q.page_no, q.page_size)?;
    let p = s
        .registry
        .groups()
        .list_group_devices(&id, PageRequest::Page { page_no, page_size })
        .await?;
    Ok(Json(GroupDevicePage {
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

/// The groups a device belongs to, by name.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/groups", tag = "groups",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = GroupList),
        (status = 404, body = ErrorBody, description = "ProductNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn device_groups(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((pk, dn)): ApiPath<(String, String)>,
) -> ApiResult<Json<GroupList>> {
    s.owned_product(&caller, &pk).await?;
    let groups = s.registry.groups().device_groups(&pk, &dn).await?;
    Ok(Json(GroupList {
        items: groups.into_iter().map(GroupDto::from).collect(),
    }))
}

// --- tag search

/// Products, devices and groups of the caller's account carrying a tag: `tag=key`
/// (any value) or `tag=key=value`.
#[utoipa::path(get, path = "/api/v1/tags/search", tag = "groups",
    params(TagSearchQuery),
    responses(
        (status = 200, body = TagSearchResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter, InvalidPageSize"),
    ))]
pub(crate) async fn search_tags(
    State(s): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TagSearchQuery>,
) -> ApiResult<Json<TagSearchResponse>> {
    let (key, value) = match q.tag.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v)),
        None => (q.tag.trim(), None),
    };
    if key.is_empty() {
        return Err(ApiError::invalid("tag", "give key or key=value"));
    }
    let (mut products, mut devices, mut groups) = (true, true, true);
    if let Some(types) = q.types.as_deref().filter(|t| !t.is_empty()) {
        (products, devices, groups) = (false, false, false);
        for t in types.split(',').map(str::trim) {
            match t {
                "product" => products = true,
                "device" => devices = true,
                "group" => groups = true,
                other => {
                    return Err(ApiError::invalid(
                        "types",
                        format!("{other:?} is not one of product, device, group"),
                    ));
                }
            }
        }
    }
    let account = &caller.account_id;
    let products = if products {
        s.registry
            .find_products_by_tag(account, key, value)
            .await?
            .into_iter()
            .map(ProductDto::from)
            .collect()
    } else {
        Vec::new()
    };
    let (devices, device_total) = if devices {
        let (page_no, page_size) = page(q.page_no, q.page_size)?;
        let p = s
            .registry
            .find_devices_by_tag(
                account,
                key,
                value,
                PageRequest::Page { page_no, page_size },
            )
            .await?;
        (
            p.items
                .into_iter()
                .map(|d| DeviceDto::from_device(d, false))
                .collect(),
            p.total,
        )
    } else {
        (Vec::new(), 0)
    };
    let groups = if groups {
        s.registry
            .groups()
            .find_groups_by_tag(account, key, value)
            .await?
            .into_iter()
            .map(GroupDto::from)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(TagSearchResponse {
        products,
        devices,
        device_total,
        groups,
    }))
}

// --- group-wide operations

/// Sets the same property values on every device of a group (and with
/// `withSubgroups` of its subgroups), each through the thing-model runtime as
/// `.../devices/{deviceName}/properties/set` does; the outcome per device.
#[utoipa::path(post, path = "/api/v1/groups/{groupId}/properties/set", tag = "groups",
    params(("groupId" = String, Path)),
    request_body = GroupSetProperties,
    responses(
        (status = 200, body = GroupCallResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn group_set_properties(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<GroupSetProperties>,
) -> ApiResult<Json<GroupCallResponse>> {
    let engine = s.engine()?.clone();
    owned_group(&s, &caller, &id).await?;
    if body.items.is_empty() {
        return Err(ApiError::invalid("items", "give at least one property"));
    }
    let devices = s
        .registry
        .groups()
        .group_device_keys(&id, body.with_subgroups)
        .await?;
    let params = Value::Object(body.items);
    let items = for_each_device(devices, |d| {
        let (engine, params) = (engine.clone(), params.clone());
        async move {
            Ok(engine
                .set_properties(&d.product_key, &d.device_name, params)
                .await?)
        }
    })
    .await?;
    Ok(Json(GroupCallResponse::new(None, items)))
}

/// Calls an async service on every device of a group (and with `withSubgroups` of
/// its subgroups); the outcome per device. Sync services are refused for each
/// device (`InvalidParameter`): call them device by device.
#[utoipa::path(post, path = "/api/v1/groups/{groupId}/services/{identifier}", tag = "groups",
    params(("groupId" = String, Path), ("identifier" = String, Path)),
    request_body = GroupInvokeService,
    responses(
        (status = 200, body = GroupCallResponse),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
        (status = 503, body = ErrorBody, description = "ServiceUnavailable"),
    ))]
pub(crate) async fn group_invoke_service(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath((id, service)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<GroupInvokeService>,
) -> ApiResult<Json<GroupCallResponse>> {
    let engine = s.engine()?.clone();
    owned_group(&s, &caller, &id).await?;
    let devices = s
        .registry
        .groups()
        .group_device_keys(&id, body.with_subgroups)
        .await?;
    let mut sync: HashMap<String, bool> = HashMap::new();
    for d in &devices {
        if !sync.contains_key(&d.product_key) {
            // A product without a published model is refused by the call itself.
            let is_sync = is_sync_service(&engine, &d.product_key, &service)
                .await
                .unwrap_or(false);
            sync.insert(d.product_key.clone(), is_sync);
        }
    }
    let sync = Arc::new(sync);
    let params = Value::Object(body.args);
    let items = for_each_device(devices, |d| {
        let (engine, params, service, sync) = (
            engine.clone(),
            params.clone(),
            service.clone(),
            sync.clone(),
        );
        async move {
            if sync.get(&d.product_key).copied().unwrap_or(false) {
                return Err(ApiError::invalid(
                    "identifier",
                    format!("{service} is a sync service: call it device by device"),
                ));
            }
            match engine
                .invoke_service(&d.product_key, &d.device_name, &service, params, None)
                .await?
            {
                Invocation::Async { id } | Invocation::Sync { id, .. } => Ok(id),
            }
        }
    })
    .await?;
    Ok(Json(GroupCallResponse::new(None, items)))
}

/// Sends one message to every device of a group (and with `withSubgroups` of its
/// subgroups) on its device broadcast topic `/sys/{pk}/{dn}/broadcast/request/{messageId}`,
/// which devices subscribe to at sign-in; the outcome per device (`offline`: no
/// session took it). Throttled in the PubBroadcast class.
#[utoipa::path(post, path = "/api/v1/groups/{groupId}/broadcast", tag = "groups",
    params(("groupId" = String, Path)),
    request_body = GroupBroadcast,
    responses(
        (status = 200, body = GroupCallResponse),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "GroupNotFound"),
    ))]
pub(crate) async fn group_broadcast(
    State(s): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<GroupBroadcast>,
) -> ApiResult<Json<GroupCallResponse>> {
    owned_group(&s, &caller, &id).await?;
    let qos = match body.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => return Err(ApiError::invalid("qos", "0 or 1")),
    };
    let payload =
        super::messaging::payload(body.payload, body.payload_text, s.config.max_publish_bytes)?;
    if payload.is_empty() {
        return Err(ApiError::invalid("payload", "give payload or payloadText"));
    }
    let devices = s
        .registry
        .groups()
        .group_device_keys(&id, body.with_subgroups)
        .await?;
    let message_id = super::messaging::broadcast_id();
    let mut items = Vec::with_capacity(devices.len());
    for d in devices {
        let topic = format!(
            "/sys/{}/{}/broadcast/request/{message_id}",
            d.product_key, d.device_name
        );
        let (status, code, message) =
            match s.broker.publish(&topic, payload.clone(), qos, false).await {
                Ok(0) => (
                    DeviceOutcome::Offline,
                    Some("DeviceOffline".to_owned()),
                    Some(format!(
                        "device {}/{} is not online",
                        d.product_key, d.device_name
                    )),
                ),
                Ok(_) => (DeviceOutcome::Sent, None, None),
                Err(PublishError::InvalidTopic(t)) => (
                    DeviceOutcome::Refused,
                    Some("InvalidParameter".to_owned()),
                    Some(format!("{t:?} is not a valid topic name")),
                ),
                Err(e) => return Err(ApiError::Internal(e.to_string())),
            };
        items.push(GroupCallResult {
            product_key: d.product_key,
            device_name: d.device_name,
            status,
            message_id: (status == DeviceOutcome::Sent).then(|| message_id.clone()),
            code,
            message,
        });
    }
    Ok(Json(GroupCallResponse::new(Some(message_id), items)))
}
