//! Any UTF-8 data, encoded by `sse::encode_event` and parsed back with the
//! WHATWG rules (`sse::Parser`), is the same string with CRLF and CR turned
//! into LF; `sse::encoded_len` is the encoded length; how the bytes are cut
//! into reads does not matter.
//!
//! Input: byte 0 (bit 0: with an event name), bytes 1..9 the id, byte 9 the
//! event name's length, byte 10 the read size, then the name, then the data
//! (both lossy UTF-8).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssecast::sse::{self, Event, Item, Parser};

fuzz_target!(|input: &[u8]| {
    if input.len() < 11 {
        return;
    }
    let flags = input[0];
    let id = u64::from_le_bytes(input[1..9].try_into().unwrap());
    let name_len = usize::from(input[9]).min(input.len() - 11);
    let read_size = usize::from(input[10]).max(1);
    let name = String::from_utf8_lossy(&input[11..11 + name_len]);
    let data = String::from_utf8_lossy(&input[11 + name_len..]);
    // The hub only ever encodes valid names.
    let event = (flags & 1 == 1 && sse::valid_name(&name)).then_some(&*name);

    let mut buf = Vec::new();
    sse::encode_event(&mut buf, id, event, &data);
    assert_eq!(buf.len(), sse::encoded_len(id, event, &data), "{data:?}");

    let want = Event {
        id: Some(id.to_string()),
        event: event.map(str::to_string),
        data: data.replace("\r\n", "\n").replace('\r', "\n"),
    };
    let mut out = Vec::new();
    Parser::new().feed(&buf, &mut out);
    assert_eq!(out, vec![Item::Event(want.clone())], "{data:?}");

    // Cut into reads of `read_size` bytes (a CR at the end of one read and
    // its LF at the start of the next are one line end).
    let mut p = Parser::new();
    let mut out = Vec::new();
    for chunk in buf.chunks(read_size) {
        p.feed(chunk, &mut out);
    }
    assert_eq!(out, vec![Item::Event(want.clone())], "reads of {read_size}");
    assert_eq!(p.last_event_id(), Some(&*id.to_string()));

    // Two events back to back stay two events.
    let mut two = buf.clone();
    sse::encode_event(&mut two, id.wrapping_add(1), None, "x");
    let mut out = Vec::new();
    Parser::new().feed(&two, &mut out);
    assert_eq!(out.len(), 2, "{data:?}");
    assert_eq!(out[0], Item::Event(want));
});
