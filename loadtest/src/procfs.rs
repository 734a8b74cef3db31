//! Reading a process's memory and CPU figures from /proc.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct MemSample {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// Pss from smaps_rollup, KiB, when readable.
    pub pss_kib: Option<u64>,
    /// utime + stime in seconds, when readable.
    pub cpu_secs: Option<f64>,
}

/// Finds `key:   <n> kB` in a /proc status-like text.
pub fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// utime+stime (fields 14 and 15) of /proc/PID/stat, in clock ticks.
pub fn stat_ticks(text: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces; fields restart after the last ')'.
    let after = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ')' : field 3 is index 0, so field 14 is index 11.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn sample(pid: &str) -> Result<MemSample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let rss_kib = field_kib(&status, "VmRSS").ok_or("no VmRSS")?;
    let pss_kib = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| field_kib(&t, "Pss"));
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_secs = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| stat_ticks(&t))
        .map(|t| t as f64 / hz);
    Ok(MemSample {
        rss_kib,
        pss_kib,
        cpu_secs,
    })
}

/// This process's peak RSS (VmHWM, KiB) and CPU time (user + system, seconds).
pub fn self_usage() -> (Option<u64>, Option<f64>) {
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| field_kib(&t, "VmHWM"));
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let cpu = if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Some(tv(ru.ru_utime) + tv(ru.ru_stime))
    } else {
        None
    };
    (hwm, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_fields() {
        let t = "Name:\tx\nVmHWM:\t  2000 kB\nVmRSS:\t  1234 kB\n";
        assert_eq!(field_kib(t, "VmRSS"), Some(1234));
        assert_eq!(field_kib(t, "VmHWM"), Some(2000));
        assert_eq!(field_kib(t, "Pss"), None);
        let r = "55d0-7ff [rollup]\nRss:  10 kB\nPss:  8 kB\nPss_Anon:  4 kB\n";
        assert_eq!(field_kib(r, "Pss"), Some(8));
        assert_eq!(field_kib(r, "Pss_Anon"), Some(4));
    }

    #[test]
    fn parses_stat_ticks() {
        let t = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 100 10";
        assert_eq!(stat_ticks(t), Some(10));
    }

    #[test]
    fn samples_self() {
        let s = sample(&std::process::id().to_string()).unwrap();
        assert!(s.rss_kib > 0);
    }
}
