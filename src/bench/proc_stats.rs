//! Resource use of a server process from `/proc` (CPU seconds, user + system, and peak resident
//! memory, which can be reset between runs so each figure has its own peak), and of this one.

use crate::daemon::BoxError;

/// CPU time and memory of one process.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    /// Peak resident set since start or the last [`reset_peak_rss`] (VmHWM).
    pub peak_rss_bytes: u64,
    /// Resident set now (VmRSS).
    pub rss_bytes: u64,
    /// Resident anonymous memory now (heap, stacks; excludes file pages mapped for serving).
    pub rss_anon_bytes: u64,
}

pub fn read(pid: u32) -> Result<ProcessStats, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, BoxError> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/<pid>/stat")?
            .parse::<u64>()?)
    };
    // `after` starts at field 3 (state), so field n is at index n - 3.
    let cpu_ticks = ticks(14 - 3)? + ticks(15 - 3)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .filter(|hz| *hz > 0)
        .unwrap_or(100) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcessStats {
        cpu_seconds: cpu_ticks as f64 / hz,
        peak_rss_bytes: kib("VmHWM:"),
        rss_bytes: kib("VmRSS:"),
        rss_anon_bytes: kib("RssAnon:"),
    })
}

/// CPU seconds (user + system) this process has used so far, from getrusage: microseconds,
/// where `/proc`'s clock ticks (10 ms) would be a few percent of a sub-second run.
pub fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(u.user_time()) + secs(u.system_time())
    })
}

/// Resets the peak-RSS counter (`echo 5 > /proc/<pid>/clear_refs`); best effort.
pub fn reset_peak_rss(pid: u32) {
    if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        tracing::warn!(pid, error = %e, "could not reset the peak RSS; peaks include earlier runs");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::read(std::process::id()).unwrap();
        assert!(s.peak_rss_bytes > 0);
        assert!(s.rss_anon_bytes > 0);
        assert!(s.cpu_seconds >= 0.0);
    }
}
