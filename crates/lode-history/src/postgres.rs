//! [`PgHistory`]: thing-model data in PostgreSQL.
//!
//! Appends insert each batch with one `UNNEST` statement per table inside one
//! transaction; latest values are upserted in key order (so concurrent
//! appends lock rows in the same order) and only move forward in device
//! time. Purges delete in bounded batches, each its own statement, so that no
//! long transaction holds back concurrent appends.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use crate::cursor::{Position, Window};
use crate::error::{BackendError, corrupt};
use crate::{
    BoxFuture, CallStatus, DesiredValue, DeviceKey, Direction, EventRecord, HistoryConfig,
    HistoryError, LatestProperty, LogEntry, Order, Page, PropertyPoint, PurgeStats, Query, Record,
    ServiceCall, ThingStore, check_call, check_device, check_name, check_record,
};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: [Migration; 1] = [Migration {
    version: 1,
    name: "init",
    sql: include_str!("../migrations/postgres/0001_init.sql"),
}];

/// Serializes concurrent migrations of several nodes (held until commit).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7264935116054321)";

/// Connections of the pool.
const POOL_SIZE: u32 = 10;

/// Thing-model data in PostgreSQL (tables `thing_*` in the connection's
/// `search_path`).
#[derive(Debug, Clone)]
pub struct PgHistory {
    pool: PgPool,
    purge_batch: i64,
}

impl PgHistory {
    /// Connects to `url` (`postgres://user@host:port/db`) and migrates the
    /// schema to the current version.
    pub async fn connect(url: &str, config: &HistoryConfig) -> Result<Self, HistoryError> {
        Self::connect_with(PgConnectOptions::from_str(url)?, config).await
    }

    /// Like [`PgHistory::connect`], with explicit options (for example
    /// `.options([("search_path", "my_schema")])`).
    pub async fn connect_with(
        options: PgConnectOptions,
        config: &HistoryConfig,
    ) -> Result<Self, HistoryError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        Ok(PgHistory {
            pool,
            purge_batch: i64::try_from(config.purge_batch.max(1)).unwrap_or(i64::MAX),
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn migrate(pool: &PgPool) -> Result<(), HistoryError> {
    for m in &MIGRATIONS {
        let step = async {
            let mut tx = pool.begin().await?;
            sqlx::query(MIGRATION_LOCK).execute(&mut *tx).await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS thing_migrations \
                 (version BIGINT PRIMARY KEY, name TEXT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM thing_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_none() {
                sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO thing_migrations (version, name) VALUES ($1, $2)")
                    .bind(m.version)
                    .bind(m.name)
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(
                    version = m.version,
                    name = m.name,
                    "history schema migrated"
                );
            }
            tx.commit().await
        };
        step.await.map_err(|source| {
            HistoryError::Backend(BackendError::Migration {
                version: m.version,
                source,
            })
        })?;
    }
    Ok(())
}

/// A page query: `$1` product key, `$2` device name, then `$3`/`$4` the
/// exclusive lower position, `$5`/`$6` the exclusive upper one, `$7` the row
/// count; extra filters follow from `$8`.
macro_rules! page_sql {
    ($columns:literal, $table:literal, $time:literal, $filter:literal, $order:literal) => {
        concat!(
            "SELECT id, ",
            $columns,
            " FROM ",
            $table,
            " WHERE product_key = $1 AND device_name = $2",
            " AND (",
            $time,
            ", id) > ($3, $4) AND (",
            $time,
            ", id) < ($5, $6)",
            $filter,
            " ORDER BY ",
            $time,
            " ",
            $order,
            ", id ",
            $order,
            " LIMIT $7"
        )
    };
}

macro_rules! both_orders {
    ($columns:literal, $table:literal, $time:literal, $filter:literal) => {
        [
            page_sql!($columns, $table, $time, $filter, "ASC"),
            page_sql!($columns, $table, $time, $filter, "DESC"),
        ]
    };
}

const POINT_COLUMNS_SQL: [&str; 2] = both_orders!(
    "identifier, value, device_time, server_time",
    "thing_property_history",
    "device_time",
    ""
);
const POINT_OF_IDENTIFIER_SQL: [&str; 2] = both_orders!(
    "identifier, value, device_time, server_time",
    "thing_property_history",
    "device_time",
    " AND identifier = $8"
);
const EVENT_SQL: [&str; 2] = both_orders!(
    "identifier, event_type, output, device_time, server_time",
    "thing_event_history",
    "device_time",
    " AND ($8::text IS NULL OR identifier = $8) AND ($9::text IS NULL OR event_type = $9)"
);
const CALL_SQL: [&str; 2] = both_orders!(
    "call_id, identifier, call_type, input, status, code, output, message, started_at, finished_at",
    "thing_service_calls",
    "started_at",
    " AND ($8::text IS NULL OR identifier = $8)"
);
const LOG_SQL: [&str; 2] = both_orders!(
    "time, direction, topic, payload, payload_size, code, step, message, trace_id",
    "thing_device_log",
    "time",
    ""
);

fn pick(sql: &[&'static str; 2], order: Order) -> &'static str {
    match order {
        Order::OldestFirst => sql[0],
        Order::NewestFirst => sql[1],
    }
}

fn seq_bind(pos: Position) -> i64 {
    i64::try_from(pos.seq).unwrap_or(i64::MAX)
}

/// Binds the device and window of a page query (`$1` to `$7`).
fn page_query(
    sql: &'static str,
    device: &DeviceKey,
    window: &Window,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(device.product_key.clone())
        .bind(device.device_name.clone())
        .bind(window.lower.time)
        .bind(seq_bind(window.lower))
        .bind(window.upper.time)
        .bind(seq_bind(window.upper))
        .bind(i64::try_from(window.limit + 1).unwrap_or(i64::MAX))
}

fn json(text: &str) -> Result<Value, HistoryError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("stored JSON: {e}")))
}

fn position(row: &PgRow, time_column: &str) -> Result<Position, HistoryError> {
    let id: i64 = row.try_get("id")?;
    Ok(Position {
        time: row.try_get(time_column)?,
        seq: u64::try_from(id).map_err(|_| corrupt("negative row id"))?,
    })
}

fn call_from_row(device: &DeviceKey, row: &PgRow) -> Result<ServiceCall, HistoryError> {
    let status: String = row.try_get("status")?;
    let input: String = row.try_get("input")?;
    let output: Option<String> = row.try_get("output")?;
    Ok(ServiceCall {
        device: device.clone(),
        call_id: row.try_get("call_id")?,
        identifier: row.try_get("identifier")?,
        call_type: row.try_get("call_type")?,
        input: json(&input)?,
        status: CallStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("unknown call status {status}")))?,
        code: row.try_get("code")?,
        output: output.as_deref().map(json).transpose()?,
        message: row.try_get("message")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn version_of(stored: i64) -> Result<u64, HistoryError> {
    u64::try_from(stored).map_err(|_| corrupt("negative desired version"))
}

fn version_bind(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

impl PgHistory {
    async fn append_records(&self, records: Vec<Record>) -> Result<(), HistoryError> {
        records.iter().try_for_each(check_record)?;
        if records.is_empty() {
            return Ok(());
        }
        let mut p = PointColumns::default();
        let mut e = EventColumns::default();
        // The latest candidate per property, in key order for row locking.
        let mut latest: BTreeMap<(String, String, String), (i64, i64, String)> = BTreeMap::new();
        for record in records {
            match record {
                Record::Property(point) => {
                    let value = point.value.to_string();
                    let key = (
                        point.device.product_key.clone(),
                        point.device.device_name.clone(),
                        point.identifier.clone(),
                    );
                    let newer = latest
                        .get(&key)
                        .is_none_or(|(time, _, _)| point.device_time >= *time);
                    if newer {
                        latest.insert(key, (point.device_time, point.server_time, value.clone()));
                    }
                    p.product_key.push(point.device.product_key);
                    p.device_name.push(point.device.device_name);
                    p.identifier.push(point.identifier);
                    p.value.push(value);
                    p.device_time.push(point.device_time);
                    p.server_time.push(point.server_time);
                }
                Record::Event(event) => {
                    e.product_key.push(event.device.product_key);
                    e.device_name.push(event.device.device_name);
                    e.identifier.push(event.identifier);
                    e.event_type.push(event.event_type);
                    e.output.push(event.output.to_string());
                    e.device_time.push(event.device_time);
                    e.server_time.push(event.server_time);
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        if !p.value.is_empty() {
            sqlx::query(
                "INSERT INTO thing_property_history \
                 (product_key, device_name, identifier, value, device_time, server_time) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::int8[], $6::int8[])",
            )
            .bind(p.product_key)
            .bind(p.device_name)
            .bind(p.identifier)
            .bind(p.value)
            .bind(p.device_time)
            .bind(p.server_time)
            .execute(&mut *tx)
            .await?;
            let mut l = PointColumns::default();
            for ((product_key, device_name, identifier), (device_time, server_time, value)) in
                latest
            {
                l.product_key.push(product_key);
                l.device_name.push(device_name);
                l.identifier.push(identifier);
                l.value.push(value);
                l.device_time.push(device_time);
                l.server_time.push(server_time);
            }
            sqlx::query(
                "INSERT INTO thing_latest \
                 (product_key, device_name, identifier, value, device_time, server_time) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::int8[], $6::int8[]) \
                 ON CONFLICT (product_key, device_name, identifier) DO UPDATE \
                 SET value = EXCLUDED.value, device_time = EXCLUDED.device_time, \
                 server_time = EXCLUDED.server_time \
                 WHERE thing_latest.device_time <= EXCLUDED.device_time",
            )
            .bind(l.product_key)
            .bind(l.device_name)
            .bind(l.identifier)
            .bind(l.value)
            .bind(l.device_time)
            .bind(l.server_time)
            .execute(&mut *tx)
            .await?;
        }
        if !e.output.is_empty() {
            sqlx::query(
                "INSERT INTO thing_event_history \
                 (product_key, device_name, identifier, event_type, output, device_time, \
                 server_time) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::int8[], $7::int8[])",
            )
            .bind(e.product_key)
            .bind(e.device_name)
            .bind(e.identifier)
            .bind(e.event_type)
            .bind(e.output)
            .bind(e.device_time)
            .bind(e.server_time)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn latest_of(&self, device: &DeviceKey) -> Result<Vec<LatestProperty>, HistoryError> {
        check_device(device)?;
        let rows = sqlx::query(
            "SELECT identifier, value, device_time, server_time FROM thing_latest \
             WHERE product_key = $1 AND device_name = $2 ORDER BY identifier",
        )
        .bind(&device.product_key)
        .bind(&device.device_name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let value: String = row.try_get("value")?;
                Ok(LatestProperty {
                    identifier: row.try_get("identifier")?,
                    value: json(&value)?,
                    device_time: row.try_get("device_time")?,
                    server_time: row.try_get("server_time")?,
                })
            })
            .collect()
    }

    async fn points(&self, query: Query) -> Result<Page<PropertyPoint>, HistoryError> {
        check_device(&query.device)?;
        let window = Window::from_query(&query)?;
        if window.is_empty() {
            return Ok(window.page(Vec::new()));
        }
        let rows = match &query.identifier {
            Some(identifier) => {
                page_query(
                    pick(&POINT_OF_IDENTIFIER_SQL, window.order),
                    &query.device,
                    &window,
                )
                .bind(identifier.clone())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                page_query(
                    pick(&POINT_COLUMNS_SQL, window.order),
                    &query.device,
                    &window,
                )
                .fetch_all(&self.pool)
                .await?
            }
        };
        let items = rows
            .iter()
            .map(|row| {
                let value: String = row.try_get("value")?;
                Ok((
                    position(row, "device_time")?,
                    PropertyPoint {
                        device: query.device.clone(),
                        identifier: row.try_get("identifier")?,
                        value: json(&value)?,
                        device_time: row.try_get("device_time")?,
                        server_time: row.try_get("server_time")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, HistoryError>>()?;
        Ok(window.page(items))
    }

    async fn events(
        &self,
        query: Query,
        event_type: Option<String>,
    ) -> Result<Page<EventRecord>, HistoryError> {
        check_device(&query.device)?;
        let window = Window::from_query(&query)?;
        if window.is_empty() {
            return Ok(window.page(Vec::new()));
        }
        let rows = page_query(pick(&EVENT_SQL, window.order), &query.device, &window)
            .bind(query.identifier.clone())
            .bind(event_type)
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(|row| {
                let output: String = row.try_get("output")?;
                Ok((
                    position(row, "device_time")?,
                    EventRecord {
                        device: query.device.clone(),
                        identifier: row.try_get("identifier")?,
                        event_type: row.try_get("event_type")?,
                        output: json(&output)?,
                        device_time: row.try_get("device_time")?,
                        server_time: row.try_get("server_time")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, HistoryError>>()?;
        Ok(window.page(items))
    }

    async fn upsert_call(&self, call: ServiceCall) -> Result<(), HistoryError> {
        check_call(&call)?;
        sqlx::query(
            "INSERT INTO thing_service_calls (product_key, device_name, call_id, identifier, \
             call_type, input, status, code, output, message, started_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (product_key, device_name, call_id) DO UPDATE SET \
             identifier = EXCLUDED.identifier, call_type = EXCLUDED.call_type, \
             input = EXCLUDED.input, status = EXCLUDED.status, code = EXCLUDED.code, \
             output = EXCLUDED.output, message = EXCLUDED.message, \
             started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at",
        )
        .bind(call.device.product_key)
        .bind(call.device.device_name)
        .bind(call.call_id)
        .bind(call.identifier)
        .bind(call.call_type)
        .bind(call.input.to_string())
        .bind(call.status.as_str())
        .bind(call.code)
        .bind(call.output.map(|o| o.to_string()))
        .bind(call.message)
        .bind(call.started_at)
        .bind(call.finished_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        device: &DeviceKey,
        call_id: &str,
        status: CallStatus,
        code: Option<i64>,
        output: Option<Value>,
        message: Option<String>,
        finished_at: i64,
    ) -> Result<Option<ServiceCall>, HistoryError> {
        check_device(device)?;
        check_name("call id", call_id)?;
        let sql = "UPDATE thing_service_calls SET status = $4, code = $5, output = $6, \
                   message = $7, finished_at = $8 \
                   WHERE product_key = $1 AND device_name = $2 AND call_id = $3 \
                   RETURNING call_id, identifier, call_type, input, status, code, output, \
                   message, started_at, finished_at";
        let row = sqlx::query(sql)
            .bind(&device.product_key)
            .bind(&device.device_name)
            .bind(call_id)
            .bind(status.as_str())
            .bind(code)
            .bind(output.map(|o| o.to_string()))
            .bind(message)
            .bind(finished_at)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| call_from_row(device, &row)).transpose()
    }

    async fn get_call(
        &self,
        device: &DeviceKey,
        call_id: &str,
    ) -> Result<Option<ServiceCall>, HistoryError> {
        check_device(device)?;
        check_name("call id", call_id)?;
        let row = sqlx::query(
            "SELECT call_id, identifier, call_type, input, status, code, output, message, \
             started_at, finished_at FROM thing_service_calls \
             WHERE product_key = $1 AND device_name = $2 AND call_id = $3",
        )
        .bind(&device.product_key)
        .bind(&device.device_name)
        .bind(call_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| call_from_row(device, &row)).transpose()
    }

    async fn calls(&self, query: Query) -> Result<Page<ServiceCall>, HistoryError> {
        check_device(&query.device)?;
        let window = Window::from_query(&query)?;
        if window.is_empty() {
            return Ok(window.page(Vec::new()));
        }
        let rows = page_query(pick(&CALL_SQL, window.order), &query.device, &window)
            .bind(query.identifier.clone())
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok((
                    position(row, "started_at")?,
                    call_from_row(&query.device, row)?,
                ))
            })
            .collect::<Result<Vec<_>, HistoryError>>()?;
        Ok(window.page(items))
    }

    async fn current_desired_version(
        &self,
        device: &DeviceKey,
        identifier: &str,
    ) -> Result<(u64, bool), HistoryError> {
        let row: Option<(i64, bool)> = sqlx::query_as(
            "SELECT version, value IS NOT NULL FROM thing_desired \
             WHERE product_key = $1 AND device_name = $2 AND identifier = $3",
        )
        .bind(&device.product_key)
        .bind(&device.device_name)
        .bind(identifier)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some((version, present)) => Ok((version_of(version)?, present)),
            None => Ok((0, false)),
        }
    }

    async fn put_desired(
        &self,
        device: &DeviceKey,
        identifier: &str,
        value: Value,
        expected_version: Option<u64>,
        time: i64,
    ) -> Result<u64, HistoryError> {
        check_device(device)?;
        check_name("identifier", identifier)?;
        let text = value.to_string();
        let sql = match expected_version {
            None => {
                "INSERT INTO thing_desired \
                 (product_key, device_name, identifier, value, version, time) \
                 VALUES ($1, $2, $3, $4, 1, $5) \
                 ON CONFLICT (product_key, device_name, identifier) DO UPDATE \
                 SET value = EXCLUDED.value, version = thing_desired.version + 1, \
                 time = EXCLUDED.time RETURNING version"
            }
            Some(0) => {
                "INSERT INTO thing_desired \
                 (product_key, device_name, identifier, value, version, time) \
                 VALUES ($1, $2, $3, $4, 1, $5) \
                 ON CONFLICT (product_key, device_name, identifier) DO NOTHING RETURNING version"
            }
            Some(_) => {
                "UPDATE thing_desired SET value = $4, version = version + 1, time = $5 \
                 WHERE product_key = $1 AND device_name = $2 AND identifier = $3 \
                 AND version = $6 RETURNING version"
            }
        };
        let mut statement = sqlx::query_scalar(sql)
            .bind(&device.product_key)
            .bind(&device.device_name)
            .bind(identifier)
            .bind(text)
            .bind(time);
        if let Some(expected) = expected_version.filter(|v| *v > 0) {
            statement = statement.bind(version_bind(expected));
        }
        let version: Option<i64> = statement.fetch_optional(&self.pool).await?;
        match version {
            Some(version) => version_of(version),
            None => {
                let (current, _) = self.current_desired_version(device, identifier).await?;
                Err(HistoryError::VersionConflict { current })
            }
        }
    }

    async fn get_desired(
        &self,
        device: &DeviceKey,
        identifiers: &[String],
    ) -> Result<Vec<DesiredValue>, HistoryError> {
        check_device(device)?;
        let rows = sqlx::query(
            "SELECT identifier, value, version, time FROM thing_desired \
             WHERE product_key = $1 AND device_name = $2 AND value IS NOT NULL \
             AND (cardinality($3::text[]) = 0 OR identifier = ANY($3)) ORDER BY identifier",
        )
        .bind(&device.product_key)
        .bind(&device.device_name)
        .bind(identifiers.to_vec())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let value: String = row.try_get("value")?;
                Ok(DesiredValue {
                    identifier: row.try_get("identifier")?,
                    value: json(&value)?,
                    version: version_of(row.try_get("version")?)?,
                    time: row.try_get("time")?,
                })
            })
            .collect()
    }

    async fn clear_desired(
        &self,
        device: &DeviceKey,
        identifier: &str,
        expected_version: Option<u64>,
    ) -> Result<(), HistoryError> {
        check_device(device)?;
        check_name("identifier", identifier)?;
        let cleared = sqlx::query(
            "UPDATE thing_desired SET value = NULL, version = version + 1 \
             WHERE product_key = $1 AND device_name = $2 AND identifier = $3 \
             AND value IS NOT NULL AND ($4::int8 IS NULL OR version = $4)",
        )
        .bind(&device.product_key)
        .bind(&device.device_name)
        .bind(identifier)
        .bind(expected_version.map(version_bind))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if cleared > 0 {
            return Ok(());
        }
        match self.current_desired_version(device, identifier).await? {
            (current, true) => Err(HistoryError::VersionConflict { current }),
            (_, false) => Err(HistoryError::NotFound),
        }
    }

    async fn insert_log(&self, entries: Vec<LogEntry>) -> Result<(), HistoryError> {
        entries.iter().try_for_each(|e| check_device(&e.device))?;
        if entries.is_empty() {
            return Ok(());
        }
        let n = entries.len();
        let mut product_key = Vec::with_capacity(n);
        let mut device_name = Vec::with_capacity(n);
        let mut time = Vec::with_capacity(n);
        let mut direction = Vec::with_capacity(n);
        let mut topic = Vec::with_capacity(n);
        let mut payload = Vec::with_capacity(n);
        let mut payload_size = Vec::with_capacity(n);
        let mut code = Vec::with_capacity(n);
        let mut step = Vec::with_capacity(n);
        let mut message = Vec::with_capacity(n);
        let mut trace_id = Vec::with_capacity(n);
        for entry in entries {
            product_key.push(entry.device.product_key);
            device_name.push(entry.device.device_name);
            time.push(entry.time);
            direction.push(entry.direction.as_str());
            topic.push(entry.topic);
            payload.push(entry.payload);
            payload_size.push(i64::from(entry.payload_size));
            code.push(entry.code);
            step.push(entry.step);
            message.push(entry.message);
            trace_id.push(entry.trace_id);
        }
        sqlx::query(
            "INSERT INTO thing_device_log (product_key, device_name, time, direction, topic, \
             payload, payload_size, code, step, message, trace_id) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], \
             $6::bytea[], $7::int8[], $8::int8[], $9::text[], $10::text[], $11::text[])",
        )
        .bind(product_key)
        .bind(device_name)
        .bind(time)
        .bind(direction)
        .bind(topic)
        .bind(payload)
        .bind(payload_size)
        .bind(code)
        .bind(step)
        .bind(message)
        .bind(trace_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn log_page(&self, query: Query) -> Result<Page<LogEntry>, HistoryError> {
        check_device(&query.device)?;
        let window = Window::from_query(&query)?;
        if window.is_empty() {
            return Ok(window.page(Vec::new()));
        }
        let rows = page_query(pick(&LOG_SQL, window.order), &query.device, &window)
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(|row| {
                let direction: String = row.try_get("direction")?;
                let payload_size: i64 = row.try_get("payload_size")?;
                Ok((
                    position(row, "time")?,
                    LogEntry {
                        device: query.device.clone(),
                        time: row.try_get("time")?,
                        direction: Direction::parse(&direction)
                            .ok_or_else(|| corrupt(format!("unknown direction {direction}")))?,
                        topic: row.try_get("topic")?,
                        payload: row.try_get("payload")?,
                        payload_size: u32::try_from(payload_size)
                            .map_err(|_| corrupt("payload size out of range"))?,
                        code: row.try_get("code")?,
                        step: row.try_get("step")?,
                        message: row.try_get("message")?,
                        trace_id: row.try_get("trace_id")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, HistoryError>>()?;
        Ok(window.page(items))
    }

    /// Runs a bounded `DELETE` until it removes fewer rows than its bound.
    async fn delete_batches(&self, sql: &'static str, before: i64) -> Result<u64, HistoryError> {
        let mut n_deleted = 0;
        loop {
            let n = sqlx::query(sql)
                .bind(before)
                .bind(self.purge_batch)
                .execute(&self.pool)
                .await?
                .rows_affected();
            n_deleted += n;
            if n < u64::try_from(self.purge_batch).unwrap_or(u64::MAX) {
                return Ok(n_deleted);
            }
        }
    }

    async fn purge_older(
        &self,
        history_before: i64,
        log_before: i64,
    ) -> Result<PurgeStats, HistoryError> {
        Ok(PurgeStats {
            properties: self
                .delete_batches(
                    "DELETE FROM thing_property_history WHERE id IN (SELECT id FROM \
                     thing_property_history WHERE device_time < $1 LIMIT $2)",
                    history_before,
                )
                .await?,
            events: self
                .delete_batches(
                    "DELETE FROM thing_event_history WHERE id IN (SELECT id FROM \
                     thing_event_history WHERE device_time < $1 LIMIT $2)",
                    history_before,
                )
                .await?,
            calls: self
                .delete_batches(
                    "DELETE FROM thing_service_calls WHERE id IN (SELECT id FROM \
                     thing_service_calls WHERE started_at < $1 LIMIT $2)",
                    history_before,
                )
                .await?,
            log_entries: self
                .delete_batches(
                    "DELETE FROM thing_device_log WHERE id IN (SELECT id FROM \
                     thing_device_log WHERE time < $1 LIMIT $2)",
                    log_before,
                )
                .await?,
        })
    }

    async fn remove_device(&self, device: &DeviceKey) -> Result<(), HistoryError> {
        check_device(device)?;
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM thing_property_history WHERE product_key = $1 AND device_name = $2",
            "DELETE FROM thing_latest WHERE product_key = $1 AND device_name = $2",
            "DELETE FROM thing_event_history WHERE product_key = $1 AND device_name = $2",
            "DELETE FROM thing_service_calls WHERE product_key = $1 AND device_name = $2",
            "DELETE FROM thing_desired WHERE product_key = $1 AND device_name = $2",
            "DELETE FROM thing_device_log WHERE product_key = $1 AND device_name = $2",
        ] {
            sqlx::query(sql)
                .bind(&device.product_key)
                .bind(&device.device_name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[derive(Default)]
struct PointColumns {
    product_key: Vec<String>,
    device_name: Vec<String>,
    identifier: Vec<String>,
    value: Vec<String>,
    device_time: Vec<i64>,
    server_time: Vec<i64>,
}

#[derive(Default)]
struct EventColumns {
    product_key: Vec<String>,
    device_name: Vec<String>,
    identifier: Vec<String>,
    event_type: Vec<String>,
    output: Vec<String>,
    device_time: Vec<i64>,
    server_time: Vec<i64>,
}

impl ThingStore for PgHistory {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), HistoryError>> {
        Box::pin(self.append_records(records))
    }

    fn latest<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<Vec<LatestProperty>, HistoryError>> {
        Box::pin(self.latest_of(device))
    }

    fn property_history(
        &self,
        query: Query,
    ) -> BoxFuture<'_, Result<Page<PropertyPoint>, HistoryError>> {
        Box::pin(self.points(query))
    }

    fn event_history(
        &self,
        query: Query,
        event_type: Option<String>,
    ) -> BoxFuture<'_, Result<Page<EventRecord>, HistoryError>> {
        Box::pin(self.events(query, event_type))
    }

    fn record_call(&self, call: ServiceCall) -> BoxFuture<'_, Result<(), HistoryError>> {
        Box::pin(self.upsert_call(call))
    }

    fn finish_call<'a>(
        &'a self,
        device: &'a DeviceKey,
        call_id: &'a str,
        status: CallStatus,
        code: Option<i64>,
        output: Option<Value>,
        message: Option<String>,
        finished_at: i64,
    ) -> BoxFuture<'a, Result<Option<ServiceCall>, HistoryError>> {
        Box::pin(self.finish(device, call_id, status, code, output, message, finished_at))
    }

    fn call<'a>(
        &'a self,
        device: &'a DeviceKey,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceCall>, HistoryError>> {
        Box::pin(self.get_call(device, call_id))
    }

    fn call_history(&self, query: Query) -> BoxFuture<'_, Result<Page<ServiceCall>, HistoryError>> {
        Box::pin(self.calls(query))
    }

    fn set_desired<'a>(
        &'a self,
        device: &'a DeviceKey,
        identifier: &'a str,
        value: Value,
        expected_version: Option<u64>,
        time: i64,
    ) -> BoxFuture<'a, Result<u64, HistoryError>> {
        Box::pin(self.put_desired(device, identifier, value, expected_version, time))
    }

    fn desired<'a>(
        &'a self,
        device: &'a DeviceKey,
        identifiers: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<DesiredValue>, HistoryError>> {
        Box::pin(self.get_desired(device, identifiers))
    }

    fn delete_desired<'a>(
        &'a self,
        device: &'a DeviceKey,
        identifier: &'a str,
        expected_version: Option<u64>,
    ) -> BoxFuture<'a, Result<(), HistoryError>> {
        Box::pin(self.clear_desired(device, identifier, expected_version))
    }

    fn append_log(&self, entries: Vec<LogEntry>) -> BoxFuture<'_, Result<(), HistoryError>> {
        Box::pin(self.insert_log(entries))
    }

    fn device_log(&self, query: Query) -> BoxFuture<'_, Result<Page<LogEntry>, HistoryError>> {
        Box::pin(self.log_page(query))
    }

    fn purge(
        &self,
        history_before: i64,
        log_before: i64,
    ) -> BoxFuture<'_, Result<PurgeStats, HistoryError>> {
        Box::pin(self.purge_older(history_before, log_before))
    }

    fn delete_device<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<(), HistoryError>> {
        Box::pin(self.remove_device(device))
    }
}
