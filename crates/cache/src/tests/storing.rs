//! Storing: what may be stored, size limits, eviction, purge and invalidation.

use super::*;

#[test]
fn no_store_responses_are_never_cached() {
    let cache = cache();
    let req = get("/a", &[]);
    let r = respond(
        &cache,
        &req,
        &[("cache-control", "no-store, max-age=60")],
        "x",
    );
    assert_eq!(r, Err(NotStorable::NoStore));
    assert!(is_miss(&cache.lookup(&req, at(1))));
}

#[test]
fn no_store_requests_may_be_served_but_store_nothing() {
    let cache = cache();
    respond(&cache, &get("/a", &[]), &[FRESH], "old").unwrap();
    let no_store = get("/a", &[("cache-control", "no-store")]);
    hit(cache.lookup(&no_store, at(1)));
    assert_eq!(
        respond(
            &cache,
            &get("/b", &[("cache-control", "no-store")]),
            &[FRESH],
            "x"
        ),
        Err(NotStorable::RequestNoStore)
    );
}

#[test]
fn status_codes_without_explicit_freshness_are_stored_only_when_heuristically_cacheable() {
    let cache = cache();
    let lm = date(-1000);
    let pairs = [("last-modified", lm.as_str())];
    assert_eq!(
        respond_with(
            &cache,
            &get("/404", &[]),
            Fill::none(),
            0,
            404,
            &pairs,
            &["x"]
        ),
        Ok(())
    );
    assert_eq!(
        respond_with(
            &cache,
            &get("/302", &[]),
            Fill::none(),
            0,
            302,
            &pairs,
            &["x"]
        ),
        Err(NotStorable::NoExpiration)
    );
    assert_eq!(
        respond_with(
            &cache,
            &get("/302", &[]),
            Fill::none(),
            0,
            302,
            &[FRESH],
            &["x"]
        ),
        Ok(())
    );
    assert_eq!(
        respond_with(
            &cache,
            &get("/206", &[]),
            Fill::none(),
            0,
            206,
            &[FRESH],
            &["x"]
        ),
        Err(NotStorable::Status)
    );
}

#[test]
fn responses_that_could_never_be_served_are_not_stored() {
    let cache = cache();
    assert_eq!(
        respond(&cache, &get("/a", &[]), &[], "x"),
        Err(NotStorable::NeverReusable)
    );
    assert_eq!(
        respond(
            &cache,
            &get("/a", &[]),
            &[("cache-control", "no-cache")],
            "x"
        ),
        Err(NotStorable::NeverReusable)
    );
}

#[test]
fn no_cache_responses_are_stored_and_always_revalidated() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[("cache-control", "no-cache, max-age=60"), ("etag", "\"v\"")],
        "x",
    )
    .unwrap();
    let r = revalidation(cache.lookup(&req, at(0)));
    assert_eq!(r.conditional_headers()[IF_NONE_MATCH], "\"v\"");
}

#[test]
fn private_and_authorization_rules() {
    let cache = cache();
    assert_eq!(
        respond(
            &cache,
            &get("/a", &[]),
            &[("cache-control", "private, max-age=60")],
            "x"
        ),
        Err(NotStorable::Private)
    );
    let auth = get("/b", &[("authorization", "Bearer t")]);
    assert_eq!(
        respond(&cache, &auth, &[FRESH], "x"),
        Err(NotStorable::Authorization)
    );
    respond(
        &cache,
        &auth,
        &[("cache-control", "public, max-age=60")],
        "x",
    )
    .unwrap();
    hit(cache.lookup(&get("/b", &[]), at(1)));
}

#[test]
fn set_cookie_responses_are_stored_only_when_allowed_and_never_with_the_cookie() {
    let cache = cache();
    let pairs = [FRESH, ("set-cookie", "session=1")];
    assert_eq!(
        respond(&cache, &get("/a", &[]), &pairs, "x"),
        Err(NotStorable::SetCookie)
    );
    let allowing = Cache::new(CacheConfig {
        store_set_cookie: true,
        ..CacheConfig::default()
    });
    respond(&allowing, &get("/a", &[]), &pairs, "x").unwrap();
    let response = hit(allowing.lookup(&get("/a", &[]), at(1)));
    assert!(!response.headers().contains_key("set-cookie"));
}

#[test]
fn max_entry_size_is_enforced_while_streaming() {
    let cache = Cache::new(CacheConfig {
        max_entry_size: 8,
        ..CacheConfig::default()
    });
    let req = get("/a", &[]);
    let Admission::Store(mut handle) = cache.admit(
        &req,
        StatusCode::OK,
        &headers(&[FRESH]),
        ResponseTimes::at(at(0)),
        Fill::none(),
    ) else {
        panic!("storable");
    };
    handle.write(&Bytes::from_static(b"12345"));
    assert!(handle.is_storing());
    handle.write(&Bytes::from_static(b"6789"));
    assert!(!handle.is_storing());
    assert_eq!(handle.finish(), Err(NotStorable::TooLarge));
    assert!(is_miss(&cache.lookup(&req, at(1))));
    assert_eq!(respond(&cache, &req, &[FRESH], "12345678"), Ok(()));
}

#[test]
fn incomplete_or_abandoned_bodies_are_not_stored() {
    let cache = cache();
    let req = get("/a", &[]);
    let r = respond_with(
        &cache,
        &req,
        Fill::none(),
        0,
        200,
        &[FRESH, ("content-length", "10")],
        &["short"],
    );
    assert_eq!(r, Err(NotStorable::Incomplete));
    let Admission::Store(mut handle) = cache.admit(
        &req,
        StatusCode::OK,
        &headers(&[FRESH]),
        ResponseTimes::at(at(0)),
        Fill::none(),
    ) else {
        panic!("storable");
    };
    handle.write(&Bytes::from_static(b"partial"));
    drop(handle);
    assert!(is_miss(&cache.lookup(&req, at(1))));
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn the_least_recently_used_entry_goes_first_when_full() {
    let one = {
        let probe = cache();
        respond(&probe, &get("/a", &[]), &[FRESH], "x").unwrap();
        probe.stats().size_bytes as usize
    };
    let cache = Cache::new(CacheConfig {
        max_size: 3 * one,
        ..CacheConfig::default()
    });
    for path in ["/a", "/b", "/c"] {
        respond(&cache, &get(path, &[]), &[FRESH], "x").unwrap();
    }
    hit(cache.lookup(&get("/a", &[]), at(1)));
    respond(&cache, &get("/d", &[]), &[FRESH], "x").unwrap();
    assert!(is_miss(&cache.lookup(&get("/b", &[]), at(1))));
    for path in ["/a", "/c", "/d"] {
        hit(cache.lookup(&get(path, &[]), at(1)));
    }
    let stats = cache.stats();
    assert_eq!((stats.evictions, stats.entries), (1, 3));
    assert!(stats.size_bytes as usize <= 3 * one);
}

#[test]
fn unsafe_methods_invalidate_the_url_and_same_host_locations() {
    let cache = cache();
    for path in ["/a", "/b", "/c"] {
        respond(&cache, &get(path, &[]), &[FRESH], "x").unwrap();
    }
    let other = request_to(Method::GET, "other.com", "/b", &[]);
    respond(&cache, &other, &[FRESH], "x").unwrap();
    let post = request_to(Method::POST, "example.com", "/a", &[]);
    let reply = headers(&[
        ("location", "/b"),
        ("content-location", "http://other.com/b"),
    ]);
    assert_eq!(cache.invalidate(&post, StatusCode::CREATED, &reply), 2);
    assert!(is_miss(&cache.lookup(&get("/a", &[]), at(1))));
    assert!(is_miss(&cache.lookup(&get("/b", &[]), at(1))));
    hit(cache.lookup(&get("/c", &[]), at(1)));
    hit(cache.lookup(&other, at(1)));
    // Error responses invalidate nothing.
    let delete = request_to(Method::DELETE, "example.com", "/c", &[]);
    assert_eq!(
        cache.invalidate(
            &delete,
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new()
        ),
        0
    );
    assert_eq!(
        cache.invalidate(&delete, StatusCode::NO_CONTENT, &HeaderMap::new()),
        1
    );
}

#[test]
fn purge_by_url_removes_every_variant_and_purge_all_everything() {
    let cache = cache();
    let vary = [FRESH, ("vary", "accept")];
    respond(&cache, &get("/a?x", &[("accept", "1")]), &vary, "1").unwrap();
    respond(&cache, &get("/a?x", &[("accept", "2")]), &vary, "2").unwrap();
    respond(&cache, &get("/b", &[]), &[FRESH], "x").unwrap();
    respond(
        &cache,
        &CacheRequest::new(
            "https",
            "example.com",
            &Method::GET,
            &"/b".parse().unwrap(),
            &HeaderMap::new(),
        ),
        &[FRESH],
        "x",
    )
    .unwrap();
    assert_eq!(cache.purge_url("http://example.com/a?x"), Some(2));
    assert_eq!(cache.purge_url("example.com/b"), Some(2), "both schemes");
    assert_eq!(cache.stats().entries, 0);
    respond(&cache, &get("/c", &[]), &[FRESH], "x").unwrap();
    respond(&cache, &get("/d", &[]), &[FRESH], "x").unwrap();
    assert_eq!(cache.purge_all(), 2);
    assert_eq!((cache.stats().entries, cache.stats().size_bytes), (0, 0));
    assert_eq!(cache.purge_url("not a url"), None);
}

#[test]
fn a_purge_during_a_fill_keeps_the_purged_content_out() {
    let cache = cache();
    let req = get("/a", &[]);
    let Admission::Store(mut handle) = cache.admit(
        &req,
        StatusCode::OK,
        &headers(&[FRESH]),
        ResponseTimes::at(at(0)),
        Fill::none(),
    ) else {
        panic!("storable");
    };
    handle.write(&Bytes::from_static(b"x"));
    cache.purge(req.key());
    assert_eq!(handle.finish(), Err(NotStorable::Invalidated));
    assert!(is_miss(&cache.lookup(&req, at(1))));
}

#[test]
fn large_bodies_are_stored_as_the_very_chunks_that_were_streamed() {
    let cache = cache();
    let req = get("/big", &[]);
    let chunks = [
        Bytes::from(vec![b'a'; 40 << 10]),
        Bytes::from(vec![b'b'; 40 << 10]),
    ];
    let times = ResponseTimes::at(at(0));
    let Admission::Store(mut handle) = cache.admit(
        &req,
        StatusCode::OK,
        &headers(&[FRESH]),
        times,
        Fill::none(),
    ) else {
        panic!("storable");
    };
    for chunk in &chunks {
        handle.write(chunk);
    }
    handle.finish().unwrap();
    let response = hit(cache.lookup(&req, at(1)));
    assert_eq!(response.body_len(), 80 << 10);
    let same_memory: Vec<bool> = response
        .body()
        .iter()
        .zip(&chunks)
        .map(|(stored, sent)| stored.as_ptr() == sent.as_ptr())
        .collect();
    assert_eq!(same_memory, vec![true, true]);
}

#[test]
fn purge_by_path_removes_it_on_every_host_and_nothing_else() {
    let cache = cache();
    respond(&cache, &get("/p?q=1", &[]), &[FRESH], "x").unwrap();
    let other_host = CacheRequest::new(
        "http",
        "other.example",
        &Method::GET,
        &"/p?q=1".parse().unwrap(),
        &HeaderMap::new(),
    );
    respond(&cache, &other_host, &[FRESH], "y").unwrap();
    respond(&cache, &get("/p", &[]), &[FRESH], "z").unwrap();
    assert_eq!(cache.purge_path("/p?q=1"), 2);
    assert_eq!(cache.stats().entries, 1, "/p without the query stays");
}
