//! Path rewriting behind a reverse proxy that forwards `/prefix/api/...` without stripping
//! the prefix: `server.base_path` is removed before routing, so routes stay prefix-free.

use axum::{extract::Request, http::Uri};

pub fn strip_base_path(base: &str, request: &mut Request) {
    if !base.is_empty()
        && let Some(rest) = request.uri().path().strip_prefix(base)
        && (rest.is_empty() || rest.starts_with('/'))
    {
        let rest = if rest.is_empty() { "/" } else { rest };
        let path_and_query = match request.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
}
