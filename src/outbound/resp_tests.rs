use super::*;

fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

fn arr(items: Vec<Reply>) -> Reply {
    Reply::Array(items)
}

/// The one reply `bytes` hold, all of them consumed.
fn whole(bytes: &[u8]) -> Reply {
    match decode(bytes) {
        Ok(Decoded::Reply(r, n)) if n == bytes.len() => r,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

fn error(bytes: &[u8]) -> &'static str {
    match decode(bytes) {
        Err(ProtocolError(why)) => why,
        other => panic!(
            "{:?}: not an error: {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// `XREAD COUNT 2 STREAMS a b 0 0`, as Redis answers it.
fn xread() -> (Vec<u8>, Reply) {
    let fields = |d: &str| arr(vec![bulk("p"), bulk("0"), bulk("d"), bulk(d)]);
    let reply = arr(vec![
        arr(vec![
            bulk("ssecast:{a}:s"),
            arr(vec![
                arr(vec![bulk("1-0"), fields("hello")]),
                arr(vec![bulk("2-0"), fields("")]),
            ]),
        ]),
        arr(vec![
            bulk("ssecast:{b}:s"),
            arr(vec![arr(vec![bulk("7-0"), fields("line\r\nbreak")])]),
        ]),
    ]);
    let mut bytes = Vec::new();
    encode(&mut bytes, &reply);
    (bytes, reply)
}

#[test]
fn each_type() {
    assert_eq!(whole(b"+OK\r\n"), Reply::Status("OK".into()));
    assert_eq!(whole(b"+\r\n"), Reply::Status(String::new()));
    let e = whole(b"-NOSCRIPT No matching script. Please use EVAL.\r\n");
    assert!(e.is_error());
    assert_eq!(e.error_code(), Some("NOSCRIPT"));
    assert_eq!(
        whole(b"-LOADING Redis is loading\r\n").error_code(),
        Some("LOADING")
    );
    assert_eq!(whole(b"-OOM\r\n").error_code(), Some("OOM"));
    assert_eq!(whole(b":0\r\n"), Reply::Int(0));
    assert_eq!(whole(b":-42\r\n"), Reply::Int(-42));
    assert_eq!(whole(b":9223372036854775807\r\n"), Reply::Int(i64::MAX));
    assert_eq!(whole(b":-9223372036854775808\r\n"), Reply::Int(i64::MIN));
    assert_eq!(whole(b"$5\r\nhello\r\n"), bulk("hello"));
    assert_eq!(whole(b"$0\r\n\r\n"), bulk(""));
    assert_eq!(whole(b"$4\r\na\r\nb\r\n"), bulk("a\r\nb"), "binary-safe");
    assert_eq!(whole(b"$-1\r\n"), Reply::Nil);
    assert_eq!(whole(b"*0\r\n"), arr(vec![]));
    assert_eq!(whole(b"*-1\r\n"), Reply::NilArray);
    assert_eq!(
        whole(b"*3\r\n:1\r\n$-1\r\n+x\r\n"),
        arr(vec![Reply::Int(1), Reply::Nil, Reply::Status("x".into())])
    );
    // Not UTF-8: lossy, still a reply.
    assert_eq!(whole(b"-ERR \xff\r\n"), Reply::Error("ERR \u{fffd}".into()));
}

#[test]
fn accessors() {
    assert_eq!(bulk("12").as_int(), Some(12));
    assert_eq!(bulk("-3").as_int(), Some(-3));
    assert_eq!(Reply::Int(5).as_int(), Some(5));
    for not in ["", "-", "+1", " 1", "1.0", "0x1", "99999999999999999999"] {
        assert_eq!(bulk(not).as_int(), None, "{not:?}");
    }
    assert_eq!(Reply::Status("1".into()).as_int(), None);
    assert_eq!(bulk("ab").as_bytes(), Some(&b"ab"[..]));
    assert_eq!(Reply::Status("OK".into()).as_bytes(), Some(&b"OK"[..]));
    assert_eq!(Reply::Status("OK".into()).as_str(), Some("OK"));
    assert_eq!(Reply::Bulk(vec![0xff]).as_str(), None);
    assert_eq!(Reply::Bulk(vec![0xff]).as_bytes(), Some(&[0xff][..]));
    assert_eq!(Reply::Error("ERR x".into()).as_str(), None);
    assert_eq!(Reply::Nil.as_bytes(), None);
    assert_eq!(Reply::Int(1).as_bytes(), None);
    assert_eq!(arr(vec![Reply::Nil]).as_array(), Some(&[Reply::Nil][..]));
    assert_eq!(Reply::NilArray.as_array(), None);
    assert!(!Reply::Status("ERR".into()).is_error());
    assert_eq!(Reply::Status("ERR".into()).error_code(), None);
    assert_eq!(
        Reply::Error("BUSY Redis is busy".into()).error_code(),
        Some("BUSY")
    );
}

#[test]
fn commands_are_arrays_of_bulk_strings() {
    let mut out = Vec::new();
    command(&mut out, &[b"SET", b"k", b"a\r\nb"]);
    command(&mut out, &[b"PING"]);
    assert_eq!(
        out,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n*1\r\n$4\r\nPING\r\n"
    );
    // The decoder reads them back (a fake server could).
    let Ok(Decoded::Reply(r, n)) = decode(&out) else {
        panic!()
    };
    assert_eq!(r, arr(vec![bulk("SET"), bulk("k"), bulk("a\r\nb")]));
    assert_eq!(whole(&out[n..]), arr(vec![bulk("PING")]));
}

#[test]
fn xread_split_at_every_byte_is_incomplete_until_whole() {
    let (bytes, reply) = xread();
    for at in 0..bytes.len() {
        assert_eq!(decode(&bytes[..at]), Ok(Decoded::Incomplete), "at {at}");
    }
    assert_eq!(whole(&bytes), reply);
    // Bytes of the next reply after it change nothing.
    let mut more = bytes.clone();
    more.extend_from_slice(b"+O");
    assert_eq!(decode(&more), Ok(Decoded::Reply(reply, bytes.len())));
}

#[test]
fn pipelined_replies_one_after_another() {
    let (x, reply) = xread();
    let mut buf = b":7\r\n".to_vec();
    buf.extend_from_slice(&x);
    buf.extend_from_slice(b"+OK\r\n");
    let mut got = Vec::new();
    let mut at = 0;
    while let Ok(Decoded::Reply(r, n)) = decode(&buf[at..]) {
        got.push(r);
        at += n;
    }
    assert_eq!(at, buf.len());
    assert_eq!(got, vec![Reply::Int(7), reply, Reply::Status("OK".into())]);
}

#[test]
fn limits() {
    // Bulk: the declared length is checked, nothing reserved for it.
    let max = format!("${MAX_BULK}\r\n");
    assert_eq!(decode(max.as_bytes()), Ok(Decoded::Incomplete));
    let over = format!("${}\r\n", MAX_BULK + 1);
    assert_eq!(error(over.as_bytes()), "bulk string too long");
    assert_eq!(error(b"$99999999999999999999\r\n"), "bad length");
    assert_eq!(error(b"$123456789012345678901"), "line too long");
    // Arrays: elements and depth.
    let max = format!("*{MAX_ARRAY}\r\n:1\r\n");
    assert_eq!(decode(max.as_bytes()), Ok(Decoded::Incomplete));
    let over = format!("*{}\r\n", MAX_ARRAY + 1);
    assert_eq!(error(over.as_bytes()), "array too long");
    let deep = |n: usize| [&b"*1\r\n".repeat(n)[..], b":1\r\n"].concat();
    assert!(matches!(decode(&deep(MAX_DEPTH)), Ok(Decoded::Reply(_, _))));
    assert_eq!(error(&deep(MAX_DEPTH + 1)), "arrays nested too deep");
    assert_eq!(
        error(&b"*1\r\n".repeat(MAX_DEPTH + 1)),
        "arrays nested too deep"
    );
    // Lines: up to MAX_LINE bytes, and without a CRLF no further.
    for kind in [b'+', b'-', b':'] {
        let mut l = vec![kind];
        l.resize(1 + MAX_LINE, b'1');
        assert_eq!(decode(&l), Ok(Decoded::Incomplete));
        let mut longer = l.clone();
        longer.push(b'1');
        assert_eq!(error(&longer), "line too long");
        l.extend_from_slice(b"\r");
        assert_eq!(decode(&l), Ok(Decoded::Incomplete));
        l.extend_from_slice(b"\n");
        if kind == b':' {
            assert_eq!(error(&l), "bad integer");
        } else {
            assert!(matches!(decode(&l), Ok(Decoded::Reply(_, n)) if n == l.len()));
        }
    }
}

#[test]
fn malformed() {
    for (bytes, why) in [
        (&b"?\r\n"[..], "unknown reply type"),
        (b"\r\n", "unknown reply type"),
        (b"OK\r\n", "unknown reply type"),
        (b"*2\r\n:1\r\nx", "unknown reply type"),
        (b"_\r\n", "RESP3 reply (never asked for)"),
        (b",1.5\r\n", "RESP3 reply (never asked for)"),
        (b"#t\r\n", "RESP3 reply (never asked for)"),
        (b"%1\r\n", "RESP3 reply (never asked for)"),
        (b"~1\r\n", "RESP3 reply (never asked for)"),
        (b">3\r\n", "RESP3 reply (never asked for)"),
        (b"=5\r\ntxt:x\r\n", "RESP3 reply (never asked for)"),
        (b"(1\r\n", "RESP3 reply (never asked for)"),
        (b"!3\r\nERR\r\n", "RESP3 reply (never asked for)"),
        (b"|1\r\n", "RESP3 reply (never asked for)"),
        (b"$-2\r\n", "negative length"),
        (b"*-2\r\n", "negative length"),
        (b"$-9223372036854775808\r\n", "negative length"),
        (b"$\r\n", "bad length"),
        (b"$+1\r\nx\r\n", "bad length"),
        (b"$ 1\r\nx\r\n", "bad length"),
        (b"*x\r\n", "bad length"),
        (b"$3\r\nabcd\r\n", "bulk string not followed by CRLF"),
        (b"$3\r\nabc\rx", "bulk string not followed by CRLF"),
        (b"$3\r\nabc\n", "bulk string not followed by CRLF"),
        (b":\r\n", "bad integer"),
        (b":-\r\n", "bad integer"),
        (b":+1\r\n", "bad integer"),
        (b":1.0\r\n", "bad integer"),
        (b": 1\r\n", "bad integer"),
        (b":0x10\r\n", "bad integer"),
        (b":9223372036854775808\r\n", "bad integer"),
        (b"+OK\n", "LF without CR"),
        (b"+O\rK\r\n", "CR without LF"),
        (b"-ERR\r\r\n", "CR without LF"),
    ] {
        assert_eq!(error(bytes), why, "{:?}", String::from_utf8_lossy(bytes));
    }
}

/// xorshift64: a fixed sequence, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Checks what must hold of any input: no panic; every proper prefix of a
/// decoded reply is incomplete; an error stays one when more bytes come.
/// Returns which of reply, incomplete, error it came to.
fn consistent(input: &[u8]) -> usize {
    let all = decode(input);
    if let Ok(Decoded::Reply(r, n)) = &all {
        assert!(*n <= input.len());
        for at in 0..*n {
            assert_eq!(decode(&input[..at]), Ok(Decoded::Incomplete), "at {at}");
        }
        let mut again = Vec::new();
        encode(&mut again, r);
        assert_eq!(whole(&again), *r, "encoded again, decoded the same");
    }
    for at in 0..input.len() {
        match (decode(&input[..at]), &all) {
            (Ok(Decoded::Incomplete), _) => {}
            (prefix @ Ok(Decoded::Reply(..)), Ok(_)) if prefix == all => {}
            (Err(e), Err(all)) => assert_eq!(&e, all, "at {at}"),
            (prefix, all) => panic!("prefix {at}: {prefix:?}, whole: {all:?}"),
        }
    }
    match all {
        Ok(Decoded::Reply(..)) => 0,
        Ok(Decoded::Incomplete) => 1,
        Err(_) => 2,
    }
}

/// A random reply, arrays at most `depth` deep.
fn random_reply(rng: &mut Rng, depth: usize) -> Reply {
    let word = |rng: &mut Rng| -> String {
        let n = rng.below(6);
        (0..n)
            .map(|_| (b'a' + rng.below(26) as u8) as char)
            .collect()
    };
    match rng.below(if depth == 0 { 6 } else { 8 }) {
        0 => Reply::Status(word(rng)),
        1 => Reply::Error(format!("ERR {}", word(rng))),
        2 => Reply::Int(rng.next() as i64 >> rng.below(64)),
        3 => Reply::Bulk((0..rng.below(12)).map(|_| rng.next() as u8).collect()),
        4 => Reply::Nil,
        5 => Reply::NilArray,
        _ => Reply::Array(
            (0..rng.below(4))
                .map(|_| random_reply(rng, depth - 1))
                .collect(),
        ),
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Bytes that make RESP likely, so the decoder gets deep, not just
    // "unknown reply type" at byte 0.
    const ALPHABET: &[u8] = b"+-:$*\r\n0123456789-1OKx_%\xff";
    let mut seen = [0; 3];
    for round in 0..50_000 {
        let mut input = Vec::new();
        if round % 2 == 0 {
            input = (0..rng.below(48))
                .map(|_| match rng.below(8) {
                    0 => rng.next() as u8,
                    _ => ALPHABET[rng.below(ALPHABET.len())],
                })
                .collect();
        } else {
            // A valid reply (up to 3 deep), some bytes changed or cut off,
            // then some more bytes.
            encode(&mut input, &random_reply(&mut rng, 3));
            for _ in 0..rng.below(3) {
                let at = rng.below(input.len());
                input[at] = ALPHABET[rng.below(ALPHABET.len())];
            }
            input.truncate(input.len() - rng.below(2) * rng.below(input.len()));
            input.extend((0..rng.below(4)).map(|_| ALPHABET[rng.below(ALPHABET.len())]));
        }
        seen[consistent(&input)] += 1;
    }
    // Each outcome came up often (the loop is not all errors at byte 0).
    assert!(seen.iter().all(|&n| n > 5000), "{seen:?}");
}
