//! Domain types of the registry, serialized with the reference platform's
//! camelCase field names where it has them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;

/// Tags of a product or device: key → value.
pub type Tags = BTreeMap<String, String>;

/// Tenant owning products, devices and keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    pub name: String,
    #[serde(rename = "gmtCreate")]
    pub created_at: DateTime<Utc>,
}

/// A key pair signing management API calls for an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKey {
    #[serde(rename = "accessKeyId")]
    pub id: String,
    #[serde(rename = "accessKeySecret")]
    pub secret: String,
    pub account_id: String,
    pub enabled: bool,
    #[serde(rename = "gmtCreate")]
    pub created_at: DateTime<Utc>,
}

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* $variant),*
        }

        impl $name {
            /// The name stored in the database (the variant's name).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant)),*
                }
            }

            /// Parses a stored name.
            pub fn parse(s: &str) -> Result<Self, RegistryError> {
                match s {
                    $(stringify!($variant) => Ok($name::$variant),)*
                    _ => Err(RegistryError::Corrupt(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        s
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// How devices of a product connect.
    NodeType {
        /// Connects by itself.
        Direct,
        /// Connects by itself and manages sub-devices.
        Gateway,
        /// Talks only through a gateway.
        SubDevice,
    }
);

text_enum!(
    /// Payload format of a product's devices.
    DataFormat {
        /// Alink JSON.
        AlinkJson,
        /// Own format, turned into Alink JSON by a data parsing script.
        Custom,
    }
);

text_enum!(
    /// How devices of a product authenticate.
    AuthType {
        /// Per-device secret (optionally obtained by dynamic registration).
        DeviceSecret,
        /// X.509 client certificate.
        X509,
    }
);

text_enum!(
    /// Connection state of a device.
    DeviceState {
        /// Never connected.
        Inactive,
        Online,
        Offline,
        /// Refused at connect until enabled again.
        Disabled,
    }
);

text_enum!(
    /// Publish/subscribe permission of a topic category.
    TopicPermission {
        /// The device may publish.
        Pub,
        /// The device may subscribe.
        Sub,
        /// Both.
        PubSub,
    }
);

text_enum!(
    /// Kind of a device lifecycle record.
    DeviceEventKind {
        Created,
        Activated,
        Online,
        Offline,
        Disabled,
        Enabled,
        Deleted,
        SecretReset,
    }
);

/// A set of devices with the same features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub product_key: String,
    pub product_secret: String,
    pub account_id: String,
    #[serde(rename = "productName")]
    pub name: String,
    pub node_type: NodeType,
    pub data_format: DataFormat,
    pub auth_type: AuthType,
    pub dynamic_registration: bool,
    pub description: String,
    pub tags: Tags,
    #[serde(rename = "gmtCreate")]
    pub created_at: DateTime<Utc>,
}

/// Input of `create_product`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewProduct {
    #[serde(rename = "productName")]
    pub name: String,
    pub node_type: NodeType,
    pub data_format: DataFormat,
    pub auth_type: AuthType,
    pub dynamic_registration: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Tags,
}

impl NewProduct {
    /// A direct-connected Alink JSON product with per-device secrets.
    pub fn new(name: impl Into<String>) -> Self {
        NewProduct {
            name: name.into(),
            node_type: NodeType::Direct,
            data_format: DataFormat::AlinkJson,
            auth_type: AuthType::DeviceSecret,
            dynamic_registration: false,
            description: String::new(),
            tags: Tags::new(),
        }
    }
}

/// Changes of `update_product`; `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductUpdate {
    #[serde(rename = "productName")]
    pub name: Option<String>,
    pub description: Option<String>,
    pub dynamic_registration: Option<bool>,
}

/// One physical thing of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub iot_id: String,
    pub product_key: String,
    pub device_name: String,
    pub device_secret: String,
    pub nickname: Option<String>,
    #[serde(rename = "status")]
    pub state: DeviceState,
    #[serde(rename = "gmtActive")]
    pub activated_at: Option<DateTime<Utc>>,
    #[serde(rename = "gmtOnline")]
    pub last_online_at: Option<DateTime<Utc>>,
    #[serde(rename = "gmtOffline")]
    pub last_offline_at: Option<DateTime<Utc>>,
    #[serde(rename = "ipAddress")]
    pub last_ip: Option<String>,
    pub firmware_version: Option<String>,
    pub tags: Tags,
    pub dynamically_registered: bool,
    #[serde(rename = "gmtCreate")]
    pub created_at: DateTime<Utc>,
}

/// Input of `create_device`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewDevice {
    pub device_name: String,
    pub nickname: Option<String>,
    /// The device obtains its secret through dynamic registration.
    pub dynamically_registered: bool,
}

impl NewDevice {
    /// A device with only a name.
    pub fn new(device_name: impl Into<String>) -> Self {
        NewDevice {
            device_name: device_name.into(),
            ..Default::default()
        }
    }
}

/// Product-wide topic template with a permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicCategory {
    pub id: i64,
    pub product_key: String,
    #[serde(rename = "topicShortName")]
    pub template: String,
    #[serde(rename = "operation")]
    pub permission: TopicPermission,
    #[serde(rename = "desc")]
    pub description: String,
}

/// Input of `create_topic_category` and `update_topic_category`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTopicCategory {
    #[serde(rename = "topicShortName")]
    pub template: String,
    #[serde(rename = "operation")]
    pub permission: TopicPermission,
    #[serde(rename = "desc", default)]
    pub description: String,
}

/// The categories every new product gets, as on the reference platform.
pub const DEFAULT_TOPIC_CATEGORIES: [(&str, TopicPermission); 3] = [
    (
        "/${productKey}/${deviceName}/user/update",
        TopicPermission::Pub,
    ),
    (
        "/${productKey}/${deviceName}/user/update/error",
        TopicPermission::Pub,
    ),
    (
        "/${productKey}/${deviceName}/user/get",
        TopicPermission::Sub,
    ),
];

/// One record of a device's append-only lifecycle log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEvent {
    pub id: i64,
    pub product_key: String,
    pub device_name: String,
    pub event: DeviceEventKind,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub at: DateTime<Utc>,
}

/// Filter of `list_devices`; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub state: Option<DeviceState>,
    pub name_prefix: Option<String>,
    /// Tag key, and optionally its value.
    pub tag: Option<(String, Option<String>)>,
}

/// Which page of a listing to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageRequest {
    /// Page `page_no` (1-based) of `page_size` items.
    Page { page_no: u32, page_size: u32 },
    /// The `page_size` items after `cursor` (`None`: from the start);
    /// `Page::next_cursor` of a page continues the listing.
    After {
        cursor: Option<String>,
        page_size: u32,
    },
}

impl PageRequest {
    /// The first page of `page_size` items.
    pub fn first(page_size: u32) -> Self {
        PageRequest::Page {
            page_no: 1,
            page_size,
        }
    }

    pub(crate) fn page_size(&self) -> u32 {
        match self {
            PageRequest::Page { page_size, .. } | PageRequest::After { page_size, .. } => {
                *page_size
            }
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Items matching the listing's filter, over all pages.
    pub total: u64,
    /// Continues the listing (`PageRequest::After`); `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Outcome of one name of `register_devices_batch`, in input order.
#[derive(Debug)]
pub struct BatchItem {
    pub device_name: String,
    pub result: Result<Device, RegistryError>,
}

/// A document a product carries in two versions: a draft users edit and the
/// published version devices see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// The thing model (TSL JSON).
    Tsl,
    /// The data parsing script (JavaScript).
    Script,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Tsl => "tsl",
            DocumentKind::Script => "script",
        }
    }
}

/// The draft and published versions of a product's document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductDocument {
    pub product_key: String,
    pub kind: DocumentKind,
    pub draft: Option<String>,
    pub draft_updated_at: Option<DateTime<Utc>>,
    pub published: Option<String>,
    /// Number of publications so far (0: never published).
    pub version: u64,
    pub published_at: Option<DateTime<Utc>>,
}
