//! `ForwardError`: every failure of a rules-engine call, each with a stable code.

use lode_registry::RegistryError;

/// Every failure of a rules or destination operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The SQL statement does not parse.
    #[error("invalid rule SQL: {0}")]
    InvalidSql(#[from] lode_rules::ParseError),
    /// The rule reads a source the runtime does not feed.
    #[error("unsupported rule source: {0}")]
    UnsupportedSource(String),
    /// An action is malformed.
    #[error("invalid action {index}: {reason}")]
    InvalidAction { index: String, reason: String },
    /// More actions than a rule may have.
    #[error("a rule has at most {limit} actions, not {len}")]
    TooManyActions { len: usize, limit: usize },
    /// A destination's settings are malformed.
    #[error("invalid destination: {0}")]
    InvalidDestination(String),
    /// A destination could not be reached when it was saved.
    #[error("destination check failed: {0}")]
    DestinationCheckFailed(String),
    /// The rule does not exist (or belongs to another account).
    #[error("rule {0} not found")]
    RuleNotFound(String),
    /// The destination does not exist (or belongs to another account).
    #[error("destination {0} not found")]
    DestinationNotFound(String),
    /// The buffer store failed.
    #[error("forwarding buffer: {0}")]
    Buffer(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl ForwardError {
    /// A stable, API-facing code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            ForwardError::InvalidSql(_) => "InvalidRuleSql",
            ForwardError::UnsupportedSource(_) => "UnsupportedRuleSource",
            ForwardError::InvalidAction { .. } => "InvalidAction",
            ForwardError::TooManyActions { .. } => "QuotaExceeded.ActionsPerRule",
            ForwardError::InvalidDestination(_) => "InvalidDestination",
            ForwardError::DestinationCheckFailed(_) => "DestinationCheckFailed",
            ForwardError::RuleNotFound(_) => "RuleNotFound",
            ForwardError::DestinationNotFound(_) => "DestinationNotFound",
            ForwardError::Buffer(_) => "Backend",
            ForwardError::Registry(e) => e.code(),
        }
    }
}
