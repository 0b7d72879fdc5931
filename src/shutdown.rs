//! Asking the loop to stop: a handle for other threads, and SIGTERM/SIGINT
//! read through the poll. Either starts a graceful shutdown.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::{Interest, Registry, Token, Waker};

/// Starts a graceful shutdown from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// The loop's side: whether a shutdown was asked for.
pub struct Stop {
    handle: ShutdownHandle,
    signals: Option<signal_hook_mio::v1_0::Signals>,
}

impl Stop {
    /// `waker` wakes the poll from other threads (token `waker_token`).
    pub fn new(registry: &Registry, waker_token: Token) -> io::Result<Stop> {
        Ok(Stop {
            handle: ShutdownHandle {
                flag: Arc::new(AtomicBool::new(false)),
                waker: Arc::new(Waker::new(registry, waker_token)?),
            },
            signals: None,
        })
    }

    pub fn handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// SIGTERM and SIGINT, readable on the poll as `token`.
    pub fn install_signals(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// The signal source was readable.
    pub fn read_signals(&mut self) {
        if let Some(signals) = self.signals.as_mut() {
            for sig in signals.pending() {
                log::info!("signal {sig} received: shutting down gracefully");
                self.handle.flag.store(true, Ordering::SeqCst);
            }
        }
    }

    pub fn requested(&self) -> bool {
        self.handle.flag.load(Ordering::SeqCst)
    }
}
