//! One client connection: its socket, readiness, and which phase of life it
//! is in. Kept small: a subscriber that is idle owns no heap memory at all.

use std::io::{self, Read, Write};
use std::net::IpAddr;

use mio::net::TcpStream;

use crate::http::Chunked;

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

pub fn read(stream: &mut TcpStream, buf: &mut [u8]) -> Io {
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

pub fn write_vectored(stream: &mut TcpStream, bufs: &[io::IoSlice<'_>]) -> Io {
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

/// A request that did not arrive in one read: its bytes so far.
#[derive(Default)]
pub struct Pending {
    pub buf: Vec<u8>,
    /// Once the head parsed: its length and where the body ends, if known.
    pub head_len: Option<usize>,
    pub chunked: Chunked,
    pub body: Vec<u8>,
    pub continue_sent: bool,
    /// Complete requests wait here because too much output is unsent;
    /// they are handled as soon as it drains.
    pub backlogged: bool,
}

/// A subscriber: a cursor into its channel's log.
///
/// Invariant: `log.tail() <= cursor <= log.head()`, or the subscriber is
/// dropped in the next fan-out pass (it fell behind the history).
#[derive(Debug)]
pub struct Subscriber {
    pub channel: u32,
    /// Position in the channel's subscriber list.
    pub index: u32,
    pub cursor: u64,
    /// Milliseconds since the server started, of the last write.
    pub last_write_ms: u64,
    /// When the socket stopped draining (ms since start), or `u64::MAX`.
    pub stalled_since_ms: u64,
    /// Bytes of the heartbeat still to send.
    pub heartbeat_left: u8,
    /// The client address counted against the per-IP limit.
    pub counted: bool,
    /// HTTP/1.1 streams are chunked; HTTP/1.0 ones are close-delimited.
    pub chunked: bool,
    /// Bytes of the open chunk's size line already sent.
    pub chunk_head_sent: u8,
    /// Bytes of the open chunk's closing CRLF already sent.
    pub chunk_tail_sent: u8,
    /// Data length of the open chunk; 0 when no chunk is open.
    pub chunk_len: u32,
    /// Log offset where the open chunk's data ends.
    pub chunk_end: u64,
    /// Frames wholly before `cursor` (`Log::complete_before`), modulo 2^32:
    /// deliveries are counted from its change without searching the log.
    pub frames: u32,
}

impl Subscriber {
    /// The heartbeat as this stream frames it.
    pub fn heartbeat(&self) -> &'static [u8] {
        if self.chunked {
            crate::sse::HEARTBEAT_CHUNK
        } else {
            crate::sse::HEARTBEAT
        }
    }
}

pub enum Phase {
    /// Reading requests (or idle between keep-alive requests).
    ///
    /// A request is in progress exactly when `pending` is `Some`. The timer
    /// is the request deadline (header timeout), or, when `idle` is set, the
    /// keep-alive idle timeout that started after the last response.
    Request {
        pending: Option<Box<Pending>>,
        idle: bool,
    },
    Stream(Subscriber),
    /// Flushing a last response, then a lingering close: shut down the
    /// write side and read until the peer closes, so the response is not
    /// lost to a reset.
    Closing {
        shut: bool,
    },
}

pub struct Conn {
    pub stream: TcpStream,
    /// The TCP peer; for a counted subscriber, the client address counted.
    pub ip: IpAddr,
    pub readable: bool,
    pub writable: bool,
    /// After `out` is flushed, close instead of reading the next request.
    pub close_after: bool,
    /// The peer has finished sending (read returned 0).
    pub eof: bool,
    /// Bytes to send before anything else: a response, or a stream's head.
    pub out: Vec<u8>,
    pub out_pos: usize,
    pub phase: Phase,
}

impl Conn {
    pub fn new(stream: TcpStream, ip: IpAddr) -> Conn {
        Conn {
            stream,
            ip,
            readable: false,
            writable: false,
            close_after: false,
            eof: false,
            out: Vec::new(),
            out_pos: 0,
            phase: Phase::Request {
                pending: None,
                idle: false,
            },
        }
    }

    pub fn out_pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Drops the first `n` pending output bytes; frees the buffer when empty.
    pub fn consume_out(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos >= self.out.len() {
            self.out = Vec::new();
            self.out_pos = 0;
        }
    }

    pub fn subscriber(&self) -> Option<&Subscriber> {
        match &self.phase {
            Phase::Stream(s) => Some(s),
            _ => None,
        }
    }
}
