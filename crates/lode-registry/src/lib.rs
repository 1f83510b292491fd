//! Device registry: accounts, access keys, products, devices, topic
//! categories and the device lifecycle log, behind one storage trait.
//!
//! Two backends implement [`RegistryStore`] with the same SQL (written with
//! `$1` placeholders, run through sqlx without its compile-time macros):
//! [`SqliteRegistry`], the default, an embedded file in the data directory,
//! and [`PgRegistry`] for deployments sharing state in PostgreSQL. Both pass
//! one conformance suite (`registry_conformance_tests!`, feature `testsuite`).
//!
//! The trait is object safe (methods return boxed futures, as `lode-store`'s
//! `BrokerStore` does) because the backend is chosen at run time from the
//! configuration and shared as `Arc<dyn RegistryStore>` by the management API
//! and the broker's authentication hook; one allocation per call is noise
//! next to a database round trip.
//!
//! Limits ([`RegistryLimits`]) are enforced inside the transaction that would
//! break them, with per-product and per-account counters kept in the same
//! transaction, so concurrent callers cannot overshoot.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

mod backend;
mod devconfig;
mod error;
mod groups;
pub mod ids;
mod limits;
mod model;
mod ota;
mod postgres;
mod rules;
mod shadow;
mod sqlite;
#[cfg(feature = "testsuite")]
pub mod testsuite;
mod topology;

pub use devconfig::{ConfigStore, ConfigVersion};
pub use error::{RegistryError, Result};
pub use groups::{
    DeviceGroup, DeviceKeyRef, GroupListing, GroupStore, GroupUpdate, MembershipItem, NewGroup,
};
pub use limits::RegistryLimits;
pub use model::{
    AccessKey, Account, AuthType, BatchItem, DEFAULT_TOPIC_CATEGORIES, DataFormat, Device,
    DeviceEvent, DeviceEventKind, DeviceFilter, DeviceState, DocumentKind, NewDevice, NewProduct,
    NewTopicCategory, NodeType, Page, PageRequest, Product, ProductDocument, ProductUpdate, Tags,
    TopicCategory, TopicPermission,
};
pub use ota::{
    FirmwareRecord, JobDeviceRecord, ModuleVersion, NewFirmware, NewOtaJob, OtaJobRecord, OtaStore,
};
pub use postgres::PgRegistry;
pub use rules::{DestinationRecord, NewDestination, NewRule, RuleRecord, RuleStore};
pub use shadow::{ShadowRecord, ShadowStore, ShadowWrite};
pub use sqlite::SqliteRegistry;
pub use sqlx::postgres::PgConnectOptions;
pub use topology::{SUB_DEVICES_PER_GATEWAY, TopologyLink, TopologyStore};

/// A boxed future, so that [`RegistryStore`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Storage of the device registry.
///
/// Lookups (`get_*`) return `Ok(None)` for a missing object; every other
/// operation on a missing object fails with the matching `*NotFound` error.
pub trait RegistryStore: Send + Sync + 'static {
    /// Short name of the backend ("sqlite", "postgres"), for logs and tests.
    fn kind(&self) -> &'static str;
    /// The limits this store enforces.
    fn limits(&self) -> RegistryLimits;

    // --- accounts
    fn create_account<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Account>>;
    fn get_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Account>>>;
    fn list_accounts(&self) -> BoxFuture<'_, Result<Vec<Account>>>;
    /// Deletes an account without products, with its access keys.
    fn delete_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;

    // --- access keys
    fn create_access_key<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<AccessKey>>;
    /// Creates an access key with a given id and secret (the operator's bootstrap
    /// key); an existing id is `InvalidParameter`.
    fn import_access_key<'a>(
        &'a self,
        account_id: &'a str,
        id: &'a str,
        secret: &'a str,
    ) -> BoxFuture<'a, Result<AccessKey>>;
    /// Hot path of API signature checks: a primary-key lookup.
    fn get_access_key<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AccessKey>>>;
    fn list_access_keys<'a>(&'a self, account_id: &'a str)
    -> BoxFuture<'a, Result<Vec<AccessKey>>>;
    fn set_access_key_enabled<'a>(
        &'a self,
        id: &'a str,
        enabled: bool,
    ) -> BoxFuture<'a, Result<AccessKey>>;
    fn delete_access_key<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;

    // --- products
    /// Creates a product with a new ProductKey and ProductSecret and the three
    /// default topic categories.
    fn create_product<'a>(
        &'a self,
        account_id: &'a str,
        product: NewProduct,
    ) -> BoxFuture<'a, Result<Product>>;
    fn get_product<'a>(&'a self, product_key: &'a str) -> BoxFuture<'a, Result<Option<Product>>>;
    /// Products of an account ordered by ProductKey.
    fn list_products<'a>(
        &'a self,
        account_id: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Product>>>;
    fn update_product<'a>(
        &'a self,
        product_key: &'a str,
        update: ProductUpdate,
    ) -> BoxFuture<'a, Result<Product>>;
    /// Deletes a product without devices (its topic categories and tags go too).
    fn delete_product<'a>(&'a self, product_key: &'a str) -> BoxFuture<'a, Result<()>>;
    fn count_products<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<u64>>;
    /// The draft and published versions of a product's document, `None` when the
    /// product never had one.
    fn get_document<'a>(
        &'a self,
        product_key: &'a str,
        kind: DocumentKind,
    ) -> BoxFuture<'a, Result<Option<ProductDocument>>>;
    /// Replaces the draft of a product's document (the published version stays).
    fn save_draft<'a>(
        &'a self,
        product_key: &'a str,
        kind: DocumentKind,
        text: &'a str,
    ) -> BoxFuture<'a, Result<ProductDocument>>;
    /// Publishes the current draft, which stays as the draft. Fails with
    /// `NothingToPublish` when there is no draft.
    fn publish_draft<'a>(
        &'a self,
        product_key: &'a str,
        kind: DocumentKind,
    ) -> BoxFuture<'a, Result<ProductDocument>>;
    /// Adds or replaces tags; returns all tags of the product.
    fn set_product_tags<'a>(
        &'a self,
        product_key: &'a str,
        tags: Tags,
    ) -> BoxFuture<'a, Result<Tags>>;
    /// Removes tags by key (missing keys are ignored); returns the rest.
    fn remove_product_tags<'a>(
        &'a self,
        product_key: &'a str,
        keys: Vec<String>,
    ) -> BoxFuture<'a, Result<Tags>>;
    /// Products of an account having tag `key` (with `value`, if given).
    fn find_products_by_tag<'a>(
        &'a self,
        account_id: &'a str,
        key: &'a str,
        value: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Product>>>;

    // --- topic categories
    fn create_topic_category<'a>(
        &'a self,
        product_key: &'a str,
        category: NewTopicCategory,
    ) -> BoxFuture<'a, Result<TopicCategory>>;
    fn list_topic_categories<'a>(
        &'a self,
        product_key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<TopicCategory>>>;
    fn update_topic_category<'a>(
        &'a self,
        product_key: &'a str,
        id: i64,
        category: NewTopicCategory,
    ) -> BoxFuture<'a, Result<TopicCategory>>;
    fn delete_topic_category<'a>(
        &'a self,
        product_key: &'a str,
        id: i64,
    ) -> BoxFuture<'a, Result<()>>;

    // --- devices
    fn create_device<'a>(
        &'a self,
        product_key: &'a str,
        device: NewDevice,
    ) -> BoxFuture<'a, Result<Device>>;
    /// Registers up to `limits().batch_register_max` names in one transaction.
    /// Invalid and already existing names (also repeated ones) get their own
    /// error; the others are created. A quota violation fails the whole call
    /// and creates nothing.
    fn register_devices_batch<'a>(
        &'a self,
        product_key: &'a str,
        names: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<BatchItem>>>;
    /// Hot path at sign-in: one indexed single-row lookup.
    fn get_device<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Device>>>;
    /// Hot path: a primary-key lookup.
    fn get_device_by_iot_id<'a>(&'a self, iot_id: &'a str)
    -> BoxFuture<'a, Result<Option<Device>>>;
    /// Devices of a product ordered by DeviceName.
    fn list_devices<'a>(
        &'a self,
        product_key: &'a str,
        filter: DeviceFilter,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Device>>>;
    /// Records a connect (`Online`) or disconnect (`Offline`). The first
    /// connect also activates the device. A disabled device is refused with
    /// `DeviceDisabled`; other states are `InvalidParameter`.
    fn set_device_state<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
        state: DeviceState,
        at: DateTime<Utc>,
        ip: Option<&'a str>,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Device>>;
    /// Disables (refused at connect) or enables a device; idempotent.
    fn set_device_enabled<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
        enabled: bool,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Device>>;
    /// Marks a pre-registered device as having obtained its secret by dynamic
    /// registration. Only once, and only before its first connect: otherwise
    /// `DeviceAlreadyRegistered`.
    fn mark_dynamically_registered<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> BoxFuture<'a, Result<Device>>;
    /// Gives the device a new DeviceSecret.
    fn reset_device_secret<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> BoxFuture<'a, Result<Device>>;
    fn set_device_nickname<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
        nickname: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Device>>;
    fn set_device_firmware_version<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Device>>;
    /// Deletes a device with its tags; its lifecycle log stays.
    fn delete_device<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    fn set_device_tags<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
        tags: Tags,
    ) -> BoxFuture<'a, Result<Tags>>;
    fn remove_device_tags<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
        keys: Vec<String>,
    ) -> BoxFuture<'a, Result<Tags>>;
    /// Devices of all products of an account having tag `key` (with
    /// `value`, if given), ordered by ProductKey and DeviceName.
    fn find_devices_by_tag<'a>(
        &'a self,
        account_id: &'a str,
        key: &'a str,
        value: Option<&'a str>,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Device>>>;
    fn count_devices<'a>(&'a self, product_key: &'a str) -> BoxFuture<'a, Result<u64>>;
    fn count_account_devices<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<u64>>;

    // --- lifecycle log
    /// A device's lifecycle records, newest first (also after deletion).
    fn list_device_events<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<DeviceEvent>>>;

    // --- rules engine
    /// Rules and forwarding destinations, in the same database.
    fn rules(&self) -> &dyn RuleStore;

    /// Storage of device groups (with subgroups) and tags on products, devices and groups.
    fn groups(&self) -> &dyn GroupStore;

    /// Storage of device shadows: one JSON document and version per device.
    fn shadows(&self) -> &dyn ShadowStore;

    /// Storage of OTA: firmware packages, upgrade jobs and per-device upgrade state, reported module versions.
    fn ota(&self) -> &dyn OtaStore;

    /// Storage of remote configuration: versioned JSON configuration files of products.
    fn configs(&self) -> &dyn ConfigStore;

    /// Storage of gateways and sub-devices: the topology of each gateway.
    fn topology(&self) -> &dyn TopologyStore;
}
