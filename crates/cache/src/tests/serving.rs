//! Serving from the cache: keys, freshness, age, variants, request directives, stale responses.

use super::*;

#[test]
fn a_second_identical_get_is_a_hit_served_from_the_same_bytes() {
    let cache = cache();
    let req = get("/a", &[]);
    assert!(is_miss(&cache.lookup(&req, at(0))));
    respond_with(&cache, &req, Fill::none(), 0, 200, &[FRESH], &["hel", "lo"]).unwrap();
    let response = hit(cache.lookup(&req, at(1)));
    assert_eq!(body(&response), "hello");
    assert_eq!(
        response.body().len(),
        1,
        "a small body is stored as one exact-size copy"
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_LENGTH],
        "5",
        "length added for a chunked origin"
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.misses, stats.hits, stats.stores, stats.entries),
        (1, 1, 1, 1)
    );
}

#[test]
fn key_keeps_path_case_and_query_and_lower_cases_the_host() {
    let cache = cache();
    respond(&cache, &get("/Path?Q=1", &[]), &[FRESH], "x").unwrap();
    assert!(is_miss(&cache.lookup(&get("/path?Q=1", &[]), at(1))));
    assert!(is_miss(&cache.lookup(&get("/Path?q=1", &[]), at(1))));
    let upper_host = request_to(Method::GET, "EXAMPLE.com", "/Path?Q=1", &[]);
    hit(cache.lookup(&upper_host, at(1)));
    let other_host = request_to(Method::GET, "other.com", "/Path?Q=1", &[]);
    assert!(is_miss(&cache.lookup(&other_host, at(1))));
}

#[test]
fn head_is_served_from_a_stored_get_but_never_the_reverse() {
    let cache = cache();
    let head = request_to(Method::HEAD, "example.com", "/a", &[]);
    respond_with(
        &cache,
        &head,
        Fill::none(),
        0,
        200,
        &[FRESH, ("content-length", "5")],
        &[],
    )
    .unwrap();
    let stored_head = hit(cache.lookup(&head, at(1)));
    assert!(stored_head.is_head_only());
    assert!(
        is_miss(&cache.lookup(&get("/a", &[]), at(1))),
        "a HEAD response has no body for GET"
    );
    respond(&cache, &get("/a", &[]), &[FRESH], "hello").unwrap();
    let response = hit(cache.lookup(&head, at(1)));
    assert!(
        !response.is_head_only(),
        "the GET response replaced the HEAD one"
    );
    assert_eq!(
        respond_with(&cache, &head, Fill::none(), 2, 200, &[FRESH], &[]),
        Err(NotStorable::HeadAfterGet)
    );
    assert_eq!(body(&hit(cache.lookup(&get("/a", &[]), at(3)))), "hello");
}

#[test]
fn max_age_expires() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(&cache, &req, &[("cache-control", "max-age=1")], "x").unwrap();
    hit(cache.lookup(&req, at(0)));
    let r = revalidation(cache.lookup(&req, at(1)));
    assert!(
        r.conditional_headers().is_empty(),
        "no validators: a plain refetch"
    );
    assert_eq!(cache.lookup(&req, at(1)).status(), CacheStatus::Expired);
}

#[test]
fn s_maxage_wins_over_max_age() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[("cache-control", "max-age=100, s-maxage=5")],
        "x",
    )
    .unwrap();
    hit(cache.lookup(&req, at(4)));
    revalidation(cache.lookup(&req, at(5)));
}

#[test]
fn expires_and_date_give_freshness_and_invalid_expires_is_stale() {
    let cache = cache();
    let (d, e) = (date(0), date(30));
    respond(
        &cache,
        &get("/a", &[]),
        &[("date", &d), ("expires", &e)],
        "x",
    )
    .unwrap();
    hit(cache.lookup(&get("/a", &[]), at(29)));
    revalidation(cache.lookup(&get("/a", &[]), at(30)));
    respond(
        &cache,
        &get("/b", &[]),
        &[("expires", "0"), ("etag", "\"v\"")],
        "x",
    )
    .unwrap();
    revalidation(cache.lookup(&get("/b", &[]), at(0)));
}

#[test]
fn heuristic_freshness_from_last_modified() {
    let cache = cache();
    let lm = date(-1000);
    respond(&cache, &get("/a", &[]), &[("last-modified", &lm)], "x").unwrap();
    hit(cache.lookup(&get("/a", &[]), at(99)));
    revalidation(cache.lookup(&get("/a", &[]), at(100)));
}

#[test]
fn age_is_computed_and_sent() {
    let cache = cache();
    let req = get("/a", &[]);
    let d = date(-3);
    let times = ResponseTimes {
        request_time: at(0),
        response_time: at(1),
    };
    let pairs = headers(&[FRESH, ("age", "10"), ("date", &d)]);
    let Admission::Store(handle) = cache.admit(&req, StatusCode::OK, &pairs, times, Fill::none())
    else {
        panic!("storable");
    };
    handle.finish().unwrap();
    // corrected_initial_age = max(apparent 4, age 10 + delay 1) = 11; resident 5 more.
    let response = hit(cache.lookup(&req, at(6)));
    assert_eq!(response.age(), Duration::from_secs(16));
    assert_eq!(response.headers()[AGE], "16");
    assert_eq!(response.response_head().headers()[AGE], "16");
}

#[test]
fn served_fields_come_once_after_the_stored_ones() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(&cache, &req, &[FRESH, ("content-type", "text/plain")], "x").unwrap();
    let head = hit(cache.lookup(&req, at(5))).response_head();
    let names: Vec<&str> = head.headers().keys().map(|n| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "cache-control",
            "content-type",
            "date",
            "content-length",
            "age",
            "x-cache-status"
        ]
    );
    assert_eq!(head.headers().get_all(AGE).iter().count(), 1);
    assert_eq!(head.headers()[AGE], "5");
    assert_eq!(head.headers()[CacheStatus::FIELD], "HIT");
}

#[test]
fn vary_separates_variants_which_coexist() {
    let cache = cache();
    let gzip = get("/a", &[("accept-encoding", "gzip")]);
    let br = get("/a", &[("accept-encoding", "br")]);
    let vary = [FRESH, ("vary", "Accept-Encoding")];
    respond(&cache, &gzip, &vary, "gzipped").unwrap();
    assert!(is_miss(&cache.lookup(&br, at(1))));
    respond(&cache, &br, &vary, "brotli").unwrap();
    assert_eq!(body(&hit(cache.lookup(&gzip, at(1)))), "gzipped");
    assert_eq!(body(&hit(cache.lookup(&br, at(1)))), "brotli");
    let spaced = get("/a", &[("accept-encoding", " gzip ")]);
    assert_eq!(body(&hit(cache.lookup(&spaced, at(1)))), "gzipped");
    assert!(is_miss(&cache.lookup(&get("/a", &[]), at(1))));
    assert_eq!(cache.stats().entries, 2);
    // A new response for one variant replaces only that variant.
    respond(&cache, &gzip, &vary, "gzipped v2").unwrap();
    assert_eq!(cache.stats().entries, 2);
    assert_eq!(body(&hit(cache.lookup(&gzip, at(1)))), "gzipped v2");
}

#[test]
fn vary_star_is_never_served_from_cache() {
    let cache = cache();
    let req = get("/a", &[]);
    assert_eq!(
        respond(&cache, &req, &[FRESH, ("vary", "*")], "x"),
        Err(NotStorable::VaryAny)
    );
    assert!(is_miss(&cache.lookup(&req, at(1))));
}

#[test]
fn request_directives_max_age_min_fresh_max_stale() {
    let cache = cache();
    respond(
        &cache,
        &get("/a", &[]),
        &[("cache-control", "max-age=10")],
        "x",
    )
    .unwrap();
    revalidation(cache.lookup(&get("/a", &[("cache-control", "max-age=0")]), at(1)));
    revalidation(cache.lookup(&get("/a", &[("cache-control", "min-fresh=5")]), at(6)));
    hit(cache.lookup(&get("/a", &[("cache-control", "min-fresh=5")]), at(5)));
    let Lookup::Stale { refresh: None, .. } =
        cache.lookup(&get("/a", &[("cache-control", "max-stale=5")]), at(15))
    else {
        panic!("max-stale accepts it");
    };
    revalidation(cache.lookup(&get("/a", &[("cache-control", "max-stale=5")]), at(16)));
}

#[test]
fn request_no_cache_and_pragma_force_revalidation() {
    let cache = cache();
    respond(&cache, &get("/a", &[]), &[FRESH], "x").unwrap();
    revalidation(cache.lookup(&get("/a", &[("cache-control", "no-cache")]), at(1)));
    revalidation(cache.lookup(&get("/a", &[("pragma", "no-cache")]), at(1)));
    hit(cache.lookup(
        &get(
            "/a",
            &[("pragma", "no-cache"), ("cache-control", "max-age=60")],
        ),
        at(1),
    ));
}

#[test]
fn must_revalidate_forbids_serving_stale_even_to_max_stale() {
    let cache = cache();
    respond(
        &cache,
        &get("/a", &[]),
        &[("cache-control", "max-age=10, must-revalidate")],
        "x",
    )
    .unwrap();
    revalidation(cache.lookup(&get("/a", &[("cache-control", "max-stale")]), at(11)));
}

#[test]
fn stale_while_revalidate_hands_out_one_refresh() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[
            ("cache-control", "max-age=10, stale-while-revalidate=30"),
            ("etag", "\"v\""),
        ],
        "old",
    )
    .unwrap();
    let Lookup::Stale {
        response,
        refresh: Some(refresh),
    } = cache.lookup(&req, at(15))
    else {
        panic!("expected stale with a refresh");
    };
    assert_eq!(body(&response), "old");
    assert_eq!(refresh.conditional_headers()[IF_NONE_MATCH], "\"v\"");
    let Lookup::Stale { refresh: None, .. } = cache.lookup(&req, at(16)) else {
        panic!("one refresh at a time");
    };
    // The background refresh completes with a 304.
    let not_modified = headers(&[("etag", "\"v\"")]);
    cache
        .revalidated(&req, refresh, &not_modified, ResponseTimes::at(at(17)))
        .unwrap();
    hit(cache.lookup(&req, at(18)));
    // Past the window, revalidation is required.
    revalidation(cache.lookup(&req, at(17 + 10 + 31)));
    assert_eq!(cache.stats().stale, 2);
}

#[test]
fn a_failed_refresh_releases_the_ticket() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[("cache-control", "max-age=10, stale-while-revalidate=30")],
        "old",
    )
    .unwrap();
    let Lookup::Stale {
        refresh: Some(refresh),
        ..
    } = cache.lookup(&req, at(15))
    else {
        panic!("expected a refresh");
    };
    drop(refresh);
    let Lookup::Stale {
        refresh: Some(_), ..
    } = cache.lookup(&req, at(16))
    else {
        panic!("the next request refreshes");
    };
}

#[test]
fn stale_if_error_serves_within_its_window_only() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[("cache-control", "max-age=10, stale-if-error=30")],
        "old",
    )
    .unwrap();
    let r = revalidation(cache.lookup(&req, at(20)));
    assert_eq!(body(&cache.stale_on_error(&r, at(20)).unwrap()), "old");
    assert!(cache.stale_on_error(&r, at(41)).is_none());
    respond(
        &cache,
        &get("/b", &[]),
        &[(
            "cache-control",
            "max-age=10, stale-if-error=30, must-revalidate",
        )],
        "old",
    )
    .unwrap();
    let r = revalidation(cache.lookup(&get("/b", &[]), at(20)));
    assert!(
        cache.stale_on_error(&r, at(20)).is_none(),
        "must-revalidate forbids it"
    );
    // The request's own stale-if-error works without the response's.
    respond(
        &cache,
        &get("/c", &[]),
        &[("cache-control", "max-age=10")],
        "old",
    )
    .unwrap();
    let asking = get("/c", &[("cache-control", "stale-if-error=100")]);
    let r = revalidation(cache.lookup(&asking, at(20)));
    assert!(cache.stale_on_error(&r, at(20)).is_some());
}

#[test]
fn only_if_cached_is_unsatisfiable_when_nothing_fits() {
    let cache = cache();
    let only = |path| get(path, &[("cache-control", "only-if-cached")]);
    assert!(matches!(
        cache.lookup(&only("/a"), at(0)),
        Lookup::Unsatisfiable
    ));
    respond(
        &cache,
        &get("/a", &[]),
        &[("cache-control", "max-age=10")],
        "x",
    )
    .unwrap();
    hit(cache.lookup(&only("/a"), at(1)));
    assert!(matches!(
        cache.lookup(&only("/a"), at(11)),
        Lookup::Unsatisfiable
    ));
}

#[test]
fn bypassed_requests_are_reported() {
    let cache = cache();
    let post = request_to(Method::POST, "example.com", "/a", &[]);
    assert!(matches!(
        cache.lookup(&post, at(0)),
        Lookup::Bypass(BypassReason::Method)
    ));
    let range = get("/a", &[("range", "bytes=0-1")]);
    assert_eq!(cache.lookup(&range, at(0)).status(), CacheStatus::Bypass);
    assert_eq!(cache.stats().bypasses, 2);
}

#[test]
fn a_range_is_cut_from_a_fresh_stored_response_and_otherwise_goes_to_the_origin() {
    let cache = cache();
    let ranged = get("/v", &[("range", "bytes=3-6")]);
    let bypass = |l: &Lookup| matches!(l, Lookup::Bypass(BypassReason::Range));
    assert!(
        bypass(&cache.lookup(&ranged, at(0))),
        "nothing stored: the origin answers it"
    );
    respond_with(
        &cache,
        &get("/v", &[]),
        Fill::none(),
        0,
        200,
        &[FRESH],
        &["0123", "456789"],
    )
    .unwrap();
    let stored = hit(cache.lookup(&ranged, at(1)));
    let Some(Ranged::Partial(head, chunks)) = stored.ranged(ranged.headers()) else {
        panic!("a 206 for one satisfiable range");
    };
    assert_eq!(head.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(head.headers()["content-range"], "bytes 3-6/10");
    assert_eq!(head.headers()[CONTENT_LENGTH], "4");
    let cut: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    assert_eq!(cut, b"3456");
    let past = get("/v", &[("range", "bytes=10-")]);
    let Some(Ranged::Unsatisfiable(head)) = hit(cache.lookup(&past, at(1))).ranged(past.headers())
    else {
        panic!("a 416 past the end");
    };
    assert_eq!(head.headers()["content-range"], "bytes */10");
    let several = get("/v", &[("range", "bytes=0-1,4-5")]);
    assert!(
        hit(cache.lookup(&several, at(1)))
            .ranged(several.headers())
            .is_none(),
        "the whole response"
    );
    let stale = get("/v", &[("range", "bytes=0-1")]);
    assert!(
        bypass(&cache.lookup(&stale, at(10_000))),
        "stale: the origin answers the range"
    );
    let head = request_to(Method::HEAD, "example.com", "/v", &[("range", "bytes=0-1")]);
    assert!(
        bypass(&cache.lookup(&head, at(1))),
        "HEAD with Range: as before"
    );
}
