//! Redis mode's publishes: sent to Redis, answered when Redis has them (or
//! with the answer stored under the same Idempotency-Key), appended to the
//! local ring at once when they follow its last event.

use std::time::{Duration, Instant};

use crate::channel::Stamp;
use crate::http::HttpError;
use crate::outbound::redis::{Appended, Event, Failure};
use crate::routes::publish::Published;
use crate::routes::Reply;
use crate::server::Server;

/// One event of a publish in flight: channel, name, data, the channel's
/// local subscribers when it was sent.
type Kept = (Box<str>, Option<Box<str>>, Box<str>, usize);

/// A publish waiting for Redis.
pub(crate) struct Pending {
    key: usize,
    keep_alive: bool,
    cors: Vec<String>,
    batch: bool,
    /// `(channel, event, data, local subscribers)` per event.
    events: Vec<Kept>,
    body_hash: String,
    sent: Instant,
}

impl Server {
    // ---- publishing ---------------------------------------------------------

    /// Sends a validated publish to Redis; the connection reads nothing
    /// more until it is answered. `Err`: answer this at once.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::session) fn publish_to_redis(
        &mut self,
        key: usize,
        events: &[crate::routes::publish::Publish<'_>],
        stored: Option<(String, String)>,
        keep_alive: bool,
        cors: &[String],
        batch: bool,
    ) -> Result<(), Reply> {
        let call = self.scaled.call();
        let now = self.clock.now();
        let mut kept = Vec::with_capacity(events.len());
        let mut subs = Vec::with_capacity(events.len());
        for e in events {
            let n = self
                .hub
                .find(&e.channel)
                .map_or(0, |ch| self.hub.get(ch).subscribers.len());
            subs.push(n);
            kept.push((
                Box::<str>::from(&*e.channel),
                e.event.as_deref().map(Box::from),
                Box::<str>::from(&*e.data),
                n,
            ));
        }
        let (body_hash, prefix) = match &stored {
            Some((scope, body)) => {
                let s: Vec<String> = subs.iter().map(usize::to_string).collect();
                (
                    body.clone(),
                    Some((scope.as_str(), format!("{body}|{}|", s.join(",")))),
                )
            }
            None => (String::new(), None),
        };
        let wire: Vec<Event<'_>> = events
            .iter()
            .map(|e| Event {
                channel: &e.channel,
                event: e.event.as_deref(),
                data: &e.data,
            })
            .collect();
        let link = self
            .redis
            .as_mut()
            .ok_or_else(|| unavailable("no link", cors))?;
        let prefix = prefix.as_ref().map(|(s, p)| (*s, p.as_str()));
        link.publish(call, &wire, prefix, now)
            .map_err(|f| failure_reply(&f, self.cfg.scale.redis_timeout, cors))?;
        self.scaled.publishes.insert(
            call,
            Pending {
                key,
                keep_alive,
                cors: cors.to_vec(),
                batch,
                events: kept,
                body_hash,
                sent: now,
            },
        );
        self.scaled.awaiting.insert(key, call);
        // The link answers within its timeout; this is the backstop.
        self.after(
            key,
            self.cfg.scale.redis_timeout * 2 + Duration::from_secs(1),
        );
        Ok(())
    }

    pub(in crate::session) fn on_published(
        &mut self,
        call: u64,
        result: Result<Appended, Failure>,
    ) {
        let Some(p) = self.scaled.publishes.remove(&call) else {
            return;
        };
        let now = self.clock.now();
        let cors = p.cors.clone();
        let reply = match result {
            Ok(Appended::Ids(ids)) if ids.len() == p.events.len() => {
                self.stats
                    .redis_publish
                    .observe(now.duration_since(p.sent).as_micros() as u64);
                self.stats.events_published += ids.len() as u64;
                for ((ch_name, ev, data, _), &(id, prev)) in p.events.iter().zip(&ids) {
                    self.append_own(ch_name, ev.as_deref(), data, id, prev);
                }
                let published: Vec<Published<'_>> = p
                    .events
                    .iter()
                    .zip(&ids)
                    .map(|((c, _, _, n), &(id, _))| Published {
                        id,
                        channel: c,
                        subscribers: *n,
                    })
                    .collect();
                let body = crate::routes::publish::answer(&published, p.batch);
                Reply::json(200, body, &[], &cors)
            }
            Ok(Appended::Ids(_)) => unavailable("Redis answered a different number of ids", &cors),
            Ok(Appended::Stored(s)) => self.stored_answer(&p, &s),
            Err(f) => failure_reply(&f, self.cfg.scale.redis_timeout, &cors),
        };
        if self.scaled.awaiting.get(&p.key) != Some(&call) {
            return; // the client left
        }
        self.scaled.awaiting.remove(&p.key);
        self.send(p.key, &reply, p.keep_alive, false);
        // Its deadline is the idle one again, then what it sent next.
        self.after(p.key, self.cfg.idle_timeout);
        self.drive(p.key);
    }

    /// An answer stored under the same Idempotency-Key: repeated when the
    /// body is the same, 422 otherwise.
    fn stored_answer(&mut self, p: &Pending, s: &str) -> Reply {
        let mut parts = s.splitn(3, '|');
        let (hash, subs, ids) = (parts.next(), parts.next(), parts.next());
        if hash != Some(p.body_hash.as_str()) {
            let e = HttpError::new(422, "this Idempotency-Key was used with a different body");
            return Reply::error(&e, &[], &p.cors);
        }
        let subs: Vec<usize> = subs
            .unwrap_or("")
            .split(',')
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        let ids: Vec<u64> = ids
            .unwrap_or("")
            .split(',')
            .filter_map(|n| n.parse().ok())
            .collect();
        let published: Vec<Published<'_>> = p
            .events
            .iter()
            .zip(ids.chunks(2))
            .zip(subs.iter().chain(std::iter::repeat(&0)))
            .map(|(((c, _, _, _), pair), n)| Published {
                id: pair[0],
                channel: c,
                subscribers: *n,
            })
            .collect();
        if published.len() != p.events.len() {
            return unavailable("the stored answer does not match this request", &p.cors);
        }
        let body = crate::routes::publish::answer(&published, p.batch);
        Reply::json(200, body, &["Idempotent-Replayed: true"], &p.cors)
    }

    /// This process's own publish, acknowledged: appended to the local ring
    /// at once when it follows that ring's last event (otherwise the follow
    /// read brings it, in its place).
    fn append_own(&mut self, channel: &str, event: Option<&str>, data: &str, id: u64, prev: u64) {
        let Some(ch) = self.hub.find(channel) else {
            return;
        };
        let c = self.hub.get(ch);
        if c.synced && c.log.last_id() == prev {
            self.append_at(ch, event, data, id);
        }
    }

    pub(in crate::session) fn append_at(
        &mut self,
        ch: u32,
        event: Option<&str>,
        data: &str,
        id: u64,
    ) {
        let now = Stamp {
            unix_us: id,
            mono_ms: self.clock.ms(),
        };
        if let Err(e) = self.append_event(ch, event, data, now) {
            log::warn!("an event from Redis does not fit the local history: {e:?}");
        }
    }
}

fn unavailable(why: &str, cors: &[String]) -> Reply {
    let e = HttpError::new(
        503,
        format!("Redis is unavailable ({why}); nothing was published"),
    );
    Reply::error(&e, &["Retry-After: 1"], cors)
}

fn failure_reply(f: &Failure, timeout: Duration, cors: &[String]) -> Reply {
    let e = match f {
        Failure::Unavailable(why) => HttpError::new(
            503,
            format!("Redis is unavailable ({why}); nothing was published"),
        ),
        Failure::Unknown(why) => HttpError::new(
            503,
            format!(
                "Redis did not answer ({why}; --redis-timeout {}s): the publish may or may not \
                 have been applied; retry with the same Idempotency-Key header to make the retry safe",
                timeout.as_secs_f64()
            ),
        ),
        Failure::Refused(why) => HttpError::new(503, format!("Redis refused the publish: {why}")),
    };
    Reply::error(&e, &["Retry-After: 1"], cors)
}
