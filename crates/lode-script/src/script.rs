//! A product's script as the engine receives it, and the calls that can be made of it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use serde_json::Value;

/// A data parsing script: the caller's id for it (typically the ProductKey) and its source.
///
/// Cheap to clone. Keep one `Script` per product and pass it on every call: the engine caches
/// the compiled script per worker under its id, and recognises an unchanged source in O(1)
/// when the same `Script` (or a clone) comes back. A new source under the same id replaces
/// the cached one on the next call.
#[derive(Debug, Clone)]
pub struct Script {
    id: Arc<str>,
    source: Arc<str>,
    hash: u64,
}

impl Script {
    /// A script with the given id and source.
    pub fn new(id: impl Into<Arc<str>>, source: impl Into<Arc<str>>) -> Self {
        let source = source.into();
        Self {
            id: id.into(),
            hash: content_hash(&source),
            source,
        }
    }

    /// The caller's id of the script.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The JavaScript source.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// True when a cached source (with its hash) is this script's source.
    pub(crate) fn same_source(&self, hash: u64, source: &Arc<str>) -> bool {
        self.hash == hash && (Arc::ptr_eq(&self.source, source) || *self.source == **source)
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn source_arc(&self) -> &Arc<str> {
        &self.source
    }
}

fn content_hash(source: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    source.hash(&mut hasher);
    hasher.finish()
}

/// One call of a script function, with its input.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `rawDataToProtocol(bytes)`: raw bytes from a device to Alink JSON.
    RawToProtocol {
        /// The raw payload.
        raw: Vec<u8>,
    },
    /// `protocolToRawData(json)`: an Alink JSON message to raw bytes for a device.
    ProtocolToRaw {
        /// The Alink JSON message.
        message: Value,
    },
    /// `transformPayload(topic, rawData)`: a custom-topic payload to JSON.
    TransformPayload {
        /// The topic the payload came on.
        topic: String,
        /// The raw payload.
        raw: Vec<u8>,
    },
}

impl Call {
    /// The name of the script function this call runs.
    pub fn function(&self) -> &'static str {
        match self {
            Self::RawToProtocol { .. } => RAW_TO_PROTOCOL,
            Self::ProtocolToRaw { .. } => PROTOCOL_TO_RAW,
            Self::TransformPayload { .. } => TRANSFORM_PAYLOAD,
        }
    }
}

/// What a successful call returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The JSON object returned by `rawDataToProtocol` or `transformPayload`.
    Json(Value),
    /// The bytes returned by `protocolToRawData`.
    Raw(Vec<u8>),
}

/// Name of the uplink function: raw bytes to Alink JSON.
pub const RAW_TO_PROTOCOL: &str = "rawDataToProtocol";
/// Name of the downlink function: Alink JSON to raw bytes.
pub const PROTOCOL_TO_RAW: &str = "protocolToRawData";
/// Name of the optional custom-topic function.
pub const TRANSFORM_PAYLOAD: &str = "transformPayload";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_source_compares_content_not_identity() {
        let a = Script::new("pk", "function f() {}");
        let b = Script::new("pk", String::from("function f() {}"));
        let c = Script::new("pk", "function g() {}");
        assert!(a.same_source(b.hash(), b.source_arc()));
        assert!(a.same_source(a.hash(), a.source_arc()));
        assert!(!a.same_source(c.hash(), c.source_arc()));
        assert_eq!(a.id(), "pk");
        assert_eq!(a.source(), "function f() {}");
    }

    #[test]
    fn calls_name_their_function() {
        assert_eq!(
            Call::RawToProtocol { raw: vec![] }.function(),
            "rawDataToProtocol"
        );
        assert_eq!(
            Call::ProtocolToRaw {
                message: Value::Null
            }
            .function(),
            "protocolToRawData"
        );
        assert_eq!(
            Call::TransformPayload {
                topic: "/pk/dn/user/up".into(),
                raw: vec![]
            }
            .function(),
            "transformPayload"
        );
    }
}
