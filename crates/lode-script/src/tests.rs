//! Engine tests: the contract on a typical script, and the sandbox under hostile ones.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{Call, EngineConfig, Output, Script, ScriptEngine, ScriptError};

/// A typical product script: a command byte, then big-endian fields.
///
/// Up: `00 id:u32 temperature:i16 (tenths) humidity:u8` is a property post,
/// `03 id:u32 status:u8` the reply to a property set.
/// Down: `01 id:u32 target:i16 (tenths)` sets a property, `02 id:u32 status:u8` answers a post.
const THERMOMETER: &str = r#"var CMD_REPORT = 0x00;
var CMD_SET = 0x01;
var CMD_REPORT_REPLY = 0x02;
var CMD_SET_REPLY = 0x03;

function rawDataToProtocol(bytes) {
    var frame = new Uint8Array(bytes);
    var view = new DataView(frame.buffer);
    var cmd = frame[0];
    if (cmd === CMD_REPORT) {
        return {
            method: 'thing.event.property.post',
            id: String(view.getUint32(1)),
            version: '1.0',
            params: {
                temperature: view.getInt16(5) / 10,
                humidity: bytes[7] & 0xff
            }
        };
    }
    if (cmd === CMD_SET_REPLY) {
        return { id: String(view.getUint32(1)), code: frame[5] === 0 ? 200 : 460, data: {}, version: '1.0' };
    }
    throw new Error('unknown command ' + cmd);
}

function u32(n) {
    return [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

function protocolToRawData(json) {
    var id = parseInt(json.id, 10);
    if (json.method === 'thing.service.property.set') {
        var target = Math.round(json.params.targetTemperature * 10);
        return [CMD_SET].concat(u32(id), [(target >> 8) & 0xff, target & 0xff]);
    }
    return [CMD_REPORT_REPLY].concat(u32(id), [json.code === 200 ? 0 : 1]);
}

function transformPayload(topic, rawData) {
    return { topic: topic, length: rawData.length, first: rawData[0] & 0xff };
}
"#;

/// Required functions around a body for `rawDataToProtocol`.
fn up(body: &str) -> String {
    format!(
        "function rawDataToProtocol(bytes) {{\n{body}\n}}\nfunction protocolToRawData(json) {{ return []; }}\n"
    )
}

/// Required functions around a body for `protocolToRawData`.
fn down(body: &str) -> String {
    format!(
        "function rawDataToProtocol(bytes) {{ return {{}}; }}\nfunction protocolToRawData(json) {{\n{body}\n}}\n"
    )
}

fn engine() -> ScriptEngine {
    engine_with(EngineConfig::default())
}

fn engine_with(config: EngineConfig) -> ScriptEngine {
    match ScriptEngine::new(config) {
        Ok(engine) => engine,
        Err(err) => panic!("engine did not start: {err}"),
    }
}

#[tokio::test]
async fn typical_script_decodes_a_property_post() {
    let engine = engine();
    let script = Script::new("a1thermo", THERMOMETER);
    // id 123, 25.3 °C, 200 %: the humidity byte is above 127, so it arrives as -56.
    let raw = [0x00, 0x00, 0x00, 0x00, 0x7b, 0x00, 0xfd, 0xc8];
    let message = engine.raw_to_protocol(&script, &raw).await;
    assert_eq!(
        message,
        Ok(json!({
            "method": "thing.event.property.post",
            "id": "123",
            "version": "1.0",
            "params": { "temperature": 25.3, "humidity": 200 }
        }))
    );
    // -5.5 °C is 0xffc9 as i16.
    let raw = [0x00, 0x00, 0x01, 0x00, 0x00, 0xff, 0xc9, 0x10];
    let message = engine.raw_to_protocol(&script, &raw).await;
    assert_eq!(
        message.map(|m| m["params"].clone()),
        Ok(json!({ "temperature": -5.5, "humidity": 16 }))
    );
    let reply = engine
        .raw_to_protocol(&script, &[0x03, 0, 0, 0, 9, 0])
        .await;
    assert_eq!(
        reply,
        Ok(json!({ "id": "9", "code": 200, "data": {}, "version": "1.0" }))
    );
}

#[tokio::test]
async fn typical_script_encodes_a_property_set_and_a_reply() {
    let engine = engine();
    let script = Script::new("a1thermo", THERMOMETER);
    let set = json!({
        "id": "258",
        "version": "1.0",
        "method": "thing.service.property.set",
        "params": { "targetTemperature": -1.5 }
    });
    assert_eq!(
        engine.protocol_to_raw(&script, &set).await,
        Ok(vec![0x01, 0x00, 0x00, 0x01, 0x02, 0xff, 0xf1])
    );
    let reply = json!({ "id": "123", "code": 200, "data": {} });
    assert_eq!(
        engine.protocol_to_raw(&script, &reply).await,
        Ok(vec![0x02, 0x00, 0x00, 0x00, 0x7b, 0x00])
    );
    let bad = json!({ "id": "7", "code": 460, "data": {} });
    assert_eq!(
        engine.protocol_to_raw(&script, &bad).await,
        Ok(vec![0x02, 0x00, 0x00, 0x00, 0x07, 0x01])
    );
}

#[tokio::test]
async fn transform_payload_gets_the_topic_and_the_bytes() {
    let engine = engine();
    let script = Script::new("a1thermo", THERMOMETER);
    let out = engine
        .transform_payload(&script, "/a1thermo/dev1/user/update", &[0xfe, 1, 2])
        .await;
    assert_eq!(
        out,
        Ok(json!({ "topic": "/a1thermo/dev1/user/update", "length": 3, "first": 254 }))
    );
    let without = Script::new("p", up("return {};"));
    assert_eq!(
        engine.transform_payload(&without, "/p/d/user/x", &[]).await,
        Err(ScriptError::MissingFunction("transformPayload"))
    );
}

#[tokio::test]
async fn bytes_arrive_signed_and_both_idioms_read_them_unsigned() {
    let engine = engine();
    let script = Script::new(
        "p",
        up(
            "return { signed: bytes, masked: bytes.map(function (b) { return b & 0xff; }), \
            view: Array.from(new Uint8Array(bytes)), isArray: Array.isArray(bytes) };",
        ),
    );
    let out = engine
        .raw_to_protocol(&script, &[0x00, 0x7f, 0x80, 0xff])
        .await;
    assert_eq!(
        out,
        Ok(json!({
            "signed": [0, 127, -128, -1],
            "masked": [0, 127, 128, 255],
            "view": [0, 127, 128, 255],
            "isArray": true
        }))
    );
}

#[tokio::test]
async fn returned_bytes_accept_signed_values_and_typed_arrays() {
    let engine = engine();
    let cases = [
        (
            "return [-128, -1, 0, 127, 128, 255];",
            vec![0x80, 0xff, 0x00, 0x7f, 0x80, 0xff],
        ),
        ("return new Uint8Array([1, 2, 250]);", vec![1, 2, 250]),
        ("return new Int8Array([-1, 5]);", vec![0xff, 5]),
        ("return [];", vec![]),
        ("return [json.a, json.b.length];", vec![7, 3]),
    ];
    for (idx, (body, expected)) in cases.into_iter().enumerate() {
        let script = Script::new(format!("p{idx}"), down(body));
        let out = engine
            .protocol_to_raw(&script, &json!({ "a": 7, "b": [1, 2, 3] }))
            .await;
        assert_eq!(out, Ok(expected), "{body}");
    }
}

#[tokio::test]
async fn output_follows_json_stringify() {
    let engine = engine();
    let script = Script::new(
        "p",
        up(
            "return { nan: NaN, inf: -Infinity, gone: undefined, f: function () {}, \
            list: [undefined, function () {}, 1], date: new Date(0), \
            custom: { toJSON: function () { return 'x'; } } };",
        ),
    );
    let out = engine.raw_to_protocol(&script, &[]).await;
    assert_eq!(
        out,
        Ok(json!({
            "nan": null,
            "inf": null,
            "list": [null, null, 1],
            "date": "1970-01-01T00:00:00.000Z",
            "custom": "x"
        }))
    );
}

#[tokio::test]
async fn rawdata_to_protocol_must_return_a_json_object() {
    let engine = engine();
    let cases = [
        ("return 'text';", "a string"),
        ("return 42;", "a number"),
        ("return [1, 2];", "an array"),
        ("return null;", "null"),
        ("return;", "undefined"),
        ("return true;", "a boolean"),
        ("return function () {};", "a function"),
    ];
    for (idx, (body, found)) in cases.into_iter().enumerate() {
        let script = Script::new(format!("p{idx}"), up(body));
        let err = engine.raw_to_protocol(&script, &[1]).await;
        assert_eq!(
            err,
            Err(ScriptError::WrongReturnType {
                function: "rawDataToProtocol",
                expected: "a JSON object",
                found: found.to_owned(),
            }),
            "{body}"
        );
        if let Err(err) = err {
            assert_eq!(err.alink_code(), 26007);
        }
    }
    let cyclic = Script::new("cyclic", up("var o = {}; o.self = o; return o;"));
    match engine.raw_to_protocol(&cyclic, &[]).await {
        Err(ScriptError::WrongReturnType { found, .. }) => {
            assert!(
                found.starts_with("an object JSON.stringify rejects"),
                "{found}"
            );
        }
        other => panic!("cyclic object: {other:?}"),
    }
}

#[tokio::test]
async fn protocol_to_rawdata_must_return_bytes() {
    let engine = engine();
    let cases = [
        ("return 'AQI=';", "a string".to_owned()),
        ("return 1;", "a number".to_owned()),
        ("return { 0: 1, length: 1 };", "an object".to_owned()),
        ("return null;", "null".to_owned()),
        (
            "return [1, 'a'];",
            "an array holding a string at index 1".to_owned(),
        ),
        (
            "return [0, 256];",
            "an array holding 256 at index 1".to_owned(),
        ),
        (
            "return [-129];",
            "an array holding -129 at index 0".to_owned(),
        ),
        (
            "return [1.5];",
            "an array holding 1.5 at index 0".to_owned(),
        ),
        (
            "return [NaN];",
            "an array holding NaN at index 0".to_owned(),
        ),
        (
            "return [[1]];",
            "an array holding an array at index 0".to_owned(),
        ),
        ("return new Float32Array([1]);", "an object".to_owned()),
    ];
    for (idx, (body, found)) in cases.into_iter().enumerate() {
        let script = Script::new(format!("p{idx}"), down(body));
        let err = engine.protocol_to_raw(&script, &json!({})).await;
        assert_eq!(
            err,
            Err(ScriptError::WrongReturnType {
                function: "protocolToRawData",
                expected: "an array of integers from -128 to 255",
                found,
            }),
            "{body}"
        );
    }
}

#[tokio::test]
async fn infinite_loop_times_out_and_the_next_call_works() {
    let engine = engine();
    let limit = engine.config().time_limit;
    let script = Script::new(
        "p",
        up("if (bytes[0] === 1) { while (true) {} }\nreturn { ok: true };"),
    );
    let other = Script::new("other", THERMOMETER);
    let started = Instant::now();
    let err = engine.raw_to_protocol(&script, &[1]).await;
    let elapsed = started.elapsed();
    assert_eq!(err, Err(ScriptError::Timeout { limit }));
    assert!(elapsed >= limit, "stopped early: {elapsed:?}");
    assert!(elapsed < limit * 5, "stopped late: {elapsed:?}");
    assert_eq!(
        engine.raw_to_protocol(&script, &[0]).await,
        Ok(json!({ "ok": true }))
    );
    assert!(
        engine
            .raw_to_protocol(&other, &[0, 0, 0, 0, 1, 0, 1, 1])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_loop_cannot_catch_its_interruption() {
    let engine = engine();
    let script = Script::new(
        "p",
        up("for (;;) { try { while (true) {} } catch (e) { } }"),
    );
    let err = engine.raw_to_protocol(&script, &[]).await;
    assert!(matches!(err, Err(ScriptError::Timeout { .. })), "{err:?}");
}

#[tokio::test]
async fn top_level_loop_times_out_when_checked() {
    let engine = engine();
    let source = format!("while (true) {{}}\n{}", up("return {};"));
    let err = engine.check(&source).await;
    assert!(matches!(err, Err(ScriptError::Timeout { .. })), "{err:?}");
    let script = Script::new("p", source);
    let err = engine.raw_to_protocol(&script, &[]).await;
    assert!(matches!(err, Err(ScriptError::Timeout { .. })), "{err:?}");
}

#[tokio::test]
async fn memory_bombs_run_out_of_memory_and_the_next_call_works() {
    // A time limit the bombs cannot reach first, even in a debug build on a busy machine.
    let engine = engine_with(EngineConfig {
        time_limit: Duration::from_secs(5),
        ..EngineConfig::default()
    });
    let limit = engine.config().memory_limit;
    let bombs = [
        "var a = []; while (true) { a.push({ n: a.length }); }",
        "var a = []; while (true) { a.push('chunk-' + a.length + '-'.repeat(64)); }",
        "var a = []; while (true) { a.push(new Uint8Array(1 << 20)); }",
        "return { big: new ArrayBuffer(1 << 30).byteLength };",
        "kept = []; while (true) { kept.push([1, 2, 3, 4, 5, 6, 7, 8]); }",
    ];
    let good = Script::new("good", THERMOMETER);
    for (idx, bomb) in bombs.into_iter().enumerate() {
        let body = format!("if (bytes[0] === 1) {{ {bomb} }}\nreturn {{ ok: true }};");
        let script = Script::new(format!("bomb{idx}"), up(&body));
        let started = Instant::now();
        let err = engine.raw_to_protocol(&script, &[1]).await;
        assert_eq!(err, Err(ScriptError::OutOfMemory { limit }), "{bomb}");
        assert!(started.elapsed() < Duration::from_secs(5), "{bomb}");
        assert_eq!(
            engine.raw_to_protocol(&script, &[0]).await,
            Ok(json!({ "ok": true })),
            "{bomb}"
        );
        assert!(
            engine
                .raw_to_protocol(&good, &[0, 0, 0, 0, 1, 0, 1, 1])
                .await
                .is_ok()
        );
    }
}

#[tokio::test]
async fn deep_recursion_is_a_runtime_error() {
    let engine = engine();
    let script = Script::new(
        "p",
        "function down(n) { return down(n + 1) + 1; }\n\
         function rawDataToProtocol(bytes) { if (bytes[0] === 1) { down(0); } return {}; }\n\
         function protocolToRawData(json) { return []; }\n",
    );
    match engine.raw_to_protocol(&script, &[1]).await {
        Err(ScriptError::Runtime { line, message, .. }) => {
            assert_eq!(message, "RangeError: Maximum call stack size exceeded");
            assert_eq!(line, Some(1));
        }
        other => panic!("recursion: {other:?}"),
    }
    assert_eq!(engine.raw_to_protocol(&script, &[0]).await, Ok(json!({})));
}

#[tokio::test]
async fn syntax_error_names_its_line() {
    let engine = engine();
    let source = "function rawDataToProtocol(bytes) {\n    var x = 1;\n    return { x: x + };\n}\nfunction protocolToRawData(json) { return []; }\n";
    let err = engine.check(source).await;
    match &err {
        Err(ScriptError::Syntax {
            line,
            column,
            message,
        }) => {
            assert_eq!(*line, Some(3));
            assert!(column.is_some());
            assert!(!message.is_empty());
        }
        other => panic!("syntax error: {other:?}"),
    }
    let err = err.err();
    assert_eq!(err.as_ref().map(ScriptError::alink_code), Some(26002));
    // A published broken script fails the same way on every call.
    let script = Script::new("p", source);
    assert_eq!(engine.raw_to_protocol(&script, &[]).await.err(), err);
    assert_eq!(engine.raw_to_protocol(&script, &[]).await.err(), err);
}

#[tokio::test]
async fn exceptions_report_their_line() {
    let engine = engine();
    let script = Script::new("a1thermo", THERMOMETER);
    let err = engine.raw_to_protocol(&script, &[0x09]).await;
    assert_eq!(
        err,
        Err(ScriptError::Runtime {
            line: Some(24),
            column: Some(42),
            message: "Error: unknown command 9".to_owned(),
        })
    );
    let typo = Script::new("typo", up("var p = bytes.nothing.deeper;\nreturn {};"));
    match engine.raw_to_protocol(&typo, &[]).await {
        Err(ScriptError::Runtime { line, message, .. }) => {
            assert_eq!(line, Some(2));
            assert!(message.starts_with("TypeError:"), "{message}");
        }
        other => panic!("type error: {other:?}"),
    }
    let thrown = Script::new("thrown", up("throw 'bad frame';"));
    assert_eq!(
        engine.raw_to_protocol(&thrown, &[]).await,
        Err(ScriptError::Runtime {
            line: None,
            column: None,
            message: "bad frame".to_owned(),
        })
    );
    let object = Script::new("object", up("throw { code: 7 };"));
    assert_eq!(
        engine.raw_to_protocol(&object, &[]).await,
        Err(ScriptError::Runtime {
            line: None,
            column: None,
            message: "uncaught {\"code\":7}".to_owned(),
        })
    );
}

#[tokio::test]
async fn top_level_exception_is_a_runtime_error() {
    let engine = engine();
    let source = format!("{}\nJSON.parse('{{');\n", up("return {};"));
    let err = engine.check(&source).await;
    match err {
        Err(ScriptError::Runtime { line, message, .. }) => {
            assert_eq!(line, Some(6));
            assert!(message.starts_with("SyntaxError:"), "{message}");
        }
        other => panic!("top level: {other:?}"),
    }
}

#[tokio::test]
async fn missing_functions_are_reported() {
    let engine = engine();
    let only_up = "function rawDataToProtocol(bytes) { return {}; }";
    assert_eq!(
        engine.check(only_up).await,
        Err(ScriptError::MissingFunction("protocolToRawData"))
    );
    let not_a_function =
        "var rawDataToProtocol = 1;\nfunction protocolToRawData(json) { return []; }";
    let err = engine.check(not_a_function).await;
    assert_eq!(err, Err(ScriptError::MissingFunction("rawDataToProtocol")));
    assert_eq!(err.err().map(|e| e.alink_code()), Some(26006));
    let script = Script::new("p", only_up);
    assert_eq!(
        engine.raw_to_protocol(&script, &[]).await,
        Err(ScriptError::MissingFunction("protocolToRawData"))
    );
    assert_eq!(engine.check(THERMOMETER).await, Ok(()));
}

#[tokio::test]
async fn size_limits_are_enforced_before_running() {
    let engine = engine();
    let padding = " ".repeat(crate::MAX_SCRIPT_SIZE);
    let source = format!("{}{padding}", up("return {};"));
    let err = ScriptError::TooLarge {
        size: source.len(),
        max: crate::MAX_SCRIPT_SIZE,
    };
    assert_eq!(engine.check(&source).await, Err(err.clone()));
    let script = Script::new("p", source.as_str());
    assert_eq!(engine.raw_to_protocol(&script, &[]).await, Err(err.clone()));
    assert_eq!(err.alink_code(), 26001);
    assert_eq!(engine.check(" \n\t").await, Err(ScriptError::Empty));
    assert_eq!(engine.check_size(&up("return {};")), Ok(()));
}

#[tokio::test]
async fn scripts_see_no_io() {
    let engine = engine();
    let script = Script::new(
        "p",
        up(
            "return { require: typeof require, std: typeof std, os: typeof os, \
            console: typeof console, print: typeof print, setTimeout: typeof setTimeout, \
            fetch: typeof fetch, XMLHttpRequest: typeof XMLHttpRequest, \
            performance: typeof performance, json: typeof JSON, dataView: typeof DataView };",
        ),
    );
    assert_eq!(
        engine.raw_to_protocol(&script, &[]).await,
        Ok(json!({
            "require": "undefined", "std": "undefined", "os": "undefined",
            "console": "undefined", "print": "undefined", "setTimeout": "undefined",
            "fetch": "undefined", "XMLHttpRequest": "undefined",
            "performance": "undefined",
            "json": "object", "dataView": "function"
        }))
    );
}

#[tokio::test]
async fn module_imports_are_refused() {
    let engine = engine_with(EngineConfig {
        workers: 1,
        ..EngineConfig::default()
    });
    let script = Script::new(
        "import",
        up("if (bytes[0] === 1) {\n\
            import('os').then(function (m) { got = typeof m; }, function (e) { got = 'refused ' + e.name; });\n\
            }\n\
            return { got: typeof got === 'undefined' ? null : got };"),
    );
    assert_eq!(
        engine.raw_to_protocol(&script, &[1]).await,
        Ok(json!({ "got": null }))
    );
    let out = engine.raw_to_protocol(&script, &[0]).await;
    let got = out.as_ref().ok().and_then(|out| out["got"].as_str());
    assert!(got.is_some_and(|got| got.starts_with("refused")), "{out:?}");
    let static_import = format!("import * as os from 'os';\n{}", up("return {};"));
    let err = engine.check(&static_import).await;
    assert!(
        matches!(err, Err(ScriptError::Syntax { line: Some(1), .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_changed_source_replaces_the_cached_script() {
    let engine = engine_with(EngineConfig {
        workers: 1,
        ..EngineConfig::default()
    });
    let v1 = Script::new("p", up("return { version: 1 };"));
    let v2 = Script::new("p", up("return { version: 2 };"));
    assert_eq!(
        engine.raw_to_protocol(&v1, &[]).await,
        Ok(json!({ "version": 1 }))
    );
    assert_eq!(
        engine.raw_to_protocol(&v2, &[]).await,
        Ok(json!({ "version": 2 }))
    );
    assert_eq!(
        engine.raw_to_protocol(&v1, &[]).await,
        Ok(json!({ "version": 1 }))
    );
    // The same source under another id is another script.
    let other = Script::new("q", up("return { version: 2 };"));
    assert_eq!(
        engine.raw_to_protocol(&other, &[]).await,
        Ok(json!({ "version": 2 }))
    );
}

#[tokio::test]
async fn globals_persist_within_a_cached_script_only() {
    let engine = engine_with(EngineConfig {
        workers: 1,
        ..EngineConfig::default()
    });
    let counter = Script::new(
        "counter",
        up("calls = (typeof calls === 'number' ? calls : 0) + 1;\nreturn { calls: calls };"),
    );
    let peek = Script::new("peek", up("return { seen: typeof calls };"));
    assert_eq!(
        engine.raw_to_protocol(&counter, &[]).await,
        Ok(json!({ "calls": 1 }))
    );
    assert_eq!(
        engine.raw_to_protocol(&counter, &[]).await,
        Ok(json!({ "calls": 2 }))
    );
    assert_eq!(
        engine.raw_to_protocol(&peek, &[]).await,
        Ok(json!({ "seen": "undefined" }))
    );
    // Drafts never touch the cache.
    let draft = engine
        .run_draft(counter.source(), Call::RawToProtocol { raw: vec![] })
        .await;
    assert_eq!(draft, Ok(Output::Json(json!({ "calls": 1 }))));
    assert_eq!(
        engine.raw_to_protocol(&counter, &[]).await,
        Ok(json!({ "calls": 3 }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_call_concurrently() {
    let engine = engine();
    let mut tasks = Vec::new();
    for task in 0..32u32 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let script = Script::new(format!("product{}", task % 4), THERMOMETER);
            for call in 0..25u32 {
                let id = task * 1000 + call;
                let mut raw = vec![0x00];
                raw.extend_from_slice(&id.to_be_bytes());
                raw.extend_from_slice(&[0x01, 0x00, 0x32]);
                let message = engine.raw_to_protocol(&script, &raw).await;
                assert_eq!(
                    message.map(|m| (m["id"].clone(), m["params"].clone())),
                    Ok((
                        json!(id.to_string()),
                        json!({ "temperature": 25.6, "humidity": 50 })
                    ))
                );
            }
        }));
    }
    for task in tasks {
        assert!(task.await.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_script_does_not_stall_the_others_for_long() {
    let engine = engine();
    let hostile = Script::new("hostile", up("while (true) {}"));
    let good = Script::new("good", THERMOMETER);
    let looping = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.raw_to_protocol(&hostile, &[]).await })
    };
    let started = Instant::now();
    for _ in 0..50 {
        let out = engine
            .raw_to_protocol(&good, &[0, 0, 0, 0, 1, 0, 1, 1])
            .await;
        assert!(out.is_ok(), "{out:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        looping.await,
        Ok(Err(ScriptError::Timeout { .. }))
    ));
}

#[tokio::test]
async fn drafts_return_output_or_error_with_position() {
    let engine = engine();
    let out = engine
        .run_draft(
            THERMOMETER,
            Call::ProtocolToRaw {
                message: json!({ "id": "1", "code": 200 }),
            },
        )
        .await;
    assert_eq!(out, Ok(Output::Raw(vec![0x02, 0, 0, 0, 1, 0])));
    let out = engine
        .run_draft(
            THERMOMETER,
            Call::TransformPayload {
                topic: "/t".to_owned(),
                raw: vec![7],
            },
        )
        .await;
    assert_eq!(
        out,
        Ok(Output::Json(
            json!({ "topic": "/t", "length": 1, "first": 7 })
        ))
    );
    let broken = format!(
        "{}\nfunction helper() {{\n  return (;\n}}\n",
        up("return {};")
    );
    let err = engine
        .run_draft(&broken, Call::RawToProtocol { raw: vec![] })
        .await;
    assert_eq!(err.as_ref().err().and_then(ScriptError::line), Some(7));
    assert!(err.as_ref().err().and_then(ScriptError::column).is_some());
}

#[tokio::test]
async fn a_call_in_flight_finishes_after_the_last_handle_is_dropped() {
    let engine = engine();
    let script = Script::new("p", up("return {};"));
    let pending = {
        let engine = engine.clone();
        let script = script.clone();
        tokio::spawn(async move { engine.raw_to_protocol(&script, &[]).await })
    };
    drop(engine);
    assert!(matches!(pending.await, Ok(Ok(_))));
}
