//! Parsing, round trip, export of the implicit features, and every TSL validation error.

use serde_json::{Value, json};

use super::{FULL_TSL, SDK_TSL, full};
use crate::{
    AccessMode, CallType, DataType, EventType, NumberSpecs, Param, Property, Tsl, TslError,
    TslErrorKind,
};

#[test]
fn parses_the_sdk_fixture_of_section_11() {
    let tsl = Tsl::from_json(SDK_TSL).unwrap();
    assert_eq!(tsl.product_key.as_deref(), Some("any"));
    assert_eq!(tsl.properties.len(), 2);
    assert!(tsl.services.is_empty(), "set/get are implicit");
    assert!(tsl.events.is_empty(), "post is implicit");
    let temp = tsl.property("Temperature").unwrap();
    assert_eq!(temp.access_mode, AccessMode::ReadWrite);
    assert_eq!(
        temp.data_type,
        DataType::Float(NumberSpecs {
            min: Some(-40.0),
            max: Some(120.0),
            step: Some(0.1),
            unit: None,
            unit_name: None,
        })
    );
    assert_eq!(
        tsl.property("Switch").unwrap().data_type,
        DataType::Bool {
            false_name: "off".into(),
            true_name: "on".into()
        }
    );
}

#[test]
fn parses_every_data_type() {
    let tsl = full();
    assert_eq!(tsl.properties.len(), 10);
    assert_eq!(tsl.feature_count(), 14);
    let types: Vec<_> = tsl
        .properties
        .iter()
        .map(|p| p.data_type.type_name())
        .collect();
    assert_eq!(
        types,
        [
            "float", "int", "double", "text", "enum", "bool", "date", "struct", "array", "array"
        ]
    );
    assert_eq!(tsl.event("Alarm").unwrap().event_type, EventType::Alert);
    assert_eq!(tsl.event("Fault").unwrap().event_type, EventType::Error);
    assert_eq!(tsl.service("Echo").unwrap().call_type, CallType::Sync);
    assert_eq!(tsl.service("Reboot").unwrap().call_type, CallType::Async);
    let DataType::Array { size, item } = &tsl.property("Points").unwrap().data_type else {
        panic!("Points is an array")
    };
    assert_eq!(*size, 4);
    assert!(matches!(item.as_ref(), DataType::Struct { members } if members.len() == 2));
}

#[test]
fn round_trips() {
    for text in [SDK_TSL, FULL_TSL] {
        let tsl = Tsl::from_json(text).unwrap();
        let exported = tsl.to_json();
        let again = Tsl::from_value(&exported).unwrap();
        assert_eq!(again, tsl);
        assert_eq!(again.to_json(), exported);
    }
}

#[test]
fn export_writes_specs_as_strings_and_the_implicit_features() {
    let v = full().to_json();
    assert_eq!(v["profile"]["productKey"], "a1TestPK001");
    assert_eq!(
        v["properties"][1]["dataType"],
        json!({"type": "int", "specs": {"min": "10", "max": "100", "step": "5"}})
    );
    assert_eq!(v["properties"][0]["dataType"]["specs"]["step"], "0.1");
    assert_eq!(v["properties"][0]["dataType"]["specs"]["unit"], "°C");
    let post = &v["events"][0];
    assert_eq!(post["identifier"], "post");
    assert_eq!(post["method"], "thing.event.property.post");
    assert_eq!(post["outputData"].as_array().unwrap().len(), 10);
    assert_eq!(post["outputData"][0]["dataType"]["type"], "float");
    assert_eq!(v["events"][1]["method"], "thing.event.Alarm.post");
    let set = &v["services"][0];
    assert_eq!(set["method"], "thing.service.property.set");
    let set_ids: Vec<&str> = set["inputData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        set_ids,
        ["Level", "Ratio", "Label", "Mode", "Switch"],
        "rw only"
    );
    let get = &v["services"][1];
    assert_eq!(get["method"], "thing.service.property.get");
    assert_eq!(get["inputData"][0], "Temp");
    assert_eq!(get["outputData"].as_array().unwrap().len(), 10);
    assert_eq!(v["services"][2]["method"], "thing.service.Echo");
    assert_eq!(v["services"][2]["callType"], "sync");
}

fn errors_of(v: Value) -> Vec<TslError> {
    Tsl::from_value(&v).unwrap_err().0
}

fn prop(id: &str, data_type: Value) -> Value {
    json!({"identifier": id, "name": id, "accessMode": "rw", "dataType": data_type})
}

fn one_prop_errors(data_type: Value) -> Vec<String> {
    match Tsl::from_value(&json!({"properties": [prop("A", data_type)]})) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn max_below_min_names_the_path() {
    let mut props: Vec<Value> = (0..3)
        .map(|i| {
            prop(
                &format!("P{i}"),
                json!({"type": "int", "specs": {"min": "0", "max": "1", "step": "1"}}),
            )
        })
        .collect();
    props.push(prop(
        "P3",
        json!({"type": "int", "specs": {"min": "10", "max": "5", "step": "1"}}),
    ));
    let errs = errors_of(json!({"properties": props}));
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "properties[3].dataType.specs.max: 5 is below min 10"
    );
}

#[test]
fn collects_every_error() {
    let v = json!({
        "properties": [
            prop("1bad", json!({"type": "int", "specs": {"min": "0", "max": "1", "step": "0"}})),
            prop("Dup", json!({"type": "text", "specs": {"length": "2049"}})),
        ],
        "events": [{"identifier": "Dup", "name": "Dup", "type": "info", "outputData": []}],
        "services": [{"identifier": "S", "name": "S", "callType": "async",
            "inputData": [{"identifier": "x", "name": "x", "dataType": {"type": "enum", "specs": {"a": "b"}}}]}]
    });
    let errs: Vec<String> = errors_of(v).iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(errs[0].starts_with("properties[0].identifier: \"1bad\" is not an identifier"));
    assert_eq!(
        errs[1],
        "properties[0].dataType.specs.step: 0 is not above 0"
    );
    assert_eq!(
        errs[2],
        "properties[1].dataType.specs.length: 2049 is not within 1..=2048"
    );
    assert_eq!(
        errs[3],
        "services[0].inputData[0].dataType.specs.a: enum key \"a\" is not an integer"
    );
    assert_eq!(
        errs[4],
        "events[0].identifier: \"Dup\" is already used at properties[1]"
    );
}

#[test]
fn structural_errors_have_paths() {
    let v = json!({
        "profile": [],
        "properties": [
            {"identifier": "A", "accessMode": "x", "dataType": {"type": "int"}},
            {"name": "B", "accessMode": "r", "dataType": {"type": "nope"}},
            {"identifier": "C", "accessMode": "r"},
            {"identifier": "D", "accessMode": "r", "required": "yes",
             "dataType": {"type": "float", "specs": {"min": "abc"}}},
            7
        ],
        "events": [{"identifier": "E", "type": "fatal"}],
        "services": {"identifier": "S"}
    });
    let errs: Vec<String> = errors_of(v).iter().map(ToString::to_string).collect();
    let expected = [
        "profile: expected an object",
        "properties[0].accessMode: unknown access mode \"x\"",
        "properties[1].identifier: missing",
        "properties[1].dataType.type: unknown data type \"nope\"",
        "properties[2].dataType: missing",
        "properties[3].required: expected a boolean",
        "properties[3].dataType.specs.min: \"abc\" is not a number",
        "properties[4]: expected an object",
        "services: expected an array",
        "events[0].type: unknown event type \"fatal\"",
    ];
    assert_eq!(errs, expected);
}

#[test]
fn json_syntax_error() {
    let errs = Tsl::from_json("{").unwrap_err().0;
    assert!(matches!(errs[0].kind, TslErrorKind::Json(_)));
}

#[test]
fn identifier_rules() {
    use crate::is_valid_identifier as ok;
    assert!(ok("a") && ok("_x1") && ok(&"a".repeat(50)));
    assert!(!ok("") && !ok("1a") && !ok("a-b") && !ok("a b") && !ok("é") && !ok(&"a".repeat(51)));
    let errs = one_prop_errors(json!({"type": "date"}));
    assert!(errs.is_empty());
    let long = "a".repeat(51);
    let errs = errors_of(json!({"properties": [prop(&long, json!({"type": "date"}))]}));
    assert!(matches!(errs[0].kind, TslErrorKind::InvalidIdentifier(_)));
    assert_eq!(errs[0].path, "properties[0].identifier");
}

#[test]
fn reserved_identifiers() {
    let errs = errors_of(json!({"properties": [prop("set", json!({"type": "date"}))]}));
    assert_eq!(
        errs[0].to_string(),
        "properties[0].identifier: \"set\" is reserved"
    );
}

#[test]
fn duplicate_params_and_struct_members() {
    let d = json!({"type": "date"});
    let v = json!({"events": [{"identifier": "E", "type": "info", "outputData": [
        {"identifier": "p", "dataType": d}, {"identifier": "p", "dataType": d}]}],
        "properties": [prop("S", json!({"type": "struct", "specs": [
            {"identifier": "m", "dataType": d}, {"identifier": "m", "dataType": d}]}))]});
    let errs: Vec<String> = errors_of(v).iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        [
            "properties[0].dataType.specs[1].identifier: \"m\" is already used at properties[0].dataType.specs[0]",
            "events[0].outputData[1].identifier: \"p\" is already used at events[0].outputData[0]",
        ]
    );
}

#[test]
fn feature_limit_200() {
    let date = json!({"type": "date"});
    let props = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| prop(&format!("P{i}"), date.clone()))
            .collect()
    };
    assert!(Tsl::from_value(&json!({"properties": props(200)})).is_ok());
    let errs = errors_of(json!({"properties": props(199), "events": [
        {"identifier": "E1", "type": "info"}, {"identifier": "E2", "type": "info"}]}));
    assert_eq!(errs[0].to_string(), ": 201 features, at most 200 allowed");
}

#[test]
fn number_specs_errors() {
    assert_eq!(
        one_prop_errors(
            json!({"type": "int", "specs": {"min": "0.5", "max": "3000000000", "step": "1"}})
        ),
        [
            "properties[0].dataType.specs.min: 0.5 is not an int32",
            "properties[0].dataType.specs.max: 3000000000 is not an int32",
        ]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "double", "specs": {"min": "0", "max": "1", "step": "-1"}})),
        ["properties[0].dataType.specs.step: -1 is not above 0"]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "float", "specs": {"min": "0", "max": "1", "step": "2"}})),
        ["properties[0].dataType.specs.step: 2 is larger than max - min (1)"]
    );
    assert!(
        one_prop_errors(json!({"type": "float", "specs": {"min": "1", "max": "1", "step": "1"}}))
            .is_empty()
    );
}

#[test]
fn text_length_limits() {
    assert!(one_prop_errors(json!({"type": "text", "specs": {"length": "2048"}})).is_empty());
    assert_eq!(
        one_prop_errors(json!({"type": "text", "specs": {"length": "0"}})),
        ["properties[0].dataType.specs.length: 0 is not within 1..=2048"]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "text", "specs": {"length": "-1"}})),
        ["properties[0].dataType.specs.length: \"-1\" is not a number"]
    );
}

fn enum_specs(n: usize) -> Value {
    Value::Object(
        (0..n)
            .map(|i| (i.to_string(), json!(format!("v{i}"))))
            .collect(),
    )
}

#[test]
fn enum_limits() {
    assert!(one_prop_errors(json!({"type": "enum", "specs": enum_specs(25)})).is_empty());
    assert_eq!(
        one_prop_errors(json!({"type": "enum", "specs": enum_specs(26)})),
        ["properties[0].dataType.specs: 26 enum items, at most 25 allowed"]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "enum", "specs": {}})),
        ["properties[0].dataType.specs: no items"]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "enum", "specs": {"01": "a", "-2": "b"}})),
        ["properties[0].dataType.specs.01: enum key \"01\" is not an integer"]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "enum", "specs": {"1": 5}})),
        ["properties[0].dataType.specs.1: expected a string"]
    );
}

#[test]
fn bool_specs() {
    for specs in [
        json!({"0": "off"}),
        json!({"0": "a", "1": "b", "2": "c"}),
        json!({"0": 1, "1": "b"}),
    ] {
        assert_eq!(
            one_prop_errors(json!({"type": "bool", "specs": specs})),
            ["properties[0].dataType.specs: bool specs need exactly the keys \"0\" and \"1\""]
        );
    }
}

fn members(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"identifier": format!("m{i}"), "dataType": {"type": "date"}}))
            .collect(),
    )
}

#[test]
fn struct_limits() {
    assert!(one_prop_errors(json!({"type": "struct", "specs": members(10)})).is_empty());
    assert_eq!(
        one_prop_errors(json!({"type": "struct", "specs": members(11)})),
        ["properties[0].dataType.specs: 11 struct members, at most 10 allowed"]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "struct", "specs": []})),
        ["properties[0].dataType.specs: no items"]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "struct", "specs": [
            {"identifier": "in", "dataType": {"type": "struct", "specs": members(1)}}]})),
        ["properties[0].dataType.specs[0].dataType: a struct may not contain a struct"]
    );
    assert_eq!(
        one_prop_errors(
            json!({"type": "struct", "specs": [{"identifier": "a", "dataType":
            {"type": "array", "specs": {"size": "2", "item": {"type": "struct", "specs": members(1)}}}}]})
        ),
        ["properties[0].dataType.specs[0].dataType.specs.item: a struct may not contain a struct"]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "struct", "specs": {}})),
        ["properties[0].dataType.specs: expected an array"]
    );
}

#[test]
fn array_limits() {
    let arr =
        |size: &str, item: Value| json!({"type": "array", "specs": {"size": size, "item": item}});
    assert!(one_prop_errors(arr("128", json!({"type": "text"}))).is_empty());
    assert_eq!(
        one_prop_errors(arr("129", json!({"type": "int"}))),
        ["properties[0].dataType.specs.size: 129 is not within 1..=128"]
    );
    assert_eq!(
        one_prop_errors(arr(
            "2",
            json!({"type": "bool", "specs": {"0": "a", "1": "b"}})
        )),
        ["properties[0].dataType.specs.item.type: an array item may not be bool"]
    );
    assert_eq!(
        one_prop_errors(arr("2", json!({"type": "struct", "specs": members(11)}))),
        ["properties[0].dataType.specs.item.specs: 11 struct members, at most 10 allowed"]
    );
    assert_eq!(
        one_prop_errors(json!({"type": "array", "specs": {}})),
        [
            "properties[0].dataType.specs.size: missing",
            "properties[0].dataType.specs.item: missing"
        ]
    );
}

fn params(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"identifier": format!("p{i}"), "dataType": {"type": "date"}}))
            .collect(),
    )
}

#[test]
fn service_and_event_param_limits() {
    let svc = |i: usize, o: usize| {
        json!({"services": [{"identifier": "S", "callType": "sync",
        "inputData": params(i), "outputData": params(o)}]})
    };
    assert!(Tsl::from_value(&svc(20, 20)).is_ok());
    let errs: Vec<String> = errors_of(svc(21, 21))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        [
            "services[0].inputData: 21 parameters, at most 20 allowed",
            "services[0].outputData: 21 parameters, at most 20 allowed"
        ]
    );
    let evt = |o: usize| json!({"events": [{"identifier": "E", "type": "info", "outputData": params(o)}]});
    assert!(Tsl::from_value(&evt(50)).is_ok());
    assert_eq!(
        errors_of(evt(51))[0].to_string(),
        "events[0].outputData: 51 parameters, at most 50 allowed"
    );
}

#[test]
fn validate_a_model_built_in_code() {
    let mut tsl = Tsl::default();
    tsl.properties.push(Property {
        identifier: "T".into(),
        name: "T".into(),
        access_mode: AccessMode::Read,
        required: false,
        data_type: DataType::Int(NumberSpecs {
            min: Some(10.0),
            max: Some(5.0),
            ..NumberSpecs::default()
        }),
    });
    tsl.services.push(crate::Service {
        identifier: "T".into(),
        name: "T".into(),
        call_type: CallType::Async,
        input_data: vec![Param {
            identifier: "x".into(),
            name: "x".into(),
            data_type: DataType::Date,
        }],
        output_data: vec![],
    });
    let errs = tsl.validate().unwrap_err();
    assert_eq!(errs.0.len(), 2);
    assert_eq!(
        errs.to_string(),
        "2 TSL error(s): properties[0].dataType.specs.max: 5 is below min 10; \
         services[0].identifier: \"T\" is already used at properties[0]"
    );
    assert!(full().validate().is_ok());
}
