//! RESP2, the Redis wire protocol: commands written as arrays of bulk
//! strings ([`command`]) and an incremental reply decoder ([`decode`]).
//!
//! Sans-I/O: the caller appends what the socket gave to its buffer, calls
//! [`decode`] and drains the bytes consumed. [`Decoded::Incomplete`] means
//! "read more and call again" and is the answer for every proper prefix of
//! a valid reply, wherever the reads split it. The decoder keeps no state
//! between calls, so a reply is looked at again from its start each time;
//! a first pass only finds where it ends (allocating nothing) and the
//! reply is built once that pass found it whole.
//!
//! The server is trusted to speak the protocol, not to be sane: garbage is
//! a [`ProtocolError`] (the connection is then dropped and reopened), never
//! a panic, nor an allocation for bytes that have not arrived. The limits
//! below bound what a broken server can make the buffer grow to before an
//! error is certain. RESP3 is never asked for (no `HELLO 3`), so
//! its types are errors.

use std::io::Write;

/// Largest bulk string accepted (Redis's own `proto-max-bulk-len` default
/// is 512 MiB; nothing the hub stores comes near this).
pub const MAX_BULK: usize = 64 << 20;
/// Most elements in one array.
pub const MAX_ARRAY: usize = 1 << 20;
/// Deepest nesting of arrays (an `XREAD` reply is 5 deep).
pub const MAX_DEPTH: usize = 8;
/// Longest `+`, `-` or `:` line before its CRLF.
pub const MAX_LINE: usize = 64 << 10;
/// Longest `$` or `*` length line before its CRLF (a valid one has at most
/// 8 digits).
const MAX_LENGTH_LINE: usize = 20;

/// One reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`. Not UTF-8 (never from Redis) is decoded lossily.
    Status(String),
    /// `-ERR message`: an answer, not a protocol error. Lossy as `Status`.
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1`: a missing value (`GET` of no key).
    Nil,
    Array(Vec<Reply>),
    /// `*-1`: no array (`XREAD BLOCK` that timed out).
    NilArray,
}

impl Reply {
    /// A bulk string's bytes, or a status line's.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) => Some(b),
            Reply::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// A status line, or a bulk string that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Status(s) => Some(s),
            Reply::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// An integer, or a bulk string holding a decimal one (`GET` of a
    /// counter, `XADD`'s fields): `-?[0-9]+` within i64.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            Reply::Bulk(b) => decimal(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// An error's first word: `ERR`, `NOSCRIPT`, `LOADING`, `OOM`, `BUSY`,
    /// `WRONGTYPE`, `NOAUTH`... (`None` for any other reply).
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => e.split(' ').next(),
            _ => None,
        }
    }
}

/// Appends one command as an array of bulk strings (binary-safe: any
/// argument bytes go as they are).
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `reply` as a server would send it (for tests and fake
/// servers; `Status` and `Error` must hold no CR or LF).
pub fn encode(out: &mut Vec<u8>, reply: &Reply) {
    let _ = match reply {
        Reply::Status(s) => write!(out, "+{s}\r\n"),
        Reply::Error(e) => write!(out, "-{e}\r\n"),
        Reply::Int(n) => write!(out, ":{n}\r\n"),
        Reply::Bulk(b) => {
            let _ = write!(out, "${}\r\n", b.len());
            out.extend_from_slice(b);
            write!(out, "\r\n")
        }
        Reply::Nil => write!(out, "$-1\r\n"),
        Reply::NilArray => write!(out, "*-1\r\n"),
        Reply::Array(items) => {
            let _ = write!(out, "*{}\r\n", items.len());
            items.iter().for_each(|r| encode(out, r));
            Ok(())
        }
    };
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// One whole reply and how many bytes it took.
    Reply(Reply, usize),
    /// Not a whole reply yet, and nothing wrong so far.
    Incomplete,
}

/// The server does not speak RESP2 (the connection cannot be trusted any
/// more: nothing tells where the next reply would start).
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

/// Decodes the reply at the start of `buf`. Once a result is `Reply` or
/// an error, more bytes after them do not change it.
pub fn decode(buf: &[u8]) -> Result<Decoded, ProtocolError> {
    if value(buf, 0, 0, false)?.is_none() {
        return Ok(Decoded::Incomplete);
    }
    Ok(match value(buf, 0, 0, true)? {
        Some((reply, end)) => Decoded::Reply(reply, end),
        None => Decoded::Incomplete,
    })
}

type Step<T> = Result<Option<(T, usize)>, ProtocolError>;

/// The reply starting at `at`, `depth` arrays deep, and where it ends.
/// Without `keep`, only where it ends: strings and arrays are left empty.
fn value(buf: &[u8], at: usize, depth: usize, keep: bool) -> Step<Reply> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let start = at + 1;
    let text = |l: &[u8]| {
        if keep {
            String::from_utf8_lossy(l).into_owned()
        } else {
            String::new()
        }
    };
    let reply = match kind {
        b'+' => line(buf, start, MAX_LINE)?.map(|(l, end)| (Reply::Status(text(l)), end)),
        b'-' => line(buf, start, MAX_LINE)?.map(|(l, end)| (Reply::Error(text(l)), end)),
        b':' => match line(buf, start, MAX_LINE)? {
            Some((l, end)) => {
                let n = decimal(l).ok_or(ProtocolError("bad integer"))?;
                Some((Reply::Int(n), end))
            }
            None => None,
        },
        b'$' => match length(buf, start, MAX_BULK, "bulk string too long")? {
            None => None,
            Some((None, end)) => Some((Reply::Nil, end)),
            Some((Some(n), from)) => bulk(buf, from, n, keep)?,
        },
        b'*' if depth == MAX_DEPTH => return Err(ProtocolError("arrays nested too deep")),
        b'*' => match length(buf, start, MAX_ARRAY, "array too long")? {
            None => None,
            Some((None, end)) => Some((Reply::NilArray, end)),
            Some((Some(n), from)) => array(buf, from, n, depth + 1, keep)?,
        },
        b'_' | b',' | b'#' | b'!' | b'=' | b'(' | b'%' | b'~' | b'>' | b'|' => {
            return Err(ProtocolError("RESP3 reply (never asked for)"))
        }
        _ => return Err(ProtocolError("unknown reply type")),
    };
    Ok(reply)
}

/// The line starting at `at` (without its CRLF), at most `max` bytes, and
/// where the next byte after its CRLF is. A CR or LF alone is an error.
fn line(buf: &[u8], at: usize, max: usize) -> Step<&[u8]> {
    // Looking at max + 1 bytes tells a line of `max` bytes from a longer one.
    let window = &buf[at..buf.len().min(at + max + 1)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window[i] == b'\n' => Err(ProtocolError("LF without CR")),
        Some(i) => match buf.get(at + i + 1) {
            Some(b'\n') => Ok(Some((&buf[at..at + i], at + i + 2))),
            Some(_) => Err(ProtocolError("CR without LF")),
            None => Ok(None),
        },
        None if window.len() > max => Err(ProtocolError("line too long")),
        None => Ok(None),
    }
}

/// A `$` or `*` length: `None` for `-1`, else at most `max`.
fn length(buf: &[u8], at: usize, max: usize, too_long: &'static str) -> Step<Option<usize>> {
    let Some((l, end)) = line(buf, at, MAX_LENGTH_LINE)? else {
        return Ok(None);
    };
    match decimal(l) {
        Some(-1) => Ok(Some((None, end))),
        Some(n) if n < 0 => Err(ProtocolError("negative length")),
        Some(n) if n as u64 > max as u64 => Err(ProtocolError(too_long)),
        Some(n) => Ok(Some((Some(n as usize), end))),
        None => Err(ProtocolError("bad length")),
    }
}

/// `n` bytes from `at`, then CRLF. Nothing is copied until all are there.
fn bulk(buf: &[u8], at: usize, n: usize, keep: bool) -> Step<Reply> {
    let end = at + n;
    match (buf.get(end), buf.get(end + 1)) {
        (Some(b'\r'), Some(b'\n')) => {
            let bytes = if keep {
                buf[at..end].to_vec()
            } else {
                Vec::new()
            };
            Ok(Some((Reply::Bulk(bytes), end + 2)))
        }
        (Some(b'\r'), None) | (None, _) => Ok(None),
        _ => Err(ProtocolError("bulk string not followed by CRLF")),
    }
}

/// `n` replies from `at`, each `depth` deep.
fn array(buf: &[u8], mut at: usize, n: usize, depth: usize, keep: bool) -> Step<Reply> {
    // Built only once whole (`keep`), so all `n` are there to reserve for.
    let mut items = Vec::with_capacity(if keep { n } else { 0 });
    for _ in 0..n {
        let Some((item, end)) = value(buf, at, depth, keep)? else {
            return Ok(None);
        };
        if keep {
            items.push(item);
        }
        at = end;
    }
    Ok(Some((Reply::Array(items), at)))
}

/// `-?[0-9]+` within i64 (no `+`, no spaces).
fn decimal(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
#[path = "resp_tests.rs"]
mod tests;
