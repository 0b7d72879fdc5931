//! HTTP/1.1 response framing for a black-box client: status line and headers
//! (httparse), then a body that is close-delimited, Content-Length or chunked.

/// A parsed response head.
pub struct Head {
    pub status: u16,
    pub len: usize,
    pub framing: Framing,
    pub close: bool,
}

#[derive(Debug)]
pub enum Framing {
    /// Body ends when the connection closes (SSE servers that send `Connection: close`).
    Close,
    Length(u64),
    Chunked(Chunked),
}

/// Parses a response head from `buf`; `Ok(None)` when incomplete.
pub fn parse_head(buf: &[u8], no_body: bool) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut chunked = false;
    let mut length = None;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.split(',').any(|t| t.trim() == "chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse::<u64>().ok();
        } else if h.name.eq_ignore_ascii_case("connection") {
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let framing = if no_body || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunked::default())
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        close,
    }))
}

impl Framing {
    /// Feeds raw body bytes; decoded payload goes to `out`. Returns true when
    /// the body is complete (never for `Close`). Bytes past the end are ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<bool, String> {
        match self {
            Framing::Close => {
                out(input);
                Ok(false)
            }
            Framing::Length(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                if n > 0 {
                    out(&input[..n]);
                }
                *left -= n as u64;
                Ok(*left == 0)
            }
            Framing::Chunked(c) => c.feed(input, out),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    Done,
}

/// `Transfer-Encoding: chunked` decoder, byte-exact across any split.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
}

impl Chunked {
    pub fn feed(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<bool, String> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                Size => {
                    if let Some(d) = (b as char).to_digit(16) {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err("chunk size too long".into());
                        }
                        self.size = self.size * 16 + d as u64;
                    } else if self.digits == 0 {
                        return Err("bad chunk size".into());
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = Ext;
                    } else if b == b'\r' {
                        self.state = SizeLf;
                    } else if b == b'\n' {
                        self.end_size_line();
                    } else {
                        return Err("bad chunk size".into());
                    }
                    i += 1;
                }
                Ext => {
                    if b == b'\r' {
                        self.state = SizeLf;
                    } else if b == b'\n' {
                        self.end_size_line();
                    }
                    i += 1;
                }
                SizeLf => {
                    if b != b'\n' {
                        return Err("bad chunk size line".into());
                    }
                    self.end_size_line();
                    i += 1;
                }
                Data => {
                    let n = self.size.min((input.len() - i) as u64) as usize;
                    out(&input[i..i + n]);
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                }
                DataCr => {
                    self.state = match b {
                        b'\r' => DataLf,
                        b'\n' => Size,
                        _ => return Err("missing CRLF after chunk".into()),
                    };
                    i += 1;
                }
                DataLf => {
                    if b != b'\n' {
                        return Err("missing LF after chunk".into());
                    }
                    self.state = Size;
                    i += 1;
                }
                TrailerStart => {
                    self.state = match b {
                        b'\r' => TrailerLf,
                        b'\n' => Done,
                        _ => TrailerLine,
                    };
                    i += 1;
                }
                TrailerLine => {
                    if b == b'\n' {
                        self.state = TrailerStart;
                    }
                    i += 1;
                }
                TrailerLf => {
                    self.state = Done;
                    i += 1;
                }
                Done => return Ok(true),
            }
        }
        Ok(self.state == Done)
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
        self.digits = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_any_split() {
        let wire: &[u8] = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 0..wire.len() {
            let mut c = Chunked::default();
            let mut got = Vec::new();
            let a = c
                .feed(&wire[..cut], &mut |b| got.extend_from_slice(b))
                .unwrap();
            let b = c
                .feed(&wire[cut..], &mut |b| got.extend_from_slice(b))
                .unwrap();
            assert_eq!(got, b"hello world!", "cut {cut}");
            assert!(b || a);
        }
    }

    #[test]
    fn heads() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nabc",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 200);
        assert!(matches!(h.framing, Framing::Chunked(_)));
        assert_eq!(h.len, 47);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(matches!(h.framing, Framing::Close) && h.close);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n", false).unwrap().is_none());
        assert!(parse_head(b"garbage\r\n\r\n", false).is_err());
    }
}
