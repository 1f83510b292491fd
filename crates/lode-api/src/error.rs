//! `ApiError`: every failure of a management API call, and its one mapping to
//! an HTTP status and a stable code.
//!
//! Error bodies are `{"code": "...", "message": "...", "requestId": "..."}`;
//! the request id is filled in by the outermost middleware
//! ([`crate::request_id`]), which sees every response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lode_registry::RegistryError;
use serde::Serialize;
use utoipa::ToSchema;

/// Every failure of a management API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request is not signed: header {0} is missing")]
    MissingSignature(&'static str),
    #[error("the request time is not within the accepted window: {0}")]
    RequestExpired(String),
    #[error("this nonce was already used")]
    RequestReplayed,
    #[error("access key {0} does not exist")]
    UnknownAccessKey(String),
    #[error("access key {0} is disabled")]
    AccessKeyDisabled(String),
    #[error("the signature does not match the request; the canonical request was {0:?}")]
    SignatureDoesNotMatch(String),
    #[error("the bearer token is unknown or expired")]
    InvalidToken,
    #[error("too many requests ({0}); retry later")]
    Throttling(&'static str),
    #[error("invalid {field}: {reason}")]
    InvalidParameter { field: String, reason: String },
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("topic {0:?} does not belong to a product of this account")]
    TopicNotAllowed(String),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// An `InvalidParameter` error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::InvalidParameter {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The HTTP status and the stable code of this error: the one place where
    /// both are decided.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            MissingSignature(_) => (StatusCode::UNAUTHORIZED, "MissingSignature"),
            RequestExpired(_) => (StatusCode::FORBIDDEN, "RequestExpired"),
            RequestReplayed => (StatusCode::FORBIDDEN, "RequestReplayed"),
            UnknownAccessKey(_) => (StatusCode::UNAUTHORIZED, "AccessKeyNotFound"),
            AccessKeyDisabled(_) => (StatusCode::FORBIDDEN, "AccessKeyDisabled"),
            SignatureDoesNotMatch(_) => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
            InvalidToken => (StatusCode::UNAUTHORIZED, "InvalidToken"),
            Throttling(_) => (StatusCode::TOO_MANY_REQUESTS, "Throttling"),
            InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "InvalidParameter"),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
            JobNotFound(_) => (StatusCode::NOT_FOUND, "JobNotFound"),
            TopicNotAllowed(_) => (StatusCode::FORBIDDEN, "TopicNotAllowed"),
            NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            Registry(e) => (registry_status(e), e.code()),
        }
    }
}

fn registry_status(e: &RegistryError) -> StatusCode {
    use RegistryError::*;
    match e {
        AccountNotFound(_)
        | AccessKeyNotFound(_)
        | ProductNotFound(_)
        | DeviceNotFound(_)
        | TopicCategoryNotFound { .. } => StatusCode::NOT_FOUND,
        AccountNotEmpty(_)
        | ProductNotEmpty { .. }
        | DeviceAlreadyExists { .. }
        | DeviceAlreadyRegistered(_)
        | TopicCategoryAlreadyExists { .. }
        | DeviceDisabled(_) => StatusCode::CONFLICT,
        Corrupt(_) | Migration { .. } | Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable error code, e.g. `ProductNotFound`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Id of the request, also in the `X-Lode-Request-Id` response header.
    pub request_id: String,
}

/// What an error response carries until the request id is known.
#[derive(Debug, Clone)]
pub(crate) struct PendingError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            // Backend details stay in the log.
            ApiError::Internal(_) | ApiError::Registry(RegistryError::Backend(_)) => {
                tracing::error!(error = %self, "management API request failed");
                "internal error".to_owned()
            }
            ApiError::Registry(RegistryError::Corrupt(_) | RegistryError::Migration { .. }) => {
                tracing::error!(error = %self, "management API request failed");
                "internal error".to_owned()
            }
            _ => self.to_string(),
        };
        let mut resp = status.into_response();
        resp.extensions_mut().insert(PendingError { code, message });
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
