//! How often a remote key set is refreshed: a fixed interval from the config, or the provider's
//! `Cache-Control: max-age`, clamped so a provider can neither make us poll it every second nor
//! keep a removed key alive for a month.

use std::time::Duration;

/// Shortest refresh interval taken from a provider's `max-age` (`no-cache` counts as 0).
pub const MIN_REFRESH: u64 = 60;
/// Longest refresh interval taken from a provider's `max-age`.
pub const MAX_REFRESH: u64 = 86_400;
/// Refresh interval when the provider sends no `max-age`.
pub const DEFAULT_REFRESH: u64 = 300;

/// The `max-age` of `Cache-Control` header values, in seconds: `no-store` and `no-cache` count as
/// 0; an unparseable or absent directive gives None. Directive names are case-insensitive
/// (RFC 9111 5.2); the first `max-age` wins, as caches do.
pub fn max_age<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<u64> {
    let mut found = None;
    for directive in values.into_iter().flat_map(|v| v.split(',')) {
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(0);
        }
        if name.eq_ignore_ascii_case("max-age") && found.is_none() {
            // A huge delta-seconds saturates (RFC 9111 1.2.2); anything else is ignored.
            found = arg
                .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
                .map(|a| a.parse().unwrap_or(u64::MAX));
        }
    }
    found
}

/// When to refresh next after a successful fetch: `fixed` when configured, else the provider's
/// `max_age` clamped to [`MIN_REFRESH`, `MAX_REFRESH`], else [`DEFAULT_REFRESH`].
pub fn refresh_interval(fixed: Option<u64>, max_age: Option<u64>) -> Duration {
    Duration::from_secs(match (fixed, max_age) {
        (Some(f), _) => f,
        (None, Some(m)) => m.clamp(MIN_REFRESH, MAX_REFRESH),
        (None, None) => DEFAULT_REFRESH,
    })
}

/// Wait before retry `failures` (1, 2, ...) of a failed fetch: 1 s doubling, at most 60 s and
/// never later than the regular refresh would have come.
pub fn retry_backoff(failures: u32, refresh: Duration) -> Duration {
    let exp = Duration::from_secs(1u64 << failures.saturating_sub(1).min(6));
    exp.min(Duration::from_secs(60)).min(refresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(max_age(["public, max-age=600"]), Some(600));
        assert_eq!(max_age(["MAX-AGE = \"42\""]), Some(42));
        assert_eq!(max_age(["max-age=10, max-age=20"]), Some(10), "the first wins");
        assert_eq!(max_age(["public", "max-age=7"]), Some(7), "several header lines");
        assert_eq!(max_age(["max-age=99999999999999999999999"]), Some(u64::MAX));
        assert_eq!(max_age(["no-cache"]), Some(0));
        assert_eq!(max_age(["max-age=600, no-store"]), Some(0));
        for none in ["", "public", "max-age=", "max-age=-1", "max-age=1.5", "max-age=abc", "s-maxage=5"] {
            assert_eq!(max_age([none]), None, "{none:?}");
        }
        assert_eq!(max_age(std::iter::empty()), None);
    }

    #[test]
    fn clamping() {
        let s = Duration::from_secs;
        assert_eq!(refresh_interval(None, Some(5)), s(60));
        assert_eq!(refresh_interval(None, Some(0)), s(60));
        assert_eq!(refresh_interval(None, Some(3600)), s(3600));
        assert_eq!(refresh_interval(None, Some(u64::MAX)), s(86_400));
        assert_eq!(refresh_interval(None, None), s(300));
        assert_eq!(refresh_interval(Some(2), Some(3600)), s(2), "the config wins, unclamped");
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let s = Duration::from_secs;
        let waits: Vec<_> = (1..=9).map(|f| retry_backoff(f, s(300)).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_backoff(5, s(3)), s(3), "never past the regular refresh");
        assert_eq!(retry_backoff(0, s(300)), s(1));
    }
}
