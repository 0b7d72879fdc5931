//! A keep-alive publisher connection: sends one request at a time and waits for
//! its answer (no pipelining), reconnecting when the server closes.

use std::io::{self, Read, Write};
use std::net::SocketAddrV4;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::http::{parse_head, Framing, Head};
use crate::net::{connect_nb, err_name, would_block};

/// The events carried by the request in flight.
#[derive(Clone, Copy, Debug)]
pub struct Inflight {
    pub first: u64,
    pub count: usize,
    pub sent_ns: u64,
}

pub enum Outcome {
    Answered { inflight: Inflight, status: u16 },
    Failed { inflight: Inflight, reason: String },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Connecting,
    Idle,
    Busy,
    Dead,
}

pub struct Publisher {
    addr: SocketAddrV4,
    token: Token,
    stream: Option<TcpStream>,
    state: State,
    out: Vec<u8>,
    off: usize,
    inbuf: Vec<u8>,
    head: Option<Head>,
    inflight: Option<Inflight>,
    pub reconnects: u32,
    pub last_error: Option<String>,
}

const MAX_RECONNECTS: u32 = 50;

impl Publisher {
    pub fn new(addr: SocketAddrV4, token: Token, registry: &Registry) -> Publisher {
        let mut p = Publisher {
            addr,
            token,
            stream: None,
            state: State::Dead,
            out: Vec::new(),
            off: 0,
            inbuf: Vec::new(),
            head: None,
            inflight: None,
            reconnects: 0,
            last_error: None,
        };
        p.connect(registry);
        p
    }

    fn connect(&mut self, registry: &Registry) {
        self.stream = None;
        self.inbuf.clear();
        self.head = None;
        match connect_nb(self.addr, None) {
            Ok(mut s) => {
                match registry.register(&mut s, self.token, Interest::READABLE | Interest::WRITABLE)
                {
                    Ok(()) => {
                        self.stream = Some(s);
                        self.state = State::Connecting;
                    }
                    Err(e) => self.die(format!("register {}", err_name(&e))),
                }
            }
            Err(e) => self.die(format!("connect {}", err_name(&e))),
        }
    }

    fn die(&mut self, reason: String) {
        self.last_error = Some(reason);
        self.state = State::Dead;
        self.stream = None;
    }

    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    pub fn is_busy(&self) -> bool {
        self.state == State::Busy
    }

    pub fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    /// Sends a request; call only when idle.
    pub fn send(&mut self, req: Vec<u8>, inflight: Inflight) -> Option<Outcome> {
        self.out = req;
        self.off = 0;
        self.inflight = Some(inflight);
        self.state = State::Busy;
        self.flush()
    }

    fn flush(&mut self) -> Option<Outcome> {
        let s = self.stream.as_mut()?;
        while self.off < self.out.len() {
            match s.write(&self.out[self.off..]) {
                Ok(n) => self.off += n,
                Err(e) if would_block(&e) => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(format!("write {}", err_name(&e))),
            }
        }
        None
    }

    /// The connection broke with a request in flight: report it, reconnect later.
    fn lost(&mut self, reason: String) -> Option<Outcome> {
        self.stream = None;
        self.state = State::Dead;
        self.last_error = Some(reason.clone());
        let inflight = self.inflight.take()?;
        Some(Outcome::Failed { inflight, reason })
    }

    /// Re-establishes a broken connection (bounded number of times).
    pub fn revive(&mut self, registry: &Registry) {
        if self.state == State::Dead && self.reconnects < MAX_RECONNECTS {
            self.reconnects += 1;
            self.connect(registry);
        }
    }

    pub fn on_event(&mut self, registry: &Registry) -> Option<Outcome> {
        if self.state == State::Connecting {
            let s = self.stream.as_ref()?;
            match s.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.die(format!("connect {}", err_name(&e)));
                    return None;
                }
                Ok(None) => {}
            }
            match s.peer_addr() {
                Ok(_) => self.state = State::Idle,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                Err(e) => {
                    self.die(format!("connect {}", err_name(&e)));
                    return None;
                }
            }
        }
        if self.state == State::Busy && self.off < self.out.len() {
            if let Some(o) = self.flush() {
                return Some(o);
            }
        }
        self.read(registry)
    }

    fn read(&mut self, registry: &Registry) -> Option<Outcome> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let s = self.stream.as_mut()?;
            match s.read(&mut buf) {
                Ok(0) => {
                    // A close-delimited answer ends here.
                    if let (Some(h), true) = (&self.head, self.state == State::Busy) {
                        if matches!(h.framing, Framing::Close) {
                            let status = h.status;
                            return self.complete(status, true, registry);
                        }
                    }
                    if self.state == State::Busy {
                        return self.lost("closed by server".into());
                    }
                    // Idle keep-alive connection closed: reconnect quietly.
                    self.connect(registry);
                    return None;
                }
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if would_block(&e) => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(format!("read {}", err_name(&e))),
            }
            if self.state != State::Busy {
                self.inbuf.clear();
                continue;
            }
            if self.head.is_none() {
                match parse_head(&self.inbuf, false) {
                    Ok(Some(h)) => {
                        self.inbuf.drain(..h.len);
                        self.head = Some(h);
                    }
                    Ok(None) => continue,
                    Err(e) => return self.lost(e),
                }
            }
            let Some(h) = self.head.as_mut() else {
                continue;
            };
            let body = std::mem::take(&mut self.inbuf);
            match h.framing.feed(&body, &mut |_| {}) {
                Ok(true) => {
                    let (status, close) = (h.status, h.close);
                    return self.complete(status, close, registry);
                }
                Ok(false) => {}
                Err(e) => return self.lost(e),
            }
        }
    }

    fn complete(&mut self, status: u16, close: bool, registry: &Registry) -> Option<Outcome> {
        self.head = None;
        self.inbuf.clear();
        self.state = State::Idle;
        let inflight = self.inflight.take()?;
        if close {
            self.connect(registry);
        }
        Some(Outcome::Answered { inflight, status })
    }
}
