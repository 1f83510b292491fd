//! [`EmbeddedStore`]: broker state in a local fjall database.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::keys::{decode_queue_key, id_from_key, id_key, queue_key, queue_prefix};
use crate::{BoxFuture, BrokerStore, Op, Snapshot, StoreError};

const SESSIONS: &str = "sessions";
const QUEUE: &str = "queue";
const RETAINED: &str = "retained";

/// Broker state in a fjall database in one directory.
///
/// Every [`apply`](BrokerStore::apply) is one atomic fjall write batch across
/// the three keyspaces, fsynced (`PersistMode::SyncAll`) before it returns. The
/// blocking work runs on tokio's blocking pool. Writers are serialized, so a
/// `DeleteSession` sees every message enqueued before it.
///
/// Cloning is cheap and shares the database. The directory is locked while any
/// clone is alive.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Database,
    sessions: Keyspace,
    queue: Keyspace,
    retained: Keyspace,
    /// Serializes writers (and `load`) so that the prefix scan of a
    /// `DeleteSession` and the commit of its batch see the same state.
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// This blocks while fjall recovers its journal; call it at start-up, or
    /// from `spawn_blocking`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        let open_err = |what: &str, e: fjall::Error| StoreError::Open {
            path: dir.display().to_string(),
            reason: format!("{what}: {e}"),
        };
        let db = Database::builder(dir)
            .open()
            .map_err(|e| open_err("opening the database", e))?;
        let sessions = db
            .keyspace(SESSIONS, KeyspaceCreateOptions::default)
            .map_err(|e| open_err("opening keyspace sessions", e))?;
        let queue = db
            .keyspace(QUEUE, KeyspaceCreateOptions::default)
            .map_err(|e| open_err("opening keyspace queue", e))?;
        let retained = db
            .keyspace(RETAINED, KeyspaceCreateOptions::default)
            .map_err(|e| open_err("opening keyspace retained", e))?;
        tracing::debug!(path = %dir.display(), "opened embedded store");
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                path: dir.to_path_buf(),
                db,
                sessions,
                queue,
                retained,
                write_lock: Mutex::new(()),
            }),
        })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Applies `ops` on the calling thread (blocking, including the fsync).
    pub fn apply_blocking(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.inner.apply(ops)
    }

    /// Reads everything on the calling thread (blocking).
    pub fn load_blocking(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
}

impl Inner {
    fn err(&self, action: &'static str, e: impl Display) -> StoreError {
        StoreError::Embedded {
            path: self.path.display().to_string(),
            action,
            reason: e.to_string(),
        }
    }

    fn corrupt(&self, keyspace: &'static str, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            keyspace,
            detail,
        }
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        crate::validate(&ops)?;
        if ops.is_empty() {
            return Ok(());
        }
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);

        // Items of one fjall batch share a sequence number, so a key must
        // appear at most once: fold the ops into their final effect per key.
        let mut sessions: HashMap<Vec<u8>, Option<Bytes>> = HashMap::new();
        let mut retained: HashMap<Vec<u8>, Option<Bytes>> = HashMap::new();
        let mut queue: BTreeMap<Vec<u8>, Option<Bytes>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::PutSession { client_id, data } => {
                    sessions.insert(id_key(&client_id), Some(data));
                }
                Op::DeleteSession { client_id } => {
                    sessions.insert(id_key(&client_id), None);
                    let prefix = queue_prefix(&client_id);
                    for guard in self.queue.prefix(&prefix) {
                        let key = guard
                            .key()
                            .map_err(|e| self.err("scanning the queue of a deleted session", e))?;
                        queue.insert(key.to_vec(), None);
                    }
                    // Messages enqueued earlier in this same batch.
                    for (_, value) in queue
                        .range_mut(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                    {
                        *value = None;
                    }
                }
                Op::Enqueue {
                    client_id,
                    seq,
                    data,
                } => {
                    queue.insert(queue_key(&client_id, seq), Some(data));
                }
                Op::Dequeue { client_id, seq } => {
                    queue.insert(queue_key(&client_id, seq), None);
                }
                Op::PutRetained { topic, data } => {
                    retained.insert(id_key(&topic), Some(data));
                }
                Op::DeleteRetained { topic } => {
                    retained.insert(id_key(&topic), None);
                }
            }
        }

        let mut batch = fjall::OwnedWriteBatch::with_capacity(
            self.db.clone(),
            sessions.len() + retained.len() + queue.len(),
        )
        .durability(Some(PersistMode::SyncAll));
        for (keyspace, items) in [(&self.sessions, sessions), (&self.retained, retained)] {
            for (key, value) in items {
                match value {
                    Some(v) => batch.insert(keyspace, key, v),
                    None => batch.remove(keyspace, key),
                }
            }
        }
        for (key, value) in queue {
            match value {
                Some(v) => batch.insert(&self.queue, key, v),
                None => batch.remove(&self.queue, key),
            }
        }
        batch
            .commit()
            .map_err(|e| self.err("committing a write batch", e))
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut snapshot = Snapshot::default();
        for (name, keyspace, out) in [
            (SESSIONS, &self.sessions, &mut snapshot.sessions),
            (RETAINED, &self.retained, &mut snapshot.retained),
        ] {
            for guard in keyspace.iter() {
                let (key, value) = guard
                    .into_inner()
                    .map_err(|e| self.err("reading all state", e))?;
                let id = id_from_key(&key).map_err(|d| self.corrupt(name, d))?;
                out.push((id, Bytes::from(value)));
            }
        }
        for guard in self.queue.iter() {
            let (key, value) = guard
                .into_inner()
                .map_err(|e| self.err("reading all state", e))?;
            let (client_id, seq) = decode_queue_key(&key).map_err(|d| self.corrupt(QUEUE, d))?;
            snapshot.queued.push((client_id, seq, Bytes::from(value)));
        }
        // Keys are ordered by (id length, id, seq); the contract is (id, seq).
        // Each client's run is already ordered by seq, so a stable sort on the
        // id alone is enough.
        snapshot.queued.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(snapshot)
    }
}

impl BrokerStore for EmbeddedStore {
    fn apply(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<(), StoreError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let path = inner.path.display().to_string();
            tokio::task::spawn_blocking(move || inner.apply(ops))
                .await
                .map_err(|e| StoreError::Embedded {
                    path,
                    action: "applying a batch (blocking task)",
                    reason: e.to_string(),
                })?
        })
    }

    fn load(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let path = inner.path.display().to_string();
            tokio::task::spawn_blocking(move || inner.load())
                .await
                .map_err(|e| StoreError::Embedded {
                    path,
                    action: "loading state (blocking task)",
                    reason: e.to_string(),
                })?
        })
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}
