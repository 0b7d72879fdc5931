//! A client's view of one event stream: the response head, then SSE lines.
//! Ids are only required to increase strictly (the hub assigns them from the
//! clock: max(previous + 1, now in µs), so they are not contiguous). Loss is
//! found from the data's own sequence numbers: `faultkit pub` writes
//! `s=SEQ t=NS ...`, one counter per publisher, so consecutive events on a
//! stream must carry SEQ, SEQ + 1. It also measures the latency from the
//! publisher's timestamp (`t=NS`) to receipt.

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
    /// Sequence numbers (`s=` in the data) of the first and last event.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub events: u64,
    /// Sequence numbers missing between consecutive events (the field keeps
    /// its old name: it counts missing events).
    pub gap_ids: u64,
    pub gap_incidents: u64,
    /// Events whose id was not above the previous one, or whose sequence
    /// number was not above the previous one (duplicate or reordered).
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
            // The next live event follows this id; what was lost before it
            // is not a gap of this stream.
            if let Some(i) = id {
                self.last_id = Some(i);
            }
            self.last_seq = None;
        } else if let Some(i) = id {
            self.events += 1;
            if self.first_id.is_none() {
                self.first_id = Some(i);
            }
            let seq = parse_seq(&self.data_first);
            if self.first_seq.is_none() {
                self.first_seq = seq;
            }
            let id_ok = self.last_id.is_none_or(|l| i > l);
            let mut seq_ok = true;
            if let (Some(s), Some(last)) = (seq, self.last_seq) {
                if s > last + 1 {
                    self.gap_ids += s - last - 1;
                    self.gap_incidents += 1;
                } else if s <= last {
                    seq_ok = false;
                }
            }
            if !id_ok || !seq_ok {
                self.dups += 1;
            }
            if id_ok {
                self.last_id = Some(i);
            }
            if seq.is_some() && seq_ok {
                self.last_seq = seq;
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

/// `s=SEQ` at the start of a publisher's data.
pub fn parse_seq(d: &[u8]) -> Option<u64> {
    let rest = d.strip_prefix(b"s=")?;
    let end = rest
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(events: &[(u64, &str)]) -> Sse {
        let mut s = Sse::new(false);
        let mut b = String::from("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
        for (id, data) in events {
            b.push_str(&format!("id: {id}\ndata: {data}\n\n"));
        }
        s.feed(b.as_bytes(), 1);
        s
    }

    #[test]
    fn time_based_ids_are_not_gaps() {
        let s = stream(&[(1000, "s=0 t=1"), (1017, "s=1 t=2"), (5000, "s=2 t=3")]);
        assert_eq!((s.events, s.gap_ids, s.dups), (3, 0, 0));
        assert_eq!((s.first_seq, s.last_seq), (Some(0), Some(2)));
    }

    #[test]
    fn missing_sequence_is_a_gap() {
        let s = stream(&[(10, "s=4 t=1"), (11, "s=7 t=2")]);
        assert_eq!((s.gap_ids, s.gap_incidents, s.dups), (2, 1, 0));
    }

    #[test]
    fn id_not_increasing_or_repeated_sequence_is_a_dup() {
        let s = stream(&[(10, "s=1 t=1"), (10, "s=2 t=2")]);
        assert_eq!(s.dups, 1);
        let s = stream(&[(10, "s=1 t=1"), (12, "s=1 t=2")]);
        assert_eq!((s.dups, s.gap_ids), (1, 0));
    }

    #[test]
    fn data_without_sequence_checks_ids_only() {
        let s = stream(&[(10, "hello"), (20, "world"), (15, "late")]);
        assert_eq!((s.events, s.gap_ids, s.dups), (3, 0, 1));
    }
}
