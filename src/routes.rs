//! Routing and the request handlers: subscribe, publish, status, health,
//! CORS preflight. Each handler leaves a response in the connection's `out`,
//! or turns the connection into a subscriber.

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use crate::channel::Resume;
use crate::config::canonical;
use crate::conn::{Phase, Subscriber};
use crate::http::{self, HttpError, Request, Response};
use crate::server::Server;
use crate::sse;
use crate::stats::{Reject, Snapshot};

pub const DEFAULT_CHANNEL: &str = "default";

/// The history-lost event's name (documented in the README).
pub const HISTORY_LOST: &str = "history-lost";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Stream,
    Broadcast,
    Status,
    StatusStream,
    Health,
    Metrics,
    Ui,
    Favicon,
    NotFound,
}

/// The channel the hub publishes its own status to, once a second while it
/// has subscribers. Names starting with `$` are reserved for the hub.
pub const STATUS_CHANNEL: &str = "$status";

/// The built-in page.
pub const UI_PAGE: &str = include_str!("ui/index.html");

impl Route {
    pub fn of(path: &str) -> Route {
        match path {
            "/events" | "/sse" => Route::Stream,
            "/events/broadcast" => Route::Broadcast,
            "/events/status" | "/sse/health" => Route::Status,
            "/events/status/stream" => Route::StatusStream,
            "/health" => Route::Health,
            "/metrics" => Route::Metrics,
            "/" => Route::Ui,
            "/favicon.ico" => Route::Favicon,
            _ => Route::NotFound,
        }
    }

    /// The methods this route answers, for `Allow`.
    pub fn allow(self) -> &'static str {
        match self {
            Route::Broadcast => "POST, OPTIONS",
            Route::NotFound => "",
            _ => "GET, OPTIONS",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Route::Broadcast => "POST",
            _ => "GET",
        }
    }
}

/// One event of a publish request, validated.
#[derive(Debug)]
pub struct Publish<'a> {
    pub channel: Cow<'a, str>,
    pub event: Option<Cow<'a, str>>,
    pub data: Cow<'a, str>,
}

impl Server {
    /// Routes one request and writes the access-log line.
    pub(crate) fn handle(&mut self, key: usize, req: &Request<'_>, body: &[u8]) {
        let started = Instant::now();
        self.last_response = (0, 0);
        self.route(key, req, body);
        if self.cfg.access_log {
            let (status, bytes) = self.last_response;
            let peer = self.conns.get(key).map(|c| c.ip);
            let client = peer.map(|p| self.client_ip(p, req).to_string());
            log::info!(
                "{} \"{} {}{}{}\" {} {} {}us",
                client.as_deref().unwrap_or("-"),
                req.method,
                LogSafe(req.path),
                if req.query.is_empty() { "" } else { "?" },
                LogSafe(req.query),
                status,
                bytes,
                started.elapsed().as_micros()
            );
        }
    }

    fn route(&mut self, key: usize, req: &Request<'_>, body: &[u8]) {
        let route = Route::of(req.path);
        let keep_alive = req.keep_alive && self.draining.is_none();
        if route == Route::NotFound {
            self.stats.reject(Reject::NotFound);
            let e = HttpError::new(404, format!("no such endpoint: {}", req.path));
            return self.respond_json_error(key, req, &e, &[], keep_alive);
        }
        if req.method == "OPTIONS" {
            return self.preflight(key, req, route, keep_alive);
        }
        if req.method != route.method() {
            let allow = format!("Allow: {}", route.allow());
            let e = HttpError::new(
                405,
                format!(
                    "method {} not allowed on {}; use {}",
                    req.method,
                    req.path,
                    route.method()
                ),
            );
            return self.respond_json_error(key, req, &e, &[&allow], keep_alive);
        }
        match route {
            Route::Stream => self.subscribe(key, req, None),
            Route::StatusStream => self.subscribe(key, req, Some(STATUS_CHANNEL)),
            Route::Broadcast => {
                let started = Instant::now();
                self.publish(key, req, body, keep_alive);
                self.stats
                    .observe_publish(started.elapsed().as_micros() as u64);
            }
            Route::Metrics => {
                let body = self.snapshot().metrics_text();
                let cors = self.cors_headers(req.origin);
                let mut headers: Vec<&str> = cors.iter().map(String::as_str).collect();
                headers.push("Cache-Control: no-store");
                self.write_response(
                    key,
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body.as_bytes(),
                    &headers,
                    keep_alive,
                );
            }
            Route::Favicon => {
                // Browsers ask for it on every page; there is none.
                self.write_response(
                    key,
                    204,
                    "",
                    b"",
                    &["Cache-Control: max-age=86400"],
                    keep_alive,
                );
            }
            Route::Ui => {
                let peer = self
                    .conns
                    .get(key)
                    .map(|c| c.ip)
                    .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                if !self.cfg.ui {
                    self.stats.reject(Reject::NotFound);
                    let e = HttpError::new(404, "the built-in page is switched off (--ui false)");
                    return self.respond_json_error(key, req, &e, &[], keep_alive);
                }
                if self.cfg.publish_token.is_none() && !self.client_ip(peer, req).is_loopback() {
                    self.stats.reject(Reject::Forbidden);
                    let e = HttpError::new(
                        403,
                        "the built-in page is served only to loopback when no publish token is configured",
                    );
                    return self.respond_json_error(key, req, &e, &[], keep_alive);
                }
                self.write_response(
                    key,
                    200,
                    "text/html; charset=utf-8",
                    UI_PAGE.as_bytes(),
                    &[
                        "Cache-Control: no-cache",
                        "X-Content-Type-Options: nosniff",
                        "Content-Security-Policy: default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
                    ],
                    keep_alive,
                );
            }
            Route::Status => {
                let body = serde_json::to_vec(&self.snapshot().status_json()).unwrap_or_default();
                self.respond(key, req, 200, &body, &[], keep_alive);
            }
            Route::Health => {
                let draining = self.draining.is_some();
                let body = json!({
                    "status": if draining { "draining" } else { "healthy" },
                    "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                    "sse_connections": self.hub.subscriber_count(),
                });
                let status = if draining { 503 } else { 200 };
                let body = serde_json::to_vec(&body).unwrap_or_default();
                self.respond(key, req, status, &body, &[], keep_alive);
            }
            Route::NotFound => {}
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            stats: &self.stats,
            hub: &self.hub,
            cfg: &self.cfg,
            connections: self.conns.len(),
            max_connections: self.max_connections,
            accept_cap: self.accept_cap,
            uptime_secs: (self.now - self.started).as_secs_f64(),
            draining: self.draining.is_some(),
        }
    }

    /// The client's address: the peer, or what a trusted proxy says.
    pub(crate) fn client_ip(&self, peer: IpAddr, req: &Request<'_>) -> IpAddr {
        if !self.cfg.is_trusted_proxy(peer) {
            return peer;
        }
        if let Some(ip) = req.real_ip.and_then(|v| v.trim().parse::<IpAddr>().ok()) {
            return canonical(ip);
        }
        if let Some(xff) = req.forwarded_for {
            for part in xff.rsplit(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) if self.cfg.is_trusted_proxy(canonical(ip)) => continue,
                    Ok(ip) => return canonical(ip),
                    Err(_) => break,
                }
            }
        }
        peer
    }

    fn cors_headers(&self, origin: Option<&str>) -> Vec<String> {
        let cors = &self.cfg.cors;
        if !cors.enabled() {
            return Vec::new();
        }
        let mut h = vec!["Vary: Origin".to_string()];
        if let Some(allow) = origin.and_then(|o| cors.allow_origin(o)) {
            h.push(format!("Access-Control-Allow-Origin: {allow}"));
            if cors.credentials {
                h.push("Access-Control-Allow-Credentials: true".to_string());
            }
        }
        h
    }

    /// A JSON response with CORS headers for the request's origin.
    fn respond(
        &mut self,
        key: usize,
        req: &Request<'_>,
        status: u16,
        body: &[u8],
        extra: &[&str],
        keep_alive: bool,
    ) {
        let cors = self.cors_headers(req.origin);
        let mut headers: Vec<&str> = extra.to_vec();
        headers.extend(cors.iter().map(String::as_str));
        headers.push("Cache-Control: no-store");
        self.write_response(key, status, "application/json", body, &headers, keep_alive);
    }

    fn respond_json_error(
        &mut self,
        key: usize,
        req: &Request<'_>,
        e: &HttpError,
        extra: &[&str],
        keep_alive: bool,
    ) {
        log::debug!("{} {} -> {} {}", req.method, req.path, e.status, e.message);
        self.respond(
            key,
            req,
            e.status,
            &http::error_body(&e.message),
            extra,
            keep_alive,
        );
    }

    /// An error response when the request itself could not be read; the
    /// connection closes after it.
    pub(crate) fn respond_error(&mut self, key: usize, e: &HttpError, extra: &[&str]) {
        let mut headers = extra.to_vec();
        headers.push("Cache-Control: no-store");
        let body = http::error_body(&e.message);
        self.write_response(key, e.status, "application/json", &body, &headers, false);
    }

    fn write_response(
        &mut self,
        key: usize,
        status: u16,
        content_type: &str,
        body: &[u8],
        headers: &[&str],
        keep_alive: bool,
    ) {
        let date = self.http_date().to_string();
        self.last_response = (status, body.len());
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        Response {
            status,
            content_type,
            body,
            keep_alive,
            date: &date,
            headers,
        }
        .write_to(&mut c.out);
        if !keep_alive {
            c.close_after = true;
        }
    }

    fn preflight(&mut self, key: usize, req: &Request<'_>, route: Route, keep_alive: bool) {
        let allow = route.allow();
        if req.preflight_method.is_none() {
            let allow = format!("Allow: {allow}");
            return self.write_response(key, 204, "", b"", &[&allow], keep_alive);
        }
        let cors = &self.cfg.cors;
        let Some(acao) = req.origin.and_then(|o| cors.allow_origin(o)) else {
            self.stats.reject(Reject::Forbidden);
            let e = HttpError::new(403, "origin not allowed by --cors-origins");
            return self.respond_json_error(key, req, &e, &[], keep_alive);
        };
        let mut headers = vec![
            format!("Access-Control-Allow-Origin: {acao}"),
            "Vary: Origin".to_string(),
            format!("Access-Control-Allow-Methods: {allow}"),
            "Access-Control-Allow-Headers: Content-Type, Authorization, Last-Event-ID, Cache-Control"
                .to_string(),
            "Access-Control-Max-Age: 600".to_string(),
        ];
        if cors.credentials {
            headers.push("Access-Control-Allow-Credentials: true".to_string());
        }
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        self.write_response(key, 204, "", b"", &headers, keep_alive);
    }

    // ---- GET /events --------------------------------------------------------

    fn subscribe(&mut self, key: usize, req: &Request<'_>, fixed: Option<&'static str>) {
        match self.try_subscribe(key, req, fixed) {
            Ok(()) => {}
            Err((e, reason, extra)) => {
                if let Some(r) = reason {
                    self.stats.reject(r);
                }
                let keep_alive = req.keep_alive && self.draining.is_none();
                self.respond_json_error(key, req, &e, extra, keep_alive);
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_subscribe(
        &mut self,
        key: usize,
        req: &Request<'_>,
        fixed: Option<&'static str>,
    ) -> Result<(), (HttpError, Option<Reject>, &'static [&'static str])> {
        let bad = |e: HttpError| (e, Some(Reject::BadRequest), &[][..]);
        if self.draining.is_some() {
            let e = HttpError::new(503, "shutting down");
            return Err((e, Some(Reject::ShuttingDown), &["Retry-After: 1"]));
        }
        if self.streams >= self.max_connections {
            let e = HttpError::new(
                503,
                "connection limit reached (--max-connections); retry later",
            );
            return Err((e, Some(Reject::ConnectionLimit), &["Retry-After: 1"]));
        }
        let channel = match fixed {
            Some(name) => Cow::Borrowed(name),
            None => match http::query_param(req.query, "channel").map_err(bad)? {
                None => Cow::Borrowed(DEFAULT_CHANNEL),
                Some(c) if c.starts_with('$') => return Err(bad(reserved_name())),
                Some(c) if sse::valid_name(&c) => c,
                Some(_) => return Err(bad(invalid_name("channel"))),
            },
        };
        let last_id: Option<Cow<'_, str>> = match req.last_event_id.filter(|v| !v.is_empty()) {
            Some(v) => Some(Cow::Borrowed(v)),
            None => http::query_param(req.query, "lastEventId")
                .map_err(bad)?
                .filter(|v| !v.is_empty()),
        };
        let peer = self
            .conns
            .get(key)
            .map(|c| c.ip)
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let client = self.client_ip(peer, req);
        let limit = self.cfg.max_connections_per_ip;
        if limit > 0 && self.per_ip.get(&client).copied().unwrap_or(0) as usize >= limit {
            let e = HttpError::new(
                429,
                format!("too many streams from {client} (limit {limit}); retry later"),
            );
            return Err((e, Some(Reject::PerIpLimit), &["Retry-After: 5"]));
        }
        let seed = self.unix_micros();
        let Some(ch) = self.hub.channel(&channel, seed) else {
            let e = HttpError::new(503, "channel limit reached (--max-channels)");
            return Err((e, Some(Reject::ChannelLimit), &["Retry-After: 5"]));
        };

        // The response head; then the start of the body: `retry:`, and a
        // history-lost notice if needed (one chunk when chunked).
        let chunked = !req.http10;
        let mut head = Vec::with_capacity(256);
        let cors = self.cors_headers(req.origin);
        let date = self.http_date().to_string();
        let _ = write!(
            head,
            "HTTP/1.1 200 OK\r\nServer: ssecast\r\nDate: {date}\r\n\
             Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
             X-Accel-Buffering: no\r\n{}Connection: close\r\n",
            if chunked {
                "Transfer-Encoding: chunked\r\n"
            } else {
                ""
            }
        );
        for h in &cors {
            head.extend_from_slice(h.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        self.last_response = (200, 0);
        let mut body = Vec::new();
        if self.cfg.retry_ms > 0 {
            let jitter = self.random() % (self.cfg.retry_ms / 2 + 1);
            sse::encode_retry(&mut body, self.cfg.retry_ms + jitter);
        }
        let log = &self.hub.get(ch).log;
        let cursor = match last_id.as_deref().map(|s| s.trim().parse::<u64>()) {
            None => log.head(),
            Some(Ok(id)) if matches!(log.resume_after(id), Resume::At(_)) => {
                match log.resume_after(id) {
                    Resume::At(pos) => pos,
                    Resume::Lost => log.head(),
                }
            }
            Some(_) => {
                let sent = last_id.as_deref().unwrap_or_default();
                let data = json!({
                    "last_event_id": sent,
                    "first_available_id": log.first_available_id(),
                })
                .to_string();
                sse::encode_event(&mut body, log.last_id(), Some(HISTORY_LOST), &data);
                self.stats.history_lost_sent += 1;
                log.head()
            }
        };
        if !body.is_empty() {
            if chunked {
                let _ = write!(head, "{:x}\r\n", body.len());
                head.extend_from_slice(&body);
                head.extend_from_slice(b"\r\n");
            } else {
                head.extend_from_slice(&body);
            }
        }

        let frames_before = self.hub.get(ch).log.complete_before(cursor);
        let index = self.hub.subscribe(ch, key as u32);
        self.streams += 1;
        let counted = limit > 0;
        if counted {
            *self.per_ip.entry(client).or_insert(0) += 1;
        }
        let now_ms = self.now_ms();
        let Some(c) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if counted {
            c.ip = client;
        }
        // Responses to requests pipelined before this one go out first.
        if c.out_pending() == 0 {
            c.out = head;
            c.out_pos = 0;
        } else {
            c.out.extend_from_slice(&head);
        }
        c.phase = Phase::Stream(Subscriber {
            channel: ch,
            index,
            cursor,
            last_write_ms: now_ms,
            stalled_since_ms: u64::MAX,
            heartbeat_left: 0,
            counted,
            chunked,
            chunk_head_sent: 0,
            chunk_tail_sent: 0,
            chunk_len: 0,
            chunk_end: cursor,
            frames: frames_before as u32,
        });
        let hb = self.cfg.heartbeat_interval;
        if hb.is_zero() {
            self.wheel.cancel(key);
        } else {
            self.wheel.schedule(key, self.now + hb);
        }
        if fixed == Some(STATUS_CHANNEL) {
            self.status_channel = Some(ch);
            self.status_next.get_or_insert(self.now);
        }
        Ok(())
    }

    // ---- POST /events/broadcast ---------------------------------------------

    fn publish(&mut self, key: usize, req: &Request<'_>, body: &[u8], keep_alive: bool) {
        self.stats.publish_requests += 1;
        let peer = self
            .conns
            .get(key)
            .map(|c| c.ip)
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Some(token) = &self.cfg.publish_token {
            let given = req.authorization.and_then(bearer);
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                self.stats.reject(Reject::Unauthorized);
                let e = HttpError::new(401, "publishing needs 'Authorization: Bearer <token>'");
                return self.respond_json_error(
                    key,
                    req,
                    &e,
                    &["WWW-Authenticate: Bearer realm=\"ssecast\""],
                    keep_alive,
                );
            }
        } else {
            let client = self.client_ip(peer, req);
            if !client.is_loopback() {
                self.stats.reject(Reject::Forbidden);
                let e = HttpError::new(
                    403,
                    "publishing is allowed only from loopback when no publish token is configured",
                );
                return self.respond_json_error(key, req, &e, &[], keep_alive);
            }
        }
        let events = match decode_publish(req, body) {
            Ok(ev) => ev,
            Err(e) => {
                self.stats.reject(if e.status == 413 {
                    Reject::TooLarge
                } else {
                    Reject::BadRequest
                });
                return self.respond_json_error(key, req, &e, &[], keep_alive);
            }
        };
        // All or none: check every event before publishing any.
        let history = self.cfg.history_bytes;
        let mut new_channels: Vec<&str> = Vec::new();
        for ev in &events {
            let len = sse::encoded_len(u64::MAX, ev.event.as_deref(), &ev.data);
            if len > history {
                self.stats.reject(Reject::TooLarge);
                let e = HttpError::new(
                    413,
                    format!(
                        "event encodes to {len} bytes, more than the channel history of {history} bytes (--history-bytes)"
                    ),
                );
                return self.respond_json_error(key, req, &e, &[], keep_alive);
            }
            if self.hub.find(&ev.channel).is_none() && !new_channels.contains(&&*ev.channel) {
                new_channels.push(&ev.channel);
            }
        }
        if self.hub.len() + new_channels.len() > self.cfg.max_channels {
            self.stats.reject(Reject::ChannelLimit);
            let e = HttpError::new(503, "channel limit reached (--max-channels)");
            return self.respond_json_error(key, req, &e, &["Retry-After: 5"], keep_alive);
        }
        let seed = self.unix_micros();
        let mut answers = Vec::with_capacity(events.len());
        for ev in &events {
            let Some(ch) = self.hub.channel(&ev.channel, seed) else {
                continue; // cannot happen: checked above
            };
            match self.publish_event(ch, ev.event.as_deref(), &ev.data) {
                Ok(id) => {
                    self.stats.events_published += 1;
                    let subscribers = self.hub.get(ch).subscribers.len();
                    answers.push(
                        json!({ "id": id, "channel": ev.channel, "subscribers": subscribers }),
                    );
                }
                Err(e) => log::error!("publish refused after checks: {e:?}"),
            }
        }
        let body = if answers.len() == 1 && !body_is_array(req, body) {
            answers.pop().unwrap_or_default()
        } else {
            json!({ "events": answers })
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        self.respond(key, req, 200, &body, &[], keep_alive);
    }
}

fn body_is_array(req: &Request<'_>, body: &[u8]) -> bool {
    content_kind(req.content_type) == Some(Kind::Json)
        && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

fn invalid_name(what: &str) -> HttpError {
    HttpError::new(
        400,
        format!("invalid {what}: 1 to 128 bytes, no control characters (CR, LF, NUL, ...)"),
    )
}

/// Writes a request path for the access log: `"`, `\\` and anything not
/// printable ASCII are escaped (`\\xNN`), so a line always parses.
struct LogSafe<'a>(&'a str);

impl std::fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for b in self.0.bytes() {
            match b {
                b'"' | b'\\' => write!(f, "\\x{b:02x}")?,
                0x21..=0x7e => f.write_char(b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        Ok(())
    }
}

fn reserved_name() -> HttpError {
    HttpError::new(
        400,
        "channel names starting with '$' are reserved for the hub",
    )
}

fn bearer(v: &str) -> Option<&str> {
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, y) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(0) ^ y;
    }
    diff == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Text,
}

fn content_kind(ct: Option<&str>) -> Option<Kind> {
    let Some(ct) = ct else {
        return Some(Kind::Json);
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/json" | "application/x-www-form-urlencoded" => Some(Kind::Json),
        s if s.starts_with("application/") && s.ends_with("+json") => Some(Kind::Json),
        "text/plain" => Some(Kind::Text),
        _ => None,
    }
}

/// Turns a publish body into validated events (no I/O; fuzzed).
pub fn decode_publish<'a>(
    req: &Request<'a>,
    body: &'a [u8],
) -> Result<Vec<Publish<'a>>, HttpError> {
    let query_channel = http::query_param(req.query, "channel")?;
    let query_event = http::query_param(req.query, "event")?;
    let default_channel = query_channel.unwrap_or(Cow::Borrowed(DEFAULT_CHANNEL));
    if !sse::valid_name(&default_channel) {
        return Err(invalid_name("channel"));
    }
    if default_channel.starts_with('$') {
        return Err(reserved_name());
    }
    if query_event.as_deref().is_some_and(|e| !sse::valid_name(e)) {
        return Err(invalid_name("event name"));
    }
    match content_kind(req.content_type) {
        None => Err(HttpError::new(
            415,
            "Content-Type must be application/json or text/plain",
        )),
        Some(Kind::Text) => {
            let data = std::str::from_utf8(body)
                .map_err(|_| HttpError::new(400, "body is not valid UTF-8"))?;
            if data.is_empty() {
                return Err(HttpError::new(400, "data must not be empty"));
            }
            Ok(vec![Publish {
                channel: default_channel,
                event: query_event,
                data: Cow::Borrowed(data),
            }])
        }
        Some(Kind::Json) => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| HttpError::new(400, format!("invalid JSON: {e}")))?;
            let items = match value {
                Value::Array(items) if items.is_empty() => {
                    return Err(HttpError::new(400, "empty array: nothing to publish"))
                }
                Value::Array(items) => items,
                v @ Value::Object(_) => vec![v],
                _ => {
                    return Err(HttpError::new(
                        400,
                        "body must be a JSON object or an array of objects",
                    ))
                }
            };
            items
                .into_iter()
                .map(|item| decode_item(item, &default_channel, query_event.as_deref()))
                .collect()
        }
    }
}

fn decode_item<'a>(
    item: Value,
    default_channel: &str,
    default_event: Option<&str>,
) -> Result<Publish<'a>, HttpError> {
    let Value::Object(mut obj) = item else {
        return Err(HttpError::new(
            400,
            "every array element must be a JSON object",
        ));
    };
    if obj.contains_key("id") {
        return Err(HttpError::new(
            400,
            "'id' is assigned by the hub; leave it out",
        ));
    }
    let data = match obj.remove("data") {
        None | Some(Value::Null) => return Err(HttpError::new(400, "'data' is required")),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(HttpError::new(400, "data must not be empty"))
        }
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
    };
    let event = match obj.remove("event") {
        None | Some(Value::Null) => default_event.map(str::to_string),
        Some(Value::String(s)) if sse::valid_name(&s) => Some(s),
        Some(_) => return Err(invalid_name("event name")),
    };
    let channel = match obj.remove("channel") {
        None | Some(Value::Null) => default_channel.to_string(),
        Some(Value::String(s)) if s.starts_with('$') => return Err(reserved_name()),
        Some(Value::String(s)) if sse::valid_name(&s) => s,
        Some(_) => return Err(invalid_name("channel")),
    };
    Ok(Publish {
        channel: Cow::Owned(channel),
        event: event.map(Cow::Owned),
        data: Cow::Owned(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(ct: Option<&'a str>, query: &'a str) -> Request<'a> {
        Request {
            method: "POST",
            path: "/events/broadcast",
            query,
            content_type: ct,
            ..Request::default()
        }
    }

    #[test]
    fn routes_and_allow() {
        assert_eq!(Route::of("/sse"), Route::Stream);
        assert_eq!(Route::of("/sse/health"), Route::Status);
        assert_eq!(Route::of("/events/"), Route::NotFound);
        assert_eq!(Route::Broadcast.allow(), "POST, OPTIONS");
    }

    #[test]
    fn decodes_objects_arrays_and_text() {
        let r = req(Some("application/json"), "");
        let ev = decode_publish(&r, br#"{"data":{"a":1},"event":"e","channel":"c"}"#).unwrap();
        assert_eq!(
            (&*ev[0].data, ev[0].event.as_deref(), &*ev[0].channel),
            (r#"{"a":1}"#, Some("e"), "c")
        );
        let ev = decode_publish(&r, br#"[{"data":"x"},{"data":"y"}]"#).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(&*ev[1].channel, DEFAULT_CHANNEL);
        let r = req(Some("text/plain; charset=utf-8"), "channel=t&event=n");
        let ev = decode_publish(&r, b"line1\nline2").unwrap();
        assert_eq!((&*ev[0].channel, ev[0].event.as_deref()), ("t", Some("n")));
    }

    #[test]
    fn refuses_bad_publishes() {
        let r = req(Some("application/json"), "");
        for body in [
            &b"{"[..],
            b"3",
            b"[]",
            b"[1]",
            br#"{"event":"x"}"#,
            br#"{"data":null}"#,
            br#"{"data":""}"#,
            br#"{"data":"x","event":"a\nb"}"#,
            br#"{"data":"x","channel":"a\rb"}"#,
            br#"{"data":"x","channel":"a\u0000b"}"#,
            br#"{"data":"x","event":5}"#,
            br#"{"data":"x","id":"9"}"#,
        ] {
            let e = decode_publish(&r, body)
                .err()
                .unwrap_or_else(|| panic!("{body:?} accepted"));
            assert_eq!(e.status, 400, "{:?}", String::from_utf8_lossy(body));
        }
        let e = decode_publish(&req(Some("image/png"), ""), b"x")
            .err()
            .unwrap();
        assert_eq!(e.status, 415);
        let e = decode_publish(&req(Some("text/plain"), ""), b"\xff")
            .err()
            .unwrap();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn access_log_paths_are_escaped() {
        assert_eq!(
            LogSafe("/a\"b\\c é").to_string(),
            "/a\\x22b\\x5cc\\x20\\xc3\\xa9"
        );
        assert_eq!(LogSafe("/events").to_string(), "/events");
    }

    #[test]
    fn bearer_and_constant_time() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cretX", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
    }
}
