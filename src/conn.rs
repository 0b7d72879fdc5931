//! One client connection: its socket, readiness, pending output, and which
//! phase of life it is in. Kept small: a subscriber that is idle owns no heap
//! memory at all. Socket calls come back as [`Io`], not raw errors.

use std::io::{self, IoSlice, Read, Write};
use std::net::IpAddr;

use mio::net::TcpStream;

use crate::reader::RequestReader;
use crate::stream::Subscriber;

/// What a socket call came to (instead of raw io errors in the logic).
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Some bytes moved.
    Done(usize),
    WouldBlock,
    /// The peer closed (read returned 0).
    Closed,
    Error(io::ErrorKind),
}

pub fn read(stream: &mut impl Read, buf: &mut [u8]) -> Io {
    loop {
        return match stream.read(buf) {
            Ok(0) => Io::Closed,
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) => Io::Error(e.kind()),
        };
    }
}

pub fn write_vectored(stream: &mut impl Write, bufs: &[IoSlice<'_>]) -> Io {
    loop {
        return match stream.write_vectored(bufs) {
            Ok(0) => Io::Error(io::ErrorKind::WriteZero),
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) => Io::Error(e.kind()),
        };
    }
}

/// Makes the coming close a reset (`SO_LINGER` 0): the kernel frees the
/// unsent send queue at once instead of keeping it (up to `tcp_wmem` max)
/// while it retries. Used for slow subscribers that are dropped: they resume
/// with `Last-Event-ID` anyway, and a full queue left behind by each would let
/// slow readers pin kernel memory that no limit bounds.
pub fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a pointer to a local of the
    // size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Bytes to send before anything else: responses, or a stream's head.
/// Freed as soon as it has all gone out.
#[derive(Default)]
pub struct Out {
    buf: Vec<u8>,
    pos: usize,
}

impl Out {
    /// What is still to be sent.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the first `n` pending bytes; frees the buffer when empty.
    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos >= self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// The buffer to append to (after what is pending).
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Queues `bytes`, taking the allocation when nothing is pending.
    pub fn push_vec(&mut self, bytes: Vec<u8>) {
        if self.is_empty() {
            self.buf = bytes;
            self.pos = 0;
        } else {
            self.buf.extend_from_slice(&bytes);
        }
    }
}

pub enum Phase {
    /// Reading requests (or idle between keep-alive requests).
    ///
    /// A request is in progress exactly when `reader` is `Some`. The I/O
    /// timer is the request deadline (header timeout), or, when `idle` is
    /// set, the keep-alive idle timeout that started after the last
    /// response.
    Request {
        reader: Option<Box<RequestReader>>,
        idle: bool,
    },
    Stream(Subscriber),
    /// A subscribe waiting for the application's answer (forward auth).
    /// The I/O timer is the deadline; `Server::resume_stream` is the one
    /// way out.
    Waiting(Box<Waiting>),
    /// Flushing a last response, then a lingering close: shut down the
    /// write side and read until the peer closes, so the response is not
    /// lost to a reset.
    Closing {
        shut: bool,
    },
}

/// What a subscribe waiting for an answer keeps of its request: its few
/// facts, not its buffer.
pub struct Waiting {
    /// The forward-auth call whose answer this is waiting for.
    pub call: u64,
    pub channel: Box<str>,
    pub last_id: Option<Box<str>>,
    /// The stream is chunked (not an HTTP/1.0 request).
    pub chunked: bool,
    pub cors: Vec<String>,
    /// `/events/status/stream`.
    pub status: bool,
    /// A HEAD: answered with the stream's head, no stream.
    pub head_only: bool,
    /// The client address counted against the per-client limit.
    pub client: IpAddr,
    /// Redis mode: the stream's head went out, and it waits (with
    /// heartbeats) for its channel to be followed or its replay to come.
    pub held: Option<Box<Held>>,
}

/// A stream held in Redis mode: what it replays and how far it got.
#[derive(Debug, Default)]
pub struct Held {
    /// Replay the events after this id (`None`: live from the tip).
    pub after: Option<u64>,
    /// The last id replayed so far (`after` before the first page).
    pub last: u64,
    /// All pages came (or none was needed).
    pub replayed: bool,
    /// Events between `after` and what came are gone: the id to give the
    /// `history-lost` notice, which is sent first.
    pub lost_at: Option<u64>,
    /// The replayed frames, encoded, and where each ends (`(id, end)`).
    pub frames: Vec<u8>,
    pub ends: Vec<(u64, usize)>,
    pub grant: Option<(u64, Option<Box<str>>)>,
    /// A `Last-Event-ID` that is no id (live, after a `history-lost`).
    pub not_an_id: Option<Box<str>>,
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `--bind`: every endpoint.
    Public,
    /// `--admin-bind`: only this process's health, status and metrics
    /// (`routes::resolve` refuses the rest).
    Admin,
}

pub struct Conn {
    pub stream: TcpStream,
    pub side: Side,
    /// The TCP peer; for a counted subscriber, the client address counted.
    pub ip: IpAddr,
    pub readable: bool,
    pub writable: bool,
    /// After `out` is flushed, close instead of reading the next request.
    pub close_after: bool,
    /// The peer has finished sending (read returned 0).
    pub eof: bool,
    pub out: Out,
    pub phase: Phase,
}

/// What [`Conn::flush`] did.
pub struct Flushed {
    pub bytes: usize,
    /// The socket failed: the connection must be closed.
    pub failed: bool,
}

impl Conn {
    pub fn new(stream: TcpStream, ip: IpAddr, side: Side) -> Conn {
        Conn {
            stream,
            side,
            ip,
            readable: false,
            writable: false,
            close_after: false,
            eof: false,
            out: Out::default(),
            phase: Phase::Request {
                reader: None,
                idle: false,
            },
        }
    }

    pub fn subscriber(&self) -> Option<&Subscriber> {
        match &self.phase {
            Phase::Stream(s) => Some(s),
            _ => None,
        }
    }

    /// Writes out `out` while the socket takes it.
    pub fn flush(&mut self) -> Flushed {
        let mut bytes = 0;
        while !self.out.is_empty() && self.writable {
            match write_vectored(&mut self.stream, &[IoSlice::new(self.out.pending())]) {
                Io::Done(n) => {
                    bytes += n;
                    self.out.consume(n);
                }
                Io::WouldBlock => self.writable = false,
                Io::Closed | Io::Error(_) => {
                    return Flushed {
                        bytes,
                        failed: true,
                    }
                }
            }
        }
        Flushed {
            bytes,
            failed: false,
        }
    }

    /// Reads and discards whatever the peer sends until it would block;
    /// returns true when the peer has closed or the socket failed.
    pub fn discard_input(&mut self, scratch: &mut [u8]) -> bool {
        while self.readable {
            match read(&mut self.stream, scratch) {
                Io::Done(_) => {}
                Io::WouldBlock => self.readable = false,
                Io::Closed | Io::Error(_) => return true,
            }
        }
        false
    }
}
