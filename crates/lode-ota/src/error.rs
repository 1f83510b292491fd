//! `OtaError`: every failure of the OTA service.

use lode_registry::RegistryError;

/// Every failure of an OTA operation.
#[derive(Debug, thiserror::Error)]
pub enum OtaError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("firmware {0} not found")]
    FirmwareNotFound(String),
    #[error("OTA job {0} not found")]
    JobNotFound(String),
    #[error("invalid {field}: {reason}")]
    InvalidParameter { field: &'static str, reason: String },
    #[error("job {id} is {state}: {action} is not possible")]
    InvalidJobState {
        id: String,
        state: String,
        action: &'static str,
    },
    #[error("firmware storage failed: {0}")]
    Storage(#[from] std::io::Error),
    #[error("device group lookup failed: {0}")]
    Groups(String),
}

impl OtaError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> OtaError {
        OtaError::InvalidParameter {
            field,
            reason: reason.into(),
        }
    }
}
