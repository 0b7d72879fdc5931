//! The scale-out settings: Redis (`--redis-url` and its companions), the
//! shared port (`--reuse-port`), the per-process admin address
//! (`--admin-bind`), and the publish settings that hold in either mode
//! (`--history-events`, `--idempotency-ttl`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::values::{boolean, count, invalid, positive_secs, secs, BOOL, POS, SECS};
use super::ConfigError;

/// Where Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisAddr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// A parsed `--redis-url`. `Display` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub addr: RedisAddr,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            (None, Some(_)) => ":***@".to_string(),
            (None, None) => String::new(),
        };
        match &self.addr {
            RedisAddr::Tcp { host, port } if host.contains(':') => {
                write!(f, "redis://{who}[{host}]:{port}/{}", self.db)
            }
            RedisAddr::Tcp { host, port } => write!(f, "redis://{who}{host}:{port}/{}", self.db),
            RedisAddr::Unix(p) => write!(f, "unix://{who}{}?db={}", p.display(), self.db),
        }
    }
}

/// Percent-decoding of a URL's user or password.
fn unescape(s: &str) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "has a user or password that is not UTF-8")
}

impl RedisUrl {
    /// `redis://[user[:password]@]host[:port][/db]` or
    /// `unix://[user[:password]@]/path/to/redis.sock[?db=N]`.
    pub fn parse(s: &str) -> Result<RedisUrl, &'static str> {
        let (unix, rest) = if let Some(r) = s.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("unix://") {
            (true, r)
        } else {
            return Err("must start with redis:// or unix:// (rediss:// TLS is not supported)");
        };
        if rest.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("has spaces or control characters");
        }
        let (who, rest) = match rest.rfind('@') {
            Some(at) if !unix || rest[..at].find('/').is_none() => {
                (Some(&rest[..at]), &rest[at + 1..])
            }
            _ => (None, rest),
        };
        let (user, password) = match who {
            None => (None, None),
            Some(w) => {
                let (u, p) = match w.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (w, None),
                };
                let u = Some(unescape(u)?).filter(|u| !u.is_empty());
                let p = p.map(unescape).transpose()?.filter(|p| !p.is_empty());
                (u, p)
            }
        };
        if unix {
            let (path, query) = match rest.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (rest, None),
            };
            if !path.starts_with('/') || path.len() < 2 {
                return Err("needs an absolute socket path, like unix:///run/redis/redis.sock");
            }
            let db = match query {
                None => 0,
                Some(q) => q
                    .strip_prefix("db=")
                    .and_then(|d| d.parse().ok())
                    .ok_or("takes only ?db=N after the socket path")?,
            };
            return Ok(RedisUrl {
                addr: RedisAddr::Unix(PathBuf::from(path)),
                user,
                password,
                db,
            });
        }
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, d)) => (
                h,
                d.parse()
                    .map_err(|_| "has a database that is not a number")?,
            ),
            None => (rest, 0),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("has an unclosed [ in the host")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| "has a bad port")?,
                None if after.is_empty() => 6379,
                None => return Err("has text after the ]"),
            };
            (h, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| "has a bad port")?),
                None => (hostport, 6379),
            }
        };
        if host.is_empty() || port == 0 {
            return Err("needs a host and a port above 0");
        }
        Ok(RedisUrl {
            addr: RedisAddr::Tcp {
                host: host.to_string(),
                port,
            },
            user,
            password,
            db,
        })
    }
}

/// Redis mode: where, and how the hub uses it.
#[derive(Clone, Debug)]
pub struct Redis {
    pub url: RedisUrl,
    pub timeout: Duration,
    pub prefix: String,
}

/// The settings of this file.
#[derive(Clone, Debug)]
pub struct Scale {
    pub redis_url: Option<RedisUrl>,
    /// From `--redis-password-file`: wins over the URL's.
    pub redis_password: Option<String>,
    pub redis_timeout: Duration,
    pub redis_prefix: String,
    /// Entries a channel's stream keeps in Redis.
    pub history_events: usize,
    /// Replicas that must have a publish before it is answered (`WAIT`).
    pub redis_wait_replicas: usize,
    pub idempotency_ttl: Duration,
    pub reuse_port: bool,
    pub admin_bind: Option<SocketAddr>,
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            redis_url: None,
            redis_password: None,
            redis_timeout: Duration::from_secs(2),
            redis_prefix: "ssecast".to_string(),
            history_events: 1000,
            redis_wait_replicas: 0,
            idempotency_ttl: Duration::from_secs(300),
            reuse_port: false,
            admin_bind: None,
        }
    }
}

impl Scale {
    /// Redis mode's settings, when `--redis-url` is set.
    pub fn redis(&self) -> Option<Redis> {
        let mut url = self.redis_url.clone()?;
        if self.redis_password.is_some() {
            url.password.clone_from(&self.redis_password);
        }
        Some(Redis {
            url,
            timeout: self.redis_timeout,
            prefix: self.redis_prefix.clone(),
        })
    }

    /// Handles the flags of this file; false for any other.
    pub(super) fn set(&mut self, name: &str, v: &str, origin: &str) -> Result<bool, ConfigError> {
        let bad = |why: &str| invalid(format!("invalid value for {origin}: '{v}' {why}"));
        match name {
            "redis-url" => {
                self.redis_url = match v {
                    "" => None,
                    url => Some(RedisUrl::parse(url).map_err(|why| {
                        // The URL may hold a password: never echo it.
                        invalid(format!("invalid value for {origin}: the URL {why}"))
                    })?),
                }
            }
            "redis-password-file" => {
                let bytes = std::fs::read(v).map_err(|e| bad(&format!("cannot be read: {e}")))?;
                let text = String::from_utf8(bytes).map_err(|_| bad("does not hold UTF-8"))?;
                let p = text.trim_end_matches(['\r', '\n']);
                self.redis_password = (!p.is_empty()).then(|| p.to_string());
            }
            "redis-timeout" => self.redis_timeout = positive_secs(v).ok_or_else(|| bad(POS))?,
            "redis-prefix" => {
                let ok = !v.is_empty()
                    && v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
                if !ok {
                    return Err(bad(
                        "must be 1 to 64 of A-Z a-z 0-9 . _ - : (no braces: they are the hash tag)",
                    ));
                }
                self.redis_prefix = v.to_string();
            }
            "history-events" => {
                self.history_events = count(v)
                    .filter(|&n| (1..=10_000_000).contains(&n))
                    .ok_or_else(|| bad("must be a whole number from 1 to 10000000"))?
            }
            "redis-wait-replicas" => {
                self.redis_wait_replicas = count(v)
                    .filter(|&n| n <= 64)
                    .ok_or_else(|| bad("must be a whole number from 0 to 64"))?
            }
            "idempotency-ttl" => self.idempotency_ttl = secs(v).ok_or_else(|| bad(SECS))?,
            "reuse-port" => self.reuse_port = boolean(v).ok_or_else(|| bad(BOOL))?,
            "admin-bind" => {
                self.admin_bind = match v {
                    "" => None,
                    a => Some(
                        a.parse()
                            .map_err(|_| bad("is not an address like 127.0.0.1:5101"))?,
                    ),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// For the startup line.
    pub fn summary(&self) -> String {
        format!(
            "redis={} redis_timeout={:?} redis_prefix={} history_events={} redis_wait_replicas={} \
             idempotency_ttl={:?} reuse_port={} admin_bind={}",
            self.redis()
                .map_or("none".to_string(), |r| r.url.to_string()),
            self.redis_timeout,
            self.redis_prefix,
            self.history_events,
            self.redis_wait_replicas,
            self.idempotency_ttl,
            self.reuse_port,
            self.admin_bind
                .map_or("none".to_string(), |a| a.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(h: &str, port: u16) -> RedisAddr {
        RedisAddr::Tcp {
            host: h.to_string(),
            port,
        }
    }

    #[test]
    fn redis_urls() {
        let u = RedisUrl::parse("redis://localhost").unwrap();
        assert_eq!(
            (u.addr, u.db, u.user, u.password),
            (tcp("localhost", 6379), 0, None, None)
        );
        let u = RedisUrl::parse("redis://ann:p%40ss@10.0.0.2:6380/3").unwrap();
        assert_eq!(u.addr, tcp("10.0.0.2", 6380));
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref(), u.db),
            (Some("ann"), Some("p@ss"), 3)
        );
        assert_eq!(u.to_string(), "redis://ann:***@10.0.0.2:6380/3");
        let u = RedisUrl::parse("redis://:secret@[::1]:7000/").unwrap();
        assert_eq!((u.addr.clone(), u.user.clone()), (tcp("::1", 7000), None));
        assert_eq!(u.to_string(), "redis://:***@[::1]:7000/0");
        let u = RedisUrl::parse("unix:///run/redis/redis.sock?db=2").unwrap();
        assert_eq!(
            (u.addr, u.db),
            (RedisAddr::Unix("/run/redis/redis.sock".into()), 2)
        );
        let u = RedisUrl::parse("unix://:pw@/tmp/r.sock").unwrap();
        assert_eq!(u.password.as_deref(), Some("pw"));
        for bad in [
            "",
            "localhost:6379",
            "http://x",
            "rediss://x",
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h:1/x",
            "redis://[::1",
            "unix://relative.sock",
            "unix:///s?x=1",
            "redis://a b",
            "redis://u:%zz@h",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_file_wins_and_is_never_shown() {
        let mut s = Scale::default();
        assert!(s
            .set("redis-url", "redis://:inurl@h:1", "--redis-url")
            .unwrap());
        s.redis_password = Some("fromfile".into());
        let r = s.redis().unwrap();
        assert_eq!(r.url.password.as_deref(), Some("fromfile"));
        assert!(!s.summary().contains("fromfile") && !s.summary().contains("inurl"));
        let e = s
            .set("redis-url", "redis://:topsecret@h:x", "--redis-url")
            .unwrap_err();
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn prefixes_and_counts() {
        let mut s = Scale::default();
        assert!(s.set("redis-prefix", "app:sse", "x").is_ok());
        for bad in ["", "a{b", "a}b", "a b"] {
            assert!(s.set("redis-prefix", bad, "x").is_err(), "{bad}");
        }
        assert!(s.set("history-events", "0", "x").is_err());
        assert!(s.set("history-events", "50", "x").is_ok());
        assert_eq!(s.history_events, 50);
        assert!(!s.set("bind", "x", "x").unwrap());
    }
}
