//! Backend-independent conformance tests for [`BrokerStore`] implementations.
//!
//! Enable the `testsuite` feature and, in a test file of the backend:
//!
//! ```ignore
//! struct MyHarness { /* e.g. a temporary directory or database */ }
//! impl lode_store::testsuite::Harness for MyHarness {
//!     fn open(&mut self) -> lode_store::BoxFuture<'_, std::sync::Arc<dyn lode_store::BrokerStore>> {
//!         Box::pin(async move { /* open (or reopen) the same storage */ })
//!     }
//! }
//! lode_store::store_conformance_tests!(MyHarness::new());
//! ```
//!
//! Each generated `#[tokio::test]` evaluates the harness expression once, so
//! every test starts from empty storage. The calling crate needs `tokio` with
//! the `macros` and `rt` features.

use std::sync::Arc;

use bytes::Bytes;

use crate::{BoxFuture, BrokerStore, MAX_ID_LEN, MemoryStore, Op, Snapshot, StoreError};

/// Opens a backend under test.
pub trait Harness: Send + 'static {
    /// Opens the store. The first call gets empty storage. A later call is
    /// made after every handle of the previous store was dropped, and must
    /// reopen the same storage (a persistent backend must show the same
    /// state; an in-memory one may return the same instance).
    fn open(&mut self) -> BoxFuture<'_, Arc<dyn BrokerStore>>;
}

/// Harness for [`MemoryStore`]: "reopening" returns the same instance.
#[derive(Default)]
pub struct MemoryHarness {
    store: Option<Arc<MemoryStore>>,
}

impl Harness for MemoryHarness {
    fn open(&mut self) -> BoxFuture<'_, Arc<dyn BrokerStore>> {
        let store = Arc::clone(self.store.get_or_insert_with(Default::default));
        Box::pin(async move { store as Arc<dyn BrokerStore> })
    }
}

/// Generates one `#[tokio::test]` per conformance case, each calling
/// `lode_store::testsuite::<case>(harness)`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($harness:expr) => {
        $crate::store_conformance_tests!(@cases $harness;
            session_put_replace_delete,
            queue_order_and_dequeue,
            delete_session_drops_only_its_own_queue,
            retained_put_replace_delete,
            batch_is_applied_in_order,
            rejected_batch_changes_nothing,
            state_survives_reopen,
            unusual_ids_and_binary_data,
            missing_keys_are_no_ops,
            large_batch,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                $crate::testsuite::$case($harness).await;
            }
        )*
    };
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put_session(c: &str, d: &str) -> Op {
    Op::PutSession {
        client_id: c.into(),
        data: b(d),
    }
}

fn del_session(c: &str) -> Op {
    Op::DeleteSession {
        client_id: c.into(),
    }
}

fn enq(c: &str, seq: u64, d: &str) -> Op {
    Op::Enqueue {
        client_id: c.into(),
        seq,
        data: b(d),
    }
}

fn deq(c: &str, seq: u64) -> Op {
    Op::Dequeue {
        client_id: c.into(),
        seq,
    }
}

fn put_retained(t: &str, d: &str) -> Op {
    Op::PutRetained {
        topic: t.into(),
        data: b(d),
    }
}

fn del_retained(t: &str) -> Op {
    Op::DeleteRetained { topic: t.into() }
}

async fn apply(store: &Arc<dyn BrokerStore>, ops: Vec<Op>) {
    if let Err(e) = store.apply(ops).await {
        panic!("apply failed on {} store: {e}", store.kind());
    }
}

async fn load(store: &Arc<dyn BrokerStore>) -> Snapshot {
    match store.load().await {
        Ok(s) => s,
        Err(e) => panic!("load failed on {} store: {e}", store.kind()),
    }
}

/// Applies the same ops to a [`MemoryStore`] as the reference model.
async fn model(batches: &[Vec<Op>]) -> Snapshot {
    let m = MemoryStore::new();
    for ops in batches {
        m.apply(ops.clone()).await.expect("reference model");
    }
    m.load().await.expect("reference model")
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, Bytes)> {
    items.iter().map(|(k, v)| ((*k).to_owned(), b(v))).collect()
}

pub async fn session_put_replace_delete(mut h: impl Harness) {
    let s = h.open().await;
    apply(&s, vec![put_session("a", "1"), put_session("b", "2")]).await;
    assert_eq!(load(&s).await.sessions, pairs(&[("a", "1"), ("b", "2")]));
    apply(&s, vec![put_session("a", "3")]).await;
    assert_eq!(load(&s).await.sessions, pairs(&[("a", "3"), ("b", "2")]));
    apply(&s, vec![del_session("a")]).await;
    assert_eq!(load(&s).await.sessions, pairs(&[("b", "2")]));
}

pub async fn queue_order_and_dequeue(mut h: impl Harness) {
    let s = h.open().await;
    // Interleaved clients, seqs out of order, seqs that sort differently as
    // little-endian or as text (255 < 256, 9 < 10), and the extremes.
    let ops = vec![
        enq("b", 10, "b10"),
        enq("a", 256, "a256"),
        enq("a", u64::MAX, "amax"),
        enq("a", 255, "a255"),
        enq("b", 9, "b9"),
        enq("a", 0, "a0"),
        enq("aa", 1, "aa1"),
        enq("B", 1, "B1"),
    ];
    apply(&s, ops.clone()).await;
    let got = load(&s).await.queued;
    let want: Vec<(String, u64, Bytes)> = [
        ("B", 1, "B1"),
        ("a", 0, "a0"),
        ("a", 255, "a255"),
        ("a", 256, "a256"),
        ("a", u64::MAX, "amax"),
        ("aa", 1, "aa1"),
        ("b", 9, "b9"),
        ("b", 10, "b10"),
    ]
    .iter()
    .map(|(c, s, d)| ((*c).to_owned(), *s, b(d)))
    .collect();
    assert_eq!(got, want);
    apply(&s, vec![deq("a", 255), deq("b", 10), enq("a", 0, "a0-new")]).await;
    let want = model(&[
        ops,
        vec![deq("a", 255), deq("b", 10), enq("a", 0, "a0-new")],
    ])
    .await;
    assert_eq!(load(&s).await.queued, want.queued);
}

pub async fn delete_session_drops_only_its_own_queue(mut h: impl Harness) {
    let s = h.open().await;
    let clients = ["a", "ab", "a\0", "a\0b", "", "b"];
    let mut setup = Vec::new();
    for c in clients {
        setup.push(put_session(c, c));
        for seq in [0, 1, 2, 0x100, u64::MAX] {
            setup.push(enq(c, seq, c));
        }
    }
    apply(&s, setup.clone()).await;
    apply(&s, vec![del_session("a")]).await;
    apply(&s, vec![del_session("")]).await;
    let got = load(&s).await;
    let want = model(&[setup, vec![del_session("a")], vec![del_session("")]]).await;
    assert_eq!(got, want);
    assert!(got.queued.iter().all(|q| q.0 != "a" && !q.0.is_empty()));
    assert_eq!(got.queued.len(), 4 * 5);
    assert_eq!(got.sessions.len(), 4);
}

pub async fn retained_put_replace_delete(mut h: impl Harness) {
    let s = h.open().await;
    apply(&s, vec![put_retained("x/y", "1"), put_retained("x", "2")]).await;
    assert_eq!(load(&s).await.retained, pairs(&[("x", "2"), ("x/y", "1")]));
    apply(&s, vec![put_retained("x/y", "3"), del_retained("x")]).await;
    assert_eq!(load(&s).await.retained, pairs(&[("x/y", "3")]));
    apply(&s, vec![del_retained("x/y")]).await;
    assert_eq!(load(&s).await.retained, vec![]);
}

/// Ops of one batch act in order, including on keys touched twice and on
/// messages enqueued earlier in the same batch.
pub async fn batch_is_applied_in_order(mut h: impl Harness) {
    let s = h.open().await;
    let first = vec![enq("c", 1, "old"), put_session("c", "s0")];
    let second = vec![
        enq("c", 2, "in-batch"),
        put_session("c", "s1"),
        del_session("c"), // drops c/1 (committed) and c/2 (same batch)
        enq("c", 3, "after-delete"),
        put_session("c", "s2"),
        put_retained("t", "1"),
        del_retained("t"),
        del_retained("u"),
        put_retained("u", "2"),
        enq("d", 1, "x"),
        deq("d", 1),
        deq("e", 1),
        enq("e", 1, "y"),
        put_session("f", "1"),
        del_session("f"),
        put_session("f", "2"),
    ];
    apply(&s, first.clone()).await;
    apply(&s, second.clone()).await;
    let want = model(&[first, second]).await;
    assert_eq!(want.queued.len(), 2);
    assert_eq!(load(&s).await, want);
}

/// A batch with one op over the limits is rejected as a whole.
pub async fn rejected_batch_changes_nothing(mut h: impl Harness) {
    let s = h.open().await;
    let setup = vec![put_session("a", "1"), enq("a", 1, "m")];
    apply(&s, setup.clone()).await;
    let before = load(&s).await;
    let too_long = "x".repeat(MAX_ID_LEN + 1);
    let result = s
        .apply(vec![
            del_session("a"),
            put_retained("t", "1"),
            enq(&too_long, 1, "m"),
        ])
        .await;
    assert!(
        matches!(result, Err(StoreError::TooLong { .. })),
        "{result:?}"
    );
    let result = s
        .apply(vec![put_retained("ok", "1"), del_retained(&too_long)])
        .await;
    assert!(matches!(result, Err(StoreError::TooLong { .. })));
    assert_eq!(load(&s).await, before);
}

pub async fn state_survives_reopen(mut h: impl Harness) {
    let batches = vec![
        vec![put_session("a", "1"), enq("a", 1, "m1"), enq("a", 2, "m2")],
        vec![put_retained("t/1", "r1"), put_retained("t/2", "r2")],
        vec![deq("a", 1), del_retained("t/1"), put_session("b", "2")],
        vec![enq("b", 7, "m7"), del_session("b"), put_session("c", "3")],
    ];
    {
        let s = h.open().await;
        for ops in &batches {
            apply(&s, ops.clone()).await;
        }
    }
    let want = model(&batches).await;
    let s = h.open().await;
    assert_eq!(load(&s).await, want);
    // And it keeps working after the reopen.
    apply(&s, vec![del_session("a")]).await;
    drop(s);
    let s = h.open().await;
    let got = load(&s).await;
    assert!(got.queued.is_empty(), "{got:?}");
    assert_eq!(got.sessions, pairs(&[("c", "3")]));
}

pub async fn unusual_ids_and_binary_data(mut h: impl Harness) {
    let long = "ü".repeat(MAX_ID_LEN / 2); // MAX_ID_LEN bytes
    let ids = [
        "",
        "ünïcödé/🚀/主题",
        "with\0nul",
        "/",
        "a b\tc\n",
        "+/#",
        long.as_str(),
    ];
    let all_bytes: Bytes = (0..=255u8).collect::<Vec<u8>>().into();
    let big = Bytes::from(vec![0xA5u8; 1 << 20]);
    let mut ops = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let data = match i % 3 {
            0 => all_bytes.clone(),
            1 => Bytes::new(),
            _ => big.clone(),
        };
        ops.push(Op::PutSession {
            client_id: (*id).into(),
            data: data.clone(),
        });
        ops.push(Op::Enqueue {
            client_id: (*id).into(),
            seq: i as u64,
            data: data.clone(),
        });
        ops.push(Op::PutRetained {
            topic: (*id).into(),
            data,
        });
    }
    let batches = vec![ops];
    {
        let s = h.open().await;
        apply(&s, batches[0].clone()).await;
        assert_eq!(load(&s).await, model(&batches).await);
    }
    let s = h.open().await;
    assert_eq!(load(&s).await, model(&batches).await);
}

pub async fn missing_keys_are_no_ops(mut h: impl Harness) {
    let s = h.open().await;
    apply(&s, vec![]).await;
    apply(
        &s,
        vec![
            del_session("nobody"),
            deq("nobody", 3),
            del_retained("nothing"),
        ],
    )
    .await;
    assert_eq!(load(&s).await, Snapshot::default());
}

pub async fn large_batch(mut h: impl Harness) {
    let s = h.open().await;
    let mut ops = Vec::new();
    for c in 0..20 {
        let client = format!("client-{c:02}");
        ops.push(put_session(&client, "s"));
        for seq in 0..500 {
            ops.push(enq(&client, seq, "payload"));
        }
    }
    apply(&s, ops.clone()).await;
    let mut second = vec![del_session("client-03")];
    second.extend((0..500).step_by(2).map(|seq| deq("client-04", seq)));
    apply(&s, second.clone()).await;
    let got = load(&s).await;
    assert_eq!(got, model(&[ops, second]).await);
    assert_eq!(got.queued.len(), 19 * 500 - 250);
}
