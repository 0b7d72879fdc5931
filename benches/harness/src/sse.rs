//! Incremental `text/event-stream` parser following the WHATWG EventSource
//! rules: LF, CR and CRLF end lines (also when split across reads), `data:`
//! lines join with LF, `:` lines are comments, `id:` / `event:` / `retry:`
//! fields, one optional leading space after the colon, a leading BOM.

/// What the parser tells its sink.
pub enum Item<'a> {
    /// A dispatched event: its data (without the final LF).
    Event { data: &'a [u8] },
    /// A comment line (a heartbeat when the server sends `:` alone).
    Comment,
    /// A valid `retry:` field.
    Retry(u64),
}

#[derive(Default)]
pub struct Parser {
    /// Partial line carried over from the previous feed.
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous feed ended with CR: a leading LF now is part of it.
    skip_lf: bool,
    started: bool,
    pub last_id: Vec<u8>,
}

impl Parser {
    pub fn feed(&mut self, buf: &[u8], sink: &mut impl FnMut(Item<'_>)) {
        if self.started {
            return self.feed_lines(buf, sink);
        }
        // A UTF-8 BOM may open the stream, possibly split across reads.
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let mut head = std::mem::take(&mut self.line);
        head.extend_from_slice(buf);
        if head.len() < BOM.len() && BOM.starts_with(&head) {
            self.line = head;
            return;
        }
        self.started = true;
        let start = if head.starts_with(BOM) { BOM.len() } else { 0 };
        self.feed_lines(&head[start..], sink);
    }

    fn feed_lines(&mut self, mut buf: &[u8], sink: &mut impl FnMut(Item<'_>)) {
        if self.skip_lf && !buf.is_empty() {
            if buf[0] == b'\n' {
                buf = &buf[1..];
            }
            self.skip_lf = false;
        }
        let mut i = 0;
        while i < buf.len() {
            let Some(off) = memchr::memchr2(b'\n', b'\r', &buf[i..]) else {
                self.line.extend_from_slice(&buf[i..]);
                return;
            };
            let j = i + off;
            if self.line.is_empty() {
                self.process(&buf[i..j], sink);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&buf[i..j]);
                self.process(&line, sink);
                line.clear();
                self.line = line;
            }
            if buf[j] == b'\r' {
                if j + 1 < buf.len() {
                    i = if buf[j + 1] == b'\n' { j + 2 } else { j + 1 };
                } else {
                    self.skip_lf = true;
                    i = j + 1;
                }
            } else {
                i = j + 1;
            }
        }
    }

    fn process(&mut self, line: &[u8], sink: &mut impl FnMut(Item<'_>)) {
        if line.is_empty() {
            if self.has_data {
                if self.data.last() == Some(&b'\n') {
                    self.data.pop();
                }
                sink(Item::Event { data: &self.data });
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            sink(Item::Comment);
            return;
        }
        let (field, mut value) = match memchr::memchr(b':', line) {
            Some(c) => (&line[..c], &line[c + 1..]),
            None => (line, &b""[..]),
        };
        if value.first() == Some(&b' ') {
            value = &value[1..];
        }
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"event" => {}
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(n) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                    sink(Item::Retry(n));
                }
            }
            _ => {}
        }
    }
}

/// Finds `"key":<digits>` in an event's data.
pub fn json_u64(data: &[u8], key: &[u8]) -> Option<u64> {
    let pos = memchr::memmem::find(data, key)?;
    let mut rest = &data[pos + key.len()..];
    while let Some((&b, tail)) = rest.split_first() {
        if b == b' ' {
            rest = tail;
        } else {
            break;
        }
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<String>, usize, Vec<u64>) {
        let mut p = Parser::default();
        let mut events = Vec::new();
        let mut comments = 0;
        let mut retries = Vec::new();
        for c in chunks {
            p.feed(c, &mut |it| match it {
                Item::Event { data } => events.push(String::from_utf8_lossy(data).into()),
                Item::Comment => comments += 1,
                Item::Retry(n) => retries.push(n),
            });
        }
        (events, comments, retries)
    }

    #[test]
    fn line_endings_and_multiline() {
        let (e, c, r) =
            run(&[b"retry: 3000\n\ndata: a\r\ndata:b\rdata:  c\n\n:\n\nid: 7\nevent: x\ndata\n\n"]);
        assert_eq!(e, vec!["a\nb\n c".to_string(), String::new()]);
        assert_eq!(c, 1);
        assert_eq!(r, vec![3000]);
    }

    #[test]
    fn split_everywhere() {
        let whole: &[u8] =
            b"\xEF\xBB\xBFdata: {\"seq\":1,\"t\":2}\r\n\r\n: hb\r\n\r\ndata: x\r\rdata: y\n\n";
        for cut in 1..whole.len() {
            let (e, c, _) = run(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(e, vec!["{\"seq\":1,\"t\":2}", "x", "y"], "cut {cut}");
            assert_eq!(c, 1);
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(run(&bytes).0.len(), 3);
    }

    #[test]
    fn no_dispatch_without_data_and_json_fields() {
        let (e, _, _) = run(&[b"id: 1\nevent: x\n\n"]);
        assert!(e.is_empty());
        assert_eq!(json_u64(b"{\"seq\": 42,\"t\":7}", b"\"seq\":"), Some(42));
        assert_eq!(json_u64(b"{\"t\":7}", b"\"seq\":"), None);
    }
}
