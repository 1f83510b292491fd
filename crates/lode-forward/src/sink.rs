//! Database and bus destinations: PostgreSQL and MySQL inserts, Redis commands. One
//! connection pool (or multiplexed connection) per destination, opened at first use and
//! dropped when the destination changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::action::{DestinationConfig, RedisCommand};
use crate::deliver::Failure;

/// One row of an insert batch.
pub(crate) struct Row<'a> {
    pub(crate) table: &'a str,
    pub(crate) values: &'a [(String, Value)],
    pub(crate) dedupe: bool,
}

/// Connections per database destination.
const POOL_SIZE: u32 = 4;
/// Time to connect or to get a pooled connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) enum Conn {
    Pg(PgPool),
    My(MySqlPool),
    Redis(redis::aio::MultiplexedConnection),
    /// The connection (kept open) and a channel in confirm mode.
    Amqp(Arc<(lapin::Connection, lapin::Channel)>),
    /// The client, and whether to publish through JetStream.
    Nats(async_nats::Client, bool),
}

/// How long a bus publish (with its confirmation) may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The open connections, by destination id.
#[derive(Default)]
pub(crate) struct Sinks {
    conns: Mutex<HashMap<String, Conn>>,
}

fn sql_failure(e: sqlx::Error) -> Failure {
    match e {
        // The statement itself is wrong (missing table, type mismatch, constraint).
        sqlx::Error::Database(d) => Failure::Permanent(format!("database refused the row: {d}")),
        other => Failure::Transient(format!("database unavailable: {other}")),
    }
}

fn redis_failure(e: redis::RedisError) -> Failure {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
        Failure::Transient(format!("redis unavailable: {e}"))
    } else {
        Failure::Permanent(format!("redis refused the command: {e}"))
    }
}

/// `"a"."b"` for `a.b`: the names are checked identifiers, quoted for the dialect.
fn quoted(name: &str, quote: char) -> String {
    name.split('.')
        .map(|p| format!("{quote}{p}{quote}"))
        .collect::<Vec<_>>()
        .join(".")
}

impl Sinks {
    /// Forgets the connections of a destination that changed or went away.
    pub(crate) fn forget(&self, id: &str) {
        self.conns.lock().remove(id);
    }

    /// Opens a connection to `config` and checks it answers (used on save and first use).
    pub(crate) async fn connect(config: &DestinationConfig) -> Result<Option<Conn>, Failure> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            Failure::Transient(format!("cannot connect to the {what}: {e}"))
        };
        Ok(Some(match config {
            DestinationConfig::Http(_) => return Ok(None),
            DestinationConfig::Postgres(u) => {
                let pool = PgPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect(&u.url)
                    .await
                    .map_err(|e| unavailable("database", &e))?;
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map_err(|e| unavailable("database", &e))?;
                Conn::Pg(pool)
            }
            DestinationConfig::Mysql(u) => {
                let pool = MySqlPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect(&u.url)
                    .await
                    .map_err(|e| unavailable("database", &e))?;
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map_err(|e| unavailable("database", &e))?;
                Conn::My(pool)
            }
            DestinationConfig::Redis(u) => {
                let client = redis::Client::open(u.url.as_str())
                    .map_err(|e| Failure::Permanent(format!("invalid redis url: {e}")))?;
                let mut conn = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    client.get_multiplexed_async_connection(),
                )
                .await
                .map_err(|_| Failure::Transient("redis did not answer within 5 s".into()))?
                .map_err(redis_failure)?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map_err(redis_failure)?;
                Conn::Redis(conn)
            }
            DestinationConfig::Rabbitmq(u) => {
                let conn = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    lapin::Connection::connect(&u.url, lapin::ConnectionProperties::default()),
                )
                .await
                .map_err(|_| Failure::Transient("rabbitmq did not answer within 5 s".into()))?
                .map_err(|e| unavailable("broker", &e))?;
                let channel = conn
                    .create_channel()
                    .await
                    .map_err(|e| unavailable("broker", &e))?;
                channel
                    .confirm_select(lapin::options::ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| unavailable("broker", &e))?;
                Conn::Amqp(Arc::new((conn, channel)))
            }
            DestinationConfig::Nats(n) => {
                let client = tokio::time::timeout(CONNECT_TIMEOUT, async_nats::connect(&n.url))
                    .await
                    .map_err(|_| Failure::Transient("nats did not answer within 5 s".into()))?
                    .map_err(|e| unavailable("server", &e))?;
                Conn::Nats(client, n.jetstream)
            }
        }))
    }

    /// Publishes to an exchange and waits for the broker's confirmation.
    pub(crate) async fn amqp(
        &self,
        id: &str,
        config: &DestinationConfig,
        message_id: &str,
        exchange: &str,
        routing_key: &str,
        payload: &str,
    ) -> Result<(), Failure> {
        let Conn::Amqp(amqp) = self.conn(id, config).await? else {
            return Err(Failure::Permanent("not a rabbitmq destination".into()));
        };
        let properties = lapin::BasicProperties::default()
            .with_message_id(message_id.into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            amqp.1
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    lapin::options::BasicPublishOptions::default(),
                    payload.as_bytes(),
                    properties,
                )
                .await?
                .await
        })
        .await;
        match sent {
            Ok(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
            Ok(Ok(_)) => Err(Failure::Transient("the broker refused the message".into())),
            Ok(Err(e)) => {
                self.forget(id);
                Err(Failure::Transient(format!("rabbitmq publish failed: {e}")))
            }
            Err(_) => {
                self.forget(id);
                Err(Failure::Transient("no confirmation within 10 s".into()))
            }
        }
    }

    /// Publishes to a subject: core NATS (flushed to the server) or JetStream (acknowledged).
    pub(crate) async fn nats(
        &self,
        id: &str,
        config: &DestinationConfig,
        message_id: &str,
        subject: &str,
        payload: &str,
    ) -> Result<(), Failure> {
        let Conn::Nats(client, jetstream) = self.conn(id, config).await? else {
            return Err(Failure::Permanent("not a nats destination".into()));
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id);
        headers.insert(crate::MESSAGE_ID_HEADER, message_id);
        let payload = bytes::Bytes::copy_from_slice(payload.as_bytes());
        let subject = subject.to_owned();
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, async move {
            if jetstream {
                let js = async_nats::jetstream::new(client);
                let ack = js
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map(|_| ()).map_err(|e| e.to_string())
            } else {
                client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| e.to_string())?;
                client.flush().await.map_err(|e| e.to_string())
            }
        })
        .await;
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::Transient(format!("nats publish failed: {e}"))),
            Err(_) => Err(Failure::Transient("no acknowledgement within 10 s".into())),
        }
    }

    async fn conn(&self, id: &str, config: &DestinationConfig) -> Result<Conn, Failure> {
        if let Some(c) = self.conns.lock().get(id) {
            return Ok(c.clone());
        }
        let conn = Self::connect(config)
            .await?
            .ok_or_else(|| Failure::Permanent("not a database or bus destination".into()))?;
        self.conns.lock().insert(id.to_owned(), conn.clone());
        Ok(conn)
    }

    /// Inserts rows in one transaction (one commit for the batch); all or none.
    pub(crate) async fn insert(
        &self,
        id: &str,
        config: &DestinationConfig,
        rows: &[Row<'_>],
    ) -> Result<(), Failure> {
        match self.conn(id, config).await? {
            Conn::Pg(pool) => {
                let mut tx = pool.begin().await.map_err(sql_failure)?;
                for row in rows {
                    let cols = row
                        .values
                        .iter()
                        .map(|(c, _)| quoted(c, '"'))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let table = quoted(row.table, '"');
                    let record = Value::Object(row.values.iter().cloned().collect()).to_string();
                    let sql = format!(
                        "INSERT INTO {table} ({cols}) SELECT {cols} \
                         FROM json_populate_record(NULL::{table}, $1::json){}",
                        if row.dedupe {
                            " ON CONFLICT DO NOTHING"
                        } else {
                            ""
                        }
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(record)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql_failure)?;
                }
                tx.commit().await.map_err(sql_failure)?;
            }
            Conn::My(pool) => {
                let mut tx = pool.begin().await.map_err(sql_failure)?;
                for row in rows {
                    let cols = row
                        .values
                        .iter()
                        .map(|(c, _)| quoted(c, '`'))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let marks = vec!["?"; row.values.len()].join(", ");
                    let sql = format!(
                        "INSERT {}INTO {} ({cols}) VALUES ({marks})",
                        if row.dedupe { "IGNORE " } else { "" },
                        quoted(row.table, '`')
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for (_, v) in row.values {
                        q = match v {
                            Value::Null => q.bind(None::<String>),
                            Value::Bool(b) => q.bind(*b),
                            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                                (Some(i), _) => q.bind(i),
                                (None, Some(f)) => q.bind(f),
                                (None, None) => q.bind(n.to_string()),
                            },
                            Value::String(s) => q.bind(s.clone()),
                            other => q.bind(other.to_string()),
                        };
                    }
                    q.execute(&mut *tx).await.map_err(sql_failure)?;
                }
                tx.commit().await.map_err(sql_failure)?;
            }
            Conn::Redis(_) | Conn::Amqp(_) | Conn::Nats(..) => {
                return Err(Failure::Permanent(
                    "only database destinations take inserts".into(),
                ));
            }
        }
        Ok(())
    }

    /// Runs one Redis command.
    pub(crate) async fn redis(
        &self,
        id: &str,
        config: &DestinationConfig,
        command: RedisCommand,
        key: &str,
        payload: &str,
        fields: &[(String, String)],
    ) -> Result<(), Failure> {
        let Conn::Redis(mut conn) = self.conn(id, config).await? else {
            return Err(Failure::Permanent("not a redis destination".into()));
        };
        let mut cmd = match command {
            RedisCommand::Rpush => redis::cmd("RPUSH"),
            RedisCommand::Xadd => redis::cmd("XADD"),
            RedisCommand::Publish => redis::cmd("PUBLISH"),
        };
        cmd.arg(key);
        match command {
            RedisCommand::Xadd => {
                cmd.arg("*");
                for (k, v) in fields {
                    cmd.arg(k).arg(v);
                }
            }
            RedisCommand::Rpush | RedisCommand::Publish => {
                cmd.arg(payload);
            }
        }
        let result = cmd.query_async::<redis::Value>(&mut conn).await;
        if let Err(e) = result {
            let failure = redis_failure(e);
            if matches!(failure, Failure::Transient(_)) {
                self.forget(id);
            }
            return Err(failure);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_per_part() {
        assert_eq!(quoted("public.readings", '"'), "\"public\".\"readings\"");
        assert_eq!(quoted("t", '`'), "`t`");
    }
}
