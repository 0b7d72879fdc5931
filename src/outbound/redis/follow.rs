//! The link's following: the follow connection (the notification and
//! control streams, one blocking read at a time, from explicit ids), and
//! the reads (not blocking) of the channels the notifications named.

use std::time::Instant;

use mio::Registry;

use super::io_side::hello;
use super::pipe::{self, Sock};
use super::script;
use super::{Cmd, Done, Fol, Link, State, BLOCK_MS, FETCH_KEYS, NOTIFY_COUNT, PAGE};
use crate::outbound::resp::Reply;

impl Link {
    pub(super) fn read_follow(&mut self, registry: &Registry, now: Instant) {
        if self.follow.state == State::Connecting {
            match self.follow.sock.as_ref().map(Sock::connected) {
                Some(Ok(true)) => {
                    self.follow.state = State::Handshake;
                    let deadline = now + self.timeout;
                    hello(
                        &mut self.follow.session,
                        || Fol::Hello,
                        &self.auth,
                        self.db,
                        deadline,
                    );
                    if self.follow.session.is_idle() {
                        self.follow_ready();
                    }
                }
                Some(Ok(false)) => return,
                Some(Err(e)) => return self.fail_follow(registry, now, &format!("connect: {e}")),
                None => return,
            }
        }
        let Some(sock) = self.follow.sock.as_mut() else {
            return;
        };
        if let Err(e) = pipe::read_all(sock, &mut self.follow.session, &mut self.buf) {
            return self.fail_follow(registry, now, &format!("read: {e}"));
        }
        loop {
            match self.follow.session.next() {
                Ok(Some((Fol::Hello, reply))) => {
                    if let Reply::Error(e) = reply {
                        return self.fail_follow(registry, now, &format!("handshake refused: {e}"));
                    }
                    if self.follow.session.is_idle() {
                        self.follow_ready();
                    }
                }
                Ok(Some((Fol::Tip, reply))) => {
                    if let Err(why) = self.on_tip(&reply) {
                        return self.fail_follow(registry, now, &why);
                    }
                }
                Ok(Some((Fol::Read, reply))) => {
                    self.reading = false;
                    if let Err(why) = self.on_read(&reply) {
                        return self.fail_follow(registry, now, &why);
                    }
                }
                Ok(None) => return,
                Err(e) => return self.fail_follow(registry, now, &format!("protocol: {}", e.0)),
            }
        }
    }

    fn follow_ready(&mut self) {
        self.follow.state = State::Ready;
        log::info!("redis {}: connected (follow connection)", self.shown);
        // Where the notification stream is now; everything followed is
        // read once from its last id, so nothing published while this
        // connection was away is missed.
        let n = self.keys.notify();
        self.follow.session.push(
            Fol::Tip,
            &[b"XREVRANGE", n.as_bytes(), b"+", b"-", b"COUNT", b"1"],
            Instant::now() + self.timeout,
        );
    }

    /// The notification stream's last id, before the first follow read.
    fn on_tip(&mut self, reply: &Reply) -> Result<(), String> {
        let id = match reply {
            Reply::Array(items) if items.is_empty() => b"0-0".to_vec(),
            Reply::Array(items) => {
                script::raw_fields(&items[0])
                    .ok_or("bad notification entry")?
                    .0
            }
            _ => return Err(format!("unexpected XREVRANGE reply {reply:?}")),
        };
        self.notify_last = Some(id);
        self.all_dirty();
        // A server that answers: reconnects start from the shortest delay
        // again (not before, or one that accepts and fails would be
        // reconnected to at full speed).
        self.follow.failures = 0;
        Ok(())
    }

    /// A follow read's reply: revocations are handed on; each notification
    /// naming a followed channel makes it dirty (read this turn).
    fn on_read(&mut self, reply: &Reply) -> Result<(), String> {
        if reply.is_error() {
            return Err(format!("follow read refused: {reply:?}"));
        }
        let Reply::Array(streams) = reply else {
            return Ok(()); // timed out in Redis: nothing new
        };
        let ctl = self.keys.control();
        let notify = self.keys.notify();
        for s in streams {
            let Reply::Array(kv) = s else {
                return Err("follow reply is not [key, entries]".into());
            };
            let [k, Reply::Array(entries)] = kv.as_slice() else {
                return Err("follow reply is not [key, entries]".into());
            };
            let key = k.as_bytes().unwrap_or_default();
            if key == notify.as_bytes() {
                for e in entries {
                    let (id, fields) = script::raw_fields(e).ok_or("bad notification entry")?;
                    self.notify_last = Some(id);
                    // This process's own publishes come from their replies
                    // (`mark_dirty` when one could not be appended).
                    let own = fields
                        .iter()
                        .any(|(k, v)| k == b"o" && v == self.process.as_bytes());
                    if own {
                        continue;
                    }
                    let named = fields.iter().find(|(k, _)| k == b"c");
                    let name = named.and_then(|(_, v)| std::str::from_utf8(v).ok());
                    if let Some(f) = name.and_then(|n| self.followed.get_mut(n)) {
                        f.dirty = true;
                        self.any_dirty = true;
                    }
                }
                if entries.len() >= NOTIFY_COUNT {
                    // Possibly behind the stream's trimming: read all.
                    self.all_dirty();
                }
            } else if key == ctl.as_bytes() {
                for e in entries {
                    let (id, fields) = script::raw_fields(e).ok_or("bad control entry")?;
                    self.ctl_last = id;
                    let own = fields
                        .iter()
                        .any(|(k, v)| k == b"o" && v == self.process.as_bytes());
                    if !own {
                        self.done.push(Done::Control(fields));
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the follow read when none is in flight (at most once per
    /// loop turn: the loop calls this after handling readiness).
    pub(super) fn arm_follow(&mut self, now: Instant) {
        if self.follow.state != State::Ready || self.reading {
            return;
        }
        let Some(notify_last) = self.notify_last.as_deref() else {
            return;
        };
        let ctl = self.keys.control();
        let notify = self.keys.notify();
        let count = NOTIFY_COUNT.to_string();
        let block = BLOCK_MS.to_string();
        let args: [&[u8]; 10] = [
            b"XREAD",
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
            ctl.as_bytes(),
            notify.as_bytes(),
            &self.ctl_last,
            notify_last,
        ];
        let deadline = now + std::time::Duration::from_millis(BLOCK_MS) + self.timeout;
        self.follow.session.push(Fol::Read, &args, deadline);
        self.reading = true;
    }

    /// Reads, without blocking, the followed channels the notification
    /// stream named (one command for up to `FETCH_KEYS` channels; one
    /// fetch per channel in flight, a channel named again meanwhile is
    /// read again after it).
    pub(super) fn fetch_dirty(&mut self, now: Instant) {
        if !self.is_up() || self.reloading || !self.any_dirty {
            return;
        }
        self.any_dirty = false;
        loop {
            let mut channels: Vec<Box<str>> = Vec::new();
            let mut args: Vec<Vec<u8>> = vec![
                b"XREAD".to_vec(),
                b"COUNT".to_vec(),
                PAGE.to_string().into_bytes(),
                b"STREAMS".to_vec(),
            ];
            let mut ids = Vec::new();
            for (name, f) in self.followed.iter_mut() {
                let Some(last) = f.last else { continue };
                if !f.dirty || f.fetching {
                    continue;
                }
                f.dirty = false;
                f.fetching = true;
                channels.push(name.clone());
                args.push(f.key.clone().into_bytes());
                ids.push(format!("{last}-0").into_bytes());
                if channels.len() == FETCH_KEYS {
                    break;
                }
            }
            if channels.is_empty() {
                return;
            }
            let full = channels.len() == FETCH_KEYS;
            args.extend(ids);
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            self.cmd.session.write(&refs);
            self.cmd
                .session
                .awaits(Cmd::Fetch { channels }, now + self.timeout);
            if !full {
                return;
            }
        }
    }

    /// A followed channel is read from its last id this turn (a publish of
    /// this process that could not be appended from its reply).
    pub fn mark_dirty(&mut self, channel: &str) {
        if let Some(f) = self.followed.get_mut(channel) {
            f.dirty = true;
            self.any_dirty = true;
        }
    }

    /// Every followed channel is read again (a connection came back: a
    /// notification may have been missed meanwhile).
    pub(super) fn all_dirty(&mut self) {
        for f in self.followed.values_mut() {
            f.dirty = true;
            f.fetching = false;
        }
        self.any_dirty = true;
    }
}
