//! Turns what the phases measured into one JSON object (stdout) and one
//! human summary line (stderr), and picks the exit code.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::args::Config;
use crate::coord::{per_sub, PublishResult};
use crate::hist::Hist;
use crate::procstat::{mem_json, Mem};

pub struct Hold {
    pub wall_ns: u64,
    pub cores_busy_pct: Value,
    pub server_cpu_ns: Option<u64>,
    pub client_cpu_ns: u64,
    pub before: Vec<Value>,
    pub after: Vec<Value>,
}

#[derive(Default)]
pub struct Phases {
    pub mem_before: Option<Mem>,
    pub mem_after: Option<Mem>,
    pub mem_after_hold: Option<Mem>,
    pub mem_after_publish: Option<Mem>,
    pub connected: Vec<Value>,
    pub connect_wall_ns: u64,
    pub server_cpu_connect: Option<u64>,
    pub cores_connect: Value,
    pub cores_publish: Value,
    pub client_cpu_connect: u64,
    pub hold: Option<Hold>,
    pub server_cpu_publish: Option<u64>,
    /// `--aux-pid` (Redis, say): their CPU over the same window.
    pub aux_cpu_publish: Option<u64>,
    pub client_cpu_publish: u64,
    /// Wall time over which the two CPU figures above were taken: from the
    /// first publish to the end of the drain.
    pub publish_wall_ns: u64,
    pub stats_before_publish: Vec<Value>,
    pub finals: Vec<Value>,
    pub workers: usize,
    pub workers_lost: usize,
    pub client_cpu_total: u64,
    pub wall_ns: u64,
    pub setup_error: Option<String>,
    /// `--ramp`: subscribers of the workers started, and the readings.
    pub requested: Option<usize>,
    pub ramp: Option<Value>,
}

fn sum(vals: &[Value], key: &str) -> u64 {
    vals.iter().filter_map(|v| v.get(key)?.as_u64()).sum()
}

fn max_of(vals: &[Value], key: &str) -> u64 {
    vals.iter()
        .filter_map(|v| v.get(key)?.as_u64())
        .max()
        .unwrap_or(0)
}

fn min_nonzero(vals: &[Value], key: &str) -> u64 {
    vals.iter()
        .filter_map(|v| v.get(key)?.as_u64())
        .filter(|&x| x > 0)
        .min()
        .unwrap_or(0)
}

fn merge_maps(vals: &[Value], key: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for v in vals {
        if let Some(Value::Object(o)) = v.get(key) {
            for (k, n) in o {
                *m.entry(k.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    m
}

/// `--by-server-pid`: the workers' per-process groups merged by index.
/// Each entry: subscribers, and when `first_send` is given, what they got.
fn groups(vals: &[Value], first_send: Option<u64>, acked: u64) -> Value {
    let mut merged: Vec<(Value, u64, u64, u64, u64, u64, Hist)> = Vec::new();
    for v in vals {
        let Some(Value::Array(gs)) = v.get("groups") else {
            continue;
        };
        for (i, g) in gs.iter().enumerate() {
            if merged.len() <= i {
                merged.push((g["pid"].clone(), 0, 0, 0, 0, 0, Hist::new()));
            }
            let m = &mut merged[i];
            let n = |k: &str| g.get(k).and_then(Value::as_u64).unwrap_or(0);
            m.1 += n("subs");
            m.2 += n("deliveries");
            m.3 += n("unique");
            m.4 += n("lost");
            m.5 = m.5.max(n("last_rx_ns"));
            if let Some(h) = g.get("hist") {
                m.6.merge_sparse(h);
            }
        }
    }
    let v: Vec<Value> = merged
        .into_iter()
        .map(
            |(pid, subs, deliveries, unique, lost, last_rx, hist)| match first_send {
                None => json!({"pid": pid, "subscribers": subs}),
                Some(t0) => json!({
                    "pid": pid,
                    "subscribers": subs,
                    "expected": acked * subs,
                    "deliveries": deliveries,
                    "unique": unique,
                    "lost": lost,
                    "deliveries_per_s": rate(deliveries, last_rx.saturating_sub(t0)),
                    "latency_ns": hist.summary(),
                }),
            },
        )
        .collect();
    Value::Array(v)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn rate(n: u64, ns: u64) -> Value {
    if ns == 0 {
        Value::Null
    } else {
        json!((n as f64 / secs(ns) * 10.0).round() / 10.0)
    }
}

fn pct(cpu: Option<u64>, wall: u64) -> Value {
    match cpu {
        Some(c) if wall > 0 => json!((c as f64 * 1000.0 / wall as f64).round() / 10.0),
        _ => Value::Null,
    }
}

fn ms(ns: u64) -> String {
    format!("{:.2}ms", ns as f64 / 1e6)
}

fn config_json(cfg: &Config) -> Value {
    json!({
        "preset": cfg.preset,
        "sub_path": cfg.sub_path,
        "sub_servers": cfg.sub_servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "pub_path": cfg.pub_path,
        "subscribers": cfg.subscribers,
        "per_worker": cfg.per_worker,
        "sources": cfg.sources,
        "connect_concurrency": cfg.connect_concurrency,
        "events": cfg.events,
        "rate": cfg.rate,
        "publishers": cfg.publishers,
        "batch": cfg.batch,
        "hold_s": cfg.hold.as_secs_f64(),
        "duration_cap_s": cfg.duration.as_secs_f64(),
        "server_pids": cfg.server_pids,
        "aux_pids": cfg.aux_pids,
        "by_server_pid": cfg.by_server_pid,
    })
}

pub fn setup_failure(cfg: &Config, err: &str) -> i32 {
    let v = json!({
        "tool": "sse-load",
        "mode": format!("{:?}", cfg.mode).to_lowercase(),
        "label": cfg.label,
        "server": cfg.server.to_string(),
        "ok": false,
        "error": err,
        "config": config_json(cfg),
    });
    println!("{v}");
    eprintln!("sse-load: setup failed: {err}");
    3
}

/// Prints the report; returns the exit code.
pub fn emit(cfg: &Config, ph: &Phases, publish: Option<&PublishResult>) -> i32 {
    let mut out = Map::new();
    let mut line = Vec::new();
    out.insert("tool".into(), json!("sse-load"));
    out.insert(
        "mode".into(),
        json!(format!("{:?}", cfg.mode).to_lowercase()),
    );
    out.insert("label".into(), json!(cfg.label));
    out.insert("server".into(), json!(cfg.server.to_string()));
    out.insert("config".into(), config_json(cfg));

    // Connect phase.
    let ok = sum(&ph.connected, "ok");
    let failed = merge_maps(&ph.connected, "failed");
    let failed_total: u64 = failed.values().sum();
    let first = min_nonzero(&ph.connected, "first_ns");
    let last = max_of(&ph.connected, "last_ns");
    let span = last.saturating_sub(first);
    let mut chist = Hist::new();
    for c in &ph.connected {
        if let Some(h) = c.get("hist") {
            chist.merge_sparse(h);
        }
    }
    let requested = ph.requested.unwrap_or(cfg.subscribers) as u64;
    let unreported = requested - (ok + failed_total).min(requested);
    out.insert(
        "connect".into(),
        json!({
            "requested": requested,
            "ok": ok,
            "failed": failed_total + unreported,
            "failed_by_reason": failed,
            "unresolved": unreported,
            "seconds": secs(span),
            "rate_per_s": rate(ok, span),
            "time_to_headers_ns": chist.summary(),
            "workers": ph.workers,
            "server_cpu_s": ph.server_cpu_connect.map(secs),
            "server_cpu_pct": pct(ph.server_cpu_connect, span),
            "client_cpu_s": secs(ph.client_cpu_connect),
            "cores_busy_pct": ph.cores_connect,
        }),
    );
    line.push(format!(
        "{ok}/{requested} subscribers in {:.2}s ({}/s)",
        secs(span),
        rate(ok, span)
    ));
    if failed_total + unreported > 0 {
        line.push(format!("failed {failed:?}"));
    }
    if cfg.by_server_pid {
        let g = groups(&ph.connected, None, 0);
        let counts: Vec<String> = g
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{}: {}", x["pid"], x["subscribers"]))
            .collect();
        line.push(format!("per server process {}", counts.join(", ")));
        out["connect"]["by_server_pid"] = g;
    }

    // Memory.
    let mut mem = json!({
        "before": mem_json(ph.mem_before),
        "after_connect": mem_json(ph.mem_after),
        "rss_bytes_per_subscriber": per_sub(ph.mem_before, ph.mem_after, ok, false),
        "pss_bytes_per_subscriber": per_sub(ph.mem_before, ph.mem_after, ok, true),
    });
    if ph.mem_after_hold.is_some() {
        mem["after_hold"] = mem_json(ph.mem_after_hold);
    }
    if ph.mem_after_publish.is_some() {
        mem["after_publish"] = mem_json(ph.mem_after_publish);
    }
    if let Some(b) = per_sub(ph.mem_before, ph.mem_after, ok, false).as_f64() {
        line.push(format!("rss {b} B/sub"));
    }
    out.insert("memory".into(), mem);

    // Hold (idle cost).
    if let Some(h) = &ph.hold {
        let hb = sum(&h.after, "heartbeats").saturating_sub(sum(&h.before, "heartbeats"));
        let live = sum(&h.after, "live");
        let per_min = if live > 0 && h.wall_ns > 0 {
            json!((hb as f64 / live as f64 / (secs(h.wall_ns) / 60.0) * 100.0).round() / 100.0)
        } else {
            Value::Null
        };
        out.insert(
            "hold".into(),
            json!({
                "seconds": secs(h.wall_ns),
                "live_subscribers_at_end": live,
                "heartbeats": hb,
                "heartbeats_per_subscriber_per_min": per_min,
                "disconnects": merge_maps(&h.after, "disconnects"),
                "server_cpu_s": h.server_cpu_ns.map(secs),
                "server_cpu_pct": pct(h.server_cpu_ns, h.wall_ns),
                "client_cpu_pct": pct(Some(h.client_cpu_ns), h.wall_ns),
                "cores_busy_pct": h.cores_busy_pct,
            }),
        );
        line.push(format!(
            "idle {:.0}s: server cpu {}%, {hb} heartbeats",
            secs(h.wall_ns),
            pct(h.server_cpu_ns, h.wall_ns)
        ));
    }

    let mut exit = 0;
    if let Some(e) = &ph.setup_error {
        out.insert("setup_error".into(), json!(e));
        line.push(format!("SETUP FAILED: {e}"));
        exit = 3;
    }

    // Publish and delivery.
    if let Some(p) = publish {
        let pub_span = p.last_ack.saturating_sub(p.first_send);
        out.insert(
            "publish".into(),
            json!({
                "events_attempted": p.attempted,
                "events_acked": p.acked,
                "requests": p.requests,
                "errors": p.errors,
                "seconds": secs(pub_span),
                "events_per_s": rate(p.acked, pub_span),
                "requests_per_s": rate(p.requests, pub_span),
                "ack_rtt_ns": p.rtt.summary(),
                "late_sends": p.late_sends,
                "max_late_ns": p.max_late_ns,
                "publishers_dead_at_end": p.publishers_dead,
            }),
        );
        let mut hist = Hist::new();
        for f in &ph.finals {
            if let Some(h) = f.get("hist") {
                hist.merge_sparse(h);
            }
        }
        let before = &ph.stats_before_publish;
        let deliveries = sum(&ph.finals, "deliveries").saturating_sub(sum(before, "deliveries"));
        let unique = sum(&ph.finals, "unique").saturating_sub(sum(before, "unique"));
        let last_rx = max_of(&ph.finals, "last_rx_ns");
        let span = last_rx.saturating_sub(p.first_send);
        let lost = sum(&ph.finals, "lost");
        let dup = sum(&ph.finals, "duplicated");
        let ooo = sum(&ph.finals, "out_of_order");
        let lat = hist.summary();
        let q = |k: &str| lat.get(k).and_then(Value::as_u64).unwrap_or(0);
        // CPU over the window it was measured in (publish + drain), not over
        // the delivery span: when deliveries stop early (a server that
        // drops), the span is short but the server may have kept working.
        let client_pct = pct(Some(ph.client_cpu_publish), ph.publish_wall_ns);
        let client_saturated = client_pct.as_f64().is_some_and(|c| c >= 90.0);
        out.insert(
            "delivery".into(),
            json!({
                "expected": p.acked * ok,
                "deliveries": deliveries,
                "unique": unique,
                "seconds": secs(span),
                "deliveries_per_s": rate(deliveries, span),
                "drained": p.drained,
                "latency_ns": lat,
                "lost": lost,
                "subs_with_loss": sum(&ph.finals, "subs_with_loss"),
                "max_lost_per_sub": max_of(&ph.finals, "max_lost_per_sub"),
                "duplicated": dup,
                "subs_with_dup": sum(&ph.finals, "subs_with_dup"),
                "out_of_order": ooo,
                "subs_with_ooo": sum(&ph.finals, "subs_with_ooo"),
                "reordered_concurrent": sum(&ph.finals, "reordered_concurrent"),
                "other_events": sum(&ph.finals, "other_events"),
                "heartbeats": sum(&ph.finals, "heartbeats").saturating_sub(sum(before, "heartbeats")),
                "disconnects": merge_maps(&ph.finals, "disconnects"),
                "server_cpu_s": ph.server_cpu_publish.map(secs),
                "server_cpu_pct": pct(ph.server_cpu_publish, ph.publish_wall_ns),
                "aux_pids": cfg.aux_pids,
                "aux_cpu_s": ph.aux_cpu_publish.map(secs),
                "aux_cpu_pct": pct(ph.aux_cpu_publish, ph.publish_wall_ns),
                "aux_cpu_ns_per_event": match ph.aux_cpu_publish {
                    Some(c) if p.acked > 0 => json!(c / p.acked),
                    _ => Value::Null,
                },
                "cpu_window_s": secs(ph.publish_wall_ns),
                "client_cpu_s": secs(ph.client_cpu_publish),
                "client_cpu_pct": client_pct,
                "client_saturated": client_saturated,
                "cores_busy_pct": ph.cores_publish,
            }),
        );
        if cfg.by_server_pid {
            let g = groups(&ph.finals, Some(p.first_send), p.acked);
            for x in g.as_array().into_iter().flatten() {
                let l = |k: &str| x["latency_ns"].get(k).and_then(Value::as_u64).unwrap_or(0);
                line.push(format!(
                    "pid {}: {} deliveries ({}/s) p50 {} p99 {} lost {}",
                    x["pid"],
                    x["deliveries"],
                    x["deliveries_per_s"],
                    ms(l("p50")),
                    ms(l("p99")),
                    x["lost"]
                ));
            }
            out["delivery"]["by_server_pid"] = g;
        }
        line.push(format!(
            "{} events acked ({}/s) -> {deliveries} deliveries in {:.2}s ({}/s), latency p50 {} p99 {} p99.9 {} max {}, lost {lost} dup {dup} ooo {ooo}; cpu server {}% client {}%{}",
            p.acked,
            rate(p.acked, pub_span),
            secs(span),
            rate(deliveries, span),
            ms(q("p50")),
            ms(q("p99")),
            ms(q("p999")),
            ms(q("max")),
            pct(ph.server_cpu_publish, span),
            client_pct,
            if client_saturated { " (CLIENT-BOUND)" } else { "" },
        ));
        if p.acked == 0 {
            exit = 3;
            line.push(format!("no event acknowledged: {:?}", p.errors));
        }
    }

    let heartbeats_total = sum(&ph.finals, "heartbeats");
    out.insert(
        "totals".into(),
        json!({
            "heartbeats": heartbeats_total,
            "retry_fields": sum(&ph.finals, "retries"),
            "disconnects": merge_maps(&ph.finals, "disconnects"),
            "workers_lost": ph.workers_lost,
            "client_cpu_s": secs(ph.client_cpu_total),
            "wall_s": secs(ph.wall_ns),
        }),
    );
    if let Some(r) = &ph.ramp {
        let mut r = r.clone();
        let per = crate::ramp::per_subscriber(r["samples"].as_array().map_or(&[], |v| v));
        line.push(format!(
            "ramp stopped by: {}; per subscriber {per}",
            r["stopped_by"]
        ));
        r["per_subscriber"] = per;
        out.insert("ramp".into(), r);
    }
    let failed_all = requested.saturating_sub(ok);
    if failed_all > cfg.max_failures as u64 || ph.workers_lost > 0 {
        exit = 3;
    }
    out.insert("ok".into(), json!(exit == 0));
    println!("{}", Value::Object(out));
    eprintln!("sse-load {}: {}", cfg.label, line.join("; "));
    exit
}
