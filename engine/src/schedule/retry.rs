//! Retry decisions and backoff delays: pure functions, tested without a clock.

use std::time::Duration;

use crate::compile::RetryPolicy;
use crate::load::raw::RetryOn;
use crate::step::ErrorKind;

/// Should a failure of `kind` after `attempt` attempts be tried again?
pub fn should_retry(policy: &RetryPolicy, kind: ErrorKind, attempt: u32) -> bool {
    if attempt >= policy.attempts {
        return false;
    }
    policy.on.iter().any(|on| match on {
        RetryOn::Any => true,
        RetryOn::Retryable => kind == ErrorKind::Retryable,
        RetryOn::Timeout => kind == ErrorKind::Timeout,
    })
}

/// The delay before attempt `attempt + 1`: `backoff * 2^(attempt-1)`, capped at
/// `max_backoff`; with jitter, scaled into `[delay/2, delay]` by `unit` in `[0, 1)`.
pub fn delay(policy: &RetryPolicy, attempt: u32, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let base = policy
        .backoff
        .checked_mul(1u32 << exp)
        .unwrap_or(policy.max_backoff)
        .min(policy.max_backoff);
    if policy.jitter {
        base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            jitter: false,
            on: vec![RetryOn::Retryable, RetryOn::Timeout],
        }
    }

    #[test]
    fn exponential_and_capped() {
        let p = policy();
        assert_eq!(delay(&p, 1, 0.0), Duration::from_millis(100));
        assert_eq!(delay(&p, 2, 0.0), Duration::from_millis(200));
        assert_eq!(delay(&p, 3, 0.0), Duration::from_millis(300));
        assert_eq!(delay(&p, 30, 0.0), Duration::from_millis(300));
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        let p = RetryPolicy {
            jitter: true,
            ..policy()
        };
        assert_eq!(delay(&p, 2, 0.0), Duration::from_millis(100));
        assert_eq!(delay(&p, 2, 1.0), Duration::from_millis(200));
        let mid = delay(&p, 2, 0.5);
        assert!(mid > Duration::from_millis(100) && mid < Duration::from_millis(200));
    }

    #[test]
    fn only_retryable_errors_retry() {
        let p = policy();
        assert!(should_retry(&p, ErrorKind::Retryable, 1));
        assert!(should_retry(&p, ErrorKind::Timeout, 3));
        assert!(!should_retry(&p, ErrorKind::Retryable, 4));
        assert!(!should_retry(&p, ErrorKind::Permanent, 1));
        assert!(!should_retry(&p, ErrorKind::InvalidInput, 1));
        let any = RetryPolicy {
            on: vec![RetryOn::Any],
            ..policy()
        };
        assert!(should_retry(&any, ErrorKind::Permanent, 1));
    }
}
