//! Evaluation: operators, NULL and missing fields, coercion, overflow, WHERE outcomes.

use serde_json::{Value, json};

use super::{NOW, PlainCtx, TOPIC, TestCtx, check, message, row, run, sample};
use crate::{Message, Outcome, Rule};

#[test]
fn fields_and_paths() {
    check("temperature", json!(21));
    check("items.Temp.value", json!(21.5));
    check("list[0]", json!(1));
    check("list[1]", json!("two"));
    check("list[2].three", json!(3));
    check("items", sample()["items"].clone());
    // Missing steps of every kind are NULL.
    check("missing", json!(null));
    check("items.Nope.value", json!(null));
    check("list[9]", json!(null));
    check("temperature.x", json!(null));
    check("list.x", json!(null));
    check("items[0]", json!(null));
    check("nothing", json!(null));
}

#[test]
fn arithmetic() {
    check("temperature + 1", json!(22));
    check("temperature - 1.5", json!(19.5));
    check("temperature * 2", json!(42));
    check("temperature / 3", json!(7));
    check("7 / 2", json!(3.5));
    check("-7 / 2", json!(-3.5));
    check("7 % 3", json!(1));
    check("-7 % 3", json!(-1));
    check("7.5 % 2", json!(1.5));
    check("humidity * 2", json!(81.0));
    check("-temperature", json!(-21));
    check("-humidity", json!(-40.5));
}

#[test]
fn integer_overflow_becomes_float() {
    check("big + 1", json!(9_223_372_036_854_775_808.0));
    check("small - 1", json!(-9_223_372_036_854_775_808.0));
    check("big * 2", json!(18_446_744_073_709_551_616.0));
    check("-small", json!(9_223_372_036_854_775_808.0));
    check("small / -1", json!(9_223_372_036_854_775_808.0));
    check("small % -1", json!(0));
    // u64 values beyond i64 are floats from the start.
    assert_eq!(
        super::value("v + 0", &json!({"v": u64::MAX})),
        json!(18_446_744_073_709_551_615.0)
    );
}

#[test]
fn division_by_zero_and_non_finite_results_are_null() {
    check("1 / 0", json!(null));
    check("1 % 0", json!(null));
    check("1.5 / 0", json!(null));
    check("1.5 % 0.0", json!(null));
    check("1e308 * 10", json!(null));
    check("temperature / (temperature - 21)", json!(null));
}

#[test]
fn null_propagation() {
    for expr in [
        "missing + 1",
        "1 - nothing",
        "missing * 2",
        "missing / 2",
        "missing % 2",
        "-missing",
        "missing = 1",
        "missing != 1",
        "missing < 1",
        "NULL = NULL",
        "NOT missing",
        "missing LIKE 'a%'",
        "name LIKE missing",
        "missing IN (1, 2)",
        "missing BETWEEN 1 AND 2",
        "1 BETWEEN missing AND 2",
        "missing AND TRUE",
        "missing OR FALSE",
        "CAST(missing AS int)",
    ] {
        check(expr, json!(null));
    }
    check("missing IS NULL", json!(true));
    check("nothing IS NULL", json!(true));
    check("temperature IS NULL", json!(false));
    check("missing IS NOT NULL", json!(false));
    check("temperature IS NOT NULL", json!(true));
}

#[test]
fn three_valued_logic() {
    check("missing AND FALSE", json!(false));
    check("FALSE AND missing", json!(false));
    check("missing OR TRUE", json!(true));
    check("TRUE OR missing", json!(true));
    check("TRUE AND TRUE", json!(true));
    check("TRUE AND FALSE", json!(false));
    check("FALSE OR FALSE", json!(false));
    check("NOT TRUE", json!(false));
    // Numbers are true unless zero; strings are unknown.
    check("1 AND 2", json!(true));
    check("0 OR 0", json!(false));
    check("NOT 0", json!(true));
    check("name AND TRUE", json!(null));
}

#[test]
fn comparisons() {
    check("temperature = 21", json!(true));
    check("temperature == 21", json!(true));
    check("temperature = 21.0", json!(true));
    check("temperature != 21", json!(false));
    check("temperature <> 22", json!(true));
    check("temperature < 22", json!(true));
    check("temperature <= 21", json!(true));
    check("temperature > 21", json!(false));
    check("temperature >= 21", json!(true));
    check("humidity > temperature", json!(true));
    check("name = 'Sensor-01'", json!(true));
    check("name < 'Sensor-02'", json!(true));
    check("'abc' < 'abd'", json!(true));
    check("TRUE > FALSE", json!(true));
    check("big > small", json!(true));
    check("big = 9223372036854775807", json!(true));
    check("big > 9223372036854775806", json!(true));
}

#[test]
fn coercion_between_strings_numbers_and_booleans() {
    // A numeric string against a number compares as a number ...
    check("'10' > 9", json!(true));
    check("numstr = 10", json!(true));
    check("numstr > 9.5", json!(true));
    check("' 10 ' = 10", json!(true));
    // ... but two strings compare as text.
    check("'10' > '9'", json!(false));
    check("numstr = '10.0'", json!(false));
    // Numeric strings take part in arithmetic.
    check("numstr + 1", json!(11));
    check("'2.5' * 2", json!(5.0));
    check("'1e2' + 0", json!(100.0));
    check("'abc' + 1", json!(null));
    check("'inf' + 1", json!(null));
    check("'NaN' + 1", json!(null));
    // Booleans count as 1 and 0 next to numbers.
    check("on = 1", json!(true));
    check("on + 1", json!(2));
    check("on = 'true'", json!(false));
    // Incomparable values are unequal and unordered.
    check("name = 1", json!(false));
    check("name != 1", json!(true));
    check("name > 1", json!(null));
    check("items = 1", json!(false));
    check("items > 1", json!(null));
    check("list = list", json!(true));
    check("list = items", json!(false));
    check("list < list", json!(null));
}

#[test]
fn in_lists() {
    check("temperature IN (20, 21, 22)", json!(true));
    check("temperature IN (1, 2)", json!(false));
    check("temperature NOT IN (1, 2)", json!(true));
    check("temperature NOT IN (21)", json!(false));
    check("name IN ('a', 'Sensor-01')", json!(true));
    check("numstr IN (10)", json!(true));
    // A NULL in the list makes "no match" unknown, but a match is still a match.
    check("temperature IN (1, NULL)", json!(null));
    check("temperature IN (21, NULL)", json!(true));
    check("temperature NOT IN (1, NULL)", json!(null));
    check("temperature IN (temperature, missing)", json!(true));
}

#[test]
fn like_patterns() {
    check("name LIKE 'Sensor%'", json!(true));
    check("name LIKE '%01'", json!(true));
    check("name LIKE '%nso%'", json!(true));
    check("name LIKE 'Sensor-0_'", json!(true));
    check("name LIKE 'Sensor_0'", json!(false));
    check("name LIKE 'sensor%'", json!(false));
    check("name NOT LIKE 'x%'", json!(true));
    check("name LIKE '%'", json!(true));
    check("'' LIKE '%'", json!(true));
    check("'' LIKE '_'", json!(false));
    check("'a%b' LIKE 'a\\%b'", json!(true));
    check("'axb' LIKE 'a\\%b'", json!(false));
    check("'a_b' LIKE 'a!_b' ESCAPE '!'", json!(true));
    check("'aXb' LIKE 'a!_b' ESCAPE '!'", json!(false));
    check("'a\\\\b' LIKE 'a\\\\\\\\b'", json!(true));
    check("'a\\\\b' LIKE 'a\\\\b'", json!(false));
    check("'aaab' LIKE '%a%ab'", json!(true));
    check("'mississippi' LIKE '%iss%pi'", json!(true));
    check("'mississippi' LIKE '%iss%px'", json!(false));
    check("'日本語' LIKE '日_語'", json!(true));
    // Non-strings are matched by their text.
    check("temperature LIKE '2%'", json!(true));
}

#[test]
fn between() {
    check("temperature BETWEEN 20 AND 22", json!(true));
    check("temperature BETWEEN 21 AND 21", json!(true));
    check("temperature BETWEEN 22 AND 30", json!(false));
    check("temperature NOT BETWEEN 22 AND 30", json!(true));
    check("name BETWEEN 'A' AND 'Z'", json!(true));
    // One side false decides even if the other is unknown.
    check("temperature BETWEEN 30 AND missing", json!(false));
    check("temperature BETWEEN 1 AND missing", json!(null));
}

#[test]
fn case_expressions() {
    check(
        "CASE WHEN temperature > 30 THEN 'hot' WHEN temperature > 15 THEN 'mild' ELSE 'cold' END",
        json!("mild"),
    );
    check("CASE WHEN temperature > 30 THEN 'hot' END", json!(null));
    check("CASE WHEN missing THEN 1 ELSE 2 END", json!(2));
    check(
        "CASE temperature WHEN 20 THEN 'a' WHEN 21 THEN 'b' END",
        json!("b"),
    );
    check(
        "CASE numstr WHEN 10 THEN 'ten' ELSE 'other' END",
        json!("ten"),
    );
    check(
        "CASE missing WHEN NULL THEN 'null' ELSE 'no match' END",
        json!("no match"),
    );
    // The reference platform's example.
    let out = row(
        "SELECT case flag when 1 then 'Light On' when 2 then 'Light Off' else '' end flag FROM '#'",
        &json!({"flag": 2}),
    );
    assert_eq!(out.get("flag"), Some(&json!("Light Off")));
}

#[test]
fn casts() {
    check("CAST(humidity AS int)", json!(40));
    check("CAST(-2.9 AS int)", json!(-2));
    check("CAST('42' AS int)", json!(42));
    check("CAST('4.7' AS integer)", json!(4));
    check("CAST('x' AS int)", json!(null));
    check("CAST(on AS int)", json!(1));
    check("CAST(1e300 AS int)", json!(null));
    check("CAST(temperature AS double)", json!(21.0));
    check("CAST(numstr AS double)", json!(10.0));
    check("CAST(temperature AS string)", json!("21"));
    check("CAST(list AS string)", json!("[1,\"two\",{\"three\":3}]"));
    check("CAST(on AS varchar)", json!("true"));
    check("CAST('TRUE' AS bool)", json!(true));
    check("CAST('0' AS boolean)", json!(false));
    check("CAST(0 AS bool)", json!(false));
    check("CAST(2 AS bool)", json!(true));
    check("CAST('maybe' AS bool)", json!(null));
    check("CAST(items AS int)", json!(null));
}

#[test]
fn where_clause_outcomes() {
    let sql = r#"SELECT temperature AS t, deviceName() AS dn FROM "/+/+/user/update" WHERE temperature > 30"#;
    assert_eq!(
        run(sql, &json!({"temperature": 35})).unwrap(),
        Outcome::Row(
            json!({"t": 35, "dn": "dev1"})
                .as_object()
                .cloned()
                .unwrap_or_default()
        )
    );
    assert_eq!(
        run(sql, &json!({"temperature": 21})).unwrap(),
        Outcome::Filtered {
            reason: "WHERE was false: temperature > 30 with temperature = 21".to_owned()
        }
    );
    assert_eq!(
        run(sql, &json!({"humidity": 1})).unwrap(),
        Outcome::Filtered {
            reason: "WHERE was null: temperature > 30 with temperature missing".to_owned()
        }
    );
    let sql =
        "SELECT 1 FROM '#' WHERE items.Temp.value > 30 AND name = 'x' OR items.Temp.value < 0";
    assert_eq!(
        run(sql, &sample()).unwrap(),
        Outcome::Filtered {
            reason:
                "WHERE was false: items.Temp.value > 30 AND name = 'x' OR items.Temp.value < 0 \
                     with items.Temp.value = 21.5, name = \"Sensor-01\""
                    .to_owned()
        }
    );
    let sql = "SELECT 1 FROM '#' WHERE deviceName() = 'other'";
    assert_eq!(
        run(sql, &sample()).unwrap(),
        Outcome::Filtered {
            reason: "WHERE was false: deviceName() = 'other'".to_owned()
        }
    );
    // A string condition is neither true nor false.
    assert!(matches!(
        run("SELECT 1 FROM '#' WHERE name", &sample()).unwrap(),
        Outcome::Filtered { reason } if reason.starts_with("WHERE was null: name with name = ")
    ));
    // Long values are shortened in the reason.
    let long = "x".repeat(200);
    let Outcome::Filtered { reason } =
        run("SELECT 1 FROM '#' WHERE s = 'y'", &json!({ "s": long })).unwrap()
    else {
        panic!("expected filtered");
    };
    assert!(reason.ends_with("...") && reason.len() < 120, "{reason}");
}

#[test]
fn topic_mismatch() {
    let rule = Rule::parse("SELECT * FROM '/a1b2c3/+/user/get'").unwrap();
    let payload = sample();
    let text = payload.to_string();
    assert_eq!(
        rule.evaluate(&message(text.as_bytes(), Some(&payload)), &TestCtx)
            .unwrap(),
        Outcome::TopicMismatch
    );
}

#[test]
fn select_star() {
    let payload = json!({"a": 1, "b": {"c": 2}});
    assert_eq!(Value::Object(row("SELECT * FROM '#'", &payload)), payload);
    // Explicit columns after `*` overwrite payload fields of the same name.
    assert_eq!(
        Value::Object(row("SELECT *, 5 AS a, deviceName() dn FROM '#'", &payload)),
        json!({"a": 5, "b": {"c": 2}, "dn": "dev1"})
    );
    // A payload that is not an object becomes one `payload` column.
    assert_eq!(
        Value::Object(row("SELECT * FROM '#'", &json!([1, 2]))),
        json!({"payload": [1, 2]})
    );
}

#[test]
fn binary_payloads() {
    let rule = Rule::parse(
        "SELECT *, to_hex(*) AS hex, to_base64(*) AS b64, payload() AS p, payload('json') AS j, \
         temperature FROM '#' WHERE temperature IS NULL",
    )
    .unwrap();
    let bytes = [0x01, 0xff, 0x00, 0x7f];
    let Outcome::Row(row) = rule.evaluate(&message(&bytes, None), &TestCtx).unwrap() else {
        panic!("expected a row");
    };
    assert_eq!(
        Value::Object(row),
        json!({
            "payload": "Af8Afw==",
            "hex": "01ff007f",
            "b64": "Af8Afw==",
            "p": "Af8Afw==",
            "j": null,
            "temperature": null,
        })
    );
}

#[test]
fn default_context() {
    let rule =
        Rule::parse("SELECT attribute('region') AS r, timestamp('HH:mm') AS t FROM '#'").unwrap();
    let msg = Message {
        topic: TOPIC,
        payload: b"{}",
        json: None,
        product_key: "",
        device_name: "",
        client_ip: None,
        message_id: "",
        timestamp_ms: NOW,
        qos: 0,
    };
    assert_eq!(
        rule.evaluate(&msg, &PlainCtx).unwrap(),
        Outcome::Row(
            json!({"r": null, "t": "00:00"})
                .as_object()
                .cloned()
                .unwrap_or_default()
        )
    );
}

#[test]
fn select_agrees_with_evaluate() {
    let rule =
        Rule::parse("SELECT temperature AS t FROM '/+/+/user/update' WHERE temperature > 30")
            .unwrap();
    for payload in [
        json!({"temperature": 35}),
        json!({"temperature": 1}),
        json!({}),
    ] {
        let text = payload.to_string();
        let msg = message(text.as_bytes(), Some(&payload));
        let selected = rule.select(&msg, &TestCtx).unwrap();
        match rule.evaluate(&msg, &TestCtx).unwrap() {
            Outcome::Row(row) => assert_eq!(selected, Some(row)),
            _ => assert_eq!(selected, None),
        }
    }
    let other = Message {
        topic: "/a/b/user/get",
        ..message(b"{}", None)
    };
    assert_eq!(rule.select(&other, &TestCtx).unwrap(), None);
}

#[test]
fn reasons_name_fields_as_paths() {
    let sql = "SELECT 1 FROM '#' WHERE \"odd key\" = 'x' AND list[0] > 5 AND items.Temp.value > 0";
    assert_eq!(
        run(sql, &sample()).unwrap(),
        Outcome::Filtered {
            reason: "WHERE was false: \"odd key\" = 'x' AND list[0] > 5 AND items.Temp.value > 0 \
                     with `odd key` = \"spaced\", list[0] = 1, items.Temp.value = 21.5"
                .to_owned()
        }
    );
}

#[test]
fn rules_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Rule>();
}
