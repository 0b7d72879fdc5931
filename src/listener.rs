//! The listening socket and the limits that follow from the open-file
//! limit: how many streams, and how many connections in all.

use std::io;

use mio::net::TcpListener;

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
