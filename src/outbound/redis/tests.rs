//! The link against a scripted Redis on a unix socket: the handshake, replies
//! matched in order, NOSCRIPT re-sent in order, a late reply dropping the
//! connection, following from explicit ids.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::*;
use crate::config::{Redis, RedisUrl};
use crate::outbound::resp::{self, Decoded, Reply};

struct Fake {
    sock: UnixStream,
    buf: Vec<u8>,
}

impl Fake {
    /// The next command the link sent, as its words, if one came whole.
    fn try_command(&mut self) -> Option<Vec<String>> {
        loop {
            if let Ok(Decoded::Reply(Reply::Array(words), used)) = resp::decode(&self.buf) {
                self.buf.drain(..used);
                return Some(
                    words
                        .iter()
                        .map(|w| {
                            String::from_utf8_lossy(w.as_bytes().unwrap_or_default()).into_owned()
                        })
                        .collect(),
                );
            }
            let mut b = [0u8; 65536];
            match self.sock.read(&mut b) {
                Ok(0) => panic!("the link closed"),
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn reply(&mut self, raw: &str) {
        self.sock.write_all(raw.as_bytes()).expect("write");
    }
}

struct Rig {
    link: Link,
    poll: Poll,
    listener: UnixListener,
    _dir: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

impl Rig {
    fn new(timeout: Duration) -> Rig {
        let dir = std::env::temp_dir().join(format!(
            "ssecast-link-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("r.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let url = RedisUrl::parse(&format!("unix://{}", path.display())).expect("url");
        let cfg = Redis {
            url,
            timeout,
            prefix: "t".into(),
        };
        let settings = Settings {
            history_events: 100,
            history_ttl: Duration::ZERO,
            wait_replicas: 0,
            idempotency_ttl: Duration::from_secs(60),
        };
        Rig {
            link: Link::new(&cfg, &settings).expect("link"),
            poll: Poll::new().expect("poll"),
            listener,
            _dir: dir,
        }
    }

    /// The next command the link sends on `fake`, turning the loop until
    /// it comes (a readiness signal, not a count of turns).
    fn next(&mut self, fake: &mut Fake) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = fake.try_command() {
                return c;
            }
            assert!(Instant::now() < deadline, "no command came");
            self.turn();
        }
    }

    /// Turns the loop until `cond` holds (10 s at most).
    fn until(&mut self, what: &str, cond: impl Fn(&Link) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(&self.link) {
            assert!(Instant::now() < deadline, "never: {what}");
            self.turn();
        }
    }

    /// Runs the link's side for a moment: readiness, then a tick.
    fn turn(&mut self) {
        let mut events = Events::with_capacity(16);
        let _ = self.poll.poll(&mut events, Some(Duration::from_millis(20)));
        let now = Instant::now();
        for ev in events.iter() {
            self.link.ready(ev.token(), now, self.poll.registry());
        }
        self.link.tick(now, self.poll.registry());
    }

    /// Accepts the link's two connections and answers their handshakes;
    /// returns (command, follow).
    fn connect(&mut self) -> (Fake, Fake) {
        self.turn();
        let mut socks = Vec::new();
        for _ in 0..2 {
            let (s, _) = self.listener.accept().expect("accept");
            s.set_nonblocking(true).expect("nonblocking");
            socks.push(Fake {
                sock: s,
                buf: Vec::new(),
            });
        }
        for _ in 0..5 {
            self.turn();
        }
        // Accepted in the order they connected: the command connection first.
        let mut fol = socks.pop().expect("follow");
        let mut cmd = socks.pop().expect("command");
        assert_eq!(self.next(&mut cmd), ["CONFIG", "GET", "maxmemory-policy"]);
        assert_eq!(self.next(&mut cmd)[..2], ["SCRIPT", "LOAD"]);
        assert_eq!(self.next(&mut cmd)[..2], ["SCRIPT", "LOAD"]);
        cmd.reply("*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n");
        cmd.reply("$3\r\npub\r\n$3\r\nrep\r\n");
        self.until("connected", Link::is_up);
        // Where the notification stream is, then the follow read: the
        // control stream from 0 and the notifications from there.
        assert_eq!(
            self.next(&mut fol),
            ["XREVRANGE", "t:n", "+", "-", "COUNT", "1"]
        );
        fol.reply("*0\r\n");
        for _ in 0..5 {
            self.turn();
        }
        let read = self.next(&mut fol);
        assert_eq!(read[..2], ["XREAD", "COUNT"]);
        assert_eq!(read[6..], ["t:ctl", "t:n", "0-0", "0-0"]);
        (cmd, fol)
    }

    fn done(&mut self) -> Vec<Done> {
        for _ in 0..5 {
            self.turn();
        }
        self.link.take_done()
    }
}

fn publish(link: &mut Link, call: u64, data: &str) {
    let ev = [Event {
        channel: "news",
        event: None,
        data,
    }];
    link.publish(call, &ev, None, Instant::now()).expect("up");
}

#[test]
fn replies_are_matched_in_order_and_noscript_is_sent_again_in_order() {
    let mut rig = Rig::new(Duration::from_secs(5));
    let (mut cmd, _fol) = rig.connect();
    // Two turns, two script calls.
    for (call, data) in [(1, "a"), (2, "b")] {
        publish(&mut rig.link, call, data);
        rig.turn();
        let c = rig.next(&mut cmd);
        assert_eq!(
            (c[0].as_str(), c[1].as_str(), c[3].as_str()),
            ("EVALSHA", "pub", "t:n")
        );
        // One publish, the process, then its one event: ..., data, channel.
        assert_eq!((c[7].as_str(), c[13].as_str()), ("1", rig.link.process()));
        assert_eq!(c[c.len() - 2..], [data, "news"]);
    }
    // The script cache was flushed: both are refused.
    cmd.reply("-NOSCRIPT No matching script\r\n-NOSCRIPT No matching script\r\n");
    rig.turn();
    assert!(rig.done().is_empty());
    assert_eq!(rig.next(&mut cmd)[..2], ["SCRIPT", "LOAD"]);
    assert_eq!(rig.next(&mut cmd)[..2], ["SCRIPT", "LOAD"]);
    for data in ["a", "b"] {
        let c = rig.next(&mut cmd);
        assert_eq!(c[c.len() - 2], data);
    }
    cmd.reply("$3\r\npub\r\n$3\r\nrep\r\n");
    cmd.reply("*1\r\n*2\r\n$2\r\n11\r\n$2\r\n10\r\n*1\r\n*2\r\n$2\r\n12\r\n$2\r\n11\r\n");
    // Two publishes in one turn: one call, one reply item each.
    publish(&mut rig.link, 3, "c");
    publish(&mut rig.link, 4, "d");
    rig.turn();
    let c = rig.next(&mut cmd);
    // Keys: the notifications, then (idempotency, stream, meta) twice.
    assert_eq!((c[2].as_str(), c[10].as_str()), ("7", "2"));
    cmd.reply("*2\r\n*2\r\n$2\r\n13\r\n$2\r\n12\r\n*2\r\n$3\r\ndup\r\n$6\r\nh|0|11\r\n");
    let done = rig.done();
    let got: Vec<(u64, Appended)> = done
        .into_iter()
        .filter_map(|d| match d {
            Done::Published { call, result } => Some((call, result.expect("ok"))),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Appended::Ids(vec![(11, 10)])),
            (2, Appended::Ids(vec![(12, 11)])),
            (3, Appended::Ids(vec![(13, 12)])),
            (4, Appended::Stored("h|0|11".into()))
        ]
    );
}

#[test]
fn a_late_reply_drops_the_connection_and_fails_what_was_in_flight() {
    let mut rig = Rig::new(Duration::from_millis(200));
    let (mut cmd, _fol) = rig.connect();
    publish(&mut rig.link, 7, "x");
    rig.link.replay(8, "news", 5, Instant::now());
    rig.turn();
    let _ = rig.next(&mut cmd);
    let _ = rig.next(&mut cmd);
    std::thread::sleep(Duration::from_millis(250));
    let done = rig.done();
    assert!(
        matches!(
            done.as_slice(),
            [Done::Published {
                call: 7,
                result: Err(Failure::Unknown(_))
            }]
        ),
        "{done:?}"
    );
    assert!(!rig.link.is_up());
    // Publishes are refused at once while it is down; the replay waits.
    let ev = [Event {
        channel: "news",
        event: None,
        data: "y",
    }];
    assert!(matches!(
        rig.link.publish(9, &ev, None, Instant::now()),
        Err(Failure::Unavailable(_))
    ));
    // A reply on the dropped connection (if it still takes one) never
    // reaches anyone.
    let _ = cmd.sock.write_all(b"*2\r\n$2\r\n11\r\n$2\r\n10\r\n");
    assert!(rig.done().is_empty());
    assert_eq!(rig.link.queued(), 1);
}

#[test]
fn followed_channels_are_read_from_their_tip_when_notified() {
    let mut rig = Rig::new(Duration::from_secs(5));
    let (mut cmd, mut fol) = rig.connect();
    rig.link.follow("news", Instant::now());
    rig.turn();
    let prime = rig.next(&mut cmd);
    assert_eq!(
        (prime[0].as_str(), prime[3].as_str()),
        ("EVALSHA", "t:{news}:s")
    );
    cmd.reply("*2\r\n$2\r\n40\r\n*0\r\n");
    let done = rig.done();
    assert!(
        matches!(done.as_slice(), [Done::Live { tip: 40, .. }]),
        "{done:?}"
    );
    // Read once from the tip (a notification may have come before it).
    assert_eq!(
        rig.next(&mut cmd),
        ["XREAD", "COUNT", "500", "STREAMS", "t:{news}:s", "40-0"]
    );
    cmd.reply(
        "*1\r\n*2\r\n$10\r\nt:{news}:s\r\n*1\r\n*2\r\n$4\r\n41-0\r\n*4\r\n$1\r\np\r\n$2\r\n40\r\n$1\r\nd\r\n$2\r\nhi\r\n",
    );
    let done = rig.done();
    match done.as_slice() {
        [Done::Entries { channel, entries }] => {
            assert_eq!(&**channel, "news");
            assert_eq!(
                entries[0],
                Entry {
                    id: 41,
                    prev: 40,
                    event: None,
                    data: "hi".into()
                }
            );
        }
        other => panic!("{other:?}"),
    }
    // A notification naming it (and one naming a channel not followed):
    // read again from the last id seen, nothing for the other.
    fol.reply(concat!(
        "*1\r\n*2\r\n$3\r\nt:n\r\n*2\r\n",
        "*2\r\n$3\r\n7-0\r\n*2\r\n$1\r\nc\r\n$4\r\nnews\r\n",
        "*2\r\n$3\r\n8-0\r\n*2\r\n$1\r\nc\r\n$5\r\nother\r\n",
    ));
    for _ in 0..5 {
        rig.turn();
    }
    assert_eq!(
        rig.next(&mut cmd),
        ["XREAD", "COUNT", "500", "STREAMS", "t:{news}:s", "41-0"]
    );
    // The next follow read goes on after the last notification.
    let read = rig.next(&mut fol);
    assert_eq!(read.last().map(String::as_str), Some("8-0"));
}
