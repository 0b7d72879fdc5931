//! `POST /events/broadcast`: who may publish, decoding and validating the
//! body (one event or a batch, all or none), and the answer. The events
//! themselves are appended by the server, which fans a channel out first
//! when an append would overwrite bytes not yet sent.

use std::borrow::Cow;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::{invalid_name, reserved_name, valid_channel, Refusal, DEFAULT_CHANNEL};
use crate::channel::Hub;
use crate::config::Config;
use crate::http::{self, HttpError, Request};
use crate::idempotency;
use crate::sse;
use crate::stats::Reject;

/// One event of a publish request, validated.
#[derive(Debug)]
pub struct Publish<'a> {
    pub channel: Cow<'a, str>,
    pub event: Option<Cow<'a, str>>,
    pub data: Cow<'a, str>,
}

/// Where a published event went: its id, channel and subscriber count.
pub struct Published<'a> {
    pub id: u64,
    pub channel: &'a str,
    pub subscribers: usize,
}

/// Checks a publish before anything is appended: the credential, the body,
/// each event's size, and room for the channels it would create.
pub fn check<'a>(
    req: &Request<'a>,
    body: &'a [u8],
    client: IpAddr,
    cfg: &Config,
    hub: &Hub,
    creates: bool,
) -> Result<Vec<Publish<'a>>, Refusal> {
    check_credential(req, client, cfg)?;
    let events = decode_publish(req, body).map_err(|e| {
        let why = if e.status == 413 {
            Reject::TooLarge
        } else {
            Reject::BadRequest
        };
        Refusal::new(e, why)
    })?;
    // All or none: check every event before publishing any.
    let history = hub.max_frame();
    let mut new_channels: Vec<&str> = Vec::new();
    for ev in &events {
        let len = sse::encoded_len(u64::MAX, ev.event.as_deref(), &ev.data);
        if len > history {
            return Err(Refusal::new(
                HttpError::new(
                    413,
                    format!(
                        "event encodes to {len} bytes, more than the channel history of {history} bytes (--history-bytes)"
                    ),
                ),
                Reject::TooLarge,
            ));
        }
        if hub.find(&ev.channel).is_none() && !new_channels.contains(&&*ev.channel) {
            new_channels.push(&ev.channel);
        }
    }
    // In Redis mode a publish creates no local channel.
    if creates && !hub.can_create(new_channels.len()) {
        return Err(Refusal::new(
            HttpError::new(503, "channel limit reached (--max-channels)"),
            Reject::ChannelLimit,
        )
        .with_headers(&["Retry-After: 5"]));
    }
    Ok(events)
}

/// The `Idempotency-Key` of a publish, when it has one (and
/// `--idempotency-ttl` is not 0): its scope (the publish credential and
/// the key) and the body's hash.
pub fn idempotency(
    req: &Request<'_>,
    body: &[u8],
    cfg: &Config,
) -> Result<Option<(idempotency::Digest, idempotency::Digest)>, Refusal> {
    let Some(k) = req.idempotency_key else {
        return Ok(None);
    };
    if !idempotency::valid_key(k) {
        return Err(Refusal::new(
            HttpError::new(
                400,
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            ),
            Reject::BadRequest,
        ));
    }
    if cfg.scale.idempotency_ttl.is_zero() {
        return Ok(None);
    }
    let credential = req.authorization.and_then(bearer).unwrap_or("");
    Ok(Some((
        idempotency::scope(credential.as_bytes(), k),
        idempotency::body_hash(body),
    )))
}

/// The same Idempotency-Key with another body.
pub fn idempotency_conflict() -> Refusal {
    Refusal::new(
        HttpError::new(422, "this Idempotency-Key was used with a different body"),
        Reject::BadRequest,
    )
}

/// Who may publish (and use the other operator endpoints): the holder of
/// the publish token, or, when none is set, a loopback client.
pub fn check_credential(req: &Request<'_>, client: IpAddr, cfg: &Config) -> Result<(), Refusal> {
    if let Some(token) = &cfg.publish_token {
        let given = req.authorization.and_then(bearer);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return Err(Refusal::new(
                HttpError::new(401, "publishing needs 'Authorization: Bearer <token>'"),
                Reject::Unauthorized,
            )
            .with_headers(&["WWW-Authenticate: Bearer realm=\"ssecast\""]));
        }
    } else if !client.is_loopback() {
        return Err(Refusal::new(
            HttpError::new(
                403,
                "publishing is allowed only from loopback when no publish token is configured",
            ),
            Reject::Forbidden,
        ));
    }
    Ok(())
}

/// Whether the request carries the publish token (a configured one).
pub fn has_publish_token(req: &Request<'_>, cfg: &Config) -> bool {
    let given = req.authorization.and_then(bearer);
    cfg.publish_token
        .as_ref()
        .is_some_and(|t| given.is_some_and(|g| constant_time_eq(g.as_bytes(), t.as_bytes())))
}

/// The answer's body: one object, or `{"events": [...]}` for a batch.
pub fn answer(published: &[Published<'_>], batch: bool) -> Vec<u8> {
    let one = |p: &Published<'_>| json!({ "id": p.id, "channel": p.channel, "subscribers": p.subscribers });
    let body = match published {
        [p] if !batch => one(p),
        _ => json!({ "events": published.iter().map(one).collect::<Vec<_>>() }),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The body is a JSON array (answered as a batch even with one element).
pub fn body_is_array(req: &Request<'_>, body: &[u8]) -> bool {
    content_kind(req.content_type) == Some(Kind::Json)
        && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// The token of an `Authorization: Bearer TOKEN` value.
pub(crate) fn bearer(v: &str) -> Option<&str> {
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
    if !valid_channel(&default_channel) {
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
        Some(Value::String(s)) if valid_channel(&s) => s,
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
