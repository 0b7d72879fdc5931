//! The flag table: every flag with its environment twin, its value's
//! shape, its default and its help line. It drives parsing, `--help` and
//! the startup line, so a flag cannot exist without the rest.

use super::Config;

pub(super) struct Flag {
    pub(super) name: &'static str,
    pub(super) env: &'static str,
    pub(super) value: &'static str,
    pub(super) default: &'static str,
    pub(super) help: &'static str,
    /// A switch takes no value on the command line.
    pub(super) switch: bool,
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

pub(super) const FLAGS: &[Flag] = &[
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
        "BYTES",
        "1048576 (1MiB)",
        "encoded events kept per channel for Last-Event-ID",
    ),
    flag(
        "history-memory",
        "SSE_HISTORY_MEMORY",
        "BYTES",
        "67108864 (64MiB)",
        "memory for all channels' history together; the oldest events hub-wide go first",
    ),
    flag(
        "history-ttl",
        "SSE_HISTORY_TTL",
        "SECS",
        "3600",
        "events older than this are dropped from history; 0 = no age limit",
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
        "BYTES",
        "8192 (8KiB)",
        "request line and headers; over it 431",
    ),
    flag(
        "max-body-bytes",
        "SSE_MAX_BODY_BYTES",
        "BYTES",
        "1048576 (1MiB)",
        "request body; over it 413",
    ),
    flag(
        "max-channels",
        "SSE_MAX_CHANNELS",
        "N",
        "10000",
        "channels that may exist; a new one over it evicts the least recently used channel without subscribers (503 only when all have subscribers)",
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
        "subscribe-secret",
        "SSE_SUBSCRIBE_SECRET",
        "SECRET",
        "none (streams need no token)",
        "HS256 key of subscribe tokens (32 bytes or more); streams then need a token",
    ),
    flag(
        "subscribe-secret-file",
        "SSE_SUBSCRIBE_SECRET_FILE",
        "PATH",
        "none",
        "read --subscribe-secret from a file (kept out of ps and the environment)",
    ),
    flag(
        "subscribe-secret-previous",
        "SSE_SUBSCRIBE_SECRET_PREVIOUS",
        "SECRET",
        "none",
        "during a key rotation, tokens signed with this one verify too",
    ),
    flag(
        "subscribe-secret-previous-file",
        "SSE_SUBSCRIBE_SECRET_PREVIOUS_FILE",
        "PATH",
        "none",
        "read --subscribe-secret-previous from a file",
    ),
    flag(
        "public-channels",
        "SSE_PUBLIC_CHANNELS",
        "LIST",
        "none",
        "comma-separated channels open without a token; a trailing * matches a prefix",
    ),
    flag(
        "subscribe-cookie",
        "SSE_SUBSCRIBE_COOKIE",
        "NAME",
        "ssecast_token",
        "cookie a subscribe token may come in (besides Authorization: Bearer and ?token=)",
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
    flag(
        "redis-url",
        "SSE_REDIS_URL",
        "URL",
        "none (one process, no Redis)",
        "redis://[user[:password]@]host[:port][/db] or unix:///path.sock[?db=N]: channels live in Redis Streams, shared by every process",
    ),
    flag(
        "redis-password-file",
        "SSE_REDIS_PASSWORD_FILE",
        "PATH",
        "none",
        "file holding the Redis password (wins over the URL's)",
    ),
    flag(
        "redis-timeout",
        "SSE_REDIS_TIMEOUT",
        "SECS",
        "2",
        "a Redis command unanswered this long: 503 (the outcome is unknown), the connection is reopened",
    ),
    flag(
        "redis-prefix",
        "SSE_REDIS_PREFIX",
        "PREFIX",
        "ssecast",
        "namespace of every Redis key",
    ),
    flag(
        "redis-wait-replicas",
        "SSE_REDIS_WAIT_REPLICAS",
        "N",
        "0",
        "a publish is answered only after N replicas have it (WAIT); 0 = the primary's acknowledgement",
    ),
    flag(
        "history-events",
        "SSE_HISTORY_EVENTS",
        "N",
        "1000",
        "entries each channel's stream keeps in Redis (MAXLEN ~ N; about N, never fewer)",
    ),
    flag(
        "idempotency-ttl",
        "SSE_IDEMPOTENCY_TTL",
        "SECS",
        "300",
        "a publish with an Idempotency-Key header: its answer is kept this long and repeated for the same key; 0 = off",
    ),
    Flag {
        name: "reuse-port",
        env: "SSE_REUSE_PORT",
        value: "",
        default: "off",
        help: "SO_REUSEPORT: several processes (same user) share --bind; the kernel spreads connections",
        switch: true,
    },
    flag(
        "admin-bind",
        "SSE_ADMIN_BIND",
        "ADDR",
        "none",
        "a second address serving only /health, /events/status and /metrics: this process's own figures",
    ),
];

impl Config {
    /// `--help` text: every flag with its variable and default.
    pub fn help() -> String {
        let mut s = String::from(
            "ssecast - a Server-Sent Events hub\n\n\
             usage: ssecast [FLAGS]\n\n\
             Every flag has an environment-variable twin; a flag wins over the variable.\n\
             Durations are seconds and may have a fraction (0.5).\n\
             Sizes (BYTES) are bytes, or with K, M or G (powers of 1024): 512KiB, 64M.\n\n",
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
}
