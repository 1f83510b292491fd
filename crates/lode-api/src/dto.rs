//! Request and response bodies of the management API (camelCase JSON), with
//! their OpenAPI schemas.
//!
//! Responses are built from the registry's domain types here, so the API's
//! wire format does not change when the registry's storage model does.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lode_registry::{
    AccessKey, AuthType, DataFormat, Device, DeviceEvent, DeviceEventKind, DeviceState, NodeType,
    Product, TopicCategory, TopicPermission,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Key → value tags.
pub type TagMap = BTreeMap<String, String>;

/// An access key. The secret is only returned when the key is created.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyDto {
    pub access_key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_secret: Option<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

impl AccessKeyDto {
    pub(crate) fn from_key(k: AccessKey, with_secret: bool) -> Self {
        AccessKeyDto {
            access_key_id: k.id,
            access_key_secret: with_secret.then_some(k.secret),
            enabled: k.enabled,
            created_at: k.created_at,
        }
    }
}

/// Access keys of the caller's account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyList {
    pub items: Vec<AccessKeyDto>,
}

/// `PATCH /accessKeys/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessKeyPatch {
    pub enabled: bool,
}

/// A bearer token for `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenDto {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// A product.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductDto {
    pub product_key: String,
    pub product_secret: String,
    pub name: String,
    /// `Direct`, `Gateway` or `SubDevice`.
    #[schema(value_type = String, example = "Direct")]
    pub node_type: NodeType,
    /// `AlinkJson` or `Custom`.
    #[schema(value_type = String, example = "AlinkJson")]
    pub data_format: DataFormat,
    /// `DeviceSecret` or `X509`.
    #[schema(value_type = String, example = "DeviceSecret")]
    pub auth_type: AuthType,
    pub dynamic_registration: bool,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

impl From<Product> for ProductDto {
    fn from(p: Product) -> Self {
        ProductDto {
            product_key: p.product_key,
            product_secret: p.product_secret,
            name: p.name,
            node_type: p.node_type,
            data_format: p.data_format,
            auth_type: p.auth_type,
            dynamic_registration: p.dynamic_registration,
            description: p.description,
            tags: p.tags,
            created_at: p.created_at,
        }
    }
}

/// `POST /products`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProduct {
    #[serde(alias = "productName")]
    pub name: String,
    /// `Direct` (default), `Gateway` or `SubDevice`.
    #[schema(value_type = Option<String>, example = "Direct")]
    #[serde(default)]
    pub node_type: Option<NodeType>,
    /// `AlinkJson` (default) or `Custom`.
    #[schema(value_type = Option<String>, example = "AlinkJson")]
    #[serde(default)]
    pub data_format: Option<DataFormat>,
    /// `DeviceSecret` (default) or `X509`.
    #[schema(value_type = Option<String>, example = "DeviceSecret")]
    #[serde(default)]
    pub auth_type: Option<AuthType>,
    #[serde(default)]
    pub dynamic_registration: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `PATCH /products/{productKey}`; absent fields are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateProduct {
    #[serde(alias = "productName")]
    pub name: Option<String>,
    pub description: Option<String>,
    pub dynamic_registration: Option<bool>,
}

/// One page of products.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    pub items: Vec<ProductDto>,
    pub total: u64,
    pub page_no: u32,
    pub page_size: u32,
}

/// Paging of a listing: `pageNo` from 1, `pageSize` up to 200.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    pub page_no: Option<u32>,
    pub page_size: Option<u32>,
}

/// `PUT .../tags`: tags to add or replace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagsBody {
    pub tags: BTreeMap<String, String>,
}

/// `DELETE .../tags?keys=a,b`: tag keys to remove, comma-separated.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct TagKeysQuery {
    pub keys: String,
}

/// A topic category: a product-wide topic template with a permission.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicCategoryDto {
    pub id: i64,
    pub product_key: String,
    /// e.g. `/${productKey}/${deviceName}/user/update`.
    pub topic_short_name: String,
    /// `Pub`, `Sub` or `PubSub`.
    #[schema(value_type = String, example = "Pub")]
    pub operation: TopicPermission,
    pub desc: String,
}

impl From<TopicCategory> for TopicCategoryDto {
    fn from(t: TopicCategory) -> Self {
        TopicCategoryDto {
            id: t.id,
            product_key: t.product_key,
            topic_short_name: t.template,
            operation: t.permission,
            desc: t.description,
        }
    }
}

/// Topic categories of a product.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicCategoryList {
    pub items: Vec<TopicCategoryDto>,
}

/// `POST /products/{productKey}/topics`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTopicCategory {
    pub topic_short_name: String,
    /// `Pub`, `Sub` or `PubSub`.
    #[schema(value_type = String, example = "Pub")]
    pub operation: TopicPermission,
    #[serde(default)]
    pub desc: String,
}

/// `PATCH /products/{productKey}/topics/{id}`; absent fields are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTopicCategory {
    pub topic_short_name: Option<String>,
    #[schema(value_type = Option<String>, example = "PubSub")]
    pub operation: Option<TopicPermission>,
    pub desc: Option<String>,
}

/// A device. The secret is returned by single-device calls, not by listings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceDto {
    pub iot_id: String,
    pub product_key: String,
    pub device_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_secret: Option<String>,
    pub nickname: Option<String>,
    /// `Inactive`, `Online`, `Offline` or `Disabled`.
    #[schema(value_type = String, example = "Inactive")]
    pub state: DeviceState,
    pub activated_at: Option<DateTime<Utc>>,
    pub last_online_at: Option<DateTime<Utc>>,
    pub last_offline_at: Option<DateTime<Utc>>,
    pub last_ip: Option<String>,
    pub firmware_version: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub dynamically_registered: bool,
    pub created_at: DateTime<Utc>,
}

impl DeviceDto {
    pub(crate) fn from_device(d: Device, with_secret: bool) -> Self {
        DeviceDto {
            iot_id: d.iot_id,
            product_key: d.product_key,
            device_name: d.device_name,
            device_secret: with_secret.then_some(d.device_secret),
            nickname: d.nickname,
            state: d.state,
            activated_at: d.activated_at,
            last_online_at: d.last_online_at,
            last_offline_at: d.last_offline_at,
            last_ip: d.last_ip,
            firmware_version: d.firmware_version,
            tags: d.tags,
            dynamically_registered: d.dynamically_registered,
            created_at: d.created_at,
        }
    }
}

/// `POST /products/{productKey}/devices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDevice {
    /// Generated (20 alphanumerics) when absent.
    pub device_name: Option<String>,
    pub nickname: Option<String>,
}

/// One page of devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevicePage {
    pub items: Vec<DeviceDto>,
    pub total: u64,
    pub page_no: u32,
    pub page_size: u32,
}

/// Filters and paging of `GET /products/{productKey}/devices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeviceListQuery {
    /// `Inactive`, `Online`, `Offline` or `Disabled`.
    pub state: Option<String>,
    /// DeviceName prefix.
    pub name: Option<String>,
    pub tag_key: Option<String>,
    pub tag_value: Option<String>,
    pub page_no: Option<u32>,
    pub page_size: Option<u32>,
}

/// Connection status of a device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatusDto {
    #[schema(value_type = String, example = "Online")]
    pub state: DeviceState,
    pub online: bool,
    pub last_online: Option<DateTime<Utc>>,
    pub last_ip: Option<String>,
}

/// One record of a device's lifecycle log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEventDto {
    pub id: i64,
    /// `Created`, `Activated`, `Online`, `Offline`, `Disabled`, `Enabled`, `Deleted`, `SecretReset`.
    #[schema(value_type = String, example = "Online")]
    pub event: DeviceEventKind,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<DeviceEvent> for DeviceEventDto {
    fn from(e: DeviceEvent) -> Self {
        DeviceEventDto {
            id: e.id,
            event: e.event,
            reason: e.reason,
            ip: e.ip,
            at: e.at,
        }
    }
}

/// One page of a device's lifecycle log, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEventPage {
    pub items: Vec<DeviceEventDto>,
    pub total: u64,
    pub page_no: u32,
    pub page_size: u32,
}

/// `POST /products/{productKey}/devices:batch`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchRegister {
    /// Up to 10,000 names.
    pub device_names: Vec<String>,
}

/// A batch registration was accepted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAccepted {
    pub job_id: String,
}

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
}

/// A name a batch could not register.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobFailure {
    pub device_name: String,
    pub code: String,
    pub message: String,
}

/// A device a batch registered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    pub device_name: String,
    pub iot_id: String,
    pub device_secret: String,
}

/// A batch registration job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobDto {
    pub job_id: String,
    pub product_key: String,
    pub status: JobStatus,
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// When the whole job failed (e.g. a quota), its error code and message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobFailure>,
    pub failures: Vec<JobFailure>,
    pub results: Vec<JobResult>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// `POST /pub`: publish to a device topic of one of the caller's products.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishRequest {
    pub topic: String,
    /// Payload, base64 (standard alphabet). Give this or `payloadText`.
    pub payload: Option<String>,
    /// Payload as UTF-8 text.
    pub payload_text: Option<String>,
    /// 0 (default) or 1.
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
}

/// `POST /products/{productKey}/broadcast`: publish to `/broadcast/{productKey}/{topicSuffix}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BroadcastRequest {
    pub topic_suffix: String,
    /// Payload, base64 (standard alphabet). Give this or `payloadText`.
    pub payload: Option<String>,
    /// Payload as UTF-8 text.
    pub payload_text: Option<String>,
    /// 0 (default) or 1.
    #[serde(default)]
    pub qos: u8,
}

/// A publish was accepted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishResponse {
    pub topic: String,
    /// Sessions the message was routed to.
    pub delivered: usize,
}

/// Dynamic registration success (`code` 200) or failure (`data` absent).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterReply {
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<RegisterData>,
    pub message: String,
}

/// The certificate a dynamically registered device receives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterData {
    pub product_key: String,
    pub device_name: String,
    pub device_secret: String,
}
