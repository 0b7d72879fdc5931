//! The SSE wire format: encoding frames once per event, and a parser that
//! follows the WHATWG EventSource rules (used by tests, fuzzing and clients).

use std::io::Write;

/// The heartbeat: a comment line and the blank line that ends it.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// The heartbeat as one chunk of a chunked response body.
pub const HEARTBEAT_CHUNK: &[u8] = b"3\r\n:\n\n\r\n";

/// The last chunk of a chunked body: a clean end of the stream.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Longest event name or channel name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Appends one encoded event to `out`: `id:`, optional `event:`, one `data:`
/// line per line of `data` (LF, CR and CRLF all end a line), blank line.
pub fn encode_event(out: &mut Vec<u8>, id: u64, event: Option<&str>, data: &str) {
    // Writing into a Vec cannot fail.
    let _ = writeln!(out, "id: {id}");
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in lines(data) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Exact size `encode_event` will produce, so a channel can refuse an event
/// larger than its history before encoding it.
pub fn encoded_len(id: u64, event: Option<&str>, data: &str) -> usize {
    let id_len = 4 + decimal_len(id) + 1;
    let ev = event.map_or(0, |e| 7 + e.len() + 1);
    let data_len: usize = lines(data).map(|l| 6 + l.len() + 1).sum();
    id_len + ev + data_len + 1
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Splits on CRLF, CR or LF. `"a\n"` gives `["a", ""]`; `""` gives `[""]`.
pub fn lines(data: &str) -> Lines<'_> {
    Lines {
        rest: Some(data),
        cr: None,
        lf: None,
    }
}

/// The iterator of [`lines`]. The next CR and LF are found with `str::find`
/// on one char (memchr) and remembered until passed, so a long line costs
/// two scans at memchr speed, and many lines cost O(n) in all.
pub struct Lines<'a> {
    rest: Option<&'a str>,
    /// Offset in `rest` of the next CR / LF (`usize::MAX`: none), if known.
    cr: Option<usize>,
    lf: Option<usize>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let cr = *self
            .cr
            .get_or_insert_with(|| s.find('\r').unwrap_or(usize::MAX));
        let lf = *self
            .lf
            .get_or_insert_with(|| s.find('\n').unwrap_or(usize::MAX));
        let i = cr.min(lf);
        if i == usize::MAX {
            self.rest = None;
            return Some(s);
        }
        let skip = if cr == i && lf == i + 1 { 2 } else { 1 };
        let next = i + skip;
        self.rest = Some(&s[next..]);
        // Positions already found move with the rest; passed ones are
        // found again next time.
        let moved = |p: usize| match p {
            usize::MAX => Some(usize::MAX),
            p if p >= next => Some(p - next),
            _ => None,
        };
        self.cr = moved(cr);
        self.lf = moved(lf);
        Some(&s[..i])
    }
}

/// A name is usable as an event name or channel: 1..=128 bytes, no control
/// characters (CR, LF and NUL would inject fields; the rest have no business
/// in a name).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_BYTES && !s.chars().any(char::is_control)
}

/// Appends the `retry:` field on its own (a blank line dispatches nothing).
pub fn encode_retry(out: &mut Vec<u8>, ms: u64) {
    let _ = write!(out, "retry: {ms}\n\n");
}

/// One event as a client sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// What the parser yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    Comment(String),
    Retry(u64),
}

/// Incremental parser per the WHATWG "event stream interpretation".
#[derive(Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a following LF belongs to it.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    id_seen: bool,
    /// Bytes seen so far (to strip one leading byte-order mark).
    started: bool,
    bom: u8,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// The last event id per the spec (it persists across events).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Feeds bytes; pushes every complete item to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Item>) {
        const BOM: [u8; 3] = [0xef, 0xbb, 0xbf];
        for &b in bytes {
            // The stream may start with a UTF-8 BOM, which is skipped.
            if !self.started {
                if b == BOM[self.bom as usize] {
                    self.bom += 1;
                    if self.bom == 3 {
                        self.started = true;
                    }
                    continue;
                }
                self.started = true;
                let partial = BOM[..self.bom as usize].to_vec();
                for p in partial {
                    self.line.push(p);
                }
            }
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(out);
                }
                b'\n' => self.end_line(out),
                _ => self.line.push(b),
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<Item>) {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.push(Item::Comment(comment.to_string()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => {
                self.last_id = Some(value.to_string());
                self.id_seen = true;
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    out.push(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Item>) {
        let event = self.event.take();
        self.id_seen = false;
        if !self.has_data {
            return;
        }
        self.has_data = false;
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        out.push(Item::Event(Event {
            id: self.last_id.clone(),
            event,
            data,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition `lines` must agree with.
    fn lines_reference(data: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = data;
        loop {
            match rest.find(['\r', '\n']) {
                Some(i) => {
                    out.push(&rest[..i]);
                    let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                    rest = &rest[i + skip..];
                }
                None => {
                    out.push(rest);
                    return out;
                }
            }
        }
    }

    #[test]
    fn lines_split_like_the_reference() {
        let parts = ["a", "\r", "\n", "\r\n", "", "é", "\n\r", "xyz"];
        let mut x = 12345u64;
        for _ in 0..2000 {
            let mut s = String::new();
            for _ in 0..(x % 9) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push_str(parts[(x % parts.len() as u64) as usize]);
            }
            x = x.wrapping_add(1);
            assert_eq!(lines(&s).collect::<Vec<_>>(), lines_reference(&s), "{s:?}");
        }
    }

    fn parse(bytes: &[u8]) -> Vec<Item> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(bytes, &mut out);
        out
    }

    fn round_trip(data: &str) -> String {
        let mut buf = Vec::new();
        encode_event(&mut buf, 7, Some("x"), data);
        assert_eq!(buf.len(), encoded_len(7, Some("x"), data));
        match parse(&buf).as_slice() {
            [Item::Event(e)] => {
                assert_eq!(e.id.as_deref(), Some("7"));
                assert_eq!(e.event.as_deref(), Some("x"));
                e.data.clone()
            }
            other => panic!("expected one event, got {other:?}"),
        }
    }

    #[test]
    fn multi_line_data_survives_every_line_ending() {
        for d in [
            "a", "a\nb", "a\r\nb", "a\rb", "a\n", "\n", "\r\n\r\n", " lead", "x\r", "é✓",
        ] {
            let want = d.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(round_trip(d), want, "{d:?}");
        }
    }

    #[test]
    fn encoding_is_exact() {
        let mut buf = Vec::new();
        encode_event(&mut buf, 12, None, "one\r\ntwo");
        assert_eq!(buf, b"id: 12\ndata: one\ndata: two\n\n");
    }

    #[test]
    fn parser_handles_split_crlf_comments_and_retry() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(b": hi\r", &mut out);
        p.feed(b"\nretry: 250\r\ndata:x\r", &mut out);
        p.feed(b"\n\r\n", &mut out);
        assert_eq!(
            out,
            vec![
                Item::Comment(" hi".into()),
                Item::Retry(250),
                Item::Event(Event {
                    id: None,
                    event: None,
                    data: "x".into()
                })
            ]
        );
    }

    #[test]
    fn names_refuse_injection() {
        assert!(valid_name("news"));
        for bad in ["", "a\nb", "a\rb", "a\0b", "a\tb", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_leading_bom_is_skipped() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(b"\xef\xbb", &mut out);
        p.feed(b"\xbfdata: x\n\n", &mut out);
        assert_eq!(
            out,
            vec![Item::Event(Event {
                id: None,
                event: None,
                data: "x".into()
            })]
        );
    }

    #[test]
    fn blank_events_do_not_dispatch() {
        assert!(parse(b"id: 3\n\n").is_empty());
    }
}
