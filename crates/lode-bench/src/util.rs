//! Small helpers: the tool's monotonic clock, duration and target parsing, source addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Starts the process-wide clock; call once at startup.
pub(crate) fn init_clock() {
    EPOCH.get_or_init(Instant::now);
}

/// Nanoseconds since the tool started, on the monotonic clock. Payload timestamps use it,
/// so latencies are measured by one clock in one process.
pub(crate) fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A latency histogram in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub(crate) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration `{s}`"))?;
    if !(0.0..=3600.0 * 24.0).contains(&(v * mult)) {
        return Err(format!("duration `{s}` out of range"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// One broker to measure: `name=host:port@pid`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) pid: Option<u32>,
}

impl Target {
    pub(crate) fn parse(spec: &str) -> Result<Target> {
        let (name, rest) = match spec.split_once('=') {
            Some((n, r)) => (Some(n.trim().to_owned()), r),
            None => (None, spec),
        };
        let (addr_s, pid) = match rest.rsplit_once('@') {
            Some((a, p)) => {
                let pid: u32 = p
                    .trim()
                    .parse()
                    .with_context(|| format!("invalid pid `{p}` in target `{spec}`"))?;
                (a.trim(), Some(pid))
            }
            None => (rest.trim(), None),
        };
        let addr = match addr_s.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => addr_s
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve `{addr_s}`"))?
                .next()
                .with_context(|| format!("`{addr_s}` resolves to nothing"))?,
        };
        let name = name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| addr_s.to_owned());
        Ok(Target { name, addr, pid })
    }

    pub(crate) fn check_allowed(&self, allow_remote: bool) -> Result<()> {
        if !self.addr.ip().is_loopback() && !allow_remote {
            bail!(
                "target {} ({}) is not a loopback address; pass --allow-remote to load a remote broker",
                self.name,
                self.addr
            );
        }
        Ok(())
    }

    /// The source address for connection number `idx`: 127.0.0.(1 + idx / per_source) when the
    /// target is IPv4 loopback, so that each source address has its own ephemeral port range.
    pub(crate) fn source_for(&self, idx: usize, per_source: usize) -> Option<IpAddr> {
        match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => {
                let n = 1 + (idx / per_source.max(1)).min(253);
                Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n as u8)))
            }
            _ => None,
        }
    }
}

/// Soft limit on open files of this process, from /proc/self/limits.
pub(crate) fn nofile_limit() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Refuses a run that needs more file descriptors than the soft limit allows.
pub(crate) fn check_nofile(needed: usize) -> Result<()> {
    if let Some(limit) = nofile_limit()
        && (needed as u64) + 64 > limit
    {
        bail!(
            "this run needs about {} open files but `ulimit -n` is {limit}; raise it (e.g. `ulimit -n {}`) \
             for this shell, and make sure the broker's own limit is high enough too",
            needed + 64,
            (needed + 1024).next_power_of_two()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn targets() {
        let t = Target::parse("mosquitto=127.0.0.1:1883@42").unwrap();
        assert_eq!(t.name, "mosquitto");
        assert_eq!(t.addr, "127.0.0.1:1883".parse().unwrap());
        assert_eq!(t.pid, Some(42));
        let t = Target::parse("127.0.0.1:1884").unwrap();
        assert_eq!(t.name, "127.0.0.1:1884");
        assert_eq!(t.pid, None);
        assert!(t.check_allowed(false).is_ok());
        let r = Target::parse("x=10.1.2.3:1883").unwrap();
        assert!(r.check_allowed(false).is_err());
        assert_eq!(t.source_for(0, 25_000), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            t.source_for(30_000, 25_000),
            Some("127.0.0.2".parse().unwrap())
        );
    }
}
