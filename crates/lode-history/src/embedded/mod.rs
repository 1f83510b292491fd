//! [`EmbeddedHistory`]: thing-model data in a local fjall database.
//!
//! Each kind of record has its own keyspace, keyed by device, then time and
//! an insertion sequence (see `keys`), so a page is one range scan. Property
//! history adds the identifier after the device; a query over all properties
//! merges the ranges of the device's identifiers, which `latest` lists.
//!
//! Writes that read before they write (latest values, calls, desired values)
//! and the sequence counter are serialized by one mutex, held only while a
//! batch is built and handed to the journal; the fsync that makes the batch
//! durable happens after the mutex is released, so concurrent appends share
//! journal flushes. Purges delete in bounded batches without the mutex
//! (history keys are never rewritten), except for calls, whose id index is
//! kept consistent under it.

mod codec;
mod keys;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use serde_json::Value;

use self::codec::{
    StoredCall, StoredDesired, StoredEvent, StoredLatest, StoredLog, StoredPoint, decode, encode,
    json_text, json_value,
};
#[cfg(test)]
use self::keys::device_of;
use self::keys::{device_prefix, name_after, name_key, position_key, position_of};
use crate::cursor::{Position, Window};
use crate::error::{BackendError, corrupt};
use crate::{
    BoxFuture, CallStatus, DesiredValue, DeviceKey, Direction, EventRecord, HistoryConfig,
    HistoryError, LatestProperty, LogEntry, Order, Page, PropertyPoint, PurgeStats, Query, Record,
    ServiceCall, ThingStore, check_call, check_device, check_name, check_record,
};

const META_SEQ: &[u8] = b"seq";

/// Thing-model data in a fjall database in one directory.
///
/// Appends are one fjall batch per call, fsynced before they resolve. The
/// blocking work runs on tokio's blocking pool. Cloning is cheap and shares
/// the database; the directory is locked while any clone is alive.
#[derive(Clone)]
pub struct EmbeddedHistory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedHistory")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    db: Database,
    props: Keyspace,
    events: Keyspace,
    calls: Keyspace,
    call_ids: Keyspace,
    log: Keyspace,
    latest: Keyspace,
    desired: Keyspace,
    devices: Keyspace,
    meta: Keyspace,
    /// The next sequence number; held while a read-then-write batch is built.
    writer: Mutex<u64>,
    purge_batch: usize,
}

impl EmbeddedHistory {
    /// Opens (or creates) the store in `dir`.
    ///
    /// This blocks while fjall recovers its journal; call it at start-up, or
    /// from `spawn_blocking`.
    pub fn open(dir: impl AsRef<Path>, config: &HistoryConfig) -> Result<Self, HistoryError> {
        let dir = dir.as_ref();
        let db = Database::builder(dir).open()?;
        let keyspace = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let meta = keyspace("meta")?;
        let next_seq = match meta.get(META_SEQ)? {
            Some(bytes) => {
                let bytes: [u8; 8] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| corrupt("bad sequence counter"))?;
                u64::from_be_bytes(bytes)
            }
            None => 1,
        };
        let inner = Inner {
            path: dir.to_path_buf(),
            props: keyspace("props")?,
            events: keyspace("events")?,
            calls: keyspace("calls")?,
            call_ids: keyspace("call_ids")?,
            log: keyspace("log")?,
            latest: keyspace("latest")?,
            desired: keyspace("desired")?,
            devices: keyspace("devices")?,
            meta,
            db,
            writer: Mutex::new(next_seq),
            purge_batch: config.purge_batch.max(1),
        };
        tracing::debug!(path = %dir.display(), "opened embedded history");
        Ok(EmbeddedHistory {
            inner: Arc::new(inner),
        })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn blocking<T, F>(&self, work: F) -> BoxFuture<'_, Result<T, HistoryError>>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, HistoryError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&inner))
                .await
                .map_err(|e| HistoryError::Backend(BackendError::Task(e.to_string())))?
        })
    }
}

/// Turns one stored record (at its position) into an item, or `None` to skip it.
type Decoder<'a, T> = dyn FnMut(Position, &[u8]) -> Result<Option<T>, HistoryError> + 'a;

impl Inner {
    fn lock_writer(&self) -> MutexGuard<'_, u64> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn batch(&self) -> OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::Buffer))
    }

    /// Makes everything committed so far durable.
    fn sync(&self) -> Result<(), HistoryError> {
        Ok(self.db.persist(PersistMode::SyncAll)?)
    }

    /// Reserves `n` sequence numbers and records the new counter in `batch`.
    fn reserve(next_seq: &mut u64, n: usize, batch: &mut OwnedWriteBatch, meta: &Keyspace) -> u64 {
        let first = *next_seq;
        *next_seq = first.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        batch.insert(meta, META_SEQ, next_seq.to_be_bytes().to_vec());
        first
    }

    fn append(&self, records: Vec<Record>) -> Result<(), HistoryError> {
        records.iter().try_for_each(check_record)?;
        if records.is_empty() {
            return Ok(());
        }
        let mut encoded = Vec::with_capacity(records.len());
        // Per property key: the candidate for its latest value.
        let mut candidates: HashMap<Vec<u8>, StoredLatest> = HashMap::new();
        let mut devices: HashMap<Vec<u8>, ()> = HashMap::new();
        for record in &records {
            match record {
                Record::Property(p) => {
                    let device = device_prefix(&p.device);
                    let prefix = name_key(&device, &p.identifier);
                    let value = json_text(&p.value);
                    let stored = encode(&StoredPoint {
                        value: value.clone(),
                        server_time: p.server_time,
                    })?;
                    let newer = candidates
                        .get(&prefix)
                        .is_none_or(|c| p.device_time >= c.device_time);
                    if newer {
                        candidates.insert(
                            prefix.clone(),
                            StoredLatest {
                                value,
                                device_time: p.device_time,
                                server_time: p.server_time,
                            },
                        );
                    }
                    encoded.push((&self.props, prefix, p.device_time, stored));
                    devices.insert(device, ());
                }
                Record::Event(e) => {
                    let device = device_prefix(&e.device);
                    let stored = encode(&StoredEvent {
                        identifier: e.identifier.clone(),
                        event_type: e.event_type.clone(),
                        output: json_text(&e.output),
                        server_time: e.server_time,
                    })?;
                    encoded.push((&self.events, device.clone(), e.device_time, stored));
                    devices.insert(device, ());
                }
            }
        }

        let mut writer = self.lock_writer();
        let mut batch = self.batch();
        let first = Self::reserve(&mut writer, encoded.len(), &mut batch, &self.meta);
        for (seq, (keyspace, prefix, time, value)) in (first..).zip(encoded) {
            batch.insert(
                keyspace,
                position_key(&prefix, Position { time, seq }),
                value,
            );
        }
        for (key, candidate) in candidates {
            let replace = match self.latest.get(&key)? {
                Some(current) => {
                    candidate.device_time >= decode::<StoredLatest>(&current)?.device_time
                }
                None => true,
            };
            if replace {
                batch.insert(&self.latest, key, encode(&candidate)?);
            }
        }
        for device in devices.into_keys() {
            batch.insert(&self.devices, device, Vec::new());
        }
        batch.commit()?;
        drop(writer);
        self.sync()
    }

    fn latest(&self, device: &DeviceKey) -> Result<Vec<LatestProperty>, HistoryError> {
        check_device(device)?;
        let prefix = device_prefix(device);
        let mut out = Vec::new();
        for guard in self.latest.prefix(&prefix) {
            let (key, value) = guard.into_inner()?;
            let stored: StoredLatest = decode(&value)?;
            out.push(LatestProperty {
                identifier: name_after(&prefix, &key)?,
                value: json_value(&stored.value)?,
                device_time: stored.device_time,
                server_time: stored.server_time,
            });
        }
        out.sort_by(|a, b| a.identifier.cmp(&b.identifier));
        Ok(out)
    }

    /// Up to `limit + 1` records of `prefix | position` keys inside the window,
    /// in its order, that `decoder` accepts.
    fn scan<T>(
        keyspace: &Keyspace,
        prefix: &[u8],
        window: &Window,
        decoder: &mut Decoder<'_, T>,
    ) -> Result<Vec<(Position, T)>, HistoryError> {
        let mut out = Vec::new();
        if window.is_empty() {
            return Ok(out);
        }
        let range = keyspace.range((
            Bound::Excluded(position_key(prefix, window.lower)),
            Bound::Excluded(position_key(prefix, window.upper)),
        ));
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = match window.order {
            Order::OldestFirst => Box::new(range),
            Order::NewestFirst => Box::new(range.rev()),
        };
        for guard in iter {
            let (key, value) = guard.into_inner()?;
            let pos = position_of(&key)?;
            if let Some(item) = decoder(pos, &value)? {
                out.push((pos, item));
                if out.len() > window.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn property_history(&self, query: Query) -> Result<Page<PropertyPoint>, HistoryError> {
        check_device(&query.device)?;
        let window = Window::from_query(&query)?;
        let device = device_prefix(&query.device);
        let identifiers = match &query.identifier {
            Some(identifier) => vec![identifier.clone()],
            None => {
                let mut all = Vec::new();
                for guard in self.latest.prefix(&device) {
                    all.push(name_after(&device, &guard.key()?)?);
                }
                all
            }
        };
        let mut merged = Vec::new();
        for identifier in identifiers {
            if identifier.is_empty() || identifier.len() > crate::MAX_NAME_LEN {
                continue;
            }
            let prefix = name_key(&device, &identifier);
            let mut decoder = |pos: Position, value: &[u8]| {
                let stored: StoredPoint = decode(value)?;
                Ok(Some(PropertyPoint {
                    device: query.device.clone(),
                    identifier: identifier.clone(),
                    value: json_value(&stored.value)?,
                    device_time: pos.time,
                    server_time: stored.server_time,
                }))
            };
            merged.extend(Self::scan(&self.props, &prefix, &window, &mut decoder)?);
        }
        match window.order {
            Order::OldestFirst => merged.sort_by_key(|(pos, _)| *pos),
            Order::NewestFirst => merged.sort_by_key(|(pos, _)| std::cmp::Reverse(*pos)),
        }
        merged.truncate(window.limit + 1);
        Ok(window.page(merged))
    }

    fn event_history(
        &self,
        query: Query,
        event_type: Option<String>,
    ) -> Result<Page<EventRecord>, HistoryError> {
        check_device(&query.device)?;
        let window = Window::from_query(&query)?;
        let device = device_prefix(&query.device);
        let mut decoder = |pos: Position, value: &[u8]| {
            let stored: StoredEvent = decode(value)?;
            let wanted = query
                .identifier
                .as_ref()
                .is_none_or(|id| *id == stored.identifier)
                && event_type.as_ref().is_none_or(|t| *t == stored.event_type);
            if !wanted {
                return Ok(None);
            }
            Ok(Some(EventRecord {
                device: query.device.clone(),
                output: json_value(&stored.output)?,
                identifier: stored.identifier,
                event_type: stored.event_type,
                device_time: pos.time,
                server_time: stored.server_time,
            }))
        };
        let items = Self::scan(&self.events, &device, &window, &mut decoder)?;
        Ok(window.page(items))
    }

    fn call_from(
        device: &DeviceKey,
        started_at: i64,
        stored: StoredCall,
    ) -> Result<ServiceCall, HistoryError> {
        Ok(ServiceCall {
            device: device.clone(),
            status: CallStatus::parse(&stored.status)
                .ok_or_else(|| corrupt(format!("unknown call status {}", stored.status)))?,
            input: json_value(&stored.input)?,
            output: stored.output.as_deref().map(json_value).transpose()?,
            call_id: stored.call_id,
            identifier: stored.identifier,
            call_type: stored.call_type,
            code: stored.code,
            message: stored.message,
            started_at,
            finished_at: stored.finished_at,
        })
    }

    /// The position of a call, from the id index.
    fn call_position(&self, id_key: &[u8]) -> Result<Option<Position>, HistoryError> {
        match self.call_ids.get(id_key)? {
            Some(bytes) => Ok(Some(position_of(&bytes)?)),
            None => Ok(None),
        }
    }

    fn record_call(&self, call: ServiceCall) -> Result<(), HistoryError> {
        check_call(&call)?;
        let device = device_prefix(&call.device);
        let id_key = name_key(&device, &call.call_id);
        let stored = encode(&StoredCall {
            call_id: call.call_id.clone(),
            identifier: call.identifier,
            call_type: call.call_type,
            input: json_text(&call.input),
            status: call.status.as_str().to_owned(),
            code: call.code,
            output: call.output.as_ref().map(json_text),
            message: call.message,
            finished_at: call.finished_at,
        })?;
        let mut writer = self.lock_writer();
        let mut batch = self.batch();
        let old = self.call_position(&id_key)?;
        let seq = match old {
            Some(pos) => pos.seq,
            None => Self::reserve(&mut writer, 1, &mut batch, &self.meta),
        };
        let pos = Position {
            time: call.started_at,
            seq,
        };
        if let Some(old) = old.filter(|old| *old != pos) {
            batch.remove(&self.calls, position_key(&device, old));
        }
        batch.insert(&self.calls, position_key(&device, pos), stored);
        batch.insert(&self.call_ids, id_key, position_key(&[], pos));
        batch.insert(&self.devices, device, Vec::new());
        batch.commit()?;
        drop(writer);
        self.sync()
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_call(
        &self,
        device: &DeviceKey,
        call_id: &str,
        status: CallStatus,
        code: Option<i64>,
        output: Option<Value>,
        message: Option<String>,
        finished_at: i64,
    ) -> Result<Option<ServiceCall>, HistoryError> {
        check_device(device)?;
        check_name("call id", call_id)?;
        let prefix = device_prefix(device);
        let writer = self.lock_writer();
        let Some(pos) = self.call_position(&name_key(&prefix, call_id))? else {
            return Ok(None);
        };
        let key = position_key(&prefix, pos);
        let Some(bytes) = self.calls.get(&key)? else {
            return Ok(None);
        };
        let mut stored: StoredCall = decode(&bytes)?;
        stored.status = status.as_str().to_owned();
        stored.code = code;
        stored.output = output.as_ref().map(json_text);
        stored.message = message;
        stored.finished_at = Some(finished_at);
        let mut batch = self.batch();
        batch.insert(&self.calls, key, encode(&stored)?);
        batch.commit()?;
        drop(writer);
        self.sync()?;
        Ok(Some(Self::call_from(device, pos.time, stored)?))
    }

    fn call(&self, device: &DeviceKey, call_id: &str) -> Result<Option<ServiceCall>, HistoryError> {
        check_device(device)?;
        check_name("call id", call_id)?;
        let prefix = device_prefix(device);
        let Some(pos) = self.call_position(&name_key(&prefix, call_id))? else {
            return Ok(None);
        };
        match self.calls.get(position_key(&prefix, pos))? {
            Some(bytes) => Ok(Some(Self::call_from(device, pos.time, decode(&bytes)?)?)),
            None => Ok(None),
        }
    }

    fn call_history(&self, query: Query) -> Result<Page<ServiceCall>, HistoryError> {
        check_device(&query.device)?;
        let window = Window::from_query(&query)?;
        let device = device_prefix(&query.device);
        let mut decoder = |pos: Position, value: &[u8]| {
            let stored: StoredCall = decode(value)?;
            if query
                .identifier
                .as_ref()
                .is_some_and(|id| *id != stored.identifier)
            {
                return Ok(None);
            }
            Ok(Some(Self::call_from(&query.device, pos.time, stored)?))
        };
        let items = Self::scan(&self.calls, &device, &window, &mut decoder)?;
        Ok(window.page(items))
    }

    fn set_desired(
        &self,
        device: &DeviceKey,
        identifier: &str,
        value: &Value,
        expected_version: Option<u64>,
        time: i64,
    ) -> Result<u64, HistoryError> {
        check_device(device)?;
        check_name("identifier", identifier)?;
        let key = name_key(&device_prefix(device), identifier);
        let text = json_text(value);
        let writer = self.lock_writer();
        let current = match self.desired.get(&key)? {
            Some(bytes) => decode::<StoredDesired>(&bytes)?.version,
            None => 0,
        };
        if expected_version.is_some_and(|expected| expected != current) {
            return Err(HistoryError::VersionConflict { current });
        }
        let version = current.saturating_add(1);
        let stored = StoredDesired {
            value: Some(text),
            version,
            time,
        };
        let mut batch = self.batch();
        batch.insert(&self.desired, key, encode(&stored)?);
        batch.commit()?;
        drop(writer);
        self.sync()?;
        Ok(version)
    }

    fn desired(
        &self,
        device: &DeviceKey,
        identifiers: &[String],
    ) -> Result<Vec<DesiredValue>, HistoryError> {
        check_device(device)?;
        let prefix = device_prefix(device);
        let mut found = Vec::new();
        if identifiers.is_empty() {
            for guard in self.desired.prefix(&prefix) {
                let (key, value) = guard.into_inner()?;
                found.push((name_after(&prefix, &key)?, decode::<StoredDesired>(&value)?));
            }
        } else {
            let mut wanted: Vec<&String> = identifiers.iter().collect();
            wanted.sort();
            wanted.dedup();
            for identifier in wanted {
                if identifier.is_empty() || identifier.len() > crate::MAX_NAME_LEN {
                    continue;
                }
                if let Some(value) = self.desired.get(name_key(&prefix, identifier))? {
                    found.push((identifier.clone(), decode::<StoredDesired>(&value)?));
                }
            }
        }
        let mut out = Vec::with_capacity(found.len());
        for (identifier, stored) in found {
            if let Some(text) = stored.value {
                out.push(DesiredValue {
                    identifier,
                    value: json_value(&text)?,
                    version: stored.version,
                    time: stored.time,
                });
            }
        }
        out.sort_by(|a, b| a.identifier.cmp(&b.identifier));
        Ok(out)
    }

    fn delete_desired(
        &self,
        device: &DeviceKey,
        identifier: &str,
        expected_version: Option<u64>,
    ) -> Result<(), HistoryError> {
        check_device(device)?;
        check_name("identifier", identifier)?;
        let key = name_key(&device_prefix(device), identifier);
        let writer = self.lock_writer();
        let Some(bytes) = self.desired.get(&key)? else {
            return Err(HistoryError::NotFound);
        };
        let stored: StoredDesired = decode(&bytes)?;
        if stored.value.is_none() {
            return Err(HistoryError::NotFound);
        }
        if expected_version.is_some_and(|expected| expected != stored.version) {
            return Err(HistoryError::VersionConflict {
                current: stored.version,
            });
        }
        let cleared = StoredDesired {
            value: None,
            version: stored.version.saturating_add(1),
            time: stored.time,
        };
        let mut batch = self.batch();
        batch.insert(&self.desired, key, encode(&cleared)?);
        batch.commit()?;
        drop(writer);
        self.sync()
    }

    fn append_log(&self, entries: Vec<LogEntry>) -> Result<(), HistoryError> {
        entries.iter().try_for_each(|e| check_device(&e.device))?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut encoded = Vec::with_capacity(entries.len());
        let mut devices: HashMap<Vec<u8>, ()> = HashMap::new();
        for entry in entries {
            let device = device_prefix(&entry.device);
            let stored = encode(&StoredLog {
                up: entry.direction == Direction::Up,
                topic: entry.topic,
                payload: entry.payload,
                payload_size: entry.payload_size,
                code: entry.code,
                step: entry.step,
                message: entry.message,
                trace_id: entry.trace_id,
            })?;
            encoded.push((device.clone(), entry.time, stored));
            devices.insert(device, ());
        }
        let mut writer = self.lock_writer();
        let mut batch = self.batch();
        let first = Self::reserve(&mut writer, encoded.len(), &mut batch, &self.meta);
        for (seq, (device, time, value)) in (first..).zip(encoded) {
            batch.insert(
                &self.log,
                position_key(&device, Position { time, seq }),
                value,
            );
        }
        for device in devices.into_keys() {
            batch.insert(&self.devices, device, Vec::new());
        }
        // Written to the journal (it survives the process), made durable on disk with
        // the next history append's sync.
        batch.commit()?;
        Ok(())
    }

    fn device_log(&self, query: Query) -> Result<Page<LogEntry>, HistoryError> {
        check_device(&query.device)?;
        let window = Window::from_query(&query)?;
        let device = device_prefix(&query.device);
        let mut decoder = |pos: Position, value: &[u8]| {
            let stored: StoredLog = decode(value)?;
            Ok(Some(LogEntry {
                device: query.device.clone(),
                time: pos.time,
                direction: if stored.up {
                    Direction::Up
                } else {
                    Direction::Down
                },
                topic: stored.topic,
                payload: stored.payload,
                payload_size: stored.payload_size,
                code: stored.code,
                step: stored.step,
                message: stored.message,
                trace_id: stored.trace_id,
            }))
        };
        let items = Self::scan(&self.log, &device, &window, &mut decoder)?;
        Ok(window.page(items))
    }

    /// Deletes the keys of `iter` in batches of `purge_batch`, returns how many.
    fn delete_keys(
        &self,
        keyspace: &Keyspace,
        iter: impl Iterator<Item = fjall::Guard>,
    ) -> Result<u64, HistoryError> {
        let mut n_deleted = 0;
        let mut batch = self.batch();
        for guard in iter {
            batch.remove(keyspace, guard.key()?);
            n_deleted += 1;
            if batch.len() >= self.purge_batch {
                std::mem::replace(&mut batch, self.batch()).commit()?;
            }
        }
        batch.commit()?;
        Ok(n_deleted)
    }

    /// Keys of `prefix | position` with a time before `before`.
    fn older(keyspace: &Keyspace, prefix: &[u8], before: i64) -> fjall::Iter {
        keyspace.range((
            Bound::Included(prefix.to_vec()),
            Bound::Excluded(position_key(
                prefix,
                Position {
                    time: before,
                    seq: 0,
                },
            )),
        ))
    }

    /// Deletes calls (and their id index entries) in batches, under the
    /// writer lock so that `record_call` never sees half of a deletion.
    fn delete_calls(
        &self,
        device: &[u8],
        iter: impl Iterator<Item = fjall::Guard>,
    ) -> Result<u64, HistoryError> {
        let mut n_deleted = 0;
        let mut chunk = Vec::with_capacity(self.purge_batch.min(1024));
        let mut iter = iter.peekable();
        while iter.peek().is_some() {
            chunk.clear();
            for guard in iter.by_ref().take(self.purge_batch) {
                chunk.push(guard.into_inner()?);
            }
            let writer = self.lock_writer();
            let mut batch = self.batch();
            for (key, value) in &chunk {
                let stored: StoredCall = decode(value)?;
                let id_key = name_key(device, &stored.call_id);
                if self.call_position(&id_key)? == Some(position_of(key)?) {
                    batch.remove(&self.call_ids, id_key);
                }
                batch.remove(&self.calls, key.clone());
            }
            batch.commit()?;
            drop(writer);
            n_deleted += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        }
        Ok(n_deleted)
    }

    fn purge(&self, history_before: i64, log_before: i64) -> Result<PurgeStats, HistoryError> {
        let mut stats = PurgeStats::default();
        let devices: Vec<Vec<u8>> = self
            .devices
            .iter()
            .map(|guard| guard.key().map(|key| key.to_vec()))
            .collect::<Result<_, _>>()?;
        for device in devices {
            for guard in self.latest.prefix(&device) {
                let identifier = name_after(&device, &guard.key()?)?;
                let prefix = name_key(&device, &identifier);
                stats.properties += self.delete_keys(
                    &self.props,
                    Self::older(&self.props, &prefix, history_before),
                )?;
            }
            stats.events += self.delete_keys(
                &self.events,
                Self::older(&self.events, &device, history_before),
            )?;
            stats.calls +=
                self.delete_calls(&device, Self::older(&self.calls, &device, history_before))?;
            stats.log_entries +=
                self.delete_keys(&self.log, Self::older(&self.log, &device, log_before))?;
        }
        self.sync()?;
        Ok(stats)
    }

    fn delete_device(&self, device: &DeviceKey) -> Result<(), HistoryError> {
        check_device(device)?;
        let prefix = device_prefix(device);
        for keyspace in [
            &self.props,
            &self.events,
            &self.log,
            &self.latest,
            &self.desired,
        ] {
            self.delete_keys(keyspace, keyspace.prefix(&prefix))?;
        }
        self.delete_calls(&prefix, self.calls.prefix(&prefix))?;
        // Index entries whose call record is already gone.
        self.delete_keys(&self.call_ids, self.call_ids.prefix(&prefix))?;
        let mut batch = self.batch();
        batch.remove(&self.devices, prefix);
        batch.commit()?;
        self.sync()
    }

    /// Every device with data, for tests of the key encoding.
    #[cfg(test)]
    fn devices(&self) -> Result<Vec<DeviceKey>, HistoryError> {
        self.devices
            .iter()
            .map(|guard| device_of(&guard.key()?))
            .collect()
    }
}

impl ThingStore for EmbeddedHistory {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), HistoryError>> {
        self.blocking(move |inner| inner.append(records))
    }

    fn latest<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<Vec<LatestProperty>, HistoryError>> {
        let device = device.clone();
        self.blocking(move |inner| inner.latest(&device))
    }

    fn property_history(
        &self,
        query: Query,
    ) -> BoxFuture<'_, Result<Page<PropertyPoint>, HistoryError>> {
        self.blocking(move |inner| inner.property_history(query))
    }

    fn event_history(
        &self,
        query: Query,
        event_type: Option<String>,
    ) -> BoxFuture<'_, Result<Page<EventRecord>, HistoryError>> {
        self.blocking(move |inner| inner.event_history(query, event_type))
    }

    fn record_call(&self, call: ServiceCall) -> BoxFuture<'_, Result<(), HistoryError>> {
        self.blocking(move |inner| inner.record_call(call))
    }

    fn finish_call<'a>(
        &'a self,
        device: &'a DeviceKey,
        call_id: &'a str,
        status: CallStatus,
        code: Option<i64>,
        output: Option<Value>,
        message: Option<String>,
        finished_at: i64,
    ) -> BoxFuture<'a, Result<Option<ServiceCall>, HistoryError>> {
        let device = device.clone();
        let call_id = call_id.to_owned();
        self.blocking(move |inner| {
            inner.finish_call(
                &device,
                &call_id,
                status,
                code,
                output,
                message,
                finished_at,
            )
        })
    }

    fn call<'a>(
        &'a self,
        device: &'a DeviceKey,
        call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceCall>, HistoryError>> {
        let device = device.clone();
        let call_id = call_id.to_owned();
        self.blocking(move |inner| inner.call(&device, &call_id))
    }

    fn call_history(&self, query: Query) -> BoxFuture<'_, Result<Page<ServiceCall>, HistoryError>> {
        self.blocking(move |inner| inner.call_history(query))
    }

    fn set_desired<'a>(
        &'a self,
        device: &'a DeviceKey,
        identifier: &'a str,
        value: Value,
        expected_version: Option<u64>,
        time: i64,
    ) -> BoxFuture<'a, Result<u64, HistoryError>> {
        let device = device.clone();
        let identifier = identifier.to_owned();
        self.blocking(move |inner| {
            inner.set_desired(&device, &identifier, &value, expected_version, time)
        })
    }

    fn desired<'a>(
        &'a self,
        device: &'a DeviceKey,
        identifiers: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<DesiredValue>, HistoryError>> {
        let device = device.clone();
        let identifiers = identifiers.to_vec();
        self.blocking(move |inner| inner.desired(&device, &identifiers))
    }

    fn delete_desired<'a>(
        &'a self,
        device: &'a DeviceKey,
        identifier: &'a str,
        expected_version: Option<u64>,
    ) -> BoxFuture<'a, Result<(), HistoryError>> {
        let device = device.clone();
        let identifier = identifier.to_owned();
        self.blocking(move |inner| inner.delete_desired(&device, &identifier, expected_version))
    }

    fn append_log(&self, entries: Vec<LogEntry>) -> BoxFuture<'_, Result<(), HistoryError>> {
        self.blocking(move |inner| inner.append_log(entries))
    }

    fn device_log(&self, query: Query) -> BoxFuture<'_, Result<Page<LogEntry>, HistoryError>> {
        self.blocking(move |inner| inner.device_log(query))
    }

    fn purge(
        &self,
        history_before: i64,
        log_before: i64,
    ) -> BoxFuture<'_, Result<PurgeStats, HistoryError>> {
        self.blocking(move |inner| inner.purge(history_before, log_before))
    }

    fn delete_device<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<(), HistoryError>> {
        let device = device.clone();
        self.blocking(move |inner| inner.delete_device(&device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(dn: &str, identifier: &str, device_time: i64) -> Record {
        Record::Property(PropertyPoint {
            device: DeviceKey::new("pk", dn),
            identifier: identifier.into(),
            value: Value::from(device_time),
            device_time,
            server_time: device_time + 1,
        })
    }

    #[test]
    fn devices_are_listed_and_forgotten_on_delete() -> Result<(), HistoryError> {
        let dir = tempfile::tempdir().map_err(|e| corrupt(e.to_string()))?;
        let store = EmbeddedHistory::open(dir.path(), &HistoryConfig::default())?;
        let inner = &store.inner;
        inner.append(vec![point("a", "t", 1), point("b", "t", 2)])?;
        assert_eq!(
            inner.devices()?,
            vec![DeviceKey::new("pk", "a"), DeviceKey::new("pk", "b")]
        );
        inner.delete_device(&DeviceKey::new("pk", "a"))?;
        assert_eq!(inner.devices()?, vec![DeviceKey::new("pk", "b")]);
        Ok(())
    }

    #[test]
    fn purge_commits_in_small_batches() -> Result<(), HistoryError> {
        let dir = tempfile::tempdir().map_err(|e| corrupt(e.to_string()))?;
        let config = HistoryConfig {
            purge_batch: 3,
            ..HistoryConfig::default()
        };
        let store = EmbeddedHistory::open(dir.path(), &config)?;
        let inner = &store.inner;
        inner.append((0..10).map(|t| point("a", "t", t)).collect())?;
        let stats = inner.purge(7, 0)?;
        assert_eq!(stats.properties, 7);
        let query = Query {
            order: Order::OldestFirst,
            ..Query::new(DeviceKey::new("pk", "a"), i64::MIN, i64::MAX)
        };
        let times: Vec<i64> = inner
            .property_history(query)?
            .items
            .iter()
            .map(|p| p.device_time)
            .collect();
        assert_eq!(times, vec![7, 8, 9]);
        Ok(())
    }

    #[test]
    fn sequence_numbers_continue_after_reopen() -> Result<(), HistoryError> {
        let dir = tempfile::tempdir().map_err(|e| corrupt(e.to_string()))?;
        {
            let store = EmbeddedHistory::open(dir.path(), &HistoryConfig::default())?;
            store
                .inner
                .append(vec![point("a", "t", 5), point("a", "t", 5)])?;
        }
        let store = EmbeddedHistory::open(dir.path(), &HistoryConfig::default())?;
        assert_eq!(*store.inner.lock_writer(), 3);
        store.inner.append(vec![point("a", "t", 5)])?;
        let page = store
            .inner
            .property_history(Query::new(DeviceKey::new("pk", "a"), 0, 10))?;
        assert_eq!(page.items.len(), 3);
        Ok(())
    }
}
