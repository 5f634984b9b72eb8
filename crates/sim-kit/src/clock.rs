//! Simulated time. A simulator asks its [`Clock`] for "now" wherever the real server's answer
//! depends on time (a job that runs for a while, a transfer's lag, a pod becoming ready). The
//! real clock runs by itself; a manual one stands still until a test advances it, so a test
//! checks "queued, then done" exactly, however loaded the machine is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The simulator's time: real, or moved by hand. Clones share one time.
#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    wall: SystemTime,
    /// `None`: real time; else nanoseconds advanced by hand since `start`.
    manual: Option<Arc<AtomicU64>>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::real()
    }
}

impl Clock {
    /// The real clock.
    pub fn real() -> Clock {
        Clock { start: Instant::now(), wall: SystemTime::now(), manual: None }
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Clock {
        Clock { start: Instant::now(), wall: SystemTime::now(), manual: Some(Arc::default()) }
    }

    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    fn elapsed(&self) -> Duration {
        match &self.manual {
            Some(n) => Duration::from_nanos(n.load(Ordering::SeqCst)),
            None => self.start.elapsed(),
        }
    }

    /// Now, for deadlines and durations.
    pub fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    /// Now, for timestamps the API writes.
    pub fn wall(&self) -> SystemTime {
        self.wall + self.elapsed()
    }

    /// Move a manual clock forward. The real clock cannot be moved: a test that tries has a
    /// bug, and is told so.
    pub fn advance(&self, by: Duration) {
        let n = self.manual.as_ref().expect("only a manual clock can be advanced (Clock::manual)");
        n.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let c = Clock::manual();
        let (t0, w0) = (c.now(), c.wall());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), t0);
        c.clone().advance(Duration::from_secs(3));
        assert_eq!(c.now() - t0, Duration::from_secs(3));
        assert_eq!(c.wall().duration_since(w0).unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn the_real_clock_runs() {
        let c = Clock::real();
        let t0 = c.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.now() > t0);
    }
}
