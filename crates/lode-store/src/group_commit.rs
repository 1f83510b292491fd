//! [`GroupCommit`]: many concurrent writers, one `apply` (one fsync) per group.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::{BrokerStore, Op, StoreError};

type Reply = oneshot::Sender<Result<(), StoreError>>;

enum Request {
    Ops { ops: Vec<Op>, done: Option<Reply> },
    Flush(Reply),
    Close(Reply),
}

/// Limits of one group (one call of [`BrokerStore::apply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Stop adding submissions to a group once it holds this many ops.
    pub max_ops: usize,
    /// Stop adding submissions once the ops' approximate size reaches this.
    pub max_bytes: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            max_ops: 4096,
            max_bytes: 4 << 20,
        }
    }
}

/// Funnels the writes of many tasks into few, large, durable batches.
///
/// A background task takes every submission waiting at that moment (up to the
/// [`GroupCommitConfig`] limits), applies them as one batch and then completes
/// all of their futures. One submission is never split across batches, so it
/// stays atomic.
///
/// Ordering: submissions are applied in the order in which
/// [`submit`](Self::submit) / [`submit_nowait`](Self::submit_nowait) were
/// *called* (not the order in which the returned futures are polled).
///
/// Failure is sticky: once a batch fails, that batch's submitters get the
/// error, and so does every later submission and [`flush`](Self::flush),
/// because later ops could depend on the lost ones.
///
/// Cloning gives another handle to the same writer. The writer stops when
/// [`close`](Self::close) is called or every handle is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Request>,
    store: Arc<dyn BrokerStore>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("store", &self.store.kind())
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl GroupCommit {
    /// Starts the writer task with default limits. Must be called inside a
    /// tokio runtime.
    pub fn new(store: Arc<dyn BrokerStore>) -> GroupCommit {
        GroupCommit::with_config(store, GroupCommitConfig::default())
    }

    /// Starts the writer task with the given limits. Must be called inside a
    /// tokio runtime.
    pub fn with_config(store: Arc<dyn BrokerStore>, config: GroupCommitConfig) -> GroupCommit {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(Arc::clone(&store), rx, config));
        GroupCommit { tx, store }
    }

    /// The store behind this handle (for `load` at start-up).
    pub fn store(&self) -> &Arc<dyn BrokerStore> {
        &self.store
    }

    /// Queues `ops` (atomically, as one unit) and returns a future that
    /// resolves once they are durable.
    ///
    /// The position in the write order is taken now, when `submit` is called;
    /// the returned future only waits for the result. Ops that break the
    /// store's limits ([`crate::validate`]) are rejected here, without
    /// affecting anybody else's batch.
    pub fn submit(
        &self,
        ops: Vec<Op>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let queued = crate::validate(&ops).and_then(|()| {
            let (done, rx) = oneshot::channel();
            self.tx
                .send(Request::Ops {
                    ops,
                    done: Some(done),
                })
                .map_err(|_| StoreError::Closed)?;
            Ok(rx)
        });
        async move {
            match queued {
                Ok(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
                Err(e) => Err(e),
            }
        }
    }

    /// Queues `ops` without waiting for them to become durable; they are still
    /// ordered with every other submission. An error here means the ops were
    /// not queued (store closed, or ops over the limits); a later failure to
    /// apply them is logged and reported by [`flush`](Self::flush).
    pub fn submit_nowait(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        crate::validate(&ops)?;
        self.tx
            .send(Request::Ops { ops, done: None })
            .map_err(|_| StoreError::Closed)
    }

    /// Resolves once everything submitted before this call is durable, or
    /// with the error that stopped the writer.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Flush(done))
            .map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Applies everything submitted before, then stops the writer. Later
    /// submissions (from any handle) fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Close(done))
            .map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }
}

async fn writer(
    store: Arc<dyn BrokerStore>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    config: GroupCommitConfig,
) {
    let mut carry: Option<Request> = None;
    let mut failed: Option<StoreError> = None;
    let mut waiters: Vec<Reply> = Vec::new();
    let mut closing = false;
    loop {
        let first = match carry.take() {
            Some(request) => request,
            None => match rx.recv().await {
                Some(request) => request,
                None => break,
            },
        };
        let mut ops: Vec<Op> = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Ops {
                    ops: mut more,
                    done,
                } => {
                    let more_bytes: usize = more.iter().map(Op::approx_size).sum();
                    if !ops.is_empty()
                        && (ops.len() + more.len() > config.max_ops
                            || bytes + more_bytes > config.max_bytes)
                    {
                        carry = Some(Request::Ops { ops: more, done });
                        break;
                    }
                    bytes += more_bytes;
                    if ops.is_empty() {
                        ops = more;
                    } else {
                        ops.append(&mut more);
                    }
                    waiters.extend(done);
                }
                Request::Flush(done) => waiters.push(done),
                Request::Close(done) => {
                    waiters.push(done);
                    closing = true;
                    break;
                }
            }
            next = rx.try_recv().ok();
        }

        let result = match &failed {
            Some(e) => Err(e.clone()),
            None if ops.is_empty() => Ok(()),
            None => {
                let n = ops.len();
                let result = store.apply(ops).await;
                if let Err(e) = &result {
                    tracing::error!(
                        store = store.kind(),
                        ops = n,
                        error = %e,
                        "group commit failed; rejecting all further writes"
                    );
                    failed = Some(e.clone());
                }
                result
            }
        };
        for done in waiters.drain(..) {
            let _ = done.send(result.clone());
        }
        if closing {
            break;
        }
    }
    // Dropping the receiver drops the reply senders of anything still queued,
    // which completes their futures with `Closed`.
    rx.close();
    while rx.try_recv().is_ok() {}
}
