use std::io::{self, IoSlice, Write};

use super::*;

/// A socket stand-in that takes at most `budget` bytes, then would block.
struct Socket {
    got: Vec<u8>,
    budget: usize,
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            let t = b.len().min(self.budget - n);
            self.got.extend_from_slice(&b[..t]);
            n += t;
        }
        self.budget -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A 100-byte ring holding frames of 16 bytes, the oldest retained frame
/// straddling the end of the buffer: reading from its tail wraps mid-frame.
fn wrapped_log() -> Log {
    let mut log = Log::new(100, 1);
    for i in 0..9 {
        log.append(None, &format!("{i}")).unwrap();
    }
    let (a, b) = log.slices(log.tail());
    assert!(!a.is_empty() && !b.is_empty(), "the fixture must wrap");
    assert_ne!(log.tail() % 100, 0);
    log
}

fn out_with(bytes: &[u8]) -> Out {
    let mut out = Out::default();
    out.push_vec(bytes.to_vec());
    out
}

/// What a subscriber from `log.tail()` must receive, in order.
fn expected(log: &Log, head: &[u8], heartbeat: bool, chunked: bool) -> Vec<u8> {
    let (a, b) = log.slices(log.tail());
    let data = [a, b].concat();
    let mut want = head.to_vec();
    if heartbeat {
        want.extend_from_slice(if chunked {
            crate::sse::HEARTBEAT_CHUNK
        } else {
            crate::sse::HEARTBEAT
        });
    }
    if chunked {
        want.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        want.extend_from_slice(&data);
        want.extend_from_slice(b"\r\n");
    } else {
        want.extend_from_slice(&data);
    }
    want
}

const COMMENTS: Heartbeats = Heartbeats {
    event: None,
    epoch_ms: 0,
};

fn sink_of<'a, W: Write>(sock: &'a mut W, writable: &'a mut bool, out: &'a mut Out) -> Sink<'a, W> {
    Sink {
        sock,
        writable,
        out,
    }
}

fn subscriber(log: &Log, chunked: bool, heartbeat: bool) -> Subscriber {
    let mut sub = Subscriber::new(0, 0, log.tail(), log, chunked, 0);
    if heartbeat {
        let len = COMMENTS.render(chunked, 0).as_slice().len();
        assert!(sub.start_heartbeat(len));
    }
    sub
}

/// Writes with a socket that takes `first` bytes, would block, then takes
/// everything: every boundary between parts and inside each part.
#[test]
fn a_partial_write_resumes_at_every_byte_boundary() {
    let log = wrapped_log();
    let frames_held = log.published() - log.complete_before(log.tail());
    for chunked in [false, true] {
        for heartbeat in [false, true] {
            let want = expected(&log, b"HTTP-HEAD", heartbeat, chunked);
            for first in 0..=want.len() {
                let mut sub = subscriber(&log, chunked, heartbeat);
                let mut out = out_with(b"HTTP-HEAD");
                let mut sink = Socket {
                    got: Vec::new(),
                    budget: first,
                };
                let mut writable = true;
                let w1 = write(
                    &mut sub,
                    sink_of(&mut sink, &mut writable, &mut out),
                    &log,
                    &COMMENTS,
                    0,
                );
                assert_eq!(w1.bytes, first.min(want.len()));
                assert!(!w1.closed);
                assert_eq!(
                    writable,
                    first >= want.len(),
                    "blocked only when short: {first} of {}",
                    want.len()
                );
                assert_eq!(sub.is_pending(&out, &log), first < want.len());
                sink.budget = usize::MAX / 2;
                writable = true;
                let w2 = write(
                    &mut sub,
                    sink_of(&mut sink, &mut writable, &mut out),
                    &log,
                    &COMMENTS,
                    0,
                );
                assert_eq!(
                    sink.got, want,
                    "chunked {chunked} heartbeat {heartbeat} split at {first}"
                );
                assert_eq!(w1.frames + w2.frames, frames_held, "split at {first}");
                assert!(!sub.is_pending(&out, &log));
                assert!(sub.at_boundary());
                assert_eq!(sub.cursor, log.head());
            }
        }
    }
}

/// One byte per `writev`: every boundary in one run, and the frames are
/// counted exactly when their last byte goes out.
#[test]
fn one_byte_at_a_time_counts_each_frame_when_it_completes() {
    let log = wrapped_log();
    let mut sub = subscriber(&log, true, false);
    let mut out = Out::default();
    let mut sink = Socket {
        got: Vec::new(),
        budget: 0,
    };
    let mut frames = 0;
    let want = expected(&log, b"", false, true);
    for _ in 0..want.len() {
        sink.budget = 1;
        let mut writable = true;
        let w = write(
            &mut sub,
            sink_of(&mut sink, &mut writable, &mut out),
            &log,
            &COMMENTS,
            0,
        );
        assert_eq!(w.bytes, 1);
        frames += w.frames;
        assert_eq!(
            frames,
            log.complete_before(sub.cursor) - log.complete_before(log.tail())
        );
    }
    assert_eq!(sink.got, want);
    assert!(sub.at_boundary() && sub.cursor == log.head());
}

#[test]
fn plan_orders_head_heartbeat_size_line_data_and_crlf() {
    let log = wrapped_log();
    let mut sub = subscriber(&log, true, true);
    open_chunk(&mut sub, &log);
    let mut line = [0u8; 12];
    let hb = COMMENTS.render(true, 0);
    let parts = plan(&sub, b"H", hb.as_slice(), &log, &mut line);
    let (a, b) = log.slices(log.tail());
    assert_eq!(parts[OUT], b"H");
    assert_eq!(parts[HEARTBEAT], crate::sse::HEARTBEAT_CHUNK);
    assert_eq!(
        parts[SIZE_LINE],
        format!("{:x}\r\n", a.len() + b.len()).as_bytes()
    );
    assert_eq!((parts[DATA], parts[DATA_WRAPPED]), (a, b));
    assert_eq!(parts[CHUNK_END], b"\r\n");
    // No heartbeat may start inside an open chunk.
    sub.heartbeat_left = 0;
    assert!(!sub.start_heartbeat(3));
}

#[test]
fn a_closed_socket_is_reported_not_retried() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let log = wrapped_log();
    let mut sub = subscriber(&log, false, false);
    let mut writable = true;
    let mut out = Out::default();
    let mut broken = Broken;
    let sink = sink_of(&mut broken, &mut writable, &mut out);
    let w = write(&mut sub, sink, &log, &COMMENTS, 0);
    assert!(w.closed);
    assert_eq!((w.bytes, w.frames), (0, 0));
}

#[test]
fn a_subscriber_behind_the_tail_is_reported() {
    let mut log = Log::new(100, 1);
    log.append(None, "first").unwrap();
    let sub = Subscriber::new(0, 0, 0, &log, false, 0);
    assert!(!sub.is_behind(&log));
    for i in 0..20 {
        log.append(None, &format!("{i}")).unwrap();
    }
    assert!(sub.is_behind(&log));
}

#[test]
fn chunk_size_lines_are_lowercase_hex() {
    let mut b = [0u8; 12];
    for (len, want) in [
        (1u32, "1\r\n"),
        (15, "f\r\n"),
        (16, "10\r\n"),
        (0x3fff_ffff, "3fffffff\r\n"),
    ] {
        let n = chunk_size_line(len, &mut b);
        assert_eq!(&b[..n], want.as_bytes());
    }
}

#[test]
fn deadlines_mean_stall_heartbeat_or_later() {
    let log = wrapped_log();
    let d = Deadlines {
        heartbeat_ms: 15_000,
        write_timeout_ms: 30_000,
        tick_ms: 100,
    };
    let mut sub = Subscriber::new(0, 0, log.head(), &log, true, 1_000);
    assert_eq!(due(&sub, 10_000, &d), Due::HeartbeatAfter(1_000));
    // Within half a tick of the interval counts as due.
    assert_eq!(due(&sub, 15_950, &d), Due::Heartbeat);
    assert_eq!(due(&sub, 16_000, &d), Due::Heartbeat);
    // Not inside an open chunk, nor during another heartbeat.
    sub.chunk_len = 5;
    assert_eq!(due(&sub, 16_000, &d), Due::HeartbeatAfter(1_000));
    sub.chunk_len = 0;
    sub.heartbeat_left = 2;
    assert_eq!(due(&sub, 16_000, &d), Due::HeartbeatAfter(1_000));
    sub.heartbeat_left = 0;
    // A stalled writer: its deadline is the write timeout, not a heartbeat.
    sub.stalled_since_ms = 20_000;
    assert_eq!(due(&sub, 30_000, &d), Due::StallIn(20_000));
    assert_eq!(due(&sub, 50_000, &d), Due::Stalled);
    let off = Deadlines {
        heartbeat_ms: 0,
        ..d
    };
    sub.stalled_since_ms = u64::MAX;
    assert_eq!(due(&sub, 99_000, &off), Due::Nothing);
}

#[test]
fn event_heartbeats_carry_the_time_and_no_id() {
    let hb = Heartbeats {
        event: Some("ping".into()),
        epoch_ms: 1_700_000_000_000,
    };
    let plain = hb.render(false, 1234);
    assert_eq!(
        plain.as_slice(),
        b"event: ping\ndata: {\"time\": 1700000001234}\n\n"
    );
    let chunked = hb.render(true, 1234);
    let n = plain.as_slice().len();
    assert_eq!(
        chunked.as_slice(),
        [format!("{n:x}\r\n").as_bytes(), plain.as_slice(), b"\r\n"].concat()
    );
    // The longest name still fits.
    let long = Heartbeats {
        event: Some("e".repeat(128).into()),
        epoch_ms: u64::MAX / 2,
    };
    let b = long.render(true, u64::MAX / 4);
    assert!(b.as_slice().ends_with(b"}\n\n\r\n"), "{:?}", b.as_slice());
}

/// A heartbeat cut by a partial write resumes, turns later, with exactly
/// the bytes it started with.
#[test]
fn a_cut_event_heartbeat_resumes_with_the_bytes_it_started_with() {
    let hb = Heartbeats {
        event: Some("ping".into()),
        epoch_ms: 1_700_000_000_000,
    };
    let log = Log::new(1024, 1);
    let want = hb.render(true, 5_000);
    for first in 1..want.as_slice().len() {
        let mut sub = Subscriber::new(0, 0, 0, &log, true, 0);
        assert!(sub.start_heartbeat(want.as_slice().len()));
        let mut out = Out::default();
        let mut sock = Socket {
            got: Vec::new(),
            budget: first,
        };
        let mut writable = true;
        write(
            &mut sub,
            sink_of(&mut sock, &mut writable, &mut out),
            &log,
            &hb,
            5_000,
        );
        // As the server does after a short write: stalled since now.
        assert!(sub.is_pending(&out, &log));
        sub.stalled_since_ms = 5_000;
        sock.budget = usize::MAX / 2;
        writable = true;
        write(
            &mut sub,
            sink_of(&mut sock, &mut writable, &mut out),
            &log,
            &hb,
            9_000,
        );
        assert_eq!(sock.got, want.as_slice(), "cut at {first}");
        assert_eq!(sub.heartbeat_left, 0);
    }
}

#[test]
fn the_last_events_are_framed_with_their_size_and_the_last_chunk() {
    for kind in [Ending::TokenExpired, Ending::Closed] {
        let plain = kind.bytes(false);
        let chunked = std::str::from_utf8(kind.bytes(true)).unwrap();
        let frame = std::str::from_utf8(plain).unwrap();
        assert!(frame.starts_with("event: ") && frame.ends_with("\n\n"));
        assert!(!frame.contains("id:"), "no id: a page's last id stays");
        assert!(frame.contains("\ndata: "), "EventSource dispatches it");
        let want = format!("{:x}\r\n{frame}\r\n0\r\n\r\n", plain.len());
        assert_eq!(chunked, want);
        assert!(chunked.len() < 256, "final_left is a u8");
    }
    assert!(Ending::No.bytes(true).is_empty());
    assert!(
        std::mem::size_of::<Subscriber>() <= 56,
        "an idle subscriber does not grow"
    );
}

/// An ending stream sends what was under way (the head, a heartbeat), then
/// its last event, and nothing published after it; split at every byte.
#[test]
fn an_ending_stream_sends_the_head_the_heartbeat_then_only_its_last_event() {
    let mut log = wrapped_log();
    for chunked in [false, true] {
        let kind = Ending::Closed;
        let mut want = b"HEAD".to_vec();
        want.extend_from_slice(if chunked {
            crate::sse::HEARTBEAT_CHUNK
        } else {
            crate::sse::HEARTBEAT
        });
        want.extend_from_slice(kind.bytes(chunked));
        for first in 0..=want.len() {
            let mut sub = Subscriber::new(0, 0, log.head(), &log, chunked, 0);
            let len = COMMENTS.render(chunked, 0).as_slice().len();
            assert!(sub.start_heartbeat(len));
            assert!(sub.begin_ending(kind, &log));
            assert!(!sub.start_heartbeat(len), "no heartbeat after the end");
            // Published after the end began: never sent.
            log.append(None, "late").unwrap();
            let mut out = out_with(b"HEAD");
            let mut sink = Socket {
                got: Vec::new(),
                budget: first,
            };
            let mut writable = true;
            write(
                &mut sub,
                sink_of(&mut sink, &mut writable, &mut out),
                &log,
                &COMMENTS,
                0,
            );
            assert_eq!(sub.is_finished(&out), first >= want.len(), "at {first}");
            assert_eq!(sub.is_pending(&out, &log), first < want.len());
            sink.budget = usize::MAX / 2;
            writable = true;
            let w = write(
                &mut sub,
                sink_of(&mut sink, &mut writable, &mut out),
                &log,
                &COMMENTS,
                0,
            );
            assert_eq!(sink.got, want, "chunked {chunked} split at {first}");
            assert_eq!(w.frames, 0, "the last event is no delivery");
            assert!(sub.is_finished(&out) && !sub.is_pending(&out, &log));
        }
    }
}

#[test]
fn a_subscriber_that_is_behind_or_inside_a_chunk_cannot_end_with_an_event() {
    let log = wrapped_log();
    let mut behind = subscriber(&log, true, false);
    assert!(!behind.begin_ending(Ending::TokenExpired, &log));
    assert_eq!(behind.ending, Ending::No);
    open_chunk(&mut behind, &log);
    behind.cursor = log.head();
    assert!(
        !behind.begin_ending(Ending::TokenExpired, &log),
        "chunk open"
    );
    let mut caught_up = Subscriber::new(0, 0, log.head(), &log, true, 0);
    assert!(caught_up.begin_ending(Ending::TokenExpired, &log));
    assert!(
        caught_up.begin_ending(Ending::Closed, &log),
        "already ending"
    );
    assert_eq!(caught_up.ending, Ending::TokenExpired);
}
