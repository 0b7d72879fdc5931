//! Readings of the whole machine for `--ramp` (many subscribers, added one
//! worker at a time): available memory, kernel slab, TCP sockets and their
//! buffer pages, and the RSS of the server and client processes.

use serde_json::{json, Value};

use crate::procstat::{now_ns, procs_mem};

fn meminfo_kb(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
        .and_then(|l| l[name.len() + 1..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `MemAvailable` from /proc/meminfo, in KiB.
pub fn mem_available_kb() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_kb(&t, "MemAvailable")
}

/// The value after `key` on the line starting with `proto` of a
/// /proc/net/sockstat text (`TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 2`).
pub fn sockstat(text: &str, proto: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(proto))?;
    let mut w = line.split_whitespace();
    while let Some(k) = w.next() {
        if k == key {
            return w.next()?.parse().ok();
        }
    }
    None
}

/// One reading: `subs` connected so far.
pub fn sample(subs: u64, server: &[u32], client: &[u32]) -> Value {
    let mi = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ss = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    json!({
        "subscribers": subs,
        "t_ns": now_ns(),
        "mem_available_kb": meminfo_kb(&mi, "MemAvailable"),
        "slab_kb": meminfo_kb(&mi, "Slab"),
        "sunreclaim_kb": meminfo_kb(&mi, "SUnreclaim"),
        "sockets_used": sockstat(&ss, "sockets:", "used"),
        "tcp_inuse": sockstat(&ss, "TCP:", "inuse"),
        "tcp_mem_pages": sockstat(&ss, "TCP:", "mem"),
        "server_rss_kb": procs_mem(server).map(|m| m.rss_kb),
        "client_rss_kb": procs_mem(client).map(|m| m.rss_kb),
    })
}

fn n(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0) as f64
}

/// Human form of a sample for the progress lines on stderr.
pub fn line(s: &Value) -> String {
    format!(
        "{} subscribers, MemAvailable {:.0} MiB, slab {:.0} MiB, TCP inuse {} mem {} pages, server RSS {:.1} MiB, client RSS {:.1} MiB",
        n(s, "subscribers"),
        n(s, "mem_available_kb") / 1024.0,
        n(s, "slab_kb") / 1024.0,
        n(s, "tcp_inuse"),
        n(s, "tcp_mem_pages"),
        n(s, "server_rss_kb") / 1024.0,
        n(s, "client_rss_kb") / 1024.0,
    )
}

/// Bytes per subscriber between the first and the last reading. Every
/// subscriber is two sockets on this machine (client and server end), so
/// the kernel figures cover both ends.
pub fn per_subscriber(samples: &[Value]) -> Value {
    let (Some(a), Some(b)) = (samples.first(), samples.last()) else {
        return Value::Null;
    };
    let subs = n(b, "subscribers") - n(a, "subscribers");
    if subs <= 0.0 {
        return Value::Null;
    }
    let d = |k: &str, unit: f64| ((n(b, k) - n(a, k)) * unit / subs).round();
    json!({
        "subscribers": subs,
        "server_rss_bytes": d("server_rss_kb", 1024.0),
        "client_rss_bytes": d("client_rss_kb", 1024.0),
        "kernel_slab_bytes_both_ends": d("slab_kb", 1024.0),
        "kernel_tcp_buffer_bytes_both_ends": d("tcp_mem_pages", 4096.0),
        "mem_available_drop_bytes": -d("mem_available_kb", 1024.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sockstat_and_meminfo_lines() {
        let ss =
            "sockets: used 130\nTCP: inuse 5 orphan 0 tw 2 alloc 7 mem 3\nUDP: inuse 1 mem 0\n";
        assert_eq!(sockstat(ss, "TCP:", "mem"), Some(3));
        assert_eq!(sockstat(ss, "TCP:", "inuse"), Some(5));
        assert_eq!(sockstat(ss, "sockets:", "used"), Some(130));
        let mi = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\nSlab:  123 kB\nSReclaimable: 5 kB\n";
        assert_eq!(meminfo_kb(mi, "MemAvailable"), Some(20_000_000));
        assert_eq!(meminfo_kb(mi, "Slab"), Some(123));
    }

    #[test]
    fn per_subscriber_takes_first_and_last() {
        let a = json!({"subscribers": 0, "slab_kb": 1000, "tcp_mem_pages": 0, "server_rss_kb": 100,
                       "client_rss_kb": 0, "mem_available_kb": 10000});
        let b = json!({"subscribers": 1024, "slab_kb": 3000, "tcp_mem_pages": 1, "server_rss_kb": 200,
                       "client_rss_kb": 300, "mem_available_kb": 4000});
        let p = per_subscriber(&[a, b]);
        assert_eq!(p["kernel_slab_bytes_both_ends"], json!(2000.0));
        assert_eq!(p["server_rss_bytes"], json!(100.0));
        assert_eq!(p["mem_available_drop_bytes"], json!(6000.0));
    }
}
