//! `ApiError`: every failure of a management API call, and its one mapping to
//! an HTTP status and a stable code.
//!
//! Error bodies are `{"code": "...", "message": "...", "requestId": "..."}`,
//! with an `errors` list when the failure has several parts (every error of a
//! thing model, every refused parameter, the position of a script error);
//! the request id is filled in by the outermost middleware
//! ([`crate::request_id`]), which sees every response.
//!
//! Thing-model failures keep the code of [`ThingError::code`] and get these
//! statuses: not found (product, device, service, desired value) 404; the
//! device not connected (`DeviceOffline`), no published model or script, a
//! desired-value version conflict 409 (the request is sound, the device's or
//! product's state refuses it; 503 would tell clients the platform itself is
//! down); the device did not answer a sync call in time (`Timeout`) 504;
//! invalid thing models, parameters, cursors and scripts 400; the platform
//! shutting down 503; storage and engine failures 500 with the details in
//! the log only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lode_history::HistoryError;
use lode_registry::RegistryError;
use lode_script::ScriptError;
use lode_thing::ThingError;
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
    #[error("the thing model is not enabled on this server")]
    ThingUnavailable,
    #[error("service call {0} not found")]
    CallNotFound(String),
    #[error(transparent)]
    Thing(#[from] ThingError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A refusal with its own status and stable code (limits and states of device services).
    #[error("{message}")]
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
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
            ThingUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            CallNotFound(_) => (StatusCode::NOT_FOUND, "ServiceCallNotFound"),
            Thing(e) => thing_status_and_code(e),
            Refused { status, code, .. } => (*status, code),
        }
    }

    /// The message clients see: the error itself, or "internal error" for
    /// failures whose details belong in the server log (which this logs).
    pub(crate) fn public_message(&self) -> String {
        let internal = match self {
            ApiError::Internal(_) => true,
            ApiError::Registry(e) => registry_status(e) == StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Thing(e) => thing_status_and_code(e).0 == StatusCode::INTERNAL_SERVER_ERROR,
            _ => false,
        };
        if internal {
            tracing::error!(error = %self, "management API request failed");
            "internal error".to_owned()
        } else {
            self.to_string()
        }
    }

    /// The parts of a failure with several: every error of an invalid thing
    /// model (by path), every refused parameter (by identifier), the position of
    /// a script error.
    pub(crate) fn details(&self) -> Option<Vec<ErrorDetail>> {
        let ApiError::Thing(e) = self else {
            return None;
        };
        match e {
            ThingError::InvalidTsl(errors) => Some(
                errors
                    .0
                    .iter()
                    .map(|e| ErrorDetail::at(e.path.clone(), e.kind.to_string()))
                    .collect(),
            ),
            ThingError::InvalidParams(refused) => Some(
                refused
                    .iter()
                    .map(|(id, e)| ErrorDetail::at(id.clone(), e.to_string()))
                    .collect(),
            ),
            ThingError::Script(e) if e.line().is_some() => Some(vec![ErrorDetail {
                path: "source".to_owned(),
                message: e.to_string(),
                line: e.line(),
                column: e.column(),
            }]),
            _ => None,
        }
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        ApiError::Thing(ThingError::History(e))
    }
}

/// Status and code of a thing-model failure (the table is in the module docs).
fn thing_status_and_code(e: &ThingError) -> (StatusCode, &'static str) {
    use ThingError as T;
    let status = match e {
        T::ProductNotFound(_)
        | T::DeviceNotFound(_)
        | T::UnknownService(_)
        | T::History(HistoryError::NotFound) => StatusCode::NOT_FOUND,
        T::DeviceOffline(_)
        | T::NoThingModel(_)
        | T::NoScript(_)
        | T::History(HistoryError::VersionConflict { .. }) => StatusCode::CONFLICT,
        T::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        T::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        T::Registry(r) => registry_status(r),
        T::Script(ScriptError::Internal(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        T::InvalidTsl(_)
        | T::TslNotJson(_)
        | T::InvalidParams(_)
        | T::InvalidTimeout(_)
        | T::Script(_)
        | T::ScriptOutput(_)
        | T::History(
            HistoryError::InvalidCursor
            | HistoryError::InvalidQuery(_)
            | HistoryError::InvalidRecord(_),
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let code = match e {
        T::Registry(r) => r.code(),
        T::Publish(_) => e.code(),
        _ if status == StatusCode::INTERNAL_SERVER_ERROR => "InternalError",
        _ => e.code(),
    };
    (status, code)
}

fn registry_status(e: &RegistryError) -> StatusCode {
    use RegistryError::*;
    match e {
        AccountNotFound(_)
        | AccessKeyNotFound(_)
        | ProductNotFound(_)
        | DeviceNotFound(_)
        | RuleNotFound(_)
        | GroupNotFound(_)
        | DestinationNotFound(_)
        | TopicCategoryNotFound { .. } => StatusCode::NOT_FOUND,
        AccountNotEmpty(_)
        | ProductNotEmpty { .. }
        | DeviceAlreadyExists { .. }
        | DeviceAlreadyRegistered(_)
        | TopicCategoryAlreadyExists { .. }
        | DestinationAlreadyExists(_)
        | GroupAlreadyExists(_)
        | GroupHasSubgroups(_)
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
    /// The parts of a failure with several (for example every error of a thing model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ErrorDetail>>,
}

/// One part of an error: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Where: a path in the thing model (`properties[0].dataType.specs.max`), a
    /// property or parameter identifier, or `source` for a script.
    pub path: String,
    pub message: String,
    /// Line in the script, 1-based.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Column in the script, 1-based.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl ErrorDetail {
    fn at(path: String, message: String) -> ErrorDetail {
        ErrorDetail {
            path,
            message,
            line: None,
            column: None,
        }
    }
}

/// What an error response carries until the request id is known.
#[derive(Debug, Clone)]
pub(crate) struct PendingError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Vec<ErrorDetail>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = self.public_message();
        let details = self.details();
        let mut resp = status.into_response();
        resp.extensions_mut().insert(PendingError {
            code,
            message,
            details,
        });
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lode_tsl::{TslError, TslErrorKind, TslErrors, ValueError};

    use super::*;

    fn thing(e: ThingError) -> (u16, &'static str) {
        let (status, code) = ApiError::Thing(e).status_and_code();
        (status.as_u16(), code)
    }

    #[test]
    fn thing_errors_map_to_statuses_and_codes() {
        let cases = [
            (
                ThingError::ProductNotFound("pk".into()),
                404,
                "ProductNotFound",
            ),
            (
                ThingError::DeviceNotFound("pk/dn".into()),
                404,
                "DeviceNotFound",
            ),
            (
                ThingError::UnknownService("x".into()),
                404,
                "ServiceNotFound",
            ),
            (
                ThingError::DeviceOffline("pk/dn".into()),
                409,
                "DeviceOffline",
            ),
            (ThingError::Timeout(Duration::from_secs(1)), 504, "Timeout"),
            (
                ThingError::InvalidTimeout(Duration::from_secs(90)),
                400,
                "InvalidParameter",
            ),
            (ThingError::ShuttingDown, 503, "ServiceUnavailable"),
            (
                ThingError::History(HistoryError::VersionConflict { current: 3 }),
                409,
                "VersionConflict",
            ),
            (
                ThingError::History(HistoryError::InvalidCursor),
                400,
                "InvalidCursor",
            ),
            (ThingError::History(HistoryError::NotFound), 404, "NotFound"),
            (
                ThingError::History(HistoryError::Backend(lode_history::BackendError::Corrupt(
                    "x".into(),
                ))),
                500,
                "InternalError",
            ),
            (
                ThingError::Script(ScriptError::Internal("lost".into())),
                500,
                "InternalError",
            ),
            (
                ThingError::Registry(RegistryError::ProductNotFound("pk".into())),
                404,
                "ProductNotFound",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(thing(e), (status, code));
        }
        assert_eq!(
            ApiError::ThingUnavailable.status_and_code(),
            (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        );
    }

    #[test]
    fn backend_details_stay_out_of_the_message() {
        let e = ApiError::Thing(ThingError::History(HistoryError::Backend(
            lode_history::BackendError::Corrupt("secret detail".into()),
        )));
        assert_eq!(e.public_message(), "internal error");
        let e = ApiError::Thing(ThingError::DeviceOffline("pk/dn".into()));
        assert_eq!(e.public_message(), "device pk/dn is not online");
    }

    #[test]
    fn every_tsl_error_is_listed_with_its_path() {
        let errors = TslErrors(vec![
            TslError {
                path: "properties[0].identifier".into(),
                kind: TslErrorKind::Missing,
            },
            TslError {
                path: "services[1].callType".into(),
                kind: TslErrorKind::UnknownKeyword {
                    what: "call type",
                    value: "later".into(),
                },
            },
        ]);
        let e = ApiError::Thing(ThingError::InvalidTsl(errors));
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_REQUEST, "InvalidThingModel")
        );
        let message = e.public_message();
        assert!(
            message.contains("properties[0].identifier: missing"),
            "{message}"
        );
        assert!(message.contains("services[1].callType"), "{message}");
        let details = e.details().expect("details");
        assert_eq!(details.len(), 2);
        assert_eq!(details[0].path, "properties[0].identifier");
        assert_eq!(details[0].message, "missing");
        assert_eq!(details[1].path, "services[1].callType");
    }

    #[test]
    fn refused_parameters_and_script_lines_are_listed() {
        let e = ApiError::Thing(ThingError::InvalidParams(vec![
            ("temp".into(), ValueError::ReadOnly),
            ("mode".into(), ValueError::UnknownIdentifier),
        ]));
        let details = e.details().expect("details");
        assert_eq!(
            details.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(),
            ["temp", "mode"]
        );
        assert_eq!(details[0].message, "the property is read-only");

        let e = ApiError::Thing(ThingError::Script(ScriptError::Syntax {
            line: Some(3),
            column: Some(7),
            message: "unexpected token".into(),
        }));
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_REQUEST, "ScriptError")
        );
        assert!(e.public_message().contains("line 3"));
        let details = e.details().expect("details");
        assert_eq!((details[0].line, details[0].column), (Some(3), Some(7)));
        assert!(ApiError::NotFound.details().is_none());
    }
}
