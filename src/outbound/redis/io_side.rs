//! The link's side facing Redis: connecting and reconnecting, the
//! handshake (AUTH, SELECT, the eviction policy check, loading the
//! scripts), reading replies and handing each to what asked for it,
//! deadlines; the command connection's replies (the follow connection is
//! `follow.rs`).

use std::time::Instant;

use mio::{Registry, Token};

use super::pipe::{self, Session, Sock};
use super::script::{self, Appended};
use super::{Cmd, Done, Failure, Line, Link, State, CMD, FOLLOW, PAGE, SCRIPTS};
use crate::outbound::resp::Reply;

impl<W> Line<W> {
    /// Opens the socket when a retry is due.
    fn connect(
        &mut self,
        target: &pipe::Target,
        registry: &Registry,
        now: Instant,
    ) -> Result<(), String> {
        if self.state != State::Down || self.retry_at.is_some_and(|t| t > now) {
            return Ok(());
        }
        self.retry_at = None;
        let mut sock = Sock::connect(target).map_err(|e| format!("connect: {e}"))?;
        sock.register(registry, self.token)
            .map_err(|e| format!("register: {e}"))?;
        self.sock = Some(sock);
        self.state = State::Connecting;
        Ok(())
    }

    fn close(&mut self, registry: &Registry, now: Instant, random: u64) -> Vec<W> {
        if let Some(mut s) = self.sock.take() {
            s.deregister(registry);
        }
        self.state = State::Down;
        self.retry_at = Some(now + pipe::backoff(self.failures, random));
        self.failures = self.failures.saturating_add(1);
        self.session.take_waiting()
    }
}

/// A handshake for one connection: AUTH and SELECT as needed.
pub(super) fn hello<W>(
    session: &mut Session<W>,
    w: impl Fn() -> W,
    auth: &Option<(Option<String>, String)>,
    db: u32,
    deadline: Instant,
) {
    match auth {
        Some((Some(user), pass)) => {
            session.push(w(), &[b"AUTH", user.as_bytes(), pass.as_bytes()], deadline)
        }
        Some((None, pass)) => session.push(w(), &[b"AUTH", pass.as_bytes()], deadline),
        None => {}
    }
    if db != 0 {
        session.push(w(), &[b"SELECT", db.to_string().as_bytes()], deadline);
    }
}

impl Link {
    /// The next moment `tick` has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        [
            self.cmd.retry_at,
            self.follow.retry_at,
            self.cmd.session.oldest_deadline(),
            self.follow.session.oldest_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Once per loop turn: reconnects that are due, late replies, the
    /// follow read, and writing what was queued.
    pub fn tick(&mut self, now: Instant, registry: &Registry) {
        if self.cmd.session.oldest_deadline().is_some_and(|d| d <= now) {
            self.fail_cmd(registry, now, "Redis did not answer in time", true);
        }
        if self
            .follow
            .session
            .oldest_deadline()
            .is_some_and(|d| d <= now)
        {
            self.fail_follow(registry, now, "the follow read was not answered in time");
        }
        let due = |state: State, at: Option<Instant>| {
            state == State::Down && at.is_some_and(|t| t <= now)
        };
        if due(self.cmd.state, self.cmd.retry_at) || due(self.follow.state, self.follow.retry_at) {
            match self.target() {
                Ok(Some(target)) => {
                    if let Err(e) = self.cmd.connect(&target, registry, now) {
                        self.fail_cmd(registry, now, &e, false);
                    }
                    if let Err(e) = self.follow.connect(&target, registry, now) {
                        self.fail_follow(registry, now, &e);
                    }
                }
                Ok(None) => {
                    // A lookup is under way: look again shortly.
                    let soon = Some(now + std::time::Duration::from_millis(20));
                    self.cmd.retry_at = self.cmd.retry_at.map(|_| soon).unwrap_or(None);
                    self.follow.retry_at = self.follow.retry_at.map(|_| soon).unwrap_or(None);
                }
                Err(e) => {
                    self.note_error(&e);
                    let r = self.random();
                    for line in [&mut self.cmd.retry_at, &mut self.follow.retry_at] {
                        if line.is_some() {
                            *line = Some(now + pipe::backoff(5, r));
                        }
                    }
                }
            }
        }
        self.arm_follow(now);
        self.send_publishes(now);
        self.fetch_dirty(now);
        self.flush(registry, now);
    }

    /// Readiness of one of the two connections.
    pub fn ready(&mut self, t: Token, now: Instant, registry: &Registry) {
        if t == CMD {
            self.read_cmd(registry, now);
        } else if t == FOLLOW {
            self.read_follow(registry, now);
        }
        self.arm_follow(now);
        self.send_publishes(now);
        self.fetch_dirty(now);
        self.flush(registry, now);
    }

    fn flush(&mut self, registry: &Registry, now: Instant) {
        if let Some(s) = self.cmd.sock.as_mut() {
            if self.cmd.state != State::Connecting {
                if let Err(e) = self.cmd.session.flush(s) {
                    self.fail_cmd(registry, now, &format!("write: {e}"), false);
                }
            }
        }
        if let Some(s) = self.follow.sock.as_mut() {
            if self.follow.state != State::Connecting {
                if let Err(e) = self.follow.session.flush(s) {
                    self.fail_follow(registry, now, &format!("write: {e}"));
                }
            }
        }
    }

    /// The address to connect to, when known.
    fn target(&mut self) -> Result<Option<pipe::Target>, String> {
        match &mut self.target {
            super::Where::Unix(t) => Ok(Some(t.clone())),
            super::Where::Tcp(r) => Ok(r.get()?.map(pipe::Target::Tcp)),
        }
    }

    fn note_error(&mut self, why: &str) {
        if self.stats.last_error.as_deref() != Some(why) {
            log::warn!("redis {}: {why}", self.shown);
        }
        self.stats.last_error = Some(why.to_string());
    }

    /// Drops the command connection: publishes in flight fail (timed out:
    /// their outcome is unknown), reads are queued again.
    fn fail_cmd(&mut self, registry: &Registry, now: Instant, why: &str, timed_out: bool) {
        self.note_error(why);
        let was_ready = self.cmd.state == State::Ready;
        if let super::Where::Tcp(r) = &mut self.target {
            // The name may point elsewhere now (a failover).
            r.forget();
        }
        let r = self.random();
        let waiting = self.cmd.close(registry, now, r);
        // Gathered but not sent: nothing of them was published.
        for call in std::mem::take(&mut self.batch).calls {
            self.done.push(Done::Published {
                call,
                result: Err(Failure::Unavailable(why.to_string())),
            });
        }
        let mut requeue = Vec::new();
        for w in waiting {
            match w {
                // Sent: it may have run, or may still run.
                Cmd::Publish { calls, .. } => {
                    for call in calls {
                        self.unknown(call, why, timed_out);
                    }
                }
                Cmd::Wait { calls } => {
                    for call in calls {
                        if self.replicating.remove(&call).is_some() {
                            self.unknown(call, why, timed_out);
                        }
                    }
                }
                c @ (Cmd::Replay { .. } | Cmd::Prime { .. } | Cmd::Control { .. }) => {
                    requeue.push(c)
                }
                // Read again once the connection is back (`all_dirty`).
                Cmd::Fetch { .. } => {}
                _ => {}
            }
        }
        for c in requeue.into_iter().rev() {
            self.queued.push_front(c);
        }
        self.reloading = false;
        if was_ready {
            log::warn!(
                "redis {}: connection lost; publishes answer 503 until it is back",
                self.shown
            );
        }
    }

    fn unknown(&mut self, call: u64, why: &str, timed_out: bool) {
        let why = if timed_out {
            format!("no answer within {}s", self.timeout.as_secs_f64())
        } else {
            why.to_string()
        };
        self.done.push(Done::Published {
            call,
            result: Err(Failure::Unknown(why)),
        });
    }

    pub(super) fn fail_follow(&mut self, registry: &Registry, now: Instant, why: &str) {
        self.note_error(why);
        let r = self.random();
        self.follow.close(registry, now, r);
        self.reading = false;
        self.notify_last = None;
    }

    fn read_cmd(&mut self, registry: &Registry, now: Instant) {
        if self.cmd.state == State::Connecting {
            match self.cmd.sock.as_ref().map(Sock::connected) {
                Some(Ok(true)) => {
                    self.cmd.state = State::Handshake;
                    let deadline = now + self.timeout;
                    hello(
                        &mut self.cmd.session,
                        || Cmd::Hello,
                        &self.auth,
                        self.db,
                        deadline,
                    );
                    self.cmd.session.push(
                        Cmd::Policy,
                        &[b"CONFIG", b"GET", b"maxmemory-policy"],
                        deadline,
                    );
                    for (i, s) in SCRIPTS.iter().enumerate() {
                        self.cmd.session.push(
                            Cmd::Load(i),
                            &[b"SCRIPT", b"LOAD", s.as_bytes()],
                            deadline,
                        );
                    }
                }
                Some(Ok(false)) => return,
                Some(Err(e)) => {
                    return self.fail_cmd(registry, now, &format!("connect: {e}"), false)
                }
                None => return,
            }
        }
        let Some(sock) = self.cmd.sock.as_mut() else {
            return;
        };
        if let Err(e) = pipe::read_all(sock, &mut self.cmd.session, &mut self.buf) {
            return self.fail_cmd(registry, now, &format!("read: {e}"), false);
        }
        loop {
            match self.cmd.session.next() {
                Ok(Some((w, reply))) => {
                    if let Err(why) = self.on_cmd_reply(w, reply, now) {
                        return self.fail_cmd(registry, now, &why, false);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    return self.fail_cmd(registry, now, &format!("protocol: {}", e.0), false)
                }
            }
        }
    }

    fn on_cmd_reply(&mut self, w: Cmd, reply: Reply, now: Instant) -> Result<(), String> {
        let code = reply.error_code().map(str::to_string);
        match w {
            Cmd::Hello => {
                if let Reply::Error(e) = reply {
                    return Err(format!("handshake refused: {e}"));
                }
            }
            Cmd::Policy => match &reply {
                Reply::Array(kv) if kv.len() == 2 => {
                    let policy = kv[1].as_str().unwrap_or("?");
                    if policy != "noeviction" {
                        log::warn!(
                            "redis {}: maxmemory-policy is '{policy}', not 'noeviction': Redis may evict whole \
                             channel streams, and their events are then lost (clients see history-lost)",
                            self.shown
                        );
                    }
                }
                _ => log::warn!("redis {}: cannot check maxmemory-policy ({reply:?}); make sure it is noeviction", self.shown),
            },
            Cmd::Load(i) => {
                let sha = reply
                    .as_str()
                    .filter(|_| !reply.is_error())
                    .ok_or_else(|| format!("SCRIPT LOAD failed: {reply:?} (Redis 7.0 or later is needed)"))?;
                self.shas[i] = Some(sha.to_string());
                if i == SCRIPTS.len() - 1 {
                    self.reloading = false;
                    if self.cmd.state == State::Handshake {
                        self.cmd.state = State::Ready;
                        self.cmd.failures = 0;
                        self.stats.reconnects += 1;
                        log::info!("redis {}: connected (command connection)", self.shown);
                        self.stats.last_error = None;
                    }
                    // Fetches lost with the old connection are made again.
                    self.all_dirty();
                    while let Some(c) = self.queued.pop_front() {
                        self.send_cmd(c, now);
                    }
                }
            }
            Cmd::Publish { calls, args } => {
                if code.as_deref() == Some("NOSCRIPT") {
                    return self.resend(Cmd::Publish { calls, args }, now);
                }
                let results: Vec<Result<Appended, Failure>> = match &reply {
                    Reply::Error(e) => calls.iter().map(|_| Err(Failure::Refused(e.clone()))).collect(),
                    r => match script::parse_publishes(r) {
                        Some(v) if v.len() == calls.len() => v.into_iter().map(Ok).collect(),
                        _ => {
                            let why = format!("unexpected publish reply {r:?}");
                            calls.iter().map(|_| Err(Failure::Unknown(why.clone()))).collect()
                        }
                    },
                };
                for (call, result) in calls.into_iter().zip(results) {
                    match result {
                        Ok(a @ Appended::Ids(_)) if self.wait_replicas > 0 => {
                            self.replicating.insert(call, a);
                        }
                        result => self.done.push(Done::Published { call, result }),
                    }
                }
            }
            Cmd::Wait { calls } => {
                let got = reply.as_int().unwrap_or(0);
                for call in calls {
                    if let Some(a) = self.replicating.remove(&call) {
                        let result = if got >= self.wait_replicas as i64 {
                            Ok(a)
                        } else {
                            Err(Failure::Refused(format!(
                                "the event is on the primary but only {got} of {} replicas acknowledged it in time",
                                self.wait_replicas
                            )))
                        };
                        self.done.push(Done::Published { call, result });
                    }
                }
            }
            Cmd::Replay { call, args } => {
                if code.as_deref() == Some("NOSCRIPT") {
                    return self.resend(Cmd::Replay { call, args }, now);
                }
                if code.is_some() {
                    // LOADING, BUSY...: try again once the connection is back.
                    return Err(format!("replay refused: {reply:?}"));
                }
                let (tip, entries) = script::parse_replay(&reply)
                    .ok_or_else(|| format!("unexpected replay reply {reply:?}"))?;
                self.done.push(Done::Replayed { call, tip, entries });
            }
            Cmd::Prime { channel } => {
                if code.as_deref() == Some("NOSCRIPT") {
                    return self.resend(Cmd::Prime { channel }, now);
                }
                let (tip, _) = script::parse_replay(&reply)
                    .ok_or_else(|| format!("unexpected tip reply {reply:?}"))?;
                if let Some(f) = self.followed.get_mut(&channel) {
                    if f.last.is_none() {
                        f.last = Some(tip);
                        // Read once from the tip: a notification may have
                        // come before the tip was known.
                        f.dirty = true;
                        self.any_dirty = true;
                        f.fetching = false;
                        self.done.push(Done::Live { channel, tip });
                    }
                }
            }
            Cmd::Fetch { channels } => {
                // Those named again while this was in flight are due now.
                self.any_dirty = true;
                for c in &channels {
                    if let Some(f) = self.followed.get_mut(c) {
                        f.fetching = false;
                    }
                }
                if reply.is_error() {
                    for c in &channels {
                        if let Some(f) = self.followed.get_mut(c) {
                            f.dirty = true;
                        self.any_dirty = true;
                        }
                    }
                    return Err(format!("read refused: {reply:?}"));
                }
                let streams = script::parse_xread(&reply)
                    .ok_or_else(|| format!("unexpected read reply {reply:?}"))?;
                for (key, entries) in streams {
                    let Some(name) = self.keys.channel_of(&key) else {
                        continue;
                    };
                    let Some(f) = self.followed.get_mut(name.as_str()) else {
                        continue; // no longer followed
                    };
                    if entries.len() >= PAGE {
                        f.dirty = true;
                        self.any_dirty = true; // more after these
                    }
                    if let Some(last) = entries.last() {
                        f.last = Some(f.last.map_or(last.id, |l| l.max(last.id)));
                    }
                    self.done.push(Done::Entries {
                        channel: name.into(),
                        entries,
                    });
                }
            }
            Cmd::Control { .. } => {
                if reply.is_error() {
                    log::warn!("redis {}: a revocation could not be shared: {reply:?}", self.shown);
                }
            }
        }
        Ok(())
    }

    /// `NOSCRIPT` (the script cache was flushed): load the scripts again,
    /// then this call, behind them: calls refused together are re-sent in
    /// the order they were refused, which is the order they were sent.
    fn resend(&mut self, c: Cmd, now: Instant) -> Result<(), String> {
        if !self.reloading {
            self.reloading = true;
            let deadline = now + self.timeout;
            for (i, s) in SCRIPTS.iter().enumerate() {
                self.cmd
                    .session
                    .push(Cmd::Load(i), &[b"SCRIPT", b"LOAD", s.as_bytes()], deadline);
            }
        }
        self.send_cmd(c, now);
        Ok(())
    }
}
