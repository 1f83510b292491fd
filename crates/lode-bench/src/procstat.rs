//! Broker CPU time and resident memory from /proc.

use std::sync::OnceLock;

use anyhow::{Context, Result};

static CLK_TCK: OnceLock<u64> = OnceLock::new();

/// Clock ticks per second for /proc/PID/stat, from `getconf CLK_TCK` (100 if unavailable).
pub(crate) fn clk_tck() -> u64 {
    *CLK_TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&v| v > 0)
            .unwrap_or(100)
    })
}

/// CPU time (user + system) and resident memory of a process at one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) cpu_secs: f64,
    pub(crate) rss_kb: u64,
}

/// Reads /proc/PID/stat and /proc/PID/status; `None` reads this process.
pub(crate) fn sample(pid: Option<u32>) -> Result<Sample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("reading {dir}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14 and stime field 15.
    let utime: u64 = fields
        .get(11)
        .and_then(|v| v.parse().ok())
        .context("utime")?;
    let stime: u64 = fields
        .get(12)
        .and_then(|v| v.parse().ok())
        .context("stime")?;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("reading {dir}/status"))?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Sample {
        cpu_secs: (utime + stime) as f64 / clk_tck() as f64,
        rss_kb,
    })
}

/// Samples an optional broker process; errors become `None` with a note.
pub(crate) fn sample_opt(pid: Option<u32>, notes: &mut Vec<String>) -> Option<Sample> {
    let pid = pid?;
    match sample(Some(pid)) {
        Ok(s) => Some(s),
        Err(e) => {
            notes.push(format!("cannot read /proc/{pid}: {e:#}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self() {
        let s = sample(None).unwrap();
        assert!(s.rss_kb > 0);
        assert!(s.cpu_secs >= 0.0);
        assert!(clk_tck() > 0);
    }
}
