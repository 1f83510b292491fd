//! Counters of device access without a connection, as relaxed atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Channel;

/// Picks one counter of a [`PerChannel`].
type Field = fn(&PerChannel) -> &AtomicU64;

/// Per-channel counters.
#[derive(Debug, Default)]
struct PerChannel {
    auth_ok: AtomicU64,
    auth_failed: AtomicU64,
    published: AtomicU64,
    publish_refused: AtomicU64,
    rate_limited: AtomicU64,
}

/// What HTTP and CoAP device access counted since the start.
#[derive(Debug, Default)]
pub struct EdgeStats {
    http: PerChannel,
    coap: PerChannel,
    coap_psk: PerChannel,
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) seq_refused: AtomicU64,
    pub(crate) retransmissions: AtomicU64,
    pub(crate) dtls_handshakes: AtomicU64,
    pub(crate) dtls_failures: AtomicU64,
    pub(crate) dtls_timeouts: AtomicU64,
    pub(crate) dtls_refused: AtomicU64,
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl EdgeStats {
    fn channel(&self, channel: Channel) -> &PerChannel {
        match channel {
            Channel::Http => &self.http,
            Channel::Coap => &self.coap,
            Channel::CoapEncrypted => &self.coap_psk,
        }
    }

    pub(crate) fn auth_ok(&self, channel: Channel) {
        inc(&self.channel(channel).auth_ok);
    }

    pub(crate) fn auth_failed(&self, channel: Channel) {
        inc(&self.channel(channel).auth_failed);
    }

    pub(crate) fn published(&self, channel: Channel) {
        inc(&self.channel(channel).published);
    }

    pub(crate) fn publish_refused(&self, channel: Channel) {
        inc(&self.channel(channel).publish_refused);
    }

    pub(crate) fn rate_limited(&self, channel: Channel) {
        inc(&self.channel(channel).rate_limited);
    }

    /// Messages published for devices of `channel`.
    pub fn published_total(&self, channel: Channel) -> u64 {
        self.channel(channel).published.load(Ordering::Relaxed)
    }

    /// Refused sign-ins on `channel` (wrong signature, unknown device, rate limit).
    pub fn auth_failures(&self, channel: Channel) -> u64 {
        self.channel(channel).auth_failed.load(Ordering::Relaxed)
    }

    /// Malformed CoAP datagrams.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// CoAP duplicates answered from the deduplication cache.
    pub fn replays(&self) -> u64 {
        self.replays.load(Ordering::Relaxed)
    }

    /// DTLS handshakes completed.
    pub fn dtls_handshakes(&self) -> u64 {
        self.dtls_handshakes.load(Ordering::Relaxed)
    }

    /// DTLS handshakes dropped because they did not finish in time.
    pub fn dtls_handshake_timeouts(&self) -> u64 {
        self.dtls_timeouts.load(Ordering::Relaxed)
    }

    /// Appends the counters in the Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let per: [(&str, &str, Field); 5] = [
            ("lode_edge_auth_total", "Sign-ins accepted.", |c| &c.auth_ok),
            (
                "lode_edge_auth_failures_total",
                "Sign-ins refused (signature, device, rate limit).",
                |c| &c.auth_failed,
            ),
            (
                "lode_edge_messages_total",
                "Device messages published.",
                |c| &c.published,
            ),
            (
                "lode_edge_messages_refused_total",
                "Device messages refused (permissions, topic, platform).",
                |c| &c.publish_refused,
            ),
            (
                "lode_edge_rate_limited_total",
                "Device messages over the per-device rate.",
                |c| &c.rate_limited,
            ),
        ];
        for (name, help, field) in per {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for channel in [Channel::Http, Channel::Coap, Channel::CoapEncrypted] {
                let v = field(self.channel(channel)).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{transport=\"{}\"}} {v}", channel.name());
            }
        }
        for (name, help, v) in [
            (
                "lode_coap_datagrams_received_total",
                "CoAP datagrams received.",
                &self.datagrams_in,
            ),
            (
                "lode_coap_datagrams_sent_total",
                "CoAP datagrams sent.",
                &self.datagrams_out,
            ),
            (
                "lode_coap_malformed_total",
                "Malformed CoAP datagrams (answered with RST or dropped).",
                &self.malformed,
            ),
            (
                "lode_coap_replays_total",
                "Duplicate CoAP requests answered from the deduplication cache.",
                &self.replays,
            ),
            (
                "lode_coap_seq_refused_total",
                "Encrypted-mode messages refused for a replayed, old or undecryptable seq.",
                &self.seq_refused,
            ),
            (
                "lode_coap_retransmissions_total",
                "Separate CoAP responses sent again for want of an ACK.",
                &self.retransmissions,
            ),
            (
                "lode_dtls_handshakes_total",
                "DTLS handshakes completed.",
                &self.dtls_handshakes,
            ),
            (
                "lode_dtls_failures_total",
                "DTLS sessions ended by a fatal error (bad key, bad record, unknown identity).",
                &self.dtls_failures,
            ),
            (
                "lode_dtls_handshake_timeouts_total",
                "DTLS handshakes dropped for not finishing in time.",
                &self.dtls_timeouts,
            ),
            (
                "lode_dtls_handshakes_refused_total",
                "DTLS handshakes not started: too many at once, or no suite of ours offered.",
                &self.dtls_refused,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let s = EdgeStats::default();
        s.published(Channel::Coap);
        s.auth_failed(Channel::Http);
        inc(&s.malformed);
        let mut out = String::new();
        s.render_prometheus(&mut out);
        assert!(out.contains("lode_edge_messages_total{transport=\"coap\"} 1\n"));
        assert!(out.contains("lode_edge_messages_total{transport=\"http\"} 0\n"));
        assert!(out.contains("lode_edge_auth_failures_total{transport=\"http\"} 1\n"));
        assert!(out.contains("lode_coap_malformed_total 1\n"));
        assert_eq!(s.published_total(Channel::Coap), 1);
        assert_eq!(s.malformed(), 1);
    }
}
