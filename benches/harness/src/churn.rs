//! `churn`: publishes one event to each of `--channels` channels that did
//! not exist before (`--channel`-0, -1, ...), `--batch` of them per request as
//! a JSON array, over `--publishers` keep-alive connections, each sending
//! its next request as soon as the last one is answered. Measures fresh
//! channels per second and the server's memory over the run (a hub that
//! frees and evicts channels stays flat), and reads the server's status
//! document at the end (ssecast: channel count, history memory and budget).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use serde_json::{json, Value};

use crate::args::Config;
use crate::procstat::{self, now_ns};
use crate::publish::{Inflight, Outcome, Publisher};

/// Memory samples kept in the report (evenly spread over the run).
const SAMPLES: usize = 40;

/// The request publishing to channels `first..first + count`.
pub fn churn_request(cfg: &Config, first: u64, count: usize, data: &str) -> Vec<u8> {
    let mut body = String::with_capacity(count * (data.len() + 48));
    body.push('[');
    for i in 0..count as u64 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"channel\":\"{}-{}\",\"data\":\"{data}\"}}",
            cfg.churn_prefix,
            first + i
        ));
    }
    body.push(']');
    let mut r = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        cfg.pub_path,
        cfg.pub_host_header,
        body.len()
    );
    for h in &cfg.pub_headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.push_str(&body);
    r.into_bytes()
}

#[derive(Default)]
struct Tally {
    ok: u64,
    requests: u64,
    /// Channels whose request was answered with another status, by status.
    refused: BTreeMap<u16, u64>,
    /// Channels whose request was lost with its connection.
    failed: u64,
    last_error: Option<String>,
}

impl Tally {
    fn take(&mut self, o: Outcome) {
        self.requests += 1;
        match o {
            Outcome::Answered {
                inflight,
                status: 200,
            } => self.ok += inflight.count as u64,
            Outcome::Answered { inflight, status } => {
                *self.refused.entry(status).or_insert(0) += inflight.count as u64
            }
            Outcome::Failed { inflight, reason } => {
                self.failed += inflight.count as u64;
                self.last_error = Some(reason);
            }
        }
    }

    fn answered(&self) -> u64 {
        self.ok + self.refused.values().sum::<u64>() + self.failed
    }
}

fn rss_kb(cfg: &Config) -> Option<u64> {
    procstat::procs_mem(&cfg.server_pids).map(|m| m.rss_kb)
}

/// GET the status document (ssecast's `/events/status`), outside the timed
/// part of the run; `Null` when there is none.
fn server_status(cfg: &Config) -> Value {
    let Ok(mut s) = StdStream::connect(cfg.server) else {
        return Value::Null;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "GET /events/status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        cfg.host_header
    );
    if s.write_all(req.as_bytes()).is_err() {
        return Value::Null;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Value::Null;
    };
    serde_json::from_slice(&buf[at + 4..]).unwrap_or(Value::Null)
}

pub fn run(cfg: &Config) -> i32 {
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sse-load churn: poll: {e}");
            return 3;
        }
    };
    let mut pubs: Vec<Publisher> = (0..cfg.publishers)
        .map(|i| Publisher::new(cfg.pub_server, Token(i), poll.registry()))
        .collect();
    let data = "x".repeat(cfg.data_bytes);
    let total = cfg.channels;
    let mut next = 0u64;
    let mut tally = Tally::default();
    let cpu0 = procstat::procs_cpu_ns(&cfg.server_pids);
    let rss_start = rss_kb(cfg);
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut rss_max = rss_start.unwrap_or(0);
    let sample_every = (total / SAMPLES as u64).max(1);
    let mut next_sample = sample_every;
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut events = Events::with_capacity(256);
    while tally.answered() < total && Instant::now() < deadline {
        for p in pubs.iter_mut() {
            if p.is_idle() && next < total {
                let count = (cfg.batch as u64).min(total - next) as usize;
                let req = churn_request(cfg, next, count, &data);
                let inflight = Inflight {
                    first: next,
                    count,
                    sent_ns: now_ns(),
                };
                next += count as u64;
                if let Some(o) = p.send(req, inflight) {
                    tally.take(o);
                }
            } else if p.is_dead() {
                p.revive(poll.registry());
            }
        }
        if pubs.iter().all(Publisher::is_dead) && next < total {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tally.last_error = Some(format!("poll: {e}"));
                break;
            }
        }
        for ev in events.iter() {
            if let Some(p) = pubs.get_mut(ev.token().0) {
                if let Some(o) = p.on_event(poll.registry()) {
                    tally.take(o);
                }
            }
        }
        if tally.answered() >= next_sample {
            if let Some(kb) = rss_kb(cfg) {
                samples.push((tally.answered(), kb * 1024));
                rss_max = rss_max.max(kb);
            }
            next_sample += sample_every;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, procstat::procs_cpu_ns(&cfg.server_pids)) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / 1e9),
        _ => None,
    };
    let rss_end = rss_kb(cfg);
    let status = server_status(cfg);
    let rate = tally.ok as f64 / elapsed.max(1e-9);
    let ok = tally.ok == total && tally.refused.is_empty() && tally.failed == 0;
    let refused: serde_json::Map<String, Value> = tally
        .refused
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let pick = |k: &str| status.get(k).cloned().unwrap_or(Value::Null);
    let report = json!({
        "mode": "churn",
        "label": cfg.label,
        "ok": ok,
        "config": {
            "channels": total,
            "batch": cfg.batch,
            "publishers": cfg.publishers,
            "data_bytes": cfg.data_bytes,
        },
        "channels_ok": tally.ok,
        "requests": tally.requests,
        "refused": refused,
        "failed": tally.failed,
        "error": tally.last_error,
        "elapsed_s": elapsed,
        "channels_per_s": rate,
        "server_cpu_s": cpu,
        "memory": {
            "rss_bytes_start": rss_start.map(|kb| kb * 1024),
            "rss_bytes_max": rss_max * 1024,
            "rss_bytes_end": rss_end.map(|kb| kb * 1024),
            "samples": samples.iter().map(|(n, b)| json!([n, b])).collect::<Vec<_>>(),
        },
        "status": {
            "channel_count": pick("channel_count"),
            "channels_created": pick("channels_created"),
            "channels_freed": pick("channels_freed"),
            "events_evicted": pick("events_evicted"),
            "history_memory_bytes": pick("history_memory_bytes"),
            "history_memory_budget_bytes": pick("history_memory_budget_bytes"),
        },
    });
    println!("{report}");
    let mib = |b: Option<u64>| b.map_or("?".to_string(), |kb| format!("{:.1}", kb as f64 / 1024.0));
    eprintln!(
        "sse-load {}: churn {} of {total} fresh channels in {elapsed:.2} s = {rate:.0}/s; \
         server RSS start {} MiB, max {} MiB, end {} MiB; refused {:?}, failed {}",
        cfg.label,
        tally.ok,
        mib(rss_start),
        mib(Some(rss_max)),
        mib(rss_end),
        tally.refused,
        tally.failed
    );
    if tally.ok == 0 {
        3
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Mode;

    #[test]
    fn a_churn_request_names_a_fresh_channel_per_event() {
        let args: Vec<String> = ["--channel", "job", "--server", "127.0.0.1:5009"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cfg = Config::parse(Mode::Churn, &args).expect("flags");
        let req = churn_request(&cfg, 41, 2, "d");
        let text = std::str::from_utf8(&req).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.starts_with("POST /events/broadcast HTTP/1.1\r\n"),
            "{head}"
        );
        let length = format!("Content-Length: {}", body.len());
        assert!(head.lines().any(|l| l == length), "{head}");
        let v: Value = serde_json::from_str(body).expect("JSON array");
        assert_eq!(
            v,
            json!([{"channel": "job-41", "data": "d"}, {"channel": "job-42", "data": "d"}])
        );
        assert_eq!(cfg.channels, 1_000_000);
        assert_eq!(cfg.batch, 100);
    }
}
