//! `RegistryError`: every failure of the registry, each with a stable code.

/// Result of every registry operation.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Every failure of a registry operation.
///
/// [`RegistryError::code`] is a stable string for API responses; the message
/// names the object concerned.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("account {0} not found")]
    AccountNotFound(String),
    #[error("account {0} still has products")]
    AccountNotEmpty(String),
    #[error("access key {0} not found")]
    AccessKeyNotFound(String),
    #[error("product {0} not found")]
    ProductNotFound(String),
    #[error("product {product_key} still has {devices} devices")]
    ProductNotEmpty { product_key: String, devices: u64 },
    #[error("device {0} not found")]
    DeviceNotFound(String),
    #[error("device {product_key}/{device_name} already exists")]
    DeviceAlreadyExists {
        product_key: String,
        device_name: String,
    },
    #[error("device {0} is disabled")]
    DeviceDisabled(String),
    #[error("device {0} has already registered or connected")]
    DeviceAlreadyRegistered(String),
    #[error("invalid device name {name:?}: {reason}")]
    InvalidDeviceName { name: String, reason: &'static str },
    #[error("invalid product name {name:?}: {reason}")]
    InvalidProductName { name: String, reason: &'static str },
    #[error("invalid tag {key:?}: {reason}")]
    InvalidTag { key: String, reason: &'static str },
    #[error("invalid topic template {template:?}: {reason}")]
    InvalidTopicTemplate {
        template: String,
        reason: &'static str,
    },
    #[error("invalid {field}: {reason}")]
    InvalidParameter { field: &'static str, reason: String },
    #[error("account {account_id} already has the maximum of {limit} products")]
    ProductsPerAccountExceeded { account_id: String, limit: u64 },
    #[error("product {product_key} would exceed its limit of {limit} devices")]
    DevicesPerProductExceeded { product_key: String, limit: u64 },
    #[error("account {account_id} would exceed its limit of {limit} devices")]
    DevicesPerAccountExceeded { account_id: String, limit: u64 },
    #[error("{object} would have more than {limit} tags")]
    TooManyTags { object: String, limit: u64 },
    #[error("product {product_key} already has the maximum of {limit} topic categories")]
    TooManyTopicCategories { product_key: String, limit: u64 },
    #[error("topic category {id} of product {product_key} not found")]
    TopicCategoryNotFound { product_key: String, id: i64 },
    #[error("product {product_key} already has a topic category {template:?}")]
    TopicCategoryAlreadyExists {
        product_key: String,
        template: String,
    },
    #[error("product {product_key} has no draft {kind} to publish")]
    NothingToPublish { product_key: String, kind: String },
    #[error("batch of {len} device names is over the limit of {limit}")]
    BatchTooLarge { len: usize, limit: usize },
    #[error("page size {size} is not within 1..={limit}")]
    InvalidPageSize { size: u32, limit: u32 },
    #[error("invalid page cursor {0:?}")]
    InvalidCursor(String),
    #[error("rule {0} not found")]
    RuleNotFound(String),
    #[error("destination {0} not found")]
    DestinationNotFound(String),
    #[error("a destination named {0:?} already exists")]
    DestinationAlreadyExists(String),
    #[error("account {account_id} already has the maximum of {limit} rules")]
    RulesPerAccountExceeded { account_id: String, limit: u64 },
    #[error("device group {0} not found")]
    GroupNotFound(String),
    #[error("a device group named {0:?} already exists")]
    GroupAlreadyExists(String),
    #[error("device group {0} still has subgroups")]
    GroupHasSubgroups(String),
    #[error("a subgroup of {parent_id} would be deeper than {limit} levels")]
    GroupDepthExceeded { parent_id: String, limit: u64 },
    #[error("account {account_id} already has the maximum of {limit} device groups")]
    GroupsPerAccountExceeded { account_id: String, limit: u64 },
    #[error("device group {group_id} already has the maximum of {limit} devices")]
    DevicesPerGroupExceeded { group_id: String, limit: u64 },
    #[error("device {device} already belongs to the maximum of {limit} groups")]
    GroupsPerDeviceExceeded { device: String, limit: u64 },
    #[error("gateway {gateway} would exceed its limit of {limit} sub-devices")]
    SubDevicesPerGatewayExceeded { gateway: String, limit: u64 },
    #[error("sub-device {device} already belongs to gateway {gateway}")]
    SubDeviceHasGateway { device: String, gateway: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("schema migration {version} failed: {source}")]
    Migration {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
}

impl RegistryError {
    /// A stable, API-facing code for the variant.
    pub fn code(&self) -> &'static str {
        use RegistryError::*;
        match self {
            AccountNotFound(_) => "AccountNotFound",
            AccountNotEmpty(_) => "AccountNotEmpty",
            AccessKeyNotFound(_) => "AccessKeyNotFound",
            ProductNotFound(_) => "ProductNotFound",
            ProductNotEmpty { .. } => "ProductNotEmpty",
            DeviceNotFound(_) => "DeviceNotFound",
            DeviceAlreadyExists { .. } => "DeviceAlreadyExists",
            DeviceDisabled(_) => "DeviceDisabled",
            DeviceAlreadyRegistered(_) => "DeviceAlreadyRegistered",
            InvalidDeviceName { .. } => "InvalidDeviceName",
            InvalidProductName { .. } => "InvalidProductName",
            InvalidTag { .. } => "InvalidTag",
            InvalidTopicTemplate { .. } => "InvalidTopicTemplate",
            InvalidParameter { .. } => "InvalidParameter",
            ProductsPerAccountExceeded { .. } => "QuotaExceeded.ProductsPerAccount",
            DevicesPerProductExceeded { .. } => "QuotaExceeded.DevicesPerProduct",
            DevicesPerAccountExceeded { .. } => "QuotaExceeded.DevicesPerAccount",
            TooManyTags { .. } => "TooManyTags",
            TooManyTopicCategories { .. } => "QuotaExceeded.TopicCategoriesPerProduct",
            TopicCategoryNotFound { .. } => "TopicCategoryNotFound",
            TopicCategoryAlreadyExists { .. } => "TopicCategoryAlreadyExists",
            NothingToPublish { .. } => "NothingToPublish",
            BatchTooLarge { .. } => "BatchTooLarge",
            InvalidPageSize { .. } => "InvalidPageSize",
            InvalidCursor(_) => "InvalidCursor",
            RuleNotFound(_) => "RuleNotFound",
            DestinationNotFound(_) => "DestinationNotFound",
            DestinationAlreadyExists(_) => "DestinationAlreadyExists",
            RulesPerAccountExceeded { .. } => "QuotaExceeded.RulesPerAccount",
            GroupNotFound(_) => "GroupNotFound",
            GroupAlreadyExists(_) => "GroupAlreadyExists",
            GroupHasSubgroups(_) => "GroupHasSubgroups",
            GroupDepthExceeded { .. } => "QuotaExceeded.GroupDepth",
            GroupsPerAccountExceeded { .. } => "QuotaExceeded.GroupsPerAccount",
            DevicesPerGroupExceeded { .. } => "QuotaExceeded.DevicesPerGroup",
            GroupsPerDeviceExceeded { .. } => "QuotaExceeded.GroupsPerDevice",
            SubDevicesPerGatewayExceeded { .. } => "QuotaExceeded.SubDevicesPerGateway",
            SubDeviceHasGateway { .. } => "SubDeviceHasGateway",
            Corrupt(_) | Migration { .. } | Backend(_) => "Backend",
        }
    }
}
