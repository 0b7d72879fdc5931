//! Nonblocking TCP connect with an optional bound source address.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::FromRawFd;

use mio::net::TcpStream;

/// Linux `IP_BIND_ADDRESS_NO_PORT`: pick the source port at connect() time so
/// that each (source address, destination) pair has its own port range.
const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*a.ip()).to_be(),
    };
    sa
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_int(
    fd: libc::c_int,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: fd is ours; the option value is a c_int as the kernel expects.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

/// Starts a nonblocking connect; completion shows as writability.
pub fn connect_nb(dst: SocketAddrV4, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own; TcpStream closes it on drop.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if let Some(ip) = src {
        set_int(fd, libc::IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)?;
        let sa = sockaddr(SocketAddrV4::new(ip, 0));
        // SAFETY: sa is a valid sockaddr_in of the given length.
        check(unsafe {
            libc::bind(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })?;
    }
    let sa = sockaddr(dst);
    // SAFETY: as above.
    let r = unsafe {
        libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(stream)
}

/// Short, stable name of an I/O error for failure counters.
pub fn err_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL",
        Some(libc::EADDRINUSE) => "EADDRINUSE",
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH",
        Some(n) => return format!("errno {n}"),
        None => return e.kind().to_string(),
    };
    name.to_string()
}

/// Whether an error means "try again later".
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}
