//! The listening socket, the limits that follow from the open-file limit
//! (how many streams, how many connections in all), and accepting.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::Registry;

use crate::config::Config;

/// Connections kept above the connection cap only to answer 503 and close.
pub const REJECT_RESERVE: usize = 32;
/// File descriptors never used for clients (listener, epoll, stdio, ...).
const FD_RESERVE: usize = 32;
/// Connections allowed beyond the stream limit, so that a hub full of
/// subscribers still takes publishes, health checks and status requests.
const PLAIN_HEADROOM: usize = 256;

pub struct Listening {
    pub listener: TcpListener,
    /// Concurrent streams allowed (`--max-connections`, or what the
    /// open-file limit leaves).
    pub max_connections: usize,
    /// Connections accepted before new ones get 503 at once.
    pub accept_cap: usize,
}

/// Binds `cfg.bind` with a long backlog and `TCP_NODELAY`, after raising
/// the open-file limit as far as it goes.
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
    let listener = TcpListener::bind(cfg.bind)?;
    raise_backlog(&listener);
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux:
    // one setsockopt here instead of one per connection.
    set_nodelay(&listener);
    Ok(Listening {
        listener,
        max_connections,
        accept_cap,
    })
}

/// mio listens with a backlog of 128; a reconnect storm after a restart
/// needs more. Calling `listen` again on a listening socket only changes the
/// backlog; the kernel caps it at `net.core.somaxconn`.
fn raise_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen() on a socket we own, with no pointers involved.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 65535) };
    if rc != 0 {
        log::warn!(
            "could not raise the listen backlog: {}",
            io::Error::last_os_error()
        );
    }
}

/// Events go out as soon as they are written (no Nagle delay).
fn set_nodelay(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
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
    Conn(TcpStream, SocketAddr),
    /// Nothing more to accept now (or accepting has stopped).
    Idle,
    /// accept() failed (EMFILE, ENFILE, ENOBUFS): paused until a
    /// connection closes or [`Acceptor::wake_at`].
    Failed,
}

/// The accepting side: the listener, and the pause after accept() failed.
///
/// With an edge-triggered listener no new event may come while the backlog
/// stays queued, so a failed accept is retried after a close or shortly,
/// never in a spin.
pub struct Acceptor {
    listener: Option<TcpListener>,
    paused: Option<Instant>,
    /// Warned once until accepting works again.
    failing: bool,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Acceptor {
        Acceptor {
            listener: Some(listener),
            paused: None,
            failing: false,
        }
    }

    pub fn next(&mut self, now: Instant) -> Next {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return Next::Idle;
            };
            return match listener.accept() {
                Ok((stream, addr)) => {
                    if self.failing {
                        self.failing = false;
                        log::info!("accepting connections again");
                    }
                    Next::Conn(stream, addr)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Next::Idle,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    if !self.failing {
                        self.failing = true;
                        log::warn!("accept failed: {e}; retrying in {ACCEPT_RETRY:?}");
                    }
                    self.paused = Some(now + ACCEPT_RETRY);
                    Next::Failed
                }
            };
        }
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

    /// Stops accepting for good (shutdown).
    pub fn stop(&mut self, registry: &Registry) {
        if let Some(mut l) = self.listener.take() {
            let _ = registry.deregister(&mut l);
        }
        self.paused = None;
    }
}
