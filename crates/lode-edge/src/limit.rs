//! Token-bucket rate limits keyed by device or by source address.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

use parking_lot::Mutex;

/// Most keys remembered before full buckets are forgotten.
const PRUNE_AT: usize = 100_000;

/// One bucket per key: `burst` tokens, refilled at `rate` per second.
#[derive(Debug)]
pub(crate) struct Buckets<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    /// `rate` tokens a second, up to `burst` (both at least 1).
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Buckets {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`; `false` when its bucket is empty.
    pub(crate) fn take(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(key.clone()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill() {
        let b = Buckets::new(30.0, 30.0);
        let t0 = Instant::now();
        for _ in 0..30 {
            assert!(b.take(&"dev", t0));
        }
        assert!(!b.take(&"dev", t0), "the 31st in the same instant");
        assert!(b.take(&"other", t0), "keys are independent");
        let t1 = t0 + Duration::from_millis(100);
        for _ in 0..3 {
            assert!(b.take(&"dev", t1));
        }
        assert!(!b.take(&"dev", t1), "100 ms refill 3 tokens");
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..30 {
            assert!(b.take(&"dev", t2));
        }
        assert!(!b.take(&"dev", t2), "never more than the burst");
    }
}
