//! The Redis reply decoder (`outbound::resp::decode`) on arbitrary bytes
//! from the server.
//!
//! Input: one byte choosing where to split, then the bytes as they would
//! arrive on the connection. Never panics, and what the start of the input
//! decodes to does not depend on where reads split it: a proper prefix of
//! a decoded reply is `Incomplete`, a longer one gives the same reply and
//! length; a prefix of an input that is an error is `Incomplete` or the
//! same error. A decoded reply, encoded again, decodes to itself; the
//! replies after it (pipelined) hold the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssecast::outbound::resp::{decode, encode, Decoded};

fuzz_target!(|data: &[u8]| {
    let Some((&split, mut input)) = data.split_first() else {
        return;
    };
    let split = usize::from(split);
    loop {
        let whole = decode(input);
        let at = split.min(input.len());
        let prefix = decode(&input[..at]);
        match &whole {
            Ok(Decoded::Reply(reply, n)) => {
                assert!(*n > 0 && *n <= input.len());
                if at < *n {
                    assert_eq!(prefix, Ok(Decoded::Incomplete), "split at {at}");
                } else {
                    assert_eq!(prefix, whole, "split at {at}");
                }
                let mut again = Vec::new();
                encode(&mut again, reply);
                assert_eq!(decode(&again), Ok(Decoded::Reply(reply.clone(), again.len())));
                input = &input[*n..];
            }
            Ok(Decoded::Incomplete) => {
                assert_eq!(prefix, Ok(Decoded::Incomplete), "split at {at}");
                return;
            }
            Err(_) => {
                assert!(prefix == Ok(Decoded::Incomplete) || prefix == whole, "split at {at}");
                return;
            }
        }
    }
});
