//! Private channels (issue 10, signed tokens): the token table with exact
//! statuses, the three transports, public channels, key rotation; a stream
//! ending with `event: token-expired` at `exp` + leeway on the hub's clock;
//! `?token=` kept out of the logs; revocation; channel names shown only to
//! loopback clients or the publish token.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use common::*;

const SECRET: &str = "test-secret-0123456789-abcdefghij";
const PREVIOUS: &str = "old-secret-0123456789-abcdefghijk";
const OTHER: &str = "not-our-secret-0123456789-abcdefg";
const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A JWT minted here, with the crates, not with the hub's code.
fn mint_with(secret: &str, header: &str, claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(channels: Value, sub: Option<&str>) -> String {
    let mut claims = json!({"exp": now() + 600, "channels": channels});
    if let Some(s) = sub {
        claims["sub"] = json!(s);
    }
    mint_with(SECRET, HS256, &claims)
}

fn private_server(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--subscribe-secret",
        SECRET,
        "--subscribe-secret-previous",
        PREVIOUS,
        "--public-channels",
        "lobby,open:*",
        "--heartbeat-interval",
        "0",
        "--retry-ms",
        "0",
    ];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

/// What a subscribe came to: its status, after checking the error shape.
fn subscribe_status(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    match try_subscribe(addr, path, headers) {
        Ok(s) => {
            s.close();
            200
        }
        Err(r) => {
            if r.status != 431 {
                r.assert_json_error();
            }
            if r.status == 401 {
                let challenge = r.header("www-authenticate").unwrap_or("");
                assert!(challenge.starts_with("Bearer"), "401 without a challenge");
            }
            r.status
        }
    }
}

#[test]
fn token_table_each_case_gets_its_exact_status_and_a_neighbour_keeps_receiving() {
    let srv = private_server(&["--max-header-bytes", "16384"]);
    let addr = srv.addr;
    let mut neighbour = subscribe(addr, "/events?channel=lobby");
    let t = now();
    let claims = |extra: Value| {
        let mut c = json!({"exp": t + 600, "channels": ["news", "room:*"]});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let good = mint_with(SECRET, HS256, &claims(json!({})));
    let (signed, _) = good.rsplit_once('.').unwrap();
    let payload = signed.split('.').nth(1).unwrap().to_string();
    let big_pad = "x".repeat(5000);
    let huge_pad = "x".repeat(20000);
    let bearer = |tok: &str| format!("Bearer {tok}");
    let cases: Vec<(&str, String, u16)> = vec![
        ("valid", good.clone(), 200),
        (
            "expired",
            mint_with(SECRET, HS256, &claims(json!({"exp": t - 60}))),
            401,
        ),
        (
            "nbf in the future",
            mint_with(SECRET, HS256, &claims(json!({"nbf": t + 60}))),
            401,
        ),
        (
            "wrong signature",
            mint_with(OTHER, HS256, &claims(json!({}))),
            401,
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
            401,
        ),
        (
            "alg HS512",
            mint_with(SECRET, r#"{"alg":"HS512"}"#, &claims(json!({}))),
            401,
        ),
        (
            "alg RS256",
            mint_with(SECRET, r#"{"alg":"RS256"}"#, &claims(json!({}))),
            401,
        ),
        ("malformed base64", "%%%.***.!!!".to_string(), 401),
        (
            "malformed JSON",
            format!(
                "{}.{}.{}",
                b64(HS256.as_bytes()),
                b64(b"{not json"),
                b64(b"sig")
            ),
            401,
        ),
        (
            "over 4 KiB within the header limit",
            mint_with(SECRET, HS256, &claims(json!({"pad": big_pad}))),
            401,
        ),
        (
            "over the header limit",
            mint_with(SECRET, HS256, &claims(json!({"pad": huge_pad}))),
            431,
        ),
        (
            "missing exp",
            mint_with(SECRET, HS256, &json!({"channels": ["news"]})),
            401,
        ),
        (
            "channels not an array",
            mint_with(SECRET, HS256, &json!({"exp": t + 600, "channels": "news"})),
            401,
        ),
        (
            "previous secret",
            mint_with(PREVIOUS, HS256, &claims(json!({}))),
            200,
        ),
        (
            "not this channel",
            mint_with(
                SECRET,
                HS256,
                &json!({"exp": t + 600, "channels": ["sport"]}),
            ),
            403,
        ),
    ];
    for (name, tok, want) in &cases {
        let auth = bearer(tok);
        let got = subscribe_status(addr, "/events?channel=news", &[("Authorization", &auth)]);
        assert_eq!(got, *want, "case {name}");
        let id = publish(addr, "lobby", &format!("after {name}"));
        let ev = neighbour.next_event();
        assert_eq!(
            (ev.id_u64(), ev.data.as_str()),
            (id, &*format!("after {name}"))
        );
    }
    let auth = bearer(&good);
    let by_path = [
        ("/events?channel=room:1", 200),
        ("/events?channel=room:", 200),
        ("/events?channel=roomy", 403),
        ("/events?channel=lobby", 200),
        ("/events?channel=open:anything", 200),
        ("/events?channel=a*b", 400),
    ];
    for (path, want) in by_path {
        let got = subscribe_status(addr, path, &[("Authorization", &auth)]);
        assert_eq!(got, want, "{path}");
    }
    // Transports: header, cookie, query; none at all.
    let cookie = format!("theme=dark; ssecast_token={good}");
    assert_eq!(
        subscribe_status(addr, "/events?channel=news", &[("Cookie", &cookie)]),
        200
    );
    let query = format!("/events?channel=news&token={good}");
    assert_eq!(subscribe_status(addr, &query, &[]), 200);
    assert_eq!(subscribe_status(addr, "/events?channel=news", &[]), 401);
    assert_eq!(subscribe_status(addr, "/events?channel=lobby", &[]), 200);
    // HEAD goes through the same check.
    let head = http(addr, "HEAD", "/events?channel=news", &[], b"");
    assert_eq!(head.status, 401);
    assert!(head.header("www-authenticate").is_some());
    let mut c = connect(addr);
    c.send_request(
        "HEAD",
        "/events?channel=news",
        &[("Authorization", &auth)],
        b"",
    );
    let head = c.read_head();
    assert_eq!((head.status, head.is_event_stream()), (200, true));
    // Channel names with '*' are refused for publishing too.
    let r = Publisher::new(addr).try_json(&json!({"channel": "a*", "data": "x"}));
    assert_eq!(r.status, 400);
    r.assert_json_error();
    let id = publish(addr, "lobby", "still here");
    assert_eq!(neighbour.next_event().id_u64(), id);
    srv.stop();
}

#[test]
fn a_stream_ends_with_token_expired_at_exp_plus_leeway_on_the_hubs_clock() {
    // Admitted inside the leeway: exp 4 s ago, so it ends 1 s from now,
    // not at once. The hub logs the end with its own timestamp.
    let exp = now() - 4;
    let tok = mint_with(
        SECRET,
        HS256,
        &json!({"exp": exp, "channels": ["news"], "sub": "ann"}),
    );
    let file = secret_file();
    let mut srv = BinServer::spawn(
        &[
            "--bind",
            "127.0.0.1:0",
            "--subscribe-secret-file",
            &file,
            "--log-level",
            "debug",
            "--retry-ms",
            "0",
            "--heartbeat-interval",
            "0",
        ],
        &[],
    );
    let _ = std::fs::remove_file(&file);
    let path = format!("/events?channel=news&token={tok}");
    let mut s = subscribe(srv.addr, &path);
    let id = publish(srv.addr, "news", "before the end");
    assert_eq!(s.next_event().id_u64(), id, "admitted and live");
    let ev = s.next_event_strict();
    assert_eq!(ev.event, "token-expired");
    assert_eq!(ev.id, id.to_string(), "no id: line, the last id stays");
    s.expect_eof_within(Duration::from_secs(2));
    // The line was written before the close; the thread reading the
    // hub's stderr may not have passed it on yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (lines, ended) = loop {
        let lines = srv.stderr_lines.lock().unwrap().clone();
        if let Some(l) = lines.iter().find(|l| l.contains("expired; closing it")) {
            break (lines.clone(), l.clone());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no expiry line in {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let at = parse_rfc3339(ended.split_whitespace().next().unwrap_or(""))
        .unwrap_or_else(|| panic!("no timestamp in {ended:?}"));
    let due = (exp + 5) as f64;
    assert!(at >= due - 0.001, "closed {:.3} s early", due - at);
    assert!(at <= due + 0.2 + 0.05, "closed {:.3} s late", at - due);
    // The query token never reaches the log; the line shows `token=-`.
    assert!(
        lines
            .iter()
            .all(|l| !l.contains(&tok) && !l.contains(&tok[..20])),
        "token in the log: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("GET /events?channel=news&token=-\"")),
        "{lines:?}"
    );
    srv.signal("TERM");
    assert!(srv.wait_exit(Duration::from_secs(5)).is_some());
}

fn secret_file() -> String {
    let path = std::env::temp_dir().join(format!("ssecast-auth-test-{}", std::process::id()));
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_short_secret_is_refused_at_startup() {
    let out = run_bin(&["--subscribe-secret", "too-short"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(!out.stderr.contains("too-short"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
}

#[test]
fn revocation_closes_exactly_the_matching_streams_and_keeps_them_out() {
    let srv = private_server(&[]);
    let addr = srv.addr;
    let ann = token(json!(["c1", "c2"]), Some("ann"));
    let bob = token(json!(["c1", "c2"]), Some("bob"));
    let sub_of = |t: &str, ch: &str| {
        subscribe_with(
            addr,
            &format!("/events?channel={ch}"),
            &[("Authorization", &format!("Bearer {t}"))],
        )
    };
    let mut ann1 = sub_of(&ann, "c1");
    let mut ann2 = sub_of(&ann, "c2");
    let mut bob1 = sub_of(&bob, "c1");
    let mut lobby = subscribe(addr, "/events?channel=lobby");
    wait_sse_connections(addr, 4);
    let mut admin = Publisher::new(addr);
    let close = |admin: &mut Publisher, body: Value| {
        let r = admin.post(
            Some("application/json"),
            "/events/close",
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        json_u64(&r.json(), "closed")
    };
    assert_eq!(close(&mut admin, json!({"sub": "ann"})), 2);
    for s in [&mut ann1, &mut ann2] {
        let ev = s.next_event_strict();
        assert_eq!(ev.event, "closed");
        s.expect_eof_within(Duration::from_secs(2));
    }
    let id = publish(addr, "c1", "bob stays");
    assert_eq!(bob1.next_event().id_u64(), id);
    // Kept out: the browser's reconnect a moment later is refused.
    let auth = format!("Bearer {ann}");
    let r = try_subscribe(addr, "/events?channel=c1", &[("Authorization", &auth)]).err();
    let r = r.expect("a revoked sub is refused");
    assert_eq!(r.status, 403);
    assert!(r.assert_json_error().contains("revoked"));
    // A channel, barred for one second.
    assert_eq!(close(&mut admin, json!({"channel": "c1", "for": 1})), 1);
    assert_eq!(bob1.next_event_strict().event, "closed");
    bob1.expect_eof_within(Duration::from_secs(2));
    let bob_auth = format!("Bearer {bob}");
    let c1 = "/events?channel=c1";
    assert_eq!(
        subscribe_status(addr, c1, &[("Authorization", &bob_auth)]),
        403
    );
    assert_eq!(
        subscribe_status(addr, "/events?channel=c2", &[("Authorization", &bob_auth)]),
        200
    );
    // The bar ends: poll until bob is let back in (no fixed sleep).
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while subscribe_status(addr, c1, &[("Authorization", &bob_auth)]) != 200 {
        assert!(std::time::Instant::now() < deadline, "the bar never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = publish(addr, "lobby", "untouched");
    assert_eq!(lobby.next_event().id_u64(), id);
    // Guarded like publishing: not from a remote client.
    srv.stop();
    let srv = private_server(&["--trusted-proxies", "127.0.0.1"]);
    let mut remote = Publisher::new(srv.addr).with_header("X-Real-IP", "192.0.2.10");
    let r = remote.post(
        Some("application/json"),
        "/events/close",
        br#"{"sub":"ann"}"#,
    );
    assert_eq!(r.status, 403);
    srv.stop();
}

#[test]
fn channel_names_only_to_loopback_or_the_publish_token() {
    let srv = TestServer::start(&[
        "--trusted-proxies",
        "127.0.0.1",
        "--publish-token",
        "pub-token",
        "--heartbeat-interval",
        "0",
    ]);
    let addr = srv.addr;
    let _s = subscribe(addr, "/events?channel=secret-room");
    wait_sse_connections(addr, 1);
    let remote = [("X-Real-IP", "192.0.2.10")];
    let local = get(addr, "/events/status").json();
    assert_eq!(local["channels"]["secret-room"], 1, "{local}");
    let far = http(addr, "GET", "/events/status", &remote, b"").json();
    assert!(far.get("channels").is_none(), "{far}");
    assert_eq!(far["subscribers"], 1, "totals stay: {far}");
    let with_token = [
        ("X-Real-IP", "192.0.2.10"),
        ("Authorization", "Bearer pub-token"),
    ];
    let told = http(addr, "GET", "/events/status", &with_token, b"").json();
    assert_eq!(told["channels"]["secret-room"], 1, "{told}");
    let series = "ssecast_channel_subscribers{channel=\"secret-room\"} 1";
    assert!(get(addr, "/metrics").text().contains(series));
    let far = http(addr, "GET", "/metrics", &remote, b"").text();
    assert!(!far.contains("secret-room") && far.contains("ssecast_subscribers 1"));
    assert!(http(addr, "GET", "/metrics", &with_token, b"")
        .text()
        .contains(series));
    let mut stream = subscribe_with(addr, "/events/status/stream", &remote);
    let doc: Value = serde_json::from_str(&stream.next_event().data).unwrap();
    assert!(doc.get("channels").is_none(), "{doc}");
    assert!(!doc.to_string().contains("secret-room"));
    let mut local = subscribe(addr, "/events/status/stream");
    let doc: Value = serde_json::from_str(&local.next_event().data).unwrap();
    assert_eq!(doc["channels"]["secret-room"], 1, "{doc}");
    srv.stop();
}

#[test]
fn a_cookie_token_works_for_a_page_on_another_origin() {
    let srv = private_server(&[
        "--cors-origins",
        "https://app.example",
        "--cors-credentials",
        "--subscribe-cookie",
        "hub_token",
    ]);
    let tok = token(json!(["news"]), Some("ann"));
    let cookie = format!("hub_token={tok}");
    let headers = [("Origin", "https://app.example"), ("Cookie", &*cookie)];
    let s = subscribe_with(srv.addr, "/events?channel=news", &headers);
    assert_eq!(
        s.head.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        s.head.header("access-control-allow-credentials"),
        Some("true")
    );
    s.close();
    // The default cookie name is not read when another is configured.
    let other = format!("ssecast_token={tok}");
    let wrong = [("Origin", "https://app.example"), ("Cookie", &*other)];
    assert_eq!(
        subscribe_status(srv.addr, "/events?channel=news", &wrong),
        401
    );
    srv.stop();
}
