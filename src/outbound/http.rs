//! An HTTP/1.1 client connection the hub opens (to the application's
//! forward-auth endpoint): the URL it talks to, the request it writes, an
//! incremental response reader (httparse for the head; Content-Length,
//! chunked via `http::Chunked`, or until close for the body) and one
//! non-blocking connection ([`Link`]) that writes a request, reads its
//! answer and can be reused for the next (keep-alive; no pipelining).
//!
//! The reader is pure and [`Link`] is generic over its socket, so the
//! whole state machine is tested here without sockets.

use std::io::{self, Read, Write};

use crate::conn::{self, Io};
use crate::http::Chunked;

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest response body accepted (the answer's body is not used).
pub const MAX_BODY: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// `http://host[:port][/path]`: the only form accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, &'static str> {
        const WANT: &str = "must be http://host:port/path";
        let scheme = "http://";
        if s.len() < scheme.len() || !s[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Err(WANT);
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) || s.contains('#') {
            return Err("must be printable ASCII without spaces or a fragment");
        }
        let rest = &s[scheme.len()..];
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
            Some(i) => (&rest[..i], ""),
            None => (rest, "/"),
        };
        if path.is_empty() || authority.contains('@') {
            return Err(WANT);
        }
        let (host, port) = split_port(authority).ok_or(WANT)?;
        Ok(Url {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// What `ToSocketAddrs` resolves: brackets off an IPv6 literal.
    pub fn socket_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

fn split_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(end) = authority.find(']') {
        let (h, p) = authority.split_at(end + 1);
        if !h.starts_with('[') {
            return None;
        }
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0)?,
    };
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b);
    if host.is_empty() || !host.bytes().all(ok) {
        return None;
    }
    Some((host, port))
}

/// Appends `GET url` with `headers` (values already checked to hold no CR
/// or LF: they come from parsed request heads).
pub fn write_get(out: &mut Vec<u8>, url: &Url, headers: &[(&str, &str)]) {
    let _ = write!(
        out,
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ssecast\r\nAccept: */*\r\n",
        url.path,
        url.authority()
    );
    for (name, value) in headers {
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            continue;
        }
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response head, with its header fields kept (small, once per call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The connection may carry the next request.
    pub keep_alive: bool,
    headers: Vec<(String, String)>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What feeding the reader came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Partial,
    Done(Response),
    Failed(&'static str),
}

#[derive(Debug)]
enum Body {
    Length(usize),
    Chunked(Chunked),
    UntilClose,
}

/// Reads one response at a time from the bytes of a connection.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
    /// The head once parsed, how its body is framed, where the body starts.
    head: Option<(Response, Body, usize)>,
    decoded: Vec<u8>,
}

impl ResponseReader {
    /// Whether any byte of the current response has arrived.
    pub fn started(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Appends `bytes` and reports whether a response is complete. After
    /// `Done` the reader is ready for the next response; bytes beyond the
    /// response (nothing was asked for them) make it not `keep_alive`.
    pub fn feed(&mut self, bytes: &[u8]) -> Parsed {
        self.buf.extend_from_slice(bytes);
        loop {
            if self.head.is_none() {
                match parse_head(&self.buf) {
                    Ok(None) if self.buf.len() > MAX_HEAD => {
                        return Parsed::Failed("head too large")
                    }
                    Ok(None) => return Parsed::Partial,
                    Ok(Some((len, status, _))) if (100..200).contains(&status) => {
                        if status == 101 {
                            return Parsed::Failed("unexpected 101");
                        }
                        self.buf.drain(..len);
                        continue;
                    }
                    Ok(Some((len, _, head))) => {
                        let (resp, body) = match head {
                            Ok(h) => h,
                            Err(why) => return Parsed::Failed(why),
                        };
                        self.head = Some((resp, body, len));
                    }
                    Err(why) => return Parsed::Failed(why),
                }
            }
            return self.body();
        }
    }

    /// The peer closed: a body delimited by the close is complete.
    pub fn eof(&mut self) -> Parsed {
        match self.head.take() {
            Some((resp, Body::UntilClose, _)) => {
                self.reset();
                Parsed::Done(resp)
            }
            _ => Parsed::Failed("connection closed before the response ended"),
        }
    }

    fn body(&mut self) -> Parsed {
        let Some((_, body, start)) = &mut self.head else {
            return Parsed::Partial;
        };
        let input = &self.buf[*start..];
        let end = match body {
            Body::Length(n) if input.len() >= *n => *n,
            Body::Length(_) => return Parsed::Partial,
            Body::UntilClose if input.len() > MAX_BODY => return Parsed::Failed("body too large"),
            Body::UntilClose => return Parsed::Partial,
            Body::Chunked(c) => match c.decode(input, &mut self.decoded, MAX_BODY, MAX_HEAD) {
                Ok(Some(n)) => n,
                Ok(None) => return Parsed::Partial,
                Err(_) => return Parsed::Failed("bad chunked body"),
            },
        };
        // Bytes beyond the response (nothing was asked for them): the
        // answer stands, the connection is not reused.
        let extra = input.len() > end;
        let done = self.head.take().map(|(mut r, _, _)| {
            r.keep_alive &= !extra;
            r
        });
        self.reset();
        done.map_or(Parsed::Partial, Parsed::Done)
    }

    fn reset(&mut self) {
        self.buf = Vec::new();
        self.decoded = Vec::new();
        self.head = None;
    }
}

type Head = Result<(Response, Body), &'static str>;

/// The head's length, status and meaning, once complete.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, u16, Head)>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut raw = httparse::Response::new(&mut headers);
    let len = match raw.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err("head too large"),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed response head"),
    };
    let (Some(status), Some(minor)) = (raw.code, raw.version) else {
        return Err("malformed status line");
    };
    let mut keep_alive = minor == 1;
    let mut length = None;
    let mut chunked = false;
    let mut kept = Vec::new();
    for h in raw.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            continue;
        };
        let value = value.trim();
        let is = |n: &str| h.name.eq_ignore_ascii_case(n);
        if is("content-length") {
            let n = value.parse::<usize>().map_err(|_| "bad Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length");
            }
            length = Some(n);
        } else if is("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err("unsupported Transfer-Encoding");
            }
        } else if is("connection") {
            for t in value.split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case("keep-alive") && minor == 0 {
                    keep_alive = true;
                }
            }
        }
        kept.push((h.name.to_string(), value.to_string()));
    }
    let body = match (length, chunked) {
        (Some(_), true) => return Err("both Content-Length and chunked"),
        _ if status == 204 || status == 304 || (100..200).contains(&status) => Body::Length(0),
        (_, true) => Body::Chunked(Chunked::default()),
        (Some(n), false) if n > MAX_BODY => return Err("body too large"),
        (Some(n), false) => Body::Length(n),
        (None, false) => {
            keep_alive = false;
            Body::UntilClose
        }
    };
    let resp = Response {
        status,
        keep_alive,
        headers: kept,
    };
    Ok(Some((len, status, Ok((resp, body)))))
}

/// A socket as the link sees it.
pub trait Wire: Read + Write {
    /// Whether a non-blocking connect has completed (`Ok(false)`: not yet).
    fn connected(&mut self) -> io::Result<bool>;
}

impl Wire for mio::net::TcpStream {
    fn connected(&mut self) -> io::Result<bool> {
        if let Some(e) = self.take_error()? {
            return Err(e);
        }
        match self.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// What driving a link came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing more until the socket is ready again.
    Pending,
    /// The answer to the request in flight; the link is idle again when
    /// the answer allows keep-alive.
    Answer(Response),
    /// The link is unusable. `fresh`: no byte of an answer had come, and
    /// the link had served earlier requests (the peer closed an idle
    /// keep-alive connection), so the request may be tried again.
    Failed { why: &'static str, fresh: bool },
}

/// One connection to the application.
pub struct Link<S> {
    pub sock: S,
    pub readable: bool,
    pub writable: bool,
    connected: bool,
    out: Vec<u8>,
    written: usize,
    busy: bool,
    /// Answers received on this connection.
    pub served: u32,
    reader: ResponseReader,
}

impl<S: Wire> Link<S> {
    pub fn new(sock: S) -> Link<S> {
        Link {
            sock,
            readable: false,
            writable: false,
            connected: false,
            out: Vec::new(),
            written: 0,
            busy: false,
            served: 0,
            reader: ResponseReader::default(),
        }
    }

    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// Starts a request (the link must be idle).
    pub fn send(&mut self, request: Vec<u8>) {
        self.out = request;
        self.written = 0;
        self.busy = true;
    }

    /// Writes and reads what the socket allows; `scratch` is read into.
    pub fn drive(&mut self, scratch: &mut [u8]) -> Progress {
        let failed = |why| Progress::Failed { why, fresh: false };
        if !self.connected {
            if !self.writable && !self.readable {
                return Progress::Pending;
            }
            match self.sock.connected() {
                Ok(true) => self.connected = true,
                Ok(false) => return Progress::Pending,
                Err(_) => return failed("connect failed"),
            }
        }
        while self.busy && self.written < self.out.len() && self.writable {
            match conn::write_vectored(
                &mut self.sock,
                &[io::IoSlice::new(&self.out[self.written..])],
            ) {
                Io::Done(n) => self.written += n,
                Io::WouldBlock => self.writable = false,
                Io::Closed | Io::Error(_) => return self.lost("write failed"),
            }
        }
        while self.readable {
            let parsed = match conn::read(&mut self.sock, scratch) {
                Io::Done(n) if !self.busy => {
                    let _ = n;
                    return failed("bytes on an idle connection");
                }
                Io::Done(n) => self.reader.feed(&scratch[..n]),
                Io::WouldBlock => {
                    self.readable = false;
                    Parsed::Partial
                }
                Io::Closed if !self.busy => return failed("closed while idle"),
                Io::Closed => match self.reader.eof() {
                    Parsed::Failed(why) => return self.lost(why),
                    done => done,
                },
                Io::Error(_) => return self.lost("read failed"),
            };
            match parsed {
                Parsed::Partial => {}
                Parsed::Failed(why) => return failed(why),
                Parsed::Done(resp) => {
                    self.busy = false;
                    self.served += 1;
                    self.out = Vec::new();
                    return Progress::Answer(resp);
                }
            }
        }
        Progress::Pending
    }

    /// The connection broke during a request.
    fn lost(&self, why: &'static str) -> Progress {
        Progress::Failed {
            why,
            fresh: self.served > 0 && !self.reader.started(),
        }
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
