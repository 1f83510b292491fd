//! Errors of the history store.

/// An error of a [`ThingStore`](crate::ThingStore) operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The storage backend failed.
    #[error("history storage failed: {0}")]
    Backend(#[from] BackendError),
    /// The expected version of a desired value is not the current one.
    #[error("desired value version conflict: current version is {current}")]
    VersionConflict { current: u64 },
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// The cursor was not produced by a query of this kind and order.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The query cannot be run (for example `start > end`, or a zero limit).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A record cannot be stored (for example an empty identifier).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
}

/// The underlying failure of [`HistoryError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The embedded database failed.
    #[error("embedded database: {0}")]
    Embedded(#[from] fjall::Error),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Applying schema migration `version` failed.
    #[error("postgres migration {version}: {source}")]
    Migration {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
    /// Stored data could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A blocking task of the embedded backend did not complete.
    #[error("blocking task failed: {0}")]
    Task(String),
}

impl From<fjall::Error> for HistoryError {
    fn from(e: fjall::Error) -> Self {
        HistoryError::Backend(BackendError::Embedded(e))
    }
}

impl From<sqlx::Error> for HistoryError {
    fn from(e: sqlx::Error) -> Self {
        HistoryError::Backend(BackendError::Postgres(e))
    }
}

pub(crate) fn corrupt(detail: impl Into<String>) -> HistoryError {
    HistoryError::Backend(BackendError::Corrupt(detail.into()))
}
