//! The SQL shared by both backends: helpers here, and `registry_backend!`,
//! which implements [`crate::RegistryStore`] for one sqlx database type.
//!
//! The statements are the same text for SQLite and PostgreSQL (`$1`
//! placeholders, `ON CONFLICT`, `RETURNING`); the macro only fixes the
//! concrete database type so that no generic sqlx bounds are needed.

use chrono::{DateTime, Utc};

use crate::error::{RegistryError, Result};
use crate::model::{Page, PageRequest, Tags};

/// One versioned schema migration.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| RegistryError::Corrupt(format!("timestamp {ms} out of range")))
}

pub(crate) fn opt_from_ms(ms: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    ms.map(from_ms).transpose()
}

/// Now, truncated to what the database stores (milliseconds).
pub(crate) fn now() -> DateTime<Utc> {
    let t = Utc::now();
    from_ms(to_ms(t)).unwrap_or(t)
}

pub(crate) fn tags_to_json(tags: &Tags) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, k);
        out.push(':');
        push_json_str(&mut out, v);
    }
    out.push('}');
    out
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(crate) fn tags_from_json(s: &str) -> Result<Tags> {
    serde_json::from_str(s).map_err(|e| RegistryError::Corrupt(format!("tags {s:?}: {e}")))
}

pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A checked page request: rows to fetch, rows to skip, and the cursor.
pub(crate) struct PageSpec {
    pub(crate) size: u32,
    pub(crate) offset: i64,
    pub(crate) after: Option<String>,
}

impl PageSpec {
    pub(crate) fn new(page: &PageRequest, max: u32) -> Result<Self> {
        let size = page.page_size();
        if size == 0 || size > max {
            return Err(RegistryError::InvalidPageSize { size, limit: max });
        }
        Ok(match page {
            PageRequest::Page { page_no, .. } => PageSpec {
                size,
                offset: i64::from(page_no.saturating_sub(1)) * i64::from(size),
                after: None,
            },
            PageRequest::After { cursor, .. } => PageSpec {
                size,
                offset: 0,
                after: cursor.clone(),
            },
        })
    }

    /// Rows to ask for: one more than the page, to know whether more follow.
    pub(crate) fn fetch(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// The page made of `rows` (fetched with [`PageSpec::fetch`]): at most `size`
    /// items, and a cursor after the last one when more rows follow.
    pub(crate) fn page<R, T>(
        &self,
        rows: &[R],
        total: i64,
        parse: impl Fn(&R) -> Result<T>,
        cursor: impl Fn(&T) -> String,
    ) -> Result<Page<T>> {
        let more = rows.len() > self.size as usize;
        let items = rows
            .iter()
            .take(self.size as usize)
            .map(parse)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = match items.last() {
            Some(last) if more => Some(cursor(last)),
            _ => None,
        };
        Ok(Page {
            items,
            total: count(total),
            next_cursor,
        })
    }
}

/// Splits a device cursor `productKey/deviceName`.
pub(crate) fn split_device_cursor(cursor: &str) -> Result<(&str, &str)> {
    cursor
        .split_once('/')
        .ok_or_else(|| RegistryError::InvalidCursor(cursor.to_owned()))
}

/// The exclusive upper bound of the names starting with `prefix` (which is
/// checked to hold only DeviceName characters, all ASCII below 0x7f).
pub(crate) fn prefix_upper_bound(prefix: &str) -> Result<String> {
    if prefix.len() > 32
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@' | b'.' | b':'))
    {
        return Err(RegistryError::InvalidParameter {
            field: "name_prefix",
            reason: format!("{prefix:?} is not the start of a valid DeviceName"),
        });
    }
    let mut bytes = prefix.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last += 1;
    }
    String::from_utf8(bytes).map_err(|_| RegistryError::InvalidParameter {
        field: "name_prefix",
        reason: "not ASCII".to_owned(),
    })
}

pub(crate) fn validate_tags(tags: &Tags) -> Result<()> {
    for (k, v) in tags {
        crate::ids::validate_tag(k, v)?;
    }
    Ok(())
}

pub(crate) fn validate_nickname(nickname: Option<&str>) -> Result<()> {
    match nickname {
        Some(n) if n.chars().count() > 64 || n.chars().any(char::is_control) => {
            Err(RegistryError::InvalidParameter {
                field: "nickname",
                reason: "at most 64 characters, no control characters".to_owned(),
            })
        }
        _ => Ok(()),
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// Device names per multi-row INSERT (5 bound values per row keeps each
/// statement far below SQLite's 32 766 and PostgreSQL's 65 535 parameters).
pub(crate) const INSERT_CHUNK: usize = 1_000;

macro_rules! device_cols {
    () => {
        "iot_id, product_key, device_name, device_secret, nickname, state, activated_at, \
         last_online_at, last_offline_at, last_ip, firmware_version, tags, \
         dynamically_registered, created_at"
    };
}

macro_rules! product_cols {
    () => {
        "product_key, product_secret, account_id, name, node_type, data_format, auth_type, \
         dynamic_registration, description, tags, created_at"
    };
}

pub(crate) use {device_cols, product_cols};

/// Implements `RegistryStore` for `$store`, a struct with fields
/// `pool: sqlx::Pool<$db>` and `limits: RegistryLimits` and an inherent
/// `async fn begin_write(&self) -> Result<sqlx::Transaction<'static, $db>>`.
macro_rules! registry_backend {
    ($store:ident, $db:ty, $kind:literal) => {
        use std::collections::{BTreeMap, HashSet};

        use chrono::{DateTime, Utc};
        use sqlx::{QueryBuilder, Row};

        use crate::backend::{
            count, device_cols, from_ms, is_fk_violation, is_unique_violation, now,
            opt_from_ms, prefix_upper_bound, product_cols, split_device_cursor, tags_from_json,
            tags_to_json, to_ms, validate_nickname, validate_tags, PageSpec, INSERT_CHUNK,
        };
        use crate::ids;
        use crate::{
            AccessKey, Account, AuthType, BatchItem, BoxFuture, DataFormat, Device, DeviceEvent,
            DocumentKind, ProductDocument,
            DeviceEventKind, DeviceFilter, DeviceState, NewDevice, NewProduct, NewTopicCategory,
            NodeType, Page, PageRequest, Product, ProductUpdate, RegistryError, RegistryLimits,
            RegistryStore, Result, Tags, TopicCategory, TopicPermission,
            DEFAULT_TOPIC_CATEGORIES,
        };

        type DbRow = <$db as sqlx::Database>::Row;
        type Tx = sqlx::Transaction<'static, $db>;

        fn account_from_row(r: &DbRow) -> Result<Account> {
            Ok(Account {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                created_at: from_ms(r.try_get("created_at")?)?,
            })
        }

        fn access_key_from_row(r: &DbRow) -> Result<AccessKey> {
            Ok(AccessKey {
                id: r.try_get("id")?,
                secret: r.try_get("secret")?,
                account_id: r.try_get("account_id")?,
                enabled: r.try_get("enabled")?,
                created_at: from_ms(r.try_get("created_at")?)?,
            })
        }

        fn product_from_row(r: &DbRow) -> Result<Product> {
            Ok(Product {
                product_key: r.try_get("product_key")?,
                product_secret: r.try_get("product_secret")?,
                account_id: r.try_get("account_id")?,
                name: r.try_get("name")?,
                node_type: NodeType::parse(r.try_get("node_type")?)?,
                data_format: DataFormat::parse(r.try_get("data_format")?)?,
                auth_type: AuthType::parse(r.try_get("auth_type")?)?,
                dynamic_registration: r.try_get("dynamic_registration")?,
                description: r.try_get("description")?,
                tags: tags_from_json(r.try_get("tags")?)?,
                created_at: from_ms(r.try_get("created_at")?)?,
            })
        }

        fn document_from_row(r: &DbRow, kind: DocumentKind) -> Result<ProductDocument> {
            let version: i64 = r.try_get("version")?;
            Ok(ProductDocument {
                product_key: r.try_get("product_key")?,
                kind,
                draft: r.try_get("draft")?,
                draft_updated_at: opt_from_ms(r.try_get("draft_at")?)?,
                published: r.try_get("published")?,
                version: count(version),
                published_at: opt_from_ms(r.try_get("published_at")?)?,
            })
        }

        fn device_from_row(r: &DbRow) -> Result<Device> {
            Ok(Device {
                iot_id: r.try_get("iot_id")?,
                product_key: r.try_get("product_key")?,
                device_name: r.try_get("device_name")?,
                device_secret: r.try_get("device_secret")?,
                nickname: r.try_get("nickname")?,
                state: DeviceState::parse(r.try_get("state")?)?,
                activated_at: opt_from_ms(r.try_get("activated_at")?)?,
                last_online_at: opt_from_ms(r.try_get("last_online_at")?)?,
                last_offline_at: opt_from_ms(r.try_get("last_offline_at")?)?,
                last_ip: r.try_get("last_ip")?,
                firmware_version: r.try_get("firmware_version")?,
                tags: tags_from_json(r.try_get("tags")?)?,
                dynamically_registered: r.try_get("dynamically_registered")?,
                created_at: from_ms(r.try_get("created_at")?)?,
            })
        }

        fn topic_from_row(r: &DbRow) -> Result<TopicCategory> {
            Ok(TopicCategory {
                id: r.try_get("id")?,
                product_key: r.try_get("product_key")?,
                template: r.try_get("template")?,
                permission: TopicPermission::parse(r.try_get("permission")?)?,
                description: r.try_get("description")?,
            })
        }

        fn event_from_row(r: &DbRow) -> Result<DeviceEvent> {
            Ok(DeviceEvent {
                id: r.try_get("id")?,
                product_key: r.try_get("product_key")?,
                device_name: r.try_get("device_name")?,
                event: DeviceEventKind::parse(r.try_get("event")?)?,
                reason: r.try_get("reason")?,
                ip: r.try_get("ip")?,
                at: from_ms(r.try_get("at")?)?,
            })
        }

        fn device_ref(pk: &str, dn: &str) -> String {
            format!("{pk}/{dn}")
        }

        fn device_not_found(pk: &str, dn: &str) -> RegistryError {
            RegistryError::DeviceNotFound(device_ref(pk, dn))
        }

        async fn log_event(
            tx: &mut Tx,
            pk: &str,
            dn: &str,
            event: DeviceEventKind,
            reason: Option<&str>,
            ip: Option<&str>,
            at: DateTime<Utc>,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO device_events (product_key, device_name, event, reason, ip, at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(pk)
            .bind(dn)
            .bind(event.as_str())
            .bind(reason)
            .bind(ip)
            .bind(to_ms(at))
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Locks a product row for the rest of the transaction (a no-op
        /// UPDATE works as a row lock on both backends) and returns its
        /// account and device count.
        async fn lock_product(tx: &mut Tx, pk: &str) -> Result<(String, i64)> {
            let row = sqlx::query(
                "UPDATE products SET device_count = device_count WHERE product_key = $1 \
                 RETURNING account_id, device_count",
            )
            .bind(pk)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| RegistryError::ProductNotFound(pk.to_owned()))?;
            Ok((row.try_get("account_id")?, row.try_get("device_count")?))
        }

        /// Locks a device row and returns it.
        async fn lock_device(tx: &mut Tx, pk: &str, dn: &str) -> Result<Device> {
            let row = sqlx::query(concat!(
                "UPDATE devices SET state = state WHERE product_key = $1 AND device_name = $2 \
                 RETURNING ",
                device_cols!()
            ))
            .bind(pk)
            .bind(dn)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| device_not_found(pk, dn))?;
            device_from_row(&row)
        }

        /// Adds `n` devices to an account's counter within its limit.
        async fn add_account_devices(
            tx: &mut Tx,
            account_id: &str,
            n: i64,
            limits: &RegistryLimits,
        ) -> Result<()> {
            let done = sqlx::query(
                "UPDATE accounts SET device_count = device_count + $2 \
                 WHERE id = $1 AND device_count + $2 <= $3",
            )
            .bind(account_id)
            .bind(n)
            .bind(i64::try_from(limits.devices_per_account).unwrap_or(i64::MAX))
            .execute(&mut **tx)
            .await?;
            if done.rows_affected() == 0 {
                return Err(RegistryError::DevicesPerAccountExceeded {
                    account_id: account_id.to_owned(),
                    limit: limits.devices_per_account,
                });
            }
            Ok(())
        }

        async fn upsert_tags(
            tx: &mut Tx,
            table: &'static str,
            owner_col: &'static str,
            owner: &str,
            tags: &Tags,
        ) -> Result<()> {
            if tags.is_empty() {
                return Ok(());
            }
            let mut qb: QueryBuilder<$db> = QueryBuilder::new(format!(
                "INSERT INTO {table} ({owner_col}, tag_key, tag_value) "
            ));
            qb.push_values(tags, |mut b, (k, v)| {
                b.push_bind(owner.to_owned())
                    .push_bind(k.clone())
                    .push_bind(v.clone());
            });
            qb.push(format!(
                " ON CONFLICT ({owner_col}, tag_key) DO UPDATE SET tag_value = excluded.tag_value"
            ));
            qb.build().execute(&mut **tx).await?;
            Ok(())
        }

        async fn delete_tags(
            tx: &mut Tx,
            table: &'static str,
            owner_col: &'static str,
            owner: &str,
            keys: &[String],
        ) -> Result<()> {
            if keys.is_empty() {
                return Ok(());
            }
            let mut qb: QueryBuilder<$db> =
                QueryBuilder::new(format!("DELETE FROM {table} WHERE {owner_col} = "));
            qb.push_bind(owner.to_owned()).push(" AND tag_key IN (");
            let mut sep = qb.separated(", ");
            for k in keys {
                sep.push_bind(k.clone());
            }
            qb.push(")");
            qb.build().execute(&mut **tx).await?;
            Ok(())
        }

        /// Where the devices of a listing come from.
        enum Scope<'s> {
            Product(&'s str),
            Account(&'s str),
        }

        fn push_device_filters(
            qb: &mut QueryBuilder<$db>,
            scope: &Scope<'_>,
            filter: &DeviceFilter,
            upper: Option<&str>,
        ) {
            match scope {
                Scope::Product(pk) => {
                    qb.push(" WHERE d.product_key = ").push_bind(pk.to_string());
                }
                Scope::Account(acc) => {
                    qb.push(
                        " WHERE d.product_key IN (SELECT product_key FROM products \
                         WHERE account_id = ",
                    )
                    .push_bind(acc.to_string())
                    .push(")");
                }
            }
            if let Some(state) = filter.state {
                qb.push(" AND d.state = ").push_bind(state.as_str());
            }
            if let (Some(prefix), Some(upper)) = (&filter.name_prefix, upper) {
                qb.push(" AND d.device_name >= ")
                    .push_bind(prefix.clone())
                    .push(" AND d.device_name < ")
                    .push_bind(upper.to_owned());
            }
            if let Some((key, value)) = &filter.tag {
                qb.push(
                    " AND EXISTS (SELECT 1 FROM device_tags t WHERE t.iot_id = d.iot_id \
                     AND t.tag_key = ",
                )
                .push_bind(key.clone());
                if let Some(value) = value {
                    qb.push(" AND t.tag_value = ").push_bind(value.clone());
                }
                qb.push(")");
            }
        }

        async fn list_devices_scoped(
            pool: &sqlx::Pool<$db>,
            limits: &RegistryLimits,
            scope: Scope<'_>,
            filter: &DeviceFilter,
            page: &PageRequest,
        ) -> Result<Page<Device>> {
            let spec = PageSpec::new(page, limits.page_size_max)?;
            let upper = match filter.name_prefix.as_deref() {
                Some(p) if !p.is_empty() => Some(prefix_upper_bound(p)?),
                _ => None,
            };
            let mut cq: QueryBuilder<$db> = QueryBuilder::new("SELECT count(*) FROM devices d");
            push_device_filters(&mut cq, &scope, filter, upper.as_deref());
            let total: i64 = cq.build_query_scalar().fetch_one(pool).await?;

            let mut qb: QueryBuilder<$db> =
                QueryBuilder::new(concat!("SELECT ", device_cols!(), " FROM devices d"));
            push_device_filters(&mut qb, &scope, filter, upper.as_deref());
            if let Some(cursor) = &spec.after {
                let (cpk, cdn) = split_device_cursor(cursor)?;
                qb.push(" AND (d.product_key > ")
                    .push_bind(cpk.to_owned())
                    .push(" OR (d.product_key = ")
                    .push_bind(cpk.to_owned())
                    .push(" AND d.device_name > ")
                    .push_bind(cdn.to_owned())
                    .push("))");
            }
            qb.push(" ORDER BY d.product_key, d.device_name LIMIT ")
                .push_bind(spec.fetch())
                .push(" OFFSET ")
                .push_bind(spec.offset);
            let rows = qb.build().fetch_all(pool).await?;
            spec.page(&rows, total, device_from_row, |d| device_ref(&d.product_key, &d.device_name))
        }

        impl $store {
            async fn fetch_product(&self, pk: &str) -> Result<Option<Product>> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    product_cols!(),
                    " FROM products WHERE product_key = $1"
                ))
                .bind(pk)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(product_from_row).transpose()
            }

            async fn fetch_device(&self, pk: &str, dn: &str) -> Result<Option<Device>> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    device_cols!(),
                    " FROM devices WHERE product_key = $1 AND device_name = $2"
                ))
                .bind(pk)
                .bind(dn)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(device_from_row).transpose()
            }

            async fn fetch_access_key(&self, id: &str) -> Result<Option<AccessKey>> {
                let row = sqlx::query(
                    "SELECT id, secret, account_id, enabled, created_at FROM access_keys \
                     WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(access_key_from_row).transpose()
            }

            async fn check_product_exists(&self, pk: &str) -> Result<()> {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT account_id FROM products WHERE product_key = $1")
                        .bind(pk)
                        .fetch_optional(&self.pool)
                        .await?;
                match found {
                    Some(_) => Ok(()),
                    None => Err(RegistryError::ProductNotFound(pk.to_owned())),
                }
            }

            async fn update_device_returning(
                &self,
                tx: &mut Tx,
                sql: &'static str,
                pk: &str,
                dn: &str,
                value: Option<String>,
            ) -> Result<Device> {
                let row = sqlx::query(sql)
                    .bind(pk)
                    .bind(dn)
                    .bind(value)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| device_not_found(pk, dn))?;
                device_from_row(&row)
            }

            async fn change_tags(
                &self,
                pk: &str,
                dn: Option<&str>,
                add: Tags,
                remove: Vec<String>,
            ) -> Result<Tags> {
                validate_tags(&add)?;
                let mut tx = self.begin_write().await?;
                let (owner, current, object) = match dn {
                    None => {
                        let row = sqlx::query(
                            "UPDATE products SET tags = tags WHERE product_key = $1 \
                             RETURNING product_key, tags",
                        )
                        .bind(pk)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| RegistryError::ProductNotFound(pk.to_owned()))?;
                        let tags: String = row.try_get("tags")?;
                        (pk.to_owned(), tags, format!("product {pk}"))
                    }
                    Some(dn) => {
                        let row = sqlx::query(
                            "UPDATE devices SET tags = tags WHERE product_key = $1 \
                             AND device_name = $2 RETURNING iot_id, tags",
                        )
                        .bind(pk)
                        .bind(dn)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| device_not_found(pk, dn))?;
                        let tags: String = row.try_get("tags")?;
                        (
                            row.try_get::<String, _>("iot_id")?,
                            tags,
                            format!("device {pk}/{dn}"),
                        )
                    }
                };
                let mut merged = tags_from_json(&current)?;
                for k in &remove {
                    merged.remove(k);
                }
                merged.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
                if merged.len() as u64 > self.limits.tags_per_object {
                    return Err(RegistryError::TooManyTags {
                        object,
                        limit: self.limits.tags_per_object,
                    });
                }
                let (table, owner_col, update) = match dn {
                    None => (
                        "product_tags",
                        "product_key",
                        "UPDATE products SET tags = $2 WHERE product_key = $1",
                    ),
                    Some(_) => (
                        "device_tags",
                        "iot_id",
                        "UPDATE devices SET tags = $2 WHERE iot_id = $1",
                    ),
                };
                delete_tags(&mut tx, table, owner_col, &owner, &remove).await?;
                upsert_tags(&mut tx, table, owner_col, &owner, &add).await?;
                sqlx::query(update)
                    .bind(&owner)
                    .bind(tags_to_json(&merged))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(merged)
            }
        }

        impl RegistryStore for $store {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn rules(&self) -> &dyn crate::RuleStore {
                self
            }

            fn groups(&self) -> &dyn crate::GroupStore {
                self
            }

            fn shadows(&self) -> &dyn crate::ShadowStore {
                self
            }

            fn ota(&self) -> &dyn crate::OtaStore {
                self
            }

            fn configs(&self) -> &dyn crate::ConfigStore {
                self
            }

            fn topology(&self) -> &dyn crate::TopologyStore {
                self
            }

            fn limits(&self) -> RegistryLimits {
                self.limits
            }

            fn create_account<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Account>> {
                Box::pin(async move {
                    let account = Account {
                        id: ids::generate_account_id(),
                        name: name.to_owned(),
                        created_at: now(),
                    };
                    sqlx::query(
                        "INSERT INTO accounts (id, name, product_count, device_count, created_at) \
                         VALUES ($1, $2, 0, 0, $3)",
                    )
                    .bind(&account.id)
                    .bind(&account.name)
                    .bind(to_ms(account.created_at))
                    .execute(&self.pool)
                    .await?;
                    Ok(account)
                })
            }

            fn get_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Account>>> {
                Box::pin(async move {
                    let row =
                        sqlx::query("SELECT id, name, created_at FROM accounts WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&self.pool)
                            .await?;
                    row.as_ref().map(account_from_row).transpose()
                })
            }

            fn list_accounts(&self) -> BoxFuture<'_, Result<Vec<Account>>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT id, name, created_at FROM accounts ORDER BY created_at, id",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(account_from_row).collect()
                })
            }

            fn delete_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    let products: Option<i64> = sqlx::query_scalar(
                        "UPDATE accounts SET product_count = product_count WHERE id = $1 \
                         RETURNING product_count",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match products {
                        None => return Err(RegistryError::AccountNotFound(id.to_owned())),
                        Some(n) if n > 0 => {
                            return Err(RegistryError::AccountNotEmpty(id.to_owned()));
                        }
                        Some(_) => {}
                    }
                    sqlx::query("DELETE FROM access_keys WHERE account_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM accounts WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            if is_fk_violation(&e) {
                                RegistryError::AccountNotEmpty(id.to_owned())
                            } else {
                                e.into()
                            }
                        })?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn import_access_key<'a>(
                &'a self,
                account_id: &'a str,
                id: &'a str,
                secret: &'a str,
            ) -> BoxFuture<'a, Result<AccessKey>> {
                Box::pin(async move {
                    if id.is_empty() || id.len() > 64 || secret.len() < 16 || secret.len() > 128 {
                        return Err(RegistryError::InvalidParameter {
                            field: "accessKey",
                            reason: "an access key id has 1 to 64 characters and its secret 16 to 128"
                                .into(),
                        });
                    }
                    let key = AccessKey {
                        id: id.to_owned(),
                        secret: secret.to_owned(),
                        account_id: account_id.to_owned(),
                        enabled: true,
                        created_at: now(),
                    };
                    let inserted = sqlx::query(
                        "INSERT INTO access_keys (id, secret, account_id, enabled, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&key.id)
                    .bind(&key.secret)
                    .bind(&key.account_id)
                    .bind(key.enabled)
                    .bind(to_ms(key.created_at))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        if is_fk_violation(&e) {
                            RegistryError::AccountNotFound(account_id.to_owned())
                        } else {
                            e.into()
                        }
                    })?;
                    if inserted.rows_affected() == 0 {
                        return Err(RegistryError::InvalidParameter {
                            field: "accessKeyId",
                            reason: format!("access key {id} already exists"),
                        });
                    }
                    Ok(key)
                })
            }

            fn create_access_key<'a>(
                &'a self,
                account_id: &'a str,
            ) -> BoxFuture<'a, Result<AccessKey>> {
                Box::pin(async move {
                    let key = AccessKey {
                        id: ids::generate_access_key_id(),
                        secret: ids::generate_access_key_secret(),
                        account_id: account_id.to_owned(),
                        enabled: true,
                        created_at: now(),
                    };
                    sqlx::query(
                        "INSERT INTO access_keys (id, secret, account_id, enabled, created_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&key.id)
                    .bind(&key.secret)
                    .bind(&key.account_id)
                    .bind(key.enabled)
                    .bind(to_ms(key.created_at))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        if is_fk_violation(&e) {
                            RegistryError::AccountNotFound(account_id.to_owned())
                        } else {
                            e.into()
                        }
                    })?;
                    Ok(key)
                })
            }

            fn get_access_key<'a>(
                &'a self,
                id: &'a str,
            ) -> BoxFuture<'a, Result<Option<AccessKey>>> {
                Box::pin(self.fetch_access_key(id))
            }

            fn list_access_keys<'a>(
                &'a self,
                account_id: &'a str,
            ) -> BoxFuture<'a, Result<Vec<AccessKey>>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT id, secret, account_id, enabled, created_at FROM access_keys \
                         WHERE account_id = $1 ORDER BY created_at, id",
                    )
                    .bind(account_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(access_key_from_row).collect()
                })
            }

            fn set_access_key_enabled<'a>(
                &'a self,
                id: &'a str,
                enabled: bool,
            ) -> BoxFuture<'a, Result<AccessKey>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "UPDATE access_keys SET enabled = $2 WHERE id = $1 \
                         RETURNING id, secret, account_id, enabled, created_at",
                    )
                    .bind(id)
                    .bind(enabled)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| RegistryError::AccessKeyNotFound(id.to_owned()))?;
                    access_key_from_row(&row)
                })
            }

            fn delete_access_key<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM access_keys WHERE id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(RegistryError::AccessKeyNotFound(id.to_owned()));
                    }
                    Ok(())
                })
            }

            fn create_product<'a>(
                &'a self,
                account_id: &'a str,
                product: NewProduct,
            ) -> BoxFuture<'a, Result<Product>> {
                Box::pin(async move {
                    ids::validate_product_name(&product.name)?;
                    validate_tags(&product.tags)?;
                    if product.tags.len() as u64 > self.limits.tags_per_object {
                        return Err(RegistryError::TooManyTags {
                            object: format!("product {:?}", product.name),
                            limit: self.limits.tags_per_object,
                        });
                    }
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query(
                        "UPDATE accounts SET product_count = product_count + 1 \
                         WHERE id = $1 AND product_count < $2",
                    )
                    .bind(account_id)
                    .bind(i64::try_from(self.limits.products_per_account).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        let exists: Option<String> =
                            sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1")
                                .bind(account_id)
                                .fetch_optional(&mut *tx)
                                .await?;
                        return Err(match exists {
                            None => RegistryError::AccountNotFound(account_id.to_owned()),
                            Some(_) => RegistryError::ProductsPerAccountExceeded {
                                account_id: account_id.to_owned(),
                                limit: self.limits.products_per_account,
                            },
                        });
                    }
                    let p = Product {
                        product_key: ids::generate_product_key(),
                        product_secret: ids::generate_product_secret(),
                        account_id: account_id.to_owned(),
                        name: product.name,
                        node_type: product.node_type,
                        data_format: product.data_format,
                        auth_type: product.auth_type,
                        dynamic_registration: product.dynamic_registration,
                        description: product.description,
                        tags: product.tags,
                        created_at: now(),
                    };
                    sqlx::query(concat!(
                        "INSERT INTO products (",
                        product_cols!(),
                        ", device_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0)"
                    ))
                    .bind(&p.product_key)
                    .bind(&p.product_secret)
                    .bind(&p.account_id)
                    .bind(&p.name)
                    .bind(p.node_type.as_str())
                    .bind(p.data_format.as_str())
                    .bind(p.auth_type.as_str())
                    .bind(p.dynamic_registration)
                    .bind(&p.description)
                    .bind(tags_to_json(&p.tags))
                    .bind(to_ms(p.created_at))
                    .execute(&mut *tx)
                    .await?;
                    upsert_tags(&mut tx, "product_tags", "product_key", &p.product_key, &p.tags)
                        .await?;
                    for (template, permission) in DEFAULT_TOPIC_CATEGORIES {
                        sqlx::query(
                            "INSERT INTO topic_categories \
                             (product_key, template, permission, description) \
                             VALUES ($1, $2, $3, '')",
                        )
                        .bind(&p.product_key)
                        .bind(template)
                        .bind(permission.as_str())
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(p)
                })
            }

            fn get_product<'a>(
                &'a self,
                product_key: &'a str,
            ) -> BoxFuture<'a, Result<Option<Product>>> {
                Box::pin(self.fetch_product(product_key))
            }

            fn list_products<'a>(
                &'a self,
                account_id: &'a str,
                page: PageRequest,
            ) -> BoxFuture<'a, Result<Page<Product>>> {
                Box::pin(async move {
                    let spec = PageSpec::new(&page, self.limits.page_size_max)?;
                    let total: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM products WHERE account_id = $1")
                            .bind(account_id)
                            .fetch_one(&self.pool)
                            .await?;
                    let rows = sqlx::query(concat!(
                        "SELECT ",
                        product_cols!(),
                        " FROM products WHERE account_id = $1 AND product_key > $2 \
                         ORDER BY product_key LIMIT $3 OFFSET $4"
                    ))
                    .bind(account_id)
                    .bind(spec.after.clone().unwrap_or_default())
                    .bind(spec.fetch())
                    .bind(spec.offset)
                    .fetch_all(&self.pool)
                    .await?;
                    spec.page(&rows, total, product_from_row, |p| p.product_key.clone())
                })
            }

            fn update_product<'a>(
                &'a self,
                product_key: &'a str,
                update: ProductUpdate,
            ) -> BoxFuture<'a, Result<Product>> {
                Box::pin(async move {
                    if let Some(name) = &update.name {
                        ids::validate_product_name(name)?;
                    }
                    let row = sqlx::query(concat!(
                        "UPDATE products SET name = COALESCE($2, name), \
                         description = COALESCE($3, description), \
                         dynamic_registration = COALESCE($4, dynamic_registration) \
                         WHERE product_key = $1 RETURNING ",
                        product_cols!()
                    ))
                    .bind(product_key)
                    .bind(update.name)
                    .bind(update.description)
                    .bind(update.dynamic_registration)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| RegistryError::ProductNotFound(product_key.to_owned()))?;
                    product_from_row(&row)
                })
            }

            fn delete_product<'a>(&'a self, product_key: &'a str) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    let (account_id, devices) = lock_product(&mut tx, product_key).await?;
                    if devices > 0 {
                        return Err(RegistryError::ProductNotEmpty {
                            product_key: product_key.to_owned(),
                            devices: count(devices),
                        });
                    }
                    sqlx::query("DELETE FROM products WHERE product_key = $1")
                        .bind(product_key)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "UPDATE accounts SET product_count = product_count - 1 WHERE id = $1",
                    )
                    .bind(&account_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn get_document<'a>(
                &'a self,
                product_key: &'a str,
                kind: DocumentKind,
            ) -> BoxFuture<'a, Result<Option<ProductDocument>>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT product_key, draft, draft_at, published, version, published_at \
                         FROM product_documents WHERE product_key = $1 AND kind = $2",
                    )
                    .bind(product_key)
                    .bind(kind.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|r| document_from_row(&r, kind)).transpose()
                })
            }

            fn save_draft<'a>(
                &'a self,
                product_key: &'a str,
                kind: DocumentKind,
                text: &'a str,
            ) -> BoxFuture<'a, Result<ProductDocument>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO product_documents (product_key, kind, draft, draft_at) \
                         VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (product_key, kind) DO UPDATE \
                         SET draft = excluded.draft, draft_at = excluded.draft_at \
                         RETURNING product_key, draft, draft_at, published, version, published_at",
                    )
                    .bind(product_key)
                    .bind(kind.as_str())
                    .bind(text)
                    .bind(to_ms(now()))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| {
                        if is_fk_violation(&e) {
                            RegistryError::ProductNotFound(product_key.to_owned())
                        } else {
                            e.into()
                        }
                    })?;
                    document_from_row(&row, kind)
                })
            }

            fn publish_draft<'a>(
                &'a self,
                product_key: &'a str,
                kind: DocumentKind,
            ) -> BoxFuture<'a, Result<ProductDocument>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "UPDATE product_documents \
                         SET published = draft, version = version + 1, published_at = $3 \
                         WHERE product_key = $1 AND kind = $2 AND draft IS NOT NULL \
                         RETURNING product_key, draft, draft_at, published, version, published_at",
                    )
                    .bind(product_key)
                    .bind(kind.as_str())
                    .bind(to_ms(now()))
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(r) => document_from_row(&r, kind),
                        None => {
                            self.check_product_exists(product_key).await?;
                            Err(RegistryError::NothingToPublish {
                                product_key: product_key.to_owned(),
                                kind: kind.as_str().to_owned(),
                            })
                        }
                    }
                })
            }

            fn count_products<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<u64>> {
                Box::pin(async move {
                    let n: Option<i64> =
                        sqlx::query_scalar("SELECT product_count FROM accounts WHERE id = $1")
                            .bind(account_id)
                            .fetch_optional(&self.pool)
                            .await?;
                    n.map(count)
                        .ok_or_else(|| RegistryError::AccountNotFound(account_id.to_owned()))
                })
            }

            fn set_product_tags<'a>(
                &'a self,
                product_key: &'a str,
                tags: Tags,
            ) -> BoxFuture<'a, Result<Tags>> {
                Box::pin(self.change_tags(product_key, None, tags, Vec::new()))
            }

            fn remove_product_tags<'a>(
                &'a self,
                product_key: &'a str,
                keys: Vec<String>,
            ) -> BoxFuture<'a, Result<Tags>> {
                Box::pin(self.change_tags(product_key, None, BTreeMap::new(), keys))
            }

            fn find_products_by_tag<'a>(
                &'a self,
                account_id: &'a str,
                key: &'a str,
                value: Option<&'a str>,
            ) -> BoxFuture<'a, Result<Vec<Product>>> {
                Box::pin(async move {
                    let mut qb: QueryBuilder<$db> = QueryBuilder::new(concat!(
                        "SELECT ",
                        product_cols!(),
                        " FROM products p WHERE p.account_id = "
                    ));
                    qb.push_bind(account_id.to_owned())
                        .push(
                            " AND EXISTS (SELECT 1 FROM product_tags t \
                             WHERE t.product_key = p.product_key AND t.tag_key = ",
                        )
                        .push_bind(key.to_owned());
                    if let Some(value) = value {
                        qb.push(" AND t.tag_value = ").push_bind(value.to_owned());
                    }
                    qb.push(") ORDER BY p.product_key");
                    let rows = qb.build().fetch_all(&self.pool).await?;
                    rows.iter().map(product_from_row).collect()
                })
            }

            fn create_topic_category<'a>(
                &'a self,
                product_key: &'a str,
                category: NewTopicCategory,
            ) -> BoxFuture<'a, Result<TopicCategory>> {
                Box::pin(async move {
                    ids::validate_topic_template(&category.template)?;
                    let mut tx = self.begin_write().await?;
                    lock_product(&mut tx, product_key).await?;
                    let n: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM topic_categories WHERE product_key = $1",
                    )
                    .bind(product_key)
                    .fetch_one(&mut *tx)
                    .await?;
                    if count(n) >= self.limits.topic_categories_per_product {
                        return Err(RegistryError::TooManyTopicCategories {
                            product_key: product_key.to_owned(),
                            limit: self.limits.topic_categories_per_product,
                        });
                    }
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO topic_categories \
                         (product_key, template, permission, description) \
                         VALUES ($1, $2, $3, $4) RETURNING id",
                    )
                    .bind(product_key)
                    .bind(&category.template)
                    .bind(category.permission.as_str())
                    .bind(&category.description)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            RegistryError::TopicCategoryAlreadyExists {
                                product_key: product_key.to_owned(),
                                template: category.template.clone(),
                            }
                        } else {
                            e.into()
                        }
                    })?;
                    tx.commit().await?;
                    Ok(TopicCategory {
                        id,
                        product_key: product_key.to_owned(),
                        template: category.template,
                        permission: category.permission,
                        description: category.description,
                    })
                })
            }

            fn list_topic_categories<'a>(
                &'a self,
                product_key: &'a str,
            ) -> BoxFuture<'a, Result<Vec<TopicCategory>>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT id, product_key, template, permission, description \
                         FROM topic_categories WHERE product_key = $1 ORDER BY id",
                    )
                    .bind(product_key)
                    .fetch_all(&self.pool)
                    .await?;
                    if rows.is_empty() {
                        self.check_product_exists(product_key).await?;
                    }
                    rows.iter().map(topic_from_row).collect()
                })
            }

            fn update_topic_category<'a>(
                &'a self,
                product_key: &'a str,
                id: i64,
                category: NewTopicCategory,
            ) -> BoxFuture<'a, Result<TopicCategory>> {
                Box::pin(async move {
                    ids::validate_topic_template(&category.template)?;
                    let row = sqlx::query(
                        "UPDATE topic_categories SET template = $3, permission = $4, \
                         description = $5 WHERE product_key = $1 AND id = $2 \
                         RETURNING id, product_key, template, permission, description",
                    )
                    .bind(product_key)
                    .bind(id)
                    .bind(&category.template)
                    .bind(category.permission.as_str())
                    .bind(&category.description)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            RegistryError::TopicCategoryAlreadyExists {
                                product_key: product_key.to_owned(),
                                template: category.template.clone(),
                            }
                        } else {
                            e.into()
                        }
                    })?
                    .ok_or_else(|| RegistryError::TopicCategoryNotFound {
                        product_key: product_key.to_owned(),
                        id,
                    })?;
                    topic_from_row(&row)
                })
            }

            fn delete_topic_category<'a>(
                &'a self,
                product_key: &'a str,
                id: i64,
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "DELETE FROM topic_categories WHERE product_key = $1 AND id = $2",
                    )
                    .bind(product_key)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(RegistryError::TopicCategoryNotFound {
                            product_key: product_key.to_owned(),
                            id,
                        });
                    }
                    Ok(())
                })
            }

            fn create_device<'a>(
                &'a self,
                product_key: &'a str,
                device: NewDevice,
            ) -> BoxFuture<'a, Result<Device>> {
                Box::pin(async move {
                    ids::validate_device_name(&device.device_name)?;
                    validate_nickname(device.nickname.as_deref())?;
                    let mut tx = self.begin_write().await?;
                    let (account_id, devices) = lock_product(&mut tx, product_key).await?;
                    let exists: Option<String> = sqlx::query_scalar(
                        "SELECT iot_id FROM devices WHERE product_key = $1 AND device_name = $2",
                    )
                    .bind(product_key)
                    .bind(&device.device_name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if exists.is_some() {
                        return Err(RegistryError::DeviceAlreadyExists {
                            product_key: product_key.to_owned(),
                            device_name: device.device_name,
                        });
                    }
                    if count(devices) >= self.limits.devices_per_product {
                        return Err(RegistryError::DevicesPerProductExceeded {
                            product_key: product_key.to_owned(),
                            limit: self.limits.devices_per_product,
                        });
                    }
                    let d = Device {
                        iot_id: ids::generate_iot_id(),
                        product_key: product_key.to_owned(),
                        device_name: device.device_name,
                        device_secret: ids::generate_device_secret(),
                        nickname: device.nickname,
                        state: DeviceState::Inactive,
                        activated_at: None,
                        last_online_at: None,
                        last_offline_at: None,
                        last_ip: None,
                        firmware_version: None,
                        tags: Tags::new(),
                        dynamically_registered: device.dynamically_registered,
                        created_at: now(),
                    };
                    sqlx::query(
                        "INSERT INTO devices (iot_id, product_key, device_name, device_secret, \
                         nickname, state, tags, dynamically_registered, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, '{}', $7, $8)",
                    )
                    .bind(&d.iot_id)
                    .bind(&d.product_key)
                    .bind(&d.device_name)
                    .bind(&d.device_secret)
                    .bind(&d.nickname)
                    .bind(d.state.as_str())
                    .bind(d.dynamically_registered)
                    .bind(to_ms(d.created_at))
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE products SET device_count = device_count + 1 \
                         WHERE product_key = $1",
                    )
                    .bind(product_key)
                    .execute(&mut *tx)
                    .await?;
                    add_account_devices(&mut tx, &account_id, 1, &self.limits).await?;
                    log_event(
                        &mut tx,
                        product_key,
                        &d.device_name,
                        DeviceEventKind::Created,
                        None,
                        None,
                        d.created_at,
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(d)
                })
            }

            fn register_devices_batch<'a>(
                &'a self,
                product_key: &'a str,
                names: Vec<String>,
            ) -> BoxFuture<'a, Result<Vec<BatchItem>>> {
                Box::pin(async move {
                    let limit = self.limits.batch_register_max;
                    if names.len() > limit {
                        return Err(RegistryError::BatchTooLarge {
                            len: names.len(),
                            limit,
                        });
                    }
                    let created_at = now();
                    let mut results: Vec<Option<Result<Device>>> =
                        Vec::with_capacity(names.len());
                    let mut seen = HashSet::with_capacity(names.len());
                    let mut candidates: Vec<(usize, Device)> = Vec::with_capacity(names.len());
                    for (i, name) in names.iter().enumerate() {
                        if let Err(e) = ids::validate_device_name(name) {
                            results.push(Some(Err(e)));
                        } else if !seen.insert(name.as_str()) {
                            results.push(Some(Err(RegistryError::DeviceAlreadyExists {
                                product_key: product_key.to_owned(),
                                device_name: name.clone(),
                            })));
                        } else {
                            results.push(None);
                            candidates.push((
                                i,
                                Device {
                                    iot_id: ids::generate_iot_id(),
                                    product_key: product_key.to_owned(),
                                    device_name: name.clone(),
                                    device_secret: ids::generate_device_secret(),
                                    nickname: None,
                                    state: DeviceState::Inactive,
                                    activated_at: None,
                                    last_online_at: None,
                                    last_offline_at: None,
                                    last_ip: None,
                                    firmware_version: None,
                                    tags: Tags::new(),
                                    dynamically_registered: false,
                                    created_at,
                                },
                            ));
                        }
                    }

                    let mut tx = self.begin_write().await?;
                    let (account_id, devices) = lock_product(&mut tx, product_key).await?;
                    let at = to_ms(created_at);
                    let mut inserted: HashSet<String> = HashSet::with_capacity(candidates.len());
                    for chunk in candidates.chunks(INSERT_CHUNK) {
                        let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                            "INSERT INTO devices (iot_id, product_key, device_name, \
                             device_secret, state, tags, dynamically_registered, created_at) ",
                        );
                        qb.push_values(chunk, |mut b, (_, d)| {
                            b.push_bind(d.iot_id.clone())
                                .push_bind(d.product_key.clone())
                                .push_bind(d.device_name.clone())
                                .push_bind(d.device_secret.clone())
                                .push("'Inactive'")
                                .push("'{}'")
                                .push("FALSE")
                                .push_bind(at);
                        });
                        qb.push(
                            " ON CONFLICT (product_key, device_name) DO NOTHING \
                             RETURNING device_name",
                        );
                        let returned: Vec<String> =
                            qb.build_query_scalar().fetch_all(&mut *tx).await?;
                        inserted.extend(returned);
                    }
                    let n = inserted.len() as u64;
                    if n > 0 {
                        if count(devices) + n > self.limits.devices_per_product {
                            return Err(RegistryError::DevicesPerProductExceeded {
                                product_key: product_key.to_owned(),
                                limit: self.limits.devices_per_product,
                            });
                        }
                        let n = i64::try_from(n).unwrap_or(i64::MAX);
                        sqlx::query(
                            "UPDATE products SET device_count = device_count + $2 \
                             WHERE product_key = $1",
                        )
                        .bind(product_key)
                        .bind(n)
                        .execute(&mut *tx)
                        .await?;
                        add_account_devices(&mut tx, &account_id, n, &self.limits).await?;
                        let created: Vec<&str> = candidates
                            .iter()
                            .filter(|(_, d)| inserted.contains(&d.device_name))
                            .map(|(_, d)| d.device_name.as_str())
                            .collect();
                        for chunk in created.chunks(INSERT_CHUNK) {
                            let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                                "INSERT INTO device_events (product_key, device_name, event, at) ",
                            );
                            qb.push_values(chunk, |mut b, dn| {
                                b.push_bind(product_key.to_owned())
                                    .push_bind(dn.to_string())
                                    .push("'Created'")
                                    .push_bind(at);
                            });
                            qb.build().execute(&mut *tx).await?;
                        }
                    }
                    tx.commit().await?;

                    for (i, d) in candidates {
                        results[i] = Some(if inserted.contains(&d.device_name) {
                            Ok(d)
                        } else {
                            Err(RegistryError::DeviceAlreadyExists {
                                product_key: product_key.to_owned(),
                                device_name: d.device_name,
                            })
                        });
                    }
                    Ok(names
                        .into_iter()
                        .zip(results)
                        .map(|(device_name, result)| BatchItem {
                            device_name,
                            result: result.unwrap_or_else(|| {
                                Err(RegistryError::Corrupt("batch result missing".to_owned()))
                            }),
                        })
                        .collect())
                })
            }

            fn get_device<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
            ) -> BoxFuture<'a, Result<Option<Device>>> {
                Box::pin(self.fetch_device(product_key, device_name))
            }

            fn get_device_by_iot_id<'a>(
                &'a self,
                iot_id: &'a str,
            ) -> BoxFuture<'a, Result<Option<Device>>> {
                Box::pin(async move {
                    let row = sqlx::query(concat!(
                        "SELECT ",
                        device_cols!(),
                        " FROM devices WHERE iot_id = $1"
                    ))
                    .bind(iot_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(device_from_row).transpose()
                })
            }

            fn list_devices<'a>(
                &'a self,
                product_key: &'a str,
                filter: DeviceFilter,
                page: PageRequest,
            ) -> BoxFuture<'a, Result<Page<Device>>> {
                Box::pin(async move {
                    self.check_product_exists(product_key).await?;
                    let page = match page {
                        PageRequest::After {
                            cursor: Some(dn),
                            page_size,
                        } if !dn.contains('/') => PageRequest::After {
                            cursor: Some(device_ref(product_key, &dn)),
                            page_size,
                        },
                        other => other,
                    };
                    list_devices_scoped(
                        &self.pool,
                        &self.limits,
                        Scope::Product(product_key),
                        &filter,
                        &page,
                    )
                    .await
                })
            }

            fn set_device_state<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
                state: DeviceState,
                at: DateTime<Utc>,
                ip: Option<&'a str>,
                reason: Option<&'a str>,
            ) -> BoxFuture<'a, Result<Device>> {
                Box::pin(async move {
                    let sql = match state {
                        DeviceState::Online => concat!(
                            "UPDATE devices SET state = 'Online', last_online_at = $3, \
                             last_ip = COALESCE($4, last_ip), \
                             activated_at = COALESCE(activated_at, $3) \
                             WHERE product_key = $1 AND device_name = $2 RETURNING ",
                            device_cols!()
                        ),
                        DeviceState::Offline => concat!(
                            "UPDATE devices SET last_offline_at = $3, \
                             last_ip = COALESCE($4, last_ip), \
                             state = CASE WHEN activated_at IS NULL THEN state \
                             ELSE 'Offline' END \
                             WHERE product_key = $1 AND device_name = $2 RETURNING ",
                            device_cols!()
                        ),
                        other => {
                            return Err(RegistryError::InvalidParameter {
                                field: "state",
                                reason: format!(
                                    "{other} is not set this way (use set_device_enabled)"
                                ),
                            });
                        }
                    };
                    let mut tx = self.begin_write().await?;
                    let before = lock_device(&mut tx, product_key, device_name).await?;
                    if before.state == DeviceState::Disabled {
                        return Err(RegistryError::DeviceDisabled(device_ref(
                            product_key,
                            device_name,
                        )));
                    }
                    let row = sqlx::query(sql)
                        .bind(product_key)
                        .bind(device_name)
                        .bind(to_ms(at))
                        .bind(ip)
                        .fetch_one(&mut *tx)
                        .await?;
                    let device = device_from_row(&row)?;
                    if state == DeviceState::Online && before.activated_at.is_none() {
                        log_event(
                            &mut tx,
                            product_key,
                            device_name,
                            DeviceEventKind::Activated,
                            None,
                            ip,
                            at,
                        )
                        .await?;
                    }
                    let kind = if state == DeviceState::Online {
                        DeviceEventKind::Online
                    } else {
                        DeviceEventKind::Offline
                    };
                    log_event(&mut tx, product_key, device_name, kind, reason, ip, at).await?;
                    tx.commit().await?;
                    Ok(device)
                })
            }

            fn set_device_enabled<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
                enabled: bool,
                reason: Option<&'a str>,
            ) -> BoxFuture<'a, Result<Device>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    let before = lock_device(&mut tx, product_key, device_name).await?;
                    let disabled = before.state == DeviceState::Disabled;
                    if disabled != enabled {
                        return Ok(before);
                    }
                    let (sql, kind) = if enabled {
                        (
                            concat!(
                                "UPDATE devices SET state = CASE WHEN activated_at IS NULL \
                                 THEN 'Inactive' ELSE 'Offline' END \
                                 WHERE product_key = $1 AND device_name = $2 RETURNING ",
                                device_cols!()
                            ),
                            DeviceEventKind::Enabled,
                        )
                    } else {
                        (
                            concat!(
                                "UPDATE devices SET state = 'Disabled' \
                                 WHERE product_key = $1 AND device_name = $2 RETURNING ",
                                device_cols!()
                            ),
                            DeviceEventKind::Disabled,
                        )
                    };
                    let row = sqlx::query(sql)
                        .bind(product_key)
                        .bind(device_name)
                        .fetch_one(&mut *tx)
                        .await?;
                    let device = device_from_row(&row)?;
                    log_event(&mut tx, product_key, device_name, kind, reason, None, now())
                        .await?;
                    tx.commit().await?;
                    Ok(device)
                })
            }

            fn mark_dynamically_registered<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
            ) -> BoxFuture<'a, Result<Device>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    let row = sqlx::query(concat!(
                        "UPDATE devices SET dynamically_registered = $3 \
                         WHERE product_key = $1 AND device_name = $2 \
                         AND dynamically_registered = $4 AND activated_at IS NULL RETURNING ",
                        device_cols!()
                    ))
                    .bind(product_key)
                    .bind(device_name)
                    .bind(true)
                    .bind(false)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        let exists = sqlx::query(
                            "SELECT 1 FROM devices WHERE product_key = $1 AND device_name = $2",
                        )
                        .bind(product_key)
                        .bind(device_name)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                        return Err(if exists {
                            RegistryError::DeviceAlreadyRegistered(format!(
                                "{product_key}/{device_name}"
                            ))
                        } else {
                            device_not_found(product_key, device_name)
                        });
                    };
                    let device = device_from_row(&row)?;
                    tx.commit().await?;
                    Ok(device)
                })
            }

            fn reset_device_secret<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
            ) -> BoxFuture<'a, Result<Device>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    let device = self
                        .update_device_returning(
                            &mut tx,
                            concat!(
                                "UPDATE devices SET device_secret = $3 \
                                 WHERE product_key = $1 AND device_name = $2 RETURNING ",
                                device_cols!()
                            ),
                            product_key,
                            device_name,
                            Some(ids::generate_device_secret()),
                        )
                        .await?;
                    log_event(
                        &mut tx,
                        product_key,
                        device_name,
                        DeviceEventKind::SecretReset,
                        None,
                        None,
                        now(),
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(device)
                })
            }

            fn set_device_nickname<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
                nickname: Option<&'a str>,
            ) -> BoxFuture<'a, Result<Device>> {
                Box::pin(async move {
                    validate_nickname(nickname)?;
                    let mut tx = self.begin_write().await?;
                    let device = self
                        .update_device_returning(
                            &mut tx,
                            concat!(
                                "UPDATE devices SET nickname = $3 \
                                 WHERE product_key = $1 AND device_name = $2 RETURNING ",
                                device_cols!()
                            ),
                            product_key,
                            device_name,
                            nickname.map(str::to_owned),
                        )
                        .await?;
                    tx.commit().await?;
                    Ok(device)
                })
            }

            fn set_device_firmware_version<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
                version: &'a str,
            ) -> BoxFuture<'a, Result<Device>> {
                Box::pin(async move {
                    if version.is_empty() || version.len() > 64 {
                        return Err(RegistryError::InvalidParameter {
                            field: "firmware_version",
                            reason: "must have 1 to 64 bytes".to_owned(),
                        });
                    }
                    let mut tx = self.begin_write().await?;
                    let device = self
                        .update_device_returning(
                            &mut tx,
                            concat!(
                                "UPDATE devices SET firmware_version = $3 \
                                 WHERE product_key = $1 AND device_name = $2 RETURNING ",
                                device_cols!()
                            ),
                            product_key,
                            device_name,
                            Some(version.to_owned()),
                        )
                        .await?;
                    tx.commit().await?;
                    Ok(device)
                })
            }

            fn delete_device<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    let (account_id, _) = lock_product(&mut tx, product_key)
                        .await
                        .map_err(|e| match e {
                            RegistryError::ProductNotFound(_) => {
                                device_not_found(product_key, device_name)
                            }
                            e => e,
                        })?;
                    let done = sqlx::query(
                        "DELETE FROM devices WHERE product_key = $1 AND device_name = $2",
                    )
                    .bind(product_key)
                    .bind(device_name)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(device_not_found(product_key, device_name));
                    }
                    sqlx::query(
                        "UPDATE products SET device_count = device_count - 1 \
                         WHERE product_key = $1",
                    )
                    .bind(product_key)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE accounts SET device_count = device_count - 1 WHERE id = $1")
                        .bind(&account_id)
                        .execute(&mut *tx)
                        .await?;
                    log_event(
                        &mut tx,
                        product_key,
                        device_name,
                        DeviceEventKind::Deleted,
                        None,
                        None,
                        now(),
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn set_device_tags<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
                tags: Tags,
            ) -> BoxFuture<'a, Result<Tags>> {
                Box::pin(self.change_tags(product_key, Some(device_name), tags, Vec::new()))
            }

            fn remove_device_tags<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
                keys: Vec<String>,
            ) -> BoxFuture<'a, Result<Tags>> {
                Box::pin(self.change_tags(product_key, Some(device_name), BTreeMap::new(), keys))
            }

            fn find_devices_by_tag<'a>(
                &'a self,
                account_id: &'a str,
                key: &'a str,
                value: Option<&'a str>,
                page: PageRequest,
            ) -> BoxFuture<'a, Result<Page<Device>>> {
                Box::pin(async move {
                    let filter = DeviceFilter {
                        tag: Some((key.to_owned(), value.map(str::to_owned))),
                        ..DeviceFilter::default()
                    };
                    list_devices_scoped(
                        &self.pool,
                        &self.limits,
                        Scope::Account(account_id),
                        &filter,
                        &page,
                    )
                    .await
                })
            }

            fn count_devices<'a>(&'a self, product_key: &'a str) -> BoxFuture<'a, Result<u64>> {
                Box::pin(async move {
                    let n: Option<i64> = sqlx::query_scalar(
                        "SELECT device_count FROM products WHERE product_key = $1",
                    )
                    .bind(product_key)
                    .fetch_optional(&self.pool)
                    .await?;
                    n.map(count)
                        .ok_or_else(|| RegistryError::ProductNotFound(product_key.to_owned()))
                })
            }

            fn count_account_devices<'a>(
                &'a self,
                account_id: &'a str,
            ) -> BoxFuture<'a, Result<u64>> {
                Box::pin(async move {
                    let n: Option<i64> =
                        sqlx::query_scalar("SELECT device_count FROM accounts WHERE id = $1")
                            .bind(account_id)
                            .fetch_optional(&self.pool)
                            .await?;
                    n.map(count)
                        .ok_or_else(|| RegistryError::AccountNotFound(account_id.to_owned()))
                })
            }

            fn list_device_events<'a>(
                &'a self,
                product_key: &'a str,
                device_name: &'a str,
                page: PageRequest,
            ) -> BoxFuture<'a, Result<Page<DeviceEvent>>> {
                Box::pin(async move {
                    let spec = PageSpec::new(&page, self.limits.page_size_max)?;
                    let before = match &spec.after {
                        None => i64::MAX,
                        Some(c) => c
                            .parse::<i64>()
                            .map_err(|_| RegistryError::InvalidCursor(c.clone()))?,
                    };
                    let total: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM device_events \
                         WHERE product_key = $1 AND device_name = $2",
                    )
                    .bind(product_key)
                    .bind(device_name)
                    .fetch_one(&self.pool)
                    .await?;
                    let rows = sqlx::query(
                        "SELECT id, product_key, device_name, event, reason, ip, at \
                         FROM device_events \
                         WHERE product_key = $1 AND device_name = $2 AND id < $3 \
                         ORDER BY id DESC LIMIT $4 OFFSET $5",
                    )
                    .bind(product_key)
                    .bind(device_name)
                    .bind(before)
                    .bind(spec.fetch())
                    .bind(spec.offset)
                    .fetch_all(&self.pool)
                    .await?;
                    spec.page(&rows, total, event_from_row, |e| e.id.to_string())
                })
            }
        }
    };
}

pub(crate) use registry_backend;

/// Applies the migrations newer than the recorded version, each in its own
/// transaction, recording it in `lode_registry_migrations`.
macro_rules! run_migrations {
    ($pool:expr, $db:ty, $migrations:expr, $lock_sql:expr) => {{
        let pool: &sqlx::Pool<$db> = $pool;
        let lock_sql: Option<&'static str> = $lock_sql;
        let mut result: $crate::Result<()> = Ok(());
        for m in $migrations {
            let step = async {
                let mut tx = pool.begin().await?;
                if let Some(lock) = lock_sql {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS lode_registry_migrations \
                     (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                )
                .execute(&mut *tx)
                .await?;
                let done: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM lode_registry_migrations WHERE version = $1",
                )
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
                if done.is_none() {
                    sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO lode_registry_migrations (version, name, applied_at) \
                         VALUES ($1, $2, $3)",
                    )
                    .bind(m.version)
                    .bind(m.name)
                    .bind($crate::backend::to_ms(chrono::Utc::now()))
                    .execute(&mut *tx)
                    .await?;
                    tracing::info!(
                        version = m.version,
                        name = m.name,
                        "registry schema migrated"
                    );
                }
                tx.commit().await?;
                Ok::<(), sqlx::Error>(())
            };
            if let Err(source) = step.await {
                result = Err($crate::RegistryError::Migration {
                    version: m.version,
                    source,
                });
                break;
            }
        }
        result
    }};
}

pub(crate) use run_migrations;
