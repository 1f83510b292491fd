//! Storage of gateways and sub-devices: the topology of each gateway.
//!
//! A sub-device (a device of a `SubDevice` product) belongs to at most one gateway (a
//! device of a `Gateway` product of the same account); a gateway holds at most a given
//! number of sub-devices (1,500 on the platform), checked inside the transaction that
//! adds them. A link goes away with either device.

use chrono::{DateTime, Utc};

use crate::{BoxFuture, Result};

/// The platform's limit of sub-devices per gateway.
pub const SUB_DEVICES_PER_GATEWAY: u64 = 1_500;

/// One sub-device attached to a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyLink {
    pub gateway_product_key: String,
    pub gateway_device_name: String,
    pub product_key: String,
    pub device_name: String,
    /// The sub-device's registry id.
    pub iot_id: String,
    /// When it was attached.
    pub created_at: DateTime<Utc>,
}

/// Gateway topology, behind [`crate::RegistryStore::topology`].
///
/// Devices are named `(product_key, device_name)`.
pub trait TopologyStore: Send + Sync {
    /// Attaches sub-devices to a gateway, all or none. Sub-devices already attached to
    /// this gateway stay as they are. Fails with `DeviceNotFound` for a missing device,
    /// `InvalidParameter` when the gateway is not of a gateway product or a sub-device not
    /// of a sub-device product of the same account, `SubDeviceHasGateway` when one belongs
    /// to another gateway, and `SubDevicesPerGatewayExceeded` when the gateway would hold
    /// more than `limit`. Returns the links of the given sub-devices.
    fn add_sub_devices<'a>(
        &'a self,
        gateway: (&'a str, &'a str),
        sub_devices: &'a [(String, String)],
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<TopologyLink>>>;
    /// Detaches sub-devices from a gateway; those not attached to it are ignored.
    /// Returns the links removed. `DeviceNotFound` when the gateway does not exist.
    fn remove_sub_devices<'a>(
        &'a self,
        gateway: (&'a str, &'a str),
        sub_devices: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<TopologyLink>>>;
    /// The sub-devices of a gateway, by ProductKey and DeviceName (empty for an unknown
    /// gateway).
    fn list_sub_devices<'a>(
        &'a self,
        gateway: (&'a str, &'a str),
    ) -> BoxFuture<'a, Result<Vec<TopologyLink>>>;
    /// The link of a sub-device to its gateway, if it has one.
    fn get_gateway<'a>(
        &'a self,
        sub_device: (&'a str, &'a str),
    ) -> BoxFuture<'a, Result<Option<TopologyLink>>>;
}

/// Implements [`TopologyStore`] for one backend type (with `pool` and `begin_write`).
macro_rules! topology_backend {
    ($store:ident, $db:ty) => {
        mod topology_store {
            use sqlx::Row;

            use super::$store;
            use crate::backend::{from_ms, now, to_ms};
            use crate::topology::{TopologyLink, TopologyStore};
            use crate::{BoxFuture, NodeType, RegistryError, Result};

            type DbRow = <$db as sqlx::Database>::Row;

            /// Selects links: `g` is the gateway device, `s` the sub-device.
            macro_rules! link_select {
                () => {
                    "SELECT g.product_key AS gpk, g.device_name AS gdn, s.product_key AS spk, \
                     s.device_name AS sdn, s.iot_id AS sid, t.created_at AS created_at \
                     FROM topology t JOIN devices g ON g.iot_id = t.gateway_iot_id \
                     JOIN devices s ON s.iot_id = t.sub_iot_id "
                };
            }

            fn link_from_row(r: &DbRow) -> Result<TopologyLink> {
                Ok(TopologyLink {
                    gateway_product_key: r.try_get("gpk")?,
                    gateway_device_name: r.try_get("gdn")?,
                    product_key: r.try_get("spk")?,
                    device_name: r.try_get("sdn")?,
                    iot_id: r.try_get("sid")?,
                    created_at: from_ms(r.try_get("created_at")?)?,
                })
            }

            fn key(pk: &str, dn: &str) -> String {
                format!("{pk}/{dn}")
            }

            /// A device with its product's node type and account.
            struct Found {
                iot_id: String,
                node_type: NodeType,
                account_id: String,
            }

            async fn find(
                tx: &mut sqlx::Transaction<'static, $db>,
                pk: &str,
                dn: &str,
            ) -> Result<Found> {
                let row = sqlx::query(
                    "SELECT d.iot_id AS iot_id, p.node_type AS node_type, \
                     p.account_id AS account_id FROM devices d \
                     JOIN products p ON p.product_key = d.product_key \
                     WHERE d.product_key = $1 AND d.device_name = $2",
                )
                .bind(pk)
                .bind(dn)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| RegistryError::DeviceNotFound(key(pk, dn)))?;
                let node_type: String = row.try_get("node_type")?;
                Ok(Found {
                    iot_id: row.try_get("iot_id")?,
                    node_type: NodeType::parse(&node_type)?,
                    account_id: row.try_get("account_id")?,
                })
            }

            /// Finds the gateway and locks its row, so that concurrent additions to the
            /// same gateway count one after the other.
            async fn lock_gateway(
                tx: &mut sqlx::Transaction<'static, $db>,
                pk: &str,
                dn: &str,
            ) -> Result<Found> {
                let gateway = find(tx, pk, dn).await?;
                sqlx::query("UPDATE devices SET state = state WHERE iot_id = $1")
                    .bind(&gateway.iot_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(gateway)
            }

            async fn links_of(
                tx: &mut sqlx::Transaction<'static, $db>,
                gateway_iot_id: &str,
                subs: &[String],
            ) -> Result<Vec<TopologyLink>> {
                let mut out = Vec::with_capacity(subs.len());
                for sub in subs {
                    let row = sqlx::query(concat!(
                        link_select!(),
                        "WHERE t.sub_iot_id = $1 AND t.gateway_iot_id = $2"
                    ))
                    .bind(sub)
                    .bind(gateway_iot_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                    if let Some(row) = row {
                        out.push(link_from_row(&row)?);
                    }
                }
                Ok(out)
            }

            impl TopologyStore for $store {
                fn add_sub_devices<'a>(
                    &'a self,
                    gateway: (&'a str, &'a str),
                    sub_devices: &'a [(String, String)],
                    limit: u64,
                ) -> BoxFuture<'a, Result<Vec<TopologyLink>>> {
                    Box::pin(async move {
                        let mut tx = self.begin_write().await?;
                        let gw = lock_gateway(&mut tx, gateway.0, gateway.1).await?;
                        if gw.node_type != NodeType::Gateway {
                            return Err(RegistryError::InvalidParameter {
                                field: "gateway",
                                reason: format!(
                                    "{} is not a device of a gateway product",
                                    key(gateway.0, gateway.1)
                                ),
                            });
                        }
                        let mut ids: Vec<String> = Vec::with_capacity(sub_devices.len());
                        let mut new = 0u64;
                        for (pk, dn) in sub_devices {
                            let sub = find(&mut tx, pk, dn).await?;
                            if sub.node_type != NodeType::SubDevice
                                || sub.account_id != gw.account_id
                            {
                                return Err(RegistryError::InvalidParameter {
                                    field: "subDevice",
                                    reason: format!(
                                        "{} is not a device of a sub-device product of the \
                                         gateway's account",
                                        key(pk, dn)
                                    ),
                                });
                            }
                            if ids.contains(&sub.iot_id) {
                                continue;
                            }
                            let current: Option<String> = sqlx::query_scalar(
                                "SELECT gateway_iot_id FROM topology WHERE sub_iot_id = $1",
                            )
                            .bind(&sub.iot_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                            match current {
                                Some(g) if g == gw.iot_id => {}
                                Some(g) => {
                                    let owner: Option<(String, String)> = sqlx::query_as(
                                        "SELECT product_key, device_name FROM devices \
                                         WHERE iot_id = $1",
                                    )
                                    .bind(&g)
                                    .fetch_optional(&mut *tx)
                                    .await?;
                                    return Err(RegistryError::SubDeviceHasGateway {
                                        device: key(pk, dn),
                                        gateway: owner
                                            .map(|(p, d)| key(&p, &d))
                                            .unwrap_or(g),
                                    });
                                }
                                None => new += 1,
                            }
                            ids.push(sub.iot_id);
                        }
                        let held: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM topology WHERE gateway_iot_id = $1",
                        )
                        .bind(&gw.iot_id)
                        .fetch_one(&mut *tx)
                        .await?;
                        if u64::try_from(held).unwrap_or(0) + new > limit {
                            return Err(RegistryError::SubDevicesPerGatewayExceeded {
                                gateway: key(gateway.0, gateway.1),
                                limit,
                            });
                        }
                        let at = to_ms(now());
                        for id in &ids {
                            sqlx::query(
                                "INSERT INTO topology (sub_iot_id, gateway_iot_id, created_at) \
                                 VALUES ($1, $2, $3) ON CONFLICT (sub_iot_id) DO NOTHING",
                            )
                            .bind(id)
                            .bind(&gw.iot_id)
                            .bind(at)
                            .execute(&mut *tx)
                            .await?;
                        }
                        let links = links_of(&mut tx, &gw.iot_id, &ids).await?;
                        tx.commit().await?;
                        Ok(links)
                    })
                }

                fn remove_sub_devices<'a>(
                    &'a self,
                    gateway: (&'a str, &'a str),
                    sub_devices: &'a [(String, String)],
                ) -> BoxFuture<'a, Result<Vec<TopologyLink>>> {
                    Box::pin(async move {
                        let mut tx = self.begin_write().await?;
                        let gw = lock_gateway(&mut tx, gateway.0, gateway.1).await?;
                        let mut removed = Vec::new();
                        for (pk, dn) in sub_devices {
                            let row = sqlx::query(concat!(
                                link_select!(),
                                "WHERE s.product_key = $1 AND s.device_name = $2 \
                                 AND t.gateway_iot_id = $3"
                            ))
                            .bind(pk)
                            .bind(dn)
                            .bind(&gw.iot_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                            let Some(row) = row else { continue };
                            let link = link_from_row(&row)?;
                            sqlx::query("DELETE FROM topology WHERE sub_iot_id = $1")
                                .bind(&link.iot_id)
                                .execute(&mut *tx)
                                .await?;
                            removed.push(link);
                        }
                        tx.commit().await?;
                        Ok(removed)
                    })
                }

                fn list_sub_devices<'a>(
                    &'a self,
                    gateway: (&'a str, &'a str),
                ) -> BoxFuture<'a, Result<Vec<TopologyLink>>> {
                    Box::pin(async move {
                        let rows = sqlx::query(concat!(
                            link_select!(),
                            "WHERE g.product_key = $1 AND g.device_name = $2 \
                             ORDER BY s.product_key, s.device_name"
                        ))
                        .bind(gateway.0)
                        .bind(gateway.1)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.iter().map(link_from_row).collect()
                    })
                }

                fn get_gateway<'a>(
                    &'a self,
                    sub_device: (&'a str, &'a str),
                ) -> BoxFuture<'a, Result<Option<TopologyLink>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            link_select!(),
                            "WHERE s.product_key = $1 AND s.device_name = $2"
                        ))
                        .bind(sub_device.0)
                        .bind(sub_device.1)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.map(|r| link_from_row(&r)).transpose()
                    })
                }
            }
        }
    };
}
pub(crate) use topology_backend;
