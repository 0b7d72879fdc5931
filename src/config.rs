//! Configuration: command-line flags, each with an environment-variable twin.
//!
//! One table (`FLAGS`) drives parsing, `--help` and the startup log line, so
//! a flag cannot exist without its variable, default and description.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

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
    /// Ask the application before a stream starts (forward auth).
    pub subscribe_auth_url: Option<crate::outbound::http::Url>,
    pub subscribe_auth_timeout: Duration,
    /// How long allowed answers are cached; zero: not at all.
    pub subscribe_auth_cache: Duration,
    pub subscribe_auth_max_inflight: usize,
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
            subscribe_auth_url: None,
            subscribe_auth_timeout: Duration::from_secs(2),
            subscribe_auth_cache: Duration::from_secs(5),
            subscribe_auth_max_inflight: 64,
        }
    }
}

/// Which browser origins may read responses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors {
    /// Empty: no CORS headers at all.
    pub origins: Vec<String>,
    pub any_origin: bool,
    pub credentials: bool,
}

impl Cors {
    pub fn enabled(&self) -> bool {
        self.any_origin || !self.origins.is_empty()
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`.
    pub fn allow_origin<'a>(&self, origin: &'a str) -> Option<&'a str> {
        if self.any_origin {
            Some("*")
        } else if self.origins.iter().any(|o| o == origin) {
            Some(origin)
        } else {
            None
        }
    }
}

/// An IP network, `10.0.0.0/8` or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
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

struct Flag {
    name: &'static str,
    env: &'static str,
    value: &'static str,
    default: &'static str,
    help: &'static str,
    /// A switch takes no value on the command line.
    switch: bool,
}

const fn flag(
    name: &'static str,
    env: &'static str,
    value: &'static str,
    default: &'static str,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        env,
        value,
        default,
        help,
        switch: false,
    }
}

const FLAGS: &[Flag] = &[
    flag(
        "bind",
        "SSE_BIND",
        "ADDR",
        "127.0.0.1:5001",
        "listen address",
    ),
    flag(
        "max-connections",
        "SSE_MAX_CONNECTIONS",
        "N",
        "open-file limit - 320",
        "concurrent streams; over it 503 with Retry-After (256 more connections stay open for publishes and health checks)",
    ),
    flag(
        "max-connections-per-ip",
        "SSE_MAX_CONNECTIONS_PER_IP",
        "N",
        "0 (unlimited)",
        "concurrent streams per client address; over it 429",
    ),
    flag(
        "heartbeat-interval",
        "SSE_HEARTBEAT_INTERVAL",
        "SECS",
        "15",
        "':' comment to a subscriber quiet this long; 0 = off",
    ),
    flag(
        "heartbeat-event",
        "SSE_HEARTBEAT_EVENT",
        "NAME",
        "none (':' comments)",
        "send heartbeats as 'event: NAME' with data {\"time\": <unix ms>} and no id",
    ),
    flag(
        "history-bytes",
        "SSE_HISTORY_BYTES",
        "N",
        "1048576",
        "encoded events kept per channel for Last-Event-ID",
    ),
    flag(
        "publish-token",
        "SSE_PUBLISH_TOKEN",
        "TOKEN",
        "none (loopback-only publishing)",
        "required as 'Authorization: Bearer TOKEN' on publishes",
    ),
    flag(
        "cors-origins",
        "SSE_CORS_ORIGINS",
        "LIST",
        "none",
        "comma-separated allowed origins, or *",
    ),
    Flag {
        name: "cors-credentials",
        env: "SSE_CORS_CREDENTIALS",
        value: "",
        default: "off",
        help: "send Access-Control-Allow-Credentials: true (not with *)",
        switch: true,
    },
    flag(
        "trusted-proxies",
        "SSE_TRUSTED_PROXIES",
        "LIST",
        "none",
        "IPs/CIDRs whose X-Forwarded-For / X-Real-IP is believed",
    ),
    flag(
        "retry-ms",
        "SSE_RETRY_MS",
        "MS",
        "3000",
        "retry: sent at stream start, jittered up to +50%; 0 = none",
    ),
    flag(
        "header-timeout",
        "SSE_HEADER_TIMEOUT",
        "SECS",
        "10",
        "time to send a complete request (headers and body)",
    ),
    flag(
        "write-timeout",
        "SSE_WRITE_TIMEOUT",
        "SECS",
        "30",
        "a subscriber whose socket does not drain this long is closed",
    ),
    flag(
        "idle-timeout",
        "SSE_IDLE_TIMEOUT",
        "SECS",
        "60",
        "idle keep-alive connections are closed after this",
    ),
    flag(
        "max-header-bytes",
        "SSE_MAX_HEADER_BYTES",
        "N",
        "8192",
        "request line and headers; over it 431",
    ),
    flag(
        "max-body-bytes",
        "SSE_MAX_BODY_BYTES",
        "N",
        "1048576",
        "request body; over it 413",
    ),
    flag(
        "max-channels",
        "SSE_MAX_CHANNELS",
        "N",
        "10000",
        "channels that may exist; a new one over it gets 503",
    ),
    flag(
        "shutdown-grace",
        "SSE_SHUTDOWN_GRACE",
        "SECS",
        "10",
        "on SIGTERM/SIGINT, time to finish responses in flight",
    ),
    flag(
        "log-level",
        "SSE_LOG_LEVEL",
        "LEVEL",
        "info",
        "off, error, warn, info, debug, trace",
    ),
    flag(
        "access-log",
        "SSE_ACCESS_LOG",
        "BOOL",
        "true",
        "one info line per request (client, method, path, status, bytes, duration)",
    ),
    flag(
        "ui",
        "SSE_UI",
        "BOOL",
        "true",
        "serve the built-in page at / (off loopback only with a publish token)",
    ),
    flag(
        "subscribe-auth-url",
        "SSE_SUBSCRIBE_AUTH_URL",
        "URL",
        "none",
        "http://host:port/path asked (GET) before each stream starts: 2xx allows, 401/403 are passed on, anything else closes",
    ),
    flag(
        "subscribe-auth-timeout",
        "SSE_SUBSCRIBE_AUTH_TIMEOUT",
        "SECS",
        "2",
        "no answer from the auth URL this long: the client is closed without an answer",
    ),
    flag(
        "subscribe-auth-cache",
        "SSE_SUBSCRIBE_AUTH_CACHE",
        "SECS",
        "5",
        "allowed answers kept per (Cookie, Authorization, channel); 0 = off",
    ),
    flag(
        "subscribe-auth-max-inflight",
        "SSE_SUBSCRIBE_AUTH_MAX_INFLIGHT",
        "N",
        "64",
        "auth calls at once (one connection each); more wait in a queue",
    ),
];

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
            "history-bytes" => {
                self.history_bytes = count(v)
                    .filter(|&n| (1024..=1 << 34).contains(&n))
                    .ok_or_else(|| bad("must be a whole number from 1024 to 17179869184"))?
            }
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
                self.max_header_bytes = count(v)
                    .filter(|&n| (256..=1 << 20).contains(&n))
                    .ok_or_else(|| bad("must be a whole number from 256 to 1048576"))?
            }
            "max-body-bytes" => {
                self.max_body_bytes = count(v)
                    .filter(|&n| (1..=1 << 30).contains(&n))
                    .ok_or_else(|| bad("must be a whole number from 1 to 1073741824"))?
            }
            "max-channels" => {
                self.max_channels = count(v)
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| bad("must be a whole number of at least 1"))?
            }
            "shutdown-grace" => self.shutdown_grace = secs(v).ok_or_else(|| bad(SECS))?,
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

    fn check(&self) -> Result<(), ConfigError> {
        if self.cors.any_origin && self.cors.credentials {
            return Err(invalid(
                "--cors-origins '*' cannot be combined with --cors-credentials \
                 (browsers refuse credentials with a wildcard origin); list the origins"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// `--help` text: every flag with its variable and default.
    pub fn help() -> String {
        let mut s = String::from(
            "ssecast - a Server-Sent Events hub\n\n\
             usage: ssecast [FLAGS]\n\n\
             Every flag has an environment-variable twin; a flag wins over the variable.\n\
             Durations are seconds and may have a fraction (0.5).\n\n",
        );
        for f in FLAGS {
            let left = if f.switch {
                format!("--{}", f.name)
            } else {
                format!("--{} {}", f.name, f.value)
            };
            s.push_str(&format!(
                "  {left:<30} {:<28} {}\n  {:<30} {:<28} default: {}\n",
                f.env, f.help, "", "", f.default
            ));
        }
        s.push_str("  --help                         print this text\n");
        s.push_str("  --version                      print the version\n");
        s.push_str("  --check-config                 validate the configuration, print it, exit\n");
        s
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
             publish_token={} cors_origins={} cors_credentials={} trusted_proxies={} retry_ms={} \
             header_timeout={:?} write_timeout={:?} idle_timeout={:?} max_header_bytes={} \
             max_body_bytes={} max_channels={} shutdown_grace={:?} access_log={} ui={} \
             subscribe_auth_url={} subscribe_auth_timeout={:?} subscribe_auth_cache={:?} \
             subscribe_auth_max_inflight={}",
            if self.max_connections == 0 {
                "auto".to_string()
            } else {
                self.max_connections.to_string()
            },
            self.max_connections_per_ip,
            self.heartbeat_interval,
            self.history_bytes,
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
        )
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

const WHOLE: &str = "is not a whole number";
const BOOL: &str = "must be true or false";
const SECS: &str = "is not a number of seconds";
const POS: &str = "must be a positive number of seconds";

fn invalid(m: String) -> ConfigError {
    ConfigError::Invalid(m)
}

fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn count(v: &str) -> Option<usize> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn secs(v: &str) -> Option<Duration> {
    let x: f64 = v.parse().ok()?;
    if !x.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&x) {
        return None;
    }
    Some(Duration::from_secs_f64(x))
}

fn positive_secs(v: &str) -> Option<Duration> {
    secs(v).filter(|d| *d >= Duration::from_millis(1))
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
