//! The reference platform's TSL JSON: parsing (collecting every error with its path) and export.

use serde_json::{Map, Value, json};

use crate::validate::{Errors, TslErrorKind, TslErrors, validate_into};
use crate::{
    AccessMode, CallType, DEFAULT_SCHEMA, DataType, EnumItem, Event, EventType, NumberSpecs, Param,
    Property, Service, Tsl,
};

impl Tsl {
    /// Parses and validates TSL JSON text; see [`Tsl::from_value`].
    pub fn from_json(text: &str) -> Result<Tsl, TslErrors> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            TslErrors(vec![crate::TslError {
                path: String::new(),
                kind: TslErrorKind::Json(e.to_string()),
            }])
        })?;
        Tsl::from_value(&value)
    }

    /// Parses and validates a TSL document in the reference format. The implicit `post` event
    /// and `set`/`get` services in it are skipped (they are derived from the properties);
    /// `method`, `desc` and other informative fields are ignored. Returns every problem found.
    pub fn from_value(value: &Value) -> Result<Tsl, TslErrors> {
        let mut errors = Errors::default();
        let tsl = parse_tsl(value, &mut errors);
        if errors.0.is_empty() {
            validate_into(&tsl, &mut errors);
        }
        if errors.0.is_empty() {
            Ok(tsl)
        } else {
            Err(TslErrors(errors.0))
        }
    }

    /// Exports to the reference format, the implicit `post` event (all properties) and
    /// `set` (read-write properties) / `get` (all properties) services included, first.
    pub fn to_json(&self) -> Value {
        let all: Vec<Value> = self
            .properties
            .iter()
            .map(|p| param_json(&p.identifier, &p.name, &p.data_type))
            .collect();
        let rw: Vec<Value> = self
            .properties
            .iter()
            .filter(|p| p.access_mode == AccessMode::ReadWrite)
            .map(|p| param_json(&p.identifier, &p.name, &p.data_type))
            .collect();
        let ids: Vec<Value> = self
            .properties
            .iter()
            .map(|p| Value::String(p.identifier.clone()))
            .collect();

        let mut events = vec![json!({
            "identifier": "post", "name": "post", "type": "info", "required": true,
            "method": "thing.event.property.post", "outputData": all,
        })];
        events.extend(self.events.iter().map(|e| {
            json!({
                "identifier": e.identifier, "name": e.name, "type": e.event_type.as_str(),
                "required": false, "method": format!("thing.event.{}.post", e.identifier),
                "outputData": params_json(&e.output_data),
            })
        }));
        let mut services = vec![
            json!({
                "identifier": "set", "name": "set", "required": true, "callType": "async",
                "method": "thing.service.property.set", "inputData": rw, "outputData": [],
            }),
            json!({
                "identifier": "get", "name": "get", "required": true, "callType": "async",
                "method": "thing.service.property.get", "inputData": ids, "outputData": all,
            }),
        ];
        services.extend(self.services.iter().map(|s| {
            json!({
                "identifier": s.identifier, "name": s.name, "required": false,
                "callType": s.call_type.as_str(),
                "method": format!("thing.service.{}", s.identifier),
                "inputData": params_json(&s.input_data),
                "outputData": params_json(&s.output_data),
            })
        }));
        let properties: Vec<Value> = self
            .properties
            .iter()
            .map(|p| {
                json!({
                    "identifier": p.identifier, "name": p.name,
                    "accessMode": p.access_mode.as_str(), "required": p.required,
                    "dataType": data_type_json(&p.data_type),
                })
            })
            .collect();
        let mut profile = Map::new();
        if let Some(pk) = &self.product_key {
            profile.insert("productKey".into(), Value::String(pk.clone()));
        }
        json!({
            "schema": self.schema.as_deref().unwrap_or(DEFAULT_SCHEMA),
            "profile": profile,
            "properties": properties,
            "events": events,
            "services": services,
        })
    }
}

fn params_json(params: &[Param]) -> Vec<Value> {
    params
        .iter()
        .map(|p| param_json(&p.identifier, &p.name, &p.data_type))
        .collect()
}

fn param_json(identifier: &str, name: &str, dt: &DataType) -> Value {
    json!({ "identifier": identifier, "name": name, "dataType": data_type_json(dt) })
}

fn num(v: f64) -> Value {
    Value::String(v.to_string())
}

fn number_specs_json(s: &NumberSpecs) -> Value {
    let mut m = Map::new();
    for (k, v) in [("min", s.min), ("max", s.max), ("step", s.step)] {
        if let Some(v) = v {
            m.insert(k.into(), num(v));
        }
    }
    if let Some(u) = &s.unit {
        m.insert("unit".into(), Value::String(u.clone()));
    }
    if let Some(u) = &s.unit_name {
        m.insert("unitName".into(), Value::String(u.clone()));
    }
    Value::Object(m)
}

fn data_type_json(dt: &DataType) -> Value {
    let specs = match dt {
        DataType::Int(s) | DataType::Float(s) | DataType::Double(s) => number_specs_json(s),
        DataType::Text { length } => json!({ "length": length.to_string() }),
        DataType::Enum { items } => Value::Object(
            items
                .iter()
                .map(|i| (i.key.clone(), Value::String(i.name.clone())))
                .collect(),
        ),
        DataType::Bool {
            false_name,
            true_name,
        } => json!({ "0": false_name, "1": true_name }),
        DataType::Date => json!({}),
        DataType::Struct { members } => Value::Array(params_json(members)),
        DataType::Array { size, item } => {
            json!({ "size": size.to_string(), "item": data_type_json(item) })
        }
    };
    json!({ "type": dt.type_name(), "specs": specs })
}

// ---- parsing ----

fn parse_tsl(v: &Value, errors: &mut Errors) -> Tsl {
    let mut tsl = Tsl::default();
    let Some(obj) = v.as_object() else {
        errors.push("", TslErrorKind::WrongJsonType("an object"));
        return tsl;
    };
    tsl.schema = opt_string(obj, "schema", "schema", errors);
    if let Some(profile) = obj.get("profile") {
        match profile.as_object() {
            Some(p) => tsl.product_key = opt_string(p, "productKey", "profile.productKey", errors),
            None => errors.push("profile", TslErrorKind::WrongJsonType("an object")),
        }
    }
    for (i, p) in array(obj, "properties", "properties", errors)
        .iter()
        .enumerate()
    {
        if let Some(p) = parse_property(p, &format!("properties[{i}]"), errors) {
            tsl.properties.push(p);
        }
    }
    for (i, s) in array(obj, "services", "services", errors)
        .iter()
        .enumerate()
    {
        let path = format!("services[{i}]");
        if is_implicit(s, &["set", "get"]) {
            continue;
        }
        if let Some(s) = parse_service(s, &path, errors) {
            tsl.services.push(s);
        }
    }
    for (i, e) in array(obj, "events", "events", errors).iter().enumerate() {
        let path = format!("events[{i}]");
        if is_implicit(e, &["post"]) {
            continue;
        }
        if let Some(e) = parse_event(e, &path, errors) {
            tsl.events.push(e);
        }
    }
    tsl
}

fn is_implicit(v: &Value, ids: &[&str]) -> bool {
    v.get("identifier")
        .and_then(Value::as_str)
        .is_some_and(|id| ids.contains(&id))
}

/// A missing or null array is empty.
fn array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Errors,
) -> &'a [Value] {
    match obj.get(key) {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(_) => {
            errors.push(path, TslErrorKind::WrongJsonType("an array"));
            &[]
        }
    }
}

fn object<'a>(v: &'a Value, path: &str, errors: &mut Errors) -> Option<&'a Map<String, Value>> {
    let o = v.as_object();
    if o.is_none() {
        errors.push(path, TslErrorKind::WrongJsonType("an object"));
    }
    o
}

fn opt_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Errors,
) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(path, TslErrorKind::WrongJsonType("a string"));
            None
        }
    }
}

fn req_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Errors,
) -> Option<String> {
    let full = format!("{path}.{key}");
    let s = opt_string(obj, key, &full, errors);
    if s.is_none() && matches!(obj.get(key), None | Some(Value::Null)) {
        errors.push(full, TslErrorKind::Missing);
    }
    s
}

/// `name` defaults to the identifier when absent.
fn name(obj: &Map<String, Value>, path: &str, identifier: &str, errors: &mut Errors) -> String {
    opt_string(obj, "name", &format!("{path}.name"), errors)
        .unwrap_or_else(|| identifier.to_owned())
}

fn keyword<T>(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    what: &'static str,
    table: &[(&str, T)],
    errors: &mut Errors,
) -> Option<T>
where
    T: Copy,
{
    let full = format!("{path}.{key}");
    let s = req_string(obj, key, path, errors)?;
    match table.iter().find(|(k, _)| *k == s) {
        Some((_, v)) => Some(*v),
        None => {
            errors.push(full, TslErrorKind::UnknownKeyword { what, value: s });
            None
        }
    }
}

fn parse_property(v: &Value, path: &str, errors: &mut Errors) -> Option<Property> {
    let obj = object(v, path, errors)?;
    let identifier = req_string(obj, "identifier", path, errors);
    let access_mode = keyword(
        obj,
        "accessMode",
        path,
        "access mode",
        &[("r", AccessMode::Read), ("rw", AccessMode::ReadWrite)],
        errors,
    );
    let required = match obj.get("required") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(
                format!("{path}.required"),
                TslErrorKind::WrongJsonType("a boolean"),
            );
            false
        }
    };
    let data_type = req_data_type(obj, path, errors);
    let identifier = identifier?;
    Some(Property {
        name: name(obj, path, &identifier, errors),
        identifier,
        access_mode: access_mode?,
        required,
        data_type: data_type?,
    })
}

fn parse_service(v: &Value, path: &str, errors: &mut Errors) -> Option<Service> {
    let obj = object(v, path, errors)?;
    let identifier = req_string(obj, "identifier", path, errors);
    let call_type = keyword(
        obj,
        "callType",
        path,
        "call type",
        &[("sync", CallType::Sync), ("async", CallType::Async)],
        errors,
    );
    let input_data = parse_params(obj, "inputData", path, errors);
    let output_data = parse_params(obj, "outputData", path, errors);
    let identifier = identifier?;
    Some(Service {
        name: name(obj, path, &identifier, errors),
        identifier,
        call_type: call_type?,
        input_data,
        output_data,
    })
}

fn parse_event(v: &Value, path: &str, errors: &mut Errors) -> Option<Event> {
    let obj = object(v, path, errors)?;
    let identifier = req_string(obj, "identifier", path, errors);
    let event_type = keyword(
        obj,
        "type",
        path,
        "event type",
        &[
            ("info", EventType::Info),
            ("alert", EventType::Alert),
            ("error", EventType::Error),
        ],
        errors,
    );
    let output_data = parse_params(obj, "outputData", path, errors);
    let identifier = identifier?;
    Some(Event {
        name: name(obj, path, &identifier, errors),
        identifier,
        event_type: event_type?,
        output_data,
    })
}

fn parse_params(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Errors,
) -> Vec<Param> {
    let list_path = format!("{path}.{key}");
    array(obj, key, &list_path, errors)
        .iter()
        .enumerate()
        .filter_map(|(i, p)| parse_param(p, &format!("{list_path}[{i}]"), errors))
        .collect()
}

fn parse_param(v: &Value, path: &str, errors: &mut Errors) -> Option<Param> {
    let obj = object(v, path, errors)?;
    let identifier = req_string(obj, "identifier", path, errors);
    let data_type = req_data_type(obj, path, errors);
    let identifier = identifier?;
    Some(Param {
        name: name(obj, path, &identifier, errors),
        identifier,
        data_type: data_type?,
    })
}

fn req_data_type(obj: &Map<String, Value>, path: &str, errors: &mut Errors) -> Option<DataType> {
    let dt_path = format!("{path}.dataType");
    match obj.get("dataType") {
        None | Some(Value::Null) => {
            errors.push(dt_path, TslErrorKind::Missing);
            None
        }
        Some(v) => parse_data_type(v, &dt_path, errors),
    }
}

fn parse_data_type(v: &Value, path: &str, errors: &mut Errors) -> Option<DataType> {
    let obj = object(v, path, errors)?;
    let ty = req_string(obj, "type", path, errors)?;
    let specs_path = format!("{path}.specs");
    let specs = obj.get("specs").filter(|s| !s.is_null());
    let empty = Map::new();
    let specs_obj = |errors: &mut Errors| -> Option<&Map<String, Value>> {
        match specs {
            None => Some(&empty),
            Some(s) => object(s, &specs_path, errors),
        }
    };
    match ty.as_str() {
        "int" | "float" | "double" => {
            let s = specs_obj(errors)?;
            let mut n = NumberSpecs::default();
            let mut ok = true;
            for (key, slot) in [
                ("min", &mut n.min),
                ("max", &mut n.max),
                ("step", &mut n.step),
            ] {
                match s.get(key) {
                    None | Some(Value::Null) => {}
                    Some(v) => match spec_number(v) {
                        Some(x) => *slot = Some(x),
                        None => {
                            ok = false;
                            errors.push(
                                format!("{specs_path}.{key}"),
                                TslErrorKind::NotANumber(spec_text(v)),
                            );
                        }
                    },
                }
            }
            n.unit = opt_string(s, "unit", &format!("{specs_path}.unit"), errors);
            n.unit_name = opt_string(s, "unitName", &format!("{specs_path}.unitName"), errors);
            if !ok {
                return None;
            }
            Some(match ty.as_str() {
                "int" => DataType::Int(n),
                "float" => DataType::Float(n),
                _ => DataType::Double(n),
            })
        }
        "text" => {
            let s = specs_obj(errors)?;
            let length = match s.get("length") {
                None | Some(Value::Null) => u64::from(crate::MAX_TEXT_LENGTH),
                Some(v) => spec_u64(v, &format!("{specs_path}.length"), errors)?,
            };
            Some(DataType::Text {
                length: u32::try_from(length).unwrap_or(u32::MAX),
            })
        }
        "enum" => {
            let s = specs_obj(errors)?;
            let mut items = Vec::with_capacity(s.len());
            for (k, v) in s {
                match v.as_str() {
                    Some(name) => items.push(EnumItem {
                        key: k.clone(),
                        name: name.to_owned(),
                    }),
                    None => errors.push(
                        format!("{specs_path}.{k}"),
                        TslErrorKind::WrongJsonType("a string"),
                    ),
                }
            }
            Some(DataType::Enum { items })
        }
        "bool" => {
            let s = specs_obj(errors)?;
            let names = (s.len() == 2)
                .then(|| Some((s.get("0")?.as_str()?, s.get("1")?.as_str()?)))
                .flatten();
            match names {
                Some((f, t)) => Some(DataType::Bool {
                    false_name: f.to_owned(),
                    true_name: t.to_owned(),
                }),
                None => {
                    errors.push(specs_path, TslErrorKind::BoolKeys);
                    None
                }
            }
        }
        "date" => Some(DataType::Date),
        "struct" => {
            let members = match specs {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| parse_param(m, &format!("{specs_path}[{i}]"), errors))
                    .collect(),
                Some(_) => {
                    errors.push(specs_path, TslErrorKind::WrongJsonType("an array"));
                    return None;
                }
            };
            Some(DataType::Struct { members })
        }
        "array" => {
            let s = specs_obj(errors)?;
            let size = match s.get("size") {
                None | Some(Value::Null) => {
                    errors.push(format!("{specs_path}.size"), TslErrorKind::Missing);
                    None
                }
                Some(v) => spec_u64(v, &format!("{specs_path}.size"), errors),
            };
            let item = match s.get("item") {
                None | Some(Value::Null) => {
                    errors.push(format!("{specs_path}.item"), TslErrorKind::Missing);
                    None
                }
                Some(v) => parse_data_type(v, &format!("{specs_path}.item"), errors),
            };
            Some(DataType::Array {
                size: u32::try_from(size?).unwrap_or(u32::MAX),
                item: Box::new(item?),
            })
        }
        _ => {
            errors.push(
                format!("{path}.type"),
                TslErrorKind::UnknownKeyword {
                    what: "data type",
                    value: ty,
                },
            );
            None
        }
    }
}

/// A number in specs: a string (the reference writes them so) or a JSON number.
fn spec_number(v: &Value) -> Option<f64> {
    let x = match v {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

fn spec_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn spec_u64(v: &Value, path: &str, errors: &mut Errors) -> Option<u64> {
    let n = match v {
        Value::String(s) => s.trim().parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    if n.is_none() {
        errors.push(path, TslErrorKind::NotANumber(spec_text(v)));
    }
    n
}
