//! The retention worker: purges expired history and log entries on a timer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::{HistoryConfig, ThingStore};

/// Spawns a task that purges `store` every `config.purge_interval`, the
/// first time right away, until `shutdown` is cancelled.
///
/// History older than `config.retention` and log entries older than
/// `config.log_retention` (by device time, against the wall clock) are
/// removed. Each purge deletes in batches of `config.purge_batch` records, so
/// appends proceed while it runs. A failed purge is logged and retried at
/// the next tick.
pub fn spawn_retention(
    store: Arc<dyn ThingStore>,
    config: HistoryConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(config.purge_interval.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = now_ms();
            let history_before = now.saturating_sub(millis(config.retention));
            let log_before = now.saturating_sub(millis(config.log_retention));
            tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = store.purge(history_before, log_before) => match outcome {
                    Ok(stats) if stats.total() > 0 => tracing::info!(
                        properties = stats.properties,
                        events = stats.events,
                        calls = stats.calls,
                        log_entries = stats.log_entries,
                        "expired history purged"
                    ),
                    Ok(_) => tracing::debug!("no expired history"),
                    Err(error) => tracing::warn!(%error, "failed to purge expired history"),
                },
            }
        }
    })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::{
        DeviceKey, Direction, EmbeddedHistory, LogEntry, Order, PropertyPoint, Query, Record,
    };

    const DAY_MS: i64 = 24 * 3600 * 1000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn worker_purges_expired_data_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = HistoryConfig {
            purge_interval: Duration::from_millis(20),
            ..HistoryConfig::default()
        };
        let store = Arc::new(EmbeddedHistory::open(dir.path(), &config).expect("open"));
        let device = DeviceKey::new("pk", "dn");
        let now = now_ms();
        let point = |device_time| {
            Record::Property(PropertyPoint {
                device: device.clone(),
                identifier: "t".into(),
                value: Value::from(device_time),
                device_time,
                server_time: now,
            })
        };
        let log = |time| LogEntry {
            device: device.clone(),
            time,
            direction: Direction::Up,
            topic: "t".into(),
            payload: Vec::new(),
            payload_size: 0,
            code: 200,
            step: None,
            message: None,
            trace_id: "x".into(),
        };
        store
            .append(vec![point(now - 31 * DAY_MS), point(now - 29 * DAY_MS)])
            .await
            .expect("append");
        store
            .append_log(vec![log(now - 8 * DAY_MS), log(now - 6 * DAY_MS)])
            .await
            .expect("append log");

        let shutdown = CancellationToken::new();
        let worker = spawn_retention(store.clone(), config, shutdown.clone());
        let query = Query {
            order: Order::OldestFirst,
            ..Query::new(device.clone(), i64::MIN, i64::MAX)
        };
        let purged = async {
            loop {
                let points = store.property_history(query.clone()).await.expect("query");
                let log = store.device_log(query.clone()).await.expect("log");
                if points.items.len() == 1 && log.items.len() == 1 {
                    return (points.items[0].device_time, log.items[0].time);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let kept = tokio::time::timeout(Duration::from_secs(10), purged)
            .await
            .expect("purged in time");
        assert_eq!(kept, (now - 29 * DAY_MS, now - 6 * DAY_MS));

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .expect("worker stops")
            .expect("worker did not panic");
    }
}
