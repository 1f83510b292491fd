//! `GroupCommit`: ordering, flush, close, failure, and a throughput measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use lode_store::{
    BoxFuture, BrokerStore, EmbeddedStore, GroupCommit, GroupCommitConfig, MemoryStore, Op,
    Snapshot, StoreError,
};

fn enqueue(client: &str, seq: u64) -> Op {
    Op::Enqueue {
        client_id: client.to_owned(),
        seq,
        data: Bytes::from(format!("{client}/{seq}")),
    }
}

/// Records the size of every batch it applies, then forwards to a MemoryStore.
#[derive(Default)]
struct Recording {
    inner: MemoryStore,
    batches: std::sync::Mutex<Vec<usize>>,
    fail_after: Option<usize>,
    applied: AtomicUsize,
}

impl BrokerStore for Recording {
    fn apply(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let n = self.applied.fetch_add(1, Ordering::SeqCst);
            if self.fail_after.is_some_and(|limit| n >= limit) {
                return Err(StoreError::Backend("disk on fire".into()));
            }
            self.batches.lock().unwrap().push(ops.len());
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            self.inner.apply(ops).await
        })
    }
    fn load(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        self.inner.load()
    }
    fn kind(&self) -> &'static str {
        "recording"
    }
}

#[tokio::test]
async fn submissions_are_grouped_and_ordered() {
    let store = Arc::new(Recording::default());
    let gc = GroupCommit::with_config(
        store.clone(),
        GroupCommitConfig {
            max_ops: 64,
            max_bytes: 1 << 20,
        },
    );
    let mut futures = Vec::new();
    for seq in 0..500u64 {
        // Put then delete the same retained topic in alternate submissions:
        // only the order of the calls decides the final state.
        futures.push(gc.submit(vec![
            enqueue("c", seq),
            Op::PutRetained {
                topic: "t".into(),
                data: Bytes::from(seq.to_string()),
            },
        ]));
        if seq % 2 == 0 {
            gc.submit_nowait(vec![Op::Dequeue {
                client_id: "c".into(),
                seq,
            }])
            .unwrap();
        }
    }
    // Poll in reverse: the write order is the call order regardless.
    for f in futures.into_iter().rev() {
        f.await.unwrap();
    }
    gc.flush().await.unwrap();
    let snap = store.load().await.unwrap();
    let seqs: Vec<u64> = snap.queued.iter().map(|q| q.1).collect();
    assert_eq!(seqs, (0..500).filter(|s| s % 2 == 1).collect::<Vec<_>>());
    assert_eq!(snap.retained, vec![("t".into(), Bytes::from("499"))]);
    let batches = store.batches.lock().unwrap().clone();
    assert!(batches.iter().all(|&n| n <= 64), "{batches:?}");
    assert!(
        batches.len() < 500,
        "no grouping happened: {} batches",
        batches.len()
    );
}

#[tokio::test]
async fn failure_is_sticky_and_close_rejects_later_writes() {
    let store = Arc::new(Recording {
        fail_after: Some(1),
        ..Recording::default()
    });
    let gc = GroupCommit::new(store.clone());
    gc.submit(vec![enqueue("a", 1)]).await.unwrap();
    assert!(gc.submit(vec![enqueue("a", 2)]).await.is_err());
    assert!(gc.submit(vec![enqueue("a", 3)]).await.is_err());
    assert!(gc.flush().await.is_err());

    let gc = GroupCommit::new(Arc::new(MemoryStore::new()));
    let other = gc.clone();
    let pending = gc.submit(vec![enqueue("b", 1)]);
    gc.close().await.unwrap();
    pending.await.unwrap();
    assert!(matches!(
        other.submit(vec![enqueue("b", 2)]).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(other.flush().await, Err(StoreError::Closed)));
}

#[tokio::test]
async fn invalid_submission_does_not_poison_the_group() {
    let gc = GroupCommit::new(Arc::new(MemoryStore::new()));
    let good = gc.submit(vec![enqueue("a", 1)]);
    let bad = gc.submit(vec![enqueue(&"x".repeat(lode_store::MAX_ID_LEN + 1), 1)]);
    assert!(matches!(bad.await, Err(StoreError::TooLong { .. })));
    good.await.unwrap();
    assert_eq!(gc.store().load().await.unwrap().queued.len(), 1);
}

async fn throughput(gc: GroupCommit, tasks: usize, per_task: usize) -> f64 {
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let gc = gc.clone();
        handles.push(tokio::spawn(async move {
            let client = format!("client-{t}");
            for seq in 0..per_task as u64 {
                gc.submit(vec![Op::Enqueue {
                    client_id: client.clone(),
                    seq,
                    data: Bytes::from_static(&[7u8; 64]),
                }])
                .await
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed();
    let total = tasks * per_task;
    let snap = gc.store().load().await.unwrap();
    let stored = snap
        .queued
        .iter()
        .filter(|q| q.0.starts_with("client-"))
        .count();
    assert_eq!(stored, total);
    total as f64 / elapsed.as_secs_f64()
}

/// Prints ops/s for 10 000 single-op submissions from 100 concurrent tasks:
/// `cargo test -p lode-store --test group_commit -- --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_10k_single_op_submissions_from_100_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Arc::new(EmbeddedStore::open(dir.path()).unwrap());

    // Baseline: one fsync per op.
    let start = Instant::now();
    for seq in 0..200u64 {
        embedded
            .apply(vec![enqueue("baseline", seq)])
            .await
            .unwrap();
    }
    let direct = 200.0 / start.elapsed().as_secs_f64();

    let embedded_rate = throughput(GroupCommit::new(embedded), 100, 100).await;
    let memory_rate = throughput(GroupCommit::new(Arc::new(MemoryStore::new())), 100, 100).await;
    println!(
        "group commit, 100 tasks x 100 single-op submissions: embedded {embedded_rate:.0} ops/s, \
         memory {memory_rate:.0} ops/s; embedded without grouping {direct:.0} ops/s"
    );
}
