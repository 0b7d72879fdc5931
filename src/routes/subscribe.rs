//! `GET /events` (alias `/sse`) and `GET /events/status/stream`: a request
//! becomes a subscriber in stages, one job each:
//!
//! admit (draining, stream and per-client limits) → authorise (a token,
//! see `auth.rs`; or ask the application) → find the start (the channel, and where in its log a
//! `Last-Event-ID` resumes) → the stream's head. The server then attaches
//! the connection as a cursor ([`Attach`] → `Server::attach`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;

use serde_json::json;

use super::publish::bearer;
use super::{invalid_name, reserved_name, valid_channel, Refusal, DEFAULT_CHANNEL};
use crate::auth::{self, Keys, TokenError};
use crate::channel::{Hub, Log, Resume, Stamp};
use crate::http::{self, HttpError, Request};
use crate::sse;
use crate::stats::Reject;

/// The history-lost event's name (documented in the README).
pub const HISTORY_LOST: &str = "history-lost";

/// Open streams, in all and per client address (kept only while a
/// per-client limit is set).
pub struct Streams {
    open: usize,
    max: usize,
    per_client_limit: usize,
    per_client: HashMap<IpAddr, u32>,
}

impl Streams {
    pub fn new(max: usize, per_client_limit: usize) -> Streams {
        Streams {
            open: 0,
            max,
            per_client_limit,
            per_client: HashMap::new(),
        }
    }

    /// Concurrent streams allowed.
    pub fn max(&self) -> usize {
        self.max
    }

    /// What admission looks at for a stream from `client`.
    pub fn admission(&self, draining: bool, client: IpAddr) -> Admission {
        Admission {
            draining,
            streams: self.open,
            max_streams: self.max,
            from_client: self.per_client.get(&client).copied().unwrap_or(0) as usize,
            per_client_limit: self.per_client_limit,
        }
    }

    /// The address a new stream from `client` is counted as, if any.
    pub fn counted_as(&self, client: IpAddr) -> Option<IpAddr> {
        (self.per_client_limit > 0).then_some(client)
    }

    pub fn opened(&mut self, counted: Option<IpAddr>) {
        self.open += 1;
        if let Some(ip) = counted {
            *self.per_client.entry(ip).or_insert(0) += 1;
        }
    }

    pub fn closed(&mut self, counted: Option<IpAddr>) {
        self.open -= 1;
        if let Some(ip) = counted {
            if let Some(n) = self.per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(&ip);
                }
            }
        }
    }
}

/// What admission looks at.
pub struct Admission {
    pub draining: bool,
    pub streams: usize,
    pub max_streams: usize,
    /// Streams open from this client, and the per-client limit (0: none).
    pub from_client: usize,
    pub per_client_limit: usize,
}

/// What the request asks for.
pub struct Target<'a> {
    pub channel: Cow<'a, str>,
    pub last_id: Option<Cow<'a, str>>,
}

/// A subscriber ready to be attached.
pub struct Attach {
    pub channel: u32,
    pub cursor: u64,
    /// The response head and the start of the body.
    pub head: Vec<u8>,
    pub chunked: bool,
    /// Counted against the per-client limit as this address.
    pub counted: Option<IpAddr>,
    /// A stream whose authorisation ends: when it is closed (Unix
    /// seconds: a token's `exp` plus the leeway, or the application's
    /// `X-Ssecast-Expires`) and the token's `sub`. `None` for an open
    /// stream.
    pub grant: Option<(u64, Option<Box<str>>)>,
}

/// Draining and the stream cap: checked before anything else.
pub fn admit(a: &Admission) -> Result<(), Refusal> {
    if a.draining {
        return Err(
            Refusal::new(HttpError::new(503, "shutting down"), Reject::ShuttingDown)
                .with_headers(&["Retry-After: 1"]),
        );
    }
    if a.streams >= a.max_streams {
        return Err(Refusal::new(
            HttpError::new(
                503,
                "connection limit reached (--max-connections); retry later",
            ),
            Reject::ConnectionLimit,
        )
        .with_headers(&["Retry-After: 1"]));
    }
    Ok(())
}

/// The per-client stream limit.
pub fn admit_client(a: &Admission, client: IpAddr) -> Result<(), Refusal> {
    let limit = a.per_client_limit;
    if limit > 0 && a.from_client >= limit {
        return Err(Refusal::new(
            HttpError::new(
                429,
                format!("too many streams from {client} (limit {limit}); retry later"),
            ),
            Reject::PerIpLimit,
        )
        .with_headers(&["Retry-After: 5"]));
    }
    Ok(())
}

/// The spellings of the resume id in the query, after the
/// `Last-Event-ID` header: ours (and the WHATWG attribute's), nchan's,
/// Mercure's.
pub const RESUME_PARAMS: [&str; 3] = ["lastEventId", "last_event_id", "lastEventID"];

/// The resume id that asks for everything still held (Mercure's).
pub const EARLIEST: &str = "earliest";

/// The channel (`?channel=`, or `fixed` for the hub's own streams) and the
/// resume id (`Last-Event-ID`, else one of [`RESUME_PARAMS`] in the query).
pub fn target<'a>(req: &Request<'a>, fixed: Option<&'static str>) -> Result<Target<'a>, Refusal> {
    let bad = |e: HttpError| Refusal::new(e, Reject::BadRequest);
    let channel = match fixed {
        Some(name) => Cow::Borrowed(name),
        None => match http::query_param(req.query, "channel").map_err(bad)? {
            None => Cow::Borrowed(DEFAULT_CHANNEL),
            Some(c) if c.starts_with('$') => return Err(bad(reserved_name())),
            Some(c) if valid_channel(&c) => c,
            Some(_) => return Err(bad(invalid_name("channel"))),
        },
    };
    let mut last_id = req
        .last_event_id
        .filter(|v| !v.is_empty())
        .map(Cow::Borrowed);
    for name in RESUME_PARAMS {
        if last_id.is_some() {
            break;
        }
        last_id = http::query_param(req.query, name)
            .map_err(bad)?
            .filter(|v| !v.is_empty());
    }
    Ok(Target { channel, last_id })
}

/// What authorising a stream came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Authorised {
    /// Nothing to check: the stream is open to anyone.
    Open,
    /// Allowed until `exp_unix` (Unix seconds; a token's `exp`, or what
    /// the application answered); `sub` names who, for revocation.
    Until { exp_unix: u64, sub: Option<String> },
    /// Only the application can tell (`--subscribe-auth-url`): the
    /// connection waits for its answer.
    Ask,
}

impl Authorised {
    /// What a stream attached with this keeps: when it ends (`exp` plus
    /// the clock leeway, so a token admitted inside the leeway is not
    /// closed at once) and its `sub`.
    pub fn into_grant(self) -> Option<(u64, Option<Box<str>>)> {
        match self {
            Authorised::Until { exp_unix, sub } => Some((
                exp_unix.saturating_add(auth::LEEWAY_SECS),
                sub.map(Box::from),
            )),
            Authorised::Open | Authorised::Ask => None,
        }
    }
}

/// What authorising looks at besides the request.
pub struct Policy<'a> {
    /// No key set: streams need no token.
    pub keys: &'a Keys,
    /// Channels open without a token (`--public-channels`).
    pub public: &'a [String],
    /// The cookie a token may come in (`--subscribe-cookie`).
    pub cookie: &'a str,
    /// The wall clock, seconds since the epoch.
    pub now_unix: u64,
    /// An application can be asked (`--subscribe-auth-url`) when no valid
    /// token was given.
    pub ask_application: bool,
}

/// The challenge of every 401 for a stream.
const CHALLENGE: &[&str] = &["WWW-Authenticate: Bearer realm=\"ssecast\""];

/// Who may read the channel: anyone when no key is set, or the channel is
/// public or the hub's own; else the holder of a valid token for it (from
/// `Authorization: Bearer`, the cookie, or `?token=`, in that order); else,
/// when one is configured, the application decides.
pub fn authorise(
    req: &Request<'_>,
    target: &Target<'_>,
    policy: &Policy<'_>,
) -> Result<Authorised, Refusal> {
    let channel = &*target.channel;
    let open = !policy.keys.is_set()
        || channel.starts_with('$')
        || policy
            .public
            .iter()
            .any(|p| auth::channel_matches(p, channel));
    if open && !policy.ask_application {
        return Ok(Authorised::Open);
    }
    let token = token_of(req, policy.cookie)?;
    let verified = match (&token, policy.keys.is_set() && !open) {
        (Some(t), true) => Some(auth::verify(t, policy.keys, channel, policy.now_unix)),
        _ => None,
    };
    match verified {
        Some(Ok(claims)) => Ok(Authorised::Until {
            exp_unix: claims.exp,
            sub: claims.sub,
        }),
        _ if policy.ask_application => Ok(Authorised::Ask),
        None if open => Ok(Authorised::Open),
        None => Err(Refusal::new(
            HttpError::new(
                401,
                "this channel needs a token (Authorization: Bearer, the cookie, or ?token=)",
            ),
            Reject::Unauthorized,
        )
        .with_headers(CHALLENGE)),
        Some(Err(TokenError::Channel)) => Err(Refusal::new(
            HttpError::new(403, TokenError::Channel.message()),
            Reject::Forbidden,
        )),
        Some(Err(e)) => Err(
            Refusal::new(HttpError::new(401, e.message()), Reject::Unauthorized)
                .with_headers(CHALLENGE),
        ),
    }
}

/// The token a request carries: `Authorization: Bearer`, else the cookie,
/// else `?token=`.
pub fn token_of<'a>(req: &Request<'a>, cookie: &str) -> Result<Option<Cow<'a, str>>, Refusal> {
    if let Some(t) = req.authorization.and_then(bearer) {
        return Ok(Some(Cow::Borrowed(t)));
    }
    if let Some(t) = req.cookie.and_then(|c| http::cookie_value(c, cookie)) {
        return Ok(Some(Cow::Borrowed(t)));
    }
    http::query_param(req.query, "token")
        .map(|t| t.filter(|t| !t.is_empty()))
        .map_err(|e| Refusal::new(e, Reject::BadRequest))
}

/// Whether the channel exists or could be created (HEAD creates none).
pub fn room_for(hub: &Hub, name: &str) -> Result<(), Refusal> {
    if hub.find(name).is_some() || hub.can_create(1) {
        Ok(())
    } else {
        Err(channel_limit())
    }
}

fn channel_limit() -> Refusal {
    Refusal::new(
        HttpError::new(503, "channel limit reached (--max-channels)"),
        Reject::ChannelLimit,
    )
    .with_headers(&["Retry-After: 5"])
}

/// The channel, created on first use (evicting the least recently used
/// channel without subscribers at `--max-channels`).
pub fn find_channel(hub: &mut Hub, name: &str, now: Stamp) -> Result<u32, Refusal> {
    hub.channel(name, now).ok_or_else(|| {
        Refusal::new(
            HttpError::new(503, "channel limit reached (--max-channels)"),
            Reject::ChannelLimit,
        )
        .with_headers(&["Retry-After: 5"])
    })
}

/// Where in the log the stream starts.
pub struct Start {
    pub cursor: u64,
    /// The `history-lost` event to send first, when the id is not held.
    pub lost_notice: Option<Vec<u8>>,
}

/// Without an id: live from now. `earliest`: everything still held. With
/// an id the log holds: just after it. Otherwise (older than the history,
/// never issued, not a number): a `history-lost` event, then live.
pub fn find_start(log: &Log, last_id: Option<&str>) -> Start {
    let at = |cursor| Start {
        cursor,
        lost_notice: None,
    };
    let Some(sent) = last_id else {
        return at(log.head());
    };
    if sent.trim() == EARLIEST {
        return at(log.tail());
    }
    if let Ok(id) = sent.trim().parse::<u64>() {
        if let Resume::At(pos) = log.resume_after(id) {
            return at(pos);
        }
    }
    let data = json!({
        "last_event_id": sent,
        "first_available_id": log.first_available_id(),
    })
    .to_string();
    let mut notice = Vec::new();
    sse::encode_event(&mut notice, log.last_id(), Some(HISTORY_LOST), &data);
    Start {
        cursor: log.head(),
        lost_notice: Some(notice),
    }
}

/// The stream's response head, up to its blank line. `connection` is
/// `close` for a stream (it never ends otherwise), `keep-alive` for a HEAD.
/// `no-store` keeps caches from storing a stream, `no-transform` keeps
/// compressing middleware off it.
pub fn head_lines(date: &str, cors: &[String], chunked: bool, connection: &str) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let _ = write!(
        head,
        "HTTP/1.1 200 OK\r\nServer: ssecast\r\nDate: {date}\r\n\
         Content-Type: text/event-stream\r\n\
         Cache-Control: no-cache, no-store, no-transform\r\n\
         X-Accel-Buffering: no\r\n{}Connection: {connection}\r\n",
        if chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            ""
        }
    );
    for h in cors {
        head.extend_from_slice(h.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The response head, then the start of the body (`retry:`, a lost-history
/// notice), one chunk when chunked.
pub fn head(
    date: &str,
    cors: &[String],
    chunked: bool,
    retry_ms: u64,
    notice: Option<&[u8]>,
) -> Vec<u8> {
    let mut head = head_lines(date, cors, chunked, "close");
    let mut body = Vec::new();
    if retry_ms > 0 {
        sse::encode_retry(&mut body, retry_ms);
    }
    if let Some(n) = notice {
        body.extend_from_slice(n);
    }
    if !body.is_empty() {
        if chunked {
            let _ = write!(head, "{:x}\r\n", body.len());
            head.extend_from_slice(&body);
            head.extend_from_slice(b"\r\n");
        } else {
            head.extend_from_slice(&body);
        }
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_start_resumes_after_a_held_id_and_reports_others() {
        let mut log = Log::new(1024, 100);
        for d in ["a", "b", "c"] {
            log.append(None, d).unwrap();
        }
        assert_eq!(find_start(&log, None).cursor, log.head());
        let s = find_start(&log, Some("101"));
        assert!(s.lost_notice.is_none());
        let (a, b) = log.slices(s.cursor);
        assert_eq!([a, b].concat(), b"id: 102\ndata: c\n\n");
        for sent in ["98", "103", "x", ""] {
            let s = find_start(&log, Some(sent));
            assert_eq!(s.cursor, log.head(), "{sent:?}");
            let notice = String::from_utf8(s.lost_notice.expect("a notice")).unwrap();
            assert!(
                notice.starts_with("id: 102\nevent: history-lost\n"),
                "{notice}"
            );
            assert!(notice.contains("\"first_available_id\":100"), "{notice}");
        }
    }

    #[test]
    fn the_head_frames_retry_and_notice_as_one_chunk() {
        let h = head("D", &["Vary: Origin".into()], true, 3000, Some(b"x\n\n"));
        let h = String::from_utf8(h).unwrap();
        assert!(
            h.contains("Transfer-Encoding: chunked\r\nConnection: close\r\nVary: Origin\r\n\r\n")
        );
        assert!(
            h.ends_with("\r\n\r\n10\r\nretry: 3000\n\nx\n\n\r\n"),
            "{h:?}"
        );
        let h = String::from_utf8(head("D", &[], false, 0, None)).unwrap();
        assert!(h.ends_with("Connection: close\r\n\r\n") && !h.contains("chunked"));
    }

    #[test]
    fn admission_order_draining_then_cap_then_client() {
        let mut a = Admission {
            draining: true,
            streams: 5,
            max_streams: 5,
            from_client: 2,
            per_client_limit: 2,
        };
        assert_eq!(admit(&a).err().map(|r| r.error.status), Some(503));
        a.draining = false;
        assert!(admit(&a).is_err());
        a.max_streams = 6;
        assert!(admit(&a).is_ok());
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(
            admit_client(&a, ip).err().map(|r| r.error.status),
            Some(429)
        );
        a.per_client_limit = 0;
        assert!(admit_client(&a, ip).is_ok());
    }

    #[test]
    fn earliest_replays_everything_held() {
        let mut log = Log::new(64, 1);
        for i in 0..10 {
            log.append(None, &i.to_string()).unwrap();
        }
        assert!(log.tail() > 0, "the fixture has evicted");
        for sent in ["earliest", " earliest "] {
            let s = find_start(&log, Some(sent));
            assert_eq!((s.cursor, s.lost_notice.is_none()), (log.tail(), true));
        }
        assert!(find_start(&log, Some("Earliest")).lost_notice.is_some());
    }

    fn req_with<'a>(query: &'a str, header: Option<&'a str>) -> Request<'a> {
        Request {
            method: "GET",
            path: "/events",
            query,
            last_event_id: header,
            ..Request::default()
        }
    }

    #[test]
    fn the_resume_id_comes_from_the_header_then_three_query_spellings() {
        let id = |q, h| {
            target(&req_with(q, h), None)
                .ok()
                .and_then(|t| t.last_id.map(|c| c.into_owned()))
        };
        assert_eq!(id("lastEventId=5", None).as_deref(), Some("5"));
        assert_eq!(id("last_event_id=6", None).as_deref(), Some("6"));
        assert_eq!(id("lastEventID=7", None).as_deref(), Some("7"));
        assert_eq!(id("lastEventID=7", Some("9")).as_deref(), Some("9"));
        assert_eq!(
            id("lastEventId=&last_event_id=8", None).as_deref(),
            Some("8")
        );
        assert_eq!(id("lasteventid=1", None), None);
        assert_eq!(id("", Some("")), None);
    }

    #[test]
    fn head_lines_say_no_store_and_no_transform() {
        let h = String::from_utf8(head_lines("D", &[], true, "keep-alive")).unwrap();
        assert!(h.contains("\r\nCache-Control: no-cache, no-store, no-transform\r\n"));
        assert!(h.ends_with("Connection: keep-alive\r\n\r\n"), "{h}");
    }
}
