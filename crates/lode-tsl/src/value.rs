//! Checking values against a TSL: property posts, event outputs, service inputs.
//!
//! # Alink codes
//!
//! [`ValueError::code`] gives the code for the `_reply`. Section 6.3 of the Alink protocol
//! reference confirms only the general codes; of those, 460 ("empty data, invalid parameter
//! format, or too many parameters") fits a payload that is not an object, a malformed
//! `time` and a missing value. The reference platform reports the rest from its TSL-validation
//! family (63xx) and its property-count check (6106); those numbers are not confirmed by the
//! protocol reference (its section 6.3 marks the 63xx family unconfirmed), so they are
//! chosen here to stay within that family and are kept in this one table. A device SDK only
//! tests `code == 200`.
//!
//! | variant | code |
//! |---|---|
//! | `NotAnObject`, `MissingValue`, `InvalidTime` | 460 (confirmed) |
//! | `TooManyProperties` | 6106 |
//! | `UnknownEvent`, `UnknownService` | 6300 (confirmed meaning: no usable `method`) |
//! | `UnknownIdentifier`, `ReadOnly` | 6304 |
//! | `OutOfRange` | 6306 |
//! | `WrongType` | 6307 |
//! | `NotOnStep` | 6308 |
//! | `TextTooLong` | 6313 |
//! | `UnknownEnumKey` | 6317 |
//! | `BoolNotZeroOne` | 6318 |
//! | `InvalidDate` | 6319 |
//! | `StructMemberMissing`, `StructMemberUnknown` | 6321 |
//! | `ArrayTooLong` | 6325 |
//! | `StructMember`, `ArrayElement` | the code of the inner error |

use serde_json::{Map, Value};

use crate::{AccessMode, DataType, MAX_POST_PROPERTIES, Param, Tsl};

/// Why a value does not fit its TSL definition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("params is not a JSON object")]
    NotAnObject,
    #[error("{count} properties in one post, at most {limit}", limit = MAX_POST_PROPERTIES)]
    TooManyProperties { count: usize },
    #[error("no event {0:?} in the thing model")]
    UnknownEvent(String),
    #[error("no service {0:?} in the thing model")]
    UnknownService(String),
    #[error("not in the thing model")]
    UnknownIdentifier,
    #[error("the property is read-only")]
    ReadOnly,
    #[error("no value")]
    MissingValue,
    #[error("time is not UTC milliseconds")]
    InvalidTime,
    #[error("expected {expected}")]
    WrongType { expected: &'static str },
    #[error("{value} is not within {min}..={max}")]
    OutOfRange { value: f64, min: f64, max: f64 },
    #[error("{value} is not min {min} plus a multiple of step {step}")]
    NotOnStep { value: i64, min: i64, step: i64 },
    #[error("{len} bytes of text, at most {max}")]
    TextTooLong { len: usize, max: u32 },
    #[error("enum key {0} is not defined")]
    UnknownEnumKey(String),
    #[error("a bool is 0 or 1")]
    BoolNotZeroOne,
    #[error("a date is UTC milliseconds written as a string of digits")]
    InvalidDate,
    #[error("struct member {0:?} is missing")]
    StructMemberMissing(String),
    #[error("struct member {0:?} is not defined")]
    StructMemberUnknown(String),
    #[error("struct member {member:?}: {source}")]
    StructMember {
        member: String,
        source: Box<ValueError>,
    },
    #[error("{len} array elements, at most {max}")]
    ArrayTooLong { len: usize, max: u32 },
    #[error("array element {index}: {source}")]
    ArrayElement {
        index: usize,
        source: Box<ValueError>,
    },
}

impl ValueError {
    /// The Alink code for the `_reply` (table in the module documentation).
    pub fn code(&self) -> u32 {
        match self {
            ValueError::NotAnObject | ValueError::MissingValue | ValueError::InvalidTime => 460,
            ValueError::TooManyProperties { .. } => 6106,
            ValueError::UnknownEvent(_) | ValueError::UnknownService(_) => 6300,
            ValueError::UnknownIdentifier | ValueError::ReadOnly => 6304,
            ValueError::OutOfRange { .. } => 6306,
            ValueError::WrongType { .. } => 6307,
            ValueError::NotOnStep { .. } => 6308,
            ValueError::TextTooLong { .. } => 6313,
            ValueError::UnknownEnumKey(_) => 6317,
            ValueError::BoolNotZeroOne => 6318,
            ValueError::InvalidDate => 6319,
            ValueError::StructMemberMissing(_) | ValueError::StructMemberUnknown(_) => 6321,
            ValueError::ArrayTooLong { .. } => 6325,
            ValueError::StructMember { source, .. } | ValueError::ArrayElement { source, .. } => {
                source.code()
            }
        }
    }
}

/// The outcome of [`Tsl::check_properties`]: what to store, what to refuse.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PropertyCheck {
    /// Identifier, value, and the `time` the device gave (UTC ms), in the order posted.
    pub accepted: Vec<(String, Value, Option<i64>)>,
    /// Identifier and why its value was refused.
    pub rejected: Vec<(String, ValueError)>,
    /// A problem with the whole payload (not an object, too many properties); then nothing
    /// is accepted.
    pub payload: Option<ValueError>,
}

impl PropertyCheck {
    /// The code for the `_reply`: 200 when everything was accepted, else the code of the
    /// payload error or of the first refused property.
    pub fn code(&self) -> u32 {
        match (&self.payload, self.rejected.first()) {
            (Some(e), _) => e.code(),
            (None, Some((_, e))) => e.code(),
            (None, None) => 200,
        }
    }
}

impl Tsl {
    /// Checks the `params` of a property post (`thing.event.property.post`). Each entry is
    /// either flat (`{"Temp": 23.5}`) or `{"Temp": {"value": 23.5, "time": 1700000000000}}`.
    /// Whether `time` is too far ahead is for the caller, who has a clock.
    pub fn check_properties(&self, params: &Value) -> PropertyCheck {
        let mut check = PropertyCheck::default();
        let Some(obj) = params.as_object() else {
            check.payload = Some(ValueError::NotAnObject);
            return check;
        };
        if obj.len() > MAX_POST_PROPERTIES {
            check.payload = Some(ValueError::TooManyProperties { count: obj.len() });
            return check;
        }
        for (id, entry) in obj {
            let Some(prop) = self.property(id) else {
                check
                    .rejected
                    .push((id.clone(), ValueError::UnknownIdentifier));
                continue;
            };
            match unwrap_entry(&prop.data_type, entry)
                .and_then(|(v, t)| check_value(&prop.data_type, v).map(|()| (v, t)))
            {
                Ok((v, t)) => check.accepted.push((id.clone(), v.clone(), t)),
                Err(e) => check.rejected.push((id.clone(), e)),
            }
        }
        check
    }

    /// Checks the output of an event: `output` is the `value` object of the event post's
    /// `params`. `post` checks against the properties. Parameters may be left out; unknown
    /// ones are refused. Returns every refused parameter.
    pub fn check_event_output(
        &self,
        event: &str,
        output: &Value,
    ) -> Result<(), Vec<(String, ValueError)>> {
        if event == "post" {
            return self.check_flat_properties(output, false);
        }
        let Some(e) = self.event(event) else {
            return Err(vec![(
                event.to_owned(),
                ValueError::UnknownEvent(event.to_owned()),
            )]);
        };
        check_params(&e.output_data, output)
    }

    /// Checks the input of a service call (the `params` of `thing.service.{id}`). `set`
    /// takes read-write properties; `get` takes an array of property identifiers.
    /// Parameters may be left out; unknown ones are refused. Returns every refused parameter.
    pub fn check_service_input(
        &self,
        service: &str,
        input: &Value,
    ) -> Result<(), Vec<(String, ValueError)>> {
        match service {
            "set" => self.check_flat_properties(input, true),
            "get" => {
                let Some(ids) = input.as_array() else {
                    return Err(vec![(
                        String::new(),
                        ValueError::WrongType {
                            expected: "an array of property identifiers",
                        },
                    )]);
                };
                let errors: Vec<_> = ids
                    .iter()
                    .filter_map(|id| match id.as_str() {
                        Some(s) if self.property(s).is_some() => None,
                        Some(s) => Some((s.to_owned(), ValueError::UnknownIdentifier)),
                        None => Some((
                            id.to_string(),
                            ValueError::WrongType {
                                expected: "a property identifier",
                            },
                        )),
                    })
                    .collect();
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors)
                }
            }
            _ => match self.service(service) {
                Some(s) => check_params(&s.input_data, input),
                None => Err(vec![(
                    service.to_owned(),
                    ValueError::UnknownService(service.to_owned()),
                )]),
            },
        }
    }

    fn check_flat_properties(
        &self,
        params: &Value,
        writable: bool,
    ) -> Result<(), Vec<(String, ValueError)>> {
        let Some(obj) = params.as_object() else {
            return Err(vec![(String::new(), ValueError::NotAnObject)]);
        };
        let mut errors = Vec::new();
        for (id, v) in obj {
            let result = match self.property(id) {
                None => Err(ValueError::UnknownIdentifier),
                Some(p) if writable && p.access_mode == AccessMode::Read => {
                    Err(ValueError::ReadOnly)
                }
                Some(p) => check_value(&p.data_type, v),
            };
            if let Err(e) = result {
                errors.push((id.clone(), e));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn check_params(params: &[Param], values: &Value) -> Result<(), Vec<(String, ValueError)>> {
    let Some(obj) = values.as_object() else {
        return Err(vec![(String::new(), ValueError::NotAnObject)]);
    };
    let mut errors = Vec::new();
    for (id, v) in obj {
        let result = match params.iter().find(|p| &p.identifier == id) {
            None => Err(ValueError::UnknownIdentifier),
            Some(p) => check_value(&p.data_type, v),
        };
        if let Err(e) = result {
            errors.push((id.clone(), e));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Splits a post entry into value and time. The `{"value", "time"}` form is an object whose
/// keys are `value` and optionally `time`, unless the property is a struct with a member
/// named `value` (then the entry is the struct itself).
fn unwrap_entry<'a>(
    dt: &DataType,
    entry: &'a Value,
) -> Result<(&'a Value, Option<i64>), ValueError> {
    let Some(obj) = entry.as_object() else {
        return Ok((entry, None));
    };
    let struct_has_value = matches!(dt, DataType::Struct { members }
        if members.iter().any(|m| m.identifier == "value"));
    let wrapped = obj.contains_key("value")
        && obj.keys().all(|k| k == "value" || k == "time")
        && !struct_has_value;
    if !wrapped {
        return Ok((entry, None));
    }
    let time = match obj.get("time") {
        None => None,
        Some(t) => Some(parse_ms(t).ok_or(ValueError::InvalidTime)?),
    };
    match obj.get("value") {
        None | Some(Value::Null) => Err(ValueError::MissingValue),
        Some(v) => Ok((v, time)),
    }
}

/// Milliseconds: a non-negative integer, as a JSON number or a string of 1-13 digits.
fn parse_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().filter(|x| *x >= 0),
        Value::String(s)
            if !s.is_empty() && s.len() <= 13 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Checks one value against its data type.
pub fn check_value(dt: &DataType, v: &Value) -> Result<(), ValueError> {
    if v.is_null() {
        return Err(ValueError::MissingValue);
    }
    match dt {
        DataType::Int(s) => {
            let x = v
                .as_i64()
                .ok_or(ValueError::WrongType { expected: "int32" })?;
            let xf = x as f64;
            let min = s.min.unwrap_or(f64::from(i32::MIN));
            let max = s.max.unwrap_or(f64::from(i32::MAX));
            if xf < min.max(f64::from(i32::MIN)) || xf > max.min(f64::from(i32::MAX)) {
                return Err(ValueError::OutOfRange {
                    value: xf,
                    min,
                    max,
                });
            }
            if let Some(step) = s.step.filter(|st| *st >= 1.0 && st.fract() == 0.0) {
                // i128: an unvalidated model may carry a min far outside int32.
                let base = s.min.filter(|m| m.fract() == 0.0).unwrap_or(0.0) as i64;
                let step = step as i64;
                if (i128::from(x) - i128::from(base)).rem_euclid(i128::from(step)) != 0 {
                    return Err(ValueError::NotOnStep {
                        value: x,
                        min: base,
                        step,
                    });
                }
            }
            Ok(())
        }
        DataType::Float(s) | DataType::Double(s) => {
            let expected = if matches!(dt, DataType::Float(_)) {
                "float"
            } else {
                "double"
            };
            let x = v.as_f64().ok_or(ValueError::WrongType { expected })?;
            let min = s.min.unwrap_or(f64::MIN);
            let max = s.max.unwrap_or(f64::MAX);
            if x < min || x > max {
                return Err(ValueError::OutOfRange { value: x, min, max });
            }
            Ok(())
        }
        DataType::Text { length } => {
            let s = v
                .as_str()
                .ok_or(ValueError::WrongType { expected: "text" })?;
            if s.len() > *length as usize {
                return Err(ValueError::TextTooLong {
                    len: s.len(),
                    max: *length,
                });
            }
            Ok(())
        }
        DataType::Enum { items } => {
            let x = v.as_i64().ok_or(ValueError::WrongType {
                expected: "an enum key (integer)",
            })?;
            let key = x.to_string();
            if items.iter().any(|i| i.key == key) {
                Ok(())
            } else {
                Err(ValueError::UnknownEnumKey(key))
            }
        }
        DataType::Bool { .. } => match v.as_i64() {
            Some(0 | 1) => Ok(()),
            _ => Err(ValueError::BoolNotZeroOne),
        },
        DataType::Date => match v {
            Value::String(_) if parse_ms(v).is_some() => Ok(()),
            Value::Number(_) if parse_ms(v).is_some() => Ok(()),
            _ => Err(ValueError::InvalidDate),
        },
        DataType::Struct { members } => {
            let obj = v
                .as_object()
                .ok_or(ValueError::WrongType { expected: "struct" })?;
            check_struct(members, obj)
        }
        DataType::Array { size, item } => {
            let arr = v
                .as_array()
                .ok_or(ValueError::WrongType { expected: "array" })?;
            if arr.len() > *size as usize {
                return Err(ValueError::ArrayTooLong {
                    len: arr.len(),
                    max: *size,
                });
            }
            for (index, el) in arr.iter().enumerate() {
                check_value(item, el).map_err(|e| ValueError::ArrayElement {
                    index,
                    source: Box::new(e),
                })?;
            }
            Ok(())
        }
    }
}

fn check_struct(members: &[Param], obj: &Map<String, Value>) -> Result<(), ValueError> {
    if let Some(k) = obj
        .keys()
        .find(|k| !members.iter().any(|m| &m.identifier == *k))
    {
        return Err(ValueError::StructMemberUnknown(k.clone()));
    }
    for m in members {
        let v = obj
            .get(&m.identifier)
            .ok_or_else(|| ValueError::StructMemberMissing(m.identifier.clone()))?;
        check_value(&m.data_type, v).map_err(|e| ValueError::StructMember {
            member: m.identifier.clone(),
            source: Box::new(e),
        })?;
    }
    Ok(())
}
