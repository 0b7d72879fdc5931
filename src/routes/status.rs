//! `GET /events/status` (alias `/sse/health`), `GET /health` and
//! `GET /metrics`: what the hub tells about itself.

use std::time::SystemTime;

use serde_json::json;

use super::{Reply, STATUS_CHANNEL, STATUS_TOTALS_CHANNEL};
use crate::stats::Snapshot;

/// The status channel a stream of the status document reads: with channel
/// names (`names`, see `routes::may_see_names`) or the totals only.
pub fn channel_for(names: bool) -> &'static str {
    if names {
        STATUS_CHANNEL
    } else {
        STATUS_TOTALS_CHANNEL
    }
}

/// The status document (JSON).
pub fn status(snapshot: &Snapshot<'_>, cors: &[String]) -> Reply {
    let body = serde_json::to_vec(&snapshot.status_json()).unwrap_or_default();
    Reply::json(200, body, &[], cors)
}

/// For orchestrators: 200 while running, 503 while draining.
/// `redis`: Redis mode's connection, up or not. Its being down is no
/// reason for a 503: every replica shares one Redis, and an orchestrator
/// would pull all of them at once; streams and replays from the rings go on.
pub fn health(draining: bool, streams: usize, redis: Option<bool>, cors: &[String]) -> Reply {
    let mut body = json!({
        "status": if draining { "draining" } else { "healthy" },
        "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "sse_connections": streams,
    });
    if let (Some(up), Some(o)) = (redis, body.as_object_mut()) {
        o.insert("redis".into(), json!(if up { "up" } else { "down" }));
    }
    let status = if draining { 503 } else { 200 };
    Reply::json(
        status,
        serde_json::to_vec(&body).unwrap_or_default(),
        &[],
        cors,
    )
}

/// Prometheus text format.
pub fn metrics(snapshot: &Snapshot<'_>, cors: &[String]) -> Reply {
    let mut headers = cors.to_vec();
    headers.push("Cache-Control: no-store".into());
    Reply {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: snapshot.metrics_text().into_bytes(),
        headers,
    }
}
