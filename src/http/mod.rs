//! HTTP/1.x: parsing request heads (httparse), body framing, an incremental
//! chunked decoder, query strings, and writing responses. No I/O here.

use std::borrow::Cow;
use std::io::Write;

mod chunked;

use chunked::hex_val;
pub use chunked::Chunked;

/// A request refused before routing: status and a message for the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: Cow<'static, str>,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<Cow<'static, str>>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }
}

fn bad(message: &'static str) -> HttpError {
    HttpError::new(400, message)
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

/// The parts of a request head that ssecast looks at, borrowed from the
/// connection's buffer.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub keep_alive: bool,
    /// The request said HTTP/1.0 (no chunked responses).
    pub http10: bool,
    pub last_event_id: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// The `Cookie` header (the first, when a client sent several); also
    /// passed on to the application when it is asked (forward auth).
    pub cookie: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub forwarded_for: Option<&'a str>,
    pub real_ip: Option<&'a str>,
    pub preflight_method: Option<&'a str>,
    /// `Idempotency-Key` on a publish.
    pub idempotency_key: Option<&'a str>,
    pub expect_continue: bool,
    pub framing: Option<Framing>,
}

impl Request<'_> {
    pub fn framing(&self) -> Framing {
        self.framing.unwrap_or(Framing::Empty)
    }
}

pub const MAX_HEADERS: usize = 64;

/// Parses a complete request head from the start of `buf`.
/// `Ok(None)`: not complete yet. `Ok(Some((req, len)))`: the head is
/// `buf[..len]`.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<(Request<'_>, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut raw = httparse::Request::new(&mut headers);
    let Some(len) = parse_raw(buf, max_head, &mut raw)? else {
        return Ok(None);
    };
    let (Some(method), Some(target), Some(minor)) = (raw.method, raw.path, raw.version) else {
        return Err(bad("malformed request line"));
    };
    let target = origin_form(target)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method,
        path,
        query,
        keep_alive: minor == 1,
        http10: minor == 0,
        ..Request::default()
    };
    let mut facts = HeadFacts::default();
    for h in raw.headers.iter() {
        if !USED_HEADERS.iter().any(|u| h.name.eq_ignore_ascii_case(u)) {
            // Opaque to us (RFC 9110 5.5): a Latin-1 User-Agent is no reason to refuse.
            continue;
        }
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Err(bad("header value is not valid UTF-8"));
        };
        read_header(&mut req, &mut facts, h.name, value.trim(), minor)?;
    }
    req.framing = Some(framing(&facts, minor)?);
    Ok(Some((req, len)))
}

/// The headers ssecast reads; every other header is opaque.
const USED_HEADERS: [&str; 14] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "last-event-id",
    "origin",
    "authorization",
    "cookie",
    "content-type",
    "x-forwarded-for",
    "x-real-ip",
    "access-control-request-method",
    "expect",
    "idempotency-key",
];

/// What the headers say about the request's framing and host.
#[derive(Default)]
struct HeadFacts {
    hosts: usize,
    length: Option<usize>,
    chunked: bool,
}

/// httparse's verdict as ours; the head's length once complete.
fn parse_raw<'b>(
    buf: &'b [u8],
    max_head: usize,
    raw: &mut httparse::Request<'_, 'b>,
) -> Result<Option<usize>, HttpError> {
    let len = match raw.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_head {
                return Err(HttpError::new(431, "request headers too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(431, "too many request headers"))
        }
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(httparse::Error::HeaderName) => return Err(bad("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(bad("invalid header value")),
        Err(httparse::Error::Token) => return Err(bad("invalid request method or header")),
        Err(httparse::Error::Status) => return Err(bad("malformed request line")),
        Err(_) => return Err(bad("malformed request")),
    };
    if len > max_head {
        return Err(HttpError::new(431, "request headers too large"));
    }
    Ok(Some(len))
}

/// One header ssecast reads, into the request or the framing facts.
fn read_header<'a>(
    req: &mut Request<'a>,
    facts: &mut HeadFacts,
    name: &str,
    value: &'a str,
    minor: u8,
) -> Result<(), HttpError> {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    if is("host") {
        facts.hosts += 1;
        if !valid_host(value) {
            return Err(bad("invalid Host header"));
        }
    } else if is("content-length") {
        let n = parse_length(value)?;
        if facts.length.is_some_and(|l| l != n) {
            return Err(bad("conflicting Content-Length headers"));
        }
        facts.length = Some(n);
    } else if is("transfer-encoding") {
        if facts.chunked || !value.eq_ignore_ascii_case("chunked") {
            return Err(HttpError::new(
                501,
                "only 'Transfer-Encoding: chunked' is supported",
            ));
        }
        facts.chunked = true;
    } else if is("connection") {
        for token in value.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("close") {
                req.keep_alive = false;
            } else if token.eq_ignore_ascii_case("keep-alive") && minor == 0 {
                req.keep_alive = true;
            }
        }
    } else if is("last-event-id") {
        req.last_event_id = Some(value);
    } else if is("origin") {
        req.origin = Some(value);
    } else if is("authorization") {
        req.authorization = Some(value);
    } else if is("cookie") {
        req.cookie = req.cookie.or(Some(value));
    } else if is("content-type") {
        req.content_type = Some(value);
    } else if is("x-forwarded-for") {
        req.forwarded_for = Some(value);
    } else if is("x-real-ip") {
        req.real_ip = Some(value);
    } else if is("access-control-request-method") {
        req.preflight_method = Some(value);
    } else if is("idempotency-key") {
        req.idempotency_key = Some(value);
    } else if is("expect") && minor == 1 {
        // RFC 9110 10.1.1: an HTTP/1.0 client's expectation is ignored.
        if !value.eq_ignore_ascii_case("100-continue") {
            return Err(HttpError::new(
                417,
                "only 'Expect: 100-continue' is supported",
            ));
        }
        req.expect_continue = true;
    }
    Ok(())
}

/// The body's framing, and the Host rules, once every header is read.
fn framing(facts: &HeadFacts, minor: u8) -> Result<Framing, HttpError> {
    if facts.hosts > 1 {
        return Err(bad("more than one Host header"));
    }
    if minor == 1 && facts.hosts == 0 {
        return Err(bad("missing Host header"));
    }
    Ok(match (facts.length, facts.chunked) {
        (Some(_), true) => {
            return Err(bad(
                "both Content-Length and Transfer-Encoding (request smuggling)",
            ))
        }
        (_, true) if minor == 0 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request")),
        (_, true) => Framing::Chunked,
        (Some(0), false) | (None, false) => Framing::Empty,
        (Some(n), false) => Framing::Length(n),
    })
}

/// httparse says "Version" for any request line whose last part is not
/// `HTTP/1.x`. A well-formed `HTTP/d.d` is a version we do not speak (505);
/// anything else (`http/1.1`, a space in the target, HTTP/0.9's two-part
/// line) is a malformed request line (400).
fn version_error(buf: &[u8]) -> HttpError {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let well_formed = |v: &[u8]| {
        v.len() == 8
            && v.starts_with(b"HTTP/")
            && v[5].is_ascii_digit()
            && v[6] == b'.'
            && v[7].is_ascii_digit()
    };
    if parts.len() == 3 && well_formed(parts[2]) {
        HttpError::new(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    } else {
        bad("malformed request line")
    }
}

/// A Host value: reg-name, IPv4 or [IPv6], optional port. No spaces,
/// slashes or other delimiters.
fn valid_host(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
}

/// Accepts origin-form (`/path`) and absolute-form (`http://host/path`).
fn origin_form(target: &str) -> Result<&str, HttpError> {
    if target.starts_with('/') {
        return Ok(target);
    }
    for scheme in ["http://", "https://"] {
        // Compare bytes: the target may hold multi-byte characters, and
        // slicing a str inside one would panic.
        let bytes = target.as_bytes();
        if bytes.len() > scheme.len()
            && bytes[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            // The scheme is ASCII, so this is a character boundary.
            let rest = &target[scheme.len()..];
            return Ok(match rest.find(['/', '?']) {
                Some(i) if rest[i..].starts_with('/') => &rest[i..],
                Some(_) => return Err(bad("absolute-form target without a path")),
                None => "/",
            });
        }
    }
    if target == "*" {
        return Ok("*");
    }
    Err(bad("request target must start with '/'"))
}

fn parse_length(v: &str) -> Result<usize, HttpError> {
    if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("invalid Content-Length"));
    }
    v.parse().map_err(|_| bad("invalid Content-Length"))
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), without
/// the quotes a value may have (RFC 6265 4.1.1).
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
    })
}

/// The value of query parameter `name`, percent-decoded (`+` is a space).
/// `Err` for invalid percent-encoding or UTF-8.
pub fn query_param<'a>(query: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, HttpError> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k)? == name {
            return percent_decode(v).map(Some);
        }
    }
    Ok(None)
}

pub fn percent_decode(s: &str) -> Result<Cow<'_, str>, HttpError> {
    if !s.contains(['%', '+']) {
        return Ok(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| c.is_ascii_hexdigit().then(|| hex_val(c));
                match (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => out.push(h * 16 + l),
                    _ => return Err(bad("invalid percent-encoding in query string")),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| bad("query string is not valid UTF-8"))
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes a complete response head and body into `out`.
pub struct Response<'a> {
    pub status: u16,
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub keep_alive: bool,
    pub date: &'a str,
    /// Extra header lines, each `Name: value` without CRLF.
    pub headers: &'a [&'a str],
    /// An answer to HEAD: the head as GET would have it (its
    /// `Content-Length` too), and no content.
    pub head_only: bool,
}

impl Response<'_> {
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nServer: ssecast\r\nDate: {}\r\n",
            self.status,
            reason(self.status),
            self.date
        );
        for h in self.headers {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !self.content_type.is_empty() {
            let _ = write!(out, "Content-Type: {}\r\n", self.content_type);
        }
        if self.status != 204 {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        out.extend_from_slice(if self.keep_alive {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
        if !self.head_only {
            out.extend_from_slice(self.body);
        }
    }
}

/// `{"error": message}` as bytes.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(message.len() + 16);
    let _ = serde_json::to_writer(&mut v, &serde_json::json!({ "error": message }));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<(Request<'_>, usize)>, HttpError> {
        parse_head(s.as_bytes(), 8192)
    }

    #[test]
    fn parses_a_subscribe_request() {
        let r = "GET /events?channel=a%20b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 42\r\n\r\nrest";
        let (req, len) = head(r).unwrap().unwrap();
        assert_eq!(len, r.len() - 4);
        assert_eq!(
            (req.method, req.path, req.query),
            ("GET", "/events", "channel=a%20b")
        );
        assert_eq!(req.last_event_id, Some("42"));
        assert!(req.keep_alive);
        assert_eq!(
            query_param(req.query, "channel").unwrap().as_deref(),
            Some("a b")
        );
        assert_eq!(req.framing(), Framing::Empty);
    }

    #[test]
    fn keeps_the_cookie_and_authorization_for_forward_auth() {
        let r = "GET /events HTTP/1.1\r\nHost: x\r\nCookie: session=abc; b=1\r\nAuthorization: Bearer t\r\n\r\n";
        let (req, _) = head(r).unwrap().unwrap();
        assert_eq!(req.cookie, Some("session=abc; b=1"));
        assert_eq!(req.authorization, Some("Bearer t"));
        let (req, _) = head("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().unwrap();
        assert_eq!(req.cookie, None);
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_fail() {
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(head(&big).unwrap_err().status, 431);
    }

    #[test]
    fn smuggling_and_bad_framing_are_refused() {
        let cases = [
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET foo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        ];
        for (req, status) in cases {
            assert_eq!(head(req).unwrap_err().status, status, "{req:?}");
        }
        let same = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(head(same).unwrap().unwrap().0.framing(), Framing::Length(3));
    }

    #[test]
    fn version_errors_tell_malformed_from_unsupported() {
        assert_eq!(
            head("GET / HTTP/2.0\r\nHost: x\r\n\r\n")
                .unwrap_err()
                .status,
            505
        );
        assert_eq!(
            head("GET / http/1.1\r\nHost: x\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            head("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(head("GET /\r\n\r\n").unwrap_err().status, 400);
    }

    #[test]
    fn opaque_bytes_in_unused_headers_are_fine() {
        let r = b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: caf\xe9\r\n\r\n";
        assert!(parse_head(r, 8192).unwrap().is_some());
        let r = b"GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xe9\r\n\r\n";
        assert_eq!(parse_head(r, 8192).unwrap_err().status, 400);
    }

    #[test]
    fn host_is_checked_in_every_version() {
        assert_eq!(
            head("GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            head("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert!(head("GET / HTTP/1.1\r\nHost: [::1]:5001\r\n\r\n")
            .unwrap()
            .is_some());
        let (r, _) = head("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.expect_continue, "ignored in HTTP/1.0");
    }

    #[test]
    fn absolute_form_targets_are_accepted() {
        let (req, _) = head("GET http://h:1/health?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((req.path, req.query), ("/health", "x=1"));
    }

    #[test]
    fn multibyte_targets_do_not_panic() {
        for t in [
            "GET é/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET httpé://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http:/é HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET htt\u{e9}ps://x HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let _ = head(t);
        }
    }

    #[test]
    fn http10_defaults_to_close() {
        let (req, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!req.keep_alive);
        let (req, _) = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(req.keep_alive);
    }

    #[test]
    fn chunked_decodes_byte_by_byte() {
        let wire = b"4 ;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut d = Chunked::default();
        let mut body = Vec::new();
        let mut done = None;
        for n in 1..=wire.len() {
            if let Some(len) = d.decode(&wire[..n], &mut body, 1024, 1024).unwrap() {
                done = Some(len);
                break;
            }
        }
        assert_eq!(body, b"Wikipedia");
        assert_eq!(done, Some(wire.len() - 4));
    }

    #[test]
    fn chunked_rejects_garbage_and_oversize() {
        for wire in [
            &b"x\r\n"[..],
            b"4\nWiki\r\n",
            b"4\r\nWikiXX",
            b"\r\n",
            b"0\r\n\n",
        ] {
            let mut body = Vec::new();
            assert!(
                Chunked::default()
                    .decode(wire, &mut body, 1024, 1024)
                    .is_err(),
                "{wire:?}"
            );
        }
        let mut body = Vec::new();
        let e = Chunked::default()
            .decode(b"800\r\n", &mut body, 1024, 1024)
            .unwrap_err();
        assert_eq!(e.status, 413);
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("a+b%2Fc").unwrap(), "a b/c");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%ff").is_err());
        assert_eq!(query_param("a=1&b=2", "b").unwrap().as_deref(), Some("2"));
        assert_eq!(query_param("a=1", "b").unwrap(), None);
    }

    #[test]
    fn responses_are_framed() {
        let mut out = Vec::new();
        Response {
            status: 404,
            content_type: "application/json",
            body: &error_body("not found"),
            keep_alive: true,
            head_only: false,
            date: "Sun, 22 Nov 2026 00:00:00 GMT",
            headers: &["X-A: 1"],
        }
        .write_to(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("X-A: 1\r\n") && s.contains("Content-Length: 21\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"error\":\"not found\"}"));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let r = "GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1; ssecast_token=\"t.k.n\"\r\nCookie: z=2\r\n\r\n";
        let (req, _) = head(r).unwrap().unwrap();
        let c = req.cookie.unwrap();
        assert_eq!(cookie_value(c, "ssecast_token"), Some("t.k.n"));
        assert_eq!(cookie_value(c, "a"), Some("1"));
        assert_eq!(cookie_value(c, "z"), None);
        assert_eq!(cookie_value("novalue; =x", "novalue"), None);
    }
}
