//! Upgrade jobs: their settings, states, and the per-device state machine.
//!
//! A device in a job goes `queued` → (rollout) `notified` (pushed) or `offline` (pushed
//! when it comes online or asks) → `in_progress` (progress 0…100) → `succeeded` (it
//! reported the target version on `/ota/device/inform`). A failure step (−1…−4) or a
//! timeout ends the attempt: the upgrade is pushed again while retries remain, else the
//! device is `failed`. Cancelling a job, or its automatic stop, sets every device not
//! yet finished to `canceled`. This module is pure: the service in `lib.rs` applies its
//! effects (registry writes, pushes).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lode_registry::{FirmwareRecord, JobDeviceRecord};
use serde::{Deserialize, Serialize};

/// Static (a list of devices) or dynamic (devices at some source versions, now and later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    #[default]
    Static,
    Dynamic,
}

/// The digest devices check the download against (spelled as the device SDKs expect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignMethod {
    #[default]
    Md5,
    #[serde(rename = "SHA256")]
    Sha256,
}

impl SignMethod {
    /// The spelling in the push (`Md5` / `SHA256`).
    pub fn as_str(self) -> &'static str {
        match self {
            SignMethod::Md5 => "Md5",
            SignMethod::Sha256 => "SHA256",
        }
    }
}

fn default_timeout() -> u64 {
    1800
}

fn default_min_sample() -> u32 {
    10
}

/// What a caller sets when creating a job (kept as the job's settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// The firmware to install; the job is for its product and module.
    pub firmware_id: String,
    #[serde(default)]
    pub kind: JobKind,
    /// Static jobs: the device names (of the firmware's product).
    #[serde(default)]
    pub device_names: Vec<String>,
    /// Dynamic jobs: the module versions that get the upgrade.
    #[serde(default)]
    pub source_versions: Vec<String>,
    /// Only devices of this group (its members are read when a device is added).
    #[serde(default)]
    pub group_id: Option<String>,
    /// Start time, ms since the Unix epoch; now when absent.
    #[serde(default)]
    pub start_at: Option<i64>,
    /// Devices pushed per minute (first pushes; retries and devices coming online are
    /// not held back); unlimited when absent.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// Pushes after the first one failed.
    #[serde(default)]
    pub max_retries: u32,
    /// Seconds a pushed device may stay silent before the attempt fails.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Stop the job when failed / finished devices exceeds this (0…1).
    #[serde(default)]
    pub failure_threshold: Option<f64>,
    /// Finished devices needed before the failure rate is judged.
    #[serde(default = "default_min_sample")]
    pub min_sample: u32,
    #[serde(default)]
    pub sign_method: SignMethod,
}

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its start time.
    Scheduled,
    Running,
    /// Every device finished (static jobs).
    Completed,
    Canceled,
    /// Stopped automatically: the failure rate passed the threshold.
    Stopped,
}

impl JobState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Canceled => "canceled",
            JobState::Stopped => "stopped",
        }
    }

    /// The state of a stored name.
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "scheduled" => JobState::Scheduled,
            "running" => JobState::Running,
            "completed" => JobState::Completed,
            "canceled" => JobState::Canceled,
            "stopped" => JobState::Stopped,
            _ => return None,
        })
    }

    /// Whether the scheduler still works on it.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Scheduled | JobState::Running)
    }
}

/// The state of one device in a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Not pushed yet (rollout pacing, start time).
    Queued,
    /// Due, but offline: pushed when it comes online or asks.
    Offline,
    /// Pushed, no progress yet.
    Notified,
    InProgress,
    Succeeded,
    Failed,
    Canceled,
}

impl DeviceStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Queued => "queued",
            DeviceStatus::Offline => "offline",
            DeviceStatus::Notified => "notified",
            DeviceStatus::InProgress => "in_progress",
            DeviceStatus::Succeeded => "succeeded",
            DeviceStatus::Failed => "failed",
            DeviceStatus::Canceled => "canceled",
        }
    }

    /// The status of a stored name.
    pub fn parse(s: &str) -> Option<DeviceStatus> {
        Some(match s {
            "queued" => DeviceStatus::Queued,
            "offline" => DeviceStatus::Offline,
            "notified" => DeviceStatus::Notified,
            "in_progress" => DeviceStatus::InProgress,
            "succeeded" => DeviceStatus::Succeeded,
            "failed" => DeviceStatus::Failed,
            "canceled" => DeviceStatus::Canceled,
            _ => return None,
        })
    }

    /// Succeeded, failed or canceled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeviceStatus::Succeeded | DeviceStatus::Failed | DeviceStatus::Canceled
        )
    }

    /// Pushed and not finished: progress and timeouts apply.
    pub fn is_pushed(self) -> bool {
        matches!(self, DeviceStatus::Notified | DeviceStatus::InProgress)
    }
}

/// Counts of a job's devices by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStats {
    pub total: u64,
    pub queued: u64,
    pub offline: u64,
    pub notified: u64,
    pub in_progress: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub canceled: u64,
}

impl JobStats {
    pub(crate) fn add(&mut self, status: DeviceStatus) {
        self.total += 1;
        let slot = match status {
            DeviceStatus::Queued => &mut self.queued,
            DeviceStatus::Offline => &mut self.offline,
            DeviceStatus::Notified => &mut self.notified,
            DeviceStatus::InProgress => &mut self.in_progress,
            DeviceStatus::Succeeded => &mut self.succeeded,
            DeviceStatus::Failed => &mut self.failed,
            DeviceStatus::Canceled => &mut self.canceled,
        };
        *slot += 1;
    }
}

/// One device of a running job, in memory.
#[derive(Debug, Clone)]
pub(crate) struct Dev {
    pub(crate) status: DeviceStatus,
    pub(crate) attempts: u32,
    pub(crate) step: Option<i32>,
    pub(crate) detail: Option<String>,
    pub(crate) pushed_at: Option<DateTime<Utc>>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl Dev {
    pub(crate) fn queued(now: DateTime<Utc>) -> Dev {
        Dev {
            status: DeviceStatus::Queued,
            attempts: 0,
            step: None,
            detail: None,
            pushed_at: None,
            updated_at: now,
        }
    }

    pub(crate) fn from_record(r: &JobDeviceRecord) -> Dev {
        Dev {
            status: DeviceStatus::parse(&r.status).unwrap_or(DeviceStatus::Queued),
            attempts: r.attempts,
            step: r.step,
            detail: r.detail.clone(),
            pushed_at: r.pushed_at,
            updated_at: r.updated_at,
        }
    }
}

/// A device to push the upgrade to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Push {
    pub(crate) product_key: String,
    pub(crate) device_name: String,
    pub(crate) firmware_id: String,
}

/// What a change to jobs requires: rows and job states to store, then pushes to send.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) rows: Vec<JobDeviceRecord>,
    pub(crate) states: Vec<(String, JobState, Option<String>)>,
    pub(crate) pushes: Vec<Push>,
}

/// A job the scheduler works on, in memory.
#[derive(Debug)]
pub(crate) struct JobRun {
    pub(crate) id: String,
    pub(crate) account_id: String,
    pub(crate) product_key: String,
    pub(crate) spec: JobSpec,
    pub(crate) firmware: FirmwareRecord,
    pub(crate) state: JobState,
    /// When it started running (ms), for the rollout pacing.
    pub(crate) started_ms: Option<i64>,
    /// Devices the rollout took out of the queue since `started_ms`.
    pub(crate) dispatched: u64,
    pub(crate) devices: BTreeMap<String, Dev>,
}

impl JobRun {
    fn row(&self, dn: &str, dev: &Dev) -> JobDeviceRecord {
        JobDeviceRecord {
            job_id: self.id.clone(),
            product_key: self.product_key.clone(),
            device_name: dn.to_owned(),
            status: dev.status.as_str().to_owned(),
            attempts: dev.attempts,
            step: dev.step,
            detail: dev.detail.clone(),
            pushed_at: dev.pushed_at,
            updated_at: dev.updated_at,
        }
    }

    /// Counts of the devices by status.
    pub(crate) fn stats(&self) -> JobStats {
        let mut s = JobStats::default();
        for d in self.devices.values() {
            s.add(d.status);
        }
        s
    }

    /// Pushes to a device now (`online`) or marks it offline.
    fn dispatch(&mut self, dn: &str, online: bool, now: DateTime<Utc>, fx: &mut Effects) {
        let firmware_id = self.firmware.id.clone();
        let product_key = self.product_key.clone();
        let Some(dev) = self.devices.get_mut(dn) else {
            return;
        };
        dev.updated_at = now;
        if online {
            dev.status = DeviceStatus::Notified;
            dev.attempts += 1;
            dev.step = None;
            dev.pushed_at = Some(now);
            fx.pushes.push(Push {
                product_key,
                device_name: dn.to_owned(),
                firmware_id,
            });
        } else {
            dev.status = DeviceStatus::Offline;
        }
        let row = self.row(dn, &self.devices[dn]);
        fx.rows.push(row);
    }

    /// Adds a device (dynamic jobs); `false` when it is already in the job.
    pub(crate) fn add_device(&mut self, dn: &str, now: DateTime<Utc>, fx: &mut Effects) -> bool {
        if self.devices.contains_key(dn) {
            return false;
        }
        let dev = Dev::queued(now);
        fx.rows.push(self.row(dn, &dev));
        self.devices.insert(dn.to_owned(), dev);
        true
    }

    /// Ends the current attempt of a device with `detail`: a new push while retries
    /// remain, else `failed`.
    fn fail_attempt(
        &mut self,
        dn: &str,
        step: Option<i32>,
        detail: String,
        online: bool,
        now: DateTime<Utc>,
        fx: &mut Effects,
    ) {
        let allowed = 1 + self.spec.max_retries;
        let Some(dev) = self.devices.get_mut(dn) else {
            return;
        };
        dev.detail = Some(detail);
        dev.step = step.or(dev.step);
        if dev.attempts < allowed {
            self.dispatch(dn, online, now, fx);
        } else {
            dev.status = DeviceStatus::Failed;
            dev.updated_at = now;
            let row = self.row(dn, &self.devices[dn]);
            fx.rows.push(row);
        }
    }

    /// The device reported progress `step` (−4…100).
    pub(crate) fn progress(
        &mut self,
        dn: &str,
        step: i32,
        desc: Option<String>,
        online: bool,
        now: DateTime<Utc>,
        fx: &mut Effects,
    ) {
        let Some(dev) = self.devices.get_mut(dn) else {
            return;
        };
        if !dev.status.is_pushed() {
            return;
        }
        match step {
            0..=100 => {
                dev.status = DeviceStatus::InProgress;
                dev.step = Some(step);
                dev.detail = desc;
                dev.updated_at = now;
                let row = self.row(dn, &self.devices[dn]);
                fx.rows.push(row);
            }
            -4..=-1 => {
                let detail = desc
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| step_meaning(step).to_owned());
                self.fail_attempt(dn, Some(step), detail, online, now, fx);
            }
            _ => {}
        }
    }

    /// The device reported `version` of the job's module.
    pub(crate) fn version_reported(
        &mut self,
        dn: &str,
        version: &str,
        now: DateTime<Utc>,
        fx: &mut Effects,
    ) {
        if version != self.firmware.version {
            return;
        }
        let Some(dev) = self.devices.get_mut(dn) else {
            return;
        };
        if dev.status.is_final() {
            return;
        }
        dev.status = DeviceStatus::Succeeded;
        dev.updated_at = now;
        let row = self.row(dn, &self.devices[dn]);
        fx.rows.push(row);
    }

    /// An offline device came online or asked: push if it is due.
    pub(crate) fn device_available(&mut self, dn: &str, now: DateTime<Utc>, fx: &mut Effects) {
        if self.state == JobState::Running
            && self
                .devices
                .get(dn)
                .is_some_and(|d| d.status == DeviceStatus::Offline)
        {
            self.dispatch(dn, true, now, fx);
        }
    }

    /// One scheduler step: start, timeouts, rollout, stop and completion checks.
    pub(crate) fn tick(
        &mut self,
        now: DateTime<Utc>,
        online: &dyn Fn(&str, &str) -> bool,
        fx: &mut Effects,
    ) {
        let now_ms = now.timestamp_millis();
        if self.state == JobState::Scheduled {
            if self.spec.start_at.is_some_and(|t| t > now_ms) {
                return;
            }
            self.state = JobState::Running;
            self.started_ms = Some(now_ms);
            fx.states.push((self.id.clone(), JobState::Running, None));
        }
        if self.state != JobState::Running {
            return;
        }
        let started = *self.started_ms.get_or_insert(now_ms);

        let timeout = chrono::Duration::seconds(
            i64::try_from(self.spec.timeout_secs).unwrap_or(i64::MAX / 1000),
        );
        let late: Vec<String> = self
            .devices
            .iter()
            .filter(|(_, d)| d.status.is_pushed() && now - d.updated_at >= timeout)
            .map(|(dn, _)| dn.clone())
            .collect();
        for dn in late {
            let up = online(&self.product_key, &dn);
            self.fail_attempt(&dn, None, "timeout".to_owned(), up, now, fx);
        }

        let budget = match self.spec.rate_per_minute {
            Some(rate) => {
                let elapsed = u64::try_from(now_ms.saturating_sub(started)).unwrap_or(0);
                (u64::from(rate).saturating_mul(elapsed) / 60_000).saturating_add(1)
            }
            None => u64::MAX,
        };
        if self.dispatched < budget {
            let due: Vec<String> = self
                .devices
                .iter()
                .filter(|(_, d)| d.status == DeviceStatus::Queued)
                .map(|(dn, _)| dn.clone())
                .take(usize::try_from(budget - self.dispatched).unwrap_or(usize::MAX))
                .collect();
            for dn in due {
                let up = online(&self.product_key, &dn);
                self.dispatch(&dn, up, now, fx);
                self.dispatched += 1;
            }
        }
        self.check(now, fx);
    }

    /// Stops the job when the failure rate passed its threshold, completes a static
    /// job whose devices all finished.
    pub(crate) fn check(&mut self, now: DateTime<Utc>, fx: &mut Effects) {
        if self.state != JobState::Running {
            return;
        }
        let s = self.stats();
        let finished = s.succeeded + s.failed;
        if let Some(threshold) = self.spec.failure_threshold
            && finished >= u64::from(self.spec.min_sample.max(1))
        {
            let rate = s.failed as f64 / finished as f64;
            if rate > threshold {
                let reason = format!(
                    "failure rate {rate:.2} ({} of {finished}) over the threshold {threshold}",
                    s.failed
                );
                self.finish(JobState::Stopped, Some(reason), now, fx);
                return;
            }
        }
        if self.spec.kind == JobKind::Static && s.total == s.succeeded + s.failed + s.canceled {
            self.finish(JobState::Completed, None, now, fx);
        }
    }

    /// Ends the job: devices not finished are canceled.
    pub(crate) fn finish(
        &mut self,
        state: JobState,
        reason: Option<String>,
        now: DateTime<Utc>,
        fx: &mut Effects,
    ) {
        self.state = state;
        let open: Vec<String> = self
            .devices
            .iter()
            .filter(|(_, d)| !d.status.is_final())
            .map(|(dn, _)| dn.clone())
            .collect();
        for dn in open {
            if let Some(dev) = self.devices.get_mut(&dn) {
                dev.status = DeviceStatus::Canceled;
                dev.updated_at = now;
            }
            let row = self.row(&dn, &self.devices[&dn]);
            fx.rows.push(row);
        }
        fx.states.push((self.id.clone(), state, reason));
    }
}

/// What a failure step means (C SDK 3.x `IOT_OTAP_*`, Link SDK 4.x `AIOT_OTAERR_*`).
pub fn step_meaning(step: i32) -> &'static str {
    match step {
        -1 => "upgrade failed",
        -2 => "download failed",
        -3 => "verification failed",
        -4 => "flashing failed",
        _ => "in progress",
    }
}
