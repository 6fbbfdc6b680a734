//! Validation: revalidating with the origin, and clients' own conditional requests.

use super::*;

#[test]
fn etag_revalidation_with_304_serves_the_stored_body_with_updated_headers() {
    let cache = cache();
    let req = get("/a", &[]);
    let lm = date(-100);
    respond(
        &cache,
        &req,
        &[
            ("cache-control", "max-age=1"),
            ("etag", "\"v1\""),
            ("last-modified", &lm),
            ("x-version", "1"),
        ],
        "stored body",
    )
    .unwrap();
    let r = revalidation(cache.lookup(&req, at(5)));
    let mut upstream = headers(&[("if-none-match", "\"client\""), ("accept", "*/*")]);
    r.prepare_request(&mut upstream);
    assert_eq!(upstream[IF_NONE_MATCH], "\"v1\"");
    assert_eq!(upstream[IF_MODIFIED_SINCE], lm.as_str());
    assert_eq!(upstream.get_all(IF_NONE_MATCH).iter().count(), 1);
    let times = ResponseTimes::at(at(6));
    let not_modified = headers(&[
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("x-version", "2"),
    ]);
    let response = cache
        .revalidated(&req, r, &not_modified, times)
        .expect("same representation");
    assert_eq!(body(&response), "stored body");
    assert_eq!(response.headers()["x-version"], "2");
    assert_eq!(response.age(), Duration::ZERO);
    // Fresh again for 60 s from the 304.
    let again = hit(cache.lookup(&req, at(65)));
    assert_eq!(body(&again), "stored body");
    revalidation(cache.lookup(&req, at(66)));
    assert_eq!(cache.stats().revalidations, 1);
}

#[test]
fn a_304_for_another_representation_drops_the_stored_one() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[("cache-control", "max-age=0"), ("etag", "\"v1\"")],
        "x",
    )
    .unwrap();
    let r = revalidation(cache.lookup(&req, at(1)));
    let not_modified = headers(&[("etag", "\"v2\"")]);
    assert!(cache
        .revalidated(&req, r, &not_modified, ResponseTimes::at(at(1)))
        .is_none());
    assert!(is_miss(&cache.lookup(&req, at(1))));
}

#[test]
fn a_304_that_forbids_storing_removes_the_entry_but_is_still_served() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[("cache-control", "max-age=0"), ("etag", "\"v1\"")],
        "x",
    )
    .unwrap();
    let r = revalidation(cache.lookup(&req, at(1)));
    let not_modified = headers(&[("cache-control", "no-store")]);
    let served = cache.revalidated(&req, r, &not_modified, ResponseTimes::at(at(1)));
    assert_eq!(body(&served.unwrap()), "x");
    assert!(is_miss(&cache.lookup(&req, at(1))));
}

#[test]
fn a_full_response_to_a_revalidation_replaces_the_stored_one() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[("cache-control", "max-age=0"), ("etag", "\"v1\"")],
        "old",
    )
    .unwrap();
    let r = revalidation(cache.lookup(&req, at(1)));
    respond_with(
        &cache,
        &req,
        r.into_fill(),
        1,
        200,
        &[FRESH, ("etag", "\"v2\"")],
        &["new"],
    )
    .unwrap();
    assert_eq!(body(&hit(cache.lookup(&req, at(2)))), "new");
    assert_eq!(cache.stats().entries, 1);
    // An unstorable answer still removes the outdated response...
    respond(
        &cache,
        &get("/b", &[]),
        &[("cache-control", "max-age=0"), ("etag", "\"v\"")],
        "old",
    )
    .unwrap();
    let r = revalidation(cache.lookup(&get("/b", &[]), at(1)));
    let reply = respond_with(
        &cache,
        &get("/b", &[]),
        r.into_fill(),
        1,
        200,
        &[("cache-control", "no-store")],
        &["new"],
    );
    assert_eq!(reply, Err(NotStorable::NoStore));
    assert!(is_miss(&cache.lookup(&get("/b", &[]), at(2))));
}

#[test]
fn a_server_error_during_revalidation_keeps_the_stored_response() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[
            ("cache-control", "max-age=0, stale-if-error=60"),
            ("etag", "\"v\""),
        ],
        "old",
    )
    .unwrap();
    let r = revalidation(cache.lookup(&req, at(1)));
    let reply = respond_with(&cache, &req, r.into_fill(), 1, 503, &[], &["down"]);
    assert_eq!(reply, Err(NotStorable::NoExpiration));
    revalidation(cache.lookup(&req, at(2)));
}

#[test]
fn clients_conditional_requests_get_304_from_the_cache() {
    let cache = cache();
    let lm = date(-100);
    respond(
        &cache,
        &get("/a", &[]),
        &[FRESH, ("etag", "W/\"v1\""), ("last-modified", &lm)],
        "x",
    )
    .unwrap();
    let conditional = get("/a", &[("if-none-match", "\"v1\"")]);
    let response = hit(cache.lookup(&conditional, at(3)));
    let head = response.not_modified(&conditional).expect("weak match");
    assert_eq!(head.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(head.headers()["etag"], "W/\"v1\"");
    assert_eq!(head.headers()[AGE], "3");
    let changed = get("/a", &[("if-none-match", "\"v0\"")]);
    assert!(hit(cache.lookup(&changed, at(3)))
        .not_modified(&changed)
        .is_none());
    let since = date(0);
    let by_date = get("/a", &[("if-modified-since", &since)]);
    assert!(hit(cache.lookup(&by_date, at(3)))
        .not_modified(&by_date)
        .is_some());
}

#[test]
fn a_revalidation_answered_with_a_body_too_large_to_store_drops_the_stored_one() {
    let cache = Cache::new(CacheConfig {
        max_entry_size: 4,
        ..CacheConfig::default()
    });
    let req = get("/a", &[]);
    let stale = [("cache-control", "max-age=0"), ("etag", "\"v1\"")];
    respond(&cache, &req, &stale, "old").unwrap();
    let r = revalidation(cache.lookup(&req, at(1)));
    let reply = respond_with(
        &cache,
        &req,
        r.into_fill(),
        1,
        200,
        &[FRESH],
        &["much", "larger"],
    );
    assert_eq!(reply, Err(NotStorable::TooLarge));
    assert!(is_miss(&cache.lookup(&req, at(2))));
}
