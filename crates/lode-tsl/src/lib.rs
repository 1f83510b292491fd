//! The thing model (TSL) of a product: what its devices report, what can be called on them.
//!
//! Pure data and functions: no I/O, no async, no clock.
//!
//! - [`Tsl::from_json`] parses the reference platform's TSL JSON (the format served by
//!   `thing/dsltemplate/get` and read by the official SDK's `thing_setup`, Alink protocol
//!   reference section 11) and validates it, collecting every problem as a [`TslError`] that
//!   names its path (`properties[3].dataType.specs.max: 5 is below min 10`).
//! - [`Tsl::to_json`] exports it back, with the implicit `post` event and `set`/`get`
//!   services generated from the properties as the reference platform does.
//! - [`Tsl::validate`] checks a model built in code against the platform limits.
//! - [`Tsl::check_properties`], [`Tsl::check_event_output`] and [`Tsl::check_service_input`]
//!   check the values of property posts, events and service calls; every [`ValueError`]
//!   carries the Alink code that goes into the `_reply` (mapping in the [`value`] module).
//!
//! Numbers in `specs` are strings in the reference format (`"min": "0"`); the model keeps
//! them as `f64` (exact for every int32), so an export writes `"0.10"` back as `"0.1"`.

mod parse;
mod validate;
pub mod value;

#[cfg(test)]
mod tests;

pub use validate::{TslError, TslErrorKind, TslErrors, is_valid_identifier};
pub use value::{PropertyCheck, ValueError};

/// Features (properties + services + events, the implicit ones excluded) per product.
pub const MAX_FEATURES: usize = 200;
/// Members of a struct.
pub const MAX_STRUCT_MEMBERS: usize = 10;
/// Items of an enum.
pub const MAX_ENUM_ITEMS: usize = 25;
/// Bytes of a text value.
pub const MAX_TEXT_LENGTH: u32 = 2048;
/// Elements of an array.
pub const MAX_ARRAY_SIZE: u32 = 128;
/// Input or output parameters of a service.
pub const MAX_SERVICE_PARAMS: usize = 20;
/// Output parameters of an event.
pub const MAX_EVENT_PARAMS: usize = 50;
/// Properties in one property post.
pub const MAX_POST_PROPERTIES: usize = 200;
/// Identifier length in characters.
pub const MAX_IDENTIFIER_LEN: usize = 50;
/// The `schema` written by [`Tsl::to_json`] when the model has none.
pub const DEFAULT_SCHEMA: &str = "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json";

/// The thing model of one product. `properties`, `services` and `events` hold the
/// user-defined features only; the implicit `post` event and `set`/`get` services are derived.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tsl {
    pub schema: Option<String>,
    pub product_key: Option<String>,
    pub properties: Vec<Property>,
    pub services: Vec<Service>,
    pub events: Vec<Event>,
}

/// Whether the cloud may set a property (`rw`) or only read it (`r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    Read,
    ReadWrite,
}

impl AccessMode {
    /// The reference spelling: `r` or `rw`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Read => "r",
            AccessMode::ReadWrite => "rw",
        }
    }
}

/// A property: device state with a data type.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub identifier: String,
    pub name: String,
    pub access_mode: AccessMode,
    pub required: bool,
    pub data_type: DataType,
}

/// How a service is called: the caller waits for the reply (`sync`, RRPC) or not (`async`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    Sync,
    Async,
}

impl CallType {
    /// The reference spelling: `sync` or `async`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Sync => "sync",
            CallType::Async => "async",
        }
    }
}

/// A named, typed parameter: a service input or output, an event output, a struct member.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub identifier: String,
    pub name: String,
    pub data_type: DataType,
}

/// A service the cloud can call on a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub identifier: String,
    pub name: String,
    pub call_type: CallType,
    pub input_data: Vec<Param>,
    pub output_data: Vec<Param>,
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Info,
    Alert,
    Error,
}

impl EventType {
    /// The reference spelling: `info`, `alert` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Info => "info",
            EventType::Alert => "alert",
            EventType::Error => "error",
        }
    }
}

/// An event a device reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub identifier: String,
    pub name: String,
    pub event_type: EventType,
    pub output_data: Vec<Param>,
}

/// Specs of `int` (int32), `float` and `double`. All optional: the reference omits them for
/// array items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NumberSpecs {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub step: Option<f64>,
    pub unit: Option<String>,
    pub unit_name: Option<String>,
}

/// One item of an enum: key (an integer in decimal, as the reference writes it) and name.
#[derive(Debug, Clone, PartialEq)]
pub struct EnumItem {
    pub key: String,
    pub name: String,
}

/// The data type of a property or parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum DataType {
    /// `int`: a 32-bit signed integer.
    Int(NumberSpecs),
    Float(NumberSpecs),
    Double(NumberSpecs),
    /// `text`: a UTF-8 string of at most `length` bytes (at most 2,048).
    Text {
        length: u32,
    },
    /// `enum`: an integer key out of `items` (at most 25).
    Enum {
        items: Vec<EnumItem>,
    },
    /// `bool`: 0 or 1, with a name for each.
    Bool {
        false_name: String,
        true_name: String,
    },
    /// `date`: UTC milliseconds since the epoch, written as a string.
    Date,
    /// `struct`: at most 10 members; a member may not itself be a struct.
    Struct {
        members: Vec<Param>,
    },
    /// `array`: at most `size` (≤ 128) elements of `item` (int, float, double, text or struct).
    Array {
        size: u32,
        item: Box<DataType>,
    },
}

impl DataType {
    /// The reference type name: `int`, `float`, `double`, `text`, `enum`, `bool`, `date`,
    /// `struct`, `array`.
    pub fn type_name(&self) -> &'static str {
        match self {
            DataType::Int(_) => "int",
            DataType::Float(_) => "float",
            DataType::Double(_) => "double",
            DataType::Text { .. } => "text",
            DataType::Enum { .. } => "enum",
            DataType::Bool { .. } => "bool",
            DataType::Date => "date",
            DataType::Struct { .. } => "struct",
            DataType::Array { .. } => "array",
        }
    }
}

impl Tsl {
    /// The property named `identifier`.
    pub fn property(&self, identifier: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.identifier == identifier)
    }

    /// The user-defined service named `identifier`.
    pub fn service(&self, identifier: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.identifier == identifier)
    }

    /// The user-defined event named `identifier`.
    pub fn event(&self, identifier: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.identifier == identifier)
    }

    /// Number of features counted against [`MAX_FEATURES`].
    pub fn feature_count(&self) -> usize {
        self.properties.len() + self.services.len() + self.events.len()
    }
}
