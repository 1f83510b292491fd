//! Every built-in function, with NULL and wrong-type arguments.

use serde_json::json;

use super::{NOW, check, run, sample};
use crate::functions::names;
use crate::{EvalError, MAX_STRING_BYTES};

#[test]
fn metadata() {
    check("deviceName()", json!("dev1"));
    check("DEVICENAME()", json!("dev1"));
    check("productKey()", json!("a1b2c3"));
    check("topic()", json!("/a1b2c3/dev1/user/update"));
    check("topic(1)", json!("a1b2c3"));
    check("topic(2)", json!("dev1"));
    check("topic(4)", json!("update"));
    check("topic(5)", json!(null));
    check("topic(0)", json!(null));
    check("topic(-1)", json!(null));
    check("topic('2')", json!("dev1"));
    check("topic(1.5)", json!(null));
    check("topic(missing)", json!(null));
    check("messageId()", json!("1234567890"));
    check("clientIp()", json!("10.0.0.7"));
    check("qos()", json!(1));
    check("newuuid()", json!("6f1c7a52-0000-4000-8000-000000000001"));
    check("attribute('region')", json!("eu-1"));
    check("attribute('other')", json!(null));
    check("attribute(missing)", json!(null));
}

#[test]
fn time_functions() {
    check("timestamp()", json!(NOW));
    check("timestamp_utc()", json!(NOW));
    check("messageTime()", json!(NOW - 5));
    // The test context is at UTC+8, as the reference platform's region.
    check(
        r"timestamp('yyyy-MM-dd\'T\'HH:mm:ss\'Z\'')",
        json!("2018-11-28T10:56:38Z"),
    );
    check(
        "timestamp_utc('yyyy-MM-dd HH:mm:ss.SSS')",
        json!("2018-11-28 02:56:38.943"),
    );
    check("timestamp('XXX')", json!("+08:00"));
    check("messageTime('ss.SSS')", json!("38.938"));
    check("timestamp(missing)", json!(null));
    let err = run("SELECT timestamp('yyyy-qq') FROM '#'", &sample()).unwrap_err();
    assert_eq!(
        err,
        EvalError::InvalidArgument {
            function: "timestamp",
            message: "unsupported letter `q` in time format".to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        "timestamp(): unsupported letter `q` in time format"
    );
}

#[test]
fn payload_function() {
    let payload = json!({"a": 1});
    let text = payload.to_string();
    assert_eq!(super::value("payload()", &payload), json!(text));
    assert_eq!(super::value("payload('UTF-8')", &payload), json!(text));
    assert_eq!(super::value("payload('json')", &payload), payload);
    assert_eq!(
        super::value("payload('base64')", &payload),
        json!("eyJhIjoxfQ==")
    );
    assert_eq!(
        super::value("payload('hex')", &payload),
        json!("7b2261223a317d")
    );
    assert_eq!(super::value("payload(missing)", &payload), json!(null));
    assert!(matches!(
        run("SELECT payload('latin1') FROM '#'", &payload),
        Err(EvalError::InvalidArgument {
            function: "payload",
            ..
        })
    ));
}

#[test]
fn strings() {
    check("lower(name)", json!("sensor-01"));
    check("upper(name)", json!("SENSOR-01"));
    check("upper(temperature)", json!("21"));
    check("lower(missing)", json!(null));
    check("concat(name, '/', temperature)", json!("Sensor-01/21"));
    check("concat(name, missing, '!')", json!("Sensor-01!"));
    check("concat(missing, nothing)", json!(null));
    check("concat(on)", json!("true"));
    check("substring('012345', 2)", json!("2345"));
    check("substring('012345', 2, 4)", json!("23"));
    check("substring('012345', 0)", json!("012345"));
    check("substring('012345', -1)", json!("012345"));
    check("substring('012345', 2.745)", json!("2345"));
    check("substring('012345', 4, 2)", json!(""));
    check("substring('012345', 9)", json!(""));
    check("substring(123, 2)", json!("3"));
    check("substring('日本語', 1, 2)", json!("本"));
    check("substring(missing, 1)", json!(null));
    check("substring('abc', missing)", json!(null));
    check("substring('abc', 1, missing)", json!(null));
    check("replace(name, '-', '_')", json!("Sensor_01"));
    check("replace('aaa', 'a', 'bb')", json!("bbbbbb"));
    check("replace('abc', '', 'x')", json!("abc"));
    check("replace(missing, 'a', 'b')", json!(null));
    check("trim('  a b  ')", json!("a b"));
    check("ltrim('  a ')", json!("a "));
    check("rtrim('  a ')", json!("  a"));
    check("length(name)", json!(9));
    check("char_length('日本語')", json!(3));
    check("length(temperature)", json!(2));
    check("length(missing)", json!(null));
    check("startswith(name, 'Sens')", json!(true));
    check("startswith(name, 'x')", json!(false));
    check("endswith(name, '01')", json!(true));
    check("endswith(missing, '01')", json!(null));
}

#[test]
fn string_results_are_bounded() {
    let sql = "SELECT replace(replace(replace(replace(replace(replace(\
               'aaaaaaaaaa', 'a', 'aaaaaaaaaa'), 'a', 'aaaaaaaaaa'), 'a', 'aaaaaaaaaa'), \
               'a', 'aaaaaaaaaa'), 'a', 'aaaaaaaaaa'), 'a', 'aaaaaaaaaa') FROM '#'";
    assert_eq!(
        run(sql, &sample()).unwrap_err(),
        EvalError::ValueTooLarge {
            function: "replace",
            len: 10_000_000,
            limit: MAX_STRING_BYTES
        }
    );
    let big = "x".repeat(MAX_STRING_BYTES / 2 + 1);
    let payload = json!({ "s": big });
    assert!(matches!(
        run("SELECT concat(s, s) FROM '#'", &payload),
        Err(EvalError::ValueTooLarge {
            function: "concat",
            ..
        })
    ));
    assert!(matches!(
        run("SELECT to_hex(s) FROM '#'", &payload),
        Err(EvalError::ValueTooLarge {
            function: "to_hex",
            ..
        })
    ));
}

#[test]
fn mathematics() {
    check("abs(-3)", json!(3));
    check("abs(-3.5)", json!(3.5));
    check("abs(small)", json!(9_223_372_036_854_775_808.0));
    check("abs('-2')", json!(2));
    check("abs(name)", json!(null));
    check("ceil(1.2)", json!(2));
    check("ceil(-1.2)", json!(-1));
    check("ceil(5)", json!(5));
    check("floor(1.8)", json!(1));
    check("floor(-1.2)", json!(-2));
    check("floor(1e300)", json!(1e300));
    check("round(2.5)", json!(3));
    check("round(-2.5)", json!(-3));
    check("round(2.71828, 2)", json!(2.72));
    check("round(1234, -2)", json!(1200));
    check("round(7, 1)", json!(7));
    check("round(1.5, missing)", json!(null));
    check("sqrt(16)", json!(4.0));
    check("sqrt(-1)", json!(null));
    check("exp(0)", json!(1.0));
    check("exp(1000)", json!(null));
    check("sin(0)", json!(0.0));
    check("cos(0)", json!(1.0));
    check("tan(0)", json!(0.0));
    check("asin(1)", json!(std::f64::consts::FRAC_PI_2));
    check("acos(1)", json!(0.0));
    check("atan(0)", json!(0.0));
    check("asin(2)", json!(null));
    check("sinh(0)", json!(0.0));
    check("cosh(0)", json!(1.0));
    check("tanh(0)", json!(0.0));
    check("power(2, 10)", json!(1024));
    check("power(2, -1)", json!(0.5));
    check("power(2, 0.5)", json!(std::f64::consts::SQRT_2));
    check("power(10, 30)", json!(1e30));
    check("power(0, -1)", json!(null));
    check("log(100)", json!(2.0));
    check("log(8, 2)", json!(3.0));
    check("log(0)", json!(null));
    check("log(-1)", json!(null));
    check("log(8, 1)", json!(null));
    check("log(8, missing)", json!(null));
    check("mod(7, 3)", json!(1));
    check("mod(7, 0)", json!(null));
    check("mod(7.5, 2)", json!(1.5));
    check("rand()", json!(0.25));
    check("sqrt(missing)", json!(null));
}

#[test]
fn conversion_and_null_handling() {
    check("to_base64('hello')", json!("aGVsbG8="));
    check("to_hex('hi')", json!("6869"));
    check("to_hex(missing)", json!(null));
    check("to_base64(12)", json!("MTI="));
    let payload = sample();
    let text = payload.to_string();
    assert_eq!(
        super::value("to_hex(*)", &payload),
        json!(hex::encode(text.as_bytes()))
    );
    check(
        "crypto('abc', 'MD5')",
        json!("900150983cd24fb0d6963f7d28e17f72"),
    );
    check(
        "crypto('abc', 'sha1')",
        json!("a9993e364706816aba3e25717850c26c9cd0d89d"),
    );
    check(
        "crypto('abc', 'SHA-256')",
        json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    );
    check("length(crypto('abc', 'SHA-384'))", json!(96));
    check("length(crypto('abc', 'SHA-512'))", json!(128));
    check("crypto(missing, 'MD5')", json!(null));
    assert!(matches!(
        run("SELECT crypto('abc', 'MD2') FROM '#'", &sample()),
        Err(EvalError::InvalidArgument {
            function: "crypto",
            ..
        })
    ));
    check("nvl(missing, 'd')", json!("d"));
    check("nvl(temperature, 'd')", json!(21));
    check("nanvl(nothing, 0)", json!(0));
    check("coalesce(missing, nothing, name, 1)", json!("Sensor-01"));
    check("coalesce(missing)", json!(null));
}

#[test]
fn function_table() {
    let all: Vec<&str> = names().collect();
    for name in [
        "deviceName",
        "productKey",
        "topic",
        "timestamp",
        "timestamp_utc",
        "messageId",
        "clientIp",
        "attribute",
        "payload",
        "newuuid",
        "concat",
        "crypto",
        "coalesce",
    ] {
        assert!(all.contains(&name), "{name}");
    }
    let mut sorted = all.clone();
    sorted.sort_unstable_by_key(|n| n.to_ascii_lowercase());
    sorted.dedup_by_key(|n| n.to_ascii_lowercase());
    assert_eq!(sorted.len(), all.len(), "duplicate function names");
}
