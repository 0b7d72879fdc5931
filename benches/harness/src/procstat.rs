//! Clocks and process accounting: CLOCK_MONOTONIC, getrusage, /proc/PID.

use serde_json::{json, Value};

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU time of this process so far, in nanoseconds.
pub fn self_cpu_ns() -> u64 {
    rusage_ns(libc::RUSAGE_SELF)
}

/// User + system CPU time of reaped children, in nanoseconds.
pub fn children_cpu_ns() -> u64 {
    rusage_ns(libc::RUSAGE_CHILDREN)
}

fn rusage_ns(who: libc::c_int) -> u64 {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rusage.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// utime + stime of a process (all its threads) from /proc/PID/stat, in ns.
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' index 0 is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000_000 / hz)
}

/// Summed CPU of several processes; None if none could be read.
pub fn procs_cpu_ns(pids: &[u32]) -> Option<u64> {
    let mut total = None;
    for &p in pids {
        if let Some(c) = proc_cpu_ns(p) {
            total = Some(total.unwrap_or(0) + c);
        }
    }
    total
}

#[derive(Clone, Copy, Default, Debug)]
pub struct Mem {
    pub rss_kb: u64,
    pub pss_kb: u64,
}

fn field_kb(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// VmRSS (status) and Pss (smaps_rollup) of a process.
pub fn proc_mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = field_kb(&status, "VmRSS:")?;
    let pss_kb = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| field_kb(&t, "Pss:"))
        .unwrap_or(0);
    Some(Mem { rss_kb, pss_kb })
}

/// Summed memory of several processes; None if none could be read.
pub fn procs_mem(pids: &[u32]) -> Option<Mem> {
    let mut total: Option<Mem> = None;
    for &p in pids {
        if let Some(m) = proc_mem(p) {
            let t = total.get_or_insert_with(Mem::default);
            t.rss_kb += m.rss_kb;
            t.pss_kb += m.pss_kb;
        }
    }
    total
}

pub fn mem_json(m: Option<Mem>) -> Value {
    match m {
        Some(m) => json!({"rss_kb": m.rss_kb, "pss_kb": m.pss_kb}),
        None => Value::Null,
    }
}

/// Pins the calling process to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity({cpu}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Per-CPU (busy, total) jiffies from /proc/stat.
pub fn cpu_jiffies() -> Vec<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            // idle + iowait are not busy.
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// Busy percentage of each CPU between two `cpu_jiffies` samples.
pub fn cores_busy(a: &[(u64, u64)], b: &[(u64, u64)]) -> Value {
    let v: Vec<Value> = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let total = y.1.saturating_sub(x.1);
            if total == 0 {
                Value::Null
            } else {
                json!((y.0.saturating_sub(x.0) as f64 * 1000.0 / total as f64).round() / 10.0)
            }
        })
        .collect();
    Value::Array(v)
}
