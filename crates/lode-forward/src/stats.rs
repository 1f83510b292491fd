//! Counters of rules and actions, and rule traces.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

/// Counters of one action, as a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionCounters {
    /// Delivered.
    pub forwarded: u64,
    /// Given up after retries (or at once, for a permanent error) and sent to the error action.
    pub failed: u64,
    /// Dropped because the destination's buffer was full.
    pub dropped: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// Counters of one rule, as a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleCounters {
    /// Messages whose topic matched the FROM clause.
    pub matched: u64,
    /// Messages for which the WHERE clause held (rows produced).
    pub passed: u64,
    /// Messages the WHERE clause filtered out.
    pub filtered: u64,
    /// Messages not evaluated because the account was over its rate.
    pub throttled: u64,
    /// Evaluations that failed.
    pub errors: u64,
    /// The last evaluation error.
    pub last_error: Option<String>,
    /// Per action, in order.
    pub actions: Vec<ActionCounters>,
    /// The error action's.
    pub error_action: ActionCounters,
}

#[derive(Default)]
pub(crate) struct ActionStats {
    forwarded: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ActionStats {
    pub(crate) fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn failed(&self, error: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error.to_owned());
    }
    pub(crate) fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retried(&self, error: &str) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error.to_owned());
    }
    fn snapshot(&self) -> ActionCounters {
        ActionCounters {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// One message through a traced rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceEntry {
    /// When, in ms since the Unix epoch.
    pub time: i64,
    pub message_id: String,
    pub topic: String,
    /// The payload as text (binary payloads as base64), cut at 4 KiB.
    pub payload: String,
    /// `row`, `filtered`, `throttled` or `error`.
    pub outcome: String,
    /// The output row, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<serde_json::Value>,
    /// Why there was no row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Default)]
struct Trace {
    remaining: u32,
    entries: VecDeque<TraceEntry>,
}

/// Live counters of one rule (kept across edits of the rule while the action count stays).
pub(crate) struct RuleStats {
    pub(crate) matched: AtomicU64,
    pub(crate) passed: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) throttled: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    pub(crate) actions: Vec<ActionStats>,
    pub(crate) error_action: ActionStats,
    trace: Mutex<Trace>,
    capacity: usize,
}

impl RuleStats {
    pub(crate) fn new(n_actions: usize, trace_capacity: usize) -> RuleStats {
        RuleStats {
            matched: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            actions: (0..n_actions).map(|_| ActionStats::default()).collect(),
            error_action: ActionStats::default(),
            trace: Mutex::new(Trace::default()),
            capacity: trace_capacity.max(1),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error);
    }

    /// The stats of action `index` (or of the error action).
    pub(crate) fn action(&self, index: u16) -> Option<&ActionStats> {
        if index == crate::buffer::ERROR_ACTION {
            Some(&self.error_action)
        } else {
            self.actions.get(usize::from(index))
        }
    }

    /// Whether the next message should be traced.
    pub(crate) fn tracing(&self) -> bool {
        self.trace.lock().remaining > 0
    }

    /// Records a traced message (if tracing is still on).
    pub(crate) fn record(&self, entry: TraceEntry) {
        let mut t = self.trace.lock();
        if t.remaining == 0 {
            return;
        }
        t.remaining -= 1;
        if t.entries.len() >= self.capacity {
            t.entries.pop_front();
        }
        t.entries.push_back(entry);
    }

    /// Traces the next `n` messages, clearing the previous trace.
    pub(crate) fn start_trace(&self, n: u32) {
        let mut t = self.trace.lock();
        t.remaining = n.min(u32::try_from(self.capacity).unwrap_or(u32::MAX));
        t.entries.clear();
    }

    /// The trace so far and how many messages it still waits for.
    pub(crate) fn trace(&self) -> (Vec<TraceEntry>, u32) {
        let t = self.trace.lock();
        (t.entries.iter().cloned().collect(), t.remaining)
    }

    pub(crate) fn snapshot(&self) -> RuleCounters {
        RuleCounters {
            matched: self.matched.load(Ordering::Relaxed),
            passed: self.passed.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
            actions: self.actions.iter().map(ActionStats::snapshot).collect(),
            error_action: self.error_action.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> TraceEntry {
        TraceEntry {
            time: 0,
            message_id: id.into(),
            topic: "t".into(),
            payload: String::new(),
            outcome: "row".into(),
            row: None,
            reason: None,
        }
    }

    #[test]
    fn a_trace_keeps_the_next_n_messages() {
        let s = RuleStats::new(1, 10);
        assert!(!s.tracing());
        s.record(entry("ignored"));
        s.start_trace(2);
        assert!(s.tracing());
        for id in ["a", "b", "c"] {
            s.record(entry(id));
        }
        let (entries, remaining) = s.trace();
        assert_eq!(remaining, 0);
        assert_eq!(
            entries
                .iter()
                .map(|e| e.message_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn counters_snapshot() {
        let s = RuleStats::new(2, 10);
        RuleStats::inc(&s.matched);
        s.action(1).expect("action").failed("boom");
        s.action(crate::buffer::ERROR_ACTION)
            .expect("error action")
            .forwarded();
        assert!(s.action(2).is_none());
        let c = s.snapshot();
        assert_eq!(c.matched, 1);
        assert_eq!(c.actions[1].failed, 1);
        assert_eq!(c.actions[1].last_error.as_deref(), Some("boom"));
        assert_eq!(c.error_action.forwarded, 1);
    }
}
