//! Failed-authentication limits per client address: a caller that presents too many unknown,
//! revoked or expired tokens in a window is refused outright until the window ends, so tokens
//! cannot be guessed at network speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Addresses tracked at most; beyond this, windows that have ended are dropped first and, if
/// that is not enough, the table starts over (a flood of addresses must not grow memory).
const MAX_TRACKED: usize = 100_000;

/// Counts failed authentications per address within fixed windows.
#[derive(Clone)]
pub struct FailureLimiter {
    limit: u32,
    window: Duration,
    failures: Arc<Mutex<HashMap<IpAddr, Window>>>,
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

impl FailureLimiter {
    /// `limit` failures per `window` and address; a limit of 0 turns limiting off.
    pub fn new(limit: u32, window: Duration) -> Self {
        FailureLimiter { limit, window: window.max(Duration::from_secs(1)), failures: Arc::default() }
    }

    /// How long `addr` must still wait, when it has used up its failures in the current window.
    pub fn blocked_for(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let failures = self.failures.lock().expect("not poisoned");
        let window = failures.get(&addr)?;
        let ends = window.started + self.window;
        (window.count >= self.limit && ends > now).then(|| ends - now)
    }

    /// Records one failed authentication from `addr`.
    pub fn record_failure(&self, addr: IpAddr, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut failures = self.failures.lock().expect("not poisoned");
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&addr) {
            failures.retain(|_, w| w.started + self.window > now);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let window = failures.entry(addr).or_insert(Window { started: now, count: 0 });
        if window.started + self.window <= now {
            *window = Window { started: now, count: 0 };
        }
        window.count = window.count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..2 {
            limiter.record_failure(a, t0);
        }
        assert_eq!(limiter.blocked_for(a, t0), None, "two failures of three allowed");
        limiter.record_failure(a, t0 + Duration::from_secs(10));
        assert_eq!(limiter.blocked_for(a, t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(limiter.blocked_for(b, t0 + Duration::from_secs(10)), None, "other addresses are not affected");
        assert_eq!(limiter.blocked_for(a, t0 + Duration::from_secs(60)), None, "the window ended");
        // A failure after the window starts a new count.
        limiter.record_failure(a, t0 + Duration::from_secs(61));
        assert_eq!(limiter.blocked_for(a, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn a_zero_limit_never_blocks() {
        let limiter = FailureLimiter::new(0, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..1000 {
            limiter.record_failure(a, now);
        }
        assert_eq!(limiter.blocked_for(a, now), None);
    }
}
