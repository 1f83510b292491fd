//! Storage of device shadows: one JSON document and version per device.
//!
//! The registry stores the document as text it does not interpret (its meaning belongs to
//! the shadow runtime) next to a version that every write checks: [`ShadowStore::put_shadow`]
//! is a compare-and-set, so two writers that read the same version cannot both succeed,
//! whatever process they run in. A shadow lives in the device's row family: deleting the
//! device deletes its shadow.

use chrono::{DateTime, Utc};

use crate::{BoxFuture, Result};

/// A stored shadow document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowRecord {
    /// The document, JSON text.
    pub document: String,
    /// Its version, at least 1 (0 stands for "no shadow").
    pub version: u64,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// The outcome of a compare-and-set write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowWrite {
    /// The document was stored.
    Written(ShadowRecord),
    /// The stored version was not the expected one; nothing was written. Holds what is
    /// stored now (`None`: no shadow).
    Conflict(Option<ShadowRecord>),
}

/// Device shadows, behind [`crate::RegistryStore::shadows`].
///
/// Every operation on a device that does not exist fails with `DeviceNotFound`.
pub trait ShadowStore: Send + Sync {
    /// The device's shadow, `None` when it has none.
    fn get_shadow<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ShadowRecord>>>;
    /// Stores `document` with `version` if the stored version is `expected` (0: the device
    /// has no shadow yet). `version` must be greater than `expected`
    /// (`InvalidParameter` otherwise).
    fn put_shadow<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
        expected: u64,
        document: &'a str,
        version: u64,
    ) -> BoxFuture<'a, Result<ShadowWrite>>;
    /// Deletes the device's shadow; `false` when it had none. The next document starts
    /// again from version 0.
    fn delete_shadow<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;
}

/// Implements [`ShadowStore`] for one backend type (with `pool` and `begin_write`).
macro_rules! shadow_backend {
    ($store:ident, $db:ty) => {
        mod shadow_store {
            use sqlx::Row;

            use super::$store;
            use crate::backend::{from_ms, now, to_ms};
            use crate::shadow::{ShadowRecord, ShadowStore, ShadowWrite};
            use crate::{BoxFuture, RegistryError, Result};

            type Tx = sqlx::Transaction<'static, $db>;

            fn version_to_db(v: u64) -> Result<i64> {
                i64::try_from(v).map_err(|_| RegistryError::InvalidParameter {
                    field: "version",
                    reason: format!("{v} is out of range"),
                })
            }

            fn version_from_db(v: i64) -> Result<u64> {
                u64::try_from(v).map_err(|_| RegistryError::Corrupt(format!("shadow version {v}")))
            }

            fn not_found(product_key: &str, device_name: &str) -> RegistryError {
                RegistryError::DeviceNotFound(format!("{product_key}/{device_name}"))
            }

            /// The device's id and its shadow, in `tx`.
            async fn load(
                tx: &mut Tx,
                product_key: &str,
                device_name: &str,
            ) -> Result<(String, Option<ShadowRecord>)> {
                let row = sqlx::query(
                    "SELECT d.iot_id AS iot_id, s.document AS document, s.version AS version, \
                     s.updated_at AS updated_at FROM devices d \
                     LEFT JOIN device_shadows s ON s.iot_id = d.iot_id \
                     WHERE d.product_key = $1 AND d.device_name = $2",
                )
                .bind(product_key)
                .bind(device_name)
                .fetch_optional(&mut **tx)
                .await?;
                let Some(row) = row else {
                    return Err(not_found(product_key, device_name));
                };
                let iot_id: String = row.try_get("iot_id")?;
                let document: Option<String> = row.try_get("document")?;
                let record = match document {
                    None => None,
                    Some(document) => Some(ShadowRecord {
                        document,
                        version: version_from_db(row.try_get("version")?)?,
                        updated_at: from_ms(row.try_get("updated_at")?)?,
                    }),
                };
                Ok((iot_id, record))
            }

            impl ShadowStore for $store {
                fn get_shadow<'a>(
                    &'a self,
                    product_key: &'a str,
                    device_name: &'a str,
                ) -> BoxFuture<'a, Result<Option<ShadowRecord>>> {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await?;
                        let (_, record) = load(&mut tx, product_key, device_name).await?;
                        tx.commit().await?;
                        Ok(record)
                    })
                }

                fn put_shadow<'a>(
                    &'a self,
                    product_key: &'a str,
                    device_name: &'a str,
                    expected: u64,
                    document: &'a str,
                    version: u64,
                ) -> BoxFuture<'a, Result<ShadowWrite>> {
                    Box::pin(async move {
                        if version <= expected {
                            return Err(RegistryError::InvalidParameter {
                                field: "version",
                                reason: format!(
                                    "the new version {version} must be greater than {expected}"
                                ),
                            });
                        }
                        let new_version = version_to_db(version)?;
                        let mut tx = self.begin_write().await?;
                        let (iot_id, current) = load(&mut tx, product_key, device_name).await?;
                        let current_version = current.as_ref().map_or(0, |r| r.version);
                        if current_version != expected {
                            return Ok(ShadowWrite::Conflict(current));
                        }
                        let at = now();
                        let done = if expected == 0 {
                            sqlx::query(
                                "INSERT INTO device_shadows (iot_id, document, version, \
                                 updated_at) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (iot_id) DO NOTHING",
                            )
                            .bind(&iot_id)
                            .bind(document)
                            .bind(new_version)
                            .bind(to_ms(at))
                            .execute(&mut *tx)
                            .await?
                        } else {
                            sqlx::query(
                                "UPDATE device_shadows SET document = $2, version = $3, \
                                 updated_at = $4 WHERE iot_id = $1 AND version = $5",
                            )
                            .bind(&iot_id)
                            .bind(document)
                            .bind(new_version)
                            .bind(to_ms(at))
                            .bind(version_to_db(expected)?)
                            .execute(&mut *tx)
                            .await?
                        };
                        if done.rows_affected() == 0 {
                            drop(tx);
                            let current = self.get_shadow(product_key, device_name).await?;
                            return Ok(ShadowWrite::Conflict(current));
                        }
                        tx.commit().await?;
                        Ok(ShadowWrite::Written(ShadowRecord {
                            document: document.to_owned(),
                            version,
                            updated_at: at,
                        }))
                    })
                }

                fn delete_shadow<'a>(
                    &'a self,
                    product_key: &'a str,
                    device_name: &'a str,
                ) -> BoxFuture<'a, Result<bool>> {
                    Box::pin(async move {
                        let mut tx = self.begin_write().await?;
                        let (iot_id, current) = load(&mut tx, product_key, device_name).await?;
                        if current.is_none() {
                            return Ok(false);
                        }
                        sqlx::query("DELETE FROM device_shadows WHERE iot_id = $1")
                            .bind(&iot_id)
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        Ok(true)
                    })
                }
            }
        }
    };
}
pub(crate) use shadow_backend;
