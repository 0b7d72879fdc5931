//! Shared pieces: arguments, clock, non-blocking connect with a source
//! address and receive buffer, a log-linear histogram, a tiny JSON writer.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::FromRawFd;

use mio::net::TcpStream;

/// `--key value` and bare `--flag` arguments.
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    pub fn parse(v: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            let k = v[i].trim_start_matches("--").to_string();
            if i + 1 < v.len() && !v[i + 1].starts_with("--") {
                map.insert(k, v[i + 1].clone());
                i += 2;
            } else {
                map.insert(k, "true".to_string());
                i += 1;
            }
        }
        Args { map }
    }
    pub fn str(&self, k: &str, d: &str) -> String {
        self.map.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    pub fn opt(&self, k: &str) -> Option<String> {
        self.map.get(k).cloned()
    }
    pub fn f64(&self, k: &str, d: f64) -> f64 {
        self.map
            .get(k)
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| die(&format!("--{k}: not a number: {s}")))
            })
            .unwrap_or(d)
    }
    pub fn u64(&self, k: &str, d: u64) -> u64 {
        self.map
            .get(k)
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| die(&format!("--{k}: not an integer: {s}")))
            })
            .unwrap_or(d)
    }
    pub fn flag(&self, k: &str) -> bool {
        self.map.get(k).is_some_and(|v| v != "false" && v != "0")
    }
    pub fn addr(&self) -> SocketAddrV4 {
        let a = self.str("addr", "127.0.0.1:5001");
        a.parse()
            .unwrap_or_else(|_| die(&format!("--addr: bad address {a}")))
    }
    /// `--src-ips 127.0.0.2,127.0.0.3` or `--src-count K` (127.0.0.2 ..).
    pub fn src_ips(&self) -> Vec<Option<Ipv4Addr>> {
        if let Some(s) = self.opt("src-ips") {
            return s
                .split(',')
                .map(|x| {
                    Some(
                        x.trim()
                            .parse()
                            .unwrap_or_else(|_| die("--src-ips: bad ip")),
                    )
                })
                .collect();
        }
        let k = self.u64("src-count", 0);
        if k == 0 {
            return vec![None];
        }
        (0..k.min(250))
            .map(|i| Some(Ipv4Addr::new(127, 0, 0, (2 + i) as u8)))
            .collect()
    }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// SIGUSR1 is the explicit end a script sends ("stop now, report"): every
/// subcommand checks `stopped()` in its loop. Installed first thing in
/// `main`, before any ready file is written, so a script that waits for
/// readiness and then signals can never kill a tool that has no handler yet.
pub fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

pub fn stopped() -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}

/// Clears the stop request (a tool with two steps: the first signal ends
/// the first step).
pub fn clear_stop() {
    STOP.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// Writes a ready file atomically (write to a temporary name, rename), so a
/// script polling for it never reads it half written.
pub fn write_ready(path: &str, text: &str) {
    let tmp = format!("{path}.tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("faultkit: {msg}");
    std::process::exit(2);
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the box.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct passed.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn setopt(fd: i32, level: i32, name: i32, v: i32) {
    // SAFETY: plain setsockopt on a socket we own with an int value.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// Starts a non-blocking connect. `rcvbuf` is set before connecting so the
/// advertised window is small from the first byte.
pub fn connect(
    dst: SocketAddrV4,
    src: Option<Ipv4Addr>,
    rcvbuf: Option<usize>,
) -> io::Result<TcpStream> {
    // SAFETY: raw socket calls on a descriptor owned here until handed to mio.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(b) = rcvbuf {
            setopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, b as i32);
        }
        setopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        if let Some(ip) = src {
            // Pick the port at connect time (4-tuple unique), not at bind.
            setopt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1);
            let sa = sockaddr(SocketAddrV4::new(ip, 0));
            if libc::bind(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) < 0
            {
                let e = io::Error::last_os_error();
                libc::close(fd);
                return Err(e);
            }
        }
        let sa = sockaddr(dst);
        let r = libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                libc::close(fd);
                return Err(e);
            }
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// Closes with SO_LINGER 0: the peer gets a reset.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a linger struct on a socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Log-linear histogram, about 1.6 % resolution.
#[derive(Clone)]
pub struct Hist {
    b: Vec<u64>,
    pub n: u64,
    pub max: u64,
    pub sum: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            b: vec![0; 128 + 58 * 64],
            n: 0,
            max: 0,
            sum: 0,
        }
    }
}

impl Hist {
    fn idx(v: u64) -> usize {
        if v < 128 {
            v as usize
        } else {
            let e = 63 - v.leading_zeros() as usize; // >= 7
            let m = ((v >> (e - 6)) & 63) as usize;
            128 + (e - 7) * 64 + m
        }
    }
    fn low(i: usize) -> u64 {
        if i < 128 {
            i as u64
        } else {
            let e = (i - 128) / 64 + 7;
            let m = ((i - 128) % 64) as u64;
            (1u64 << e) | (m << (e - 6))
        }
    }
    pub fn add(&mut self, v: u64) {
        self.b[Self::idx(v)] += 1;
        self.n += 1;
        self.sum += v;
        self.max = self.max.max(v);
    }
    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.b.iter_mut().zip(&o.b) {
            *a += b;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }
    pub fn pct(&self, p: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let want = ((self.n as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in self.b.iter().enumerate() {
            acc += c;
            if acc >= want {
                return Self::low(i).min(self.max);
            }
        }
        self.max
    }
}

/// A flat JSON object written by hand (numbers, strings, bools).
#[derive(Default)]
pub struct Json {
    parts: Vec<String>,
}

impl Json {
    pub fn num<T: std::fmt::Display>(&mut self, k: &str, v: T) -> &mut Self {
        self.parts.push(format!("\"{k}\":{v}"));
        self
    }
    pub fn f(&mut self, k: &str, v: f64) -> &mut Self {
        self.parts.push(format!("\"{k}\":{v:.3}"));
        self
    }
    pub fn s(&mut self, k: &str, v: &str) -> &mut Self {
        let esc: String = v
            .chars()
            .flat_map(|c| match c {
                '"' => "\\\"".chars().collect::<Vec<_>>(),
                '\\' => "\\\\".chars().collect(),
                c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
                c => vec![c],
            })
            .collect();
        self.parts.push(format!("\"{k}\":\"{esc}\""));
        self
    }
    pub fn b(&mut self, k: &str, v: bool) -> &mut Self {
        self.parts.push(format!("\"{k}\":{v}"));
        self
    }
    pub fn raw(&mut self, k: &str, v: &str) -> &mut Self {
        self.parts.push(format!("\"{k}\":{v}"));
        self
    }
    pub fn hist_ms(&mut self, prefix: &str, h: &Hist) -> &mut Self {
        // Histogram values are microseconds; reported in milliseconds.
        self.num(&format!("{prefix}_n"), h.n);
        for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
            self.f(&format!("{prefix}_{name}_ms"), h.pct(p) as f64 / 1000.0);
        }
        self.f(&format!("{prefix}_max_ms"), h.max as f64 / 1000.0)
    }
    pub fn done(&self) -> String {
        format!("{{{}}}", self.parts.join(","))
    }
}

/// min/max that start empty.
#[derive(Clone, Copy, Debug)]
pub struct MinMax {
    pub min: u64,
    pub max: u64,
    pub n: u64,
}

impl Default for MinMax {
    fn default() -> Self {
        MinMax {
            min: u64::MAX,
            max: 0,
            n: 0,
        }
    }
}

impl MinMax {
    pub fn add(&mut self, v: u64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.n += 1;
    }
    pub fn min_or0(&self) -> u64 {
        if self.n == 0 {
            0
        } else {
            self.min
        }
    }
}

/// Status code of an HTTP response head, if the bytes hold a status line.
pub fn status_of(head: &[u8]) -> Option<u16> {
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Header value (case-insensitive name) in a raw response head.
pub fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let s = std::str::from_utf8(head).ok()?;
    for line in s.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case(name) {
                return Some(v.trim());
            }
        }
    }
    None
}
