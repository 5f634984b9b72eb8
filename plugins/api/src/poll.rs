//! How long to pause between looks at something that will change by itself (an ONTAP job, a
//! transfer, pods becoming ready). Fixed intervals or doubling backoff notice a change up to a
//! whole interval late — on a failover's critical path that lateness adds up across every wait.
//! `Poll` looks often at first and then at a fixed share of the time already waited, so the
//! lateness stays a small share of each wait, while a long wait costs few requests.

use std::time::{Duration, Instant};

/// Pauses between polls: `elapsed / 64`, at least `min`, at most `max`.
#[derive(Debug, Clone)]
pub struct Poll {
    started: Instant,
    min: Duration,
    max: Duration,
}

/// Share of the time already waited that one pause may add (1/64 ≈ 1.6 %).
const SHARE: u32 = 64;

impl Poll {
    /// Start counting now; pauses between 20 ms and `max`.
    pub fn new(max: Duration) -> Poll {
        Poll { started: Instant::now(), min: Duration::from_millis(20), max }
    }

    /// Pauses never below `min` (e.g. an operator's interval for an outside service).
    pub fn at_least(mut self, min: Duration) -> Poll {
        self.min = min.min(self.max);
        self
    }

    /// The pause before the next look.
    pub fn next_delay(&self) -> Duration {
        (self.started.elapsed() / SHARE).clamp(self.min, self.max)
    }

    /// Sleep for [`Poll::next_delay`].
    pub async fn pause(&self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_with_the_time_waited_within_bounds() {
        let p = Poll::new(Duration::from_secs(5));
        assert_eq!(p.next_delay(), Duration::from_millis(20));
        let p = Poll { started: Instant::now() - Duration::from_secs(32), ..p };
        assert_eq!(p.next_delay().as_millis(), 500);
        let p = Poll { started: Instant::now() - Duration::from_secs(3600), ..p };
        assert_eq!(p.next_delay(), Duration::from_secs(5));
        let p = Poll::new(Duration::from_secs(5)).at_least(Duration::from_millis(200));
        assert_eq!(p.next_delay(), Duration::from_millis(200));
        let p = Poll::new(Duration::from_millis(100)).at_least(Duration::from_secs(1));
        assert_eq!(p.next_delay(), Duration::from_millis(100), "max wins over min");
    }
}
