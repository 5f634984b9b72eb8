//! Retry timing: exponential backoff with jitter, capped, honouring the server's wish.

use std::time::Duration;

use rand::Rng;

use drover_runbook::RetryPolicy;

/// How long to wait after failed attempt `attempt` (1-based): `backoff · 2^(attempt-1)`,
/// capped at `max_backoff`, with "equal jitter" (a uniform pick in the upper half) so that
/// many steps failing together do not retry in lockstep. A server's `Retry-After` is a floor.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    let base = policy.backoff.saturating_mul(exp).min(policy.max_backoff);
    let half = base / 2;
    let jitter = if half.is_zero() { Duration::ZERO } else { rand::rng().random_range(Duration::ZERO..=half) };
    (half + jitter).max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { attempts: 10, backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(30) }
    }

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        for attempt in 1..=8u32 {
            let base = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(30));
            for _ in 0..50 {
                let d = backoff_delay(&policy(), attempt, None);
                assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?} not in [{:?}, {base:?}]", base / 2);
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        assert!(backoff_delay(&policy(), 1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
    }
}
