//! Counters kept by the loop and the `/events/status` document.

use serde_json::{json, Map, Value};

mod scaled;

pub use scaled::RedisView;

use crate::channel::Hub;
use crate::config::Config;

/// Why a connection or request was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    ConnectionLimit,
    PerIpLimit,
    ChannelLimit,
    HeaderTimeout,
    BadRequest,
    Unauthorized,
    Forbidden,
    TooLarge,
    NotFound,
    ShuttingDown,
}

pub const REJECT_REASONS: [(Reject, &str); 10] = [
    (Reject::ConnectionLimit, "connection_limit"),
    (Reject::PerIpLimit, "per_ip_limit"),
    (Reject::ChannelLimit, "channel_limit"),
    (Reject::HeaderTimeout, "header_timeout"),
    (Reject::BadRequest, "bad_request"),
    (Reject::Unauthorized, "unauthorized"),
    (Reject::Forbidden, "forbidden"),
    (Reject::TooLarge, "too_large"),
    (Reject::NotFound, "not_found"),
    (Reject::ShuttingDown, "shutting_down"),
];

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub connections_accepted: u64,
    pub requests: u64,
    pub events_published: u64,
    pub publish_requests: u64,
    pub deliveries: u64,
    pub bytes_written: u64,
    pub heartbeats: u64,
    pub slow_consumers_dropped: u64,
    pub stalled_consumers_dropped: u64,
    pub history_lost_sent: u64,
    pub accept_errors: u64,
    pub rejected: [u64; 10],
    /// Publish handling time: sum in microseconds and a histogram.
    pub publish_us_sum: u64,
    pub publish_us_max: u64,
    pub publish_buckets: [u64; PUBLISH_BUCKETS_US.len()],
    /// Redis mode: publish round trip to Redis, and follow lag (from the
    /// append in Redis, its id, to the local append).
    pub redis_publish: Histogram,
    pub follow_lag: Histogram,
    /// Events sent to resuming clients from Redis, and from the ring.
    pub replayed_redis: u64,
    pub replayed_ring: u64,
}

/// Upper bounds (microseconds) of the Redis histograms' buckets.
pub const REDIS_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000, 5_000_000,
];

/// A latency histogram in microseconds (cumulative buckets, as Prometheus).
#[derive(Default, Debug, Clone)]
pub struct Histogram {
    pub count: u64,
    pub sum_us: u64,
    pub buckets: [u64; REDIS_BUCKETS_US.len()],
}

impl Histogram {
    pub fn observe(&mut self, us: u64) {
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        for (i, le) in REDIS_BUCKETS_US.iter().enumerate() {
            if us <= *le {
                self.buckets[i] += 1;
            }
        }
    }
}

/// Upper bounds (microseconds) of the publish-latency histogram buckets.
pub const PUBLISH_BUCKETS_US: [u64; 10] = [10, 25, 50, 100, 250, 500, 1000, 5000, 25000, 100000];

impl Stats {
    pub fn observe_publish(&mut self, us: u64) {
        self.publish_us_sum += us;
        self.publish_us_max = self.publish_us_max.max(us);
        for (i, le) in PUBLISH_BUCKETS_US.iter().enumerate() {
            if us <= *le {
                self.publish_buckets[i] += 1;
            }
        }
    }

    pub fn reject(&mut self, why: Reject) {
        if let Some(i) = REJECT_REASONS.iter().position(|(r, _)| *r == why) {
            self.rejected[i] += 1;
        }
    }

    pub fn rejected(&self, why: Reject) -> u64 {
        REJECT_REASONS
            .iter()
            .position(|(r, _)| *r == why)
            .map_or(0, |i| self.rejected[i])
    }
}

/// Most channels listed by name in the status document.
pub const STATUS_CHANNELS: usize = 1000;

/// Most channels given their own label in `/metrics`; the rest are summed
/// under `channel="$other"` (a reserved name no client can create), so a
/// scrape's cardinality stays bounded.
pub const METRICS_CHANNELS: usize = 100;

pub struct Snapshot<'a> {
    pub stats: &'a Stats,
    pub hub: &'a Hub,
    pub cfg: &'a Config,
    pub connections: usize,
    pub max_connections: usize,
    pub accept_cap: usize,
    pub uptime_secs: f64,
    pub draining: bool,
    /// Channel names may be shown (`routes::may_see_names`); otherwise
    /// only totals.
    pub names: bool,
    /// Forward auth, when configured.
    pub auth: Option<crate::outbound::auth::AuthView>,
    /// Redis mode, when configured.
    pub redis: Option<RedisView>,
}

impl Snapshot<'_> {
    pub fn status_json(&self) -> Value {
        let s = self.stats;
        let lc = self.hub.counts();
        let mut channels = Map::new();
        for c in self
            .hub
            .iter()
            .take(if self.names { STATUS_CHANNELS } else { 0 })
        {
            channels.insert(c.name.to_string(), json!(c.subscribers.len()));
        }
        let mut rejected = Map::new();
        for (i, (_, name)) in REJECT_REASONS.iter().enumerate() {
            rejected.insert(name.to_string(), json!(s.rejected[i]));
        }
        let mut doc = json!({
            "status": if self.draining { "draining" } else { "running" },
            "version": env!("CARGO_PKG_VERSION"),
            // `active` is open streams (what `/health` calls
            // `sse_connections`); `open` counts every open connection, this
            // request included.
            "connections": {
                "active": self.hub.subscriber_count(),
                "open": self.connections,
                "accepted": s.connections_accepted,
            },
            "subscribers": self.hub.subscriber_count(),
            "channel_count": self.hub.len(),
            "channels": channels,
            "channels_truncated": self.hub.len() > STATUS_CHANNELS,
            "events_published": s.events_published,
            "deliveries": s.deliveries,
            "bytes_written": s.bytes_written,
            "heartbeats": s.heartbeats,
            "slow_consumers_dropped": s.slow_consumers_dropped + s.stalled_consumers_dropped,
            "slow_consumers": {
                "behind_history": s.slow_consumers_dropped,
                "write_stalled": s.stalled_consumers_dropped,
            },
            "history_lost_sent": s.history_lost_sent,
            "connections_accepted": s.connections_accepted,
            "requests": s.requests,
            "rejected": rejected,
            "history_memory_bytes": self.hub.memory(),
            "history_memory_budget_bytes": self.hub.limits().history_memory,
            "channels_created": lc.channels_created,
            "channels_freed": {
                "idle": lc.freed_idle,
                "evicted": lc.freed_evicted,
            },
            "events_evicted": {
                "size": lc.evicted_size,
                "age": lc.evicted_age,
                "budget": lc.evicted_budget,
            },
            "limits": {
                "max_connections": self.max_connections,
                "max_open_connections": self.accept_cap,
                "max_connections_per_ip": self.cfg.max_connections_per_ip,
                "max_channels": self.cfg.max_channels,
                "history_bytes": self.cfg.history_bytes,
                "history_memory": self.cfg.history_memory,
                "history_ttl_seconds": self.cfg.history_ttl.as_secs_f64(),
                "max_header_bytes": self.cfg.max_header_bytes,
                "max_body_bytes": self.cfg.max_body_bytes,
                "heartbeat_interval_seconds": self.cfg.heartbeat_interval.as_secs_f64(),
                "header_timeout_seconds": self.cfg.header_timeout.as_secs_f64(),
                "write_timeout_seconds": self.cfg.write_timeout.as_secs_f64(),
                "idle_timeout_seconds": self.cfg.idle_timeout.as_secs_f64(),
            },
            "uptime_seconds": self.uptime_secs,
        });
        if !self.names {
            if let Some(o) = doc.as_object_mut() {
                o.remove("channels");
                o.remove("channels_truncated");
            }
        }
        if let (Some(a), Some(obj)) = (&self.auth, doc.as_object_mut()) {
            obj.insert("forward_auth".into(), a.json());
        }
        if let (Some(r), Some(obj)) = (&self.redis, doc.as_object_mut()) {
            obj.insert("redis".into(), r.json(s));
        }
        doc
    }
}

impl Snapshot<'_> {
    /// Prometheus text exposition format, version 0.0.4.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let s = self.stats;
        let mut o = String::with_capacity(4096);
        let metric = |o: &mut String, name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            &mut o,
            "ssecast_connections",
            "gauge",
            "Open client connections.",
            self.connections as f64,
        );
        metric(
            &mut o,
            "ssecast_subscribers",
            "gauge",
            "Open event streams.",
            self.hub.subscriber_count() as f64,
        );
        metric(
            &mut o,
            "ssecast_channels",
            "gauge",
            "Channels that exist.",
            self.hub.len() as f64,
        );
        metric(
            &mut o,
            "ssecast_max_connections",
            "gauge",
            "Connection limit in force.",
            self.max_connections as f64,
        );
        metric(
            &mut o,
            "ssecast_uptime_seconds",
            "gauge",
            "Seconds since start.",
            self.uptime_secs,
        );
        metric(
            &mut o,
            "ssecast_history_memory_bytes",
            "gauge",
            "Memory held by channel histories.",
            self.hub.memory() as f64,
        );
        metric(
            &mut o,
            "ssecast_history_memory_budget_bytes",
            "gauge",
            "Memory all channel histories together may hold (--history-memory).",
            self.hub.limits().history_memory as f64,
        );
        let lc = self.hub.counts();
        metric(
            &mut o,
            "ssecast_channels_created_total",
            "counter",
            "Channels created (by a publish or a subscribe).",
            lc.channels_created as f64,
        );
        let _ = writeln!(o, "# HELP ssecast_channels_freed_total Channels freed: idle (no subscribers, no history) or evicted at --max-channels.\n# TYPE ssecast_channels_freed_total counter");
        for (reason, n) in [("idle", lc.freed_idle), ("evicted", lc.freed_evicted)] {
            let _ = writeln!(o, "ssecast_channels_freed_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP ssecast_events_evicted_total Events dropped from history: channel full (size), older than --history-ttl (age), over --history-memory (budget).\n# TYPE ssecast_events_evicted_total counter");
        for (reason, n) in [
            ("size", lc.evicted_size),
            ("age", lc.evicted_age),
            ("budget", lc.evicted_budget),
        ] {
            let _ = writeln!(o, "ssecast_events_evicted_total{{reason=\"{reason}\"}} {n}");
        }
        metric(
            &mut o,
            "ssecast_connections_accepted_total",
            "counter",
            "Connections accepted.",
            s.connections_accepted as f64,
        );
        metric(
            &mut o,
            "ssecast_requests_total",
            "counter",
            "HTTP requests handled.",
            s.requests as f64,
        );
        metric(
            &mut o,
            "ssecast_events_published_total",
            "counter",
            "Events published.",
            s.events_published as f64,
        );
        metric(
            &mut o,
            "ssecast_deliveries_total",
            "counter",
            "Events written completely to a subscriber.",
            s.deliveries as f64,
        );
        metric(
            &mut o,
            "ssecast_bytes_written_total",
            "counter",
            "Bytes written to clients.",
            s.bytes_written as f64,
        );
        metric(
            &mut o,
            "ssecast_heartbeats_total",
            "counter",
            "Heartbeat comments sent.",
            s.heartbeats as f64,
        );
        metric(
            &mut o,
            "ssecast_history_lost_total",
            "counter",
            "history-lost events sent to resuming clients.",
            s.history_lost_sent as f64,
        );
        metric(
            &mut o,
            "ssecast_accept_errors_total",
            "counter",
            "accept() failures (e.g. out of file descriptors).",
            s.accept_errors as f64,
        );

        let _ = writeln!(o, "# HELP ssecast_slow_consumers_dropped_total Subscribers closed for not keeping up.\n# TYPE ssecast_slow_consumers_dropped_total counter");
        let _ = writeln!(
            o,
            "ssecast_slow_consumers_dropped_total{{reason=\"behind_history\"}} {}",
            s.slow_consumers_dropped
        );
        let _ = writeln!(
            o,
            "ssecast_slow_consumers_dropped_total{{reason=\"write_stalled\"}} {}",
            s.stalled_consumers_dropped
        );

        let _ = writeln!(o, "# HELP ssecast_rejected_total Connections and requests refused, by reason.\n# TYPE ssecast_rejected_total counter");
        for (i, (_, name)) in REJECT_REASONS.iter().enumerate() {
            let _ = writeln!(
                o,
                "ssecast_rejected_total{{reason=\"{name}\"}} {}",
                s.rejected[i]
            );
        }

        if self.names {
            self.channel_series(&mut o);
        }
        self.publish_histogram(&mut o);
        if let Some(a) = &self.auth {
            a.metrics(&mut o);
        }
        if let Some(r) = &self.redis {
            r.metrics(s, &mut o);
        }
        o
    }

    /// One gauge per channel (the largest), the rest as `$other`.
    fn channel_series(&self, o: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(o, "# HELP ssecast_channel_subscribers Open streams per channel (largest {METRICS_CHANNELS}; the rest as $other).\n# TYPE ssecast_channel_subscribers gauge");
        let mut chans: Vec<(&str, usize)> = self
            .hub
            .iter()
            .map(|c| (&*c.name, c.subscribers.len()))
            .collect();
        chans.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (name, n) in chans.iter().take(METRICS_CHANNELS) {
            let _ = writeln!(
                o,
                "ssecast_channel_subscribers{{channel=\"{}\"}} {n}",
                label_escape(name)
            );
        }
        if chans.len() > METRICS_CHANNELS {
            let rest: usize = chans[METRICS_CHANNELS..].iter().map(|c| c.1).sum();
            let _ = writeln!(
                o,
                "ssecast_channel_subscribers{{channel=\"$other\"}} {rest}"
            );
        }
    }

    fn publish_histogram(&self, o: &mut String) {
        use std::fmt::Write;
        let s = self.stats;

        let _ = writeln!(o, "# HELP ssecast_publish_duration_seconds Time to handle a publish request.\n# TYPE ssecast_publish_duration_seconds histogram");
        for (i, le) in PUBLISH_BUCKETS_US.iter().enumerate() {
            let _ = writeln!(
                o,
                "ssecast_publish_duration_seconds_bucket{{le=\"{}\"}} {}",
                *le as f64 / 1e6,
                s.publish_buckets[i]
            );
        }
        let _ = writeln!(
            o,
            "ssecast_publish_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            s.publish_requests
        );
        let _ = writeln!(
            o,
            "ssecast_publish_duration_seconds_sum {}",
            s.publish_us_sum as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "ssecast_publish_duration_seconds_count {}",
            s.publish_requests
        );
    }
}

/// Escapes a Prometheus label value: backslash, double quote, newline.
pub fn label_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_escape(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut s = Stats::default();
        s.observe_publish(30);
        s.observe_publish(2000);
        assert_eq!(s.publish_buckets[0], 0);
        assert_eq!(s.publish_buckets[2], 1);
        assert_eq!(s.publish_buckets[PUBLISH_BUCKETS_US.len() - 1], 2);
    }
}
