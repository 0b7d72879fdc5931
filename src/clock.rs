//! The loop's clock: one reading per turn, milliseconds since start, the
//! wall clock in microseconds (event ids) and the `Date` header (formatted
//! once a second); and the jitter source for `retry:`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub struct Clock {
    started: Instant,
    /// The wall clock at `started`, in ms since the epoch.
    started_unix_ms: u64,
    now: Instant,
    now_ms: u64,
    date: (u64, String),
}

impl Clock {
    pub fn new(started: Instant) -> Clock {
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            started,
            started_unix_ms,
            now: started,
            now_ms: 0,
            date: (u64::MAX, String::new()),
        }
    }

    /// Reads the clock: once per loop turn.
    pub fn set(&mut self, now: Instant) {
        self.now = now;
        self.now_ms = now.saturating_duration_since(self.started).as_millis() as u64;
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The wall clock when the loop's clock started (ms since the epoch).
    pub fn started_unix_ms(&self) -> u64 {
        self.started_unix_ms
    }

    /// `now` as milliseconds since start.
    pub fn ms(&self) -> u64 {
        self.now_ms
    }

    /// The wall clock as the loop sees it (its start, plus the monotonic
    /// time since), in ms since the epoch: token times are compared and
    /// scheduled on this one basis.
    pub fn unix_ms(&self) -> u64 {
        self.started_unix_ms + self.now_ms
    }

    pub fn unix_secs(&self) -> u64 {
        self.unix_ms() / 1000
    }

    /// The loop's instant of `unix_secs` (seconds since the epoch); at the
    /// latest ten years from now (the timer wheel's reach is 13 years).
    pub fn instant_of_unix(&self, unix_secs: u64) -> Instant {
        let ms = unix_secs
            .saturating_mul(1000)
            .saturating_sub(self.started_unix_ms);
        let latest = self.now_ms + 10 * 365 * 86_400_000;
        self.started + std::time::Duration::from_millis(ms.min(latest))
    }

    pub fn uptime_secs(&self) -> f64 {
        (self.now - self.started).as_secs_f64()
    }

    /// The wall clock in microseconds since the epoch (event ids).
    pub fn unix_micros(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64)
    }

    /// The `Date` header value, formatted once per second.
    pub fn http_date(&mut self) -> &str {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.date.0 != secs {
            self.date = (secs, httpdate::fmt_http_date(now));
        }
        &self.date.1
    }
}

/// xorshift64: jitter only, not security.
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded() -> Jitter {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Jitter(seed | 1)
    }

    pub fn draw(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
