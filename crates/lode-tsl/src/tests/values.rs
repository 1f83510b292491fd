//! Value checks per data type at the spec boundaries, both post forms, events and services.

use serde_json::{Value, json};

use super::full;
use crate::value::check_value;
use crate::{DataType, EnumItem, NumberSpecs, Param, PropertyCheck, Tsl, ValueError};

fn one(tsl: &Tsl, id: &str, v: Value) -> Result<(), ValueError> {
    let check = tsl.check_properties(&json!({ id: v }));
    assert!(check.payload.is_none());
    match check.rejected.into_iter().next() {
        Some((rid, e)) => {
            assert_eq!(rid, id);
            Err(e)
        }
        None => {
            assert_eq!(check.accepted.len(), 1);
            Ok(())
        }
    }
}

#[test]
fn both_post_forms() {
    let tsl = full();
    let check = tsl.check_properties(&json!({
        "Temp": 23.5,
        "Level": {"value": 20, "time": 1_700_000_000_000_i64},
        "Mode": {"value": 2, "time": "1700000000001"},
        "Switch": {"value": 1},
    }));
    assert!(check.rejected.is_empty(), "{check:?}");
    assert_eq!(check.code(), 200);
    let mut accepted = check.accepted;
    accepted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        accepted,
        [
            ("Level".to_owned(), json!(20), Some(1_700_000_000_000)),
            ("Mode".to_owned(), json!(2), Some(1_700_000_000_001)),
            ("Switch".to_owned(), json!(1), None),
            ("Temp".to_owned(), json!(23.5), None),
        ]
    );
}

#[test]
fn bad_time_and_missing_value() {
    let tsl = full();
    assert_eq!(
        one(&tsl, "Level", json!({"value": 20, "time": "soon"})),
        Err(ValueError::InvalidTime)
    );
    assert_eq!(
        one(&tsl, "Level", json!({"value": 20, "time": -1})),
        Err(ValueError::InvalidTime)
    );
    assert_eq!(
        one(&tsl, "Level", json!({"value": null})),
        Err(ValueError::MissingValue)
    );
    assert_eq!(
        one(&tsl, "Level", Value::Null),
        Err(ValueError::MissingValue)
    );
    assert_eq!(ValueError::InvalidTime.code(), 460);
}

#[test]
fn partial_accept_and_unknown_identifier() {
    let tsl = full();
    let check = tsl.check_properties(&json!({"Temp": 1.0, "Nope": 1, "Level": 7}));
    assert_eq!(check.accepted.len(), 1);
    let mut rejected = check.rejected.clone();
    rejected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rejected[0].0, "Level");
    assert!(matches!(rejected[0].1, ValueError::OutOfRange { .. }));
    assert_eq!(
        rejected[1],
        ("Nope".to_owned(), ValueError::UnknownIdentifier)
    );
    assert_ne!(check.code(), 200);
}

#[test]
fn payload_errors() {
    let tsl = full();
    for v in [json!([]), json!("x"), json!(1), Value::Null] {
        let c = tsl.check_properties(&v);
        assert_eq!(c.payload, Some(ValueError::NotAnObject));
        assert_eq!(c.code(), 460);
    }
    let many: serde_json::Map<String, Value> =
        (0..201).map(|i| (format!("P{i}"), json!(1))).collect();
    let c = tsl.check_properties(&Value::Object(many));
    assert_eq!(
        c.payload,
        Some(ValueError::TooManyProperties { count: 201 })
    );
    assert_eq!(c.code(), 6106);
    assert_eq!(
        c,
        PropertyCheck {
            payload: c.payload.clone(),
            ..PropertyCheck::default()
        }
    );
}

#[test]
fn int_boundaries_and_step() {
    let tsl = full(); // Level: int 10..=100 step 5
    assert_eq!(one(&tsl, "Level", json!(10)), Ok(()));
    assert_eq!(one(&tsl, "Level", json!(100)), Ok(()));
    assert_eq!(one(&tsl, "Level", json!(15)), Ok(()));
    let e = one(&tsl, "Level", json!(9)).unwrap_err();
    assert_eq!(
        e,
        ValueError::OutOfRange {
            value: 9.0,
            min: 10.0,
            max: 100.0
        }
    );
    assert_eq!(e.code(), 6306);
    assert!(matches!(
        one(&tsl, "Level", json!(101)),
        Err(ValueError::OutOfRange { .. })
    ));
    let e = one(&tsl, "Level", json!(12)).unwrap_err();
    assert_eq!(
        e,
        ValueError::NotOnStep {
            value: 12,
            min: 10,
            step: 5
        }
    );
    assert_eq!(e.code(), 6308);
    let e = one(&tsl, "Level", json!(20.5)).unwrap_err();
    assert_eq!(e, ValueError::WrongType { expected: "int32" });
    assert_eq!(e.code(), 6307);
    assert!(matches!(
        one(&tsl, "Level", json!("20")),
        Err(ValueError::WrongType { .. })
    ));
}

#[test]
fn int_without_specs_is_int32() {
    let dt = DataType::Int(NumberSpecs::default());
    assert_eq!(check_value(&dt, &json!(i32::MAX)), Ok(()));
    assert_eq!(check_value(&dt, &json!(i32::MIN)), Ok(()));
    assert!(matches!(
        check_value(&dt, &json!(i64::from(i32::MAX) + 1)),
        Err(ValueError::OutOfRange { .. })
    ));
    assert!(matches!(
        check_value(&dt, &json!(u64::MAX)),
        Err(ValueError::WrongType { .. })
    ));
}

#[test]
fn float_and_double_boundaries() {
    let tsl = full(); // Temp: float -40..=120; Ratio: double 0..=1
    assert_eq!(one(&tsl, "Temp", json!(-40)), Ok(()));
    assert_eq!(one(&tsl, "Temp", json!(120.0)), Ok(()));
    assert!(matches!(
        one(&tsl, "Temp", json!(-40.01)),
        Err(ValueError::OutOfRange { .. })
    ));
    assert!(matches!(
        one(&tsl, "Temp", json!(120.5)),
        Err(ValueError::OutOfRange { .. })
    ));
    assert_eq!(
        one(&tsl, "Temp", json!("1.0")),
        Err(ValueError::WrongType { expected: "float" })
    );
    assert_eq!(one(&tsl, "Ratio", json!(0)), Ok(()));
    assert_eq!(one(&tsl, "Ratio", json!(1.0)), Ok(()));
    assert!(matches!(
        one(&tsl, "Ratio", json!(1.0001)),
        Err(ValueError::OutOfRange { .. })
    ));
    assert_eq!(
        one(&tsl, "Ratio", json!(true)),
        Err(ValueError::WrongType { expected: "double" })
    );
}

#[test]
fn text_length_2048_2049() {
    let tsl = full(); // Label: text 2048
    assert_eq!(one(&tsl, "Label", json!("a".repeat(2048))), Ok(()));
    let e = one(&tsl, "Label", json!("a".repeat(2049))).unwrap_err();
    assert_eq!(
        e,
        ValueError::TextTooLong {
            len: 2049,
            max: 2048
        }
    );
    assert_eq!(e.code(), 6313);
    // bytes, not characters: 683 three-byte characters are 2049 bytes
    assert!(matches!(
        one(&tsl, "Label", json!("€".repeat(683))),
        Err(ValueError::TextTooLong { .. })
    ));
    assert_eq!(
        one(&tsl, "Label", json!(5)),
        Err(ValueError::WrongType { expected: "text" })
    );
}

#[test]
fn enum_items_25_and_26() {
    let items = |n: usize| DataType::Enum {
        items: (0..n)
            .map(|i| EnumItem {
                key: i.to_string(),
                name: format!("v{i}"),
            })
            .collect(),
    };
    assert_eq!(check_value(&items(25), &json!(24)), Ok(()));
    let e = check_value(&items(25), &json!(25)).unwrap_err();
    assert_eq!(e, ValueError::UnknownEnumKey("25".into()));
    assert_eq!(e.code(), 6317);
    assert_eq!(check_value(&items(26), &json!(25)), Ok(()));
    let tsl = full(); // Mode: 0, 1, 2
    assert_eq!(one(&tsl, "Mode", json!(0)), Ok(()));
    assert_eq!(
        one(&tsl, "Mode", json!(3)),
        Err(ValueError::UnknownEnumKey("3".into()))
    );
    assert_eq!(
        one(&tsl, "Mode", json!(-1)),
        Err(ValueError::UnknownEnumKey("-1".into()))
    );
    assert!(matches!(
        one(&tsl, "Mode", json!("1")),
        Err(ValueError::WrongType { .. })
    ));
}

#[test]
fn bool_zero_one() {
    let tsl = full();
    assert_eq!(one(&tsl, "Switch", json!(0)), Ok(()));
    assert_eq!(one(&tsl, "Switch", json!(1)), Ok(()));
    for bad in [json!(2), json!(-1), json!(true), json!("1"), json!(0.5)] {
        assert_eq!(one(&tsl, "Switch", bad), Err(ValueError::BoolNotZeroOne));
    }
    assert_eq!(ValueError::BoolNotZeroOne.code(), 6318);
}

#[test]
fn date_ms_string() {
    let tsl = full();
    assert_eq!(one(&tsl, "Since", json!("1700000000000")), Ok(()));
    assert_eq!(one(&tsl, "Since", json!("0")), Ok(()));
    assert_eq!(one(&tsl, "Since", json!(1_700_000_000_000_i64)), Ok(()));
    for bad in [
        json!(""),
        json!("17e11"),
        json!("-5"),
        json!("12345678901234"),
        json!(1.5),
        json!(true),
    ] {
        assert_eq!(one(&tsl, "Since", bad), Err(ValueError::InvalidDate));
    }
    assert_eq!(ValueError::InvalidDate.code(), 6319);
}

#[test]
fn struct_members() {
    let tsl = full(); // Pos: Lat -90..=90, Lon -180..=180, Fix bool
    assert_eq!(
        one(&tsl, "Pos", json!({"Lat": 90, "Lon": -180, "Fix": 1})),
        Ok(())
    );
    assert_eq!(
        one(
            &tsl,
            "Pos",
            json!({"value": {"Lat": 1, "Lon": 2, "Fix": 0}, "time": 5})
        ),
        Ok(())
    );
    let e = one(&tsl, "Pos", json!({"Lat": 1, "Lon": 2})).unwrap_err();
    assert_eq!(e, ValueError::StructMemberMissing("Fix".into()));
    assert_eq!(e.code(), 6321);
    assert_eq!(
        one(&tsl, "Pos", json!({"Lat": 1, "Lon": 2, "Fix": 0, "Alt": 3})),
        Err(ValueError::StructMemberUnknown("Alt".into()))
    );
    let e = one(&tsl, "Pos", json!({"Lat": 91, "Lon": 2, "Fix": 0})).unwrap_err();
    assert!(matches!(&e, ValueError::StructMember { member, source }
        if member == "Lat" && matches!(**source, ValueError::OutOfRange { .. })));
    assert_eq!(e.code(), 6306);
    assert_eq!(
        e.to_string(),
        "struct member \"Lat\": 91 is not within -90..=90"
    );
    assert_eq!(
        one(&tsl, "Pos", json!([1, 2])),
        Err(ValueError::WrongType { expected: "struct" })
    );
}

#[test]
fn struct_with_a_member_named_value() {
    let dt = DataType::Struct {
        members: vec![Param {
            identifier: "value".into(),
            name: "v".into(),
            data_type: DataType::Date,
        }],
    };
    let mut tsl = Tsl::default();
    tsl.properties.push(crate::Property {
        identifier: "S".into(),
        name: "S".into(),
        access_mode: crate::AccessMode::Read,
        required: false,
        data_type: dt,
    });
    assert_eq!(one(&tsl, "S", json!({"value": "5"})), Ok(()));
}

#[test]
fn array_128_and_129() {
    let tsl = full(); // Samples: int array of 128
    let arr = |n: usize| Value::Array((0..n).map(|i| json!(i)).collect());
    assert_eq!(one(&tsl, "Samples", arr(128)), Ok(()));
    let e = one(&tsl, "Samples", arr(129)).unwrap_err();
    assert_eq!(e, ValueError::ArrayTooLong { len: 129, max: 128 });
    assert_eq!(e.code(), 6325);
    assert_eq!(one(&tsl, "Samples", json!([])), Ok(()));
    let e = one(&tsl, "Samples", json!([1, "x"])).unwrap_err();
    assert_eq!(e.to_string(), "array element 1: expected int32");
    assert_eq!(e.code(), 6307);
    assert_eq!(
        one(&tsl, "Samples", json!({"a": 1})),
        Err(ValueError::WrongType { expected: "array" })
    );
}

#[test]
fn array_of_structs() {
    let tsl = full(); // Points: up to 4 of {X int 0..=10, Tag text 8}
    assert_eq!(
        one(
            &tsl,
            "Points",
            json!([{"X": 0, "Tag": "abcdefgh"}, {"X": 10, "Tag": ""}])
        ),
        Ok(())
    );
    let e = one(
        &tsl,
        "Points",
        json!([{"X": 0, "Tag": "a"}, {"X": 1, "Tag": "abcdefghi"}]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "array element 1: struct member \"Tag\": 9 bytes of text, at most 8"
    );
    assert_eq!(e.code(), 6313);
    let five = Value::Array((0..5).map(|_| json!({"X": 1, "Tag": ""})).collect());
    assert!(matches!(
        one(&tsl, "Points", five),
        Err(ValueError::ArrayTooLong { len: 5, max: 4 })
    ));
}

#[test]
fn event_output() {
    let tsl = full();
    assert_eq!(
        tsl.check_event_output("Alarm", &json!({"Level": 2})),
        Ok(())
    );
    assert_eq!(tsl.check_event_output("Alarm", &json!({})), Ok(()));
    let errs = tsl
        .check_event_output("Alarm", &json!({"Level": 4, "X": 1}))
        .unwrap_err();
    assert_eq!(errs.len(), 2);
    assert!(errs.contains(&("X".to_owned(), ValueError::UnknownIdentifier)));
    let errs = tsl.check_event_output("Nope", &json!({})).unwrap_err();
    assert_eq!(
        errs,
        [("Nope".to_owned(), ValueError::UnknownEvent("Nope".into()))]
    );
    assert_eq!(errs[0].1.code(), 6300);
    assert_eq!(
        tsl.check_event_output("post", &json!({"Temp": 1.5})),
        Ok(())
    );
    assert!(
        tsl.check_event_output("post", &json!({"Temp": 500}))
            .is_err()
    );
    assert_eq!(
        tsl.check_event_output("Fault", &json!("x")).unwrap_err(),
        [(String::new(), ValueError::NotAnObject)]
    );
}

#[test]
fn service_input() {
    let tsl = full();
    assert_eq!(
        tsl.check_service_input("Echo", &json!({"Msg": "hi"})),
        Ok(())
    );
    assert!(matches!(
        tsl.check_service_input("Reboot", &json!({"Delay": 61}))
            .unwrap_err()[0]
            .1,
        ValueError::OutOfRange { .. }
    ));
    assert_eq!(
        tsl.check_service_input("Nope", &json!({})).unwrap_err(),
        [("Nope".to_owned(), ValueError::UnknownService("Nope".into()))]
    );
    assert_eq!(
        tsl.check_service_input("set", &json!({"Level": 50, "Switch": 0})),
        Ok(())
    );
    let errs = tsl
        .check_service_input("set", &json!({"Temp": 1.0}))
        .unwrap_err();
    assert_eq!(errs, [("Temp".to_owned(), ValueError::ReadOnly)]);
    assert_eq!(errs[0].1.code(), 6304);
    assert_eq!(
        tsl.check_service_input("get", &json!(["Temp", "Level"])),
        Ok(())
    );
    assert_eq!(
        tsl.check_service_input("get", &json!(["Temp", "Nope"]))
            .unwrap_err(),
        [("Nope".to_owned(), ValueError::UnknownIdentifier)]
    );
    assert!(tsl.check_service_input("get", &json!({})).is_err());
}

#[test]
fn unvalidated_specs_do_not_overflow() {
    let dt = DataType::Int(NumberSpecs {
        min: Some(-1e300),
        max: Some(1e300),
        step: Some(1e300),
        ..NumberSpecs::default()
    });
    assert!(matches!(
        check_value(&dt, &json!(5)),
        Err(ValueError::NotOnStep { .. })
    ));
    let dt = DataType::Int(NumberSpecs {
        min: Some(-3.0),
        step: Some(4.0),
        ..NumberSpecs::default()
    });
    assert_eq!(check_value(&dt, &json!(5)), Ok(()));
    assert!(check_value(&dt, &json!(4)).is_err());
}
