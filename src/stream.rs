//! The subscriber write path: what a stream still owes its socket, which
//! slices go into the next `writev`, and moving the subscriber past what the
//! kernel took.
//!
//! [`write`] is a function of (subscriber, pending output, channel log,
//! socket) that returns what happened ([`Wrote`]); the caller does the
//! bookkeeping (statistics, timers, dropping). Its planning half, [`plan`]
//! and [`advance`], is pure and tested here, down to a partial write that
//! stops at every byte boundary and a ring that wraps in the middle of a
//! frame.

use std::io::{IoSlice, Write};

use crate::channel::Log;
use crate::conn::{self, Io, Out};

/// Largest chunk of a chunked stream (the size line has room for it).
const MAX_CHUNK: u64 = 1 << 30;

/// A subscriber: a cursor into its channel's log, and what it still owes
/// of a heartbeat and of the open chunk.
///
/// Invariant: `log.tail() <= cursor <= log.head()`, or the subscriber is
/// dropped before its next write (it fell behind the history).
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
    /// Closing with a last event of this kind (see [`Ending`]).
    pub ending: Ending,
    /// Bytes of the last event still to send.
    pub final_left: u8,
}

/// Why the hub ends a stream with one last event (documented in the
/// README). The event has no `id:` (a page's last event id does not move)
/// and is never in the channel's history; on a chunked stream its bytes
/// include the last chunk, so the stream ends cleanly once they are out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Not ending.
    No,
    /// The token's `exp` (plus the leeway) came.
    TokenExpired,
    /// Closed by `POST /events/close` (revocation).
    Closed,
}

const EXPIRED_FRAME: &str = "event: token-expired\ndata: {\"reason\":\"token-expired\"}\n\n";
const CLOSED_FRAME: &str = "event: closed\ndata: {\"reason\":\"closed\"}\n\n";

impl Ending {
    /// The last event's bytes, framed as the stream is; static per kind.
    pub fn bytes(self, chunked: bool) -> &'static [u8] {
        let b: &str = match (self, chunked) {
            (Ending::No, _) => "",
            (Ending::TokenExpired, false) => EXPIRED_FRAME,
            (Ending::TokenExpired, true) => concat!(
                "37\r\n",
                "event: token-expired\ndata: {\"reason\":\"token-expired\"}\n\n",
                "\r\n0\r\n\r\n"
            ),
            (Ending::Closed, false) => CLOSED_FRAME,
            (Ending::Closed, true) => concat!(
                "29\r\n",
                "event: closed\ndata: {\"reason\":\"closed\"}\n\n",
                "\r\n0\r\n\r\n"
            ),
        };
        b.as_bytes()
    }
}

impl Subscriber {
    /// A subscriber of channel `channel` (at `index` in its list) starting
    /// at `cursor`; `now_ms` counts as its last write.
    pub fn new(
        channel: u32,
        index: u32,
        cursor: u64,
        log: &Log,
        chunked: bool,
        now_ms: u64,
    ) -> Subscriber {
        Subscriber {
            channel,
            index,
            cursor,
            last_write_ms: now_ms,
            stalled_since_ms: u64::MAX,
            heartbeat_left: 0,
            counted: false,
            chunked,
            chunk_head_sent: 0,
            chunk_tail_sent: 0,
            chunk_len: 0,
            chunk_end: cursor,
            frames: log.complete_before(cursor) as u32,
            ending: Ending::No,
            final_left: 0,
        }
    }

    /// Starts the last event of `kind`: only at a frame boundary with
    /// every published frame sent (a response head or a heartbeat under
    /// way goes out first). Returns false when the subscriber is behind:
    /// the caller simply closes it.
    pub fn begin_ending(&mut self, kind: Ending, log: &Log) -> bool {
        if self.ending != Ending::No {
            return true;
        }
        if self.chunk_len > 0 || self.cursor < log.head() || kind == Ending::No {
            return false;
        }
        self.ending = kind;
        self.final_left = kind.bytes(self.chunked).len() as u8;
        true
    }

    /// The last event has gone out, and everything before it: close now.
    pub fn is_finished(&self, out: &Out) -> bool {
        self.ending != Ending::No
            && self.final_left == 0
            && self.heartbeat_left == 0
            && out.is_empty()
    }

    /// Starts a heartbeat of `len` bytes, unless one is under way or a
    /// chunk is open (a heartbeat may only go between chunks). Returns
    /// whether it started.
    pub fn start_heartbeat(&mut self, len: usize) -> bool {
        if self.heartbeat_left > 0 || self.chunk_len > 0 || self.ending != Ending::No {
            return false;
        }
        self.heartbeat_left = len as u8;
        true
    }

    /// When the heartbeat under way started (ms since the server started).
    ///
    /// Invariant: a heartbeat starts only on a subscriber that is not
    /// stalled, and the write that starts it marks the subscriber stalled
    /// at that moment if anything is left; it stays so until everything,
    /// the heartbeat first, has gone out. So while a heartbeat is partly
    /// sent, `stalled_since_ms` is its start, and the rest is rendered with
    /// exactly the bytes it started with, without storing them.
    pub fn heartbeat_started(&self, now_ms: u64) -> u64 {
        if self.stalled_since_ms != u64::MAX {
            self.stalled_since_ms
        } else {
            now_ms
        }
    }

    /// It fell behind the history: what it still needs was overwritten.
    pub fn is_behind(&self, log: &Log) -> bool {
        self.cursor < log.tail()
    }

    /// Whether anything is still owed to the socket.
    pub fn is_pending(&self, out: &Out, log: &Log) -> bool {
        if self.ending != Ending::No {
            return !out.is_empty() || self.heartbeat_left > 0 || self.final_left > 0;
        }
        !out.is_empty() || self.heartbeat_left > 0 || self.chunk_len > 0 || self.cursor < log.head()
    }

    /// At a frame boundary with nothing owed: the stream may end cleanly
    /// (the last chunk) here.
    pub fn at_boundary(&self) -> bool {
        self.chunk_len == 0 && self.heartbeat_left == 0 && self.final_left == 0
    }
}

/// The deadlines of a stream, in milliseconds (heartbeat 0: none).
pub struct Deadlines {
    pub heartbeat_ms: u64,
    pub write_timeout_ms: u64,
    /// The timer wheel's tick: a heartbeat due within half a tick is sent.
    pub tick_ms: u64,
}

/// What a subscriber's I/O deadline means when it comes.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Its socket has not drained for the write timeout: drop it.
    Stalled,
    /// Still stalled, but not for long enough: look again in this many ms.
    StallIn(u64),
    /// Quiet for the heartbeat interval: send one now.
    Heartbeat,
    /// Not due yet (or cannot start inside a chunk): the next heartbeat is
    /// one interval after this last write (ms since start).
    HeartbeatAfter(u64),
    Nothing,
}

/// Decides what the deadline of `sub` means at `now_ms`.
pub fn due(sub: &Subscriber, now_ms: u64, d: &Deadlines) -> Due {
    if sub.stalled_since_ms != u64::MAX {
        let stalled_for = now_ms.saturating_sub(sub.stalled_since_ms);
        return if stalled_for >= d.write_timeout_ms {
            Due::Stalled
        } else {
            Due::StallIn(d.write_timeout_ms - stalled_for)
        };
    }
    if d.heartbeat_ms == 0 {
        return Due::Nothing;
    }
    let quiet = now_ms + d.tick_ms / 2 >= sub.last_write_ms + d.heartbeat_ms;
    if quiet && sub.heartbeat_left == 0 && sub.chunk_len == 0 {
        Due::Heartbeat
    } else {
        Due::HeartbeatAfter(sub.last_write_ms)
    }
}

/// How this hub's heartbeats look: a `:` comment, or (`--heartbeat-event`)
/// an event with the time as data and no `id:`, so that a page can see it
/// and its last event id does not move.
pub struct Heartbeats {
    pub event: Option<Box<str>>,
    /// The wall clock (ms since the epoch) when the server started: a
    /// heartbeat's time is this plus its start on the loop's clock.
    pub epoch_ms: u64,
}

/// One heartbeat's bytes, framed as its stream is.
pub struct HeartbeatBytes {
    buf: [u8; 256],
    len: usize,
}

impl HeartbeatBytes {
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Heartbeats {
    /// The heartbeat started at `start_ms` (ms since the server started).
    pub fn render(&self, chunked: bool, start_ms: u64) -> HeartbeatBytes {
        let mut hb = HeartbeatBytes {
            buf: [0; 256],
            len: 0,
        };
        let Some(name) = &self.event else {
            let b = if chunked {
                crate::sse::HEARTBEAT_CHUNK
            } else {
                crate::sse::HEARTBEAT
            };
            hb.buf[..b.len()].copy_from_slice(b);
            hb.len = b.len();
            return hb;
        };
        // At most 7 + 128 + 16 + 20 + 3 bytes, plus 6 of chunk framing.
        let mut frame = [0u8; 200];
        let mut w = &mut frame[..];
        let time = self.epoch_ms + start_ms;
        let _ = write!(w, "event: {name}\ndata: {{\"time\": {time}}}\n\n");
        let n = 200 - w.len();
        let mut out = &mut hb.buf[..];
        if chunked {
            let _ = write!(out, "{n:x}\r\n");
        }
        let _ = out.write_all(&frame[..n]);
        if chunked {
            let _ = out.write_all(b"\r\n");
        }
        hb.len = 256 - out.len();
        hb
    }
}

/// What one call of [`write`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wrote {
    pub bytes: usize,
    /// Frames whose last byte went out: deliveries.
    pub frames: u64,
    /// The socket failed or was closed: drop the connection.
    pub closed: bool,
}

/// The slices of one `writev`, in stream order.
pub const OUT: usize = 0;
pub const HEARTBEAT: usize = 1;
pub const SIZE_LINE: usize = 2;
pub const DATA: usize = 3;
pub const DATA_WRAPPED: usize = 4;
pub const CHUNK_END: usize = 5;
/// The rest of the last event of an ending stream.
pub const FINAL: usize = 6;
pub type Parts<'a> = [&'a [u8]; 7];

/// On a chunked stream with log bytes due and no chunk open, opens a chunk
/// over them, so that its size line can be sent first.
pub fn open_chunk(sub: &mut Subscriber, log: &Log) {
    if sub.chunked && sub.chunk_len == 0 && sub.cursor < log.head() && sub.ending == Ending::No {
        let len = (log.head() - sub.cursor).min(MAX_CHUNK);
        sub.chunk_len = len as u32;
        sub.chunk_end = sub.cursor + len;
        sub.chunk_head_sent = 0;
        sub.chunk_tail_sent = 0;
    }
}

/// What goes into the next `writev`: the pending output (a response head),
/// the rest of a heartbeat (`heartbeat` is the whole of it), the open chunk's size line, the log bytes (two
/// slices when the ring wraps), the chunk's closing CRLF; on an ending
/// stream, instead of any log bytes, the rest of the last event. `size_line`
/// is scratch space for the size line. Empty slices are allowed.
pub fn plan<'a>(
    sub: &Subscriber,
    out: &'a [u8],
    heartbeat: &'a [u8],
    log: &'a Log,
    size_line: &'a mut [u8; 12],
) -> Parts<'a> {
    let open = sub.chunk_len > 0;
    let hb = &heartbeat[heartbeat.len().saturating_sub(sub.heartbeat_left as usize)..];
    let (head, tail): (&[u8], &[u8]) = if open {
        let n = chunk_size_line(sub.chunk_len, size_line);
        (
            &size_line[sub.chunk_head_sent as usize..n],
            &b"\r\n"[sub.chunk_tail_sent as usize..],
        )
    } else {
        (&[], &[])
    };
    let end = match (sub.chunked, open) {
        _ if sub.ending != Ending::No => sub.cursor,
        (false, _) => log.head(),
        (true, true) => sub.chunk_end,
        (true, false) => sub.cursor,
    };
    let (a, b) = log.slices_to(sub.cursor, end);
    let last = sub.ending.bytes(sub.chunked);
    let last = &last[last.len() - sub.final_left as usize..];
    [out, hb, head, a, b, tail, last]
}

/// What [`advance`] moved past.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advanced {
    /// Bytes of the pending output that went out.
    pub out: usize,
    pub frames: u64,
}

/// Moves the subscriber past the first `n` bytes of parts whose lengths are
/// `lens` (as [`plan`] made them).
pub fn advance(sub: &mut Subscriber, lens: [usize; 7], mut n: usize, log: &Log) -> Advanced {
    let mut take = |i: usize| {
        let t = n.min(lens[i]);
        n -= t;
        t
    };
    let out = take(OUT);
    sub.heartbeat_left -= take(HEARTBEAT) as u8;
    sub.chunk_head_sent += take(SIZE_LINE) as u8;
    let data = take(DATA) + take(DATA_WRAPPED);
    let mut frames = 0;
    if data > 0 {
        sub.cursor += data as u64;
        // Frames completed: at the head that is every frame published; only
        // a partial write needs a search.
        let done = if sub.cursor == log.head() {
            log.published()
        } else {
            log.complete_before(sub.cursor)
        };
        frames = u64::from((done as u32).wrapping_sub(sub.frames));
        sub.frames = done as u32;
    }
    if sub.chunk_len > 0 {
        sub.chunk_tail_sent += take(CHUNK_END) as u8;
        if sub.chunk_tail_sent == 2 {
            sub.chunk_len = 0;
            sub.chunk_head_sent = 0;
            sub.chunk_tail_sent = 0;
        }
    }
    sub.final_left -= take(FINAL) as u8;
    Advanced { out, frames }
}

/// Where a subscriber's bytes go: its socket and readiness, and its
/// pending output.
pub struct Sink<'a, W: Write> {
    pub sock: &'a mut W,
    pub writable: &'a mut bool,
    pub out: &'a mut Out,
}

/// Writes what the subscriber is owed while the socket takes it: as few
/// `writev`s as the kernel allows, the log sent without a copy. Clears
/// `writable` when the socket would block. `now_ms` is the loop's clock
/// (ms since start).
pub fn write<W: Write>(
    sub: &mut Subscriber,
    sink: Sink<'_, W>,
    log: &Log,
    heartbeats: &Heartbeats,
    now_ms: u64,
) -> Wrote {
    let Sink {
        sock,
        writable,
        out,
    } = sink;
    let heartbeat = (sub.heartbeat_left > 0)
        .then(|| heartbeats.render(sub.chunked, sub.heartbeat_started(now_ms)));
    let hb: &[u8] = heartbeat.as_ref().map_or(&[], HeartbeatBytes::as_slice);
    let mut wrote = Wrote::default();
    while *writable {
        open_chunk(sub, log);
        let mut size_line = [0u8; 12];
        let parts = plan(sub, out.pending(), hb, log, &mut size_line);
        if parts.iter().all(|p| p.is_empty()) {
            break;
        }
        let lens = parts.map(<[u8]>::len);
        let iov = parts.map(IoSlice::new);
        match conn::write_vectored(sock, &iov) {
            Io::Done(n) => {
                wrote.bytes += n;
                let moved = advance(sub, lens, n, log);
                wrote.frames += moved.frames;
                out.consume(moved.out);
            }
            Io::WouldBlock => *writable = false,
            Io::Closed | Io::Error(_) => {
                wrote.closed = true;
                break;
            }
        }
    }
    wrote
}

/// Writes `"{len:x}\r\n"` into `buf`; returns its length.
pub fn chunk_size_line(len: u32, buf: &mut [u8; 12]) -> usize {
    let digits = (32 - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, b) in buf.iter_mut().take(digits).enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    digits + 2
}

#[cfg(test)]
mod tests;
