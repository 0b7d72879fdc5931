//! `sse-load table NAME=RESULTS.json ...`: a markdown table comparing the
//! combined result files written by scripts/compare.sh (`{"runs": {...}}`),
//! with the ratio first/other for every other column.

use serde_json::Value;

/// (run, JSON pointer inside the run, label).
const METRICS: &[(&str, &str, &str)] = &[
    ("density", "/connect/ok", "subscribers connected"),
    (
        "density",
        "/connect/rate_per_s",
        "connect rate (subscribers/s)",
    ),
    (
        "density",
        "/connect/time_to_headers_ns/p99",
        "time to headers p99 (ns)",
    ),
    (
        "density",
        "/memory/rss_bytes_per_subscriber",
        "RSS per subscriber (bytes)",
    ),
    (
        "density",
        "/memory/pss_bytes_per_subscriber",
        "PSS per subscriber (bytes)",
    ),
    (
        "density",
        "/memory/after_connect/rss_kb",
        "RSS with subscribers (KiB)",
    ),
    (
        "fanout",
        "/delivery/deliveries_per_s",
        "fan-out deliveries/s",
    ),
    (
        "fanout",
        "/publish/events_per_s",
        "fan-out events acknowledged/s",
    ),
    (
        "fanout",
        "/delivery/latency_ns/p50",
        "fan-out latency p50 (ns)",
    ),
    (
        "fanout",
        "/delivery/latency_ns/p99",
        "fan-out latency p99 (ns)",
    ),
    ("fanout", "/delivery/server_cpu_pct", "fan-out server CPU %"),
    ("fanout", "/delivery/client_cpu_pct", "fan-out client CPU %"),
    (
        "fanout",
        "/delivery/aux_cpu_pct",
        "fan-out Redis CPU % (--aux-pid)",
    ),
    ("fanout", "/delivery/lost", "fan-out lost deliveries"),
    (
        "fanout",
        "/delivery/out_of_order",
        "fan-out out-of-order deliveries",
    ),
    ("latency", "/delivery/latency_ns/p50", "latency p50 (ns)"),
    ("latency", "/delivery/latency_ns/p99", "latency p99 (ns)"),
    ("latency", "/delivery/latency_ns/p999", "latency p99.9 (ns)"),
    ("latency", "/delivery/latency_ns/max", "latency max (ns)"),
    (
        "latency",
        "/delivery/server_cpu_pct",
        "latency run server CPU %",
    ),
    ("latency", "/delivery/lost", "latency run lost deliveries"),
    (
        "latency",
        "/delivery/aux_cpu_pct",
        "latency run Redis CPU % (--aux-pid)",
    ),
    ("idle", "/hold/server_cpu_pct", "idle server CPU %"),
    (
        "idle",
        "/hold/heartbeats_per_subscriber_per_min",
        "idle heartbeats per subscriber per min",
    ),
    (
        "idle",
        "/memory/rss_bytes_per_subscriber",
        "idle RSS per subscriber (bytes)",
    ),
];

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x.abs() >= 100.0 || x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut cols: Vec<(String, Value)> = Vec::new();
    for a in args {
        let (name, path) = a
            .split_once('=')
            .ok_or_else(|| format!("want NAME=FILE, got {a:?}"))?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        cols.push((name.to_string(), v));
    }
    if cols.is_empty() {
        return Err("usage: sse-load table NAME=FILE.json [NAME=FILE.json ...]".into());
    }
    let first = cols[0].0.clone();
    let mut head = String::from("| metric |");
    let mut rule = String::from("|---|");
    for (n, _) in &cols {
        head.push_str(&format!(" {n} |"));
        rule.push_str("---:|");
    }
    for (n, _) in cols.iter().skip(1) {
        head.push_str(&format!(" {first}/{n} |"));
        rule.push_str("---:|");
    }
    println!("{head}\n{rule}");
    for (run, ptr, label) in METRICS {
        let vals: Vec<Option<f64>> = cols
            .iter()
            .map(|(_, v)| {
                v.pointer(&format!("/runs/{run}{ptr}"))
                    .and_then(Value::as_f64)
            })
            .collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let mut row = format!("| {label} |");
        for v in &vals {
            row.push_str(&format!(" {} |", fmt(*v)));
        }
        for v in vals.iter().skip(1) {
            let ratio = match (vals[0], v) {
                (Some(a), Some(b)) if *b != 0.0 => format!("{:.2}", a / b),
                _ => "—".into(),
            };
            row.push_str(&format!(" {ratio} |"));
        }
        println!("{row}");
    }
    Ok(())
}
