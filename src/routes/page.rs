//! `GET /`, the built-in page (one HTML file compiled in, no external
//! assets), and `GET /favicon.ico`.

use std::net::IpAddr;

use super::{Refusal, Reply};
use crate::config::Config;
use crate::http::HttpError;
use crate::stats::Reject;

/// The built-in page.
pub const UI_PAGE: &str = include_str!("ui/index.html");

/// The page, when it is switched on and the client may publish from it.
pub fn ui(cfg: &Config, client: IpAddr) -> Result<Reply, Refusal> {
    if !cfg.ui {
        return Err(Refusal::new(
            HttpError::new(404, "the built-in page is switched off (--ui false)"),
            Reject::NotFound,
        ));
    }
    if cfg.publish_token.is_none() && !client.is_loopback() {
        return Err(Refusal::new(
            HttpError::new(
                403,
                "the built-in page is served only to loopback when no publish token is configured",
            ),
            Reject::Forbidden,
        ));
    }
    Ok(Reply {
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: UI_PAGE.as_bytes().to_vec(),
        headers: vec![
            "Cache-Control: no-cache".into(),
            "X-Content-Type-Options: nosniff".into(),
            "Content-Security-Policy: default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'".into(),
        ],
    })
}

/// Browsers ask for it on every page; there is none.
pub fn favicon() -> Reply {
    Reply {
        status: 204,
        content_type: "",
        body: Vec::new(),
        headers: vec!["Cache-Control: max-age=86400".into()],
    }
}
