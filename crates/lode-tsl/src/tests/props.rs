//! Property tests: the value checks never panic, whatever JSON arrives.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::full;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[0-9]{0,15}".prop_map(Value::String),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "Temp", "Level", "Ratio", "Label", "Mode", "Switch", "Since", "Pos", "Samples",
            "Points", "value", "time", "Lat", "Lon", "Fix", "X", "Tag",
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ]
}

proptest! {
    #[test]
    fn check_properties_never_panics(v in json_value()) {
        let tsl = full();
        let check = tsl.check_properties(&v);
        let _ = check.code();
        let _ = tsl.check_event_output("Alarm", &v);
        let _ = tsl.check_event_output("post", &v);
        let _ = tsl.check_service_input("set", &v);
        let _ = tsl.check_service_input("get", &v);
        let _ = tsl.check_service_input("Echo", &v);
    }

    #[test]
    fn wrapped_posts_never_panic(entries in prop::collection::vec((key(), json_value(), json_value()), 0..10)) {
        let tsl = full();
        let params: Map<String, Value> = entries
            .into_iter()
            .map(|(k, v, t)| (k, serde_json::json!({"value": v, "time": t})))
            .collect();
        let check = tsl.check_properties(&Value::Object(params));
        prop_assert!(check.accepted.len() + check.rejected.len() <= 10);
    }
}
