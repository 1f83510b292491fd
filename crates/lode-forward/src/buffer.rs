//! Durable per-destination buffers: messages waiting for delivery, in fjall.
//!
//! Every buffer is a run of keys `<name> 0x00 <seq: u64 big-endian>` in one keyspace;
//! at start-up the buffers are read back in order. A batch of new messages is one
//! fsynced write; a delivered message's removal is not waited for (a crash then can
//! only cause a duplicate, which the stable message id lets receivers drop).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::FullPolicy;
use crate::error::ForwardError;

/// Action index of a rule's error action.
pub(crate) const ERROR_ACTION: u16 = u16::MAX;

/// One message waiting for delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Job {
    /// Stable message id: the same on every attempt and after a restart.
    pub(crate) id: String,
    pub(crate) rule: String,
    /// Index of the action in the rule, or [`ERROR_ACTION`].
    pub(crate) action: u16,
    pub(crate) target: Target,
}

/// Where a job goes, rendered when the rule produced its row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Target {
    Republish {
        topic: String,
        payload: String,
        qos: u8,
    },
    Webhook {
        destination: String,
        method: String,
        headers: Vec<(String, String)>,
        body: String,
    },
    Insert {
        destination: String,
        table: String,
        /// Column and value, the message id column included.
        values: Vec<(String, serde_json::Value)>,
        /// Ignore a row whose message id is already there.
        dedupe: bool,
    },
    Amqp {
        destination: String,
        exchange: String,
        routing_key: String,
        payload: String,
    },
    Nats {
        destination: String,
        subject: String,
        payload: String,
    },
    Redis {
        destination: String,
        command: crate::action::RedisCommand,
        key: String,
        payload: String,
        /// Stream fields (`xadd`).
        fields: Vec<(String, String)>,
    },
}

impl Target {
    /// The buffer this target's jobs wait in.
    pub(crate) fn buffer_name(&self) -> &str {
        match self {
            Target::Republish { .. } => "republish",
            Target::Webhook { destination, .. }
            | Target::Insert { destination, .. }
            | Target::Amqp { destination, .. }
            | Target::Nats { destination, .. }
            | Target::Redis { destination, .. } => destination,
        }
    }

    /// The payload or body, for an error action's report.
    pub(crate) fn content(&self) -> String {
        match self {
            Target::Republish { payload, .. }
            | Target::Redis { payload, .. }
            | Target::Amqp { payload, .. }
            | Target::Nats { payload, .. } => payload.clone(),
            Target::Webhook { body, .. } => body.clone(),
            Target::Insert { values, .. } => {
                serde_json::Value::Object(values.iter().cloned().collect()).to_string()
            }
        }
    }
}

/// One destination's buffer, mirrored in memory.
pub(crate) struct Buffer {
    pub(crate) name: String,
    items: Mutex<VecDeque<(u64, Job)>>,
    pub(crate) wake: Notify,
}

impl Buffer {
    /// The oldest job, without removing it.
    pub(crate) fn front(&self) -> Option<(u64, Job)> {
        self.items.lock().front().cloned()
    }

    /// Up to `max` jobs from the front, as long as `fits` holds.
    pub(crate) fn front_batch(&self, max: usize, fits: impl Fn(&Job) -> bool) -> Vec<(u64, Job)> {
        self.items
            .lock()
            .iter()
            .take(max)
            .take_while(|(_, j)| fits(j))
            .cloned()
            .collect()
    }

    /// Jobs waiting.
    pub(crate) fn len(&self) -> usize {
        self.items.lock().len()
    }
}

/// Every buffer, over one fjall database.
pub(crate) struct Buffers {
    db: Database,
    jobs: Keyspace,
    buffers: Mutex<HashMap<String, Arc<Buffer>>>,
    next_seq: AtomicU64,
    capacity: usize,
    policy: FullPolicy,
}

fn key(name: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn split_key(k: &[u8]) -> Option<(String, u64)> {
    let split = k.len().checked_sub(9)?;
    let (name, rest) = k.split_at(split);
    let seq: [u8; 8] = rest.get(1..)?.try_into().ok()?;
    (rest.first() == Some(&0))
        .then(|| String::from_utf8(name.to_vec()).ok())
        .flatten()
        .map(|n| (n, u64::from_be_bytes(seq)))
}

fn err(what: &str, e: impl std::fmt::Display) -> ForwardError {
    ForwardError::Buffer(format!("{what}: {e}"))
}

impl Buffers {
    /// Opens (creating) the buffers in `dir` and reads back what was waiting.
    pub(crate) fn open(
        dir: &Path,
        capacity: usize,
        policy: FullPolicy,
    ) -> Result<Buffers, ForwardError> {
        let db = Database::builder(dir)
            .open()
            .map_err(|e| err("opening the buffer store", e))?;
        let jobs = db
            .keyspace("jobs", KeyspaceCreateOptions::default)
            .map_err(|e| err("opening the buffer keyspace", e))?;
        let mut buffers: HashMap<String, Arc<Buffer>> = HashMap::new();
        let mut max_seq = 0;
        for guard in jobs.iter() {
            let (k, v) = guard
                .into_inner()
                .map_err(|e| err("reading the buffers", e))?;
            let Some((name, seq)) = split_key(&k) else {
                tracing::warn!("skipping a malformed buffer key");
                continue;
            };
            let job: Job = match serde_json::from_slice(&v) {
                Ok(j) => j,
                Err(error) => {
                    tracing::warn!(%error, buffer = name, "skipping an unreadable buffered message");
                    continue;
                }
            };
            max_seq = max_seq.max(seq);
            let buffer = buffers
                .entry(name.clone())
                .or_insert_with(|| new_buffer(name));
            buffer.items.lock().push_back((seq, job));
        }
        for b in buffers.values() {
            b.items
                .lock()
                .make_contiguous()
                .sort_by_key(|(seq, _)| *seq);
        }
        Ok(Buffers {
            db,
            jobs,
            buffers: Mutex::new(buffers),
            next_seq: AtomicU64::new(max_seq + 1),
            capacity,
            policy,
        })
    }

    /// Every buffer that exists now.
    pub(crate) fn all(&self) -> Vec<Arc<Buffer>> {
        self.buffers.lock().values().cloned().collect()
    }

    /// The buffer `name`, and whether it was just created.
    pub(crate) fn get_or_create(&self, name: &str) -> (Arc<Buffer>, bool) {
        let mut map = self.buffers.lock();
        if let Some(b) = map.get(name) {
            return (b.clone(), false);
        }
        let b = new_buffer(name.to_owned());
        map.insert(name.to_owned(), b.clone());
        (b, true)
    }

    /// Durably adds jobs (one fsync for all), applying the full policy. Returns the jobs
    /// that were dropped to respect the capacity.
    pub(crate) async fn push(
        &self,
        jobs: Vec<(Arc<Buffer>, Job)>,
    ) -> Result<Vec<Job>, ForwardError> {
        // Group by buffer, keeping arrival order within each.
        let mut groups: Vec<(Arc<Buffer>, Vec<Job>)> = Vec::new();
        for (buffer, job) in jobs {
            match groups.iter_mut().find(|(b, _)| Arc::ptr_eq(b, &buffer)) {
                Some((_, list)) => list.push(job),
                None => groups.push((buffer, vec![job])),
            }
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        let mut dropped = Vec::new();
        let mut plan = Vec::with_capacity(groups.len());
        for (buffer, mut new) in groups {
            let existing = buffer.len();
            let excess = (existing + new.len()).saturating_sub(self.capacity);
            let mut evicted = Vec::new();
            match self.policy {
                FullPolicy::RefuseNew => {
                    dropped.extend(new.split_off(new.len() - excess.min(new.len())));
                }
                FullPolicy::DropOldest => {
                    let evict = excess.min(existing);
                    let items = buffer.items.lock();
                    for (seq, old) in items.iter().take(evict) {
                        batch.remove(&self.jobs, key(&buffer.name, *seq));
                        evicted.push(*seq);
                        dropped.push(old.clone());
                    }
                    drop(items);
                    let skip = (excess - evict).min(new.len());
                    dropped.extend(new.drain(..skip));
                }
            }
            let mut added = Vec::with_capacity(new.len());
            for job in new {
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                let bytes = serde_json::to_vec(&job).map_err(|e| err("encoding a job", e))?;
                batch.insert(&self.jobs, key(&buffer.name, seq), bytes);
                added.push((seq, job));
            }
            plan.push((buffer, evicted, added));
        }
        tokio::task::spawn_blocking(move || batch.commit())
            .await
            .map_err(|e| err("writing the buffers", e))?
            .map_err(|e| err("writing the buffers", e))?;
        for (buffer, evicted, added) in plan {
            let mut items = buffer.items.lock();
            if !evicted.is_empty() {
                items.retain(|(seq, _)| !evicted.contains(seq));
            }
            let any = !added.is_empty();
            items.extend(added);
            drop(items);
            if any {
                buffer.wake.notify_one();
            }
        }
        Ok(dropped)
    }

    /// Removes a delivered (or given up) job.
    pub(crate) fn remove(&self, buffer: &Buffer, seq: u64) {
        {
            let mut items = buffer.items.lock();
            if let Some(i) = items.iter().position(|(s, _)| *s == seq) {
                items.remove(i);
            }
        }
        if let Err(error) = self.jobs.remove(key(&buffer.name, seq)) {
            tracing::warn!(%error, "delivered message not removed from its buffer");
        }
    }

    /// Makes every removal durable (at shutdown).
    pub(crate) fn flush(&self) {
        if let Err(error) = self.db.persist(PersistMode::SyncAll) {
            tracing::warn!(%error, "forwarding buffers not flushed");
        }
    }
}

fn new_buffer(name: String) -> Arc<Buffer> {
    Arc::new(Buffer {
        name,
        items: Mutex::new(VecDeque::new()),
        wake: Notify::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, dest: &str) -> Job {
        Job {
            id: id.into(),
            rule: "r".into(),
            action: 0,
            target: Target::Webhook {
                destination: dest.into(),
                method: "POST".into(),
                headers: vec![],
                body: id.into(),
            },
        }
    }

    fn ids(b: &Buffer) -> Vec<String> {
        b.items.lock().iter().map(|(_, j)| j.id.clone()).collect()
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(split_key(&key("d1", 7)), Some(("d1".into(), 7)));
        assert_eq!(split_key(b"short"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let bufs = Buffers::open(dir.path(), 10, FullPolicy::DropOldest).expect("open");
            let (a, created) = bufs.get_or_create("a");
            assert!(created);
            let (b, _) = bufs.get_or_create("b");
            let dropped = bufs
                .push(vec![
                    (a.clone(), job("1", "a")),
                    (b.clone(), job("2", "b")),
                    (a.clone(), job("3", "a")),
                ])
                .await
                .expect("push");
            assert!(dropped.is_empty());
            let (seq, first) = a.front().expect("front");
            assert_eq!(first.id, "1");
            bufs.remove(&a, seq);
            bufs.flush();
        }
        let bufs = Buffers::open(dir.path(), 10, FullPolicy::DropOldest).expect("reopen");
        let (a, created) = bufs.get_or_create("a");
        assert!(!created);
        assert_eq!(ids(&a), ["3"]);
        assert_eq!(ids(&bufs.get_or_create("b").0), ["2"]);
        // New sequence numbers continue after the old ones.
        bufs.push(vec![(a.clone(), job("4", "a"))])
            .await
            .expect("push");
        assert_eq!(ids(&a), ["3", "4"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_buffers_follow_their_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bufs = Buffers::open(&dir.path().join("old"), 2, FullPolicy::DropOldest).expect("open");
        let (a, _) = bufs.get_or_create("a");
        let jobs = ["1", "2", "3", "4"].map(|i| (a.clone(), job(i, "a")));
        let dropped = bufs.push(jobs.to_vec()).await.expect("push");
        assert_eq!(
            dropped.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(ids(&a), ["3", "4"]);

        let bufs = Buffers::open(&dir.path().join("new"), 2, FullPolicy::RefuseNew).expect("open");
        let (a, _) = bufs.get_or_create("a");
        let jobs = ["1", "2", "3"].map(|i| (a.clone(), job(i, "a")));
        let dropped = bufs.push(jobs.to_vec()).await.expect("push");
        assert_eq!(
            dropped.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["3"]
        );
        assert_eq!(ids(&a), ["1", "2"]);
    }
}
