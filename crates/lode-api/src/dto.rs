//! Request and response bodies of the management API (camelCase JSON), with
//! their OpenAPI schemas.
//!
//! Responses are built from the registry's domain types here, so the API's
//! wire format does not change when the registry's storage model does.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use lode_history::{DesiredValue, EventRecord, LogEntry, PropertyPoint, ServiceCall};
use lode_registry::{
    AccessKey, AuthType, DataFormat, Device, DeviceEvent, DeviceEventKind, DeviceState, NodeType,
    Product, ProductDocument, TopicCategory, TopicPermission,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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

// --- thing model

/// `?draft=true` reads the draft; the published version otherwise.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DraftQuery {
    #[serde(default)]
    pub draft: bool,
}

/// The thing model (TSL) of a product, in the reference platform's JSON format.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingModelDto {
    pub product_key: String,
    /// Number of publications so far (0: never published).
    pub version: u64,
    pub published_at: Option<DateTime<Utc>>,
    /// When the draft was last saved; null when there is no draft.
    pub draft_updated_at: Option<DateTime<Utc>>,
    /// The TSL JSON (`schema`, `profile`, `properties`, `events`, `services`);
    /// a product without one has only the implicit `post` event and `set`/`get` services.
    #[schema(value_type = Object)]
    pub tsl: Value,
}

impl ThingModelDto {
    pub(crate) fn new(doc: &ProductDocument, tsl: Value) -> Self {
        ThingModelDto {
            product_key: doc.product_key.clone(),
            version: doc.version,
            published_at: doc.published_at,
            draft_updated_at: doc.draft_updated_at,
            tsl,
        }
    }
}

/// The data parsing script of a product.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScriptDto {
    pub product_key: String,
    /// Number of publications so far (0: never published).
    pub version: u64,
    pub published_at: Option<DateTime<Utc>>,
    pub draft_updated_at: Option<DateTime<Utc>>,
    /// The JavaScript source (draft or published, as asked); null when there is none.
    pub source: Option<String>,
}

impl ScriptDto {
    pub(crate) fn new(doc: ProductDocument, draft: bool) -> Self {
        ScriptDto {
            product_key: doc.product_key,
            version: doc.version,
            published_at: doc.published_at,
            draft_updated_at: doc.draft_updated_at,
            source: if draft { doc.draft } else { doc.published },
        }
    }
}

/// `PUT /products/{productKey}/script`: the draft script.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScriptBody {
    pub source: String,
}

/// Which function of a script a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScriptTestDirection {
    /// `rawDataToProtocol` over bytes.
    Up,
    /// `protocolToRawData` over an Alink JSON message.
    Down,
}

/// `POST /products/{productKey}/script/test`: runs a script on a sample.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScriptTestRequest {
    pub direction: ScriptTestDirection,
    /// The script to run; the product's draft when absent.
    pub source: Option<String>,
    /// `up`: the raw payload in hex.
    pub payload_hex: Option<String>,
    /// `up`: the raw payload in base64 (standard alphabet).
    pub payload_base64: Option<String>,
    /// `down`: the Alink JSON message.
    #[schema(value_type = Option<Object>)]
    pub message: Option<Value>,
}

/// What a script returned: the Alink JSON (`up`), or `{hex, length}` (`down`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScriptTestResponse {
    #[schema(value_type = Object)]
    pub result: Value,
}

/// `POST .../devices/{deviceName}/properties/set`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPropertiesRequest {
    /// Property identifier → value, checked against the published thing model.
    #[schema(value_type = Object)]
    pub items: Map<String, Value>,
}

/// A request sent to a device; its reply is recorded with the service call of that id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageIdDto {
    pub message_id: String,
}

/// `POST /products/{productKey}/properties/set`: the same values to many devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchSetPropertiesRequest {
    /// 1 to 100 devices of the product.
    pub device_names: Vec<String>,
    #[schema(value_type = Object)]
    pub items: Map<String, Value>,
}

/// The outcome for one device of a batch property set: a message id, or an error.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchSetResult {
    pub device_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Error code, as in an error response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcomes of a batch property set, in the order of the request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchSetResponse {
    pub items: Vec<BatchSetResult>,
}

/// `POST .../devices/{deviceName}/services/{identifier}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeServiceRequest {
    /// Input parameters, checked against the service's `inputData`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Map<String, Value>,
    /// How long a sync call waits for the device, 1,000 to 60,000 ms (default 5,000).
    pub timeout_ms: Option<u64>,
}

/// The outcome of a service call: for a sync service the device's answer, for an
/// async one only the message id (the reply is recorded with the call).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvokeServiceResponse {
    pub message_id: String,
    /// `sync` or `async`.
    pub call_type: String,
    /// The device's Alink code (200: success); sync calls only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The service's output; sync calls only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The latest value of a property; `value` and times are null when the device
/// never reported it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatestPropertyDto {
    pub identifier: String,
    /// Name in the published thing model; null for a value of a property it no longer has.
    pub name: Option<String>,
    /// Data type in the published thing model (`int`, `float`, `struct`, …).
    pub data_type: Option<String>,
    pub value: Option<Value>,
    /// Device time of the value, ms since the Unix epoch.
    pub time: Option<i64>,
    /// When the platform accepted it, ms since the Unix epoch.
    pub server_time: Option<i64>,
}

/// Every property of the published thing model (in its order), then values of
/// properties the model no longer has.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatestPropertyList {
    pub items: Vec<LatestPropertyDto>,
}

/// A time window and a page of history. Times are ms since the Unix epoch;
/// the window is `start <= time < end`, the last 24 hours by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Inclusive; default `end` minus 24 hours.
    pub start: Option<i64>,
    /// Exclusive; default now (inclusive of now).
    pub end: Option<i64>,
    /// `desc` (newest first, default) or `asc`.
    pub order: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page (with the same order).
    pub cursor: Option<String>,
}

/// Event history filters and paging (see [`HistoryQuery`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventHistoryQuery {
    /// Only this event.
    pub identifier: Option<String>,
    /// Only `info`, `alert` or `error` events.
    pub event_type: Option<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// `desc` (default) or `asc`.
    pub order: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Service-call history filters and paging (see [`HistoryQuery`]); calls are
/// ordered by the time they were sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct CallHistoryQuery {
    /// Only calls of this service (`set` for property sets).
    pub identifier: Option<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// `desc` (default) or `asc`.
    pub order: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// One value of a property.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyPointDto {
    pub value: Value,
    pub time: i64,
    pub server_time: i64,
}

impl From<PropertyPoint> for PropertyPointDto {
    fn from(p: PropertyPoint) -> Self {
        PropertyPointDto {
            value: p.value,
            time: p.device_time,
            server_time: p.server_time,
        }
    }
}

/// One page of a property's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyHistoryPage {
    pub identifier: String,
    pub items: Vec<PropertyPointDto>,
    /// Present when more may follow: pass it as `cursor`.
    pub next_cursor: Option<String>,
}

/// One event a device reported.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDto {
    pub identifier: String,
    /// `info`, `alert` or `error`.
    pub event_type: String,
    #[schema(value_type = Object)]
    pub output: Value,
    pub time: i64,
    pub server_time: i64,
}

impl From<EventRecord> for EventDto {
    fn from(e: EventRecord) -> Self {
        EventDto {
            identifier: e.identifier,
            event_type: e.event_type,
            output: e.output,
            time: e.device_time,
            server_time: e.server_time,
        }
    }
}

/// One page of a device's event history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventHistoryPage {
    pub items: Vec<EventDto>,
    pub next_cursor: Option<String>,
}

/// One property set or service call and its outcome.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCallDto {
    pub message_id: String,
    /// The service (`set` for a property set).
    pub identifier: String,
    /// `sync` or `async`.
    pub call_type: String,
    pub input: Value,
    /// `pending`, `succeeded`, `failed` or `timed_out`.
    pub status: String,
    /// The device's Alink code.
    pub code: Option<i64>,
    pub output: Option<Value>,
    pub message: Option<String>,
    /// When it was sent, ms since the Unix epoch.
    pub started_at: i64,
    /// When the reply (or the time-out) came.
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
}

impl From<ServiceCall> for ServiceCallDto {
    fn from(c: ServiceCall) -> Self {
        ServiceCallDto {
            duration_ms: c.duration_ms(),
            message_id: c.call_id,
            identifier: c.identifier,
            call_type: c.call_type,
            input: c.input,
            status: c.status.as_str().to_owned(),
            code: c.code,
            output: c.output,
            message: c.message,
            started_at: c.started_at,
            finished_at: c.finished_at,
        }
    }
}

/// One page of a device's service calls.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCallPage {
    pub items: Vec<ServiceCallDto>,
    pub next_cursor: Option<String>,
}

/// `GET .../desired?identifiers=a,b`: all desired values when absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DesiredQuery {
    /// Property identifiers, comma-separated.
    pub identifiers: Option<String>,
}

/// The desired value of a property.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredDto {
    pub identifier: String,
    pub value: Value,
    /// Grows by one with every change, deletions included.
    pub version: u64,
    /// When it was set, ms since the Unix epoch.
    pub time: i64,
}

impl From<DesiredValue> for DesiredDto {
    fn from(d: DesiredValue) -> Self {
        DesiredDto {
            identifier: d.identifier,
            value: d.value,
            version: d.version,
            time: d.time,
        }
    }
}

/// Desired values of a device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredList {
    pub items: Vec<DesiredDto>,
}

/// `PUT .../desired`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetDesiredRequest {
    /// Property identifier → desired value (read-write properties of the published model).
    #[schema(value_type = Object)]
    pub items: Map<String, Value>,
    /// Property identifier → the version it must have now (0: never set);
    /// `VersionConflict` otherwise.
    #[serde(default)]
    pub versions: BTreeMap<String, u64>,
}

/// The new version of a desired value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredVersionDto {
    pub identifier: String,
    pub version: u64,
}

/// New versions of the desired values set.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredVersionList {
    pub items: Vec<DesiredVersionDto>,
}

/// `DELETE .../desired/{identifier}?version=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeleteDesiredQuery {
    /// The version it must have now; `VersionConflict` otherwise.
    pub version: Option<u64>,
}

/// One message to or from a device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEntryDto {
    /// When it was handled, ms since the Unix epoch.
    pub time: i64,
    /// `up` (from the device) or `down`.
    pub direction: String,
    pub topic: String,
    /// The payload (possibly truncated), as text or base64: see `payloadEncoding`.
    pub payload: String,
    /// `text` (UTF-8) or `base64`.
    pub payload_encoding: String,
    /// Size of the whole payload in bytes.
    pub payload_size: u32,
    /// Only the start of the payload was kept.
    pub truncated: bool,
    /// Result code; 200 is success.
    pub code: i64,
    /// The processing step that failed (`parse`, `tsl`, `script`, …).
    pub step: Option<String>,
    pub message: Option<String>,
    pub trace_id: String,
}

impl From<LogEntry> for LogEntryDto {
    fn from(e: LogEntry) -> Self {
        let truncated = e.payload.len() < e.payload_size as usize;
        let (payload, payload_encoding) = match String::from_utf8(e.payload) {
            Ok(text) => (text, "text"),
            Err(e) => (
                base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                "base64",
            ),
        };
        LogEntryDto {
            time: e.time,
            direction: e.direction.as_str().to_owned(),
            topic: e.topic,
            payload,
            payload_encoding: payload_encoding.to_owned(),
            payload_size: e.payload_size,
            truncated,
            code: e.code,
            step: e.step,
            message: e.message,
            trace_id: e.trace_id,
        }
    }
}

/// One page of a device's message log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogPage {
    pub items: Vec<LogEntryDto>,
    pub next_cursor: Option<String>,
}
