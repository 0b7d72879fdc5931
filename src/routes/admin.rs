//! `POST /events/close`: revocation. `{"channel": "NAME"}` or
//! `{"sub": "USER"}` closes the matching streams now (each gets
//! `event: closed` first) and bars that channel or sub from new streams for
//! `"for": SECS` (default 3600; 0 closes without barring). Guarded like
//! publishing (`publish::check_credential`). This file decodes and
//! answers; the server finds and ends the streams.

use serde_json::{json, Value};

use super::{invalid_name, reserved_name, valid_channel, Refusal, Reply};
use crate::grants::Revoked;
use crate::http::{HttpError, Request};
use crate::stats::Reject;

/// How long a revocation bars, unless the request says.
pub const DEFAULT_BAR_SECS: u64 = 3600;

/// Longest bar accepted: 30 days.
pub const MAX_BAR_SECS: u64 = 30 * 86_400;

/// A close request, validated.
#[derive(Debug, PartialEq, Eq)]
pub struct Close {
    pub what: Revoked,
    /// Seconds to bar new streams (0: none).
    pub bar_secs: u64,
}

fn bad(message: &str) -> Refusal {
    Refusal::new(HttpError::new(400, message.to_string()), Reject::BadRequest)
}

/// Decodes the body: a JSON object with exactly one of `channel` and
/// `sub`, and optionally `for`.
pub fn decode_close(req: &Request<'_>, body: &[u8]) -> Result<Close, Refusal> {
    let json_type = req.content_type.map_or(true, |ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    });
    if !json_type {
        return Err(Refusal::new(
            HttpError::new(415, "the body must be JSON (application/json)"),
            Reject::BadRequest,
        ));
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad(
            "the body must be a JSON object like {\"channel\": \"NAME\"} or {\"sub\": \"USER\"}",
        ));
    };
    let bar_secs = match obj.remove("for") {
        None | Some(Value::Null) => DEFAULT_BAR_SECS,
        Some(v) => v
            .as_u64()
            .filter(|s| *s <= MAX_BAR_SECS)
            .ok_or_else(|| bad("'for' must be a whole number of seconds up to 2592000"))?,
    };
    let channel = obj.remove("channel");
    let sub = obj.remove("sub");
    let what = match (channel, sub) {
        (Some(Value::String(c)), None) if c.starts_with('$') => {
            return Err(Refusal::new(reserved_name(), Reject::BadRequest))
        }
        (Some(Value::String(c)), None) if valid_channel(&c) => Revoked::Channel(c.into()),
        (Some(_), None) => return Err(Refusal::new(invalid_name("channel"), Reject::BadRequest)),
        (None, Some(Value::String(s))) if !s.is_empty() && s.len() <= 1024 => {
            Revoked::Sub(s.into())
        }
        (None, Some(_)) => return Err(bad("'sub' must be a string of 1 to 1024 bytes")),
        _ => return Err(bad("give exactly one of 'channel' and 'sub'")),
    };
    if let Some(k) = obj.keys().next() {
        return Err(bad(&format!("unknown field '{k}'")));
    }
    Ok(Close { what, bar_secs })
}

/// The revocation table is full.
pub fn table_full() -> Refusal {
    Refusal::new(
        HttpError::new(503, "too many revocations in force; retry later"),
        Reject::ChannelLimit,
    )
    .with_headers(&["Retry-After: 60"])
}

/// `{"closed": N}`.
pub fn answer(closed: usize, cors: &[String]) -> Reply {
    let body = serde_json::to_vec(&json!({ "closed": closed })).unwrap_or_default();
    Reply::json(200, body, &[], cors)
}

/// A stream refused because what it asks for was revoked.
pub fn revoked(what: &Revoked) -> Refusal {
    Refusal::new(HttpError::new(403, what.describe()), Reject::Forbidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> Result<Close, u16> {
        let req = Request {
            method: "POST",
            path: "/events/close",
            ..Request::default()
        };
        decode_close(&req, body.as_bytes()).map_err(|r| r.error.status)
    }

    #[test]
    fn a_channel_or_a_sub_with_a_bar() {
        assert_eq!(
            decode(r#"{"channel": "news"}"#),
            Ok(Close {
                what: Revoked::Channel("news".into()),
                bar_secs: DEFAULT_BAR_SECS
            })
        );
        assert_eq!(
            decode(r#"{"sub": "ann", "for": 0}"#),
            Ok(Close {
                what: Revoked::Sub("ann".into()),
                bar_secs: 0
            })
        );
    }

    #[test]
    fn anything_else_is_a_400() {
        for body in [
            "",
            "[]",
            "{}",
            r#"{"channel": "a", "sub": "b"}"#,
            r#"{"channel": "a*"}"#,
            r#"{"channel": "$status"}"#,
            r#"{"channel": 7}"#,
            r#"{"sub": ""}"#,
            r#"{"sub": "a", "for": -1}"#,
            r#"{"sub": "a", "for": 2592001}"#,
            r#"{"sub": "a", "extra": 1}"#,
        ] {
            assert_eq!(decode(body).err(), Some(400), "{body}");
        }
    }
}
