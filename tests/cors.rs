//! CORS (item 10).

mod common;

use common::*;

/// `token` is in the comma-separated `list` (a `*` counts, except for
/// `Authorization`, which the Fetch standard never covers by a wildcard).
fn has_token(list: Option<&str>, token: &str) -> bool {
    let star_ok = !token.eq_ignore_ascii_case("authorization");
    list.map(|l| {
        l.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token) || (star_ok && t.trim() == "*"))
    })
    .unwrap_or(false)
}

fn vary_has_origin(r: &Response) -> bool {
    r.headers_all("vary").iter().any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("origin"))
    })
}

#[test]
fn allowed_origin_is_echoed_with_vary_and_others_get_nothing() {
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--cors-origins",
        "https://a.example,https://b.example",
    ]);
    for path in ["/health", "/events/status"] {
        let r = http(
            srv.addr,
            "GET",
            path,
            &[("Origin", "https://a.example")],
            b"",
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://a.example"),
            "{path}: {:?}",
            r.headers
        );
        assert!(
            vary_has_origin(&r),
            "{path}: no Vary: Origin in {:?}",
            r.headers
        );
        assert!(r.header("access-control-allow-credentials").is_none());

        let r = http(
            srv.addr,
            "GET",
            path,
            &[("Origin", "https://evil.example")],
            b"",
        );
        assert_eq!(r.status, 200);
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{path}: disallowed origin got ACAO: {:?}",
            r.headers
        );
        let r = http(srv.addr, "GET", path, &[], b"");
        assert!(r.header("access-control-allow-origin").is_none());
    }
    // The second origin in the list too.
    let r = http(
        srv.addr,
        "GET",
        "/health",
        &[("Origin", "https://b.example")],
        b"",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://b.example")
    );

    // The stream.
    let s = subscribe_with(srv.addr, "/events", &[("Origin", "https://a.example")]);
    assert_eq!(
        s.head.header("access-control-allow-origin"),
        Some("https://a.example"),
        "{:?}",
        s.head.headers
    );
    assert!(vary_has_origin(&s.head), "{:?}", s.head.headers);
    let s = subscribe_with(srv.addr, "/sse", &[("Origin", "https://c.example")]);
    assert!(s.head.header("access-control-allow-origin").is_none());
}

#[test]
fn preflight_for_broadcast_answers_204_with_allow_headers() {
    let srv = TestServer::start(&["--cors-origins", "https://a.example"]);
    let r = http(
        srv.addr,
        "OPTIONS",
        "/events/broadcast",
        &[
            ("Origin", "https://a.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type, authorization",
            ),
        ],
        b"",
    );
    assert_eq!(r.status, 204, "{:?} {:?}", r.headers, r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert!(
        has_token(r.header("access-control-allow-methods"), "POST"),
        "{:?}",
        r.headers
    );
    let allow_headers = r.header("access-control-allow-headers");
    assert!(has_token(allow_headers, "content-type"), "{:?}", r.headers);
    assert!(has_token(allow_headers, "authorization"), "{:?}", r.headers);
    assert!(vary_has_origin(&r), "{:?}", r.headers);

    // Preflight for the stream (Last-Event-ID is not a safelisted header).
    let r = http(
        srv.addr,
        "OPTIONS",
        "/events",
        &[
            ("Origin", "https://a.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "last-event-id"),
        ],
        b"",
    );
    assert_eq!(r.status, 204, "{:?}", r.text());
    assert!(has_token(r.header("access-control-allow-methods"), "GET"));
    assert!(has_token(
        r.header("access-control-allow-headers"),
        "last-event-id"
    ));

    // A preflight from another origin gets no permission.
    let r = http(
        srv.addr,
        "OPTIONS",
        "/events/broadcast",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );
}

#[test]
fn preflight_keeps_the_connection_usable() {
    let srv = TestServer::start(&["--cors-origins", "https://a.example"]);
    let mut c = connect(srv.addr);
    let r = c.request(
        "OPTIONS",
        "/events/broadcast",
        &[
            ("Origin", "https://a.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(r.status, 204);
    let r = c.request("GET", "/health", &[("Origin", "https://a.example")], b"");
    assert_eq!(r.status, 200);
}

#[test]
fn wildcard_origin_and_credentials() {
    let srv = TestServer::start(&["--cors-origins", "*"]);
    let r = http(
        srv.addr,
        "GET",
        "/health",
        &[("Origin", "https://any.example")],
        b"",
    );
    let acao = r.header("access-control-allow-origin");
    assert!(
        acao == Some("*") || acao == Some("https://any.example"),
        "{:?}",
        r.headers
    );

    let srv = TestServer::start(&["--cors-origins", "https://a.example", "--cors-credentials"]);
    let r = http(
        srv.addr,
        "GET",
        "/health",
        &[("Origin", "https://a.example")],
        b"",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));

    // `*` with credentials is refused by the configuration.
    for args in [
        ["--cors-origins", "*", "--cors-credentials"],
        ["--cors-credentials", "--cors-origins", "*"],
    ] {
        let e = ssecast::Config::from_args(args)
            .err()
            .unwrap_or_else(|| panic!("{args:?} accepted"));
        assert!(!e.to_string().is_empty());
    }
    let out = run_bin(&["--cors-origins", "*", "--cors-credentials"], &[]);
    assert_eq!(out.status.code(), Some(2), "stderr {:?}", out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{:?}", out.stderr);
}
