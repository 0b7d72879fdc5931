//! A private `redis-server` for one test: its own temporary directory, a
//! unix socket in it, no TCP port, no persistence. Ready when it answers
//! `PING` on the socket; on drop it is resumed (it may have been stopped)
//! and killed by its PID, and the directory removed, whatever the test did.
//!
//! Without `redis-server` on the PATH (or at /usr/bin) the test fails: CI
//! installs Debian's package (`.ci/run`), nothing skips itself.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

fn redis_server_path() -> PathBuf {
    let from_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("redis-server"))
            .find(|f| f.is_file())
    });
    from_path.unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"))
}

impl RedisServer {
    /// Starts one with `extra` config arguments (`["--appendonly", "yes"]`).
    pub fn start(extra: &[&str]) -> RedisServer {
        static N: AtomicUsize = AtomicUsize::new(0);
        let bin = redis_server_path();
        assert!(
            bin.is_file(),
            "redis-server not found (PATH or /usr/bin): install Debian's redis-server"
        );
        let dir = std::env::temp_dir().join(format!(
            "ssecast-rs-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the redis directory");
        let socket = dir.join("redis.sock");
        let child = Command::new(&bin)
            .args([
                "--daemonize",
                "no",
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700"])
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut r = RedisServer { child, dir, socket };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server exited ({st}) before answering: {log}");
            }
            if self.ping() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {} within 10 s",
                self.socket.display()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// `PING` on the socket answered `+PONG` (not `-LOADING`).
    pub fn ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got == b"+PONG\r\n"
    }

    /// The hub's `--redis-url` for this server.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal with the `kill` command (no libc in the tests).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("CONT");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
