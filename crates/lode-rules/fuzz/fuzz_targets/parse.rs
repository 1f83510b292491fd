//! Fuzz target: parsing any text never panics, errors point inside the statement, and
//! whatever parses evaluates without panicking against a JSON and a binary message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lode_rules::{Context, Message, Rule};

struct Fixed;

impl Context for Fixed {
    fn now_ms(&self) -> i64 {
        1_543_373_798_943
    }
    fn uuid(&self) -> String {
        "00000000-0000-4000-8000-000000000000".to_owned()
    }
    fn random(&self) -> f64 {
        0.5
    }
}

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    let rule = match Rule::parse(&sql) {
        Ok(rule) => rule,
        Err(e) => {
            assert!(e.offset <= sql.len());
            assert!(e.line >= 1 && e.column >= 1);
            return;
        }
    };
    let json = serde_json::json!({
        "temperature": 21, "name": "dev", "items": {"Temp": {"value": 1.5}}, "list": [1, "a"]
    });
    let payload = json.to_string();
    let mut msg = Message {
        topic: "/a1/dev1/user/update",
        payload: payload.as_bytes(),
        json: Some(&json),
        product_key: "a1",
        device_name: "dev1",
        client_ip: None,
        message_id: "1",
        timestamp_ms: 0,
        qos: 0,
    };
    let _ = rule.evaluate(&msg, &Fixed);
    msg.json = None;
    msg.payload = data;
    let _ = rule.evaluate(&msg, &Fixed);
});
