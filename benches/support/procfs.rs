//! CPU seconds of the worker, the broker and the database, read from `/proc`.

use std::path::PathBuf;

use crate::common;

/// The sum of the numeric fields at `indices` of `/proc/<pid>/stat`, counted after the command
/// name (index 0 is the state, field 3 in proc(5)); 0 for a process that is gone.
fn stat_sum(pid: u32, indices: &[usize]) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    indices.iter().filter_map(|index| fields.get(*index)?.parse::<f64>().ok()).sum()
}

/// utime and stime (fields 14 and 15 in proc(5)).
const CPU: [usize; 2] = [11, 12];
/// utime, stime, and cutime and cstime: those of the children the process has waited for
/// (fields 14 to 17 in proc(5)).
const CPU_WITH_REAPED: [usize; 4] = [11, 12, 13, 14];

/// User + system CPU seconds of a process so far.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    stat_sum(pid, &CPU) / clock_ticks_per_second()
}

/// Minor page faults of a process so far (memory touched fresh: the cost of the allocator
/// handing pages back to the OS and taking them again). minflt is field 10 in proc(5).
pub fn process_minor_faults(pid: u32) -> f64 {
    stat_sum(pid, &[7])
}

/// CPU seconds of every `postgres` process so far (the server on this machine), with those of
/// the backends that have exited (the postmaster's reaped children), so a client's backend still
/// counts after the client disconnects.
pub fn database_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "postgres"))
        .map(|pid| stat_sum(pid, &CPU_WITH_REAPED) / clock_ticks_per_second())
        .sum()
}

/// `getconf CLK_TCK`, asked once.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The local Tansu broker's pid, if `scripts/stack.sh` started it.
pub fn broker_pid() -> Option<u32> {
    let path: PathBuf = common::repo_root().join(".stack/run/tansu.pid");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
