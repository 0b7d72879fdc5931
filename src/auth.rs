//! Subscribe tokens: HS256 JWTs (RFC 7519) verified in the hub. Pure:
//! [`verify`] is a function of (token, keys, channel, now) that returns the
//! claims the hub uses or why the token is refused; no I/O, no clock of its
//! own.
//!
//! The algorithm comes from the configuration, never from the token: a
//! header that says anything but `HS256` (`none`, `HS512`, `RS256`, ...) is
//! refused before any signature is looked at. The signature is checked
//! (constant time, `hmac`'s `verify_slice`) before the claims are parsed, so
//! nothing an attacker wrote is interpreted until it is known to be signed.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Clock leeway for `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// Longest token accepted (the encoded form).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The keys tokens may be signed with: the current secret, and during a
/// rotation the previous one. Each is kept keyed (the HMAC state after the
/// key), so a verification clones it instead of hashing the key again.
#[derive(Clone, Default)]
pub struct Keys {
    current: Option<HmacSha256>,
    previous: Option<HmacSha256>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("Keys")
            .field("current", &self.current.is_some())
            .field("previous", &self.previous.is_some())
            .finish()
    }
}

impl Keys {
    /// Keys of `current` (and `previous`). `Err` names what is wrong.
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Result<Keys, String> {
        let mut k = Keys::default();
        k.set_current(current)?;
        if let Some(p) = previous {
            k.set_previous(p)?;
        }
        Ok(k)
    }

    pub fn set_current(&mut self, secret: &[u8]) -> Result<(), String> {
        self.current = Some(keyed(secret)?);
        Ok(())
    }

    pub fn set_previous(&mut self, secret: &[u8]) -> Result<(), String> {
        self.previous = Some(keyed(secret)?);
        Ok(())
    }

    /// A secret is configured: streams need tokens.
    pub fn is_set(&self) -> bool {
        self.current.is_some()
    }

    /// Only a previous secret: a configuration error.
    pub fn has_previous_only(&self) -> bool {
        self.current.is_none() && self.previous.is_some()
    }

    fn signed_by_any(&self, signed: &[u8], sig: &[u8]) -> bool {
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .any(|key| {
                let mut mac = key.clone();
                mac.update(signed);
                mac.verify_slice(sig).is_ok()
            })
    }
}

fn keyed(secret: &[u8]) -> Result<HmacSha256, String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "is {} bytes; a subscribe secret needs at least {MIN_SECRET_BYTES}",
            secret.len()
        ));
    }
    HmacSha256::new_from_slice(secret).map_err(|_| "cannot key HMAC-SHA256".to_string())
}

/// What the hub takes from a valid token.
#[derive(Debug, PartialEq, Eq)]
pub struct Claims {
    /// Seconds since the epoch.
    pub exp: u64,
    pub sub: Option<String>,
}

/// Why a token was refused. Every kind but [`TokenError::Channel`] is a
/// 401 (the client must get a new token); `Channel` is a 403 (the token is
/// good, but not for this channel).
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    TooLarge,
    Malformed(&'static str),
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    Channel,
}

impl TokenError {
    pub fn message(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "token longer than 4096 bytes",
            TokenError::Malformed(why) => why,
            TokenError::Algorithm => "token algorithm must be HS256",
            TokenError::Signature => "token signature does not verify",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not valid yet (nbf or iat in the future)",
            TokenError::Channel => "token does not cover this channel",
        }
    }
}

/// Whether `pattern` (a name, or a prefix ending in `*`) covers `channel`.
pub fn channel_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// Verifies `token` for `channel` at `now` (seconds since the epoch).
pub fn verify(token: &str, keys: &Keys, channel: &str, now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("token is not three base64url parts"));
    };
    let header = decode_json(header_b64)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(TokenError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed("token signature is not base64url"))?;
    let signed = &token[..header_b64.len() + 1 + payload.len()];
    if !keys.signed_by_any(signed.as_bytes(), &sig) {
        return Err(TokenError::Signature);
    }
    let claims = decode_json(payload)?;
    check_times(&claims, now)?;
    let exp = time_claim(&claims, "exp")?.ok_or(TokenError::Malformed("token has no exp"))?;
    let Some(Value::Array(channels)) = claims.get("channels") else {
        return Err(TokenError::Malformed("token channels must be an array"));
    };
    let mut covered = false;
    for c in channels {
        let Some(c) = c.as_str() else {
            return Err(TokenError::Malformed("token channels must be strings"));
        };
        covered |= channel_matches(c, channel);
    }
    if !covered {
        return Err(TokenError::Channel);
    }
    let sub = match claims.get("sub") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(TokenError::Malformed("token sub must be a string")),
    };
    Ok(Claims { exp, sub })
}

/// `exp` with the leeway, `nbf` and `iat` with the leeway.
fn check_times(claims: &Value, now: u64) -> Result<(), TokenError> {
    if let Some(exp) = time_claim(claims, "exp")? {
        if now >= exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
    }
    for name in ["nbf", "iat"] {
        if let Some(t) = time_claim(claims, name)? {
            if t > now.saturating_add(LEEWAY_SECS) {
                return Err(TokenError::NotYetValid);
            }
        }
    }
    Ok(())
}

/// A NumericDate claim (seconds, a fraction allowed), if present.
fn time_claim(claims: &Value, name: &str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(t) => Ok(Some(t)),
            None => match v.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
                _ => Err(TokenError::Malformed(
                    "token exp, nbf and iat must be numbers",
                )),
            },
        },
    }
}

fn decode_json(part: &str) -> Result<Value, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed("token part is not base64url"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(TokenError::Malformed("token part is not a JSON object")),
    }
}

/// Mints a token (tests, benchmarks, tools). `claims` is the payload.
pub fn mint(secret: &[u8], header: &Value, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{h}.{p}");
    let sig = match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(signed.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("{signed}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OLD: &[u8] = b"old-old-old-old-old-old-old-old-old!";
    const NOW: u64 = 1_700_000_000;

    fn keys() -> Keys {
        Keys::new(SECRET, Some(OLD)).unwrap()
    }

    fn hs256() -> Value {
        json!({"alg": "HS256", "typ": "JWT"})
    }

    fn token(claims: Value) -> String {
        mint(SECRET, &hs256(), &claims)
    }

    fn check(t: &str, channel: &str) -> Result<Claims, TokenError> {
        verify(t, &keys(), channel, NOW)
    }

    #[test]
    fn a_valid_token_gives_exp_and_sub() {
        let t = token(json!({"exp": NOW + 60, "channels": ["news"], "sub": "ann"}));
        assert_eq!(
            check(&t, "news"),
            Ok(Claims {
                exp: NOW + 60,
                sub: Some("ann".into())
            })
        );
        let t = mint(
            OLD,
            &hs256(),
            &json!({"exp": NOW + 60, "channels": ["news"]}),
        );
        assert_eq!(check(&t, "news").map(|c| c.sub), Ok(None));
    }

    #[test]
    fn times_have_five_seconds_of_leeway() {
        let at = |claims| check(&token(claims), "a").map(|_| ());
        assert_eq!(at(json!({"exp": NOW - 4, "channels": ["a"]})), Ok(()));
        assert_eq!(
            at(json!({"exp": NOW - 5, "channels": ["a"]})),
            Err(TokenError::Expired)
        );
        assert_eq!(
            at(json!({"exp": NOW + 9, "nbf": NOW + 5, "channels": ["a"]})),
            Ok(())
        );
        assert_eq!(
            at(json!({"exp": NOW + 9, "nbf": NOW + 6, "channels": ["a"]})),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            at(json!({"exp": NOW + 9, "iat": NOW + 60, "channels": ["a"]})),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            at(json!({"exp": (NOW + 9) as f64 + 0.5, "channels": ["a"]})),
            Ok(())
        );
    }

    #[test]
    fn the_algorithm_is_ours_not_the_tokens() {
        let claims = json!({"exp": NOW + 60, "channels": ["a"]});
        for alg in ["none", "HS512", "RS256", "hs256"] {
            let t = mint(SECRET, &json!({ "alg": alg }), &claims);
            assert_eq!(check(&t, "a"), Err(TokenError::Algorithm), "{alg}");
        }
        // alg none with an empty signature.
        let t = token(claims.clone());
        let (signed, _) = t.rsplit_once('.').unwrap();
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            signed.split('.').nth(1).unwrap()
        );
        assert_eq!(check(&none, "a"), Err(TokenError::Algorithm));
        let wrong = mint(b"another-secret-of-32-bytes-or-more", &hs256(), &claims);
        assert_eq!(check(&wrong, "a"), Err(TokenError::Signature));
        assert_eq!(
            check(&format!("{signed}."), "a"),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn malformed_tokens_are_refused_before_claims() {
        for t in ["", "a.b", "a.b.c.d", "!!.e30.x"] {
            assert!(
                matches!(check(t, "a"), Err(TokenError::Malformed(_))),
                "{t}"
            );
        }
        let h = URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\"}");
        assert!(matches!(
            check(&format!("{h}.e30.%%"), "a"),
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(check("e30.e30.x", "a"), Err(TokenError::Algorithm));
        let not_json = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\"}"),
            URL_SAFE_NO_PAD.encode("nope")
        );
        assert_eq!(check(&not_json, "a"), Err(TokenError::Signature));
        let signed_not_json = {
            let h = URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\"}");
            let p = URL_SAFE_NO_PAD.encode("[1]");
            let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
            mac.update(format!("{h}.{p}").as_bytes());
            let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
            format!("{h}.{p}.{s}")
        };
        assert!(matches!(
            check(&signed_not_json, "a"),
            Err(TokenError::Malformed(_))
        ));
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(check(&long, "a"), Err(TokenError::TooLarge));
    }

    #[test]
    fn claims_are_checked() {
        let t = token(json!({"channels": ["a"]}));
        assert_eq!(
            check(&t, "a"),
            Err(TokenError::Malformed("token has no exp"))
        );
        let t = token(json!({"exp": NOW + 60, "channels": "a"}));
        assert!(matches!(check(&t, "a"), Err(TokenError::Malformed(_))));
        let t = token(json!({"exp": "soon", "channels": ["a"]}));
        assert!(matches!(check(&t, "a"), Err(TokenError::Malformed(_))));
        let t = token(json!({"exp": NOW + 60, "channels": ["a"], "sub": 7}));
        assert!(matches!(check(&t, "a"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn channels_match_by_name_or_prefix() {
        let t = token(json!({"exp": NOW + 60, "channels": ["user-7", "room:*"]}));
        assert!(check(&t, "user-7").is_ok());
        assert!(check(&t, "room:1").is_ok());
        assert!(check(&t, "room:").is_ok());
        assert_eq!(check(&t, "user-77"), Err(TokenError::Channel));
        assert_eq!(check(&t, "room"), Err(TokenError::Channel));
        assert!(channel_matches("*", "anything"));
    }

    #[test]
    fn short_secrets_are_refused_and_keys_never_print() {
        assert!(Keys::new(b"short", None).is_err());
        let k = keys();
        assert!(k.is_set() && !k.has_previous_only());
        let shown = format!("{k:?}");
        assert!(!shown.contains("0123456789"), "{shown}");
    }
}
