//! The applications' stream (`$lode/...`), paced to each account's rate.
//!
//! Messages wait in a queue per account and leave at most `stream_rate` per second per
//! account (a token bucket with one second of burst), so one account's burst neither
//! exceeds the platform's limit nor delays another account's messages, and the rules
//! never wait for the stream. A message that had to wait is counted as throttled; the
//! queues together hold `stream_queue` messages, and when they are full the oldest
//! message of the account that receives a new one is dropped and counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lode_broker::Broker;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runtime::Counters;

/// One message for the stream.
pub(crate) struct Item {
    pub(crate) account: String,
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
}

struct Account {
    queue: VecDeque<Item>,
    tokens: f64,
    last: Instant,
}

impl Account {
    fn refill(&mut self, rate: f64, now: Instant) {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
    }
}

/// Publishes what arrives on `rx`, paced per account.
pub(crate) async fn run(
    broker: Broker,
    rate: u32,
    capacity: usize,
    counters: Arc<Counters>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    stop: CancellationToken,
) {
    let rate = f64::from(rate.max(1));
    let capacity = capacity.max(1);
    let mut accounts: HashMap<String, Account> = HashMap::new();
    let mut queued = 0usize;
    loop {
        // Take what arrived; wait only when nothing is queued.
        if queued == 0 {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => admit(&mut accounts, &mut queued, capacity, rate, &counters, item),
                    None => return,
                },
                () = stop.cancelled() => return,
            }
        }
        while let Ok(item) = rx.try_recv() {
            admit(&mut accounts, &mut queued, capacity, rate, &counters, item);
        }
        // Send what the buckets allow; note when the next token comes.
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let mut ready = Vec::new();
        for account in accounts.values_mut() {
            account.refill(rate, now);
            while account.tokens >= 1.0 {
                let Some(item) = account.queue.pop_front() else {
                    break;
                };
                account.tokens -= 1.0;
                ready.push(item);
            }
            if !account.queue.is_empty() {
                let wait = Duration::from_secs_f64((1.0 - account.tokens).max(0.0) / rate);
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        accounts.retain(|_, a| !a.queue.is_empty() || a.tokens < rate);
        queued -= ready.len();
        for item in ready {
            publish(&broker, &counters, item).await;
        }
        if let Some(wait) = next {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

fn admit(
    accounts: &mut HashMap<String, Account>,
    queued: &mut usize,
    capacity: usize,
    rate: f64,
    counters: &Counters,
    item: Item,
) {
    let account = accounts
        .entry(item.account.clone())
        .or_insert_with(|| Account {
            queue: VecDeque::new(),
            tokens: rate,
            last: Instant::now(),
        });
    account.refill(rate, Instant::now());
    if account.tokens < 1.0 || !account.queue.is_empty() {
        counters.stream_throttled.fetch_add(1, Ordering::Relaxed);
    }
    if *queued >= capacity && account.queue.pop_front().is_some() {
        counters.stream_dropped.fetch_add(1, Ordering::Relaxed);
        *queued -= 1;
    }
    account.queue.push_back(item);
    *queued += 1;
}

async fn publish(broker: &Broker, counters: &Counters, item: Item) {
    match broker
        .publish(
            &item.topic,
            item.payload,
            lode_mqtt::QoS::AtLeastOnce,
            false,
        )
        .await
    {
        Ok(_) => {
            counters.streamed.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            tracing::warn!(%error, topic = item.topic, "stream message not published");
        }
    }
}
