//! Evaluations per second of a typical rule, single-threaded.
//!
//! `cargo run --release -p lode-rules --example throughput`

use std::time::Instant;

use lode_rules::{Context, Message, Outcome, Rule};

struct Fixed;

impl Context for Fixed {
    fn now_ms(&self) -> i64 {
        1_700_000_000_000
    }
    fn uuid(&self) -> String {
        String::new()
    }
    fn random(&self) -> f64 {
        0.0
    }
}

fn message<'a>(json: &'a serde_json::Value, text: &'a str) -> Message<'a> {
    Message {
        topic: "/a1b2c3/dev1/user/update",
        payload: text.as_bytes(),
        json: Some(json),
        product_key: "a1b2c3",
        device_name: "dev1",
        client_ip: None,
        message_id: "1",
        timestamp_ms: 0,
        qos: 0,
    }
}

fn report(api: &str, label: &str, start: Instant, n_rows: usize) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{api:>8} {label:>8}: {N} in {secs:.3} s = {:.0} evaluations/s ({n_rows} rows)",
        N as f64 / secs
    );
}

const N: usize = 2_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rule = Rule::parse(
        r#"SELECT temperature AS t, deviceName() AS dn FROM "/+/+/user/update" WHERE temperature > 30"#,
    )?;
    let hot = serde_json::json!({"temperature": 35, "humidity": 40.5, "id": "123"});
    let cold = serde_json::json!({"temperature": 21, "humidity": 40.5, "id": "124"});
    let (hot_text, cold_text) = (hot.to_string(), cold.to_string());
    let messages = [message(&hot, &hot_text), message(&cold, &cold_text)];

    for (label, msg) in [("passing", &messages[0]), ("filtered", &messages[1])] {
        let start = Instant::now();
        let mut n_rows = 0usize;
        for _ in 0..N {
            if let Outcome::Row(_) = rule.evaluate(std::hint::black_box(msg), &Fixed)? {
                n_rows += 1;
            }
        }
        report("evaluate", label, start, n_rows);
        let start = Instant::now();
        let mut n_rows = 0usize;
        for _ in 0..N {
            if rule.select(std::hint::black_box(msg), &Fixed)?.is_some() {
                n_rows += 1;
            }
        }
        report("select", label, start, n_rows);
    }
    Ok(())
}
