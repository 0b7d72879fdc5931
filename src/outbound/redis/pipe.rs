//! One connection to Redis: a non-blocking socket (TCP or unix) in the
//! loop's `Poll`, and its protocol state in place: the commands written,
//! a FIFO of what each reply belongs to (Redis answers in order), and the
//! replies decoded as they arrive (`resp.rs`). Replies are never matched
//! by timing: a reply that is late past its deadline drops the connection
//! instead, and everything waiting on it is failed.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::super::resp::{self, Decoded, ProtocolError, Reply};

/// The protocol state of one connection, without its socket: what was
/// asked (in order) and what came back.
pub struct Session<W> {
    out: Vec<u8>,
    input: Vec<u8>,
    waiting: VecDeque<(W, Instant)>,
}

impl<W> Default for Session<W> {
    fn default() -> Self {
        Session {
            out: Vec::new(),
            input: Vec::new(),
            waiting: VecDeque::new(),
        }
    }
}

impl<W> Session<W> {
    /// Queues a command; its reply goes to `what`, due by `deadline`.
    pub fn push(&mut self, what: W, args: &[&[u8]], deadline: Instant) {
        self.write(args);
        self.awaits(what, deadline);
    }

    /// Queues a command; `awaits` then says what its reply belongs to.
    pub fn write(&mut self, args: &[&[u8]]) {
        resp::command(&mut self.out, args);
    }

    /// The reply to the last command written goes to `what`.
    pub fn awaits(&mut self, what: W, deadline: Instant) {
        self.waiting.push_back((what, deadline));
    }

    /// Bytes that came from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The next complete reply and what it belongs to. A reply nobody
    /// asked for, or one that does not decode, is a broken connection.
    pub fn next(&mut self) -> Result<Option<(W, Reply)>, ProtocolError> {
        match resp::decode(&self.input)? {
            Decoded::Incomplete => Ok(None),
            Decoded::Reply(reply, used) => {
                self.input.drain(..used);
                match self.waiting.pop_front() {
                    Some((what, _)) => Ok(Some((what, reply))),
                    None => Err(ProtocolError("a reply nobody asked for")),
                }
            }
        }
    }

    /// The earliest deadline of a reply still owed.
    pub fn oldest_deadline(&self) -> Option<Instant> {
        self.waiting.front().map(|(_, d)| *d)
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Everything still owed a reply, oldest first; the session is empty
    /// afterwards (the connection is gone).
    pub fn take_waiting(&mut self) -> Vec<W> {
        self.out.clear();
        self.input.clear();
        self.waiting.drain(..).map(|(w, _)| w).collect()
    }

    /// Writes what is queued until the socket would block.
    pub fn flush(&mut self, sock: &mut impl Write) -> io::Result<()> {
        while !self.out.is_empty() {
            match sock.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out.capacity() > 1 << 20 {
            self.out = Vec::new();
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }
}

/// Where to connect: resolved once at start (a name is looked up then;
/// the loop never resolves).
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A Redis host name, looked up off the loop: a lookup can take seconds
/// when DNS is slow, so it runs on a short-lived thread and the loop only
/// checks for its answer. An IP address needs none. Looked up again after
/// a connection fails (the name may point elsewhere after a failover).
pub struct Resolver {
    host: String,
    port: u16,
    addr: Option<SocketAddr>,
    pending: Option<std::sync::mpsc::Receiver<io::Result<SocketAddr>>>,
}

impl Resolver {
    pub fn new(host: &str, port: u16) -> Resolver {
        Resolver {
            host: host.to_string(),
            port,
            addr: host
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, port)),
            pending: None,
        }
    }

    /// The address, when known; starts or checks a lookup otherwise.
    pub fn get(&mut self) -> Result<Option<SocketAddr>, String> {
        if let Some(a) = self.addr {
            return Ok(Some(a));
        }
        if let Some(rx) = &self.pending {
            return match rx.try_recv() {
                Ok(Ok(a)) => {
                    self.pending = None;
                    self.addr = Some(a);
                    Ok(Some(a))
                }
                Ok(Err(e)) => {
                    self.pending = None;
                    Err(format!("cannot resolve {}: {e}", self.host))
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => Ok(None),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.pending = None;
                    Err(format!("cannot resolve {}", self.host))
                }
            };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (host, port) = (self.host.clone(), self.port);
        let spawned = std::thread::Builder::new()
            .name("redis-resolve".into())
            .spawn(move || {
                use std::net::ToSocketAddrs;
                let r = (host.as_str(), port).to_socket_addrs().and_then(|mut a| {
                    a.next()
                        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
                });
                let _ = tx.send(r);
            });
        match spawned {
            Ok(_) => {
                self.pending = Some(rx);
                Ok(None)
            }
            Err(e) => Err(format!("cannot start a lookup of {}: {e}", self.host)),
        }
    }

    /// Looks the name up again before the next connect (not an IP).
    pub fn forget(&mut self) {
        if self.host.parse::<std::net::IpAddr>().is_err() {
            self.addr = None;
        }
    }
}

/// The socket of a connection.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn connect(target: &Target) -> io::Result<Sock> {
        Ok(match target {
            Target::Tcp(a) => {
                let s = TcpStream::connect(*a)?;
                let _ = s.set_nodelay(true);
                Sock::Tcp(s)
            }
            Target::Unix(p) => Sock::Unix(UnixStream::connect(p)?),
        })
    }

    pub fn register(&mut self, r: &Registry, t: Token) -> io::Result<()> {
        let i = Interest::READABLE | Interest::WRITABLE;
        match self {
            Sock::Tcp(s) => r.register(s, t, i),
            Sock::Unix(s) => r.register(s, t, i),
        }
    }

    pub fn deregister(&mut self, r: &Registry) {
        let _ = match self {
            Sock::Tcp(s) => r.deregister(s),
            Sock::Unix(s) => r.deregister(s),
        };
    }

    /// Whether a connect in progress has finished (Ok(true)), is still
    /// going (Ok(false)) or failed.
    pub fn connected(&self) -> io::Result<bool> {
        match self {
            Sock::Tcp(s) => {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                match s.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Sock::Unix(s) => {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                Ok(true)
            }
        }
    }
}

impl Read for Sock {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(b),
            Sock::Unix(s) => s.read(b),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(b),
            Sock::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads everything the socket has into the session. Err: the connection
/// is gone (closed, failed).
pub fn read_all<W>(sock: &mut Sock, session: &mut Session<W>, buf: &mut [u8]) -> io::Result<()> {
    loop {
        match sock.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => session.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reconnect delays: doubling from 50 ms to 5 s, each with up to half of
/// it added at random, so restarted hubs do not reconnect in step.
pub fn backoff(failures: u32, random: u64) -> Duration {
    let base = 50u64 << failures.min(7);
    let base = base.min(5_000);
    Duration::from_millis(base + random % (base / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_to_what_asked_in_order() {
        let now = Instant::now();
        let mut s: Session<u32> = Session::default();
        s.push(1, &[b"GET", b"a"], now);
        s.push(2, &[b"GET", b"b"], now + Duration::from_secs(1));
        assert_eq!(
            s.out,
            b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"
        );
        assert_eq!(s.oldest_deadline(), Some(now));
        let wire = b"$1\r\nx\r\n-ERR no\r\n";
        // Split at every byte: nothing is handed out before it is whole.
        for cut in 0..wire.len() {
            let mut t: Session<u32> = Session::default();
            t.push(1, &[b"GET"], now);
            t.push(2, &[b"GET"], now);
            t.feed(&wire[..cut]);
            let mut got = Vec::new();
            while let Some((w, r)) = t.next().unwrap() {
                got.push((w, r));
            }
            t.feed(&wire[cut..]);
            while let Some((w, r)) = t.next().unwrap() {
                got.push((w, r));
            }
            assert_eq!(got.len(), 2, "cut {cut}");
            assert_eq!(got[0], (1, Reply::Bulk(b"x".to_vec())));
            assert_eq!(got[1].0, 2);
            assert!(got[1].1.is_error());
            assert!(t.is_idle());
        }
        s.feed(b"+OK\r\n");
        assert_eq!(s.next().unwrap().map(|(w, _)| w), Some(1));
        assert_eq!(s.take_waiting(), vec![2]);
        assert!(s.is_idle() && !s.has_output());
    }

    #[test]
    fn a_reply_nobody_asked_for_or_garbage_breaks_the_connection() {
        let mut s: Session<u32> = Session::default();
        s.feed(b"+OK\r\n");
        assert!(s.next().is_err());
        let mut s: Session<u32> = Session::default();
        s.push(1, &[b"PING"], Instant::now());
        s.feed(b"hello\r\n");
        assert!(s.next().is_err());
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        assert_eq!(backoff(0, 0), Duration::from_millis(50));
        assert_eq!(backoff(1, 0), Duration::from_millis(100));
        assert_eq!(backoff(30, 0), Duration::from_millis(5_000));
        assert!(backoff(30, u64::MAX) <= Duration::from_millis(7_500));
        assert!(backoff(0, 7) > backoff(0, 0));
    }
}
