//! Tests of parsing and evaluation, through the public API.

mod eval;
mod functions;
mod parse;
mod props;

use serde_json::{Map, Value, json};

use crate::{Context, EvalError, Message, Outcome, Rule};

/// 2018-11-28T02:56:38.943Z.
pub(super) const NOW: i64 = 1_543_373_798_943;

/// A fixed world: the time, one UUID, one random number, one device tag, UTC+8.
pub(super) struct TestCtx;

impl Context for TestCtx {
    fn attribute(&self, key: &str) -> Option<Value> {
        (key == "region").then(|| json!("eu-1"))
    }
    fn now_ms(&self) -> i64 {
        NOW
    }
    fn uuid(&self) -> String {
        "6f1c7a52-0000-4000-8000-000000000001".to_owned()
    }
    fn random(&self) -> f64 {
        0.25
    }
    fn utc_offset_minutes(&self) -> i32 {
        480
    }
}

/// A context that keeps every default.
pub(super) struct PlainCtx;

impl Context for PlainCtx {
    fn now_ms(&self) -> i64 {
        0
    }
    fn uuid(&self) -> String {
        String::new()
    }
    fn random(&self) -> f64 {
        0.0
    }
}

pub(super) const TOPIC: &str = "/a1b2c3/dev1/user/update";

/// A JSON message from `dev1` of product `a1b2c3` on [`TOPIC`].
pub(super) fn message<'a>(payload: &'a [u8], json: Option<&'a Value>) -> Message<'a> {
    Message {
        topic: TOPIC,
        payload,
        json,
        product_key: "a1b2c3",
        device_name: "dev1",
        client_ip: Some("10.0.0.7"),
        message_id: "1234567890",
        timestamp_ms: NOW - 5,
        qos: 1,
    }
}

/// Runs `sql` against the JSON `payload` on [`TOPIC`].
pub(super) fn run(sql: &str, payload: &Value) -> Result<Outcome, EvalError> {
    let rule = Rule::parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let text = payload.to_string();
    rule.evaluate(&message(text.as_bytes(), Some(payload)), &TestCtx)
}

/// The output row of `sql` against `payload`.
pub(super) fn row(sql: &str, payload: &Value) -> Map<String, Value> {
    match run(sql, payload) {
        Ok(Outcome::Row(row)) => row,
        other => panic!("{sql}: expected a row, got {other:?}"),
    }
}

/// The value of `expr` against `payload`.
pub(super) fn value(expr: &str, payload: &Value) -> Value {
    let sql = format!("SELECT {expr} AS v FROM '#'");
    row(&sql, payload).remove("v").unwrap_or(Value::Null)
}

/// Asserts that `expr` evaluates to `expected` against the sample payload.
#[track_caller]
pub(super) fn check(expr: &str, expected: Value) {
    assert_eq!(value(expr, &sample()), expected, "{expr}");
}

/// The payload most tests read.
pub(super) fn sample() -> Value {
    json!({
        "temperature": 21,
        "humidity": 40.5,
        "name": "Sensor-01",
        "numstr": "10",
        "on": true,
        "nothing": null,
        "items": {"Temp": {"value": 21.5, "time": 1_543_373_798_000_i64}},
        "list": [1, "two", {"three": 3}],
        "odd key": "spaced",
        "big": i64::MAX,
        "small": i64::MIN,
    })
}
