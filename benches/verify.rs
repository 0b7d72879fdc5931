//! The cost of verifying one subscribe token (`auth::verify`): an HS256 JWT
//! of a typical size (a `sub`, two channels, `exp`, `iat`), verified for a
//! channel its prefix covers. Reported, never asserted; `scripts/bench.sh`
//! runs it (`cargo bench --bench verify`).

use std::hint::black_box;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use ssecast::auth::{mint, verify, Keys};

fn main() {
    let secret = b"bench-secret-0123456789-abcdefghij";
    let keys = Keys::new(secret, None).expect("keys");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = mint(
        secret,
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "user-12345", "channels": ["user-12345", "room:*"],
                "iat": now, "exp": now + 3600}),
    );
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // as a smoke test with a few rounds.
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds: u32 = std::env::var("VERIFY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 200_000 } else { 1_000 });
    for _ in 0..rounds / 10 {
        black_box(verify(black_box(&token), &keys, "room:42", now).is_ok());
    }
    let started = Instant::now();
    let mut ok = 0u32;
    for _ in 0..rounds {
        ok += u32::from(verify(black_box(&token), &keys, black_box("room:42"), now).is_ok());
    }
    let per_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    assert_eq!(ok, rounds, "the benchmark token must verify");
    eprintln!(
        "verify: {per_us:.2} us per token ({} bytes, {rounds} rounds)",
        token.len()
    );
    println!(
        "{}",
        json!({"mode": "verify", "ok": true, "label": "verify", "verify_us": per_us,
               "token_bytes": token.len(), "rounds": rounds})
    );
}
