//! A client's view of one event stream: the response head, then SSE lines.
//! Checks that ids are contiguous (each id = previous + 1) and measures the
//! latency from the publisher's timestamp (`t=NS` in the data) to receipt.

use crate::common::{find, header, now_ns, status_of, Hist};

/// Where a chunked body's decoder is.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Chunk {
    /// Reading a size line (bytes so far in `cline`).
    #[default]
    Size,
    /// This many data bytes left in the chunk.
    Data(u64),
    /// Expecting the CRLF after a chunk's data (how many of the 2 seen).
    Crlf(u8),
    /// After the last (zero-size) chunk: trailer lines until a blank one.
    Trailer,
    Done,
    Broken,
}

#[derive(Default)]
pub struct Sse {
    /// Response head bytes until it is complete.
    head_buf: Vec<u8>,
    pub head: Option<Vec<u8>>,
    pub status: u16,
    line: Vec<u8>,
    id: Option<u64>,
    event: Vec<u8>,
    data_first: Vec<u8>,
    data_lines: u32,
    // what was seen
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    pub events: u64,
    /// Ids missing between consecutive events.
    pub gap_ids: u64,
    pub gap_incidents: u64,
    /// Events whose id was not above the previous one.
    pub dups: u64,
    pub heartbeats: u64,
    pub retry_seen: bool,
    /// Data of a `history-lost` event, if one came.
    pub history_lost: Option<String>,
    pub history_lost_id: Option<u64>,
    /// Event received before any other: its name (for the restart test).
    pub first_event_name: Option<String>,
    pub bytes: u64,
    /// Keep the first `keep` events (id, event, data) for printing.
    pub keep: usize,
    pub kept: Vec<(u64, String, String)>,
    pub lat: Option<Hist>,
    /// `Transfer-Encoding: chunked` body.
    pub chunked: bool,
    chunk: Chunk,
    cline: Vec<u8>,
    /// Chunk framing violations (the stream is not parsed after one).
    pub framing_errors: u64,
    /// The last chunk (size 0, then the blank line) arrived: a clean end.
    pub last_chunk: bool,
}

impl Sse {
    pub fn new(latency: bool) -> Sse {
        Sse {
            lat: if latency { Some(Hist::default()) } else { None },
            ..Default::default()
        }
    }

    /// Feeds received bytes. `now` is when the read returned.
    pub fn feed(&mut self, mut bytes: &[u8], now: u64) {
        self.bytes += bytes.len() as u64;
        if self.head.is_none() {
            self.head_buf.extend_from_slice(bytes);
            let Some(end) = find(&self.head_buf, b"\r\n\r\n") else {
                return;
            };
            let rest = self.head_buf.split_off(end + 4);
            let head = std::mem::take(&mut self.head_buf);
            self.status = status_of(&head).unwrap_or(0);
            self.chunked = header(&head, "transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            self.head = Some(head);
            if self.status != 200 {
                return;
            }
            self.feed_framed(&rest, now);
            return;
        }
        if self.status != 200 {
            return;
        }
        let b = std::mem::take(&mut bytes);
        self.feed_framed(b, now);
    }

    /// Removes the chunked framing, if any, and parses what it carries.
    fn feed_framed(&mut self, mut b: &[u8], now: u64) {
        if !self.chunked {
            self.feed_body(b, now);
            return;
        }
        while !b.is_empty() {
            match self.chunk {
                Chunk::Size | Chunk::Trailer => {
                    let (line_end, done) = match memchr::memchr(b'\n', b) {
                        Some(i) => (i + 1, true),
                        None => (b.len(), false),
                    };
                    self.cline.extend_from_slice(&b[..line_end]);
                    b = &b[line_end..];
                    if !done {
                        if self.cline.len() > 64 {
                            self.broken();
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut self.cline);
                    let Some(l) = line.strip_suffix(b"\r\n") else {
                        self.broken();
                        return;
                    };
                    if self.chunk == Chunk::Trailer {
                        if l.is_empty() {
                            self.chunk = Chunk::Done;
                            self.last_chunk = true;
                        }
                        continue;
                    }
                    let hex = l.split(|&c| c == b';').next().unwrap_or(b"");
                    let size = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
                    match size {
                        Some(0) => self.chunk = Chunk::Trailer,
                        Some(n) => self.chunk = Chunk::Data(n),
                        None => {
                            self.broken();
                            return;
                        }
                    }
                }
                Chunk::Data(n) => {
                    let take = (n as usize).min(b.len());
                    let (d, rest) = b.split_at(take);
                    b = rest;
                    self.chunk = if n as usize == take {
                        Chunk::Crlf(0)
                    } else {
                        Chunk::Data(n - take as u64)
                    };
                    self.feed_body(d, now);
                }
                Chunk::Crlf(k) => {
                    let want = if k == 0 { b'\r' } else { b'\n' };
                    if b[0] != want {
                        self.broken();
                        return;
                    }
                    b = &b[1..];
                    self.chunk = if k == 0 { Chunk::Crlf(1) } else { Chunk::Size };
                }
                Chunk::Done => {
                    // Nothing may follow the last chunk.
                    self.broken();
                    return;
                }
                Chunk::Broken => return,
            }
        }
    }

    fn broken(&mut self) {
        self.framing_errors += 1;
        self.chunk = Chunk::Broken;
    }

    fn feed_body(&mut self, mut b: &[u8], now: u64) {
        while !b.is_empty() {
            match memchr::memchr(b'\n', b) {
                Some(i) => {
                    if self.line.is_empty() {
                        self.on_line(&b[..i], now);
                    } else {
                        let mut l = std::mem::take(&mut self.line);
                        l.extend_from_slice(&b[..i]);
                        self.on_line(&l, now);
                        l.clear();
                        self.line = l;
                    }
                    b = &b[i + 1..];
                }
                None => {
                    self.line.extend_from_slice(b);
                    return;
                }
            }
        }
    }

    fn on_line(&mut self, mut l: &[u8], now: u64) {
        if l.last() == Some(&b'\r') {
            l = &l[..l.len() - 1];
        }
        if l.is_empty() {
            self.dispatch(now);
            return;
        }
        if l[0] == b':' {
            self.heartbeats += 1;
            return;
        }
        let (k, v) = match memchr::memchr(b':', l) {
            Some(i) => {
                let v = &l[i + 1..];
                (&l[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (l, &b""[..]),
        };
        match k {
            b"id" => self.id = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(v);
            }
            b"data" => {
                if self.data_lines == 0 {
                    self.data_first.clear();
                    self.data_first.extend_from_slice(v);
                }
                self.data_lines += 1;
            }
            b"retry" => self.retry_seen = true,
            _ => {}
        }
    }

    fn dispatch(&mut self, now: u64) {
        if self.data_lines == 0 {
            self.event.clear();
            return;
        }
        let id = self.id;
        let name = String::from_utf8_lossy(&self.event).into_owned();
        if self.first_event_name.is_none() {
            self.first_event_name = Some(name.clone());
        }
        if self.kept.len() < self.keep {
            self.kept.push((
                id.unwrap_or(0),
                name.clone(),
                String::from_utf8_lossy(&self.data_first).into_owned(),
            ));
        }
        if name == "history-lost" {
            self.history_lost = Some(String::from_utf8_lossy(&self.data_first).into_owned());
            self.history_lost_id = id;
            // The next live event follows this id.
            if let Some(i) = id {
                self.last_id = Some(i);
            }
        } else if let Some(i) = id {
            self.events += 1;
            if self.first_id.is_none() {
                self.first_id = Some(i);
            }
            if let Some(last) = self.last_id {
                if i == last + 1 {
                } else if i > last + 1 {
                    self.gap_ids += i - last - 1;
                    self.gap_incidents += 1;
                } else {
                    self.dups += 1;
                }
            }
            if self.last_id.is_none_or(|l| i > l) {
                self.last_id = Some(i);
            }
            if let Some(h) = self.lat.as_mut() {
                if let Some(t) = parse_t(&self.data_first) {
                    let now = if now == 0 { now_ns() } else { now };
                    h.add(now.saturating_sub(t) / 1000);
                }
            }
        }
        self.event.clear();
        self.data_lines = 0;
        self.id = None;
    }
}

/// `t=NANOS` in a publisher's data.
pub fn parse_t(d: &[u8]) -> Option<u64> {
    let i = find(d, b"t=")?;
    let rest = &d[i + 2..];
    let end = rest
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}
