//! Storage of OTA: firmware packages, upgrade jobs and per-device upgrade state, reported
//! module versions.
//!
//! The registry keeps the metadata of firmware packages (their bytes live in the OTA
//! runtime's blob store), the last version each device reported per module, the jobs with
//! their settings (JSON text the registry does not interpret) and state, and one row per
//! device of a job. What the states mean belongs to the OTA runtime.

use chrono::{DateTime, Utc};

use crate::{BoxFuture, Result};

/// A stored firmware package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareRecord {
    /// Opaque id, unique over all accounts.
    pub id: String,
    pub account_id: String,
    pub product_key: String,
    /// The device module it is for (`default` unless the device has several).
    pub module: String,
    pub version: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex MD5 of the bytes.
    pub md5: String,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// A signature supplied at upload (opaque to the platform).
    pub signature: Option<String>,
    /// How `signature` was made (opaque to the platform).
    pub sign_method: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What a caller sets when storing a firmware package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFirmware {
    pub product_key: String,
    pub module: String,
    pub version: String,
    pub size: u64,
    pub md5: String,
    pub sha256: String,
    pub signature: Option<String>,
    pub sign_method: Option<String>,
    pub description: Option<String>,
}

/// The version of one module a device reported last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleVersion {
    pub product_key: String,
    pub device_name: String,
    pub module: String,
    pub version: String,
    pub reported_at: DateTime<Utc>,
}

/// A stored upgrade job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtaJobRecord {
    /// Opaque id, unique over all accounts.
    pub id: String,
    pub account_id: String,
    pub firmware_id: String,
    pub product_key: String,
    /// The job's settings, a JSON object owned by the OTA runtime.
    pub settings: String,
    /// The job's state, named by the OTA runtime.
    pub state: String,
    /// Why the job ended, when it did.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a caller sets when creating a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOtaJob {
    pub firmware_id: String,
    pub product_key: String,
    /// A JSON object.
    pub settings: String,
    pub state: String,
}

/// The state of one device in one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDeviceRecord {
    pub job_id: String,
    pub product_key: String,
    pub device_name: String,
    /// Named by the OTA runtime.
    pub status: String,
    /// Pushes sent so far.
    pub attempts: u32,
    /// The last progress step the device reported (−4…100).
    pub step: Option<i32>,
    /// The device's last description, or why the platform failed it.
    pub detail: Option<String>,
    /// When the upgrade was last pushed.
    pub pushed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Storage of OTA, behind [`crate::RegistryStore::ota`].
///
/// Lookups return `Ok(None)` for a missing object; deletions and state changes of a
/// missing object answer `false` / `None`.
pub trait OtaStore: Send + Sync {
    /// Stores a firmware package; `(product, module, version)` must be new
    /// (`InvalidParameter` on `version` otherwise).
    fn create_firmware<'a>(
        &'a self,
        account_id: &'a str,
        firmware: NewFirmware,
    ) -> BoxFuture<'a, Result<FirmwareRecord>>;
    fn get_firmware<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<FirmwareRecord>>>;
    /// The firmware of an account, optionally of one product, by id.
    fn list_firmware<'a>(
        &'a self,
        account_id: &'a str,
        product_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<FirmwareRecord>>>;
    /// Deletes a package's metadata; `false` when it did not exist. A package some job
    /// uses is refused with `InvalidParameter` on `firmware`.
    fn delete_firmware<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Records the version a device reports for a module (replacing the previous one).
    fn report_module_version<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
        module: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<ModuleVersion>>;
    /// The module versions of a device, by module.
    fn module_versions<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ModuleVersion>>>;
    /// The devices of a product whose `module` is at one of `versions`, by device name.
    fn devices_at_versions<'a>(
        &'a self,
        product_key: &'a str,
        module: &'a str,
        versions: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<ModuleVersion>>>;

    fn create_job<'a>(
        &'a self,
        account_id: &'a str,
        job: NewOtaJob,
    ) -> BoxFuture<'a, Result<OtaJobRecord>>;
    fn get_job<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<OtaJobRecord>>>;
    /// The jobs of an account, by id.
    fn list_jobs<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<Vec<OtaJobRecord>>>;
    /// The jobs of every account in one of `states`, by id (the scheduler's restart).
    fn jobs_in_states<'a>(
        &'a self,
        states: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<OtaJobRecord>>>;
    /// Changes a job's state and reason; `None` when the job does not exist.
    fn set_job_state<'a>(
        &'a self,
        id: &'a str,
        state: &'a str,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<OtaJobRecord>>>;

    /// Inserts or replaces device rows of jobs, in one transaction; a row older
    /// (`updated_at`) than the stored one is ignored, so writers racing each other
    /// cannot move a device back.
    fn put_job_devices<'a>(&'a self, rows: &'a [JobDeviceRecord]) -> BoxFuture<'a, Result<()>>;
    /// The devices of a job, by product key and device name.
    fn list_job_devices<'a>(
        &'a self,
        job_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<JobDeviceRecord>>>;
}

/// A new firmware or job id: `f` or `j` and 20 alphanumerics.
pub(crate) fn generate_id(prefix: char) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 20)
    )
}

/// Implements [`OtaStore`] for one backend type (with `pool` and `begin_write`).
macro_rules! ota_backend {
    ($store:ident, $db:ty) => {
        mod ota_store {
            use sqlx::Row;

            use super::$store;
            use crate::backend::{from_ms, is_fk_violation, is_unique_violation, now, opt_from_ms, to_ms};
            use crate::ota::{
                FirmwareRecord, JobDeviceRecord, ModuleVersion, NewFirmware, NewOtaJob,
                OtaJobRecord, OtaStore, generate_id,
            };
            use crate::{BoxFuture, RegistryError, Result};

            type DbRow = <$db as sqlx::Database>::Row;

            macro_rules! fw_cols {
                () => {
                    "id, account_id, product_key, module, version, size, md5, sha256, signature, \
                     sign_method, description, created_at"
                };
            }
            macro_rules! job_cols {
                () => {
                    "id, account_id, firmware_id, product_key, settings, state, reason, \
                     created_at, updated_at"
                };
            }
            macro_rules! dev_cols {
                () => {
                    "job_id, product_key, device_name, status, attempts, step, detail, pushed_at, \
                     updated_at"
                };
            }

            fn fw_from_row(r: &DbRow) -> Result<FirmwareRecord> {
                let size: i64 = r.try_get("size")?;
                Ok(FirmwareRecord {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    product_key: r.try_get("product_key")?,
                    module: r.try_get("module")?,
                    version: r.try_get("version")?,
                    size: u64::try_from(size)
                        .map_err(|_| RegistryError::Corrupt(format!("firmware size {size}")))?,
                    md5: r.try_get("md5")?,
                    sha256: r.try_get("sha256")?,
                    signature: r.try_get("signature")?,
                    sign_method: r.try_get("sign_method")?,
                    description: r.try_get("description")?,
                    created_at: from_ms(r.try_get("created_at")?)?,
                })
            }

            fn job_from_row(r: &DbRow) -> Result<OtaJobRecord> {
                Ok(OtaJobRecord {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    firmware_id: r.try_get("firmware_id")?,
                    product_key: r.try_get("product_key")?,
                    settings: r.try_get("settings")?,
                    state: r.try_get("state")?,
                    reason: r.try_get("reason")?,
                    created_at: from_ms(r.try_get("created_at")?)?,
                    updated_at: from_ms(r.try_get("updated_at")?)?,
                })
            }

            fn dev_from_row(r: &DbRow) -> Result<JobDeviceRecord> {
                let attempts: i64 = r.try_get("attempts")?;
                let step: Option<i64> = r.try_get("step")?;
                Ok(JobDeviceRecord {
                    job_id: r.try_get("job_id")?,
                    product_key: r.try_get("product_key")?,
                    device_name: r.try_get("device_name")?,
                    status: r.try_get("status")?,
                    attempts: u32::try_from(attempts)
                        .map_err(|_| RegistryError::Corrupt(format!("attempts {attempts}")))?,
                    step: step
                        .map(|s| {
                            i32::try_from(s)
                                .map_err(|_| RegistryError::Corrupt(format!("step {s}")))
                        })
                        .transpose()?,
                    detail: r.try_get("detail")?,
                    pushed_at: opt_from_ms(r.try_get("pushed_at")?)?,
                    updated_at: from_ms(r.try_get("updated_at")?)?,
                })
            }

            fn mv_from_row(r: &DbRow) -> Result<ModuleVersion> {
                Ok(ModuleVersion {
                    product_key: r.try_get("product_key")?,
                    device_name: r.try_get("device_name")?,
                    module: r.try_get("module")?,
                    version: r.try_get("version")?,
                    reported_at: from_ms(r.try_get("reported_at")?)?,
                })
            }

            impl OtaStore for $store {
                fn create_firmware<'a>(
                    &'a self,
                    account_id: &'a str,
                    firmware: NewFirmware,
                ) -> BoxFuture<'a, Result<FirmwareRecord>> {
                    Box::pin(async move {
                        let size = i64::try_from(firmware.size).map_err(|_| {
                            RegistryError::InvalidParameter {
                                field: "size",
                                reason: "too large".into(),
                            }
                        })?;
                        let row = sqlx::query(concat!(
                            "INSERT INTO ota_firmware (",
                            fw_cols!(),
                            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                             RETURNING ",
                            fw_cols!()
                        ))
                        .bind(generate_id('f'))
                        .bind(account_id)
                        .bind(&firmware.product_key)
                        .bind(&firmware.module)
                        .bind(&firmware.version)
                        .bind(size)
                        .bind(&firmware.md5)
                        .bind(&firmware.sha256)
                        .bind(&firmware.signature)
                        .bind(&firmware.sign_method)
                        .bind(&firmware.description)
                        .bind(to_ms(now()))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| {
                            if is_unique_violation(&e) {
                                RegistryError::InvalidParameter {
                                    field: "version",
                                    reason: format!(
                                        "product {} already has version {} of module {}",
                                        firmware.product_key, firmware.version, firmware.module
                                    ),
                                }
                            } else if is_fk_violation(&e) {
                                RegistryError::AccountNotFound(account_id.to_owned())
                            } else {
                                e.into()
                            }
                        })?;
                        fw_from_row(&row)
                    })
                }

                fn get_firmware<'a>(
                    &'a self,
                    id: &'a str,
                ) -> BoxFuture<'a, Result<Option<FirmwareRecord>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "SELECT ",
                            fw_cols!(),
                            " FROM ota_firmware WHERE id = $1"
                        ))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.map(|r| fw_from_row(&r)).transpose()
                    })
                }

                fn list_firmware<'a>(
                    &'a self,
                    account_id: &'a str,
                    product_key: Option<&'a str>,
                ) -> BoxFuture<'a, Result<Vec<FirmwareRecord>>> {
                    Box::pin(async move {
                        let rows = sqlx::query(concat!(
                            "SELECT ",
                            fw_cols!(),
                            " FROM ota_firmware WHERE account_id = $1 \
                             AND ($2 IS NULL OR product_key = $2) ORDER BY id"
                        ))
                        .bind(account_id)
                        .bind(product_key)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.iter().map(fw_from_row).collect()
                    })
                }

                fn delete_firmware<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
                    Box::pin(async move {
                        let done = sqlx::query("DELETE FROM ota_firmware WHERE id = $1")
                            .bind(id)
                            .execute(&self.pool)
                            .await
                            .map_err(|e| {
                                if is_fk_violation(&e) {
                                    RegistryError::InvalidParameter {
                                        field: "firmware",
                                        reason: format!("firmware {id} is used by a job"),
                                    }
                                } else {
                                    e.into()
                                }
                            })?;
                        Ok(done.rows_affected() > 0)
                    })
                }

                fn report_module_version<'a>(
                    &'a self,
                    product_key: &'a str,
                    device_name: &'a str,
                    module: &'a str,
                    version: &'a str,
                ) -> BoxFuture<'a, Result<ModuleVersion>> {
                    Box::pin(async move {
                        let at = now();
                        sqlx::query(
                            "INSERT INTO ota_module_versions \
                             (product_key, device_name, module, version, reported_at) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (product_key, device_name, module) \
                             DO UPDATE SET version = excluded.version, \
                             reported_at = excluded.reported_at",
                        )
                        .bind(product_key)
                        .bind(device_name)
                        .bind(module)
                        .bind(version)
                        .bind(to_ms(at))
                        .execute(&self.pool)
                        .await?;
                        Ok(ModuleVersion {
                            product_key: product_key.to_owned(),
                            device_name: device_name.to_owned(),
                            module: module.to_owned(),
                            version: version.to_owned(),
                            reported_at: at,
                        })
                    })
                }

                fn module_versions<'a>(
                    &'a self,
                    product_key: &'a str,
                    device_name: &'a str,
                ) -> BoxFuture<'a, Result<Vec<ModuleVersion>>> {
                    Box::pin(async move {
                        let rows = sqlx::query(
                            "SELECT product_key, device_name, module, version, reported_at \
                             FROM ota_module_versions WHERE product_key = $1 \
                             AND device_name = $2 ORDER BY module",
                        )
                        .bind(product_key)
                        .bind(device_name)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.iter().map(mv_from_row).collect()
                    })
                }

                fn devices_at_versions<'a>(
                    &'a self,
                    product_key: &'a str,
                    module: &'a str,
                    versions: &'a [String],
                ) -> BoxFuture<'a, Result<Vec<ModuleVersion>>> {
                    Box::pin(async move {
                        let mut out = Vec::new();
                        for version in versions {
                            let rows = sqlx::query(
                                "SELECT product_key, device_name, module, version, reported_at \
                                 FROM ota_module_versions WHERE product_key = $1 \
                                 AND module = $2 AND version = $3",
                            )
                            .bind(product_key)
                            .bind(module)
                            .bind(version)
                            .fetch_all(&self.pool)
                            .await?;
                            for r in &rows {
                                out.push(mv_from_row(r)?);
                            }
                        }
                        out.sort_by(|a, b| a.device_name.cmp(&b.device_name));
                        Ok(out)
                    })
                }

                fn create_job<'a>(
                    &'a self,
                    account_id: &'a str,
                    job: NewOtaJob,
                ) -> BoxFuture<'a, Result<OtaJobRecord>> {
                    Box::pin(async move {
                        let at = to_ms(now());
                        let row = sqlx::query(concat!(
                            "INSERT INTO ota_jobs (",
                            job_cols!(),
                            ") VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $7) RETURNING ",
                            job_cols!()
                        ))
                        .bind(generate_id('j'))
                        .bind(account_id)
                        .bind(&job.firmware_id)
                        .bind(&job.product_key)
                        .bind(&job.settings)
                        .bind(&job.state)
                        .bind(at)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| {
                            if is_fk_violation(&e) {
                                RegistryError::InvalidParameter {
                                    field: "firmwareId",
                                    reason: format!(
                                        "firmware {} or account {account_id} does not exist",
                                        job.firmware_id
                                    ),
                                }
                            } else {
                                e.into()
                            }
                        })?;
                        job_from_row(&row)
                    })
                }

                fn get_job<'a>(
                    &'a self,
                    id: &'a str,
                ) -> BoxFuture<'a, Result<Option<OtaJobRecord>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "SELECT ",
                            job_cols!(),
                            " FROM ota_jobs WHERE id = $1"
                        ))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.map(|r| job_from_row(&r)).transpose()
                    })
                }

                fn list_jobs<'a>(
                    &'a self,
                    account_id: &'a str,
                ) -> BoxFuture<'a, Result<Vec<OtaJobRecord>>> {
                    Box::pin(async move {
                        let rows = sqlx::query(concat!(
                            "SELECT ",
                            job_cols!(),
                            " FROM ota_jobs WHERE account_id = $1 ORDER BY id"
                        ))
                        .bind(account_id)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.iter().map(job_from_row).collect()
                    })
                }

                fn jobs_in_states<'a>(
                    &'a self,
                    states: &'a [&'a str],
                ) -> BoxFuture<'a, Result<Vec<OtaJobRecord>>> {
                    Box::pin(async move {
                        let mut out = Vec::new();
                        for state in states {
                            let rows = sqlx::query(concat!(
                                "SELECT ",
                                job_cols!(),
                                " FROM ota_jobs WHERE state = $1"
                            ))
                            .bind(*state)
                            .fetch_all(&self.pool)
                            .await?;
                            for r in &rows {
                                out.push(job_from_row(r)?);
                            }
                        }
                        out.sort_by(|a, b| a.id.cmp(&b.id));
                        Ok(out)
                    })
                }

                fn set_job_state<'a>(
                    &'a self,
                    id: &'a str,
                    state: &'a str,
                    reason: Option<&'a str>,
                ) -> BoxFuture<'a, Result<Option<OtaJobRecord>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "UPDATE ota_jobs SET state = $2, reason = $3, updated_at = $4 \
                             WHERE id = $1 RETURNING ",
                            job_cols!()
                        ))
                        .bind(id)
                        .bind(state)
                        .bind(reason)
                        .bind(to_ms(now()))
                        .fetch_optional(&self.pool)
                        .await?;
                        row.map(|r| job_from_row(&r)).transpose()
                    })
                }

                fn put_job_devices<'a>(
                    &'a self,
                    rows: &'a [JobDeviceRecord],
                ) -> BoxFuture<'a, Result<()>> {
                    Box::pin(async move {
                        if rows.is_empty() {
                            return Ok(());
                        }
                        let mut tx = self.begin_write().await?;
                        for d in rows {
                            sqlx::query(concat!(
                                "INSERT INTO ota_job_devices (",
                                dev_cols!(),
                                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                                 ON CONFLICT (job_id, product_key, device_name) DO UPDATE SET \
                                 status = excluded.status, attempts = excluded.attempts, \
                                 step = excluded.step, detail = excluded.detail, \
                                 pushed_at = excluded.pushed_at, updated_at = excluded.updated_at \
                                 WHERE excluded.updated_at >= ota_job_devices.updated_at"
                            ))
                            .bind(&d.job_id)
                            .bind(&d.product_key)
                            .bind(&d.device_name)
                            .bind(&d.status)
                            .bind(i64::from(d.attempts))
                            .bind(d.step.map(i64::from))
                            .bind(&d.detail)
                            .bind(d.pushed_at.map(to_ms))
                            .bind(to_ms(d.updated_at))
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| {
                                if is_fk_violation(&e) {
                                    RegistryError::InvalidParameter {
                                        field: "jobId",
                                        reason: format!("job {} does not exist", d.job_id),
                                    }
                                } else {
                                    e.into()
                                }
                            })?;
                        }
                        tx.commit().await?;
                        Ok(())
                    })
                }

                fn list_job_devices<'a>(
                    &'a self,
                    job_id: &'a str,
                ) -> BoxFuture<'a, Result<Vec<JobDeviceRecord>>> {
                    Box::pin(async move {
                        let rows = sqlx::query(concat!(
                            "SELECT ",
                            dev_cols!(),
                            " FROM ota_job_devices WHERE job_id = $1 \
                             ORDER BY product_key, device_name"
                        ))
                        .bind(job_id)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.iter().map(dev_from_row).collect()
                    })
                }
            }
        }
    };
}
pub(crate) use ota_backend;
