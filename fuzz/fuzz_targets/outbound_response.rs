//! The forward-auth client's response reader (`outbound::http`) on
//! arbitrary bytes from the application.
//!
//! Input: one byte choosing where to split, then the bytes as they would
//! arrive on the connection. Never panics, and the verdict does not depend
//! on how the bytes were split: fed all at once, fed in two parts, fed a
//! byte at a time, the reader comes to the same result (the same response,
//! or a failure; once done or failed, the rest is not fed). The end of the
//! input is then the peer closing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssecast::outbound::http::{Parsed, Response, ResponseReader};

/// Feeds `parts` in order; what the first final verdict was (then `eof`).
fn verdict(parts: &[&[u8]]) -> String {
    let mut r = ResponseReader::default();
    for p in parts {
        match r.feed(p) {
            Parsed::Partial => {}
            Parsed::Done(resp) => return done(&resp),
            Parsed::Failed(_) => return "failed".into(),
        }
    }
    match r.eof() {
        Parsed::Done(resp) => format!("at close {}", done(&resp)),
        Parsed::Failed(_) | Parsed::Partial => "failed".into(),
    }
}

/// What the hub uses of a response. (Whether the connection is reused
/// may differ: bytes beyond a response that arrive with it end it.)
fn done(resp: &Response) -> String {
    let h = |n| resp.header(n).map(str::to_owned);
    format!(
        "done {} {:?} {:?}",
        resp.status,
        h("x-ssecast-expires"),
        h("www-authenticate")
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(input.len());
    let whole = verdict(&[input]);
    let (a, b) = input.split_at(at);
    assert_eq!(verdict(&[a, b]), whole, "split at {at}");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(verdict(&bytes), whole, "a byte at a time");
});
