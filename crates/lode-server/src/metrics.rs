//! Metric names of the server crate, the Prometheus recorder, and process metrics.

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Transport connections accepted, by `listener`.
pub(crate) const CONNECTIONS_ACCEPTED: &str = "lodestone_connections_accepted_total";
/// Transport connections closed at once because the connection cap was reached, by `listener`.
pub(crate) const CONNECTIONS_REFUSED: &str = "lodestone_connections_refused_total";
/// Failed `accept` calls, by `listener`.
pub(crate) const ACCEPT_ERRORS: &str = "lodestone_accept_errors_total";
/// Failed TLS or WebSocket handshakes, by `listener`.
pub(crate) const HANDSHAKE_ERRORS: &str = "lodestone_handshake_errors_total";
/// Transport connections open right now.
pub(crate) const CONNECTIONS_OPEN: &str = "lodestone_connections_open";
/// MQTT clients connected right now, as the broker counts them.
pub(crate) const CLIENTS_CONNECTED: &str = "lodestone_clients_connected";

/// The process-wide Prometheus handle. The recorder is installed once per process; when some
/// other recorder is already installed, a detached one is used so `/metrics` still answers.
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed; /metrics will show process metrics only");
                PrometheusBuilder::new().build_recorder().handle()
            }
        })
        .clone()
}

/// Appends process metrics read from `/proc/self` (Linux only; elsewhere nothing).
pub(crate) fn render_process(out: &mut String) {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    {
        let _ = write!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}\n",
            kb * 1024
        );
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(secs) = cpu_seconds(&stat)
    {
        let _ = write!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {secs}\n"
        );
    }
}

/// User plus system CPU seconds from the text of `/proc/self/stat`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces; the fields after its closing ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux platform Lodestone targets.
    Some((utime + stime) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_seconds_parses_stat_with_spaces_in_name() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0";
        assert_eq!(super::cpu_seconds(stat), Some(2.0));
    }
}
