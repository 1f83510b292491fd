//! Alink JSON envelopes (section 6 of the Alink reference): pure parsing and building.

use serde_json::{Map, Value, json};

/// Longest request id accepted (the reference uses decimal strings).
const MAX_ID_LEN: usize = 64;

/// A request: an uplink from a device, or what a script made of raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: String,
    pub method: Option<String>,
    pub params: Value,
    /// `sys.ack`: `false` when the device asked for no reply.
    pub ack: bool,
}

/// A device's answer to a downlink request.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReply {
    pub id: String,
    pub code: i64,
    pub data: Value,
    pub message: Option<String>,
}

/// Why a payload is not an Alink envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is not a JSON object")]
    NotAnObject,
    #[error("missing or invalid \"id\"")]
    BadId,
    #[error("missing or invalid \"code\"")]
    BadCode,
}

impl EnvelopeError {
    /// The Alink code for the `_reply` (460: invalid parameter format).
    pub fn code(&self) -> u32 {
        460
    }
}

fn object(payload: &[u8]) -> Result<Map<String, Value>, EnvelopeError> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(EnvelopeError::NotAnObject),
        Err(e) => Err(EnvelopeError::NotJson(e.to_string())),
    }
}

fn id_of(map: &Map<String, Value>) -> Result<String, EnvelopeError> {
    let id = match map.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return Err(EnvelopeError::BadId),
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(EnvelopeError::BadId);
    }
    Ok(id)
}

/// The `id` of a payload when it has a usable one, to address an error reply.
pub fn id_hint(payload: &[u8]) -> String {
    object(payload)
        .ok()
        .and_then(|m| id_of(&m).ok())
        .unwrap_or_default()
}

/// Parses a request envelope. `params` may be missing (an empty object) or the string
/// `"{}"` that one C SDK sends; a string holding JSON is decoded.
pub fn parse_request(payload: &[u8]) -> Result<Request, EnvelopeError> {
    let map = object(payload)?;
    request_from_map(map)
}

/// Reads a request from a JSON value (the output of a parsing script).
pub fn request_from_value(value: Value) -> Result<Request, EnvelopeError> {
    match value {
        Value::Object(map) => request_from_map(map),
        _ => Err(EnvelopeError::NotAnObject),
    }
}

fn request_from_map(mut map: Map<String, Value>) -> Result<Request, EnvelopeError> {
    let id = id_of(&map)?;
    let method = map.get("method").and_then(Value::as_str).map(str::to_owned);
    let params = match map.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        Some(v) => v,
    };
    let ack = !matches!(
        map.get("sys").and_then(|s| s.get("ack")),
        Some(Value::Number(n)) if n.as_i64() == Some(0)
    );
    Ok(Request {
        id,
        method,
        params,
        ack,
    })
}

/// Parses a device's reply (`{"id","code","data"}`); `code` may be a number or a
/// string of digits.
pub fn parse_reply(payload: &[u8]) -> Result<DeviceReply, EnvelopeError> {
    reply_from_map(object(payload)?)
}

/// Reads a device reply from a JSON value (the output of a parsing script).
pub fn reply_from_value(value: Value) -> Result<DeviceReply, EnvelopeError> {
    match value {
        Value::Object(map) => reply_from_map(map),
        _ => Err(EnvelopeError::NotAnObject),
    }
}

fn reply_from_map(mut map: Map<String, Value>) -> Result<DeviceReply, EnvelopeError> {
    let id = id_of(&map)?;
    let code = match map.get("code") {
        Some(Value::Number(n)) => n.as_i64().ok_or(EnvelopeError::BadCode)?,
        Some(Value::String(s)) => s.parse().map_err(|_| EnvelopeError::BadCode)?,
        _ => return Err(EnvelopeError::BadCode),
    };
    let data = map.remove("data").unwrap_or(Value::Object(Map::new()));
    let message = map
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(DeviceReply {
        id,
        code,
        data,
        message,
    })
}

/// The platform's reply to a device request.
pub fn reply(id: &str, code: u32, data: Value, message: &str) -> Value {
    json!({"id": id, "code": code, "data": data, "message": message, "version": "1.0"})
}

/// A request from the platform to a device.
pub fn request(id: &str, method: &str, params: Value) -> Value {
    json!({"id": id, "version": "1.0", "params": params, "method": method})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_each_sdk_shape() {
        let r = parse_request(
            br#"{"id": "1", "version": "1.0", "params": {"Temp": 23.5}, "method": "thing.event.property.post"}"#,
        )
        .expect("valid");
        assert_eq!(r.id, "1");
        assert_eq!(r.method.as_deref(), Some("thing.event.property.post"));
        assert_eq!(r.params, json!({"Temp": 23.5}));
        assert!(r.ack);

        let r = parse_request(br#"{"id":"7","version":"1.0","params":{},"sys":{"ack":0}}"#)
            .expect("valid");
        assert!(!r.ack);
        assert_eq!(r.method, None);

        let r = parse_request(br#"{"id":12,"params":"{}"}"#).expect("valid");
        assert_eq!((r.id.as_str(), &r.params), ("12", &json!({})));
        let r = parse_request(br#"{"id":"3"}"#).expect("valid");
        assert_eq!(r.params, json!({}));
    }

    #[test]
    fn bad_requests() {
        assert!(matches!(
            parse_request(b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(parse_request(b"[1]"), Err(EnvelopeError::NotAnObject));
        assert_eq!(
            parse_request(br#"{"params":{}}"#),
            Err(EnvelopeError::BadId)
        );
        assert_eq!(parse_request(br#"{"id":""}"#), Err(EnvelopeError::BadId));
        assert_eq!(parse_request(br#"{"id":1.5}"#), Err(EnvelopeError::BadId));
        let long = format!(r#"{{"id":"{}"}}"#, "1".repeat(65));
        assert_eq!(parse_request(long.as_bytes()), Err(EnvelopeError::BadId));
        assert_eq!(id_hint(br#"{"id":"42","params":5}"#), "42");
        assert_eq!(id_hint(b"garbage"), "");
    }

    #[test]
    fn device_replies() {
        let r = parse_reply(br#"{"id": "1001", "code": 200, "data": {}}"#).expect("valid");
        assert_eq!((r.id.as_str(), r.code), ("1001", 200));
        let r = parse_reply(br#"{"id":"5","code":"460","data":{"x":1},"message":"bad"}"#)
            .expect("valid");
        assert_eq!(r.code, 460);
        assert_eq!(r.data, json!({"x": 1}));
        assert_eq!(r.message.as_deref(), Some("bad"));
        assert_eq!(
            parse_reply(br#"{"id":"5","data":{}}"#),
            Err(EnvelopeError::BadCode)
        );
        assert_eq!(
            parse_reply(br#"{"id":"5","code":"x"}"#),
            Err(EnvelopeError::BadCode)
        );
    }

    #[test]
    fn built_envelopes() {
        assert_eq!(
            reply("1", 200, json!({}), "success"),
            json!({"id":"1","code":200,"data":{},"message":"success","version":"1.0"})
        );
        assert_eq!(
            request("9", "thing.service.property.set", json!({"Switch":0})),
            json!({"id":"9","version":"1.0","params":{"Switch":0},"method":"thing.service.property.set"})
        );
    }
}
