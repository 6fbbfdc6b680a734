//! Request handling, as a sequence of phases. Each phase either passes the request on or answers
//! it; [`handle`] turns the outcome into the client's response.
//!
//! 1. [`check_request`](crate::headers::check_request): framing and size rules (400, 431).
//! 2. `redirect`: a listener with `redirect_to_https` answers 308 for everything.
//! 3. `route`: Host and path pick the upstream (404 when nothing matches).
//! 4. `admit_body`: `Content-Length` over the limit is 413 before the body is read (so no
//!    `100 Continue` is sent); small bodies are read whole.
//! 5. `select`: a healthy backend (503 with `Retry-After` when there is none).
//! 6. `upstream_request`: hop-by-hop headers out, forwarding headers in.
//! 7. `exchange`: a pooled connection, the request, the response head (502, 504).
//! 8. `downstream_response`: hop-by-hop headers out, `Via` in; the body streams through.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::access_log::AccessRecord;
use crate::body::{read_request_body, RequestBodyError, UpstreamBody};
use crate::conn::ConnActivity;
use crate::engine::Shared;
use crate::error::ProxyError;
use crate::headers::{self, Forwarded};
use crate::listener::ListenerRuntime;
use crate::response::{Exchange, ResponseBody};
use crate::routes::normalize_host;
use crate::state::ProxyState;
use crate::upstream::{BackendHandle, Upstream};
use gatehouse_pool::ConnectError;

/// What one downstream connection shares with each of its requests.
#[derive(Debug)]
pub struct ConnContext {
    pub peer: SocketAddr,
    pub listener: Arc<ListenerRuntime>,
    pub shared: Arc<Shared>,
    pub activity: Arc<ConnActivity>,
}

/// How a request was answered, before it becomes a response.
enum Reply {
    Proxied(http::response::Parts, Incoming),
    Error(ProxyError),
    Redirect(HeaderValue),
}

/// Handles one request from a downstream connection. Never fails: every problem becomes a
/// response (or, when the client is gone, a response nobody reads).
pub async fn handle(req: Request<Incoming>, ctx: Arc<ConnContext>) -> Response<ResponseBody> {
    let started = Instant::now();
    let state = ctx.shared.state.load_full();
    let stats = &ctx.shared.stats;
    stats
        .requests_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut exchange = Exchange::new(started, ctx.activity.begin_request());
    let request_id = headers::request_id(req.headers());
    if let Some(log) = &state.access_log {
        let h = req.headers();
        let record = AccessRecord {
            client_ip: ctx.peer.ip(),
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            version: req.version(),
            request_id: request_id.clone(),
            referer: h.get(header::REFERER).cloned(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            upstream: None,
        };
        exchange.access = Some((Arc::clone(log), record));
    }

    let reply = forward(req, &ctx, &state, &mut exchange, request_id).await;
    let response = match reply {
        Reply::Proxied(mut parts, body) => {
            headers::strip_hop_by_hop(&mut parts.headers);
            headers::add_via(&mut parts.headers, parts.version);
            let status = parts.status.as_u16();
            // The client's response is HTTP/1.1 whatever the origin spoke; hyper adapts it to
            // the client's version.
            parts.version = Version::HTTP_11;
            Response::from_parts(parts, ResponseBody::upstream(body, exchange, status))
        }
        Reply::Error(error) => error_response(error, exchange),
        Reply::Redirect(location) => {
            let mut resp = Response::new(ResponseBody::full(Bytes::new(), exchange, 308));
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
    };
    stats.count_response(response.status().as_u16());
    response
}

fn error_response(error: ProxyError, exchange: Exchange) -> Response<ResponseBody> {
    let status = error.status();
    if error.side() != crate::error::Side::Downstream {
        tracing::debug!(?error, "answered by the proxy");
    }
    let body = Bytes::from_static(error.message().as_bytes());
    let mut resp = Response::new(ResponseBody::full(body, exchange, status.as_u16()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if error.closes_connection() {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn forward(
    req: Request<Incoming>,
    ctx: &ConnContext,
    state: &ProxyState,
    exchange: &mut Exchange,
    request_id: HeaderValue,
) -> Reply {
    let limits = &state.limits;
    if let Err(e) = headers::check_request(&req, limits.max_header_size) {
        return Reply::Error(e);
    }
    if exchange.request().had_ambiguous_framing() {
        return Reply::Error(ProxyError::BadRequest(
            "Content-Length with Transfer-Encoding",
        ));
    }
    if req.method() == Method::CONNECT {
        return Reply::Error(ProxyError::BadRequest("CONNECT is not proxied"));
    }
    let host = request_host(&req);
    if let Some(port) = ctx.listener.redirect_to_https() {
        return match redirect_location(host.as_deref().unwrap_or(""), port, req.uri()) {
            Some(location) => Reply::Redirect(location),
            None => Reply::Error(ProxyError::BadRequest("no host to redirect to")),
        };
    }
    let host_name = normalize_host(host.as_deref().unwrap_or(""));
    let Some(upstream) = state.router.find(&host_name, req.uri().path()) else {
        return Reply::Error(ProxyError::NoRoute);
    };
    if let Some(len) = content_length(&req) {
        if len > limits.max_body_size {
            return Reply::Error(ProxyError::BodyTooLarge);
        }
    }
    let (parts, incoming) = req.into_parts();
    let body = match read_request_body(incoming, limits.max_body_size, limits.body_timeout()).await
    {
        Ok(body) => body,
        Err(e) => return Reply::Error(body_error(&e)),
    };
    let Some(backend) = upstream.select() else {
        return Reply::Error(ProxyError::NoHealthyBackend);
    };
    let request = upstream_request(parts, body, ctx, request_id, backend.pool.address());
    if let Some((_, record)) = &mut exchange.access {
        record.upstream = Some(backend.backend.url().to_owned());
    }
    exchange.backend = Some(backend.backend.begin_request());
    match send_upstream(upstream, backend, request, exchange).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Reply::Proxied(parts, body)
        }
        Err(e) => Reply::Error(e),
    }
}

/// The host the client asked for: the `Host` header, or the authority of an absolute-form URI.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.as_str().to_owned());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

fn redirect_location(host: &str, port: u16, uri: &Uri) -> Option<HeaderValue> {
    let name = normalize_host(host);
    if name.is_empty() {
        return None;
    }
    let bracketed = if name.contains(':') {
        format!("[{name}]")
    } else {
        name.into_owned()
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{bracketed}{path}")
    } else {
        format!("https://{bracketed}:{port}{path}")
    };
    HeaderValue::from_str(&location).ok()
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn body_error(e: &RequestBodyError) -> ProxyError {
    match e {
        RequestBodyError::TooLarge => ProxyError::BodyTooLarge,
        RequestBodyError::Timeout => ProxyError::RequestTimeout,
        RequestBodyError::Client(_) => ProxyError::BadRequest("malformed request body"),
    }
}

/// Builds the request the origin sees.
fn upstream_request(
    mut parts: http::request::Parts,
    body: UpstreamBody,
    ctx: &ConnContext,
    request_id: HeaderValue,
    backend_address: &str,
) -> Request<UpstreamBody> {
    let client_version = parts.version;
    let absolute_host = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    // `Expect: 100-continue` was answered by the proxy when it started reading the body.
    h.remove(header::EXPECT);
    if let Some(host) = absolute_host {
        h.insert(header::HOST, host);
    }
    let host = h.get(header::HOST).cloned();
    if host.is_none() {
        // HTTP/1.0 clients may omit Host; HTTP/1.1 origins require one.
        if let Ok(v) = HeaderValue::from_str(backend_address) {
            h.insert(header::HOST, v);
        }
    }
    headers::add_forwarded(
        h,
        Forwarded {
            client_ip: ctx.peer.ip(),
            proto: "http",
            host: host.as_ref(),
            request_id,
        },
    );
    headers::add_via(h, client_version);
    if let Some(len) = body.known_length() {
        if len > 0 || h.contains_key(header::CONTENT_LENGTH) {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    // Origin-form: the origin sees the path and query, never the client's absolute URI.
    if parts.uri.authority().is_some() {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// Sends the request on a pooled connection and waits for the response head.
async fn send_upstream(
    upstream: &Upstream,
    target: &BackendHandle,
    request: Request<UpstreamBody>,
    exchange: &mut Exchange,
) -> Result<Response<Incoming>, ProxyError> {
    let backend = &target.backend;
    let mut conn = match target.pool.checkout().await {
        Ok(conn) => conn,
        Err(ConnectError::PoolExhausted) => {
            tracing::warn!(backend = backend.url(), "connection pool exhausted");
            return Err(ProxyError::PoolExhausted);
        }
        Err(e) => {
            backend.record_failure();
            tracing::warn!(backend = backend.url(), error = %e, "upstream connect failed");
            return Err(match e {
                ConnectError::Timeout => ProxyError::ConnectTimeout,
                _ => ProxyError::ConnectFailed,
            });
        }
    };
    let response = tokio::time::timeout(upstream.response_timeout, conn.send(request)).await;
    match response {
        Ok(Ok(response)) => {
            exchange.upstream_conn = Some(conn);
            Ok(response)
        }
        Ok(Err(e)) => {
            if let Some(body_err) = find_body_error(&e) {
                return Err(body_error(body_err));
            }
            backend.record_failure();
            tracing::warn!(backend = backend.url(), error = %e, "upstream request failed");
            Err(ProxyError::UpstreamFailed)
        }
        Err(_) => {
            backend.record_failure();
            tracing::warn!(backend = backend.url(), "upstream response timed out");
            Err(ProxyError::ResponseTimeout)
        }
    }
}

/// When the upstream exchange failed because the client's body did, the client gets the blame.
fn find_body_error(e: &hyper::Error) -> Option<&RequestBodyError> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(body) = err.downcast_ref::<RequestBodyError>() {
            return Some(body);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_host_and_path() {
        let uri: Uri = "/a/b?c=1".parse().expect("uri");
        let loc = redirect_location("Example.com:8080", 8443, &uri).expect("location");
        assert_eq!(loc, "https://example.com:8443/a/b?c=1");
        let loc = redirect_location("example.com", 443, &uri).expect("location");
        assert_eq!(loc, "https://example.com/a/b?c=1");
        assert!(redirect_location("", 443, &uri).is_none());
    }
}
