//! ssecast: a single-threaded Server-Sent Events hub.
//!
//! `server` is the event loop and the one place that ties the rooms
//! together: `reader` (a connection's requests: framing, pipelining),
//! `routes` (one handler per endpoint family), `stream` (the subscriber
//! write path), `channel` (the logs of encoded frames that subscribers read
//! through cursors), `timer` (the wheel that drives heartbeats and
//! deadlines); `conn` is one connection, `listener` the listening socket and
//! its limits, `clock` the loop's time, `shutdown` how it is asked to stop; `outbound` the
//! connections the hub opens (forward auth); `http` and `sse` the wire formats; `auth`
//! verifies subscribe tokens (pure), `grants` holds token streams' `sub` and the revocations,
//! `private` ties them to the loop (expiry, ending streams with a last event);
//! `idempotency` keeps the answers to publishes sent with an `Idempotency-Key`.

pub mod auth;
pub mod channel;
pub mod clock;
pub mod config;
pub mod conn;
pub mod grants;
pub mod http;
pub mod idempotency;
pub mod listener;
pub mod outbound;

pub mod reader;
pub mod routes;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod sse;
pub mod stats;
pub mod stream;
pub mod timer;

pub use config::{Config, ConfigError};
pub use server::Server;
pub use shutdown::ShutdownHandle;
