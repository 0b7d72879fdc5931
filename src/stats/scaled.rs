//! Redis mode's figures: the link's state for `/events/status` and its
//! series for `/metrics`.

use std::fmt::Write;

use serde_json::{json, Value};

use super::{Histogram, Stats, REDIS_BUCKETS_US};

/// The link, as status and metrics show it.
pub struct RedisView {
    /// `connected`, `connecting` or `down`.
    pub state: &'static str,
    /// Where Redis is (never the password).
    pub address: String,
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub followed: usize,
    pub publish_refused: u64,
}

impl RedisView {
    pub fn json(&self, s: &Stats) -> Value {
        let ms = |h: &Histogram| {
            json!({
                "count": h.count,
                "mean_ms": if h.count == 0 { 0.0 } else { h.sum_us as f64 / h.count as f64 / 1000.0 },
            })
        };
        json!({
            "state": self.state,
            "address": self.address,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "followed_channels": self.followed,
            "publishes_refused_unavailable": self.publish_refused,
            "replayed_from_redis": s.replayed_redis,
            "replayed_from_ring": s.replayed_ring,
            "publish_round_trip": ms(&s.redis_publish),
            "follow_lag": ms(&s.follow_lag),
        })
    }

    pub fn metrics(&self, s: &Stats, o: &mut String) {
        let up = u8::from(self.state == "connected");
        let _ = writeln!(
            o,
            "# HELP ssecast_redis_up Both Redis connections are ready (1) or not (0).\n\
             # TYPE ssecast_redis_up gauge\nssecast_redis_up {up}\n\
             # HELP ssecast_redis_reconnects_total Connections to Redis made ready (the first included).\n\
             # TYPE ssecast_redis_reconnects_total counter\nssecast_redis_reconnects_total {}\n\
             # HELP ssecast_redis_followed_channels Channels this process follows in Redis.\n\
             # TYPE ssecast_redis_followed_channels gauge\nssecast_redis_followed_channels {}\n\
             # HELP ssecast_replayed_events_total Events sent to resuming clients, by where they came from.\n\
             # TYPE ssecast_replayed_events_total counter\n\
             ssecast_replayed_events_total{{source=\"redis\"}} {}\n\
             ssecast_replayed_events_total{{source=\"ring\"}} {}",
            self.reconnects, self.followed, s.replayed_redis, s.replayed_ring
        );
        histogram(
            o,
            "ssecast_redis_publish_seconds",
            "Publish round trip to Redis (script sent to its reply).",
            &s.redis_publish,
        );
        histogram(
            o,
            "ssecast_redis_follow_lag_seconds",
            "From an event's append in Redis (its id, in microseconds) to its local append.",
            &s.follow_lag,
        );
    }
}

fn histogram(o: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (i, le) in REDIS_BUCKETS_US.iter().enumerate() {
        let _ = writeln!(
            o,
            "{name}_bucket{{le=\"{}\"}} {}",
            *le as f64 / 1e6,
            h.buckets[i]
        );
    }
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(o, "{name}_sum {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(o, "{name}_count {}", h.count);
}
