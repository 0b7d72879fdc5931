//! Routing: which endpoint a request is for and the method rules
//! ([`resolve`]), then one handler per endpoint family, one file each
//! (`subscribe`, `publish`, `admin`, `status`, `page`, `preflight`). Handlers take
//! the parts of the hub they use and answer with a [`Reply`] or a
//! [`Refusal`]; `session/` calls them with those parts and writes the
//! answer.

pub mod admin;
pub mod page;
pub mod preflight;
pub mod publish;
pub mod status;
pub mod subscribe;

use std::net::IpAddr;

pub use page::UI_PAGE;
pub use preflight::cors_headers;
pub use publish::{constant_time_eq, decode_publish, Publish, Published};
pub use subscribe::{Attach, HISTORY_LOST};

use crate::config::{canonical, Config};
use crate::conn::Side;
use crate::http::{self, HttpError, Request};
use crate::stats::Reject;

pub const DEFAULT_CHANNEL: &str = "default";

/// The channel the hub publishes its own status to, once a second while it
/// has subscribers. Names starting with `$` are reserved for the hub.
pub const STATUS_CHANNEL: &str = "$status";

/// The status channel for clients that may not see channel names: the same
/// document without them.
pub const STATUS_TOTALS_CHANNEL: &str = "$status:totals";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Stream,
    Broadcast,
    Close,
    Status,
    StatusStream,
    Health,
    Metrics,
    Ui,
    Favicon,
    NotFound,
}

impl Route {
    pub fn of(path: &str) -> Route {
        match path {
            "/events" | "/sse" => Route::Stream,
            "/events/broadcast" => Route::Broadcast,
            "/events/close" => Route::Close,
            "/events/status" | "/sse/health" => Route::Status,
            "/events/status/stream" => Route::StatusStream,
            "/health" => Route::Health,
            "/metrics" => Route::Metrics,
            "/" => Route::Ui,
            "/favicon.ico" => Route::Favicon,
            _ => Route::NotFound,
        }
    }

    /// Served on the admin address (`--admin-bind`): this process's own
    /// health, status and metrics, nothing that streams or changes state.
    pub fn on_admin(self) -> bool {
        matches!(self, Route::Health | Route::Status | Route::Metrics)
    }

    /// The methods this route answers, for `Allow`.
    pub fn allow(self) -> &'static str {
        match self {
            Route::Broadcast | Route::Close => "POST, OPTIONS",
            Route::NotFound => "",
            _ => "GET, HEAD, OPTIONS",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Route::Broadcast | Route::Close => "POST",
            _ => "GET",
        }
    }
}

/// A complete plain response.
pub struct Reply {
    pub status: u16,
    /// Empty: no `Content-Type`.
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Header lines (`Name: value`), in order.
    pub headers: Vec<String>,
}

impl Reply {
    /// A JSON answer: `extra` headers, then CORS, then `Cache-Control:
    /// no-store`.
    pub fn json(status: u16, body: Vec<u8>, extra: &[&str], cors: &[String]) -> Reply {
        let mut headers: Vec<String> = extra.iter().map(|h| h.to_string()).collect();
        headers.extend(cors.iter().cloned());
        headers.push("Cache-Control: no-store".into());
        Reply {
            status,
            content_type: "application/json",
            body,
            headers,
        }
    }

    /// `{"error": ...}` with the error's status.
    pub fn error(e: &HttpError, extra: &[&str], cors: &[String]) -> Reply {
        Reply::json(e.status, http::error_body(&e.message), extra, cors)
    }

    /// Writes the reply; `head_only` for an answer to HEAD (no content).
    pub fn write_to(&self, out: &mut Vec<u8>, date: &str, keep_alive: bool, head_only: bool) {
        let headers: Vec<&str> = self.headers.iter().map(String::as_str).collect();
        http::Response {
            status: self.status,
            content_type: self.content_type,
            body: &self.body,
            keep_alive,
            date,
            headers: &headers,
            head_only,
        }
        .write_to(out);
    }
}

/// A request refused: the error, the reason it is counted under, and extra
/// headers (`Retry-After`, `WWW-Authenticate`).
pub struct Refusal {
    pub error: HttpError,
    pub reason: Option<Reject>,
    pub headers: &'static [&'static str],
}

impl Refusal {
    pub fn new(error: HttpError, reason: Reject) -> Refusal {
        Refusal {
            error,
            reason: Some(reason),
            headers: &[],
        }
    }

    pub fn with_headers(mut self, headers: &'static [&'static str]) -> Refusal {
        self.headers = headers;
        self
    }
}

/// What routing decided before any handler runs.
pub enum Resolved {
    /// The method fits: the endpoint's handler answers.
    Endpoint(Route),
    /// Answered by the routing rules alone: an unknown path, a preflight,
    /// a method the endpoint does not take.
    Answered(Result<Reply, Refusal>),
}

/// Applies the path and method rules, and those of the listener the
/// request came in on: the admin address answers only [`Route::on_admin`].
pub fn resolve(req: &Request<'_>, cfg: &Config, side: Side) -> Resolved {
    let route = Route::of(req.path);
    if route == Route::NotFound {
        let e = HttpError::new(404, format!("no such endpoint: {}", req.path));
        return Resolved::Answered(Err(Refusal::new(e, Reject::NotFound)));
    }
    if side == Side::Admin && !route.on_admin() {
        let e = HttpError::new(
            404,
            format!(
                "{} is not served on the admin address (--admin-bind), which answers only \
                 /health, /events/status and /metrics of this process; use the main address",
                req.path
            ),
        );
        return Resolved::Answered(Err(Refusal::new(e, Reject::NotFound)));
    }
    if req.method == "OPTIONS" {
        return Resolved::Answered(preflight::preflight(&cfg.cors, req, route));
    }
    // HEAD is GET without the content (RFC 9110 9.3.2).
    let head_of_get = req.method == "HEAD" && route.method() == "GET";
    if req.method != route.method() && !head_of_get {
        let e = HttpError::new(
            405,
            format!(
                "method {} not allowed on {}; use {}",
                req.method,
                req.path,
                route.method()
            ),
        );
        let allow = format!("Allow: {}", route.allow());
        let cors = cors_headers(&cfg.cors, req.origin);
        return Resolved::Answered(Ok(Reply::error(&e, &[&allow], &cors)));
    }
    Resolved::Endpoint(route)
}

pub(crate) fn invalid_name(what: &str) -> HttpError {
    let star = if what == "channel" { ", no '*'" } else { "" };
    HttpError::new(
        400,
        format!("invalid {what}: 1 to 128 bytes, no control characters (CR, LF, NUL, ...){star}"),
    )
}

/// A channel name: an SSE name without `*` (which token claims and
/// `--public-channels` use for prefixes).
pub(crate) fn valid_channel(s: &str) -> bool {
    crate::sse::valid_name(s) && !s.contains('*')
}

pub(crate) fn reserved_name() -> HttpError {
    HttpError::new(
        400,
        "channel names starting with '$' are reserved for the hub",
    )
}

/// The client's address: the peer, or what a trusted proxy says.
pub fn client_ip(cfg: &Config, peer: IpAddr, req: &Request<'_>) -> IpAddr {
    if !cfg.is_trusted_proxy(peer) {
        return peer;
    }
    if let Some(ip) = req.real_ip.and_then(|v| v.trim().parse::<IpAddr>().ok()) {
        return canonical(ip);
    }
    if let Some(xff) = req.forwarded_for {
        for part in xff.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) if cfg.is_trusted_proxy(canonical(ip)) => continue,
                Ok(ip) => return canonical(ip),
                Err(_) => break,
            }
        }
    }
    peer
}

/// Writes a request path for the access log: `"`, `\\` and anything not
/// printable ASCII are escaped (`\\xNN`), so a line always parses.
pub struct LogSafe<'a>(pub &'a str);

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

/// Writes a query string for the log as [`LogSafe`] does, with every
/// `token=` value (a subscribe token) replaced by `-`.
pub struct LogQuery<'a>(pub &'a str);

impl std::fmt::Display for LogQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, pair) in self.0.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let is_token = http::percent_decode(key).is_ok_and(|k| k == "token");
            if is_token {
                write!(f, "{}=-", LogSafe(key))?;
            } else {
                write!(f, "{}", LogSafe(pair))?;
            }
        }
        Ok(())
    }
}

/// Who may see channel names (status, its stream, metrics): a loopback
/// client (the address after `--trusted-proxies`), or a request with the
/// publish token. A request a trusted proxy forwarded (it says who the
/// client is) is never local, whatever address it names: through the
/// shipped nginx, a process on the proxy's own host is a client like any.
pub fn may_see_names(cfg: &Config, peer: IpAddr, req: &Request<'_>) -> bool {
    let forwarded =
        cfg.is_trusted_proxy(peer) && (req.real_ip.is_some() || req.forwarded_for.is_some());
    let local = !forwarded && client_ip(cfg, peer, req).is_loopback();
    local || publish::has_publish_token(req, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_allow() {
        assert_eq!(Route::of("/sse"), Route::Stream);
        assert_eq!(Route::of("/sse/health"), Route::Status);
        assert_eq!(Route::of("/events/"), Route::NotFound);
        assert_eq!(Route::Broadcast.allow(), "POST, OPTIONS");
        assert_eq!(Route::Health.allow(), "GET, HEAD, OPTIONS");
    }

    #[test]
    fn the_admin_address_answers_only_health_status_and_metrics() {
        let cfg = Config::from_args(["--bind", "127.0.0.1:0"]).unwrap();
        let req = |method, path| Request {
            method,
            path,
            ..Request::default()
        };
        let status = |r: Resolved| match r {
            Resolved::Endpoint(route) => Ok(route),
            Resolved::Answered(Ok(reply)) => Err(reply.status),
            Resolved::Answered(Err(refusal)) => Err(refusal.error.status),
        };
        for (path, route) in [
            ("/health", Route::Health),
            ("/events/status", Route::Status),
            ("/sse/health", Route::Status),
            ("/metrics", Route::Metrics),
        ] {
            for method in ["GET", "HEAD"] {
                let r = resolve(&req(method, path), &cfg, Side::Admin);
                assert_eq!(status(r), Ok(route), "{method} {path}");
            }
        }
        assert_eq!(
            status(resolve(&req("POST", "/health"), &cfg, Side::Admin)),
            Err(405)
        );
        for (method, path) in [
            ("GET", "/events"),
            ("GET", "/sse"),
            ("HEAD", "/events"),
            ("GET", "/events/status/stream"),
            ("POST", "/events/broadcast"),
            ("POST", "/events/close"),
            ("OPTIONS", "/events/broadcast"),
            ("GET", "/"),
            ("GET", "/favicon.ico"),
        ] {
            let r = resolve(&req(method, path), &cfg, Side::Admin);
            assert_eq!(status(r), Err(404), "{method} {path}");
            let r = resolve(&req(method, path), &cfg, Side::Public);
            assert_ne!(status(r), Err(404), "{method} {path} on the public side");
        }
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
    fn names_go_to_loopback_unforwarded_or_the_publish_token() {
        let cfg =
            Config::from_args(["--trusted-proxies", "127.0.0.1", "--publish-token", "p"]).unwrap();
        let lo = IpAddr::from([127, 0, 0, 1]);
        let req = |real_ip, authorization| Request {
            real_ip,
            authorization,
            ..Request::default()
        };
        assert!(may_see_names(&cfg, lo, &req(None, None)));
        assert!(!may_see_names(&cfg, lo, &req(Some("192.0.2.10"), None)));
        assert!(!may_see_names(&cfg, lo, &req(Some("127.0.0.2"), None)));
        assert!(may_see_names(
            &cfg,
            lo,
            &req(Some("192.0.2.10"), Some("Bearer p"))
        ));
        assert!(may_see_names(&cfg, lo, &req(None, Some("Bearer q"))));
        let far = IpAddr::from([192, 0, 2, 10]);
        assert!(!may_see_names(&cfg, far, &req(None, Some("Bearer q"))));
        assert!(!may_see_names(&cfg, far, &req(Some("127.0.0.1"), None)));
    }

    #[test]
    fn tokens_are_cut_from_logged_queries() {
        let q = |s| LogQuery(s).to_string();
        assert_eq!(q("channel=a&token=x.y.z&b"), "channel=a&token=-&b");
        assert_eq!(q("%74oken=secret"), "%74oken=-");
        assert_eq!(q("token"), "token=-");
        assert_eq!(q("tokens=1&a=%22"), "tokens=1&a=%22");
        assert!(!q("x=1&token=abc&token=def").contains("abc"));
    }
}
