//! OTA (firmware upgrades) as the Alink device SDKs use it (protocol section 7.4).
//!
//! - Firmware: bytes in a [`BlobStore`] (a directory of the data dir by default),
//!   metadata (product, module, version, size, MD5, SHA-256, optional signature) in the
//!   registry ([`lode_registry::OtaStore`]).
//! - Downloads: time-limited signed URLs on the HTTP listener, resumable with `Range`
//!   ([`http`], [`url`]).
//! - Device protocol (a broker `MessageHook` installed by [`Ota::attach`]): `/ota/device/inform` records
//!   the module version (and completes upgrades, and feeds dynamic jobs),
//!   `/ota/device/progress` moves a device's state, `thing/ota/firmware/get` is answered on
//!   `_reply` with the pending upgrade; pushes go to `/ota/device/upgrade/{pk}/{dn}`.
//! - Jobs ([`job`]): static or dynamic, optionally limited to a device group
//!   ([`GroupMembers`]), with a start time, rollout rate, retries, per-device timeout,
//!   cancellation and an automatic stop on the failure rate. The scheduler keeps running
//!   jobs in memory and writes every change to the registry before acting on it, so it
//!   resumes after a restart. Devices offline when their turn comes are pushed when they
//!   come online ([`lode_device::StatusListener`]) or ask.

mod blob;
mod error;
pub mod http;
pub mod job;
mod protocol;
pub mod url;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use lode_broker::Broker;
use lode_device::DeviceAuth;
use lode_registry::{
    BoxFuture, FirmwareRecord, JobDeviceRecord, ModuleVersion, NewFirmware, NewOtaJob,
    OtaJobRecord, RegistryError, RegistryStore,
};
use md5::Digest as _;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use blob::{BlobReader, BlobStore, DirBlobStore};
pub use error::OtaError;
pub use job::{DeviceStatus, JobKind, JobSpec, JobState, JobStats, SignMethod};
pub use url::UrlSigner;

use job::{Dev, Effects, JobRun, Push};

/// Result of OTA operations.
pub type Result<T, E = OtaError> = std::result::Result<T, E>;

/// The members `(productKey, deviceName)` of a device group, for group-restricted jobs.
pub trait GroupMembers: Send + Sync + 'static {
    /// The devices of group `group_id` of account `account_id` (with its subgroups, as
    /// the group store defines it); an unknown group is an error.
    fn members<'a>(
        &'a self,
        account_id: &'a str,
        group_id: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Vec<(String, String)>, String>>;
}

/// The registry's device groups: a group of another account is unknown.
struct RegistryGroups(Arc<dyn RegistryStore>);

impl GroupMembers for RegistryGroups {
    fn members<'a>(
        &'a self,
        account_id: &'a str,
        group_id: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Vec<(String, String)>, String>> {
        Box::pin(async move {
            let groups = self.0.groups();
            match groups.get_group(group_id).await {
                Ok(Some(g)) if g.account_id == account_id => {}
                Ok(_) => return Err(format!("group {group_id} not found")),
                Err(e) => return Err(e.to_string()),
            }
            let keys = groups
                .group_device_keys(group_id, true)
                .await
                .map_err(|e| e.to_string())?;
            Ok(keys
                .into_iter()
                .map(|k| (k.product_key, k.device_name))
                .collect())
        })
    }
}

/// Settings of the OTA service.
#[derive(Debug, Clone)]
pub struct OtaConfig {
    /// Scheme, host and port devices download from (`http://host:port`), no trailing `/`.
    pub base_url: String,
    /// How long a download URL stays valid.
    pub url_ttl: Duration,
    /// How often the scheduler looks at running jobs.
    pub tick: Duration,
    /// Largest firmware accepted.
    pub max_firmware_bytes: usize,
    /// Devices in one static job.
    pub max_job_devices: usize,
}

impl OtaConfig {
    /// Defaults with downloads at `base_url`.
    pub fn new(base_url: impl Into<String>) -> OtaConfig {
        OtaConfig {
            base_url: base_url.into(),
            url_ttl: Duration::from_secs(24 * 3600),
            tick: Duration::from_millis(500),
            max_firmware_bytes: 64 * 1024 * 1024,
            max_job_devices: 100_000,
        }
    }
}

/// Metadata given with an upload.
#[derive(Debug, Clone, Default)]
pub struct FirmwareUpload {
    pub product_key: String,
    /// `default` when absent.
    pub module: Option<String>,
    pub version: String,
    pub signature: Option<String>,
    pub sign_method: Option<String>,
    pub description: Option<String>,
}

/// A firmware package as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareView {
    pub id: String,
    pub product_key: String,
    pub module: String,
    pub version: String,
    pub size: u64,
    pub md5: String,
    pub sha256: String,
    pub signature: Option<String>,
    pub sign_method: Option<String>,
    pub description: Option<String>,
    /// Ms since the Unix epoch.
    pub created_at: i64,
}

impl From<FirmwareRecord> for FirmwareView {
    fn from(f: FirmwareRecord) -> FirmwareView {
        FirmwareView {
            id: f.id,
            product_key: f.product_key,
            module: f.module,
            version: f.version,
            size: f.size,
            md5: f.md5,
            sha256: f.sha256,
            signature: f.signature,
            sign_method: f.sign_method,
            description: f.description,
            created_at: f.created_at.timestamp_millis(),
        }
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub product_key: String,
    pub firmware_id: String,
    pub state: JobState,
    pub reason: Option<String>,
    pub spec: JobSpec,
    pub stats: JobStats,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One device of a job as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDeviceView {
    pub product_key: String,
    pub device_name: String,
    pub status: String,
    pub attempts: u32,
    pub step: Option<i32>,
    pub detail: Option<String>,
    pub pushed_at: Option<i64>,
    pub updated_at: i64,
}

impl From<JobDeviceRecord> for JobDeviceView {
    fn from(r: JobDeviceRecord) -> JobDeviceView {
        JobDeviceView {
            product_key: r.product_key,
            device_name: r.device_name,
            status: r.status,
            attempts: r.attempts,
            step: r.step,
            detail: r.detail,
            pushed_at: r.pushed_at.map(|t| t.timestamp_millis()),
            updated_at: r.updated_at.timestamp_millis(),
        }
    }
}

/// A module version a device reported, as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleVersionView {
    pub module: String,
    pub version: String,
    pub reported_at: i64,
}

impl From<ModuleVersion> for ModuleVersionView {
    fn from(m: ModuleVersion) -> ModuleVersionView {
        ModuleVersionView {
            module: m.module,
            version: m.version,
            reported_at: m.reported_at.timestamp_millis(),
        }
    }
}

/// Download counters.
#[derive(Debug, Default)]
pub struct DownloadStats {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl DownloadStats {
    pub(crate) fn download_started(&self, len: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
    }

    /// Downloads answered and bytes they were to carry.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

pub(crate) struct Inner {
    pub(crate) registry: Arc<dyn RegistryStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) signer: UrlSigner,
    pub(crate) config: OtaConfig,
    pub(crate) stats: DownloadStats,
    /// The broker and the device sign-in, from `attach` until `shutdown` (which breaks the
    /// reference cycle through the hook and the status listener).
    links: RwLock<Option<(Broker, Arc<DeviceAuth>)>>,
    groups: RwLock<Option<Arc<dyn GroupMembers>>>,
    jobs: Mutex<BTreeMap<String, JobRun>>,
    /// Serializes the application of effects, so rows reach the registry in order.
    apply: tokio::sync::Mutex<()>,
    message_id: AtomicU64,
    stop: CancellationToken,
}

/// The OTA service; cheap to clone.
#[derive(Clone)]
pub struct Ota {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Ota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ota")
            .field("base_url", &self.inner.config.base_url)
            .finish_non_exhaustive()
    }
}

fn hex_digests(bytes: &[u8]) -> (String, String) {
    (
        hex::encode(md5::Md5::digest(bytes)),
        hex::encode(sha2::Sha256::digest(bytes)),
    )
}

impl Ota {
    /// Loads the active jobs from the registry and starts the scheduler. Group-restricted
    /// jobs take their devices from the registry's groups (with subgroups) unless
    /// [`Ota::set_group_members`] says otherwise.
    pub async fn start(
        registry: Arc<dyn RegistryStore>,
        blobs: Arc<dyn BlobStore>,
        signer: UrlSigner,
        config: OtaConfig,
    ) -> Result<Ota> {
        let ota = Ota {
            inner: Arc::new(Inner {
                groups: RwLock::new(Some(Arc::new(RegistryGroups(registry.clone())))),
                registry,
                blobs,
                signer,
                config,
                stats: DownloadStats::default(),
                links: RwLock::new(None),
                jobs: Mutex::new(BTreeMap::new()),
                apply: tokio::sync::Mutex::new(()),
                message_id: AtomicU64::new(
                    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(1),
                ),
                stop: CancellationToken::new(),
            }),
        };
        ota.restore().await?;
        let weak = Arc::downgrade(&ota.inner);
        let stop = ota.inner.stop.clone();
        let tick = ota.inner.config.tick;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { break };
                Ota { inner }.tick().await;
            }
        });
        Ok(ota)
    }

    /// Connects the service to the broker (pushes, the device hook) and to the device
    /// sign-in (who is online, status changes).
    pub fn attach(&self, broker: Broker, devices: Arc<DeviceAuth>) {
        *self.inner.links.write() = Some((broker.clone(), devices.clone()));
        broker.add_message_hook(Arc::new(protocol::Hook(self.clone())));
        devices.add_status_listener(Arc::new(protocol::Status(self.clone())));
    }

    /// Sets where group members come from (group-restricted jobs need it).
    pub fn set_group_members(&self, groups: Arc<dyn GroupMembers>) {
        *self.inner.groups.write() = Some(groups);
    }

    /// Stops the scheduler and lets go of the broker and the device sign-in.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
        *self.inner.links.write() = None;
    }

    /// The broker, while attached.
    pub(crate) fn broker(&self) -> Option<Broker> {
        self.inner.links.read().as_ref().map(|(b, _)| b.clone())
    }

    /// Download counters since the start.
    pub fn download_stats(&self) -> &DownloadStats {
        &self.inner.stats
    }

    /// A download URL of a firmware, valid for the configured time.
    pub fn download_url(&self, firmware_id: &str) -> String {
        let expires = Utc::now().timestamp()
            + i64::try_from(self.inner.config.url_ttl.as_secs()).unwrap_or(86_400);
        format!(
            "{}{}",
            self.inner.config.base_url,
            self.inner.signer.path_and_query(firmware_id, expires)
        )
    }

    fn online(&self, pk: &str, dn: &str) -> bool {
        self.inner
            .links
            .read()
            .as_ref()
            .is_some_and(|(_, d)| d.online(pk, dn).is_some())
    }

    async fn restore(&self) -> Result<()> {
        let ota = self.inner.registry.ota();
        let records = ota
            .jobs_in_states(&[JobState::Scheduled.as_str(), JobState::Running.as_str()])
            .await?;
        let now = Utc::now();
        for record in records {
            let spec: JobSpec = match serde_json::from_str(&record.settings) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(job = %record.id, error = %e, "unreadable OTA job settings");
                    continue;
                }
            };
            let Some(firmware) = ota.get_firmware(&record.firmware_id).await? else {
                continue;
            };
            let rows = ota.list_job_devices(&record.id).await?;
            let state = JobState::parse(&record.state).unwrap_or(JobState::Running);
            let devices: BTreeMap<String, Dev> = rows
                .iter()
                .map(|r| (r.device_name.clone(), Dev::from_record(r)))
                .collect();
            let run = JobRun {
                id: record.id.clone(),
                account_id: record.account_id,
                product_key: record.product_key,
                spec,
                firmware,
                state,
                started_ms: (state == JobState::Running).then(|| now.timestamp_millis()),
                dispatched: 0,
                devices,
            };
            self.inner.jobs.lock().insert(record.id, run);
        }
        Ok(())
    }

    /// Stores rows and job states, then sends the pushes.
    async fn apply(&self, fx: Effects) {
        if fx.rows.is_empty() && fx.states.is_empty() && fx.pushes.is_empty() {
            return;
        }
        let _order = self.inner.apply.lock().await;
        let ota = self.inner.registry.ota();
        for chunk in fx.rows.chunks(500) {
            if let Err(error) = ota.put_job_devices(chunk).await {
                tracing::warn!(%error, "storing OTA device states failed");
            }
        }
        for (id, state, reason) in &fx.states {
            if let Err(error) = ota
                .set_job_state(id, state.as_str(), reason.as_deref())
                .await
            {
                tracing::warn!(%error, job = %id, "storing an OTA job state failed");
            }
            if !state.is_active() {
                self.inner.jobs.lock().remove(id);
            }
        }
        drop(_order);
        for push in fx.pushes {
            self.push(&push).await;
        }
    }

    async fn push(&self, push: &Push) {
        let Some(broker) = self.broker() else {
            return;
        };
        let firmware = match self
            .inner
            .registry
            .ota()
            .get_firmware(&push.firmware_id)
            .await
        {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "firmware lookup for a push failed");
                return;
            }
        };
        let sign_method = self.sign_method_for(&push.product_key, &push.device_name, &firmware.id);
        let id = self.inner.message_id.fetch_add(1, Ordering::Relaxed);
        let payload = protocol::upgrade_message(
            id,
            &protocol::upgrade_data(&firmware, &self.download_url(&firmware.id), sign_method),
        );
        let topic = format!(
            "/ota/device/upgrade/{}/{}",
            push.product_key, push.device_name
        );
        if let Err(error) = broker
            .publish(&topic, payload, lode_mqtt::QoS::AtLeastOnce, false)
            .await
        {
            tracing::warn!(%error, %topic, "OTA push failed");
        }
    }

    fn sign_method_for(&self, pk: &str, dn: &str, firmware_id: &str) -> SignMethod {
        self.inner
            .jobs
            .lock()
            .values()
            .find(|j| {
                j.product_key == pk && j.firmware.id == firmware_id && j.devices.contains_key(dn)
            })
            .map_or(SignMethod::Md5, |j| j.spec.sign_method)
    }

    async fn tick(&self) {
        let now = Utc::now();
        let mut fx = Effects::default();
        {
            let mut jobs = self.inner.jobs.lock();
            let online = |pk: &str, dn: &str| self.online(pk, dn);
            for run in jobs.values_mut() {
                run.tick(now, &online, &mut fx);
            }
        }
        self.apply(fx).await;
    }

    /// A device came online: pending pushes of running jobs go out.
    pub(crate) async fn device_online(&self, pk: &str, dn: &str) {
        let now = Utc::now();
        let mut fx = Effects::default();
        for run in self.inner.jobs.lock().values_mut() {
            if run.product_key == pk {
                run.device_available(dn, now, &mut fx);
            }
        }
        self.apply(fx).await;
    }

    /// A device reported a module version.
    pub(crate) async fn version_reported(
        &self,
        pk: &str,
        dn: &str,
        module: &str,
        version: &str,
    ) -> Result<()> {
        self.inner
            .registry
            .ota()
            .report_module_version(pk, dn, module, version)
            .await?;
        // Dynamic jobs this device may join, and whether their group admits it.
        let candidates: Vec<(String, String, Option<String>)> = self
            .inner
            .jobs
            .lock()
            .values()
            .filter(|j| {
                j.product_key == pk
                    && j.firmware.module == module
                    && j.spec.kind == JobKind::Dynamic
                    && j.state.is_active()
                    && !j.devices.contains_key(dn)
                    && j.spec.source_versions.iter().any(|v| v == version)
            })
            .map(|j| (j.id.clone(), j.account_id.clone(), j.spec.group_id.clone()))
            .collect();
        let mut admitted = Vec::new();
        for (job, account, group) in candidates {
            let ok = match group {
                None => true,
                Some(g) => self
                    .group_members(&account, &g)
                    .await
                    .map(|m| m.iter().any(|(p, d)| p == pk && d == dn))
                    .unwrap_or(false),
            };
            if ok {
                admitted.push(job);
            }
        }
        let now = Utc::now();
        let mut fx = Effects::default();
        for run in self.inner.jobs.lock().values_mut() {
            if run.product_key != pk || run.firmware.module != module {
                continue;
            }
            if admitted.contains(&run.id) {
                run.add_device(dn, now, &mut fx);
            }
            run.version_reported(dn, version, now, &mut fx);
            run.check(now, &mut fx);
        }
        self.apply(fx).await;
        Ok(())
    }

    /// A device reported progress.
    pub(crate) async fn progress(
        &self,
        pk: &str,
        dn: &str,
        module: Option<&str>,
        step: i32,
        desc: Option<String>,
    ) {
        let now = Utc::now();
        let online = self.online(pk, dn);
        let mut fx = Effects::default();
        for run in self.inner.jobs.lock().values_mut() {
            if run.product_key != pk || module.is_some_and(|m| m != run.firmware.module) {
                continue;
            }
            run.progress(dn, step, desc.clone(), online, now, &mut fx);
            run.check(now, &mut fx);
        }
        self.apply(fx).await;
    }

    /// The upgrade pending for a device (firmware/get), pushing to it counts as an attempt
    /// when it was waiting offline.
    pub(crate) async fn pending_for(
        &self,
        pk: &str,
        dn: &str,
        module: Option<&str>,
    ) -> Option<(FirmwareRecord, SignMethod)> {
        let now = Utc::now();
        let mut fx = Effects::default();
        let found = {
            let mut jobs = self.inner.jobs.lock();
            let run = jobs.values_mut().find(|j| {
                j.product_key == pk
                    && j.state == JobState::Running
                    && module.is_none_or(|m| m == j.firmware.module)
                    && j.devices
                        .get(dn)
                        .is_some_and(|d| d.status.is_pushed() || d.status == DeviceStatus::Offline)
            });
            run.map(|run| {
                if run
                    .devices
                    .get(dn)
                    .is_some_and(|d| d.status == DeviceStatus::Offline)
                {
                    run.device_available(dn, now, &mut fx);
                    // The answer carries the upgrade; no separate push.
                    fx.pushes.clear();
                }
                (run.firmware.clone(), run.spec.sign_method)
            })
        };
        self.apply(fx).await;
        found
    }

    async fn group_members(&self, account: &str, group: &str) -> Result<Vec<(String, String)>> {
        let groups = self.inner.groups.read().clone();
        let Some(groups) = groups else {
            return Err(OtaError::Groups("device groups are not available".into()));
        };
        groups
            .members(account, group)
            .await
            .map_err(OtaError::Groups)
    }

    // --- firmware

    async fn owned_product(&self, account_id: &str, product_key: &str) -> Result<()> {
        match self.inner.registry.get_product(product_key).await? {
            Some(p) if p.account_id == account_id => Ok(()),
            _ => Err(RegistryError::ProductNotFound(product_key.to_owned()).into()),
        }
    }

    /// Stores a firmware package: digests computed here, metadata in the registry, bytes
    /// in the blob store.
    pub async fn upload_firmware(
        &self,
        account_id: &str,
        upload: FirmwareUpload,
        bytes: Bytes,
    ) -> Result<FirmwareView> {
        if bytes.is_empty() {
            return Err(OtaError::invalid("body", "the firmware is empty"));
        }
        if bytes.len() > self.inner.config.max_firmware_bytes {
            return Err(OtaError::invalid(
                "body",
                format!("over {} bytes", self.inner.config.max_firmware_bytes),
            ));
        }
        let module = upload.module.unwrap_or_else(|| "default".to_owned());
        check_name("version", &upload.version)?;
        check_name("module", &module)?;
        self.owned_product(account_id, &upload.product_key).await?;
        let (md5, sha256) = {
            let b = bytes.clone();
            tokio::task::spawn_blocking(move || hex_digests(&b))
                .await
                .map_err(|e| OtaError::Storage(std::io::Error::other(e)))?
        };
        let record = self
            .inner
            .registry
            .ota()
            .create_firmware(
                account_id,
                NewFirmware {
                    product_key: upload.product_key,
                    module,
                    version: upload.version,
                    size: bytes.len() as u64,
                    md5,
                    sha256,
                    signature: upload.signature,
                    sign_method: upload.sign_method,
                    description: upload.description,
                },
            )
            .await?;
        if let Err(e) = self.inner.blobs.put(&record.id, bytes).await {
            let _ = self.inner.registry.ota().delete_firmware(&record.id).await;
            return Err(e.into());
        }
        Ok(record.into())
    }

    async fn owned_firmware(&self, account_id: &str, id: &str) -> Result<FirmwareRecord> {
        match self.inner.registry.ota().get_firmware(id).await? {
            Some(f) if f.account_id == account_id => Ok(f),
            _ => Err(OtaError::FirmwareNotFound(id.to_owned())),
        }
    }

    /// One firmware of the account.
    pub async fn get_firmware(&self, account_id: &str, id: &str) -> Result<FirmwareView> {
        Ok(self.owned_firmware(account_id, id).await?.into())
    }

    /// The firmware of the account, optionally of one product.
    pub async fn list_firmware(
        &self,
        account_id: &str,
        product_key: Option<&str>,
    ) -> Result<Vec<FirmwareView>> {
        let list = self
            .inner
            .registry
            .ota()
            .list_firmware(account_id, product_key)
            .await?;
        Ok(list.into_iter().map(FirmwareView::from).collect())
    }

    /// Deletes a firmware no job uses, with its bytes.
    pub async fn delete_firmware(&self, account_id: &str, id: &str) -> Result<()> {
        self.owned_firmware(account_id, id).await?;
        if !self.inner.registry.ota().delete_firmware(id).await? {
            return Err(OtaError::FirmwareNotFound(id.to_owned()));
        }
        self.inner.blobs.delete(id).await?;
        Ok(())
    }

    /// A signed download URL of one firmware of the account.
    pub async fn firmware_url(&self, account_id: &str, id: &str) -> Result<String> {
        self.owned_firmware(account_id, id).await?;
        Ok(self.download_url(id))
    }

    // --- jobs

    /// Creates a job; it starts at its start time (now by default).
    pub async fn create_job(&self, account_id: &str, spec: JobSpec) -> Result<JobView> {
        let firmware = self.owned_firmware(account_id, &spec.firmware_id).await?;
        if let Some(t) = spec.failure_threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(OtaError::invalid("failureThreshold", "not within 0…1"));
        }
        if spec.rate_per_minute == Some(0) {
            return Err(OtaError::invalid("ratePerMinute", "must be positive"));
        }
        if spec.timeout_secs == 0 {
            return Err(OtaError::invalid("timeoutSecs", "must be positive"));
        }
        let pk = firmware.product_key.clone();
        let members = match &spec.group_id {
            Some(g) => Some(self.group_members(account_id, g).await?),
            None => None,
        };
        let in_group = |dn: &str| {
            members
                .as_ref()
                .is_none_or(|m| m.iter().any(|(p, d)| *p == pk && d == dn))
        };
        let mut names: Vec<String> = match spec.kind {
            JobKind::Static => {
                if spec.device_names.is_empty() {
                    return Err(OtaError::invalid(
                        "deviceNames",
                        "a static job needs devices",
                    ));
                }
                if !spec.source_versions.is_empty() {
                    return Err(OtaError::invalid(
                        "sourceVersions",
                        "only dynamic jobs select devices by version",
                    ));
                }
                if spec.device_names.len() > self.inner.config.max_job_devices {
                    return Err(OtaError::invalid(
                        "deviceNames",
                        format!("over {} devices", self.inner.config.max_job_devices),
                    ));
                }
                for dn in &spec.device_names {
                    if self.inner.registry.get_device(&pk, dn).await?.is_none() {
                        return Err(RegistryError::DeviceNotFound(format!("{pk}/{dn}")).into());
                    }
                }
                spec.device_names.clone()
            }
            JobKind::Dynamic => {
                if spec.source_versions.is_empty() {
                    return Err(OtaError::invalid(
                        "sourceVersions",
                        "a dynamic job needs source versions",
                    ));
                }
                if !spec.device_names.is_empty() {
                    return Err(OtaError::invalid(
                        "deviceNames",
                        "a dynamic job selects its devices by version",
                    ));
                }
                self.inner
                    .registry
                    .ota()
                    .devices_at_versions(&pk, &firmware.module, &spec.source_versions)
                    .await?
                    .into_iter()
                    .map(|m| m.device_name)
                    .collect()
            }
        };
        names.retain(|dn| in_group(dn));
        names.sort();
        names.dedup();
        let settings =
            serde_json::to_string(&spec).map_err(|e| OtaError::invalid("spec", e.to_string()))?;
        let record = self
            .inner
            .registry
            .ota()
            .create_job(
                account_id,
                NewOtaJob {
                    firmware_id: firmware.id.clone(),
                    product_key: pk.clone(),
                    settings,
                    state: JobState::Scheduled.as_str().to_owned(),
                },
            )
            .await?;
        let now = Utc::now();
        let mut run = JobRun {
            id: record.id.clone(),
            account_id: account_id.to_owned(),
            product_key: pk,
            spec,
            firmware,
            state: JobState::Scheduled,
            started_ms: None,
            dispatched: 0,
            devices: BTreeMap::new(),
        };
        let mut fx = Effects::default();
        for dn in &names {
            run.add_device(dn, now, &mut fx);
        }
        self.inner.registry.ota().put_job_devices(&fx.rows).await?;
        let view = view_of(&record, &run);
        self.inner.jobs.lock().insert(record.id.clone(), run);
        self.tick().await;
        Ok(view)
    }

    async fn owned_job(&self, account_id: &str, id: &str) -> Result<OtaJobRecord> {
        match self.inner.registry.ota().get_job(id).await? {
            Some(j) if j.account_id == account_id => Ok(j),
            _ => Err(OtaError::JobNotFound(id.to_owned())),
        }
    }

    async fn view(&self, record: OtaJobRecord) -> Result<JobView> {
        if let Some(run) = self.inner.jobs.lock().get(&record.id) {
            return Ok(view_of(&record, run));
        }
        let spec: JobSpec = serde_json::from_str(&record.settings)
            .map_err(|e| RegistryError::Corrupt(format!("job settings: {e}")))?;
        let mut stats = JobStats::default();
        for row in self
            .inner
            .registry
            .ota()
            .list_job_devices(&record.id)
            .await?
        {
            stats.add(DeviceStatus::parse(&row.status).unwrap_or(DeviceStatus::Queued));
        }
        Ok(JobView {
            state: JobState::parse(&record.state).unwrap_or(JobState::Canceled),
            id: record.id,
            product_key: record.product_key,
            firmware_id: record.firmware_id,
            reason: record.reason,
            spec,
            stats,
            created_at: record.created_at.timestamp_millis(),
            updated_at: record.updated_at.timestamp_millis(),
        })
    }

    /// One job with its statistics.
    pub async fn get_job(&self, account_id: &str, id: &str) -> Result<JobView> {
        let record = self.owned_job(account_id, id).await?;
        self.view(record).await
    }

    /// The jobs of the account.
    pub async fn list_jobs(&self, account_id: &str) -> Result<Vec<JobView>> {
        let mut out = Vec::new();
        for record in self.inner.registry.ota().list_jobs(account_id).await? {
            out.push(self.view(record).await?);
        }
        Ok(out)
    }

    /// Cancels a scheduled or running job.
    pub async fn cancel_job(&self, account_id: &str, id: &str) -> Result<JobView> {
        let record = self.owned_job(account_id, id).await?;
        let mut fx = Effects::default();
        {
            let mut jobs = self.inner.jobs.lock();
            match jobs.get_mut(id) {
                Some(run) if run.state.is_active() => {
                    run.finish(
                        JobState::Canceled,
                        Some("canceled".into()),
                        Utc::now(),
                        &mut fx,
                    );
                }
                _ => {
                    return Err(OtaError::InvalidJobState {
                        id: id.to_owned(),
                        state: record.state,
                        action: "cancel",
                    });
                }
            }
        }
        self.apply(fx).await;
        self.get_job(account_id, id).await
    }

    /// The devices of a job with their state.
    pub async fn job_devices(&self, account_id: &str, id: &str) -> Result<Vec<JobDeviceView>> {
        self.owned_job(account_id, id).await?;
        let rows = self.inner.registry.ota().list_job_devices(id).await?;
        Ok(rows.into_iter().map(JobDeviceView::from).collect())
    }

    /// The module versions a device reported.
    pub async fn module_versions(
        &self,
        account_id: &str,
        product_key: &str,
        device_name: &str,
    ) -> Result<Vec<ModuleVersionView>> {
        self.owned_product(account_id, product_key).await?;
        let list = self
            .inner
            .registry
            .ota()
            .module_versions(product_key, device_name)
            .await?;
        Ok(list.into_iter().map(ModuleVersionView::from).collect())
    }
}

fn view_of(record: &OtaJobRecord, run: &JobRun) -> JobView {
    JobView {
        id: record.id.clone(),
        product_key: run.product_key.clone(),
        firmware_id: run.firmware.id.clone(),
        state: run.state,
        reason: record.reason.clone(),
        spec: run.spec.clone(),
        stats: run.stats(),
        created_at: record.created_at.timestamp_millis(),
        updated_at: record.updated_at.timestamp_millis(),
    }
}

/// Versions and modules: 1…64 printable characters without spaces or quotes.
fn check_name(field: &'static str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 64 {
        return Err(OtaError::invalid(field, "must have 1 to 64 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(OtaError::invalid(
            field,
            "only printable ASCII without quotes",
        ));
    }
    Ok(())
}
