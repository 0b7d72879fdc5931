//! Private channels, the server's side: who may subscribe (the token
//! check of `routes::subscribe::authorise` with this hub's keys and clock,
//! then the revocations of `grants.rs`), holding a token stream until its
//! end (the connection's `Lane::Expiry` timer), and ending streams with a
//! last event (`stream::Ending`) when the token expires or
//! `POST /events/close` revokes them.

use std::net::IpAddr;

use crate::conn::Phase;
use crate::grants::Revoked;
use crate::http::Request;
use crate::routes::admin;
use crate::routes::publish;
use crate::routes::subscribe::{self, Authorised, Policy, Target};
use crate::routes::{Refusal, Reply};
use crate::server::Server;
use crate::stream::Ending;
use crate::timer::{Lane, Timer};

impl Server {
    /// Authorises a stream: a token or an open channel, then no
    /// revocation in force for the channel or the token's `sub`.
    pub(crate) fn authorise_stream(
        &mut self,
        req: &Request<'_>,
        target: &Target<'_>,
    ) -> Result<Authorised, Refusal> {
        let now_unix = self.clock.unix_secs();
        let policy = Policy {
            keys: &self.cfg.subscribe_keys,
            public: &self.cfg.public_channels,
            cookie: &self.cfg.subscribe_cookie,
            now_unix,
            ask_application: self.asker.is_some(),
        };
        // `Ask`: the connection waits for the application (forward auth);
        // a bar on the channel applies before it is even asked.
        let authorised = subscribe::authorise(req, target, &policy)?;
        let sub = match &authorised {
            Authorised::Until { sub, .. } => sub.as_deref(),
            _ => None,
        };
        if let Some(what) = self.grants.barred(&target.channel, sub, now_unix) {
            return Err(admin::revoked(&what));
        }
        if let Authorised::Until { sub: Some(s), .. } = &authorised {
            log::debug!("stream of '{}' for sub '{s}'", target.channel);
        }
        Ok(authorised)
    }

    /// A stream whose authorisation ends attached: remember its `sub` (if
    /// any), and close it at `end_unix` (`Attach::grant`) on its
    /// `Lane::Expiry` timer.
    pub(crate) fn hold_grant(&mut self, key: usize, end_unix: u64, sub: Option<Box<str>>) {
        if let Some(sub) = sub {
            self.grants.hold(key, &sub);
        }
        let at = self.clock.instant_of_unix(end_unix);
        self.wheel.schedule(Timer::Conn(key, Lane::Expiry), at);
    }

    /// A stream's `Lane::Expiry` timer came: its token has ended.
    pub(crate) fn on_expiry(&mut self, key: usize) {
        log::debug!("token of stream {key} expired; closing it");
        self.end_with(key, Ending::TokenExpired);
    }

    /// Ends a stream with a last event of `kind` (`stream::Ending`); a
    /// subscriber that has anything unsent is simply closed. The write path
    /// sends the event, and `write_stream` closes once it is out (or the
    /// write timeout drops it).
    pub(crate) fn end_with(&mut self, key: usize, kind: Ending) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Stream(sub) = &mut c.phase else {
            return;
        };
        if !sub.begin_ending(kind, &self.hub.get(sub.channel).log) {
            return self.close(key);
        }
        self.write_stream(key);
    }

    /// `POST /events/close`: bars the channel or sub, then ends the
    /// matching streams with `event: closed`. Answers `{"closed": N}`.
    pub(crate) fn close_streams(
        &mut self,
        req: &Request<'_>,
        body: &[u8],
        client: IpAddr,
        cors: &[String],
    ) -> Result<Reply, Refusal> {
        publish::check_credential(req, client, &self.cfg)?;
        let close = admin::decode_close(req, body)?;
        let now_unix = self.clock.unix_secs();
        let until = match close.bar_secs {
            0 => 0,
            secs => now_unix.saturating_add(secs),
        };
        if until > 0
            && self
                .grants
                .revoke(close.what.clone(), until, now_unix)
                .is_err()
        {
            return Err(admin::table_full());
        }
        let closed = self.apply_revocation(&close.what, until);
        // Every other process closes its own streams as the control
        // entry reaches it (`{"closed"}` counts this process's).
        if self.redis.is_some() {
            self.share_revocation(&close.what, until);
        }
        log::info!("closed {closed} stream(s): {:?}", close.what);
        Ok(admin::answer(closed, cors))
    }

    /// Bars `what` until `until` (Unix seconds; 0: no bar) and ends the
    /// matching streams with `event: closed`; returns how many.
    pub(crate) fn apply_revocation(&mut self, what: &Revoked, until: u64) -> usize {
        let now_unix = self.clock.unix_secs();
        if until > now_unix {
            // Already barred when it came from this process's own request.
            let _ = self.grants.revoke(what.clone(), until, now_unix);
            // Cached answers of the application would let it back in.
            if let Some(asker) = self.asker.as_mut() {
                match what {
                    Revoked::Channel(name) => {
                        asker.purge_channel(name);
                    }
                    Revoked::Sub(_) => asker.purge_all(),
                }
            }
        }
        let keys: Vec<usize> = match what {
            Revoked::Channel(name) => self.hub.find(name).map_or_else(Vec::new, |ch| {
                let subs = &self.hub.get(ch).subscribers;
                subs.iter().map(|&k| k as usize).collect()
            }),
            Revoked::Sub(sub) => self.grants.of_sub(sub),
        };
        for &key in &keys {
            self.end_with(key, Ending::Closed);
        }
        keys.len()
    }
}
