//! Broker counters: plain atomics on the hot path, rendered in the Prometheus
//! text format only when metrics are read.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($( #[doc = $doc:literal] $field:ident => $name:literal, $kind:ident; )*) => {
        /// Broker-wide counters and gauges.
        #[derive(Debug, Default)]
        pub struct Stats {
            $( #[doc = $doc] pub(crate) $field: AtomicU64, )*
        }

        impl Stats {
            /// Appends every counter and gauge in the Prometheus text format.
            pub fn render_prometheus(&self, out: &mut String) {
                use std::fmt::Write as _;
                $(
                    let _ = writeln!(out, "# HELP {} {}", $name, $doc.trim());
                    let _ = writeln!(out, "# TYPE {} {}", $name, stringify!($kind));
                    let _ = writeln!(out, "{} {}", $name, self.$field.load(Ordering::Relaxed));
                )*
            }

            /// `(metric name, value)` of every counter and gauge, for tests and tools.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![ $( ($name, self.$field.load(Ordering::Relaxed)), )* ]
            }
        }
    };
}

stats! {
    /// Clients connected now.
    connections => "lode_mqtt_connections", gauge;
    /// CONNECTs accepted.
    connects => "lode_mqtt_connects_total", counter;
    /// CONNECTs refused (bad credentials, bad packet, limits, shutdown).
    connects_refused => "lode_mqtt_connects_refused_total", counter;
    /// Sessions held (online and offline).
    sessions => "lode_mqtt_sessions", gauge;
    /// Subscriptions held.
    subscriptions => "lode_mqtt_subscriptions", gauge;
    /// Retained messages held.
    retained => "lode_mqtt_retained_messages", gauge;
    /// PUBLISH packets received from clients.
    publish_received => "lode_mqtt_messages_received_total", counter;
    /// PUBLISH packets sent to clients.
    publish_sent => "lode_mqtt_messages_sent_total", counter;
    /// Bytes read from clients.
    bytes_received => "lode_mqtt_received_bytes_total", counter;
    /// Bytes written to clients.
    bytes_sent => "lode_mqtt_sent_bytes_total", counter;
    /// Messages not queued for an offline session because its queue was full.
    dropped_queue_full => "lode_mqtt_dropped_queue_full_total", counter;
    /// Messages that expired before delivery.
    dropped_expired => "lode_mqtt_dropped_expired_total", counter;
    /// Messages not sent because they exceed the client's maximum packet size.
    dropped_too_large => "lode_mqtt_dropped_too_large_total", counter;
    /// PUBLISH refused by authorization.
    publish_unauthorized => "lode_mqtt_publish_unauthorized_total", counter;
    /// PUBLISH packets taken by the platform (thing model, system topics) instead of routed.
    publish_taken => "lode_mqtt_publish_taken_total", counter;
    /// Filters refused by authorization or limits in SUBSCRIBE.
    subscribe_refused => "lode_mqtt_subscribe_refused_total", counter;
    /// Connections closed for malformed packets.
    malformed => "lode_mqtt_malformed_packets_total", counter;
    /// Connections closed for protocol violations.
    protocol_errors => "lode_mqtt_protocol_errors_total", counter;
    /// Connections closed because keep alive expired.
    keepalive_timeouts => "lode_mqtt_keepalive_timeouts_total", counter;
    /// Connections that never sent CONNECT in time.
    connect_timeouts => "lode_mqtt_connect_timeouts_total", counter;
    /// Sessions taken over by a new connection with the same client id.
    takeovers => "lode_mqtt_session_takeovers_total", counter;
    /// Will messages published.
    wills => "lode_mqtt_wills_published_total", counter;
    /// Times a publisher was paused because a subscriber's backlog was full.
    backpressure => "lode_mqtt_publisher_paused_total", counter;
    /// Subscribers disconnected because they stopped reading while publishers waited.
    slow_subscribers => "lode_mqtt_slow_subscribers_disconnected_total", counter;
    /// Storage writes that failed.
    store_errors => "lode_mqtt_store_errors_total", counter;
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}
