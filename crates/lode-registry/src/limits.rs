//! Every limit the registry enforces, in one place.

/// Limits enforced by a registry backend; pass them at open.
///
/// The defaults are the platform's documented limits; an operator may change
/// them through configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Products one account may own.
    pub products_per_account: u64,
    /// Devices in one product.
    pub devices_per_product: u64,
    /// Devices over all products of one account.
    pub devices_per_account: u64,
    /// Tags on one product, device or group.
    pub tags_per_object: u64,
    /// Topic categories of one product (the three defaults included).
    pub topic_categories_per_product: u64,
    /// Names in one `register_devices_batch` call.
    pub batch_register_max: usize,
    /// Largest page of a listing.
    pub page_size_max: u32,
    /// Device groups of one account, subgroups included.
    pub groups_per_account: u64,
    /// Levels of nested groups (a top-level group is level 1).
    pub group_depth: u64,
    /// Devices in one group.
    pub devices_per_group: u64,
    /// Groups one device belongs to.
    pub groups_per_device: u64,
    /// Devices in one call adding devices to or removing them from a group.
    pub group_batch_max: usize,
}

impl RegistryLimits {
    /// Products per account (platform default).
    pub const PRODUCTS_PER_ACCOUNT: u64 = 1_000;
    /// Devices per product (platform default).
    pub const DEVICES_PER_PRODUCT: u64 = 500_000;
    /// Devices per account (platform default).
    pub const DEVICES_PER_ACCOUNT: u64 = 10_000_000;
    /// Tags per product, device or group (platform default).
    pub const TAGS_PER_OBJECT: u64 = 100;
    /// Topic categories per product (platform default).
    pub const TOPIC_CATEGORIES_PER_PRODUCT: u64 = 50;
    /// Names per batch registration.
    pub const BATCH_REGISTER_MAX: usize = 10_000;
    /// Largest page size of a listing.
    pub const PAGE_SIZE_MAX: u32 = 200;
    /// Device groups per account, parents and children (platform default).
    pub const GROUPS_PER_ACCOUNT: u64 = 1_000;
    /// Levels of nested groups (platform default).
    pub const GROUP_DEPTH: u64 = 3;
    /// Devices in one group (platform default).
    pub const DEVICES_PER_GROUP: u64 = 20_000;
    /// Groups a device belongs to (platform default).
    pub const GROUPS_PER_DEVICE: u64 = 10;
    /// Devices per group membership call.
    pub const GROUP_BATCH_MAX: usize = 1_000;
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            products_per_account: Self::PRODUCTS_PER_ACCOUNT,
            devices_per_product: Self::DEVICES_PER_PRODUCT,
            devices_per_account: Self::DEVICES_PER_ACCOUNT,
            tags_per_object: Self::TAGS_PER_OBJECT,
            topic_categories_per_product: Self::TOPIC_CATEGORIES_PER_PRODUCT,
            batch_register_max: Self::BATCH_REGISTER_MAX,
            page_size_max: Self::PAGE_SIZE_MAX,
            groups_per_account: Self::GROUPS_PER_ACCOUNT,
            group_depth: Self::GROUP_DEPTH,
            devices_per_group: Self::DEVICES_PER_GROUP,
            groups_per_device: Self::GROUPS_PER_DEVICE,
            group_batch_max: Self::GROUP_BATCH_MAX,
        }
    }
}
