//! Request heads and chunked bodies from arbitrary bytes.
//!
//! Input: one byte choosing the header cap, then the bytes as they would
//! arrive on a connection. Never panics, and:
//! - a complete head is within the cap, its path is origin-form (or `*`), and
//!   every shorter prefix of it is "not complete yet" (a request that
//!   arrives in pieces is not refused for being cut);
//! - errors have one of the statuses the hub documents;
//! - the chunked decoder gives the same result fed all at once and fed one
//!   byte more per call (the server feeds it whatever has arrived);
//! - `Route::of` and `query_param` take whatever the head holds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssecast::http::{self, Chunked, Framing, HttpError};
use ssecast::routes::Route;

const MAX_BODY: usize = 512;
const MAX_TRAILER: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&cap_byte, input)) = data.split_first() else {
        return;
    };
    let cap = 32 + usize::from(cap_byte) * 32;
    match http::parse_head(input, cap) {
        Ok(Some((req, len))) => {
            assert!(len <= input.len() && len <= cap, "len {len} cap {cap}");
            assert!(
                req.path.starts_with('/') || req.path == "*",
                "path {:?}",
                req.path
            );
            assert!(!req.path.contains('?'), "path {:?}", req.path);
            let _ = Route::of(req.path);
            for name in ["channel", "event", "lastEventId", ""] {
                let _ = http::query_param(req.query, name);
            }
            let _ = http::percent_decode(req.query);
            if let Some(id) = req.last_event_id {
                assert_eq!(id, id.trim(), "header values are trimmed");
            }
            // The head does not depend on what follows it.
            let again = http::parse_head(&input[..len], cap)
                .expect("head alone")
                .expect("head alone complete");
            assert_eq!(again.1, len);
            assert_eq!(
                (again.0.method, again.0.path, again.0.query),
                (req.method, req.path, req.query)
            );
            assert_eq!(again.0.framing(), req.framing());
            // Every proper prefix is incomplete, never an error.
            let step = (len / 64).max(1);
            let mut n = 0;
            while n < len {
                match http::parse_head(&input[..n], cap) {
                    Ok(None) => {}
                    other => panic!(
                        "prefix {n} of a {len}-byte head: {:?}",
                        other.map(|o| o.map(|(_, l)| l))
                    ),
                }
                n += if n < 64 { 1 } else { step };
            }
            if req.framing() == Framing::Chunked {
                chunked(&input[len..]);
            }
        }
        Ok(None) => assert!(input.len() <= cap),
        Err(e) => assert_status(&e, &[400, 417, 431, 501, 505]),
    }
    // Query decoding on raw text too.
    if let Ok(s) = std::str::from_utf8(input) {
        let _ = http::query_param(s, "channel");
        if let Ok(d) = http::percent_decode(s) {
            if !s.contains(['%', '+']) {
                assert_eq!(d, s);
            }
        }
    }
});

fn assert_status(e: &HttpError, allowed: &[u16]) {
    assert!(allowed.contains(&e.status), "{e:?}");
    assert!(!e.message.is_empty());
}

type Outcome = Result<Option<usize>, HttpError>;

fn chunked(wire: &[u8]) {
    let mut whole = Vec::new();
    let r1: Outcome = Chunked::default().decode(wire, &mut whole, MAX_BODY, MAX_TRAILER);
    let mut inc = Chunked::default();
    let mut body = Vec::new();
    let mut r2: Outcome = Ok(None);
    for n in 0..=wire.len() {
        r2 = inc.decode(&wire[..n], &mut body, MAX_BODY, MAX_TRAILER);
        if !matches!(r2, Ok(None)) {
            break;
        }
    }
    match (&r1, &r2) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "all at once vs byte by byte");
            if a.is_some() {
                assert_eq!(whole, body);
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.status, b.status, "{a:?} vs {b:?}"),
        _ => panic!("all at once {r1:?} vs byte by byte {r2:?}"),
    }
    match r1 {
        Ok(Some(used)) => {
            assert!(used <= wire.len());
            assert!(whole.len() <= MAX_BODY);
            // A complete body ends with CRLF and does not look past itself.
            assert!(wire[..used].ends_with(b"\r\n"));
            let mut b = Vec::new();
            let again = Chunked::default().decode(&wire[..used], &mut b, MAX_BODY, MAX_TRAILER);
            assert_eq!(again, Ok(Some(used)));
            assert_eq!(b, whole);
        }
        Ok(None) => assert!(whole.len() <= MAX_BODY),
        Err(e) => assert_status(&e, &[400, 413, 431]),
    }
}
