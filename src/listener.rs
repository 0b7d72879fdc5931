//! The listening sockets (the public one, shared with other processes under
//! `--reuse-port`, and the `--admin-bind` one), the limits that follow from
//! the open-file limit (how many streams, how many connections in all), and
//! accepting from both.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::config::Config;
use crate::conn::Side;

/// Connections kept above the connection cap only to answer 503 and close.
pub const REJECT_RESERVE: usize = 32;
/// File descriptors never used for clients (listener, epoll, stdio, ...).
const FD_RESERVE: usize = 32;
/// Connections allowed beyond the stream limit, so that a hub full of
/// subscribers still takes publishes, health checks and status requests.
const PLAIN_HEADROOM: usize = 256;
/// The accept queue asked for; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: libc::c_int = 65535;

pub struct Listening {
    pub listener: TcpListener,
    /// `--admin-bind`: this process's own health, status and metrics.
    pub admin: Option<TcpListener>,
    /// Concurrent streams allowed (`--max-connections`, or what the
    /// open-file limit leaves).
    pub max_connections: usize,
    /// Connections accepted before new ones get 503 at once.
    pub accept_cap: usize,
}

/// Binds `cfg.bind` with a long backlog and `TCP_NODELAY` (with
/// `SO_REUSEPORT` under `--reuse-port`), and `--admin-bind` if set, after
/// raising the open-file limit as far as it goes. Errors name the address
/// and, when it is taken, why that may be.
pub fn listen(cfg: &Config) -> io::Result<Listening> {
    let fd_limit = raise_fd_limit();
    // Descriptors: FD_RESERVE for ourselves, REJECT_RESERVE for 503s,
    // PLAIN_HEADROOM for requests that are not streams, the rest streams.
    let fd_cap = (fd_limit as usize)
        .saturating_sub(FD_RESERVE + REJECT_RESERVE)
        .max(16);
    let max_connections = if cfg.max_connections > 0 {
        cfg.max_connections
    } else {
        fd_cap.saturating_sub(PLAIN_HEADROOM).max(16)
    };
    let accept_cap = (max_connections + PLAIN_HEADROOM).min(fd_cap);
    let listener = if cfg.scale.reuse_port {
        bind_shared(cfg.bind).map_err(|e| bind_error(e, cfg.bind, "", true))?
    } else {
        let l = TcpListener::bind(cfg.bind).map_err(|e| bind_error(e, cfg.bind, "", false))?;
        raise_backlog(&l);
        l
    };
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux:
    // one setsockopt here instead of one per connection.
    set_nodelay(&listener);
    let admin = match cfg.scale.admin_bind {
        None => None,
        Some(addr) => {
            let what = " (the admin address, --admin-bind)";
            let l = TcpListener::bind(addr).map_err(|e| bind_error(e, addr, what, false))?;
            set_nodelay(&l);
            log::info!(
                "admin address {}: /health, /events/status and /metrics of this process only",
                l.local_addr()?
            );
            Some(l)
        }
    };
    Ok(Listening {
        listener,
        admin,
        max_connections,
        accept_cap,
    })
}

/// The error of binding `addr`, with the address and, when it is taken,
/// what sharing a port needs.
fn bind_error(e: io::Error, addr: SocketAddr, what: &str, shared: bool) -> io::Error {
    let hint = match (e.kind(), shared) {
        (io::ErrorKind::AddrInUse, true) => {
            "; with --reuse-port the port is shared only with sockets that also set \
             SO_REUSEPORT (every process on it needs --reuse-port) and belong to the same \
             user: the kernel shares a port only within one UID"
        }
        (io::ErrorKind::AddrInUse, false) if what.is_empty() => {
            "; another process holds it (to run several ssecast processes on one port, \
             start every one with --reuse-port, all as the same user)"
        }
        _ => "",
    };
    io::Error::new(
        e.kind(),
        format!("cannot listen on {addr}{what}: {e}{hint}"),
    )
}

/// `--reuse-port`: a listening socket with `SO_REUSEADDR` (as std's bind
/// sets) and `SO_REUSEPORT` set before `bind`, so that several processes of
/// one user share `addr` and the kernel spreads new connections over them.
/// Non-blocking and close-on-exec from the start, listening with
/// [`BACKLOG`].
fn bind_shared(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket() takes no pointers; a valid descriptor is owned below.
    let raw = unsafe { libc::socket(family, flags, 0) };
    if raw < 0 {
        return Err(os_error("socket()"));
    }
    // SAFETY: `raw` is a descriptor we just opened and nobody else owns; the
    // OwnedFd closes it on every error path below.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_flag(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, "SO_REUSEADDR")?;
    set_flag(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, "SO_REUSEPORT")?;
    let rc = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: an all-zero sockaddr_in is valid; the fields are set next.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: bind() reads `size_of::<sockaddr_in>()` bytes of `sa`.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            // SAFETY: an all-zero sockaddr_in6 is valid; the fields are set next.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_flowinfo = a.flowinfo();
            sa.sin6_addr.s6_addr = a.ip().octets();
            sa.sin6_scope_id = a.scope_id();
            // SAFETY: bind() reads `size_of::<sockaddr_in6>()` bytes of `sa`.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        return Err(os_error("bind()"));
    }
    // SAFETY: listen() on the socket we own, no pointers involved.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
        return Err(os_error("listen()"));
    }
    Ok(TcpListener::from_std(std::net::TcpListener::from(fd)))
}

/// The last OS error, its kind kept, with the call that failed.
fn os_error(call: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{call}: {e}"))
}

/// Sets a boolean socket option to 1.
fn set_flag(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, name: &str) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, pointer to a local of that size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(os_error(&format!("setsockopt({name})")));
    }
    Ok(())
}

/// mio listens with a backlog of 128; a reconnect storm after a restart
/// needs more. Calling `listen` again on a listening socket only changes the
/// backlog; the kernel caps it at `net.core.somaxconn`.
fn raise_backlog(listener: &TcpListener) {
    // SAFETY: listen() on a socket we own, with no pointers involved.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
    if rc != 0 {
        log::warn!(
            "could not raise the listen backlog: {}",
            io::Error::last_os_error()
        );
    }
}

/// Events go out as soon as they are written (no Nagle delay).
fn set_nodelay(listener: &TcpListener) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, pointer to a local of that size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::warn!("could not set TCP_NODELAY: {}", io::Error::last_os_error());
    }
}

/// Raises the soft open-file limit to the hard one; returns the limit.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Retry `accept` this soon after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What [`Acceptor::next`] came to.
pub enum Next {
    /// A connection, and the listener it came in on.
    Conn(TcpStream, SocketAddr, Side),
    /// Nothing more to accept now (or accepting has stopped).
    Idle,
    /// accept() failed (EMFILE, ENFILE, ENOBUFS): paused until a
    /// connection closes or [`Acceptor::wake_at`].
    Failed,
}

/// One listening socket and what the kernel last said about it.
struct Source {
    listener: TcpListener,
    token: Token,
    side: Side,
    /// Readable as far as we know: an event came and accept() has not yet
    /// said `WouldBlock`.
    ready: bool,
}

/// The accepting side: the listeners (the public one, and the admin one
/// under `--admin-bind`), and the pause after accept() failed.
///
/// Listeners are edge-triggered: each is accepted from after its event until
/// `WouldBlock`, and a failed accept is retried after a close or shortly,
/// never in a spin. With both ready, accepts alternate between them, so a
/// reconnect storm on the public port does not hold up a health check on
/// the admin address.
pub struct Acceptor {
    sources: Vec<Source>,
    /// Where the next accept starts (the alternation).
    turn: usize,
    paused: Option<Instant>,
    /// Warned once until accepting works again.
    failing: bool,
}

impl Acceptor {
    /// Registers the public listener under `tokens[0]` and the admin one,
    /// if any, under `tokens[1]`.
    pub fn new(
        public: TcpListener,
        admin: Option<TcpListener>,
        registry: &Registry,
        tokens: [Token; 2],
    ) -> io::Result<Acceptor> {
        let mut sources = vec![(public, tokens[0], Side::Public)];
        sources.extend(admin.map(|l| (l, tokens[1], Side::Admin)));
        let sources = sources
            .into_iter()
            .map(|(mut listener, token, side)| {
                registry.register(&mut listener, token, Interest::READABLE)?;
                Ok(Source {
                    listener,
                    token,
                    side,
                    ready: false,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Acceptor {
            sources,
            turn: 0,
            paused: None,
            failing: false,
        })
    }

    /// The listener registered under `token` has connections waiting.
    pub fn readable(&mut self, token: Token) {
        for s in self.sources.iter_mut().filter(|s| s.token == token) {
            s.ready = true;
        }
    }

    pub fn next(&mut self, now: Instant) -> Next {
        let n = self.sources.len();
        let mut i = 0;
        while i < n {
            let at = (self.turn + i) % n;
            let source = &mut self.sources[at];
            if !source.ready {
                i += 1;
                continue;
            }
            match source.listener.accept() {
                Ok((stream, addr)) => {
                    if self.failing {
                        self.failing = false;
                        log::info!("accepting connections again");
                    }
                    self.turn = (at + 1) % n;
                    return Next::Conn(stream, addr, source.side);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    source.ready = false;
                    i += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    if !self.failing {
                        self.failing = true;
                        log::warn!("accept failed: {e}; retrying in {ACCEPT_RETRY:?}");
                    }
                    self.paused = Some(now + ACCEPT_RETRY);
                    return Next::Failed;
                }
            }
        }
        Next::Idle
    }

    /// When a paused accept is to be retried.
    pub fn wake_at(&self) -> Option<Instant> {
        self.paused
    }

    /// Whether a paused accept is due now; clears the pause if so.
    pub fn retry_due(&mut self, now: Instant) -> bool {
        if self.paused.is_some_and(|t| now >= t) {
            self.paused = None;
            return true;
        }
        false
    }

    /// A descriptor was freed: a paused accept may go at once.
    pub fn descriptor_freed(&mut self, now: Instant) {
        if self.paused.is_some() {
            self.paused = Some(now);
        }
    }

    /// Stops accepting for good (shutdown), on every listener.
    pub fn stop(&mut self, registry: &Registry) {
        for mut s in self.sources.drain(..) {
            let _ = registry.deregister(&mut s.listener);
        }
        self.paused = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn shared_listeners_share_a_port_and_others_cannot_join() {
        // IPv6 too where the host has ::1 (a container may have IPv6 off).
        let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
        let anys: &[&str] = if v6 {
            &["127.0.0.1:0", "[::1]:0"]
        } else {
            &["127.0.0.1:0"]
        };
        for &any in anys {
            let a = bind_shared(loopback(any)).unwrap();
            let addr = a.local_addr().unwrap();
            let b = bind_shared(addr).unwrap();
            assert_eq!(b.local_addr().unwrap(), addr);
            // A socket without SO_REUSEPORT cannot join.
            let e = TcpListener::bind(addr).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            let msg = bind_error(e, addr, "", false).to_string();
            assert!(msg.contains(&addr.to_string()) && msg.contains("--reuse-port"));
        }
        // Nor can a shared socket join a port held without SO_REUSEPORT.
        let plain = TcpListener::bind(loopback("127.0.0.1:0")).unwrap();
        let addr = plain.local_addr().unwrap();
        let e = bind_shared(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let msg = bind_error(e, addr, "", true).to_string();
        assert!(msg.starts_with("cannot listen on 127.0.0.1:"), "{msg}");
        assert!(msg.contains("bind()") && msg.contains("one UID"), "{msg}");
    }

    #[test]
    fn accepts_alternate_between_ready_listeners() {
        let poll = mio::Poll::new().unwrap();
        let public = TcpListener::bind(loopback("127.0.0.1:0")).unwrap();
        let admin = TcpListener::bind(loopback("127.0.0.1:0")).unwrap();
        let (pa, aa) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let tokens = [Token(1), Token(2)];
        let mut acc = Acceptor::new(public, Some(admin), poll.registry(), tokens).unwrap();
        let _clients: Vec<_> = [pa, pa, pa, aa, aa]
            .iter()
            .map(|a| std::net::TcpStream::connect(a).unwrap())
            .collect();
        let now = Instant::now();
        // Not ready until an event says so.
        assert!(matches!(acc.next(now), Next::Idle));
        acc.readable(Token(1));
        acc.readable(Token(2));
        let mut sides = Vec::new();
        let deadline = now + Duration::from_secs(5);
        while sides.len() < 5 && Instant::now() < deadline {
            match acc.next(now) {
                Next::Conn(_, _, side) => sides.push(side),
                // Connections still in the handshake: wait for them.
                Next::Idle => {
                    acc.readable(Token(1));
                    acc.readable(Token(2));
                    std::thread::sleep(Duration::from_millis(5));
                }
                Next::Failed => panic!("accept failed"),
            }
        }
        use Side::{Admin, Public};
        assert_eq!(sides, [Public, Admin, Public, Admin, Public]);
        assert!(matches!(acc.next(now), Next::Idle));
        acc.stop(poll.registry());
        acc.readable(Token(1));
        assert!(matches!(acc.next(now), Next::Idle));
    }
}
