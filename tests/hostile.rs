//! Hostile and malformed input, end to end.
//!
//! A table of cases: each sends raw bytes (in one write, one byte per write,
//! or in steps with an interim `100 Continue` or a barrier between them) to a
//! hub started with the case's flags, and states exactly what comes back:
//! the status of every response and the kind of body (a JSON `{"error"}`, a
//! publish answer, ...), and how the connection ends (closed cleanly, still
//! usable, closed without any response, or turned into an event stream).
//!
//! Beside every case a subscriber is connected to the `default` channel of
//! the same hub. After the case an event is published; the subscriber must
//! receive exactly the events the case was supposed to publish (none for a
//! refused request: publishing is all or none), then that marker event.
//!
//! Each row of `cases!` expands to its own `#[test]`, so a failure names the
//! row. Rows that fail against the current hub are bugs reported with them.
//!
//! Every row runs twice: against the embedded hub (`head_health`), and in
//! Redis mode (`in_redis_mode::head_health`) against a hub started with
//! `--redis-url` on a private `redis-server` the row starts and kills (CI
//! installs it; without it those rows fail). Hostile input is answered the
//! same in both modes. In Redis mode the subscriber beside the case first
//! receives warm-up events (the proof that it follows the channel), so a
//! `history-lost` there names an oldest id held instead of an empty log.

mod hostile_support;

use hostile_support::{get, post, post_json, show, Conn, Hub, Mode, Response};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// The table's vocabulary
// ---------------------------------------------------------------------------

enum Step {
    /// One write.
    Send(Vec<u8>),
    /// One write per byte.
    Bytewise(Vec<u8>),
    /// Read exactly `HTTP/1.1 100 Continue` and nothing else yet.
    Continue,
    /// Make sure the hub has read everything sent so far (round trips on
    /// another connection), so the next bytes arrive separately.
    Barrier,
    /// shutdown(Write): the client is done sending.
    HalfClose,
}

/// What a response body must be.
#[derive(Clone)]
enum Body {
    /// `Content-Type: application/json`, `{"error": "<non-empty string>"}`.
    Error,
    /// Like `Error`, and the message contains this text.
    ErrorWith(&'static str),
    /// A single publish answer: `{"id": N, "channel": C, "subscribers": K}`.
    Published(&'static str),
    /// A batch answer with this many events.
    PublishedBatch(usize),
    /// `/health`: `{"status":"healthy", ...}`.
    Healthy,
    /// No body (204).
    Empty,
    /// An answer to HEAD: only the head is read, so any content the hub
    /// sent would be taken for the next response (or trip the EOF check).
    /// A non-204 answer still says how long the GET's body would be.
    Head,
    /// Anything with a Content-Length.
    Any,
}

#[derive(Clone)]
struct Want {
    status: u16,
    body: Body,
    /// Headers that must be present with exactly these values.
    headers: Vec<(&'static str, &'static str)>,
}

/// How the connection ends after the wanted responses.
enum End {
    /// The last response says `Connection: close` (unless the client
    /// half-closed first); then a clean EOF.
    Closes,
    /// Still usable: a following `GET /health` is answered.
    Open,
    /// A stream: 200 `text/event-stream`. With `Some(id)` its first event is
    /// `history-lost` for that Last-Event-ID; then comes the marker.
    Stream(Option<&'static str>),
}

struct Case {
    flags: Vec<&'static str>,
    steps: Vec<Step>,
    wants: Vec<Want>,
    end: End,
    /// Events the case itself publishes to `default`: (event name, data).
    delivers: Vec<(Option<&'static str>, String)>,
}

fn send(bytes: impl AsRef<[u8]>) -> Case {
    Case {
        flags: Vec::new(),
        steps: vec![Step::Send(bytes.as_ref().to_vec())],
        wants: Vec::new(),
        end: End::Open,
        delivers: Vec::new(),
    }
}

fn bytewise(bytes: impl AsRef<[u8]>) -> Case {
    Case {
        steps: vec![Step::Bytewise(bytes.as_ref().to_vec())],
        ..send(b"")
    }
}

impl Case {
    fn flags(mut self, flags: &[&'static str]) -> Case {
        self.flags.extend_from_slice(flags);
        self
    }

    fn then(mut self, step: Step) -> Case {
        self.steps.push(step);
        self
    }

    fn then_send(self, bytes: impl AsRef<[u8]>) -> Case {
        self.then(Step::Send(bytes.as_ref().to_vec()))
    }

    fn want(mut self, status: u16, body: Body) -> Case {
        self.wants.push(Want {
            status,
            body,
            headers: Vec::new(),
        });
        self
    }

    /// A header on the last wanted response.
    fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.wants
            .last_mut()
            .expect("header() after want()")
            .headers
            .push((name, value));
        self
    }

    /// The framing is broken or unknown: an error, then the hub closes.
    fn refused(self, status: u16) -> Case {
        self.want(status, Body::Error).closes()
    }

    /// A well-framed request refused by the handler: the connection stays.
    fn rejected(self, status: u16) -> Case {
        self.want(status, Body::Error).open()
    }

    fn published(self, data: &str) -> Case {
        self.want(200, Body::Published("default"))
            .delivers(None, data)
            .open()
    }

    fn closes(mut self) -> Case {
        self.end = End::Closes;
        self
    }

    fn open(mut self) -> Case {
        self.end = End::Open;
        self
    }

    fn stream(mut self, lost: Option<&'static str>) -> Case {
        self.end = End::Stream(lost);
        self
    }

    fn delivers(mut self, event: Option<&'static str>, data: &str) -> Case {
        self.delivers.push((event, data.to_string()));
        self
    }
}

// ---------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------

fn run(name: &str, case: Case, mode: Mode) {
    let hub = Hub::start_in(mode, &case.flags);
    let mut sub = hub.subscribe("/events", "");
    let warm = (mode == Mode::Redis).then(|| hub.warm_up(&mut sub));
    let mut conn = hub.connect();
    let mut sent: Vec<u8> = Vec::new();
    let ctx = |sent: &[u8], m: String| format!("case {name}: sent {}: {m}", show(sent));

    for step in &case.steps {
        match step {
            Step::Send(b) => {
                sent.extend_from_slice(b);
                // The hub may answer and close before everything is written
                // (e.g. 413 on the Content-Length alone): a failed write is
                // not an error in itself, the responses decide.
                let _ = conn.try_send(b);
            }
            Step::Bytewise(b) => {
                sent.extend_from_slice(b);
                for byte in b {
                    if conn.try_send(std::slice::from_ref(byte)).is_err() {
                        break;
                    }
                }
            }
            Step::Continue => {
                let r = conn
                    .read_head()
                    .unwrap_or_else(|e| panic!("{}", ctx(&sent, format!("waiting for 100: {e}"))));
                assert_eq!(
                    (r.status, r.headers.len()),
                    (100, 0),
                    "{}",
                    ctx(&sent, format!("wanted a bare 100 Continue, got {r:?}"))
                );
            }
            Step::Barrier => hub.barrier(),
            Step::HalfClose => conn.half_close(),
        }
    }

    let mut last: Option<Response> = None;
    for (i, want) in case.wants.iter().enumerate() {
        let read = if matches!(want.body, Body::Head) {
            Conn::read_head
        } else {
            Conn::read_response
        };
        let r = read(&mut conn).unwrap_or_else(|e| {
            panic!(
                "{}",
                ctx(
                    &sent,
                    format!("response {} of {}: {e}", i + 1, case.wants.len())
                )
            )
        });
        if let Err(m) = check(&r, want) {
            panic!(
                "{}",
                ctx(
                    &sent,
                    format!(
                        "response {} of {}: {m}\n  got: {r:?}",
                        i + 1,
                        case.wants.len(),
                    )
                )
            );
        }
        last = Some(r);
    }

    let mut stream = None;
    match case.end {
        End::Closes => {
            // After the client's own half-close the hub may close after a
            // keep-alive answer; otherwise it must announce the close.
            let half_closed = case.steps.iter().any(|s| matches!(s, Step::HalfClose));
            if let Some(r) = last.as_ref().filter(|_| !half_closed) {
                assert!(
                    r.closes(),
                    "{}",
                    ctx(
                        &sent,
                        format!("last response lacks Connection: close: {r:?}")
                    )
                );
            }
            if let Err(m) = conn.expect_eof() {
                panic!("{}", ctx(&sent, m));
            }
        }
        End::Open => {
            if let Some(r) = &last {
                assert!(
                    !r.closes(),
                    "{}",
                    ctx(&sent, format!("wanted keep-alive, got {r:?}"))
                );
            }
            conn.send(&get("/health"));
            match conn.read_response() {
                Ok(r) if r.status == 200 => {}
                other => panic!(
                    "{}",
                    ctx(
                        &sent,
                        format!("connection not usable afterwards: GET /health -> {other:?}")
                    )
                ),
            }
        }
        End::Stream(_) => {
            let r = conn
                .read_head()
                .unwrap_or_else(|e| panic!("{}", ctx(&sent, format!("stream head: {e}"))));
            assert!(
                r.status == 200 && r.header("content-type") == Some("text/event-stream"),
                "{}",
                ctx(&sent, format!("wanted an event stream, got {r:?}"))
            );
            // The body is delimited: chunked, or by the close.
            assert!(
                r.header("transfer-encoding") == Some("chunked") || r.closes(),
                "{}",
                ctx(&sent, format!("stream without a body framing: {r:?}"))
            );
            assert!(
                r.header("content-length").is_none(),
                "{}",
                ctx(&sent, format!("stream with a Content-Length: {r:?}"))
            );
            stream = Some(hostile_support::Subscriber::new(conn, &r));
        }
    }

    // The hub is unharmed: it publishes, and the subscriber beside the case
    // gets exactly what the case published, then the marker.
    hub.assert_alive();
    let marker = format!("marker-{name}");
    let r = hub.publish(json!({ "data": marker }));
    assert_eq!(r.status, 200, "case {name}: marker publish: {r:?}");
    let marker_id = r.json().unwrap()["id"].as_u64().expect("marker id");
    let got = sub
        .events_until(&marker)
        .unwrap_or_else(|m| panic!("case {name}: subscriber beside the case: {m}"));
    let got: Vec<(Option<String>, String)> = got[..got.len() - 1]
        .iter()
        .map(|e| (e.event.clone(), e.data.clone()))
        .collect();
    let want: Vec<(Option<String>, String)> = case
        .delivers
        .iter()
        .map(|(e, d)| (e.map(str::to_string), d.clone()))
        .collect();
    assert_eq!(
        got,
        want,
        "{}",
        ctx(&sent, "events the subscriber got before the marker".into())
    );

    if let (End::Stream(lost), Some(mut s)) = (case.end, stream) {
        let mut first = s
            .next_event()
            .unwrap_or_else(|m| panic!("case {name}: the case's stream: {m}"));
        if let Some(sent_id) = lost {
            assert_eq!(
                first.event.as_deref(),
                Some("history-lost"),
                "case {name}: wanted history-lost first, got {first:?}"
            );
            let lost_id: u64 = first
                .id
                .as_deref()
                .unwrap_or("")
                .parse()
                .unwrap_or_else(|_| {
                    panic!("case {name}: history-lost id is not a number: {first:?}")
                });
            let d: Value = serde_json::from_str(&first.data)
                .unwrap_or_else(|e| panic!("case {name}: history-lost data {first:?}: {e}"));
            assert_eq!(d["last_event_id"], Value::from(sent_id), "case {name}: {d}");
            match warm {
                // Nothing was published before the case: the log was empty.
                None => assert_eq!(
                    d["first_available_id"].as_u64(),
                    Some(lost_id + 1),
                    "case {name}: {d}"
                ),
                // Only the warm-up was: its marker is the newest event, and
                // the oldest held is one of its events.
                Some(w) => {
                    assert_eq!(lost_id, w.last_id, "case {name}: history-lost id vs {w:?}");
                    let first_held = d["first_available_id"].as_u64().unwrap_or(0);
                    assert!(
                        (w.first_id..=w.last_id).contains(&first_held),
                        "case {name}: {d} vs warm-up {w:?}"
                    );
                }
            }
            assert!(lost_id < marker_id, "case {name}: {first:?} vs {marker_id}");
            first = s
                .next_event()
                .unwrap_or_else(|m| panic!("case {name}: the case's stream: {m}"));
        }
        assert_eq!(
            (first.data.as_str(), first.id),
            (marker.as_str(), Some(marker_id.to_string())),
            "case {name}: the case's stream, after its start"
        );
    }
    hub.assert_alive();
}

fn check(r: &Response, want: &Want) -> Result<(), String> {
    if r.status != want.status {
        return Err(format!("status {} (wanted {})", r.status, want.status));
    }
    for (n, v) in &want.headers {
        if r.header(n) != Some(*v) {
            return Err(format!("header {n}: {:?} (wanted {v:?})", r.header(n)));
        }
    }
    let json_ct = || {
        if r.header("content-type") == Some("application/json") {
            Ok(())
        } else {
            Err(format!(
                "Content-Type {:?}, wanted application/json",
                r.header("content-type")
            ))
        }
    };
    match &want.body {
        Body::Error => {
            json_ct()?;
            r.error_message()?;
        }
        Body::ErrorWith(text) => {
            json_ct()?;
            let m = r.error_message()?;
            if !m.contains(text) {
                return Err(format!("error {m:?} does not mention {text:?}"));
            }
        }
        Body::Published(channel) => {
            json_ct()?;
            let v = r.json()?;
            if !(v["id"].is_u64() && v["channel"] == *channel && v["subscribers"].is_u64()) {
                return Err(format!("not a publish answer for channel {channel:?}: {v}"));
            }
        }
        Body::PublishedBatch(n) => {
            json_ct()?;
            let v = r.json()?;
            if v["events"].as_array().map(Vec::len) != Some(*n) {
                return Err(format!("not a batch answer of {n} events: {v}"));
            }
        }
        Body::Healthy => {
            json_ct()?;
            let v = r.json()?;
            if v["status"] != "healthy" {
                return Err(format!("not healthy: {v}"));
            }
        }
        Body::Empty => {
            if !r.body.is_empty() {
                return Err("wanted no body".into());
            }
        }
        Body::Any => {}
        Body::Head => {
            let stream = r.header("content-type") == Some("text/event-stream");
            if r.status != 204 && !stream && r.header("content-length").is_none() {
                return Err("an answer to HEAD without the GET's Content-Length".into());
            }
        }
    }
    Ok(())
}

fn head(target: &str) -> String {
    format!("HEAD {target} HTTP/1.1\r\nHost: t\r\n\r\n")
}

macro_rules! cases {
    ($($name:ident: $case:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name), $case, Mode::Local);
            }
        )*
        /// The same rows against a hub in Redis mode.
        mod in_redis_mode {
            use super::*;
            $(
                #[test]
                fn $name() {
                    run(stringify!($name), $case, Mode::Redis);
                }
            )*
        }
        /// Every row's name, for the count in the table's own test.
        const CASE_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

// ---------------------------------------------------------------------------
// Bytes used by several rows
// ---------------------------------------------------------------------------

const CAP_1K: &[&str] = &["--max-header-bytes", "1024", "--max-body-bytes", "1024"];

fn chunked(body_wire: &str) -> Vec<u8> {
    format!(
        "POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{body_wire}"
    )
    .into_bytes()
}

fn with_headers(extra: &str) -> Vec<u8> {
    format!("GET /health HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes()
}

fn text(query: &str, body: &[u8]) -> Vec<u8> {
    post(
        &format!("/events/broadcast{query}"),
        Some("text/plain; charset=utf-8"),
        body,
    )
}

fn lei(value: &str) -> Vec<u8> {
    format!("GET /events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {value}\r\n\r\n").into_bytes()
}

fn many_gets(n: usize, target: &str) -> Vec<u8> {
    get(target).repeat(n)
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

cases! {
    // RFC 9110 9.3.2: HEAD is GET without content, errors included; the
    // connection stays usable (a following GET /health proves no content
    // was sent).
    head_health:
        send(head("/health"))
            .want(200, Body::Head)
            .header("Content-Type", "application/json")
            .open();
    head_events_is_the_stream_head_and_keeps_the_connection:
        send(head("/events?channel=h"))
            .want(200, Body::Head)
            .header("Content-Type", "text/event-stream")
            .header("Cache-Control", "no-cache, no-store, no-transform")
            .header("Connection", "keep-alive")
            .open();
    head_sse_alias:
        send(head("/sse")).want(200, Body::Head).open();
    head_status_stream:
        send(head("/events/status/stream"))
            .want(200, Body::Head)
            .header("Content-Type", "text/event-stream")
            .open();
    head_status:
        send(head("/events/status")).want(200, Body::Head).open();
    head_status_alias:
        send(head("/sse/health")).want(200, Body::Head).open();
    head_metrics:
        send(head("/metrics")).want(200, Body::Head).open();
    head_page:
        send(head("/"))
            .want(200, Body::Head)
            .header("Content-Type", "text/html; charset=utf-8")
            .open();
    head_favicon:
        send(head("/favicon.ico")).want(204, Body::Head).open();
    head_unknown_path:
        send(head("/nope")).want(404, Body::Head).open();
    head_on_publish_path:
        send(head("/events/broadcast"))
            .want(405, Body::Head)
            .header("Allow", "POST, OPTIONS")
            .open();
    head_events_bad_channel:
        send(head("/events?channel=%0a")).want(400, Body::Head).open();
    head_events_at_the_stream_cap:
        send(head("/events"))
            .flags(&["--max-connections", "1"])
            .want(503, Body::Head)
            .header("Retry-After", "1")
            .open();
    head_then_pipelined_get:
        send(format!("{}GET /health HTTP/1.1\r\nHost: t\r\n\r\n", head("/health")))
            .want(200, Body::Head)
            .want(200, Body::Healthy)
            .open();
    head_http10_stream_closes:
        send("HEAD /events HTTP/1.0\r\n\r\n")
            .want(200, Body::Head)
            .header("Connection", "close")
            .closes();
    head_unreadable_is_answered_without_content:
        send("HEAD /health HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n")
            .want(400, Body::Head)
            .closes();
    head_body_too_large:
        send("HEAD /health HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n")
            .want(413, Body::Head)
            .closes();
    // -- request line ---------------------------------------------------------
    request_line_two_spaces:
        send("GET  /health HTTP/1.1\r\nHost: t\r\n\r\n").refused(400);
    request_line_control_byte_in_method:
        send("G\x01T /health HTTP/1.1\r\nHost: t\r\n\r\n").refused(400);
    // An unencoded space splits the target; the client spoke HTTP/1.1, so
    // "only HTTP/1.0 and HTTP/1.1 are supported" (505) is wrong: RFC 9112
    // 3.2, an invalid request-line SHOULD get 400.
    request_line_space_in_target:
        send("GET /hea lth HTTP/1.1\r\nHost: t\r\n\r\n").refused(400);
    // Found by fuzzing (target `request`): `origin_form` sliced the target
    // at 7 bytes ("http://") and 8 ("https://") without checking for a
    // character boundary; a two-byte character there panicked the event
    // loop and the process (fixed in efb341c).
    request_target_multibyte_char_at_byte_7:
        send("GET http:/\u{45e}:1/health HTTP/1.1\r\nHost: t\r\n\r\n").refused(400);
    request_target_multibyte_char_at_byte_8:
        send("GET abcdefg\u{e9} HTTP/1.1\r\nHost: t\r\n\r\n").refused(400);
    request_line_relative_target:
        send("GET health HTTP/1.1\r\nHost: t\r\n\r\n").refused(400);
    request_line_garbage_then_crlf:
        send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n").refused(400);
    unknown_method_on_stream_path:
        send("DELETE /events HTTP/1.1\r\nHost: t\r\n\r\n")
            .want(405, Body::ErrorWith("DELETE"))
            .header("Allow", "GET, HEAD, OPTIONS")
            .open();
    unknown_method_on_publish_path:
        send("BREW /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
            .want(405, Body::Error)
            .header("Allow", "POST, OPTIONS")
            .open();
    get_on_publish_path:
        send(get("/events/broadcast"))
            .want(405, Body::Error)
            .header("Allow", "POST, OPTIONS")
            .open();
    options_without_preflight:
        send("OPTIONS /events HTTP/1.1\r\nHost: t\r\n\r\n")
            .want(204, Body::Empty)
            .header("Allow", "GET, HEAD, OPTIONS")
            .open();
    unknown_path:
        send(get("/events/nope")).rejected(404);
    http09_request:
        send("GET /\r\n").refused(400);
    http2_preface:
        send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").refused(505);
    http_version_2:
        send("GET /health HTTP/2.0\r\nHost: t\r\n\r\n").refused(505);
    // RFC 9112 2.3: HTTP-name is case-sensitive "HTTP"; "http/1.1" is not a
    // version at all, so the request line is invalid (3.2: SHOULD 400), not
    // a version the hub does not support (505).
    http_version_lowercase:
        send("GET /health http/1.1\r\nHost: t\r\n\r\n").refused(400);
    absolute_form_target:
        send("GET http://x/health HTTP/1.1\r\nHost: x\r\n\r\n").want(200, Body::Healthy).open();
    absolute_form_target_https_with_port_and_query:
        send("GET HTTPS://x:8443/health?a=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .want(200, Body::Healthy)
            .open();
    http10_without_host_closes_after_answer:
        send("GET /health HTTP/1.0\r\n\r\n").want(200, Body::Healthy).closes();

    // -- header section -------------------------------------------------------
    header_without_colon:
        send(with_headers("NoColonHere\r\n")).refused(400);
    header_name_with_space:
        send(with_headers("Bad Name: x\r\n")).refused(400);
    header_whitespace_before_colon:
        send(with_headers("X-A : x\r\n")).refused(400);
    header_name_control_byte:
        send(with_headers("X-\x7fA: x\r\n")).refused(400);
    header_name_non_ascii:
        send(with_headers("X-\u{e9}: x\r\n")).refused(400);
    header_name_separator:
        send(with_headers("X(A): x\r\n")).refused(400);
    header_value_nul:
        send(with_headers("X-A: a\x00b\r\n")).refused(400);
    header_value_bare_cr:
        send(with_headers("X-A: a\rb\r\n")).refused(400);
    header_obs_fold:
        send(with_headers("X-A: a\r\n  folded\r\n")).refused(400);
    header_line_over_cap:
        send(with_headers(&format!("X-Big: {}\r\n", "a".repeat(1100))))
            .flags(CAP_1K)
            .refused(431);
    header_total_over_cap:
        send(with_headers(&"X-Small: 0123456789012345678901234567890123456789\r\n".repeat(30)))
            .flags(CAP_1K)
            .refused(431);
    header_over_cap_bytewise:
        bytewise(with_headers(&format!("X-Big: {}\r\n", "a".repeat(1100))))
            .flags(CAP_1K)
            .refused(431);
    headers_just_under_cap:
        send(with_headers(&format!("X-Big: {}\r\n", "a".repeat(900))))
            .flags(CAP_1K)
            .want(200, Body::Healthy)
            .open();
    too_many_headers:
        send(with_headers(&(0..70).map(|i| format!("X-{i}: v\r\n")).collect::<String>()))
            .refused(431);
    missing_host_http11:
        send("GET /health HTTP/1.1\r\n\r\n").refused(400);
    two_host_headers:
        send("GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").refused(400);
    // RFC 9112 3.2: "A server MUST respond with a 400 ... to any request
    // message that contains more than one Host header field line or a Host
    // header field with an invalid field value" -- any version.
    two_host_headers_http10:
        send("GET /health HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").refused(400);
    host_with_invalid_value:
        send("GET /health HTTP/1.1\r\nHost: a b/c\r\n\r\n").refused(400);
    expect_something_else:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\nContent-Length: 12\r\n\r\n{\"data\":\"x\"}")
            .refused(417);

    // -- framing: Content-Length ----------------------------------------------
    content_length_duplicate_identical:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n{\"data\":\"x\"}")
            .published("x");
    content_length_conflicting:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\nContent-Length: 13\r\n\r\n{\"data\":\"x\"} ")
            .refused(400);
    content_length_list:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 12, 12\r\n\r\n{\"data\":\"x\"}").refused(400);
    content_length_negative:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n").refused(400);
    content_length_plus_sign:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: +12\r\n\r\n{\"data\":\"x\"}").refused(400);
    content_length_hex:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 0xc\r\n\r\n{\"data\":\"x\"}").refused(400);
    content_length_overflow:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 184467440737095516160\r\n\r\n").refused(400);
    content_length_and_chunked:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            .refused(400);
    chunked_and_content_length_zero:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n")
            .refused(400);
    body_over_cap_by_content_length:
        send(post_json(format!("{{\"data\":\"{}\"}}", "x".repeat(2000)).as_bytes()))
            .flags(CAP_1K)
            .refused(413);
    body_over_cap_by_content_length_alone:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999\r\n\r\n")
            .flags(CAP_1K)
            .refused(413);
    body_shorter_than_content_length_then_close:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"data\":\"x\"}")
            .then(Step::HalfClose)
            .closes();

    // -- framing: chunked -----------------------------------------------------
    chunked_valid_with_extension_and_trailer:
        send(chunked("5;x=y\r\n{\"dat\r\n7\r\na\":\"x\"}\r\n0\r\nX-T: v\r\n\r\n")).published("x");
    chunked_valid_bytewise:
        bytewise(chunked("c\r\n{\"data\":\"y\"}\r\n0\r\n\r\n")).published("y");
    chunked_bad_size_chars:
        send(chunked("zz\r\n")).refused(400);
    chunked_negative_size:
        send(chunked("-1\r\nx\r\n0\r\n\r\n")).refused(400);
    chunked_size_leading_space:
        send(chunked(" 5\r\nhello\r\n0\r\n\r\n")).refused(400);
    chunked_size_too_many_digits:
        send(chunked("10000000000000000c\r\n{\"data\":\"y\"}\r\n0\r\n\r\n")).refused(400);
    chunked_size_overflow_u64:
        send(chunked("ffffffffffffffffffff\r\n")).refused(400);
    chunked_size_huge_is_too_large:
        send(chunked("fffffffffffffff\r\n")).refused(413);
    // RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF, chunk-ext =
    // *( BWS ";" BWS name [ BWS "=" BWS value ] ). "4 5" and a NUL in an
    // extension are not chunked framing; lenient size lines are what
    // request-smuggling chains are built from (2.2: SHOULD 400 and close).
    chunked_size_with_inner_space:
        send(chunked("4 5\r\n{\"da\r\n8\r\nta\":\"y\"}\r\n0\r\n\r\n")).refused(400);
    chunked_extension_nul:
        send(chunked("c;a\x00b\r\n{\"data\":\"y\"}\r\n0\r\n\r\n")).refused(400);
    chunked_size_line_bare_lf:
        send(chunked("c\n{\"data\":\"y\"}\r\n0\r\n\r\n")).refused(400);
    chunked_extension_bare_lf:
        send(chunked("c;a\n{\"data\":\"y\"}\r\n0\r\n\r\n")).refused(400);
    chunked_data_longer_than_size:
        send(chunked("3\r\n{\"data\":\"y\"}\r\n0\r\n\r\n")).refused(400);
    chunked_body_over_cap:
        send(chunked(&format!("400\r\n{}\r\n1\r\nx\r\n0\r\n\r\n", "a".repeat(1024))))
            .flags(CAP_1K)
            .refused(413);
    chunked_trailer_bare_lf:
        send(chunked("c\r\n{\"data\":\"y\"}\r\n0\r\nX-T: v\n\r\n")).refused(400);
    chunked_trailer_over_cap:
        send(chunked(&format!("c\r\n{{\"data\":\"y\"}}\r\n0\r\nX-T: {}\r\n\r\n", "v".repeat(2000))))
            .flags(CAP_1K)
            .refused(431);
    // RFC 9112 7.1.2: trailer-section = *( field-line CRLF ); a line that is
    // not a field line is not HTTP/1.1 (2.2: SHOULD respond 400 and close).
    chunked_trailer_without_colon:
        send(chunked("c\r\n{\"data\":\"y\"}\r\n0\r\nnot a field line\r\n\r\n")).refused(400);
    chunked_end_bare_lf:
        send(chunked("c\r\n{\"data\":\"y\"}\r\n0\r\n\n")).refused(400);
    transfer_encoding_unknown:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n").refused(501);
    transfer_encoding_gzip_chunked:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n").refused(501);
    transfer_encoding_in_http10:
        send(b"POST /events/broadcast HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").refused(400);
    chunked_short_then_close:
        send(chunked("c\r\n{\"da"))
            .then(Step::HalfClose)
            .closes();

    // -- Expect ---------------------------------------------------------------
    expect_100_continue:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n")
            .then(Step::Continue)
            .then_send(b"{\"data\":\"c\"}")
            .published("c");
    expect_100_continue_chunked:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n")
            .then(Step::Continue)
            .then_send(b"c\r\n{\"data\":\"d\"}\r\n0\r\n\r\n")
            .published("d");
    expect_100_continue_over_cap_gets_413_not_100:
        send(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
            .flags(CAP_1K)
            .refused(413);
    // RFC 9110 10.1.1: "A server that receives a 100-continue expectation in
    // an HTTP/1.0 request MUST ignore that expectation."
    expect_100_continue_http10_is_ignored:
        send(b"POST /events/broadcast HTTP/1.0\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n")
            .then(Step::Barrier)
            .then_send(b"{\"data\":\"e\"}")
            .want(200, Body::Published("default"))
            .delivers(None, "e")
            .closes();

    // -- publish bodies -------------------------------------------------------
    json_invalid:
        send(post_json(b"{\"data\":")).rejected(400);
    json_trailing_garbage:
        send(post_json(b"{\"data\":\"x\"} x")).rejected(400);
    json_string_not_object:
        send(post_json(b"\"just a string\"")).rejected(400);
    json_number_not_object:
        send(post_json(b"42")).rejected(400);
    json_array_of_numbers:
        send(post_json(b"[1,2]")).rejected(400);
    json_empty_array:
        send(post_json(b"[]")).rejected(400);
    json_deeply_nested:
        send(post_json(format!("{{\"data\":{}}}", "[".repeat(100_000)).as_bytes())).rejected(400);
    json_nested_within_limit_is_compact:
        send(post_json(format!("{{\"data\": {} {} }}", "[ ".repeat(100), " ]".repeat(100)).as_bytes()))
            .published(&format!("{}{}", "[".repeat(100), "]".repeat(100)));
    json_empty_body:
        send(post_json(b"")).rejected(400);
    data_missing:
        send(post_json(br#"{"event":"e"}"#)).rejected(400);
    data_null:
        send(post_json(br#"{"data":null}"#)).rejected(400);
    data_empty_string:
        send(post_json(br#"{"data":""}"#)).rejected(400);
    data_number_is_compact:
        send(post_json(br#"{"data": 4.5e1}"#)).published("45.0");
    data_integer:
        send(post_json(br#"{"data": -7}"#)).published("-7");
    data_bool:
        send(post_json(br#"{"data": false}"#)).published("false");
    data_object_is_compact:
        send(post_json(b"{\"data\": { \"a\" : [ 1 , \"two\" ],\n \"b\": null } }"))
            .published(r#"{"a":[1,"two"],"b":null}"#);
    data_array_is_compact:
        send(post_json(br#"{"data": [ ]}"#)).published("[]");
    data_with_crlf_and_cr_is_normalised:
        send(post_json(br#"{"data":"a\r\nb\rc\nd"}"#)).published("a\nb\nc\nd");
    data_with_nul_survives:
        send(post_json(br#"{"data":"a\u0000b"}"#)).published("a\u{0}b");
    batch_is_all_or_none:
        send(post_json(br#"[{"data":"ok"},{"data":""}]"#)).rejected(400);
    batch_accepted_in_order:
        send(post_json(br#"[{"data":"one"},{"data":"two","event":"e2"}]"#))
            .want(200, Body::PublishedBatch(2))
            .delivers(None, "one")
            .delivers(Some("e2"), "two")
            .open();
    id_field_refused:
        send(post_json(br#"{"data":"x","id":"1"}"#)).rejected(400);
    json_invalid_utf8:
        send(post_json(b"{\"data\":\"\xff\xfe\"}")).rejected(400);
    json_lone_surrogate:
        send(post_json(br#"{"data":"\ud800"}"#)).rejected(400);
    text_plain_invalid_utf8:
        send(text("", b"caf\xe9")).rejected(400);
    text_plain_overlong_utf8:
        send(text("", b"\xc0\xaf")).rejected(400);
    text_plain_empty:
        send(text("", b"")).rejected(400);
    text_plain_with_event:
        send(text("?event=tick", b"t1")).want(200, Body::Published("default")).delivers(Some("tick"), "t1").open();
    unsupported_content_type:
        send(post("/events/broadcast", Some("image/png"), b"{\"data\":\"x\"}")).rejected(415);
    form_content_type_is_json:
        send(post("/events/broadcast", Some("application/x-www-form-urlencoded"), b"{\"data\":\"f\"}")).published("f");

    // -- names ----------------------------------------------------------------
    event_name_lf:
        send(post_json(br#"{"data":"x","event":"a\nid: 1"}"#)).rejected(400);
    event_name_cr:
        send(post_json(br#"{"data":"x","event":"a\rb"}"#)).rejected(400);
    event_name_nul:
        send(post_json(br#"{"data":"x","event":"a\u0000b"}"#)).rejected(400);
    event_name_empty:
        send(post_json(br#"{"data":"x","event":""}"#)).rejected(400);
    event_name_not_string:
        send(post_json(br#"{"data":"x","event":7}"#)).rejected(400);
    event_name_in_query_lf:
        send(text("?event=a%0Adata:%20evil", b"x")).rejected(400);
    channel_lf:
        send(post_json(br#"{"data":"x","channel":"a\nb"}"#)).rejected(400);
    channel_cr_in_query:
        send(text("?channel=a%0Db", b"x")).rejected(400);
    channel_nul_in_query:
        send(text("?channel=a%00b", b"x")).rejected(400);
    channel_129_bytes:
        send(post_json(format!(r#"{{"data":"x","channel":"{}"}}"#, "c".repeat(129)).as_bytes())).rejected(400);
    channel_129_bytes_multibyte:
        send(post_json(format!(r#"{{"data":"x","channel":"{}"}}"#, "\u{20ac}".repeat(43)).as_bytes())).rejected(400);
    channel_c1_control:
        send(post_json(br#"{"data":"x","channel":"a\u0085b"}"#)).rejected(400);
    channel_128_bytes:
        send(post_json(format!(r#"{{"data":"x","channel":"{}"}}"#, "c".repeat(128)).as_bytes()))
            .want(200, Body::Any)
            .open();
    channel_reserved_publish:
        send(post_json(br#"{"data":"x","channel":"$status"}"#)).rejected(400);
    channel_reserved_in_query:
        send(text("?channel=%24status", b"x")).rejected(400);
    channel_reserved_subscribe:
        send(get("/events?channel=$x")).rejected(400);
    channel_too_long_subscribe:
        send(get(&format!("/events?channel={}", "c".repeat(129)))).rejected(400);

    // -- query strings --------------------------------------------------------
    query_bad_percent_hex:
        send(get("/events?channel=%zz")).rejected(400);
    query_lone_percent:
        send(get("/events?channel=%")).rejected(400);
    query_truncated_percent:
        send(get("/events?channel=a%4")).rejected(400);
    query_invalid_utf8:
        send(get("/events?channel=%C3%28")).rejected(400);
    query_plus_and_percent20_are_space:
        send(text("?event=big+bad%20wolf", b"w"))
            .want(200, Body::Published("default"))
            .delivers(Some("big bad wolf"), "w")
            .open();
    query_encoded_channel_name_default:
        send(text("?channel=d%65fault", b"enc")).published("enc");

    // -- Last-Event-ID --------------------------------------------------------
    last_event_id_garbage:
        send(lei("garbage")).stream(Some("garbage"));
    last_event_id_negative:
        send(lei("-5")).stream(Some("-5"));
    last_event_id_huge:
        send(lei("99999999999999999999999999")).stream(Some("99999999999999999999999999"));
    last_event_id_u64_max:
        send(lei("18446744073709551615")).stream(Some("18446744073709551615"));
    last_event_id_zero:
        send(lei("0")).stream(Some("0"));
    last_event_id_quote_and_backslash:
        send(lei("a\"b\\c")).stream(Some("a\"b\\c"));
    last_event_id_empty_is_absent:
        send(lei("")).stream(None);
    last_event_id_blank_is_absent:
        send(lei("   ")).stream(None);
    last_event_id_query_garbage:
        send(get("/events?lastEventId=x%20y")).stream(Some("x y"));
    // The README: "Last-Event-ID header, or ?lastEventId=N"; an empty header
    // is treated as absent, and so must an empty query value be (polyfills
    // send `lastEventId=` before they have seen an id).
    last_event_id_query_empty_is_absent:
        send(get("/events?lastEventId=")).stream(None);

    // -- pipelining and slow clients ------------------------------------------
    pipelined_garbage_after_valid:
        send([get("/health"), b"GARBAGE\r\n\r\n".to_vec()].concat())
            .want(200, Body::Healthy)
            .refused(400);
    pipelined_three_then_close:
        send([get("/health"), post_json(br#"{"data":"p"}"#),
              b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\n".to_vec()].concat())
            .want(200, Body::Healthy)
            .want(200, Body::Published("default"))
            .delivers(None, "p")
            .want(200, Body::Healthy)
            .closes();
    pipelined_health_then_subscribe:
        send([get("/health"), get("/events")].concat())
            .want(200, Body::Healthy)
            .stream(None);
    pipelined_request_after_subscribe_is_not_answered:
        send([get("/events"), get("/health")].concat()).stream(None);
    subscribe_http10:
        send("GET /sse HTTP/1.0\r\n\r\n").stream(None);
    subscribe_with_a_body:
        send("GET /events HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc").stream(None);
    publish_one_byte_at_a_time:
        bytewise(post_json(br#"{"data":"slow","event":"s"}"#))
            .want(200, Body::Published("default"))
            .delivers(Some("s"), "slow")
            .open();
    subscribe_one_byte_at_a_time:
        bytewise(lei("nope")).stream(Some("nope"));
    request_timeout:
        send(b"GET /health HTTP/1.1\r\nHost: t\r\n")
            .flags(&["--header-timeout", "0.3"])
            .refused(408);
    // 200 small requests whose answers (the built-in page, ~15 KB each) add
    // up to more than the hub's output backlog limit (1 MiB): all of them
    // must be answered.
    pipelined_burst_beyond_output_backlog:
        Case { wants: vec![Want { status: 200, body: Body::Any, headers: vec![] }; 200], ..send(many_gets(200, "/")) }
            .flags(&["--header-timeout", "1"])
            .open();
    pipelined_burst_then_half_close:
        Case { wants: vec![Want { status: 200, body: Body::Any, headers: vec![] }; 200], ..send(many_gets(200, "/")) }
            .flags(&["--header-timeout", "1"])
            .then(Step::HalfClose)
            .closes();
}

#[test]
fn the_table_has_at_least_forty_rows() {
    assert!(CASE_NAMES.len() >= 40, "{} rows", CASE_NAMES.len());
    let mut names = CASE_NAMES.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASE_NAMES.len());
}

/// A request that never completes does not stop the hub: many stalled
/// connections and a subscriber beside them.
#[test]
fn stalled_partial_requests_do_not_block_others() {
    let hub = Hub::start(&[]);
    let mut sub = hub.subscribe("/events", "");
    let mut stalled: Vec<Conn> = (0..20)
        .map(|i| {
            let mut c = hub.connect();
            c.send(&post_json(br#"{"data":"never"}"#)[..30 + i]);
            c
        })
        .collect();
    let r = hub.publish(json!({"data": "alive"}));
    assert_eq!(r.status, 200, "{r:?}");
    let ev = sub.events_until("alive").unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    for c in &mut stalled {
        c.half_close();
        c.expect_eof().unwrap();
    }
    hub.assert_alive();
}
