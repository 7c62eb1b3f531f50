//! CPU seconds of the worker, the broker and the database, read from `/proc`.

use std::path::PathBuf;

use crate::common;

/// User + system CPU seconds of a process so far.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
    // After the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

/// Minor page faults of a process so far (memory touched fresh: the cost of the allocator
/// handing pages back to the OS and taking them again).
pub fn process_minor_faults(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name: minflt is field 10 (1-based in proc(5)).
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok()).unwrap_or(0.0)
}

/// CPU seconds of every `postgres` process so far (the server on this machine), with those of
/// the backends that have exited (the postmaster's reaped children), so a client's backend still
/// counts after the client disconnects.
pub fn database_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "postgres"))
        .map(|pid| process_cpu_seconds(pid) + reaped_children_cpu_seconds(pid))
        .sum()
}

/// User + system CPU seconds of a process's children that it has waited for.
fn reaped_children_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
    // After the command name: cutime is field 16 and cstime 17 (1-based in proc(5)).
    (ticks(13) + ticks(14)) / clock_ticks_per_second()
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
