//! Settings of the rules runtime.

use std::path::PathBuf;
use std::time::Duration;

/// What a destination buffer does with a new message when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Drop the oldest buffered message to make room (counted as dropped).
    #[default]
    DropOldest,
    /// Refuse the new message (counted as dropped).
    RefuseNew,
}

/// Settings of the rules runtime; the defaults are the platform's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// Directory of the durable destination buffers.
    pub dir: PathBuf,
    /// Rules one account may have.
    pub rules_per_account: u64,
    /// Actions one rule may have.
    pub actions_per_rule: usize,
    /// Messages per second the rules of one account take; the rest is counted as throttled.
    pub account_rate: u32,
    /// Messages one destination buffer holds.
    pub buffer_capacity: usize,
    /// What a full buffer does.
    pub full_policy: FullPolicy,
    /// Delivery attempts before a message goes to the rule's error action.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after each failure.
    pub backoff_initial: Duration,
    /// Longest wait between retries.
    pub backoff_max: Duration,
    /// Messages waiting between the broker and the rules; more are counted as dropped.
    pub input_queue: usize,
    /// Entries a rule trace keeps.
    pub trace_capacity: usize,
    /// Messages per second one account's applications receive on the `$lode` stream; more
    /// wait their turn.
    pub stream_rate: u32,
    /// Stream messages waiting for their account's rate, over all accounts; over it, an
    /// account's oldest waiting message is dropped (counted).
    pub stream_queue: usize,
}

impl ForwardConfig {
    /// The platform defaults, with buffers in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> ForwardConfig {
        ForwardConfig {
            dir: dir.into(),
            rules_per_account: 1_000,
            actions_per_rule: 10,
            account_rate: 1_000,
            buffer_capacity: 100_000,
            full_policy: FullPolicy::DropOldest,
            max_attempts: 12,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            input_queue: 65_536,
            trace_capacity: 100,
            stream_rate: 1_000,
            stream_queue: 100_000,
        }
    }

    /// The wait before retry `attempt` (1 = the first retry).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = ForwardConfig::new("/tmp");
        assert_eq!(c.backoff(1), Duration::from_millis(100));
        assert_eq!(c.backoff(2), Duration::from_millis(200));
        assert_eq!(c.backoff(4), Duration::from_millis(800));
        assert_eq!(c.backoff(40), Duration::from_secs(30));
    }
}
