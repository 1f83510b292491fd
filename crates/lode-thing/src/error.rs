//! Errors of the thing-model runtime.

use std::time::Duration;

use lode_history::HistoryError;
use lode_registry::RegistryError;
use lode_script::ScriptError;
use lode_tsl::{TslErrors, ValueError};

/// Why a thing-model operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThingError {
    #[error("product {0} not found")]
    ProductNotFound(String),
    #[error("device {0} not found")]
    DeviceNotFound(String),
    #[error("device {0} is not online")]
    DeviceOffline(String),
    #[error("product {0} has no published thing model")]
    NoThingModel(String),
    #[error("product {0} has no published data parsing script")]
    NoScript(String),
    #[error("invalid thing model: {0}")]
    InvalidTsl(TslErrors),
    #[error("invalid thing model JSON: {0}")]
    TslNotJson(String),
    #[error("service {0:?} is not in the thing model")]
    UnknownService(String),
    #[error("invalid parameters: {}", describe(.0))]
    InvalidParams(Vec<(String, ValueError)>),
    #[error("invalid topic {0}")]
    InvalidTopic(String),
    #[error("the device is online but not subscribed to {0}")]
    NotSubscribed(String),
    #[error("the device did not answer within {0:?}")]
    Timeout(Duration),
    #[error("timeout {0:?} is outside 1 s..=60 s")]
    InvalidTimeout(Duration),
    #[error("data parsing script: {0}")]
    Script(#[from] ScriptError),
    #[error("the data parsing script made an invalid message: {0}")]
    ScriptOutput(String),
    #[error("the platform is shutting down")]
    ShuttingDown,
    #[error("could not send to the device: {0}")]
    Publish(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    History(#[from] HistoryError),
}

fn describe(errors: &[(String, ValueError)]) -> String {
    errors
        .iter()
        .map(|(id, e)| format!("{id}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ThingError {
    /// A stable, API-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            ThingError::ProductNotFound(_) => "ProductNotFound",
            ThingError::DeviceNotFound(_) => "DeviceNotFound",
            ThingError::DeviceOffline(_) => "DeviceOffline",
            ThingError::NoThingModel(_) => "ThingModelNotPublished",
            ThingError::NoScript(_) => "ScriptNotPublished",
            ThingError::InvalidTsl(_) | ThingError::TslNotJson(_) => "InvalidThingModel",
            ThingError::UnknownService(_) => "ServiceNotFound",
            ThingError::InvalidParams(_) => "InvalidParameter",
            ThingError::Timeout(_) => "Timeout",
            ThingError::InvalidTopic(_) => "InvalidParameter",
            ThingError::NotSubscribed(_) => "DeviceNotSubscribed",
            ThingError::InvalidTimeout(_) => "InvalidParameter",
            ThingError::Script(_) => "ScriptError",
            ThingError::ScriptOutput(_) => "ScriptError",
            ThingError::ShuttingDown => "ServiceUnavailable",
            ThingError::Publish(_) => "PublishFailed",
            ThingError::Registry(e) => e.code(),
            ThingError::History(HistoryError::VersionConflict { .. }) => "VersionConflict",
            ThingError::History(HistoryError::InvalidCursor) => "InvalidCursor",
            ThingError::History(HistoryError::InvalidQuery(_) | HistoryError::InvalidRecord(_)) => {
                "InvalidParameter"
            }
            ThingError::History(HistoryError::NotFound) => "NotFound",
            ThingError::History(_) => "Backend",
        }
    }
}
