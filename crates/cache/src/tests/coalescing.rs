//! Coalescing: concurrent misses and revalidations share one origin fetch.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_misses_make_one_origin_request() {
    let cache = cache();
    let origin_requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, origin_requests) = (cache.clone(), Arc::clone(&origin_requests));
            tokio::spawn(async move {
                let req = get("/a", &[]);
                match cache.lookup_coalesced(&req, || at(0)).await {
                    Lookup::Miss(fill) => {
                        origin_requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        respond_with(&cache, &req, fill, 0, 200, &[FRESH], &["shared"]).unwrap();
                        "origin".to_owned()
                    }
                    Lookup::Hit(response) => body(&response),
                    other => panic!("unexpected {other:?}"),
                }
            })
        })
        .collect();
    let mut served_from_cache = 0;
    for task in tasks {
        if task.await.unwrap() == "shared" {
            served_from_cache += 1;
        }
    }
    assert_eq!(origin_requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(served_from_cache, 99);
    let stats = cache.stats();
    assert_eq!((stats.coalesced, stats.hits, stats.misses), (99, 99, 1));
}

#[tokio::test(start_paused = true)]
async fn followers_of_an_uncacheable_fetch_go_to_the_origin_themselves() {
    let cache = cache();
    let req = get("/a", &[]);
    let Lookup::Miss(fill) = cache.lookup_coalesced(&req, || at(0)).await else {
        panic!("miss");
    };
    assert!(fill.is_leader());
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.lookup_coalesced(&get("/a", &[]), || at(0)).await })
    };
    tokio::task::yield_now().await;
    let r = respond_with(
        &cache,
        &req,
        fill,
        0,
        200,
        &[("cache-control", "private")],
        &["x"],
    );
    assert_eq!(r, Err(NotStorable::Private));
    let Lookup::Miss(fill) = follower.await.unwrap() else {
        panic!("miss");
    };
    assert!(!fill.is_leader());
    // For a while, misses on this URL do not coalesce at all.
    let Lookup::Miss(fill) = cache.lookup_coalesced(&req, || at(0)).await else {
        panic!("miss");
    };
    assert!(!fill.is_leader());
}

#[tokio::test(start_paused = true)]
async fn followers_stop_waiting_after_the_timeout() {
    let cache = Cache::new(CacheConfig {
        coalesce_timeout: Duration::from_secs(2),
        ..CacheConfig::default()
    });
    let req = get("/a", &[]);
    let Lookup::Miss(_leader) = cache.lookup_coalesced(&req, || at(0)).await else {
        panic!("miss");
    };
    let started = tokio::time::Instant::now();
    let Lookup::Miss(fill) = cache.lookup_coalesced(&req, || at(0)).await else {
        panic!("miss");
    };
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(!fill.is_leader());
}

#[tokio::test(start_paused = true)]
async fn concurrent_revalidations_are_coalesced_too() {
    let cache = cache();
    let req = get("/a", &[]);
    respond(
        &cache,
        &req,
        &[("cache-control", "max-age=1"), ("etag", "\"v\"")],
        "x",
    )
    .unwrap();
    let Lookup::Revalidate(leader) = cache.lookup_coalesced(&req, || at(5)).await else {
        panic!("revalidate");
    };
    assert!(leader.is_leader());
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.lookup_coalesced(&get("/a", &[]), || at(5)).await })
    };
    tokio::task::yield_now().await;
    let not_modified = headers(&[("cache-control", "max-age=60"), ("etag", "\"v\"")]);
    cache
        .revalidated(&req, leader, &not_modified, ResponseTimes::at(at(5)))
        .unwrap();
    assert_eq!(body(&hit(follower.await.unwrap())), "x");
    assert_eq!(cache.stats().coalesced, 1);
}

#[tokio::test(start_paused = true)]
async fn requests_that_must_validate_anyway_do_not_wait() {
    let cache = cache();
    let req = get("/a", &[]);
    let Lookup::Miss(leader) = cache.lookup_coalesced(&req, || at(0)).await else {
        panic!("miss");
    };
    assert!(leader.is_leader());
    let reload = get("/a", &[("cache-control", "no-cache")]);
    let started = tokio::time::Instant::now();
    let Lookup::Miss(fill) = cache.lookup_coalesced(&reload, || at(0)).await else {
        panic!("miss");
    };
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(!fill.is_leader());
}
