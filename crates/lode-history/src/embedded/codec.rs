//! Values of the embedded backend: postcard records, JSON values as text.
//!
//! Every record starts with a format byte so that later versions can read
//! older data.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::HistoryError;
use crate::error::corrupt;

const FORMAT_V1: u8 = 1;

pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, HistoryError> {
    postcard::to_extend(record, vec![FORMAT_V1])
        .map_err(|e| corrupt(format!("encoding a record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HistoryError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt(format!("decoding a record: {e}")))
        }
        Some((format, _)) => Err(corrupt(format!("unknown record format {format}"))),
        None => Err(corrupt("empty record")),
    }
}

pub(crate) fn json_text(value: &Value) -> String {
    value.to_string()
}

pub(crate) fn json_value(text: &str) -> Result<Value, HistoryError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("stored JSON: {e}")))
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredPoint {
    pub(crate) value: String,
    pub(crate) server_time: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredEvent {
    pub(crate) identifier: String,
    pub(crate) event_type: String,
    pub(crate) output: String,
    pub(crate) server_time: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredCall {
    pub(crate) call_id: String,
    pub(crate) identifier: String,
    pub(crate) call_type: String,
    pub(crate) input: String,
    pub(crate) status: String,
    pub(crate) code: Option<i64>,
    pub(crate) output: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) finished_at: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredLog {
    pub(crate) up: bool,
    pub(crate) topic: String,
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
    pub(crate) payload_size: u32,
    pub(crate) code: i64,
    pub(crate) step: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) trace_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredLatest {
    pub(crate) value: String,
    pub(crate) device_time: i64,
    pub(crate) server_time: i64,
}

/// A desired value; `value` is `None` once deleted, keeping the version.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredDesired {
    pub(crate) value: Option<String>,
    pub(crate) version: u64,
    pub(crate) time: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_errors() {
        let log = StoredLog {
            up: true,
            topic: "/sys/pk/dn/thing/event/property/post".into(),
            payload: vec![0, 255, 7],
            payload_size: 4096,
            code: 6_300,
            step: Some("tsl".into()),
            message: None,
            trace_id: "t1".into(),
        };
        let bytes = encode(&log).ok().unwrap_or_default();
        let back: Option<StoredLog> = decode(&bytes).ok();
        assert_eq!(
            back.map(|l| (l.payload, l.payload_size, l.step)),
            Some((vec![0, 255, 7], 4096, Some("tsl".into())))
        );
        assert!(decode::<StoredLog>(&[]).is_err());
        assert!(decode::<StoredLog>(&[9, 1]).is_err());
        assert!(decode::<StoredLog>(&[FORMAT_V1, 1]).is_err());
    }

    #[test]
    fn json_text_round_trips() {
        let value = serde_json::json!({"a": [1, 2.5, "x", null], "b": {"c": true}});
        assert_eq!(json_value(&json_text(&value)).ok(), Some(value));
        assert!(json_value("{").is_err());
    }
}
