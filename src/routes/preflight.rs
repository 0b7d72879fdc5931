//! CORS: the headers a response carries for the request's origin, and the
//! answer to an `OPTIONS` preflight.

use super::{Refusal, Reply, Route};
use crate::config::Cors;
use crate::http::{HttpError, Request};
use crate::stats::Reject;

/// `Vary` and, for an allowed origin, `Access-Control-Allow-*`; nothing
/// when CORS is off.
pub fn cors_headers(cors: &Cors, origin: Option<&str>) -> Vec<String> {
    if !cors.enabled() {
        return Vec::new();
    }
    let mut h = vec!["Vary: Origin".to_string()];
    if let Some(allow) = origin.and_then(|o| cors.allow_origin(o)) {
        h.push(format!("Access-Control-Allow-Origin: {allow}"));
        if cors.credentials {
            h.push("Access-Control-Allow-Credentials: true".to_string());
        }
    }
    h
}

/// `OPTIONS`: without `Access-Control-Request-Method` a plain `Allow`;
/// a preflight from an allowed origin gets what it asks for.
pub fn preflight(cors: &Cors, req: &Request<'_>, route: Route) -> Result<Reply, Refusal> {
    let allow = route.allow();
    let empty = |headers| Reply {
        status: 204,
        content_type: "",
        body: Vec::new(),
        headers,
    };
    if req.preflight_method.is_none() {
        return Ok(empty(vec![format!("Allow: {allow}")]));
    }
    let Some(acao) = req.origin.and_then(|o| cors.allow_origin(o)) else {
        return Err(Refusal::new(
            HttpError::new(403, "origin not allowed by --cors-origins"),
            Reject::Forbidden,
        ));
    };
    let mut headers = vec![
        format!("Access-Control-Allow-Origin: {acao}"),
        "Vary: Origin".to_string(),
        format!("Access-Control-Allow-Methods: {allow}"),
        "Access-Control-Allow-Headers: Content-Type, Authorization, Last-Event-ID, Cache-Control"
            .to_string(),
        "Access-Control-Max-Age: 600".to_string(),
    ];
    if cors.credentials {
        headers.push("Access-Control-Allow-Credentials: true".to_string());
    }
    Ok(empty(headers))
}
