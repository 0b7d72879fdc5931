//! The request reader: a connection's partial request (its bytes so far and
//! the body decoder), HTTP/1.1 framing (Content-Length, chunked, pipelining,
//! `Expect: 100-continue`), the output backlog rule, and the hand-off of each
//! complete request to a [`Handler`].
//!
//! A connection between requests holds no reader at all: bytes that arrive
//! in one read and contain whole requests are handled straight from the
//! read buffer; only the rest of a partial request is copied into a reader.

use crate::http::{self, Chunked, Framing, HttpError, Request};

/// Stop handling pipelined requests while this much output is unsent; they
/// are handled once it drains.
pub const MAX_OUT_BACKLOG: usize = 1 << 20;

/// What a connection keeps of a request that did not arrive in one read.
#[derive(Default)]
pub struct RequestReader {
    buf: Vec<u8>,
    chunked: Chunked,
    body: Vec<u8>,
    continue_sent: bool,
    /// Complete requests wait here because too much output is unsent.
    backlogged: bool,
}

impl RequestReader {
    /// The partial request is a HEAD (its answer, even an error, carries
    /// no content).
    pub fn is_head(&self) -> bool {
        self.buf.starts_with(b"HEAD ")
    }

    /// Complete requests are waiting for the output to drain.
    pub fn is_backlogged(&self) -> bool {
        self.backlogged
    }

    /// Forgets the request just handled, keeping the body's allocation.
    fn next_request(&mut self) {
        let body = std::mem::take(&mut self.body);
        *self = RequestReader {
            body,
            ..RequestReader::default()
        };
        self.body.clear();
    }
}

/// The limits a request is read under.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

/// Whether the connection takes another request now.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// No more requests on this connection (it became a stream, or closes).
    Shut,
    /// This much output is unsent: wait until it drains.
    Backlogged,
}

/// The connection's side of reading requests.
pub trait Handler {
    fn gate(&self) -> Gate;
    /// A complete request and its body.
    fn request(&mut self, req: &Request<'_>, body: &[u8]);
    /// The request cannot be read (its framing is unknown or broken):
    /// answer `e` (without content when `head` says it was a HEAD);
    /// nothing after it can be read.
    fn fail(&mut self, e: &HttpError, head: bool);
    /// The client waits for `100 Continue` before sending the body.
    fn send_continue(&mut self);
}

/// What [`feed`] left behind.
pub struct Fed {
    /// The rest of a partial request, or requests waiting on the backlog.
    pub reader: Option<Box<RequestReader>>,
    /// At least one request was handled (or refused).
    pub handled: bool,
}

/// Hands every complete request in `reader`'s bytes plus `bytes` to `h`, in
/// order; keeps what is left for the next read.
pub fn feed(
    reader: Option<Box<RequestReader>>,
    bytes: &[u8],
    limits: Limits,
    h: &mut impl Handler,
) -> Fed {
    let (mut st, buffered) = match reader {
        Some(mut r) => {
            r.buf.extend_from_slice(bytes);
            (r, true)
        }
        None => (Box::default(), false),
    };
    st.backlogged = false;
    let mut buf = std::mem::take(&mut st.buf);
    let input: &[u8] = if buffered { &buf } else { bytes };
    let consumed = serve(input, &mut st, limits, h);
    let leftover = &input[consumed.min(input.len())..];
    let rest = if leftover.is_empty() && !st.backlogged {
        None
    } else if buffered {
        buf.drain(..consumed.min(buf.len()));
        Some(buf)
    } else {
        Some(leftover.to_vec())
    };
    Fed {
        reader: rest.map(|b| {
            st.buf = b;
            st
        }),
        handled: consumed > 0,
    }
}

/// Handles the complete requests at the start of `buf`; returns the bytes
/// consumed. `st` carries the state of a request whose body is partial.
fn serve(buf: &[u8], st: &mut RequestReader, limits: Limits, h: &mut impl Handler) -> usize {
    let mut off = 0;
    loop {
        if off >= buf.len() {
            return off;
        }
        match h.gate() {
            Gate::Open => {}
            Gate::Shut => return off,
            Gate::Backlogged => {
                st.backlogged = true;
                return off;
            }
        }
        let rest = &buf[off..];
        let (req, head_len) = match http::parse_head(rest, limits.max_header_bytes) {
            Ok(Some(p)) => p,
            Ok(None) => return off,
            Err(e) => {
                h.fail(&e, rest.starts_with(b"HEAD "));
                return buf.len();
            }
        };
        let head = req.method == "HEAD";
        let body_input = &rest[head_len..];
        let (body, total): (&[u8], usize) = match req.framing() {
            Framing::Empty => (&[], head_len),
            Framing::Length(n) if n > limits.max_body_bytes => {
                h.fail(&HttpError::new(413, "request body too large"), head);
                return buf.len();
            }
            Framing::Length(n) => {
                if body_input.len() < n {
                    expect_continue(&req, st, h);
                    return off;
                }
                (&body_input[..n], head_len + n)
            }
            Framing::Chunked => {
                let decoded = st.chunked.decode(
                    body_input,
                    &mut st.body,
                    limits.max_body_bytes,
                    limits.max_header_bytes,
                );
                match decoded {
                    Ok(Some(used)) => (&st.body[..], head_len + used),
                    Ok(None) => {
                        expect_continue(&req, st, h);
                        return off;
                    }
                    Err(e) => {
                        h.fail(&e, head);
                        return buf.len();
                    }
                }
            }
        };
        h.request(&req, body);
        off += total;
        st.next_request();
    }
}

fn expect_continue(req: &Request<'_>, st: &mut RequestReader, h: &mut impl Handler) {
    if req.expect_continue && !st.continue_sent {
        st.continue_sent = true;
        h.send_continue();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the reader handed over.
    #[derive(Default)]
    struct Log {
        seen: Vec<String>,
        gate_after: Option<(usize, Gate)>,
    }

    impl Handler for Log {
        fn gate(&self) -> Gate {
            match &self.gate_after {
                Some((n, Gate::Backlogged)) if self.seen.len() >= *n => Gate::Backlogged,
                Some((n, Gate::Shut)) if self.seen.len() >= *n => Gate::Shut,
                _ => Gate::Open,
            }
        }
        fn request(&mut self, req: &Request<'_>, body: &[u8]) {
            self.seen.push(format!(
                "{} {} {}",
                req.method,
                req.path,
                String::from_utf8_lossy(body)
            ));
        }
        fn fail(&mut self, e: &HttpError, head: bool) {
            let head = if head { " head" } else { "" };
            self.seen.push(format!("fail {}{head}", e.status));
        }
        fn send_continue(&mut self) {
            self.seen.push("100".into());
        }
    }

    const LIMITS: Limits = Limits {
        max_header_bytes: 8192,
        max_body_bytes: 64,
    };

    fn post(body: &str) -> String {
        format!(
            "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn pipelined_requests_are_handed_over_in_order_without_a_reader() {
        let mut h = Log::default();
        let bytes = format!("GET /a HTTP/1.1\r\nHost: x\r\n\r\n{}", post("hi"));
        let fed = feed(None, bytes.as_bytes(), LIMITS, &mut h);
        assert!(fed.handled && fed.reader.is_none());
        assert_eq!(h.seen, ["GET /a ", "POST /p hi"]);
    }

    #[test]
    fn a_request_split_at_every_byte_is_handed_over_once() {
        let whole = format!("{}{}", post("hello"), post("x"));
        for cut in 1..whole.len() {
            let mut h = Log::default();
            let fed = feed(None, &whole.as_bytes()[..cut], LIMITS, &mut h);
            let fed = feed(fed.reader, &whole.as_bytes()[cut..], LIMITS, &mut h);
            assert!(fed.reader.is_none(), "cut {cut}");
            assert_eq!(h.seen, ["POST /p hello", "POST /p x"], "cut {cut}");
        }
    }

    #[test]
    fn chunked_bodies_and_expect_continue() {
        let mut h = Log::default();
        let head = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
        let fed = feed(None, head.as_bytes(), LIMITS, &mut h);
        assert!(fed.reader.is_some());
        assert_eq!(h.seen, ["100"]);
        let fed = feed(fed.reader, b"3\r\nabc\r\n", LIMITS, &mut h);
        assert_eq!(h.seen, ["100"], "100 Continue is sent once");
        let fed = feed(fed.reader, b"2\r\nde\r\n0\r\n\r\n", LIMITS, &mut h);
        assert!(fed.reader.is_none());
        assert_eq!(h.seen, ["100", "POST /c abcde"]);
    }

    #[test]
    fn oversized_and_malformed_requests_fail_and_consume_everything() {
        let mut h = Log::default();
        let big = "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n";
        let fed = feed(None, big.as_bytes(), LIMITS, &mut h);
        assert!(fed.reader.is_none());
        assert_eq!(h.seen, ["fail 413"]);
        let mut h = Log::default();
        let fed = feed(
            None,
            b"GARBAGE\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            LIMITS,
            &mut h,
        );
        assert!(fed.reader.is_none());
        assert_eq!(h.seen, ["fail 400"]);
        // A HEAD is answered without content even when it cannot be read.
        let mut h = Log::default();
        feed(
            None,
            b"HEAD /x HTTP/1.1\r\nHost: \x01\r\n\r\n",
            LIMITS,
            &mut h,
        );
        assert_eq!(h.seen, ["fail 400 head"]);
        let mut h = Log::default();
        let big = "HEAD /p HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n";
        feed(None, big.as_bytes(), LIMITS, &mut h);
        assert_eq!(h.seen, ["fail 413 head"]);
        let fed = feed(
            None,
            b"HEAD /slow HTTP/1.1\r\nHo",
            LIMITS,
            &mut Log::default(),
        );
        assert!(fed.reader.is_some_and(|r| r.is_head()));
    }

    #[test]
    fn a_backlog_holds_complete_requests_until_fed_again() {
        let mut h = Log {
            gate_after: Some((1, Gate::Backlogged)),
            ..Log::default()
        };
        let bytes = format!("{}{}", post("1"), post("2"));
        let fed = feed(None, bytes.as_bytes(), LIMITS, &mut h);
        assert_eq!(h.seen, ["POST /p 1"]);
        let reader = fed.reader.expect("the second request is kept");
        assert!(reader.is_backlogged());
        h.gate_after = None;
        let fed = feed(Some(reader), b"", LIMITS, &mut h);
        assert!(fed.reader.is_none());
        assert_eq!(h.seen, ["POST /p 1", "POST /p 2"]);
    }

    #[test]
    fn a_shut_gate_leaves_the_rest_unread() {
        let mut h = Log {
            gate_after: Some((1, Gate::Shut)),
            ..Log::default()
        };
        let bytes = format!("{}{}", post("1"), post("2"));
        let fed = feed(None, bytes.as_bytes(), LIMITS, &mut h);
        assert_eq!(h.seen, ["POST /p 1"]);
        assert!(fed.handled);
        assert!(fed.reader.is_some_and(|r| !r.is_backlogged()));
    }
}
