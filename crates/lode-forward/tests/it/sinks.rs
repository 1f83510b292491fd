//! Database and bus destinations against the real services of this machine. Each test
//! skips, saying why, when its `LODESTONE_TEST_*_URL` variable is unset.

use std::time::Duration;

use lode_forward::DestinationSpec;
use serde_json::{Value, json};

use crate::support::{Runtime, eventually, runtime};

const WAIT: Duration = Duration::from_secs(20);

fn env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            println!("skipped: {name} is not set");
            None
        }
    }
}

/// A table name no other run uses.
fn table() -> String {
    let n: u64 = rand::random();
    format!("lode_fw_{n:x}")
}

fn spec(v: Value) -> DestinationSpec {
    serde_json::from_value(v).expect("destination spec")
}

/// A rule over `/pk/+/user/update` with one action, enabled.
async fn rule(rt: &Runtime, account: &str, pk: &str, action: Value) {
    let spec = json!({
        "name": "sink", "enabled": true,
        "sql": format!("SELECT n, t, o, deviceName() AS dev FROM '/{pk}/+/user/update' WHERE n >= 0"),
        "actions": [action],
    });
    rt.forward
        .create_rule(account, serde_json::from_value(spec).expect("rule spec"))
        .await
        .expect("rule");
}

async fn publish_three(rt: &Runtime, pk: &str) {
    for n in 0..3 {
        let payload = json!({"n": n, "t": 20.5 + f64::from(n), "o": {"k": n}}).to_string();
        rt.publish(pk, "dev1", payload).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_insert_with_a_column_mapping() {
    let Some(url) = env("LODESTONE_TEST_PG_URL") else {
        return;
    };
    let pool = sqlx::PgPool::connect(&url).await.expect("postgres");
    let table = table();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id SERIAL PRIMARY KEY, n INT CHECK (n <> 3), \
         temp DOUBLE PRECISION, device TEXT, extra JSONB, note TEXT, msg_id TEXT UNIQUE)"
    )))
    .execute(&pool)
    .await
    .expect("create table");
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, account, pk) = runtime(dir.path()).await;
    let bad = rt
        .forward
        .create_destination(
            &account,
            spec(json!({"name": "pg", "kind": "postgres", "config": {"url": "postgres://nobody@127.0.0.1:1/x"}})),
        )
        .await
        .expect_err("unreachable database");
    assert_eq!(bad.code(), "DestinationCheckFailed");
    let dest = rt
        .forward
        .create_destination(
            &account,
            spec(json!({"name": "pg", "kind": "postgres", "config": {"url": url}})),
        )
        .await
        .expect("destination");
    rule(
        &rt,
        &account,
        &pk,
        json!({
            "type": "insert", "destination": dest.id, "table": table,
            "columns": {"n": "${n}", "temp": "${t}", "device": "${dev}", "extra": "${o}",
                        "note": "n=${n} from ${deviceName}"},
            "messageIdColumn": "msg_id",
        }),
    )
    .await;
    publish_three(&rt, &pk).await;
    // A row the table refuses fails alone; the others of its batch are inserted.
    for n in 3..6 {
        let payload = json!({"n": n, "t": 20.5 + f64::from(n), "o": {"k": n}}).to_string();
        rt.publish(&pk, "dev1", payload).await;
    }
    let count = || {
        let pool = pool.clone();
        let table = table.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table}"
            )))
            .fetch_one(&pool)
            .await
            .expect("count")
        }
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while count().await < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows: Vec<(i32, f64, String, String, String, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT n, temp, device, extra::text, note, msg_id FROM {table} ORDER BY n"
        )))
        .fetch_all(&pool)
        .await
        .expect("rows");
    let shown: Vec<(i32, f64, String, Value, String)> = rows
        .iter()
        .map(|r| {
            let extra = serde_json::from_str(&r.3).expect("JSON");
            (r.0, r.1, r.2.clone(), extra, r.4.clone())
        })
        .collect();
    let expected: Vec<(i32, f64, String, Value, String)> = [0, 1, 2, 4, 5]
        .into_iter()
        .map(|n| {
            let t = 20.5 + f64::from(n);
            (
                n,
                t,
                "dev1".into(),
                json!({"k": n}),
                format!("n={n} from dev1"),
            )
        })
        .collect();
    assert_eq!(shown, expected);
    let fw = rt.forward.clone();
    eventually("the refused row", WAIT, || fw.counters().buffered == 0).await;
    let rules = fw.list_rules(&account).await.expect("rules");
    let c = fw
        .rule_counters(&account, &rules[0].id)
        .await
        .expect("counters");
    assert_eq!((c.actions[0].forwarded, c.actions[0].failed), (5, 1));
    assert!(
        c.actions[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("check constraint")),
        "{c:?}"
    );
    drop(fw);
    assert!(rows.iter().all(|r| r.5.ends_with("-0")), "{rows:?}");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await
        .expect("drop");
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_insert_with_a_column_mapping() {
    let Some(url) = env("LODESTONE_TEST_MYSQL_URL") else {
        return;
    };
    // The database may not exist yet.
    if let Some((server, db)) = url.rsplit_once('/') {
        let admin = sqlx::MySqlPool::connect(server).await.expect("mysql");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE IF NOT EXISTS `{db}`"
        )))
        .execute(&admin)
        .await
        .expect("create database");
    }
    let pool = sqlx::MySqlPool::connect(&url).await.expect("mysql");
    let table = table();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, n INT, temp DOUBLE, \
         device VARCHAR(64), extra TEXT, msg_id VARCHAR(128) UNIQUE)"
    )))
    .execute(&pool)
    .await
    .expect("create table");
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, account, pk) = runtime(dir.path()).await;
    let dest = rt
        .forward
        .create_destination(
            &account,
            spec(json!({"name": "my", "kind": "mysql", "config": {"url": url}})),
        )
        .await
        .expect("destination");
    rule(
        &rt,
        &account,
        &pk,
        json!({
            "type": "insert", "destination": dest.id, "table": table,
            "columns": {"n": "${n}", "temp": "${t}", "device": "${dev}", "extra": "${o}"},
            "messageIdColumn": "msg_id",
        }),
    )
    .await;
    publish_three(&rt, &pk).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
        if n >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows: Vec<(i32, f64, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT n, temp, device, extra FROM {table} ORDER BY n"
    )))
    .fetch_all(&pool)
    .await
    .expect("rows");
    assert_eq!(
        rows,
        vec![
            (0, 20.5, "dev1".into(), r#"{"k":0}"#.into()),
            (1, 21.5, "dev1".into(), r#"{"k":1}"#.into()),
            (2, 22.5, "dev1".into(), r#"{"k":2}"#.into()),
        ]
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await
        .expect("drop");
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_list_stream_and_channel() {
    let Some(url) = env("LODESTONE_TEST_REDIS_URL") else {
        return;
    };
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = table();
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub
        .subscribe(format!("{key}:chan"))
        .await
        .expect("subscribe");

    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, account, pk) = runtime(dir.path()).await;
    let dest = rt
        .forward
        .create_destination(
            &account,
            spec(json!({"name": "redis", "kind": "redis", "config": {"url": url}})),
        )
        .await
        .expect("destination");
    let spec = json!({
        "name": "redis", "enabled": true,
        "sql": format!("SELECT n, deviceName() AS dev FROM '/{pk}/+/user/update'"),
        "actions": [
            {"type": "redis", "destination": dest.id, "command": "rpush", "key": format!("{key}:list")},
            {"type": "redis", "destination": dest.id, "command": "xadd", "key": format!("{key}:stream")},
            {"type": "redis", "destination": dest.id, "command": "publish", "key": format!("{key}:chan"),
             "payload": "n=${n}"},
        ],
    });
    rt.forward
        .create_rule(&account, serde_json::from_value(spec).expect("rule"))
        .await
        .expect("rule");
    for n in 0..2 {
        rt.publish(&pk, "dev1", json!({"n": n}).to_string()).await;
    }
    let mut messages = pubsub.on_message();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut messages))
            .await
            .expect("published")
            .expect("message");
        got.push(m.get_payload::<String>().expect("text"));
    }
    assert_eq!(got, ["n=0", "n=1"]);
    let fw = rt.forward.clone();
    eventually("deliveries", WAIT, || fw.counters().buffered == 0).await;
    drop(fw);
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{key}:list"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("list");
    assert_eq!(list, [r#"{"dev":"dev1","n":0}"#, r#"{"dev":"dev1","n":1}"#]);
    let stream: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{key}:stream"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("stream");
    let fields: Vec<Vec<(String, String)>> = stream
        .into_iter()
        .map(|(_, f)| f.into_iter().filter(|(k, _)| k != "messageId").collect())
        .collect();
    assert_eq!(
        fields,
        vec![
            vec![
                ("dev".to_owned(), "dev1".to_owned()),
                ("n".to_owned(), "0".to_owned())
            ],
            vec![
                ("dev".to_owned(), "dev1".to_owned()),
                ("n".to_owned(), "1".to_owned())
            ],
        ]
    );
    redis::cmd("DEL")
        .arg(format!("{key}:list"))
        .arg(format!("{key}:stream"))
        .query_async::<i64>(&mut conn)
        .await
        .expect("cleanup");
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_exchange_routing_key_and_confirms() {
    let Some(url) = env("LODESTONE_TEST_AMQP_URL") else {
        return;
    };
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("rabbitmq");
    let channel = conn.create_channel().await.expect("channel");
    let key = table();
    channel
        .queue_declare(
            key.as_str().into(),
            lapin::options::QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("queue");
    channel
        .queue_bind(
            key.as_str().into(),
            "amq.topic".into(),
            format!("{key}.#").as_str().into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect("bind");

    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, account, pk) = runtime(dir.path()).await;
    let dest = rt
        .forward
        .create_destination(
            &account,
            spec(json!({"name": "mq", "kind": "rabbitmq", "config": {"url": url}})),
        )
        .await
        .expect("destination");
    rule(
        &rt,
        &account,
        &pk,
        json!({"type": "amqp", "destination": dest.id, "exchange": "amq.topic",
               "routingKey": format!("{key}.${{dev}}"), "payload": "{\"n\":${n}}"}),
    )
    .await;
    for n in 0..2 {
        rt.publish(&pk, "dev1", json!({"n": n, "t": 1, "o": {}}).to_string())
            .await;
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{got:?}");
        match channel
            .basic_get(
                key.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("get")
        {
            Some(m) => got.push((
                m.delivery.routing_key.to_string(),
                String::from_utf8(m.delivery.data.clone()).expect("text"),
                m.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            )),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let shown: Vec<(String, String)> = got.iter().map(|g| (g.0.clone(), g.1.clone())).collect();
    assert_eq!(
        shown,
        vec![
            (format!("{key}.dev1"), r#"{"n":0}"#.to_owned()),
            (format!("{key}.dev1"), r#"{"n":1}"#.to_owned()),
        ]
    );
    assert!(got.iter().all(|g| g.2.ends_with("-0")), "{got:?}");
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_core_and_jetstream() {
    let Some(url) = env("LODESTONE_TEST_NATS_URL") else {
        return;
    };
    let client = async_nats::connect(&url).await.expect("nats");
    let key = table();
    let mut sub = client
        .subscribe(format!("{key}.core.>"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: key.clone(),
            subjects: vec![format!("{key}.js.>")],
            ..Default::default()
        })
        .await
        .expect("stream");

    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, account, pk) = runtime(dir.path()).await;
    let core = rt
        .forward
        .create_destination(
            &account,
            spec(json!({"name": "nats", "kind": "nats", "config": {"url": url}})),
        )
        .await
        .expect("destination");
    let jet = rt
        .forward
        .create_destination(
            &account,
            spec(json!({"name": "js", "kind": "nats", "config": {"url": url, "jetstream": true}})),
        )
        .await
        .expect("destination");
    let spec = json!({
        "name": "nats", "enabled": true,
        "sql": format!("SELECT n, deviceName() AS dev FROM '/{pk}/+/user/update'"),
        "actions": [
            {"type": "nats", "destination": core.id, "subject": format!("{key}.core.${{dev}}")},
            {"type": "nats", "destination": jet.id, "subject": format!("{key}.js.${{dev}}"),
             "payload": "n=${n}"},
        ],
    });
    rt.forward
        .create_rule(&account, serde_json::from_value(spec).expect("rule"))
        .await
        .expect("rule");
    for n in 0..2 {
        rt.publish(&pk, "dev1", json!({"n": n}).to_string()).await;
    }
    for n in 0..2 {
        let m = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut sub))
            .await
            .expect("a message")
            .expect("subscription");
        assert_eq!(m.subject.as_str(), format!("{key}.core.dev1"));
        assert_eq!(
            std::str::from_utf8(&m.payload).expect("text"),
            format!(r#"{{"dev":"dev1","n":{n}}}"#)
        );
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        assert!(id.ends_with("-0"), "{id}");
    }
    let fw = rt.forward.clone();
    eventually("deliveries", WAIT, || fw.counters().buffered == 0).await;
    drop(fw);
    assert_eq!(stream.info().await.expect("info").state.messages, 2);
    for (seq, n) in [(1, 0), (2, 1)] {
        let m = stream.get_raw_message(seq).await.expect("stored");
        assert_eq!(
            std::str::from_utf8(&m.payload).expect("text"),
            format!("n={n}")
        );
    }
    js.delete_stream(&key).await.expect("cleanup");
    rt.stop().await;
}
