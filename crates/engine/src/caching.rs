//! The cache phase of request handling. `gatehouse-cache` decides (RFC 9111); this module does
//! the I/O around its decisions: serving stored responses, sending conditional requests,
//! streaming admitted responses into the cache, and the one background refresh that
//! `stale-while-revalidate` hands out.

use std::sync::Arc;
use std::time::SystemTime;

use gatehouse_cache::{
    strip_conditionals, Admission, Cache, CacheRequest, CacheStatus, CachedResponse, Fill, Lookup,
    Ranged, ResponseTimes, Revalidation,
};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;

use crate::body::UpstreamBody;
use crate::conn::ConnActivity;
use crate::error::{ProxyError, Side};
use crate::headers;
use crate::proxy::{exchange_with_retries, ConnContext, Outgoing, Reply};
use crate::response::Exchange;
use crate::upstream::Upstream;

/// What the rest of the request does for the cache.
pub(crate) enum Plan {
    /// Not cacheable; an unsafe method's response may still invalidate stored ones.
    Bypass(CacheRequest),
    /// Nothing stored: the origin's response may be admitted.
    Fill(CacheRequest, Fill),
    /// A stored response is being validated with the origin; the plain request (without any
    /// conditionals) is kept for a refetch should the origin validate another representation.
    Revalidate(
        CacheRequest,
        Revalidation,
        Option<Box<http::request::Parts>>,
    ),
}

/// What became of the origin's answer.
pub(crate) enum Completion {
    Reply(Reply),
    /// Send this request again, without conditionals (RFC 9111 §4.3.4: the 304 did not match).
    Refetch(http::request::Parts),
}

/// A copy of the request head without conditionals, for a refetch.
fn plain_copy(parts: &http::request::Parts) -> Option<Box<http::request::Parts>> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return None;
    }
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    *head.headers_mut() = parts.headers.clone();
    let (mut copy, ()) = head.into_parts();
    strip_conditionals(&mut copy.headers);
    Some(Box::new(copy))
}

/// Looks the request up. `Err` carries the answer when the cache has it (or `only-if-cached`
/// cannot be satisfied); `Ok` the plan for going upstream, with `parts` already adjusted
/// (conditionals stripped for a fill, added for a validation).
pub(crate) async fn lookup(
    cache: &Cache,
    ctx: &Arc<ConnContext>,
    upstream: &Arc<Upstream>,
    host: &str,
    parts: &mut http::request::Parts,
    request_id: Option<&HeaderValue>,
    exchange: &mut Exchange,
) -> Result<Plan, Reply> {
    // The headers move into the cache's view of the request, so a hit copies none; every other
    // outcome goes on to the origin and takes a copy back.
    let headers = std::mem::take(&mut parts.headers);
    let request = CacheRequest::with_headers(ctx.scheme, host, &parts.method, &parts.uri, headers);
    let lookup = cache.lookup_coalesced(&request, SystemTime::now).await;
    exchange.cache_status = Some(lookup.status());
    if !matches!(lookup, Lookup::Hit(_)) {
        parts.headers = request.headers().clone();
    }
    match lookup {
        Lookup::Hit(stored) => Err(serve(&stored, &request)),
        Lookup::Stale { response, refresh } => {
            if let Some(revalidation) = refresh {
                spawn_refresh(
                    cache.clone(),
                    Arc::clone(ctx),
                    Arc::clone(upstream),
                    host.to_owned(),
                    parts,
                    revalidation,
                    request_id
                        .cloned()
                        .unwrap_or_else(|| headers::request_id(request.headers())),
                );
            }
            Err(serve(&response, &request))
        }
        Lookup::Unsatisfiable => Err(Reply::Error(ProxyError::NotCached)),
        Lookup::Bypass(_) => Ok(Plan::Bypass(request)),
        Lookup::Miss(fill) => {
            strip_conditionals(&mut parts.headers);
            Ok(Plan::Fill(request, fill))
        }
        Lookup::Revalidate(revalidation) => {
            let plain = plain_copy(parts);
            revalidation.prepare_request(&mut parts.headers);
            Ok(Plan::Revalidate(request, revalidation, plain))
        }
    }
}

/// A stored response, `304` when it satisfies the client's own conditional request, or the
/// `206`/`416` for its `Range` (conditionals first, RFC 9110 §13.2.2).
fn serve(stored: &CachedResponse, request: &CacheRequest) -> Reply {
    if let Some(not_modified) = stored.not_modified(request) {
        return Reply::Cached(not_modified, None);
    }
    match request
        .ranges()
        .then(|| stored.ranged(request.headers()))
        .flatten()
    {
        Some(Ranged::Partial(head, body)) => Reply::Cached(head, Some(body)),
        Some(Ranged::Unsatisfiable(head)) => Reply::Cached(head, None),
        None => Reply::Cached(stored.response_head(), Some(stored.shared_body())),
    }
}

/// Starts storing the origin's response while it streams to the client.
fn admit(
    cache: &Cache,
    request: &CacheRequest,
    parts: &http::response::Parts,
    times: ResponseTimes,
    fill: Fill,
    exchange: &mut Exchange,
) {
    if let Admission::Store(handle) =
        cache.admit(request, parts.status, &parts.headers, times, fill)
    {
        exchange.cache_store = Some(Box::new(handle));
    }
}

/// Applies the cache's side of the origin's answer.
pub(crate) fn complete(
    cache: &Cache,
    plan: Plan,
    reply: Reply,
    request_time: SystemTime,
    exchange: &mut Exchange,
) -> Completion {
    let times = ResponseTimes {
        request_time,
        response_time: SystemTime::now(),
    };
    let reply = match (plan, reply) {
        (Plan::Bypass(request), Reply::Proxied(parts, body)) => {
            cache.invalidate(&request, parts.status, &parts.headers);
            Reply::Proxied(parts, body)
        }
        (Plan::Fill(request, fill), Reply::Proxied(parts, body)) => {
            admit(cache, &request, &parts, times, fill, exchange);
            Reply::Proxied(parts, body)
        }
        (Plan::Revalidate(request, revalidation, plain), Reply::Proxied(parts, body)) => {
            if parts.status == StatusCode::NOT_MODIFIED {
                drop(body);
                exchange.upstream_done();
                return match cache.revalidated(&request, revalidation, &parts.headers, times) {
                    Some(stored) => {
                        exchange.cache_status = Some(CacheStatus::Revalidated);
                        Completion::Reply(serve(&stored, &request))
                    }
                    None => match plain {
                        Some(plain) => Completion::Refetch(*plain),
                        None => Completion::Reply(Reply::Error(ProxyError::UpstreamFailed)),
                    },
                };
            }
            if parts.status.is_server_error() {
                if let Some(stored) = cache.stale_on_error(&revalidation, SystemTime::now()) {
                    exchange.cache_status = Some(CacheStatus::Stale);
                    return Completion::Reply(serve(&stored, &request));
                }
            }
            admit(
                cache,
                &request,
                &parts,
                times,
                revalidation.into_fill(),
                exchange,
            );
            Reply::Proxied(parts, body)
        }
        (Plan::Revalidate(request, revalidation, _), Reply::Error(e))
            if e.side() != Side::Downstream =>
        {
            match cache.stale_on_error(&revalidation, SystemTime::now()) {
                Some(stored) => {
                    exchange.cache_status = Some(CacheStatus::Stale);
                    serve(&stored, &request)
                }
                None => Reply::Error(e),
            }
        }
        (_, reply) => reply,
    };
    Completion::Reply(reply)
}

/// `stale-while-revalidate`: the stale response was served; validate it with the origin in the
/// background (once per entry, as the cache hands out one refresh at a time).
fn spawn_refresh(
    cache: Cache,
    ctx: Arc<ConnContext>,
    upstream: Arc<Upstream>,
    host: String,
    client: &http::request::Parts,
    revalidation: Revalidation,
    request_id: HeaderValue,
) {
    let mut head = Request::new(());
    *head.method_mut() = Method::GET;
    *head.uri_mut() = client.uri.clone();
    *head.version_mut() = client.version;
    *head.headers_mut() = client.headers.clone();
    let (mut parts, ()) = head.into_parts();
    tokio::spawn(async move {
        let request = CacheRequest::from_parts(ctx.scheme, &host, &parts);
        revalidation.prepare_request(&mut parts.headers);
        let activity = Arc::new(ConnActivity::new());
        let mut exchange = Exchange::new(activity.begin_request());
        let request_time = SystemTime::now();
        let mut outgoing = Outgoing::new(parts, UpstreamBody::Empty, &ctx, request_id, None);
        let reply =
            exchange_with_retries(&upstream, &mut outgoing, &ctx, None, &mut exchange).await;
        // A refetch is left to the next client request.
        let plan = Plan::Revalidate(request, revalidation, None);
        let done = complete(&cache, plan, reply, request_time, &mut exchange);
        if let Completion::Reply(Reply::Proxied(_, mut body)) = done {
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let (Some(data), Some(store)) =
                            (frame.data_ref(), &mut exchange.cache_store)
                        {
                            store.write(data);
                        }
                    }
                    Err(_) => return, // the store handle is dropped unstored
                }
            }
            exchange.upstream_done();
        }
    });
}
