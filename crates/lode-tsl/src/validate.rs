//! Validation of a TSL against the platform rules, and the path-naming errors it reports.

use std::collections::HashMap;

use crate::{
    DataType, MAX_ARRAY_SIZE, MAX_ENUM_ITEMS, MAX_EVENT_PARAMS, MAX_FEATURES, MAX_IDENTIFIER_LEN,
    MAX_SERVICE_PARAMS, MAX_STRUCT_MEMBERS, MAX_TEXT_LENGTH, NumberSpecs, Param, Tsl,
};

/// Identifiers the implicit features use; user-defined features may not take them.
pub(crate) const RESERVED: [&str; 4] = ["post", "set", "get", "property"];

/// One problem in a TSL, at `path` (`properties[3].dataType.specs.max`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct TslError {
    pub path: String,
    pub kind: TslErrorKind,
}

/// What is wrong at a [`TslError`]'s path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TslErrorKind {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("missing")]
    Missing,
    #[error("expected {0}")]
    WrongJsonType(&'static str),
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("unknown {what} {value:?}")]
    UnknownKeyword { what: &'static str, value: String },
    #[error(
        "{0:?} is not an identifier (letters, digits, underscore, 1-50 chars, not starting with a digit)"
    )]
    InvalidIdentifier(String),
    #[error("{identifier:?} is already used at {first}")]
    DuplicateIdentifier { identifier: String, first: String },
    #[error("{0:?} is reserved")]
    ReservedIdentifier(String),
    #[error("{count} {what}, at most {limit} allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("{max} is below min {min}")]
    MaxBelowMin { min: f64, max: f64 },
    #[error("{0} is not above 0")]
    StepNotPositive(f64),
    #[error("{step} is larger than max - min ({range})")]
    StepLargerThanRange { step: f64, range: f64 },
    #[error("{0} is not an int32")]
    NotInt32(f64),
    #[error("{0} is not within 1..={max}", max = MAX_TEXT_LENGTH)]
    TextLength(u64),
    #[error("{0} is not within 1..={max}", max = MAX_ARRAY_SIZE)]
    ArraySize(u64),
    #[error("enum key {0:?} is not an integer")]
    EnumKeyNotInteger(String),
    #[error("no items")]
    Empty,
    #[error("bool specs need exactly the keys \"0\" and \"1\"")]
    BoolKeys,
    #[error("a struct may not contain a struct")]
    NestedStruct,
    #[error("an array item may not be {0}")]
    ArrayItemType(&'static str),
}

/// Every problem found in a TSL; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} TSL error(s): {}", .0.len(), join(.0))]
pub struct TslErrors(pub Vec<TslError>);

fn join(errors: &[TslError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects errors while walking a document.
#[derive(Default)]
pub(crate) struct Errors(pub(crate) Vec<TslError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, kind: TslErrorKind) {
        self.0.push(TslError {
            path: path.into(),
            kind,
        });
    }
}

/// Letters, digits, underscore; 1–50 characters; not starting with a digit.
pub fn is_valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    s.len() <= MAX_IDENTIFIER_LEN && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Tsl {
    /// Checks identifiers and every platform limit; returns all problems found.
    pub fn validate(&self) -> Result<(), TslErrors> {
        let mut errors = Errors::default();
        validate_into(self, &mut errors);
        if errors.0.is_empty() {
            Ok(())
        } else {
            Err(TslErrors(errors.0))
        }
    }
}

pub(crate) fn validate_into(tsl: &Tsl, errors: &mut Errors) {
    let count = tsl.feature_count();
    if count > MAX_FEATURES {
        errors.push(
            "",
            TslErrorKind::TooMany {
                what: "features",
                count,
                limit: MAX_FEATURES,
            },
        );
    }
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (i, p) in tsl.properties.iter().enumerate() {
        let path = format!("properties[{i}]");
        check_feature_id(errors, &mut seen, &p.identifier, &path);
        check_data_type(errors, &p.data_type, &format!("{path}.dataType"), false);
    }
    for (i, s) in tsl.services.iter().enumerate() {
        let path = format!("services[{i}]");
        check_feature_id(errors, &mut seen, &s.identifier, &path);
        check_params(
            errors,
            &s.input_data,
            &format!("{path}.inputData"),
            MAX_SERVICE_PARAMS,
        );
        check_params(
            errors,
            &s.output_data,
            &format!("{path}.outputData"),
            MAX_SERVICE_PARAMS,
        );
    }
    for (i, e) in tsl.events.iter().enumerate() {
        let path = format!("events[{i}]");
        check_feature_id(errors, &mut seen, &e.identifier, &path);
        check_params(
            errors,
            &e.output_data,
            &format!("{path}.outputData"),
            MAX_EVENT_PARAMS,
        );
    }
}

fn check_feature_id<'a>(
    errors: &mut Errors,
    seen: &mut HashMap<&'a str, String>,
    id: &'a str,
    path: &str,
) {
    let id_path = format!("{path}.identifier");
    if !is_valid_identifier(id) {
        errors.push(id_path, TslErrorKind::InvalidIdentifier(id.to_owned()));
        return;
    }
    if RESERVED.contains(&id) {
        errors.push(id_path, TslErrorKind::ReservedIdentifier(id.to_owned()));
        return;
    }
    match seen.get(id) {
        Some(first) => errors.push(
            id_path,
            TslErrorKind::DuplicateIdentifier {
                identifier: id.to_owned(),
                first: first.clone(),
            },
        ),
        None => {
            seen.insert(id, path.to_owned());
        }
    }
}

fn check_params(errors: &mut Errors, params: &[Param], path: &str, limit: usize) {
    if params.len() > limit {
        errors.push(
            path,
            TslErrorKind::TooMany {
                what: "parameters",
                count: params.len(),
                limit,
            },
        );
    }
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (i, p) in params.iter().enumerate() {
        let p_path = format!("{path}[{i}]");
        let id_path = format!("{p_path}.identifier");
        if !is_valid_identifier(&p.identifier) {
            errors.push(
                id_path,
                TslErrorKind::InvalidIdentifier(p.identifier.clone()),
            );
        } else if let Some(first) = seen.get(p.identifier.as_str()) {
            errors.push(
                id_path,
                TslErrorKind::DuplicateIdentifier {
                    identifier: p.identifier.clone(),
                    first: first.clone(),
                },
            );
        } else {
            seen.insert(&p.identifier, p_path.clone());
        }
        check_data_type(errors, &p.data_type, &format!("{p_path}.dataType"), false);
    }
}

/// `in_struct`: the type is a struct member (or a struct array's item member), where a
/// struct is not allowed.
fn check_data_type(errors: &mut Errors, dt: &DataType, path: &str, in_struct: bool) {
    let specs = format!("{path}.specs");
    match dt {
        DataType::Int(s) => check_number_specs(errors, s, &specs, true),
        DataType::Float(s) | DataType::Double(s) => check_number_specs(errors, s, &specs, false),
        DataType::Text { length } => {
            if *length == 0 || *length > MAX_TEXT_LENGTH {
                errors.push(
                    format!("{specs}.length"),
                    TslErrorKind::TextLength(u64::from(*length)),
                );
            }
        }
        DataType::Enum { items } => {
            if items.is_empty() {
                errors.push(specs.clone(), TslErrorKind::Empty);
            }
            if items.len() > MAX_ENUM_ITEMS {
                errors.push(
                    specs.clone(),
                    TslErrorKind::TooMany {
                        what: "enum items",
                        count: items.len(),
                        limit: MAX_ENUM_ITEMS,
                    },
                );
            }
            for item in items {
                if !is_canonical_int32(&item.key) {
                    errors.push(
                        format!("{specs}.{}", item.key),
                        TslErrorKind::EnumKeyNotInteger(item.key.clone()),
                    );
                }
            }
        }
        DataType::Bool { .. } | DataType::Date => {}
        DataType::Struct { members } => {
            if in_struct {
                errors.push(path, TslErrorKind::NestedStruct);
                return;
            }
            if members.is_empty() {
                errors.push(specs.clone(), TslErrorKind::Empty);
            }
            if members.len() > MAX_STRUCT_MEMBERS {
                errors.push(
                    specs.clone(),
                    TslErrorKind::TooMany {
                        what: "struct members",
                        count: members.len(),
                        limit: MAX_STRUCT_MEMBERS,
                    },
                );
            }
            let mut seen: HashMap<&str, String> = HashMap::new();
            for (i, m) in members.iter().enumerate() {
                let m_path = format!("{specs}[{i}]");
                let id_path = format!("{m_path}.identifier");
                if !is_valid_identifier(&m.identifier) {
                    errors.push(
                        id_path,
                        TslErrorKind::InvalidIdentifier(m.identifier.clone()),
                    );
                } else if let Some(first) = seen.get(m.identifier.as_str()) {
                    errors.push(
                        id_path,
                        TslErrorKind::DuplicateIdentifier {
                            identifier: m.identifier.clone(),
                            first: first.clone(),
                        },
                    );
                } else {
                    seen.insert(&m.identifier, m_path.clone());
                }
                check_data_type(errors, &m.data_type, &format!("{m_path}.dataType"), true);
            }
        }
        DataType::Array { size, item } => {
            if *size == 0 || *size > MAX_ARRAY_SIZE {
                errors.push(
                    format!("{specs}.size"),
                    TslErrorKind::ArraySize(u64::from(*size)),
                );
            }
            let item_path = format!("{specs}.item");
            match item.as_ref() {
                DataType::Int(_)
                | DataType::Float(_)
                | DataType::Double(_)
                | DataType::Text { .. } => check_data_type(errors, item, &item_path, in_struct),
                DataType::Struct { .. } if !in_struct => {
                    check_data_type(errors, item, &item_path, false)
                }
                DataType::Struct { .. } => errors.push(item_path, TslErrorKind::NestedStruct),
                other => errors.push(
                    format!("{item_path}.type"),
                    TslErrorKind::ArrayItemType(other.type_name()),
                ),
            }
        }
    }
}

fn check_number_specs(errors: &mut Errors, s: &NumberSpecs, specs: &str, int: bool) {
    if int {
        for (name, v) in [("min", s.min), ("max", s.max), ("step", s.step)] {
            if let Some(v) = v
                && (v.fract() != 0.0 || v < f64::from(i32::MIN) || v > f64::from(i32::MAX))
            {
                errors.push(format!("{specs}.{name}"), TslErrorKind::NotInt32(v));
            }
        }
    }
    if let (Some(min), Some(max)) = (s.min, s.max)
        && max < min
    {
        errors.push(
            format!("{specs}.max"),
            TslErrorKind::MaxBelowMin { min, max },
        );
    }
    if let Some(step) = s.step {
        if step <= 0.0 {
            errors.push(format!("{specs}.step"), TslErrorKind::StepNotPositive(step));
        } else if let (Some(min), Some(max)) = (s.min, s.max)
            && max > min
            && step > max - min
        {
            errors.push(
                format!("{specs}.step"),
                TslErrorKind::StepLargerThanRange {
                    step,
                    range: max - min,
                },
            );
        }
    }
}

/// A decimal int32 written the canonical way (`"3"`, `"-1"`; not `"03"`, `"+3"`, `"3.0"`).
pub(crate) fn is_canonical_int32(s: &str) -> bool {
    s.parse::<i32>().is_ok_and(|v| v.to_string() == s)
}
