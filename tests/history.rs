//! Reconnection with `Last-Event-ID` / `?lastEventId=` and the
//! `history-lost` signal (item 4).

mod common;

use serde_json::Value;

use common::*;

fn publish_n(p: &mut Publisher, ch: &str, n: usize, prefix: &str) -> Vec<u64> {
    (0..n)
        .map(|i| p.event(ch, None, &format!("{prefix}{i}")))
        .collect()
}

fn check_resume(srv: &TestServer, how: &str) {
    let ch = format!("resume-{how}");
    let mut p = Publisher::new(srv.addr);
    let ids = publish_n(&mut p, &ch, 5, "e");
    // Resume after the second event.
    let mut s = match how {
        "header" => subscribe_with(
            srv.addr,
            &format!("/events?channel={ch}"),
            &[("Last-Event-ID", &ids[1].to_string())],
        ),
        _ => subscribe(
            srv.addr,
            &format!("/events?channel={ch}&lastEventId={}", ids[1]),
        ),
    };
    // A live event published right after connecting, before anything is read.
    let live = p.event(&ch, None, "live1");
    let want = [
        (ids[2], "e2"),
        (ids[3], "e3"),
        (ids[4], "e4"),
        (live, "live1"),
    ];
    for (id, data) in want {
        let e = s.next_event_strict();
        assert_eq!((e.id_u64(), e.data.as_str()), (id, data), "{how}");
    }
    // Exactly once: the next event is the next live one, no repeat.
    let live2 = p.event(&ch, None, "live2");
    let e = s.next_event_strict();
    assert_eq!((e.id_u64(), e.data.as_str()), (live2, "live2"), "{how}");
}

#[test]
fn last_event_id_header_replays_missed_events_once_then_live() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    check_resume(&srv, "header");
}

#[test]
fn last_event_id_query_parameter_replays_missed_events_once_then_live() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    check_resume(&srv, "query");
}

#[test]
fn resume_works_on_the_sse_alias_and_after_the_retry_line() {
    let srv = TestServer::start(&["--retry-ms", "1000"]);
    let mut p = Publisher::new(srv.addr);
    let ids = publish_n(&mut p, "alias", 3, "a");
    let mut s = subscribe_with(
        srv.addr,
        "/sse?channel=alias",
        &[("Last-Event-ID", &ids[0].to_string())],
    );
    match s.next_item() {
        SseItem::Retry(ms) => assert!((1000..=1500).contains(&ms)),
        other => panic!("stream does not start with retry: {other:?}"),
    }
    assert_eq!(s.next_event_strict().id_u64(), ids[1]);
    assert_eq!(s.next_event_strict().id_u64(), ids[2]);
}

#[test]
fn last_event_id_of_the_newest_event_gives_only_live_events() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut p = Publisher::new(srv.addr);
    let ids = publish_n(&mut p, "newest", 3, "n");
    let mut s = subscribe_with(
        srv.addr,
        "/events?channel=newest",
        &[("Last-Event-ID", &ids[2].to_string())],
    );
    let live = p.event("newest", None, "live");
    let e = s.next_event_strict();
    assert_eq!((e.id_u64(), e.data.as_str()), (live, "live"));
}

#[test]
fn the_whole_history_is_replayed_from_the_oldest_id() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut p = Publisher::new(srv.addr);
    let ids = publish_n(&mut p, "all", 20, "x");
    let mut s = subscribe_with(
        srv.addr,
        "/events?channel=all",
        &[("Last-Event-ID", &ids[0].to_string())],
    );
    for (i, id) in ids.iter().enumerate().skip(1) {
        let e = s.next_event_strict();
        assert_eq!((e.id_u64(), e.data.clone()), (*id, format!("x{i}")));
    }
}

/// Asserts a `history-lost` event and returns its parsed data.
fn expect_history_lost(s: &mut SseStream, sent: &str, newest: u64) -> Value {
    let e = s.next_event_strict();
    assert_eq!(e.event, "history-lost", "first event {e:?}");
    assert_eq!(e.id_u64(), newest, "history-lost id must be the newest id");
    let v: Value = serde_json::from_str(&e.data)
        .unwrap_or_else(|err| panic!("history-lost data not JSON ({err}): {:?}", e.data));
    assert_eq!(v["last_event_id"], Value::from(sent), "{v}");
    assert!(v["first_available_id"].is_u64(), "{v}");
    v
}

#[test]
fn an_id_older_than_the_history_gets_history_lost_then_live_events() {
    let srv = TestServer::start(&["--retry-ms", "0", "--history-bytes", "2048"]);
    let mut p = Publisher::new(srv.addr);
    let pad = "p".repeat(100);
    let mut ids = publish_n(&mut p, "small", 40, &pad); // ~5 KB through a 2 KB ring
    for how in ["header", "query"] {
        let newest = *ids.last().unwrap();
        let sent = ids[0].to_string();
        let mut s = match how {
            "header" => subscribe_with(
                srv.addr,
                "/events?channel=small",
                &[("Last-Event-ID", &sent)],
            ),
            _ => subscribe(
                srv.addr,
                &format!("/events?channel=small&lastEventId={sent}"),
            ),
        };
        let v = expect_history_lost(&mut s, &sent, newest);
        let first = v["first_available_id"].as_u64().unwrap();
        assert!(
            first > ids[0] && first <= newest,
            "first_available_id {first} not in ({}, {newest}]",
            ids[0]
        );
        assert!(ids.contains(&first), "{first} was never issued: {ids:?}");
        // The oldest id still held really is held: resuming from it works.
        if first < newest {
            let mut r = subscribe_with(
                srv.addr,
                "/events?channel=small",
                &[("Last-Event-ID", &first.to_string())],
            );
            let e = r.next_event_strict();
            assert_ne!(
                e.event, "history-lost",
                "{how}: {first} should be resumable"
            );
            let pos = ids.iter().position(|i| *i == first).unwrap();
            assert_eq!(e.id_u64(), ids[pos + 1]);
        }
        // Then live events, not the retained history.
        let live = p.event("small", None, &format!("live {how}"));
        let e = s.next_event_strict();
        assert_eq!((e.id_u64(), e.data.clone()), (live, format!("live {how}")));
        ids.push(live);
    }
}

#[test]
fn an_id_never_issued_gets_history_lost() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut p = Publisher::new(srv.addr);
    let ids = publish_n(&mut p, "never", 3, "n");
    let mut newest = ids[2];
    for sent in [(newest + 1_000_000).to_string(), "bogus".to_string()] {
        let mut s = subscribe_with(
            srv.addr,
            "/events?channel=never",
            &[("Last-Event-ID", &sent)],
        );
        let v = expect_history_lost(&mut s, &sent, newest);
        assert_eq!(v["first_available_id"].as_u64(), Some(ids[0]), "{v}");
        let live = p.event("never", None, "after");
        assert_eq!(s.next_event_strict().id_u64(), live);
        newest = live;
    }
}

#[test]
fn an_id_from_before_a_restart_gets_history_lost() {
    let first = TestServer::start(&["--retry-ms", "0"]);
    let old = publish(first.addr, "rs", "before");
    first.stop();
    let second = TestServer::start(&["--retry-ms", "0"]);
    let new = publish(second.addr, "rs", "after");
    let mut s = subscribe_with(
        second.addr,
        "/events?channel=rs",
        &[("Last-Event-ID", &old.to_string())],
    );
    let v = expect_history_lost(&mut s, &old.to_string(), new);
    assert_eq!(v["first_available_id"].as_u64(), Some(new), "{v}");
}

/// nchan's and Mercure's spellings of the resume id work too; the header
/// wins over any of them.
#[test]
fn other_hubs_spellings_of_the_resume_id_and_the_header_wins() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut p = Publisher::new(srv.addr);
    let ids = publish_n(&mut p, "spell", 4, "s");
    for name in ["last_event_id", "lastEventID"] {
        let mut s = subscribe(
            srv.addr,
            &format!("/events?channel=spell&{name}={}", ids[1]),
        );
        let e = s.next_event_strict();
        assert_eq!((e.id_u64(), e.data.as_str()), (ids[2], "s2"), "{name}");
    }
    let mut s = subscribe_with(
        srv.addr,
        &format!("/events?channel=spell&lastEventId={}", ids[0]),
        &[("Last-Event-ID", &ids[2].to_string())],
    );
    let e = s.next_event_strict();
    assert_eq!(
        (e.id_u64(), e.data.as_str()),
        (ids[3], "s3"),
        "the header wins"
    );
}

/// `earliest` (header or query) replays everything still held, then live;
/// it is never `history-lost`, even when the history has been trimmed.
#[test]
fn earliest_replays_the_whole_history_then_live() {
    let srv = TestServer::start(&["--retry-ms", "0", "--history-bytes", "1024"]);
    let mut p = Publisher::new(srv.addr);
    for how in ["header", "query"] {
        let ch = format!("early-{how}");
        // 60 events of ~30 bytes: more than 1 KiB, so the oldest are gone.
        let ids = publish_n(&mut p, &ch, 60, "early-event-");
        let mut s = match how {
            "header" => subscribe_with(
                srv.addr,
                &format!("/events?channel={ch}"),
                &[("Last-Event-ID", "earliest")],
            ),
            _ => subscribe(
                srv.addr,
                &format!("/events?channel={ch}&lastEventId=earliest"),
            ),
        };
        let first = s.next_event_strict();
        assert_ne!(first.event, "history-lost", "{how}");
        assert!(first.id_u64() > ids[0], "{how}: the oldest were trimmed");
        let mut last = first.id_u64();
        while last != *ids.last().unwrap() {
            let e = s.next_event_strict();
            assert!(e.id_u64() > last, "{how}: in order, once");
            last = e.id_u64();
        }
        let live = p.event(&ch, None, "live");
        assert_eq!(s.next_event_strict().id_u64(), live, "{how}");
    }
}
