//! Any bytes as a subscribe token (and a channel) never panic
//! `auth::verify`; a token that verifies is at most 4 KiB and has an `exp`
//! not before now minus the leeway. Any query logged through
//! `LogQuery` keeps no `token=` value.
//!
//! Input: byte 0 the channel's length, then the channel, then the token
//! (both lossy UTF-8).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssecast::auth::{verify, Keys, LEEWAY_SECS};
use ssecast::routes::LogQuery;

const NOW: u64 = 1_700_000_000;

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let channel = String::from_utf8_lossy(&rest[..n]);
    let token = String::from_utf8_lossy(&rest[n..]);
    let keys = Keys::new(b"fuzz-secret-fuzz-secret-fuzz-secret!", None).unwrap();
    if let Ok(claims) = verify(&token, &keys, &channel, NOW) {
        assert!(claims.exp + LEEWAY_SECS > NOW);
        assert!(token.len() <= ssecast::auth::MAX_TOKEN_BYTES);
    }
    let query = format!("a=1&token={token}");
    let logged = LogQuery(&query).to_string();
    assert!(logged.starts_with("a=1&token=-"), "{logged}");
});
