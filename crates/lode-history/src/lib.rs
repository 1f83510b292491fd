//! Thing-model data of devices behind one storage trait: the latest value of
//! every property, property, event and service-call history, desired property
//! values with versions, and the device message log.
//!
//! Two backends implement [`ThingStore`]: [`EmbeddedHistory`] (fjall, the
//! default, in the data directory) and [`PgHistory`] (PostgreSQL, for
//! deployments sharing state). Both pass one conformance suite
//! (`history_conformance_tests!`, feature `testsuite`).
//!
//! Semantics shared by both backends:
//!
//! * History is ordered by device time (`started_at` for service calls,
//!   `time` for the message log); records with the same time are ordered by
//!   an insertion sequence, so paging never skips or repeats a record.
//!   Records with equal device, identifier and time are all kept.
//! * A [`Query`] covers `start <= time < end` (milliseconds since the Unix
//!   epoch). Its `limit` must be at least 1 and is capped at
//!   [`MAX_PAGE_SIZE`]. The cursor is opaque and only valid with the order
//!   that produced it.
//! * Retention is by device time (`started_at` for calls, `time` for the
//!   log): [`ThingStore::purge`] removes exactly the records older than its
//!   cutoffs, in bounded steps, while appends go on. Latest and desired
//!   values are not subject to retention; [`ThingStore::delete_device`]
//!   removes them with everything else.
//! * The trait is object safe (methods return boxed futures) because the
//!   backend is chosen at run time and shared as `Arc<dyn ThingStore>`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

mod cursor;
mod embedded;
mod error;
mod postgres;
mod retention;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use embedded::EmbeddedHistory;
pub use error::{BackendError, HistoryError};
pub use postgres::PgHistory;
pub use retention::spawn_retention;
pub use sqlx::postgres::PgConnectOptions;

/// A boxed future, so that [`ThingStore`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Largest page a query returns; larger limits are lowered to it.
pub const MAX_PAGE_SIZE: u32 = 200;

/// Longest product key, device name, identifier or call id, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// A device, by product key and device name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey {
    pub product_key: String,
    pub device_name: String,
}

impl DeviceKey {
    /// A device key from its two parts.
    pub fn new(product_key: impl Into<String>, device_name: impl Into<String>) -> Self {
        DeviceKey {
            product_key: product_key.into(),
            device_name: device_name.into(),
        }
    }
}

/// One accepted value of one property.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyPoint {
    pub device: DeviceKey,
    pub identifier: String,
    pub value: Value,
    /// Time reported by the device, in ms since the Unix epoch.
    pub device_time: i64,
    /// Time the platform accepted the value, in ms since the Unix epoch.
    pub server_time: i64,
}

/// One event reported by a device.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub device: DeviceKey,
    pub identifier: String,
    /// `info`, `alert` or `error`.
    pub event_type: String,
    pub output: Value,
    pub device_time: i64,
    pub server_time: i64,
}

/// State of a service call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// Sent to the device, no reply yet.
    Pending,
    /// The device replied with success.
    Succeeded,
    /// The device replied with an error, or the call could not be sent.
    Failed,
    /// No reply came in time.
    TimedOut,
}

impl CallStatus {
    /// The stored name: `pending`, `succeeded`, `failed` or `timed_out`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Pending => "pending",
            CallStatus::Succeeded => "succeeded",
            CallStatus::Failed => "failed",
            CallStatus::TimedOut => "timed_out",
        }
    }

    /// The status named by [`CallStatus::as_str`], or `None`.
    pub fn parse(name: &str) -> Option<CallStatus> {
        match name {
            "pending" => Some(CallStatus::Pending),
            "succeeded" => Some(CallStatus::Succeeded),
            "failed" => Some(CallStatus::Failed),
            "timed_out" => Some(CallStatus::TimedOut),
            _ => None,
        }
    }
}

/// One invocation of a device service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCall {
    pub device: DeviceKey,
    /// The Alink message id sent to the device; unique per device.
    pub call_id: String,
    pub identifier: String,
    /// `sync` or `async`.
    pub call_type: String,
    pub input: Value,
    pub status: CallStatus,
    /// The Alink code of the reply.
    pub code: Option<i64>,
    pub output: Option<Value>,
    pub message: Option<String>,
    /// When the call was sent, in ms since the Unix epoch.
    pub started_at: i64,
    /// When the reply (or the time-out) came, in ms since the Unix epoch.
    pub finished_at: Option<i64>,
}

impl ServiceCall {
    /// Milliseconds from start to finish, once finished.
    pub fn duration_ms(&self) -> Option<i64> {
        self.finished_at
            .map(|finished| finished.saturating_sub(self.started_at))
    }
}

/// The desired value of one property.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredValue {
    pub identifier: String,
    pub value: Value,
    /// Starts at 1 and grows by one with every change, deletions included.
    pub version: u64,
    /// When it was set, in ms since the Unix epoch.
    pub time: i64,
}

/// The latest value of one property of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestProperty {
    pub identifier: String,
    pub value: Value,
    pub device_time: i64,
    pub server_time: i64,
}

/// Direction of a logged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the device to the platform.
    Up,
    /// From the platform to the device.
    Down,
}

impl Direction {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    /// The direction named by [`Direction::as_str`], or `None`.
    pub fn parse(name: &str) -> Option<Direction> {
        match name {
            "up" => Some(Direction::Up),
            "down" => Some(Direction::Down),
            _ => None,
        }
    }
}

/// One message to or from a device, for online debugging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub device: DeviceKey,
    /// When the message was handled, in ms since the Unix epoch.
    pub time: i64,
    pub direction: Direction,
    pub topic: String,
    /// The payload, already truncated by the caller.
    pub payload: Vec<u8>,
    /// Size of the payload before truncation.
    pub payload_size: u32,
    /// Result code; 200 is success.
    pub code: i64,
    /// The processing step that failed (`parse`, `tsl`, `script`, `auth`, …).
    pub step: Option<String>,
    pub message: Option<String>,
    pub trace_id: String,
}

/// Order of a query's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// A page request over one device's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub device: DeviceKey,
    /// Only records of this identifier; ignored by [`ThingStore::device_log`].
    pub identifier: Option<String>,
    /// Inclusive lower bound, in ms since the Unix epoch.
    pub start: i64,
    /// Exclusive upper bound, in ms since the Unix epoch.
    pub end: i64,
    pub order: Order,
    /// Records per page: at least 1, lowered to [`MAX_PAGE_SIZE`].
    pub limit: u32,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Query {
    /// The first page of everything of `device` in `[start, end)`, newest
    /// first, [`MAX_PAGE_SIZE`] records.
    pub fn new(device: DeviceKey, start: i64, end: i64) -> Self {
        Query {
            device,
            identifier: None,
            start,
            end,
            order: Order::NewestFirst,
            limit: MAX_PAGE_SIZE,
            cursor: None,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when more records may follow; pass it in the next query.
    pub next_cursor: Option<String>,
}

/// A record of the thing model's history.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Property(PropertyPoint),
    Event(EventRecord),
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStats {
    pub properties: u64,
    pub events: u64,
    pub calls: u64,
    pub log_entries: u64,
}

impl PurgeStats {
    /// Records removed in all.
    pub fn total(&self) -> u64 {
        self.properties + self.events + self.calls + self.log_entries
    }
}

/// Retention and purge settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long property, event and call history is kept (by device time).
    pub retention: Duration,
    /// How long the device message log is kept.
    pub log_retention: Duration,
    /// Pause between two purges of the retention worker.
    pub purge_interval: Duration,
    /// Records deleted per step of a purge; appends proceed between steps.
    pub purge_batch: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: Duration::from_secs(30 * 24 * 3600),
            log_retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(60),
            purge_batch: 5_000,
        }
    }
}

/// Storage of devices' thing-model data.
pub trait ThingStore: Send + Sync + 'static {
    /// Short name of the backend (`embedded`, `postgres`), for logs and tests.
    fn kind(&self) -> &'static str;

    /// Stores property points and events; durable once resolved. Also
    /// advances the latest value of each property: a point replaces it when
    /// its device time is not older (within one call, the last of the newest
    /// wins); an older point goes to history only.
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), HistoryError>>;

    /// The latest value of every property of the device, by identifier.
    fn latest<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<Vec<LatestProperty>, HistoryError>>;

    /// Property history by device time.
    fn property_history(
        &self,
        query: Query,
    ) -> BoxFuture<'_, Result<Page<PropertyPoint>, HistoryError>>;

    /// Event history by device time, optionally of one event type.
    fn event_history(
        &self,
        query: Query,
        event_type: Option<String>,
    ) -> BoxFuture<'_, Result<Page<EventRecord>, HistoryError>>;

    /// Inserts a call, or replaces the one with the same device and call id.
    fn record_call(&self, call: ServiceCall) -> BoxFuture<'_, Result<(), HistoryError>>;

    /// Records the outcome of a call; `None` when the call is unknown.
    #[allow(clippy::too_many_arguments)]
    fn finish_call<'a>(
        &'a self,
        device: &'a DeviceKey,
        call_id: &'a str,
        status: CallStatus,
        code: Option<i64>,
        output: Option<Value>,
        message: Option<String>,
        finished_at: i64,
    ) -> BoxFuture<'a, Result<Option<ServiceCall>, HistoryError>>;

    /// One call by id.
    fn call<'a>(
        &'a self,
        device: &'a DeviceKey,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceCall>, HistoryError>>;

    /// Call history by `started_at`.
    fn call_history(&self, query: Query) -> BoxFuture<'_, Result<Page<ServiceCall>, HistoryError>>;

    /// Sets a desired value and returns its new version. With
    /// `expected_version`, fails with [`HistoryError::VersionConflict`] unless
    /// it equals the current version (0 when never set).
    fn set_desired<'a>(
        &'a self,
        device: &'a DeviceKey,
        identifier: &'a str,
        value: Value,
        expected_version: Option<u64>,
        time: i64,
    ) -> BoxFuture<'a, Result<u64, HistoryError>>;

    /// Desired values of the given identifiers (all when empty), by identifier.
    fn desired<'a>(
        &'a self,
        device: &'a DeviceKey,
        identifiers: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<DesiredValue>, HistoryError>>;

    /// Deletes a desired value ([`HistoryError::NotFound`] when there is
    /// none). The version counter is kept, so a later set continues from it.
    fn delete_desired<'a>(
        &'a self,
        device: &'a DeviceKey,
        identifier: &'a str,
        expected_version: Option<u64>,
    ) -> BoxFuture<'a, Result<(), HistoryError>>;

    /// Stores message-log entries. They survive a crash of the process once resolved;
    /// the embedded backend does not wait for the disk (`fsync`) for them, since the log
    /// is a debugging aid: the next `append` makes them durable along with its records.
    fn append_log(&self, entries: Vec<LogEntry>) -> BoxFuture<'_, Result<(), HistoryError>>;

    /// The message log of a device by time (the query's identifier is ignored).
    fn device_log(&self, query: Query) -> BoxFuture<'_, Result<Page<LogEntry>, HistoryError>>;

    /// Removes history older than `history_before` and log entries older than
    /// `log_before` (ms since the Unix epoch), in bounded steps.
    fn purge(
        &self,
        history_before: i64,
        log_before: i64,
    ) -> BoxFuture<'_, Result<PurgeStats, HistoryError>>;

    /// Removes all data of a device. Call it once the device can no longer
    /// send data: records appended while it runs may remain.
    fn delete_device<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<(), HistoryError>>;
}

/// Rejects names the backends cannot store.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), HistoryError> {
    if name.is_empty() {
        return Err(HistoryError::InvalidRecord(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(HistoryError::InvalidRecord(format!(
            "{what} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    Ok(())
}

pub(crate) fn check_device(device: &DeviceKey) -> Result<(), HistoryError> {
    check_name("product key", &device.product_key)?;
    check_name("device name", &device.device_name)
}

pub(crate) fn check_record(record: &Record) -> Result<(), HistoryError> {
    match record {
        Record::Property(p) => {
            check_device(&p.device)?;
            check_name("identifier", &p.identifier)
        }
        Record::Event(e) => {
            check_device(&e.device)?;
            check_name("identifier", &e.identifier)?;
            check_name("event type", &e.event_type)
        }
    }
}

pub(crate) fn check_call(call: &ServiceCall) -> Result<(), HistoryError> {
    check_device(&call.device)?;
    check_name("call id", &call.call_id)?;
    check_name("identifier", &call.identifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_status_names_round_trip() {
        for status in [
            CallStatus::Pending,
            CallStatus::Succeeded,
            CallStatus::Failed,
            CallStatus::TimedOut,
        ] {
            assert_eq!(CallStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(CallStatus::parse("done"), None);
    }

    #[test]
    fn direction_names_round_trip() {
        assert_eq!(Direction::parse("up"), Some(Direction::Up));
        assert_eq!(
            Direction::parse(Direction::Down.as_str()),
            Some(Direction::Down)
        );
        assert_eq!(Direction::parse("sideways"), None);
    }

    #[test]
    fn duration_is_finish_minus_start() {
        let mut call = ServiceCall {
            device: DeviceKey::new("pk", "dn"),
            call_id: "1".into(),
            identifier: "reboot".into(),
            call_type: "async".into(),
            input: Value::Null,
            status: CallStatus::Pending,
            code: None,
            output: None,
            message: None,
            started_at: 1_000,
            finished_at: None,
        };
        assert_eq!(call.duration_ms(), None);
        call.finished_at = Some(1_250);
        assert_eq!(call.duration_ms(), Some(250));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_device(&DeviceKey::new("pk", "dn")).is_ok());
        assert!(matches!(
            check_device(&DeviceKey::new("", "dn")),
            Err(HistoryError::InvalidRecord(_))
        ));
        assert!(matches!(
            check_name("identifier", &"x".repeat(MAX_NAME_LEN + 1)),
            Err(HistoryError::InvalidRecord(_))
        ));
    }
}
