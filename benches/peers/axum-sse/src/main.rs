//! Benchmark peer: the SSE broadcaster a team would write with axum.
//!
//! * `GET /events` — an SSE stream of every broadcast event, with a keep-alive
//!   comment every 15 s.
//! * `POST /events/broadcast` — body `{"data": <string or any JSON>, "event": "optional"}`
//!   (ssecast's shape); answers `{"id":N,"subscribers":K}`.
//!
//! One tokio current-thread runtime and one `tokio::sync::broadcast` channel.
//! Usage: `axum-sse [BIND_ADDR]` (default `127.0.0.1:5002`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

/// One published event, shared by every subscriber.
#[derive(Clone)]
struct Message {
    id: u64,
    event: Option<Arc<str>>,
    data: Arc<str>,
}

struct AppState {
    tx: broadcast::Sender<Message>,
    next_id: AtomicU64,
}

#[derive(Deserialize)]
struct Publish {
    data: Value,
    event: Option<String>,
}

async fn events(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // A subscriber that lags behind the channel capacity skips what it missed.
    let stream = BroadcastStream::new(state.tx.subscribe()).filter_map(|msg| {
        let msg = msg.ok()?;
        let mut event = Event::default().id(msg.id.to_string()).data(&*msg.data);
        if let Some(name) = &msg.event {
            event = event.event(&**name);
        }
        Some(Ok(event))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn broadcast_event(
    State(state): State<Arc<AppState>>,
    Json(body): Json<Publish>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let data: Arc<str> = match body.data {
        Value::String(s) if !s.is_empty() => s.into(),
        Value::Null | Value::String(_) => {
            return Err((
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "data is required"})),
            ))
        }
        other => other.to_string().into(),
    };
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let message = Message {
        id,
        event: body.event.map(Into::into),
        data,
    };
    // `send` fails only when nobody is subscribed.
    let subscribers = state.tx.send(message).unwrap_or(0);
    Ok(Json(json!({"id": id, "subscribers": subscribers})))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5002".to_string());
    let (tx, _) = broadcast::channel(1024);
    let state = Arc::new(AppState {
        tx,
        next_id: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/events", get(events))
        .route("/events/broadcast", post(broadcast_event))
        .with_state(state);
    let listener = match tokio::net::TcpListener::bind(&bind).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("axum-sse: cannot bind {bind}: {err}");
            std::process::exit(2);
        }
    };
    eprintln!("listening on {bind}");
    if let Err(err) = axum::serve(listener, app).await {
        eprintln!("axum-sse: {err}");
        std::process::exit(1);
    }
}
