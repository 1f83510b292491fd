//! Storage of remote configuration: versioned JSON configuration files of products.
//!
//! Every save of a product's configuration is a new version (1, 2, …); the newest is the
//! current one, and older versions stay for history. The registry stores the text, its
//! size and SHA-256 as given; checking that the text is JSON and within the size limit
//! belongs to the configuration runtime, which also enforces `max_bytes` here again so
//! that no caller can store an oversized file.

use chrono::{DateTime, Utc};

use crate::{BoxFuture, Result};

/// One stored version of a product's configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigVersion {
    /// The product the configuration belongs to.
    pub product_key: String,
    /// 1 for the first save, one more for each later save.
    pub version: i64,
    /// Opaque id of this version, unique over all products (the Alink `configId`).
    pub config_id: String,
    /// The configuration file (JSON text).
    pub content: String,
    /// Size of `content` in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of `content`.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

/// Configuration files of products, behind [`crate::RegistryStore::configs`].
pub trait ConfigStore: Send + Sync {
    /// Saves `content` as the product's new current version. Fails with
    /// `ProductNotFound` for an unknown product and `InvalidParameter` when `content`
    /// is longer than `max_bytes`.
    fn save_config<'a>(
        &'a self,
        product_key: &'a str,
        content: &'a str,
        sha256: &'a str,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<ConfigVersion>>;
    /// The current (newest) version, `None` when the product has none.
    fn current_config<'a>(
        &'a self,
        product_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConfigVersion>>>;
    /// One version by number.
    fn get_config_version<'a>(
        &'a self,
        product_key: &'a str,
        version: i64,
    ) -> BoxFuture<'a, Result<Option<ConfigVersion>>>;
    /// One version by its `configId`.
    fn get_config_by_id<'a>(
        &'a self,
        config_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConfigVersion>>>;
    /// Every version of a product, newest first.
    fn list_config_versions<'a>(
        &'a self,
        product_key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ConfigVersion>>>;
}

/// A new configuration id: `c` and 20 alphanumerics.
pub(crate) fn generate_config_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("c{}", Alphanumeric.sample_string(&mut rand::rng(), 20))
}

/// Implements [`ConfigStore`] for one backend type (with `pool` and `begin_write`).
macro_rules! devconfig_backend {
    ($store:ident, $db:ty) => {
        mod config_store {
            use sqlx::Row;

            use super::$store;
            use crate::backend::{from_ms, now, to_ms};
            use crate::devconfig::{ConfigStore, ConfigVersion, generate_config_id};
            use crate::{BoxFuture, RegistryError, Result};

            type DbRow = <$db as sqlx::Database>::Row;

            macro_rules! cols {
                () => {
                    "product_key, version, config_id, content, size, sha256, created_at"
                };
            }

            fn from_row(r: &DbRow) -> Result<ConfigVersion> {
                let size: i64 = r.try_get("size")?;
                Ok(ConfigVersion {
                    product_key: r.try_get("product_key")?,
                    version: r.try_get("version")?,
                    config_id: r.try_get("config_id")?,
                    content: r.try_get("content")?,
                    size: u64::try_from(size)
                        .map_err(|_| RegistryError::Corrupt(format!("config size {size}")))?,
                    sha256: r.try_get("sha256")?,
                    created_at: from_ms(r.try_get("created_at")?)?,
                })
            }

            impl ConfigStore for $store {
                fn save_config<'a>(
                    &'a self,
                    product_key: &'a str,
                    content: &'a str,
                    sha256: &'a str,
                    max_bytes: u64,
                ) -> BoxFuture<'a, Result<ConfigVersion>> {
                    Box::pin(async move {
                        if content.len() as u64 > max_bytes {
                            return Err(RegistryError::InvalidParameter {
                                field: "content",
                                reason: format!(
                                    "{} bytes is over the limit of {max_bytes}",
                                    content.len()
                                ),
                            });
                        }
                        let mut tx = self.begin_write().await?;
                        // Locks the product row, so concurrent saves number in turn.
                        let found = sqlx::query(
                            "UPDATE products SET product_key = product_key \
                             WHERE product_key = $1",
                        )
                        .bind(product_key)
                        .execute(&mut *tx)
                        .await?;
                        if found.rows_affected() == 0 {
                            return Err(RegistryError::ProductNotFound(product_key.to_owned()));
                        }
                        let last: Option<i64> = sqlx::query_scalar(
                            "SELECT MAX(version) FROM product_configs WHERE product_key = $1",
                        )
                        .bind(product_key)
                        .fetch_one(&mut *tx)
                        .await?;
                        let row = sqlx::query(concat!(
                            "INSERT INTO product_configs (",
                            cols!(),
                            ") VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
                            cols!()
                        ))
                        .bind(product_key)
                        .bind(last.unwrap_or(0) + 1)
                        .bind(generate_config_id())
                        .bind(content)
                        .bind(content.len() as i64)
                        .bind(sha256)
                        .bind(to_ms(now()))
                        .fetch_one(&mut *tx)
                        .await?;
                        let record = from_row(&row)?;
                        tx.commit().await?;
                        Ok(record)
                    })
                }

                fn current_config<'a>(
                    &'a self,
                    product_key: &'a str,
                ) -> BoxFuture<'a, Result<Option<ConfigVersion>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "SELECT ",
                            cols!(),
                            " FROM product_configs WHERE product_key = $1 \
                             ORDER BY version DESC LIMIT 1"
                        ))
                        .bind(product_key)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.map(|r| from_row(&r)).transpose()
                    })
                }

                fn get_config_version<'a>(
                    &'a self,
                    product_key: &'a str,
                    version: i64,
                ) -> BoxFuture<'a, Result<Option<ConfigVersion>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "SELECT ",
                            cols!(),
                            " FROM product_configs WHERE product_key = $1 AND version = $2"
                        ))
                        .bind(product_key)
                        .bind(version)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.map(|r| from_row(&r)).transpose()
                    })
                }

                fn get_config_by_id<'a>(
                    &'a self,
                    config_id: &'a str,
                ) -> BoxFuture<'a, Result<Option<ConfigVersion>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "SELECT ",
                            cols!(),
                            " FROM product_configs WHERE config_id = $1"
                        ))
                        .bind(config_id)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.map(|r| from_row(&r)).transpose()
                    })
                }

                fn list_config_versions<'a>(
                    &'a self,
                    product_key: &'a str,
                ) -> BoxFuture<'a, Result<Vec<ConfigVersion>>> {
                    Box::pin(async move {
                        let rows = sqlx::query(concat!(
                            "SELECT ",
                            cols!(),
                            " FROM product_configs WHERE product_key = $1 \
                             ORDER BY version DESC"
                        ))
                        .bind(product_key)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.iter().map(from_row).collect()
                    })
                }
            }
        }
    };
}
pub(crate) use devconfig_backend;
