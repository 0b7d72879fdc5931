//! Command-line flags. Hand-parsed: `--flag value`, repeatable headers.

use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs};
use std::time::Duration;

pub const USAGE: &str = "\
sse-load — black-box load client for Server-Sent Events servers

USAGE:
  sse-load run       [FLAGS]   connect subscribers, publish events, measure
  sse-load idle      [FLAGS]   connect subscribers, hold them with no publishes
  sse-load raw-write [FLAGS]   this machine's one-write-per-delivery baseline
  sse-load churn     [FLAGS]   publish to ever-new channels: rate and server memory
  sse-load table NAME=FILE...  markdown table of compare.sh result files
  sse-load help

Target (run, idle):
  --server HOST:PORT        server address (default 127.0.0.1:5001)
  --sub-servers A:P,B:Q,..  subscribers go to these addresses round-robin
                            (several processes on their own ports); default
                            --server, where publishes still go
  --pub-server HOST:PORT    where publishes go when that is another
                            address (Pushpin's publish API); default --server
  --preset NAME             ssecast | nchan | axum | pushpin: fills the paths,
                            body template and headers below (default ssecast)
  --channel NAME            channel used by the preset (default bench)
  --sub-path PATH           subscribe request target
  --sub-header 'N: V'       extra subscribe header (repeatable)
  --pub-path PATH           publish request target
  --pub-header 'N: V'       extra publish header (repeatable)
  --pub-content-type TYPE   publish Content-Type
  --pub-body TEMPLATE       publish body; {{data}} becomes {\"seq\":N,\"t\":NS,\"a\":A}
  --batch-open S / --batch-sep S / --batch-close S
                            how --batch K bodies are joined (default [ , ])
  --server-pid PID[,PID]    server process(es) to read memory and CPU from
  --aux-pid PID[,PID]       other processes (Redis) whose CPU over the publish
                            phase is reported apart (delivery.aux_cpu_*)
  --by-server-pid           also report subscribers, deliveries and latency
                            per server process (which one holds the other end
                            of each socket, from /proc): several processes
                            sharing one port with SO_REUSEPORT

Load:
  --subscribers N           subscribers to open (default 1)
  --per-worker N            most subscribers per worker process (default 18000)
  --sources K               bind source addresses 127.0.0.2 .. 127.0.0.(K+1)
                            round-robin; 0 = kernel's choice (default 8)
  --connect-concurrency C   handshakes in flight per worker (default 64)
  --connect-timeout S       per subscriber, until its response headers (10)
  --max-failures N          subscribers allowed to fail before exit 3 (0)
  --settle S                wait after connecting before memory read (1)
  --hold S                  idle: hold subscribers this long (idle: 20)
  --events M                events to publish (default 0)
  --rate R                  events per second; 0 = as fast as acknowledged
  --publishers P            keep-alive publisher connections (default 1)
  --batch K                 events per publish request (default 1)
  --drain-timeout S         wait for stragglers after the last ack (3)
  --ramp                    start the workers one at a time, each after the
                            previous one connected, reading the machine's
                            memory (MemAvailable, slab, TCP) after each step
  --min-available-mib M     --ramp: start no further worker once MemAvailable
                            is under M MiB (default 0 = no floor)
  --duration S              hard cap on the whole run (default 120)
  --label TEXT              copied into the JSON

Raw write (raw-write):
  --sockets N               loopback TCP pairs (default 10000)
  --seconds S               how long to loop writes (default 3)
  --frame-bytes B           bytes per write (default 100)
  --writer-cpu C / --reader-cpu C   pin the writer / reader process
  --sources K               as above, for the reader's sockets

Channel churn (churn; --server, --pub-path, --pub-header, --publishers,
--server-pid, --duration and --label as above):
  --channels N              fresh channels, one event each (default 1000000),
                            named CHANNEL-0, CHANNEL-1, ... (--channel)
  --batch K                 events (channels) per request (churn: default 100)
  --data-bytes B            each event's data, B times 'x' (default 32)

Output: one JSON object on stdout, one summary line on stderr.
Exit: 0 ok, 2 bad flags, 3 setup failed (server unreachable, subscribers
failed beyond --max-failures, no event acknowledged).
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Run,
    Idle,
    RawWrite,
    Churn,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub server: SocketAddrV4,
    /// Where subscribers connect, round-robin (default: `server` alone).
    pub sub_servers: Vec<SocketAddrV4>,
    pub host_header: String,
    pub pub_server: SocketAddrV4,
    pub pub_host_header: String,
    pub preset: String,
    pub sub_path: String,
    pub sub_headers: Vec<String>,
    pub pub_path: String,
    pub pub_headers: Vec<String>,
    pub pub_content_type: String,
    pub pub_body: String,
    pub batch_open: String,
    pub batch_sep: String,
    pub batch_close: String,
    pub server_pids: Vec<u32>,
    pub aux_pids: Vec<u32>,
    pub by_server_pid: bool,
    pub ramp: bool,
    pub min_available_mib: u64,
    pub subscribers: usize,
    pub per_worker: usize,
    pub sources: usize,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub max_failures: usize,
    pub settle: Duration,
    pub hold: Duration,
    pub events: u64,
    pub rate: f64,
    pub publishers: usize,
    pub batch: usize,
    pub drain_timeout: Duration,
    pub duration: Duration,
    pub label: String,
    pub sockets: usize,
    pub seconds: Duration,
    pub frame_bytes: usize,
    pub writer_cpu: Option<usize>,
    pub reader_cpu: Option<usize>,
    /// churn: fresh channels to publish to, their name prefix, data size.
    pub channels: u64,
    pub churn_prefix: String,
    pub data_bytes: usize,
}

struct Preset {
    sub_path: String,
    sub_headers: Vec<String>,
    pub_path: String,
    pub_content_type: String,
    pub_body: String,
}

fn preset(name: &str, channel: &str) -> Result<Preset, String> {
    let p = match name {
        "ssecast" => Preset {
            sub_path: format!("/events?channel={channel}"),
            sub_headers: vec![],
            pub_path: "/events/broadcast".into(),
            pub_content_type: "application/json".into(),
            pub_body: format!("{{\"channel\":\"{channel}\",\"data\":{{{{data}}}}}}"),
        },
        "axum" => Preset {
            sub_path: "/events".into(),
            sub_headers: vec![],
            pub_path: "/events/broadcast".into(),
            pub_content_type: "application/json".into(),
            pub_body: "{\"data\":{{data}}}".into(),
        },
        "nchan" => Preset {
            sub_path: format!("/events?id={channel}"),
            sub_headers: vec![],
            pub_path: format!("/pub?id={channel}"),
            pub_content_type: "text/plain".into(),
            pub_body: "{{data}}".into(),
        },
        // Pushpin in front of an origin that answers every subscribe with
        // `Grip-Hold: stream` + `Grip-Channel: CHANNEL`
        // (benches/peers/pushpin/origin.py); publishes go to Pushpin's HTTP
        // publish API (`--pub-server`, port 5561 by default).
        "pushpin" => Preset {
            sub_path: "/events".into(),
            sub_headers: vec![],
            pub_path: "/publish/".into(),
            pub_content_type: "application/json".into(),
            pub_body: format!(
                "{{\"items\":[{{\"channel\":\"{channel}\",\"formats\":{{\"http-stream\":{{\"content\":\"data: {{{{data_escaped}}}}\\n\\n\"}}}}}}]}}"
            ),
        },
        other => return Err(format!("unknown preset {other:?}")),
    };
    Ok(p)
}

fn secs(v: &str, flag: &str) -> Result<Duration, String> {
    let f: f64 = v
        .parse()
        .map_err(|_| format!("{flag}: not a number of seconds: {v:?}"))?;
    if !(0.0..=86400.0).contains(&f) {
        return Err(format!("{flag}: out of range: {v}"));
    }
    Ok(Duration::from_secs_f64(f))
}

fn num<T: std::str::FromStr>(v: &str, flag: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: not a number: {v:?}"))
}

fn resolve(v: &str) -> Result<SocketAddrV4, String> {
    let addrs = v
        .to_socket_addrs()
        .map_err(|e| format!("--server {v}: {e}"))?;
    for a in addrs {
        if let std::net::SocketAddr::V4(a4) = a {
            return Ok(a4);
        }
    }
    Err(format!("--server {v}: no IPv4 address"))
}

impl Config {
    /// Parses `args` (without the program name and mode word).
    pub fn parse(mode: Mode, args: &[String]) -> Result<Config, String> {
        let mut server = "127.0.0.1:5001".to_string();
        let mut pub_server = None;
        let mut sub_servers = Vec::new();
        let mut preset_name = "ssecast".to_string();
        let mut channel = "bench".to_string();
        let mut sub_path = None;
        let mut pub_path = None;
        let mut pub_ct = None;
        let mut pub_body = None;
        let mut sub_headers = Vec::new();
        let mut pub_headers = Vec::new();
        let mut cfg = Config {
            mode,
            server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001),
            sub_servers: vec![],
            host_header: String::new(),
            pub_server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001),
            pub_host_header: String::new(),
            preset: String::new(),
            sub_path: String::new(),
            sub_headers: vec![],
            pub_path: String::new(),
            pub_headers: vec![],
            pub_content_type: String::new(),
            pub_body: String::new(),
            batch_open: "[".into(),
            batch_sep: ",".into(),
            batch_close: "]".into(),
            server_pids: vec![],
            aux_pids: vec![],
            by_server_pid: false,
            ramp: false,
            min_available_mib: 0,
            subscribers: 1,
            per_worker: 18_000,
            sources: 8,
            connect_concurrency: 64,
            connect_timeout: Duration::from_secs(10),
            max_failures: 0,
            settle: Duration::from_secs(1),
            hold: if mode == Mode::Idle {
                Duration::from_secs(20)
            } else {
                Duration::ZERO
            },
            events: 0,
            rate: 0.0,
            publishers: 1,
            batch: 1,
            drain_timeout: Duration::from_secs(3),
            duration: Duration::from_secs(120),
            label: String::new(),
            sockets: 10_000,
            seconds: Duration::from_secs(3),
            frame_bytes: 100,
            writer_cpu: None,
            reader_cpu: None,
            channels: 1_000_000,
            churn_prefix: String::new(),
            data_bytes: 32,
        };
        let mut batch_given = false;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--server" => server = val()?,
                "--pub-server" => pub_server = Some(val()?),
                "--sub-servers" => {
                    for a in val()?.split(',').filter(|s| !s.is_empty()) {
                        sub_servers.push(resolve(a)?);
                    }
                }
                "--preset" => preset_name = val()?,
                "--channel" => channel = val()?,
                "--sub-path" => sub_path = Some(val()?),
                "--sub-header" => sub_headers.push(val()?),
                "--pub-path" => pub_path = Some(val()?),
                "--pub-header" => pub_headers.push(val()?),
                "--pub-content-type" => pub_ct = Some(val()?),
                "--pub-body" => pub_body = Some(val()?),
                "--batch-open" => cfg.batch_open = val()?,
                "--batch-sep" => cfg.batch_sep = val()?,
                "--batch-close" => cfg.batch_close = val()?,
                "--server-pid" => {
                    for p in val()?.split(',').filter(|s| !s.is_empty()) {
                        cfg.server_pids.push(num(p, flag)?);
                    }
                }
                "--aux-pid" => {
                    for p in val()?.split(',').filter(|s| !s.is_empty()) {
                        cfg.aux_pids.push(num(p, flag)?);
                    }
                }
                "--by-server-pid" => cfg.by_server_pid = true,
                "--ramp" => cfg.ramp = true,
                "--min-available-mib" => cfg.min_available_mib = num(&val()?, flag)?,
                "--subscribers" => cfg.subscribers = num(&val()?, flag)?,
                "--per-worker" => cfg.per_worker = num(&val()?, flag)?,
                "--sources" => cfg.sources = num(&val()?, flag)?,
                "--connect-concurrency" => cfg.connect_concurrency = num(&val()?, flag)?,
                "--connect-timeout" => cfg.connect_timeout = secs(&val()?, flag)?,
                "--max-failures" => cfg.max_failures = num(&val()?, flag)?,
                "--settle" => cfg.settle = secs(&val()?, flag)?,
                "--hold" => cfg.hold = secs(&val()?, flag)?,
                "--events" => cfg.events = num(&val()?, flag)?,
                "--rate" => cfg.rate = num(&val()?, flag)?,
                "--publishers" => cfg.publishers = num(&val()?, flag)?,
                "--batch" => {
                    cfg.batch = num(&val()?, flag)?;
                    batch_given = true;
                }
                "--channels" => cfg.channels = num(&val()?, flag)?,
                "--data-bytes" => cfg.data_bytes = num(&val()?, flag)?,
                "--drain-timeout" => cfg.drain_timeout = secs(&val()?, flag)?,
                "--duration" => cfg.duration = secs(&val()?, flag)?,
                "--label" => cfg.label = val()?,
                "--sockets" => cfg.sockets = num(&val()?, flag)?,
                "--seconds" => cfg.seconds = secs(&val()?, flag)?,
                "--frame-bytes" => cfg.frame_bytes = num(&val()?, flag)?,
                "--writer-cpu" => cfg.writer_cpu = Some(num(&val()?, flag)?),
                "--reader-cpu" => cfg.reader_cpu = Some(num(&val()?, flag)?),
                other => return Err(format!("unknown flag {other:?} (see sse-load help)")),
            }
        }
        cfg.server = resolve(&server)?;
        cfg.sub_servers = if sub_servers.is_empty() {
            vec![cfg.server]
        } else {
            sub_servers
        };
        let pub_server = pub_server.unwrap_or_else(|| server.clone());
        cfg.pub_server = resolve(&pub_server)?;
        cfg.pub_host_header = pub_server;
        cfg.host_header = server;
        if mode == Mode::Churn {
            if !batch_given {
                cfg.batch = 100;
            }
            if !channel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                || cfg.data_bytes > 1 << 20
            {
                return Err(
                    "churn: --channel must be [A-Za-z0-9_-], --data-bytes at most 1048576".into(),
                );
            }
            cfg.churn_prefix = channel.clone();
        }
        let p = preset(&preset_name, &channel)?;
        cfg.preset = preset_name;
        cfg.sub_path = sub_path.unwrap_or(p.sub_path);
        cfg.sub_headers = p.sub_headers;
        cfg.sub_headers.extend(sub_headers);
        cfg.pub_path = pub_path.unwrap_or(p.pub_path);
        cfg.pub_headers = pub_headers;
        cfg.pub_content_type = pub_ct.unwrap_or(p.pub_content_type);
        cfg.pub_body = pub_body.unwrap_or(p.pub_body);
        for h in cfg.sub_headers.iter().chain(cfg.pub_headers.iter()) {
            if !h.contains(':') || h.contains('\r') || h.contains('\n') {
                return Err(format!("bad header {h:?}: want 'Name: value'"));
            }
        }
        if cfg.per_worker == 0 || cfg.per_worker > 19_500 {
            return Err("--per-worker must be 1..=19500 (open-file limit)".into());
        }
        if cfg.connect_concurrency == 0 || cfg.publishers == 0 || cfg.batch == 0 {
            return Err("--connect-concurrency, --publishers and --batch must be > 0".into());
        }
        if cfg.sources > 250 {
            return Err("--sources must be at most 250".into());
        }
        if !(cfg.rate >= 0.0 && cfg.rate.is_finite()) {
            return Err("--rate must be >= 0".into());
        }
        if cfg.frame_bytes == 0 || cfg.frame_bytes > 65536 {
            return Err("--frame-bytes must be 1..=65536".into());
        }
        if mode == Mode::Idle {
            cfg.events = 0;
        }
        Ok(cfg)
    }

    /// Source address for the `i`-th connection (round-robin), if any.
    pub fn source_for(&self, i: usize) -> Option<Ipv4Addr> {
        if self.sources == 0 {
            return None;
        }
        let k = (i % self.sources) as u8;
        Some(Ipv4Addr::new(127, 0, 0, 2 + k))
    }

    /// Where the `i`-th subscriber connects (round-robin over `--sub-servers`).
    pub fn sub_server_for(&self, i: usize) -> SocketAddrV4 {
        self.sub_servers[i % self.sub_servers.len()]
    }

    /// The subscribe request, identical for every subscriber.
    pub fn subscribe_request(&self) -> Vec<u8> {
        let mut r = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
            self.sub_path, self.host_header
        );
        for h in &self.sub_headers {
            r.push_str(h);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }

    /// One publish request carrying events `first..first+count`, all stamped
    /// `t_ns`; `answered` = every event below it was answered before this send.
    pub fn publish_request(&self, first: u64, count: usize, t_ns: u64, answered: u64) -> Vec<u8> {
        let one = |seq: u64| {
            let data = format!("{{\"seq\":{seq},\"t\":{t_ns},\"a\":{answered}}}");
            let escaped = data.replace('"', "\\\"");
            self.pub_body
                .replace("{{data_escaped}}", &escaped)
                .replace("{{data}}", &data)
        };
        let body = if self.batch <= 1 || count <= 1 {
            one(first)
        } else {
            let mut b = self.batch_open.clone();
            for i in 0..count as u64 {
                if i > 0 {
                    b.push_str(&self.batch_sep);
                }
                b.push_str(&one(first + i));
            }
            b.push_str(&self.batch_close);
            b
        };
        let mut r = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.pub_path,
            self.pub_host_header,
            self.pub_content_type,
            body.len()
        );
        for h in &self.pub_headers {
            r.push_str(h);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.push_str(&body);
        r.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Config {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Config::parse(Mode::Run, &args).expect("flags parse")
    }

    fn body(req: &[u8]) -> &str {
        let s = std::str::from_utf8(req).expect("utf-8 request");
        s.split_once("\r\n\r\n").expect("head and body").1
    }

    #[test]
    fn pushpin_preset_publishes_an_sse_frame_through_the_publish_api() {
        let c = cfg(&[
            "--preset",
            "pushpin",
            "--server",
            "127.0.0.1:7999",
            "--pub-server",
            "127.0.0.1:5561",
        ]);
        assert_eq!(c.server.port(), 7999);
        assert_eq!(c.pub_server.port(), 5561);
        let req = c.publish_request(7, 1, 123, 6);
        let head = std::str::from_utf8(&req).expect("utf-8");
        assert!(
            head.starts_with("POST /publish/ HTTP/1.1\r\nHost: 127.0.0.1:5561\r\n"),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body(&req)).expect("JSON body");
        assert_eq!(v["items"][0]["channel"], "bench");
        assert_eq!(
            v["items"][0]["formats"]["http-stream"]["content"],
            "data: {\"seq\":7,\"t\":123,\"a\":6}\n\n"
        );
        assert!(std::str::from_utf8(&c.subscribe_request())
            .expect("utf-8")
            .starts_with("GET /events HTTP/1.1\r\nHost: 127.0.0.1:7999\r\n"));
    }

    #[test]
    fn subscribers_spread_over_sub_servers_round_robin() {
        let c = cfg(&["--server", "127.0.0.1:5009"]);
        assert_eq!(c.sub_server_for(7), c.server);
        let c = cfg(&["--sub-servers", "127.0.0.1:6001,127.0.0.1:6002"]);
        assert_eq!(c.sub_server_for(0).port(), 6001);
        assert_eq!(c.sub_server_for(3).port(), 6002);
        assert_eq!(c.server.port(), 5001);
    }

    #[test]
    fn publishes_go_to_the_subscribe_server_unless_told_otherwise() {
        let c = cfg(&["--server", "127.0.0.1:5009"]);
        assert_eq!(c.pub_server, c.server);
        let req = c.publish_request(0, 1, 1, 0);
        assert!(std::str::from_utf8(&req)
            .expect("utf-8")
            .contains("Host: 127.0.0.1:5009\r\n"));
    }
}
