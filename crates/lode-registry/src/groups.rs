//! Storage of device groups (with subgroups) and tags on products, devices and groups.
//!
//! A group belongs to one account and has a name unique in that account, a description,
//! tags, and optionally a parent: groups nest up to [`RegistryLimits::group_depth`]
//! levels (a top-level group is level 1). A group with subgroups is not deleted
//! (`GroupHasSubgroups`): its subgroups are deleted first, so that a deletion never
//! removes more than the caller named. Deleting a group removes its memberships, never
//! its devices; deleting a device removes its memberships (the foreign key cascades).
//!
//! Every limit is checked inside the write transaction that would break it, with the
//! rows it depends on locked first (the account for the group count, the group for its
//! member count, each device, in `iot_id` order, for its group count), so concurrent
//! callers cannot overshoot on either backend.
//!
//! [`RegistryLimits::group_depth`]: crate::RegistryLimits::group_depth

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{BoxFuture, Device, Page, PageRequest, RegistryError, Result, Tags};

/// A stored device group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceGroup {
    /// Opaque id, unique over all accounts.
    pub id: String,
    /// The account owning it.
    pub account_id: String,
    /// The parent group, `None` for a top-level group.
    pub parent_id: Option<String>,
    /// 1 for a top-level group, 2 for its subgroups, and so on.
    pub depth: u64,
    /// Unique within the account.
    pub name: String,
    pub description: String,
    pub tags: Tags,
    /// Devices directly in this group (not in its subgroups).
    pub device_count: u64,
    /// Direct subgroups.
    pub subgroup_count: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a caller sets when creating a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewGroup {
    pub name: String,
    pub description: String,
    /// Creates a subgroup of this group (of the same account).
    pub parent_id: Option<String>,
    pub tags: Tags,
}

/// Changes of `update_group`; `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// Which groups of an account `list_groups` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupListing {
    /// Every group, at any level.
    All,
    /// Top-level groups only.
    TopLevel,
    /// The direct subgroups of one group.
    SubgroupsOf(String),
}

/// A device named by ProductKey and DeviceName.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceKeyRef {
    pub product_key: String,
    pub device_name: String,
}

impl DeviceKeyRef {
    /// The device `product_key/device_name`.
    pub fn new(product_key: impl Into<String>, device_name: impl Into<String>) -> Self {
        DeviceKeyRef {
            product_key: product_key.into(),
            device_name: device_name.into(),
        }
    }
}

/// Outcome of one device of `add_devices` or `remove_devices`, in input order.
#[derive(Debug)]
pub struct MembershipItem {
    pub device: DeviceKeyRef,
    /// `Ok(true)`: added (removed); `Ok(false)`: it already was (was not) a member.
    pub result: Result<bool, RegistryError>,
}

/// Device groups, their members and tags, behind [`crate::RegistryStore::groups`].
///
/// Lookups return `Ok(None)` for a missing group; every other operation on a missing
/// group fails with `GroupNotFound`. Devices must belong to a product of the group's
/// account; others are `DeviceNotFound`.
pub trait GroupStore: Send + Sync {
    /// Creates a group (a subgroup with `parent_id`), refusing it over the account's
    /// group limit or the depth limit.
    fn create_group<'a>(
        &'a self,
        account_id: &'a str,
        group: NewGroup,
    ) -> BoxFuture<'a, Result<DeviceGroup>>;
    fn get_group<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<DeviceGroup>>>;
    /// Groups of an account ordered by name; the cursor is the last name.
    fn list_groups<'a>(
        &'a self,
        account_id: &'a str,
        listing: GroupListing,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<DeviceGroup>>>;
    fn update_group<'a>(
        &'a self,
        id: &'a str,
        update: GroupUpdate,
    ) -> BoxFuture<'a, Result<DeviceGroup>>;
    /// Deletes a group without subgroups, with its memberships and tags.
    fn delete_group<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Adds or replaces tags; returns all tags of the group.
    fn set_group_tags<'a>(&'a self, id: &'a str, tags: Tags) -> BoxFuture<'a, Result<Tags>>;
    /// Removes tags by key (missing keys are ignored); returns the rest.
    fn remove_group_tags<'a>(
        &'a self,
        id: &'a str,
        keys: Vec<String>,
    ) -> BoxFuture<'a, Result<Tags>>;
    /// Groups of an account having tag `key` (with `value`, if given), by name.
    fn find_groups_by_tag<'a>(
        &'a self,
        account_id: &'a str,
        key: &'a str,
        value: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<DeviceGroup>>>;

    /// Adds up to `limits().group_batch_max` devices to a group in one transaction.
    /// Each device gets its own outcome: unknown devices are `DeviceNotFound`, a
    /// device in too many groups `GroupsPerDeviceExceeded`, devices past the group's
    /// capacity `DevicesPerGroupExceeded`; the others are added.
    fn add_devices<'a>(
        &'a self,
        group_id: &'a str,
        devices: Vec<DeviceKeyRef>,
    ) -> BoxFuture<'a, Result<Vec<MembershipItem>>>;
    /// Removes up to `limits().group_batch_max` devices from a group.
    fn remove_devices<'a>(
        &'a self,
        group_id: &'a str,
        devices: Vec<DeviceKeyRef>,
    ) -> BoxFuture<'a, Result<Vec<MembershipItem>>>;
    /// Devices directly in a group, ordered by ProductKey and DeviceName (cursor
    /// `productKey/deviceName`).
    fn list_group_devices<'a>(
        &'a self,
        group_id: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Device>>>;
    /// The groups a device belongs to, by name.
    fn device_groups<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeviceGroup>>>;
    /// Every device of a group, and with `with_subgroups` of its subgroups at any
    /// level, each once, ordered by ProductKey and DeviceName. This is what group-wide
    /// operations (property set, service calls, broadcast, OTA jobs) target.
    fn group_device_keys<'a>(
        &'a self,
        group_id: &'a str,
        with_subgroups: bool,
    ) -> BoxFuture<'a, Result<Vec<DeviceKeyRef>>>;
}

/// Longest group name, counting a character outside ASCII as two (as the reference
/// platform counts a CJK character).
pub(crate) const GROUP_NAME_MAX: usize = 30;
/// Shortest group name, counted the same way.
pub(crate) const GROUP_NAME_MIN: usize = 4;
/// Longest group description, in characters.
pub(crate) const GROUP_DESCRIPTION_MAX: usize = 100;

/// Checks a group name: 4 to 30 units (a non-ASCII character counts two) of letters
/// (any script), digits and `_`.
pub(crate) fn validate_group_name(name: &str) -> Result<()> {
    let units: usize = name.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum();
    let reason = if !(GROUP_NAME_MIN..=GROUP_NAME_MAX).contains(&units) {
        format!(
            "must have {GROUP_NAME_MIN} to {GROUP_NAME_MAX} characters (a non-ASCII character counts two)"
        )
    } else if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        "may contain only letters, digits and _".to_owned()
    } else {
        return Ok(());
    };
    Err(RegistryError::InvalidParameter {
        field: "groupName",
        reason,
    })
}

/// Checks a group description: at most 100 characters, no control characters.
pub(crate) fn validate_group_description(description: &str) -> Result<()> {
    if description.chars().count() > GROUP_DESCRIPTION_MAX
        || description.chars().any(char::is_control)
    {
        return Err(RegistryError::InvalidParameter {
            field: "description",
            reason: format!("at most {GROUP_DESCRIPTION_MAX} characters, no control characters"),
        });
    }
    Ok(())
}

/// Implements [`GroupStore`] for one backend type (with `pool` and `begin_write`).
macro_rules! groups_backend {
    ($store:ident, $db:ty) => {
        mod group_store {
            use std::collections::{BTreeMap, HashMap};

            use sqlx::{QueryBuilder, Row};

            use super::{$store, device_from_row};
            use crate::backend::{
                PageSpec, count, from_ms, is_unique_violation, now, split_device_cursor,
                tags_from_json, tags_to_json, to_ms, validate_tags,
            };
            use crate::groups::{
                DeviceGroup, DeviceKeyRef, GroupListing, GroupStore, GroupUpdate, MembershipItem,
                NewGroup, validate_group_description, validate_group_name,
            };
            use crate::{BoxFuture, Device, Page, PageRequest, RegistryError, Result, Tags};

            type DbRow = <$db as sqlx::Database>::Row;
            type Tx = sqlx::Transaction<'static, $db>;

            macro_rules! group_cols {
                () => {
                    "g.id, g.account_id, g.parent_id, g.depth, g.name, g.description, g.tags, \
                     g.created_at, g.updated_at, \
                     (SELECT count(*) FROM group_devices m WHERE m.group_id = g.id) \
                     AS device_count, \
                     (SELECT count(*) FROM device_groups c WHERE c.parent_id = g.id) \
                     AS subgroup_count"
                };
            }

            fn group_from_row(r: &DbRow) -> Result<DeviceGroup> {
                Ok(DeviceGroup {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    parent_id: r.try_get("parent_id")?,
                    depth: count(r.try_get("depth")?),
                    name: r.try_get("name")?,
                    description: r.try_get("description")?,
                    tags: tags_from_json(r.try_get("tags")?)?,
                    device_count: count(r.try_get("device_count")?),
                    subgroup_count: count(r.try_get("subgroup_count")?),
                    created_at: from_ms(r.try_get("created_at")?)?,
                    updated_at: from_ms(r.try_get("updated_at")?)?,
                })
            }

            fn name_taken(e: sqlx::Error, name: &str) -> RegistryError {
                if is_unique_violation(&e) {
                    RegistryError::GroupAlreadyExists(name.to_owned())
                } else {
                    e.into()
                }
            }

            fn limit_i64(limit: u64) -> i64 {
                i64::try_from(limit).unwrap_or(i64::MAX)
            }

            async fn fetch_group(tx: &mut Tx, id: &str) -> Result<DeviceGroup> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    group_cols!(),
                    " FROM device_groups g WHERE g.id = $1"
                ))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| RegistryError::GroupNotFound(id.to_owned()))?;
                group_from_row(&row)
            }

            /// Locks a group row for the rest of the transaction; its account.
            async fn lock_group(tx: &mut Tx, id: &str) -> Result<String> {
                sqlx::query_scalar(
                    "UPDATE device_groups SET updated_at = updated_at WHERE id = $1 \
                     RETURNING account_id",
                )
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| RegistryError::GroupNotFound(id.to_owned()))
            }

            /// The `iot_id` of each named device of `account_id` (others are absent).
            async fn resolve_devices(
                tx: &mut Tx,
                account_id: &str,
                devices: &[DeviceKeyRef],
            ) -> Result<HashMap<DeviceKeyRef, String>> {
                let mut found = HashMap::with_capacity(devices.len());
                for d in devices {
                    if found.contains_key(d) {
                        continue;
                    }
                    let iot_id: Option<String> = sqlx::query_scalar(
                        "SELECT d.iot_id FROM devices d JOIN products p \
                         ON p.product_key = d.product_key \
                         WHERE d.product_key = $1 AND d.device_name = $2 AND p.account_id = $3",
                    )
                    .bind(&d.product_key)
                    .bind(&d.device_name)
                    .bind(account_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                    if let Some(iot_id) = iot_id {
                        found.insert(d.clone(), iot_id);
                    }
                }
                Ok(found)
            }

            fn device_not_found(d: &DeviceKeyRef) -> RegistryError {
                RegistryError::DeviceNotFound(format!("{}/{}", d.product_key, d.device_name))
            }

            impl $store {
                fn check_group_batch(&self, len: usize) -> Result<()> {
                    if len > self.limits.group_batch_max {
                        return Err(RegistryError::BatchTooLarge {
                            len,
                            limit: self.limits.group_batch_max,
                        });
                    }
                    Ok(())
                }

                async fn change_group_tags(
                    &self,
                    id: &str,
                    add: Tags,
                    remove: Vec<String>,
                ) -> Result<Tags> {
                    validate_tags(&add)?;
                    let mut tx = self.begin_write().await?;
                    let current: String = sqlx::query_scalar(
                        "UPDATE device_groups SET tags = tags WHERE id = $1 RETURNING tags",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| RegistryError::GroupNotFound(id.to_owned()))?;
                    let mut merged = tags_from_json(&current)?;
                    for k in &remove {
                        merged.remove(k);
                    }
                    merged.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
                    if merged.len() as u64 > self.limits.tags_per_object {
                        return Err(RegistryError::TooManyTags {
                            object: format!("group {id}"),
                            limit: self.limits.tags_per_object,
                        });
                    }
                    for k in &remove {
                        sqlx::query("DELETE FROM group_tags WHERE group_id = $1 AND tag_key = $2")
                            .bind(id)
                            .bind(k)
                            .execute(&mut *tx)
                            .await?;
                    }
                    if !add.is_empty() {
                        let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                            "INSERT INTO group_tags (group_id, tag_key, tag_value) ",
                        );
                        qb.push_values(&add, |mut b, (k, v)| {
                            b.push_bind(id.to_owned())
                                .push_bind(k.clone())
                                .push_bind(v.clone());
                        });
                        qb.push(
                            " ON CONFLICT (group_id, tag_key) \
                             DO UPDATE SET tag_value = excluded.tag_value",
                        );
                        qb.build().execute(&mut *tx).await?;
                    }
                    sqlx::query("UPDATE device_groups SET tags = $2, updated_at = $3 WHERE id = $1")
                        .bind(id)
                        .bind(tags_to_json(&merged))
                        .bind(to_ms(now()))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(merged)
                }
            }

            impl GroupStore for $store {
                fn create_group<'a>(
                    &'a self,
                    account_id: &'a str,
                    group: NewGroup,
                ) -> BoxFuture<'a, Result<DeviceGroup>> {
                    Box::pin(async move {
                        validate_group_name(&group.name)?;
                        validate_group_description(&group.description)?;
                        validate_tags(&group.tags)?;
                        if group.tags.len() as u64 > self.limits.tags_per_object {
                            return Err(RegistryError::TooManyTags {
                                object: format!("group {}", group.name),
                                limit: self.limits.tags_per_object,
                            });
                        }
                        let mut tx = self.begin_write().await?;
                        let limit = self.limits.groups_per_account;
                        let done = sqlx::query(
                            "UPDATE accounts SET group_count = group_count + 1 \
                             WHERE id = $1 AND group_count < $2",
                        )
                        .bind(account_id)
                        .bind(limit_i64(limit))
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
                                Some(_) => RegistryError::GroupsPerAccountExceeded {
                                    account_id: account_id.to_owned(),
                                    limit,
                                },
                            });
                        }
                        let depth: i64 = match &group.parent_id {
                            None => 1,
                            Some(parent) => {
                                let row = sqlx::query(
                                    "SELECT account_id, depth FROM device_groups WHERE id = $1",
                                )
                                .bind(parent)
                                .fetch_optional(&mut *tx)
                                .await?;
                                let Some(row) = row else {
                                    return Err(RegistryError::GroupNotFound(parent.clone()));
                                };
                                let owner: String = row.try_get("account_id")?;
                                if owner != account_id {
                                    return Err(RegistryError::GroupNotFound(parent.clone()));
                                }
                                let parent_depth: i64 = row.try_get("depth")?;
                                if count(parent_depth) >= self.limits.group_depth {
                                    return Err(RegistryError::GroupDepthExceeded {
                                        parent_id: parent.clone(),
                                        limit: self.limits.group_depth,
                                    });
                                }
                                parent_depth + 1
                            }
                        };
                        let id = crate::rules::generate_id('g');
                        let at = to_ms(now());
                        sqlx::query(
                            "INSERT INTO device_groups (id, account_id, parent_id, depth, name, \
                             description, tags, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                        )
                        .bind(&id)
                        .bind(account_id)
                        .bind(&group.parent_id)
                        .bind(depth)
                        .bind(&group.name)
                        .bind(&group.description)
                        .bind(tags_to_json(&group.tags))
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| name_taken(e, &group.name))?;
                        if !group.tags.is_empty() {
                            let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                                "INSERT INTO group_tags (group_id, tag_key, tag_value) ",
                            );
                            qb.push_values(&group.tags, |mut b, (k, v)| {
                                b.push_bind(id.clone())
                                    .push_bind(k.clone())
                                    .push_bind(v.clone());
                            });
                            qb.build().execute(&mut *tx).await?;
                        }
                        let record = fetch_group(&mut tx, &id).await?;
                        tx.commit().await?;
                        Ok(record)
                    })
                }

                fn get_group<'a>(
                    &'a self,
                    id: &'a str,
                ) -> BoxFuture<'a, Result<Option<DeviceGroup>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "SELECT ",
                            group_cols!(),
                            " FROM device_groups g WHERE g.id = $1"
                        ))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.as_ref().map(group_from_row).transpose()
                    })
                }

                fn list_groups<'a>(
                    &'a self,
                    account_id: &'a str,
                    listing: GroupListing,
                    page: PageRequest,
                ) -> BoxFuture<'a, Result<Page<DeviceGroup>>> {
                    Box::pin(async move {
                        let spec = PageSpec::new(&page, self.limits.page_size_max)?;
                        if let GroupListing::SubgroupsOf(parent) = &listing {
                            match self.get_group(parent).await? {
                                Some(g) if g.account_id == account_id => {}
                                _ => return Err(RegistryError::GroupNotFound(parent.clone())),
                            }
                        }
                        let filter = |qb: &mut QueryBuilder<$db>| {
                            qb.push(" WHERE g.account_id = ")
                                .push_bind(account_id.to_owned());
                            match &listing {
                                GroupListing::All => {}
                                GroupListing::TopLevel => {
                                    qb.push(" AND g.parent_id IS NULL");
                                }
                                GroupListing::SubgroupsOf(parent) => {
                                    qb.push(" AND g.parent_id = ").push_bind(parent.clone());
                                }
                            }
                        };
                        let mut cq: QueryBuilder<$db> =
                            QueryBuilder::new("SELECT count(*) FROM device_groups g");
                        filter(&mut cq);
                        let total: i64 = cq.build_query_scalar().fetch_one(&self.pool).await?;
                        let mut qb: QueryBuilder<$db> = QueryBuilder::new(concat!(
                            "SELECT ",
                            group_cols!(),
                            " FROM device_groups g"
                        ));
                        filter(&mut qb);
                        if let Some(after) = &spec.after {
                            qb.push(" AND g.name > ").push_bind(after.clone());
                        }
                        qb.push(" ORDER BY g.name LIMIT ")
                            .push_bind(spec.fetch())
                            .push(" OFFSET ")
                            .push_bind(spec.offset);
                        let rows = qb.build().fetch_all(&self.pool).await?;
                        spec.page(&rows, total, group_from_row, |g| g.name.clone())
                    })
                }

                fn update_group<'a>(
                    &'a self,
                    id: &'a str,
                    update: GroupUpdate,
                ) -> BoxFuture<'a, Result<DeviceGroup>> {
                    Box::pin(async move {
                        if let Some(name) = &update.name {
                            validate_group_name(name)?;
                        }
                        if let Some(description) = &update.description {
                            validate_group_description(description)?;
                        }
                        let mut tx = self.begin_write().await?;
                        let done = sqlx::query(
                            "UPDATE device_groups SET name = COALESCE($2, name), \
                             description = COALESCE($3, description), updated_at = $4 \
                             WHERE id = $1",
                        )
                        .bind(id)
                        .bind(&update.name)
                        .bind(&update.description)
                        .bind(to_ms(now()))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| name_taken(e, update.name.as_deref().unwrap_or_default()))?;
                        if done.rows_affected() == 0 {
                            return Err(RegistryError::GroupNotFound(id.to_owned()));
                        }
                        let record = fetch_group(&mut tx, id).await?;
                        tx.commit().await?;
                        Ok(record)
                    })
                }

                fn delete_group<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
                    Box::pin(async move {
                        let mut tx = self.begin_write().await?;
                        let account = lock_group(&mut tx, id).await?;
                        let child: Option<String> = sqlx::query_scalar(
                            "SELECT id FROM device_groups WHERE parent_id = $1 LIMIT 1",
                        )
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if child.is_some() {
                            return Err(RegistryError::GroupHasSubgroups(id.to_owned()));
                        }
                        sqlx::query("DELETE FROM device_groups WHERE id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query(
                            "UPDATE accounts SET group_count = group_count - 1 \
                             WHERE id = $1 AND group_count > 0",
                        )
                        .bind(&account)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        Ok(())
                    })
                }

                fn set_group_tags<'a>(
                    &'a self,
                    id: &'a str,
                    tags: Tags,
                ) -> BoxFuture<'a, Result<Tags>> {
                    Box::pin(self.change_group_tags(id, tags, Vec::new()))
                }

                fn remove_group_tags<'a>(
                    &'a self,
                    id: &'a str,
                    keys: Vec<String>,
                ) -> BoxFuture<'a, Result<Tags>> {
                    Box::pin(self.change_group_tags(id, BTreeMap::new(), keys))
                }

                fn find_groups_by_tag<'a>(
                    &'a self,
                    account_id: &'a str,
                    key: &'a str,
                    value: Option<&'a str>,
                ) -> BoxFuture<'a, Result<Vec<DeviceGroup>>> {
                    Box::pin(async move {
                        let mut qb: QueryBuilder<$db> = QueryBuilder::new(concat!(
                            "SELECT ",
                            group_cols!(),
                            " FROM device_groups g WHERE g.account_id = "
                        ));
                        qb.push_bind(account_id.to_owned())
                            .push(
                                " AND EXISTS (SELECT 1 FROM group_tags t \
                                 WHERE t.group_id = g.id AND t.tag_key = ",
                            )
                            .push_bind(key.to_owned());
                        if let Some(value) = value {
                            qb.push(" AND t.tag_value = ").push_bind(value.to_owned());
                        }
                        qb.push(") ORDER BY g.name");
                        let rows = qb.build().fetch_all(&self.pool).await?;
                        rows.iter().map(group_from_row).collect()
                    })
                }

                fn add_devices<'a>(
                    &'a self,
                    group_id: &'a str,
                    devices: Vec<DeviceKeyRef>,
                ) -> BoxFuture<'a, Result<Vec<MembershipItem>>> {
                    Box::pin(async move {
                        self.check_group_batch(devices.len())?;
                        let mut tx = self.begin_write().await?;
                        let account = lock_group(&mut tx, group_id).await?;
                        let mut resolved = resolve_devices(&mut tx, &account, &devices).await?;
                        // Lock each device row in one order, so that concurrent batches
                        // cannot deadlock and each sees the others' memberships; a
                        // device deleted meanwhile is not found.
                        let mut order: Vec<(String, DeviceKeyRef)> = resolved
                            .iter()
                            .map(|(d, iot_id)| (iot_id.clone(), d.clone()))
                            .collect();
                        order.sort();
                        for (iot_id, device) in order {
                            let locked =
                                sqlx::query("UPDATE devices SET tags = tags WHERE iot_id = $1")
                                    .bind(&iot_id)
                                    .execute(&mut *tx)
                                    .await?;
                            if locked.rows_affected() == 0 {
                                resolved.remove(&device);
                            }
                        }
                        let members: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM group_devices WHERE group_id = $1",
                        )
                        .bind(group_id)
                        .fetch_one(&mut *tx)
                        .await?;
                        let mut members = count(members);
                        let at = to_ms(now());
                        let mut items = Vec::with_capacity(devices.len());
                        for device in devices {
                            let result = match resolved.get(&device) {
                                None => Err(device_not_found(&device)),
                                Some(iot_id) => {
                                    let mut groups: Vec<String> = sqlx::query_scalar(
                                        "SELECT group_id FROM group_devices WHERE iot_id = $1",
                                    )
                                    .bind(iot_id)
                                    .fetch_all(&mut *tx)
                                    .await?;
                                    groups.sort();
                                    if groups.binary_search(&group_id.to_owned()).is_ok() {
                                        Ok(false)
                                    } else if groups.len() as u64 >= self.limits.groups_per_device
                                    {
                                        Err(RegistryError::GroupsPerDeviceExceeded {
                                            device: format!(
                                                "{}/{}",
                                                device.product_key, device.device_name
                                            ),
                                            limit: self.limits.groups_per_device,
                                        })
                                    } else if members >= self.limits.devices_per_group {
                                        Err(RegistryError::DevicesPerGroupExceeded {
                                            group_id: group_id.to_owned(),
                                            limit: self.limits.devices_per_group,
                                        })
                                    } else {
                                        sqlx::query(
                                            "INSERT INTO group_devices (group_id, iot_id, added_at) \
                                             VALUES ($1, $2, $3)",
                                        )
                                        .bind(group_id)
                                        .bind(iot_id)
                                        .bind(at)
                                        .execute(&mut *tx)
                                        .await?;
                                        members += 1;
                                        Ok(true)
                                    }
                                }
                            };
                            items.push(MembershipItem { device, result });
                        }
                        tx.commit().await?;
                        Ok(items)
                    })
                }

                fn remove_devices<'a>(
                    &'a self,
                    group_id: &'a str,
                    devices: Vec<DeviceKeyRef>,
                ) -> BoxFuture<'a, Result<Vec<MembershipItem>>> {
                    Box::pin(async move {
                        self.check_group_batch(devices.len())?;
                        let mut tx = self.begin_write().await?;
                        let account = lock_group(&mut tx, group_id).await?;
                        let resolved = resolve_devices(&mut tx, &account, &devices).await?;
                        let mut items = Vec::with_capacity(devices.len());
                        for device in devices {
                            let result = match resolved.get(&device) {
                                None => Err(device_not_found(&device)),
                                Some(iot_id) => {
                                    let done = sqlx::query(
                                        "DELETE FROM group_devices \
                                         WHERE group_id = $1 AND iot_id = $2",
                                    )
                                    .bind(group_id)
                                    .bind(iot_id)
                                    .execute(&mut *tx)
                                    .await?;
                                    Ok(done.rows_affected() > 0)
                                }
                            };
                            items.push(MembershipItem { device, result });
                        }
                        tx.commit().await?;
                        Ok(items)
                    })
                }

                fn list_group_devices<'a>(
                    &'a self,
                    group_id: &'a str,
                    page: PageRequest,
                ) -> BoxFuture<'a, Result<Page<Device>>> {
                    Box::pin(async move {
                        let spec = PageSpec::new(&page, self.limits.page_size_max)?;
                        if self.get_group(group_id).await?.is_none() {
                            return Err(RegistryError::GroupNotFound(group_id.to_owned()));
                        }
                        let total: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM group_devices WHERE group_id = $1",
                        )
                        .bind(group_id)
                        .fetch_one(&self.pool)
                        .await?;
                        let mut qb: QueryBuilder<$db> = QueryBuilder::new(concat!(
                            "SELECT ",
                            crate::backend::device_cols!(),
                            " FROM devices d WHERE d.iot_id IN \
                             (SELECT m.iot_id FROM group_devices m WHERE m.group_id = "
                        ));
                        qb.push_bind(group_id.to_owned()).push(")");
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
                        let rows = qb.build().fetch_all(&self.pool).await?;
                        spec.page(&rows, total, device_from_row, |d| {
                            format!("{}/{}", d.product_key, d.device_name)
                        })
                    })
                }

                fn device_groups<'a>(
                    &'a self,
                    product_key: &'a str,
                    device_name: &'a str,
                ) -> BoxFuture<'a, Result<Vec<DeviceGroup>>> {
                    Box::pin(async move {
                        let iot_id: Option<String> = sqlx::query_scalar(
                            "SELECT iot_id FROM devices WHERE product_key = $1 AND device_name = $2",
                        )
                        .bind(product_key)
                        .bind(device_name)
                        .fetch_optional(&self.pool)
                        .await?;
                        let Some(iot_id) = iot_id else {
                            return Err(RegistryError::DeviceNotFound(format!(
                                "{product_key}/{device_name}"
                            )));
                        };
                        let rows = sqlx::query(concat!(
                            "SELECT ",
                            group_cols!(),
                            " FROM device_groups g WHERE g.id IN \
                             (SELECT m.group_id FROM group_devices m WHERE m.iot_id = $1) \
                             ORDER BY g.name"
                        ))
                        .bind(iot_id)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.iter().map(group_from_row).collect()
                    })
                }

                fn group_device_keys<'a>(
                    &'a self,
                    group_id: &'a str,
                    with_subgroups: bool,
                ) -> BoxFuture<'a, Result<Vec<DeviceKeyRef>>> {
                    Box::pin(async move {
                        let mut groups = vec![group_id.to_owned()];
                        let exists: Option<String> =
                            sqlx::query_scalar("SELECT id FROM device_groups WHERE id = $1")
                                .bind(group_id)
                                .fetch_optional(&self.pool)
                                .await?;
                        if exists.is_none() {
                            return Err(RegistryError::GroupNotFound(group_id.to_owned()));
                        }
                        if with_subgroups {
                            // Breadth first, one level per query; the depth limit bounds it.
                            let mut level = groups.clone();
                            while !level.is_empty() {
                                let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                                    "SELECT id FROM device_groups WHERE parent_id IN (",
                                );
                                let mut sep = qb.separated(", ");
                                for id in &level {
                                    sep.push_bind(id.clone());
                                }
                                qb.push(")");
                                let next: Vec<String> =
                                    qb.build_query_scalar().fetch_all(&self.pool).await?;
                                let next: Vec<String> =
                                    next.into_iter().filter(|id| !groups.contains(id)).collect();
                                groups.extend(next.iter().cloned());
                                level = next;
                            }
                        }
                        let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                            "SELECT d.product_key, d.device_name FROM devices d WHERE d.iot_id IN \
                             (SELECT m.iot_id FROM group_devices m WHERE m.group_id IN (",
                        );
                        let mut sep = qb.separated(", ");
                        for id in &groups {
                            sep.push_bind(id.clone());
                        }
                        qb.push(")) ORDER BY d.product_key, d.device_name");
                        let rows = qb.build().fetch_all(&self.pool).await?;
                        rows.iter()
                            .map(|r| {
                                Ok(DeviceKeyRef {
                                    product_key: r.try_get("product_key")?,
                                    device_name: r.try_get("device_name")?,
                                })
                            })
                            .collect()
                    })
                }
            }
        }
    };
}
pub(crate) use groups_backend;
