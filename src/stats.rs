//! Counters kept by the loop and the `/events/status` document.

use serde_json::{json, Map, Value};

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
    /// Sum and count of publish handling time, in microseconds.
    pub publish_us_sum: u64,
    pub publish_us_max: u64,
}

impl Stats {
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

pub struct Snapshot<'a> {
    pub stats: &'a Stats,
    pub hub: &'a Hub,
    pub cfg: &'a Config,
    pub connections: usize,
    pub max_connections: usize,
    pub uptime_secs: f64,
    pub draining: bool,
}

impl Snapshot<'_> {
    pub fn status_json(&self) -> Value {
        let s = self.stats;
        let mut channels = Map::new();
        for c in self.hub.iter().take(STATUS_CHANNELS) {
            channels.insert(c.name.to_string(), json!(c.subscribers.len()));
        }
        let mut rejected = Map::new();
        for (i, (_, name)) in REJECT_REASONS.iter().enumerate() {
            rejected.insert(name.to_string(), json!(s.rejected[i]));
        }
        json!({
            "status": if self.draining { "draining" } else { "running" },
            "version": env!("CARGO_PKG_VERSION"),
            "connections": self.connections,
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
            "limits": {
                "max_connections": self.max_connections,
                "max_connections_per_ip": self.cfg.max_connections_per_ip,
                "max_channels": self.cfg.max_channels,
                "history_bytes": self.cfg.history_bytes,
                "max_header_bytes": self.cfg.max_header_bytes,
                "max_body_bytes": self.cfg.max_body_bytes,
                "heartbeat_interval_seconds": self.cfg.heartbeat_interval.as_secs_f64(),
                "header_timeout_seconds": self.cfg.header_timeout.as_secs_f64(),
                "write_timeout_seconds": self.cfg.write_timeout.as_secs_f64(),
                "idle_timeout_seconds": self.cfg.idle_timeout.as_secs_f64(),
            },
            "uptime_seconds": self.uptime_secs,
        })
    }
}
