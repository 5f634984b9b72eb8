//! How many writes a restore keeps in flight. A fixed number is wrong both ways: too few
//! leaves a large control plane idle, too many only queues requests inside a small one (each
//! answer slower, none sooner) and, with API Priority and Fairness, earns 429s. So the width
//! follows the server's answers, a window of answers at a time:
//!
//! - a 429, a 5xx or a timeout in the window (the client retried it) halves the width;
//! - a window answered more than twice as slowly as the recent ones (a moving average of
//!   window medians) means the server is struggling: a quarter fewer;
//! - otherwise a quarter more, up to the ceiling.
//!
//! Answer times vary a lot from object to object and from moment to moment on a busy machine,
//! so only a sharp change steers; a server that is merely saturated keeps the ceiling, which
//! costs it nothing (measured: benches/restore_real.rs). `concurrency:` in the step fixes the
//! width instead.

use std::sync::Mutex;
use std::time::Duration;

/// Widths the adaptive throttle keeps between.
const FLOOR: usize = 2;
const START: usize = 16;
const CEILING: usize = 64;
/// A window is at least this many answers, so one slow object does not steer.
const MIN_WINDOW: usize = 8;

pub struct Throttle {
    state: Mutex<State>,
}

struct State {
    width: usize,
    adaptive: bool,
    window: Vec<Duration>,
    faults_before: u64,
    /// Moving average of window medians: how fast the server has been answering lately.
    recent: Option<Duration>,
    /// Widths used, lowest and highest.
    range: (usize, usize),
}

impl Throttle {
    pub fn fixed(width: usize) -> Throttle {
        Throttle::new(width.max(1), false)
    }

    pub fn adaptive() -> Throttle {
        Throttle::new(START, true)
    }

    fn new(width: usize, adaptive: bool) -> Throttle {
        Throttle {
            state: Mutex::new(State {
                width,
                adaptive,
                window: Vec::with_capacity(CEILING),
                faults_before: 0,
                recent: None,
                range: (width, width),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes allowed in flight now.
    pub fn width(&self) -> usize {
        self.state().width
    }

    /// The lowest and highest width used so far.
    pub fn range(&self) -> (usize, usize) {
        self.state().range
    }

    /// One write answered after `latency`; `faults` is the client's running count of passing
    /// faults (429, 5xx, timeouts) it retried.
    pub fn answered(&self, latency: Duration, faults: u64) {
        let mut s = self.state();
        if !s.adaptive {
            return;
        }
        s.window.push(latency);
        if s.window.len() < s.width.max(MIN_WINDOW) {
            return;
        }
        let median = {
            let w = &mut s.window;
            w.sort_unstable();
            w[w.len() / 2]
        };
        let recent = *s.recent.get_or_insert(median);
        s.recent = Some((recent * 7 + median * 3) / 10);
        s.width = if faults > s.faults_before {
            (s.width / 2).max(FLOOR)
        } else if median > recent * 2 {
            (s.width * 3 / 4).max(FLOOR)
        } else {
            (s.width + (s.width / 4).max(1)).min(CEILING)
        };
        s.faults_before = faults;
        s.window.clear();
        s.range = (s.range.0.min(s.width), s.range.1.max(s.width));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(t: &Throttle, millis: u64, faults: u64) {
        for _ in 0..t.width().max(MIN_WINDOW) {
            t.answered(Duration::from_millis(millis), faults);
        }
    }

    #[test]
    fn a_server_answering_steadily_gets_more_writes_up_to_the_ceiling() {
        let t = Throttle::adaptive();
        assert_eq!(t.width(), START);
        window(&t, 20, 0);
        assert_eq!(t.width(), 20);
        // Saturated: answers slow down as the width grows, but never sharply.
        for millis in [25, 31, 38, 48, 60, 75] {
            window(&t, millis, 0);
        }
        assert_eq!(t.width(), CEILING);
    }

    #[test]
    fn answers_twice_as_slow_as_lately_mean_trouble_so_fewer_writes() {
        let t = Throttle::adaptive();
        window(&t, 20, 0);
        assert_eq!(t.width(), 20);
        window(&t, 45, 0);
        assert_eq!(t.width(), 15);
        window(&t, 30, 0);
        assert_eq!(t.width(), 18, "no sharper than lately: grows again");
    }

    #[test]
    fn retried_faults_halve_the_width_down_to_the_floor() {
        let t = Throttle::adaptive();
        window(&t, 20, 1);
        assert_eq!(t.width(), 8);
        window(&t, 20, 1);
        assert_eq!(t.width(), 10, "no new fault in this window");
        for faults in 2..6 {
            window(&t, 20, faults);
        }
        assert_eq!(t.width(), FLOOR);
        assert_eq!(t.range(), (FLOOR, START));
    }

    #[test]
    fn a_fixed_width_never_moves() {
        let t = Throttle::fixed(16);
        window(&t, 20, 0);
        window(&t, 500, 9);
        assert_eq!(t.width(), 16);
    }
}
