//! The chunked transfer coding of request bodies (RFC 9112 7.1), decoded
//! incrementally and strictly: sizes, extensions, trailers, line ends.

use super::{bad, HttpError};

/// Decodes a chunked body incrementally: each call continues where the last
/// stopped, so a body arriving a byte at a time costs O(n) in all.
#[derive(Debug, Default)]
pub struct Chunked {
    /// Bytes of input consumed so far.
    pos: usize,
    state: ChunkState,
    size: u64,
    digits: u8,
    trailer_bytes: usize,
    /// The current trailer line has had its colon.
    trailer_colon: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace after the size digits: only `;` or CR may follow.
    SizeBws,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    /// Feeds the whole body-so-far (`input` starts where the body starts);
    /// appends decoded bytes to `body`. Returns the total input length of
    /// the chunked body once complete.
    pub fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        max_body: usize,
        max_trailer: usize,
    ) -> Result<Option<usize>, HttpError> {
        use ChunkState::*;
        while self.pos < input.len() {
            match self.state {
                Data => {
                    let take = (self.size as usize).min(input.len() - self.pos);
                    body.extend_from_slice(&input[self.pos..self.pos + take]);
                    self.size -= take as u64;
                    self.pos += take;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                Done => return Ok(Some(self.pos)),
                _ => {}
            }
            let b = input[self.pos];
            self.pos += 1;
            let done = match self.state {
                Size | SizeBws | Ext | SizeLf => {
                    self.size_byte(b, body.len(), max_body, max_trailer)?
                }
                DataCr | DataLf => self.data_end_byte(b)?,
                _ => self.trailer_byte(b, max_trailer)?,
            };
            if done {
                return Ok(Some(self.pos));
            }
        }
        Ok(None)
    }

    /// A byte of a chunk-size line: hex digits, whitespace, an extension,
    /// CRLF. Never completes the body.
    fn size_byte(
        &mut self,
        b: u8,
        body_len: usize,
        max_body: usize,
        max_trailer: usize,
    ) -> Result<bool, HttpError> {
        use ChunkState::*;
        match self.state {
            Size => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    self.digits += 1;
                    if self.digits > 15 {
                        return Err(bad("chunk size too long"));
                    }
                    self.size = self.size * 16 + u64::from(hex_val(b));
                }
                b';' if self.digits > 0 => self.state = Ext,
                b' ' | b'\t' if self.digits > 0 => self.state = SizeBws,
                b'\r' if self.digits > 0 => self.state = SizeLf,
                _ => return Err(bad("invalid chunk size")),
            },
            SizeBws => match b {
                b' ' | b'\t' => {}
                b';' => self.state = Ext,
                b'\r' => self.state = SizeLf,
                _ => return Err(bad("invalid chunk size")),
            },
            Ext => match b {
                b'\r' => self.state = SizeLf,
                b'\n' => return Err(bad("chunk line must end with CRLF")),
                b if b != b'\t' && (b < 0x20 || b == 0x7f) => {
                    return Err(bad("control character in a chunk extension"))
                }
                _ => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > max_trailer {
                        return Err(HttpError::new(431, "chunk extensions too large"));
                    }
                }
            },
            _ => {
                if b != b'\n' {
                    return Err(bad("chunk line must end with CRLF"));
                }
                if self.size == 0 {
                    self.state = TrailerStart;
                } else {
                    if body_len as u64 + self.size > max_body as u64 {
                        return Err(HttpError::new(413, "request body too large"));
                    }
                    self.state = Data;
                }
            }
        }
        Ok(false)
    }

    /// The CRLF after a chunk's data.
    fn data_end_byte(&mut self, b: u8) -> Result<bool, HttpError> {
        let want = if self.state == ChunkState::DataCr {
            b'\r'
        } else {
            b'\n'
        };
        if b != want {
            return Err(bad("chunk data must be followed by CRLF"));
        }
        if self.state == ChunkState::DataCr {
            self.state = ChunkState::DataLf;
        } else {
            self.state = ChunkState::Size;
            self.digits = 0;
        }
        Ok(false)
    }

    /// A byte of the trailer section or of the final CRLF; true when the
    /// body is complete.
    fn trailer_byte(&mut self, b: u8, max_trailer: usize) -> Result<bool, HttpError> {
        use ChunkState::*;
        match self.state {
            TrailerStart => match b {
                b'\r' => self.state = EndLf,
                b'\n' => return Err(bad("chunked body must end with CRLF")),
                b':' => return Err(bad("trailer field without a name")),
                _ => {
                    self.trailer_colon = false;
                    self.state = TrailerLine;
                }
            },
            TrailerLine => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > max_trailer {
                    return Err(HttpError::new(431, "trailers too large"));
                }
                match b {
                    b'\r' if !self.trailer_colon => {
                        return Err(bad("trailer line is not a field line"))
                    }
                    b'\r' => self.state = TrailerLf,
                    b'\n' => return Err(bad("trailer line must end with CRLF")),
                    b':' => self.trailer_colon = true,
                    b if b != b'\t' && (b < 0x20 || b == 0x7f) => {
                        return Err(bad("control character in a trailer"))
                    }
                    _ => {}
                }
            }
            TrailerLf => {
                if b != b'\n' {
                    return Err(bad("trailer line must end with CRLF"));
                }
                self.state = TrailerStart;
            }
            _ => {
                if b != b'\n' {
                    return Err(bad("chunked body must end with CRLF"));
                }
                self.state = Done;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

pub(super) fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}
