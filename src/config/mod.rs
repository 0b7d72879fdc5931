//! Configuration: command-line flags, each with an environment-variable twin.
//!
//! One table (`FLAGS`) drives parsing, `--help` and the startup log line, so
//! a flag cannot exist without its variable, default and description.

mod flags;
mod net;
mod scale;
mod values;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use flags::{Flag, FLAGS};
pub use net::{canonical, Cidr, Cors};
pub use scale::{Redis, RedisAddr, RedisUrl, Scale};
pub use values::size;
use values::{boolean, count, invalid, positive_secs, secs, BOOL, POS, SECS, WHOLE};

/// Default `--history-memory`: 64 MiB. A 512 MiB appliance keeps most of
/// its memory for the kernel, socket buffers and the connections
/// themselves; an eighth for history cannot take it down, and holds 64
/// channels' full default history (1 MiB each) or far more small ones.
pub const DEFAULT_HISTORY_MEMORY: usize = 64 << 20;

/// Effective settings of one hub.
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    /// 0 means "derive from the open-file limit at start".
    pub max_connections: usize,
    /// 0 means unlimited.
    pub max_connections_per_ip: usize,
    /// `Duration::ZERO` disables heartbeats.
    pub heartbeat_interval: Duration,
    /// Heartbeats as `event: NAME` with the time as data, instead of a `:`
    /// comment (which EventSource never shows a page).
    pub heartbeat_event: Option<String>,
    pub history_bytes: usize,
    /// Memory all channels' history together may hold.
    pub history_memory: usize,
    /// Events older than this are dropped; `Duration::ZERO`: no limit.
    pub history_ttl: Duration,
    pub publish_token: Option<String>,
    pub cors: Cors,
    pub trusted_proxies: Vec<Cidr>,
    /// 0 disables the `retry:` line.
    pub retry_ms: u64,
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub max_channels: usize,
    pub shutdown_grace: Duration,
    pub log_level: log::LevelFilter,
    /// One info line per request.
    pub access_log: bool,
    /// Serve the built-in page at `/`.
    pub ui: bool,
    /// Subscribe-token keys (`--subscribe-secret`, and `-previous` during
    /// a rotation); when set, every stream needs a token.
    pub subscribe_keys: crate::auth::Keys,
    /// Channels open without a token: names, or prefixes ending in `*`.
    pub public_channels: Vec<String>,
    /// The cookie a subscribe token may come in.
    pub subscribe_cookie: String,
    /// Ask the application before a stream starts (forward auth).
    pub subscribe_auth_url: Option<crate::outbound::http::Url>,
    pub subscribe_auth_timeout: Duration,
    /// How long allowed answers are cached; zero: not at all.
    pub subscribe_auth_cache: Duration,
    pub subscribe_auth_max_inflight: usize,
    /// Redis, the shared port, the admin address (`scale.rs`).
    pub scale: Scale,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 5001)),
            max_connections: 0,
            max_connections_per_ip: 0,
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_event: None,
            history_bytes: 1 << 20,
            history_memory: DEFAULT_HISTORY_MEMORY,
            history_ttl: Duration::from_secs(3600),
            publish_token: None,
            cors: Cors::default(),
            trusted_proxies: Vec::new(),
            retry_ms: 3000,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 8192,
            max_body_bytes: 1 << 20,
            max_channels: 10_000,
            shutdown_grace: Duration::from_secs(10),
            log_level: log::LevelFilter::Info,
            access_log: true,
            ui: true,
            subscribe_keys: crate::auth::Keys::default(),
            public_channels: Vec::new(),
            subscribe_cookie: "ssecast_token".to_string(),
            subscribe_auth_url: None,
            subscribe_auth_timeout: Duration::from_secs(2),
            subscribe_auth_cache: Duration::from_secs(5),
            subscribe_auth_max_inflight: 64,
            scale: Scale::default(),
        }
    }
}

/// Why the configuration was refused: one line, exit code 2.
#[derive(Debug)]
pub enum ConfigError {
    /// `--help` was asked for; not an error, but parsing stops.
    Help,
    Version,
    /// `--check-config`: the configuration is valid; print it and exit.
    CheckConfig(Box<Config>),
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Help => f.write_str("help requested"),
            ConfigError::Version => f.write_str("version requested"),
            ConfigError::CheckConfig(_) => f.write_str("configuration checked"),
            ConfigError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Flags only; the environment is not read (tests, embedding).
    pub fn from_args<I, S>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Config::from_env_and_args(args, |_| None)
    }

    /// Environment variables first, then flags over them.
    pub fn from_env_and_args<I, S, E>(args: I, env: E) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
        E: Fn(&str) -> Option<String>,
    {
        let mut cfg = Config::default();
        for f in FLAGS {
            if let Some(v) = env(f.env) {
                cfg.set(f, &v, f.env)?;
            }
        }
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_string()).collect();
        let mut check_only = false;
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            match arg.as_str() {
                "-h" | "--help" => return Err(ConfigError::Help),
                "-V" | "--version" => return Err(ConfigError::Version),
                "--check-config" => {
                    check_only = true;
                    continue;
                }
                _ => {}
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(invalid(format!("unexpected argument '{arg}' (see --help)")));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(f) = FLAGS.iter().find(|f| f.name == name) else {
                return Err(invalid(format!("unknown flag '--{name}' (see --help)")));
            };
            let value = if f.switch {
                inline.unwrap_or_else(|| "true".to_string())
            } else if let Some(v) = inline {
                v
            } else if i < args.len() {
                i += 1;
                args[i - 1].clone()
            } else {
                return Err(invalid(format!("--{name} needs a value ({})", f.value)));
            };
            let origin = format!("--{name}");
            cfg.set(f, &value, &origin)?;
        }
        cfg.check()?;
        if check_only {
            return Err(ConfigError::CheckConfig(Box::new(cfg)));
        }
        Ok(cfg)
    }

    fn set(&mut self, f: &Flag, v: &str, origin: &str) -> Result<(), ConfigError> {
        let bad = |why: &str| invalid(format!("invalid value for {origin}: '{v}' {why}"));
        let v = v.trim();
        if self.scale.set(f.name, v, origin)? {
            return Ok(());
        }
        match f.name {
            "bind" => {
                self.bind = v
                    .parse()
                    .map_err(|_| bad("is not an address like 127.0.0.1:5001"))?
            }
            "max-connections" => self.max_connections = count(v).ok_or_else(|| bad(WHOLE))?,
            "max-connections-per-ip" => {
                self.max_connections_per_ip = count(v).ok_or_else(|| bad(WHOLE))?
            }
            "heartbeat-interval" => self.heartbeat_interval = secs(v).ok_or_else(|| bad(SECS))?,
            "heartbeat-event" => {
                self.heartbeat_event = match v {
                    "" => None,
                    name if crate::sse::valid_name(name) => Some(name.to_string()),
                    _ => return Err(bad("must be 1 to 128 bytes without control characters")),
                }
            }
            "history-bytes" => self.history_bytes = size(v, 1024, 1 << 34).map_err(|e| bad(&e))?,
            "history-memory" => {
                self.history_memory = size(v, 1024, 1 << 40).map_err(|e| bad(&e))?
            }
            "history-ttl" => self.history_ttl = secs(v).ok_or_else(|| bad(SECS))?,
            "publish-token" => {
                if v.is_empty() {
                    self.publish_token = None;
                } else if v.bytes().all(|b| b.is_ascii_graphic()) {
                    self.publish_token = Some(v.to_string());
                } else {
                    return Err(bad("must be printable ASCII without spaces"));
                }
            }
            "cors-origins" => {
                self.cors.origins.clear();
                self.cors.any_origin = false;
                for o in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                    if o == "*" {
                        self.cors.any_origin = true;
                    } else if o.bytes().all(|b| b.is_ascii_graphic()) {
                        self.cors.origins.push(o.to_string());
                    } else {
                        return Err(bad("has an origin with spaces or control characters"));
                    }
                }
            }
            "cors-credentials" => self.cors.credentials = boolean(v).ok_or_else(|| bad(BOOL))?,
            "access-log" => self.access_log = boolean(v).ok_or_else(|| bad(BOOL))?,
            "ui" => self.ui = boolean(v).ok_or_else(|| bad(BOOL))?,
            "trusted-proxies" => {
                self.trusted_proxies.clear();
                for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let c = Cidr::parse(p).ok_or_else(|| bad("is not a list of IPs or CIDRs"))?;
                    self.trusted_proxies.push(c);
                }
            }
            "retry-ms" => {
                self.retry_ms = count(v)
                    .filter(|&n| n <= 3_600_000)
                    .ok_or_else(|| bad("must be a whole number of milliseconds up to 3600000"))?
                    as u64
            }
            "header-timeout" => self.header_timeout = positive_secs(v).ok_or_else(|| bad(POS))?,
            "write-timeout" => self.write_timeout = positive_secs(v).ok_or_else(|| bad(POS))?,
            "idle-timeout" => self.idle_timeout = positive_secs(v).ok_or_else(|| bad(POS))?,
            "max-header-bytes" => {
                self.max_header_bytes = size(v, 256, 1 << 20).map_err(|e| bad(&e))?
            }
            "max-body-bytes" => self.max_body_bytes = size(v, 1, 1 << 30).map_err(|e| bad(&e))?,
            "max-channels" => {
                self.max_channels = count(v)
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| bad("must be a whole number of at least 1"))?
            }
            "shutdown-grace" => self.shutdown_grace = secs(v).ok_or_else(|| bad(SECS))?,
            "subscribe-secret"
            | "subscribe-secret-file"
            | "subscribe-secret-previous"
            | "subscribe-secret-previous-file" => self.set_secret(f.name, v, origin)?,
            "public-channels" => {
                self.public_channels.clear();
                for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    let name = c.strip_suffix('*').unwrap_or(c);
                    if name.contains('*') || (!name.is_empty() && !crate::sse::valid_name(name)) {
                        return Err(bad("has a name with '*' inside or control characters"));
                    }
                    self.public_channels.push(c.to_string());
                }
            }
            "subscribe-cookie" => {
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b))
                {
                    return Err(bad(
                        "must be a cookie name (printable ASCII, no = ; , or quotes)",
                    ));
                }
                self.subscribe_cookie = v.to_string();
            }
            "log-level" => {
                self.log_level = v
                    .parse()
                    .map_err(|_| bad("must be off, error, warn, info, debug or trace"))?
            }
            "subscribe-auth-url" => {
                self.subscribe_auth_url = match v {
                    "" => None,
                    url => Some(crate::outbound::http::Url::parse(url).map_err(bad)?),
                }
            }
            "subscribe-auth-timeout" => {
                self.subscribe_auth_timeout = positive_secs(v).ok_or_else(|| bad(POS))?
            }
            "subscribe-auth-cache" => {
                self.subscribe_auth_cache = secs(v).ok_or_else(|| bad(SECS))?
            }
            "subscribe-auth-max-inflight" => {
                self.subscribe_auth_max_inflight = count(v)
                    .filter(|&n| (1..=4096).contains(&n))
                    .ok_or_else(|| bad("must be a whole number from 1 to 4096"))?
            }
            _ => return Err(invalid(format!("unhandled flag --{}", f.name))),
        }
        Ok(())
    }

    /// A subscribe secret, given or read from a file. The error never
    /// shows the secret.
    fn set_secret(&mut self, name: &str, v: &str, origin: &str) -> Result<(), ConfigError> {
        let secret = if name.ends_with("-file") {
            let bytes = std::fs::read(v).map_err(|e| {
                invalid(format!(
                    "invalid value for {origin}: cannot read '{v}': {e}"
                ))
            })?;
            let end = bytes.len()
                - bytes
                    .iter()
                    .rev()
                    .take_while(|b| **b == b'\n' || **b == b'\r')
                    .count();
            bytes[..end].to_vec()
        } else {
            v.as_bytes().to_vec()
        };
        let set = if name.starts_with("subscribe-secret-previous") {
            self.subscribe_keys.set_previous(&secret)
        } else {
            self.subscribe_keys.set_current(&secret)
        };
        set.map_err(|why| invalid(format!("invalid value for {origin}: the secret {why}")))
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.history_memory < self.history_bytes {
            return Err(invalid(format!(
                "--history-memory ({}) is smaller than --history-bytes ({}): \
                 one channel's history must fit in the budget for all of them",
                self.history_memory, self.history_bytes
            )));
        }
        if self.subscribe_keys.has_previous_only() {
            return Err(invalid(
                "--subscribe-secret-previous needs --subscribe-secret (the current key)"
                    .to_string(),
            ));
        }
        if self.cors.any_origin && self.cors.credentials {
            return Err(invalid(
                "--cors-origins '*' cannot be combined with --cors-credentials \
                 (browsers refuse credentials with a wildcard origin); list the origins"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// The effective settings as one line, for the startup log.
    pub fn summary(&self) -> String {
        let origins = if self.cors.any_origin {
            "*".to_string()
        } else if self.cors.origins.is_empty() {
            "none".to_string()
        } else {
            self.cors.origins.join(",")
        };
        let proxies: Vec<String> = self.trusted_proxies.iter().map(|c| c.to_string()).collect();
        format!(
            "max_connections={} max_connections_per_ip={} heartbeat={:?} history_bytes={} \
             history_memory={} history_ttl={:?} publish_token={} cors_origins={} cors_credentials={} trusted_proxies={} retry_ms={} \
             header_timeout={:?} write_timeout={:?} idle_timeout={:?} max_header_bytes={} \
             max_body_bytes={} max_channels={} shutdown_grace={:?} access_log={} ui={} \
             subscribe_secret={} public_channels={} subscribe_cookie={} \
             subscribe_auth_url={} subscribe_auth_timeout={:?} subscribe_auth_cache={:?} \
             subscribe_auth_max_inflight={} {}",
            if self.max_connections == 0 {
                "auto".to_string()
            } else {
                self.max_connections.to_string()
            },
            self.max_connections_per_ip,
            self.heartbeat_interval,
            self.history_bytes,
            self.history_memory,
            self.history_ttl,
            if self.publish_token.is_some() {
                "set"
            } else {
                "none"
            },
            origins,
            self.cors.credentials,
            if proxies.is_empty() {
                "none".to_string()
            } else {
                proxies.join(",")
            },
            self.retry_ms,
            self.header_timeout,
            self.write_timeout,
            self.idle_timeout,
            self.max_header_bytes,
            self.max_body_bytes,
            self.max_channels,
            self.shutdown_grace,
            self.access_log,
            self.ui,
            if self.subscribe_keys.is_set() {
                "set"
            } else {
                "none"
            },
            if self.public_channels.is_empty() {
                "none".to_string()
            } else {
                self.public_channels.join(",")
            },
            self.subscribe_cookie,
            self.subscribe_auth_url
                .as_ref()
                .map_or("none".to_string(), |u| format!(
                    "http://{}{}",
                    u.authority(),
                    u.path
                )),
            self.subscribe_auth_timeout,
            self.subscribe_auth_cache,
            self.subscribe_auth_max_inflight,
            self.scale.summary(),
        )
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_run_on_loopback_5001() {
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.bind, "127.0.0.1:5001".parse().unwrap());
        assert_eq!(c.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(c.max_connections_per_ip, 0);
        assert!(c.publish_token.is_none());
    }

    #[test]
    fn flags_win_over_environment() {
        let env = env_of(&[
            ("SSE_HEARTBEAT_INTERVAL", "5"),
            ("SSE_BIND", "127.0.0.1:7000"),
        ]);
        let c = Config::from_env_and_args(["--heartbeat-interval=0.5"], env).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.bind.port(), 7000);
    }

    #[test]
    fn bad_values_name_the_source() {
        let e = Config::from_args(["--max-connections", "-1"]).unwrap_err();
        assert!(e.to_string().contains("--max-connections"), "{e}");
        let e = Config::from_env_and_args(Vec::<String>::new(), env_of(&[("SSE_RETRY_MS", "x")]))
            .unwrap_err();
        assert!(e.to_string().contains("SSE_RETRY_MS"), "{e}");
        assert!(Config::from_args(["--nope"]).is_err());
        assert!(Config::from_args(["--bind"]).is_err());
        assert!(Config::from_args(["--heartbeat-interval", "NaN"]).is_err());
        assert!(Config::from_args(["--header-timeout", "0"]).is_err());
    }

    #[test]
    fn wildcard_cors_with_credentials_is_refused() {
        assert!(Config::from_args(["--cors-origins", "*", "--cors-credentials"]).is_err());
        let c =
            Config::from_args(["--cors-origins", "https://a.example, https://b.example"]).unwrap();
        assert_eq!(
            c.cors.allow_origin("https://b.example"),
            Some("https://b.example")
        );
        assert_eq!(c.cors.allow_origin("https://c.example"), None);
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn every_field_flag_is_settable() {
        let c =
            Config::from_args(["--access-log", "false", "--ui=off", "--cors-credentials"]).unwrap();
        assert!(!c.access_log && !c.ui && c.cors.credentials);
        let c =
            Config::from_env_and_args(Vec::<String>::new(), env_of(&[("SSE_UI", "no")])).unwrap();
        assert!(!c.ui);
        assert!(matches!(
            Config::from_args(["--check-config"]),
            Err(ConfigError::CheckConfig(_))
        ));
    }

    #[test]
    fn byte_sizes_take_binary_suffixes_in_one_parser() {
        for (v, want) in [
            ("1024", 1024),
            ("64MiB", 64 << 20),
            ("64M", 64 << 20),
            ("64mb", 64 << 20),
            ("512KiB", 512 << 10),
            ("512 k", 512 << 10),
            ("2G", 2 << 30),
            ("4096B", 4096),
        ] {
            assert_eq!(size(v, 1, 1 << 40), Ok(want), "{v}");
        }
        for v in [
            "",
            "M",
            "-1",
            "1.5M",
            "64MiBs",
            "64 Mi",
            "99999999999999999999G",
            "1T",
        ] {
            assert!(size(v, 1, 1 << 40).is_err(), "{v} accepted");
        }
        assert!(size("1K", 2048, 4096).is_err());
        let c = Config::from_args([
            "--history-bytes=512KiB",
            "--max-body-bytes",
            "2M",
            "--max-header-bytes=16k",
            "--history-memory",
            "32MiB",
            "--history-ttl",
            "0",
        ])
        .unwrap();
        assert_eq!(
            (c.history_bytes, c.max_body_bytes, c.max_header_bytes),
            (512 << 10, 2 << 20, 16 << 10)
        );
        assert_eq!(
            (c.history_memory, c.history_ttl),
            (32 << 20, Duration::ZERO)
        );
        let c = Config::from_env_and_args(
            Vec::<String>::new(),
            env_of(&[("SSE_HISTORY_MEMORY", "8M"), ("SSE_HISTORY_TTL", "60")]),
        )
        .unwrap();
        assert_eq!(
            (c.history_memory, c.history_ttl),
            (8 << 20, Duration::from_secs(60))
        );
        assert!(
            c.summary().contains("history_memory=8388608"),
            "{}",
            c.summary()
        );
    }

    #[test]
    fn a_budget_smaller_than_one_channels_history_is_refused() {
        let e = Config::from_args(["--history-memory", "512K"]).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("--history-memory") && m.contains("--history-bytes"),
            "{m}"
        );
        assert!(!m.contains('\n'));
        assert!(Config::from_args(["--history-memory", "1M"]).is_ok());
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.history_memory, 64 << 20);
        assert_eq!(c.history_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn subscribe_secrets_from_flags_and_files_short_ones_refused() {
        let long = "s".repeat(32);
        let c = Config::from_args(["--subscribe-secret", &long]).unwrap();
        assert!(c.subscribe_keys.is_set());
        assert!(!c.summary().contains(&long));
        let e = Config::from_args(["--subscribe-secret", "short-secret"]).unwrap_err();
        assert!(e.to_string().contains("at least 32"), "{e}");
        assert!(!e.to_string().contains("short-secret"), "{e}");
        let path = std::env::temp_dir().join(format!("ssecast-secret-{}", std::process::id()));
        std::fs::write(&path, format!("{long}\n")).unwrap();
        let p = path.to_string_lossy().to_string();
        let env = move |k: &str| (k == "SSE_SUBSCRIBE_SECRET_FILE").then(|| p.clone());
        let c = Config::from_env_and_args(Vec::<String>::new(), env).unwrap();
        assert!(c.subscribe_keys.is_set());
        std::fs::write(&path, "31-bytes-31-bytes-31-bytes-31-b\n").unwrap();
        let p = path.to_string_lossy().to_string();
        assert!(Config::from_args(["--subscribe-secret-file", &p]).is_err());
        let _ = std::fs::remove_file(&path);
        assert!(Config::from_args(["--subscribe-secret-previous", &long]).is_err());
        assert!(Config::from_args(["--subscribe-secret-file", "/nonexistent/x"]).is_err());
    }

    #[test]
    fn public_channels_and_cookie_name() {
        let c = Config::from_args([
            "--public-channels",
            "news, room:*",
            "--subscribe-cookie",
            "t",
        ])
        .unwrap();
        assert_eq!(c.public_channels, ["news", "room:*"]);
        assert_eq!(c.subscribe_cookie, "t");
        assert!(Config::from_args(["--public-channels", "a*b"]).is_err());
        assert!(Config::from_args(["--subscribe-cookie", "a=b"]).is_err());
    }

    #[test]
    fn forward_auth_flags_and_their_twins() {
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert!(c.subscribe_auth_url.is_none());
        assert_eq!(c.subscribe_auth_timeout, Duration::from_secs(2));
        assert_eq!(c.subscribe_auth_cache, Duration::from_secs(5));
        assert_eq!(c.subscribe_auth_max_inflight, 64);
        let env = env_of(&[
            ("SSE_SUBSCRIBE_AUTH_URL", "http://127.0.0.1:8000/auth"),
            ("SSE_SUBSCRIBE_AUTH_TIMEOUT", "0.5"),
            ("SSE_SUBSCRIBE_AUTH_CACHE", "0"),
            ("SSE_SUBSCRIBE_AUTH_MAX_INFLIGHT", "3"),
        ]);
        let c = Config::from_env_and_args(Vec::<String>::new(), env).unwrap();
        let u = c.subscribe_auth_url.unwrap();
        assert_eq!((u.port, u.path.as_str()), (8000, "/auth"));
        assert_eq!(c.subscribe_auth_timeout, Duration::from_millis(500));
        assert!(c.subscribe_auth_cache.is_zero());
        assert_eq!(c.subscribe_auth_max_inflight, 3);
        for bad in [
            ["--subscribe-auth-url", "https://a/b"],
            ["--subscribe-auth-url", "a:1"],
            ["--subscribe-auth-timeout", "0"],
            ["--subscribe-auth-max-inflight", "0"],
        ] {
            let e = Config::from_args(bad).unwrap_err().to_string();
            assert!(e.contains(bad[0]) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn help_lists_every_flag_and_variable() {
        let h = Config::help();
        for f in FLAGS {
            assert!(h.contains(f.name) && h.contains(f.env), "{}", f.name);
        }
    }
}
