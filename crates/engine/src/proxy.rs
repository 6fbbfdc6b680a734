//! Request handling, as a sequence of phases. Each phase either passes the request on or answers
//! it; [`handle`] turns the outcome into the client's response.
//!
//! 1. [`check_request`](crate::headers::check_request): framing and size rules (400, 431).
//! 2. `redirect`: a listener with `redirect_to_https` answers 308 for everything.
//! 3. `route`: Host and path pick the upstream (404 when nothing matches).
//! 4. `cache` (cache-enabled routes, [`crate::caching`]): answer from the cache, or plan the
//!    fetch (fill, validation, bypass) whose response the cache then sees.
//! 5. `admit_body`: `Content-Length` over the limit is 413 before the body is read (so no
//!    `100 Continue` is sent); small bodies are read whole.
//! 6. `Outgoing::new`: hop-by-hop headers out, forwarding headers in; built once for every
//!    attempt that follows.
//! 7. `select`: a healthy backend (503 with `Retry-After` when there is none).
//! 8. `exchange`: a pooled connection, the request, the response head (502, 504).
//! 9. `downstream_response`: hop-by-hop headers out, `Via` in; the body streams through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::access_log::AccessRecord;
use crate::body::{read_request_body, RequestBodyError, UpstreamBody};
use crate::caching::{self, Completion, Plan};
use crate::conn::ConnActivity;
use crate::deadline::Deadlines;
use crate::engine::Shared;
use crate::error::{ProxyError, Side};
use crate::headers::{self, AddedFields, Forwarded};
use crate::listener::ListenerRuntime;
use crate::response::{Exchange, PendingAccess, ResponseBody, UpgradeRequest};
use crate::routes::normalize_host;
use crate::starved::StarvationWatch;
use crate::state::ProxyState;
use crate::stats::Stats;
use crate::tunnel::TunnelTimeouts;
use crate::upstream::{BackendHandle, PolicyRequest, Upstream};
use gatehouse_balance::Outcome;
use gatehouse_pool::{ConnectError, OriginBody, Payload, PooledConn, Progress, SendError};

/// What one downstream connection shares with each of its requests.
#[derive(Debug)]
pub struct ConnContext {
    /// The connection's place under `limits.max_connections` and in the connection count.
    /// Held here so that an upgraded connection (a WebSocket tunnel) can take it along: the
    /// tunnel outlives the HTTP connection task but is still the same client connection.
    pub slot: parking_lot::Mutex<Option<ConnSlot>>,
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    pub listener: Arc<ListenerRuntime>,
    pub shared: Arc<Shared>,
    pub activity: Arc<ConnActivity>,
    /// What the connection's requests make once and share: made by its first proxied request,
    /// and boxed, so that a connection's task does not carry it before then.
    reuse: std::sync::OnceLock<Box<ConnReuse>>,
}

/// See [`ConnContext::reuse`].
#[derive(Debug)]
struct ConnReuse {
    /// The client's address as an `X-Forwarded-For` element.
    forwarded_for: HeaderValue,
    /// The first absolute-form authority's `Host` value. HTTP/2 clients name one authority on
    /// every stream of a connection: shared, it saves each request a copy and its allocations.
    authority: std::sync::OnceLock<HeaderValue>,
    /// The timers of the upstream response timeouts, reused request after request.
    deadlines: Deadlines,
    /// HTTP/2: the streamed origin bodies the connection's watchdog looks after.
    starving: StarvationWatch,
}

impl ConnReuse {
    /// The `Host` value for an absolute-form target's `authority` (`None` if it cannot be one).
    fn host_for(&self, authority: &str) -> Option<HeaderValue> {
        if let Some(known) = self.authority.get() {
            if known.as_bytes() == authority.as_bytes() {
                return Some(known.clone());
            }
        }
        let value = HeaderValue::from_str(authority).ok()?;
        // Kept only for the first authority; another one (connection reuse across hosts) is
        // made each time.
        let _ = self.authority.set(value.clone());
        Some(value)
    }
}

/// See [`ConnContext::slot`].
#[derive(Debug)]
pub struct ConnSlot {
    pub permit: tokio::sync::OwnedSemaphorePermit,
    pub count: crate::stats::ConnectionCount,
}

impl ConnContext {
    /// A new connection's context: nothing made for its requests yet.
    pub fn new(
        slot: Option<ConnSlot>,
        peer: SocketAddr,
        listener: Arc<ListenerRuntime>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            slot: parking_lot::Mutex::new(slot),
            peer,
            scheme: "http",
            listener,
            shared,
            activity: Arc::new(ConnActivity::new()),
            reuse: std::sync::OnceLock::new(),
        }
    }

    pub fn with_scheme(self, scheme: &'static str) -> Self {
        Self { scheme, ..self }
    }

    fn reuse(&self) -> &ConnReuse {
        self.reuse.get_or_init(|| {
            Box::new(ConnReuse {
                forwarded_for: headers::forwarded_for(self.peer.ip()),
                authority: std::sync::OnceLock::new(),
                deadlines: Deadlines::default(),
                starving: StarvationWatch::default(),
            })
        })
    }

    /// The connection's watched HTTP/2 bodies, once a request has made the list.
    pub(crate) fn starvation_watch(&self) -> Option<&StarvationWatch> {
        self.reuse.get().map(|r| &r.starving)
    }
}

/// How a request was answered, before it becomes a response.
pub(crate) enum Reply {
    Proxied(http::response::Parts, OriginBody),
    /// Served by the cache: the response head and the stored body chunks (none for a `304`).
    Cached(Response<()>, Option<Arc<[Bytes]>>),
    Error(ProxyError),
    Redirect(HeaderValue),
}

/// Handles one request from a downstream connection. Never fails: every problem becomes a
/// response (or, when the client is gone, a response nobody reads).
pub async fn handle(req: Request<Incoming>, ctx: Arc<ConnContext>) -> Response<ResponseBody> {
    let state = ctx.shared.state.load_full();
    let stats = &ctx.shared.stats;
    stats
        .requests_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut exchange = Exchange::new(ctx.activity.begin_request());
    // The request id is made here only when the access log needs it; otherwise once the
    // request goes upstream (a cache hit has no use for one).
    let mut request_id = None;
    if let Some(log) = &state.access_log {
        let h = req.headers();
        let id = headers::request_id(h);
        let record = AccessRecord {
            client_ip: ctx.peer.ip(),
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            version: req.version(),
            request_id: id.clone(),
            referer: h.get(header::REFERER).cloned(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            upstream: None,
        };
        exchange.access = Some(Box::new(PendingAccess {
            log: Arc::clone(log),
            record,
            started: Instant::now(),
        }));
        request_id = Some(id);
    }

    let reply = forward(req, &ctx, &state, &mut exchange, request_id).await;
    let cache_status = exchange.cache_status;
    let mut response = match reply {
        Reply::Proxied(mut parts, body) => {
            headers::strip_hop_by_hop(&mut parts.headers);
            let body = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                crate::tunnel::open(&ctx, &mut parts, body.into_upgraded(), &mut exchange);
                None
            } else {
                Some(body)
            };
            headers::add_via(&mut parts.headers, parts.version);
            let status = parts.status.as_u16();
            // The client's response is HTTP/1.1 whatever the origin spoke; hyper adapts it to
            // the client's version.
            parts.version = Version::HTTP_11;
            let body = match body {
                Some(body) => {
                    let mut body = ResponseBody::upstream(body, exchange, status);
                    // An HTTP/2 stream can be starved of flow-control window while its
                    // connection looks fine.
                    if ctx.activity.watches_streams() {
                        body.watch_starvation(&ctx.reuse().starving);
                    }
                    body
                }
                None => ResponseBody::full(Bytes::new(), exchange, status),
            };
            Response::from_parts(parts, body)
        }
        Reply::Cached(head, chunks) => {
            let (parts, ()) = head.into_parts();
            let status = parts.status.as_u16();
            Response::from_parts(parts, ResponseBody::cached(chunks, exchange, status))
        }
        Reply::Error(error) => {
            if matches!(error, ProxyError::RequestTimeout) {
                Stats::bump(&ctx.shared.stats.timeouts.body);
            }
            error_response(error, exchange)
        }
        Reply::Redirect(location) => {
            let mut resp = Response::new(ResponseBody::full(Bytes::new(), exchange, 308));
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
    };
    if let Some(status) = cache_status {
        response
            .headers_mut()
            .insert(gatehouse_cache::CacheStatus::FIELD, status.header_value());
    }
    stats.count_response(response.status().as_u16());
    response
}

/// What a request asking to switch protocols needs kept until the origin agrees (`None` when it
/// does not ask). Rare, and kept out of `forward`'s body so that it stays inlined.
#[cold]
#[inline(never)]
fn upgrade_request(
    parts: &mut http::request::Parts,
    upstream: &Upstream,
    state: &ProxyState,
) -> Option<Box<UpgradeRequest>> {
    let protocol = upgrade_protocol(parts)?;
    Some(Box::new(UpgradeRequest {
        downstream: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        protocol,
        timeouts: TunnelTimeouts {
            idle: upstream.tunnel_timeout,
            send: state.limits.send_timeout(),
        },
    }))
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` plus `Upgrade`).
fn upgrade_protocol(parts: &http::request::Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten()
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
    ctx: &Arc<ConnContext>,
    state: &ProxyState,
    exchange: &mut Exchange,
    request_id: Option<HeaderValue>,
) -> Reply {
    let limits = &state.limits;
    let facts = match headers::check_request(&req, limits.max_header_size) {
        Ok(facts) => facts,
        Err(e) => return Reply::Error(e),
    };
    if exchange.request().had_ambiguous_framing() {
        return Reply::Error(ProxyError::BadRequest(
            "Content-Length with Transfer-Encoding",
        ));
    }
    if req.method() == Method::CONNECT {
        return Reply::Error(ProxyError::BadRequest("CONNECT is not proxied"));
    }
    let host = RequestHost::of(&req, facts.host);
    let host = host.as_str();
    if let Some(port) = ctx.listener.redirect_to_https() {
        return match redirect_location(host, port, req.uri()) {
            Some(location) => Reply::Redirect(location),
            None => Reply::Error(ProxyError::BadRequest("no host to redirect to")),
        };
    }
    let host_name = normalize_host(host);
    let Some(route) = state.router.find(&host_name, req.uri().path()) else {
        return Reply::Error(ProxyError::NoRoute);
    };
    let upstream = &route.upstream;
    let cache = state.cache.as_ref().filter(|_| route.cache);
    if facts
        .content_length
        .is_some_and(|len| len > limits.max_body_size)
    {
        return Reply::Error(ProxyError::BodyTooLarge);
    }
    // Only a request with a `Connection` field can ask for an upgrade.
    let may_upgrade = facts.has_connection;
    let (mut parts, incoming) = req.into_parts();
    if may_upgrade {
        exchange.upgrade = upgrade_request(&mut parts, upstream, state);
    }
    let plan = match cache {
        Some(cache) => {
            // Boxed, so that requests on routes without the cache do not carry its size. The
            // key keeps a non-default port: `site:8080` and `site:9090` are different origins.
            let lookup = crate::boxed::pin_in_place(|| {
                caching::lookup(
                    cache,
                    ctx,
                    upstream,
                    host,
                    &mut parts,
                    request_id.as_ref(),
                    exchange,
                )
            });
            match lookup.await {
                Ok(plan) => Some((cache, plan)),
                Err(reply) => return reply,
            }
        }
        None => None,
    };
    let body = match read_request_body(incoming, limits.max_body_size, limits.body_timeout()).await
    {
        Ok(body) => body,
        Err(e) => return Reply::Error(body_error(&e)),
    };
    let policy_request = upstream
        .uses_policy
        .then(|| policy_request(&parts, ctx, &host_name));
    let request_id = request_id.unwrap_or_else(|| headers::request_id(&parts.headers));
    // A copy only for a refetch, which only a revalidation can lead to: the first clone of a new
    // id costs an allocation (its bytes become shared).
    let refetch_id = matches!(plan, Some((_, Plan::Revalidate(..)))).then(|| request_id.clone());
    upstream.note_request();
    // When the request left, for the cache's age calculation (RFC 9111 §4.2.3); a clock read
    // only routes with the cache need.
    let request_time = plan.is_some().then(std::time::SystemTime::now);
    let upgrade = exchange.upgrade.as_ref().map(|u| &u.protocol);
    let mut outgoing = Outgoing::new(parts, body, ctx, request_id, upgrade);
    let reply = exchange_with_retries(
        upstream,
        &mut outgoing,
        ctx,
        policy_request.clone(),
        exchange,
    )
    .await;
    let (Some((cache, plan)), Some(request_time)) = (plan, request_time) else {
        return reply;
    };
    match caching::complete(cache, plan, reply, request_time, exchange) {
        Completion::Reply(reply) => reply,
        Completion::Refetch(parts) => {
            // The origin validated another representation than the stored one: fetch it plainly.
            exchange.cache_status = Some(gatehouse_cache::CacheStatus::Miss);
            // Always set here (a refetch follows a revalidation); a new id would do otherwise.
            let request_id = refetch_id.unwrap_or_else(|| headers::request_id(&parts.headers));
            let upgrade = exchange.upgrade.as_ref().map(|u| &u.protocol);
            let mut outgoing = Outgoing::new(parts, UpstreamBody::Empty, ctx, request_id, upgrade);
            // Boxed: a second exchange inline would double the size of every request's future.
            Box::pin(exchange_with_retries(
                upstream,
                &mut outgoing,
                ctx,
                policy_request,
                exchange,
            ))
            .await
        }
    }
}

/// Picks backends and sends the request, retrying when that is safe: a request that was never
/// sent may go to another backend whatever its method; one that was sent only when it is
/// idempotent and its body is held whole (replayable), and only while the retry budget lasts.
///
/// The request is built once by the caller ([`Outgoing`]) and passed by reference, not by
/// value: every by-value pass of a 260-byte request into an async function is a copy.
pub(crate) async fn exchange_with_retries(
    upstream: &Upstream,
    outgoing: &mut Outgoing,
    ctx: &ConnContext,
    policy_request: Option<PolicyRequest>,
    exchange: &mut Exchange,
) -> Reply {
    let client_ip = ctx.peer.ip();
    let max_retries = upstream.retries.max;
    let replayable = is_idempotent(&outgoing.head.method) && outgoing.body.known_length().is_some();
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error = ProxyError::NoHealthyBackend;
    for attempt in 0..=max_retries {
        let chosen = match &policy_request {
            // Boxed: only upstreams with a TypeScript policy pay for its future's size.
            Some(req) => match Box::pin(upstream.select_with_policy(req.clone(), &tried)).await {
                Some(i) => Some(i),
                None => upstream.select(client_ip, &tried),
            },
            None => upstream.select(client_ip, &tried),
        };
        let Some(index) = chosen else {
            return Reply::Error(last_error);
        };
        let handle = &upstream.handles[index];
        if std::mem::take(&mut outgoing.needs_host) {
            // HTTP/1.0 clients may omit Host; HTTP/1.1 origins require one.
            if let Ok(v) = HeaderValue::from_str(handle.pool.address()) {
                outgoing.head.headers.insert(header::HOST, v);
            }
        }
        if let Some(access) = &mut exchange.access {
            access.record.upstream = Some(handle.backend.url().to_owned());
        }
        exchange.backend = Some(handle.backend.begin_request());
        let started = Instant::now();
        let sent = send_upstream(upstream, handle, outgoing, replayable, ctx);
        match sent.await {
            Ok(response) => {
                let status = response.status();
                let outcome = if status.is_server_error() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                upstream.record(index, outcome, Some(started.elapsed()));
                let retryable_status = matches!(status.as_u16(), 502..=504);
                if retryable_status && replayable && attempt < max_retries && upstream.allow_retry()
                {
                    // Discard this answer (its connection closes with it, unless it was read
                    // whole already).
                    drop(response);
                    tried.push(index);
                    backoff(upstream, attempt).await;
                    continue;
                }
                let (parts, body) = response.into_parts();
                return Reply::Proxied(parts, body);
            }
            Err(error) => {
                if error.side() == Side::Downstream {
                    return Reply::Error(error);
                }
                if error.side() == Side::Upstream {
                    upstream.record(index, Outcome::Failure, None);
                }
                last_error = error;
                // A request none of which went out may go elsewhere, whatever its method.
                let sendable = replayable || !outgoing.spent;
                if attempt < max_retries && sendable && upstream.allow_retry() {
                    tried.push(index);
                    backoff(upstream, attempt).await;
                    continue;
                }
                return Reply::Error(last_error);
            }
        }
    }
    Reply::Error(last_error)
}

/// Full-jitter exponential backoff before retry number `attempt + 1`.
async fn backoff(upstream: &Upstream, attempt: u32) {
    let base = upstream
        .retries
        .backoff_ms
        .saturating_mul(1 << attempt.min(6));
    if base > 0 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(..=base))).await;
    }
}

/// GET, HEAD, OPTIONS, TRACE, PUT and DELETE (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn policy_request(parts: &http::request::Parts, ctx: &ConnContext, host: &str) -> PolicyRequest {
    PolicyRequest {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        host: host.to_owned(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(n, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (n.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
        client_ip: ctx.peer.ip().to_string(),
    }
}

/// The host the client asked for: the authority of an absolute-form URI, else the `Host` header
/// when it is visible ASCII. A view of the request's own bytes (a reference count, no copy),
/// so that it outlives the request being taken apart.
enum RequestHost {
    Absent,
    Authority(http::uri::Authority),
    Header(HeaderValue),
}

impl RequestHost {
    /// `host_field` is the request's `Host` field, found by `check_request`.
    fn of<B>(req: &Request<B>, host_field: Option<&HeaderValue>) -> Self {
        if let Some(authority) = req.uri().authority() {
            return Self::Authority(authority.clone());
        }
        match host_field {
            Some(h) => Self::Header(h.clone()),
            None => Self::Absent,
        }
    }

    /// The host as the client wrote it, port included; empty when there is none (or when the
    /// `Host` header is not visible ASCII).
    fn as_str(&self) -> &str {
        match self {
            Self::Absent => "",
            Self::Authority(a) => a.as_str(),
            Self::Header(h) => h.to_str().unwrap_or_default(),
        }
    }
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

fn body_error(e: &RequestBodyError) -> ProxyError {
    match e {
        RequestBodyError::TooLarge => ProxyError::BodyTooLarge,
        RequestBodyError::Timeout => ProxyError::RequestTimeout,
        RequestBodyError::Client(_) => ProxyError::BadRequest("malformed request body"),
    }
}

/// The request the origin sees, built once before a backend is chosen and kept, unconsumed, for
/// every attempt: the client encodes the head anew each time (a few hundred instructions, against
/// the copy of every request that a retry would otherwise need).
pub(crate) struct Outgoing {
    head: http::request::Parts,
    /// Written with the head's fields, not inserted among them.
    added: AddedFields,
    body: UpstreamBody,
    /// Some of the request went out (or may have: a timeout): from then on only a replayable
    /// request may be sent again.
    spent: bool,
    /// The client (HTTP/1.0) sent no `Host`: the first chosen backend's address stands in.
    needs_host: bool,
}

impl Outgoing {
    /// `upgrade` is the protocol a client asked to switch to, passed on to the origin.
    pub(crate) fn new(
        mut parts: http::request::Parts,
        body: UpstreamBody,
        ctx: &ConnContext,
        request_id: HeaderValue,
        upgrade: Option<&HeaderValue>,
    ) -> Self {
        let reuse = ctx.reuse();
        let h = &mut parts.headers;
        headers::strip_hop_by_hop(h);
        // `Expect: 100-continue` was answered by the proxy when it started reading the body.
        h.remove(header::EXPECT);
        let added = AddedFields::new(
            h,
            Forwarded {
                client_ip: &reuse.forwarded_for,
                proto: ctx.scheme,
                // An absolute-form target (every HTTP/2 request) names the host the origin
                // must see.
                target_host: parts
                    .uri
                    .authority()
                    .and_then(|a| reuse.host_for(a.as_str())),
                request_id,
                version: parts.version,
            },
        );
        let needs_host = !added.has_host();
        // A body held whole gets its exact length: the client's when it sent one (kept as it
        // came, here made exact), or one the upstream client adds. No body, no lookup.
        if let Some(len) = body.known_length().filter(|&len| len > 0) {
            if h.contains_key(header::CONTENT_LENGTH) {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
        }
        if let Some(protocol) = upgrade {
            h.insert(header::UPGRADE, protocol.clone());
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        // Origin-form: the origin sees the path and query, never the client's absolute URI.
        // (Every HTTP/2 request has an authority.) The path is kept as it is, not copied and
        // parsed.
        if parts.uri.authority().is_some() {
            parts.uri = match std::mem::take(&mut parts.uri).into_parts().path_and_query {
                Some(path) => Uri::from(path),
                None => Uri::from_static("/"),
            };
        }
        parts.version = Version::HTTP_11;
        Self {
            head: parts,
            added,
            body,
            spent: false,
            needs_host,
        }
    }

    /// Sends the request on `conn` and reads the response head; `body_timeout` bounds the pauses
    /// in the response body that follows.
    async fn send(
        &mut self,
        conn: PooledConn,
        body_timeout: Option<Duration>,
    ) -> Result<Response<OriginBody>, SendError> {
        let payload = match &mut self.body {
            UpstreamBody::Empty | UpstreamBody::Full(None) => Payload::Empty,
            UpstreamBody::Full(Some(data)) => Payload::Full(data),
            streaming => Payload::Stream(streaming),
        };
        let sent = conn
            .send(&self.head, self.added.iter(), payload, body_timeout)
            .await;
        if let Err(e) = &sent {
            self.spent |= e.progress() != Progress::Unsent;
        }
        sent
    }
}

/// Sends the request on a pooled connection and waits for the response head. When a *reused*
/// connection turns out to have been closed by the origin (the keep-alive race), the request is
/// replayed once on a new connection to the same backend; that is not a retry. A request is
/// replayed when none of it was sent, or when it is `replayable` (idempotent, its body held
/// whole) and no response byte came.
async fn send_upstream(
    upstream: &Upstream,
    target: &BackendHandle,
    outgoing: &mut Outgoing,
    replayable: bool,
    ctx: &ConnContext,
) -> Result<Response<OriginBody>, ProxyError> {
    let backend = &target.backend;
    let conn = checkout(target, false).await?;
    let reused = conn.is_reused();
    let timeout = upstream.response_timeout;
    let body_timeout = upstream.body_timeout;
    let deadlines = &ctx.reuse().deadlines;
    let mut result = deadlines
        .run(timeout, || outgoing.send(conn, body_timeout))
        .await;
    if let Some(Err(e)) = &result {
        if is_keep_alive_race(e, reused, replayable) {
            tracing::debug!(
                backend = backend.url(),
                "pooled connection was closed; replaying on a new one"
            );
            // Boxed: rare, and a second send inline would enlarge every request's future.
            result = Box::pin(async {
                let conn = checkout(target, true).await?;
                Ok::<_, ProxyError>(
                    deadlines
                        .run(timeout, || outgoing.send(conn, body_timeout))
                        .await,
                )
            })
            .await?;
        }
    }
    match result {
        Some(Ok(response)) => Ok(response),
        Some(Err(e)) => {
            let body_error = e
                .body_error()
                .and_then(|b| b.downcast_ref::<RequestBodyError>());
            if let Some(body_error) = body_error {
                return Err(self::body_error(body_error));
            }
            tracing::warn!(backend = backend.url(), error = %e, "upstream request failed");
            Err(ProxyError::UpstreamFailed)
        }
        None => {
            // Some of it may have gone out.
            outgoing.spent = true;
            tracing::warn!(backend = backend.url(), "upstream response timed out");
            Err(ProxyError::ResponseTimeout)
        }
    }
}

/// Whether a failed exchange on a reused connection may be the origin having closed it while it
/// was idle, and the request can be sent again on a new one.
fn is_keep_alive_race(e: &SendError, reused: bool, replayable: bool) -> bool {
    let resendable = e.progress() == Progress::Unsent || (e.is_unanswered_close() && replayable);
    reused && resendable
}

async fn checkout(target: &BackendHandle, new: bool) -> Result<PooledConn, ProxyError> {
    let checkout = if new {
        target.pool.checkout_new().await
    } else {
        target.pool.checkout().await
    };
    checkout.map_err(|e| {
        let url = target.backend.url();
        match e {
            ConnectError::PoolExhausted => {
                tracing::warn!(backend = url, "connection pool exhausted");
                ProxyError::PoolExhausted
            }
            ConnectError::Timeout => {
                tracing::warn!(backend = url, "upstream connect timed out");
                ProxyError::ConnectTimeout
            }
            e => {
                tracing::warn!(backend = url, error = %e, "upstream connect failed");
                ProxyError::ConnectFailed
            }
        }
    })
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
