//! Freshness lifetime and age (RFC 9111 §4.2).
//!
//! A response is fresh while its current age is below its freshness lifetime. The lifetime comes
//! from, in order: `s-maxage` (a shared cache's own), `max-age`, `Expires` − `Date`, and only
//! when none of those is present a heuristic (§4.2.2). Ages follow §4.2.3 exactly, so that time
//! spent in upstream caches (`Age`) and on the wire (response delay) counts.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue, AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::StatusCode;

use crate::config::CacheConfig;
use crate::directives::{ResponseDirectives, DELTA_SECONDS_MAX};

/// When the request that produced a response was sent upstream and when its head came back
/// (`request_time` and `response_time` of RFC 9111 §4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseTimes {
    pub request_time: SystemTime,
    pub response_time: SystemTime,
}

impl ResponseTimes {
    /// Request and response at the same instant (no measurable delay).
    pub fn at(time: SystemTime) -> Self {
        Self {
            request_time: time,
            response_time: time,
        }
    }
}

/// An HTTP-date field (RFC 9110 §5.6.7). `None` when absent, invalid, or when its lines disagree
/// (§4.2.1: "either the first occurrence should be used or the response should be considered
/// stale"; for `Expires` a disagreement is treated as invalid, which means stale).
pub(crate) fn http_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    if lines.any(|other| other != first) {
        return None;
    }
    httpdate::parse_http_date(first.to_str().ok()?.trim()).ok()
}

/// `date_value`: the `Date` field, or the time the response arrived when it has none (RFC 9110
/// §6.6.1 makes a recipient supply one).
pub(crate) fn date_value(headers: &HeaderMap, times: &ResponseTimes) -> SystemTime {
    http_date(headers, &DATE).unwrap_or(times.response_time)
}

/// `age_value`: the `Age` field in seconds; 0 when absent or invalid.
fn age_value(headers: &HeaderMap) -> u64 {
    headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map_or(0, |v| {
            v.parse::<u64>()
                .map_or(DELTA_SECONDS_MAX, |a| a.min(DELTA_SECONDS_MAX))
        })
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// `corrected_initial_age` (§4.2.3): the larger of the apparent age (clock difference) and the
/// `Age` the response came with plus the time it took to arrive.
pub(crate) fn corrected_initial_age(
    headers: &HeaderMap,
    times: &ResponseTimes,
    date: SystemTime,
) -> Duration {
    let apparent_age = since(times.response_time, date);
    let response_delay = since(times.response_time, times.request_time);
    let corrected_age_value =
        Duration::from_secs(age_value(headers)).saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// `current_age` (§4.2.3): the corrected initial age plus the time spent in this cache.
pub(crate) fn current_age(
    corrected_initial_age: Duration,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    corrected_initial_age.saturating_add(since(now, response_time))
}

/// Ages below this are served from [`AGE_DIGITS`], without allocating.
const STATIC_AGES: u64 = 1000;

/// "012…9101112…99100101…999": every age below [`STATIC_AGES`] written out once (2,890 bytes),
/// so that the `Age` of a hit in its first 16 minutes is a static slice.
static AGE_DIGITS: LazyLock<String> =
    LazyLock::new(|| (0..STATIC_AGES).map(|n| n.to_string()).collect());

/// The `Age` field for a response of this age: whole seconds, at most 2^31 (§5.1).
pub(crate) fn age_header(age: Duration) -> HeaderValue {
    let secs = age.as_secs().min(DELTA_SECONDS_MAX);
    if secs < STATIC_AGES {
        // Where `secs` starts: after ten one-digit and ninety two-digit numbers.
        let (start, len) = match secs {
            0..=9 => (secs, 1),
            10..=99 => (10 + (secs - 10) * 2, 2),
            _ => (190 + (secs - 100) * 3, 3),
        };
        let digits: &'static str = AGE_DIGITS.as_str();
        if let Some(text) = digits.get(start as usize..(start + len) as usize) {
            return HeaderValue::from_static(text);
        }
    }
    // Formatted on the stack and copied once: `HeaderValue::from(u64)` allocates twice.
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut rest = secs;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[at..]).unwrap_or_else(|_| HeaderValue::from(secs))
}

/// Whether the response states its own expiry (§4.2.1). An `Expires` that does not parse still
/// counts: it means "already expired" (§5.3), so heuristics must not apply.
pub(crate) fn has_explicit_expiration(headers: &HeaderMap, cc: &ResponseDirectives) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(EXPIRES)
}

/// Status codes that are heuristically cacheable (RFC 9110 §15.1), less 206: partial content
/// is not stored.
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// `freshness_lifetime` (§4.2.1) for a shared cache.
pub(crate) fn freshness_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &ResponseDirectives,
    date: SystemTime,
    config: &CacheConfig,
) -> Duration {
    if let Some(s) = cc.s_maxage {
        return Duration::from_secs(s);
    }
    if let Some(m) = cc.max_age {
        return Duration::from_secs(m);
    }
    if headers.contains_key(EXPIRES) {
        // §5.3: an invalid Expires (such as "0") represents a time in the past.
        return http_date(headers, &EXPIRES).map_or(Duration::ZERO, |e| since(e, date));
    }
    // §4.2.2: heuristics only without explicit expiry, and only for heuristically cacheable
    // status codes or responses marked cacheable by `public`.
    if heuristically_cacheable(status) || cc.public {
        return heuristic_lifetime(headers, date, config);
    }
    Duration::ZERO
}

/// A fraction of the time since `Last-Modified` (§4.2.2), capped; zero without `Last-Modified`
/// or when it lies after `Date`.
fn heuristic_lifetime(headers: &HeaderMap, date: SystemTime, config: &CacheConfig) -> Duration {
    let Some(last_modified) = http_date(headers, &LAST_MODIFIED) else {
        return Duration::ZERO;
    };
    let unchanged_for = since(date, last_modified);
    unchanged_for
        .checked_mul(config.heuristic_percent)
        .map_or(config.heuristic_max, |d| {
            (d / 100).min(config.heuristic_max)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    use crate::tests::headers;

    fn lifetime(status: u16, pairs: &[(&str, &str)]) -> Duration {
        let h = headers(pairs);
        let cc = ResponseDirectives::parse(&h);
        let d = date_value(&h, &ResponseTimes::at(at(T0)));
        freshness_lifetime(
            StatusCode::from_u16(status).unwrap(),
            &h,
            &cc,
            d,
            &CacheConfig::default(),
        )
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_expires() {
        let expires = date(T0 + 1000);
        let d = date(T0);
        let h = [
            ("cache-control", "max-age=100, s-maxage=7"),
            ("expires", expires.as_str()),
            ("date", d.as_str()),
        ];
        assert_eq!(lifetime(200, &h), Duration::from_secs(7));
    }

    #[test]
    fn max_age_wins_over_expires() {
        let expires = date(T0 + 1000);
        let h = [
            ("cache-control", "max-age=100"),
            ("expires", expires.as_str()),
        ];
        assert_eq!(lifetime(200, &h), Duration::from_secs(100));
    }

    #[test]
    fn expires_minus_date() {
        let (d, e) = (date(T0 - 50), date(T0 + 250));
        let h = [("date", d.as_str()), ("expires", e.as_str())];
        assert_eq!(lifetime(200, &h), Duration::from_secs(300));
        let past = date(T0 - 100);
        let h = [("date", d.as_str()), ("expires", past.as_str())];
        assert_eq!(lifetime(200, &h), Duration::ZERO);
    }

    #[test]
    fn invalid_expires_means_already_stale_and_blocks_heuristics() {
        let lm = date(T0 - 100_000);
        let h = [("expires", "0"), ("last-modified", lm.as_str())];
        assert_eq!(lifetime(200, &h), Duration::ZERO);
        let e1 = date(T0 + 100);
        let e2 = date(T0 + 200);
        let h = [("expires", e1.as_str()), ("expires", e2.as_str())];
        assert_eq!(
            lifetime(200, &h),
            Duration::ZERO,
            "conflicting Expires lines"
        );
    }

    #[test]
    fn heuristic_is_ten_percent_of_last_modified_age_capped() {
        let (d, lm) = (date(T0), date(T0 - 1000));
        let h = [("date", d.as_str()), ("last-modified", lm.as_str())];
        assert_eq!(lifetime(200, &h), Duration::from_secs(100));
        let lm = date(T0 - 100 * 24 * 3600);
        let h = [("date", d.as_str()), ("last-modified", lm.as_str())];
        assert_eq!(lifetime(200, &h), Duration::from_secs(24 * 3600), "capped");
        assert_eq!(lifetime(200, &[("date", d.as_str())]), Duration::ZERO);
    }

    #[test]
    fn heuristic_only_for_heuristically_cacheable_status_or_public() {
        let (d, lm) = (date(T0), date(T0 - 1000));
        let h = [("date", d.as_str()), ("last-modified", lm.as_str())];
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(lifetime(status, &h), Duration::from_secs(100), "{status}");
        }
        for status in [201, 206, 302, 303, 307, 400, 403, 500, 502, 503] {
            assert_eq!(lifetime(status, &h), Duration::ZERO, "{status}");
        }
        let public = [
            ("date", d.as_str()),
            ("last-modified", lm.as_str()),
            ("cache-control", "public"),
        ];
        assert_eq!(lifetime(302, &public), Duration::from_secs(100));
    }

    #[test]
    fn corrected_initial_age_takes_the_larger_of_apparent_and_corrected_age() {
        // Origin's clock is 30 s behind: apparent age 30 s dominates Age 5 + delay 2.
        let times = ResponseTimes {
            request_time: at(T0 - 2),
            response_time: at(T0),
        };
        let d = date(T0 - 30);
        let h = headers(&[("date", d.as_str()), ("age", "5")]);
        let dv = date_value(&h, &times);
        assert_eq!(
            corrected_initial_age(&h, &times, dv),
            Duration::from_secs(30)
        );
        // Clocks agree: Age 5 plus the 2 s response delay.
        let d = date(T0);
        let h = headers(&[("date", d.as_str()), ("age", "5")]);
        let dv = date_value(&h, &times);
        assert_eq!(
            corrected_initial_age(&h, &times, dv),
            Duration::from_secs(7)
        );
        // A Date in the future gives no negative age.
        let d = date(T0 + 100);
        let h = headers(&[("date", d.as_str())]);
        let dv = date_value(&h, &ResponseTimes::at(at(T0)));
        assert_eq!(
            corrected_initial_age(&h, &ResponseTimes::at(at(T0)), dv),
            Duration::ZERO
        );
    }

    #[test]
    fn current_age_adds_resident_time() {
        assert_eq!(
            current_age(Duration::from_secs(7), at(T0), at(T0 + 10)),
            Duration::from_secs(17)
        );
    }

    #[test]
    fn invalid_age_is_zero_and_missing_date_uses_response_time() {
        let h = headers(&[("age", "-3")]);
        let times = ResponseTimes::at(at(T0));
        let dv = date_value(&h, &times);
        assert_eq!(dv, at(T0));
        assert_eq!(corrected_initial_age(&h, &times, dv), Duration::ZERO);
    }

    #[test]
    fn age_header_is_whole_seconds_capped_at_2_pow_31() {
        assert_eq!(age_header(Duration::from_millis(2999)), "2");
        assert_eq!(age_header(Duration::from_secs(u64::MAX)), "2147483648");
        // Every age, from the static digits and past them, reads back as its own number.
        for secs in (0..1100).chain([9_999, 10_000, 123_456_789]) {
            let value = age_header(Duration::from_secs(secs));
            assert_eq!(value.to_str().ok(), Some(secs.to_string().as_str()));
        }
    }
}
